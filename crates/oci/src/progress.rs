//! Progress reporting: one trait for every long-running step of the workspace. The CLI draws
//! bars on a terminal; tests count events.
//!
//! A reporter receives [`Event`]s through its one method, [`Progress::event`]. Transfers
//! report per blob (`BlobStart`, `Bytes`, `ChunkDone`, `BlobDone`, `ManifestDone`); the mirror
//! stages (hash, verify, pack, apply, ...) report phases of bytes (`PhaseStart`, `Advance`,
//! `PhaseDone`) through the provided methods [`Progress::start`], [`Progress::advance`] and
//! [`Progress::finish`]. Through a `&dyn Progress` each of those is one virtual call: the
//! provided body is compiled per implementation, so the `event` it calls is a direct call.

use crate::digest::Digest;

/// What happened to one blob during a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobAction {
    /// Already in the target repository (HEAD): nothing sent.
    Existed,
    /// Mounted from another repository of the same registry: nothing sent.
    Mounted,
    /// Uploaded in full.
    Uploaded,
    /// An interrupted upload was continued from where the registry had it.
    Resumed,
    /// Dry run: would be uploaded.
    WouldUpload,
    /// Pull: downloaded and verified.
    Downloaded,
    /// Pull: already in the layout.
    Present,
}

/// A progress event: per blob during a transfer, or per phase of a long-running step.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    BlobStart {
        digest: &'a Digest,
        size: u64,
    },
    /// `n` more bytes of `digest` went over the wire.
    Bytes {
        digest: &'a Digest,
        n: u64,
    },
    /// A chunk of a chunked upload was accepted; the registry now has `offset` bytes.
    ChunkDone {
        digest: &'a Digest,
        offset: u64,
        size: u64,
    },
    BlobDone {
        digest: &'a Digest,
        size: u64,
        action: BlobAction,
    },
    ManifestDone {
        digest: &'a Digest,
        reference: &'a str,
    },
    /// A phase of `total` bytes (0 when unknown) begins, e.g. `"verify"` or `"pack"`.
    PhaseStart {
        phase: &'a str,
        total: u64,
    },
    /// `n` more bytes of the current phase are done.
    Advance {
        n: u64,
    },
    /// The current phase is over.
    PhaseDone,
}

/// Receives progress events (from several tasks or threads at once).
///
/// An implementation writes [`event`](Progress::event) only; `start`, `advance` and `finish`
/// are the emitters of the phase events and are not meant to be overridden (an override would
/// see calls that `event` does not).
pub trait Progress: Send + Sync {
    fn event(&self, event: &Event<'_>);

    /// A new phase of `total` bytes (0 when unknown) begins: [`Event::PhaseStart`].
    #[inline]
    fn start(&self, phase: &str, total: u64) {
        self.event(&Event::PhaseStart { phase, total });
    }

    /// `n` more bytes are done: [`Event::Advance`].
    #[inline]
    fn advance(&self, n: u64) {
        self.event(&Event::Advance { n });
    }

    /// The phase is over: [`Event::PhaseDone`].
    #[inline]
    fn finish(&self) {
        self.event(&Event::PhaseDone);
    }
}

/// Ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &Event<'_>) {}
}

impl<F: Fn(&Event<'_>) + Send + Sync> Progress for F {
    fn event(&self, event: &Event<'_>) {
        self(event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records every event as text.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Progress for Log {
        fn event(&self, event: &Event<'_>) {
            let line = match event {
                Event::PhaseStart { phase, total } => format!("start {phase} {total}"),
                Event::Advance { n } => format!("advance {n}"),
                Event::PhaseDone => "done".to_string(),
                Event::Bytes { n, .. } => format!("bytes {n}"),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn phase_methods_emit_phase_events_through_dyn() {
        let log = Log::default();
        let p: &dyn Progress = &log;
        p.start("verify", 10);
        p.advance(4);
        p.advance(6);
        p.event(&Event::Bytes {
            digest: &Digest::of(b""),
            n: 3,
        });
        p.finish();
        assert_eq!(
            *log.0.lock().unwrap(),
            [
                "start verify 10",
                "advance 4",
                "advance 6",
                "bytes 3",
                "done"
            ]
        );
    }

    #[test]
    fn a_closure_is_a_progress_and_sees_phase_events() {
        let total = std::sync::atomic::AtomicU64::new(0);
        let f = |e: &Event<'_>| {
            if let Event::Advance { n } = e {
                total.fetch_add(*n, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let p: &dyn Progress = &f;
        p.start("pack", 0);
        p.advance(7);
        p.advance(0);
        p.finish();
        assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 7);
    }
}
