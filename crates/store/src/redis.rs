//! Shared quota store and DPoP replay cache on Redis, for replicas behind one load balancer.
//!
//! - **Token bucket** per key: one hash `{tokens, ts}` updated by a Lua script that reads the
//!   server clock (`TIME`), so replicas with skewed clocks share one bucket and the
//!   read-refill-take-write step is atomic.
//! - **Concurrency leases**: a sorted set per key whose members are lease ids scored by their
//!   expiry (ms). Acquiring removes expired members, then adds one if fewer than `max` remain,
//!   in one script. Dropping a [`Lease`] removes its member; a replica that crashes never does,
//!   and its leases age out after `lease_ttl` (set it above the longest request).
//! - **Replay cache**: `SET key 1 NX EXAT expires_at` — the first use wins on every replica.
//!
//! Every call is bounded by `timeout`; an error or a timeout is returned as [`StoreError`] and
//! the service refuses the request (503 `upstream_unavailable`), never skipping the check. The
//! connection manager reconnects on its own, so service recovers when Redis does. All keys
//! start with `prefix` (one prefix per deployment, or per test).

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::quota::{Lease, QuotaStore, RateDecision, RateLimit};
use crate::replay::ReplayCache;
use crate::{StoreError, StoreFuture};

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Database(format!("redis: {e}"))
    }
}

/// Options of the Redis backends.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Bound on connecting and on every call.
    pub timeout: Duration,
    /// Lifetime of a concurrency lease that is never released (a crashed replica's).
    pub lease_ttl: Duration,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "stella:".into(),
            timeout: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(60),
        }
    }
}

/// The token bucket (`KEYS[1]`; `ARGV`: rate, burst), shared by TAKE_RATE and ADMIT. Leaves
/// `allowed`, `tokens`, `wait` and `t` (the server's TIME) as Lua locals.
macro_rules! token_bucket_lua {
    () => {
        r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
elseif rate > 0 then
  wait = (1 - tokens) / rate
else
  wait = 3600
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
local idle = 1000
if rate > 0 then idle = math.ceil(burst / rate * 1000) + 1000 end
redis.call('PEXPIRE', KEYS[1], idle)
"
    };
}

const TAKE_RATE: &str = concat!(
    token_bucket_lua!(),
    "return {allowed, math.floor(tokens), tostring(wait)}\n"
);

const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
";

/// Token bucket (`KEYS[1]`) then, if a token was taken, a lease (`KEYS[2]`): one round trip.
/// ARGV: rate, burst, max, lease id, lease ttl ms. Returns {allowed, remaining, wait, granted}.
const ADMIT: &str = concat!(
    token_bucket_lua!(),
    r"local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local granted = 0
if allowed == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[4])
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
    granted = 1
  end
end
return {allowed, math.floor(tokens), tostring(wait), granted}
"
);

/// What both backends share: the connection, the prefix and the bound.
#[derive(Clone)]
struct Conn {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl Conn {
    async fn open(opts: &RedisOptions) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(opts.url.as_str())?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(opts.timeout)
            .set_response_timeout(opts.timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            opts.timeout * 2,
            ConnectionManager::new_with_config(client, cfg),
        )
        .await
        .map_err(|_| StoreError::Database("redis: connect timed out".into()))??;
        Ok(Conn {
            conn,
            prefix: opts.prefix.clone(),
            timeout: opts.timeout,
        })
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ::redis::RedisError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Database("redis: timed out".into()))?
            .map_err(StoreError::from)
    }
}

/// Token buckets and concurrency leases shared through Redis.
pub struct RedisQuotaStore {
    c: Conn,
    lease_ttl_ms: u64,
    take: ::redis::Script,
    acquire: ::redis::Script,
    admit: ::redis::Script,
}

impl RedisQuotaStore {
    /// Connect (bounded by `timeout`).
    pub async fn connect(opts: RedisOptions) -> Result<Self, StoreError> {
        Ok(RedisQuotaStore {
            c: Conn::open(&opts).await?,
            lease_ttl_ms: u64::try_from(opts.lease_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            take: ::redis::Script::new(TAKE_RATE),
            acquire: ::redis::Script::new(ACQUIRE),
            admit: ::redis::Script::new(ADMIT),
        })
    }
}

fn lease_id() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| StoreError::Database("RNG failure".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl QuotaStore for RedisQuotaStore {
    fn take_rate(&self, key: &str, limit: RateLimit) -> StoreFuture<'_, RateDecision> {
        let k = format!("{}rate:{key}", self.c.prefix);
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            let mut inv = self.take.key(&k);
            inv.arg(limit.per_second.max(0.0)).arg(limit.burst.max(1.0));
            let (allowed, remaining, wait): (i64, i64, String) =
                self.c.bounded(inv.invoke_async(&mut conn)).await?;
            if allowed == 1 {
                Ok(RateDecision::Allowed {
                    remaining: u64::try_from(remaining).unwrap_or(0),
                })
            } else {
                let secs: f64 = wait.parse().map_err(|_| {
                    StoreError::Database(format!("redis: bad wait {wait:?} from the bucket script"))
                })?;
                Ok(RateDecision::Throttled {
                    retry_after: Duration::from_secs_f64(secs.clamp(0.001, 86_400.0)),
                })
            }
        })
    }

    fn acquire_concurrency(&self, key: &str, max: u32) -> StoreFuture<'_, Option<Lease>> {
        let k = format!("{}conc:{key}", self.c.prefix);
        Box::pin(async move {
            let id = lease_id()?;
            let mut conn = self.c.conn.clone();
            let mut inv = self.acquire.key(&k);
            inv.arg(max).arg(&id).arg(self.lease_ttl_ms);
            let granted: i64 = self.c.bounded(inv.invoke_async(&mut conn)).await?;
            if granted != 1 {
                return Ok(None);
            }
            Ok(Some(self.lease(k, id)))
        })
    }

    fn admit(
        &self,
        key: &str,
        limit: RateLimit,
        max: u32,
    ) -> StoreFuture<'_, crate::quota::Admission> {
        use crate::quota::Admission;
        let rate_key = format!("{}rate:{key}", self.c.prefix);
        let conc_key = format!("{}conc:{key}", self.c.prefix);
        Box::pin(async move {
            let id = lease_id()?;
            let mut conn = self.c.conn.clone();
            let mut inv = self.admit.key(&rate_key);
            inv.key(&conc_key)
                .arg(limit.per_second.max(0.0))
                .arg(limit.burst.max(1.0))
                .arg(max)
                .arg(&id)
                .arg(self.lease_ttl_ms);
            let (allowed, remaining, wait, granted): (i64, i64, String, i64) =
                self.c.bounded(inv.invoke_async(&mut conn)).await?;
            if allowed != 1 {
                let secs: f64 = wait.parse().map_err(|_| {
                    StoreError::Database(format!("redis: bad wait {wait:?} from the admit script"))
                })?;
                return Ok(Admission::Throttled {
                    retry_after: Duration::from_secs_f64(secs.clamp(0.001, 86_400.0)),
                });
            }
            if granted != 1 {
                return Ok(Admission::Busy);
            }
            Ok(Admission::Admitted {
                remaining: u64::try_from(remaining).unwrap_or(0),
                lease: self.lease(conc_key, id),
            })
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            let pong: String = self
                .c
                .bounded(::redis::cmd("PING").query_async(&mut conn))
                .await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(StoreError::Database(format!(
                    "redis: PING answered {pong:?}"
                )))
            }
        })
    }
}

impl RedisQuotaStore {
    /// A held lease: dropping it removes `id` from `k` (in the background).
    fn lease(&self, k: String, id: String) -> Lease {
        {
            let c = self.c.clone();
            Lease::new(move || {
                // Give the slot back without blocking the dropping thread; if there is no
                // runtime (or Redis is away) the lease expires on its own.
                if let Ok(h) = tokio::runtime::Handle::try_current() {
                    h.spawn(async move {
                        let mut conn = c.conn.clone();
                        let _ = c
                            .bounded(
                                ::redis::cmd("ZREM")
                                    .arg(&k)
                                    .arg(&id)
                                    .query_async::<i64>(&mut conn),
                            )
                            .await;
                    });
                }
            })
        }
    }
}

/// The DPoP replay cache shared through Redis.
pub struct RedisReplayCache {
    c: Conn,
}

impl RedisReplayCache {
    /// Connect (bounded by `timeout`).
    pub async fn connect(opts: RedisOptions) -> Result<Self, StoreError> {
        Ok(RedisReplayCache {
            c: Conn::open(&opts).await?,
        })
    }
}

impl ReplayCache for RedisReplayCache {
    fn check_and_insert(&self, key: &str, expires_at: i64) -> StoreFuture<'_, bool> {
        let k = format!("{}jti:{key}", self.c.prefix);
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            // EXAT must be positive; a time already past stores nothing that outlives it.
            let exat = expires_at.max(1);
            let set: Option<String> = self
                .c
                .bounded(
                    ::redis::cmd("SET")
                        .arg(&k)
                        .arg(1)
                        .arg("NX")
                        .arg("EXAT")
                        .arg(exat)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// Values with a lifetime shared through Redis under `prefix` + `cache:` (PoE answers, release
/// verdicts, DPoP nonce keys). Every call is bounded by `timeout`.
pub struct RedisCache {
    c: Conn,
}

impl RedisCache {
    /// Connect (bounded by `timeout`).
    pub async fn connect(opts: RedisOptions) -> Result<Self, StoreError> {
        Ok(RedisCache {
            c: Conn::open(&opts).await?,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}cache:{key}", self.c.prefix)
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl crate::cache::SharedCache for RedisCache {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let k = self.key(key);
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            self.c
                .bounded(::redis::cmd("GET").arg(&k).query_async(&mut conn))
                .await
        })
    }

    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()> {
        let k = self.key(key);
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            let _: Option<String> = self
                .c
                .bounded(
                    ::redis::cmd("SET")
                        .arg(&k)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl_ms(ttl))
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
        })
    }

    fn get_or_put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, Vec<u8>> {
        let k = self.key(key);
        Box::pin(async move {
            let mut conn = self.c.conn.clone();
            // SET NX GET (Redis 7): the previous value if there was one, else nil and ours is set.
            let old: Option<Vec<u8>> = self
                .c
                .bounded(
                    ::redis::cmd("SET")
                        .arg(&k)
                        .arg(&value)
                        .arg("NX")
                        .arg("GET")
                        .arg("PX")
                        .arg(ttl_ms(ttl))
                        .query_async(&mut conn),
                )
                .await?;
            Ok(old.unwrap_or(value))
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
