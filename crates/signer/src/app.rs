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
use crate::jose::JwkSet;
use crate::jwks::{self, Jwks};
use crate::metrics::Metrics;
use crate::poe::Licensing;
use crate::release::ReleaseGate;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("signing key {reference}: {source}")]
    Key {
        reference: String,
        #[source]
        source: stella_keys::KeyError,
    },
    #[error("audit log: {0}")]
    Audit(#[from] stella_store::StoreError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Io(String),
}

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
    /// Release integrity: allow-list, then OCI signature referrers ([`crate::release`]).
    pub release: ReleaseGate,
    pub metrics: Metrics,
    /// The dev profile's embedded Authority (dev only).
    pub dev: Option<DevAuthority>,
    pub(crate) draining: AtomicBool,
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
        }
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
        if stella_keys::keyref::is_dev_key(signer.public_key()) {
            tracing::warn!(key_id = %signer.key_id(), "signing with the PUBLISHED DEVELOPMENT KEY: never in production");
        }
        Ok(Arc::from(signer))
    }

    /// Build the app (opens the audit log, loads keys; fetches nothing yet).
    pub fn build(self) -> Result<App, StartError> {
        let mut cfg = self.config.clone();
        let dev = if cfg.dev.enabled {
            Some(crate::dev::prepare(&mut cfg)?)
        } else {
            None
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
                        return Err(StartError::Config(format!("signing.tenants.{t}: no keys")));
                    }
                    check_mode(&format!("signing.tenants.{t}"), &tc.signing_mode, &ks)?;
                    tenants.insert(t.clone(), ks);
                }
                if default.is_empty() && tenants.is_empty() {
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
            (None, Some(f), _) => Jwks::from_file(f).map_err(StartError::Config)?,
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
        let nonce = if cfg.dpop.require_nonce {
            let secret = match &cfg.dpop.nonce_secret_env {
                Some(var) => std::env::var(var)
                    .map_err(|_| {
                        StartError::Config(format!("dpop.nonce_secret_env: {var} is not set"))
                    })?
                    .into_bytes(),
                None => crate::trace::random_hex(32).into_bytes(),
            };
            Some(NonceIssuer::new(&secret, cfg.dpop.nonce_lifetime_seconds))
        } else {
            None
        };
        let replay: Arc<dyn ReplayCache> = self
            .replay
            .unwrap_or_else(|| Arc::new(MemoryReplayCache::new(cfg.dpop.replay_cache_entries)));
        let auth = Authenticator {
            jwks,
            issuer: cfg.authority.issuer.clone(),
            audience: cfg.authority.audience.clone(),
            scope: cfg.authority.required_scope.clone(),
            token_algs: jwks::algs(&cfg.authority.algorithms),
            skew: cfg.authority.clock_skew_seconds as i64,
            require_typ: cfg.authority.require_at_jwt_typ,
            token_cache: (cfg.authority.verified_token_cache_entries > 0)
                .then(|| crate::auth::TokenCache::new(cfg.authority.verified_token_cache_entries)),
            dpop: DpopValidator {
                algs: jwks::algs(&cfg.dpop.algorithms),
                max_age: cfg.dpop.max_age_seconds as i64,
                skew: cfg.dpop.clock_skew_seconds as i64,
                replay,
                nonce,
            },
        };
        let licensing = Licensing::new(
            &cfg.licensing,
            http_client(cfg.licensing.ca_file.as_ref(), cfg.licensing.timeout_ms)?,
            dev.is_some(),
        );
        if licensing.is_bypassed() {
            tracing::warn!(
                reason = cfg.licensing.bypass_reason.as_deref().unwrap_or(""),
                "LICENSING BYPASS IS ON: entitlement is not checked; every request is audited as bypass"
            );
        }
        let audit: Arc<dyn AuditLog> = match self.audit {
            Some(a) => a,
            None => {
                let mut o = stella_store::SqliteOptions::new(&cfg.audit.path);
                o.batch_max = cfg.audit.batch_max;
                Arc::new(stella_store::SqliteAudit::open(o)?)
            }
        };
        let quotas = self
            .quotas
            .unwrap_or_else(|| Arc::new(MemoryQuotaStore::new()));
        let release = ReleaseGate::new(&cfg.release)?;
        if let Some(r) = release.referrers() {
            tracing::info!(repository = %r.repository(), "release integrity: OCI signature referrers");
        }
        Ok(App {
            config: cfg,
            auth,
            licensing,
            quotas,
            audit,
            keys,
            release,
            metrics: Metrics::new(),
            dev,
            draining: AtomicBool::new(false),
        })
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
