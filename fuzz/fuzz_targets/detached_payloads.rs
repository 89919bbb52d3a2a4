//! Sigstore bundles read with their DSSE payloads detached (`read_detaching_payloads`, the
//! streamed keyless path of `mirror verify`): never panics; a document it accepts is JSON,
//! and each item it keeps reads as a bundle with a detached payload and goes through the
//! verifier (against the shipped roots) without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_sigstore::{
    verify, Artifact, Bundle, DetachedPayload, HashAlgorithm, Identity, Matcher, Options,
    PaeDigest, Policy, TrustedRoot,
};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = stella_dsse::stream_detach::read_detaching_payloads(
        data,
        data.len() as u64,
        "dsseEnvelope",
        16,
        std::io::sink,
    ) else {
        return;
    };
    let kept: serde_json::Value =
        serde_json::from_slice(&d.document).expect("the kept document is JSON");
    let items = match kept {
        serde_json::Value::Array(a) => a,
        v => vec![v],
    };
    assert_eq!(items.len(), d.payloads.len());
    let root = TrustedRoot::public_good().expect("shipped root");
    let policy = Policy::Identity(Identity::new(
        Matcher::exact("a@b"),
        Matcher::exact("https://issuer"),
    ));
    let pae = |alg: HashAlgorithm| Ok(alg.digest(b"DSSEv1 0  0 "));
    for (item, payload) in items.iter().zip(&d.payloads) {
        let Some((len, _)) = payload else { continue };
        let detached = DetachedPayload {
            len: *len,
            sha256: [0; 32],
        };
        if let Ok(b) = Bundle::from_value_detached(item, detached) {
            let _ = verify(&b, Artifact::Pae(PaeDigest(&pae)), &policy, &root, &Options::default());
            let _ = verify(&b, Artifact::Unchecked, &policy, &root, &Options::default());
        }
    }
});
