//! The embedded audit log: SQLite in WAL mode with group commit.
//!
//! One writer thread owns the connection. Callers encode their record to canonical JSON on
//! their own thread and queue it; the writer takes everything queued (up to `batch_max`),
//! chains and inserts the batch in one transaction and commits once — with
//! `synchronous=FULL` that is one WAL fsync for the whole batch — and only then answers each
//! caller. Under load, batches grow on their own while an fsync is in flight, so durability
//! costs one fsync per batch rather than per request; idle, a lone record commits at once
//! (no timer adds latency). A failed commit rolls back the batch, fails every caller in it
//! and reloads the head from disk, so the chain never skips a link.
//!
//! The writer does not checkpoint on its own (`wal_autocheckpoint=0`): copying the WAL back
//! into the database and syncing it would stall every caller waiting on that batch. A
//! checkpointer thread with its own connection runs `PASSIVE` checkpoints twice a second
//! instead, which in WAL mode proceed alongside the writer; when a pass leaves the last few
//! batches behind, the writer copies those between two batches so that the WAL restarts
//! from its start instead of growing ([`CHECKPOINT_EVERY`]); closing the log truncates the WAL.
//!
//! A record's transaction writes the record's row only. The log's indexes (time, tenant,
//! outcome, subject digest) are filled by the same thread in batches after the records are
//! acknowledged, on the same connection in transactions that do not sync (the next record
//! commit's sync covers them); queries read the few records not yet indexed directly, so they
//! see every acknowledged record ([`INDEX_TABLES`]).
//!
//! Only the writer creates the schema. [`SqliteReader`] (verification, export) opens the file
//! read-only and never creates or migrates anything: a dropped table stays dropped and is
//! reported ([`StoreError::NoLog`]), a deleted database file stays deleted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};
use tokio::sync::mpsc;

use crate::audit::{
    Appended, AuditLog, AuditPage, AuditQuery, AuditReader, AuditRecord, StoredRecord,
};
use crate::chain::{link_hash, GENESIS};
use crate::group::{
    answer_flushes, drain_after_close, final_answer, take_batch_lingering, Cmd, Done, Front,
    Linger, Pending,
};
use crate::{StoreError, StoreFuture};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    audit_id  TEXT NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
";

/// The log's indexes by time, tenant, outcome and subject digest: derived data, never part of
/// the chain, kept in tables of their own and filled by the writer in batches *after* the
/// records are acknowledged (see [`Writer::index_pending`]), not in each record's transaction.
///
/// Each index an append touches costs its transaction a 4 KiB WAL frame (the subject index a
/// random leaf per record), so the record's own transaction writes only the table.
/// `audit_indexed.upto` is the last `seq` the index tables cover (and `hash` its link),
/// committed with them; queries answer the records after it (the tail) by reading them
/// ([`run_query`]), so a record is found the moment it is acknowledged. After a crash, open
/// indexes the tail from the records themselves ([`index_tail`]).
///
/// Databases of earlier versions indexed `audit_log` itself (`time`, and tenant and outcome
/// with `json_extract` expression indexes) and filled `audit_subject` in the record's
/// transaction (or had no subject index at all): [`migrate`] creates the new tables, indexes
/// every record not yet covered and drops the indexes on `audit_log`, in one transaction.
const INDEX_TABLES: &str = "
CREATE TABLE IF NOT EXISTS audit_subject (
    digest TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (digest, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_facet (
    seq     INTEGER PRIMARY KEY,
    time    TEXT NOT NULL,
    tenant  TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS audit_facet_time ON audit_facet(time);
CREATE INDEX IF NOT EXISTS audit_facet_tenant ON audit_facet(tenant, seq);
CREATE INDEX IF NOT EXISTS audit_facet_outcome ON audit_facet(outcome, seq);
CREATE TABLE IF NOT EXISTS audit_indexed (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT OR IGNORE INTO audit_indexed (id, upto, hash) VALUES (1, 0, '');
DROP INDEX IF EXISTS audit_log_time;
DROP INDEX IF EXISTS audit_log_tenant;
DROP INDEX IF EXISTS audit_log_outcome;
";

/// Bring the index tables up to date with the log, in one transaction: create them (and drop
/// the expression indexes of earlier versions) when missing, start them over when one was
/// missing or the record they end at is gone or another (the log cut or replaced behind
/// them), then index the tail. Returns the `seq` indexed up to (the log's last).
fn migrate(conn: &mut Connection) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let tables: i64 = tx.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name IN ('audit_subject', 'audit_facet', 'audit_indexed')",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(INDEX_TABLES)?;
    let (upto, hash): (i64, String) =
        tx.query_row("SELECT upto, hash FROM audit_indexed", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if tables < 3 {
        // One was missing (an earlier version's database, or a table dropped): all anew.
        tx.execute_batch(
            "DELETE FROM audit_facet; DELETE FROM audit_subject; \
             UPDATE audit_indexed SET upto = 0, hash = '';",
        )?;
    } else if upto > 0 {
        let at: Option<String> = tx
            .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [upto], |r| {
                r.get(0)
            })
            .optional()?;
        if at.as_deref() != Some(hash.as_str()) {
            tx.execute_batch(
                "DELETE FROM audit_facet; DELETE FROM audit_subject; \
                 UPDATE audit_indexed SET upto = 0, hash = '';",
            )?;
        }
    }
    let upto = index_tail(&tx)?;
    tx.commit()?;
    Ok(upto)
}

/// Index every record after `audit_indexed.upto` from the stored records (after a crash, a
/// migration, or records appended by an earlier version) and move `upto` to the last; inside
/// the caller's transaction. Idempotent. Returns the new `upto`.
fn index_tail(conn: &Connection) -> Result<u64, StoreError> {
    conn.execute_batch(
        "INSERT OR REPLACE INTO audit_facet (seq, time, tenant, outcome) \
         SELECT seq, time, json_extract(record, '$.tenant'), json_extract(record, '$.outcome') \
         FROM audit_log WHERE seq > (SELECT upto FROM audit_indexed); \
         INSERT OR IGNORE INTO audit_subject (digest, seq) \
         SELECT j.value, a.seq FROM audit_log a, json_each(a.record, '$.subjectDigests') j \
         WHERE a.seq > (SELECT upto FROM audit_indexed); \
         UPDATE audit_indexed SET (upto, hash) = \
         (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) \
         WHERE EXISTS (SELECT 1 FROM audit_log WHERE seq > upto);",
    )?;
    let upto: i64 = conn.query_row("SELECT upto FROM audit_indexed", [], |r| r.get(0))?;
    Ok(u64::try_from(upto).unwrap_or(0))
}

/// Most records acknowledged but not yet indexed before the writer indexes some even though
/// appends are waiting (a query reads at most about this many records of the tail, plus one
/// batch).
const MAX_TAIL: usize = 1024;

/// Records the writer indexes once no append is waiting.
const INDEX_BATCH: usize = 256;

/// Most records indexed in one pass (one pass holds up the appends queued meanwhile: ~3 ms
/// for 512 records on the 2-core test machine).
const INDEX_CHUNK: usize = 512;

/// A smaller tail is indexed too once it is this old (a slow stream).
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The writer connection's page cache, KiB (SQLite's default is 2,000): the index tables'
/// leaves a pass touches stay cached to the next pass (the subject index, keyed by a random
/// digest, touches leaves all over its B-tree: ~85 bytes per record, so 16 MiB holds the
/// subject leaves of ~190,000 records).
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Options of the SQLite audit log.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Database file (created with its folder if missing).
    pub path: PathBuf,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// Records that may wait for the writer before `append` waits for room.
    pub queue: usize,
    /// Wait for more records before committing a batch that shows others arriving
    /// ([`Linger`]; default: 300 µs once a batch holds 3 records).
    pub linger: Linger,
}

/// The writer's default [`Linger`]: on 2 cores at ~9,000 signatures/s, batches averaged ~3.8
/// records per `fdatasync`; waiting 300–600 µs once two to four are queued cut the writer's
/// CPU per record by a fifth to a quarter (docs/signer.md, "Group commit under load"), and
/// costs a lone request nothing.
/// The Signer's `audit.commit_delay_us` and `audit.commit_siblings` default to it.
pub const DEFAULT_LINGER: Linger = Linger {
    delay: std::time::Duration::from_micros(300),
    siblings: 3,
};

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            batch_max: 1024,
            queue: 65_536,
            linger: DEFAULT_LINGER,
        }
    }
}

/// The SQLite audit log (writer side).
pub struct SqliteAudit {
    front: Front,
    /// A read-only connection for [`AuditLog::query`] (WAL: reads run beside the writer).
    query_conn: Arc<Mutex<Connection>>,
    /// The last committed link, updated by the writer after each commit.
    head: Arc<Mutex<(u64, String)>>,
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    healthy: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    /// The database file, read-only, for the checkpointer's own sync. Last field: closing any
    /// descriptor of a file drops every POSIX lock this process holds on it, SQLite's
    /// included, so it is closed only after the threads are joined and the query connection
    /// is dropped (fields drop in declaration order).
    _db_file: Arc<std::fs::File>,
}

impl std::fmt::Debug for SqliteAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAudit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_conn(path: &Path, create: bool) -> Result<Connection, StoreError> {
    if create {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
    } else if !path.exists() {
        return Err(StoreError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such audit database"),
        });
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    // FULL: every commit fsyncs the WAL, so a committed record survives power loss.
    conn.execute_batch("PRAGMA synchronous=FULL;")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn read_head(conn: &Connection) -> Result<(u64, String), StoreError> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    Ok(match head {
        Some((seq, hash)) => (u64::try_from(seq).unwrap_or(0), hash),
        None => (0, GENESIS.to_string()),
    })
}

/// How often the checkpointer thread runs a `PASSIVE` checkpoint.
///
/// A WAL is only reused from its start (instead of growing) when a write transaction begins
/// with every frame already copied into the database. Under a steady stream of commits the
/// checkpointer never sees that: the writer commits while it copies, so each pass leaves the
/// last few batches behind and the WAL grew without bound (1 GB in 18 s at the load bench's
/// rates; every WAL sync then also wrote the file's new size: an inode write, a journal
/// commit on a journaled ext4). So
/// the checkpointer runs passes until one is short ([`checkpoint_passes`]), and then the
/// writer copies the rest itself between two batches ([`Writer::run`]): the frames it
/// committed during that last short pass (none: nothing to copy, no sync) and one database
/// sync, after which its next transaction restarts the WAL. The WAL stays near one interval's
/// worth of frames.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Most `PASSIVE` passes in a row before the writer is asked to copy the rest.
const MAX_PASSES: usize = 8;

/// A pass that found at most this many new frames was short (one or two batches went by
/// during it): what it left behind is as little as the writer will find.
const SHORT_PASS_FRAMES: i64 = 64;

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can without waiting for any lock.
/// `Some(frames)` when it ran over a non-empty WAL: the frames of the WAL as it was when the
/// pass started (SQLite reports that snapshot only; what was committed meanwhile is past it).
fn passive_checkpoint(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let (busy, log): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok((busy == 0 && log > 0).then_some(log))
}

/// The checkpointer's turn: passes until one finds few new frames (each pass copies what
/// was committed during the one before, so they shrink to what one database sync lets
/// through), at most [`MAX_PASSES`]. Returns whether a pass ran (the writer then copies the
/// rest, see [`CHECKPOINT_EVERY`]).
fn checkpoint_passes(conn: &Connection) -> bool {
    let mut last: Option<i64> = None;
    for _ in 0..MAX_PASSES {
        match passive_checkpoint(conn) {
            Ok(Some(frames)) => {
                let new = last.map_or(i64::MAX, |l| frames - l);
                last = Some(frames);
                if new <= SHORT_PASS_FRAMES {
                    break;
                }
            }
            _ => break,
        }
    }
    last.is_some()
}

impl SqliteAudit {
    /// Open (or create) the log and start its writer thread.
    pub fn open(opts: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_conn(&opts.path, true)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        let indexed = migrate(&mut conn)?;
        // The writer's page cache holds the index tables' pages between passes too (one
        // connection: another's commits would empty it before every pass).
        conn.execute_batch(&format!("PRAGMA cache_size=-{WRITER_CACHE_KIB};"))?;
        let query_conn = Arc::new(Mutex::new(open_query_conn(&opts.path)?));
        let head = read_head(&conn)?;
        let cp_conn = open_conn(&opts.path, false)?;
        let db_file =
            Arc::new(
                std::fs::File::open(&opts.path).map_err(|source| StoreError::Io {
                    path: opts.path.display().to_string(),
                    source,
                })?,
            );
        let cp_db_file = db_file.clone();
        let (cp_stop, cp_rx) = std::sync::mpsc::channel::<()>();
        let catch_up = Arc::new(AtomicBool::new(false));
        let cp_catch_up = catch_up.clone();
        let cp_thread = std::thread::Builder::new()
            .name("stella-audit-checkpoint".into())
            .spawn(move || loop {
                match cp_rx.recv_timeout(CHECKPOINT_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if checkpoint_passes(&cp_conn) {
                            // SQLite syncs the database only after a pass that reached the
                            // WAL's end, which under load is the writer's catch-up: sync what
                            // these passes wrote here, so that the writer's sync flushes only
                            // its own few pages. (Durability does not rest on this one.)
                            let _ = cp_db_file.sync_data();
                            cp_catch_up.store(true, Ordering::Release);
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|source| StoreError::Io {
                path: opts.path.display().to_string(),
                source,
            })?;
        let (front, rx) = Front::new(opts.queue);
        let healthy = Arc::new(AtomicBool::new(true));
        let shared_head = Arc::new(Mutex::new(head.clone()));
        let writer = Writer {
            conn,
            indexed,
            unindexed: Vec::new(),
            relaxed: false,
            indexed_at: std::time::Instant::now(),
            head,
            shared_head: shared_head.clone(),
            batch_max: opts.batch_max.max(1),
            linger: opts.linger,
            healthy: healthy.clone(),
            catch_up,
        };
        let thread = std::thread::Builder::new()
            .name("stella-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Io {
                path: opts.path.display().to_string(),
                source,
            })?;
        Ok(SqliteAudit {
            front,
            query_conn,
            head: shared_head,
            checkpointer: Mutex::new(Some((cp_stop, cp_thread))),
            healthy,
            thread: Mutex::new(Some(thread)),
            path: opts.path,
            _db_file: db_file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn join(&self) {
        let cp = match self.checkpointer.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some((stop, h)) = cp {
            let _ = stop.send(());
            let _ = h.join();
        }
        let handle = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl AuditLog for SqliteAudit {
    fn append(&self, record: AuditRecord) -> StoreFuture<'_, Appended> {
        Box::pin(self.front.append(record))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.front.flush())
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // The writer has answered Close and is returning; joining is quick.
        Box::pin(self.front.close(async { self.join() }))
    }

    fn is_healthy(&self) -> bool {
        !self.front.is_closed() && self.healthy.load(Ordering::Acquire)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn head(&self) -> StoreFuture<'_, Option<Appended>> {
        let (seq, hash) = lock(&self.head).clone();
        Box::pin(async move { Ok(Some(Appended { seq, hash })) })
    }

    fn query(&self, query: AuditQuery) -> StoreFuture<'_, AuditPage> {
        let conn = self.query_conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || run_query(&lock(&conn), &query))
                .await
                .map_err(|e| StoreError::Database(format!("audit query task: {e}")))?
        })
    }
}

fn open_query_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA query_only=1;")?;
    Ok(conn)
}

/// One page of `q`. Rows are read `limit + 1` deep to tell whether more match.
///
/// Without a filter, one read of `audit_log` by `seq`. With one, in one read transaction: the
/// records up to `audit_indexed.upto` through the index tables ([`INDEX_TABLES`]; the time
/// is compared on both the index's copy and the record's column), then, when the page is not
/// full, the not-yet-indexed tail after it read directly with the same filters on the record
/// itself (at most about [`MAX_TAIL`] records).
fn run_query(conn: &Connection, q: &AuditQuery) -> Result<AuditPage, StoreError> {
    let limit = q.effective_limit();
    let want = limit + 1;
    let after = i64::try_from(q.after_seq).unwrap_or(i64::MAX);
    let indexed_filter = q.tenant.is_some()
        || q.outcome.is_some()
        || q.subject_digest.is_some()
        || q.since.is_some()
        || q.until.is_some();
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)?;
    let mut records = Vec::with_capacity(limit.min(64));
    if indexed_filter {
        let upto: i64 = tx.query_row("SELECT upto FROM audit_indexed", [], |r| r.get(0))?;
        if after < upto {
            let mut sql = String::from(
                "SELECT a.seq, a.record, a.prev_hash, a.hash, a.time, a.audit_id \
                 FROM audit_facet f JOIN audit_log a ON a.seq = f.seq \
                 WHERE f.seq > ? AND f.seq <= ?",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![after.into(), upto.into()];
            // The index rows find the candidates; the record itself decides (as in the tail).
            if let Some(t) = &q.tenant {
                sql.push_str(" AND f.tenant = ? AND json_extract(a.record, '$.tenant') = ?");
                args.push(t.clone().into());
                args.push(t.clone().into());
            }
            if let Some(o) = q.outcome {
                sql.push_str(" AND f.outcome = ? AND json_extract(a.record, '$.outcome') = ?");
                args.push(o.as_str().to_string().into());
                args.push(o.as_str().to_string().into());
            }
            if let Some(d) = &q.subject_digest {
                sql.push_str(" AND f.seq IN (SELECT seq FROM audit_subject WHERE digest = ?)");
                args.push(d.clone().into());
            }
            push_time_filters(q, "f.", &mut sql, &mut args);
            push_time_filters(q, "a.", &mut sql, &mut args);
            sql.push_str(" ORDER BY f.seq LIMIT ?");
            args.push(i64::try_from(want).unwrap_or(i64::MAX).into());
            read_rows(&tx, &sql, args, &mut records)?;
        }
        if records.len() < want {
            let from = after.max(upto);
            read_rows_scanned(&tx, q, from, want - records.len(), &mut records)?;
        }
    } else {
        read_rows_scanned(&tx, q, after, want, &mut records)?;
    }
    tx.commit()?;
    let more = records.len() > limit;
    records.truncate(limit);
    Ok(AuditPage { records, more })
}

/// Up to `want` records after `after` matching `q`, every filter read from the record itself
/// (tenant, outcome, subjects from its JSON; the time from the `time` column).
fn read_rows_scanned(
    conn: &Connection,
    q: &AuditQuery,
    after: i64,
    want: usize,
    records: &mut Vec<StoredRecord>,
) -> Result<(), StoreError> {
    let mut sql = String::from(
        "SELECT seq, record, prev_hash, hash, time, audit_id FROM audit_log WHERE seq > ?",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![after.into()];
    if let Some(t) = &q.tenant {
        sql.push_str(" AND json_extract(record, '$.tenant') = ?");
        args.push(t.clone().into());
    }
    if let Some(o) = q.outcome {
        sql.push_str(" AND json_extract(record, '$.outcome') = ?");
        args.push(o.as_str().to_string().into());
    }
    if let Some(d) = &q.subject_digest {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(record, '$.subjectDigests') WHERE value = ?)",
        );
        args.push(d.clone().into());
    }
    push_time_filters(q, "", &mut sql, &mut args);
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(i64::try_from(want).unwrap_or(i64::MAX).into());
    read_rows(conn, &sql, args, records)
}

fn push_time_filters(
    q: &AuditQuery,
    table: &str,
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
) {
    if let Some(s) = &q.since {
        sql.push_str(&format!(" AND {table}time >= ?"));
        args.push(s.clone().into());
    }
    if let Some(u) = &q.until {
        sql.push_str(&format!(" AND {table}time < ?"));
        args.push(u.clone().into());
    }
}

fn read_rows(
    conn: &Connection,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
    records: &mut Vec<StoredRecord>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), stored_row)?;
    for row in rows {
        records.push(to_stored(row?)?);
    }
    Ok(())
}

type Row = (i64, String, String, String, String, String);

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_stored(
    (seq, record_json, prev_hash, hash, time, audit_id): Row,
) -> Result<StoredRecord, StoreError> {
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        seq: 0,
        reason: format!("negative seq {seq}"),
    })?;
    Ok(StoredRecord {
        seq,
        time,
        audit_id,
        record_json,
        prev_hash,
        hash,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for SqliteAudit {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        self.front.disconnect();
        self.join();
    }
}

/// A transaction whose `BEGIN` and `COMMIT` are prepared once per connection (rusqlite's
/// `Transaction` parses both on every call: ~4 % of the writer's CPU at one record per
/// commit). Rolled back when dropped uncommitted (an error on the way, or a failed `COMMIT`).
struct CachedTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> CachedTx<'c> {
    fn begin(conn: &'c Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(CachedTx { conn, open: true })
    }

    fn conn(&self) -> &'c Connection {
        self.conn
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for CachedTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// `synchronous=NORMAL` on the writer's connection for the index pass's transaction, `FULL`
/// again when this ends — by [`Unsynced::restore`], or when dropped on an error path (a
/// transaction opened after it is rolled back first: locals drop in reverse order, and the
/// setting cannot change inside a transaction). Should even that fail, [`Writer::commit`] sets it
/// again before its next transaction and fails the batch when it cannot ([`Writer::relaxed`]).
struct Unsynced<'c> {
    conn: &'c Connection,
    restored: bool,
}

impl<'c> Unsynced<'c> {
    fn new(conn: &'c Connection) -> Result<Self, StoreError> {
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        Ok(Unsynced {
            conn,
            restored: false,
        })
    }

    fn conn(&self) -> &'c Connection {
        self.conn
    }

    fn restore(mut self) -> Result<(), StoreError> {
        self.restored = true;
        set_full_sync(self.conn)
    }
}

impl Drop for Unsynced<'_> {
    fn drop(&mut self) {
        if !self.restored {
            let _ = set_full_sync(self.conn);
        }
    }
}

/// `PRAGMA synchronous=FULL`: every commit syncs the WAL (what a record's commit needs).
fn set_full_sync(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    Ok(())
}

/// What the index tables need of an acknowledged record (taken from the record in memory, so
/// no JSON is parsed to index it).
struct Facets {
    seq: i64,
    time: String,
    tenant: Option<String>,
    outcome: &'static str,
    subjects: Vec<String>,
}

struct Writer {
    /// The one connection of the writer: records (`synchronous=FULL`) and, between batches,
    /// the index tables (`synchronous=NORMAL` for that transaction, see
    /// [`Writer::index_pending`]).
    conn: Connection,
    /// The last `seq` the index tables cover (`audit_indexed.upto`).
    indexed: u64,
    /// Acknowledged records after `indexed`, in `seq` order.
    unindexed: Vec<Facets>,
    /// The connection may still be at `synchronous=NORMAL` (an index pass failed and so did
    /// setting `FULL` back): [`Writer::commit`] sets `FULL` before it commits a record.
    relaxed: bool,
    /// When the index tables last caught up.
    indexed_at: std::time::Instant,
    head: (u64, String),
    shared_head: Arc<Mutex<(u64, String)>>,
    batch_max: usize,
    linger: Linger,
    healthy: Arc<AtomicBool>,
    /// Set by the checkpointer after each pass (see [`CHECKPOINT_EVERY`]).
    catch_up: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut appends: Vec<Pending> = Vec::with_capacity(self.batch_max);
        let mut flushes: Vec<Done> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let close = take_batch_lingering(
                first,
                &mut rx,
                &mut appends,
                &mut flushes,
                self.batch_max,
                self.linger,
            );
            let ok = self.commit(&mut appends);
            answer_flushes(&mut flushes, ok);
            if close.is_none() && self.index_due(rx.is_empty()) {
                // Between two batches, the callers of the one above answered already.
                self.index_pending();
            }
            if close.is_none() && self.catch_up.swap(false, Ordering::AcqRel) {
                // Copy what the checkpointer's last pass left behind, between two batches
                // (the callers of the batch above are answered already): the WAL is then
                // fully checkpointed and the next transaction restarts it from its start.
                let _ = passive_checkpoint(&self.conn);
            }
            if let Some(r) = close {
                // Drain whatever raced in behind Close, then stop.
                drain_after_close(&mut rx, &mut appends, &mut flushes);
                let ok = self.commit(&mut appends);
                self.index_all();
                let _ = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                answer_flushes(&mut flushes, true);
                let _ = r.send(final_answer(ok));
                return;
            }
        }
        // Channel closed without Close (drop): commit what is left.
        self.commit(&mut appends);
        self.index_all();
    }

    /// Is it time to index the acknowledged records (`idle`: no append is waiting)? In
    /// batches of [`INDEX_BATCH`] when idle, and at the latest at [`MAX_TAIL`] (one chunk
    /// of [`INDEX_CHUNK`] per batch committed while the queue stays busy).
    fn index_due(&self, idle: bool) -> bool {
        let n = self.unindexed.len();
        n >= MAX_TAIL
            || (idle && (n >= INDEX_BATCH || (n > 0 && self.indexed_at.elapsed() >= INDEX_EVERY)))
    }

    /// Index every acknowledged record not yet indexed, in passes of at most [`INDEX_CHUNK`]
    /// (closing, or the writer's thread ending).
    fn index_all(&mut self) {
        while !self.unindexed.is_empty() {
            self.index_pending();
        }
    }

    /// Write the index rows of the oldest acknowledged records not yet indexed (at most
    /// [`INDEX_CHUNK`]) and move `upto`, in one transaction that does not sync
    /// ([`Unsynced`]: derived data, rebuilt from the records after a crash; the next record
    /// commit's sync covers it, and in WAL mode a lost one is simply not there). Batched, each
    /// index leaf is written once for many records. On failure the rows are rebuilt from the
    /// stored records instead ([`index_tail`]), at the next turn or at open.
    ///
    /// On the writer's own connection, whose page cache keeps the index pages from one pass
    /// to the next: a second connection found its cache emptied by the writer's commits
    /// before every pass and read each index leaf back with a `pread` (2026-12-07, issue #15).
    fn index_pending(&mut self) {
        if self.unindexed.is_empty() {
            return;
        }
        let n = self.unindexed.len().min(INDEX_CHUNK);
        let mut rebuilt = false;
        let res = (|| -> Result<(), StoreError> {
            let unsynced = Unsynced::new(&self.conn)?;
            let tx = CachedTx::begin(unsynced.conn())?;
            let upto: i64 = tx
                .conn()
                .prepare_cached("SELECT upto FROM audit_indexed")?
                .query_row([], |r| r.get(0))?;
            if u64::try_from(upto).ok() != Some(self.indexed) {
                // Not what this writer last wrote: rebuild from the records.
                index_tail(tx.conn())?;
                rebuilt = true;
            } else {
                // A plain INSERT: the rows after `upto` do not exist (a conflict would fail the
                // pass, and the next one rebuilds). `OR REPLACE` on a table with indexes made
                // every execution open a statement journal and copy each page it touched
                // (four 4 KiB pages per record) into it.
                let mut facet = tx.conn().prepare_cached(
                    "INSERT INTO audit_facet (seq, time, tenant, outcome) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut subject = tx.conn().prepare_cached(
                    "INSERT OR IGNORE INTO audit_subject (digest, seq) VALUES (?1, ?2)",
                )?;
                let chunk = &self.unindexed[..n];
                for f in chunk {
                    facet.execute(params![f.seq, f.time, f.tenant, f.outcome])?;
                    for d in &f.subjects {
                        subject.execute(params![d, f.seq])?;
                    }
                }
                if let Some(last) = chunk.last() {
                    // The mark's link hash read from the record (committed and acknowledged),
                    // once per pass, rather than kept for every record.
                    tx.conn()
                        .prepare_cached(
                            "UPDATE audit_indexed SET upto = ?1, \
                             hash = (SELECT hash FROM audit_log WHERE seq = ?1)",
                        )?
                        .execute(params![last.seq])?;
                }
            }
            tx.commit()?;
            unsynced.restore()
        })();
        self.indexed_at = std::time::Instant::now();
        if res.is_err() {
            // The guard set `FULL` back unless that failed too; make sure either way.
            self.relaxed = set_full_sync(&self.conn).is_err();
        }
        match res {
            Ok(()) if !rebuilt => {
                if let Some(last) = self.unindexed.get(n - 1) {
                    self.indexed = u64::try_from(last.seq).unwrap_or(u64::MAX);
                }
                self.unindexed.drain(..n);
            }
            Ok(()) => {
                // The rebuild covered every committed record.
                self.unindexed.clear();
                self.indexed = self.head.0;
            }
            Err(_) => {
                // Leave `indexed` behind `upto`'s real value: the next turn rebuilds from the
                // stored records (and so does the next open).
                self.unindexed.clear();
                self.indexed = u64::MAX;
            }
        }
    }

    /// Commit `batch` in one transaction and answer every caller. Returns success.
    fn commit(&mut self, batch: &mut Vec<Pending>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let (mut seq, mut prev) = self.head.clone();
        let mut results: Vec<Appended> = Vec::with_capacity(batch.len());
        let res = (|| -> Result<(), StoreError> {
            if self.relaxed {
                set_full_sync(&self.conn)?;
                self.relaxed = false;
            }
            let tx = CachedTx::begin(&self.conn)?;
            {
                let mut stmt = tx.conn().prepare_cached(
                    "INSERT INTO audit_log (seq, time, audit_id, record, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for p in batch.iter() {
                    seq += 1;
                    let hash = link_hash(seq, &prev, p.json.as_bytes());
                    let text = p.json.as_str();
                    let iseq = i64::try_from(seq).map_err(|e| StoreError::Encode(e.to_string()))?;
                    stmt.execute(params![iseq, p.time, p.audit_id, text, prev, hash])?;
                    results.push(Appended {
                        seq,
                        hash: hash.clone(),
                    });
                    prev = hash;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.head = (seq, prev);
                *lock(&self.shared_head) = self.head.clone();
                self.healthy.store(true, Ordering::Release);
                for (p, a) in batch.drain(..).zip(results) {
                    // `a.seq` fitted an i64 above.
                    let seq = i64::try_from(a.seq).unwrap_or(i64::MAX);
                    let _ = p.reply.send(Ok(a));
                    self.unindexed.push(Facets {
                        seq,
                        time: p.time,
                        tenant: p.tenant,
                        outcome: p.outcome.as_str(),
                        subjects: p.subjects,
                    });
                }
                true
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                if let Ok(h) = read_head(&self.conn) {
                    self.head = h;
                }
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(StoreError::Database(e.to_string())));
                }
                false
            }
        }
    }
}

/// Reads an audit database (verification, export). Safe to use while a service writes.
///
/// Opened read-only: nothing is created or migrated, so verifying a log cannot repair (and so
/// hide) a dropped table or a deleted file.
pub struct SqliteReader {
    conn: Connection,
    /// The database has the index tables and their time index ([`INDEX_TABLES`]); one of an
    /// earlier version indexes `time` on `audit_log` instead.
    indexed: bool,
}

impl SqliteReader {
    /// Open an existing database read-only; fails with [`StoreError::NoLog`] when it holds no
    /// audit table.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such audit database"),
            });
        }
        let conn = open_query_conn(path)?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
            [],
            |r| r.get(0),
        )?;
        if tables == 0 {
            return Err(StoreError::NoLog(path.display().to_string()));
        }
        let index_tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master \
             WHERE name IN ('audit_facet', 'audit_indexed', 'audit_facet_time')",
            [],
            |r| r.get(0),
        )?;
        Ok(SqliteReader {
            conn,
            indexed: index_tables == 3,
        })
    }

    /// The read-only connection (tests, diagnostics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// A plain read-write connection to an existing audit database that creates and migrates
/// nothing: for repair tools and tamper tests. Verification never uses it.
pub fn open_raw(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl AuditReader for SqliteReader {
    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, record, prev_hash, hash, time, audit_id FROM audit_log \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], stored_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(to_stored(row?)?);
        }
        Ok(out)
    }

    fn first_seq_since(&self, since: &str) -> Result<Option<u64>, StoreError> {
        // With the index tables: the indexed records by the time index (the records since
        // `since`, as the old index on `audit_log(time)` read them; each checked against its
        // record's column too), the tail after `upto` read directly; one statement, one
        // snapshot. (Index rows exist only up to `upto`.)
        let sql = if self.indexed {
            "SELECT min(s) FROM ( \
             SELECT MIN(f.seq) AS s FROM audit_facet f INDEXED BY audit_facet_time \
             JOIN audit_log a ON a.seq = f.seq WHERE f.time >= ?1 AND a.time >= ?1 \
             UNION ALL \
             SELECT MIN(seq) AS s FROM audit_log \
             WHERE seq > (SELECT upto FROM audit_indexed) AND time >= ?1)"
        } else {
            "SELECT MIN(seq) FROM audit_log WHERE time >= ?1"
        };
        let seq: Option<i64> = self
            .conn
            .query_row(sql, params![since], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use tokio::sync::oneshot;

    fn sync_level(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// A writer as [`SqliteAudit::open`] builds it, driven on the test's thread.
    fn writer(path: &Path) -> Writer {
        let mut conn = open_conn(path, true).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
        let indexed = migrate(&mut conn).unwrap();
        let head = read_head(&conn).unwrap();
        Writer {
            conn,
            indexed,
            unindexed: Vec::new(),
            relaxed: false,
            indexed_at: std::time::Instant::now(),
            head: head.clone(),
            shared_head: Arc::new(Mutex::new(head)),
            batch_max: 64,
            linger: DEFAULT_LINGER,
            healthy: Arc::new(AtomicBool::new(true)),
            catch_up: Arc::new(AtomicBool::new(false)),
        }
    }

    type Reply = oneshot::Receiver<Result<Appended, StoreError>>;

    fn batch(from: u32, n: u32) -> (Vec<Pending>, Vec<Reply>) {
        let mut pending = Vec::new();
        let mut replies = Vec::new();
        for i in from..from + n {
            let mut r = AuditRecord::new(
                format!("a{i}"),
                "0af7651916cd43dd8448eb211c80319c".into(),
                "POST /api/v1/signer/sign/dsse".into(),
                format!("2026-01-02T03:04:{:02}.000Z", i % 60),
            );
            r.tenant = Some("tenant-a".into());
            r.subject_digests = vec![format!("sha256:{}", format!("{i:02x}").repeat(32))];
            r.outcome = Outcome::Signed;
            let (reply, rx) = oneshot::channel();
            pending.push(Pending {
                json: String::from_utf8(r.to_canonical_json().unwrap()).unwrap(),
                time: r.time,
                audit_id: r.audit_id,
                subjects: r.subject_digests,
                tenant: r.tenant,
                outcome: r.outcome,
                reply,
            });
            replies.push(rx);
        }
        (pending, replies)
    }

    fn acked(replies: Vec<Reply>) -> Vec<u64> {
        replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap().unwrap().seq)
            .collect()
    }

    /// The index pass runs on the records' connection at `synchronous=NORMAL`; whether it
    /// succeeds or fails, the next record commits at `FULL` (synced before its append
    /// returns), and a failed pass leaves no transaction open.
    #[test]
    fn records_commit_at_full_sync_after_an_index_pass_ok_or_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir.path().join("audit.db"));
        assert_eq!(sync_level(&w.conn), 2, "FULL");
        let (mut b, replies) = batch(0, 3);
        assert!(w.commit(&mut b));
        assert_eq!(acked(replies), vec![1, 2, 3]);
        w.index_pending();
        assert_eq!((w.indexed, w.unindexed.len()), (3, 0));
        assert_eq!(sync_level(&w.conn), 2);
        assert!(w.conn.is_autocommit());

        // A pass failing inside its transaction (its table gone).
        let (mut b, replies) = batch(3, 2);
        assert!(w.commit(&mut b));
        assert_eq!(acked(replies), vec![4, 5]);
        w.conn.execute_batch("DROP TABLE audit_facet").unwrap();
        w.index_pending();
        assert_eq!(sync_level(&w.conn), 2);
        assert!(w.conn.is_autocommit() && !w.relaxed);
        assert!(w.unindexed.is_empty() && w.indexed == u64::MAX);

        // Were `FULL` not restored, the next commit restores it first.
        w.conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
        w.relaxed = true;
        let (mut b, replies) = batch(5, 1);
        assert!(w.commit(&mut b));
        assert_eq!(acked(replies), vec![6]);
        assert_eq!(sync_level(&w.conn), 2);
        assert!(!w.relaxed);
        let stored: i64 = w
            .conn
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 6);
    }

    /// The pass's guard sets `NORMAL` and then `FULL` again every time, not only the first,
    /// and `FULL` when dropped without `restore` (an error on the way).
    #[test]
    fn unsynced_sets_and_restores_the_level_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(&dir.path().join("audit.db"), true).unwrap();
        for _ in 0..3 {
            let u = Unsynced::new(&conn).unwrap();
            assert_eq!(sync_level(&conn), 1, "NORMAL");
            u.restore().unwrap();
            assert_eq!(sync_level(&conn), 2, "FULL");
            {
                let _u = Unsynced::new(&conn).unwrap();
                assert_eq!(sync_level(&conn), 1);
            }
            assert_eq!(sync_level(&conn), 2);
        }
    }

    /// A transaction dropped uncommitted is rolled back (and a failed one leaves the
    /// connection usable).
    #[test]
    fn cached_transaction_rolls_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(&dir.path().join("audit.db"), true).unwrap();
        {
            let tx = CachedTx::begin(&conn).unwrap();
            tx.conn()
                .execute(
                    "INSERT INTO audit_log VALUES (1, 't', 'a', '{}', 'p', 'h')",
                    [],
                )
                .unwrap();
        }
        assert!(conn.is_autocommit());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let tx = CachedTx::begin(&conn).unwrap();
        tx.conn()
            .execute(
                "INSERT INTO audit_log VALUES (1, 't', 'a', '{}', 'p', 'h')",
                [],
            )
            .unwrap();
        tx.commit().unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
