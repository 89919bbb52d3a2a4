//! Release integrity (SPEC §4): is a scanner image digest a trusted release?
//!
//! Order: the allow-list `release.trusted_scanner_digests` (no registry call); then, when
//! `release.repository` is configured, the signature referrers of `repository@digest` checked
//! by [`stella_oci::verify_image_release`] against the release keyring (keys valid for purpose
//! `release`, or Sigstore identities — `[[identities]]` — for keyless signatures). Trusted
//! verdicts are cached per digest for `verdict_cache_ttl_secs` (bounded;
//! the oldest entry goes first); untrusted ones only for `untrusted_cache_ttl_secs` (default
//! 0); registry errors never. A registry that cannot answer is an error (fail closed: the
//! caller answers `503 upstream_unavailable`), never "untrusted" and never "trusted".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stella_keys::{DevKeys, Keyring, Purpose};
use stella_oci::{Client, ClientConfig, Digest, PlainHttp, Reference, RetryPolicy};
use stella_store::SharedCache;

use crate::config::ReleaseConfig;
use crate::error::StartError;

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// `release.trusted_scanner_digests`.
    AllowList,
    /// The registry's signature referrers (fresh or cached).
    Referrers,
    /// Neither an allow-list entry nor a configured repository.
    NotConfigured,
}

/// The audit record's `scanner_verdict` for an allow-listed digest.
pub(crate) const ALLOW_LISTED_LABEL: &str = "trusted-allowlist";

/// The answer for one digest (what `/verify/referrers` returns: every field but `source` and
/// `cached`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseVerdict {
    pub digest: String,
    pub trusted: bool,
    /// Keyring id of the release key that signed.
    pub signer: Option<String>,
    pub keyid: Option<String>,
    pub artifact_type: Option<String>,
    pub reason: String,
    #[serde(skip)]
    pub source: VerdictSource,
    /// Served from the verdict cache.
    #[serde(skip)]
    pub cached: bool,
}

impl ReleaseVerdict {
    /// The audit record's `scanner_verdict`.
    pub fn audit_label(&self) -> &'static str {
        match (self.trusted, self.source) {
            (true, VerdictSource::AllowList) => ALLOW_LISTED_LABEL,
            (true, _) => "trusted-referrer",
            (false, _) => "untrusted",
        }
    }
}

/// The registry could not answer (unreachable, refused us, answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("release verification for {reference} failed: {source}")]
pub struct Unavailable {
    pub reference: String,
    #[source]
    pub source: stella_oci::Error,
}

struct Cached {
    at: Instant,
    ttl: Duration,
    verdict: ReleaseVerdict,
}

fn unix_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// The registry side: client, repository, keyring and the verdict cache.
pub struct ReferrerChecker {
    client: Client,
    repository: Reference,
    keyring: Keyring,
    trusted_ttl: Duration,
    untrusted_ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<Digest, Cached>>,
    lookups: AtomicU64,
    /// The replicas' shared verdict cache (Redis), consulted on a local miss.
    shared: Option<Arc<dyn SharedCache>>,
    /// Names the repository and the release keys (ids, purposes, revocation) in shared
    /// cache keys, so replicas configured differently never share verdicts.
    shared_scope: String,
}

/// A registry verdict as kept in the shared cache.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SharedVerdict {
    /// When the registry gave it (Unix ms): the TTL counts from there on every replica.
    confirmed_at_ms: i64,
    trusted: bool,
    signer: Option<String>,
    keyid: Option<String>,
    artifact_type: Option<String>,
    reason: String,
}

impl SharedVerdict {
    /// The registry's answer, confirmed now.
    fn from_registry(v: stella_oci::Verdict) -> Self {
        SharedVerdict {
            confirmed_at_ms: unix_ms(),
            trusted: v.trusted,
            signer: v.signer,
            keyid: v.keyid,
            artifact_type: v.artifact_type,
            reason: v.reason,
        }
    }

    /// The verdict for `digest` this answer gives.
    fn verdict(&self, digest: &str, cached: bool) -> ReleaseVerdict {
        ReleaseVerdict {
            digest: digest.to_string(),
            trusted: self.trusted,
            signer: self.signer.clone(),
            keyid: self.keyid.clone(),
            artifact_type: self.artifact_type.clone(),
            reason: self.reason.clone(),
            source: VerdictSource::Referrers,
            cached,
        }
    }
}

impl ReferrerChecker {
    /// Build from `[release]` (loads the keyring; needs `repository` and `keyring`).
    pub fn from_config(cfg: &ReleaseConfig) -> Result<Option<Self>, StartError> {
        let (Some(repo), Some(ring_path)) = (&cfg.repository, &cfg.keyring) else {
            return Ok(None);
        };
        let repository = Reference::parse(repo)
            .map_err(|e| StartError::Config(format!("release.repository {repo:?}: {e}")))?
            .without_tag();
        let keyring = Keyring::load(ring_path, DevKeys::Refuse).map_err(|e| {
            StartError::Config(format!("release.keyring {}: {e}", ring_path.display()))
        })?;
        // A signed revocation list (docs/keys.md): listed keys are refused (no verified
        // signing time is known for a scanner image signature).
        let keyring = match &cfg.revocations {
            None => keyring,
            Some(path) => stella_keys::revocation::RevocationList::load(path, &keyring)
                .map_err(|e| {
                    StartError::Config(format!(
                        "release.revocations {}: {e}: {}",
                        path.display(),
                        std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ))
                })?
                .apply(&keyring, None),
        };
        if !keyring
            .keys()
            .iter()
            .any(|k| k.purposes.contains(&Purpose::Release) && !k.revoked)
            && !keyring
                .identities()
                .iter()
                .any(|i| i.purposes.contains(&Purpose::Release) && !i.revoked)
        {
            return Err(StartError::Config(format!(
                "release.keyring {}: no unrevoked key has purpose `release` (nor any identity)",
                ring_path.display()
            )));
        }
        // Keyless release signatures: the identity entries' trusted roots must be usable now,
        // not at the first scanner image (docs/keys.md).
        stella_sigstore::IdentityTrust::from_keyring(&keyring).map_err(|e| {
            StartError::Config(format!("release.keyring {}: {e}", ring_path.display()))
        })?;
        let timeout = Duration::from_millis(cfg.registry_timeout_ms.max(100));
        let client = Client::new(ClientConfig {
            plain_http: if cfg.plain_http {
                PlainHttp::Always
            } else {
                PlainHttp::LoopbackOnly
            },
            retry: RetryPolicy {
                attempts: cfg.registry_attempts.max(1),
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
            },
            connect_timeout: timeout,
            read_timeout: timeout,
            ..ClientConfig::default()
        })
        .map_err(|e| StartError::Config(format!("release registry client: {e}")))?;
        Ok(Some(ReferrerChecker {
            client,
            trusted_ttl: Duration::from_secs(cfg.verdict_cache_ttl_secs),
            untrusted_ttl: Duration::from_secs(cfg.untrusted_cache_ttl_secs),
            max_entries: cfg.verdict_cache_entries.max(1),
            cache: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
            shared: None,
            shared_scope: {
                let mut scope = repository.to_string();
                for k in keyring.keys() {
                    scope.push_str(&format!(
                        "\n{} {:?} {} {}",
                        k.id,
                        k.purposes,
                        k.revoked,
                        k.key.to_pem()
                    ));
                }
                stella_keys::hex(&stella_keys::sha256(scope.as_bytes()))
            },
            repository,
            keyring,
        }))
    }

    /// The configured repository.
    pub fn repository(&self) -> &Reference {
        &self.repository
    }

    /// How many times the registry was asked (cache misses), for tests and metrics.
    pub fn registry_lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The locally cached verdict for `digest`, if it is well-formed and one is fresh.
    fn cached_verdict(&self, digest: &str) -> Option<ReleaseVerdict> {
        self.cached(&Digest::parse(digest).ok()?)
    }

    fn cached(&self, digest: &Digest) -> Option<ReleaseVerdict> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(digest) {
            Some(c) if c.at.elapsed() < c.ttl => {
                let mut v = c.verdict.clone();
                v.cached = true;
                Some(v)
            }
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    fn ttl_of(&self, verdict: &ReleaseVerdict) -> Duration {
        if verdict.trusted {
            self.trusted_ttl
        } else {
            self.untrusted_ttl
        }
    }

    fn remember(&self, digest: Digest, verdict: &ReleaseVerdict) {
        self.remember_at(digest, verdict, Instant::now());
    }

    fn remember_at(&self, digest: Digest, verdict: &ReleaseVerdict, at: Instant) {
        let ttl = self.ttl_of(verdict);
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.max_entries && !cache.contains_key(&digest) {
            cache.retain(|_, c| c.at.elapsed() < c.ttl);
            if cache.len() >= self.max_entries {
                if let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.at).map(|(d, _)| *d) {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(
            digest,
            Cached {
                at,
                ttl,
                verdict: verdict.clone(),
            },
        );
    }

    fn shared_key(&self, digest: &str) -> String {
        format!("verdict:{}:{digest}", self.shared_scope)
    }

    /// A verdict another replica got from the registry; an unreadable cache is a miss (the
    /// registry is asked), never a verdict.
    async fn shared_get(&self, digest: &str) -> Option<(ReleaseVerdict, Instant)> {
        let c = self.shared.as_ref()?;
        let bytes = match c.get(&self.shared_key(digest)).await {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!(error = %e, "shared verdict cache unavailable: asking the registry");
                return None;
            }
        };
        let v: SharedVerdict = serde_json::from_slice(&bytes).ok()?;
        let age_ms = u64::try_from(unix_ms().checked_sub(v.confirmed_at_ms)?).ok()?;
        let at = Instant::now().checked_sub(Duration::from_millis(age_ms))?;
        Some((v.verdict(digest, true), at))
    }

    async fn shared_put(&self, digest: &str, answer: &SharedVerdict) {
        let Some(c) = &self.shared else { return };
        let ttl = if answer.trusted {
            self.trusted_ttl
        } else {
            self.untrusted_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(answer) else {
            return;
        };
        if let Err(e) = c.put(&self.shared_key(digest), bytes, ttl).await {
            tracing::warn!(error = %e, "cannot publish a release verdict to the shared cache");
        }
    }

    /// The verdict for `repository@digest` (local cache, shared cache, then the registry).
    pub async fn check(&self, digest: &str) -> Result<ReleaseVerdict, Unavailable> {
        let d = Digest::parse(digest).map_err(|source| Unavailable {
            reference: digest.to_string(),
            source: source.into(),
        })?;
        if let Some(v) = self.cached(&d) {
            return Ok(v);
        }
        if let Some((v, at)) = self.shared_get(digest).await {
            // Kept locally until the TTL from the registry's answer runs out.
            if at.elapsed() < self.ttl_of(&v) {
                self.remember_at(d, &v, at);
                return Ok(v);
            }
        }
        let image = self.repository.pinned(d);
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let v = stella_oci::verify_image_release(&self.client, &image, &self.keyring)
            .await
            .map_err(|source| Unavailable {
                reference: image.to_string(),
                source,
            })?;
        let answer = SharedVerdict::from_registry(v);
        let verdict = answer.verdict(digest, false);
        self.remember(d, &verdict);
        self.shared_put(digest, &answer).await;
        Ok(verdict)
    }
}

/// The release gate: allow-list, then referrers.
pub struct ReleaseGate {
    allow: Vec<String>,
    referrers: Option<Arc<ReferrerChecker>>,
}

impl ReleaseGate {
    pub fn new(cfg: &ReleaseConfig) -> Result<Self, StartError> {
        Ok(ReleaseGate {
            allow: cfg.trusted_scanner_digests.clone(),
            referrers: ReferrerChecker::from_config(cfg)?.map(Arc::new),
        })
    }

    /// Share registry verdicts with the other replicas through `c` (Redis).
    pub fn with_shared_cache(mut self, c: Arc<dyn SharedCache>) -> Self {
        if let Some(r) = self.referrers.as_mut().and_then(Arc::get_mut) {
            r.shared = Some(c);
        }
        self
    }

    /// The registry checker, when `release.repository` is configured.
    pub fn referrers(&self) -> Option<&ReferrerChecker> {
        self.referrers.as_deref()
    }

    /// Is `digest` on the allow-list (`release.trusted_scanner_digests`)? Its verdict is
    /// then trusted, `VerdictSource::AllowList`, whatever the registry says.
    pub fn is_allow_listed(&self, digest: &str) -> bool {
        self.allow.iter().any(|t| t == digest)
    }

    /// The verdict for a well-formed `sha256:<hex>` digest.
    ///
    /// Only a registry lookup (a local cache miss) awaits anything, and its future — the
    /// registry client's, several KB — is boxed on that path alone: the callers' futures
    /// (every sign request's pipeline) no longer carry room for it (issue #15).
    pub async fn verdict(&self, digest: &str) -> Result<ReleaseVerdict, Unavailable> {
        if self.is_allow_listed(digest) {
            return Ok(ReleaseVerdict {
                digest: digest.to_string(),
                trusted: true,
                signer: None,
                keyid: None,
                artifact_type: None,
                reason: "on the allow-list (release.trusted_scanner_digests)".into(),
                source: VerdictSource::AllowList,
                cached: false,
            });
        }
        match &self.referrers {
            Some(r) => match r.cached_verdict(digest) {
                Some(v) => Ok(v),
                None => Box::pin(r.check(digest)).await,
            },
            None => Ok(ReleaseVerdict {
                digest: digest.to_string(),
                trusted: false,
                signer: None,
                keyid: None,
                artifact_type: None,
                reason: "not on the allow-list, and no release repository is configured \
                         (release.repository)"
                    .into(),
                source: VerdictSource::NotConfigured,
                cached: false,
            }),
        }
    }
}
