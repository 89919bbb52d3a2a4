//! Keyless signing in the service (`signingMode: keyless`): for a signing, an ephemeral P-256
//! key with a short-lived certificate for **the Signer's own identity** (not the caller's),
//! an RFC 3161 timestamp over the signature, and optionally a Rekor entry — the flow of
//! [`stella_keyless::KeylessSigner`] — then the DSSE envelope, the certificate chain and the
//! Sigstore bundle v0.3 in the response.
//!
//! Configuration (`[keyless]`, docs/keyless.md "Service"):
//! - `issuer = "fulcio"` with `fulcio_url`, `tsa_url`, optional `rekor_url` (+ `rekor =
//!   "required" | "best_effort"`) and `trusted_root` (a `trusted_root.json` naming the Fulcio
//!   CA and CT log, the TSA and the log: every bundle is verified against it before it leaves);
//!   or `issuer = "dev"`: the **dev-only** in-process CA and TSA of `stella_keyless::dev`
//!   (the `--dev` profile, or `insecure_dev_services = true` for tests), whose state and
//!   `trusted_root.json` live in `dev_dir`.
//! - The Signer's identity token (`[keyless.identity]`): OAuth client credentials at the
//!   Authority (`token_url`, `client_id`, secret from `client_secret_env`, `audience =
//!   "sigstore"`, optional `resource`/`scope`), or a token file (`token_file`, e.g. a
//!   projected service-account token), cached until `refresh_before_seconds` before `exp`.
//!   The dev profile's embedded Authority mints it in process.
//! - Certificate reuse: `reuse = "within_validity"` (default; margin
//!   `reuse_margin_seconds`, 120) or `"per_signature"`.
//!
//! Which tenants sign keyless: `signing.keyless` (tenants served by the default keys) and
//! `signing.tenants.T.keyless`: `off` (default: keyless refused), `allowed` (keyful by
//! default, `signingMode: keyless` on request), `default` (keyless unless the request names
//! the keyful mode), `only` (keyless; keyful refused; no keys needed). A keyful request never
//! touches this module.
//!
//! Failures: an unavailable upstream (identity provider, Fulcio, TSA, Rekor when required)
//! is `503 upstream_unavailable` with `Retry-After` (`retry_after_seconds`); any other
//! upstream failure (a refusal, an answer that fails our checks) is `503` without it. Nothing
//! is returned without a verified timestamp: the bundle is verified before it leaves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stella_keyless::dev::DevServices;
use stella_keyless::token::{IdentityToken, TokenError};
use stella_keyless::{
    BoxFuture, HttpOptions, IdentityTokenSource, KeylessError, KeylessOutput, KeylessSigner, Reuse,
    TlogPolicy,
};
use stella_sigstore::TrustedRoot;
use stella_store::AuditRecord;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::config::Config;
pub(crate) use crate::config::{KeylessConfig, KeylessUse};
use crate::error::ApiError;
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::wire::{Bundle, ExportSignature, SignatureKey, SigningIdentity};

/// `[keyless]`'s HTTP settings for Fulcio, the TSA and Rekor.
fn http_options(k: &KeylessConfig) -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_millis(k.timeout_ms.max(100)),
        connect_timeout: Duration::from_millis(k.timeout_ms.clamp(100, 5000)),
        retries: k.retries,
        ..HttpOptions::default()
    }
}

/// The keyless signer of the service and what the API needs around it.
pub struct Keyless {
    signer: KeylessSigner,
    retry_after: u64,
    /// Where the dev trusted root was written (`issuer = "dev"`).
    pub trusted_root_path: Option<PathBuf>,
    reuse_margin: Duration,
}

impl std::fmt::Debug for Keyless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyless")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Keyless {
    /// The margin before `notAfter` inside which a certificate is not used.
    pub fn reuse_margin(&self) -> Duration {
        self.reuse_margin
    }

    /// Forget the current certificate.
    pub async fn rotate(&self) {
        self.signer.rotate().await;
    }
}

fn start_err(at: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Config(format!("{at}: {e}"))
}

/// Build the keyless signer from `[keyless]` (`None` when not configured). `dev_tokens`: the
/// dev profile's identity tokens; `tokens`: a source given by the embedding program (wins).
pub(crate) fn build(
    cfg: &Config,
    dev_tokens: Option<Arc<dyn IdentityTokenSource>>,
    tokens: Option<Arc<dyn IdentityTokenSource>>,
) -> Result<Option<Keyless>, StartError> {
    let k = &cfg.keyless;
    let Some(issuer) = k.issuer.as_deref() else {
        return Ok(None);
    };
    let reuse = match k.reuse.as_str() {
        "per_signature" => Reuse::PerSignature,
        _ => Reuse::WithinValidity {
            margin: Duration::from_secs(k.reuse_margin_seconds),
        },
    };
    let tokens = match (tokens, dev_tokens) {
        (Some(t), _) => Some(t),
        (None, Some(d)) if k.identity.token_url.is_none() && k.identity.token_file.is_none() => {
            Some(d)
        }
        _ => None,
    };
    let tokens: Arc<dyn IdentityTokenSource> = match tokens {
        Some(t) => t,
        None => identity_source(k)?,
    };
    let (signer, trusted_root_path) = match issuer {
        "dev" => {
            let dir = k
                .dev_dir
                .clone()
                .or_else(|| cfg.dev.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("data"));
            let services = DevServices::load_or_generate(&dir, OffsetDateTime::now_utc())
                .map_err(|e| start_err("keyless dev CA and TSA", e))?;
            // Written at every start, so the file always matches the CA in use.
            let root_path = dir.join(stella_keyless::dev::DEV_TRUSTED_ROOT_FILE);
            std::fs::write(&root_path, services.trusted_root_json())
                .map_err(|e| StartError::Io(format!("{}: {e}", root_path.display())))?;
            tracing::warn!(trusted_root = %root_path.display(), "keyless signing with the DEV-ONLY in-process CA and TSA: never trusted in production");
            let s = services
                .signer(tokens)
                .map_err(|e| start_err("keyless dev trusted root", e))?;
            (s, Some(root_path))
        }
        _ => {
            let root_path = k.trusted_root.clone().unwrap_or_default();
            let text = std::fs::read(&root_path)
                .map_err(|e| StartError::Io(format!("{}: {e}", root_path.display())))?;
            let root = Arc::new(
                TrustedRoot::from_json(&text)
                    .map_err(|e| start_err(&format!("{}", root_path.display()), e))?,
            );
            let o = http_options(k);
            let fulcio = stella_keyless::fulcio::FulcioClient::new(
                k.fulcio_url.as_deref().unwrap_or_default(),
                root.clone(),
                o,
            )
            .map_err(|e| start_err("keyless.fulcio_url", e))?;
            let tsa =
                stella_keyless::tsa::HttpTsa::new(k.tsa_url.as_deref().unwrap_or_default(), o)
                    .map_err(|e| start_err("keyless.tsa_url", e))?;
            let mut s = KeylessSigner::new(tokens, Arc::new(fulcio), Arc::new(tsa), root);
            if let Some(u) = &k.rekor_url {
                let log = stella_keyless::rekor::RekorClient::new(u, o)
                    .map_err(|e| start_err("keyless.rekor_url", e))?;
                let policy = if k.rekor == "best_effort" {
                    TlogPolicy::BestEffort
                } else {
                    TlogPolicy::Required
                };
                s = s.with_tlog(Arc::new(log), policy);
            }
            (s, None)
        }
    };
    tracing::info!(signer = ?signer, "keyless signing configured");
    Ok(Some(Keyless {
        signer: signer.with_reuse(reuse),
        retry_after: k.retry_after_seconds,
        trusted_root_path,
        reuse_margin: Duration::from_secs(k.reuse_margin_seconds),
    }))
}

fn identity_source(k: &KeylessConfig) -> Result<Arc<dyn IdentityTokenSource>, StartError> {
    let id = &k.identity;
    let refresh = i64::try_from(id.refresh_before_seconds).unwrap_or(i64::MAX);
    if let Some(path) = &id.token_file {
        return Ok(Arc::new(FileTokens {
            path: path.clone(),
            refresh_before: refresh,
            cache: tokio::sync::Mutex::new(None),
        }));
    }
    let (Some(url), Some(client_id)) = (&id.token_url, &id.client_id) else {
        return Err(StartError::Config(
            "keyless: no identity token source (keyless.identity.token_url or token_file)".into(),
        ));
    };
    let secret = match (&id.client_secret_env, &id.client_secret_file) {
        (Some(env), _) => Zeroizing::new(std::env::var(env).map_err(|_| {
            StartError::Config(format!(
                "keyless.identity.client_secret_env: {env} is not set"
            ))
        })?),
        (None, Some(f)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|e| StartError::Io(format!("{}: {e}", f.display())))?,
            );
            Zeroizing::new(text.trim().to_string())
        }
        (None, None) => {
            return Err(StartError::Config(
                "keyless.identity: set client_secret_env or client_secret_file".into(),
            ))
        }
    };
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_millis(k.timeout_ms.max(100)))
        .connect_timeout(Duration::from_millis(k.timeout_ms.clamp(100, 5000)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = &k.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| StartError::Io(format!("{}: {e}", ca.display())))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| StartError::Tls(format!("{}: {e}", ca.display())))?
        {
            b = b.tls_certs_merge([c]);
        }
    }
    let http = b
        .build()
        .map_err(|e| StartError::Tls(format!("keyless identity HTTP client: {e}")))?;
    let mut form = vec![
        ("grant_type".to_string(), "client_credentials".to_string()),
        ("client_id".to_string(), client_id.clone()),
        ("audience".to_string(), id.audience.clone()),
    ];
    if let Some(r) = &id.resource {
        form.push(("resource".into(), r.clone()));
    }
    if let Some(s) = &id.scope {
        form.push(("scope".into(), s.clone()));
    }
    Ok(Arc::new(ClientCredentialsTokens {
        http,
        url: url.clone(),
        form,
        secret,
        audience: id.audience.clone(),
        refresh_before: refresh,
        cache: tokio::sync::Mutex::new(None),
    }))
}

/// The `aud` claim of a JWT (string or array), read without verifying (Fulcio verifies).
fn audiences(raw: &str) -> Vec<String> {
    use base64::Engine as _;
    let Some(payload) = raw.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let claims = serde_json::from_slice::<Value>(&bytes).ok();
    stella_keyless::token::claim_strings(
        claims.as_ref().and_then(|v| v.get("aud")),
        std::iter::once,
    )
}

fn usable(t: &IdentityToken, refresh_before: i64) -> bool {
    t.check_fresh(OffsetDateTime::now_utc(), refresh_before)
        .is_ok()
}

/// The Signer's identity token by OAuth client credentials, cached until `refresh_before`
/// seconds before `exp` (one request at a time).
struct ClientCredentialsTokens {
    http: reqwest::Client,
    url: String,
    form: Vec<(String, String)>,
    secret: Zeroizing<String>,
    audience: String,
    refresh_before: i64,
    cache: tokio::sync::Mutex<Option<IdentityToken>>,
}

impl ClientCredentialsTokens {
    async fn fetch(&self) -> Result<IdentityToken, TokenError> {
        let body = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &self.form {
                ser.append_pair(k, v);
            }
            ser.append_pair("client_secret", &self.secret);
            Zeroizing::new(ser.finish())
        };
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("{}: {e}", self.url)))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(TokenError::Unavailable(format!(
                "{}: HTTP {status}",
                self.url
            )));
        }
        let v: Value = resp.json().await.map_err(|e| {
            TokenError::Unavailable(format!("{}: unreadable answer: {e}", self.url))
        })?;
        if !status.is_success() {
            return Err(TokenError::Source(format!(
                "{} refused the client credentials (HTTP {status}): {}",
                self.url,
                v.get("error").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        let raw = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Source(format!("{}: no access_token", self.url)))?;
        if !audiences(raw).contains(&self.audience) {
            return Err(TokenError::Source(format!(
                "the identity token from {} is not for audience {:?}",
                self.url, self.audience
            )));
        }
        IdentityToken::parse(raw)
    }
}

impl IdentityTokenSource for ClientCredentialsTokens {
    fn token(&self) -> BoxFuture<'_, Result<IdentityToken, TokenError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(t) = cache.as_ref().filter(|t| usable(t, self.refresh_before)) {
                return Ok(t.clone());
            }
            let t = self.fetch().await?;
            t.check_fresh(OffsetDateTime::now_utc(), 0)?;
            *cache = Some(t.clone());
            Ok(t)
        })
    }
}

/// The identity token from a file (re-read when the cached one nears expiry).
struct FileTokens {
    path: PathBuf,
    refresh_before: i64,
    cache: tokio::sync::Mutex<Option<IdentityToken>>,
}

impl IdentityTokenSource for FileTokens {
    fn token(&self) -> BoxFuture<'_, Result<IdentityToken, TokenError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(t) = cache.as_ref().filter(|t| usable(t, self.refresh_before)) {
                return Ok(t.clone());
            }
            let text = Zeroizing::new(
                tokio::fs::read_to_string(&self.path)
                    .await
                    .map_err(|e| TokenError::Source(format!("{}: {e}", self.path.display())))?,
            );
            let t = IdentityToken::parse(&text)?;
            t.check_fresh(OffsetDateTime::now_utc(), 0)?;
            *cache = Some(t.clone());
            Ok(t)
        })
    }
}

/// Does keyless signing serve `tenant` at all (a keyless-only tenant has no keys)?
pub(crate) fn serves(keyless: Option<&Keyless>, cfg: &Config, tenant: &str) -> bool {
    keyless.is_some() && tenant_use(cfg, tenant) != KeylessUse::Off
}

fn tenant_use(cfg: &Config, tenant: &str) -> KeylessUse {
    match cfg.signing.tenants.get(tenant) {
        Some(t) => t.keyless,
        None if cfg.signing.default_keys_for_unlisted_tenants => cfg.signing.keyless,
        None => KeylessUse::Off,
    }
}

/// Does this request sign keyless? `requested`: `options.signingMode`. Errors are the
/// caller's (`400 invalid_request`): keyless asked where it is off, a keyful mode asked by a
/// keyless-only tenant. A keyful answer goes on through the unchanged keyful path (which
/// checks a requested keyful mode against the tenant's keys).
pub(crate) fn wants_keyless(
    keyless: Option<&Keyless>,
    cfg: &Config,
    tenant: &str,
    requested: Option<&str>,
) -> Result<bool, ApiError> {
    let configured = keyless.is_some();
    let u = if configured {
        tenant_use(cfg, tenant)
    } else {
        KeylessUse::Off
    };
    let invalid = |m: String| ApiError::new(crate::error::Code::InvalidRequest, m);
    match (requested, u) {
        (Some("keyless"), KeylessUse::Off) => Err(invalid(format!(
            "signing mode \"keyless\" is not allowed for tenant {tenant:?}"
        ))),
        (Some("keyless"), _) => Ok(true),
        (Some(m), KeylessUse::Only) => Err(invalid(format!(
            "tenant {tenant:?} signs keyless only; signing mode {m:?} is not allowed"
        ))),
        (Some(_), _) => Ok(false),
        (None, KeylessUse::Default | KeylessUse::Only) => Ok(true),
        (None, _) => Ok(false),
    }
}

/// Record what a keyless failure was in `rec` and make the API error.
fn failure(metrics: &Metrics, k: &Keyless, e: KeylessError) -> ApiError {
    let service = e.service().map(|s| s.name()).unwrap_or(match &e {
        KeylessError::Token(_) => "identity-provider",
        _ => "keyless",
    });
    metrics.keyless_failure(service);
    let retryable =
        e.is_upstream_unavailable() || matches!(e, KeylessError::Token(TokenError::Unavailable(_)));
    let mut err = ApiError::unavailable(
        if retryable {
            "a keyless signing service (identity provider, certificate authority, timestamp authority or transparency log) is unavailable; nothing was signed; retry later"
        } else {
            "keyless signing failed; nothing was signed"
        },
        format!("keyless ({service}): {e}"),
    );
    err.retry_after = retryable.then_some(k.retry_after);
    err
}

fn fill_record(rec: &mut AuditRecord, out: &KeylessOutput) {
    let id = &out.identity;
    rec.key_ids = vec![id.key_id.clone()];
    rec.certificate_serial = Some(id.certificate_serial.clone());
    rec.certificate_san = Some(id.san.clone());
    rec.certificate_issuer = Some(id.oidc_issuer.clone());
    rec.key_source = Some(if out.new_certificate {
        "ephemeral".into()
    } else {
        "ephemeral-reused".into()
    });
    if let Some(e) = &out.tlog_entry {
        rec.tlog_index = Some(e.log_index);
        rec.tlog_uuid = Some(e.uuid.clone());
    }
}

/// A keyless signing's answer: the envelope (JSON), the parts of `bundle` the API returns,
/// and the Sigstore bundle.
pub(crate) struct Signed {
    pub(crate) envelope: stella_dsse::Envelope,
    pub(crate) dsse: Value,
    pub(crate) output: KeylessOutput,
}

impl Signed {
    /// `bundle`: `dsse`, `certificateChain`, `mode`, `signingIdentity` (+ `sigstore` when
    /// asked).
    pub(crate) fn bundle(&self, tenant: &str, with_sigstore: bool) -> Bundle {
        let mut identity = self.output.identity.to_json();
        identity["type"] = json!("certificate");
        identity["tenant"] = json!(tenant);
        identity["signedAt"] = json!(stella_x509::format_time(self.output.timestamp_time));
        if let Some(e) = &self.output.tlog_entry {
            identity["tlogEntry"] = json!({"logIndex": e.log_index, "uuid": e.uuid, "url": e.url});
        }
        Bundle {
            dsse: crate::wire::DsseJson::Value(self.dsse.clone()),
            certificate_chain: self.output.certificate_chain.clone(),
            mode: Some(stella_keyless::MODE.to_string()),
            signing_identity: SigningIdentity::Certificate(identity),
            sigstore: with_sigstore.then(|| self.output.bundle.clone()),
        }
    }

    /// The `/sign/export` signature tuple: as the keyful one, naming the leaf certificate
    /// instead of a public key.
    pub(crate) fn export_signatures(&self) -> Vec<ExportSignature> {
        self.envelope
            .signatures
            .iter()
            .map(|s| ExportSignature {
                keyid: s.keyid.clone(),
                sig: stella_dsse::b64::encode(&s.sig),
                algorithm: stella_keys::Algorithm::EcdsaP256Sha256.name(),
                key: SignatureKey::Certificate {
                    certificate: self.output.certificate_chain.first().cloned(),
                },
            })
            .collect()
    }

    /// The audit record of a keyless signature: ephemeral key id, certificate serial, SAN
    /// and issuer, key source, log entry, envelope SHA-256.
    pub(crate) fn record(&self, rec: &mut AuditRecord) {
        fill_record(rec, &self.output);
        rec.envelope_sha256 = Some(stella_keys::hex(&stella_keys::sha256(
            &self.envelope.to_json(),
        )));
    }
}

/// Sign `payload` as a DSSE envelope keyless (the caller records it: [`Signed::record`]).
pub(crate) async fn sign(
    keyless: Option<&Keyless>,
    metrics: &Metrics,
    payload_type: &str,
    payload: Vec<u8>,
) -> Result<Signed, ApiError> {
    let Some(k) = keyless else {
        return Err(ApiError::new(
            crate::error::Code::InvalidRequest,
            "keyless signing is not configured on this signer",
        ));
    };
    let start = Instant::now();
    let out = k
        .signer
        .sign_dsse(payload_type, payload)
        .await
        .map_err(|e| failure(metrics, k, e))?;
    if let Some(why) = &out.tlog_skipped {
        tracing::warn!(reason = %why, "keyless signature without a transparency-log entry (rekor = best_effort)");
    }
    let envelope = out
        .envelope
        .clone()
        .ok_or_else(|| ApiError::unavailable("internal error", "keyless: no envelope"))?;
    let dsse: Value = serde_json::from_slice(&envelope.to_json())
        .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
    metrics.keyless_signed(out.new_certificate, start.elapsed().as_secs_f64());
    metrics.key_used("ephemeral", stella_keyless::MODE);
    Ok(Signed {
        envelope,
        dsse,
        output: out,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A token endpoint that counts calls and answers tokens living `ttl` seconds for `aud`
    /// (or HTTP `status` when not 200).
    async fn token_endpoint(
        ttl: i64,
        aud: &'static str,
        status: u16,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(body.contains("client_secret=s3cret"), "{body}");
                    assert!(body.contains("audience=sigstore"), "{body}");
                    let exp = OffsetDateTime::now_utc().unix_timestamp() + ttl;
                    let t = stella_keyless::token::unsigned_jwt(
                        &json!({"iss": "https://a", "sub": "signer", "aud": aud, "exp": exp}),
                    );
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(json!({"access_token": t, "token_type": "Bearer"})),
                    )
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, calls)
    }

    fn source(url: &str) -> Arc<dyn IdentityTokenSource> {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let mut k = KeylessConfig::default();
        k.identity.token_url = Some(url.to_string());
        k.identity.client_id = Some("signer".into());
        k.identity.client_secret_file = Some(secret);
        k.timeout_ms = 2000;
        identity_source(&k).unwrap()
    }

    #[tokio::test]
    async fn identity_tokens_are_cached_until_shortly_before_expiry() {
        use std::sync::atomic::Ordering::SeqCst;
        // 300 s tokens, refreshed 60 s before exp: one request serves many certificates.
        let (url, calls) = token_endpoint(300, "sigstore", 200).await;
        let s = source(&url);
        for _ in 0..3 {
            assert_eq!(s.token().await.unwrap().subject, "signer");
        }
        assert_eq!(calls.load(SeqCst), 1);
        // 30 s tokens are already inside the refresh margin: fetched every time.
        let (url, calls) = token_endpoint(30, "sigstore", 200).await;
        let s = source(&url);
        s.token().await.unwrap();
        s.token().await.unwrap();
        assert_eq!(calls.load(SeqCst), 2);
        // A token for another audience is refused; a 503 is "unavailable", a 401 is not.
        let (url, _) = token_endpoint(300, "signer", 200).await;
        assert!(
            matches!(source(&url).token().await, Err(TokenError::Source(m)) if m.contains("audience"))
        );
        let (url, _) = token_endpoint(300, "sigstore", 503).await;
        assert!(matches!(
            source(&url).token().await,
            Err(TokenError::Unavailable(_))
        ));
        let (url, _) = token_endpoint(300, "sigstore", 401).await;
        assert!(matches!(
            source(&url).token().await,
            Err(TokenError::Source(_))
        ));
        // Nobody listening: unavailable.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}/token", l.local_addr().unwrap());
        drop(l);
        assert!(matches!(
            source(&dead).token().await,
            Err(TokenError::Unavailable(_))
        ));
    }

    #[test]
    fn audiences_are_read_as_string_or_array() {
        let t = stella_keyless::token::unsigned_jwt(&json!({"iss":"i","sub":"s","aud":"sigstore"}));
        assert_eq!(audiences(&t), vec!["sigstore".to_string()]);
        let t = stella_keyless::token::unsigned_jwt(
            &json!({"iss":"i","sub":"s","aud":["a","sigstore"]}),
        );
        assert_eq!(audiences(&t), vec!["a".to_string(), "sigstore".to_string()]);
        let t = stella_keyless::token::unsigned_jwt(&json!({"iss":"i","sub":"s"}));
        assert!(audiences(&t).is_empty());
        assert!(audiences("garbage").is_empty());
    }
}
