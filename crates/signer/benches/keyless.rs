//! Keyless vs keyful signing through the service, in one run (issue #12 item 9). Not a timed
//! test: run it with `scripts/keyless-bench.sh` (= `cargo bench -p stella-signer --bench
//! keyless -- [OPTIONS]`).
//!
//! Two services in this process, each the code `stella signer serve` runs (plain HTTP on
//! 127.0.0.1, `--server-threads` workers, SQLite audit with group commit, DPoP-bound tokens
//! and a fresh DPoP proof verified on every request), both with the same P-256 file key and
//! the dev-only in-process keyless CA and TSA:
//! - service A: keyless certificates reused within their validity (`reuse =
//!   "within_validity"`, the default);
//! - service B: one certificate per signature (`reuse = "per_signature"`).
//!
//! Phases, closed loop, `--connections` connections, `--duration` seconds each, run in five
//! interleaved rounds (so the machine's changing load hits all three alike):
//! 1. keyful on A (`signingMode: file`);
//! 2. keyless on A (reused certificate);
//! 3. keyless on B (a new key + certificate for every request).
//!
//! Then the certificate's cost, separated out two ways: (a) the dev CA alone issuing
//! certificates in a loop (key generation, proof of possession, leaf with SCT, chain check)
//! on `--server-threads` threads; (b) the difference of the services' mean time per
//! signature, `1/rate(B) - 1/rate(A)` (CPU per signature at saturation), and of the
//! `stella_signer_keyless_signing_seconds_sum` means for new and reused certificates. With a
//! real Fulcio the certificate adds a network round trip per refresh instead (every ~8
//! minutes with reuse; on every request without).
//!
//! Options: `--duration SECS` (default 10), `--connections N` (default 32),
//! `--server-threads N` (default 2), `--client-threads N` (default 1).

#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark that cannot set up should stop loudly

/// The allocator `stella` is built with (feature `fast-alloc`, on by default; docs/design.md
/// "Allocator"), so the bench measures what ships: mimalloc with its defaults, as `stella signer
/// serve` runs it; the system one with `--no-default-features`.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::json;
use stella_keys::{Algorithm, FileKey};
use stella_signer::client::DpopKey;

const SIGN: &str = "/api/v1/signer/sign/dsse";
#[path = "common/service.rs"]
mod service;
use service::{tokens, ISS};

struct Opts {
    duration: u64,
    connections: usize,
    server_threads: usize,
    client_threads: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: 10,
        connections: 32,
        server_threads: 2,
        client_threads: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = v.parse().unwrap(),
            "--connections" => o.connections = v.parse().unwrap(),
            "--server-threads" => o.server_threads = v.parse().unwrap(),
            "--client-threads" => o.client_threads = v.parse().unwrap(),
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

struct Server {
    addr: std::net::SocketAddr,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A service with `reuse` ("within_validity" or "per_signature") under `dir`.
fn start_server(
    dir: &std::path::Path,
    authority: &FileKey,
    threads: usize,
    signing: Arc<dyn stella_keys::Signer>,
    reuse: &str,
) -> Server {
    let setup = service::Setup {
        threads,
        authority: String::new(),
        audit_db: dir.join("audit.db"),
        audit: String::new(),
        tail: format!(
            r#"[signing.tenants.tenant-bench]
keyless = "allowed"
[keyless]
issuer = "dev"
insecure_dev_services = true
dev_dir = "{dev}"
reuse = "{reuse}"
"#,
            dev = dir.join("keyless").display(),
        ),
        signing,
    };
    let svc = service::start(dir, authority, setup, |builder| async move {
        // The Signer's identity token (the dev CA reads its claims; it does not verify
        // token signatures).
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        let token = stella_keyless::StaticToken::parse(&stella_keyless::token::unsigned_jwt(
            &json!({"iss": ISS, "sub": "https://signer.bench/keyless", "aud": "sigstore", "exp": exp}),
        ))
        .unwrap();
        builder.keyless_tokens(Arc::new(token))
    });
    Server {
        addr: svc.addr,
        base: format!("http://{}", svc.addr),
        stop: svc.stop,
        thread: svc.thread,
    }
}

#[derive(Clone)]
struct Req {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn send(
    s: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    method: hyper::Method,
    r: &Req,
) -> (u16, Bytes) {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(r.path)
        .header("host", host);
    for (k, v) in &r.headers {
        b = b.header(*k, v);
    }
    s.ready().await.unwrap();
    let resp = s
        .send_request(b.body(Full::new(r.body.clone())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

struct Phase {
    count: u64,
    errors: u64,
    secs: f64,
    lat: Vec<u32>,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.count as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return 0.0;
        }
        self.lat[((self.lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} {:>7.0} signatures/s  ok {:>7}  errors {:>3}  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.rps(),
            self.count,
            self.errors,
            self.pct(0.5),
            self.pct(0.99)
        )
    }
}

async fn closed_loop(
    addr: std::net::SocketAddr,
    conns: usize,
    dur: Duration,
    reqs: Arc<Vec<Req>>,
) -> Phase {
    let next = Arc::new(AtomicU64::new(0));
    let host = addr.to_string();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, reqs, host) = (next.clone(), reqs.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let (mut lat, mut errors) = (Vec::with_capacity(1 << 12), 0u64);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(r) = reqs.get(i) else { break };
                let t = Instant::now();
                let (status, body) = send(&mut c, &host, hyper::Method::POST, r).await;
                if status == 200 {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("error {status}: {}", String::from_utf8_lossy(&body));
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Phase {
        count: lat.len() as u64,
        errors,
        secs,
        lat,
    }
}

/// `n` sign requests for `base` asking for `mode`, a fresh DPoP proof each.
fn sign_requests(base: &str, n: usize, clients: &[(DpopKey, String)], mode: &str) -> Vec<Req> {
    let url = format!("{base}{SIGN}");
    let body = Bytes::from(
        json!({
            "subject": [{"name": "app.tar", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": "stella.ops/sbom@v1",
            "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5",
                          "components": [{"type": "library", "name": "openssl", "version": "3.0.15"}]},
            "scannerImageDigest": format!("sha256:{}", "1".repeat(64)),
            "poe": {"format": "jwt", "value": "poe-bench"},
            "options": {"signingMode": mode, "returnBundle": "sigstore"},
        })
        .to_string(),
    );
    (0..n)
        .map(|i| {
            let (key, token) = &clients[i % clients.len()];
            Req {
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

/// `stella_signer_keyless_signing_seconds_sum / _signatures_total` for `certificate`.
async fn keyless_mean_ms(addr: std::net::SocketAddr, certificate: &str) -> Option<f64> {
    let mut c = connect(addr).await;
    let r = Req {
        path: "/metrics",
        headers: vec![],
        body: Bytes::new(),
    };
    let (_, body) = send(&mut c, &addr.to_string(), hyper::Method::GET, &r).await;
    let text = String::from_utf8_lossy(&body);
    let val = |name: &str| -> Option<f64> {
        let key = format!("{name}{{certificate=\"{certificate}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    };
    let sum = val("stella_signer_keyless_signing_seconds_sum")?;
    let n = val("stella_signer_keyless_signatures_total")?;
    (n > 0.0).then(|| 1000.0 * sum / n)
}

/// The dev CA alone: certificates issued per second on `threads` threads (ephemeral key,
/// proof of possession, leaf with SCT, chain check — what a refresh costs in process).
fn dev_ca_rate(threads: usize, secs: u64) -> f64 {
    let services = Arc::new(
        stella_keyless::dev::DevServices::generate(time::OffsetDateTime::now_utc()).unwrap(),
    );
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let raw = stella_keyless::token::unsigned_jwt(
        &json!({"iss": ISS, "sub": "https://signer.bench/keyless", "exp": exp}),
    );
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (services, raw) = (services.clone(), raw.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let token = stella_keyless::IdentityToken::parse(&raw).unwrap();
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    let key = stella_keyless::EphemeralSigner::generate().unwrap();
                    let pop =
                        stella_keys::Signer::sign(&key, token.challenge().unwrap().as_bytes())
                            .unwrap();
                    let req = stella_keyless::CertificateRequest {
                        public_key: stella_keys::Signer::public_key(&key),
                        token: &token,
                        proof_of_possession: &pop,
                    };
                    rt.block_on(stella_keyless::CertificateIssuer::issue(&*services.ca, req))
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / secs as f64
}

/// Mean microseconds of `f` over `n` runs (one thread).
fn mean_us(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Where a keyless signature's time goes, in process on one thread (no HTTP, no audit): the
/// whole `KeylessSigner::sign_dsse` with a reused certificate, and its parts — the ECDSA
/// signature, the dev TSA's timestamp, and the self-check of the bundle with `stella-sigstore`.
fn breakdown() {
    let services =
        stella_keyless::dev::DevServices::generate(time::OffsetDateTime::now_utc()).unwrap();
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let token = stella_keyless::StaticToken::parse(&stella_keyless::token::unsigned_jwt(
        &json!({"iss": ISS, "sub": "https://signer.bench/keyless", "exp": exp}),
    ))
    .unwrap();
    let signer = services.signer(Arc::new(token)).unwrap();
    let root = services.trusted_root().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.tar","digest":{"sha256":"abab"}}],"predicateType":"stella.ops/sbom@v1","predicate":{}}"#.to_vec();
    let out = rt
        .block_on(signer.sign_dsse(stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload.clone()))
        .unwrap();
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let digest = [7u8; 32];
    let text = serde_json::to_vec(&out.bundle).unwrap();
    let policy = stella_sigstore::Policy::Identity(stella_sigstore::Identity::new(
        stella_sigstore::Matcher::exact("https://signer.bench/keyless"),
        stella_sigstore::Matcher::exact(ISS),
    ));
    // Interleaved rounds, so a change in the machine's load hits every part alike.
    let (mut whole, mut sign, mut tsa, mut verify) = (0.0, 0.0, 0.0, 0.0);
    let rounds = 10;
    let n = 50;
    for _ in 0..rounds {
        whole += mean_us(n, || {
            rt.block_on(signer.sign_dsse(stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload.clone()))
                .unwrap();
        });
        sign += mean_us(n, || {
            stella_keys::sign_envelope(stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload.clone(), &[&key])
                .unwrap();
        });
        tsa += mean_us(n, || {
            services
                .tsa
                .stamp(&digest, time::OffsetDateTime::now_utc())
                .unwrap();
        });
        verify += mean_us(n, || {
            let b = stella_sigstore::Bundle::from_json(&text).unwrap();
            stella_sigstore::verify(
                &b,
                stella_sigstore::Artifact::Unchecked,
                &policy,
                &root,
                &stella_sigstore::Options {
                    tlog_threshold: 0,
                    time_threshold: 1,
                },
            )
            .unwrap();
        });
    }
    let r = f64::from(rounds);
    let (whole, sign, tsa, verify) = (whole / r, sign / r, tsa / r, verify / r);
    println!(
        "in process, one thread: keyless sign_dsse (reused certificate) {whole:.0} µs; its parts alone: ECDSA DSSE signature {sign:.0} µs, dev TSA timestamp {tsa:.0} µs, bundle self-check (parse + verify) {verify:.0} µs"
    );
}

fn main() {
    let o = opts();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .init();
    let parent = std::env::var("BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("stella-keyless-bench-")
        .tempdir_in(&parent)
        .unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let authority = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let signing: Arc<dyn stella_keys::Signer> =
        Arc::new(FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap());
    let a = start_server(
        &da,
        &authority,
        o.server_threads,
        signing.clone(),
        "within_validity",
    );
    let b = start_server(&db, &authority, o.server_threads, signing, "per_signature");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .unwrap();
    let clients = tokens(&authority, 64);
    println!(
        "Stella Signer keyless vs keyful: {} s per phase, {} connections, server {} threads, client {} threads, {} cores; dev-only in-process CA and TSA",
        o.duration,
        o.connections,
        o.server_threads,
        o.client_threads,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    // Interleaved rounds (keyful, keyless reused, keyless per signature, again...), so a
    // change in the machine's load hits the three alike; each phase's figures are summed
    // over its rounds. Enough prepared requests for 5,000 signatures/s.
    let rounds = 5u64;
    let slice = Duration::from_secs_f64(o.duration as f64 / rounds as f64);
    let n = (5_000.0 * slice.as_secs_f64()) as usize;
    let phases = [
        ("keyful (file P-256 key)", &a, "file"),
        ("keyless, certificate reused within validity", &a, "keyless"),
        ("keyless, one certificate per signature", &b, "keyless"),
    ];
    let results: Vec<(String, Phase)> = rt.block_on(async {
        let mut acc: Vec<Phase> = Vec::new();
        for (_, server, mode) in phases {
            // Warm-up (PoE cache, connections, the first certificate).
            let warm = Arc::new(sign_requests(&server.base, 500, &clients, mode));
            let _ = closed_loop(server.addr, o.connections, Duration::from_secs(1), warm).await;
            acc.push(Phase {
                count: 0,
                errors: 0,
                secs: 0.0,
                lat: Vec::new(),
            });
        }
        for _ in 0..rounds {
            for (i, (_, server, mode)) in phases.iter().enumerate() {
                let reqs = Arc::new(sign_requests(&server.base, n, &clients, mode));
                let p = closed_loop(server.addr, o.connections, slice, reqs).await;
                if p.count + p.errors >= n as u64 {
                    eprintln!("(a round used every prepared request: its rate is a lower bound)");
                }
                acc[i].count += p.count;
                acc[i].errors += p.errors;
                acc[i].secs += p.secs;
                acc[i].lat.extend(p.lat);
            }
        }
        phases
            .iter()
            .zip(acc)
            .map(|((name, _, _), mut p)| {
                p.lat.sort_unstable();
                println!("{}", p.line(name));
                (name.to_string(), p)
            })
            .collect()
    });
    let (keyful, reused, per_sig) = (&results[0].1, &results[1].1, &results[2].1);
    let (mean_new, mean_reused) = rt.block_on(async {
        (
            keyless_mean_ms(b.addr, "new").await,
            keyless_mean_ms(a.addr, "reused").await,
        )
    });
    let ca_rate = dev_ca_rate(o.server_threads, o.duration.min(5));
    breakdown();
    let cert_ms_from_rates = 1000.0 * (1.0 / per_sig.rps() - 1.0 / reused.rps());
    println!();
    println!(
        "keyless (reused) / keyful:            {:.2}",
        reused.rps() / keyful.rps()
    );
    println!(
        "keyless (per signature) / keyful:     {:.2}",
        per_sig.rps() / keyful.rps()
    );
    println!("certificate cost, dev CA alone:      {ca_rate:.0} certificates/s ({:.2} ms CPU each on one thread)", 1000.0 * o.server_threads as f64 / ca_rate);
    println!("certificate cost, from the services: {cert_ms_from_rates:.2} ms per signature at saturation (1/rate(per signature) - 1/rate(reused))");
    if let (Some(n), Some(r)) = (mean_new, mean_reused) {
        println!("keyless signing step (metrics):      {n:.2} ms with a new certificate, {r:.2} ms reused");
    }
    println!(
        "{}",
        json!({"keyfulRps": keyful.rps(), "keylessReusedRps": reused.rps(),
               "keylessPerSignatureRps": per_sig.rps(),
               "reusedToKeyful": reused.rps() / keyful.rps(),
               "perSignatureToKeyful": per_sig.rps() / keyful.rps(),
               "devCaCertsPerSecond": ca_rate, "certificateMsFromRates": cert_ms_from_rates,
               "keylessStepNewMs": mean_new, "keylessStepReusedMs": mean_reused,
               "errors": keyful.errors + reused.errors + per_sig.errors,
               "p99Ms": {"keyful": keyful.pct(0.99), "reused": reused.pct(0.99), "perSignature": per_sig.pct(0.99)}})
    );
    drop(rt);
    for s in [a, b] {
        let _ = s.stop.send(());
        s.thread.join().unwrap();
    }
}
