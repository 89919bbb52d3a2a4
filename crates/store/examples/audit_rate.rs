//! Commit latency of the SQLite audit log under an open loop (issue #15 item 3, the tail).
//!
//! `cargo run -p stella-store --release --example audit_rate -- [OPTIONS]`
//!
//! Appends records shaped like the Signer's `/sign/dsse` records (one random subject digest,
//! ~600 bytes of canonical JSON) through [`SqliteAudit`] — the group-commit writer, its
//! checkpointer and `synchronous=FULL` as the service runs them — and reports, per round:
//! a closed-loop burst first (`--burst SECS` with `--concurrency N` appenders; the WAL backlog
//! a saturating phase leaves), then an open loop at `--rate R` appends/s for `--secs SECS`,
//! latency from each append's *scheduled* time (no coordinated omission): p50/p90/p99/max,
//! appends over 20 ms, the WAL's size, and the writer's and checkpointer's CPU per record
//! (`/proc/self/task/*/schedstat`). `--count N` instead appends exactly N records from
//! `--concurrency` tasks and stops (for `valgrind --tool=callgrind`: run N and 2N and take the
//! difference of the `stella-audit-*` threads). The database lives under `--dir` (default: the workspace's
//! `target/`, a real disk) in a temporary folder removed at the end.

#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stella_store::{AuditLog, AuditRecord, Outcome, SqliteAudit, SqliteOptions};

struct Opts {
    rate: u64,
    secs: u64,
    burst: u64,
    concurrency: usize,
    rounds: usize,
    count: u64,
    dir: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        rate: 2000,
        secs: 5,
        burst: 0,
        concurrency: 64,
        rounds: 1,
        count: 0,
        dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rate" => o.rate = v.parse().unwrap(),
            "--secs" => o.secs = v.parse().unwrap(),
            "--burst" => o.burst = v.parse().unwrap(),
            "--concurrency" => o.concurrency = v.parse().unwrap(),
            "--rounds" => o.rounds = v.parse().unwrap(),
            "--count" => o.count = v.parse().unwrap(),
            "--dir" => o.dir = v,
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn record() -> AuditRecord {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = |tag: &str| stella_digest::Digest::of_parts(&[tag.as_bytes(), &n.to_le_bytes()]).hex();
    let mut r = AuditRecord::new(
        h("audit")[..32].to_string(),
        h("trace")[..32].to_string(),
        "POST /api/v1/signer/sign/dsse".into(),
        now(),
    );
    r.tenant = Some("tenant-a".into());
    r.caller.sub = Some("svc-build-17".into());
    r.caller.client = Some("ci-runner".into());
    r.sender_binding = Some(format!("dpop jkt={}", &h("jkt")[..43]));
    r.subject_digests = vec![format!("sha256:{}", h("subject"))];
    r.predicate_type = Some("https://slsa.dev/provenance/v1".into());
    r.signing_mode = Some("file".into());
    r.key_ids = vec![format!("sha256:{}", h("key"))];
    r.envelope_sha256 = Some(h("envelope"));
    r.outcome = Outcome::Signed;
    r.status = 200;
    r.latency_ms = 0.731;
    r
}

fn now() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc().format(&fmt).unwrap()
}

/// CPU time in nanoseconds (`/proc/self/task/*/schedstat`) of this process' threads whose
/// name starts with `prefix`.
fn thread_ns(prefix: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Bytes this process has handed to `write`-family calls so far (`/proc/self/io` `wchar`):
/// the WAL frames and checkpoint copies of the audit log, the only files written.
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn burst(log: &Arc<SqliteAudit>, secs: u64, concurrency: usize) -> u64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < stop {
                    log.append(record()).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n
}

async fn open_loop(log: &Arc<SqliteAudit>, rate: u64, secs: u64) -> Vec<f64> {
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = tokio::time::Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let (log, lat) = (log.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            log.append(record()).await.unwrap();
            let ms = due.elapsed().as_secs_f64() * 1e3;
            lat.lock().unwrap().push(ms);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut v = std::mem::take(&mut *lat.lock().unwrap());
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    let o = opts();
    std::fs::create_dir_all(&o.dir).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("stella-audit-rate-")
        .tempdir_in(&o.dir)
        .unwrap();
    let db = dir.path().join("audit.db");
    let wal = dir.path().join("audit.db-wal");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = Arc::new(SqliteAudit::open(SqliteOptions::new(&db)).unwrap());
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if o.count > 0 {
        // Exactly `count` appends from `concurrency` tasks (for callgrind: run N and 2N).
        let per = o.count / o.concurrency as u64;
        rt.block_on(async {
            let tasks: Vec<_> = (0..o.concurrency)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        for _ in 0..per {
                            log.append(record()).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let n = per * o.concurrency as u64;
        let bytes = written() / n.max(1);
        let (w, c) = (thread_ns("stella-audit-w"), thread_ns("stella-audit-c"));
        println!(
            "{n} appends, WAL {} KiB, {bytes} B written/record, CPU µs/record writer {:.1} checkpointer {:.1}",
            wal_size() / 1024,
            w as f64 / 1000.0 / n as f64,
            c as f64 / 1000.0 / n as f64
        );
        rt.block_on(log.close()).unwrap();
        return;
    }
    let mut p99s = Vec::new();
    for round in 1..=o.rounds {
        let (w0, c0) = (thread_ns("stella-audit-w"), thread_ns("stella-audit-c"));
        let b0 = written();
        let t0 = Instant::now();
        let nb = rt.block_on(burst(&log, o.burst, o.concurrency));
        let wal_after_burst = wal_size();
        let lat = rt.block_on(open_loop(&log, o.rate, o.secs));
        let n = nb + lat.len() as u64;
        let (w1, c1) = (thread_ns("stella-audit-w"), thread_ns("stella-audit-c"));
        let per = |t: u64| t as f64 / 1000.0 / n as f64;
        let bytes = (written() - b0) / n.max(1);
        let over = lat.iter().filter(|&&x| x > 20.0).count();
        p99s.push(pct(&lat, 0.99));
        println!(
            "round {round}: burst {nb} ({:.0}/s) | open {} at {}/s: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms, {over} over 20 ms | WAL {} KiB after burst, {} KiB after open, {bytes} B written/record | CPU µs/record writer {:.1} checkpointer {:.1} | {:.1} s",
            nb as f64 / o.burst.max(1) as f64,
            lat.len(),
            o.rate,
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            pct(&lat, 1.0),
            wal_after_burst / 1024,
            wal_size() / 1024,
            per(w1 - w0),
            per(c1 - c0),
            t0.elapsed().as_secs_f64(),
        );
    }
    rt.block_on(log.close()).unwrap();
    p99s.sort_by(f64::total_cmp);
    println!(
        "p99 over rounds (ms): median {:.2}, worst {:.2}",
        pct(&p99s, 0.5),
        pct(&p99s, 1.0)
    );
}
