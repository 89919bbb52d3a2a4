//! Release integrity through OCI referrers: a real `docker-registry` (stella-oci's testing
//! guard) holding scanner images signed (or not) with `stella_oci::sign_image`, the Signer
//! configured with `release.repository` + a release keyring.

use serde_json::Value;
use stella_keys::{Algorithm, FileKey, Signer as _};
use stella_oci::testing::{self, Registry};
use stella_oci::{Client, ClientConfig, CredentialSource, Digest, PushOptions, Reference};
use stella_signer::client::DpopKey;
use stella_signer::ReleaseConfig;
use stella_signer::ReleaseGate;
use stella_store::Outcome;

use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";
const VERIFY: &str = "/api/v1/signer/verify/referrers";
const REPO: &str = "stellaops/scanner";

pub(crate) fn oci() -> Client {
    Client::new(ClientConfig {
        credentials: CredentialSource::Anonymous,
        ..ClientConfig::default()
    })
    .unwrap()
}

/// Push a random image to `REPO:tag`; its manifest digest.
pub(crate) async fn push_image(reg: &Registry, tag: &str) -> (Reference, Digest) {
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "x", &[10_000]);
    let r = Reference::parse(&format!("{}/{REPO}:{tag}", reg.host())).unwrap();
    stella_oci::push_from_layout(
        &oci(),
        layout.root(),
        &img.digest,
        &r,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    (r.pinned(img.digest), img.digest)
}

/// A keyring file: `release` for purpose release, `attest` for purpose attestation only.
pub(crate) fn write_keyring(
    dir: &std::path::Path,
    release: &FileKey,
    attest: &FileKey,
) -> std::path::PathBuf {
    let p = dir.join("release-keyring.toml");
    let text = format!(
        "[[keys]]\nid = \"release-2026\"\npurposes = [\"release\"]\npublic_key = '''\n{}'''\n\n\
         [[keys]]\nid = \"attest-only\"\npurposes = [\"attestation\"]\npublic_key = '''\n{}'''\n",
        release.public_key().to_pem(),
        attest.public_key().to_pem(),
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// Registry requests served so far (access log: GET and HEAD on the repository).
pub(crate) fn registry_reads(reg: &Registry) -> usize {
    let part = format!("/v2/{REPO}/");
    reg.requests("GET", &part).len() + reg.requests("HEAD", &part).len()
}

pub(crate) struct Caller {
    http: reqwest::Client,
    key: DpopKey,
    token: String,
}

impl Caller {
    pub(crate) async fn new() -> Caller {
        let key = DpopKey::generate().unwrap();
        let token = authority()
            .token("a-dpop", "signer.sign", Some(&key), None)
            .await;
        Caller {
            http: authority().pki.http(None),
            key,
            token,
        }
    }

    pub(crate) async fn sign(&self, s: &TestSigner, scanner: &str) -> Reply {
        let mut body = sign_body("poe-a");
        body["scannerImageDigest"] = Value::String(scanner.to_string());
        send_dpop(&self.http, &s.url(SIGN), &self.token, &self.key, &body).await
    }

    async fn verify(&self, s: &TestSigner, query: &str) -> Reply {
        let url = s.url(VERIFY);
        let proof = self
            .key
            .proof("GET", &url, Some(&self.token), None)
            .unwrap();
        let resp = self
            .http
            .get(format!("{url}?{query}"))
            .header("authorization", format!("DPoP {}", self.token))
            .header("dpop", proof)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_integrity_through_oci_referrers() {
    let mut reg = Registry::start();
    let c = oci();
    let release = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let attest = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let stranger = FileKey::generate(Algorithm::Ed25519).unwrap();

    let (signed_ref, signed) = push_image(&reg, "1.0").await;
    stella_oci::sign_image(&c, &signed_ref, &release)
        .await
        .unwrap();
    let (_, unsigned) = push_image(&reg, "1.1").await;
    let (wrong_purpose_ref, wrong_purpose) = push_image(&reg, "1.2").await;
    stella_oci::sign_image(&c, &wrong_purpose_ref, &attest)
        .await
        .unwrap();
    let (foreign_ref, foreign) = push_image(&reg, "1.3").await;
    stella_oci::sign_image(&c, &foreign_ref, &stranger)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ring = write_keyring(dir.path(), &release, &attest);
    let mut s = TestSigner::start_with(Opts {
        toml: format!(
            "[release]\nrepository = \"{}/{REPO}\"\nkeyring = \"{}\"\nregistry_attempts = 2\n",
            reg.host(),
            ring.display()
        ),
        ..Opts::default()
    })
    .await;
    let caller = Caller::new().await;

    // Signed by the release key: signed, audited as trusted-referrer.
    let r = caller.sign(&s, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.outcome, Outcome::Signed);
    assert_eq!(
        rec.scanner_digest.as_deref(),
        Some(signed.to_string().as_str())
    );
    assert_eq!(rec.scanner_verdict.as_deref(), Some("trusted-referrer"));
    let gate = s.state.release.referrers().unwrap();
    assert_eq!(gate.registry_lookups(), 1);

    // The same digest again: the trusted verdict comes from the cache, no registry request.
    let reads = registry_reads(&reg);
    assert!(reads > 0, "the first check read the registry");
    let r = caller.sign(&s, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.audit(r.audit_id()).scanner_verdict.as_deref(),
        Some("trusted-referrer")
    );
    assert_eq!(
        registry_reads(&reg),
        reads,
        "cached: no new registry request"
    );
    assert_eq!(gate.registry_lookups(), 1);

    // /verify/referrers: the verdict with signer and key id (from the cache as well).
    let v = caller.verify(&s, &format!("digest={signed}")).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["digest"], signed.to_string());
    assert_eq!(v.body["trusted"], true);
    assert_eq!(v.body["signer"], "release-2026");
    assert_eq!(v.body["keyid"], release.key_id().as_str());
    assert_eq!(
        v.body["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert!(v.body["reason"].is_string());
    let vrec = s.audit(v.audit_id());
    assert_eq!(vrec.route, format!("GET {VERIFY}"));
    assert_eq!(vrec.outcome, Outcome::Verified, "a check signs nothing");
    assert!(vrec.envelope_sha256.is_none());
    assert_eq!(vrec.scanner_verdict.as_deref(), Some("trusted-referrer"));
    assert_eq!(vrec.caller.client.as_deref(), Some("a-dpop"));
    assert_eq!(registry_reads(&reg), reads);

    // Unsigned: 403 release_untrusted with the verdict's reason; the verdict says why.
    let r = caller.sign(&s, &unsigned.to_string()).await;
    let rec = assert_refused(&s, &r, 403, "release_untrusted");
    assert_eq!(rec.scanner_verdict.as_deref(), Some("untrusted"));
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("not a trusted scanner release: "),
        "{detail}"
    );
    let v = caller.verify(&s, &format!("digest={unsigned}")).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["trusted"], false);
    assert_eq!(v.body["signer"], Value::Null);
    let reason = v.body["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert!(detail.ends_with(reason), "{detail} / {reason}");
    assert_eq!(
        s.audit(v.audit_id()).scanner_verdict.as_deref(),
        Some("untrusted")
    );

    // Signed by a keyring key without purpose `release`, or by a key not in the keyring.
    for d in [wrong_purpose, foreign] {
        let r = caller.sign(&s, &d.to_string()).await;
        let rec = assert_refused(&s, &r, 403, "release_untrusted");
        assert_eq!(rec.scanner_verdict.as_deref(), Some("untrusted"));
    }
    let v = caller.verify(&s, &format!("digest={wrong_purpose}")).await;
    assert_eq!(v.body["trusted"], false);
    assert!(
        v.body["reason"].as_str().unwrap().contains("release"),
        "{}",
        v.body
    );

    // Registry down: fail closed with 503, nothing signed; untrusted verdicts are not cached,
    // so the unsigned image needs the registry again.
    reg.stop();
    let lookups = gate.registry_lookups();
    let r = caller.sign(&s, &unsigned.to_string()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "upstream_unavailable"),
        "{}",
        r.body
    );
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.outcome, Outcome::Error);
    assert_eq!(rec.scanner_verdict.as_deref(), Some("unavailable"));
    assert!(rec.envelope_sha256.is_none() && rec.key_ids.is_empty());
    assert!(r.body.get("bundle").is_none());
    let v = caller.verify(&s, &format!("digest={foreign}")).await;
    assert_eq!(
        (v.status, v.code()),
        (503, "upstream_unavailable"),
        "{}",
        v.body
    );
    assert_eq!(gate.registry_lookups(), lookups + 2);
    // A cached trusted verdict and the allow-list need no registry.
    let r = caller.sign(&s, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = caller.sign(&s, SCANNER).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.audit(r.audit_id()).scanner_verdict.as_deref(),
        Some("trusted-allowlist")
    );
    assert!(s
        .state
        .metrics
        .render()
        .contains("stella_signer_release_unavailable_total 2"));
    s.stop().await;
}

#[tokio::test]
async fn verify_referrers_without_a_repository() {
    let mut s = TestSigner::start().await;
    let caller = Caller::new().await;

    // Authenticated like the sign routes.
    let resp = caller
        .http
        .get(format!("{}?digest={SCANNER}", s.url(VERIFY)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let plain = caller
        .http
        .get(format!("{}?digest={SCANNER}", s.url(VERIFY)))
        .header("authorization", format!("Bearer {}", caller.token))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401, "a DPoP-bound token used as Bearer");

    // Malformed, missing, repeated digests: 400, audited.
    for q in [
        "digest=sha256:ABC".to_string(),
        "digest=md5:00".to_string(),
        "other=1".to_string(),
        format!("digest={SCANNER}&digest={SCANNER}"),
    ] {
        let r = caller.verify(&s, &q).await;
        assert_refused(&s, &r, 400, "invalid_request");
    }

    // The allow-list answers; anything else is untrusted with a reason (nothing configured).
    let r = caller.verify(&s, &format!("digest={SCANNER}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["trusted"], true);
    assert_eq!(
        s.audit(r.audit_id()).scanner_verdict.as_deref(),
        Some("trusted-allowlist")
    );
    let other = format!("sha256:{}", "22".repeat(32));
    let r = caller.verify(&s, &format!("digest={other}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["trusted"], false);
    assert!(r.body["reason"]
        .as_str()
        .unwrap()
        .contains("release.repository"));
    // And the sign route refuses it as before.
    let r = caller.sign(&s, &other).await;
    assert_refused(&s, &r, 403, "release_untrusted");

    // Listed in the OpenAPI document.
    let doc = crate::support::authority()
        .pki
        .http(None)
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(doc["paths"][VERIFY]["get"].is_object());
    s.stop().await;
}

#[test]
fn release_config_is_checked_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let release = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let attest = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let ring = write_keyring(dir.path(), &release, &attest);
    let cfg = |repo: &str, keyring: Option<std::path::PathBuf>| ReleaseConfig {
        repository: Some(repo.to_string()),
        keyring,
        ..ReleaseConfig::default()
    };
    let err = |c: ReleaseConfig| match ReleaseGate::new(&c) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        ReleaseGate::new(&cfg("127.0.0.1:5000/stellaops/scanner", Some(ring.clone())))
            .unwrap()
            .referrers()
            .is_some()
    );
    assert!(ReleaseGate::new(&ReleaseConfig::default())
        .unwrap()
        .referrers()
        .is_none());
    let e = err(cfg(
        "127.0.0.1:5000/stellaops/scanner",
        Some(dir.path().join("missing.toml")),
    ));
    assert!(e.contains("release.keyring"), "{e}");
    // A keyring without a release key.
    let no_release = dir.path().join("attest.toml");
    std::fs::write(
        &no_release,
        format!(
            "[[keys]]\nid = \"a\"\npurposes = [\"attestation\"]\npublic_key = '''\n{}'''\n",
            attest.public_key().to_pem()
        ),
    )
    .unwrap();
    let e = err(cfg("127.0.0.1:5000/stellaops/scanner", Some(no_release)));
    assert!(e.contains("purpose `release`"), "{e}");
    let e = err(cfg("not a reference", Some(ring.clone())));
    assert!(e.contains("release.repository"), "{e}");

    // Whole-config validation.
    let base = "[dev]\nenabled = true\n[release]\n";
    let bad = |extra: &str| {
        stella_signer::Config::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert!(bad("repository = \"127.0.0.1:5000/scanner\"").contains("release.keyring"));
    assert!(bad("keyring = \"k.toml\"").contains("release.repository"));
    assert!(
        bad("repository = \"127.0.0.1:5000/scanner:1.0\"\nkeyring = \"k.toml\"")
            .contains("without tag or digest")
    );
    assert!(stella_signer::Config::from_toml(&format!(
        "{base}repository = \"127.0.0.1:5000/stellaops/scanner\"\nkeyring = \"k.toml\"\nplain_http = true\nverdict_cache_ttl_secs = 60"
    ))
    .is_ok());
}

#[test]
fn release_gate_applies_a_signed_revocation_list() {
    let dir = tempfile::tempdir().unwrap();
    let release = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let attest = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let ring = write_keyring(dir.path(), &release, &attest);
    let write_list = |signer: &FileKey, name: &str| {
        let mut list =
            stella_keys::revocation::RevocationList::new(time::OffsetDateTime::now_utc());
        list.revoke_key(
            release.public_key().key_id(),
            time::OffsetDateTime::now_utc(),
            "compromised",
        );
        let p = dir.path().join(name);
        std::fs::write(&p, list.sign(signer).unwrap().to_json()).unwrap();
        p
    };
    let cfg = |revocations: Option<std::path::PathBuf>| ReleaseConfig {
        repository: Some("127.0.0.1:5000/stellaops/scanner".into()),
        keyring: Some(ring.clone()),
        revocations,
        ..ReleaseConfig::default()
    };
    assert!(ReleaseGate::new(&cfg(None)).is_ok());
    // The only release key revoked by a list a keyring key signed: no release key is left.
    let e = ReleaseGate::new(&cfg(Some(write_list(&attest, "rev.dsse.json"))))
        .err()
        .expect("revoked release key accepted")
        .to_string();
    assert!(e.contains("no unrevoked key has purpose `release`"), "{e}");
    // A list signed outside the keyring is refused at startup.
    let stranger = FileKey::generate(Algorithm::Ed25519).unwrap();
    let e = ReleaseGate::new(&cfg(Some(write_list(&stranger, "other.dsse.json"))))
        .err()
        .expect("foreign list accepted")
        .to_string();
    assert!(e.contains("release.revocations"), "{e}");
    assert!(e.contains("not signed by a trusted key"), "{e}");
}

/// A keyless image signature by `leaf`, as `cosign sign` without a key makes it: a v0.3
/// bundle (certificate, Rekor entry) of an in-toto statement about the image digest.
fn keyless_bundle(
    sigstore: &stella_sigstore::testing::TestSigstore,
    leaf: &stella_sigstore::testing::Leaf,
    image: &Digest,
) -> Vec<u8> {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": REPO, "digest": {"sha256": image.hex()}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    });
    let now = time::OffsetDateTime::now_utc();
    serde_json::to_vec(&sigstore.dsse_bundle(
        leaf,
        "application/vnd.in-toto+json",
        &serde_json::to_vec(&statement).unwrap(),
        now,
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_release_signatures_through_oci_referrers() {
    use stella_sigstore::testing::{LeafSpec, TestSigstore};
    const ISSUER: &str = "https://issuer.test.invalid";
    let reg = Registry::start();
    let c = oci();
    let sigstore = TestSigstore::new();
    let now = time::OffsetDateTime::now_utc();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.json"), sigstore.trusted_root_json()).unwrap();
    let attest_key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let ring = dir.path().join("release-keyring.toml");
    std::fs::write(
        &ring,
        format!(
            "[[identities]]\nid = \"release-ci\"\ncertificate_identity_regexp = '.*@release\\.example\\.com'\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = [\"release\"]\n\n\
             [[identities]]\nid = \"attest-ci\"\ncertificate_identity = \"ci@attest.example.com\"\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = [\"attestation\"]\n\n\
             [[keys]]\nid = \"attest-key\"\npurposes = [\"attestation\"]\npublic_key = '''\n{}'''\n",
            attest_key.public_key().to_pem()
        ),
    )
    .unwrap();

    // One image per case, each with one keyless signature (or a key signature).
    let email = |san: &str| LeafSpec::email(san, ISSUER, now);
    let mut expired = email("ci@release.example.com");
    expired.not_before = now - time::Duration::minutes(20);
    expired.not_after = now - time::Duration::minutes(10);
    let other_ca = sigstore.other_ca();
    type Case<'a> = (&'a str, Option<(&'a TestSigstore, LeafSpec)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "good",
            Some((&sigstore, email("ci@release.example.com"))),
            "",
        ),
        (
            "attacker",
            Some((&sigstore, email("ci@release.example.com.attacker"))),
            "does not match",
        ),
        (
            "wrong-san",
            Some((&sigstore, email("ci@other.example.com"))),
            "does not match",
        ),
        (
            "wrong-issuer",
            Some((
                &sigstore,
                LeafSpec::email("ci@release.example.com", "https://evil.test.invalid", now),
            )),
            "OIDC issuer",
        ),
        (
            "wrong-purpose",
            Some((&sigstore, email("ci@attest.example.com"))),
            "not trusted for purpose `release`",
        ),
        (
            "unknown-ca",
            Some((&other_ca, email("ci@release.example.com"))),
            "does not chain to a Fulcio CA",
        ),
        ("expired", Some((&sigstore, expired)), "not at"),
        ("key-signed", None, "not trusted for purpose `release`"),
    ];
    let mut images = Vec::new();
    for (name, signer, _) in &cases {
        let (r, d) = push_image(&reg, name).await;
        match signer {
            Some((s, spec)) => {
                let leaf = s.issue(spec);
                stella_oci::attach_bundle(&c, &r, &keyless_bundle(s, &leaf, &d))
                    .await
                    .unwrap();
                images.push((d, Some(leaf.key.spki_der())));
            }
            None => {
                stella_oci::sign_image(&c, &r, &attest_key).await.unwrap();
                images.push((d, None));
            }
        }
    }

    let mut s = TestSigner::start_with(Opts {
        toml: format!(
            "[release]\nrepository = \"{}/{REPO}\"\nkeyring = \"{}\"\nregistry_attempts = 2\n",
            reg.host(),
            ring.display()
        ),
        ..Opts::default()
    })
    .await;
    let caller = Caller::new().await;

    // The trusted identity: signed, and the verdict names the identity entry and the
    // certificate's key.
    let (good, good_spki) = &images[0];
    let r = caller.sign(&s, &good.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.audit(r.audit_id()).scanner_verdict.as_deref(),
        Some("trusted-referrer")
    );
    let v = caller.verify(&s, &format!("digest={good}")).await;
    assert_eq!(v.body["trusted"], true, "{}", v.body);
    assert_eq!(v.body["signer"], "release-ci");
    let spki = good_spki.as_ref().unwrap();
    assert_eq!(
        v.body["keyid"],
        format!(
            "sha256:{}",
            stella_keys::hex(&stella_sigstore::HashAlgorithm::Sha256.digest(spki))
        )
    );

    // Every other case: untrusted, for its own reason; signing refuses it.
    for ((name, _, why), (d, _)) in cases.iter().zip(&images).skip(1) {
        let v = caller.verify(&s, &format!("digest={d}")).await;
        assert_eq!(v.status, 200, "{name}: {}", v.body);
        assert_eq!(v.body["trusted"], false, "{name}: {}", v.body);
        let reason = v.body["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
        let r = caller.sign(&s, &d.to_string()).await;
        let rec = assert_refused(&s, &r, 403, "release_untrusted");
        assert_eq!(rec.scanner_verdict.as_deref(), Some("untrusted"), "{name}");
    }
    s.stop().await;
}
