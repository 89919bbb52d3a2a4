//! Load driver for the Signer service (issue #5 item 10). Not a timed test: run it with
//! `scripts/signer-bench.sh` (= `cargo bench -p stella-signer --bench load -- [OPTIONS]`).
//!
//! One process, two runtimes: the real service (`AppBuilder` + `server::serve`, the code
//! `stella signer serve` runs, plain HTTP on 127.0.0.1, its own worker threads) and the load
//! generator (HTTP/1.1 keep-alive connections over loopback). Every `/sign/dsse` request
//! carries a DPoP-bound ES256 access token and a fresh ES256 DPoP proof (unique `jti`, so the
//! replay cache is exercised), both verified in full by the service; the service signs with
//! a P-256 key and appends a hash-chained audit record to SQLite (WAL, `synchronous=FULL`,
//! group commit) *before* answering; JSON request logs are formatted (into a sink). Proofs
//! are made before each phase so the generator spends its CPU on HTTP, not on ECDSA.
//!
//! Phases, same server, same run:
//! 1. `GET /healthz` closed loop (the trivial route) — requests/s;
//! 2. `/sign/dsse` open loop at a fixed rate (default 2,000 req/s) — latency measured from
//!    each request's *scheduled* send time (no coordinated omission). It runs before the
//!    saturating phase so it sees the steady state of that rate, not the audit log's
//!    checkpoint backlog left by phase 3;
//! 3. `POST /api/v1/signer/sign/dsse` closed loop — signatures/s, latency percentiles.
//!
//! `--shared` runs the same service on the scale-out backends instead of SQLite + memory: the
//! PostgreSQL audit log (a fresh database on 127.0.0.1:5432, or `STELLA_BENCH_POSTGRES_URL`'s
//! server, dropped afterwards) and the Redis quota store and replay cache (127.0.0.1:6379, a
//! fresh key prefix, deleted afterwards).
//!
//! Options: `--duration SECS` (per phase, default 10), `--connections N` (default 64),
//! `--rate R` (default 2000), `--server-threads N` (default 2), `--client-threads N`
//! (default 2), `--log-level LEVEL` (default info), `--token-cache N` (verified-token cache
//! entries, default 100000; 0 = verify every access token's signature on every request),
//! `--rounds N` (the honest benchmark of issue #15: N rounds of bound / service / open loop,
//! fresh proofs on the timed path, every envelope verified; see `load/rounds.rs`),
//! `--bound-threads N` (threads of the rounds' crypto bound, default: every core),
//! `--profile N` (N sign requests only, for callgrind), `--h2 N` (`--rounds`: the closed
//! loops' senders share N HTTP/2 connections instead of one HTTP/1.1 connection each),
//! `--commit-delay-us N` (the service's
//! `audit.commit_delay_us`; 0 commits every batch at once), `--stock-log` (the request log
//! lines formatted by tracing-subscriber's JSON formatter instead of the service's
//! `logfmt::JsonLines`: the same bytes, to measure the formatter),
//! `--key REF` (sign with this key reference — a file, `pkcs11:` or `awskms://` key — instead
//! of a generated P-256 file key; scripts/keys-bench.sh), `--rate 0` (skip the open loop).
//! Before the HTTP phases a raw phase calls the key's `Signer::sign` in a loop on
//! `--server-threads` threads: the backend's own speed, next to which the service is judged.

#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark that cannot set up should stop loudly

/// The allocator `stella` is built with (feature `fast-alloc`, on by default; docs/design.md
/// "Allocator"), so the bench measures what ships: mimalloc with its defaults, as `stella signer
/// serve` runs it; the system one with `--no-default-features`.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Replicas behind a load balancer (issue #13): HAProxy from the Debian package
/// (`scripts/setup-test-deps.sh`), TCP mode, round robin over the replicas: each keep-alive
/// connection of the load generator lands on one replica.
#[path = "../tests/common/haproxy.rs"]
mod haproxy;
#[path = "load/rounds.rs"]
mod rounds;
#[path = "common/service.rs"]
mod service;
use service::tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::json;
use stella_keys::{Algorithm, FileKey};
use stella_signer::client::DpopKey;

struct Opts {
    duration: u64,
    connections: usize,
    rate: u64,
    server_threads: usize,
    client_threads: usize,
    log_level: String,
    token_cache: usize,
    key: Option<String>,
    shared: bool,
    /// Replicas behind HAProxy (issue #13; more than 1 needs `--shared`).
    replicas: usize,
    rounds: usize,
    /// Threads of the bound (`--rounds`); default: every core, whatever the service's worker
    /// count, so that `--server-threads 1` is still judged against the whole machine.
    bound_threads: usize,
    profile: Option<u64>,
    /// `--h2 N` (`--rounds`): the closed loops' senders share N HTTP/2 connections (streams)
    /// instead of one HTTP/1.1 connection each.
    h2: usize,
    /// `audit.commit_delay_us` of the service (the SQLite writer's wait for more records
    /// once a batch shows load); unset: the default.
    commit_delay_us: Option<u64>,
    /// `--stock-log`: tracing-subscriber's JSON formatter instead of `logfmt::JsonLines`
    /// (the same bytes; to measure what the formatter costs).
    stock_log: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: 10,
        connections: 64,
        rate: 2000,
        server_threads: 2,
        client_threads: 2,
        log_level: "info".into(),
        token_cache: 100_000,
        key: None,
        shared: false,
        replicas: 1,
        rounds: 0,
        bound_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        profile: None,
        h2: 0,
        commit_delay_us: None,
        stock_log: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = v.parse().unwrap(),
            "--connections" => o.connections = v.parse().unwrap(),
            "--rate" => o.rate = v.parse().unwrap(),
            "--server-threads" => o.server_threads = v.parse().unwrap(),
            "--client-threads" => o.client_threads = v.parse().unwrap(),
            "--log-level" => o.log_level = v,
            "--token-cache" => o.token_cache = v.parse().unwrap(),
            "--key" => o.key = Some(v),
            "--replicas" => o.replicas = v.parse().unwrap(),
            "--rounds" => o.rounds = v.parse().unwrap(),
            "--bound-threads" => o.bound_threads = v.parse().unwrap(),
            "--profile" => o.profile = Some(v.parse().unwrap()),
            "--h2" => o.h2 = v.parse().unwrap(),
            "--commit-delay-us" => o.commit_delay_us = Some(v.parse().unwrap()),
            "--stock-log" => {
                o.stock_log = true;
                i += 1;
                continue;
            }
            "--shared" => {
                o.shared = true;
                i += 1;
                continue;
            }
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

const SIGN: &str = "/api/v1/signer/sign/dsse";

/// The scale-out backends' throw-away database and key prefix.
struct SharedState {
    admin: String,
    db: String,
    pg_url: String,
    redis_url: String,
    prefix: String,
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

impl SharedState {
    fn new() -> SharedState {
        let admin = std::env::var("STELLA_BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let tag = stella_signer::random_hex(8);
        let db = format!("stella_bench_{tag}");
        sh(&format!("psql '{admin}' -qAtc 'CREATE DATABASE {db}'"));
        let pg_url = format!("{}/{db}", &admin[..admin.rfind('/').unwrap()]);
        SharedState {
            admin,
            db,
            pg_url,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            prefix: format!("stella-bench:{tag}:"),
        }
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        sh(&format!(
            "psql '{}' -qAtc 'DROP DATABASE IF EXISTS {} WITH (FORCE)'",
            self.admin, self.db
        ));
        sh(&format!(
            "redis-cli -u '{0}' --scan --pattern '{1}*' | xargs -r redis-cli -u '{0}' DEL >/dev/null",
            self.redis_url, self.prefix
        ));
    }
}

struct Server {
    addr: std::net::SocketAddr,
    audit_db: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    signing_key_id: String,
}

/// Start the service with a pinned Authority JWKS, an in-process Licensing stub, a P-256
/// signing key and a SQLite audit log under `dir` (or the scale-out backends of `shared`).
fn start_server(
    dir: &std::path::Path,
    authority: &FileKey,
    o: &Opts,
    signing: Arc<dyn stella_keys::Signer>,
    shared: Option<(String, String, String)>,
) -> Server {
    let audit_db = dir.join("audit.db");
    let signing_key_id = signing.key_id().to_string();
    let setup = service::Setup {
        threads: o.server_threads,
        authority: format!("verified_token_cache_entries = {}", o.token_cache),
        audit_db: audit_db.clone(),
        audit: o
            .commit_delay_us
            .map(|us| format!("commit_delay_us = {us}"))
            .unwrap_or_default(),
        tail: String::new(),
        signing,
    };
    let svc = service::start(dir, authority, setup, |mut builder| async move {
        if let Some((pg_url, redis_url, prefix)) = shared {
            let audit = stella_store::PgAudit::connect(stella_store::PgOptions::new(pg_url))
                .await
                .unwrap();
            let mut ro = stella_store::RedisOptions::new(redis_url);
            ro.prefix = prefix;
            builder = builder
                .audit(Arc::new(audit))
                .quotas(Arc::new(
                    stella_store::RedisQuotaStore::connect(ro.clone())
                        .await
                        .unwrap(),
                ))
                .replay(Arc::new(
                    stella_store::RedisReplayCache::connect(ro).await.unwrap(),
                ));
        }
        builder
    });
    Server {
        addr: svc.addr,
        audit_db,
        stop: svc.stop,
        thread: svc.thread,
        signing_key_id,
    }
}

/// A prepared request.
#[derive(Clone)]
struct Req {
    method: hyper::Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Client { sender }
}

impl Client {
    async fn send(&mut self, host: &str, r: &Req) -> u16 {
        let mut b = hyper::Request::builder()
            .method(r.method.clone())
            .uri(r.path)
            .header("host", host);
        for (k, v) in &r.headers {
            b = b.header(*k, v);
        }
        let req = b.body(Full::new(r.body.clone())).unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await.unwrap();
        status
    }
}

/// Percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct PhaseResult {
    count: u64,
    errors: u64,
    secs: f64,
    lat: Vec<u32>,
}

impl PhaseResult {
    fn rps(&self) -> f64 {
        self.count as f64 / self.secs
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} {:>9.0} req/s  ok {:>8}  errors {:>4}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
            self.rps(),
            self.count,
            self.errors,
            pct(&self.lat, 0.50),
            pct(&self.lat, 0.99),
            self.lat.last().copied().unwrap_or(0) as f64 / 1000.0
        )
    }
}

/// Closed loop: `conns` connections, each sending back to back for `dur`. Requests are taken
/// from `reqs` in order (each used once).
async fn closed_loop(
    addr: std::net::SocketAddr,
    conns: usize,
    dur: Duration,
    reqs: Arc<Vec<Req>>,
    cycle: bool,
) -> PhaseResult {
    let next = Arc::new(AtomicU64::new(0));
    let host = addr.to_string();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, reqs, host) = (next.clone(), reqs.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut lat = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let i = if cycle { i % reqs.len() } else { i };
                let Some(r) = reqs.get(i) else { break };
                let t = Instant::now();
                let status = c.send(&host, r).await;
                if status == 200 {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    PhaseResult {
        count: lat.len() as u64,
        errors,
        secs,
        lat,
    }
}

/// Open loop at `rate` req/s: request `i` is due at `start + i / rate`; latency counts from
/// that due time.
async fn open_loop(
    addr: std::net::SocketAddr,
    conns: usize,
    dur: Duration,
    rate: u64,
    reqs: Arc<Vec<Req>>,
) -> PhaseResult {
    let total = (rate * dur.as_secs()) as usize;
    let next = Arc::new(AtomicU64::new(0));
    let host = addr.to_string();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(connect(addr).await);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    // BENCH_TIMELINE=1: print every request slower than 50 ms with its due time.
    let timeline = std::env::var_os("BENCH_TIMELINE").is_some();
    let mut tasks = Vec::new();
    for mut c in clients {
        let (next, reqs, host) = (next.clone(), reqs.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 12);
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due).await;
                let status = c.send(&host, &reqs[i]).await;
                let l = tokio::time::Instant::now().saturating_duration_since(due);
                if timeline && l > Duration::from_millis(50) {
                    eprintln!(
                        "slow: due +{} ms, latency {} ms",
                        (due - start).as_millis(),
                        l.as_millis()
                    );
                }
                if status == 200 {
                    lat.push(l.as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let secs = (tokio::time::Instant::now() - start).as_secs_f64();
    lat.sort_unstable();
    PhaseResult {
        count: lat.len() as u64,
        errors,
        secs,
        lat,
    }
}

/// `n` sign requests: `clients` DPoP keys with one token each, a fresh proof per request.
fn sign_requests(
    authority: &FileKey,
    url_base: &str,
    n: usize,
    clients: &[(DpopKey, String)],
) -> Vec<Req> {
    let url = format!("{url_base}{SIGN}");
    let body = Bytes::from(
        json!({
            "subject": [{"name": "app.tar", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": "stella.ops/sbom@v1",
            "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5",
                          "components": [{"type": "library", "name": "openssl", "version": "3.0.15"}]},
            "scannerImageDigest": format!("sha256:{}", "1".repeat(64)),
            "poe": {"format": "jwt", "value": "poe-bench"},
        })
        .to_string(),
    );
    let _ = authority;
    (0..n)
        .map(|i| {
            let (key, token) = &clients[i % clients.len()];
            Req {
                method: hyper::Method::POST,
                path: SIGN,
                headers: vec![
                    ("authorization", format!("DPoP {token}")),
                    ("dpop", key.proof("POST", &url, Some(token), None).unwrap()),
                    ("content-type", "application/json".into()),
                ],
                body: body.clone(),
            }
        })
        .collect()
}

fn main() {
    let o = opts();
    let level: tracing::Level = o.log_level.parse().unwrap_or(tracing::Level::INFO);
    // The service's JSON request logs are formatted as in production (`stella signer
    // serve`'s subscriber), then dropped; `--stock-log` formats the same bytes with
    // tracing-subscriber's own JSON formatter, to compare the two.
    let stock = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_max_level(level)
        .with_writer(std::io::sink);
    if o.stock_log {
        stock.init();
    } else {
        stock
            .event_format(stella_signer::logfmt::JsonLines::new())
            .init();
    }
    // The audit database lives on the project's disk (not tmpfs): fsyncs are real.
    let parent = std::env::var("BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("stella-bench-")
        .tempdir_in(&parent)
        .unwrap();
    let authority = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    if o.rounds > 0 || o.profile.is_some() {
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        rounds::run(&o, dir.path(), &authority, key);
        return;
    }
    let signing: Arc<dyn stella_keys::Signer> = match &o.key {
        None => Arc::new(FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap()),
        Some(r) => Arc::from(
            stella_keys::load_signer(
                &stella_keys::KeyRef::parse(r).unwrap(),
                stella_keys::DevKeys::Refuse,
                &mut || {
                    std::env::var("COSIGN_PASSWORD")
                        .map(zeroize::Zeroizing::new)
                        .map_err(|_| stella_keys::KeyError::Password("set COSIGN_PASSWORD".into()))
                },
            )
            .unwrap(),
        ),
    };
    // Raw backend speed: Signer::sign in a loop, as many threads as the server has.
    let raw_rps = {
        let stop_at = Instant::now() + Duration::from_secs(o.duration);
        let msg = vec![0x42u8; 600]; // about a statement's PAE
        let handles: Vec<_> = (0..o.server_threads)
            .map(|_| {
                let (k, msg) = (Arc::clone(&signing), msg.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < stop_at {
                        k.sign(&msg).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        total as f64 / o.duration as f64
    };
    println!(
        "raw backend ({} key, {} threads, Signer::sign in a loop): {raw_rps:.0} signatures/s",
        signing.mode(),
        o.server_threads
    );
    let shared = o.shared.then(SharedState::new);
    let server = start_server(
        dir.path(),
        &authority,
        &o,
        Arc::clone(&signing),
        shared
            .as_ref()
            .map(|s| (s.pg_url.clone(), s.redis_url.clone(), s.prefix.clone())),
    );
    // Issue #13: more replicas on the same shared state, behind HAProxy (TCP mode).
    assert!(o.replicas == 1 || o.shared, "--replicas needs --shared");
    let more: Vec<Server> = (1..o.replicas)
        .map(|_| {
            start_server(
                dir.path(),
                &authority,
                &o,
                Arc::clone(&signing),
                shared
                    .as_ref()
                    .map(|s| (s.pg_url.clone(), s.redis_url.clone(), s.prefix.clone())),
            )
        })
        .collect();
    let lb = (o.replicas > 1).then(|| {
        let mut addrs = vec![server.addr];
        addrs.extend(more.iter().map(|s| s.addr));
        haproxy::Haproxy::start(
            0,
            &addrs,
            &haproxy::Tuning {
                global: &["maxconn 8192", "nbthread 1"],
                timeout: Duration::from_secs(60),
            },
        )
    });
    let target = lb.as_ref().map(|l| l.addr).unwrap_or(server.addr);
    let base = format!("http://{target}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .unwrap();
    let dur = Duration::from_secs(o.duration);
    let clients = tokens(&authority, 64);
    println!(
        "Stella Signer load test ({}): {} s per phase, {} connections, server {} threads, client {} threads, {} cores",
        if o.replicas > 1 {
            format!("{} replicas behind HAProxy, PostgreSQL audit + Redis quotas/replay", o.replicas)
        } else if o.shared {
            "PostgreSQL audit + Redis quotas/replay".to_string()
        } else {
            "SQLite audit + memory".to_string()
        },
        o.duration,
        o.connections,
        o.server_threads,
        o.client_threads,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    rt.block_on(async {
        // Warm-up: PoE cache, connections, allocator.
        let warm = Arc::new(sign_requests(&authority, &base, 2000, &clients));
        let _ = closed_loop(target, o.connections, Duration::from_secs(1), warm, false).await;

        let health = Arc::new(vec![Req {
            method: hyper::Method::GET,
            path: "/healthz",
            headers: vec![],
            body: Bytes::new(),
        }]);
        let trivial = closed_loop(target, o.connections, dur, health, true).await;
        println!("{}", trivial.line("GET /healthz (trivial), closed"));

        let open = if o.rate > 0 {
            let n = (o.rate * o.duration) as usize;
            let reqs = Arc::new(sign_requests(&authority, &base, n, &clients));
            let open = open_loop(target, o.connections, dur, o.rate, reqs).await;
            println!("{}", open.line(&format!("POST /sign/dsse, open {} req/s", o.rate)));
            open
        } else {
            PhaseResult {
                count: 0,
                errors: 0,
                secs: 1.0,
                lat: Vec::new(),
            }
        };

        // Enough proofs for 20k signatures/s; made right before the phase (iat window 60 s).
        let n = (20_000 * o.duration) as usize;
        let t = Instant::now();
        let reqs = Arc::new(sign_requests(&authority, &base, n, &clients));
        eprintln!("(prepared {n} DPoP proofs in {:.1} s)", t.elapsed().as_secs_f64());
        let sign = closed_loop(target, o.connections, dur, reqs, false).await;
        println!("{}", sign.line("POST /sign/dsse, closed"));
        if sign.count + sign.errors >= n as u64 {
            eprintln!("(the closed loop used every prepared request: the rate is a lower bound)");
        }

        println!();
        println!("signatures/s (sustained, closed loop): {:.0}", sign.rps());
        println!("p99 at {} req/s (open loop, from scheduled time): {:.2} ms", o.rate, pct(&open.lat, 0.99));
        println!("ratio to the trivial route: {:.1}%", 100.0 * sign.rps() / trivial.rps());
        println!(
            "service / raw backend ({} key): {:.2}",
            signing.mode(),
            sign.rps() / raw_rps
        );
        println!(
            "{}",
            json!({"trivialRps": trivial.rps(), "signRps": sign.rps(), "signP50Ms": pct(&sign.lat, 0.5),
                   "signP99Ms": pct(&sign.lat, 0.99), "openRate": o.rate, "openP50Ms": pct(&open.lat, 0.5),
                   "openP99Ms": pct(&open.lat, 0.99), "openErrors": open.errors, "signErrors": sign.errors,
                   "ratio": sign.rps() / trivial.rps(), "signingKey": server.signing_key_id,
                   "keyMode": signing.mode(), "rawRps": raw_rps, "serviceToRaw": sign.rps() / raw_rps})
        );
    });
    drop(rt);
    drop(lb);
    for s in more {
        let _ = s.stop.send(());
        s.thread.join().unwrap();
    }
    let _ = server.stop.send(());
    server.thread.join().unwrap();
    let report = match &shared {
        Some(s) => stella_store::chain::verify(
            &stella_store::PgReader::connect(&s.pg_url, Duration::from_secs(10)).unwrap(),
        )
        .unwrap(),
        None => stella_store::chain::verify(
            &stella_store::SqliteReader::open(&server.audit_db).unwrap(),
        )
        .unwrap(),
    };
    println!(
        "audit log: {} records, chain intact: {}",
        report.records,
        report.is_intact()
    );
}
