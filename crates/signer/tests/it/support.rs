//! Test harness: a PKI (rcgen), the real Authority (oidc-provider under Node, one per test
//! binary), a Licensing stub that can be switched off, and a `TestSigner` serving the real
//! router over HTTPS with optional client certificates on 127.0.0.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::routing::post;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey, Signer as _};
use stella_signer::client::{self, DpopKey};
use stella_signer::jose;
use stella_signer::{AppBuilder, AppState, Config, TenantKeys};
use stella_store::SqliteReader;
use stella_store::{
    AuditLog, AuditPage, AuditQuery, AuditReader as _, AuditRecord, StoreError, StoreFuture,
};

pub(crate) const ISSUER: &str = "https://authority.stella.test";
pub(crate) const RESOURCE: &str = "urn:stella:signer";
/// Client id (and so certificate SAN) of the Signer's keyless identity at the Authority.
pub(crate) const KEYLESS_CLIENT: &str = "https://signer.stella.test/keyless";
pub(crate) const SCANNER: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

pub(crate) fn root() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    p.canonicalize().unwrap_or(p)
}

// ------------------------------------------------------------------------------------------
// PKI
// ------------------------------------------------------------------------------------------

pub(crate) struct Pki {
    /// PEM of the test CA, the server certificate and its private key. Kept in memory: the
    /// Authority lives in a process-wide static (never dropped), so files it needs are written
    /// only for as long as a process or test needs them (see [`Pki::write_to`]).
    pub(crate) ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    /// PEM cert + key of two client certificates.
    pub(crate) client_a: Vec<u8>,
    pub(crate) client_b: Vec<u8>,
}

/// Where [`Pki::write_to`] put the CA and the server's certificate and key.
pub(crate) struct PkiFiles {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap();
}

/// Write a file that holds a private key: created 0600, never world-readable.
fn write_private(path: &Path, data: impl AsRef<[u8]>) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(data.as_ref()).unwrap();
}

impl Pki {
    pub(crate) fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Stella Test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "signer.test");
        let (a_pem, a_key) = leaf(vec![], "client-a");
        let (b_pem, b_key) = leaf(vec![], "client-b");
        Pki {
            ca_pem: ca.pem(),
            server_cert_pem: server_pem,
            server_key_pem: server_key,
            client_a: format!("{a_pem}{a_key}").into_bytes(),
            client_b: format!("{b_pem}{b_key}").into_bytes(),
        }
    }

    /// Write the CA, server certificate and server key (0600) into `dir`.
    pub(crate) fn write_to(&self, dir: &Path) -> PkiFiles {
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        write(&files.ca, &self.ca_pem);
        write(&files.server_cert, &self.server_cert_pem);
        write_private(&files.server_key, &self.server_key_pem);
        files
    }

    pub(crate) fn http(&self, identity: Option<&[u8]>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .timeout(std::time::Duration::from_secs(20));
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id).unwrap());
        }
        b.build().unwrap()
    }
}

// ------------------------------------------------------------------------------------------
// The Authority (oidc-provider), shared by every test of this binary.
// ------------------------------------------------------------------------------------------

pub(crate) struct Authority {
    pub(crate) token_url: String,
    pub(crate) jwks_url: String,
    /// The token signing key (the tests forge hostile tokens with it).
    pub(crate) key: FileKey,
    pub(crate) pki: Pki,
    _child: Mutex<Child>,
}

pub(crate) struct TestClient {
    pub(crate) id: &'static str,
    pub(crate) tid: &'static str,
    pub(crate) inst: &'static str,
    pub(crate) scope: &'static str,
    pub(crate) dpop: bool,
    pub(crate) mtls: bool,
}

pub(crate) const CLIENTS: &[TestClient] = &[
    TestClient {
        id: "a-dpop",
        tid: "tenant-a",
        inst: "inst-a1",
        scope: "signer.sign other.scope",
        dpop: true,
        mtls: false,
    },
    TestClient {
        id: "a-mtls",
        tid: "tenant-a",
        inst: "inst-a1",
        scope: "signer.sign other.scope",
        dpop: false,
        mtls: true,
    },
    TestClient {
        id: "a-plain",
        tid: "tenant-a",
        inst: "inst-a1",
        scope: "signer.sign other.scope",
        dpop: false,
        mtls: false,
    },
    TestClient {
        id: "b-dpop",
        tid: "tenant-b",
        inst: "inst-b1",
        scope: "signer.sign other.scope",
        dpop: true,
        mtls: false,
    },
    // The Signer's own identity for keyless signing (tokens with aud `sigstore`).
    TestClient {
        id: KEYLESS_CLIENT,
        tid: "tenant-signer",
        inst: "inst-signer",
        scope: "other.scope",
        dpop: false,
        mtls: false,
    },
    // Audit API readers (tests/it/audit_api.rs): one per tenant, one over mTLS, and an
    // operator client with the cross-tenant admin scope.
    TestClient {
        id: "a-audit",
        tid: "tenant-a",
        inst: "inst-a1",
        scope: "signer.audit",
        dpop: true,
        mtls: false,
    },
    TestClient {
        id: "a-audit-mtls",
        tid: "tenant-a",
        inst: "inst-a1",
        scope: "signer.audit",
        dpop: false,
        mtls: true,
    },
    TestClient {
        id: "b-audit",
        tid: "tenant-b",
        inst: "inst-b1",
        scope: "signer.audit signer.sign",
        dpop: true,
        mtls: false,
    },
    TestClient {
        id: "ops-audit",
        tid: "tenant-ops",
        inst: "inst-ops",
        scope: "signer.audit signer.audit.admin",
        dpop: true,
        mtls: false,
    },
    TestClient {
        id: "z-dpop",
        tid: "tenant-z",
        inst: "inst-z1",
        scope: "signer.sign other.scope",
        dpop: true,
        mtls: false,
    },
];

pub(crate) fn secret(id: &str) -> String {
    format!("{id}-secret-0123456789")
}

pub(crate) fn authority() -> &'static Authority {
    static A: OnceLock<Authority> = OnceLock::new();
    A.get_or_init(start_authority)
}

fn start_authority() -> Authority {
    // The Authority's configuration (with its token signing key) and TLS files exist only
    // until it has read them: the Authority is a static, never dropped, so a TempDir held by
    // it would be left behind in the temp folder with the keys in it.
    let dir = tempfile::Builder::new()
        .prefix("stella-authority-")
        .tempdir()
        .unwrap();
    let pki = Pki::new();
    let files = pki.write_to(dir.path());
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let clients: Vec<Value> = CLIENTS
        .iter()
        .map(|c| {
            json!({"client_id": c.id, "client_secret": secret(c.id), "tid": c.tid, "inst": c.inst,
                   "scope": c.scope, "dpop": c.dpop, "mtls": c.mtls})
        })
        .collect();
    let cfg = json!({
        "issuer": ISSUER,
        "signingKeyPem": key.to_pkcs8_pem().unwrap().as_str(),
        "kid": "test-key-1",
        "tls": {"cert": files.server_cert, "key": files.server_key, "ca": files.ca},
        "clients": clients,
    });
    let cfg_path = dir.path().join("authority.json");
    write_private(&cfg_path, cfg.to_string());
    let script = root().join("tests/authority/authority.mjs");
    assert!(
        root()
            .join("tests/authority/node_modules/oidc-provider")
            .exists(),
        "tests/authority/node_modules is missing: run scripts/setup-test-deps.sh"
    );
    let (child, line) = stella_keyless::testing::spawn_announced(
        Command::new("node")
            .arg(&script)
            .arg(&cfg_path)
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit()),
        "the Authority (node, scripts/setup-test-deps.sh)",
    );
    let port = serde_json::from_str::<Value>(&line)
        .unwrap_or_else(|_| panic!("the Authority did not start: {line:?}"))["port"]
        .as_u64()
        .unwrap();
    // Listening: it has read its configuration and TLS files.
    drop(dir);
    Authority {
        token_url: format!("https://127.0.0.1:{port}/token"),
        jwks_url: format!("https://127.0.0.1:{port}/jwks"),
        key,
        pki,
        _child: Mutex::new(child),
    }
}

impl Authority {
    /// A real token from the Authority for `client`, DPoP-bound to `dpop` when given, over a
    /// connection with `identity` (client certificate) when given.
    pub(crate) async fn token(
        &self,
        client: &str,
        scope: &str,
        dpop: Option<&DpopKey>,
        identity: Option<&[u8]>,
    ) -> String {
        let http = self.pki.http(identity);
        client::client_credentials(
            &http,
            &self.token_url,
            client,
            &secret(client),
            &[("resource", RESOURCE), ("scope", scope)],
            dpop,
        )
        .await
        .unwrap()
        .access_token
    }

    /// A token signed with the Authority's key and these claims (hostile cases).
    pub(crate) fn forge(&self, header: Value, claims: Value) -> String {
        jose::sign::compact(&self.key, &header, &claims).unwrap()
    }

    /// Claims of a valid DPoP-bound token for tenant-a, to be altered.
    pub(crate) fn good_claims(&self, jkt: &str) -> Value {
        let now = now();
        json!({"iss": ISSUER, "sub": "a-dpop", "client_id": "a-dpop", "aud": "signer",
               "scope": "signer.sign", "iat": now, "exp": now + 300, "jti": "forged-1",
               "tid": "tenant-a", "inst": "inst-a1", "cnf": {"jkt": jkt}})
    }
}

pub(crate) fn at_header() -> Value {
    json!({"alg": "ES256", "typ": "at+jwt", "kid": "test-key-1"})
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// ------------------------------------------------------------------------------------------
// Licensing stub
// ------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub(crate) struct Licensing {
    pub(crate) answers: Arc<Mutex<HashMap<String, Value>>>,
    pub(crate) down: Arc<AtomicBool>,
    pub(crate) calls: Arc<std::sync::atomic::AtomicUsize>,
    /// Answer this many milliseconds late (keeps requests in flight).
    pub(crate) delay_ms: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) url: String,
}

pub(crate) fn license(tenant: &str, qps: f64, max_bytes: u64) -> Value {
    json!({"active": true, "licenseId": format!("lic-{tenant}"), "plan": "team", "tenant": tenant,
           "limits": {"qps": qps, "burst": qps, "maxConcurrent": 8, "maxArtifactBytes": max_bytes},
           "expiresAt": "2099-01-01T00:00:00Z"})
}

async fn introspect(
    State(l): State<Licensing>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    l.calls.fetch_add(1, Ordering::SeqCst);
    let delay = l.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if l.down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let poe = v["value"].as_str().unwrap_or("");
    let answer = l
        .answers
        .lock()
        .unwrap()
        .get(poe)
        .cloned()
        .unwrap_or(json!({"active": false, "reason": "unknown license"}));
    axum::Json(answer).into_response()
}

impl Licensing {
    pub(crate) async fn start() -> Licensing {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut l = Licensing {
            url: format!(
                "http://{}/license/introspect",
                listener.local_addr().unwrap()
            ),
            ..Licensing::default()
        };
        l.answers
            .lock()
            .unwrap()
            .insert("poe-a".into(), license("tenant-a", 1000.0, 1 << 20));
        l.answers
            .lock()
            .unwrap()
            .insert("poe-b".into(), license("tenant-b", 1000.0, 1 << 20));
        let app = axum::Router::new()
            .route("/license/introspect", post(introspect))
            .with_state(l.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        l.url = l.url.clone();
        l
    }

    pub(crate) fn set(&self, poe: &str, v: Value) {
        self.answers.lock().unwrap().insert(poe.into(), v);
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------------------------------
// The signer under test
// ------------------------------------------------------------------------------------------

pub(crate) struct TestSigner {
    pub(crate) base: String,
    pub(crate) state: AppState,
    pub(crate) audit_db: PathBuf,
    pub(crate) signing_pub: stella_keys::PublicKey,
    pub(crate) licensing: Licensing,
    pub(crate) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Options for [`TestSigner::start`].
#[derive(Default)]
pub(crate) struct Opts {
    pub(crate) toml: String,
    pub(crate) audit: Option<Arc<dyn stella_store::AuditLog>>,
    pub(crate) extra_keys: usize,
    /// Shared-state backends (scale-out tests).
    pub(crate) quotas: Option<Arc<dyn stella_store::QuotaStore>>,
    pub(crate) replay: Option<Arc<dyn stella_store::ReplayCache>>,
    /// Use these keys instead of the generated file keys (HSM / KMS tests).
    pub(crate) signers: Option<TenantKeys>,
    pub(crate) nonce_secret: Option<Vec<u8>>,
    /// The replicas' shared cache (PoE answers, release verdicts, rotating nonce keys).
    pub(crate) shared_cache: Option<Arc<dyn stella_store::SharedCache>>,
}

impl TestSigner {
    pub(crate) async fn start() -> TestSigner {
        Self::start_with(Opts::default()).await
    }

    pub(crate) async fn start_with(opts: Opts) -> TestSigner {
        let a = authority();
        let licensing = Licensing::start().await;
        let dir = tempfile::tempdir().unwrap();
        let tls = a.pki.write_to(dir.path());
        let audit_db = dir.path().join("audit.db");
        let base_toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 262144
shutdown_grace_seconds = 5
[server.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[authority]
issuer = "{ISSUER}"
jwks_url = "{jwks}"
ca_file = "{ca}"
[licensing]
introspect_url = "{lic}"
cache_ttl_seconds = 60
grace_ttl_seconds = 60
[release]
enforce = true
trusted_scanner_digests = ["{SCANNER}"]
[audit]
path = "{db}"
[signing]
keys = ["unused-replaced-by-test"]
default_keys_for_unlisted_tenants = true
"#,
            cert = tls.server_cert.display(),
            key = tls.server_key.display(),
            ca = tls.ca.display(),
            jwks = a.jwks_url,
            lic = licensing.url,
            db = audit_db.display(),
        );
        let mut table: toml::Table = base_toml.parse().unwrap();
        let overrides: toml::Table = opts.toml.parse().unwrap();
        merge(&mut table, overrides);
        let cfg: Config = toml::Value::Table(table).try_into().unwrap();
        cfg.validate().unwrap();
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let signing_pub = key.public_key().clone();
        let mut keys: Vec<Arc<dyn stella_keys::Signer>> = vec![Arc::new(key)];
        for _ in 0..opts.extra_keys {
            keys.push(Arc::new(FileKey::generate(Algorithm::Ed25519).unwrap()));
        }
        let mut tenants = HashMap::new();
        tenants.insert("tenant-a".to_string(), keys);
        tenants.insert(
            "tenant-b".to_string(),
            vec![
                Arc::new(FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap())
                    as Arc<dyn stella_keys::Signer>,
            ],
        );
        let tls = stella_signer::tls_acceptor(cfg.server.tls.as_ref().unwrap()).unwrap();
        let signers = opts
            .signers
            .unwrap_or_else(|| TenantKeys::new(Vec::new(), tenants));
        let mut b = AppBuilder::new(cfg).signers(signers);
        if let Some(au) = opts.audit {
            b = b.audit(au);
        }
        if let Some(q) = opts.quotas {
            b = b.quotas(q);
        }
        if let Some(r) = opts.replay {
            b = b.replay(r);
        }
        if let Some(n) = opts.nonce_secret {
            b = b.nonce_secret(zeroize::Zeroizing::new(n));
        }
        if let Some(c) = opts.shared_cache {
            b = b.shared_cache(c);
        }
        let state = AppState(Arc::new(b.build().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(async move {
            stella_signer::serve(st, listener, Some(tls), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestSigner {
            base,
            state,
            audit_db,
            signing_pub,
            licensing,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stop gracefully and wait for the audit log to be closed.
    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// The audit record with this id (the log is read from the database file).
    pub(crate) fn audit(&self, audit_id: &str) -> AuditRecord {
        let reader = SqliteReader::open(&self.audit_db).unwrap();
        let mut after = 0;
        loop {
            let page = reader.read_after(after, 1000).unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                let rec: AuditRecord = serde_json::from_str(&r.record_json).unwrap();
                if rec.audit_id == audit_id {
                    return rec;
                }
            }
        }
        panic!("no audit record {audit_id}");
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// A sign request body.
pub(crate) fn sign_body(poe: &str) -> Value {
    json!({
        "subject": [{"name": "app.tar", "digest": {"sha256": "ab".repeat(32)}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5"},
        "scannerImageDigest": SCANNER,
        "poe": {"format": "jwt", "value": poe},
    })
}

/// What came back.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub(crate) fn audit_id(&self) -> &str {
        self.body["auditId"].as_str().expect("auditId in the body")
    }
}

/// Send a raw request: `authorization` and `dpop` header values as given.
pub(crate) async fn send(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<String>,
    dpop: &[String],
    body: Vec<u8>,
) -> Reply {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    for d in dpop {
        req = req.header("dpop", d);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        headers,
    }
}

/// A DPoP-bound request with a fresh proof.
pub(crate) async fn send_dpop(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &DpopKey,
    body: &Value,
) -> Reply {
    let proof = key.proof("POST", url, Some(token), None).unwrap();
    send(
        http,
        url,
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// Assert a refusal: status, code, and an audit record saying the same.
pub(crate) fn assert_refused(s: &TestSigner, r: &Reply, status: u16, code: &str) -> AuditRecord {
    assert_eq!(
        (r.status, r.code()),
        (status, code),
        "unexpected reply: {}",
        r.body
    );
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.status, status);
    assert_eq!(rec.reason_code.as_deref(), Some(code));
    assert_ne!(rec.outcome, stella_store::Outcome::Signed);
    assert!(
        rec.envelope_sha256.is_none(),
        "a refused request has no envelope"
    );
    rec
}

/// An audit log that cannot be written (every audited route answers `503`). It cannot be
/// queried (`404` on the audit route), or, once `reads_fail` is set, its reads fail (`503`).
#[derive(Default)]
pub(crate) struct FailingAudit {
    /// Reads fail too (`Database`); otherwise they are `Unsupported`.
    pub(crate) reads_fail: Arc<AtomicBool>,
}

impl AuditLog for FailingAudit {
    fn append(&self, _: stella_store::AuditRecord) -> StoreFuture<'_, stella_store::Appended> {
        Box::pin(async { Err(StoreError::Database("disk full".into())) })
    }
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn is_healthy(&self) -> bool {
        false
    }
    fn backend(&self) -> &'static str {
        "failing"
    }
    fn query(&self, _: AuditQuery) -> StoreFuture<'_, AuditPage> {
        let fail = self.reads_fail.load(Ordering::SeqCst);
        Box::pin(async move {
            if fail {
                Err(StoreError::Database("unreadable".into()))
            } else {
                Err(StoreError::Unsupported("querying this audit backend"))
            }
        })
    }
}

/// A fresh P-256 checkpoint key written as PKCS#8 PEM (mode 0600) to
/// `dir/audit-checkpoint.key`; returns the key and the file's path.
pub(crate) fn checkpoint_key_file(dir: &Path) -> (FileKey, PathBuf) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let path = dir.join("audit-checkpoint.key");
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    (key, path)
}
