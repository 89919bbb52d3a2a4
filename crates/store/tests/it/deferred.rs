//! The SQLite audit API's deferred indexes (issue #15 item 3): records are indexed by tenant,
//! outcome and subject after they are acknowledged, in batches. Pinned here against the
//! schema and query of the previous version (expression indexes on `audit_log`, the subject
//! index written in each record's transaction), kept below as the reference: the same answers
//! for a mixed workload, a record found the moment it is acknowledged, a tail re-indexed after
//! a crash, and a database of the old schema migrated (and one touched again by an old
//! binary).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use stella_store::AuditReader as _;
use stella_store::{
    chain, open_raw, AuditLog, AuditPage, AuditQuery, AuditRecord, Outcome, SqliteAudit,
    SqliteOptions, SqliteReader, StoredRecord,
};

/// The previous version's schema, as its writer created it.
const OLD_DDL: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    audit_id  TEXT NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log(time);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log(json_extract(record, '$.tenant'), seq);
CREATE INDEX IF NOT EXISTS audit_log_outcome ON audit_log(json_extract(record, '$.outcome'), seq);
CREATE TABLE IF NOT EXISTS audit_subject (
    digest TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (digest, seq)
) WITHOUT ROWID;
";

/// The previous version's query (its `run_query`, verbatim but for the connection type).
fn old_query(conn: &Connection, q: &AuditQuery) -> AuditPage {
    let limit = q.effective_limit();
    let mut sql = String::from(
        "SELECT seq, record, prev_hash, hash, time, audit_id FROM audit_log WHERE seq > ?",
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![i64::try_from(q.after_seq).unwrap_or(i64::MAX).into()];
    if let Some(t) = &q.tenant {
        sql.push_str(" AND json_extract(record, '$.tenant') = ?");
        args.push(t.clone().into());
    }
    if let Some(o) = q.outcome {
        sql.push_str(" AND json_extract(record, '$.outcome') = ?");
        args.push(o.as_str().to_string().into());
    }
    if let Some(d) = &q.subject_digest {
        sql.push_str(" AND seq IN (SELECT seq FROM audit_subject WHERE digest = ?)");
        args.push(d.clone().into());
    }
    if let Some(s) = &q.since {
        sql.push_str(" AND time >= ?");
        args.push(s.clone().into());
    }
    if let Some(u) = &q.until {
        sql.push_str(" AND time < ?");
        args.push(u.clone().into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
    let mut stmt = conn.prepare(&sql).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok(StoredRecord {
                seq: r.get::<_, i64>(0)? as u64,
                record_json: r.get(1)?,
                prev_hash: r.get(2)?,
                hash: r.get(3)?,
                time: r.get(4)?,
                audit_id: r.get(5)?,
            })
        })
        .unwrap();
    let mut records: Vec<StoredRecord> = rows.map(Result::unwrap).collect();
    let more = records.len() > limit;
    records.truncate(limit);
    AuditPage { records, more }
}

fn digest(n: u64) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// Record `i` of the mixed workload: three tenants and none, every outcome, zero to three
/// subjects from a pool of twelve (repeats included), times out of `seq` order.
fn mixed(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("m{i}"),
        "0af7651916cd43dd8448eb211c80319c".into(),
        "POST /api/v1/signer/sign/dsse".into(),
        format!(
            "2026-01-02T03:{:02}:{:02}.000Z",
            (i * 37) % 60,
            (i * 11) % 60
        ),
    );
    r.tenant = match i % 7 {
        0 | 3 => Some("tenant-a".into()),
        1 | 4 | 6 => Some("tenant-b".into()),
        2 => Some("tenant-\u{e9}\"c".into()),
        _ => None,
    };
    (r.outcome, r.status) = match (i * 5) % 4 {
        0 => (Outcome::Signed, 200),
        1 => (Outcome::Denied, 403),
        2 => (Outcome::Error, 503),
        _ => (Outcome::Verified, 200),
    };
    let mut x = i.wrapping_mul(2_654_435_761) >> 7;
    for _ in 0..(i % 4) {
        r.subject_digests.push(digest(x % 12));
        x /= 12;
    }
    r
}

/// Every combination of filters, at several cursors and limits.
fn queries() -> Vec<AuditQuery> {
    let tenants = [
        None,
        Some("tenant-a"),
        Some("tenant-\u{e9}\"c"),
        Some("tenant-z"),
    ];
    let outcomes = [None, Some(Outcome::Signed), Some(Outcome::Verified)];
    let subjects = [None, Some(digest(0)), Some(digest(7)), Some(digest(99))];
    let times = [
        (None, None),
        (Some("2026-01-02T03:20:00.000Z"), None),
        (None, Some("2026-01-02T03:40:00.000Z")),
        (
            Some("2026-01-02T03:10:00.000Z"),
            Some("2026-01-02T03:30:30.000Z"),
        ),
    ];
    let afters = [0, 97, 300, 590];
    let limits = [1, 7, 1000];
    let mut out = Vec::new();
    let mut n = 0usize;
    for t in &tenants {
        for o in &outcomes {
            for s in &subjects {
                for (since, until) in &times {
                    for after in afters {
                        n += 1;
                        out.push(AuditQuery {
                            after_seq: after,
                            limit: limits[n % limits.len()],
                            since: since.map(str::to_string),
                            until: until.map(str::to_string),
                            tenant: t.map(str::to_string),
                            outcome: *o,
                            subject_digest: s.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Every query of [`queries`] and a few paged walks answer the same on `log` as the old query
/// on the old-schema database `old`. Returns how many records the queries returned (so a
/// caller can tell they were not all empty).
async fn same_answers(log: &dyn AuditLog, old: &Connection) -> usize {
    let mut returned = 0;
    for q in queries() {
        let new = log.query(q.clone()).await.unwrap();
        assert_eq!(new, old_query(old, &q), "{q:?}");
        returned += new.records.len();
    }
    for tenant in [None, Some("tenant-b")] {
        for subject in [None, Some(digest(3))] {
            let mut after = 0;
            loop {
                let q = AuditQuery {
                    after_seq: after,
                    limit: 7,
                    tenant: tenant.map(str::to_string),
                    subject_digest: subject.clone(),
                    ..AuditQuery::default()
                };
                let page = log.query(q.clone()).await.unwrap();
                assert_eq!(page, old_query(old, &q), "{q:?}");
                match page.records.last() {
                    Some(last) if page.more => after = last.seq,
                    _ => break,
                }
            }
        }
    }
    returned
}

/// An empty database of the old schema at `path`, filled with the records of the log at
/// `src` as the old writer wrote them (the subject index with each record).
fn old_copy(src: &Path, path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    conn.execute_batch(OLD_DDL).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS src", [src.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "INSERT INTO audit_log SELECT seq, time, audit_id, record, prev_hash, hash \
         FROM src.audit_log ORDER BY seq; \
         INSERT OR IGNORE INTO audit_subject (digest, seq) \
         SELECT j.value, a.seq FROM src.audit_log a, json_each(a.record, '$.subjectDigests') j; \
         DETACH DATABASE src;",
    )
    .unwrap();
    conn
}

/// `first_seq_since` (`stella audit export --since`) of the reader of `path` answers as the
/// old query on `old`, for times before, inside and after the log's.
fn same_first_seq(path: &Path, old: &Connection) {
    let reader = SqliteReader::open(path).unwrap();
    let mut found = 0;
    for m in (0..62).step_by(3) {
        for s in [0, 29, 59] {
            let since = format!("2026-01-02T03:{m:02}:{s:02}.000Z");
            let want: Option<i64> = old
                .query_row(
                    "SELECT MIN(seq) FROM audit_log WHERE time >= ?1",
                    [&since],
                    |r| r.get(0),
                )
                .unwrap();
            let got = reader.first_seq_since(&since).unwrap();
            assert_eq!(got, want.map(|w| w as u64), "{since}");
            found += usize::from(got.is_some_and(|g| g > 1));
        }
    }
    assert!(found > 20, "{found}");
}

/// The index tables' mark; its hash is always the link of the record it names.
fn upto(path: &Path) -> u64 {
    let reader = SqliteReader::open(path).unwrap();
    let (upto, hash, link): (i64, String, Option<String>) = reader
        .connection()
        .query_row(
            "SELECT upto, hash, (SELECT hash FROM audit_log WHERE seq = upto) FROM audit_indexed",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    if upto > 0 {
        assert_eq!(Some(hash), link, "the mark's hash at {upto}");
    }
    upto as u64
}

fn names(path: &Path) -> Vec<String> {
    let conn = open_raw(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

const N: u64 = 600;

async fn fill(log: &SqliteAudit, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(log.append(mixed(i)).await.unwrap().seq, i + 1);
    }
}

fn temp() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new.db");
    let old = dir.path().join("old.db");
    (dir, new, old)
}

/// The same answers as the old schema for a mixed workload, while part of the log is not
/// indexed yet and once all of it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queries_match_the_old_schema() {
    let (_d, path, old_path) = temp();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    fill(&log, 0, N).await;
    // Indexed in batches while appending, one after another; the rest is the tail. (A pass
    // also indexes a tail a second old: on a slow machine it may have just taken all, then
    // one more record makes a tail again. No pass runs while nothing is appended.)
    let mut n = N;
    while upto(&path) == n && n < N + 5 {
        fill(&log, n, n + 1).await;
        n += 1;
    }
    let indexed = upto(&path);
    assert!(indexed < n, "indexed up to {indexed} of {n}");
    let old = old_copy(&path, &old_path);
    let returned = same_answers(&log, &old).await;
    assert!(returned > 3_000, "{returned}");
    same_first_seq(&path, &old);
    log.close().await.unwrap();
    // Closing indexes the tail.
    assert_eq!(upto(&path), n);
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    same_answers(&log, &old).await;
    log.close().await.unwrap();
    same_first_seq(&path, &old);
    // The reader of an old-schema database (no index tables) answers the same.
    same_first_seq(&old_path, &old);
    let report = chain::verify(&SqliteReader::open(&path).unwrap()).unwrap();
    assert!(report.is_intact() && report.records == n, "{report:?}");
}

/// A record is found by its subject, tenant and outcome the moment its append returns,
/// before any index pass has covered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_record_is_found_right_after_append() {
    let (_d, path, _) = temp();
    let log = Arc::new(SqliteAudit::open(SqliteOptions::new(&path)).unwrap());
    let mut from_tail = 0;
    for i in 0..40 {
        let mut r = mixed(i);
        r.subject_digests = vec![digest(200 + i)];
        let a = log.append(r.clone()).await.unwrap();
        let page = log
            .query(AuditQuery {
                subject_digest: Some(digest(200 + i)),
                tenant: r.tenant.clone(),
                outcome: Some(r.outcome),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1, "record {i}");
        assert_eq!(page.records[0].seq, a.seq);
        assert_eq!(page.records[0].hash, a.hash);
        // Read after the query (`upto` only grows): the record was not indexed when found.
        if upto(&path) < a.seq {
            from_tail += 1;
        }
    }
    // A pass indexes a small tail once a second: a few may have been indexed in between.
    assert!(
        from_tail >= 30,
        "{from_tail} of 40 found before being indexed"
    );
    log.close().await.unwrap();
    assert_eq!(upto(&path), 40);
}

/// A tail the index never covered (the process died before its index pass) is indexed at
/// open; index rows that no longer match the log (the log cut or replaced) are rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_indexes_the_tail() {
    let (_d, path, old_path) = temp();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    fill(&log, 0, N).await;
    log.close().await.unwrap();
    let old = old_copy(&path, &old_path);
    // As after a crash before the pass that would have indexed records 101..600.
    open_raw(&path)
        .unwrap()
        .execute_batch(
            "DELETE FROM audit_facet WHERE seq > 100; DELETE FROM audit_subject WHERE seq > 100; \
             UPDATE audit_indexed SET upto = 100, \
             hash = (SELECT hash FROM audit_log WHERE seq = 100);",
        )
        .unwrap();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert_eq!(upto(&path), N);
    assert!(same_answers(&log, &old).await > 3_000);
    log.close().await.unwrap();
    // Index rows of records that are gone: the log cut back to 450 (and the index rows'
    // values changed, so that rows kept from before would show in the answers).
    open_raw(&path)
        .unwrap()
        .execute_batch(
            "DELETE FROM audit_log WHERE seq > 450; \
             UPDATE audit_facet SET tenant = 'tenant-a', outcome = 'signed';",
        )
        .unwrap();
    old.execute_batch(
        "DELETE FROM audit_log WHERE seq > 450; DELETE FROM audit_subject WHERE seq > 450;",
    )
    .unwrap();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert_eq!(upto(&path), 450);
    assert!(same_answers(&log, &old).await > 2_000);
    log.close().await.unwrap();
}

/// The link the old writer would have written for `record` after `(seq, prev)`.
fn old_append(conn: &Connection, record: &AuditRecord) {
    let (seq, prev): (i64, String) = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let seq = seq + 1;
    let json = String::from_utf8(record.to_canonical_json().unwrap()).unwrap();
    let hash = stella_digest::Digest::of_parts(&[
        b"stella-audit-v1\n",
        seq.to_string().as_bytes(),
        b"\n",
        prev.as_bytes(),
        b"\n",
        json.as_bytes(),
    ])
    .hex();
    for d in &record.subject_digests {
        conn.execute(
            "INSERT OR IGNORE INTO audit_subject (digest, seq) VALUES (?1, ?2)",
            rusqlite::params![d, seq],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO audit_log (seq, time, audit_id, record, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![seq, record.time, record.audit_id, json, prev, hash],
    )
    .unwrap();
}

/// A database of the old schema opens migrated: the expression indexes gone, the index tables
/// filled, the same answers, appends continue the chain. Opened again by an old binary (its
/// schema statements and appends), then by the new one: still the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_old_schema_database_is_migrated() {
    let (d, src, old_path) = temp();
    let log = SqliteAudit::open(SqliteOptions::new(&src)).unwrap();
    fill(&log, 0, N).await;
    log.close().await.unwrap();
    let reference = old_copy(&src, &old_path);
    let path = d.path().join("migrated.db");
    drop(old_copy(&src, &path));
    assert!(names(&path).contains(&"audit_log_tenant".to_string()));
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    let schema = names(&path);
    for gone in ["audit_log_time", "audit_log_tenant", "audit_log_outcome"] {
        assert!(!schema.contains(&gone.to_string()), "{schema:?}");
    }
    for made in [
        "audit_facet",
        "audit_facet_time",
        "audit_facet_tenant",
        "audit_facet_outcome",
        "audit_indexed",
    ] {
        assert!(schema.contains(&made.to_string()), "{schema:?}");
    }
    assert_eq!(upto(&path), N);
    assert!(same_answers(&log, &reference).await > 3_000);
    for i in N..N + 20 {
        let a = log.append(mixed(i)).await.unwrap();
        assert_eq!(a.seq, i + 1);
        old_append(&reference, &mixed(i));
    }
    same_answers(&log, &reference).await;
    log.close().await.unwrap();
    // An old binary: its open recreates the expression indexes, its writer appends with the
    // subject index and leaves the new index tables behind.
    {
        let conn = open_raw(&path).unwrap();
        conn.execute_batch(OLD_DDL).unwrap();
        for i in N + 20..N + 50 {
            old_append(&conn, &mixed(i));
            old_append(&reference, &mixed(i));
        }
    }
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert_eq!(upto(&path), N + 50);
    assert!(!names(&path).contains(&"audit_log_tenant".to_string()));
    same_answers(&log, &reference).await;
    log.close().await.unwrap();
    same_first_seq(&path, &reference);
    let report = chain::verify(&SqliteReader::open(&path).unwrap()).unwrap();
    assert!(report.is_intact() && report.records == N + 50, "{report:?}");
}

/// Index rows changed under a running writer (here: emptied, `upto` set to a value it never
/// wrote): its next pass (at the latest when it closes) finds `upto` is not what it wrote and
/// rebuilds from the stored records instead of writing its own rows on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writer_rebuilds_index_rows_it_did_not_write() {
    let (_d, path, old_path) = temp();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    fill(&log, 0, 300).await;
    open_raw(&path)
        .unwrap()
        .execute_batch(
            "DELETE FROM audit_facet; DELETE FROM audit_subject; \
             UPDATE audit_indexed SET upto = -1, hash = '';",
        )
        .unwrap();
    fill(&log, 300, N).await;
    log.close().await.unwrap();
    assert_eq!(upto(&path), N);
    let facets: i64 = open_raw(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM audit_facet", [], |r| r.get(0))
        .unwrap();
    assert_eq!(facets as u64, N);
    let old = old_copy(&path, &old_path);
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert!(same_answers(&log, &old).await > 3_000);
    log.close().await.unwrap();
}

/// An index pass that meets a row it did not expect (a facet row planted after `upto`, where
/// only the writer's own next pass should write) fails as a whole, and the rows are rebuilt
/// from the records: the planted row is replaced by the record's facets and every answer is
/// still the old schema's. (The pass inserts facets with a plain `INSERT`; a conflict must
/// not lose the records it was indexing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_index_pass_meeting_a_planted_row_rebuilds() {
    let (_d, path, old_path) = temp();
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    fill(&log, 0, 300).await;
    open_raw(&path)
        .unwrap()
        .execute(
            "INSERT INTO audit_facet (seq, time, tenant, outcome) \
             VALUES (301, '2000-01-01T00:00:00.000Z', 'tenant-z', 'error')",
            [],
        )
        .unwrap();
    fill(&log, 300, N).await;
    log.close().await.unwrap();
    // Reopening indexes whatever the failed pass left (at the latest).
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    log.close().await.unwrap();
    assert_eq!(upto(&path), N);
    let conn = open_raw(&path).unwrap();
    let (facets, planted): (i64, Option<String>) = conn
        .query_row(
            "SELECT count(*), (SELECT tenant FROM audit_facet WHERE seq = 301) FROM audit_facet",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((facets as u64, planted), (N, mixed(300).tenant));
    drop(conn);
    let old = old_copy(&path, &old_path);
    let log = SqliteAudit::open(SqliteOptions::new(&path)).unwrap();
    assert!(same_answers(&log, &old).await > 3_000);
    log.close().await.unwrap();
}
