//! Keyless (certificate) image signatures in the release check, without a registry: the bundle
//! bytes a referrer would hold, made by a private Sigstore (`stella_sigstore::testing`).

use stella_keys::{DevKeys, Keyring, Purpose};
use stella_oci::Digest;
use stella_oci::{check_bundle_bytes, ReleasePolicy, COSIGN_SIGN_V1};
use stella_sigstore::testing::{LeafSpec, TestSigstore};

const ISSUER: &str = "https://issuer.test.invalid";
const SAN: &str = "ci@release.example.com";

fn statement(image: &Digest, predicate: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "scanner", "digest": {"sha256": image.hex()}}],
        "predicateType": predicate,
        "predicate": {},
    }))
    .unwrap()
}

fn ring(dir: &std::path::Path, s: &TestSigstore, text: &str) -> Keyring {
    std::fs::write(dir.join("root.json"), s.trusted_root_json()).unwrap();
    std::fs::write(dir.join("ring.toml"), text).unwrap();
    Keyring::load(&dir.join("ring.toml"), DevKeys::Refuse).unwrap()
}

fn identity(purposes: &str) -> String {
    format!(
        "[[identities]]\nid = \"release-ci\"\ncertificate_identity = \"{SAN}\"\n\
         certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = {purposes}\n"
    )
}

fn policy() -> ReleasePolicy {
    ReleasePolicy::release()
}

#[test]
fn keyless_image_signatures_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let now = time::OffsetDateTime::now_utc();
    let image = Digest::of(b"scanner image manifest");
    let leaf = s.issue(&LeafSpec::email(SAN, ISSUER, now));
    let good = serde_json::to_vec(&s.dsse_bundle(
        &leaf,
        "application/vnd.in-toto+json",
        &statement(&image, COSIGN_SIGN_V1),
        now,
    ))
    .unwrap();
    let trusting = ring(dir.path(), &s, &identity("[\"release\"]"));
    let (id, keyid) = check_bundle_bytes(&good, &image, &trusting, &policy()).unwrap();
    assert_eq!(id, "release-ci");
    assert!(keyid.starts_with("sha256:"), "{keyid}");

    // Another image: the statement is not about it.
    let other = Digest::of(b"another image");
    let e = check_bundle_bytes(&good, &other, &trusting, &policy())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no subject"), "{e}");
    // Another predicate type (an attestation, not an image signature).
    let attestation = serde_json::to_vec(&s.dsse_bundle(
        &leaf,
        "application/vnd.in-toto+json",
        &statement(&image, "https://slsa.dev/provenance/v1"),
        now,
    ))
    .unwrap();
    let e = check_bundle_bytes(&attestation, &image, &trusting, &policy())
        .unwrap_err()
        .to_string();
    assert!(e.contains("predicate type"), "{e}");
    // A keyless message signature is not an image signature.
    let message = serde_json::to_vec(&s.message_bundle(&leaf, b"blob", now)).unwrap();
    let e = check_bundle_bytes(&message, &image, &trusting, &policy())
        .unwrap_err()
        .to_string();
    assert!(e.contains("DSSE"), "{e}");
    // The identity trusted for attestations only.
    let attest_only = ring(dir.path(), &s, &identity("[\"attestation\"]"));
    let e = check_bundle_bytes(&good, &image, &attest_only, &policy())
        .unwrap_err()
        .to_string();
    assert!(e.contains("purpose `release`"), "{e}");
    let any = ReleasePolicy {
        purpose: Some(Purpose::Attestation),
        ..policy()
    };
    check_bundle_bytes(&good, &image, &attest_only, &any).unwrap();

    // A key entry never accepts a keyless bundle, even for the certified key itself.
    let key_only = ring(
        dir.path(),
        &s,
        &format!(
            "[[keys]]\nid = \"leaf-key\"\npurposes = [\"release\"]\npublic_key = '''\n{}'''\n",
            leaf.key.public_pem()
        ),
    );
    let e = check_bundle_bytes(&good, &image, &key_only, &policy())
        .unwrap_err()
        .to_string();
    assert!(e.contains("names no Sigstore identity"), "{e}");
}
