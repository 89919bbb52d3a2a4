//! Keyless signing through the service against @sigstore/mock's Fulcio, RFC 3161 TSA and
//! Rekor v1 (tests/sigstore-mock/serve.mjs, the mock's gaps closed), with the Signer's
//! identity token from a token file: bundles with a log entry verify with `stella-sigstore`
//! and `@sigstore/verify`; TSA, Rekor (required) and Fulcio outages are `503
//! upstream_unavailable` with `Retry-After`, audited, and nothing is signed.

use std::path::Path;

use serde_json::json;
use stella_keyless::testing::MockSigstore;
use stella_sigstore::TrustedRoot;

use crate::keyless::{client_for, identity_policy, sigstore_js, verify_bundle, SIGN};
use crate::support::*;

const SUB: &str = "https://signer.stella.test/keyless-mock";

/// A service configuration signing keyless for tenant-a (`mode`) through the mock's Fulcio,
/// TSA and Rekor (`rekor`: required or best_effort), with `retries` (TOML lines) and the
/// identity token in `token_file`.
fn config(
    mock: &MockSigstore,
    token_file: &Path,
    rekor: &str,
    retries: &str,
    mode: &str,
) -> String {
    format!(
        r#"
[keyless]
issuer = "fulcio"
fulcio_url = "{url}"
tsa_url = "{url}/api/v1/timestamp"
rekor_url = "{url}"
rekor = "{rekor}"
trusted_root = "{root}"
timeout_ms = 2000
{retries}
[keyless.identity]
token_file = "{token}"
[signing.tenants.tenant-a]
keyless = "{mode}"
"#,
        url = mock.url,
        root = mock.trusted_root_path().display(),
        token = token_file.display(),
    )
}

#[tokio::test]
async fn keyless_against_the_sigstore_mock_with_rekor_and_outages() {
    let mock = MockSigstore::start();
    let token_file = mock.dir.path().join("identity.jwt");
    std::fs::write(&token_file, mock.token(SUB, 600).await).unwrap();
    let toml = config(
        &mock,
        &token_file,
        "required",
        "retries = 1\nretry_after_seconds = 9",
        "default",
    );
    let s = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    let (http, key, token) = client_for("a-dpop").await;
    let mut body = sign_body("poe-a");
    body["options"] = json!({"returnBundle": "dsse+cert"});

    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body["bundle"];
    assert_eq!(b["mode"], "keyless");
    let san = b["signingIdentity"]["san"].as_str().unwrap();
    assert_eq!(san, SUB);
    let entry = &b["signingIdentity"]["tlogEntry"];
    let entries = b["sigstore"]["verificationMaterial"]["tlogEntries"]
        .as_array()
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kindVersion"]["kind"], "dsse");
    let root = TrustedRoot::from_json(&std::fs::read(mock.trusted_root_path()).unwrap()).unwrap();
    let policy = identity_policy(SUB, &mock.issuer);
    verify_bundle(&b["sigstore"], &root, &policy, 1).unwrap();
    let ok = sigstore_js(
        &b["sigstore"],
        &mock.trusted_root_path(),
        SUB,
        &mock.issuer,
        1,
    )
    .unwrap();
    assert!(ok.contains("tlog=1"), "{ok}");
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.tlog_index, entry["logIndex"].as_u64());
    assert_eq!(rec.tlog_uuid.as_deref(), entry["uuid"].as_str());
    assert!(rec.tlog_uuid.as_deref().is_some_and(|u| !u.is_empty()));
    assert_eq!(rec.certificate_san.as_deref(), Some(SUB));
    assert_eq!(
        rec.certificate_issuer.as_deref(),
        Some(mock.issuer.as_str())
    );

    // Outages: 503 upstream_unavailable with Retry-After, audited, nothing signed.
    let refused = |r: &Reply, service: &str| {
        let rec = assert_refused(&s, r, 503, "upstream_unavailable");
        assert_eq!(r.headers["retry-after"].to_str().unwrap(), "9");
        assert_eq!(rec.signing_mode.as_deref(), Some("keyless"));
        assert!(
            rec.reason.as_deref().unwrap_or("").contains(service),
            "{:?}",
            rec.reason
        );
    };
    mock.control(json!({"tsa": "down"})).await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    refused(&r, "tsa");
    mock.control(json!({"tsa": "up", "rekor": "down"})).await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    refused(&r, "rekor");
    mock.control(json!({"rekor": "up", "fulcio": "down"})).await;
    // The current certificate is still good: reused without Fulcio.
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.state.keyless.as_ref().unwrap().rotate().await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    refused(&r, "fulcio");
    mock.control(json!({"fulcio": "up"})).await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    verify_bundle(&r.body["bundle"]["sigstore"], &root, &policy, 1).unwrap();

    // rekor = "best_effort": an unavailable log gives a timestamped bundle without an entry.
    let toml = config(&mock, &token_file, "best_effort", "retries = 0", "only");
    let best = TestSigner::start_with(Opts {
        toml,
        ..Opts::default()
    })
    .await;
    mock.control(json!({"rekor": "down"})).await;
    let r = send_dpop(&http, &best.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = &r.body["bundle"]["sigstore"];
    assert_eq!(
        sig["verificationMaterial"]["tlogEntries"],
        json!([]),
        "no log entry"
    );
    verify_bundle(sig, &root, &policy, 0).unwrap();
    assert!(
        verify_bundle(sig, &root, &policy, 1).is_err(),
        "tlog threshold 1 fails"
    );
    let rec = best.audit(r.audit_id());
    assert_eq!(rec.tlog_index, None);
    assert_eq!(rec.tlog_uuid, None);
    // The TSA is never best effort.
    mock.control(json!({"tsa": "down"})).await;
    let r = send_dpop(&http, &best.url(SIGN), &token, &key, &body).await;
    assert_refused(&best, &r, 503, "upstream_unavailable");
    mock.control(json!({"tsa": "up", "rekor": "up"})).await;

    let m = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for svc in ["tsa", "rekor", "fulcio"] {
        assert!(
            m.contains(&format!(
                "stella_signer_keyless_failures_total{{service=\"{svc}\"}} 1"
            )),
            "{m}"
        );
    }
}
