//! The registry client: the OCI distribution protocol over reqwest (rustls).
//!
//! Every request goes through [`Client::send`], which adds credentials, answers `401`
//! challenges (Basic, or a Bearer token fetched from the realm and cached per scope), and
//! retries with exponential backoff and jitter on connection errors, `429` and `5xx` (honouring
//! `Retry-After`). Uploads do not use blind retries: a failed `PATCH` is followed by a status
//! query of the upload session and the upload continues from the offset the registry reports
//! (see [`crate::upload`]).
//!
//! Plain HTTP is used only for registries on the loopback interface (`127.0.0.0/8`,
//! `localhost`, `[::1]`), or for any registry when the caller asked for it
//! ([`PlainHttp::Always`], the CLI's `--plain-http`). Redirects that would downgrade HTTPS to
//! HTTP are refused.
//!
//! Everything downloaded is checked against its digest before anyone sees it: blobs are hashed
//! while they stream to disk, manifests fetched by digest must hash to it, and manifests fetched
//! by tag must hash to the `Docker-Content-Digest` the registry announced.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use crate::auth::{Challenge, CredentialSource, Credentials, DockerConfig};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext as _, Result};
use crate::media::{Descriptor, Document, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::reference::Reference;

/// When plain HTTP may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlainHttp {
    /// Only for loopback registries (127.0.0.0/8, localhost, `[::1]`); HTTPS everywhere else.
    #[default]
    LoopbackOnly,
    /// For every registry (`--plain-http`): for registries on a trusted private network.
    Always,
}

/// Retries with exponential backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts per request (≥ 1).
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        // Up to 25 % jitter, so parallel transfers do not retry in lockstep.
        let mut b = [0u8; 2];
        let _ = aws_lc_rs::rand::fill(&mut b);
        let frac = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
        d + d.mul_f64(0.25 * frac)
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub plain_http: PlainHttp,
    pub credentials: CredentialSource,
    pub retry: RetryPolicy,
    /// Blob transfers in flight at once, across every operation of this client.
    pub concurrency: usize,
    /// Blobs up to this size are uploaded in one request; larger ones in chunks.
    pub monolithic_max: u64,
    /// Size of each `PATCH` of a chunked upload.
    pub chunk_size: u64,
    pub connect_timeout: Duration,
    /// Longest pause between two reads of a response before it counts as a failure.
    pub read_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            plain_http: PlainHttp::LoopbackOnly,
            credentials: CredentialSource::DockerConfig,
            retry: RetryPolicy::default(),
            concurrency: 4,
            monolithic_max: 32 << 20,
            chunk_size: 16 << 20,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            user_agent: concat!("stella-oci/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Counters (for reports, tests and benchmarks).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_downloaded: AtomicU64,
}

/// What a request needs access to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    repo: String,
    push: bool,
    /// A second repository to pull from (cross-repository mounts).
    from: Option<String>,
}

impl Scope {
    pub(crate) fn pull(r: &Reference) -> Self {
        Scope {
            repo: r.repository().to_string(),
            push: false,
            from: None,
        }
    }

    pub(crate) fn push(r: &Reference) -> Self {
        Scope {
            repo: r.repository().to_string(),
            push: true,
            from: None,
        }
    }

    pub(crate) fn mount(r: &Reference, from: &str) -> Self {
        Scope {
            repo: r.repository().to_string(),
            push: true,
            from: Some(from.to_string()),
        }
    }

    fn scopes(&self) -> Vec<String> {
        let mut v = vec![format!(
            "repository:{}:{}",
            self.repo,
            if self.push { "pull,push" } else { "pull" }
        )];
        if let Some(f) = &self.from {
            v.push(format!("repository:{f}:pull"));
        }
        v
    }

    fn key(&self, registry: &str) -> String {
        format!("{registry} {}", self.scopes().join(" "))
    }
}

#[derive(Default)]
struct AuthState {
    /// Bearer tokens by `registry scope...`.
    tokens: HashMap<String, (String, Instant)>,
    /// Registries that asked for Basic authentication.
    basic: HashSet<String>,
    /// Credentials looked up so far (`None`: anonymous).
    creds: HashMap<String, Option<Credentials>>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    docker: DockerConfig,
    auth: Mutex<AuthState>,
    /// Repositories of each registry known to hold a blob (for cross-repository mounts).
    locations: Mutex<HashMap<String, HashMap<Digest, BTreeSet<String>>>>,
    transfers: tokio::sync::Semaphore,
    stats: Stats,
}

/// An OCI distribution client. Cheap to clone (shared state inside).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("plain_http", &self.inner.config.plain_http)
            .finish_non_exhaustive()
    }
}

/// A manifest or index fetched and checked.
pub(crate) type Manifest = Document;

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let docker = match &config.credentials {
            CredentialSource::DockerConfig => match DockerConfig::default_path() {
                Some(p) => DockerConfig::load(&p)?,
                None => DockerConfig::default(),
            },
            CredentialSource::DockerConfigFile(p) => DockerConfig::load(p)?,
            CredentialSource::Static(_) | CredentialSource::Anonymous => DockerConfig::default(),
        };
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("too many redirects");
            }
            let downgrade = attempt
                .previous()
                .last()
                .is_some_and(|prev| prev.scheme() == "https")
                && attempt.url().scheme() != "https";
            if downgrade {
                return attempt.error("refusing a redirect from HTTPS to plain HTTP");
            }
            attempt.follow()
        });
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(redirect)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| Error::Input(format!("cannot build the HTTP client: {e}")))?;
        let permits = config.concurrency.max(1);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                docker,
                auth: Mutex::new(AuthState::default()),
                locations: Mutex::new(HashMap::new()),
                transfers: tokio::sync::Semaphore::new(permits),
                stats: Stats::default(),
                config,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) async fn transfer_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        loop {
            if let Ok(p) = self.inner.transfers.acquire().await {
                return p;
            }
        }
    }

    /// `http(s)://host/` for a registry.
    pub(crate) fn base_url(&self, r: &Reference) -> Result<Url> {
        let scheme = if r.is_loopback() || self.inner.config.plain_http == PlainHttp::Always {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{}/", r.api_host())).map_err(|e| Error::Reference {
            reference: r.to_string(),
            why: e.to_string(),
        })
    }

    pub(crate) fn url(&self, r: &Reference, path: &str) -> Result<Url> {
        self.base_url(r)?
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::Reference {
                reference: r.to_string(),
                why: e.to_string(),
            })
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Ok(state) = self.inner.auth.lock() {
            if let Some(c) = state.creds.get(registry) {
                return Ok(c.clone());
            }
        }
        let c = match &self.inner.config.credentials {
            CredentialSource::Anonymous => None,
            CredentialSource::Static(m) => m.get(registry).cloned(),
            _ => self.inner.docker.lookup(registry)?,
        };
        if let Ok(mut state) = self.inner.auth.lock() {
            state.creds.insert(registry.to_string(), c.clone());
        }
        Ok(c)
    }

    fn auth_header(&self, r: &Reference, scope: &Scope) -> Result<Option<String>> {
        let registry = r.registry();
        let (token, basic) = {
            let Ok(state) = self.inner.auth.lock() else {
                return Ok(None);
            };
            let now = Instant::now();
            let mut token = state
                .tokens
                .get(&scope.key(registry))
                .filter(|(_, exp)| *exp > now)
                .map(|(t, _)| t.clone());
            if token.is_none() && !scope.push {
                // A push token also covers pulls of the same repository.
                let wider = Scope {
                    push: true,
                    ..scope.clone()
                };
                token = state
                    .tokens
                    .get(&wider.key(registry))
                    .filter(|(_, exp)| *exp > now)
                    .map(|(t, _)| t.clone());
            }
            (token, state.basic.contains(registry))
        };
        if let Some(t) = token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if basic {
            return Ok(self.credentials(registry)?.and_then(|c| c.basic_header()));
        }
        Ok(None)
    }

    /// Answer a 401 challenge; afterwards `auth_header` yields what the registry wants.
    async fn authenticate(&self, r: &Reference, scope: &Scope, headers: &HeaderMap) -> Result<()> {
        let registry = r.registry();
        let challenge = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse)
            .ok_or_else(|| Error::Auth {
                registry: registry.to_string(),
                detail:
                    "the registry refused the request without a usable WWW-Authenticate challenge"
                        .into(),
            })?;
        let creds = self.credentials(registry)?;
        match challenge {
            Challenge::Basic => {
                if creds.as_ref().and_then(|c| c.basic_header()).is_none() {
                    return Err(Error::Auth {
                        registry: registry.to_string(),
                        detail: format!(
                            "the registry wants a user name and password; none found for {registry} \
                             in the docker config (docker login {registry})"
                        ),
                    });
                }
                if let Ok(mut s) = self.inner.auth.lock() {
                    s.basic.insert(registry.to_string());
                }
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let realm_url = Url::parse(&realm).map_err(|e| Error::Auth {
                    registry: registry.to_string(),
                    detail: format!("invalid token realm {realm:?}: {e}"),
                })?;
                if realm_url.scheme() != "https"
                    && !(realm_url.scheme() == "http"
                        && (crate::reference::is_loopback_host(
                            realm_url.host_str().unwrap_or_default(),
                        ) || self.inner.config.plain_http == PlainHttp::Always))
                {
                    return Err(Error::Auth {
                        registry: registry.to_string(),
                        detail: format!(
                            "refusing to send credentials to a non-HTTPS token realm {realm}"
                        ),
                    });
                }
                let (token, ttl) = self
                    .fetch_token(
                        registry,
                        realm_url,
                        service.as_deref(),
                        scope,
                        creds.as_ref(),
                    )
                    .await?;
                if let Ok(mut s) = self.inner.auth.lock() {
                    // Expire early so a token never dies in the middle of a request.
                    let ttl = ttl.saturating_sub(10).max(10);
                    s.tokens.insert(
                        scope.key(registry),
                        (token, Instant::now() + Duration::from_secs(ttl)),
                    );
                }
                Ok(())
            }
        }
    }

    async fn fetch_token(
        &self,
        registry: &str,
        mut realm: Url,
        service: Option<&str>,
        scope: &Scope,
        creds: Option<&Credentials>,
    ) -> Result<(String, u64)> {
        let auth_err = |detail: String| Error::Auth {
            registry: registry.to_string(),
            detail,
        };
        let resp = match creds {
            Some(Credentials::IdentityToken { token, .. }) => {
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", token.clone()),
                    ("client_id", "stella".into()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                for s in scope.scopes() {
                    form.push(("scope", s));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.inner
                    .http
                    .post(realm)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
            }
            other => {
                {
                    let mut q = realm.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scope.scopes() {
                        q.append_pair("scope", &s);
                    }
                }
                let mut rb = self.inner.http.get(realm);
                if let Some(h) = other.and_then(|c| c.basic_header()) {
                    rb = rb.header(AUTHORIZATION, h);
                }
                rb.send().await
            }
        }
        .map_err(|e| auth_err(format!("token request failed: {}", describe(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(auth_err(format!(
                "the token service answered {status}{}",
                if creds.is_none() {
                    " (no credentials found in the docker config: anonymous access refused)"
                } else {
                    " (check the credentials in the docker config)"
                }
            )));
        }
        let body = read_limited(resp, 1 << 20)
            .await
            .map_err(|e| auth_err(format!("reading the token: {}", describe(&e))))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("token response is not JSON: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_err("token response has no token".into()))?;
        let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(60);
        Ok((token.to_string(), ttl))
    }

    /// After a transport error at `attempt`: when `again`, count a retry and wait the policy's
    /// delay (the caller then tries again); otherwise the registry is `Unreachable`.
    async fn retry_or_unreachable(
        &self,
        again: bool,
        r: &Reference,
        attempt: u32,
        policy: &RetryPolicy,
        e: &reqwest::Error,
    ) -> Result<()> {
        if !again {
            return Err(Error::Unreachable {
                registry: r.registry().to_string(),
                attempts: attempt,
                detail: describe(e),
            });
        }
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(policy.delay(attempt)).await;
        Ok(())
    }

    /// GET `url` of `repo` with pull scope and retries.
    async fn get_pulling(&self, repo: &Reference, url: &Url) -> Result<Response> {
        self.send(repo, &Scope::pull(repo), true, || {
            Ok(self.request(Method::GET, url.clone()))
        })
        .await
    }

    /// Send a request built by `build` (called again for each attempt), with authentication
    /// and — when `retry` — retries on connection errors, 429 and 5xx.
    pub(crate) async fn send<F>(
        &self,
        r: &Reference,
        scope: &Scope,
        retry: bool,
        build: F,
    ) -> Result<Response>
    where
        F: Fn() -> Result<RequestBuilder> + Send + Sync,
    {
        let policy = &self.inner.config.retry;
        let attempts = if retry { policy.attempts.max(1) } else { 1 };
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            attempt += 1;
            let mut rb = build()?;
            if let Some(h) = self.auth_header(r, scope)? {
                rb = rb.header(AUTHORIZATION, h);
            }
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            match rb.send().await {
                Err(e) => {
                    let again = attempt < attempts && is_retryable(&e);
                    self.retry_or_unreachable(again, r, attempt, policy, &e)
                        .await?;
                    continue;
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                        answered_challenge = true;
                        attempt -= 1;
                        self.authenticate(r, scope, resp.headers()).await?;
                        continue;
                    }
                    if attempt < attempts && retryable_status(status) {
                        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                        let wait = retry_after(resp.headers())
                            .unwrap_or_else(|| policy.delay(attempt))
                            .min(policy.max_delay * 4);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Ok(resp);
                }
            }
        }
    }

    /// A plain request for `path` under the registry.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner.http.request(method, url)
    }

    // ------------------------------------------------------------------ blobs --------

    /// `/v2/<repo>/blobs/<digest>` under the registry.
    fn blob_url(&self, repo: &Reference, d: &Digest) -> Result<Url> {
        self.url(repo, &format!("/v2/{}/blobs/{d}", repo.repository()))
    }

    /// Does the repository hold blob `d`? `Some(size)` if so.
    pub async fn blob_exists(&self, repo: &Reference, d: &Digest) -> Result<Option<u64>> {
        let url = self.blob_url(repo, d)?;
        let resp = self
            .send(repo, &Scope::pull(repo), true, || {
                Ok(self.request(Method::HEAD, url.clone()))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => {
                let size = header_u64(resp.headers(), CONTENT_LENGTH.as_str()).unwrap_or(0);
                self.remember(repo, d);
                Ok(Some(size))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(repo, "HEAD", url.path(), resp).await),
        }
    }

    /// Record that `repo` holds `d` (for later mounts).
    pub(crate) fn remember(&self, repo: &Reference, d: &Digest) {
        if let Ok(mut l) = self.inner.locations.lock() {
            l.entry(repo.registry().to_string())
                .or_default()
                .entry(*d)
                .or_default()
                .insert(repo.repository().to_string());
        }
    }

    /// Other repositories of the same registry known to hold `d`.
    pub(crate) fn mount_candidates(&self, repo: &Reference, d: &Digest) -> Vec<String> {
        self.inner
            .locations
            .lock()
            .ok()
            .and_then(|l| {
                l.get(repo.registry()).and_then(|m| m.get(d)).map(|set| {
                    set.iter()
                        .filter(|r| r.as_str() != repo.repository())
                        .cloned()
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Download blob `desc` into `dest` (created atomically), checking size and digest as the
    /// bytes arrive. `on_bytes` sees every chunk's length.
    pub async fn fetch_blob_to_file(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let url = self.blob_url(repo, &desc.digest)?;
        let policy = &self.inner.config.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.get_pulling(repo, &url).await?;
            if !resp.status().is_success() {
                return Err(if resp.status() == StatusCode::NOT_FOUND {
                    blob_not_found(repo, desc)
                } else {
                    status_error(repo, "GET", url.path(), resp).await
                });
            }
            let mut tmp = tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(dir)
                .at(dir)?;
            match stream_to(resp, &mut tmp, desc.size, on_bytes, &self.inner.stats).await {
                Ok((got, len)) => {
                    if got != desc.digest || len != desc.size {
                        return Err(blob_mismatch(repo, desc, got.to_string(), len));
                    }
                    tmp.as_file().sync_data().at(tmp.path())?;
                    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
                    self.remember(repo, &desc.digest);
                    return Ok(());
                }
                Err(StreamError::TooLong(len)) => {
                    return Err(blob_mismatch(
                        repo,
                        desc,
                        "(more bytes than announced)".into(),
                        len,
                    ))
                }
                Err(StreamError::Io(e)) => return Err(Error::io(tmp.path(), e)),
                Err(StreamError::Http(e)) => {
                    let again = attempt < policy.attempts.max(1);
                    self.retry_or_unreachable(again, repo, attempt, policy, &e)
                        .await?;
                    continue;
                }
            }
        }
    }

    /// Download a small blob into memory (at most `max` bytes), checking its digest.
    pub async fn fetch_blob_bytes(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        max: u64,
    ) -> Result<Vec<u8>> {
        if desc.size > max {
            return Err(Error::Integrity(format!(
                "blob {} of {} is {} bytes, above the {max}-byte limit",
                desc.digest,
                repo.name(),
                desc.size
            )));
        }
        let url = self.blob_url(repo, &desc.digest)?;
        let resp = self.get_pulling(repo, &url).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(blob_not_found(repo, desc));
        }
        if !resp.status().is_success() {
            return Err(status_error(repo, "GET", url.path(), resp).await);
        }
        let bytes = read_body(repo, resp, desc.size.min(max)).await?;
        check_bytes(&bytes, desc, repo)?;
        Ok(bytes)
    }

    // -------------------------------------------------------------- manifests --------

    /// `GET`/`HEAD /v2/<repo>/manifests/<tag|digest>` with every manifest media type accepted,
    /// authenticated and retried; the URL comes back for error messages.
    async fn manifest_request(
        &self,
        reference: &Reference,
        method: Method,
    ) -> Result<(Url, Response)> {
        let mref = reference.manifest_ref();
        let url = self.url(
            reference,
            &format!("/v2/{}/manifests/{mref}", reference.repository()),
        )?;
        let resp = self
            .send(reference, &Scope::pull(reference), true, || {
                Ok(self
                    .request(method.clone(), url.clone())
                    .header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        Ok((url, resp))
    }

    /// Fetch a manifest or index by tag or digest (`reference` decides), checked: by digest it
    /// must hash to the digest; by tag it must hash to what `Docker-Content-Digest` says.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<Manifest> {
        let (url, resp) = self.manifest_request(reference, Method::GET).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                registry: reference.registry().to_string(),
                what: format!("manifest {reference}"),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error(reference, "GET", url.path(), resp).await);
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let announced = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_body(reference, resp, MAX_MANIFEST_BYTES).await?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::Integrity(format!(
                "manifest {reference} is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let got = Digest::of(&bytes);
        let expected = match (reference.digest(), announced.as_deref()) {
            (Some(d), _) => Some(*d),
            (None, Some(a)) => Some(Digest::parse(a).map_err(|e| {
                Error::protocol(
                    reference.registry(),
                    format!("bad Docker-Content-Digest header: {e}"),
                )
            })?),
            (None, None) => None,
        };
        if let Some(exp) = expected {
            if exp != got {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {reference}"),
                    source_name: format!("registry {}", reference.registry()),
                    expected: exp.to_string(),
                    expected_size: bytes.len() as u64,
                    got: got.to_string(),
                    got_size: bytes.len() as u64,
                });
            }
        }
        Document::parse(bytes, got, &content_type, &format!("manifest {reference}"))
    }

    /// Does the manifest exist? Its descriptor (from the headers) if so.
    pub async fn head_manifest(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let (url, resp) = self.manifest_request(reference, Method::HEAD).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(reference, "HEAD", url.path(), resp).await);
        }
        let h = resp.headers();
        let digest = match (header_str(h, "docker-content-digest"), reference.digest()) {
            (Some(d), _) => Digest::parse(&d).map_err(|e| {
                Error::protocol(
                    reference.registry(),
                    format!("bad Docker-Content-Digest: {e}"),
                )
            })?,
            (None, Some(d)) => *d,
            (None, None) => {
                return Err(Error::protocol(
                    reference.registry(),
                    "HEAD of a manifest by tag returned no Docker-Content-Digest",
                ))
            }
        };
        let mt = header_str(h, CONTENT_TYPE.as_str()).unwrap_or_default();
        let size = header_u64(h, CONTENT_LENGTH.as_str()).unwrap_or(0);
        Ok(Some(Descriptor::new(&mt, digest, size)))
    }

    /// Upload a manifest under `reference`'s tag (or digest). Returns its digest and the
    /// `OCI-Subject` header (set by registries that index referrers themselves).
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, Option<String>)> {
        let d = Digest::of(bytes);
        let mref = match (reference.tag(), reference.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(rd)) => {
                if *rd != d {
                    return Err(Error::Input(format!(
                        "manifest bytes hash to {d}, not to the digest {rd} they are pushed under"
                    )));
                }
                rd.to_string()
            }
            (None, None) => d.to_string(),
        };
        let url = self.url(
            reference,
            &format!("/v2/{}/manifests/{mref}", reference.repository()),
        )?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(reference, &Scope::push(reference), true, || {
                Ok(self
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(reference, "PUT", url.path(), resp).await);
        }
        if let Some(a) = header_str(resp.headers(), "docker-content-digest") {
            if a != d.to_string() {
                return Err(Error::protocol(
                    reference.registry(),
                    format!("stored the manifest under digest {a}, but its bytes hash to {d}"),
                ));
            }
        }
        let subject = header_str(resp.headers(), "oci-subject");
        Ok((d, subject))
    }

    /// Every tag of a repository (following `Link` pagination).
    pub async fn list_tags(&self, repo: &Reference) -> Result<Vec<String>> {
        let mut url = self.url(repo, &format!("/v2/{}/tags/list?n=1000", repo.repository()))?;
        let mut tags = Vec::new();
        for _ in 0..10_000 {
            let u = url.clone();
            let resp = self.get_pulling(repo, &u).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(Error::NotFound {
                    registry: repo.registry().to_string(),
                    what: format!("repository {}", repo.repository()),
                });
            }
            if !resp.status().is_success() {
                return Err(status_error(repo, "GET", url.path(), resp).await);
            }
            let next = header_str(resp.headers(), "link").and_then(|l| parse_next_link(&l));
            let body = read_body(repo, resp, 16 << 20).await?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| Error::protocol(repo.registry(), format!("tag list: {e}")))?;
            if let Some(list) = v.get("tags").and_then(Value::as_array) {
                tags.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
            }
            match next {
                Some(n) => {
                    url = url.join(&n).map_err(|e| {
                        Error::protocol(repo.registry(), format!("bad Link header: {e}"))
                    })?
                }
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// `GET /v2/<name>/referrers/<digest>`: `None` when the registry has no referrers API
    /// (404), the index bytes otherwise.
    pub(crate) async fn referrers_api(
        &self,
        repo: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<u8>>> {
        let mut url = self.url(
            repo,
            &format!("/v2/{}/referrers/{subject}", repo.repository()),
        )?;
        if let Some(a) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", a);
        }
        let resp = self
            .send(repo, &Scope::pull(repo), true, || {
                Ok(self
                    .request(Method::GET, url.clone())
                    .header(ACCEPT, crate::media::OCI_INDEX))
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let ct = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
                let body = read_body(repo, resp, MAX_MANIFEST_BYTES).await?;
                // Some registries answer unknown routes with 200 and an HTML page.
                if !ct.starts_with(crate::media::OCI_INDEX) && !ct.starts_with("application/json") {
                    return Ok(None);
                }
                Ok(Some(body))
            }
            _ => Err(status_error(repo, "GET", url.path(), resp).await),
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_next_link(link: &str) -> Option<String> {
    for part in link.split(',') {
        let part = part.trim();
        if part.contains("rel=\"next\"") || part.contains("rel=next") {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            return Some(part[start..end].to_string());
        }
    }
    None
}

pub(crate) fn check_bytes(bytes: &[u8], desc: &Descriptor, repo: &Reference) -> Result<()> {
    let got = Digest::of(bytes);
    if got != desc.digest || bytes.len() as u64 != desc.size {
        return Err(blob_mismatch(
            repo,
            desc,
            got.to_string(),
            bytes.len() as u64,
        ));
    }
    Ok(())
}

/// The registry of `repo` does not have blob `desc`.
fn blob_not_found(repo: &Reference, desc: &Descriptor) -> Error {
    Error::NotFound {
        registry: repo.registry().to_string(),
        what: format!("blob {} in {}", desc.digest, repo.repository()),
    }
}

/// The registry of `repo` sent other content for blob `desc`: `got` (its digest, or what was
/// wrong with it) and `got_size` bytes.
fn blob_mismatch(repo: &Reference, desc: &Descriptor, got: String, got_size: u64) -> Error {
    Error::DigestMismatch {
        what: format!("blob of {}", repo.name()),
        source_name: format!("registry {}", repo.registry()),
        expected: desc.digest.to_string(),
        expected_size: desc.size,
        got,
        got_size,
    }
}

enum StreamError {
    Http(reqwest::Error),
    Io(std::io::Error),
    TooLong(u64),
}

async fn stream_to(
    mut resp: Response,
    tmp: &mut tempfile::NamedTempFile,
    limit: u64,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
    stats: &Stats,
) -> std::result::Result<(Digest, u64), StreamError> {
    let mut h = Hasher::new();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
    while let Some(chunk) = resp.chunk().await.map_err(StreamError::Http)? {
        if h.len() + chunk.len() as u64 > limit {
            return Err(StreamError::TooLong(h.len() + chunk.len() as u64));
        }
        h.update(&chunk);
        w.write_all(&chunk).map_err(StreamError::Io)?;
        on_bytes(chunk.len() as u64);
        stats
            .bytes_downloaded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    w.flush().map_err(StreamError::Io)?;
    let len = h.len();
    Ok((h.finish(), len))
}

/// Read a response body from the registry of `r` (at most `limit + 1` bytes); a failure while
/// reading means the registry is unreachable.
async fn read_body(r: &Reference, resp: Response, limit: u64) -> Result<Vec<u8>> {
    read_limited(resp, limit)
        .await
        .map_err(|e| Error::Unreachable {
            registry: r.registry().to_string(),
            attempts: 1,
            detail: describe(&e),
        })
}

/// Read a response body, stopping after `limit + 1` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: u64,
) -> std::result::Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = (limit + 1).saturating_sub(out.len() as u64) as usize;
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() as u64 > limit {
            break;
        }
    }
    Ok(out)
}

pub(crate) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name).and_then(|s| s.parse().ok())
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_u64(h, "retry-after").map(Duration::from_secs)
}

pub(crate) fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::REQUEST_TIMEOUT
        || (s.is_server_error()
            && s != StatusCode::NOT_IMPLEMENTED
            && s != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

pub(crate) fn is_retryable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// A reqwest error with its causes (reqwest's own Display omits them).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(c) = src {
        let t = c.to_string();
        if t != last && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        last = t;
        src = c.source();
    }
    s
}

/// Turn an unexpected response into an error, with the registry's OCI error message.
pub(crate) async fn status_error(r: &Reference, method: &str, path: &str, resp: Response) -> Error {
    let status = resp.status();
    let body = read_limited(resp, 8192).await.unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("errors").and_then(Value::as_array).map(|errs| {
                errs.iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.get("code").and_then(Value::as_str).unwrap_or("ERROR"),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_string()
        });
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth {
            registry: r.registry().to_string(),
            detail: format!("{status} for {method} {path}: {detail}"),
        },
        StatusCode::NOT_FOUND => Error::NotFound {
            registry: r.registry().to_string(),
            what: format!("{path} ({detail})"),
        },
        _ => Error::Status {
            registry: r.registry().to_string(),
            status: status.as_u16(),
            method: method.to_string(),
            path: path.to_string(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        assert!(
            p.delay(1) >= Duration::from_millis(100) && p.delay(1) <= Duration::from_millis(125)
        );
        assert!(p.delay(3) >= Duration::from_millis(400));
        assert!(p.delay(30) <= Duration::from_millis(1250));
    }

    #[test]
    fn links_and_statuses() {
        assert_eq!(
            parse_next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert!(retryable_status(StatusCode::BAD_GATEWAY));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
        assert!(!retryable_status(StatusCode::NOT_IMPLEMENTED));
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn scheme_policy() {
        let c = Client::new(ClientConfig {
            credentials: CredentialSource::Anonymous,
            ..ClientConfig::default()
        })
        .unwrap();
        let local = Reference::parse("127.0.0.1:5000/a:1").unwrap();
        let remote = Reference::parse("reg.example/a:1").unwrap();
        assert_eq!(c.base_url(&local).unwrap().scheme(), "http");
        assert_eq!(c.base_url(&remote).unwrap().scheme(), "https");
        let c = Client::new(ClientConfig {
            credentials: CredentialSource::Anonymous,
            plain_http: PlainHttp::Always,
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(c.base_url(&remote).unwrap().scheme(), "http");
    }
}
