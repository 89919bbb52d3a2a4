//! In-process backends of the quota store and the replay cache (the embedded default: one
//! replica). Both are sharded maps behind short-held `std` mutexes; nothing awaits while a lock
//! is held.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::quota::{Admission, Lease, QuotaStore, RateDecision, RateLimit};
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

/// Refill `b` for the time since it was last used, then take a token if there is one.
fn take_token(b: &mut Bucket, limit: RateLimit, now: Instant) -> RateDecision {
    let burst = limit.burst.max(1.0);
    let rate = limit.per_second;
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

/// In-memory quota store.
///
/// The maps are keyed by `Arc<str>`: a key already present costs no allocation per call (the
/// bucket is found by `&str`, a lease shares the stored key instead of copying it).
pub struct MemoryQuotaStore {
    hasher: std::collections::hash_map::RandomState,
    buckets: Vec<Mutex<HashMap<Arc<str>, Bucket>>>,
    active: Arc<Vec<Mutex<ActiveShard>>>,
}

/// Requests in flight per key, in one shard.
type ActiveShard = HashMap<Arc<str>, u32>;

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
        let mut shard = lock(&self.buckets[shard_of(&self.hasher, key)]);
        match shard.get_mut(key) {
            Some(b) => take_token(b, limit, now),
            None => {
                let mut b = Bucket {
                    tokens: limit.burst.max(1.0),
                    last: now,
                };
                let d = take_token(&mut b, limit, now);
                shard.insert(Arc::from(key), b);
                d
            }
        }
    }

    /// One of `max` concurrency slots of `key`, or `None` when all are held.
    fn acquire_now(&self, key: &str, max: u32) -> Option<Lease> {
        let idx = shard_of(&self.hasher, key);
        let stored: Arc<str> = {
            let mut shard = lock(&self.active[idx]);
            match shard.get_key_value(key) {
                Some((_, n)) if *n >= max => return None,
                Some((k, _)) => {
                    let k = k.clone();
                    if let Some(n) = shard.get_mut(key) {
                        *n += 1;
                    }
                    k
                }
                None if max == 0 => return None,
                None => {
                    let k: Arc<str> = Arc::from(key);
                    shard.insert(k.clone(), 1);
                    k
                }
            }
        };
        let active = self.active.clone();
        Some(Lease::new(move || {
            let mut shard = lock(&active[idx]);
            if let Some(n) = shard.get_mut(&*stored) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    shard.remove(&*stored);
                }
            }
        }))
    }
}

impl QuotaStore for MemoryQuotaStore {
    fn take_rate(&self, key: &str, limit: RateLimit) -> StoreFuture<'_, RateDecision> {
        let d = self.take_rate_now(key, limit, Instant::now());
        Box::pin(async move { Ok(d) })
    }

    fn acquire_concurrency(&self, key: &str, max: u32) -> StoreFuture<'_, Option<Lease>> {
        let lease = self.acquire_now(key, max);
        Box::pin(async move { Ok(lease) })
    }

    /// [`take_rate`](QuotaStore::take_rate) then [`acquire_concurrency`](QuotaStore::acquire_concurrency),
    /// as the trait's default does, in one future instead of three and without copying the key.
    fn admit(&self, key: &str, limit: RateLimit, max: u32) -> StoreFuture<'_, Admission> {
        let a = match self.take_rate_now(key, limit, Instant::now()) {
            RateDecision::Throttled { retry_after } => Admission::Throttled { retry_after },
            RateDecision::Allowed { remaining } => match self.acquire_now(key, max) {
                Some(lease) => Admission::Admitted { remaining, lease },
                None => Admission::Busy,
            },
        };
        Box::pin(async move { Ok(a) })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// One shard of the replay cache: the live keys, and the same keys ordered by expiry so
/// expired ones leave from the front without scanning the live ones.
#[derive(Default)]
struct ReplayShard {
    /// key -> (expires_at, partition); the key is one allocation shared with `by_expiry`.
    live: HashMap<Arc<str>, (i64, Arc<str>)>,
    by_expiry: BinaryHeap<Reverse<(i64, Arc<str>)>>,
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
            if shard.live.get(&*key).is_some_and(|(e, _)| *e == exp) {
                if let Some((_, partition)) = shard.live.remove(&*key) {
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
            let stored: Arc<str> = Arc::from(key);
            shard.live.insert(stored.clone(), (expires_at, part));
            shard.by_expiry.push(Reverse((expires_at, stored)));
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

    /// The trait's default `admit` (take_rate, then acquire_concurrency) over the same store.
    struct DefaultAdmit(MemoryQuotaStore);

    impl QuotaStore for DefaultAdmit {
        fn take_rate(&self, key: &str, limit: RateLimit) -> StoreFuture<'_, RateDecision> {
            self.0.take_rate(key, limit)
        }
        fn acquire_concurrency(&self, key: &str, max: u32) -> StoreFuture<'_, Option<Lease>> {
            self.0.acquire_concurrency(key, max)
        }
        fn backend(&self) -> &'static str {
            "default-admit"
        }
    }

    /// What an admission says, without its lease (kept apart so its slot stays held).
    fn shape(a: Admission, held: &mut Vec<Lease>) -> String {
        match a {
            Admission::Admitted { remaining, lease } => {
                held.push(lease);
                format!("admitted {remaining}")
            }
            // In tenths of a second: the two stores are asked a few microseconds apart.
            Admission::Throttled { retry_after } => {
                format!("throttled {}", retry_after.as_millis() / 100)
            }
            Admission::Busy => "busy".into(),
        }
    }

    #[tokio::test]
    async fn admit_answers_as_the_default_two_step_admit() {
        let new = MemoryQuotaStore::new();
        let old = DefaultAdmit(MemoryQuotaStore::new());
        let (mut held_new, mut held_old) = (Vec::new(), Vec::new());
        let mut log = Vec::new();
        // Keys with bursts and concurrency bounds of every size, leases held and given back,
        // a key's last lease returned (its counter leaves the map) and the key used again.
        for round in 0..6u32 {
            for (i, key) in ["tenant-a", "tenant-b", "", "t\u{e9}nant:c", "a"]
                .iter()
                .enumerate()
            {
                let limit = RateLimit {
                    per_second: 0.001,
                    burst: (i as f64) * 1.5,
                };
                let max = (i as u32) % 3 + u32::from(round % 2 == 0);
                for _ in 0..3 {
                    let a = shape(new.admit(key, limit, max).await.unwrap(), &mut held_new);
                    let b = shape(old.admit(key, limit, max).await.unwrap(), &mut held_old);
                    assert_eq!(a, b, "round {round}, key {key:?}");
                    log.push(a);
                }
            }
            if round % 2 == 1 {
                held_new.clear();
                held_old.clear();
            }
        }
        for kind in ["admitted", "throttled", "busy"] {
            assert!(
                log.iter().any(|l| l.starts_with(kind)),
                "no {kind} answer in {log:?}"
            );
        }
        // Every lease given back: the concurrency maps are empty again.
        held_new.clear();
        held_old.clear();
        for s in new.active.iter().chain(old.0.active.iter()) {
            assert!(lock(s).is_empty());
        }
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
