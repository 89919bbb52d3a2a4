//! In-process backends of the quota store and the replay cache (the embedded default: one
//! replica). Both are sharded maps behind short-held `std` mutexes; nothing awaits while a lock
//! is held.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::quota::{Lease, QuotaStore, RateDecision, RateLimit};
use crate::replay::{ReplayCache, ReplayKey};
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

/// One shard of the replay cache: the live keys, and the same keys ordered by expiry so
/// expired ones leave from the front without scanning the live ones.
#[derive(Default)]
struct ReplayShard {
    /// key -> (expires_at, partition)
    live: HashMap<String, (i64, Arc<str>)>,
    by_expiry: BinaryHeap<Reverse<(i64, String)>>,
}

/// In-memory replay cache with a bound on the number of live entries, overall and per
/// partition (tenant).
///
/// Past either bound an insert fails (`StoreError::Full`; the service refuses the proof: fail
/// closed) rather than forgetting a live `jti`. Expired entries leave in expiry order from a
/// heap per shard — each entry is pushed and popped once, so no request ever scans the live
/// entries under a lock, full or not. A key that is still live is reported as a replay even
/// when the cache is full.
pub struct MemoryReplayCache {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<ReplayShard>>,
    max_entries: usize,
    per_partition_max: usize,
    /// Live entries overall (kept under the shard locks, read without them).
    total: std::sync::atomic::AtomicUsize,
    /// Live entries per partition (only partitions with live entries are present).
    partitions: Mutex<HashMap<Arc<str>, usize>>,
}

impl MemoryReplayCache {
    /// A cache holding at most `max_entries` unexpired keys, with no per-partition share.
    pub fn new(max_entries: usize) -> Self {
        Self::with_partition_limit(max_entries, max_entries)
    }

    /// A cache holding at most `max_entries` unexpired keys overall and `per_partition` per
    /// partition (tenant).
    pub fn with_partition_limit(max_entries: usize, per_partition: usize) -> Self {
        MemoryReplayCache {
            hasher: Default::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(ReplayShard::default()))
                .collect(),
            max_entries: max_entries.max(1),
            per_partition_max: per_partition.clamp(1, max_entries.max(1)),
            total: std::sync::atomic::AtomicUsize::new(0),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// Live (unexpired or not yet evicted) entries.
    pub fn len(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop the expired entries at the front of `shard`'s expiry order.
    fn evict_expired(&self, shard: &mut ReplayShard, now: i64) {
        while let Some(Reverse((exp, _))) = shard.by_expiry.peek() {
            if *exp > now {
                break;
            }
            let Some(Reverse((exp, key))) = shard.by_expiry.pop() else {
                break;
            };
            // The heap may hold a stale (exp, key) of a key re-inserted later: only the
            // entry with this very expiry leaves.
            if shard.live.get(&key).is_some_and(|(e, _)| *e == exp) {
                if let Some((_, partition)) = shard.live.remove(&key) {
                    self.release(&partition);
                }
            }
        }
    }

    fn release(&self, partition: &Arc<str>) {
        self.total.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut p = lock(&self.partitions);
        if let Some(n) = p.get_mut(partition) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.remove(partition);
            }
        }
    }

    /// [`ReplayCache::check_and_insert_in`] with an explicit clock (`now`, Unix seconds):
    /// for benchmarks and tests that simulate time.
    pub fn check_and_insert_at(
        &self,
        key: ReplayKey<'_>,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let partition = key.partition;
        let stored = key.stored();
        let key = stored.as_str();
        let idx = shard_of(&self.hasher, key);
        for attempt in 0..2 {
            let mut shard = lock(&self.shards[idx]);
            self.evict_expired(&mut shard, now);
            if let Some((exp, _)) = shard.live.get(key) {
                if *exp > now {
                    return Ok(false);
                }
            }
            if self.len() >= self.max_entries {
                if attempt == 0 {
                    // Other shards may hold expired entries: drop them (front of each
                    // expiry order only), then try once more.
                    drop(shard);
                    self.evict_all_expired(now);
                    continue;
                }
                return Err(StoreError::Full("DPoP replay cache".into()));
            }
            let part: Arc<str> = {
                let mut p = lock(&self.partitions);
                let (part, n) = match p.get_key_value(partition) {
                    Some((k, n)) => (k.clone(), *n),
                    None => (Arc::from(partition), 0),
                };
                if n >= self.per_partition_max {
                    if attempt == 0 {
                        // The partition's expired entries may sit in other shards.
                        drop(p);
                        drop(shard);
                        self.evict_all_expired(now);
                        continue;
                    }
                    return Err(StoreError::Full(format!(
                        "DPoP replay cache share of {partition:?}"
                    )));
                }
                p.insert(part.clone(), n + 1);
                part
            };
            self.total.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            shard.live.insert(key.to_string(), (expires_at, part));
            shard.by_expiry.push(Reverse((expires_at, key.to_string())));
            return Ok(true);
        }
        Err(StoreError::Full("DPoP replay cache".into()))
    }

    fn evict_all_expired(&self, now: i64) {
        for s in &self.shards {
            let mut shard = lock(s);
            self.evict_expired(&mut shard, now);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ReplayCache for MemoryReplayCache {
    /// The key in the empty partition.
    fn check_and_insert(&self, key: &str, expires_at: i64) -> StoreFuture<'_, bool> {
        self.check_and_insert_in(ReplayKey::new("", key), expires_at)
    }

    fn check_and_insert_in(&self, key: ReplayKey<'_>, expires_at: i64) -> StoreFuture<'_, bool> {
        let r = self.check_and_insert_at(key, expires_at, unix_now());
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

    /// Issue #8: the old version of this test never filled the cache, so the fail-closed
    /// path was untested. This one fills it — overall and per partition — and checks that a
    /// full cache refuses new keys, still reports replays, and frees expired entries in
    /// expiry order without forgetting live ones.
    #[test]
    fn replay_cache_expires_and_bounds() {
        let c = MemoryReplayCache::new(256);
        assert!(c
            .check_and_insert_at(ReplayKey::new("", "a"), 100, 50)
            .unwrap());
        assert!(!c
            .check_and_insert_at(ReplayKey::new("", "a"), 100, 60)
            .unwrap());
        // Expired entries may be reused.
        assert!(c
            .check_and_insert_at(ReplayKey::new("", "a"), 200, 150)
            .unwrap());
        assert_eq!(c.len(), 1);

        // Fill it exactly: every one of 256 keys fits, the 257th is refused (fail closed).
        let c = MemoryReplayCache::new(256);
        for i in 0..256 {
            assert!(
                c.check_and_insert_at(ReplayKey::new("t", &format!("k{i}")), 1000 + i, 0)
                    .unwrap(),
                "k{i}"
            );
        }
        assert_eq!(c.len(), 256);
        assert!(matches!(
            c.check_and_insert_at(ReplayKey::new("t", "new"), 5000, 0),
            Err(StoreError::Full(_))
        ));
        assert!(matches!(
            c.check_and_insert_at(ReplayKey::new("other", "new"), 5000, 0),
            Err(StoreError::Full(_))
        ));
        // A live key is still a replay when the cache is full.
        assert!(!c
            .check_and_insert_at(ReplayKey::new("t", "k7"), 5000, 10)
            .unwrap());
        // At t=1009 the ten earliest (k0..k9) have expired: exactly ten new keys fit.
        for i in 0..10 {
            assert!(
                c.check_and_insert_at(ReplayKey::new("t", &format!("n{i}")), 9000, 1009)
                    .unwrap(),
                "n{i}"
            );
        }
        assert!(matches!(
            c.check_and_insert_at(ReplayKey::new("t", "n10"), 9000, 1009),
            Err(StoreError::Full(_))
        ));
        // The ones not yet expired are still remembered.
        assert!(!c
            .check_and_insert_at(ReplayKey::new("t", "k10"), 9000, 1009)
            .unwrap());
        assert!(!c
            .check_and_insert_at(ReplayKey::new("t", "k255"), 9000, 1009)
            .unwrap());
        assert_eq!(c.len(), 256);
        // Everything expired: a whole cache of new keys fits again.
        for i in 0..256 {
            assert!(c
                .check_and_insert_at(ReplayKey::new("t", &format!("late{i}")), 20_000, 10_000)
                .unwrap());
        }
        assert_eq!(c.len(), 256);
    }

    /// Insert `share` live keys into `partition` (all accepted), then check the next one is
    /// refused as the partition's share being full.
    fn fill_partition(c: &MemoryReplayCache, partition: &str, share: usize) {
        for i in 0..share {
            assert!(c
                .check_and_insert_at(ReplayKey::new(partition, &format!("k{i}")), 1000, 0)
                .unwrap());
        }
        assert!(matches!(
            c.check_and_insert_at(ReplayKey::new(partition, &format!("k{share}")), 1000, 0),
            Err(StoreError::Full(m)) if m.contains(partition)
        ));
    }

    #[test]
    fn one_partition_cannot_fill_the_replay_cache_for_all() {
        let c = MemoryReplayCache::with_partition_limit(100, 30);
        // The noisy tenant is refused once it holds its share; the others still have room.
        fill_partition(&c, "noisy", 30);
        for t in ["a", "b"] {
            for i in 0..30 {
                assert!(
                    c.check_and_insert_at(ReplayKey::new(t, &format!("{t}{i}")), 1000, 0)
                        .unwrap(),
                    "{t}{i}"
                );
            }
        }
        // 90 live; a fourth tenant gets the last 10, then the overall bound holds.
        for i in 0..10 {
            assert!(c
                .check_and_insert_at(ReplayKey::new("c", &format!("c{i}")), 1000, 0)
                .unwrap());
        }
        assert!(matches!(
            c.check_and_insert_at(ReplayKey::new("d", "d0"), 1000, 0),
            Err(StoreError::Full(_))
        ));
        // Once the noisy tenant's entries expire, its share is back.
        assert!(c
            .check_and_insert_at(ReplayKey::new("noisy", "again"), 3000, 1000)
            .unwrap());
    }

    #[test]
    fn a_partition_gets_its_share_back_when_its_entries_expire() {
        // Overall far from full: only the partition's own bound is in play, and its expired
        // entries sit in other shards than the new key's.
        let c = MemoryReplayCache::with_partition_limit(10_000, 20);
        fill_partition(&c, "t", 20);
        for i in 0..20 {
            assert!(
                c.check_and_insert_at(ReplayKey::new("t", &format!("n{i}")), 5000, 2000)
                    .unwrap(),
                "n{i}"
            );
        }
        assert_eq!(c.len(), 20);
    }

    #[tokio::test]
    async fn partitions_keep_keys_apart() {
        let c = MemoryReplayCache::new(100);
        let far = unix_now() + 3600;
        assert!(c
            .check_and_insert_in(ReplayKey::new("a", "jkt:jti"), far)
            .await
            .unwrap());
        assert!(c
            .check_and_insert_in(ReplayKey::new("b", "jkt:jti"), far)
            .await
            .unwrap());
        assert!(!c
            .check_and_insert_in(ReplayKey::new("a", "jkt:jti"), far)
            .await
            .unwrap());
        // A partition name cannot be chosen to collide with another's key.
        assert!(c
            .check_and_insert_in(ReplayKey::new("a:jkt", "jti"), far)
            .await
            .unwrap());
    }
}
