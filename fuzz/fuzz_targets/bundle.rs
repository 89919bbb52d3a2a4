//! Sigstore bundle parser: never panics; accepted bundles round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_dsse::Bundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::from_json(data) {
        let again = Bundle::from_json(&b.to_json()).expect("our own output parses");
        assert_eq!(again.envelope, b.envelope);
        assert_eq!(again.material, b.material);
    }
});
