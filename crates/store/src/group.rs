//! The group-commit front-end shared by the durable audit writers ([`crate::sqlite`],
//! [`crate::postgres`]): callers encode their record to canonical JSON on their own thread and
//! queue it ([`Front::append`]); one writer (a thread for SQLite, a task for PostgreSQL) takes
//! everything queued up to `batch_max` ([`take_batch`]), commits it once and only then answers
//! each caller. What differs between backends is only the commit itself and how the writer
//! waits (blocking or async); the queue, the commands and the close protocol are here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// When the writer waits for more records before a commit — PostgreSQL's `commit_delay` and
/// `commit_siblings`. A batch that already holds `siblings` records says that others arrive
/// while each commit syncs; waiting `delay` then lets one sync serve more of them (on a
/// virtual disk each sync also costs a trap to the host). A lone record, a batch a caller is
/// flushing, a full batch, or a zero `delay` is committed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    pub delay: Duration,
    pub siblings: usize,
}

impl Linger {
    /// Commit at once, always.
    pub const NEVER: Linger = Linger {
        delay: Duration::ZERO,
        siblings: usize::MAX,
    };

    fn applies(&self, batch: usize, batch_max: usize, flushes: usize) -> bool {
        !self.delay.is_zero() && batch >= self.siblings.max(2) && batch < batch_max && flushes == 0
    }
}

/// [`take_batch`]; then, when `linger` applies to what it took, sleep `linger.delay` on this
/// (the writer's own) thread and take what arrived meanwhile, up to `batch_max`.
pub(crate) fn take_batch_lingering(
    first: Cmd,
    rx: &mut mpsc::Receiver<Cmd>,
    batch: &mut Vec<Pending>,
    flushes: &mut Vec<Done>,
    batch_max: usize,
    linger: Linger,
) -> Option<Done> {
    let close = take_batch(first, rx, batch, flushes, batch_max);
    if close.is_some() || !linger.applies(batch.len(), batch_max, flushes.len()) {
        return close;
    }
    std::thread::sleep(linger.delay);
    match rx.try_recv() {
        Ok(cmd) => take_batch(cmd, rx, batch, flushes, batch_max),
        Err(_) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(i: usize) -> (Cmd, oneshot::Receiver<Result<Appended, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let p = Pending {
            time: format!("2026-12-07T00:00:{:02}Z", i % 60),
            audit_id: format!("a{i}"),
            json: "{}".into(),
            subjects: Vec::new(),
            tenant: None,
            outcome: crate::audit::Outcome::Signed,
            reply,
        };
        (Cmd::Append(p), rx)
    }

    /// Queue `now` appends, start a thread that queues `later` more after 20 ms, and take a
    /// batch with `linger` (the receivers are kept so the replies stay open).
    fn take(
        now: usize,
        later: usize,
        flush: bool,
        batch_max: usize,
        linger: Linger,
    ) -> (usize, usize, bool) {
        let (tx, mut rx) = mpsc::channel(64);
        let mut keep = Vec::new();
        for i in 0..now {
            let (c, r) = pending(i);
            keep.push(r);
            tx.try_send(c).unwrap();
        }
        if flush {
            let (done, _r) = oneshot::channel();
            tx.try_send(Cmd::Flush(done)).unwrap();
        }
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let mut keep = Vec::new();
            for i in 0..later {
                let (c, r) = pending(100 + i);
                keep.push(r);
                let _ = tx.blocking_send(c);
            }
            keep
        });
        let first = rx.try_recv().unwrap();
        let (mut batch, mut flushes) = (Vec::new(), Vec::new());
        let close =
            take_batch_lingering(first, &mut rx, &mut batch, &mut flushes, batch_max, linger);
        let _late = pusher.join().unwrap();
        (batch.len(), flushes.len(), close.is_some())
    }

    const WAIT: Linger = Linger {
        delay: Duration::from_millis(1500),
        siblings: 2,
    };

    #[test]
    fn a_batch_with_siblings_waits_and_takes_what_arrives() {
        assert_eq!(take(2, 3, false, 1024, WAIT), (5, 0, false));
        // More than one `batch_max` arrives: the batch stops at it.
        assert_eq!(take(2, 10, false, 8, WAIT), (8, 0, false));
    }

    #[test]
    fn nothing_waits_that_should_not() {
        // A lone record (fewer than `siblings`).
        assert_eq!(take(1, 3, false, 1024, WAIT), (1, 0, false));
        let three = Linger {
            siblings: 3,
            ..WAIT
        };
        assert_eq!(take(2, 3, false, 1024, three), (2, 0, false));
        // `siblings` 0 or 1 still needs two records: one record alone never waits.
        let one = Linger {
            siblings: 1,
            ..WAIT
        };
        assert_eq!(take(1, 3, false, 1024, one), (1, 0, false));
        // A caller flushing.
        assert_eq!(take(2, 3, true, 1024, WAIT), (2, 1, false));
        // A full batch.
        assert_eq!(take(4, 3, false, 4, WAIT), (4, 0, false));
        // No delay, and `Linger::NEVER` (the default is 300 µs: `sqlite::DEFAULT_LINGER`).
        let zero = Linger {
            delay: Duration::ZERO,
            ..WAIT
        };
        assert_eq!(take(3, 3, false, 1024, zero), (3, 0, false));
        assert_eq!(take(3, 3, false, 1024, Linger::NEVER), (3, 0, false));
    }

    #[test]
    fn a_close_during_the_wait_is_returned() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut keep = Vec::new();
        for i in 0..2 {
            let (c, r) = pending(i);
            keep.push(r);
            tx.try_send(c).unwrap();
        }
        let (done, _r) = oneshot::channel();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.blocking_send(Cmd::Close(done)).map_err(|_| ()).unwrap();
        });
        let first = rx.try_recv().unwrap();
        let (mut batch, mut flushes) = (Vec::new(), Vec::new());
        let close = take_batch_lingering(first, &mut rx, &mut batch, &mut flushes, 1024, WAIT);
        closer.join().unwrap();
        assert!(close.is_some());
        assert_eq!(batch.len(), 2);
    }
}
