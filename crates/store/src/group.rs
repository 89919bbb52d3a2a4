//! The group-commit front-end shared by the durable audit writers ([`crate::sqlite`],
//! [`crate::postgres`]): callers encode their record to canonical JSON on their own thread and
//! queue it ([`Front::append`]); one writer (a thread for SQLite, a task for PostgreSQL) takes
//! everything queued up to `batch_max` ([`take_batch`]), commits it once and only then answers
//! each caller. What differs between backends is only the commit itself and how the writer
//! waits (blocking or async); the queue, the commands and the close protocol are here.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::audit::{Appended, AuditRecord};
use crate::StoreError;

/// A record waiting for the writer.
pub(crate) struct Pending {
    pub(crate) time: String,
    pub(crate) audit_id: String,
    /// The record's canonical JSON (the chained bytes).
    pub(crate) json: String,
    /// The record's subject digests, tenant and outcome (SQLite's deferred indexes, see
    /// [`crate::sqlite`]; PostgreSQL indexes the JSON).
    pub(crate) subjects: Vec<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) outcome: crate::audit::Outcome,
    pub(crate) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// The answer to a flush or a close.
pub(crate) type Done = oneshot::Sender<Result<(), StoreError>>;

/// What the writer is asked to do.
pub(crate) enum Cmd {
    Append(Pending),
    /// Answered once everything queued before it is committed.
    Flush(Done),
    /// Commit what is queued, answer, stop.
    Close(Done),
}

/// The callers' side of the queue.
pub(crate) struct Front {
    tx: mpsc::Sender<Cmd>,
    closed: AtomicBool,
}

impl Front {
    /// A front-end and the receiver its writer takes commands from (`queue` records may
    /// wait before `append` waits for room).
    pub(crate) fn new(queue: usize) -> (Front, mpsc::Receiver<Cmd>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            Front {
                tx,
                closed: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// Queue `record` and wait until the writer has committed it (or failed).
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<Appended, StoreError> {
        if self.is_closed() {
            return Err(StoreError::Closed);
        }
        let json = String::from_utf8(record.to_canonical_json()?)
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(Pending {
                time: record.time,
                audit_id: record.audit_id,
                json,
                subjects: record.subject_digests,
                tenant: record.tenant,
                outcome: record.outcome,
                reply,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Wait until everything queued so far is committed.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ask the writer to commit what is queued and stop; once it has answered, run `after`
    /// (join the writer) and return its answer. `Ok` at once when the log was already closed
    /// or the writer is gone.
    pub(crate) async fn close(
        &self,
        after: impl std::future::Future<Output = ()>,
    ) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close(reply)).await.is_err() {
            return Ok(());
        }
        let res = rx.await.map_err(|_| StoreError::Closed)?;
        after.await;
        res
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Drop this side of the queue (the writer drains what is queued and exits).
    pub(crate) fn disconnect(&mut self) {
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
    }
}

/// Add `first` and whatever else is queued right now to `batch` (appends, up to `batch_max`)
/// and `flushes`. Returns the reply of a `Close` if one came (nothing after it is taken).
pub(crate) fn take_batch(
    first: Cmd,
    rx: &mut mpsc::Receiver<Cmd>,
    batch: &mut Vec<Pending>,
    flushes: &mut Vec<Done>,
    batch_max: usize,
) -> Option<Done> {
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            Cmd::Append(p) => batch.push(p),
            Cmd::Flush(r) => flushes.push(r),
            Cmd::Close(r) => return Some(r),
        }
        if batch.len() >= batch_max {
            break;
        }
        next = rx.try_recv().ok();
    }
    None
}

/// After a `Close`: stop the queue and take whatever raced in behind it (a second `Close`
/// is answered at once).
pub(crate) fn drain_after_close(
    rx: &mut mpsc::Receiver<Cmd>,
    batch: &mut Vec<Pending>,
    flushes: &mut Vec<Done>,
) {
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            Cmd::Append(p) => batch.push(p),
            Cmd::Flush(f) => flushes.push(f),
            Cmd::Close(c) => {
                let _ = c.send(Ok(()));
            }
        }
    }
}

/// Answer the flushes waiting on a commit that succeeded (`ok`) or failed.
pub(crate) fn answer_flushes(flushes: &mut Vec<Done>, ok: bool) {
    for f in flushes.drain(..) {
        let _ = f.send(if ok {
            Ok(())
        } else {
            Err(StoreError::Database("audit commit failed".into()))
        });
    }
}

/// The answer to a `Close` after the final commit.
pub(crate) fn final_answer(ok: bool) -> Result<(), StoreError> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::Database("final audit commit failed".into()))
    }
}
