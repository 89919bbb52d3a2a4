//! Keyless signing through the service against @sigstore/mock's Fulcio, RFC 3161 TSA and
//! Rekor v1 (tests/sigstore-mock/serve.mjs, the mock's gaps closed), with the Signer's
//! identity token from a token file: bundles with a log entry verify with `stella-sigstore`
//! and `@sigstore/verify`; TSA, Rekor (required) and Fulcio outages are `503
//! upstream_unavailable` with `Retry-After`, audited, and nothing is signed.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};
use stella_keyless::dev::TrustedRootBuilder;
use stella_sigstore::TrustedRoot;
use time::OffsetDateTime;

use crate::keyless::{client_for, identity_policy, sigstore_js, verify_bundle, SIGN};
use crate::support::*;

struct Mock {
    child: Child,
    url: String,
    issuer: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

impl Mock {
    fn start() -> Mock {
        assert!(
            root()
                .join("tests/sigstore-mock/node_modules/@sigstore/mock")
                .exists(),
            "tests/sigstore-mock/node_modules is missing: run scripts/setup-test-deps.sh"
        );
        let mut child = Command::new("node")
            .arg(root().join("tests/sigstore-mock/serve.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed: scripts/setup-test-deps.sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("serve.mjs did not start: {line:?}"));
        let url = info["url"].as_str().unwrap().to_string();
        let start = OffsetDateTime::parse(
            info["start"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let mut b = TrustedRootBuilder::new();
        b.certificate_authority(
            &url,
            "sigstore.mock",
            "sigstore",
            &[&b64d(&info["fulcio"]["root"])],
            start,
        );
        b.ctlog(&url, &b64d(&info["ctlog"]["publicKey"]), start);
        b.tlog(&url, &b64d(&info["rekor"]["publicKey"]), start);
        let chain: Vec<Vec<u8>> = info["tsa"]["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(b64d)
            .collect();
        let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        b.timestamp_authority(
            &format!("{url}/api/v1/timestamp"),
            "sigstore.mock",
            "tsa",
            &refs,
            start,
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trusted_root.json"), b.to_json()).unwrap();
        Mock {
            child,
            issuer: info["issuer"].as_str().unwrap().to_string(),
            url,
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn root_path(&self) -> PathBuf {
        self.dir.path().join("trusted_root.json")
    }

    async fn token(&self, sub: &str) -> String {
        let v: Value = self
            .http
            .post(format!("{}/__token", self.url))
            .body(json!({"sub": sub, "expiresIn": 600}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    async fn control(&self, v: Value) {
        let r = self
            .http
            .post(format!("{}/__control", self.url))
            .body(v.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

const SUB: &str = "https://signer.stella.test/keyless-mock";

#[tokio::test]
async fn keyless_against_the_sigstore_mock_with_rekor_and_outages() {
    let mock = Mock::start();
    let token_file = mock.dir.path().join("identity.jwt");
    std::fs::write(&token_file, mock.token(SUB).await).unwrap();
    let toml = format!(
        r#"
[keyless]
issuer = "fulcio"
fulcio_url = "{url}"
tsa_url = "{url}/api/v1/timestamp"
rekor_url = "{url}"
rekor = "required"
trusted_root = "{root}"
timeout_ms = 2000
retries = 1
retry_after_seconds = 9
[keyless.identity]
token_file = "{token}"
[signing.tenants.tenant-a]
keyless = "default"
"#,
        url = mock.url,
        root = mock.root_path().display(),
        token = token_file.display(),
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
    let root = TrustedRoot::from_json(&std::fs::read(mock.root_path()).unwrap()).unwrap();
    let policy = identity_policy(SUB, &mock.issuer);
    verify_bundle(&b["sigstore"], &root, &policy, 1).unwrap();
    let ok = sigstore_js(&b["sigstore"], &mock.root_path(), SUB, &mock.issuer, 1).unwrap();
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
    let toml = format!(
        r#"
[keyless]
issuer = "fulcio"
fulcio_url = "{url}"
tsa_url = "{url}/api/v1/timestamp"
rekor_url = "{url}"
rekor = "best_effort"
trusted_root = "{root}"
timeout_ms = 2000
retries = 0
[keyless.identity]
token_file = "{token}"
[signing.tenants.tenant-a]
keyless = "only"
"#,
        url = mock.url,
        root = mock.root_path().display(),
        token = token_file.display(),
    );
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
