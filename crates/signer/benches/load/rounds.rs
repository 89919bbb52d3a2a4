//! `--rounds N`: the Signer measured against its crypto bound (issue #15 items 3–4).
//!
//! Each round runs, on the same cores, one after another, A then C then B:
//! - **A, the bound**: the per-request crypto alone, from aws-lc-rs, in a loop on
//!   `--bound-threads` threads (default: every core) — one ES256 signature (the driver's
//!   DPoP proof), one ES256 verification of it (the service's proof check, key pre-parsed),
//!   one P-256 signature (the envelope). Requests/s = loops/s.
//! - **B, the service**: `/sign/dsse` closed loop with full auth (DPoP-bound token, fresh
//!   proof verified, replay cache) and the durable SQLite audit record before the answer. The
//!   driver makes each proof *when it sends the request*, on the same cores, so the budget of
//!   B holds the same three crypto operations as A (plus everything else). The driver speaks
//!   HTTP/1.1 itself ([`Raw`]: the request written as one buffer, the answer read by its
//!   `Content-Length`) instead of through hyper's client, whose CPU on these shared cores was
//!   a fifth of B's; the driver's CPU per request is reported apart.
//! - **C, the open loop** at `--rate` (default 2,000 req/s), fresh proofs likewise; latency
//!   from each request's scheduled send time.
//!
//! Every response body of B and C is kept, and after the phase (off the timed path) every
//! envelope is checked: its payload is the statement asked for, and its signature verifies
//! under the signing key's public key. A bad one fails the run. Rounds alternate A C B A C B
//! so machine drift hits both sides of the ratio B / A alike; C runs before B so it measures
//! its rate's steady state, not the WAL checkpoint backlog B's saturation leaves behind. The
//! report gives each round, then the median and range over the rounds.
//!
//! Where B's CPU goes: each thread's CPU time (`/proc/self/task/*/stat`) by role — service
//! workers (`signer`), audit writer and checkpointer (`stella-audit-*`), driver (`loadgen`) —
//! per request, next to the bound's CPU per loop. A times its proof signature apart, so the
//! service's side alone (verify + envelope signature, against the service's and the audit
//! writer's threads) is reported as a second ratio.
//!
//! `--profile N`: no bound, no open loop — exactly N sign requests (closed loop, fresh
//! proofs), for `valgrind --tool=callgrind` (instruction counts per request).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ParsedPublicKey, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use bytes::Bytes;
use serde_json::{json, Value};
use stella_keys::FileKey;
use stella_signer::client::DpopKey;

use super::{pct, start_server, tokens, Opts, SIGN};

/// What the bound measured: loops/s over all threads, and of each loop's time (wall, on the
/// looping thread) the share spent making the proof — the driver's part; the verify and the
/// envelope signature are the service's part.
pub(crate) struct Bound {
    pub(crate) rps: f64,
    pub(crate) proof_share: f64,
}

/// The bare per-request crypto on `threads` threads for `dur`.
pub(crate) fn bound(threads: usize, dur: Duration) -> Bound {
    let stop_at = Instant::now() + dur;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                let proof_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
                let proof_pub =
                    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, proof_key.public_key().as_ref())
                        .unwrap();
                let signing = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
                // About the sizes of a proof's signing input and a statement's PAE.
                let mut proof_input = vec![b'a'; 420];
                let pae = vec![0x42u8; 600];
                let mut n = 0u64;
                let mut proof_time = Duration::ZERO;
                let start = Instant::now();
                let mut t0 = start;
                while t0 < stop_at {
                    proof_input[..8].copy_from_slice(&n.to_le_bytes());
                    let sig = proof_key.sign(&rng, &proof_input).unwrap();
                    let t1 = Instant::now();
                    proof_time += t1 - t0;
                    proof_pub.verify_sig(&proof_input, sig.as_ref()).unwrap();
                    let env = signing.sign(&rng, &pae).unwrap();
                    std::hint::black_box(env);
                    n += 1;
                    t0 = Instant::now();
                }
                let secs = start.elapsed().as_secs_f64();
                (n as f64 / secs, proof_time.as_secs_f64() / secs)
            })
        })
        .collect();
    let parts: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    Bound {
        rps: parts.iter().map(|p| p.0).sum(),
        proof_share: parts.iter().map(|p| p.1).sum::<f64>() / parts.len().max(1) as f64,
    }
}

/// CPU seconds so far of this process's live threads, by role (thread name): the service's
/// runtime workers and blocking pool (`signer`), its audit writer and checkpointer
/// (`stella-audit-*`), the load driver (`loadgen`), anything else.
#[derive(Clone, Copy, Default)]
struct ThreadCpu {
    service: f64,
    audit: f64,
    driver: f64,
    other: f64,
}

impl ThreadCpu {
    fn now() -> ThreadCpu {
        let mut t = ThreadCpu::default();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return t;
        };
        for e in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue; // the thread has exited
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(") ")) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let secs = (tick(11) + tick(12)) / 100.0;
            if comm.starts_with("signer") {
                t.service += secs;
            } else if comm.starts_with("stella-audit") {
                t.audit += secs;
            } else if comm.starts_with("loadgen") {
                t.driver += secs;
            } else {
                t.other += secs;
            }
        }
        t
    }

    fn since(self, before: ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            service: self.service - before.service,
            audit: self.audit - before.audit,
            driver: self.driver - before.driver,
            other: self.other - before.other,
        }
    }
}

/// The driver's HTTP/1.1 client for the rounds: one keep-alive connection over loopback, each
/// request written as one buffer (the same request line and headers as hyper's client sends:
/// `host`, `authorization`, `dpop`, `content-type`, `content-length`), the answer read by its
/// `Content-Length` and kept. It does what a remote client's HTTP stack would do for the
/// service, at a fraction of hyper's client cost on these shared cores (the driver is not
/// what is measured; its CPU is reported apart, per request).
struct Raw {
    stream: tokio::net::TcpStream,
    req: Vec<u8>,
    buf: Vec<u8>,
    /// The answers' bodies, kept for the check after the phase: appended to one block and
    /// split off it (one block per ~1 MiB of answers, not an allocation of ~1 KiB per request
    /// — above glibc's per-thread cache, so its slow path, on the timed path).
    kept: bytes::BytesMut,
    /// The blocks this connection filled; back to [`KEPT_POOL`] when it closes.
    full: Vec<bytes::BytesMut>,
}

/// Blocks of kept answers, reused from phase to phase: a block goes back here when its
/// connection closes and is taken again once every answer cut from it has been dropped (after
/// its phase's check). Fresh blocks are faulted in on first use, and the page clears were 2 %
/// of B's CPU, all in the driver (`perf`, session 13): bookkeeping of the bench, not work a
/// client of the service does.
static KEPT_POOL: std::sync::Mutex<Vec<bytes::BytesMut>> = std::sync::Mutex::new(Vec::new());

/// A block of [`KEPT_BLOCK`] bytes for kept answers: one of the pool whose answers are all
/// gone, else a new one, faulted in now.
fn kept_block() -> bytes::BytesMut {
    {
        let mut pool = KEPT_POOL.lock().unwrap();
        if let Some(i) = pool.iter_mut().position(|b| b.try_reclaim(KEPT_BLOCK)) {
            return pool.swap_remove(i);
        }
    }
    let mut kept = bytes::BytesMut::with_capacity(KEPT_BLOCK);
    kept.resize(KEPT_BLOCK, 0);
    kept.clear();
    kept
}

impl Drop for Raw {
    fn drop(&mut self) {
        let mut pool = KEPT_POOL.lock().unwrap();
        pool.push(std::mem::take(&mut self.kept));
        pool.append(&mut self.full);
    }
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        // The first block of kept answers, taken (or faulted in) now, before the phase's
        // clock starts: left to the first answer, the open loop's connections each touched a
        // fresh MiB within its first ~30 ms, and on a fresh VM the huge-page clears took the
        // driver's thread ~60 ms (`perf`: `clear_page_erms` under
        // `do_huge_pmd_anonymous_page`) — every request due meanwhile counted late, a stall
        // of the driver, not the service.
        Raw {
            stream,
            req: Vec::with_capacity(4096),
            buf: Vec::with_capacity(8192),
            kept: kept_block(),
            full: Vec::new(),
        }
    }

    /// Send request `i` of `load` (its proof made now) and return the status and body.
    async fn send(&mut self, load: &Load, i: usize) -> (u16, Bytes) {
        let _proof = load.write_request(i, &mut self.req);
        let mut off = 0;
        while off < self.req.len() {
            self.stream.writable().await.unwrap();
            match self.stream.try_write(&self.req[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        self.buf.clear();
        let mut head: Option<(usize, u16, usize)> = None;
        loop {
            if let Some((end, status, len)) = head {
                if self.buf.len() >= end + len {
                    assert_eq!(self.buf.len(), end + len, "bytes after the response");
                    return (status, self.keep(end));
                }
            }
            self.read_more().await;
            if head.is_none() {
                head = parse_head(&self.buf);
            }
        }
    }

    /// The body (from `end` of the buffer) as its own `Bytes`, split off `kept`.
    fn keep(&mut self, end: usize) -> Bytes {
        let body = &self.buf[end..];
        if self.kept.capacity() < body.len() {
            let next = if body.len() <= KEPT_BLOCK {
                kept_block()
            } else {
                bytes::BytesMut::with_capacity(body.len())
            };
            self.full.push(std::mem::replace(&mut self.kept, next));
        }
        self.kept.extend_from_slice(body);
        self.kept.split().freeze()
    }

    /// Read what has arrived into the buffer's spare capacity (no zeroing of 8 KiB per read,
    /// as `resize` + `try_read` did). Through `AsyncRead` (`read_buf`), not `readable` +
    /// `try_read_buf`: a read that fills less than the spare capacity drains the socket, and
    /// tokio's `poll_read` then clears the readiness itself, so the next request's read waits
    /// for the answer in epoll instead of first trying a `recvfrom` that fails with `EAGAIN`
    /// (one system call per request fewer: `try_io` clears readiness only on `WouldBlock`).
    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt as _;
        self.buf.reserve(8192);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => panic!("the service closed the connection"),
            Ok(_) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A sender of the closed loop: its own HTTP/1.1 connection, or a stream of a shared HTTP/2
/// one (`--h2`).
enum Conn {
    Raw(Raw),
    H2(H2),
}

impl Conn {
    async fn send(&mut self, load: &Load, i: usize) -> (u16, Bytes) {
        match self {
            Conn::Raw(c) => c.send(load, i).await,
            Conn::H2(c) => c.send(load, i).await,
        }
    }
}

/// An HTTP/2 connection through hyper's client (h2c with prior knowledge, as the service's
/// auto-detecting server takes it): measured against [`Raw`] HTTP/1.1 with `--h2 N`.
#[derive(Clone)]
struct H2 {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
}

impl H2 {
    async fn connect(addr: std::net::SocketAddr) -> H2 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { sender }
    }

    /// Request `i` of `load` (its proof made now), as [`Raw::send`] sends it.
    async fn send(&mut self, load: &Load, i: usize) -> (u16, Bytes) {
        use http_body_util::BodyExt as _;
        let c = i % load.clients.len();
        let (key, token) = &load.clients[c];
        let proof = key.proof("POST", &load.url, Some(token), None).unwrap();
        let req = hyper::Request::post(&load.url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(load.body.clone()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// Bytes of answers kept per allocation ([`Raw::keep`]).
const KEPT_BLOCK: usize = 1 << 20;

/// A response head, once complete: (end of the head, status, Content-Length).
fn parse_head(buf: &[u8]) -> Option<(usize, u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    let status: u16 = status[9..12].parse().unwrap();
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>().unwrap())
        .expect("a response without Content-Length");
    Some((end, status, len))
}

/// What a phase's requests carry: the body, the target URL and the callers.
struct Load {
    url: String,
    clients: Vec<(DpopKey, String)>,
    /// Per caller, the request up to its proof: request line, `host`, `authorization`,
    /// `dpop: ` — the same for every request of that caller, written once.
    heads: Vec<Vec<u8>>,
    /// After the proof: `content-type`, `content-length`, the blank line and the body.
    tail: Vec<u8>,
    /// The body alone (HTTP/2).
    body: Bytes,
}

impl Load {
    fn new(host: String, url: String, body: Bytes, clients: Vec<(DpopKey, String)>) -> Load {
        let heads = clients
            .iter()
            .map(|(_, token)| {
                format!(
                    "POST {SIGN} HTTP/1.1\r\nhost: {host}\r\nauthorization: DPoP {token}\r\ndpop: "
                )
                .into_bytes()
            })
            .collect();
        let mut tail = format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        tail.extend_from_slice(&body);
        let load = Load {
            url,
            clients,
            heads,
            tail,
            body: body.clone(),
        };
        // The request bytes are those the driver wrote with one `write!` per request before
        // (same request line, headers in the same order, same body), for every caller.
        for i in 0..load.clients.len() {
            let (mut joined, mut written) = (Vec::new(), Vec::new());
            let proof = load.write_request(i, &mut joined);
            write_request_formatted(&host, &load.clients[i].1, &proof, &body, &mut written);
            assert_eq!(joined, written, "request bytes of caller {i}");
        }
        load
    }

    /// Request `i` with a proof made now (the driver's share of the budget), into `out`;
    /// returns the proof.
    fn write_request(&self, i: usize, out: &mut Vec<u8>) -> String {
        let c = i % self.clients.len();
        let (key, token) = &self.clients[c];
        let proof = key.proof("POST", &self.url, Some(token), None).unwrap();
        out.clear();
        out.extend_from_slice(&self.heads[c]);
        out.extend_from_slice(proof.as_bytes());
        out.extend_from_slice(&self.tail);
        proof
    }
}

/// The request as the driver formatted it per request before the parts were written once.
fn write_request_formatted(host: &str, token: &str, proof: &str, body: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    write!(
        out,
        "POST {SIGN} HTTP/1.1\r\nhost: {host}\r\nauthorization: DPoP {token}\r\ndpop: {proof}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    out.extend_from_slice(body);
}

struct Phase {
    ok: u64,
    errors: u64,
    secs: f64,
    lat: Vec<u32>,
    bodies: Vec<Bytes>,
    /// Open loop only: the requests slower than [`SLOW_US`], by when they were due (seconds
    /// into the phase) — a tail spread over the phase or one stall.
    slow: Vec<f64>,
}

/// A request of the open loop slower than this (µs) is counted by when it was due.
const SLOW_US: u32 = 20_000;

impl Phase {
    /// The slow requests by the tenth of a second they were due in: "N (at T s ×k, ...)".
    fn slow_summary(&self) -> String {
        let mut at: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
        for &due in &self.slow {
            *at.entry((due * 10.0) as u64).or_default() += 1;
        }
        let mut by_count: Vec<(u64, usize)> = at.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = by_count
            .iter()
            .take(4)
            .map(|(t, n)| format!("{:.1} s ×{n}", *t as f64 / 10.0))
            .collect();
        if top.is_empty() {
            "0".to_string()
        } else {
            format!("{} (at {})", self.slow.len(), top.join(", "))
        }
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

fn merge(secs: f64, parts: Vec<(Vec<u32>, u64, Vec<Bytes>)>) -> Phase {
    let mut p = Phase {
        ok: 0,
        errors: 0,
        secs,
        lat: Vec::new(),
        bodies: Vec::new(),
        slow: Vec::new(),
    };
    for (l, e, b) in parts {
        p.lat.extend(l);
        p.errors += e;
        p.bodies.extend(b);
    }
    p.ok = p.lat.len() as u64;
    p.lat.sort_unstable();
    p
}

/// Say what the first few refused requests of a connection were answered (status and the
/// start of the body: the error code and message), so a failed phase tells why.
fn report_error(seen: u64, status: u16, body: &[u8]) {
    if seen < 2 {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        eprintln!("request answered {status}: {text}");
    }
}

/// Closed loop for `dur` (or exactly `count` requests when given).
async fn closed(
    addr: std::net::SocketAddr,
    conns: usize,
    h2_conns: usize,
    dur: Duration,
    count: Option<u64>,
    load: Arc<Load>,
) -> Phase {
    let next = Arc::new(AtomicU64::new(0));
    // `--h2 N`: N HTTP/2 connections shared by the `conns` senders (streams), else one
    // HTTP/1.1 connection each.
    let mut h2 = Vec::new();
    for _ in 0..h2_conns {
        h2.push(H2::connect(addr).await);
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for k in 0..conns {
        let (next, load) = (next.clone(), load.clone());
        let shared = h2.get(k % h2.len().max(1)).cloned();
        tasks.push(tokio::spawn(async move {
            let mut c = match shared {
                Some(h) => Conn::H2(h),
                None => Conn::Raw(Raw::connect(addr).await),
            };
            let (mut lat, mut errors, mut bodies) = (Vec::new(), 0u64, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match count {
                    Some(n) if i >= n => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let t = Instant::now();
                let (status, body) = c.send(&load, i as usize).await;
                if status == 200 {
                    lat.push(t.elapsed().as_micros() as u32);
                    bodies.push(body);
                } else {
                    report_error(errors, status, &body);
                    errors += 1;
                }
            }
            (lat, errors, bodies)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap());
    }
    merge(start.elapsed().as_secs_f64(), parts)
}

/// Open loop at `rate` req/s for `dur`; latency from each request's due time (the proof is
/// made after it is due, so its cost is in the latency).
async fn open(
    addr: std::net::SocketAddr,
    conns: usize,
    dur: Duration,
    rate: u64,
    load: Arc<Load>,
) -> Phase {
    let total = rate * dur.as_secs();
    let next = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Raw::connect(addr).await);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for mut c in clients {
        let (next, load) = (next.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut bodies) = (Vec::new(), 0u64, Vec::new());
            let mut slow = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due).await;
                let (status, body) = c.send(&load, i as usize).await;
                let l = tokio::time::Instant::now().saturating_duration_since(due);
                if status == 200 {
                    let us = l.as_micros() as u32;
                    if us > SLOW_US {
                        slow.push((due - start).as_secs_f64());
                    }
                    lat.push(us);
                    bodies.push(body);
                } else {
                    report_error(errors, status, &body);
                    errors += 1;
                }
            }
            (lat, errors, bodies, slow)
        }));
    }
    let (mut parts, mut slow) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e, b, s) = t.await.unwrap();
        parts.push((l, e, b));
        slow.extend(s);
    }
    let mut p = merge((tokio::time::Instant::now() - start).as_secs_f64(), parts);
    p.slow = slow;
    p
}

/// Check every response off the timed path: the envelope's payload is the statement that
/// was asked for and its signature verifies under `public`. Returns (bad, seconds taken).
fn verify_all(bodies: &[Bytes], public: &stella_keys::PublicKey, digest: &str) -> (u64, f64) {
    let t = Instant::now();
    let threads = 2;
    let chunk = bodies.len().div_ceil(threads).max(1);
    let bad: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = bodies
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter(|b| !envelope_ok(b, public, digest))
                        .count() as u64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (bad, t.elapsed().as_secs_f64())
}

fn envelope_ok(body: &[u8], public: &stella_keys::PublicKey, digest: &str) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if v["auditId"].as_str().is_none_or(str::is_empty) {
        return false;
    }
    let Ok(env) = stella_dsse::Envelope::from_value(&v["bundle"]["dsse"]) else {
        return false;
    };
    let Ok(statement) = serde_json::from_slice::<Value>(&env.payload) else {
        return false;
    };
    env.payload_type == stella_dsse::PAYLOAD_TYPE_IN_TOTO
        && statement["subject"][0]["digest"]["sha256"] == digest
        && env.signatures.len() == 1
        && public.verify(&env.pae(), &env.signatures[0].sig)
}

/// CPU seconds (user, system) this process has used so far, all threads (`/proc/self/stat`,
/// clock ticks of 10 ms).
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (tick(11), tick(12))
}

/// Run `f`, returning its result and the (user, system) CPU seconds it took.
fn with_cpu<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (u0, s0) = cpu();
    let r = f();
    let (u1, s1) = cpu();
    (r, u1 - u0, s1 - s0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine's CPU time stolen by the hypervisor and its CPU time in all, in clock ticks
/// since boot (`/proc/stat`, all CPUs): a phase's steal share tells a latency tail the host
/// caused (a virtual CPU not running) from one of the process's own.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

/// This process's minor page faults so far (`/proc/self/stat`): a phase that faults in much
/// new memory (a fresh arena, huge pages) shows it.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// The share of the machine's CPU time stolen between two [`cpu_ticks`] readings, in %.
fn steal_pct(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 * 100.0 / total
}

/// Median and range of `xs`.
fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (mid, s[0], s[s.len() - 1])
}

pub(crate) fn run(o: &Opts, dir: &std::path::Path, authority: &FileKey, signing: FileKey) {
    let public = stella_keys::Signer::public_key(&signing).clone();
    let signing: Arc<dyn stella_keys::Signer> = Arc::new(signing);
    let server = start_server(dir, authority, o, signing, None);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .unwrap();
    let digest = "ab".repeat(32);
    let body = Bytes::from(
        json!({
            "subject": [{"name": "app.tar", "digest": {"sha256": digest}}],
            "predicateType": "stella.ops/sbom@v1",
            "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5",
                          "components": [{"type": "library", "name": "openssl", "version": "3.0.15"}]},
            "scannerImageDigest": format!("sha256:{}", "1".repeat(64)),
            "poe": {"format": "jwt", "value": "poe-bench"},
        })
        .to_string(),
    );
    let load = Arc::new(Load::new(
        server.addr.to_string(),
        format!("http://{}{SIGN}", server.addr),
        body,
        tokens(authority, 64),
    ));
    let dur = Duration::from_secs(o.duration);
    let addr = server.addr;
    rt.block_on(async {
        // Warm-up: PoE cache, token cache, connections, allocator.
        let w = closed(
            addr,
            o.connections,
            o.h2,
            Duration::from_secs(1),
            None,
            load.clone(),
        )
        .await;
        assert_eq!(w.errors, 0, "warm-up requests failed");
    });
    if let Some(n) = o.profile {
        let t = Instant::now();
        let p = rt.block_on(closed(
            addr,
            o.connections,
            o.h2,
            dur,
            Some(n),
            load.clone(),
        ));
        println!(
            "profile: {} sign requests ({} errors) in {:.2} s",
            p.ok,
            p.errors,
            t.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "Stella Signer against its crypto bound: {} rounds of A (bound, {} threads) B (service, closed loop, {} connections) C (open loop {} req/s), {} s each; server {} threads, client {} threads, {} cores; proofs made by the driver on the timed path; envelopes verified after each phase (off the timed path)",
            o.rounds, o.bound_threads, o.connections, o.rate, o.duration, o.server_threads,
            o.client_threads,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let (mut b, mut s, mut r, mut p99c, mut p99o) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut rc, mut sys, mut rs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut us_svc, mut us_audit, mut us_driver, mut us_a) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut bad_total = 0;
        for round in 1..=o.rounds {
            let load_before = loadavg();
            let (a, a_user, a_sys) = with_cpu(|| bound(o.bound_threads, dur));
            // C before B: the open loop runs at its rate's steady state, not on top of the
            // checkpoint backlog the saturating closed loop leaves in the WAL (as in the
            // single-run bench); A, before it, gives the checkpointer a phase to catch up.
            let (ticks, faults) = (cpu_ticks(), minor_faults());
            let mut op = if o.rate > 0 {
                Some(rt.block_on(open(addr, o.connections, dur, o.rate, load.clone())))
            } else {
                None
            };
            let steal_c = steal_pct(ticks, cpu_ticks());
            let faults_c = minor_faults().saturating_sub(faults);
            let (bad_c, _) = op
                .as_ref()
                .map(|p| verify_all(&p.bodies, &public, &digest))
                .unwrap_or((0, 0.0));
            // Checked: C's answers go, so B takes their blocks again.
            if let Some(p) = op.as_mut() {
                p.bodies = Vec::new();
            }
            let t0 = ThreadCpu::now();
            let (svc, b_user, b_sys) = with_cpu(|| {
                rt.block_on(closed(addr, o.connections, o.h2, dur, None, load.clone()))
            });
            let tc = ThreadCpu::now().since(t0);
            // Per CPU-second of this process: what the phase got done with the CPU it was
            // given (the machine is shared; the wall-clock ratio depends on how many of its
            // threads were runnable against the neighbours').
            let a_cpu = a.rps * dur.as_secs_f64() / (a_user + a_sys);
            let b_cpu = svc.ok as f64 / (b_user + b_sys);
            // Per request, in µs of CPU: the bound's loop, and B split by thread role.
            let n = svc.ok.max(1) as f64;
            let a_us = 1e6 / a_cpu;
            let (svc_us, audit_us, driver_us) = (
                tc.service * 1e6 / n,
                tc.audit * 1e6 / n,
                tc.driver * 1e6 / n,
            );
            // The service's side alone: the bound's verify + envelope signature against the
            // service's threads (workers + audit); the driver's proof and HTTP client aside.
            let side = a_us * (1.0 - a.proof_share) / (svc_us + audit_us).max(1e-9);
            let (bad_b, vb) = verify_all(&svc.bodies, &public, &digest);
            bad_total += bad_b + bad_c;
            let ratio = svc.rps() / a.rps;
            println!(
                "round {round}: A bound {:>7.0} req/s ({a_cpu:.0} per CPU-s = {a_us:.0} µs/loop, proof {:.0} %) | C open {} req/s: {} ok, {} errors, p99 {:.2} ms, max {:.2} ms, over 20 ms {}, steal {steal_c:.1} %, {faults_c} page faults | B service {:>6.0} sig/s ({b_cpu:.0} per CPU-s; CPU user {b_user:.1} s, sys {b_sys:.1} s; per request µs: service {svc_us:.0}, audit {audit_us:.0}, driver {driver_us:.0}, other {:.0}; errors {}, p50 {:.2} ms, p99 {:.2} ms) = {ratio:.2} of A ({:.2} per CPU-s; service side {side:.2}) | envelopes verified {} bad {} ({:.0}/s) | load {load_before} -> {}",
                a.rps,
                a.proof_share * 100.0,
                o.rate,
                op.as_ref().map_or(0, |p| p.ok),
                op.as_ref().map_or(0, |p| p.errors),
                op.as_ref().map_or(0.0, |p| pct(&p.lat, 0.99)),
                op.as_ref()
                    .map_or(0.0, |p| p.lat.last().copied().unwrap_or(0) as f64 / 1000.0),
                op.as_ref().map_or_else(String::new, Phase::slow_summary),
                svc.rps(),
                tc.other * 1e6 / n,
                svc.errors,
                pct(&svc.lat, 0.5),
                pct(&svc.lat, 0.99),
                b_cpu / a_cpu,
                svc.ok + op.as_ref().map_or(0, |p| p.ok),
                bad_b + bad_c,
                svc.ok as f64 / vb,
                loadavg(),
            );
            b.push(a.rps);
            s.push(svc.rps());
            r.push(ratio);
            rc.push(b_cpu / a_cpu);
            rs.push(side);
            sys.push(b_sys / (b_user + b_sys));
            us_a.push(a_us);
            us_svc.push(svc_us);
            us_audit.push(audit_us);
            us_driver.push(driver_us);
            p99c.push(pct(&svc.lat, 0.99));
            if let Some(p) = &op {
                p99o.push(pct(&p.lat, 0.99));
            }
        }
        let f = |xs: &[f64], prec: usize| {
            let (m, lo, hi) = stats(xs);
            format!("{m:.prec$} [{lo:.prec$} – {hi:.prec$}]")
        };
        println!();
        println!("median [range] over {} rounds:", o.rounds);
        println!("  A bound (req/s):              {}", f(&b, 0));
        println!("  B service (signatures/s):     {}", f(&s, 0));
        println!("  B / A (wall clock):           {}", f(&r, 2));
        println!("  B / A (per CPU-second):       {}", f(&rc, 2));
        println!("  B / A service side (per CPU): {}", f(&rs, 2));
        println!("  B: system share of CPU:       {}", f(&sys, 2));
        println!("  A CPU per loop (µs):          {}", f(&us_a, 0));
        println!(
            "  B CPU per request (µs):       service {}, audit {}, driver {}",
            f(&us_svc, 0),
            f(&us_audit, 0),
            f(&us_driver, 0)
        );
        println!("  B p99 (ms):                   {}", f(&p99c, 2));
        if !p99o.is_empty() {
            println!(
                "  C p99 at {} req/s (ms):      {}  (worst round {:.2} ms)",
                o.rate,
                f(&p99o, 2),
                stats(&p99o).2
            );
        }
        println!(
            "{}",
            json!({"rounds": o.rounds, "bound": b, "service": s, "ratio": r, "ratioPerCpu": rc, "serviceSideRatio": rs, "serviceSysShare": sys,
                   "boundCpuUs": us_a, "serviceCpuUs": us_svc, "auditCpuUs": us_audit, "driverCpuUs": us_driver,
                   "closedP99Ms": p99c, "openRate": o.rate, "openP99Ms": p99o,
                   "badEnvelopes": bad_total})
        );
        assert_eq!(bad_total, 0, "some envelopes did not verify");
    }
    drop(rt);
    let _ = server.stop.send(());
    server.thread.join().unwrap();
    let report =
        stella_store::chain::verify(&stella_store::SqliteReader::open(&server.audit_db).unwrap())
            .unwrap();
    println!(
        "audit log: {} records, chain intact: {}",
        report.records,
        report.is_intact()
    );
    assert!(report.is_intact());
}
