//! The audit suites and tamper cases on a real PostgreSQL (127.0.0.1:5432, or
//! `STELLA_TEST_POSTGRES_URL`): each test creates its own database and drops it afterwards.

use std::sync::Arc;
use std::time::Duration;

use stella_store::checkpoint::{self, Checkpointer};
use stella_store::{chain, AuditLog, PgAudit, PgOptions, PgReader, StoreError};

use crate::suites;

fn admin_url() -> String {
    std::env::var("STELLA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", admin_url()));
    tokio::spawn(conn);
    c
}

/// A fresh database, dropped (with its connections) on drop.
pub(crate) struct TestDb {
    name: String,
    pub(crate) url: String,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).unwrap();
        let name = format!(
            "stella_test_{}",
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
            _ => panic!("STELLA_TEST_POSTGRES_URL must name a database"),
        };
        TestDb { name, url }
    }

    pub(crate) async fn sql(&self, sql: &str) {
        let (c, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(sql).await.unwrap();
    }

    pub(crate) fn opts(&self) -> PgOptions {
        PgOptions::new(&self.url)
    }

    /// A read-only reader, used off the async runtime.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(Result<PgReader, StoreError>) -> T + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || f(PgReader::connect(&url, Duration::from_secs(5))))
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_suite() {
    let db = TestDb::new().await;
    let log = Arc::new(PgAudit::connect(db.opts()).await.unwrap());
    suites::audit_log(log.clone()).await;
    db.read(|r| suites::audit_reader(&r.unwrap(), 1 + 500))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_query_suite() {
    let db = TestDb::new().await;
    let log = PgAudit::connect(db.opts()).await.unwrap();
    suites::audit_query(&log).await;
    // Every filter can be answered from its index (sequential scans priced out; whether the
    // planner prefers it over the primary key depends on selectivity and table size).
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    for (filter, index) in [
        (
            "((record::jsonb) ->> 'tenant') = 'tenant-a'",
            "audit_log_tenant",
        ),
        (
            "((record::jsonb) ->> 'outcome') = 'signed'",
            "audit_log_outcome",
        ),
        (
            "((record::jsonb) -> 'subjectDigests') @> jsonb_build_array('x'::text)",
            "audit_log_subjects",
        ),
    ] {
        let plan: Vec<String> = c
            .query(
                &format!("EXPLAIN SELECT seq FROM audit_log WHERE {filter}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(plan.join("\n").contains(index), "{filter}: {plan:?}");
    }
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_reconnecting_continues_the_chain() {
    let db = TestDb::new().await;
    for round in 0..3 {
        let log = PgAudit::connect(db.opts()).await.unwrap();
        for i in 0..5 {
            log.append(suites::record(&format!("r{round}-{i}")))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    }
    let (report, head) = db
        .read(|r| {
            let r = r.unwrap();
            (chain::verify(&r).unwrap(), r.head_row().unwrap())
        })
        .await;
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 15);
    assert_eq!((head.seq, head.hash), (15, report.head_hash));
}

/// A log written before the audit API (schema version 1, records in it) upgrades: migration 2
/// finds an index the operator built beforehand (CONCURRENTLY), builds the others, and the
/// filters answer over the old records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_upgrades_a_version_1_log() {
    let db = TestDb::new().await;
    let log = PgAudit::connect(db.opts()).await.unwrap();
    suites::fill_for_query(&log).await;
    log.close().await.unwrap();
    db.sql(
        "DROP INDEX audit_log_tenant; DROP INDEX audit_log_outcome; DROP INDEX audit_log_subjects; \
         DELETE FROM stella_audit_migrations WHERE version = 2",
    )
    .await;
    db.sql(
        "CREATE INDEX CONCURRENTLY audit_log_subjects ON audit_log \
         USING GIN (((record::jsonb) -> 'subjectDigests') jsonb_path_ops)",
    )
    .await;
    let log = PgAudit::connect(db.opts()).await.unwrap();
    assert_eq!(
        suites::seqs_by_subject_09(&log, Some("tenant-b")).await,
        vec![8]
    );
    log.close().await.unwrap();
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_log' \
             AND indexname IN ('audit_log_tenant', 'audit_log_outcome', 'audit_log_subjects')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let v: i32 = c
        .query_one("SELECT MAX(version) FROM stella_audit_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
}

/// Three "replicas" (writers with their own connections) append concurrently: one chain,
/// every record in it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_chain() {
    let db = TestDb::new().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(PgAudit::connect(db.opts()).await.unwrap()));
    }
    let mut tasks = Vec::new();
    for (r, log) in replicas.iter().enumerate() {
        for i in 0..150 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(suites::record(&format!("rep{r}-{i}")))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=450).collect::<Vec<_>>());
    let head = replicas[0].head().await.unwrap().unwrap();
    for log in &replicas {
        log.close().await.unwrap();
    }
    let report = db.read(|r| chain::verify(&r.unwrap()).unwrap()).await;
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 450);
    assert_eq!((head.seq, head.hash), (450, report.head_hash));
}

async fn checkpointed(
    db: &TestDb,
) -> (
    Arc<dyn stella_keys::Signer>,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("audit.checkpoint.json");
    let key: Arc<dyn stella_keys::Signer> =
        Arc::new(stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).unwrap());
    let log = PgAudit::connect(db.opts()).await.unwrap();
    let w = Checkpointer::open(
        key.clone(),
        cp.clone(),
        "postgres",
        &log.head().await.unwrap().unwrap(),
    )
    .unwrap();
    for i in 0..6 {
        log.append(suites::record(&format!("id{i}"))).await.unwrap();
    }
    log.close().await.unwrap();
    assert!(w.write(&log.head().await.unwrap().unwrap()).unwrap());
    (key, cp, dir)
}

async fn verify_anchored(
    db: &TestDb,
    key: &Arc<dyn stella_keys::Signer>,
    cp: &std::path::Path,
) -> Result<chain::ChainReport, StoreError> {
    let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
        key.public_key().clone(),
    )])
    .unwrap();
    let cp = checkpoint::read_verified(cp, &ring).unwrap();
    db.read(move |r| {
        chain::verify_with(
            &r?,
            chain::ChainWalker::new().anchor(cp.records, &cp.head_hash),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tampering_is_detected_against_the_checkpoint() {
    let db = TestDb::new().await;
    let (key, cp, _dir) = checkpointed(&db).await;
    assert!(verify_anchored(&db, &key, &cp).await.unwrap().is_intact());

    // The newest records deleted (and the head row moved back to match).
    db.sql(
        "DELETE FROM audit_log WHERE seq >= 5; \
         UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)",
    )
    .await;
    assert_eq!(
        verify_anchored(&db, &key, &cp).await.unwrap().problems,
        vec![chain::ChainError::Truncated {
            head_seq: 4,
            checkpoint_seq: 6
        }]
    );
    // An edited time column.
    db.sql("UPDATE audit_log SET time = '1999-01-01T00:00:00.000Z' WHERE seq = 2")
        .await;
    assert!(verify_anchored(&db, &key, &cp)
        .await
        .unwrap()
        .problems
        .contains(&chain::ChainError::Column {
            seq: 2,
            column: "time"
        }));
    // The table dropped: reported, and the read-only reader recreates nothing.
    db.sql("DROP TABLE audit_log").await;
    assert!(matches!(
        verify_anchored(&db, &key, &cp).await,
        Err(StoreError::NoLog(_))
    ));
    assert!(matches!(
        verify_anchored(&db, &key, &cp).await,
        Err(StoreError::NoLog(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_appends_and_recovers() {
    let db = TestDb::new().await;
    let mut opts = db.opts();
    opts.timeout = Duration::from_secs(2);
    let log = PgAudit::connect(opts).await.unwrap();
    log.append(suites::record("before")).await.unwrap();
    // Kill the writer's session: the next batch fails, the one after reconnects.
    db.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    let mut failed = false;
    let mut recovered = false;
    for i in 0..5 {
        match log.append(suites::record(&format!("after{i}"))).await {
            Err(_) => {
                failed = true;
                assert!(!log.is_healthy());
            }
            Ok(_) => {
                recovered = true;
                assert!(log.is_healthy());
                break;
            }
        }
    }
    assert!(failed, "a terminated connection went unnoticed");
    assert!(recovered, "the log did not reconnect");
    log.close().await.unwrap();
    let report = db.read(|r| chain::verify(&r.unwrap()).unwrap()).await;
    assert!(report.is_intact(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_is_read_only() {
    let db = TestDb::new().await;
    // Nothing migrated yet: no log, and the reader creates none.
    assert!(matches!(
        db.read(|r| r.map(|_| ())).await,
        Err(StoreError::NoLog(_))
    ));
    let log = PgAudit::connect(db.opts()).await.unwrap();
    log.append(suites::record("x")).await.unwrap();
    log.close().await.unwrap();
    let url = db.url.clone();
    let e = tokio::task::spawn_blocking(move || {
        let mut cfg: tokio_postgres::Config = url.parse().unwrap();
        cfg.options("-c default_transaction_read_only=on");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.batch_execute("DELETE FROM audit_log").await.unwrap_err()
        })
    })
    .await
    .unwrap();
    assert!(e.to_string().contains("db error"), "{e}");
}
