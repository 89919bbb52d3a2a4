//! The service state: configuration plus every backend behind its trait, built once at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stella_keys::{DevKeys, Signer};
use stella_store::{AuditLog, MemoryQuotaStore, MemoryReplayCache, QuotaStore, ReplayCache};

use crate::auth::{Authenticator, DpopValidator, NonceIssuer};
use crate::config::Config;
use crate::dev::DevAuthority;
pub(crate) use crate::error::StartError;
use crate::jose::JwkSet;
use crate::jwks::{self, Jwks};
use crate::metrics::Metrics;
use crate::poe::Licensing;
use crate::release::ReleaseGate;

/// Signing keys by tenant.
pub struct TenantKeys {
    default: Vec<Arc<dyn Signer>>,
    tenants: HashMap<String, Vec<Arc<dyn Signer>>>,
    /// Keys of one plan of one tenant (tenant, plan): separate keys per tenant and plan.
    plans: HashMap<(String, String), Vec<Arc<dyn Signer>>>,
}

impl TenantKeys {
    pub fn new(
        default: Vec<Arc<dyn Signer>>,
        tenants: HashMap<String, Vec<Arc<dyn Signer>>>,
    ) -> Self {
        TenantKeys {
            default,
            tenants,
            plans: HashMap::new(),
        }
    }

    /// Give `tenant`'s callers entitled to `plan` their own keys.
    pub fn with_plan(mut self, tenant: &str, plan: &str, keys: Vec<Arc<dyn Signer>>) -> Self {
        self.plans
            .insert((tenant.to_string(), plan.to_string()), keys);
        self
    }

    /// The keys for `tenant` under `plan`: the plan's own keys, else the tenant's.
    pub fn for_tenant_plan(&self, tenant: &str, plan: &str) -> Option<&[Arc<dyn Signer>]> {
        match self.plans.get(&(tenant.to_string(), plan.to_string())) {
            Some(k) => Some(k),
            None => self.for_tenant(tenant),
        }
    }

    /// The keys that sign for `tenant`; `None`: this signer does not serve the tenant.
    pub fn for_tenant(&self, tenant: &str) -> Option<&[Arc<dyn Signer>]> {
        match self.tenants.get(tenant) {
            Some(k) => Some(k),
            None if !self.default.is_empty() => Some(&self.default),
            None => None,
        }
    }

    /// Every key (for startup logs).
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Signer>> {
        self.default
            .iter()
            .chain(self.tenants.values().flatten())
            .chain(self.plans.values().flatten())
    }
}

/// Everything a handler needs.
pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub licensing: Licensing,
    pub quotas: Arc<dyn QuotaStore>,
    pub audit: Arc<dyn AuditLog>,
    pub keys: TenantKeys,
    /// Release integrity: allow-list, then OCI signature referrers (`crate::release`).
    pub release: ReleaseGate,
    pub metrics: Metrics,
    /// The dev profile's embedded Authority (dev only).
    pub dev: Option<Arc<DevAuthority>>,
    /// Signs checkpoints of the audit chain head (`audit.checkpoint_key`; [`crate::checkpoints`]).
    pub audit_checkpoint_key: Option<Arc<dyn Signer>>,
    pub(crate) draining: AtomicBool,
    /// Sign pipelines running (each in its own task, whatever the client does).
    pub(crate) pipelines: Pipelines,
    /// Aggregation of unauthenticated failures (`crate::flood`).
    pub unauth_failures: crate::flood::UnauthFailures,
    /// The audit API's cursor key (`crate::audit_api`).
    pub audit_api: crate::audit_cursor::AuditApi,
    /// Keyless signing (`[keyless]`; `crate::keyless`).
    pub keyless: Option<crate::keyless::Keyless>,
}

/// Counts the pipelines in flight, so shutdown can wait for them before closing the audit
/// log (a pipeline whose client went away still writes its record).
#[derive(Default)]
pub(crate) struct Pipelines {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running pipeline; dropping it (the task ended, however) counts it out.
pub(crate) struct PipelineGuard(Arc<App>);

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let p = &self.0.pipelines;
        if p.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            p.idle.notify_waiters();
        }
    }
}

impl Pipelines {
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

/// Shared state of the router (cheap to clone).
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl App {
    /// Mark the service as shutting down (`/readyz` turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Count a pipeline in until the guard drops.
    pub(crate) fn pipeline_started(self: &Arc<Self>) -> PipelineGuard {
        self.pipelines.running.fetch_add(1, Ordering::AcqRel);
        PipelineGuard(self.clone())
    }

    /// Append the summary records of unauthenticated-failure windows that have closed
    /// (every open one when `all`: shutdown).
    pub async fn write_failure_summaries(&self, all: bool) {
        for rec in self
            .unauth_failures
            .take_summaries(std::time::Instant::now(), all)
        {
            let id = rec.audit_id.clone();
            if let Err(e) = self.audit.append(rec).await {
                self.metrics.audit_failure();
                tracing::error!(audit_id = %id, error = %e, "cannot write an unauthenticated-failure summary record");
            }
        }
    }

    /// Resolve once no pipeline is running.
    pub async fn pipelines_finished(&self) {
        loop {
            let notified = self.pipelines.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pipelines.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Builds an [`App`] from a [`Config`]; backends can be swapped (tests, later issues).
pub struct AppBuilder {
    config: Config,
    dev_keys: DevKeys,
    audit: Option<Arc<dyn AuditLog>>,
    quotas: Option<Arc<dyn QuotaStore>>,
    replay: Option<Arc<dyn ReplayCache>>,
    signers: Option<TenantKeys>,
    password: Option<zeroize::Zeroizing<String>>,
    nonce_secret: Option<zeroize::Zeroizing<Vec<u8>>>,
    shared_cache: Option<Arc<dyn stella_store::SharedCache>>,
    keyless_tokens: Option<Arc<dyn stella_keyless::IdentityTokenSource>>,
}

/// A declared `signing_mode` must match where every key lives (`file`, `hsm`, `kms`).
fn check_mode(at: &str, mode: &Option<String>, keys: &[Arc<dyn Signer>]) -> Result<(), StartError> {
    if let Some(m) = mode {
        if let Some(k) = keys.iter().find(|k| k.mode() != m) {
            return Err(StartError::Config(format!(
                "{at}: signing_mode is {m:?} but key {} is a {} key",
                k.key_id(),
                k.mode()
            )));
        }
    }
    Ok(())
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, StartError> {
    let pem =
        std::fs::read(path).map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))
}

fn http_client(ca: Option<&PathBuf>, timeout_ms: u64) -> Result<reqwest::Client, StartError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms.max(100)))
        .connect_timeout(Duration::from_millis(timeout_ms.clamp(100, 5000)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = ca {
        for c in read_ca(ca)? {
            b = b.tls_certs_merge([c]);
        }
    }
    b.build()
        .map_err(|e| StartError::Tls(format!("HTTP client: {e}")))
}

/// Shortest nonce secret taken from the environment.
pub(crate) const MIN_NONCE_SECRET_BYTES: usize = 32;

/// A random nonce secret from `fill` (the system RNG). If the RNG fails the service does not
/// start: a secret derived from anything guessable (the old fallback was the clock) would
/// let anyone mint valid nonces.
fn generated_nonce_secret(
    fill: impl FnOnce(&mut [u8]) -> Result<(), aws_lc_rs::error::Unspecified>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StartError> {
    let mut secret = zeroize::Zeroizing::new(vec![0u8; 32]);
    fill(&mut secret).map_err(|_| {
        StartError::Config(
            "the system random number generator failed: cannot make the DPoP nonce secret".into(),
        )
    })?;
    Ok(secret)
}

/// The validity `signing.keyring` states for every configured signing key (a key it does not
/// list: no expiry, not revoked, and a warning).
fn key_validity(
    path: &Path,
    dev: DevKeys,
    keys: &TenantKeys,
) -> Result<Vec<crate::metrics::KeyValidity>, StartError> {
    let ring = stella_keys::Keyring::load(path, dev)
        .map_err(|e| StartError::Config(format!("signing.keyring {}: {e}", path.display())))?;
    let mut out: Vec<crate::metrics::KeyValidity> = Vec::new();
    for k in keys.all() {
        let id = k.key_id().to_string();
        if out.iter().any(|v| v.key_id == id) {
            continue;
        }
        let entry = ring
            .keys()
            .iter()
            .find(|t| t.key.key_id().to_string() == id);
        if entry.is_none() {
            tracing::warn!(key_id = %id, keyring = %path.display(), "signing key not in signing.keyring: no expiry or revocation is exported for it");
        }
        out.push(crate::metrics::KeyValidity {
            key_id: id,
            not_after: entry.and_then(|t| t.not_after).map(|t| t.unix_timestamp()),
            revoked: entry.is_some_and(|t| t.revoked),
        });
    }
    Ok(out)
}

/// Seconds from the configuration as `i64` (validated to at most
/// [`crate::config::MAX_CONFIG_SECONDS`]; saturating for a config that skipped validation).
fn secs_i64(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

impl AppBuilder {
    pub fn new(config: Config) -> Self {
        AppBuilder {
            config,
            dev_keys: DevKeys::Refuse,
            audit: None,
            quotas: None,
            replay: None,
            signers: None,
            password: None,
            nonce_secret: None,
            shared_cache: None,
            keyless_tokens: None,
        }
    }

    /// The cache shared by the replicas (Redis, with `[quotas] backend = "redis"`): rotating
    /// DPoP nonce keys (unless a fixed one is configured), PoE answers and release verdicts.
    pub fn shared_cache(mut self, c: Arc<dyn stella_store::SharedCache>) -> Self {
        self.shared_cache = Some(c);
        self
    }

    /// The DPoP nonce key shared by all replicas (e.g. from Redis); wins over
    /// `dpop.nonce_secret_env` and the per-process random key.
    pub fn nonce_secret(mut self, s: zeroize::Zeroizing<Vec<u8>>) -> Self {
        self.nonce_secret = Some(s);
        self
    }

    /// The Signer's identity tokens for keyless signing, instead of `[keyless.identity]`.
    pub fn keyless_tokens(mut self, t: Arc<dyn stella_keyless::IdentityTokenSource>) -> Self {
        self.keyless_tokens = Some(t);
        self
    }

    /// Accept the published development key as a signing key (loud warning).
    pub fn dev_keys(mut self, d: DevKeys) -> Self {
        self.dev_keys = d;
        self
    }

    pub fn audit(mut self, a: Arc<dyn AuditLog>) -> Self {
        self.audit = Some(a);
        self
    }

    pub fn quotas(mut self, q: Arc<dyn QuotaStore>) -> Self {
        self.quotas = Some(q);
        self
    }

    pub fn replay(mut self, r: Arc<dyn ReplayCache>) -> Self {
        self.replay = Some(r);
        self
    }

    /// Use these signers instead of loading `signing.*` references.
    pub fn signers(mut self, k: TenantKeys) -> Self {
        self.signers = Some(k);
        self
    }

    /// Password for encrypted key files (default: `COSIGN_PASSWORD`).
    pub fn key_password(mut self, p: zeroize::Zeroizing<String>) -> Self {
        self.password = Some(p);
        self
    }

    fn load_ref(&self, r: &str) -> Result<Arc<dyn Signer>, StartError> {
        let key_ref = stella_keys::KeyRef::parse(r).map_err(|source| StartError::Key {
            reference: r.to_string(),
            source,
        })?;
        let pw = self.password.clone();
        let mut password = move || match &pw {
            Some(p) => Ok(p.clone()),
            None => std::env::var("COSIGN_PASSWORD")
                .map(zeroize::Zeroizing::new)
                .map_err(|_| {
                    stella_keys::KeyError::Password(
                        "the key is encrypted and COSIGN_PASSWORD is not set".into(),
                    )
                }),
        };
        let signer =
            stella_keys::load_signer(&key_ref, self.dev_keys, &mut password).map_err(|source| {
                StartError::Key {
                    reference: r.to_string(),
                    source,
                }
            })?;
        if stella_keys::is_dev_key(signer.public_key()) {
            tracing::warn!(key_id = %signer.key_id(), "signing with the PUBLISHED DEVELOPMENT KEY: never in production");
        }
        Ok(Arc::from(signer))
    }

    /// Build the app (opens the audit log, loads keys; fetches nothing yet).
    pub fn build(self) -> Result<App, StartError> {
        let mut cfg = self.config.clone();
        let dev = if cfg.dev.enabled {
            Some(Arc::new(crate::dev::prepare(&mut cfg)?))
        } else {
            None
        };
        if dev.is_some() {
            crate::dev::audit_checkpoint_key(&mut cfg)?;
        }
        let audit_checkpoint_key = match &cfg.audit.checkpoint_key {
            Some(r) => Some(self.load_ref(r)?),
            None => {
                tracing::warn!("audit.checkpoint_key is not set: no signed checkpoints, so records cut off the end of the audit log cannot be detected");
                None
            }
        };
        let keys = match self.signers {
            Some(k) => k,
            None => {
                let mut default = Vec::new();
                for r in &cfg.signing.keys {
                    default.push(self.load_ref(r)?);
                }
                let mut tenants = HashMap::new();
                for (t, tc) in &cfg.signing.tenants {
                    let mut ks = Vec::new();
                    for r in &tc.keys {
                        ks.push(self.load_ref(r)?);
                    }
                    if ks.is_empty() {
                        if tc.keyless == crate::config::KeylessUse::Only {
                            continue;
                        }
                        return Err(StartError::Config(format!("signing.tenants.{t}: no keys")));
                    }
                    check_mode(&format!("signing.tenants.{t}"), &tc.signing_mode, &ks)?;
                    tenants.insert(t.clone(), ks);
                }
                if default.is_empty()
                    && tenants.is_empty()
                    && cfg.signing.keyless != crate::config::KeylessUse::Only
                {
                    return Err(StartError::Config("no signing keys configured".into()));
                }
                let mut keys = TenantKeys::new(default, tenants);
                for (t, tc) in &cfg.signing.tenants {
                    for (p, pc) in &tc.plans {
                        let mut ks = Vec::new();
                        for r in &pc.keys {
                            ks.push(self.load_ref(r)?);
                        }
                        check_mode(
                            &format!("signing.tenants.{t}.plans.{p}"),
                            &pc.signing_mode,
                            &ks,
                        )?;
                        keys = keys.with_plan(t, p, ks);
                    }
                }
                keys
            }
        };
        let jwks = match (&dev, &cfg.authority.jwks_file, &cfg.authority.jwks_url) {
            (Some(d), _, _) => Jwks::fixed(JwkSet {
                keys: vec![d.jwk()],
            }),
            (None, Some(f), _) => {
                Jwks::from_file(f).map_err(|e| StartError::Config(e.to_string()))?
            }
            (None, None, Some(u)) => Jwks::remote(
                u.clone(),
                http_client(cfg.authority.ca_file.as_ref(), cfg.authority.timeout_ms)?,
                Duration::from_secs(cfg.authority.jwks_cache_seconds),
                Duration::from_secs(cfg.authority.jwks_refetch_floor_seconds),
            ),
            (None, None, None) => {
                return Err(StartError::Config(
                    "set authority.jwks_url or authority.jwks_file".into(),
                ))
            }
        };
        let nonce = if cfg.dpop.require_nonce
            && self.nonce_secret.is_none()
            && cfg.dpop.nonce_secret_env.is_none()
            && self.shared_cache.is_some()
        {
            // Replicas share rotating keys through the shared cache.
            Some(NonceIssuer::rotating(
                self.shared_cache.clone(),
                cfg.dpop.nonce_rotation_seconds,
                cfg.dpop.nonce_lifetime_seconds,
            ))
        } else if cfg.dpop.require_nonce {
            let secret = match (&self.nonce_secret, &cfg.dpop.nonce_secret_env) {
                // Shared by the replicas (Redis), or given by the embedding program.
                (Some(s), _) => s.clone(),
                (None, Some(var)) => {
                    let v = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                        StartError::Config(format!("dpop.nonce_secret_env: {var} is not set"))
                    })?);
                    if v.len() < MIN_NONCE_SECRET_BYTES {
                        return Err(StartError::Config(format!(
                            "dpop.nonce_secret_env: {var} holds fewer than {MIN_NONCE_SECRET_BYTES} bytes"
                        )));
                    }
                    zeroize::Zeroizing::new(v.as_bytes().to_vec())
                }
                (None, None) => generated_nonce_secret(|buf| {
                    use aws_lc_rs::rand::SecureRandom as _;
                    aws_lc_rs::rand::SystemRandom::new().fill(buf)
                })?,
            };
            Some(NonceIssuer::new(&secret, cfg.dpop.nonce_lifetime_seconds))
        } else {
            None
        };
        let replay: Arc<dyn ReplayCache> = self.replay.unwrap_or_else(|| {
            Arc::new(MemoryReplayCache::with_partition_limit(
                cfg.dpop.replay_cache_entries,
                cfg.dpop.replay_cache_entries_per_tenant,
            ))
        });
        let auth = Authenticator {
            jwks,
            issuer: cfg.authority.issuer.clone(),
            audience: cfg.authority.audience.clone(),
            scope: cfg.authority.required_scope.clone(),
            token_algs: jwks::algs(&cfg.authority.algorithms),
            skew: secs_i64(cfg.authority.clock_skew_seconds),
            require_typ: cfg.authority.require_at_jwt_typ,
            token_cache: (cfg.authority.verified_token_cache_entries > 0)
                .then(|| crate::auth::TokenCache::new(cfg.authority.verified_token_cache_entries)),
            dpop: DpopValidator {
                algs: jwks::algs(&cfg.dpop.algorithms),
                max_age: secs_i64(cfg.dpop.max_age_seconds),
                skew: secs_i64(cfg.dpop.clock_skew_seconds),
                replay,
                nonce,
            },
        };
        let mut licensing = Licensing::new(
            &cfg.licensing,
            http_client(cfg.licensing.ca_file.as_ref(), cfg.licensing.timeout_ms)?,
            dev.is_some(),
        );
        if let Some(c) = &self.shared_cache {
            licensing = licensing.with_shared_cache(c.clone());
        }
        if licensing.is_bypassed() {
            tracing::warn!(
                reason = cfg.licensing.bypass_reason.as_deref().unwrap_or(""),
                "LICENSING BYPASS IS ON: entitlement is not checked; every request is audited as bypass"
            );
        }
        let audit: Arc<dyn AuditLog> = match self.audit {
            Some(a) => a,
            None if cfg.audit.backend == "postgres" => {
                // Connecting is async: the caller opens it (`stella_store::PgAudit::connect`,
                // as `stella signer serve` does) and passes it to `AppBuilder::audit`.
                return Err(StartError::Config(
                    "audit.backend postgres: open the log with PgAudit::connect and pass it to AppBuilder::audit".into(),
                ));
            }
            None => {
                let mut o = stella_store::SqliteOptions::new(&cfg.audit.path);
                o.batch_max = cfg.audit.batch_max;
                o.linger = stella_store::Linger {
                    delay: std::time::Duration::from_micros(cfg.audit.commit_delay_us),
                    siblings: cfg.audit.commit_siblings,
                };
                Arc::new(stella_store::SqliteAudit::open(o)?)
            }
        };
        let quotas = self
            .quotas
            .unwrap_or_else(|| Arc::new(MemoryQuotaStore::new()));
        let mut release = ReleaseGate::new(&cfg.release)?;
        if let Some(c) = &self.shared_cache {
            release = release.with_shared_cache(c.clone());
        }
        if let Some(r) = release.referrers() {
            tracing::info!(repository = %r.repository(), "release integrity: OCI signature referrers");
        }
        let unauth_failures = crate::flood::UnauthFailures::new(crate::flood::FloodLimits {
            window: Duration::from_secs(cfg.audit.unauthenticated_window_seconds.max(1)),
            burst: cfg.audit.unauthenticated_burst,
            max_sources: cfg.audit.unauthenticated_sources.max(1),
            records_per_window: cfg.audit.unauthenticated_records_per_window,
        });
        let audit_api = match &cfg.audit.cursor_secret_env {
            Some(var) => {
                let v = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    StartError::Config(format!("audit.cursor_secret_env: {var} is not set"))
                })?);
                if v.len() < MIN_NONCE_SECRET_BYTES {
                    return Err(StartError::Config(format!(
                        "audit.cursor_secret_env: {var} holds fewer than {MIN_NONCE_SECRET_BYTES} bytes"
                    )));
                }
                crate::audit_cursor::AuditApi::new(Some(v.as_bytes()))
            }
            None => crate::audit_cursor::AuditApi::new(None),
        }
        .map_err(|e| StartError::Config(e.to_string()))?;
        let metrics = Metrics::with_plans(
            cfg.licensing
                .plans
                .iter()
                .cloned()
                .chain([cfg.licensing.bypass_plan.plan.clone()])
                .chain(
                    cfg.signing
                        .tenants
                        .values()
                        .flat_map(|t| t.plans.keys().cloned()),
                )
                .chain(dev.is_some().then(|| "dev".to_string())),
        );
        if let Some(path) = &cfg.signing.keyring {
            metrics.set_key_validity(key_validity(path, self.dev_keys, &keys)?);
        }
        let dev_tokens = dev.as_ref().map(|d| {
            Arc::new(crate::dev::DevTokens(Arc::new(d.identity())))
                as Arc<dyn stella_keyless::IdentityTokenSource>
        });
        let keyless = crate::keyless::build(&cfg, dev_tokens, self.keyless_tokens)?;
        Ok(App {
            keyless,
            audit_api,
            config: cfg,
            auth,
            licensing,
            quotas,
            audit,
            keys,
            release,
            metrics,
            dev,
            audit_checkpoint_key,
            draining: AtomicBool::new(false),
            pipelines: Pipelines::default(),
            unauth_failures,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue #8 item 10: the nonce secret fell back to timestamp bytes when the RNG failed.
    #[test]
    fn nonce_secret_fails_when_the_rng_fails() {
        let e = generated_nonce_secret(|_| Err(aws_lc_rs::error::Unspecified)).unwrap_err();
        assert!(e.to_string().contains("random number generator"), "{e}");
        let ok = generated_nonce_secret(|b| {
            b.fill(7);
            Ok(())
        })
        .unwrap();
        assert_eq!(ok.as_slice(), &[7u8; 32]);
        let real = generated_nonce_secret(|b| {
            use aws_lc_rs::rand::SecureRandom as _;
            aws_lc_rs::rand::SystemRandom::new().fill(b)
        })
        .unwrap();
        assert_ne!(real.as_slice(), &[0u8; 32]);
    }
}

#[cfg(test)]
mod key_mode_tests {
    use super::*;

    #[test]
    fn declared_mode_must_match_the_keys() {
        let k: Arc<dyn Signer> =
            Arc::new(stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).unwrap());
        assert!(check_mode("t", &None, std::slice::from_ref(&k)).is_ok());
        assert!(check_mode("t", &Some("file".into()), std::slice::from_ref(&k)).is_ok());
        let e = check_mode("signing.tenants.a", &Some("hsm".into()), &[k]).unwrap_err();
        assert!(
            e.to_string().contains("signing_mode is \"hsm\" but key"),
            "{e}"
        );
    }

    #[test]
    fn plan_keys_before_tenant_keys() {
        let a: Arc<dyn Signer> =
            Arc::new(stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).unwrap());
        let b: Arc<dyn Signer> =
            Arc::new(stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).unwrap());
        let mut tenants = HashMap::new();
        tenants.insert("t".to_string(), vec![a.clone()]);
        let keys = TenantKeys::new(Vec::new(), tenants).with_plan("t", "gold", vec![b.clone()]);
        let id = |ks: Option<&[Arc<dyn Signer>]>| ks.map(|k| k[0].key_id().clone());
        assert_eq!(
            id(keys.for_tenant_plan("t", "gold")),
            Some(b.key_id().clone())
        );
        assert_eq!(
            id(keys.for_tenant_plan("t", "free")),
            Some(a.key_id().clone())
        );
        assert!(keys.for_tenant_plan("other", "gold").is_none());
        assert_eq!(keys.all().count(), 2);
    }
}
