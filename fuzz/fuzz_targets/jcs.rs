//! RFC 8785 canonicaliser: never panics; canonical output is a fixed point. The one-pass
//! strict parse (`jcs::from_slice`, the Signer's request bodies) accepts exactly what
//! `parse_strict` accepts, with the same value (its documented contract).
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_dsse::jcs;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = jcs::canonicalize(data) {
        assert_eq!(jcs::canonicalize(&c).expect("fixed point"), c);
    }
    let tree = jcs::parse_strict(data).ok();
    let one_pass = jcs::from_slice::<serde_json::Value>(data).ok();
    assert_eq!(tree, one_pass, "from_slice and parse_strict disagree");
});
