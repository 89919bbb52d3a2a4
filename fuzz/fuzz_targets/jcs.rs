//! RFC 8785 canonicaliser: never panics; canonical output is a fixed point.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = stella_dsse::jcs::canonicalize(data) {
        assert_eq!(stella_dsse::jcs::canonicalize(&c).expect("fixed point"), c);
    }
});
