//! One error type for the crate, with a [`ErrorKind`] that callers map to exit codes or HTTP
//! statuses without matching on message text.

use std::path::PathBuf;

/// What kind of failure an [`Error`] is, for exit codes (CLI) and status codes (service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller must fix an argument or input (bad reference, refused plain HTTP, ...).
    Input,
    /// Credentials missing, wrong or insufficient.
    Auth,
    /// The image, tag, blob or file does not exist.
    NotFound,
    /// The registry could not be reached or kept failing: a rerun may succeed.
    Unavailable,
    /// Bytes did not match their digest (registry or layout), or a layout is corrupt.
    Integrity,
    /// The registry answered something we cannot use.
    Protocol,
    /// Local file-system trouble.
    Io,
}

/// Why a registry or layout operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid image reference {reference:?}: {why}")]
    Reference { reference: String, why: String },
    #[error("{0}")]
    Input(String),
    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error(transparent)]
    Digest(#[from] stella_digest::DigestError),
    #[error("registry {registry}: authentication failed ({detail})")]
    Auth { registry: String, detail: String },
    #[error("registry {registry}: {what} not found")]
    NotFound { registry: String, what: String },
    /// Commands that upload add their own "rerun to resume" hint (a read says nothing of
    /// uploads).
    #[error("registry {registry} is unreachable after {attempts} attempt(s) ({detail})")]
    Unreachable {
        registry: String,
        attempts: u32,
        detail: String,
    },
    #[error("registry {registry} answered {status} to {method} {path}: {detail}")]
    Status {
        registry: String,
        status: u16,
        method: String,
        path: String,
        detail: String,
    },
    #[error(
        "digest mismatch: {what} should be {expected} ({expected_size} bytes) but {source_name} \
         gave {got} ({got_size} bytes)"
    )]
    DigestMismatch {
        what: String,
        source_name: String,
        expected: String,
        expected_size: u64,
        got: String,
        got_size: u64,
    },
    #[error("{0}")]
    Integrity(String),
    #[error("registry {registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Reference { .. } | Error::Input(_) | Error::Digest(_) => ErrorKind::Input,
            Error::Sign(_) => ErrorKind::Input,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unreachable { .. } => ErrorKind::Unavailable,
            Error::Status { status, .. } if *status >= 500 || *status == 429 => {
                ErrorKind::Unavailable
            }
            Error::Status { .. } | Error::Protocol { .. } => ErrorKind::Protocol,
            Error::DigestMismatch { .. } | Error::Integrity(_) => ErrorKind::Integrity,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn protocol(registry: &str, detail: impl Into<String>) -> Self {
        Error::Protocol {
            registry: registry.to_string(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.at(path)` on I/O results.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
