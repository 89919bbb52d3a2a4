//! The wrapper that turns a TSA's bare `TimeStampToken` into the granted `TimeStampResp`
//! bundles carry: never panics; what it accepts is one DER value, and a token wrapped by it
//! comes back byte for byte through the reader the verifier uses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(resp) = stella_keyless::fuzzing::granted_response(data) else {
        return;
    };
    assert!(resp.len() > data.len());
    // `data` as a token on its own (a CMS SignedData ContentInfo) is returned as is ...
    if stella_x509::tsp::token_from_bytes(data).ok().as_deref() == Some(data) {
        // ... and wrapped, the granted response gives back the same bytes.
        let back = stella_x509::tsp::token_from_bytes(&resp).expect("wrapped token reads back");
        assert_eq!(back, data);
    }
});
