//! In-process backends of the quota store and the replay cache (the embedded default: one
//! replica). Both are sharded maps behind short-held `std` mutexes; nothing awaits while a lock
//! is held.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::quota::{Lease, QuotaStore, RateDecision, RateLimit};
use crate::replay::ReplayCache;
use crate::{StoreError, StoreFuture};

const SHARDS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard_of(state: &std::collections::hash_map::RandomState, key: &str) -> usize {
    (state.hash_one(key) as usize) % SHARDS
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// In-memory quota store.
pub struct MemoryQuotaStore {
    hasher: std::collections::hash_map::RandomState,
    buckets: Vec<Mutex<HashMap<String, Bucket>>>,
    active: Arc<Vec<Mutex<HashMap<String, u32>>>>,
}

impl Default for MemoryQuotaStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQuotaStore {
    pub fn new() -> Self {
        MemoryQuotaStore {
            hasher: Default::default(),
            buckets: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            active: Arc::new((0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect()),
        }
    }

    fn take_rate_now(&self, key: &str, limit: RateLimit, now: Instant) -> RateDecision {
        let burst = limit.burst.max(1.0);
        let rate = limit.per_second;
        let mut shard = lock(&self.buckets[shard_of(&self.hasher, key)]);
        let b = shard.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            RateDecision::Allowed {
                remaining: b.tokens.floor() as u64,
            }
        } else {
            let wait = if rate > 0.0 {
                (1.0 - b.tokens) / rate
            } else {
                3600.0
            };
            RateDecision::Throttled {
                retry_after: Duration::from_secs_f64(wait.clamp(0.001, 86_400.0)),
            }
        }
    }
}

impl QuotaStore for MemoryQuotaStore {
    fn take_rate(&self, key: &str, limit: RateLimit) -> StoreFuture<'_, RateDecision> {
        let d = self.take_rate_now(key, limit, Instant::now());
        Box::pin(async move { Ok(d) })
    }

    fn acquire_concurrency(&self, key: &str, max: u32) -> StoreFuture<'_, Option<Lease>> {
        let idx = shard_of(&self.hasher, key);
        let granted = {
            let mut shard = lock(&self.active[idx]);
            let n = shard.entry(key.to_string()).or_insert(0);
            if *n < max {
                *n += 1;
                true
            } else {
                false
            }
        };
        let lease = granted.then(|| {
            let active = self.active.clone();
            let key = key.to_string();
            Lease::new(move || {
                let mut shard = lock(&active[idx]);
                if let Some(n) = shard.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        shard.remove(&key);
                    }
                }
            })
        });
        Box::pin(async move { Ok(lease) })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// In-memory replay cache with a bound on the number of live entries.
pub struct MemoryReplayCache {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<String, i64>>>,
    per_shard_max: usize,
}

impl MemoryReplayCache {
    /// A cache holding at most about `max_entries` unexpired keys; past that, inserts fail
    /// (and the service refuses the proof) rather than forgetting a live `jti`.
    pub fn new(max_entries: usize) -> Self {
        MemoryReplayCache {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard_max: (max_entries / SHARDS).max(16),
        }
    }

    fn insert_at(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let mut shard = lock(&self.shards[shard_of(&self.hasher, key)]);
        if let Some(exp) = shard.get(key) {
            if *exp > now {
                return Ok(false);
            }
        }
        if shard.len() >= self.per_shard_max {
            shard.retain(|_, exp| *exp > now);
            if shard.len() >= self.per_shard_max {
                return Err(StoreError::Full("DPoP replay cache".into()));
            }
        }
        shard.insert(key.to_string(), expires_at);
        Ok(true)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ReplayCache for MemoryReplayCache {
    fn check_and_insert(&self, key: &str, expires_at: i64) -> StoreFuture<'_, bool> {
        let r = self.insert_at(key, expires_at, unix_now());
        Box::pin(async move { r })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate() {
        let q = MemoryQuotaStore::new();
        let lim = RateLimit {
            per_second: 10.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        assert!(matches!(
            q.take_rate_now("k", lim, t0),
            RateDecision::Allowed { remaining: 1 }
        ));
        assert!(matches!(
            q.take_rate_now("k", lim, t0),
            RateDecision::Allowed { remaining: 0 }
        ));
        match q.take_rate_now("k", lim, t0) {
            RateDecision::Throttled { retry_after } => {
                assert!(retry_after <= Duration::from_millis(100));
                assert!(retry_after >= Duration::from_millis(99));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            q.take_rate_now("k", lim, t0 + Duration::from_millis(100)),
            RateDecision::Allowed { .. }
        ));
        // Other keys have their own bucket.
        assert!(matches!(
            q.take_rate_now("other", lim, t0),
            RateDecision::Allowed { .. }
        ));
    }

    #[test]
    fn replay_cache_expires_and_bounds() {
        let c = MemoryReplayCache::new(16 * 16);
        assert!(c.insert_at("a", 100, 50).unwrap());
        assert!(!c.insert_at("a", 100, 60).unwrap());
        // Expired entries may be reused.
        assert!(c.insert_at("a", 200, 150).unwrap());
    }
}
