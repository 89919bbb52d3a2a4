//! Storage seams of the Signer service: the audit log, the quota store and the DPoP replay
//! cache, each a trait with an embedded backend here and room for the scale-out ones
//! (PostgreSQL audit, Redis quotas and replay cache) in a later issue.
//!
//! Every trait method that may touch the network in a scale-out backend returns a boxed
//! future ([`StoreFuture`]) so the traits stay object-safe (`Arc<dyn AuditLog>`) and an
//! async backend slots in without reshaping callers; the embedded backends answer from memory
//! or from their own writer thread. Audit records are hash-chained by the backend as they are
//! written ([`chain`]); verification of a chain is backend-independent and works on any
//! ordered stream of stored records ([`chain::verify`]).
//!
//! Public surface (docs/architecture.md "Public surface"): the modules are private and this
//! file re-exports what other crates use; [`chain`] (verification, walking) and
//! [`checkpoint`] (signed checkpoints) stay public namespaces, reached by path.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod audit;
mod cache;
pub mod chain;
pub mod checkpoint;
mod group;
mod memory;
mod postgres;
mod quota;
mod redis;
mod replay;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use audit::{
    normalize_time, Appended, AuditLog, AuditPage, AuditQuery, AuditReader, AuditRecord, Caller,
    Outcome, PoeState, StoredRecord, MAX_QUERY_LIMIT,
};
pub use cache::SharedCache;
pub use chain::{ChainError, ChainReport};
pub use group::Linger;
pub use memory::{MemoryQuotaStore, MemoryReplayCache};
pub use postgres::{redact, PgAudit, PgOptions, PgReader};
pub use quota::{Admission, Lease, QuotaStore, RateDecision, RateLimit};
pub use redis::{RedisCache, RedisOptions, RedisQuotaStore, RedisReplayCache};
pub use replay::{ReplayCache, ReplayKey};
pub use sqlite::{
    open_raw, SqliteAudit, SqliteOptions, SqliteReader, DEFAULT_LINGER as SQLITE_DEFAULT_LINGER,
};

/// A boxed, sendable future: what every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed. Callers fail closed on every variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the store is closed")]
    Closed,
    #[error("the store is full ({0})")]
    Full(String),
    #[error("cannot encode the record: {0}")]
    Encode(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt stored record at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// The log itself is gone: no audit table in the database (dropped, or not an audit
    /// database). Readers never create it.
    #[error("{0}: the audit table is missing (dropped, or not an audit database)")]
    NoLog(String),
    /// The backend does not offer this operation.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}
