// Helpers outside #[test] fns unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};
use stella_sigstore::{
    verify, Artifact, Bundle, Check, Failure, HashAlgorithm, Identity, Matcher, Options, Policy,
    TrustedRoot, VerifyError, VerifyingKey,
};

fn data(p: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn value(p: &str) -> Value {
    serde_json::from_slice(&data(p)).unwrap()
}

fn hexd(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b64(b: &[u8]) -> String {
    stella_dsse::b64::encode(b)
}

fn unb64(s: &Value) -> Vec<u8> {
    stella_dsse::b64::decode(s.as_str().unwrap()).unwrap()
}

// --- staging v0.3 message signature (sigstore-python test/assets/bundle_v3_alt.txt.sigstore)

const STAGING: &str = "staging/bundle_v3_alt.txt.sigstore";
const STAGING_DIGEST: &str = "4191e6b4e2b0260e6e297d4797d2a873584965afef021bf22f2bb7bec41102d0";
const STAGING_SAN: &str = "william@yossarian.net";
const STAGING_ISSUER: &str = "https://github.com/login/oauth";

fn staging_root() -> TrustedRoot {
    TrustedRoot::staging().unwrap()
}

fn staging_identity() -> Policy {
    Policy::Identity(Identity::new(
        Matcher::exact(STAGING_SAN),
        Matcher::exact(STAGING_ISSUER),
    ))
}

fn run_staging(
    v: &Value,
    policy: &Policy,
    root: &TrustedRoot,
) -> Result<stella_sigstore::Verified, Failure> {
    let b = Bundle::from_value(v).unwrap();
    let d = hexd(STAGING_DIGEST);
    verify(
        &b,
        Artifact::Digest {
            algorithm: HashAlgorithm::Sha256,
            digest: &d,
        },
        policy,
        root,
        &Options::default(),
    )
}

fn fails_at(r: Result<stella_sigstore::Verified, Failure>, check: Check) -> VerifyError {
    match r {
        Ok(v) => panic!("verified, expected a failure at {check:?}: {v:?}"),
        Err(f) => {
            assert_eq!(f.failed, check, "{f}");
            f.error
        }
    }
}

#[test]
fn staging_message_signature_bundle_verifies() {
    let v = run_staging(&value(STAGING), &staging_identity(), &staging_root()).unwrap();
    assert_eq!(v.bundle_version, "0.3");
    assert_eq!(
        v.checks,
        [
            Check::Artifact,
            Check::Material,
            Check::TransparencyLog,
            Check::Timestamps,
            Check::SigningTime,
            Check::Certificate,
            Check::CertificateTransparency,
            Check::Identity,
            Check::Signature
        ]
    );
    assert_eq!(v.signing_times.len(), 1);
    assert_eq!(v.signing_times[0].at.unix_timestamp(), 1712085616);
    let e = &v.tlog_entries[0];
    assert!(e.signed_entry_timestamp && e.inclusion_proof);
    let id = v.identity.unwrap();
    assert_eq!(id.subject_alternative_names, [STAGING_SAN]);
    assert_eq!(id.issuer.as_deref(), Some(STAGING_ISSUER));
}

#[test]
fn staging_identity_by_regex_and_extension() {
    let p = Policy::Identity(
        Identity::new(
            Matcher::regex(r".*@yossarian\.net").unwrap(),
            Matcher::regex(r"https://github\.com/.*").unwrap(),
        )
        .with_extension("1.3.6.1.4.1.57264.1.1", Matcher::exact(STAGING_ISSUER))
        .unwrap(),
    );
    run_staging(&value(STAGING), &p, &staging_root()).unwrap();
    // An unanchored-looking pattern must still match the whole value.
    let p = Policy::Identity(Identity::new(
        Matcher::regex("yossarian").unwrap(),
        Matcher::exact(STAGING_ISSUER),
    ));
    let e = fails_at(
        run_staging(&value(STAGING), &p, &staging_root()),
        Check::Identity,
    );
    assert!(matches!(e, VerifyError::Identity { .. }), "{e}");
}

#[test]
fn wrong_identity() {
    let p = Policy::Identity(Identity::new(
        Matcher::exact("someone@example.com"),
        Matcher::exact(STAGING_ISSUER),
    ));
    let e = fails_at(
        run_staging(&value(STAGING), &p, &staging_root()),
        Check::Identity,
    );
    assert!(
        matches!(&e, VerifyError::Identity { found, .. } if found == &[STAGING_SAN]),
        "{e}"
    );
}

#[test]
fn wrong_issuer() {
    let p = Policy::Identity(Identity::new(
        Matcher::exact(STAGING_SAN),
        Matcher::exact("https://accounts.google.com"),
    ));
    let e = fails_at(
        run_staging(&value(STAGING), &p, &staging_root()),
        Check::Identity,
    );
    assert!(
        matches!(&e, VerifyError::Issuer { found: Some(f), .. } if f == STAGING_ISSUER),
        "{e}"
    );
}

#[test]
fn wrong_extension_value() {
    let p = Policy::Identity(
        Identity::new(Matcher::exact(STAGING_SAN), Matcher::exact(STAGING_ISSUER))
            .with_extension(
                "1.3.6.1.4.1.57264.1.12",
                Matcher::exact("https://github.com/x/y"),
            )
            .unwrap(),
    );
    let e = fails_at(
        run_staging(&value(STAGING), &p, &staging_root()),
        Check::Identity,
    );
    assert!(
        matches!(e, VerifyError::Extension { found: None, .. }),
        "{e}"
    );
}

#[test]
fn mismatched_digest() {
    let b = Bundle::from_value(&value(STAGING)).unwrap();
    let d = [0u8; 32];
    let e = fails_at(
        verify(
            &b,
            Artifact::Digest {
                algorithm: HashAlgorithm::Sha256,
                digest: &d,
            },
            &staging_identity(),
            &staging_root(),
            &Options::default(),
        ),
        Check::Artifact,
    );
    assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
    let e = fails_at(
        verify(
            &b,
            Artifact::Bytes(b"not the artifact"),
            &staging_identity(),
            &staging_root(),
            &Options::default(),
        ),
        Check::Artifact,
    );
    assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
}

#[test]
fn bad_set() {
    let mut v = value(STAGING);
    let entry = &mut v["verificationMaterial"]["tlogEntries"][0];
    let mut set = unb64(&entry["inclusionPromise"]["signedEntryTimestamp"]);
    let n = set.len();
    set[n - 3] ^= 1;
    entry["inclusionPromise"]["signedEntryTimestamp"] = json!(b64(&set));
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::Set { index: 0, .. }), "{e}");
}

#[test]
fn bad_inclusion_proof() {
    let mut v = value(STAGING);
    let h = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][3];
    let mut b = unb64(h);
    b[0] ^= 0x80;
    *h = json!(b64(&b));
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(
        matches!(e, VerifyError::InclusionProof { index: 0, .. }),
        "{e}"
    );
}

#[test]
fn wrong_checkpoint_key() {
    // The same checkpoint text, signed by another log (the public-good key hint and signature).
    let mut v = value(STAGING);
    let cp = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
        ["envelope"];
    let text = cp.as_str().unwrap().to_string();
    let (body, _) = text.split_once("\n\n").unwrap();
    let other = "\u{2014} rekor.sigstore.dev wNI9ajBFAiBxaGyEtxkzFLkaCSEJqFuSS3dJjEZCNiyByVs1CNVQ8gIhAOoNnXtmMtTctV2oRnSRUZAo4EWUYPK/vBsqOzAU6TMs\n";
    *cp = json!(format!("{body}\n\n{other}"));
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(
        matches!(&e, VerifyError::Checkpoint { reason, .. } if reason.contains("no signature by the log key")),
        "{e}"
    );
    // A checkpoint the log signed, but for another tree: the signature no longer verifies.
    let mut v = value(STAGING);
    let cp = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
        ["envelope"];
    let text = cp.as_str().unwrap().replace("\n25901179\n", "\n25901180\n");
    *cp = json!(text);
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::Checkpoint { .. }), "{e}");
}

#[test]
fn tampered_body() {
    let mut v = value(STAGING);
    let entry = &mut v["verificationMaterial"]["tlogEntries"][0];
    let body = String::from_utf8(unb64(&entry["canonicalizedBody"])).unwrap();
    let tampered = body.replace(STAGING_DIGEST, &"0".repeat(64));
    assert_ne!(body, tampered);
    entry["canonicalizedBody"] = json!(b64(tampered.as_bytes()));
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(
        matches!(&e, VerifyError::Body { index: 0, reason } if reason.contains("artifact digest")),
        "{e}"
    );
}

#[test]
fn unknown_log_id() {
    let mut v = value(STAGING);
    v["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"] = json!(b64(&[9u8; 32]));
    let e = fails_at(
        run_staging(&v, &staging_identity(), &staging_root()),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::UnknownLog { index: 0, .. }), "{e}");
}

fn root_with(f: impl Fn(&mut Value)) -> TrustedRoot {
    let mut r: Value = serde_json::from_slice(stella_sigstore::trust::STAGING_JSON).unwrap();
    f(&mut r);
    TrustedRoot::from_json(&serde_json::to_vec(&r).unwrap()).unwrap()
}

#[test]
fn log_key_not_valid_at_integrated_time() {
    let root = root_with(|r| {
        r["tlogs"][0]["publicKey"]["validFor"]["start"] = json!("2024-05-01T00:00:00Z");
    });
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::TransparencyLog,
    );
    assert!(
        matches!(e, VerifyError::LogKeyNotValid { index: 0, .. }),
        "{e}"
    );
}

#[test]
fn ca_expired_at_log_time() {
    let root = root_with(|r| {
        r["certificateAuthorities"][0]["validFor"]["end"] = json!("2024-01-01T00:00:00Z");
    });
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::Certificate,
    );
    assert!(
        matches!(&e, VerifyError::UntrustedCertificate(r) if r.contains("not valid at the signing time")),
        "{e}"
    );
}

#[test]
fn leaf_expired_at_signing_time() {
    // The real leaf (valid 19:20:16–19:30:16 inclusive) at the log time, and eleven minutes after it.
    let b = Bundle::from_value(&value(STAGING)).unwrap();
    let leaf = stella_sigstore::cert::FulcioCert::from_der(b.material.leaf().unwrap()).unwrap();
    let t = time::OffsetDateTime::from_unix_timestamp(1712085616).unwrap();
    leaf.check_valid_at(t).unwrap();
    let e = leaf
        .check_valid_at(t + time::Duration::minutes(11))
        .unwrap_err();
    assert!(
        matches!(e, VerifyError::CertificateNotValidAt { .. }),
        "{e}"
    );
}

#[test]
fn untrusted_ca() {
    // Verified against the public-good root: no Fulcio CA there issued the staging leaf (and
    // the staging log is unknown there, so the log check is what fails first).
    let e = fails_at(
        run_staging(
            &value(STAGING),
            &staging_identity(),
            &TrustedRoot::public_good().unwrap(),
        ),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::UnknownLog { .. }), "{e}");
    // Same log, other CAs: the certificate check fails on its own.
    let pg: Value = serde_json::from_slice(stella_sigstore::trust::PUBLIC_GOOD_JSON).unwrap();
    let root = root_with(|r| r["certificateAuthorities"] = pg["certificateAuthorities"].clone());
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::Certificate,
    );
    assert!(matches!(e, VerifyError::UntrustedCertificate(_)), "{e}");
}

#[test]
fn sct_from_unknown_ct_log() {
    let root = root_with(|r| r["ctlogs"] = json!([]));
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::CertificateTransparency,
    );
    assert!(matches!(e, VerifyError::Sct(_)), "{e}");
    // A known log id with another key: the SCT signature fails.
    let root = root_with(|r| {
        let other = r["ctlogs"][1]["publicKey"]["rawBytes"].clone();
        r["ctlogs"][2]["publicKey"]["rawBytes"] = other;
    });
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::CertificateTransparency,
    );
    assert!(
        matches!(&e, VerifyError::Sct(r) if r.contains("does not verify")),
        "{e}"
    );
}

fn as_v02_chain(extra: &[Vec<u8>]) -> Value {
    let mut v = value(STAGING);
    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.2");
    let vm = v["verificationMaterial"].as_object_mut().unwrap();
    let leaf = vm.remove("certificate").unwrap();
    let mut certs = vec![leaf];
    certs.extend(extra.iter().map(|d| json!({"rawBytes": b64(d)})));
    vm.insert(
        "x509CertificateChain".into(),
        json!({"certificates": certs}),
    );
    v
}

#[test]
fn v02_chain_verifies_and_chain_with_root_is_refused() {
    let root = staging_root();
    let ca = &root.certificate_authorities[0].chain;
    let (inter, top) = (ca[0].der().to_vec(), ca[1].der().to_vec());
    run_staging(&as_v02_chain(&[]), &staging_identity(), &root).unwrap();
    run_staging(
        &as_v02_chain(std::slice::from_ref(&inter)),
        &staging_identity(),
        &root,
    )
    .unwrap();
    let e = fails_at(
        run_staging(&as_v02_chain(&[inter, top]), &staging_identity(), &root),
        Check::Material,
    );
    assert!(matches!(e, VerifyError::ChainIncludesRoot { .. }), "{e}");
}

#[test]
fn key_policy_refuses_certificate_bundles() {
    let key = VerifyingKey::from_pem(&data("public-good/npm-registry.pub")).unwrap();
    let e = fails_at(
        run_staging(&value(STAGING), &Policy::Key(key), &staging_root()),
        Check::Material,
    );
    assert!(matches!(e, VerifyError::Material(_)), "{e}");
}

// --- public-good v0.2 message signature (sigstore-go examples/bundle-v02.json)

const PG_V02: &str = "public-good/bundle-v02.json";
const PG_V02_DIGEST: &str = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";

#[test]
fn public_good_v02_without_set_has_no_verified_time() {
    // The entry carries an inclusion proof and checkpoint (verified), but no SET: its
    // integrated time is not signed by anyone, so it cannot date the short-lived certificate.
    let b = Bundle::from_value(&value(PG_V02)).unwrap();
    let d = hexd(PG_V02_DIGEST);
    let policy = Policy::Identity(Identity::new(
        Matcher::regex("https://github.com/sigstore-conformance/.*").unwrap(),
        Matcher::exact("https://token.actions.githubusercontent.com"),
    ));
    let f = verify(
        &b,
        Artifact::Digest {
            algorithm: HashAlgorithm::Sha256,
            digest: &d,
        },
        &policy,
        &TrustedRoot::public_good().unwrap(),
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(f.failed, Check::SigningTime);
    assert!(f.passed.contains(&Check::TransparencyLog));
    assert!(matches!(
        f.error,
        VerifyError::NoVerifiedTime { have: 0, need: 1 }
    ));
    // Its inclusion proof is checked for real: a wrong path fails before.
    let mut v = value(PG_V02);
    v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["logIndex"] = json!("23083060");
    let b = Bundle::from_value(&v).unwrap();
    let f = verify(
        &b,
        Artifact::Digest {
            algorithm: HashAlgorithm::Sha256,
            digest: &d,
        },
        &policy,
        &TrustedRoot::public_good().unwrap(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        matches!(f.error, VerifyError::InclusionProof { .. }),
        "{}",
        f.error
    );
}

// --- public-good v0.1 DSSE, key-signed (sigstore-go examples/bundle-publish.json; npm key)

const PG_DSSE: &str = "public-good/bundle-publish.json";
const NPM_SHA512: &str = "76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751";

fn npm_key() -> Policy {
    Policy::Key(VerifyingKey::from_pem(&data("public-good/npm-registry.pub")).unwrap())
}

fn run_dsse(
    v: &Value,
    policy: &Policy,
    options: &Options,
) -> Result<stella_sigstore::Verified, Failure> {
    let b = Bundle::from_value(v).unwrap();
    let d = hexd(NPM_SHA512);
    verify(
        &b,
        Artifact::Digest {
            algorithm: HashAlgorithm::Sha512,
            digest: &d,
        },
        policy,
        &TrustedRoot::public_good().unwrap(),
        options,
    )
}

#[test]
fn public_good_dsse_key_bundle_verifies() {
    let v = run_dsse(&value(PG_DSSE), &npm_key(), &Options::default()).unwrap();
    assert_eq!(v.bundle_version, "0.1");
    assert!(v.checks.contains(&Check::Signature) && v.checks.contains(&Check::TransparencyLog));
    assert!(v.tlog_entries[0].signed_entry_timestamp);
    assert!(v.identity.is_none());
}

#[test]
fn dsse_subject_not_found() {
    let b = Bundle::from_value(&value(PG_DSSE)).unwrap();
    let e = fails_at(
        verify(
            &b,
            Artifact::Bytes(b"another package"),
            &npm_key(),
            &TrustedRoot::public_good().unwrap(),
            &Options::default(),
        ),
        Check::Artifact,
    );
    assert!(matches!(e, VerifyError::SubjectNotFound { .. }), "{e}");
}

#[test]
fn dsse_wrong_key_is_caught_by_the_log_entry_then_the_signature() {
    let other =
        VerifyingKey::from_spki_der(TrustedRoot::public_good().unwrap().tlogs[0].key.spki_der())
            .unwrap();
    let e = fails_at(
        run_dsse(
            &value(PG_DSSE),
            &Policy::Key(other.clone()),
            &Options::default(),
        ),
        Check::TransparencyLog,
    );
    assert!(
        matches!(&e, VerifyError::Body { reason, .. } if reason.contains("another public key")),
        "{e}"
    );
    // Without the log entry (and no log required), the signature check itself refuses it.
    let mut v = value(PG_DSSE);
    v["verificationMaterial"]["tlogEntries"] = json!([]);
    let none = Options {
        tlog_threshold: 0,
        ..Options::default()
    };
    run_dsse(&v, &npm_key(), &none).unwrap();
    let e = fails_at(run_dsse(&v, &Policy::Key(other), &none), Check::Signature);
    assert!(matches!(e, VerifyError::Signature { .. }), "{e}");
    let e = fails_at(
        run_dsse(&v, &npm_key(), &Options::default()),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::NoTlogEntry { need: 1 }), "{e}");
}

#[test]
fn dsse_bad_set_and_tampered_body() {
    let mut v = value(PG_DSSE);
    v["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!("1681839917");
    let e = fails_at(
        run_dsse(&v, &npm_key(), &Options::default()),
        Check::TransparencyLog,
    );
    assert!(matches!(e, VerifyError::Set { .. }), "{e}");
    let mut v = value(PG_DSSE);
    let mut sig = unb64(&v["dsseEnvelope"]["signatures"][0]["sig"]);
    sig[10] ^= 1;
    v["dsseEnvelope"]["signatures"][0]["sig"] = json!(b64(&sig));
    let e = fails_at(
        run_dsse(&v, &npm_key(), &Options::default()),
        Check::TransparencyLog,
    );
    assert!(
        matches!(&e, VerifyError::Body { reason, .. } if reason.contains("signature")),
        "{e}"
    );
}

#[test]
fn url_safe_unpadded_bytes_read_the_same() {
    let mut v = value(PG_DSSE);
    let s = v["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    let url = s
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string();
    v["dsseEnvelope"]["signatures"][0]["sig"] = json!(url);
    run_dsse(&v, &npm_key(), &Options::default()).unwrap();
}

// --- public-good v0.1 DSSE with an RFC 3161 timestamp (sigstore-go
// examples/bundle-with-timestamp.json; its TSA from examples/trusted-root-with-tsa.json)

const PG_TSA: &str = "public-good/bundle-with-timestamp.json";
const TSA_SHA512: &str = "bbfd372fc9beeb777fe35d05bb10c0c70a9733d366a75fed7dd18866c7391de3ee7e88ba74dd47abf3e15c845e547fcf0e5c3da80854c751554224d3a6d4e55f";

fn tsa_root(f: impl Fn(&mut Value)) -> TrustedRoot {
    let mut r: Value = serde_json::from_slice(stella_sigstore::trust::PUBLIC_GOOD_JSON).unwrap();
    r["timestampAuthorities"] = value("public-good/tsa-github-staging.json");
    f(&mut r);
    TrustedRoot::from_json(&serde_json::to_vec(&r).unwrap()).unwrap()
}

fn run_tsa(v: &Value, root: &TrustedRoot) -> Result<stella_sigstore::Verified, Failure> {
    let b = Bundle::from_value(v).unwrap();
    let d = hexd(TSA_SHA512);
    let policy = Policy::Identity(Identity::new(
        Matcher::exact("brian@dehamer.com"),
        Matcher::exact("https://github.com/login/oauth"),
    ));
    // The bundle has no log entry: its time comes from the timestamp alone.
    verify(
        &b,
        Artifact::Digest {
            algorithm: HashAlgorithm::Sha512,
            digest: &d,
        },
        &policy,
        root,
        &Options {
            tlog_threshold: 0,
            ..Options::default()
        },
    )
}

#[test]
fn timestamped_bundle_verifies_by_its_tsa_time() {
    let v = run_tsa(&value(PG_TSA), &tsa_root(|_| {})).unwrap();
    assert_eq!(v.timestamps, 1);
    assert_eq!(v.signing_times.len(), 1);
    assert_eq!(
        v.signing_times[0].source,
        stella_sigstore::TimeSource::Timestamp
    );
    assert_eq!(v.signing_times[0].time, "2023-05-08T21:42:05.000Z");
    // With the shipped public-good root (another TSA), the timestamp is not trusted.
    let e = fails_at(
        run_tsa(&value(PG_TSA), &TrustedRoot::public_good().unwrap()),
        Check::Timestamps,
    );
    assert!(
        matches!(e, VerifyError::TimestampAuthority { index: 0, .. }),
        "{e}"
    );
}

#[test]
fn tsa_outside_validity() {
    let root = tsa_root(|r| {
        r["timestampAuthorities"][0]["validFor"]["end"] = json!("2023-05-01T00:00:00Z")
    });
    let e = fails_at(run_tsa(&value(PG_TSA), &root), Check::Timestamps);
    assert!(
        matches!(&e, VerifyError::TimestampAuthority { reason, .. } if reason.contains("not valid then")),
        "{e}"
    );
}

#[test]
fn timestamp_over_another_signature() {
    let mut v = value(PG_TSA);
    let mut sig = unb64(&v["dsseEnvelope"]["signatures"][0]["sig"]);
    sig[12] ^= 1;
    v["dsseEnvelope"]["signatures"][0]["sig"] = json!(b64(&sig));
    let e = fails_at(run_tsa(&v, &tsa_root(|_| {})), Check::Timestamps);
    assert!(
        matches!(&e, VerifyError::Timestamp { reason, .. } if reason.contains("imprint")),
        "{e}"
    );
}

#[test]
fn tampered_timestamp_token() {
    let mut v = value(PG_TSA);
    let ts = &mut v["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
        ["signedTimestamp"];
    let mut t = unb64(ts);
    let n = t.len();
    t[n - 5] ^= 1; // inside the CMS signature
    *ts = json!(b64(&t));
    let e = fails_at(run_tsa(&v, &tsa_root(|_| {})), Check::Timestamps);
    assert!(matches!(e, VerifyError::Timestamp { .. }), "{e}");
}

#[test]
fn no_verified_time_without_log_or_timestamp() {
    let mut v = value(PG_TSA);
    v["verificationMaterial"]["timestampVerificationData"] = json!({"rfc3161Timestamps": []});
    let e = fails_at(run_tsa(&v, &tsa_root(|_| {})), Check::SigningTime);
    assert!(
        matches!(e, VerifyError::NoVerifiedTime { have: 0, need: 1 }),
        "{e}"
    );
}

#[test]
fn ca_chain_that_does_not_link_is_not_trusted() {
    // The staging intermediate above the public-good root: each certificate is fine, the
    // link is not.
    let pg: Value = serde_json::from_slice(stella_sigstore::trust::PUBLIC_GOOD_JSON).unwrap();
    let root = root_with(|r| {
        r["certificateAuthorities"][0]["certChain"]["certificates"][1] =
            pg["certificateAuthorities"][1]["certChain"]["certificates"][1].clone();
    });
    assert!(!root.certificate_authorities[0].links_verified);
    let e = fails_at(
        run_staging(&value(STAGING), &staging_identity(), &root),
        Check::Certificate,
    );
    assert!(
        matches!(&e, VerifyError::UntrustedCertificate(r) if r.contains("own chain does not verify")),
        "{e}"
    );
}

// --- staging Rekor v2 (tlog-tiles) entry, v0.3 message signature with a timestamp
// (sigstore-python test/assets/staging-rekor-v2.txt.sigstore.json and its artifact)

const V2: &str = "staging/staging-rekor-v2.txt.sigstore.json";

fn run_v2(v: &Value, root: &TrustedRoot) -> Result<stella_sigstore::Verified, Failure> {
    let b = Bundle::from_value(v).unwrap();
    let artifact = data("staging/staging-rekor-v2.txt");
    verify(
        &b,
        Artifact::Bytes(&artifact),
        &Policy::Identity(Identity::new(
            Matcher::exact("jku@goto.fi"),
            Matcher::exact("https://github.com/login/oauth"),
        )),
        root,
        &Options::default(),
    )
}

#[test]
fn rekor_v2_entry_verifies_by_checkpoint_and_timestamp() {
    let v = run_v2(&value(V2), &staging_root()).unwrap();
    let e = &v.tlog_entries[0];
    assert!(e.inclusion_proof && !e.signed_entry_timestamp);
    assert_eq!(v.signing_times.len(), 1);
    assert_eq!(
        v.signing_times[0].source,
        stella_sigstore::TimeSource::Timestamp
    );
}

#[test]
fn rekor_v2_negative_twins() {
    // Checkpoint signature by someone else (a flipped byte in the Ed25519 signature).
    let mut v = value(V2);
    let cp = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
        ["envelope"];
    let text = cp.as_str().unwrap().replace("8w1amQA0", "8w1amQA1");
    *cp = json!(text);
    let e = fails_at(run_v2(&v, &staging_root()), Check::TransparencyLog);
    assert!(matches!(e, VerifyError::Checkpoint { .. }), "{e}");
    // A body for another artifact.
    let mut v = value(V2);
    let entry = &mut v["verificationMaterial"]["tlogEntries"][0];
    let body = String::from_utf8(unb64(&entry["canonicalizedBody"])).unwrap();
    let tampered = body.replace("FfZyRhFZ", "AfZyRhFZ");
    assert_ne!(body, tampered);
    entry["canonicalizedBody"] = json!(b64(tampered.as_bytes()));
    let e = fails_at(run_v2(&v, &staging_root()), Check::TransparencyLog);
    assert!(matches!(e, VerifyError::Body { .. }), "{e}");
    // Wrong inclusion path.
    let mut v = value(V2);
    v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][1] =
        json!(b64(&[7u8; 32]));
    let e = fails_at(run_v2(&v, &staging_root()), Check::TransparencyLog);
    assert!(matches!(e, VerifyError::InclusionProof { .. }), "{e}");
    // The Rekor v2 log key's validity is judged at the timestamp time (there is no
    // integrated time, and never the wall clock): a key valid only from a day after it, or
    // that ended a day before it, fails at the log check with its own error.
    let stamp = time::OffsetDateTime::from_unix_timestamp(
        run_v2(&value(V2), &staging_root()).unwrap().signing_times[0]
            .at
            .unix_timestamp(),
    )
    .unwrap();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for (field, t) in [
        ("start", stamp + time::Duration::days(1)),
        ("end", stamp - time::Duration::days(1)),
    ] {
        let root = root_with(|r| {
            let logs = r["tlogs"].as_array_mut().unwrap();
            let v2 = logs
                .iter_mut()
                .find(|l| l["publicKey"]["keyDetails"] == "PKIX_ED25519")
                .unwrap();
            if field == "end" {
                v2["publicKey"]["validFor"]["start"] = json!("2025-01-01T00:00:00Z");
            }
            v2["publicKey"]["validFor"][field] = json!(fmt(t));
        });
        let e = fails_at(run_v2(&value(V2), &root), Check::TransparencyLog);
        assert!(
            matches!(e, VerifyError::LogKeyNotValidAtTimestamp { index: 0, .. }),
            "{field}: {e}"
        );
    }
    // Without its timestamp there is no signing time (no SET in Rekor v2).
    let mut v = value(V2);
    v["verificationMaterial"]["timestampVerificationData"] = json!({});
    let e = fails_at(run_v2(&v, &staging_root()), Check::SigningTime);
    assert!(
        matches!(e, VerifyError::NoVerifiedTime { have: 0, .. }),
        "{e}"
    );
}

// --- copies and floods of what the signer did not sign (log entries, timestamps): a
// threshold counts logs and timestamp authorities, not copies; more than sigstore-go's 32
// of either is refused before any is checked.

#[test]
fn copies_of_a_log_entry_are_refused_and_one_log_meets_no_threshold_of_two() {
    let entry = value(PG_DSSE)["verificationMaterial"]["tlogEntries"][0].clone();
    let with_entries = |entries: Vec<Value>| {
        let mut v = value(PG_DSSE);
        v["verificationMaterial"]["tlogEntries"] = Value::Array(entries);
        v
    };
    // The same entry twice: refused, whatever the threshold.
    for need in [1, 2] {
        let opts = Options {
            tlog_threshold: need,
            ..Options::default()
        };
        let e = fails_at(
            run_dsse(
                &with_entries(vec![entry.clone(), entry.clone()]),
                &npm_key(),
                &opts,
            ),
            Check::TransparencyLog,
        );
        assert!(
            matches!(
                e,
                VerifyError::DuplicateTlogEntry {
                    first: 0,
                    index: 1,
                    ..
                }
            ),
            "{e}"
        );
    }
    // Two entries of one log (another index): one log, not the two a threshold of 2 needs.
    let mut other = entry.clone();
    other["logIndex"] = json!("1");
    let opts = Options {
        tlog_threshold: 2,
        ..Options::default()
    };
    let e = fails_at(
        run_dsse(&with_entries(vec![entry.clone(), other]), &npm_key(), &opts),
        Check::TransparencyLog,
    );
    assert!(
        matches!(e, VerifyError::TooFewLogs { have: 1, need: 2 }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the bundle's entries come from 1 transparency log(s), 2 required (entries of one log count once)"
    );
    // 33 entries (distinct indexes): refused by count, before any is checked (the copies'
    // SETs would fail).
    let many: Vec<Value> = (0..=stella_sigstore::MAX_TLOG_ENTRIES)
        .map(|i| {
            let mut e = entry.clone();
            e["logIndex"] = json!((i + 100).to_string());
            e
        })
        .collect();
    let e = fails_at(
        run_dsse(&with_entries(many), &npm_key(), &Options::default()),
        Check::TransparencyLog,
    );
    assert!(
        matches!(e, VerifyError::TooManyTlogEntries { count: 33, max: 32 }),
        "{e}"
    );
    // The untouched bundle still verifies.
    run_dsse(&with_entries(vec![entry]), &npm_key(), &Options::default()).unwrap();
}

#[test]
fn copies_of_a_timestamp_count_once_and_a_flood_is_refused() {
    let stamp = value(PG_TSA)["verificationMaterial"]["timestampVerificationData"]
        ["rfc3161Timestamps"][0]
        .clone();
    let with_stamps = |n: usize| {
        let mut v = value(PG_TSA);
        v["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] =
            Value::Array(vec![stamp.clone(); n]);
        v
    };
    let run = |v: &Value, time_threshold: usize| {
        let b = Bundle::from_value(v).unwrap();
        let d = hexd(TSA_SHA512);
        verify(
            &b,
            Artifact::Digest {
                algorithm: HashAlgorithm::Sha512,
                digest: &d,
            },
            &Policy::Identity(Identity::new(
                Matcher::exact("brian@dehamer.com"),
                Matcher::exact("https://github.com/login/oauth"),
            )),
            &tsa_root(|_| {}),
            &Options {
                tlog_threshold: 0,
                time_threshold,
            },
        )
    };
    // Two copies of one authority's timestamp: each verifies, together one witness.
    let v = run(&with_stamps(2), 1).unwrap();
    assert_eq!(v.timestamps, 2);
    let e = fails_at(run(&with_stamps(2), 2), Check::SigningTime);
    assert!(
        matches!(e, VerifyError::NoVerifiedTime { have: 1, need: 2 }),
        "{e}"
    );
    // At the cap they are all checked; above it, none.
    run(&with_stamps(stella_sigstore::MAX_TIMESTAMPS), 1).unwrap();
    let e = fails_at(
        run(&with_stamps(stella_sigstore::MAX_TIMESTAMPS + 1), 1),
        Check::Timestamps,
    );
    assert!(
        matches!(e, VerifyError::TooManyTimestamps { count: 33, max: 32 }),
        "{e}"
    );
}
