//! The error type of every bundle operation.
//!
//! One enum for the crate, classified by [`ErrorKind`] so the CLI can map it to the exit codes
//! of SPEC §1: a bundle that fails a check is `Verification` (exit 1), a bad spec or argument
//! `Input` (exit 2), a missing input `NotFound` (exit 4). Messages carry the path or key they
//! are about, and say what to do when there is something to do.

use std::path::{Path, PathBuf};

/// How an error should be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bundle (or archive) failed a verification rule.
    Verification,
    /// The input (spec, arguments, folder state) is not usable.
    Input,
    /// An input file or folder does not exist.
    NotFound,
    /// Reading or writing failed.
    Io,
    /// A key could not be loaded or used.
    Key,
    /// A registry failed or refused (pull in `create`, push in `load`); the wrapped
    /// `stella_oci::Error` has its own kind (unavailable, auth, not found, ...).
    Registry,
    /// A time stamp authority over HTTP failed or refused (`mirror sign/anchor --tsa-url`);
    /// the wrapped `stella_keyless::UpstreamError` says how (unavailable, refused, untrusted).
    Timestamp,
}

/// The stage of bundle verification a failed rule belongs to, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The metadata files themselves: present, regular files, within the size limits.
    Metadata,
    /// `manifest.dsse`: a DSSE envelope of the mirror payload type, signed by enough keys.
    Envelope,
    /// The signed manifest and `manifest.json`: well-formed, canonical, identical.
    Manifest,
    /// The detached header agrees with the envelope and the manifest.
    Header,
    /// `SHA256SUMS`, `SHA256SUMS.dsse`, `SHA256SUMS.sig` match what the manifest signs.
    Checksums,
    /// `public-key.pem` holds only keys that signed.
    PublicKey,
    /// `time-anchor.json`: the RFC 3161 token over the manifest.
    Anchor,
    /// `generatedAt` against the clock (or the trusted anchor) and the validity budget.
    Freshness,
    /// The content files: listed, present, sizes and digests as signed, nothing else.
    Content,
    /// The archive stream: entry types, order, sizes, limits.
    Archive,
}

/// A verification rule that failed: its stage and the message users see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct VerifyFailure {
    pub stage: Stage,
    pub detail: String,
}

/// Why a bundle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A verification rule failed (the stage says which kind).
    #[error(transparent)]
    Verify(VerifyFailure),
    /// The signature check itself failed (untrusted key, wrong purpose, revoked, expired, ...).
    #[error("manifest signature: {0}")]
    Signature(#[from] stella_keys::VerifyError),
    /// A spec, argument or folder the user must fix.
    #[error("{0}")]
    Input(String),
    #[error("{}: no such file or folder", .0.display())]
    NotFound(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] stella_keys::KeyError),
    #[error(transparent)]
    Sign(#[from] stella_keys::SignError),
    /// A registry operation failed (see [`stella_oci::Error::kind`]).
    #[error(transparent)]
    Registry(#[from] stella_oci::Error),
    /// A time stamp authority over HTTP failed (see [`crate::tsa`]).
    #[error(transparent)]
    Timestamp(#[from] stella_keyless::UpstreamError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Verify(_) | Error::Signature(_) => ErrorKind::Verification,
            Error::Input(_) => ErrorKind::Input,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Key(_) | Error::Sign(_) => ErrorKind::Key,
            Error::Registry(_) => ErrorKind::Registry,
            Error::Timestamp(_) => ErrorKind::Timestamp,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path)
        } else {
            Error::Io { path, source }
        }
    }

    /// The content check's one refusal: `n` problems, the first (at most ten) named.
    pub(crate) fn content_mismatch(n: usize, first: &[String]) -> Self {
        let more = if n > 10 {
            format!("; and {} more", n - 10)
        } else {
            String::new()
        };
        Error::verify(
            Stage::Content,
            format!(
                "bundle content does not match the signed manifest ({n} problem{}): {}{more}",
                if n == 1 { "" } else { "s" },
                first[..first.len().min(10)].join("; ")
            ),
        )
    }

    pub(crate) fn verify(stage: Stage, msg: impl std::fmt::Display) -> Self {
        Error::Verify(VerifyFailure {
            stage,
            detail: msg.to_string(),
        })
    }

    /// The verification stage that failed, if this is a verification failure.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::Verify(f) => Some(f.stage),
            Error::Signature(_) => Some(Stage::Envelope),
            _ => None,
        }
    }

    pub(crate) fn input(msg: impl std::fmt::Display) -> Self {
        Error::Input(msg.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
