//! Rekor v1 `LogEntry` answers, as the keyless signer reads them from the log: never panics;
//! an accepted answer is one entry, named by its only member, with a proof (SET or inclusion).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(e) = stella_keyless::fuzzing::rekor_entry(data) {
        assert!(e.set.is_some() || e.inclusion_proof.is_some());
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted answer is JSON");
        let obj = v.as_object().expect("accepted answer is an object");
        assert_eq!(obj.len(), 1);
        assert!(obj.contains_key(&e.uuid));
        assert_eq!(e.url, "https://rekor.test");
    }
});
