//! The signing flow with the in-process dev CA and TSA: bundles verify with our verifier
//! under an identity policy, and every check of an issued certificate refuses what it must.

use std::sync::Arc;

use serde_json::json;
use stella_keyless::dev::DevServices;
use stella_keyless::token::unsigned_jwt;
use stella_keyless::{KeylessSigner, Reuse, StaticToken};
use stella_sigstore::{Artifact, Bundle, Identity, Matcher, Options, Policy, TrustedRoot};
use time::OffsetDateTime;

const ISS: &str = "https://authority.stella.test";
const SUB: &str = "https://signer.stella.test/svc";

fn token(exp_in: i64) -> StaticToken {
    let exp = OffsetDateTime::now_utc().unix_timestamp() + exp_in;
    StaticToken::parse(&unsigned_jwt(
        &json!({"iss": ISS, "sub": SUB, "aud": "sigstore", "exp": exp}),
    ))
    .unwrap()
}

fn signer(dev: DevServices, reuse: Reuse) -> (KeylessSigner, TrustedRoot) {
    let root = dev.trusted_root().unwrap();
    let s = dev.signer(Arc::new(token(600))).unwrap().with_reuse(reuse);
    (s, root)
}

fn identity() -> Policy {
    Policy::Identity(Identity::new(Matcher::exact(SUB), Matcher::exact(ISS)))
}

#[tokio::test]
async fn dev_blob_and_attestation_bundles_verify_with_identity_policy() {
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let (s, root) = signer(dev, Reuse::default());
    let out = s.sign_blob(b"hello keyless").await.unwrap();
    assert!(out.new_certificate);
    assert_eq!(out.identity.san, SUB);
    assert_eq!(out.identity.oidc_issuer, ISS);
    assert_eq!(out.certificate_chain.len(), 3, "leaf, intermediate, root");
    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    let opts = Options {
        tlog_threshold: 0,
        time_threshold: 1,
    };
    stella_sigstore::verify(
        &b,
        Artifact::Bytes(b"hello keyless"),
        &identity(),
        &root,
        &opts,
    )
    .unwrap();
    // Another artifact, another identity, another issuer: refused.
    assert!(
        stella_sigstore::verify(&b, Artifact::Bytes(b"other"), &identity(), &root, &opts).is_err()
    );
    let wrong = Policy::Identity(Identity::new(Matcher::exact("x"), Matcher::exact(ISS)));
    let f = stella_sigstore::verify(&b, Artifact::Bytes(b"hello keyless"), &wrong, &root, &opts)
        .unwrap_err();
    assert_eq!(f.failed, stella_sigstore::Check::Identity);

    // The second signing reuses the certificate.
    let st = stella_dsse::Statement::new(
        vec![
            stella_dsse::Subject::sha256("a", stella_keys::hex(&stella_keys::sha256(b"a")))
                .unwrap(),
        ],
        "https://slsa.dev/provenance/v1",
        json!({}),
    )
    .unwrap();
    let out2 = s.attest(&st).await.unwrap();
    assert!(!out2.new_certificate);
    assert_eq!(
        out2.identity.certificate_serial,
        out.identity.certificate_serial
    );
    let b = Bundle::from_json(&out2.bundle_json()).unwrap();
    stella_sigstore::verify(&b, Artifact::Bytes(b"a"), &identity(), &root, &opts).unwrap();
}

#[tokio::test]
async fn per_signature_reuse_gets_a_new_certificate_each_time() {
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let (s, _) = signer(dev, Reuse::PerSignature);
    let a = s.sign_blob(b"x").await.unwrap();
    let b = s.sign_blob(b"x").await.unwrap();
    assert!(a.new_certificate && b.new_certificate);
    assert_ne!(a.identity.certificate_serial, b.identity.certificate_serial);
    assert_ne!(a.identity.key_id, b.identity.key_id);
}
