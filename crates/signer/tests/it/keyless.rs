//! Keyless signing through the service (issue #12 items 5 and 7): the Signer's own identity
//! token from the real Authority (client credentials, `aud: sigstore`), the dev-only
//! in-process CA and TSA (and, in `sigstore_mock.rs`, @sigstore/mock's Fulcio, TSA and
//! Rekor), results verified by `stella-sigstore` with an identity policy and by
//! `@sigstore/verify`; tenant modes; certificate reuse bounded by `notAfter - margin`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stella_signer::client::DpopKey;
use stella_sigstore::{Artifact, Identity, Matcher, Policy, TrustedRoot};
use stella_store::Outcome;
use time::OffsetDateTime;

use crate::support::*;

pub(crate) const SIGN: &str = "/api/v1/signer/sign/dsse";
const EXPORT: &str = "/api/v1/signer/sign/export";

/// A keyless configuration over the dev CA/TSA with the Signer's identity from the test
/// Authority; `extra` is appended (tenant modes, reuse).
pub(crate) fn dev_keyless_toml(dir: &Path, extra: &str) -> String {
    let ca = dir.join("authority-ca.pem");
    std::fs::write(&ca, &authority().pki.ca_pem).unwrap();
    let secret = dir.join("keyless-client-secret");
    std::fs::write(&secret, secret_of(KEYLESS_CLIENT)).unwrap();
    format!(
        r#"
[keyless]
issuer = "dev"
insecure_dev_services = true
dev_dir = "{dev}"
ca_file = "{ca}"
retry_after_seconds = 7
[keyless.identity]
token_url = "{token_url}"
client_id = "{KEYLESS_CLIENT}"
client_secret_file = "{secret}"
resource = "urn:stella:sigstore"
{extra}
"#,
        dev = dir.display(),
        ca = ca.display(),
        token_url = authority().token_url,
        secret = secret.display(),
    )
}

fn secret_of(id: &str) -> String {
    secret(id)
}

pub(crate) fn identity_policy(san: &str, issuer: &str) -> Policy {
    Policy::Identity(Identity::new(Matcher::exact(san), Matcher::exact(issuer)))
}

/// Verify a bundle from the API with `stella-sigstore` against `root`.
pub(crate) fn verify_bundle(
    bundle: &Value,
    root: &TrustedRoot,
    policy: &Policy,
    tlog: usize,
) -> Result<stella_sigstore::Verified, stella_sigstore::Failure> {
    let parsed = stella_sigstore::Bundle::from_json(bundle.to_string().as_bytes()).unwrap();
    stella_sigstore::verify(
        &parsed,
        Artifact::Unchecked,
        policy,
        root,
        &stella_sigstore::Options {
            tlog_threshold: tlog,
            time_threshold: 1,
        },
    )
}

/// `@sigstore/verify` on `bundle` (`stella_keyless::testing::sigstore_js`): Ok(stdout) or
/// what it refused with.
pub(crate) fn sigstore_js(
    bundle: &Value,
    root: &Path,
    san: &str,
    issuer: &str,
    tlog: usize,
) -> Result<String, stella_keyless::testing::PeerRefused> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, bundle.to_string()).unwrap();
    assert!(
        root_dir()
            .join("tests/interop/node_modules/@sigstore/verify")
            .exists(),
        "tests/interop/node_modules is missing: run scripts/setup-test-deps.sh"
    );
    stella_keyless::testing::sigstore_js(&path, root, san, issuer, None, tlog)
}

fn root_dir() -> PathBuf {
    crate::support::root()
}

pub(crate) async fn client_for(id: &str) -> (reqwest::Client, DpopKey, String) {
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority().token(id, "signer.sign", Some(&key), None).await;
    (http, key, token)
}

fn with_options(poe: &str, options: Value) -> Value {
    let mut b = sign_body(poe);
    b["options"] = options;
    b
}

#[tokio::test]
async fn keyless_signing_through_the_api_verifies_with_an_identity_policy() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dev_keyless_toml(
        dir.path(),
        "[signing.tenants.tenant-a]\nkeyless = \"default\"\n",
    );
    let s = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    let root_path = dir.path().join("trusted_root.json");
    let root = TrustedRoot::from_json(&std::fs::read(&root_path).unwrap()).unwrap();
    let (http, key, token) = client_for("a-dpop").await;

    // Keyless is this tenant's default; the seeds' `dsse+cert` asks for the Sigstore bundle.
    let body = with_options("poe-a", json!({"returnBundle": "dsse+cert"}));
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body["bundle"];
    assert_eq!(b["mode"], "keyless");
    let chain = b["certificateChain"].as_array().unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root: {chain:?}");
    assert!(chain.iter().all(|c| c
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----")));
    let id = &b["signingIdentity"];
    assert_eq!(id["san"], KEYLESS_CLIENT);
    assert_eq!(id["oidcIssuer"], ISSUER);
    assert_eq!(id["tenant"], "tenant-a");
    let sig = &b["sigstore"];
    assert_eq!(
        sig["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    // The leaf of the chain is the bundle's certificate; v0.3 carries no chain.
    let leaf_b64 = sig["verificationMaterial"]["certificate"]["rawBytes"]
        .as_str()
        .unwrap();
    let leaf_pem_b64: String = chain[0]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(leaf_b64, leaf_pem_b64);
    assert_eq!(
        sig["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "every keyless signature is timestamped"
    );
    // The envelope is the bundle's.
    assert_eq!(b["dsse"]["signatures"], sig["dsseEnvelope"]["signatures"]);

    // Our verifier, with the identity policy: passes; another SAN or issuer: fails.
    let v = verify_bundle(sig, &root, &identity_policy(KEYLESS_CLIENT, ISSUER), 0).unwrap();
    assert!(v
        .signing_times
        .iter()
        .any(|t| t.source == stella_sigstore::TimeSource::Timestamp));
    assert!(verify_bundle(
        sig,
        &root,
        &identity_policy("https://evil.example/keyless", ISSUER),
        0
    )
    .is_err());
    assert!(verify_bundle(
        sig,
        &root,
        &identity_policy(KEYLESS_CLIENT, "https://other-issuer.example"),
        0
    )
    .is_err());
    // A tampered payload fails.
    let mut tampered = sig.clone();
    tampered["dsseEnvelope"]["payload"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"{\"_type\":\"https://in-toto.io/Statement/v1\"}"
    ));
    assert!(verify_bundle(
        &tampered,
        &root,
        &identity_policy(KEYLESS_CLIENT, ISSUER),
        0
    )
    .is_err());
    // Without the dev root (an empty trust root) it is refused: nothing trusts a dev CA.
    let foreign = stella_keyless::dev::DevServices::generate(OffsetDateTime::now_utc())
        .unwrap()
        .trusted_root()
        .unwrap();
    assert!(verify_bundle(sig, &foreign, &identity_policy(KEYLESS_CLIENT, ISSUER), 0).is_err());

    // sigstore-js @sigstore/verify, with the trusted root the service wrote.
    let ok = sigstore_js(sig, &root_path, KEYLESS_CLIENT, ISSUER, 0).unwrap();
    assert!(ok.starts_with("OK"), "{ok}");
    let bad = sigstore_js(sig, &root_path, "https://evil.example/keyless", ISSUER, 0);
    assert!(bad.is_err(), "{bad:?}");

    // The audit record: mode, certificate serial, SAN, issuer, key source, envelope digest.
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.outcome, Outcome::Signed);
    assert_eq!(rec.signing_mode.as_deref(), Some("keyless"));
    assert_eq!(
        rec.certificate_serial.as_deref(),
        id["certificateSerial"].as_str()
    );
    assert_eq!(rec.certificate_san.as_deref(), Some(KEYLESS_CLIENT));
    assert_eq!(rec.certificate_issuer.as_deref(), Some(ISSUER));
    assert_eq!(rec.key_source.as_deref(), Some("ephemeral"));
    assert_eq!(rec.key_ids, vec![id["keyId"].as_str().unwrap().to_string()]);
    assert!(rec.envelope_sha256.is_some());
    assert_eq!(rec.tlog_index, None);

    // A second signing reuses the certificate (default: within its validity).
    let r2 = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert!(
        r2.body["bundle"].get("sigstore").is_none(),
        "returnBundle dsse"
    );
    assert_eq!(
        r2.body["bundle"]["signingIdentity"]["certificateSerial"],
        id["certificateSerial"]
    );
    assert_eq!(
        s.audit(r2.audit_id()).key_source.as_deref(),
        Some("ephemeral-reused")
    );

    // The keyful path is untouched: `signingMode: file` signs with the tenant's key.
    let body = with_options("poe-a", json!({"signingMode": "file"}));
    let r3 = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r3.status, 200, "{}", r3.body);
    assert_eq!(r3.body["bundle"]["mode"], "file");
    assert_eq!(r3.body["bundle"]["certificateChain"], json!([]));
    let env =
        stella_dsse::Envelope::from_json(r3.body["bundle"]["dsse"].to_string().as_bytes()).unwrap();
    let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
        s.signing_pub.clone(),
    )])
    .unwrap();
    stella_keys::verify_envelope(&env, &ring, &stella_keys::Policy::new(1)).unwrap();
    let rec3 = s.audit(r3.audit_id());
    assert_eq!(rec3.signing_mode.as_deref(), Some("file"));
    assert_eq!(rec3.certificate_serial, None);

    // Export Center manifests sign keyless too, with the bundle.
    let r4 = send_dpop(
        &http,
        &s.url(EXPORT),
        &token,
        &key,
        &json!({"manifest": {"bundle": "x", "version": 1}, "poe": {"format": "jwt", "value": "poe-a"}}),
    )
    .await;
    assert_eq!(r4.status, 200, "{}", r4.body);
    assert_eq!(r4.body["mode"], "keyless");
    assert!(r4.body["signatures"][0]["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    verify_bundle(
        &r4.body["sigstore"],
        &root,
        &identity_policy(KEYLESS_CLIENT, ISSUER),
        0,
    )
    .unwrap();

    // Metrics by mode.
    let m = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("stella_signer_key_usage_total{key_id=\"ephemeral\",mode=\"keyless\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("stella_signer_keyless_signatures_total{certificate=\"new\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stella_signer_keyless_signatures_total{certificate=\"reused\"} 2"),
        "{m}"
    );
    assert!(m.contains("mode=\"file\"} 1"), "{m}");
}

#[tokio::test]
async fn keyful_and_keyless_tenants_coexist_within_their_allowed_modes() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dev_keyless_toml(
        dir.path(),
        r#"
[signing.tenants.tenant-a]
keyless = "allowed"
[signing.tenants.tenant-b]
keyless = "off"
[signing.tenants.tenant-z]
keyless = "only"
"#,
    );
    let s = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    s.licensing
        .set("poe-z", license("tenant-z", 1000.0, 1 << 20));

    // tenant-a: keyful by default, keyless when asked.
    let (http, key, token) = client_for("a-dpop").await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!(
        (r.status, r.body["bundle"]["mode"].as_str()),
        (200, Some("file"))
    );
    let body = with_options("poe-a", json!({"signingMode": "keyless"}));
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["bundle"]["mode"], "keyless");

    // tenant-b: a keyful tenant cannot be made keyless.
    let (http, key, token) = client_for("b-dpop").await;
    let body = with_options("poe-b", json!({"signingMode": "keyless"}));
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    let rec = assert_refused(&s, &r, 400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("keyless"));
    assert_eq!(rec.certificate_serial, None);
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-b")).await;
    assert_eq!(
        (r.status, r.body["bundle"]["mode"].as_str()),
        (200, Some("file"))
    );

    // tenant-z: keyless only (no keys at all); a keyful mode is refused.
    let (http, key, token) = client_for("z-dpop").await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-z")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["bundle"]["mode"], "keyless");
    for m in ["file", "kms", "hsm"] {
        let body = with_options("poe-z", json!({"signingMode": m}));
        let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
        let rec = assert_refused(&s, &r, 400, "invalid_request");
        assert_eq!(rec.tenant.as_deref(), Some("tenant-z"));
    }
}

#[tokio::test]
async fn keyless_without_configuration_is_refused_and_keyful_is_unchanged() {
    // No [keyless]: asking for keyless is a 400, as before this issue.
    let s = TestSigner::start().await;
    let (http, key, token) = client_for("a-dpop").await;
    let body = with_options("poe-a", json!({"signingMode": "keyless"}));
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_refused(&s, &r, 400, "invalid_request");
    // Tenant modes need [keyless].
    let mut cfg = stella_signer::Config::from_toml_unvalidated(
        "[authority]\nissuer = \"x\"\njwks_file = \"j\"\n[licensing]\nbypass = true\nbypass_reason = \"t\"\n[signing.tenants.t]\nkeys = [\"k\"]\nkeyless = \"allowed\"\n",
    )
    .unwrap();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("[keyless] issuer"), "{e}");
    cfg.keyless.issuer = Some("dev".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("DEV-ONLY"), "{e}");
    cfg.keyless.issuer = Some("fulcio".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("fulcio_url"), "{e}");
}

#[tokio::test]
async fn certificate_reuse_never_goes_past_not_after_minus_the_margin() {
    // Dev certificates live 600 s; a margin of 597 s leaves a reuse window of at most 3 s.
    let margin = 597u64;
    let dir = tempfile::tempdir().unwrap();
    let toml = dev_keyless_toml(
        dir.path(),
        "[signing.tenants.tenant-a]\nkeyless = \"only\"\n",
    )
    .replace(
        "retry_after_seconds = 7",
        &format!("retry_after_seconds = 7\nreuse_margin_seconds = {margin}"),
    );
    let s = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    let (http, key, token) = client_for("a-dpop").await;
    let mut serials = Vec::new();
    let mut reused = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        let t0 = OffsetDateTime::now_utc();
        let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = &r.body["bundle"]["signingIdentity"];
        let not_after = OffsetDateTime::parse(
            id["notAfter"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        // The check ran after t0: had the certificate been within the margin then, it
        // would not have been used.
        assert!(
            t0 + time::Duration::seconds(margin as i64) < not_after,
            "certificate used at {t0} with notAfter {not_after} (margin {margin} s)"
        );
        let serial = id["certificateSerial"].as_str().unwrap().to_string();
        if serials.last() == Some(&serial) {
            reused += 1;
        } else {
            assert!(!serials.contains(&serial), "an old certificate came back");
            serials.push(serial);
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert!(reused > 0, "a certificate is reused within its window");
    assert!(
        serials.len() >= 2,
        "a new certificate after the window: {serials:?}"
    );

    // per_signature: a new certificate for every request.
    let dir = tempfile::tempdir().unwrap();
    let toml = dev_keyless_toml(
        dir.path(),
        "[signing.tenants.tenant-a]\nkeyless = \"only\"\n",
    )
    .replace(
        "retry_after_seconds = 7",
        "retry_after_seconds = 7\nreuse = \"per_signature\"",
    );
    let s = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(seen.insert(
            r.body["bundle"]["signingIdentity"]["certificateSerial"]
                .as_str()
                .unwrap()
                .to_string()
        ));
        assert_eq!(
            s.audit(r.audit_id()).key_source.as_deref(),
            Some("ephemeral")
        );
    }
}
