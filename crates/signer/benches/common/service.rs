//! The service side shared by the benches (`load`, `keyless`): the real router and
//! `server::serve` on 127.0.0.1 in a runtime of its own (its own worker threads), a pinned
//! Authority JWKS and an in-process Licensing stub. Included with `#[path]`.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use stella_keys::FileKey;
use stella_signer::client::DpopKey;
use stella_signer::{AppBuilder, AppState, Config, TenantKeys};

/// The Authority's issuer in every bench.
pub(crate) const ISS: &str = "https://authority.bench";

/// A running service.
pub(crate) struct Service {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// What differs between the benches' services.
pub(crate) struct Setup {
    /// Worker threads of the service's runtime.
    pub(crate) threads: usize,
    /// Extra lines of the `[authority]` section.
    pub(crate) authority: String,
    /// The SQLite audit database.
    pub(crate) audit_db: std::path::PathBuf,
    /// Extra lines of the `[audit]` section.
    pub(crate) audit: String,
    /// Sections after `[signing]` (TOML).
    pub(crate) tail: String,
    /// Tenant `tenant-bench` signs with this key.
    pub(crate) signing: Arc<dyn stella_keys::Signer>,
}

/// Start the service under `dir`; `finish` completes the builder (backends, tokens) on the
/// service's runtime.
pub(crate) fn start<F, Fut>(dir: &Path, authority: &FileKey, s: Setup, finish: F) -> Service
where
    F: FnOnce(AppBuilder) -> Fut + Send + 'static,
    Fut: Future<Output = AppBuilder>,
{
    let mut jwk = stella_signer::jose::sign::public_jwk(authority);
    jwk["kid"] = json!("bench-1");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let (tx_addr, rx_addr) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(s.threads)
            .thread_name("signer")
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // Licensing stub (answers are cached by the service: one call per run).
            let lic = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let lic_url = format!("http://{}/license/introspect", lic.local_addr().unwrap());
            let app = axum::Router::new().route(
                "/license/introspect",
                axum::routing::post(|| async {
                    axum::Json(
                        json!({"active": true, "licenseId": "lic-bench", "plan": "enterprise",
                        "tenant": "tenant-bench", "limits": {"qps": 1.0e6, "burst": 1.0e6,
                        "maxConcurrent": 100000, "maxArtifactBytes": 1048576}}),
                    )
                }),
            );
            tokio::spawn(async move { axum::serve(lic, app).await.unwrap() });
            let cfg_text = format!(
                r#"
[server]
listen = "127.0.0.1:0"
[authority]
issuer = "{ISS}"
jwks_file = "{jwks}"
{authority}
[licensing]
introspect_url = "{lic_url}"
cache_ttl_seconds = 3600
[release]
trusted_scanner_digests = ["sha256:{scanner}"]
[audit]
path = "{db}"
{audit}
[signing]
keys = ["unused"]
default_keys_for_unlisted_tenants = true
{tail}"#,
                jwks = jwks.display(),
                authority = s.authority,
                scanner = "1".repeat(64),
                db = s.audit_db.display(),
                audit = s.audit,
                tail = s.tail,
            );
            let cfg = Config::from_toml(&cfg_text).unwrap();
            let mut tenants = HashMap::new();
            tenants.insert("tenant-bench".to_string(), vec![s.signing]);
            let builder = AppBuilder::new(cfg).signers(TenantKeys::new(Vec::new(), tenants));
            let app = finish(builder).await.build().unwrap();
            let state = AppState(Arc::new(app));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx_addr.send(listener.local_addr().unwrap()).unwrap();
            stella_signer::serve(state, listener, None, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    Service {
        addr: rx_addr.recv().unwrap(),
        stop,
        thread,
    }
}

/// `n` callers: a fresh DPoP key each and an Authority access token bound to it (scope
/// `signer.sign`, tenant `tenant-bench`, valid for an hour).
pub(crate) fn tokens(authority: &FileKey, n: usize) -> Vec<(DpopKey, String)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (0..n)
        .map(|i| {
            let key = DpopKey::generate().unwrap();
            let token = stella_signer::jose::sign::compact(
                authority,
                &json!({"alg": "ES256", "typ": "at+jwt", "kid": "bench-1"}),
                &json!({"iss": ISS, "sub": format!("client-{i}"),
                        "client_id": format!("client-{i}"), "aud": "signer", "scope": "signer.sign",
                        "iat": now, "exp": now + 3600, "jti": format!("t{i}"),
                        "tid": "tenant-bench", "inst": "inst-bench", "cnf": {"jkt": key.thumbprint()}}),
            )
            .unwrap();
            (key, token)
        })
        .collect()
}
