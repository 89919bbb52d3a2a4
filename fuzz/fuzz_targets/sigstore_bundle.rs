//! Sigstore bundle reader for verification (v0.1–v0.3): never panics, and a bundle it accepts
//! goes through the verifier (against the shipped roots) without panicking either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_sigstore::{verify, Artifact, Bundle, Identity, Matcher, Options, Policy, TrustedRoot};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::from_json(data) {
        let root = TrustedRoot::public_good().expect("shipped root");
        let policy = Policy::Identity(Identity::new(
            Matcher::exact("a@b"),
            Matcher::exact("https://issuer"),
        ));
        let _ = verify(&b, Artifact::Bytes(b"x"), &policy, &root, &Options::default());
        let _ = verify(&b, Artifact::Unchecked, &policy, &root, &Options::default());
    }
});
