//! Store integration tests: one suite per trait, written against `&dyn Trait` so the
//! PostgreSQL/Redis backends of a later issue run the same suites; plus tamper cases against
//! the real SQLite file.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

mod deferred;
mod pg;
mod redis;
mod suites;

use std::sync::Arc;

use stella_store::checkpoint::{self, Checkpointer};
use stella_store::{
    chain, AuditLog, MemoryQuotaStore, MemoryReplayCache, SqliteAudit, SqliteOptions, StoreError,
};
use stella_store::{open_raw, AuditReader as _, SqliteReader};

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("audit.db");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_audit_suite() {
    let (_d, path) = temp_db();
    let log = Arc::new(SqliteAudit::open(SqliteOptions::new(&path)).unwrap());
    suites::audit_log(log.clone()).await;
    log.close().await.unwrap();
    let reader = SqliteReader::open(&path).unwrap();
    suites::audit_reader(&reader, 1 + 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_audit_query_suite() {
    let (_d, path) = temp_db();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    suites::audit_query(&log).await;
    // The filters are answered from the indexes, not by scanning the log.
    let conn = SqliteReader::open(&path).unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = conn
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    // As `run_query` reads the indexed part of the log.
    let base = "SELECT a.seq FROM audit_facet f JOIN audit_log a ON a.seq = f.seq \
                WHERE f.seq > 0 AND f.seq <= 30";
    let tenant = plan(&format!(
        "{base} AND f.tenant = 'tenant-a' AND json_extract(a.record, '$.tenant') = 'tenant-a' \
         ORDER BY f.seq LIMIT 5"
    ));
    assert!(tenant.contains("audit_facet_tenant"), "{tenant}");
    let outcome = plan(&format!(
        "{base} AND f.outcome = 'signed' AND json_extract(a.record, '$.outcome') = 'signed' \
         ORDER BY f.seq LIMIT 5"
    ));
    assert!(outcome.contains("audit_facet_outcome"), "{outcome}");
    let subject = plan(&format!(
        "{base} AND f.seq IN (SELECT seq FROM audit_subject WHERE digest = 'x') ORDER BY f.seq LIMIT 5"
    ));
    assert!(subject.contains("audit_subject"), "{subject}");
    let since = plan(&format!(
        "{base} AND f.time >= '2026-01-02T03:04:20.000Z' AND a.time >= '2026-01-02T03:04:20.000Z' \
         ORDER BY f.seq LIMIT 5"
    ));
    // `stella audit export --since`: the first record at or after a time, by the time index.
    let first = plan(
        "SELECT MIN(f.seq) FROM audit_facet f INDEXED BY audit_facet_time \
         JOIN audit_log a ON a.seq = f.seq \
         WHERE f.time >= '2026-01-02T03:04:20.000Z' AND a.time >= '2026-01-02T03:04:20.000Z'",
    );
    assert!(first.contains("audit_facet_time"), "{first}");
    for p in [&tenant, &outcome, &subject, &since, &first] {
        assert!(!p.contains("SCAN a") && !p.contains("SCAN f"), "{p}");
    }
    log.close().await.unwrap();
    // The chain is untouched by the index table.
    let report = chain::verify(&SqliteReader::open(&path).unwrap()).unwrap();
    assert!(report.is_intact() && report.records == 30, "{report:?}");
}

/// A database written before the audit API existed gets its subject index filled at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_subject_index_is_backfilled() {
    let (_d, path) = temp_db();
    {
        let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
        suites::fill_for_query(&log).await;
        log.close().await.unwrap();
    }
    open_raw(&path)
        .unwrap()
        .execute_batch("DROP TABLE audit_subject")
        .unwrap();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert_eq!(suites::seqs_by_subject_09(&log, None).await, vec![8]);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_quota_suite() {
    suites::quota(&MemoryQuotaStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_replay_suite() {
    suites::replay(&MemoryReplayCache::new(100_000)).await;
    suites::replay_bounds(&MemoryReplayCache::with_partition_limit(50, 20), 50, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_continues_the_chain() {
    let (_d, path) = temp_db();
    for round in 0..3 {
        let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
        for i in 0..5 {
            log.append(suites::record(&format!("r{round}-{i}")))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    }
    let report = chain::verify(&SqliteReader::open(&path).unwrap()).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 15);
}

async fn tampered(sql: &str) -> chain::ChainReport {
    let (_d, path) = temp_db();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    for i in 0..6 {
        log.append(suites::record(&format!("id{i}"))).await.unwrap();
    }
    log.close().await.unwrap();
    open_raw(&path).unwrap().execute_batch(sql).unwrap();
    chain::verify(&SqliteReader::open(&path).unwrap()).unwrap()
}

/// A closed log of six records with a signed checkpoint of its head, and the key.
struct Checkpointed {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    cp: std::path::PathBuf,
    key: Arc<dyn stella_keys::Signer>,
}

impl Checkpointed {
    async fn new() -> Self {
        let (dir, db) = temp_db();
        let cp = dir.path().join("checkpoints").join("audit.checkpoint.json");
        let key: Arc<dyn stella_keys::Signer> = Arc::new(
            stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap(),
        );
        let log = SqliteAudit::open(SqliteOptions::new(&db)).unwrap();
        let h0 = log.head().await.unwrap().unwrap();
        let writer = Checkpointer::open(key.clone(), cp.clone(), "sqlite", &h0).unwrap();
        for i in 0..6 {
            log.append(suites::record(&format!("id{i}"))).await.unwrap();
        }
        log.close().await.unwrap();
        let head = log.head().await.unwrap().unwrap();
        assert_eq!(head.seq, 6);
        assert!(writer.write(&head).unwrap());
        Checkpointed {
            _dir: dir,
            db,
            cp,
            key,
        }
    }

    fn keyring(&self) -> stella_keys::Keyring {
        stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
            self.key.public_key().clone(),
        )])
        .unwrap()
    }

    /// Verify the log against its checkpoint.
    fn verify(&self) -> Result<chain::ChainReport, StoreError> {
        let cp = checkpoint::read_verified(&self.cp, &self.keyring()).unwrap();
        let reader = SqliteReader::open(&self.db)?;
        chain::verify_with(
            &reader,
            chain::ChainWalker::new().anchor(cp.records, &cp.head_hash),
        )
    }

    fn tamper(&self, sql: &str) {
        open_raw(&self.db).unwrap().execute_batch(sql).unwrap();
    }
}

#[tokio::test]
async fn checkpointed_log_verifies_and_may_grow() {
    let c = Checkpointed::new().await;
    let r = c.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    let log = SqliteAudit::open(SqliteOptions::new(&c.db)).unwrap();
    log.append(suites::record("later")).await.unwrap();
    log.close().await.unwrap();
    let r = c.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.records, 7);
}

#[tokio::test]
async fn deleting_the_newest_records_is_detected_by_the_checkpoint() {
    let c = Checkpointed::new().await;
    c.tamper("DELETE FROM audit_log WHERE seq >= 5");
    // The chain alone still looks intact: this is what the checkpoint adds.
    assert!(chain::verify(&SqliteReader::open(&c.db).unwrap())
        .unwrap()
        .is_intact());
    assert_eq!(
        c.verify().unwrap().problems,
        vec![chain::ChainError::Truncated {
            head_seq: 4,
            checkpoint_seq: 6
        }]
    );
}

#[tokio::test]
async fn deleting_a_middle_record_is_detected_with_a_checkpoint() {
    let c = Checkpointed::new().await;
    c.tamper("DELETE FROM audit_log WHERE seq = 3");
    let p = c.verify().unwrap().problems;
    assert!(
        matches!(p[0], chain::ChainError::Gap { seq: 4, .. }),
        "{p:?}"
    );
}

#[tokio::test]
async fn rewriting_the_whole_log_is_detected_by_the_checkpoint() {
    let c = Checkpointed::new().await;
    // Delete everything and write six other records: a fully consistent new chain.
    c.tamper("DELETE FROM audit_log");
    let log = SqliteAudit::open(SqliteOptions::new(&c.db)).unwrap();
    for i in 0..6 {
        log.append(suites::record(&format!("forged{i}")))
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    let p = c.verify().unwrap().problems;
    assert!(
        matches!(
            p.as_slice(),
            [chain::ChainError::CheckpointMismatch { seq: 6, .. }]
        ),
        "{p:?}"
    );
}

#[tokio::test]
async fn edited_time_column_is_detected() {
    let c = Checkpointed::new().await;
    // Moves record 2 out of `export --since` ranges without touching the hashed JSON.
    c.tamper("UPDATE audit_log SET time = '1999-01-01T00:00:00.000Z' WHERE seq = 2");
    assert_eq!(
        c.verify().unwrap().problems,
        vec![chain::ChainError::Column {
            seq: 2,
            column: "time"
        }]
    );
}

#[tokio::test]
async fn dropped_table_is_reported_and_not_recreated() {
    let c = Checkpointed::new().await;
    c.tamper("DROP TABLE audit_log");
    for _ in 0..2 {
        assert!(matches!(c.verify(), Err(StoreError::NoLog(_))));
    }
    let tables: i64 = open_raw(&c.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the reader recreated the dropped table");
}

#[tokio::test]
async fn database_replaced_by_an_empty_one_is_detected() {
    let c = Checkpointed::new().await;
    std::fs::remove_file(&c.db).unwrap();
    let _ = std::fs::remove_file(c.db.with_extension("db-wal"));
    let _ = std::fs::remove_file(c.db.with_extension("db-shm"));
    // A deleted database stays deleted.
    assert!(matches!(c.verify(), Err(StoreError::Io { .. })));
    assert!(!c.db.exists(), "the reader created a database");
    // A fresh, empty audit database in its place.
    let log = SqliteAudit::open(SqliteOptions::new(&c.db)).unwrap();
    log.close().await.unwrap();
    assert_eq!(
        c.verify().unwrap().problems,
        vec![chain::ChainError::Truncated {
            head_seq: 0,
            checkpoint_seq: 6
        }]
    );
}

#[tokio::test]
async fn checkpointer_refuses_to_reanchor_a_truncated_log() {
    let c = Checkpointed::new().await;
    c.tamper("DELETE FROM audit_log WHERE seq = 6");
    let log = SqliteAudit::open(SqliteOptions::new(&c.db)).unwrap();
    let head = log.head().await.unwrap().unwrap();
    assert_eq!(head.seq, 5);
    let e = Checkpointer::open(c.key.clone(), c.cp.clone(), "sqlite", &head).unwrap_err();
    assert!(
        matches!(
            e,
            checkpoint::CheckpointError::Behind {
                checkpoint_seq: 6,
                head_seq: 5,
                ..
            }
        ),
        "{e}"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn edited_record_is_detected() {
    let r = tampered(
        "UPDATE audit_log SET record = replace(record, '\"denied\"', '\"signed\"') WHERE seq = 3",
    )
    .await;
    assert_eq!(r.problems, vec![chain::ChainError::Edited { seq: 3 }]);
}

#[tokio::test]
async fn deleted_record_is_detected() {
    let r = tampered("DELETE FROM audit_log WHERE seq = 2").await;
    assert!(
        matches!(r.problems[0], chain::ChainError::Gap { seq: 3, .. }),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn deleted_and_renumbered_record_is_detected() {
    let r = tampered(
        "DELETE FROM audit_log WHERE seq = 2; UPDATE audit_log SET seq = seq - 1 WHERE seq > 2",
    )
    .await;
    assert_eq!(r.problems[0], chain::ChainError::Broken { seq: 2 });
}

#[tokio::test]
async fn inserted_record_is_detected() {
    let r = tampered(
        "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 4; \
         UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000; \
         INSERT INTO audit_log (seq, time, audit_id, record, prev_hash, hash) \
         SELECT 4, time, 'forged', record, prev_hash, hash FROM audit_log WHERE seq = 3",
    )
    .await;
    assert!(!r.is_intact());
}

/// The WAL header's checkpoint sequence number: SQLite increments it each time a writer
/// restarts the WAL from its start (0 when the file is missing or shorter than a header).
fn wal_restarts(db: &std::path::Path) -> u32 {
    let bytes = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
    bytes
        .get(12..16)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Under a stream of appends that never pauses, the WAL is still reused from its start (it
/// used to grow without bound: each checkpoint pass left the batches committed during it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_restarts_under_a_steady_stream() {
    let (_d, path) = temp_db();
    let log = Arc::new(SqliteAudit::open(SqliteOptions::new(&path)).unwrap());
    let stop = std::time::Instant::now() + std::time::Duration::from_millis(3200);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while std::time::Instant::now() < stop {
                    let id = format!("s{t}-{i}");
                    let a = log.append(suites::record(&id)).await.unwrap();
                    acked.push((a.seq, id));
                    i += 1;
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // Read before closing (closing truncates the WAL).
    let restarts = wal_restarts(&path);
    log.close().await.unwrap();
    assert!(
        restarts >= 2,
        "the WAL restarted {restarts} time(s) in 3.2 s of appends"
    );
    let reader = SqliteReader::open(&path).unwrap();
    let report = chain::verify(&reader).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, acked.len() as u64);
    // Indexed in chunks while busy, the rest at close.
    let (upto, facets): (i64, i64) = reader
        .connection()
        .query_row(
            "SELECT upto, (SELECT count(*) FROM audit_facet) FROM audit_indexed",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (upto as u64, facets as u64),
        (report.records, report.records)
    );
    acked.sort();
    let stored = reader.read_after(0, acked.len() + 1).unwrap();
    assert_eq!(stored.len(), acked.len());
    for ((seq, id), rec) in acked.iter().zip(&stored) {
        assert_eq!((rec.seq, &rec.audit_id), (*seq, id));
    }
}

const CRASH_DB: &str = "STELLA_STORE_CRASH_CHILD_DB";

/// The child of `sqlite_acknowledged_records_survive_a_killed_process` (the same test run
/// again in a process of its own, with `CRASH_DB` set): appends from 16 tasks until killed,
/// printing each acknowledged `seq` and audit id.
async fn sqlite_crash_child(db: &str) {
    let log = Arc::new(SqliteAudit::open(SqliteOptions::new(db)).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("k{t}-{i}");
                    let a = log.append(suites::record(&id)).await.unwrap();
                    use std::io::Write as _;
                    let mut o = out.lock().unwrap();
                    writeln!(o, "acked {} {id}", a.seq).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A process killed (SIGKILL) in the middle of a stream of appends, across checkpoints and
/// WAL restarts: every record it acknowledged is in the log, the chain is intact, and the log
/// reopens and continues the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_records_survive_a_killed_process() {
    use std::io::BufRead as _;
    if let Ok(db) = std::env::var(CRASH_DB) {
        return sqlite_crash_child(&db).await;
    }
    let (_d, path) = temp_db();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_acknowledged_records_survive_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = std::time::Instant::now();
    let mut acked = Vec::new();
    let mut lines = std::io::BufReader::new(stdout).lines();
    // Past two checkpoint turns (the writer's catch-up and a WAL restart included).
    while started.elapsed() < std::time::Duration::from_millis(1500) || acked.len() < 2000 {
        let line = lines.next().unwrap().unwrap();
        let Some(rest) = line.strip_prefix("acked ") else {
            continue;
        };
        let (seq, id) = rest.split_once(' ').unwrap();
        acked.push((seq.parse::<u64>().unwrap(), id.to_string()));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed between the last read and the kill are acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some((seq, id)) = line.strip_prefix("acked ").and_then(|r| r.split_once(' ')) {
            acked.push((seq.parse().unwrap(), id.to_string()));
        }
    }
    let reader = SqliteReader::open(&path).unwrap();
    let report = chain::verify(&reader).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    acked.sort();
    let last = acked.last().unwrap().0;
    assert!(report.head_seq >= last, "{} < {last}", report.head_seq);
    let stored = reader.read_after(0, report.head_seq as usize + 1).unwrap();
    for (seq, id) in &acked {
        let rec = &stored[*seq as usize - 1];
        assert_eq!((rec.seq, &rec.audit_id), (*seq, id));
    }
    drop(reader);
    // The log reopens (recovering the WAL) and continues the chain.
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    // The records the index had not covered when the process died are indexed at open.
    let upto: i64 = SqliteReader::open(&path)
        .unwrap()
        .connection()
        .query_row("SELECT upto FROM audit_indexed", [], |r| r.get(0))
        .unwrap();
    assert_eq!(upto as u64, report.head_seq);
    let last = log
        .query(stella_store::AuditQuery {
            after_seq: report.head_seq - 5,
            tenant: Some("tenant-a".into()),
            subject_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.records.len(), 5);
    let next = log.append(suites::record("after-crash")).await.unwrap();
    assert_eq!(next.seq, report.head_seq + 1);
    log.close().await.unwrap();
    let report = chain::verify(&SqliteReader::open(&path).unwrap()).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}
