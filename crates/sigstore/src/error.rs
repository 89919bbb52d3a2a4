//! Errors, split the way the CLI reports them: a bundle or trusted root that cannot be read is
//! an *input* error (exit 2); a bundle that reads but fails a check is a *verification*
//! failure (exit 1), and [`VerifyError`] says which check.

/// A bundle that is not a well-formed Sigstore bundle of a supported version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the bundle is {size} bytes, above the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("the bundle is not JSON: {0}")]
    Json(String),
    #[error("unsupported bundle mediaType {0:?} (supported: v0.1, v0.2, v0.3)")]
    MediaType(String),
    #[error("malformed bundle: `{field}`: {reason}")]
    Field { field: String, reason: String },
}

impl BundleError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        BundleError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A trusted root (`dev.sigstore.trustedroot` JSON) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRootError {
    #[error("the trusted root is not JSON: {0}")]
    Json(String),
    #[error("unsupported trusted root mediaType {0:?}")]
    MediaType(String),
    #[error("malformed trusted root: `{field}`: {reason}")]
    Field { field: String, reason: String },
}

impl TrustRootError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrustRootError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The check a bundle failed. Every variant belongs to one [`crate::Check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    // -- the artifact
    #[error("the artifact's {algorithm} digest {actual} differs from the bundle's {expected}")]
    DigestMismatch {
        algorithm: String,
        expected: String,
        actual: String,
    },
    #[error("no subject of the signed statement has the digest {digest}")]
    SubjectNotFound { digest: String },
    #[error("the DSSE payload is not an in-toto statement: {0}")]
    Statement(String),
    #[error("the signature does not verify with {key}")]
    Signature { key: String },
    #[error("the verification key cannot be used: {0}")]
    Key(String),
    #[error("the bundle's verification material does not fit the policy: {0}")]
    Material(String),

    // -- the certificate
    #[error("the bundle's certificate chain includes a root certificate ({subject}); roots come only from the trusted root")]
    ChainIncludesRoot { subject: String },
    #[error("the certificate does not chain to a Fulcio CA of the trusted root: {0}")]
    UntrustedCertificate(String),
    #[error("the signing certificate is valid from {not_before} to {not_after}, not at {time} (the verified signing time)")]
    CertificateNotValidAt {
        time: String,
        not_before: String,
        not_after: String,
    },
    #[error("the certificate profile is not Fulcio code signing: {0}")]
    KeyUsage(String),
    #[error("certificate transparency: {0}")]
    Sct(String),
    #[error("the certificate identity {found:?} does not match {expected}")]
    Identity {
        expected: String,
        found: Vec<String>,
    },
    #[error("the OIDC issuer {found:?} does not match {expected}")]
    Issuer {
        expected: String,
        found: Option<String>,
    },
    #[error("the certificate extension {oid} is {found:?}, expected {expected}")]
    Extension {
        oid: String,
        expected: String,
        found: Option<String>,
    },

    // -- transparency log
    #[error("the bundle has no transparency log entry; at least {need} is required")]
    NoTlogEntry { need: usize },
    #[error("transparency log entry {index}: unknown log id {log_id} (not in the trusted root)")]
    UnknownLog { index: usize, log_id: String },
    #[error("transparency log entry {index}: the log key {log_id} is not valid at the integrated time {time}")]
    LogKeyNotValid {
        index: usize,
        log_id: String,
        time: String,
    },
    #[error("transparency log entry {index}: the log key {log_id} is not valid at the timestamp time {time} (a Rekor v2 entry has no integrated time)")]
    LogKeyNotValidAtTimestamp {
        index: usize,
        log_id: String,
        time: String,
    },
    #[error(
        "transparency log entry {index}: the signed entry timestamp does not verify: {reason}"
    )]
    Set { index: usize, reason: String },
    #[error("transparency log entry {index}: inclusion proof: {reason}")]
    InclusionProof { index: usize, reason: String },
    #[error("transparency log entry {index}: checkpoint: {reason}")]
    Checkpoint { index: usize, reason: String },
    #[error("transparency log entry {index}: the entry body does not match the bundle: {reason}")]
    Body { index: usize, reason: String },
    #[error("transparency log entry {index}: {reason}")]
    UnsupportedEntry { index: usize, reason: String },
    #[error(
        "the bundle carries {count} transparency log entries, more than the {max} a verifier reads"
    )]
    TooManyTlogEntries { count: usize, max: usize },
    #[error("transparency log entries {first} and {index} are the same entry (log {log_id}, index {log_index})")]
    DuplicateTlogEntry {
        first: usize,
        index: usize,
        log_id: String,
        log_index: u64,
    },
    #[error("the bundle's entries come from {have} transparency log(s), {need} required (entries of one log count once)")]
    TooFewLogs { have: usize, need: usize },

    // -- timestamps
    #[error("timestamp {index}: {reason}")]
    Timestamp { index: usize, reason: String },
    #[error("the bundle carries {count} timestamps, more than the {max} a verifier reads")]
    TooManyTimestamps { count: usize, max: usize },
    #[error("timestamp {index}: no timestamp authority of the trusted root issued it, valid at {time}: {reason}")]
    TimestampAuthority {
        index: usize,
        time: String,
        reason: String,
    },
    #[error("{have} verified signing time(s), {need} required (a timestamp or a transparency log entry with a signed entry timestamp; one per timestamp authority and per log)")]
    NoVerifiedTime { have: usize, need: usize },
}
