//! Three replicas (in process, each with its own connections) on shared state: the PostgreSQL
//! audit log and the Redis quota store and replay cache. Quotas hold across replicas, a DPoP
//! proof used at one replica is a replay at the others, and the audit chain stays one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stella_signer::client::DpopKey;
use stella_store::{
    chain, AuditLog, PgAudit, PgOptions, PgReader, RedisCache, RedisOptions, RedisQuotaStore,
    RedisReplayCache, SharedCache,
};

use crate::support::*;

const PUBLIC: &str = "https://signer.example.test";
const SIGN: &str = "/api/v1/signer/sign/dsse";

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database and Redis key prefix, removed on drop.
struct Shared {
    admin: String,
    db: String,
    pg_url: String,
    redis_url: String,
    prefix: String,
}

impl Shared {
    fn new() -> Shared {
        let admin = std::env::var("STELLA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let tag = stella_signer::random_hex(8);
        let db = format!("stella_scaleout_{tag}");
        psql(&admin, &format!("CREATE DATABASE {db}"));
        let pg_url = format!("{}/{db}", &admin[..admin.rfind('/').unwrap()]);
        Shared {
            admin,
            db,
            pg_url,
            redis_url: std::env::var("STELLA_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("stella-test:{tag}:"),
        }
    }

    fn redis(&self) -> RedisOptions {
        let mut o = RedisOptions::new(&self.redis_url);
        o.prefix = self.prefix.clone();
        o
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
        );
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli -u '{}' --scan --pattern '{}*' | xargs -r redis-cli -u '{}' DEL >/dev/null",
                self.redis_url, self.prefix, self.redis_url
            ))
            .status();
    }
}

async fn replica(shared: &Shared) -> TestSigner {
    replica_at(shared, PUBLIC).await
}

async fn replica_at(shared: &Shared, public: &str) -> TestSigner {
    let audit: Arc<dyn AuditLog> = Arc::new(
        PgAudit::connect(PgOptions::new(&shared.pg_url))
            .await
            .unwrap(),
    );
    TestSigner::start_with(Opts {
        toml: format!("[server]\npublic_url = \"{public}\"\n"),
        audit: Some(audit),
        quotas: Some(Arc::new(
            RedisQuotaStore::connect(shared.redis()).await.unwrap(),
        )),
        replay: Some(Arc::new(
            RedisReplayCache::connect(shared.redis()).await.unwrap(),
        )),
        ..Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_quotas_replays_and_one_audit_chain() {
    let shared = Shared::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&shared).await);
    }
    // A plan with a burst of 4 and (practically) no refill, known to every replica.
    let plan = json!({"active": true, "licenseId": "lic-scaleout", "plan": "team",
        "tenant": "tenant-a",
        "limits": {"qps": 0.001, "burst": 4, "maxConcurrent": 8, "maxArtifactBytes": 1 << 20},
        "expiresAt": "2099-01-01T00:00:00Z"});
    for r in &replicas {
        r.licensing.set("poe-scaleout", plan.clone());
    }
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let public_sign = format!("{PUBLIC}{SIGN}");

    // Quotas: 12 requests round-robin; memory quotas would admit 4 per replica (12).
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = &replicas[i % 3];
        let proof = key.proof("POST", &public_sign, Some(&token), None).unwrap();
        let reply = send(
            &http,
            &r.url(SIGN),
            Some(format!("DPoP {token}")),
            &[proof],
            serde_json::to_vec(&sign_body("poe-scaleout")).unwrap(),
        )
        .await;
        statuses.push(reply.status);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 4, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{statuses:?}"
    );

    // Replay: one proof, accepted by replica 0, is a replay at replicas 1 and 2 (and 0).
    let proof = key.proof("POST", &public_sign, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let first = send(
        &http,
        &replicas[0].url(SIGN),
        Some(format!("DPoP {token}")),
        std::slice::from_ref(&proof),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    for r in [&replicas[1], &replicas[2], &replicas[0]] {
        let again = send(
            &http,
            &r.url(SIGN),
            Some(format!("DPoP {token}")),
            std::slice::from_ref(&proof),
            body.clone(),
        )
        .await;
        assert_eq!(again.status, 401, "{}", again.body);
        assert!(again.body.to_string().contains("replay"), "{}", again.body);
    }

    for r in &mut replicas {
        r.stop().await;
    }
    // One chain holds every request of every replica.
    let url = shared.pg_url.clone();
    let report = tokio::task::spawn_blocking(move || {
        chain::verify(&PgReader::connect(&url, Duration::from_secs(5)).unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 12 + 4);
}

/// A TCP forwarder in front of PostgreSQL or Redis that the test can cut (existing connections
/// dropped, new ones refused) and restore: outages without touching the shared servers.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let task = {
            let (up, conns) = (up.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: connection refused/reset
                    }
                    let h = tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    conns.lock().unwrap().push(h);
                }
            })
        };
        Proxy {
            port,
            up,
            conns,
            task,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.down();
    }
}

async fn sign_once(http: &reqwest::Client, r: &TestSigner, key: &DpopKey, token: &str) -> Reply {
    let proof = key
        .proof("POST", &format!("{PUBLIC}{SIGN}"), Some(token), None)
        .unwrap();
    send(
        http,
        &r.url(SIGN),
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await
}

/// Every signature handed out has its audit record in the shared log, and the chain is intact.
async fn reconcile(shared: &Shared, signed: Vec<String>) -> u64 {
    let url = shared.pg_url.clone();
    tokio::task::spawn_blocking(move || {
        let reader = PgReader::connect(&url, Duration::from_secs(5)).unwrap();
        let report = chain::verify(&reader).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        let mut ids = std::collections::HashSet::new();
        let mut after = 0;
        loop {
            let page = stella_store::AuditReader::read_after(&reader, after, 1000).unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            ids.extend(page.into_iter().map(|r| r.audit_id));
        }
        for id in &signed {
            assert!(ids.contains(id), "signature {id} has no audit record");
        }
        report.records
    })
    .await
    .unwrap()
}

/// Redis cut while serving: requests are refused with 503 upstream_unavailable and
/// Retry-After (and audited), nothing is signed unchecked; service resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers_without_restart() {
    let shared = Shared::new();
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut o = shared.redis();
    o.url = format!("redis://127.0.0.1:{}/0", proxy.port);
    o.timeout = Duration::from_millis(300);
    let audit: Arc<dyn AuditLog> = Arc::new(
        PgAudit::connect(PgOptions::new(&shared.pg_url))
            .await
            .unwrap(),
    );
    let mut r = TestSigner::start_with(Opts {
        toml: format!("[server]\npublic_url = \"{PUBLIC}\"\n"),
        audit: Some(audit),
        quotas: Some(Arc::new(RedisQuotaStore::connect(o.clone()).await.unwrap())),
        replay: Some(Arc::new(RedisReplayCache::connect(o).await.unwrap())),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let readyz = |r: &TestSigner| {
        let http = http.clone();
        let url = r.url("/readyz");
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut signed = Vec::new();
    let ok = sign_once(&http, &r, &key, &token).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    signed.push(ok.audit_id().to_string());
    assert_eq!(readyz(&r).await, 200);

    proxy.down();
    assert_eq!(readyz(&r).await, 503, "/readyz ignores a Redis outage");
    for _ in 0..3 {
        let refused = sign_once(&http, &r, &key, &token).await;
        assert_eq!(
            (refused.status, refused.code()),
            (503, "upstream_unavailable"),
            "{}",
            refused.body
        );
        assert!(refused.headers.contains_key("retry-after"));
        assert!(refused.body.get("bundle").is_none());
    }

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        let r2 = sign_once(&http, &r, &key, &token).await;
        if r2.status == 200 {
            signed.push(r2.audit_id().to_string());
            recovered = true;
            break;
        }
        assert_eq!(r2.status, 503, "{}", r2.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "no recovery after Redis came back");
    assert_eq!(readyz(&r).await, 200);
    r.stop().await;
    assert!(reconcile(&shared, signed).await >= 5);
}

/// PostgreSQL cut while serving: no signature leaves without its record (503), `/readyz`
/// turns 503; when it is back the log reconnects and `/readyz` recovers, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_closed_and_recovers_without_restart() {
    let shared = Shared::new();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = shared.pg_url.rsplit('/').next().unwrap().to_string();
    let mut o = PgOptions::new(format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port));
    o.timeout = Duration::from_secs(1);
    let audit: Arc<dyn AuditLog> = Arc::new(PgAudit::connect(o).await.unwrap());
    let mut r = TestSigner::start_with(Opts {
        toml: format!("[server]\npublic_url = \"{PUBLIC}\"\n"),
        audit: Some(audit),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let readyz = |r: &TestSigner| {
        let http = http.clone();
        let url = r.url("/readyz");
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut signed = Vec::new();
    let ok = sign_once(&http, &r, &key, &token).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    signed.push(ok.audit_id().to_string());
    assert_eq!(readyz(&r).await, 200);

    proxy.down();
    let refused = sign_once(&http, &r, &key, &token).await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, "upstream_unavailable"),
        "{}",
        refused.body
    );
    assert!(refused.body.get("bundle").is_none());
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(readyz(&r).await, 503);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        let r2 = sign_once(&http, &r, &key, &token).await;
        if r2.status == 200 {
            signed.push(r2.audit_id().to_string());
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "no recovery after PostgreSQL came back");
    assert_eq!(readyz(&r).await, 200);
    r.stop().await;
    reconcile(&shared, signed).await;
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Three replicas behind a real load balancer: quotas hold across them, a proof replayed
/// through the balancer (landing on the other replicas) is refused, one audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy() {
    let shared = Shared::new();
    let lb_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let public = format!("https://127.0.0.1:{lb_port}");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica_at(&shared, &public).await);
    }
    let ports: Vec<u16> = replicas.iter().map(|r| port_of(&r.url(""))).collect();
    let backends: Vec<std::net::SocketAddr> = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let lb = crate::haproxy::Haproxy::start(
        lb_port,
        &backends,
        &crate::haproxy::Tuning {
            global: &["maxconn 512"],
            timeout: Duration::from_secs(30),
        },
    );
    assert_eq!(
        lb.addr.port(),
        lb_port,
        "HAProxy listens where `public` says"
    );
    // A new connection per request, so round robin spreads them over the replicas.
    let ca = reqwest::Certificate::from_pem(authority().pki.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let plan = json!({"active": true, "licenseId": "lic-lb", "plan": "team",
        "tenant": "tenant-a",
        "limits": {"qps": 0.001, "burst": 5, "maxConcurrent": 8, "maxArtifactBytes": 1 << 20},
        "expiresAt": "2099-01-01T00:00:00Z"});
    for r in &replicas {
        r.licensing.set("poe-lb", plan.clone());
    }
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let sign_url = format!("{public}{SIGN}");
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let proof = key.proof("POST", &sign_url, Some(&token), None).unwrap();
        let reply = send(
            &http,
            &sign_url,
            Some(format!("DPoP {token}")),
            &[proof],
            serde_json::to_vec(&sign_body("poe-lb")).unwrap(),
        )
        .await;
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );

    let proof = key.proof("POST", &sign_url, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let mut replay_statuses = Vec::new();
    for _ in 0..3 {
        let r = send(
            &http,
            &sign_url,
            Some(format!("DPoP {token}")),
            std::slice::from_ref(&proof),
            body.clone(),
        )
        .await;
        if r.status == 401 {
            assert!(r.body.to_string().contains("replay"), "{}", r.body);
        }
        replay_statuses.push(r.status);
    }
    assert_eq!(replay_statuses, vec![200, 401, 401]);

    for r in &mut replicas {
        r.stop().await;
    }
    let url = shared.pg_url.clone();
    let report = tokio::task::spawn_blocking(move || {
        chain::verify(&PgReader::connect(&url, Duration::from_secs(5)).unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 15 + 3);
}

/// With `dpop.require_nonce`, replicas share the rotating nonce keys through Redis (the
/// shared cache): a nonce issued by one replica is accepted by another; a replica with its own
/// key refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_dpop_nonces_through_redis() {
    let shared = Shared::new();
    let shared = &shared;
    let start = |cache: bool| async move {
        let shared_cache: Option<Arc<dyn SharedCache>> = if cache {
            Some(Arc::new(RedisCache::connect(shared.redis()).await.unwrap()))
        } else {
            None
        };
        TestSigner::start_with(Opts {
            toml: format!("[server]\npublic_url = \"{PUBLIC}\"\n[dpop]\nrequire_nonce = true\n"),
            replay: Some(Arc::new(
                RedisReplayCache::connect(shared.redis()).await.unwrap(),
            )),
            shared_cache,
            ..Opts::default()
        })
        .await
    };
    let a = start(true).await;
    let b = start(true).await;
    let own = start(false).await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = format!("{PUBLIC}{SIGN}");
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let send_to = |r: &TestSigner, nonce: Option<&str>| {
        let proof = key.proof("POST", &url, Some(&token), nonce).unwrap();
        let (http, target, body, auth) = (
            http.clone(),
            r.url(SIGN),
            body.clone(),
            format!("DPoP {token}"),
        );
        async move { send(&http, &target, Some(auth), &[proof], body).await }
    };
    let challenge = send_to(&a, None).await;
    assert_eq!(
        (challenge.status, challenge.code()),
        (401, "use_dpop_nonce"),
        "{}",
        challenge.body
    );
    let nonce = challenge.headers["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_string();
    let at_b = send_to(&b, Some(&nonce)).await;
    assert_eq!(at_b.status, 200, "{}", at_b.body);
    let at_own = send_to(&own, Some(&nonce)).await;
    assert_eq!(
        (at_own.status, at_own.code()),
        (401, "use_dpop_nonce"),
        "{}",
        at_own.body
    );
}

/// Rotating nonce keys through Redis, two replicas (own connections) on a synthetic clock:
/// one key per epoch, the same on both, stored with a TTL; a nonce of the previous epoch is
/// accepted within its lifetime, one two epochs old is refused; a replica that cannot reach
/// Redis at an epoch change refuses (fails closed) instead of inventing a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_keys_rotate_in_redis() {
    use stella_signer::NonceIssuer;
    let shared = Shared::new();
    let replica = || async {
        let c: Arc<dyn SharedCache> = Arc::new(RedisCache::connect(shared.redis()).await.unwrap());
        NonceIssuer::rotating(Some(c), 100, 60)
    };
    let (a, b) = (replica().await, replica().await);
    // Epochs far from now: nothing else uses them.
    let t0 = 1_000_000_000;
    a.ensure(t0).await.unwrap();
    b.ensure(t0 + 10).await.unwrap();
    let n = a.issue(t0 + 20).unwrap();
    assert!(b.check(&n, t0 + 30), "same epoch key on both replicas");
    let ttl: i64 = redis_cli(
        &shared,
        &[
            "PTTL",
            &format!("{}cache:dpop-nonce:{}", shared.prefix, t0 / 100),
        ],
    );
    assert!(
        ttl > 200_000 && ttl <= 300_000,
        "TTL of the epoch key: {ttl}"
    );
    // Next epoch: b issues with the new key, a (prefetching in the last tenth) accepts it.
    a.ensure(t0 + 95).await.unwrap();
    b.ensure(t0 + 100).await.unwrap();
    let n2 = b.issue(t0 + 100).unwrap();
    assert!(a.check(&n2, t0 + 101));
    assert!(a.check(&n, t0 + 75), "previous epoch within the lifetime");
    // Two epochs later the first key is gone from both.
    a.ensure(t0 + 300).await.unwrap();
    b.ensure(t0 + 300).await.unwrap();
    assert!(!a.check(&n, t0 + 75) && !b.check(&n, t0 + 75));
    assert!(a.check(&b.issue(t0 + 300).unwrap(), t0 + 300));
    // Redis unreachable at an epoch change: no key, refused.
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut o = shared.redis();
    o.url = format!("redis://127.0.0.1:{}/0", proxy.port);
    o.timeout = Duration::from_millis(300);
    let c: Arc<dyn SharedCache> = Arc::new(RedisCache::connect(o).await.unwrap());
    let cut = NonceIssuer::rotating(Some(c), 100, 60);
    cut.ensure(t0 + 300).await.unwrap();
    proxy.down();
    let t = std::time::Instant::now();
    assert!(cut.ensure(t0 + 400).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(cut.issue(t0 + 400).is_none());
    proxy.restore();
    let mut ok = false;
    for _ in 0..30 {
        if cut.ensure(t0 + 400).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no recovery after Redis came back");
    // The recovered replica holds the shared key of the new epoch, not one of its own.
    a.ensure(t0 + 400).await.unwrap();
    assert!(a.check(&cut.issue(t0 + 400).unwrap(), t0 + 401));
}

fn redis_cli<T: std::str::FromStr>(shared: &Shared, args: &[&str]) -> T
where
    T::Err: std::fmt::Debug,
{
    let out = std::process::Command::new("redis-cli")
        .arg("-u")
        .arg(&shared.redis_url)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// PoE answers are shared: replica A asks Licensing; replica B, whose Licensing is down, is
/// served from the shared cache (state `cached`), then within the grace period after the TTL
/// (state `grace`); a refusal seen by A is a refusal at B although B's Licensing would say
/// yes; a replica without the shared cache and Licensing down refuses 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poe_answers_are_shared_through_redis() {
    let shared = Shared::new();
    let shared = &shared;
    let start = |cache: bool| async move {
        let shared_cache: Option<Arc<dyn SharedCache>> = if cache {
            Some(Arc::new(RedisCache::connect(shared.redis()).await.unwrap()))
        } else {
            None
        };
        TestSigner::start_with(Opts {
            toml: "[licensing]\ncache_ttl_seconds = 2\ngrace_ttl_seconds = 60\n".to_string(),
            shared_cache,
            ..Opts::default()
        })
        .await
    };
    let a = start(true).await;
    let b = start(true).await;
    let alone = start(false).await;
    b.licensing.set_down(true);
    alone.licensing.set_down(true);
    let poe = format!("poe-shared-{}", stella_signer::random_hex(4));
    let lic = json!({"active": true, "licenseId": "lic-shared", "plan": "team", "tenant": "tenant-a",
        "limits": {"qps": 100, "burst": 100, "maxConcurrent": 8, "maxArtifactBytes": 1 << 20},
        "expiresAt": "2099-01-01T00:00:00Z"});
    a.licensing.set(&poe, lic.clone());
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let sign = |r: &TestSigner, poe: &str| {
        let (http, url, token, body) = (http.clone(), r.url(SIGN), token.clone(), sign_body(poe));
        let key = &key;
        async move { send_dpop(&http, &url, &token, key, &body).await }
    };
    let ra = sign(&a, &poe).await;
    assert_eq!(ra.status, 200, "{}", ra.body);
    assert_eq!(
        a.audit(ra.audit_id()).poe_state,
        Some(stella_store::PoeState::Valid)
    );
    let rb = sign(&b, &poe).await;
    assert_eq!(rb.status, 200, "{}", rb.body);
    assert_eq!(
        b.audit(rb.audit_id()).poe_state,
        Some(stella_store::PoeState::Cached)
    );
    assert_eq!(
        b.licensing.calls.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let r_alone = sign(&alone, &poe).await;
    assert_eq!(
        (r_alone.status, r_alone.code()),
        (503, "upstream_unavailable"),
        "{}",
        r_alone.body
    );
    // Past the TTL, Licensing still down at B: grace from A's confirmation.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let rb = sign(&b, &poe).await;
    assert_eq!(rb.status, 200, "{}", rb.body);
    assert_eq!(
        b.audit(rb.audit_id()).poe_state,
        Some(stella_store::PoeState::Grace)
    );

    // A refusal confirmed by A is shared: B refuses although its own Licensing says yes.
    let revoked = format!("poe-revoked-{}", stella_signer::random_hex(4));
    a.licensing
        .set(&revoked, json!({"active": false, "reason": "revoked"}));
    b.licensing.set(&revoked, lic);
    b.licensing.set_down(false);
    let ra = sign(&a, &revoked).await;
    assert_eq!(
        (ra.status, ra.code()),
        (403, "entitlement_denied"),
        "{}",
        ra.body
    );
    let rb = sign(&b, &revoked).await;
    assert_eq!(
        (rb.status, rb.code()),
        (403, "entitlement_denied"),
        "{}",
        rb.body
    );
    assert!(rb.body.to_string().contains("revoked"), "{}", rb.body);
}

/// Release verdicts are shared: replica A asks the registry; replica B (same repository and
/// keyring) answers from the shared cache without a registry request, even with the registry
/// gone; replica C with another keyring does not use A's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_verdicts_are_shared_through_redis() {
    use crate::release::{oci, push_image, registry_reads, write_keyring, Caller};
    use stella_keys::{Algorithm, FileKey};
    let shared = Shared::new();
    let mut reg = stella_oci::testing::Registry::start();
    let release = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let attest = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let (signed_ref, signed) = push_image(&reg, "2.0").await;
    stella_oci::sign_image(&oci(), &signed_ref, &release)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ring = write_keyring(dir.path(), &release, &attest);
    let other_dir = tempfile::tempdir().unwrap();
    let other_ring = write_keyring(
        other_dir.path(),
        &release,
        &FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap(),
    );
    let start = |ring: std::path::PathBuf| {
        let host = reg.host();
        let shared = &shared;
        async move {
            TestSigner::start_with(Opts {
                toml: format!(
                    "[release]\nrepository = \"{host}/stellaops/scanner\"\nkeyring = \"{}\"\nregistry_attempts = 1\n",
                    ring.display()
                ),
                shared_cache: Some(Arc::new(RedisCache::connect(shared.redis()).await.unwrap())),
                ..Opts::default()
            })
            .await
        }
    };
    let a = start(ring.clone()).await;
    let b = start(ring).await;
    let c = start(other_ring).await;
    let caller = Caller::new().await;
    let r = caller.sign(&a, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.state.release.referrers().unwrap().registry_lookups(), 1);
    let reads = registry_reads(&reg);
    let r = caller.sign(&b, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        b.audit(r.audit_id()).scanner_verdict.as_deref(),
        Some("trusted-referrer")
    );
    assert_eq!(b.state.release.referrers().unwrap().registry_lookups(), 0);
    assert_eq!(registry_reads(&reg), reads, "B asked the registry");
    let r = caller.sign(&c, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        c.state.release.referrers().unwrap().registry_lookups(),
        1,
        "another keyring must not reuse the verdict"
    );
    // Registry gone: C's own verdict and B's shared one still serve; an unknown digest is 503.
    reg.stop();
    let r = caller.sign(&b, &signed.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unknown = format!("sha256:{}", "c".repeat(64));
    let r = caller.sign(&b, &unknown).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "upstream_unavailable"),
        "{}",
        r.body
    );
}
