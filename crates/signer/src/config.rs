//! Service configuration: a TOML file (commented sample: `etc/stella.toml`) with environment
//! overrides, then validation.
//!
//! Every setting can be overridden by `STELLA_SIGNER__<SECTION>__<KEY>=value` (sections and
//! keys as in the file, case-insensitive, `__` between levels), e.g.
//! `STELLA_SIGNER__SERVER__LISTEN=0.0.0.0:8443` or `STELLA_SIGNER__LICENSING__BYPASS=true`.
//! A value is read as a TOML value when it parses as one (numbers, booleans, arrays like
//! `["a","b"]`) and as a string otherwise. Relative paths in a file are resolved against the
//! file's folder; with no file, against the working directory. Unknown keys are errors: a
//! misspelt security setting must not be silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest accepted duration setting (ten years): every duration from the configuration is
/// at most this, so converting it to `i64` seconds or adding it to a clock cannot overflow.
pub(crate) const MAX_CONFIG_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// Prefix of environment overrides.
pub(crate) const ENV_PREFIX: &str = "STELLA_SIGNER__";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("environment override {var}: {reason}")]
    Env {
        var: String,
        reason: EnvOverrideError,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub authority: AuthorityConfig,
    pub dpop: DpopConfig,
    pub licensing: LicensingConfig,
    pub signing: SigningConfig,
    pub release: ReleaseConfig,
    pub audit: AuditConfig,
    pub quotas: QuotaConfig,
    pub log: LogConfig,
    pub dev: DevConfig,
    /// Keyless signing (Fulcio certificates, RFC 3161 timestamps, optional Rekor):
    /// `crate::keyless`.
    pub keyless: KeylessConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// The service's external base URL (`https://signer.example.com`), used for DPoP `htu`
    /// checks behind proxies. Unset: scheme of the listener + the request's `Host`.
    pub public_url: Option<String>,
    pub tls: Option<TlsConfig>,
    /// Hard limit on request bodies (the plan limit may be lower).
    pub max_body_bytes: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_seconds: u64,
    /// Worker threads (0: one per core).
    pub worker_threads: usize,
    /// A connection must deliver a complete request head (TLS handshake and protocol
    /// detection included, and each further request on a kept-alive connection) within this
    /// time, or it is closed (slowloris).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive whole within this time, or the request is refused and its
    /// connection closed.
    pub request_timeout_ms: u64,
    /// Most subjects in one sign request (`400 invalid_request` past it, before any is
    /// looked at).
    pub max_subjects: usize,
    /// Most connections served at once; further ones wait in the kernel's listen backlog
    /// (not accepted, so they cost no memory here) until one closes.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8443".into(),
            public_url: None,
            tls: None,
            max_body_bytes: 8 * 1024 * 1024,
            shutdown_grace_seconds: 30,
            worker_threads: 0,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 1024,
            max_subjects: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificates for client certificates (mTLS). Unset: no client certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS connections without a client certificate (otherwise optional, so
    /// DPoP-bound callers need none).
    #[serde(default)]
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityConfig {
    /// Expected `iss` of access tokens.
    pub issuer: String,
    /// JWKS URL (cached; refetched on an unknown `kid`).
    pub jwks_url: Option<String>,
    /// Pinned JWKS file for offline sites (instead of `jwks_url`).
    pub jwks_file: Option<PathBuf>,
    /// Extra CA (PEM) trusted for `jwks_url` over HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Required audience.
    pub audience: String,
    /// Required scope.
    pub required_scope: String,
    /// Accepted token algorithms (asymmetric only: ES256, EdDSA, RS256, PS256).
    pub algorithms: Vec<String>,
    /// Allowed clock skew for `exp`/`nbf`/`iat`.
    pub clock_skew_seconds: u64,
    /// How long a fetched JWKS is used before it is refetched.
    pub jwks_cache_seconds: u64,
    /// Least time between two fetches (an unknown `kid` cannot make us hammer the Authority).
    pub jwks_refetch_floor_seconds: u64,
    /// Require the RFC 9068 `typ` header `at+jwt`.
    pub require_at_jwt_typ: bool,
    /// Timeout of a JWKS fetch.
    pub timeout_ms: u64,
    /// Tokens whose signature was verified are remembered (by SHA-256) until they expire, so a
    /// caller's repeated token is not re-verified; time checks, the sender constraint and
    /// scope still run on every request. 0 disables the cache.
    pub verified_token_cache_entries: usize,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        AuthorityConfig {
            issuer: String::new(),
            jwks_url: None,
            jwks_file: None,
            ca_file: None,
            audience: "signer".into(),
            required_scope: "signer.sign".into(),
            algorithms: vec![
                "ES256".into(),
                "EdDSA".into(),
                "RS256".into(),
                "PS256".into(),
            ],
            clock_skew_seconds: 30,
            jwks_cache_seconds: 300,
            jwks_refetch_floor_seconds: 30,
            require_at_jwt_typ: true,
            timeout_ms: 3000,
            verified_token_cache_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// Accepted proof algorithms.
    pub algorithms: Vec<String>,
    /// A proof's `iat` may be at most this old (and `clock_skew_seconds` in the future); its
    /// `jti` is remembered for this window.
    pub max_age_seconds: u64,
    pub clock_skew_seconds: u64,
    /// Require a server nonce (`DPoP-Nonce`, RFC 9449 §8).
    pub require_nonce: bool,
    pub nonce_lifetime_seconds: u64,
    /// Environment variable holding the nonce HMAC secret (replicas must share it).
    /// Unset: a random secret per process.
    pub nonce_secret_env: Option<String>,
    /// With `[quotas] backend = "redis"` and no `nonce_secret_env`, the nonce key shared by
    /// the replicas changes every this many seconds (raised to `nonce_lifetime_seconds` if shorter).
    pub nonce_rotation_seconds: u64,
    /// Most live `jti`s remembered (past it, proofs are refused rather than forgotten).
    pub replay_cache_entries: usize,
    /// Most live `jti`s one tenant may hold, so one tenant's callers cannot fill the cache
    /// for every tenant (past it, that tenant's proofs are refused; others are served).
    pub replay_cache_entries_per_tenant: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            algorithms: vec!["ES256".into(), "EdDSA".into()],
            max_age_seconds: 60,
            clock_skew_seconds: 5,
            require_nonce: false,
            nonce_lifetime_seconds: 300,
            nonce_secret_env: None,
            nonce_rotation_seconds: 3600,
            replay_cache_entries: 2_000_000,
            replay_cache_entries_per_tenant: 500_000,
        }
    }
}

/// Plan limits (from Licensing, or the bypass plan).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "snake_case")]
pub struct PlanLimits {
    pub plan: String,
    /// Sustained requests per second.
    pub qps: f64,
    /// Burst (token bucket size).
    pub burst: f64,
    pub max_concurrent: u32,
    pub max_artifact_bytes: u64,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            plan: "bypass".into(),
            qps: 50.0,
            burst: 100.0,
            max_concurrent: 32,
            max_artifact_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LicensingConfig {
    /// `POST` introspection endpoint (`.../license/introspect`).
    pub introspect_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Environment variable holding a bearer token for Licensing, if it wants one.
    pub token_env: Option<String>,
    pub timeout_ms: u64,
    /// How long an introspection answer is reused (bounded further by the license expiry).
    pub cache_ttl_seconds: u64,
    /// While Licensing is down, the last known active entitlement is used for this long
    /// after it was last confirmed.
    pub grace_ttl_seconds: u64,
    pub cache_entries: usize,
    /// Operator emergency bypass: no introspection; every request is audited `bypass`.
    pub bypass: bool,
    /// Required with `bypass`: why (ticket, incident), written into every audit record.
    pub bypass_reason: Option<String>,
    /// Limits applied while bypassing.
    pub bypass_plan: PlanLimits,
    /// The plans Licensing answers with: their names label the quota metrics (`plan`); any
    /// other plan is counted as `other`, so the label stays a bounded set.
    pub plans: Vec<String>,
}

impl Default for LicensingConfig {
    fn default() -> Self {
        LicensingConfig {
            introspect_url: None,
            ca_file: None,
            token_env: None,
            timeout_ms: 2000,
            cache_ttl_seconds: 300,
            grace_ttl_seconds: 3600,
            cache_entries: 100_000,
            bypass: false,
            bypass_reason: None,
            bypass_plan: PlanLimits::default(),
            plans: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Key references used for tenants without their own keys (several: multi-signature).
    /// Needs `default_keys_for_unlisted_tenants = true`: signing for every tenant the
    /// Authority names is never implied.
    pub keys: Vec<String>,
    /// Say that `keys` sign for every tenant not listed under `tenants` (default false:
    /// only listed tenants are served; any other gets `403 tenant_mismatch`).
    pub default_keys_for_unlisted_tenants: bool,
    /// Per-tenant keys. When this is non-empty and `keys` is empty, tokens for any other
    /// tenant are refused (`tenant_mismatch`).
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Keyless signing for tenants served by the default keys (`off`, `allowed`, `default`,
    /// `only`; [`crate::keyless::KeylessUse`]).
    pub keyless: KeylessUse,
    /// Keyring (`stella_keys::Keyring` TOML or folder) stating the signing keys' validity
    /// (`not_after`, `revoked`): exported as `stella_signer_key_expiry_seconds` and
    /// `stella_signer_key_revoked` for the alerts. Informational: signing is not refused.
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub keys: Vec<String>,
    /// Where this tenant's keys must live: `file`, `hsm` (PKCS#11) or `kms` (AWS KMS).
    /// Checked against the loaded keys at startup; absent: not checked.
    #[serde(alias = "signingMode")]
    pub signing_mode: Option<String>,
    /// Keys for one plan of this tenant (`signing.tenants.T.plans.P`), used instead of the
    /// tenant's keys when the caller's entitlement is for that plan.
    pub plans: BTreeMap<String, PlanKeysConfig>,
    /// Keyless signing for this tenant (`off`, `allowed`, `default`, `only`;
    /// [`crate::keyless::KeylessUse`]).
    pub keyless: KeylessUse,
}

/// Keys of one tenant plan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanKeysConfig {
    pub keys: Vec<String>,
    /// As [`TenantConfig::signing_mode`].
    #[serde(alias = "signingMode")]
    pub signing_mode: Option<String>,
}

/// The signing modes a tenant or plan may declare.
pub(crate) const SIGNING_MODES: [&str; 3] = ["file", "hsm", "kms"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseConfig {
    /// Require `scannerImageDigest` to be a trusted scanner release.
    pub enforce: bool,
    /// Allow-list of trusted scanner image digests (`sha256:<hex>`): trusted without asking
    /// the registry (audit verdict `trusted-allowlist`).
    pub trusted_scanner_digests: Vec<String>,
    /// Repository holding the scanner images and their signature referrers
    /// (`HOST[:PORT]/PATH`, no tag or digest). Set: a digest not on the allow-list is checked
    /// with the OCI referrers of `repository@digest` (needs `keyring`).
    pub repository: Option<String>,
    /// Release keyring (TOML file or folder, `stella_keys::Keyring`); only keys valid for
    /// purpose `release` count.
    pub keyring: Option<PathBuf>,
    /// Signed key revocation list (`stella key revoke`, docs/keys.md) applied to `keyring`.
    pub revocations: Option<PathBuf>,
    /// Plain HTTP to `repository` even when it is not on the loopback interface (registries
    /// on a trusted private network). Off: HTTPS, except for loopback registries.
    pub plain_http: bool,
    /// How long a *trusted* verdict is reused per digest (0: not cached).
    pub verdict_cache_ttl_secs: u64,
    /// How long an *untrusted* verdict is reused (0, the default: asked again every time, so
    /// an image signed a moment ago is accepted at once). Registry errors are never cached.
    pub untrusted_cache_ttl_secs: u64,
    /// Most cached verdicts (the oldest go first).
    pub verdict_cache_entries: usize,
    /// Attempts per registry request (retries with backoff for unreachable registries, 5xx,
    /// 429) before the answer is `503 upstream_unavailable`.
    pub registry_attempts: u32,
    /// Connect / read timeout of registry requests.
    pub registry_timeout_ms: u64,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        ReleaseConfig {
            enforce: true,
            trusted_scanner_digests: Vec::new(),
            repository: None,
            keyring: None,
            revocations: None,
            plain_http: false,
            verdict_cache_ttl_secs: 300,
            untrusted_cache_ttl_secs: 0,
            verdict_cache_entries: 10_000,
            registry_attempts: 3,
            registry_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `sqlite` (embedded, one replica) or `postgres` (replicas share one chain).
    pub backend: String,
    /// SQLite database file.
    pub path: PathBuf,
    /// PostgreSQL connection URL (`postgres://user@host:port/db`) for `backend = "postgres"`.
    pub url: Option<String>,
    /// Bound on connecting to PostgreSQL and on each group commit, in milliseconds.
    pub timeout_ms: u64,
    /// Most records per group commit.
    pub batch_max: usize,
    /// SQLite: once a batch holds `commit_siblings` records, wait this many microseconds for
    /// more before committing it, so that one `fdatasync` serves more records under load
    /// (PostgreSQL's `commit_delay`; 0 commits at once). At most 100,000.
    pub commit_delay_us: u64,
    /// SQLite: the batch size from which `commit_delay_us` applies (at least 2).
    pub commit_siblings: usize,
    /// Key reference (file, `env://`, `pkcs11:`) of the key that signs checkpoints of the
    /// chain head; unset: no checkpoints (truncation at the end goes undetected).
    pub checkpoint_key: Option<String>,
    /// Public key (PEM) or keyring (file or folder) that `stella audit verify` checks
    /// checkpoints with; when set, a missing checkpoint is a verification failure.
    pub checkpoint_public_key: Option<PathBuf>,
    /// Where the latest signed checkpoint is written (default: `path` with the extension
    /// `checkpoint.json`). Keep it off the database's volume where you can.
    pub checkpoint_path: Option<PathBuf>,
    /// Seconds between checkpoints (one is also written at start and at shutdown).
    pub checkpoint_interval_seconds: u64,
    /// Unauthenticated failures written in full per (source address, route, code) and
    /// window; the rest are counted into one summary record per window
    /// (`crate::flood`).
    pub unauthenticated_burst: u32,
    pub unauthenticated_window_seconds: u64,
    /// Most sources tracked at once; past it, failures aggregate under the source `*`.
    pub unauthenticated_sources: usize,
    /// Most unauthenticated failures written in full per window over all sources.
    pub unauthenticated_records_per_window: u32,
    /// Environment variable holding the audit API's cursor HMAC key (at least 32 bytes;
    /// replicas must share it). Unset: a random key per process.
    pub cursor_secret_env: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            backend: "sqlite".into(),
            path: PathBuf::from("data/audit.db"),
            url: None,
            timeout_ms: 5000,
            batch_max: 1024,
            commit_delay_us: stella_store::SQLITE_DEFAULT_LINGER.delay.as_micros() as u64,
            commit_siblings: stella_store::SQLITE_DEFAULT_LINGER.siblings,
            checkpoint_key: None,
            checkpoint_public_key: None,
            checkpoint_path: None,
            checkpoint_interval_seconds: 60,
            unauthenticated_burst: 20,
            unauthenticated_window_seconds: 60,
            unauthenticated_sources: 10_000,
            unauthenticated_records_per_window: 1000,
            cursor_secret_env: None,
        }
    }
}

impl AuditConfig {
    /// The checkpoint file: `checkpoint_path`, or `path` with the extension `checkpoint.json`.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.checkpoint_path
            .clone()
            .unwrap_or_else(|| self.path.with_extension("checkpoint.json"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// `memory` (one replica) or `redis` (replicas share quotas and the DPoP replay cache).
    pub backend: String,
    /// `redis://host:port/db` for `backend = "redis"`.
    pub url: Option<String>,
    /// Prefix of every Redis key.
    pub prefix: String,
    /// Bound on connecting to Redis and on every call, in milliseconds.
    pub timeout_ms: u64,
    /// Lifetime of a concurrency lease a crashed replica never gives back (above the longest
    /// request).
    pub lease_seconds: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            backend: "memory".into(),
            url: None,
            prefix: "stella:".into(),
            timeout_ms: 500,
            lease_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`.
    pub level: String,
    /// `json` or `text`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// The development profile: an embedded Authority and Licensing, a generated signing key.
/// Dev only: refused on a non-loopback listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevConfig {
    pub enabled: bool,
    /// Folder for the generated dev signing key (`dev-signing.key`, `dev-signing.pub`).
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Load `path` (or the embedded defaults when `None`), apply environment overrides from
    /// `env`, resolve relative paths and validate.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, base) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            None => (String::new(), PathBuf::new()),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(format!("{e}")))?;
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            apply_override(&mut table, rest, &value).map_err(|reason| ConfigError::Env {
                var: var.clone(),
                reason,
            })?;
        }
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(format!("{e}")))?;
        cfg.resolve_paths(&base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse TOML text as a whole configuration (no environment), for tests.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e: toml::de::Error| ConfigError::Parse(format!("{e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse TOML text without validating it (tools that read one section, like
    /// `stella audit`).
    pub fn from_toml_unvalidated(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse(format!("{e}")))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.server.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
            if let Some(c) = &mut t.client_ca {
                fix(c);
            }
        }
        for p in [
            &mut self.authority.jwks_file,
            &mut self.authority.ca_file,
            &mut self.licensing.ca_file,
            &mut self.dev.data_dir,
            &mut self.release.keyring,
            &mut self.signing.keyring,
            &mut self.audit.checkpoint_public_key,
            &mut self.audit.checkpoint_path,
            &mut self.release.revocations,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        fix(&mut self.audit.path);
        self.keyless.resolve_paths(base);
        let fix_ref = |r: &mut String| {
            if !r.contains("://") && !r.starts_with("pkcs11:") && r != "keyless" {
                let p = Path::new(r.as_str());
                if p.is_relative() && !base.as_os_str().is_empty() {
                    *r = base.join(p).display().to_string();
                }
            }
        };
        self.signing.keys.iter_mut().for_each(fix_ref);
        if let Some(k) = &mut self.audit.checkpoint_key {
            fix_ref(k);
        }
        for t in self.signing.tenants.values_mut() {
            t.keys.iter_mut().for_each(fix_ref);
            for p in t.plans.values_mut() {
                p.keys.iter_mut().for_each(fix_ref);
            }
        }
    }

    /// Check what can be checked without I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.dev.enabled {
            let real = self.real_services();
            if !real.is_empty() {
                return bad(format!(
                    "the dev profile (--dev) runs its own Authority, Licensing and signing key and refuses a configuration with real ones; remove {} or run without --dev",
                    real.join(", ")
                ));
            }
        }
        if !self.dev.enabled {
            if self.authority.issuer.is_empty() {
                return bad("authority.issuer is required".into());
            }
            match (&self.authority.jwks_url, &self.authority.jwks_file) {
                (None, None) => return bad("set authority.jwks_url or authority.jwks_file".into()),
                (Some(_), Some(_)) => {
                    return bad("set only one of authority.jwks_url and authority.jwks_file".into())
                }
                _ => {}
            }
            if self.licensing.introspect_url.is_none() && !self.licensing.bypass {
                return bad(
                    "licensing.introspect_url is required (or an audited licensing.bypass)".into(),
                );
            }
            if self.signing.keys.is_empty()
                && self.signing.tenants.is_empty()
                && self.signing.keyless != KeylessUse::Only
            {
                return bad("no signing keys: set signing.keys or signing.tenants".into());
            }
            if !self.signing.keys.is_empty() && !self.signing.default_keys_for_unlisted_tenants {
                return bad(
                    "signing.keys would sign for every tenant without keys of its own: list the tenants under signing.tenants.<tid>, or set signing.default_keys_for_unlisted_tenants = true to mean it"
                        .into(),
                );
            }
        }
        for (t, tc) in &self.signing.tenants {
            let modes = std::iter::once((format!("signing.tenants.{t}"), &tc.signing_mode)).chain(
                tc.plans
                    .iter()
                    .map(|(p, pc)| (format!("signing.tenants.{t}.plans.{p}"), &pc.signing_mode)),
            );
            for (at, mode) in modes {
                if let Some(m) = mode {
                    if !SIGNING_MODES.contains(&m.as_str()) {
                        return bad(format!(
                            "{at}.signing_mode {m:?} is not one of file, hsm, kms"
                        ));
                    }
                }
            }
            for (p, pc) in &tc.plans {
                if pc.keys.is_empty() {
                    return bad(format!("signing.tenants.{t}.plans.{p}: no keys"));
                }
            }
        }
        validate_keyless(self)?;
        if self.licensing.bypass
            && self
                .licensing
                .bypass_reason
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            return bad("licensing.bypass needs licensing.bypass_reason (it is audited)".into());
        }
        for a in &self.authority.algorithms {
            if crate::jose::Alg::parse(a).is_none() {
                return bad(format!(
                    "authority.algorithms: {a:?} is not accepted (ES256, EdDSA, RS256, PS256)"
                ));
            }
        }
        for a in &self.dpop.algorithms {
            if crate::jose::Alg::parse(a).is_none() {
                return bad(format!(
                    "dpop.algorithms: {a:?} is not accepted (ES256, EdDSA, RS256, PS256)"
                ));
            }
        }
        if self.authority.algorithms.is_empty() || self.dpop.algorithms.is_empty() {
            return bad("authority.algorithms and dpop.algorithms must not be empty".into());
        }
        match (self.audit.backend.as_str(), &self.audit.url) {
            ("sqlite", _) => {}
            ("postgres", Some(u))
                if u.starts_with("postgres://") || u.starts_with("postgresql://") => {}
            ("postgres", _) => {
                return bad(
                    "audit.backend \"postgres\" needs audit.url = \"postgres://...\"".into(),
                )
            }
            (other, _) => {
                return bad(format!(
                    "audit.backend {other:?} is not available (sqlite, postgres)"
                ))
            }
        }
        if self.audit.commit_delay_us > 100_000 {
            return bad("audit.commit_delay_us must be at most 100000 (100 ms)".into());
        }
        if self.audit.commit_siblings < 2 {
            return bad("audit.commit_siblings must be at least 2".into());
        }
        if self.audit.timeout_ms == 0 {
            return bad("audit.timeout_ms must be positive".into());
        }
        if self.audit.checkpoint_key.is_some() && self.audit.checkpoint_interval_seconds == 0 {
            return bad("audit.checkpoint_interval_seconds must be positive".into());
        }
        match (self.quotas.backend.as_str(), &self.quotas.url) {
            ("memory", _) => {}
            ("redis", Some(u)) if u.starts_with("redis://") => {}
            ("redis", _) => {
                return bad("quotas.backend \"redis\" needs quotas.url = \"redis://...\"".into())
            }
            (other, _) => {
                return bad(format!(
                    "quotas.backend {other:?} is not available (memory, redis)"
                ))
            }
        }
        if self.quotas.timeout_ms == 0 || self.quotas.lease_seconds == 0 {
            return bad("quotas.timeout_ms and quotas.lease_seconds must be positive".into());
        }
        for (name, secs) in self.durations() {
            if secs > MAX_CONFIG_SECONDS {
                return bad(format!(
                    "{name} is {secs} seconds; at most {MAX_CONFIG_SECONDS} (ten years)"
                ));
            }
        }
        if self.server.header_read_timeout_ms == 0
            || self.server.request_timeout_ms == 0
            || self.server.max_connections == 0
        {
            return bad(
                "server.header_read_timeout_ms, server.request_timeout_ms and server.max_connections must be positive"
                    .into(),
            );
        }
        if self.server.max_subjects == 0
            || self.audit.unauthenticated_window_seconds == 0
            || self.audit.unauthenticated_sources == 0
        {
            return bad(
                "server.max_subjects, audit.unauthenticated_window_seconds and audit.unauthenticated_sources must be positive"
                    .into(),
            );
        }
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes must be positive".into());
        }
        if self.dpop.replay_cache_entries == 0 || self.dpop.replay_cache_entries_per_tenant == 0 {
            return bad(
                "dpop.replay_cache_entries and dpop.replay_cache_entries_per_tenant must be positive"
                    .into(),
            );
        }
        if self.dpop.max_age_seconds == 0 {
            return bad("dpop.max_age_seconds must be positive".into());
        }
        for d in &self.release.trusted_scanner_digests {
            if !is_sha256_digest(d) {
                return bad(format!(
                    "release.trusted_scanner_digests: {d:?} is not sha256:<64 lowercase hex>"
                ));
            }
        }
        match (&self.release.repository, &self.release.keyring) {
            (Some(r), Some(_)) => {
                stella_oci::Reference::parse(r)
                    .map_err(|e| ConfigError::Invalid(format!("release.repository {r:?}: {e}")))?;
                // (A parsed reference without tag reads as `:latest`: look at the text.)
                let last = r.rsplit('/').next().unwrap_or(r);
                if !r.contains('/') || r.contains('@') || last.contains(':') {
                    return bad(format!(
                        "release.repository {r:?}: name a repository (HOST:PORT/PATH), without tag or digest"
                    ));
                }
            }
            (Some(_), None) => {
                return bad("release.repository needs release.keyring (the release keys)".into())
            }
            (None, Some(_)) => {
                return bad("release.keyring is set but release.repository is not".into())
            }
            (None, None) => {}
        }
        if self.release.verdict_cache_entries == 0 {
            return bad("release.verdict_cache_entries must be positive".into());
        }
        if self.release.registry_attempts == 0 {
            return bad("release.registry_attempts must be at least 1".into());
        }
        match &self.server.public_url {
            Some(u) => {
                let parsed = url::Url::parse(u)
                    .map_err(|e| ConfigError::Invalid(format!("server.public_url: {e}")))?;
                if !["http", "https"].contains(&parsed.scheme()) || parsed.host().is_none() {
                    return bad(format!(
                        "server.public_url {u:?}: give the external http(s)://HOST[:PORT] base URL"
                    ));
                }
            }
            None if !listen_is_loopback(&self.server.listen) => {
                return bad(format!(
                    "server.public_url is required when server.listen ({}) is not a loopback address: DPoP proofs are checked against it, never against the client's Host header",
                    self.server.listen
                ));
            }
            None => {}
        }
        Ok(())
    }
}

impl Config {
    /// The settings that name a real signing key, Authority or Licensing service (the dev
    /// profile refuses them: it would sign with production keys behind its open token
    /// endpoint).
    pub(crate) fn real_services(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.signing.keys.is_empty() {
            v.push("signing.keys");
        }
        if !self.signing.tenants.is_empty() {
            v.push("signing.tenants");
        }
        if !self.authority.issuer.is_empty() {
            v.push("authority.issuer");
        }
        if self.authority.jwks_url.is_some() {
            v.push("authority.jwks_url");
        }
        if self.authority.jwks_file.is_some() {
            v.push("authority.jwks_file");
        }
        if self.licensing.introspect_url.is_some() {
            v.push("licensing.introspect_url");
        }
        if self.licensing.token_env.is_some() {
            v.push("licensing.token_env");
        }
        v.extend(self.keyless.real_services());
        v
    }

    /// Every duration setting, in seconds (milliseconds rounded up), with its name.
    fn durations(&self) -> Vec<(&'static str, u64)> {
        let ms = |v: u64| v.div_ceil(1000);
        vec![
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
            ),
            (
                "authority.clock_skew_seconds",
                self.authority.clock_skew_seconds,
            ),
            (
                "authority.jwks_cache_seconds",
                self.authority.jwks_cache_seconds,
            ),
            (
                "authority.jwks_refetch_floor_seconds",
                self.authority.jwks_refetch_floor_seconds,
            ),
            ("authority.timeout_ms", ms(self.authority.timeout_ms)),
            ("dpop.max_age_seconds", self.dpop.max_age_seconds),
            ("dpop.clock_skew_seconds", self.dpop.clock_skew_seconds),
            (
                "dpop.nonce_lifetime_seconds",
                self.dpop.nonce_lifetime_seconds,
            ),
            (
                "dpop.nonce_rotation_seconds",
                self.dpop.nonce_rotation_seconds,
            ),
            ("licensing.timeout_ms", ms(self.licensing.timeout_ms)),
            (
                "licensing.cache_ttl_seconds",
                self.licensing.cache_ttl_seconds,
            ),
            (
                "licensing.grace_ttl_seconds",
                self.licensing.grace_ttl_seconds,
            ),
            (
                "release.verdict_cache_ttl_secs",
                self.release.verdict_cache_ttl_secs,
            ),
            (
                "release.untrusted_cache_ttl_secs",
                self.release.untrusted_cache_ttl_secs,
            ),
            (
                "release.registry_timeout_ms",
                ms(self.release.registry_timeout_ms),
            ),
        ]
    }
}

/// Does `listen` (`host:port`) name only the loopback interface?
pub(crate) fn listen_is_loopback(listen: &str) -> bool {
    if let Ok(a) = listen.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// `sha256:` + 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(s: &str) -> bool {
    stella_oci::Digest::is_valid(s)
}

/// Why a `STELLA_SIGNER__...` variable cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvOverrideError {
    #[error("empty path segment")]
    EmptySegment,
    #[error("`{0}` is not a section")]
    NotASection(String),
}

/// Set `SECTION__KEY[__...]` (already stripped of the prefix) in `table`.
fn apply_override(
    table: &mut toml::Table,
    path: &str,
    value: &str,
) -> Result<(), EnvOverrideError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        return Err(EnvOverrideError::EmptySegment);
    }
    let parsed = parse_env_value(value);
    // `split` yields at least one part, and none is empty here.
    let (last, parents) = parts.split_last().ok_or(EnvOverrideError::EmptySegment)?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(EnvOverrideError::NotASection(p.clone())),
        };
    }
    cur.insert(last.clone(), parsed);
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// `[keyless]` (the service side: crate::keyless)
// ------------------------------------------------------------------------------------------

/// May a tenant sign keyless?
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeylessUse {
    /// Keyless is refused (the default).
    #[default]
    Off,
    /// Keyful by default; keyless when the request asks (`signingMode: keyless`).
    Allowed,
    /// Keyless by default; the keyful mode when the request names it.
    Default,
    /// Keyless only: a keyful mode is refused.
    Only,
}

/// `[keyless]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeylessConfig {
    /// `fulcio` or `dev`; absent: keyless signing is not configured.
    pub issuer: Option<String>,
    pub fulcio_url: Option<String>,
    pub tsa_url: Option<String>,
    pub rekor_url: Option<String>,
    /// `required` (default: no signature without a log entry) or `best_effort`.
    pub rekor: String,
    /// `trusted_root.json` for the configured services (required with `issuer = "fulcio"`).
    pub trusted_root: Option<PathBuf>,
    /// Folder of the dev CA/TSA state and its `trusted_root.json` (`issuer = "dev"`).
    pub dev_dir: Option<PathBuf>,
    /// Allow `issuer = "dev"` outside the dev profile (tests): the dev CA does not verify
    /// identity tokens and its root is trusted by nobody else.
    pub insecure_dev_services: bool,
    /// `within_validity` (default) or `per_signature`.
    pub reuse: String,
    /// A certificate is not used when `now + margin >= notAfter` (default 120 of Fulcio's 600).
    pub reuse_margin_seconds: u64,
    /// Per attempt, for Fulcio, the TSA, Rekor and the identity provider.
    pub timeout_ms: u64,
    pub retries: u32,
    /// `Retry-After` of a `503 upstream_unavailable`.
    pub retry_after_seconds: u64,
    /// PEM CA bundle for HTTPS to the identity provider (`token_url`). Fulcio, the TSA and
    /// Rekor are reached with the system roots (`stella_keyless::http`).
    pub ca_file: Option<PathBuf>,
    pub identity: KeylessIdentityConfig,
}

impl Default for KeylessConfig {
    fn default() -> Self {
        KeylessConfig {
            issuer: None,
            fulcio_url: None,
            tsa_url: None,
            rekor_url: None,
            rekor: "required".into(),
            trusted_root: None,
            dev_dir: None,
            insecure_dev_services: false,
            reuse: "within_validity".into(),
            reuse_margin_seconds: 120,
            timeout_ms: 10_000,
            retries: 3,
            retry_after_seconds: 5,
            ca_file: None,
            identity: KeylessIdentityConfig::default(),
        }
    }
}

/// `[keyless.identity]`: where the Signer's own OIDC identity token comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeylessIdentityConfig {
    /// The Authority's token endpoint (OAuth client credentials).
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Or a file holding it (e.g. a mounted secret).
    pub client_secret_file: Option<PathBuf>,
    /// Sent as `audience`; the token's `aud` must contain it.
    pub audience: String,
    /// RFC 8707 `resource` parameter, for Authorities that pick the audience by resource.
    pub resource: Option<String>,
    pub scope: Option<String>,
    /// A file holding the token instead (re-read when the cached token nears expiry).
    pub token_file: Option<PathBuf>,
    /// Get a new token this long before the cached one expires.
    pub refresh_before_seconds: u64,
}

impl Default for KeylessIdentityConfig {
    fn default() -> Self {
        KeylessIdentityConfig {
            token_url: None,
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            audience: "sigstore".into(),
            resource: None,
            scope: None,
            token_file: None,
            refresh_before_seconds: 60,
        }
    }
}

impl KeylessConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.trusted_root,
            &mut self.dev_dir,
            &mut self.ca_file,
            &mut self.identity.token_file,
            &mut self.identity.client_secret_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }

    /// Settings the dev profile refuses (real services).
    pub(crate) fn real_services(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.issuer.as_deref() == Some("fulcio") {
            v.push("keyless.issuer = \"fulcio\"");
        }
        if self.identity.token_url.is_some() {
            v.push("keyless.identity.token_url");
        }
        v
    }
}

/// Check `[keyless]` and the tenants' `keyless` settings.
pub(crate) fn validate_keyless(cfg: &Config) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    let k = &cfg.keyless;
    let uses: Vec<(String, KeylessUse)> =
        std::iter::once(("signing".to_string(), cfg.signing.keyless))
            .chain(
                cfg.signing
                    .tenants
                    .iter()
                    .map(|(t, tc)| (format!("signing.tenants.{t}"), tc.keyless)),
            )
            .collect();
    if k.issuer.is_none() && !cfg.dev.enabled {
        if let Some((at, _)) = uses.iter().find(|(_, u)| *u != KeylessUse::Off) {
            return bad(format!(
                "{at}.keyless needs keyless signing configured: set [keyless] issuer"
            ));
        }
        return Ok(());
    }
    for (t, tc) in &cfg.signing.tenants {
        if tc.keyless == KeylessUse::Only && !tc.keys.is_empty() {
            return bad(format!(
                "signing.tenants.{t}: keyless = \"only\" signs without keys; remove keys or choose keyless = \"default\""
            ));
        }
    }
    match k.issuer.as_deref() {
        None => {}
        Some("dev") => {
            if !cfg.dev.enabled && !k.insecure_dev_services {
                return bad("keyless.issuer \"dev\" is the DEV-ONLY in-process CA and TSA: use it in the dev profile, or set keyless.insecure_dev_services = true (tests)".into());
            }
            if k.fulcio_url.is_some() || k.tsa_url.is_some() || k.rekor_url.is_some() {
                return bad("keyless.issuer \"dev\" uses the in-process CA and TSA and no log: remove keyless.fulcio_url, tsa_url and rekor_url".into());
            }
        }
        Some("fulcio") => {
            for (name, v) in [("fulcio_url", &k.fulcio_url), ("tsa_url", &k.tsa_url)] {
                if v.is_none() {
                    return bad(format!(
                        "keyless.issuer \"fulcio\" needs keyless.{name} (every keyless signature is timestamped)"
                    ));
                }
            }
            if k.trusted_root.is_none() {
                return bad("keyless.issuer \"fulcio\" needs keyless.trusted_root (the trusted_root.json of the Fulcio CA, CT log, TSA and Rekor)".into());
            }
            let id = &k.identity;
            match (&id.token_url, &id.token_file) {
                (Some(_), Some(_)) => {
                    return bad(
                        "set one of keyless.identity.token_url and keyless.identity.token_file"
                            .into(),
                    )
                }
                (None, None) => return bad("keyless.issuer \"fulcio\" needs the Signer's identity: keyless.identity.token_url (client credentials) or keyless.identity.token_file".into()),
                (Some(_), None)
                    if id.client_id.is_none()
                        || id.client_secret_env.is_some() == id.client_secret_file.is_some() =>
                {
                    return bad("keyless.identity.token_url needs client_id and one of client_secret_env, client_secret_file".into())
                }
                _ => {}
            }
        }
        Some(other) => {
            return bad(format!(
                "keyless.issuer {other:?} is not one of fulcio, dev"
            ))
        }
    }
    if !["required", "best_effort"].contains(&k.rekor.as_str()) {
        return bad(format!(
            "keyless.rekor {:?} is not one of required, best_effort",
            k.rekor
        ));
    }
    if !["within_validity", "per_signature"].contains(&k.reuse.as_str()) {
        return bad(format!(
            "keyless.reuse {:?} is not one of within_validity, per_signature",
            k.reuse
        ));
    }
    // Fulcio certificates live 600 s; the margin must leave room for the TSA round trip.
    if !(10..=3600).contains(&k.reuse_margin_seconds) {
        return bad("keyless.reuse_margin_seconds must be between 10 and 3600".into());
    }
    if k.timeout_ms == 0 || k.retry_after_seconds == 0 || k.retry_after_seconds > 3600 {
        return bad(
            "keyless.timeout_ms must be positive and keyless.retry_after_seconds between 1 and 3600"
                .into(),
        );
    }
    if k.identity.refresh_before_seconds > 3600 {
        return bad("keyless.identity.refresh_before_seconds must be at most 3600".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stella.toml");
        std::fs::write(
            &p,
            r#"
[authority]
issuer = "https://authority.test"
jwks_file = "jwks.json"
[licensing]
introspect_url = "https://lic.test/license/introspect"
[signing]
keys = ["keys/a.key"]
default_keys_for_unlisted_tenants = true
"#,
        )
        .unwrap();
        let env = vec![
            (
                "STELLA_SIGNER__SERVER__LISTEN".into(),
                "127.0.0.1:9999".into(),
            ),
            (
                "STELLA_SIGNER__LICENSING__GRACE_TTL_SECONDS".into(),
                "42".into(),
            ),
            (
                "STELLA_SIGNER__DPOP__ALGORITHMS".into(),
                r#"["ES256"]"#.into(),
            ),
            ("UNRELATED".into(), "x".into()),
        ];
        let c = Config::load(Some(&p), env).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999");
        assert_eq!(c.licensing.grace_ttl_seconds, 42);
        assert_eq!(c.dpop.algorithms, vec!["ES256".to_string()]);
        assert_eq!(c.authority.jwks_file.unwrap(), dir.path().join("jwks.json"));
        assert_eq!(
            c.signing.keys[0],
            dir.path().join("keys/a.key").display().to_string()
        );
        assert_eq!(c.authority.audience, "signer");
    }

    #[test]
    fn sample_config_in_the_repo_loads() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../etc/stella.toml"
        ));
        let c = Config::load(Some(p), Vec::new()).unwrap();
        assert_eq!(c.authority.audience, "signer");
        assert!(!c.dev.enabled && !c.licensing.bypass);
    }

    #[test]
    fn durations_that_would_overflow_a_clock_are_refused() {
        for (section, key) in [
            ("dpop", "max_age_seconds"),
            ("dpop", "clock_skew_seconds"),
            ("dpop", "nonce_lifetime_seconds"),
            ("authority", "clock_skew_seconds"),
            ("licensing", "grace_ttl_seconds"),
            ("server", "shutdown_grace_seconds"),
        ] {
            for v in [u64::MAX, i64::MAX as u64 + 1, MAX_CONFIG_SECONDS + 1] {
                let t = format!("[dev]\nenabled = true\n[{section}]\n{key} = {v}");
                // u64::MAX is not a TOML integer: a parse error is a refusal too.
                let e = Config::from_toml(&t).unwrap_err();
                if v <= i64::MAX as u64 {
                    assert!(e.to_string().contains(key), "{section}.{key}={v}: {e}");
                }
            }
            let ok = format!("[dev]\nenabled = true\n[{section}]\n{key} = {MAX_CONFIG_SECONDS}");
            assert!(Config::from_toml(&ok).is_ok(), "{section}.{key}");
        }
    }

    #[test]
    fn audit_commit_delay_is_bounded() {
        let c = Config::from_toml("[dev]\nenabled = true").unwrap();
        assert_eq!(c.audit.commit_delay_us, 300);
        assert_eq!(c.audit.commit_siblings, 3);
        for (t, needle) in [
            ("commit_delay_us = 100001", "audit.commit_delay_us"),
            ("commit_siblings = 1", "audit.commit_siblings"),
            ("commit_siblings = 0", "audit.commit_siblings"),
        ] {
            let e = Config::from_toml(&format!("[dev]\nenabled = true\n[audit]\n{t}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{t}: {e}");
        }
        let c = Config::from_toml(
            "[dev]\nenabled = true\n[audit]\ncommit_delay_us = 0\ncommit_siblings = 2",
        )
        .unwrap();
        assert_eq!((c.audit.commit_delay_us, c.audit.commit_siblings), (0, 2));
    }

    /// Issue #8 item 8: with signing keys configured, `--dev` kept them and signed with the
    /// production keys behind its open token endpoint.
    #[test]
    fn dev_profile_refuses_real_keys_authority_and_licensing() {
        for (extra, name) in [
            ("[signing]\nkeys = [\"prod.key\"]", "signing.keys"),
            (
                "[signing.tenants.t1]\nkeys = [\"t1.key\"]",
                "signing.tenants",
            ),
            (
                "[authority]\nissuer = \"https://authority.example\"",
                "authority.issuer",
            ),
            (
                "[authority]\njwks_url = \"https://authority.example/jwks\"",
                "authority.jwks_url",
            ),
            (
                "[authority]\njwks_file = \"jwks.json\"",
                "authority.jwks_file",
            ),
            (
                "[licensing]\nintrospect_url = \"https://lic.example/license/introspect\"",
                "licensing.introspect_url",
            ),
            (
                "[licensing]\ntoken_env = \"LIC_TOKEN\"",
                "licensing.token_env",
            ),
        ] {
            let e = Config::from_toml(&format!("[dev]\nenabled = true\n{extra}")).unwrap_err();
            let m = e.to_string();
            assert!(m.contains(name) && m.contains("dev profile"), "{m}");
            // Without the dev profile the same setting is not what is complained about.
            let e = Config::from_toml(extra)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(!e.contains("dev profile"), "{e}");
        }
        // The sample configuration names real services: --dev with it is refused too.
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../etc/stella.toml"
        ));
        let env = vec![(
            "STELLA_SIGNER__DEV__ENABLED".to_string(),
            "true".to_string(),
        )];
        let e = Config::load(Some(p), env).unwrap_err().to_string();
        assert!(e.contains("dev profile"), "{e}");
    }

    /// Issue #8 item 10: tenants without keys silently used the default keys.
    #[test]
    fn default_keys_for_unlisted_tenants_must_be_explicit() {
        let base = "[authority]\nissuer = \"https://a.example\"\njwks_file = \"j.json\"\n\
                    [licensing]\nintrospect_url = \"https://l.example/license/introspect\"\n";
        let e = Config::from_toml(&format!("{base}[signing]\nkeys = [\"k.key\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_keys_for_unlisted_tenants"), "{e}");
        // Also with some tenants listed: the default keys would serve the rest.
        let e = Config::from_toml(&format!(
            "{base}[signing]\nkeys = [\"k.key\"]\n[signing.tenants.t1]\nkeys = [\"t1.key\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("default_keys_for_unlisted_tenants"), "{e}");
        let c = Config::from_toml(&format!(
            "{base}[signing]\nkeys = [\"k.key\"]\ndefault_keys_for_unlisted_tenants = true\n"
        ))
        .unwrap();
        assert!(c.signing.default_keys_for_unlisted_tenants);
        let c = Config::from_toml(&format!(
            "{base}[signing.tenants.t1]\nkeys = [\"t1.key\"]\n"
        ))
        .unwrap();
        assert!(!c.signing.default_keys_for_unlisted_tenants);
    }

    /// Issue #8 item 10: without `public_url` the DPoP `htu` was checked against the
    /// client's own `Host` header, on any listener.
    #[test]
    fn public_url_is_required_off_loopback() {
        let dev = "[dev]\nenabled = true\n";
        for listen in [
            "0.0.0.0:8443",
            "[::]:8443",
            "10.1.2.3:8443",
            "signer.example:8443",
        ] {
            let e = Config::from_toml(&format!("{dev}[server]\nlisten = \"{listen}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("public_url") && e.contains("loopback"),
                "{listen}: {e}"
            );
            Config::from_toml(&format!(
                "{dev}[server]\nlisten = \"{listen}\"\npublic_url = \"https://signer.example\"\n"
            ))
            .unwrap();
        }
        for listen in ["127.0.0.1:8443", "[::1]:0", "localhost:8443"] {
            Config::from_toml(&format!("{dev}[server]\nlisten = \"{listen}\"\n")).unwrap();
        }
        for bad in ["signer.example", "ftp://signer.example", "https://"] {
            assert!(
                Config::from_toml(&format!("{dev}[server]\npublic_url = \"{bad}\"\n")).is_err()
            );
        }
    }

    #[test]
    fn refuses_unknown_keys_and_symmetric_algs() {
        assert!(Config::from_toml("[server]\nlisten_addr = \"x\"\n[dev]\nenabled = true").is_err());
        assert!(
            Config::from_toml("[dev]\nenabled = true\n[authority]\nalgorithms = [\"HS256\"]")
                .is_err()
        );
        assert!(Config::from_toml("[dev]\nenabled = true\n[licensing]\nbypass = true").is_err());
        assert!(Config::from_toml("[dev]\nenabled = true").is_ok());
        assert!(Config::from_toml("").is_err());
    }

    #[test]
    fn tenant_and_plan_signing_modes() {
        // A production configuration: the dev profile refuses real keys (issue #8 item 8).
        let base = "[authority]\nissuer = \"https://a.example\"\njwks_file = \"j.json\"\n\
                    [licensing]\nintrospect_url = \"https://l.example/license/introspect\"\n\
                    [signing.tenants.acme]\nkeys = [\"pkcs11:token=t;object=k\"]\n";
        let c = Config::from_toml(&format!(
            "{base}signingMode = \"hsm\"\n[signing.tenants.acme.plans.enterprise]\nkeys = [\"awskms:///alias/acme-ent\"]\nsigning_mode = \"kms\"\n"
        ))
        .unwrap();
        let t = &c.signing.tenants["acme"];
        assert_eq!(t.signing_mode.as_deref(), Some("hsm"));
        assert_eq!(t.plans["enterprise"].signing_mode.as_deref(), Some("kms"));
        assert_eq!(t.plans["enterprise"].keys, vec!["awskms:///alias/acme-ent"]);
        let bad_mode = Config::from_toml(&format!("{base}signing_mode = \"cloud\"\n"));
        assert!(bad_mode
            .unwrap_err()
            .to_string()
            .contains("not one of file, hsm, kms"));
        let no_keys = Config::from_toml(&format!(
            "{base}[signing.tenants.acme.plans.free]\nkeys = []\n"
        ));
        assert!(no_keys
            .unwrap_err()
            .to_string()
            .contains("plans.free: no keys"));
    }
}
