//! The quota and replay suites on a real Redis (127.0.0.1:6379, or `STELLA_TEST_REDIS_URL`),
//! each test under its own key prefix, deleted afterwards.

use std::time::Duration;

use stella_store::{
    QuotaStore, RateDecision, RateLimit, RedisOptions, RedisQuotaStore, RedisReplayCache,
    ReplayCache,
};

use crate::suites;

fn url() -> String {
    std::env::var("STELLA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A unique key prefix; its keys are deleted on drop.
struct Prefix(String);

impl Prefix {
    fn new() -> Prefix {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        Prefix(format!(
            "stella-test:{}:",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ))
    }

    fn opts(&self) -> RedisOptions {
        let mut o = RedisOptions::new(url());
        o.prefix = self.0.clone();
        o
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let Ok(client) = redis::Client::open(url()) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_quota_suite() {
    let p = Prefix::new();
    suites::quota(&RedisQuotaStore::connect(p.opts()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replay_suite() {
    let p = Prefix::new();
    suites::replay(&RedisReplayCache::connect(p.opts()).await.unwrap()).await;
}

/// Two replicas (own connections) share one bucket, one lease set and one replay cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_limits_and_replays() {
    let p = Prefix::new();
    let a = RedisQuotaStore::connect(p.opts()).await.unwrap();
    let b = RedisQuotaStore::connect(p.opts()).await.unwrap();
    a.ping().await.unwrap();
    let lim = RateLimit {
        per_second: 0.01,
        burst: 4.0,
    };
    let mut allowed = 0;
    for i in 0..10 {
        let q: &dyn QuotaStore = if i % 2 == 0 { &a } else { &b };
        if matches!(
            q.take_rate("lic", lim).await.unwrap(),
            RateDecision::Allowed { .. }
        ) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "the burst was granted per replica");
    let l1 = a.acquire_concurrency("lic", 2).await.unwrap().unwrap();
    let _l2 = b.acquire_concurrency("lic", 2).await.unwrap().unwrap();
    assert!(a.acquire_concurrency("lic", 2).await.unwrap().is_none());
    assert!(b.acquire_concurrency("lic", 2).await.unwrap().is_none());
    drop(l1);
    // The release is sent asynchronously.
    let mut freed = false;
    for _ in 0..50 {
        if let Some(l) = b.acquire_concurrency("lic", 2).await.unwrap() {
            freed = true;
            drop(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a dropped lease was not given back");

    let r1 = RedisReplayCache::connect(p.opts()).await.unwrap();
    let r2 = RedisReplayCache::connect(p.opts()).await.unwrap();
    let exp = time_now() + 60;
    assert!(r1.check_and_insert("jkt:jti", exp).await.unwrap());
    assert!(!r2.check_and_insert("jkt:jti", exp).await.unwrap());
    assert!(!r1.check_and_insert("jkt:jti", exp).await.unwrap());
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A replica that crashes holding a lease never releases it: the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_lease_expires() {
    let p = Prefix::new();
    let mut o = p.opts();
    o.lease_ttl = Duration::from_millis(300);
    let q = RedisQuotaStore::connect(o).await.unwrap();
    std::mem::forget(q.acquire_concurrency("lic", 1).await.unwrap().unwrap());
    assert!(q.acquire_concurrency("lic", 1).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(q.acquire_concurrency("lic", 1).await.unwrap().is_some());
}

/// An unreachable Redis is an error within the timeout, never an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_within_the_timeout() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut o = RedisOptions::new(format!("redis://127.0.0.1:{port}/0"));
    o.timeout = Duration::from_millis(300);
    let t0 = std::time::Instant::now();
    assert!(RedisQuotaStore::connect(o.clone()).await.is_err());
    assert!(RedisReplayCache::connect(o).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// The shared cache: values expire with their TTL, `get_or_put` is won by the first writer and
/// read by every other (two replicas, own connections), and a server that accepts but never
/// answers (stalled) is an error within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_cache_ttl_first_writer_wins_and_bounded() {
    use stella_store::{RedisCache, SharedCache};
    let p = Prefix::new();
    let a = RedisCache::connect(p.opts()).await.unwrap();
    let b = RedisCache::connect(p.opts()).await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), None);
    a.put("k", b"v1".to_vec(), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    a.put("k", b"v2".to_vec(), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(b.get("k").await.unwrap(), None, "the TTL was not applied");

    let first = a
        .get_or_put("s", b"from-a".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    let second = b
        .get_or_put("s", b"from-b".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first, b"from-a");
    assert_eq!(
        second, b"from-a",
        "the second writer must read the first value"
    );

    // A listener that never answers: connecting already times out.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = p.opts();
    o.url = format!("redis://{}/0", stalled.local_addr().unwrap());
    o.timeout = Duration::from_millis(200);
    let t0 = std::time::Instant::now();
    assert!(RedisCache::connect(o).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// `admit` (token then slot, one Redis script) behaves as the two calls do, on Redis and in
/// memory: a throttled request takes no slot; a busy one spends its token; a dropped lease
/// gives the slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_is_take_rate_then_acquire_in_one_step() {
    use stella_store::{Admission, MemoryQuotaStore};
    let p = Prefix::new();
    let redis = RedisQuotaStore::connect(p.opts()).await.unwrap();
    let memory = MemoryQuotaStore::new();
    let stores: [&dyn QuotaStore; 2] = [&redis, &memory];
    let limit = RateLimit {
        per_second: 0.001,
        burst: 3.0,
    };
    for q in stores {
        let first = q.admit("lic", limit, 1).await.unwrap();
        let Admission::Admitted { remaining, lease } = first else {
            panic!("{}: {first:?}", q.backend())
        };
        assert_eq!(remaining, 2, "{}", q.backend());
        let busy = q.admit("lic", limit, 1).await.unwrap();
        assert!(matches!(busy, Admission::Busy), "{}: {busy:?}", q.backend());
        drop(lease);
        // The release runs in the background on Redis.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = q.admit("lic", limit, 1).await.unwrap();
        assert!(
            matches!(again, Admission::Admitted { remaining: 0, .. }),
            "{}: {again:?}",
            q.backend()
        );
        drop(again);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let throttled = q.admit("lic", limit, 1).await.unwrap();
        assert!(
            matches!(throttled, Admission::Throttled { .. }),
            "{}: {throttled:?}",
            q.backend()
        );
        // The throttled request took no slot.
        assert!(
            q.acquire_concurrency("lic", 1).await.unwrap().is_some(),
            "{}",
            q.backend()
        );
    }
}
