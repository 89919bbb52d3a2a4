//! The scale-out audit log: PostgreSQL, one hash chain shared by every replica.
//!
//! **One chain across replicas.** The chain head lives in a one-row table, `audit_head`. Each
//! replica's writer commits a batch in one transaction that locks that row
//! (`SELECT ... FOR UPDATE`), chains the batch onto the head it read, inserts the rows and
//! moves the head, then commits. Row locks serialise the batches of all replicas into one
//! global order, so `stella audit verify` walks a single chain exactly as for SQLite, with no
//! per-replica merge step; a replica that crashes mid-batch rolls back and leaves no gap. The
//! price is that batches of different replicas commit one after another; group commit keeps
//! that to one lock hold and one WAL flush per batch rather than per record.
//!
//! **Group commit.** As for SQLite: one writer task per replica owns a connection, takes
//! everything queued (up to `batch_max`), commits it in one transaction (`INSERT ... SELECT
//! FROM UNNEST(...)`, one round trip for the whole batch) and only then answers each caller,
//! so a response never leaves before its record is committed (PostgreSQL's default
//! `synchronous_commit=on`: durable in the WAL).
//!
//! **Failure.** Every batch is bounded by `timeout`; a failed or timed-out batch fails all its
//! callers (the service answers 503 and signs nothing), marks the log unhealthy (`/readyz`)
//! and drops the connection; the next batch reconnects, so the log recovers without a restart.
//! A timeout around `COMMIT` can leave the outcome unknown: the callers are failed either way,
//! and since the head is read under the lock on every batch the chain stays consistent.
//!
//! **Migrations** are versioned (`stella_audit_migrations`), applied at connect under a
//! transaction-scoped advisory lock so replicas starting together do not race, and idempotent.
//! [`PgReader`] (verify, export) connects with `default_transaction_read_only=on` and never
//! migrates: a dropped table is reported ([`StoreError::NoLog`]), not recreated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

use crate::audit::{
    Appended, AuditLog, AuditPage, AuditQuery, AuditReader, AuditRecord, StoredRecord,
};
use crate::chain::link_hash;
use crate::group::{
    answer_flushes, drain_after_close, final_answer, take_batch, Cmd, Done, Front, Pending,
};
use crate::{StoreError, StoreFuture};

/// Migrations in order; version = index + 1. Never edit one that has shipped: append.
const MIGRATIONS: &[&str] = &["
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    time      TEXT NOT NULL,
    audit_id  TEXT NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(time);
CREATE TABLE audit_head (
    id   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (TRUE, 0, '0000000000000000000000000000000000000000000000000000000000000000');
", "
-- 2: the audit API's filters (AuditLog::query): tenant and outcome by (field, seq), subject
-- digests by a GIN index on the record's subjectDigests array. Expression indexes on the
-- record itself: nothing is stored twice, and nothing outside the chained record decides
-- what a filter matches. IF NOT EXISTS: on a large log, build them beforehand with
-- CREATE INDEX CONCURRENTLY (same names; docs/operations.md) so the migration does not hold
-- writes while it builds them.
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (((record::jsonb) ->> 'tenant'), seq);
CREATE INDEX IF NOT EXISTS audit_log_outcome ON audit_log (((record::jsonb) ->> 'outcome'), seq);
CREATE INDEX IF NOT EXISTS audit_log_subjects ON audit_log USING GIN (((record::jsonb) -> 'subjectDigests') jsonb_path_ops);
"];

/// Advisory lock key serialising migrations ("stella-audit" as a number).
const MIGRATION_LOCK: i64 = 0x5354_454c_4c41_4144;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The Display of a server error is only "db error"; the detail is in the source.
        let detail = e
            .as_db_error()
            .map(|d| format!("{}: {}", d.code().code(), d.message()));
        StoreError::Database(match detail {
            Some(d) => format!("postgres: {d}"),
            None => format!("postgres: {e}"),
        })
    }
}

/// Options of the PostgreSQL audit log.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (libpq-style key=value strings work too).
    pub url: String,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// Records that may wait for the writer before `append` waits for room.
    pub queue: usize,
    /// Bound on connecting and on each batch (and on each read of [`PgReader`]).
    pub timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            batch_max: 1024,
            queue: 65_536,
            timeout: Duration::from_secs(5),
        }
    }
}

fn pg_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Database(format!("audit.url: {e}")))
}

async fn connect(config: &tokio_postgres::Config, timeout: Duration) -> Result<Client, StoreError> {
    let (client, conn) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Database("postgres: connect timed out".into()))??;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; errors surface on the
        // client's next call.
        let _ = conn.await;
    });
    Ok(client)
}

/// Apply missing migrations (idempotent; replicas serialise on an advisory lock).
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stella_audit_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM stella_audit_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        return Err(StoreError::Database(format!(
            "the audit schema is at version {current}, newer than this build knows ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO stella_audit_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The PostgreSQL audit log (writer side).
pub struct PgAudit {
    front: Front,
    /// The connection [`AuditLog::query`] reads on (opened on first use, dropped on error).
    query_client: tokio::sync::Mutex<Option<Client>>,
    healthy: Arc<AtomicBool>,
    config: tokio_postgres::Config,
    timeout: Duration,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAudit").finish_non_exhaustive()
    }
}

impl PgAudit {
    /// Connect, apply migrations and start the writer task (on the current tokio runtime).
    pub async fn connect(opts: PgOptions) -> Result<Self, StoreError> {
        let config = pg_config(&opts.url)?;
        let mut client = connect(&config, opts.timeout).await?;
        tokio::time::timeout(opts.timeout * 4, migrate(&mut client))
            .await
            .map_err(|_| StoreError::Database("postgres: migrations timed out".into()))??;
        let (front, rx) = Front::new(opts.queue);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            client: Some(client),
            config: config.clone(),
            batch_max: opts.batch_max.max(1),
            timeout: opts.timeout,
            healthy: healthy.clone(),
        };
        let task = tokio::spawn(writer.run(rx));
        Ok(PgAudit {
            front,
            query_client: tokio::sync::Mutex::new(None),
            healthy,
            config,
            timeout: opts.timeout,
            task: std::sync::Mutex::new(Some(task)),
        })
    }
}

impl AuditLog for PgAudit {
    fn append(&self, record: AuditRecord) -> StoreFuture<'_, Appended> {
        Box::pin(self.front.append(record))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.front.flush())
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.front.close(async {
            let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = task {
                let _ = t.await;
            }
        }))
    }

    fn is_healthy(&self) -> bool {
        !self.front.is_closed() && self.healthy.load(Ordering::Acquire)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn query(&self, query: AuditQuery) -> StoreFuture<'_, AuditPage> {
        Box::pin(async move {
            let mut guard = self.query_client.lock().await;
            if guard.is_none() {
                *guard = Some(connect(&self.config, self.timeout).await?);
            }
            let Some(client) = guard.as_ref() else {
                return Err(StoreError::Closed);
            };
            let res = tokio::time::timeout(self.timeout, run_query(client, &query))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Database(
                        "postgres: audit query timed out".into(),
                    ))
                });
            if res.is_err() {
                // The connection may be broken: the next query reconnects.
                *guard = None;
            }
            res
        })
    }

    /// The global head (all replicas), as committed.
    fn head(&self) -> StoreFuture<'_, Option<Appended>> {
        Box::pin(async move {
            let client = connect(&self.config, self.timeout).await?;
            let row = tokio::time::timeout(
                self.timeout,
                client.query_one("SELECT seq, hash FROM audit_head", &[]),
            )
            .await
            .map_err(|_| StoreError::Database("postgres: reading the head timed out".into()))??;
            let seq: i64 = row.get(0);
            Ok(Some(Appended {
                seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt {
                    seq: 0,
                    reason: format!("negative head seq {seq}"),
                })?,
                hash: row.get(1),
            }))
        })
    }
}

/// One page of `q` (see [`AuditLog::query`]); the filters use the migration-2 indexes.
async fn run_query(client: &Client, q: &AuditQuery) -> Result<AuditPage, StoreError> {
    use tokio_postgres::types::ToSql;
    let limit = q.effective_limit();
    let after = i64::try_from(q.after_seq).unwrap_or(i64::MAX);
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let outcome = q.outcome.map(|o| o.as_str().to_string());
    let mut sql = String::from(
        "SELECT seq, record, prev_hash, hash, time, audit_id FROM audit_log WHERE seq > $1",
    );
    let mut conds: Vec<(&str, &str, &(dyn ToSql + Sync))> = Vec::new();
    if let Some(t) = &q.tenant {
        conds.push(("((record::jsonb) ->> 'tenant') = ", "", t));
    }
    if let Some(o) = &outcome {
        conds.push(("((record::jsonb) ->> 'outcome') = ", "", o));
    }
    if let Some(d) = &q.subject_digest {
        conds.push((
            "((record::jsonb) -> 'subjectDigests') @> jsonb_build_array(",
            "::text)",
            d,
        ));
    }
    if let Some(s) = &q.since {
        conds.push(("time >= ", "", s));
    }
    if let Some(u) = &q.until {
        conds.push(("time < ", "", u));
    }
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&after];
    for (pre, post, v) in conds {
        args.push(v);
        sql.push_str(&format!(" AND {pre}${}{post}", args.len()));
    }
    args.push(&fetch);
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let rows = client.query(sql.as_str(), &args).await?;
    let mut records = rows
        .iter()
        .map(stored_record)
        .collect::<Result<Vec<_>, _>>()?;
    let more = records.len() > limit;
    records.truncate(limit);
    Ok(AuditPage { records, more })
}

/// How often an unhealthy writer probes the server.
const PROBE_EVERY: Duration = Duration::from_millis(500);

struct Writer {
    client: Option<Client>,
    config: tokio_postgres::Config,
    batch_max: usize,
    timeout: Duration,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.batch_max);
        let mut flushes: Vec<Done> = Vec::new();
        loop {
            // While unhealthy, probe the server between commands: a replica taken out of
            // rotation by its `/readyz` gets no requests, so recovery cannot wait for the
            // next batch.
            let first = if self.healthy.load(Ordering::Acquire) {
                rx.recv().await
            } else {
                match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        self.probe().await;
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let close = take_batch(first, &mut rx, &mut batch, &mut flushes, self.batch_max);
            let ok = self.commit(&mut batch).await;
            answer_flushes(&mut flushes, ok);
            if let Some(r) = close {
                drain_after_close(&mut rx, &mut batch, &mut flushes);
                let ok = self.commit(&mut batch).await;
                answer_flushes(&mut flushes, true);
                let _ = r.send(final_answer(ok));
                return;
            }
        }
        self.commit(&mut batch).await;
    }

    /// Reconnect and read the head (bounded); healthy again if that works.
    async fn probe(&mut self) {
        let res = tokio::time::timeout(self.timeout, async {
            if self.client.is_none() {
                self.client = Some(connect(&self.config, self.timeout).await?);
            }
            let client = self.client.as_ref().ok_or(StoreError::Closed)?;
            client.query_one("SELECT seq FROM audit_head", &[]).await?;
            Ok::<(), StoreError>(())
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Database("postgres: probe timed out".into())));
        match res {
            Ok(()) => self.healthy.store(true, Ordering::Release),
            Err(_) => self.client = None,
        }
    }

    async fn commit(&mut self, batch: &mut Vec<Pending>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let res = tokio::time::timeout(self.timeout, self.try_commit(batch))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Database(
                    "postgres: audit commit timed out".into(),
                ))
            });
        match res {
            Ok(links) => {
                self.healthy.store(true, Ordering::Release);
                for (p, a) in batch.drain(..).zip(links) {
                    let _ = p.reply.send(Ok(a));
                }
                true
            }
            Err(e) => {
                // Reconnect on the next batch: the connection may be broken or mid-transaction.
                self.client = None;
                self.healthy.store(false, Ordering::Release);
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(StoreError::Database(e.to_string())));
                }
                false
            }
        }
    }

    async fn try_commit(&mut self, batch: &[Pending]) -> Result<Vec<Appended>, StoreError> {
        if self.client.is_none() {
            self.client = Some(connect(&self.config, self.timeout).await?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Closed);
        };
        let tx = client.transaction().await?;
        let row = tx
            .query_one("SELECT seq, hash FROM audit_head FOR UPDATE", &[])
            .await?;
        let mut seq: i64 = row.get(0);
        let mut prev: String = row.get(1);
        let n = batch.len();
        let (mut seqs, mut times, mut ids, mut records, mut prevs, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut links = Vec::with_capacity(n);
        for p in batch {
            seq += 1;
            let useq = u64::try_from(seq).map_err(|e| StoreError::Encode(e.to_string()))?;
            let hash = link_hash(useq, &prev, p.json.as_bytes());
            seqs.push(seq);
            times.push(p.time.as_str());
            ids.push(p.audit_id.as_str());
            records.push(p.json.as_str());
            prevs.push(prev.clone());
            hashes.push(hash.clone());
            links.push(Appended {
                seq: useq,
                hash: hash.clone(),
            });
            prev = hash;
        }
        tx.execute(
            "INSERT INTO audit_log (seq, time, audit_id, record, prev_hash, hash) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[])",
            &[&seqs, &times, &ids, &records, &prevs, &hashes],
        )
        .await?;
        tx.execute("UPDATE audit_head SET seq = $1, hash = $2", &[&seq, &prev])
            .await?;
        tx.commit().await?;
        Ok(links)
    }
}

/// Reads a PostgreSQL audit log (verification, export) through a read-only session. The
/// reader trait is synchronous: this reader drives its own single-threaded runtime, so call
/// it outside async code (or from `spawn_blocking`).
pub struct PgReader {
    rt: tokio::runtime::Runtime,
    client: Client,
    timeout: Duration,
}

impl PgReader {
    /// Connect read-only (`default_transaction_read_only=on`); nothing is created or migrated.
    /// Fails with [`StoreError::NoLog`] when the database holds no audit table.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let mut config = pg_config(url)?;
        config.options("-c default_transaction_read_only=on");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: "tokio runtime".into(),
                source,
            })?;
        let client = rt.block_on(connect(&config, timeout))?;
        let reader = PgReader {
            rt,
            client,
            timeout,
        };
        let exists: bool = reader
            .block(reader.client.query_one(
                "SELECT to_regclass('audit_log') IS NOT NULL \
                 AND to_regclass('audit_head') IS NOT NULL",
                &[],
            ))?
            .get(0);
        if !exists {
            return Err(StoreError::NoLog(redact(url)));
        }
        Ok(reader)
    }

    fn block<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        self.rt.block_on(async {
            tokio::time::timeout(self.timeout, fut)
                .await
                .map_err(|_| StoreError::Database("postgres: read timed out".into()))?
                .map_err(StoreError::from)
        })
    }

    /// The `audit_head` row (what the writers last committed).
    pub fn head_row(&self) -> Result<Appended, StoreError> {
        let row = self.block(
            self.client
                .query_one("SELECT seq, hash FROM audit_head", &[]),
        )?;
        let seq: i64 = row.get(0);
        Ok(Appended {
            seq: u64::try_from(seq).unwrap_or(0),
            hash: row.get(1),
        })
    }
}

/// `url` without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl AuditReader for PgReader {
    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.block(self.client.query(
            "SELECT seq, record, prev_hash, hash, time, audit_id FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit],
        ))?;
        rows.iter().map(stored_record).collect()
    }

    fn first_seq_since(&self, since: &str) -> Result<Option<u64>, StoreError> {
        let row = self.block(
            self.client
                .query_one("SELECT MIN(seq) FROM audit_log WHERE time >= $1", &[&since]),
        )?;
        let seq: Option<i64> = row.get(0);
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }
}

/// A `SELECT seq, record, prev_hash, hash, time, audit_id` row.
fn stored_record(r: &tokio_postgres::Row) -> Result<StoredRecord, StoreError> {
    let seq: i64 = r.get(0);
    Ok(StoredRecord {
        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt {
            seq: 0,
            reason: format!("negative seq {seq}"),
        })?,
        record_json: r.get(1),
        prev_hash: r.get(2),
        hash: r.get(3),
        time: r.get(4),
        audit_id: r.get(5),
    })
}
