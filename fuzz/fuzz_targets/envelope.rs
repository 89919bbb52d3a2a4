//! Envelope parser: never panics; whatever parses re-serialises and re-parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_dsse::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_json(data) {
        let again = Envelope::from_json(&env.to_json()).expect("our own output parses");
        assert_eq!(again, env);
        let _ = env.pae();
    }
});
