//! Progress reporting for transfers. The CLI draws bars on a terminal; tests count events.

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

/// A transfer event.
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
}

/// Receives transfer events (from several tasks at once).
pub trait Progress: Send + Sync {
    fn event(&self, event: &Event<'_>);
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
