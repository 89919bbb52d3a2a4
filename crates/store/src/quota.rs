//! The quota store: a token bucket per key (requests per second with a burst) and a
//! concurrent-request counter per key. The embedded backend keeps both in process memory
//! ([`crate::MemoryQuotaStore`]); a Redis backend shares them between replicas (a later issue:
//! token buckets as a Lua script over one hash, leases as a sorted set scored by expiry so a
//! crashed replica's leases age out).

use std::fmt;
use std::time::Duration;

use crate::StoreFuture;

/// A token-bucket limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (sustained QPS).
    pub per_second: f64,
    /// Bucket size (largest burst).
    pub burst: f64,
}

/// The answer of [`QuotaStore::take_rate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateDecision {
    /// A token was taken; `remaining` whole tokens are left.
    Allowed { remaining: u64 },
    /// The bucket is empty; one token will be there after `retry_after`.
    Throttled { retry_after: Duration },
}

/// A held concurrency slot; dropping it gives the slot back.
pub struct Lease {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Lease {
    /// A lease that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Lease {
            release: Some(Box::new(release)),
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            r();
        }
    }
}

/// The answer of [`QuotaStore::admit`].
#[derive(Debug)]
pub enum Admission {
    /// A token was taken and a slot is held until `lease` drops.
    Admitted { remaining: u64, lease: Lease },
    /// The bucket is empty (no slot was taken).
    Throttled { retry_after: Duration },
    /// Every concurrency slot is held (the token is spent, as with two separate calls).
    Busy,
}

/// Per-key rate and concurrency limits.
pub trait QuotaStore: Send + Sync {
    /// Take one token from `key`'s bucket.
    fn take_rate(&self, key: &str, limit: RateLimit) -> StoreFuture<'_, RateDecision>;

    /// Take one of `max` concurrency slots of `key`; `None` when all are held.
    fn acquire_concurrency(&self, key: &str, max: u32) -> StoreFuture<'_, Option<Lease>>;

    /// [`take_rate`](Self::take_rate), then (if allowed)
    /// [`acquire_concurrency`](Self::acquire_concurrency) — in one round trip where the
    /// backend can (Redis: one script).
    fn admit(&self, key: &str, limit: RateLimit, max: u32) -> StoreFuture<'_, Admission> {
        let key = key.to_string();
        Box::pin(async move {
            match self.take_rate(&key, limit).await? {
                RateDecision::Throttled { retry_after } => Ok(Admission::Throttled { retry_after }),
                RateDecision::Allowed { remaining } => {
                    Ok(match self.acquire_concurrency(&key, max).await? {
                        Some(lease) => Admission::Admitted { remaining, lease },
                        None => Admission::Busy,
                    })
                }
            }
        })
    }

    /// Short backend name for logs (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Can the store answer right now (for `/readyz`)? Bounded like every call; the in-process
    /// store always can.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
