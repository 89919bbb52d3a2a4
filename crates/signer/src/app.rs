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
    #[error("audit checkpoint: {0}")]
    AuditCheckpoint(#[from] stella_store::checkpoint::CheckpointError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Io(String),
}

/// Signing keys by tenant.
pub struct TenantKeys {
    default: Vec<Arc<dyn Signer>>,
    tenants: HashMap<String, Vec<Arc<dyn Signer>>>,
}

impl TenantKeys {
    pub fn new(
        default: Vec<Arc<dyn Signer>>,
        tenants: HashMap<String, Vec<Arc<dyn Signer>>>,
    ) -> Self {
        TenantKeys { default, tenants }
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
        self.default.iter().chain(self.tenants.values().flatten())
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
    /// Signs checkpoints of the audit chain head (`audit.checkpoint_key`; [`crate::checkpoints`]).
    pub audit_checkpoint_key: Option<Arc<dyn Signer>>,
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
    nonce_secret: Option<zeroize::Zeroizing<Vec<u8>>>,
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
            nonce_secret: None,
        }
    }

    /// The DPoP nonce key shared by all replicas (e.g. from Redis); wins over
    /// `dpop.nonce_secret_env` and the per-process random key.
    pub fn nonce_secret(mut self, s: zeroize::Zeroizing<Vec<u8>>) -> Self {
        self.nonce_secret = Some(s);
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
                        return Err(StartError::Config(format!("signing.tenants.{t}: no keys")));
                    }
                    tenants.insert(t.clone(), ks);
                }
                if default.is_empty() && tenants.is_empty() {
                    return Err(StartError::Config("no signing keys configured".into()));
                }
                TenantKeys::new(default, tenants)
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
            let secret = match (&self.nonce_secret, &cfg.dpop.nonce_secret_env) {
                (Some(s), _) => s.to_vec(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| {
                        StartError::Config(format!("dpop.nonce_secret_env: {var} is not set"))
                    })?
                    .into_bytes(),
                (None, None) => crate::trace::random_hex(32).into_bytes(),
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
            audit_checkpoint_key,
            draining: AtomicBool::new(false),
        })
    }
}
