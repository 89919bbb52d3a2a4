//! Test harness (feature `testing`): the Sigstore mock services (tests/sigstore-mock/serve.mjs, @sigstore/mock
//! under Node with its gaps closed) on 127.0.0.1, one process per test, killed on drop (and
//! exiting by itself when our end of its stdin closes); their keys as a trusted root; peers
//! (`@sigstore/verify`, `openssl ts -verify`) run on what we produce.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::dev::{AuthorityKind, LogKind, TrustedRootBuilder};
use crate::fulcio::FulcioClient;
use crate::rekor::RekorClient;
use crate::tsa::HttpTsa;
use crate::{HttpOptions, KeylessSigner, StaticToken, TlogPolicy};
use base64::Engine as _;
use serde_json::{json, Value};
use stella_sigstore::TrustedRoot;
use time::OffsetDateTime;

/// Spawn `cmd` with its stdout piped and read the first line it prints: a test service
/// announcing where it listens (`listening on URL`, or a JSON line). The child keeps running
/// (kill it when done); the line is trimmed. A child that prints no line within
/// [`ANNOUNCE_TIMEOUT`] is killed and started once more (a Node.js process was seen to hang
/// at start-up under load, once in several hundred starts); a child that cannot start, exits
/// without a line or hangs twice is killed and the test fails, naming `what`.
#[allow(clippy::panic)] // a test harness: failing the test is the point
pub fn spawn_announced(cmd: &mut Command, what: &str) -> (Child, String) {
    cmd.stdout(Stdio::piped());
    let mut last = String::new();
    for _ in 0..2 {
        let mut child = cmd.spawn().expect(what);
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let read = BufReader::new(out).read_line(&mut line).map(|_| line);
                let _ = tx.send(read);
            });
        }
        match rx.recv_timeout(ANNOUNCE_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => return (child, line.trim().to_string()),
            Ok(other) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: did not start (no first line on stdout: {other:?})");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                last = format!("no first line on stdout within {ANNOUNCE_TIMEOUT:?}");
            }
        }
    }
    panic!("{what}: did not start twice ({last})");
}

/// How long [`spawn_announced`] waits for a test service's first line.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (this crate is `crates/keyless`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("mock harness"))
        .expect("mock harness")
}

/// A certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Short timeouts and backoff so failure tests are quick.
pub fn fast() -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

/// The mock services, one Node process; killed on drop.
pub struct MockSigstore {
    child: Child,
    pub url: String,
    pub issuer: String,
    pub root: Arc<TrustedRoot>,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for MockSigstore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MockSigstore {
    pub fn start() -> Self {
        let script = repo_root().join("tests/sigstore-mock/serve.mjs");
        assert!(
            repo_root()
                .join("tests/sigstore-mock/node_modules/@sigstore/mock")
                .exists(),
            "tests/sigstore-mock/node_modules is missing: run scripts/setup-test-deps.sh"
        );
        let (child, line) = spawn_announced(
            Command::new("node")
                .arg(&script)
                .stdin(Stdio::piped())
                .stderr(Stdio::inherit()),
            "serve.mjs (Node.js 20, scripts/setup-test-deps.sh; see its stderr above)",
        );
        let info: Value = serde_json::from_str(&line).expect("mock harness");
        let url = info["url"].as_str().expect("mock harness").to_string();
        let start = OffsetDateTime::parse(
            info["start"].as_str().expect("mock harness"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("mock harness");
        let mut b = TrustedRootBuilder::new();
        b.authority(
            AuthorityKind::Certificate,
            &url,
            "sigstore.mock",
            "sigstore",
            &[&b64d(&info["fulcio"]["root"])],
            start,
        );
        b.log(
            LogKind::Ctlog,
            &url,
            &b64d(&info["ctlog"]["publicKey"]),
            start,
        );
        b.log(
            LogKind::Tlog,
            &url,
            &b64d(&info["rekor"]["publicKey"]),
            start,
        );
        let chain: Vec<Vec<u8>> = info["tsa"]["chain"]
            .as_array()
            .expect("mock harness")
            .iter()
            .map(b64d)
            .collect();
        let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        b.authority(
            AuthorityKind::Timestamp,
            &format!("{url}/api/v1/timestamp"),
            "sigstore.mock",
            "tsa",
            &refs,
            start,
        );
        let dir = tempfile::tempdir().expect("mock harness");
        std::fs::write(dir.path().join("trusted_root.json"), b.to_json()).expect("mock harness");
        std::fs::write(dir.path().join("tsa-root.pem"), pem(&chain[1])).expect("mock harness");
        std::fs::write(dir.path().join("tsa-signing.pem"), pem(&chain[0])).expect("mock harness");
        let root = Arc::new(TrustedRoot::from_json(&b.to_json()).expect("mock harness"));
        MockSigstore {
            child,
            issuer: info["issuer"].as_str().expect("mock harness").to_string(),
            url,

            root,
            dir,
            // No pooled connections: Node closes idle ones after its keep-alive timeout, and a
            // request racing that close fails with IncompleteMessage.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("mock harness"),
        }
    }

    pub fn trusted_root_path(&self) -> PathBuf {
        self.dir.path().join("trusted_root.json")
    }

    pub fn tsa_url(&self) -> String {
        format!("{}/api/v1/timestamp", self.url)
    }

    /// An ES256 token signed by the mock's OIDC issuer (aud `sigstore`).
    pub async fn token(&self, sub: &str, expires_in: i64) -> String {
        self.token_with(json!({"sub": sub, "expiresIn": expires_in}))
            .await
    }

    /// A token from `/__token` with these settings (`sub`, `email`, `expiresIn`, `aud`).
    pub async fn token_with(&self, settings: Value) -> String {
        let v: Value = self
            .http
            .post(format!("{}/__token", self.url))
            .body(settings.to_string())
            .send()
            .await
            .expect("mock harness")
            .json()
            .await
            .expect("mock harness");
        v["token"].as_str().expect("mock harness").to_string()
    }

    pub async fn control(&self, v: Value) {
        let r = self
            .http
            .post(format!("{}/__control", self.url))
            .body(v.to_string())
            .send()
            .await
            .expect("mock harness");
        assert!(r.status().is_success());
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__stats", self.url))
            .send()
            .await
            .expect("mock harness")
            .json()
            .await
            .expect("mock harness")
    }

    pub fn fulcio(&self, o: HttpOptions) -> FulcioClient {
        FulcioClient::new(&self.url, self.root.clone(), o).expect("mock harness")
    }

    /// A signer over the mock's Fulcio and TSA (and Rekor with `tlog`).
    pub async fn signer(&self, sub: &str, tlog: Option<TlogPolicy>) -> KeylessSigner {
        let token = StaticToken::parse(&self.token(sub, 600).await).expect("mock harness");
        let s = KeylessSigner::new(
            Arc::new(token),
            Arc::new(self.fulcio(fast())),
            Arc::new(HttpTsa::new(&self.tsa_url(), fast()).expect("mock harness")),
            self.root.clone(),
        );
        match tlog {
            Some(p) => s.with_tlog(
                Arc::new(RekorClient::new(&self.url, fast()).expect("mock harness")),
                p,
            ),
            None => s,
        }
    }
}

/// A third-party verifier refused: what it printed.
#[derive(Debug, thiserror::Error)]
#[error("the verifier refused: {0}")]
pub struct PeerRefused(pub String);

/// `node tests/sigstore-mock/verify.mjs` (sigstore-js `@sigstore/verify`): Ok(stdout) or
/// its stderr.
pub fn sigstore_js(
    bundle: &Path,
    root: &Path,
    san: &str,
    issuer: &str,
    artifact: Option<&Path>,
    tlog_threshold: usize,
) -> Result<String, PeerRefused> {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/sigstore-mock/verify.mjs"))
        .arg(bundle)
        .arg(root)
        .args(["--san", san, "--issuer", issuer])
        .args(["--tlog-threshold", &tlog_threshold.to_string()]);
    if let Some(a) = artifact {
        cmd.arg("--artifact").arg(a);
    }
    let out = cmd.output().expect("mock harness");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PeerRefused(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// The bundle's signature bytes and its first `signedTimestamp` (DER).
pub fn signature_and_timestamp(bundle: &Value) -> (Vec<u8>, Vec<u8>) {
    let sig = match bundle.get("dsseEnvelope") {
        Some(env) => b64d(&env["signatures"][0]["sig"]),
        None => b64d(&bundle["messageSignature"]["signature"]),
    };
    let ts = b64d(
        &bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
            ["signedTimestamp"],
    );
    (sig, ts)
}

/// `openssl ts -verify` of a TimeStampResp over SHA-256(`signature`).
pub fn openssl_ts_verify(
    dir: &Path,
    resp: &[u8],
    signature: &[u8],
    ca_pem: &Path,
    untrusted_pem: &Path,
) -> Result<String, PeerRefused> {
    let f = dir.join("ts.der");
    std::fs::write(&f, resp).expect("mock harness");
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-in"])
        .arg(&f)
        .arg("-digest")
        .arg(stella_keys::hex(&stella_keys::sha256(signature)))
        .arg("-CAfile")
        .arg(ca_pem)
        .arg("-untrusted")
        .arg(untrusted_pem)
        .output()
        .expect("mock harness");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("Verification: OK") {
        Ok(text)
    } else {
        Err(PeerRefused(text))
    }
}
