//! The DPoP replay cache: every proof's `jti` is single-use within the window in which the
//! proof's `iat` is acceptable. The embedded backend is in process memory
//! ([`crate::MemoryReplayCache`]); replicas behind one load balancer share a Redis backend
//! (`SET key 1 NX EXAT expiry`, a later issue) so a proof replayed to another replica is
//! still caught.

use crate::StoreFuture;

/// Remembers keys until they expire.
pub trait ReplayCache: Send + Sync {
    /// Record `key` as used until `expires_at` (Unix seconds). `Ok(true)` the first time,
    /// `Ok(false)` if it is already recorded and not yet expired (a replay). Errors (the cache
    /// is full or unreachable) must be treated as a refusal.
    fn check_and_insert(&self, key: &str, expires_at: i64) -> StoreFuture<'_, bool>;

    /// [`check_and_insert`](Self::check_and_insert) within the key's partition (the tenant):
    /// a backend with per-partition limits refuses (`StoreError::Full`) once one partition
    /// holds its share, so one tenant's callers cannot fill the cache for every tenant. The
    /// default ignores the partition for limits but keeps keys of different partitions
    /// apart ([`ReplayKey::stored`]).
    fn check_and_insert_in(&self, key: ReplayKey<'_>, expires_at: i64) -> StoreFuture<'_, bool> {
        let r = self.check_and_insert(&key.stored(), expires_at);
        Box::pin(r)
    }

    /// Short backend name for logs (`memory`, `redis`).
    fn backend(&self) -> &'static str;
}

/// A key of the replay cache within its partition (the tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayKey<'a> {
    pub partition: &'a str,
    pub key: &'a str,
}

impl<'a> ReplayKey<'a> {
    pub fn new(partition: &'a str, key: &'a str) -> Self {
        ReplayKey { partition, key }
    }

    /// The key as one string: length-prefixed by the partition, so keys of different
    /// partitions never collide.
    pub fn stored(&self) -> String {
        format!("{}:{}:{}", self.partition.len(), self.partition, self.key)
    }
}
