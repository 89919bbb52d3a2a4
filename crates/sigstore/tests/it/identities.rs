//! Keyring identity entries (`[[identities]]`) verifying keyless bundles made by a private
//! Sigstore (`stella_sigstore::testing`): each negative twin is a whole, consistent bundle or
//! keyring that differs in one thing, and fails at its own check.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use stella_keys::{DevKeys, Ineligible, Keyring, Purpose};
use stella_sigstore::testing::{LeafSpec, TestSigstore};
use stella_sigstore::EntryRefusal;
use stella_sigstore::{
    Artifact, Bundle, Check, HashAlgorithm, IdentityRefusal, IdentityTrust, VerifyError,
};
use time::OffsetDateTime;

const ISSUER: &str = "https://issuer.test.invalid";
const SAN: &str = "release@example.com";
const STATEMENT_TYPE: &str = "application/vnd.in-toto+json";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

/// A keyring file in `dir` with `entries` (TOML), the test root as `root.json`.
fn ring(dir: &Path, s: &TestSigstore, entries: &str) -> Keyring {
    std::fs::write(dir.join("root.json"), s.trusted_root_json()).unwrap();
    std::fs::write(dir.join("keyring.toml"), entries).unwrap();
    Keyring::load(&dir.join("keyring.toml"), DevKeys::Refuse).unwrap()
}

fn entry(id: &str, san: &str, issuer: &str, purposes: &str) -> String {
    format!(
        "[[identities]]\nid = {id:?}\n{san}\n{issuer}\ntrusted_root = \"root.json\"\npurposes = {purposes}\n"
    )
}

/// A test Sigstore and a keyring trusting its release identity (`exact_entry`) for `release`;
/// the keyring's folder lives as long as the first value.
fn release_trust() -> (tempfile::TempDir, TestSigstore, IdentityTrust) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let trust =
        IdentityTrust::from_keyring(&ring(dir.path(), &s, &exact_entry("[\"release\"]"))).unwrap();
    (dir, s, trust)
}

fn exact_entry(purposes: &str) -> String {
    entry(
        "release-ci",
        &format!("certificate_identity = {SAN:?}"),
        &format!("certificate_oidc_issuer = {ISSUER:?}"),
        purposes,
    )
}

fn statement(digest_hex: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "artifact", "digest": {"sha256": digest_hex}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }))
    .unwrap()
}

/// A keyless DSSE bundle by `spec`'s identity over a statement about `digest`, logged `at`.
fn bundle(s: &TestSigstore, spec: &LeafSpec, digest: &[u8; 32], at: OffsetDateTime) -> Bundle {
    let leaf = s.issue(spec);
    let v = s.dsse_bundle(
        &leaf,
        STATEMENT_TYPE,
        &statement(&stella_keys::hex(digest)),
        at,
    );
    Bundle::from_value(&v).unwrap()
}

fn artifact(d: &[u8; 32]) -> Artifact<'_> {
    Artifact::Digest {
        algorithm: HashAlgorithm::Sha256,
        digest: d,
    }
}

/// The one entry's refusal.
fn refusal(r: Result<stella_sigstore::IdentityMatch, IdentityRefusal>) -> EntryRefusal {
    match r {
        Ok(m) => panic!("accepted by {}", m.id),
        Err(IdentityRefusal::Refused(mut v)) if v.len() == 1 => v.remove(0).1,
        Err(e) => panic!("unexpected refusal: {e}"),
    }
}

fn failed_at(r: EntryRefusal, check: Check) -> VerifyError {
    match r {
        EntryRefusal::Failed(f) => {
            assert_eq!(f.failed, check, "{f}");
            f.error
        }
        other => panic!("expected a failure at {check:?}, got {other}"),
    }
}

#[test]
fn identity_entry_accepts_a_keyless_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let ring = ring(dir.path(), &s, &exact_entry("[\"release\"]"));
    assert!(ring.keys().is_empty(), "an identity is not a key");
    assert_eq!(ring.identities().len(), 1);
    let trust = IdentityTrust::from_keyring(&ring).unwrap();
    let d = [7u8; 32];
    let at = now();
    let b = bundle(&s, &LeafSpec::email(SAN, ISSUER, at), &d, at);
    let m = trust
        .verify(&b, artifact(&d), Some(Purpose::Release), at)
        .unwrap();
    assert_eq!(m.id, "release-ci");
    assert_eq!(m.identity, format!("{ISSUER} {SAN}"));
    assert!(m.verified.checks.contains(&Check::Identity));
    assert_eq!(m.verified.signing_times[0].at, at);
    // The statement is about another digest: the artifact check fails.
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&[8u8; 32]), Some(Purpose::Release), at)),
        Check::Artifact,
    );
    assert!(matches!(e, VerifyError::SubjectNotFound { .. }), "{e}");
}

#[test]
fn wrong_san_and_wrong_issuer() {
    let (_dir, s, trust) = release_trust();
    let d = [1u8; 32];
    let at = now();
    let b = bundle(
        &s,
        &LeafSpec::email("mallory@example.com", ISSUER, at),
        &d,
        at,
    );
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Identity,
    );
    assert!(
        matches!(&e, VerifyError::Identity { found, .. } if found == &["mallory@example.com"]),
        "{e}"
    );
    let b = bundle(
        &s,
        &LeafSpec::email(SAN, "https://evil.test.invalid", at),
        &d,
        at,
    );
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Identity,
    );
    assert!(matches!(e, VerifyError::Issuer { .. }), "{e}");
}

#[test]
fn regular_expressions_are_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let text = entry(
        "org",
        r#"certificate_identity_regexp = '.*@example\.com'"#,
        r#"certificate_oidc_issuer_regexp = 'https://issuer\.test\.invalid'"#,
        "[\"release\"]",
    );
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    let d = [2u8; 32];
    let at = now();
    let ok = bundle(
        &s,
        &LeafSpec::email("alice@example.com", ISSUER, at),
        &d,
        at,
    );
    assert_eq!(
        trust
            .verify(&ok, artifact(&d), Some(Purpose::Release), at)
            .unwrap()
            .id,
        "org"
    );
    for san in ["alice@example.com.attacker", "xalice@example.comx"] {
        let b = bundle(&s, &LeafSpec::email(san, ISSUER, at), &d, at);
        let e = failed_at(
            refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
            Check::Identity,
        );
        assert!(matches!(e, VerifyError::Identity { .. }), "{san}: {e}");
    }
    // The issuer pattern is anchored too.
    let b = bundle(
        &s,
        &LeafSpec::email("alice@example.com", "https://issuer.test.invalid.evil", at),
        &d,
        at,
    );
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Identity,
    );
    assert!(matches!(e, VerifyError::Issuer { .. }), "{e}");
}

#[test]
fn other_fulcio_extensions_by_oid() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let text = format!(
        "{}[identities.extensions]\n\"1.3.6.1.4.1.57264.1.12\" = \"https://github.com/org/repo\"\n",
        exact_entry("[\"release\"]")
    );
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    let d = [3u8; 32];
    let at = now();
    let spec = LeafSpec::email(SAN, ISSUER, at);
    let b = bundle(
        &s,
        &spec
            .clone()
            .extension("1.3.6.1.4.1.57264.1.12", "https://github.com/org/repo"),
        &d,
        at,
    );
    trust
        .verify(&b, artifact(&d), Some(Purpose::Release), at)
        .unwrap();
    let b = bundle(
        &s,
        &spec.extension("1.3.6.1.4.1.57264.1.12", "https://github.com/org/fork"),
        &d,
        at,
    );
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Identity,
    );
    assert!(matches!(e, VerifyError::Extension { .. }), "{e}");
}

#[test]
fn purposes_windows_and_revocation_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let trust =
        IdentityTrust::from_keyring(&ring(dir.path(), &s, &exact_entry("[\"mirror-bundle\"]")))
            .unwrap();
    let d = [4u8; 32];
    let at = now();
    let b = bundle(&s, &LeafSpec::email(SAN, ISSUER, at), &d, at);
    trust
        .verify(&b, artifact(&d), Some(Purpose::MirrorBundle), at)
        .unwrap();
    match refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)) {
        EntryRefusal::Ineligible(Ineligible::Purpose(Purpose::Release)) => {}
        other => panic!("{other}"),
    }
    let text = format!("{}revoked = true\n", exact_entry("[\"release\"]"));
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    match refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)) {
        EntryRefusal::Ineligible(Ineligible::Revoked) => {}
        other => panic!("{other}"),
    }
    let text = format!(
        "{}not_after = 2021-01-01T00:00:00Z\n",
        exact_entry("[\"release\"]")
    );
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    match refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)) {
        EntryRefusal::Ineligible(Ineligible::Expired(_)) => {}
        other => panic!("{other}"),
    }
}

#[test]
fn certificate_from_an_unknown_ca() {
    let (_dir, s, trust) = release_trust();
    // Same logs (the entry verifies), another CA: the certificate check fails on its own.
    let other = s.other_ca();
    let d = [5u8; 32];
    let at = now();
    let b = bundle(&other, &LeafSpec::email(SAN, ISSUER, at), &d, at);
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Certificate,
    );
    assert!(matches!(e, VerifyError::UntrustedCertificate(_)), "{e}");
}

#[test]
fn leaf_expired_at_log_time_whole_bundle() {
    // A consistent bundle (SET, proof, checkpoint, SCT all good) whose leaf expired a minute
    // before the log integrated the entry: it fails at the certificate check, nowhere earlier.
    let (_dir, s, trust) = release_trust();
    let d = [6u8; 32];
    let at = now();
    let mut spec = LeafSpec::email(SAN, ISSUER, at);
    spec.not_before = at - time::Duration::minutes(11);
    spec.not_after = at - time::Duration::minutes(1);
    let b = bundle(&s, &spec, &d, at);
    let f = match refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)) {
        EntryRefusal::Failed(f) => f,
        other => panic!("{other}"),
    };
    assert_eq!(f.failed, Check::Certificate, "{f}");
    assert_eq!(
        f.passed,
        [
            Check::Artifact,
            Check::Material,
            Check::TransparencyLog,
            Check::Timestamps,
            Check::SigningTime
        ]
    );
    assert!(
        matches!(f.error, VerifyError::CertificateNotValidAt { .. }),
        "{}",
        f.error
    );
    // Not yet valid at the log time fails the same way.
    let mut spec = LeafSpec::email(SAN, ISSUER, at);
    spec.not_before = at + time::Duration::minutes(1);
    spec.not_after = at + time::Duration::minutes(11);
    let b = bundle(&s, &spec, &d, at);
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::Certificate,
    );
    assert!(
        matches!(e, VerifyError::CertificateNotValidAt { .. }),
        "{e}"
    );
}

#[test]
fn key_bundles_never_satisfy_identities() {
    let (_dir, s, trust) = release_trust();
    let mut v = s.dsse_bundle(
        &s.issue(&LeafSpec::email(SAN, ISSUER, now())),
        STATEMENT_TYPE,
        &statement(&"00".repeat(32)),
        now(),
    );
    v["verificationMaterial"]
        .as_object_mut()
        .unwrap()
        .remove("certificate");
    v["verificationMaterial"]["publicKey"] = serde_json::json!({"hint": "k"});
    let b = Bundle::from_value(&v).unwrap();
    assert!(matches!(
        trust.verify(&b, Artifact::Unchecked, Some(Purpose::Release), now()),
        Err(IdentityRefusal::NotKeyless)
    ));
    // A keyring without identities refuses every keyless bundle.
    let empty = IdentityTrust::from_keyring(&Keyring::default()).unwrap();
    let b = bundle(&s, &LeafSpec::email(SAN, ISSUER, now()), &[0; 32], now());
    assert!(matches!(
        empty.verify(&b, Artifact::Unchecked, None, now()),
        Err(IdentityRefusal::NoIdentities)
    ));
}

#[test]
fn message_signature_bundles_verify_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let trust =
        IdentityTrust::from_keyring(&ring(dir.path(), &s, &exact_entry("[\"attestation\"]")))
            .unwrap();
    let at = now();
    let leaf = s.issue(&LeafSpec::uri("https://ci.example.com/release", ISSUER, at));
    let v = s.message_bundle(&leaf, b"artifact bytes", at);
    let b = Bundle::from_value(&v).unwrap();
    // SAN is a URI here: the email entry refuses it.
    let e = failed_at(
        refusal(trust.verify(
            &b,
            Artifact::Bytes(b"artifact bytes"),
            Some(Purpose::Attestation),
            at,
        )),
        Check::Identity,
    );
    assert!(matches!(e, VerifyError::Identity { .. }), "{e}");
    let text = entry(
        "ci",
        "certificate_identity = \"https://ci.example.com/release\"",
        &format!("certificate_oidc_issuer = {ISSUER:?}"),
        "[\"attestation\"]",
    );
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    trust
        .verify(
            &b,
            Artifact::Bytes(b"artifact bytes"),
            Some(Purpose::Attestation),
            at,
        )
        .unwrap();
    let e = failed_at(
        refusal(trust.verify(
            &b,
            Artifact::Bytes(b"other"),
            Some(Purpose::Attestation),
            at,
        )),
        Check::Artifact,
    );
    assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
}

#[test]
fn default_trusted_root_is_public_good() {
    // No `trusted_root`: the shipped public-good root, whose CAs did not issue test leaves
    // and whose logs do not know the test log.
    let dir = tempfile::tempdir().unwrap();
    let s = TestSigstore::new();
    let text = exact_entry("[\"release\"]").replace("trusted_root = \"root.json\"\n", "");
    let trust = IdentityTrust::from_keyring(&ring(dir.path(), &s, &text)).unwrap();
    let d = [9u8; 32];
    let at = now();
    let b = bundle(&s, &LeafSpec::email(SAN, ISSUER, at), &d, at);
    let e = failed_at(
        refusal(trust.verify(&b, artifact(&d), Some(Purpose::Release), at)),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::UnknownLog { .. }), "{e}");
}

/// A bundle whose DSSE payload was read apart (a payload too large to hold) verifies as the
/// whole bundle does, with the caller's digest of the PAE; each piece of the detached form has
/// its own refusal.
#[test]
fn detached_payloads_verify_as_held_ones_do() {
    use stella_sigstore::{Content, DetachedPayload, PaeDigest};
    let (_dir, s, trust) = release_trust();
    let at = now();
    let payload: Vec<u8> = (0..100_000u32).map(|i| ((i * 7) >> 3) as u8).collect();
    let v = s.dsse_bundle(
        &s.issue(&LeafSpec::email(SAN, ISSUER, at)),
        "application/x-manifest",
        &payload,
        at,
    );
    let mut stripped = v.clone();
    stripped["dsseEnvelope"]["payload"] = "".into();
    let sha = |b: &[u8]| -> [u8; 32] { HashAlgorithm::Sha256.digest(b).try_into().unwrap() };
    let detached = DetachedPayload {
        len: payload.len() as u64,
        sha256: sha(&payload),
    };
    let b = Bundle::from_value_detached(&stripped, detached).unwrap();
    assert!(matches!(&b.content, Content::DetachedDsse(d) if d.payload == detached));
    let pae = stella_dsse::pae("application/x-manifest", &payload);
    let asked = std::cell::Cell::new(0);
    let good = |alg: HashAlgorithm| {
        asked.set(asked.get() + 1);
        Ok(alg.digest(&pae))
    };
    let m = trust
        .verify(
            &b,
            Artifact::Pae(PaeDigest(&good)),
            Some(Purpose::Release),
            at,
        )
        .unwrap();
    assert_eq!(m.identity, format!("{ISSUER} {SAN}"));
    assert!(m.verified.checks.contains(&Check::Signature));
    assert_eq!(asked.get(), 1);
    // The held form of the same bundle verifies too (the reference).
    let held = Bundle::from_value(&v).unwrap();
    trust
        .verify(&held, Artifact::Unchecked, Some(Purpose::Release), at)
        .unwrap();

    // Another PAE (one payload byte changed): the signature check fails.
    let mut other = payload.clone();
    other[50_000] ^= 1;
    let other_pae = stella_dsse::pae("application/x-manifest", &other);
    let wrong = |alg: HashAlgorithm| Ok(alg.digest(&other_pae));
    failed_at(
        refusal(trust.verify(&b, Artifact::Pae(PaeDigest(&wrong)), None, at)),
        Check::Signature,
    );
    // The digest could not be computed: said so, at the signature.
    let broken = |_: HashAlgorithm| Err("disk gone".to_string());
    let e = failed_at(
        refusal(trust.verify(&b, Artifact::Pae(PaeDigest(&broken)), None, at)),
        Check::Signature,
    );
    assert!(e.to_string().contains("disk gone"), "{e}");
    // A detached payload other than the one logged: the log entry's payload hash differs.
    let lied = Bundle::from_value_detached(
        &stripped,
        DetachedPayload {
            sha256: sha(&other),
            ..detached
        },
    )
    .unwrap();
    failed_at(
        refusal(trust.verify(&lied, Artifact::Pae(PaeDigest(&good)), None, at)),
        Check::TransparencyLog,
    );
    // A detached bundle needs the PAE digest; a held one refuses it.
    for a in [Artifact::Unchecked, artifact(&[0; 32])] {
        failed_at(refusal(trust.verify(&b, a, None, at)), Check::Artifact);
    }
    failed_at(
        refusal(trust.verify(&held, Artifact::Pae(PaeDigest(&good)), None, at)),
        Check::Artifact,
    );
    // The detached form is read only with its payload left empty.
    let e = Bundle::from_value_detached(&v, detached).unwrap_err();
    assert!(e.to_string().contains("detached payload"), "{e}");
}
