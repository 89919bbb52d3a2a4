//! Proof-of-Entitlement: introspection at the Licensing service, cached per PoE digest.
//!
//! `POST {introspect_url}` with `{"format":"jwt","value":"<PoE>"}` answers
//! `{"active", "licenseId", "plan", "tenant"?, "installation"?, "limits": {"qps", "burst",
//! "maxConcurrent", "maxArtifactBytes"}, "expiresAt"?}` (`docs/signer.md`). Answers are cached
//! under the SHA-256 of the PoE for `cache_ttl_seconds`, never past the license's `expiresAt`;
//! negative answers are cached too (a revoked license stays revoked without a round trip).
//! When Licensing cannot be reached (connection error, timeout, 5xx, unreadable answer), the
//! last *active* answer is used if it was confirmed less than `grace_ttl_seconds` ago and the
//! license has not expired — PoE state `grace`; otherwise the request fails `503
//! upstream_unavailable`. The operator bypass skips introspection entirely and applies the
//! configured bypass plan — PoE state `bypass`, with the reason in every audit record.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stella_store::{PoeState, SharedCache};

use crate::config::{LicensingConfig, PlanLimits};
use crate::error::{ApiError, Code};

/// An active entitlement.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlement {
    pub license_id: String,
    pub tenant: Option<String>,
    pub installation: Option<String>,
    pub limits: PlanLimits,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// The answer for a request.
#[derive(Debug, Clone)]
pub struct PoeDecision {
    pub entitlement: Arc<Entitlement>,
    pub state: PoeState,
    pub bypass_reason: Option<String>,
}

/// A refusal, with the PoE state to audit and the kind to count.
#[derive(Debug)]
pub struct PoeFailure {
    pub error: ApiError,
    /// `denied` or `unavailable` (metrics label).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntrospectLimits {
    qps: f64,
    #[serde(default)]
    burst: Option<f64>,
    max_concurrent: u32,
    max_artifact_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Introspection {
    active: bool,
    #[serde(default)]
    license_id: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    installation: Option<String>,
    #[serde(default)]
    limits: Option<IntrospectLimits>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Why Licensing said no to a PoE. Its text (`Display`) is the `403 entitlement_denied`
/// detail, and what the replicas' shared cache stores (`err`): a text read back from that
/// cache becomes the variant that prints it ([`Refusal::from_text`]), so the cache format
/// and the details callers see are those of the text this replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    /// `active: false`, with Licensing's reason when it gave one.
    #[error("the license is not active{}", .0.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Inactive(Option<String>),
    /// An active license that names no tenant (it would entitle every tenant's callers).
    #[error("the license names no tenant, so it cannot entitle any caller")]
    NoTenant,
    /// The dev profile's embedded Licensing refuses values without the `dev-` prefix.
    #[error("the dev Licensing accepts only PoE values starting with `dev-`")]
    NotDev,
    /// A reason from the shared cache that none of the above prints (another version's).
    #[error("{0}")]
    Other(String),
}

impl Refusal {
    const INACTIVE: &'static str = "the license is not active";

    /// The refusal whose text is `t` (the shared cache's `err`).
    fn from_text(t: String) -> Refusal {
        if t == Self::INACTIVE {
            return Refusal::Inactive(None);
        }
        if let Some(r) = t
            .strip_prefix(Self::INACTIVE)
            .and_then(|r| r.strip_prefix(": "))
        {
            return Refusal::Inactive(Some(r.to_string()));
        }
        for known in [Refusal::NoTenant, Refusal::NotDev] {
            if t == known.to_string() {
                return known;
            }
        }
        Refusal::Other(t)
    }
}

/// Licensing could not be asked or its answer not used (the request is `503` unless an
/// entitlement is cached within the grace period). The text goes to the log and the audit
/// record's internal detail only.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("no Licensing service is configured")]
    NotConfigured,
    #[error("{0}")]
    Transport(reqwest::Error),
    #[error("introspection answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Read(String),
    #[error("unreadable introspection answer: {0}")]
    Unreadable(serde_json::Error),
    #[error("introspection answer lacks licenseId or limits")]
    Incomplete,
    #[error("introspection expiresAt: {0}")]
    Expiry(time::error::Parse),
}

/// Licensing's answer to one PoE: an entitlement or a refusal.
type Answer = Result<Arc<Entitlement>, Refusal>;

#[derive(Clone)]
struct CacheEntry {
    answer: Answer,
    confirmed_at: Instant,
}

enum Backend {
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
    },
    /// The dev profile's embedded Licensing (any PoE starting with `dev-`).
    Dev,
    None,
}

/// Largest introspection answer accepted.
pub(crate) const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;

/// The introspection cache, bounded: when full, the entry confirmed longest ago leaves —
/// the first to expire, since every entry lives for the same TTL from its confirmation. The
/// cache is never cleared wholesale (that would send every caller back to Licensing at once,
/// and during an outage drop every entitlement still inside its grace period).
struct PoeCache {
    map: HashMap<[u8; 32], (CacheEntry, u64)>,
    /// Digests in confirmation order, tagged with the generation they were confirmed at; a
    /// tag that no longer matches the map is stale and skipped.
    order: VecDeque<([u8; 32], u64)>,
    next_gen: u64,
    max_entries: usize,
}

impl PoeCache {
    fn new(max_entries: usize) -> Self {
        PoeCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            max_entries: max_entries.max(1),
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<CacheEntry> {
        self.map.get(digest).map(|(e, _)| e.clone())
    }

    fn insert(&mut self, digest: [u8; 32], entry: CacheEntry) {
        if !self.map.contains_key(&digest) {
            while self.map.len() >= self.max_entries {
                let Some((d, g)) = self.order.pop_front() else {
                    break;
                };
                if self.map.get(&d).is_some_and(|(_, cur)| *cur == g) {
                    self.map.remove(&d);
                }
            }
        }
        let g = self.next_gen;
        self.next_gen += 1;
        self.map.insert(digest, (entry, g));
        self.order.push_back((digest, g));
        // Re-confirmations leave stale tags behind: compact once they outnumber the entries.
        if self.order.len() > 2 * self.max_entries {
            let map = &self.map;
            self.order
                .retain(|(d, g)| map.get(d).is_some_and(|(_, cur)| cur == g));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// An answer as kept in the shared cache (`poe:<sha256 of the PoE>`): the entitlement or the
/// refusal, and when Licensing confirmed it (Unix ms), so TTL and grace count from the
/// confirmation whichever replica asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SharedAnswer {
    confirmed_at_ms: i64,
    #[serde(default)]
    ok: Option<SharedEntitlement>,
    #[serde(default)]
    err: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SharedEntitlement {
    license_id: String,
    tenant: Option<String>,
    installation: Option<String>,
    plan: String,
    qps: f64,
    burst: f64,
    max_concurrent: u32,
    max_artifact_bytes: u64,
    expires_at: Option<i64>,
}

fn unix_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

impl SharedAnswer {
    fn of(answer: &Answer) -> Self {
        let (ok, err) = match answer {
            Ok(e) => (
                Some(SharedEntitlement {
                    license_id: e.license_id.clone(),
                    tenant: e.tenant.clone(),
                    installation: e.installation.clone(),
                    plan: e.limits.plan.clone(),
                    qps: e.limits.qps,
                    burst: e.limits.burst,
                    max_concurrent: e.limits.max_concurrent,
                    max_artifact_bytes: e.limits.max_artifact_bytes,
                    expires_at: e.expires_at,
                }),
                None,
            ),
            Err(r) => (None, Some(r.to_string())),
        };
        SharedAnswer {
            confirmed_at_ms: unix_ms(),
            ok,
            err,
        }
    }

    /// The local entry, or `None` when unreadable or confirmed in the future / too long ago
    /// to be placed on this process's clock.
    fn entry(self) -> Option<CacheEntry> {
        let age_ms = u64::try_from(unix_ms().checked_sub(self.confirmed_at_ms)?).ok()?;
        let confirmed_at = Instant::now().checked_sub(Duration::from_millis(age_ms))?;
        let answer = match (self.ok, self.err) {
            (Some(e), None) => Ok(Arc::new(Entitlement {
                license_id: e.license_id,
                tenant: e.tenant,
                installation: e.installation,
                limits: PlanLimits {
                    plan: e.plan,
                    qps: e.qps,
                    burst: e.burst,
                    max_concurrent: e.max_concurrent,
                    max_artifact_bytes: e.max_artifact_bytes,
                },
                expires_at: e.expires_at,
            })),
            (None, Some(r)) => Err(Refusal::from_text(r)),
            _ => return None,
        };
        Some(CacheEntry {
            answer,
            confirmed_at,
        })
    }
}

/// The Licensing client with its cache.
pub struct Licensing {
    backend: Backend,
    cache: Mutex<PoeCache>,
    /// The replicas' shared cache (Redis), consulted when the local entry is missing or stale.
    shared: Option<Arc<dyn SharedCache>>,
    ttl: Duration,
    grace: Duration,
    bypass: Option<(String, Arc<Entitlement>)>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn denied(detail: impl Into<String>) -> PoeFailure {
    PoeFailure {
        error: ApiError::new(Code::EntitlementDenied, detail),
        kind: "denied",
    }
}

/// The dev profile's entitlement.
pub(crate) fn dev_entitlement() -> Entitlement {
    Entitlement {
        license_id: "dev-license".into(),
        tenant: None,
        installation: None,
        limits: PlanLimits {
            plan: "dev".into(),
            qps: 100.0,
            burst: 200.0,
            max_concurrent: 32,
            max_artifact_bytes: 4 * 1024 * 1024,
        },
        expires_at: None,
    }
}

impl Licensing {
    pub fn new(cfg: &LicensingConfig, http: reqwest::Client, dev: bool) -> Self {
        let backend = match (&cfg.introspect_url, dev) {
            (Some(url), _) => Backend::Http {
                client: http,
                url: url.clone(),
                token: cfg.token_env.as_ref().and_then(|v| std::env::var(v).ok()),
            },
            (None, true) => Backend::Dev,
            (None, false) => Backend::None,
        };
        let bypass = cfg.bypass.then(|| {
            (
                cfg.bypass_reason.clone().unwrap_or_default(),
                Arc::new(Entitlement {
                    license_id: "bypass".into(),
                    tenant: None,
                    installation: None,
                    limits: cfg.bypass_plan.clone(),
                    expires_at: None,
                }),
            )
        });
        Licensing {
            backend,
            cache: Mutex::new(PoeCache::new(cfg.cache_entries)),
            shared: None,
            ttl: Duration::from_secs(cfg.cache_ttl_seconds),
            grace: Duration::from_secs(cfg.grace_ttl_seconds),
            bypass,
        }
    }

    /// Share answers with the other replicas through `c` (Redis).
    pub fn with_shared_cache(mut self, c: Arc<dyn SharedCache>) -> Self {
        self.shared = Some(c);
        self
    }

    fn shared_key(digest: &[u8; 32]) -> String {
        format!("poe:{}", stella_keys::hex(digest))
    }

    /// The shared entry for `digest`; a cache that cannot be read is a miss (Licensing is
    /// asked), never an answer.
    async fn shared_get(&self, digest: &[u8; 32]) -> Option<CacheEntry> {
        let c = self.shared.as_ref()?;
        match c.get(&Self::shared_key(digest)).await {
            Ok(Some(bytes)) => serde_json::from_slice::<SharedAnswer>(&bytes)
                .ok()
                .and_then(SharedAnswer::entry),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "shared PoE cache unavailable: asking Licensing");
                None
            }
        }
    }

    /// Publish a confirmed answer for the other replicas: kept for the TTL (an active one
    /// for its grace period too), never past the license's expiry.
    async fn shared_put(&self, digest: &[u8; 32], answer: &Answer) {
        let Some(c) = &self.shared else { return };
        let mut keep = match answer {
            Ok(_) => self.ttl.max(self.grace),
            Err(_) => self.ttl,
        };
        if let Ok(e) = answer {
            if let Some(x) = e.expires_at {
                let left = u64::try_from(x.saturating_sub(unix_now())).unwrap_or(0);
                keep = keep.min(Duration::from_secs(left));
            }
        }
        if keep.is_zero() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&SharedAnswer::of(answer)) else {
            return;
        };
        if let Err(e) = c.put(&Self::shared_key(digest), bytes, keep).await {
            tracing::warn!(error = %e, "cannot publish a PoE answer to the shared cache");
        }
    }

    pub fn is_bypassed(&self) -> bool {
        self.bypass.is_some()
    }

    /// Decide on `poe` (its value).
    pub async fn check(&self, poe: Option<&str>) -> Result<PoeDecision, PoeFailure> {
        if let Some((reason, ent)) = &self.bypass {
            return Ok(PoeDecision {
                entitlement: ent.clone(),
                state: PoeState::Bypass,
                bypass_reason: Some(reason.clone()),
            });
        }
        let Some(poe) = poe.filter(|p| !p.is_empty()) else {
            return Err(denied("a Proof-of-Entitlement (`poe`) is required"));
        };
        let digest = stella_keys::sha256(poe.as_bytes());
        let now = unix_now();
        let mut cached = {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get(&digest)
        };
        if cached
            .as_ref()
            .is_none_or(|e| e.confirmed_at.elapsed() >= self.ttl)
        {
            // Another replica may have confirmed it more recently.
            // The miss paths' futures (Redis, the HTTP client) are boxed where they are
            // awaited: every sign request's future would carry their size otherwise, and
            // a fresh cached answer (the common case) awaits nothing (issue #15).
            if let Some(s) = Box::pin(self.shared_get(&digest)).await {
                if cached
                    .as_ref()
                    .is_none_or(|e| s.confirmed_at > e.confirmed_at)
                {
                    let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    c.insert(digest, s.clone());
                    cached = Some(s);
                }
            }
        }
        if let Some(e) = &cached {
            if e.confirmed_at.elapsed() < self.ttl {
                return match &e.answer {
                    Ok(ent) if ent.expires_at.is_none_or(|x| x > now) => Ok(PoeDecision {
                        entitlement: ent.clone(),
                        state: PoeState::Cached,
                        bypass_reason: None,
                    }),
                    Ok(_) => Err(denied("the license has expired")),
                    Err(reason) => Err(denied(reason.to_string())),
                };
            }
        }
        match Box::pin(self.introspect(poe)).await {
            Ok(answer) => {
                self.remember(digest, answer.clone());
                Box::pin(self.shared_put(&digest, &answer)).await;
                match answer {
                    Ok(ent) => {
                        if ent.expires_at.is_some_and(|x| x <= now) {
                            return Err(denied("the license has expired"));
                        }
                        Ok(PoeDecision {
                            entitlement: ent,
                            state: PoeState::Valid,
                            bypass_reason: None,
                        })
                    }
                    Err(reason) => Err(denied(reason.to_string())),
                }
            }
            Err(why) => {
                if let Some(CacheEntry {
                    answer: Ok(ent),
                    confirmed_at,
                }) = cached
                {
                    if confirmed_at.elapsed() < self.grace && ent.expires_at.is_none_or(|x| x > now)
                    {
                        tracing::warn!(error = %why, "Licensing unavailable: using the last known entitlement (grace)");
                        return Ok(PoeDecision {
                            entitlement: ent,
                            state: PoeState::Grace,
                            bypass_reason: None,
                        });
                    }
                }
                Err(PoeFailure {
                    error: ApiError::unavailable(
                        "the Licensing service is unavailable and no entitlement is cached within the grace period; retry later",
                        format!("Licensing: {why}"),
                    ),
                    kind: "unavailable",
                })
            }
        }
    }

    fn remember(&self, digest: [u8; 32], answer: Answer) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.insert(
            digest,
            CacheEntry {
                answer,
                confirmed_at: Instant::now(),
            },
        );
    }

    /// Ask Licensing. `Ok(Err(reason))`: Licensing said no. `Err`: Licensing is unavailable.
    async fn introspect(&self, poe: &str) -> Result<Answer, Unavailable> {
        let body = match &self.backend {
            Backend::Dev => {
                return Ok(if poe.starts_with("dev-") {
                    Ok(Arc::new(dev_entitlement()))
                } else {
                    Err(Refusal::NotDev)
                })
            }
            Backend::None => return Err(Unavailable::NotConfigured),
            Backend::Http { client, url, token } => {
                let mut req = client
                    .post(url)
                    .json(&serde_json::json!({"format": "jwt", "value": poe}));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.map_err(Unavailable::Transport)?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(Unavailable::Status(status));
                }
                let bytes = crate::jwks::read_limited(
                    resp,
                    MAX_INTROSPECTION_BYTES,
                    "introspection answer",
                )
                .await
                .map_err(|e| Unavailable::Read(e.to_string()))?;
                serde_json::from_slice::<Introspection>(&bytes).map_err(Unavailable::Unreadable)?
            }
        };
        if !body.active {
            return Ok(Err(Refusal::Inactive(body.reason)));
        }
        let (Some(license_id), Some(limits)) = (body.license_id, body.limits) else {
            return Err(Unavailable::Incomplete);
        };
        // An entitlement must say whose it is: one naming no tenant would be usable by every
        // tenant's callers.
        let Some(tenant) = body.tenant.filter(|t| !t.is_empty()) else {
            return Ok(Err(Refusal::NoTenant));
        };
        let expires_at = match body.expires_at {
            Some(s) => Some(
                time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                    .map_err(Unavailable::Expiry)?
                    .unix_timestamp(),
            ),
            None => None,
        };
        Ok(Ok(Arc::new(Entitlement {
            license_id,
            tenant: Some(tenant),
            installation: body.installation,
            limits: PlanLimits {
                plan: body.plan.unwrap_or_else(|| "unknown".into()),
                qps: limits.qps,
                burst: limits.burst.unwrap_or(limits.qps),
                max_concurrent: limits.max_concurrent,
                max_artifact_bytes: limits.max_artifact_bytes,
            },
            expires_at,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> CacheEntry {
        CacheEntry {
            answer: Err(Refusal::Other(id.to_string())),
            confirmed_at: Instant::now(),
        }
    }

    /// Issue #8 item 10: a full cache was cleared wholesale (every entitlement forgotten,
    /// including those inside their grace period). Now the oldest confirmation leaves.
    #[test]
    fn full_poe_cache_evicts_the_oldest_confirmation_only() {
        let mut c = PoeCache::new(3);
        for i in 0..3u8 {
            c.insert([i; 32], entry(&format!("e{i}")));
        }
        // Re-confirming 0 makes it the newest.
        c.insert([0; 32], entry("e0-again"));
        c.insert([3; 32], entry("e3"));
        assert_eq!(c.len(), 3);
        assert!(c.get(&[1; 32]).is_none(), "the oldest confirmation left");
        for (k, want) in [(0u8, "e0-again"), (2, "e2"), (3, "e3")] {
            let e = c.get(&[k; 32]).unwrap();
            assert_eq!(e.answer.unwrap_err().to_string(), want);
        }
        // Many re-confirmations of one key do not grow the bookkeeping without bound.
        for _ in 0..100 {
            c.insert([2; 32], entry("e2"));
        }
        assert!(c.order.len() <= 6, "{}", c.order.len());
        c.insert([4; 32], entry("e4"));
        assert_eq!(c.len(), 3);
        assert!(c.get(&[0; 32]).is_none());
        assert!(c.get(&[2; 32]).is_some() && c.get(&[3; 32]).is_some());
    }

    /// The shared cache stores a refusal as its text: every variant reads back as itself,
    /// and the texts are those of the `String` this type replaced.
    #[test]
    fn refusals_keep_their_text_through_the_shared_cache() {
        let cases = [
            (Refusal::Inactive(None), "the license is not active"),
            (
                Refusal::Inactive(Some("suspended".into())),
                "the license is not active: suspended",
            ),
            (
                Refusal::NoTenant,
                "the license names no tenant, so it cannot entitle any caller",
            ),
            (
                Refusal::NotDev,
                "the dev Licensing accepts only PoE values starting with `dev-`",
            ),
            (Refusal::Other("revoked by ops".into()), "revoked by ops"),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
            let wire = serde_json::to_vec(&SharedAnswer::of(&Err(r.clone()))).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
            assert_eq!(v["err"], text, "wire text of {r:?}");
            let back: SharedAnswer = serde_json::from_slice(&wire).unwrap();
            let entry = back.entry().expect("a fresh answer places on the clock");
            assert_eq!(entry.answer.unwrap_err(), r);
        }
        // Not a refusal's text: neither an inactive one nor a known one.
        assert_eq!(
            Refusal::from_text("the license is not activated".into()),
            Refusal::Other("the license is not activated".into())
        );
        // An answer with both sides or neither is unreadable (a miss), not a refusal.
        let ok = SharedAnswer::of(&Ok(Arc::new(dev_entitlement())))
            .ok
            .expect("an entitlement is shared as `ok`");
        let both = SharedAnswer {
            confirmed_at_ms: unix_ms(),
            ok: Some(ok),
            err: Some("x".into()),
        };
        assert!(both.entry().is_none());
        let neither = SharedAnswer {
            confirmed_at_ms: unix_ms(),
            ok: None,
            err: None,
        };
        assert!(neither.entry().is_none());
    }
}
