//! A cache shared by replicas: opaque values under string keys, each with its own lifetime.
//! The Signer keeps its Proof-of-Entitlement answers and release verdicts here (besides its
//! in-process cache) when `[quotas] backend = "redis"`, so one replica's answer serves the
//! others, and the DPoP nonce keys of each rotation epoch ([`SharedCache::get_or_put`]).
//!
//! Every call is bounded by the backend's timeout. A cache never decides anything on its own:
//! a failed read is treated by callers as a miss answered by the source of truth (Licensing,
//! the registry), and a secret that cannot be read is a refusal.

use std::time::Duration;

use crate::StoreFuture;

/// Values with a time to live, shared by every replica.
pub trait SharedCache: Send + Sync {
    /// The value under `key`, if present and not expired.
    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Store `value` under `key` for `ttl` (replacing any value).
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()>;

    /// The value under `key`; if there is none, `value` is stored for `ttl` first (atomic: of
    /// replicas racing, one value wins and every one reads it).
    fn get_or_put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, Vec<u8>>;

    /// Short backend name for logs (`redis`).
    fn backend(&self) -> &'static str;
}
