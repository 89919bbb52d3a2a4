//! Store integration tests: one suite per trait, written against `&dyn Trait` so the
//! PostgreSQL/Redis backends of a later issue run the same suites; plus tamper cases against
//! the real SQLite file.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

mod suites;

use std::sync::Arc;

use stella_store::sqlite::SqliteReader;
use stella_store::{
    chain, AuditLog, MemoryQuotaStore, MemoryReplayCache, SqliteAudit, SqliteOptions,
};

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
    let reader = SqliteReader::open(&path).unwrap();
    reader.connection().execute_batch(sql).unwrap();
    chain::verify(&reader).unwrap()
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
