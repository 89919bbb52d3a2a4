//! Fulcio `signingCert` answers (JSON with PEM chains), as the keyless signer reads them from
//! the CA: never panics; a chain is only taken from an embedded-SCT answer and is never empty.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(chain) = stella_keyless::fuzzing::fulcio_chain(data) {
        assert!(!chain.is_empty());
        assert!(chain.iter().all(|der| !der.is_empty()));
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted answer is JSON");
        assert!(v.get("signedCertificateEmbeddedSct").is_some());
    }
});
