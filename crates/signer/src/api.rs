//! Routes and the signing pipeline.
//!
//! Every sign request goes through the same gates, in this order, and each refusal is
//! audited before the response leaves:
//! 1. authentication — OpTok + sender constraint ([`crate::auth`]);
//! 2. tenant — this signer must hold keys for the token's `tid` (`tenant_mismatch`), and an
//!    `X-Stella-Tenant` header, if sent, must name the same tenant;
//! 3. body — bounded by `server.max_body_bytes` (`413 artifact_too_large`), strict JSON,
//!    known fields only, predicate type in the catalogue (`400 invalid_request`);
//! 4. entitlement — PoE introspection ([`crate::poe`]); the license's tenant/installation,
//!    when it names them, must match the token's (`tenant_mismatch`);
//! 5. quotas — artifact bytes (`413`), QPS token bucket and concurrency (`429 plan_throttled`
//!    with `Retry-After`), keyed by license;
//! 6. release integrity — `scannerImageDigest` on the allow-list, or signed by a release key
//!    per its OCI signature referrers ([`crate::release`]); `release_untrusted`, or `503
//!    upstream_unavailable` when the registry cannot answer (fail closed);
//! 7. signing — canonical in-toto statement, DSSE with every key of the tenant;
//! 8. audit — the record is appended durably; if that fails the response is `503` and the
//!    signature is dropped (nothing signed leaves unaudited).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::{json, Value};
use stella_dsse::{Statement, Subject};
use stella_keys::Signer;
use stella_store::{Admission, AuditRecord, Lease, Outcome, RateLimit};

use crate::app::{App, AppState};
use crate::auth::{AuthRequest, Caller};
use crate::error::{ApiError, Code};
use crate::poe::PoeDecision;
use crate::trace::TraceContext;

/// Headers that carry a credential, a proof or an identity, and the code a duplicate gets.
/// (The client certificate comes from the TLS layer, never from a header; no forwarded
/// identity header is read.)
pub const IDENTITY_HEADERS: &[(&str, Code)] = &[
    ("authorization", Code::InvalidToken),
    ("dpop", Code::InvalidDpopProof),
    ("x-stella-tenant", Code::InvalidRequest),
    // Names the DPoP `htu` target when `server.public_url` is unset (loopback only).
    ("host", Code::InvalidRequest),
];

/// Connection facts the server attaches to each request.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub tls: bool,
    /// SHA-256 of the client certificate (DER), when one was presented and verified.
    pub client_cert_sha256: Option<[u8; 32]>,
    pub peer: Option<std::net::SocketAddr>,
}

/// Set on responses whose metrics and audit the handler already did.
#[derive(Debug, Clone)]
struct Handled {
    audit_id: String,
    code: &'static str,
}

pub const ROUTE_SIGN_DSSE: &str = "/api/v1/signer/sign/dsse";
pub const ROUTE_SIGN_EXPORT: &str = "/api/v1/signer/sign/export";
pub const ROUTE_VERIFY_REFERRERS: &str = "/api/v1/signer/verify/referrers";

/// The service router.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route(ROUTE_SIGN_DSSE, post(sign_dsse))
        .route(ROUTE_SIGN_EXPORT, post(sign_export))
        .route(ROUTE_VERIFY_REFERRERS, get(verify_referrers))
        .route(crate::audit_api::ROUTE_AUDIT, get(crate::audit_api::query))
        .route(
            crate::audit_api::ROUTE_AUDIT_HEAD,
            get(crate::audit_api::head),
        );
    if state.dev.is_some() {
        r = r
            .route("/dev/authority/jwks", get(dev_jwks))
            .route("/dev/authority/token", post(dev_token))
            .route("/dev/license/introspect", post(dev_introspect));
    }
    r.route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::new(Code::NotFound, "no such route").into_response()
}

fn route_label(p: Option<&MatchedPath>) -> &'static str {
    match p.map(MatchedPath::as_str) {
        Some(ROUTE_SIGN_DSSE) => "sign_dsse",
        Some(ROUTE_SIGN_EXPORT) => "sign_export",
        Some(ROUTE_VERIFY_REFERRERS) => "verify_referrers",
        Some(crate::audit_api::ROUTE_AUDIT) => "audit",
        Some(crate::audit_api::ROUTE_AUDIT_HEAD) => "audit_head",
        Some("/healthz") => "healthz",
        Some("/readyz") => "readyz",
        Some("/metrics") => "metrics",
        Some("/openapi.json") => "openapi",
        Some(p) if p.starts_with("/dev/") => "dev",
        _ => "other",
    }
}

/// Trace context, metrics and one log line for every routed request.
async fn observe(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Several `traceparent` headers are invalid (W3C Trace Context §4.2): start afresh.
    let mut tp = req.headers().get_all("traceparent").iter();
    let tc = TraceContext::from_header(match (tp.next(), tp.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    });
    req.extensions_mut().insert(tc.clone());
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let handled = resp.extensions_mut().remove::<Handled>();
    if handled.is_none() {
        let outcome = if status < 400 { "ok" } else { "error" };
        app.metrics.observe_request(route, outcome, "-", secs);
    }
    if let Ok(v) = HeaderValue::from_str(&tc.header()) {
        resp.headers_mut().insert("traceparent", v);
    }
    if route.starts_with("sign") || route.starts_with("verify") || status >= 400 {
        let (audit_id, code) = handled
            .as_ref()
            .map(|h| (h.audit_id.as_str(), h.code))
            .unwrap_or(("", "-"));
        tracing::info!(
            trace_id = %tc.trace_id, route, method = %method, status, code, audit_id,
            latency_ms = secs * 1000.0, "request"
        );
    } else {
        tracing::debug!(trace_id = %tc.trace_id, route, status, latency_ms = secs * 1000.0, "request");
    }
    resp
}

async fn healthz() -> Response {
    json_response(json!({"status": "ok"}))
}

async fn readyz(State(app): State<AppState>) -> Response {
    if !app.auth.jwks.is_ready() {
        let _ = app.auth.jwks.warm().await;
    }
    let quotas = app.quotas.ping().await.is_ok();
    let checks = json!({
        "audit": app.audit.is_healthy(),
        "quotas": quotas,
        "authorityKeys": app.auth.jwks.is_ready(),
        "draining": app.is_draining(),
    });
    let ready = app.audit.is_healthy() && quotas && app.auth.jwks.is_ready() && !app.is_draining();
    let mut resp =
        json_response(json!({"status": if ready {"ready"} else {"not ready"}, "checks": checks}));
    if !ready {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

async fn metrics(State(app): State<AppState>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn openapi() -> Response {
    json_response(crate::openapi::document())
}

/// A JSON response (200).
fn json_response(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

// ------------------------------------------------------------------------------------------
// Request bodies
// ------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectIn {
    name: String,
    digest: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoeIn {
    format: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OptionsIn {
    #[serde(default)]
    signing_mode: Option<String>,
    #[serde(default)]
    return_bundle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignDsseIn {
    subject: Vec<SubjectIn>,
    predicate_type: String,
    predicate: Value,
    #[serde(default)]
    scanner_image_digest: Option<String>,
    #[serde(default)]
    poe: Option<PoeIn>,
    #[serde(default)]
    options: Option<OptionsIn>,
}

/// Payload types `/sign/export` signs.
pub const EXPORT_PAYLOAD_TYPES: &[&str] = &[
    "application/vnd.stellaops.export-manifest+json;version=1",
    "application/vnd.stellaops.mirror+json;version=1",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignExportIn {
    manifest: Value,
    #[serde(default)]
    payload_type: Option<String>,
    #[serde(default)]
    scanner_image_digest: Option<String>,
    #[serde(default)]
    poe: Option<PoeIn>,
    #[serde(default)]
    options: Option<OptionsIn>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, detail)
}

// ------------------------------------------------------------------------------------------
// The pipeline
// ------------------------------------------------------------------------------------------

/// What passed the gates.
struct Admitted {
    caller: Caller,
    poe: PoeDecision,
    qps_remaining: u64,
    _lease: Lease,
}

pub(crate) struct Ctx<'a> {
    app: &'a App,
    rec: AuditRecord,
    /// The caller proved who it is (token and sender constraint).
    authenticated: bool,
}

/// What authentication reads from a request: method, target, `Authorization`, every `DPoP`
/// header and the TLS client certificate. One place for the sign and audit routes.
pub(crate) fn auth_request<'a>(
    app: &App,
    parts: &'a axum::http::request::Parts,
    target: &'a url::Url,
    conn: &ConnInfo,
) -> Result<AuthRequest<'a>, ApiError> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str().map_err(|_| {
                let mut e = ApiError::new(Code::InvalidToken, "Authorization header is not text");
                e.dpop_algs = Some(app.auth.dpop.algs_header());
                e.bearer_challenge = true;
                e
            })
        })
        .transpose()?;
    Ok(AuthRequest {
        method: parts.method.as_str(),
        target,
        authorization,
        dpop: parts
            .headers
            .get_all("dpop")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect(),
        client_cert_sha256: conn.client_cert_sha256,
    })
}

pub(crate) fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl<'a> Ctx<'a> {
    /// A context for read-only routes that write no audit record (the audit API): only its
    /// header and target checks are used.
    pub(crate) fn for_reads(app: &'a App) -> Self {
        Ctx {
            app,
            rec: AuditRecord::new(String::new(), String::new(), String::new(), String::new()),
            authenticated: false,
        }
    }
}

impl Ctx<'_> {
    /// Gates 1–2.
    async fn authenticate(
        &mut self,
        parts: &axum::http::request::Parts,
    ) -> Result<Caller, ApiError> {
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .unwrap_or_default();
        self.single_identity_headers(&parts.headers)?;
        let target = self.target_url(parts, conn.tls)?;
        let req = auth_request(self.app, parts, &target, &conn)?;
        let caller = match self.app.auth.authenticate(&req).await {
            Ok(c) => c,
            Err(f) => {
                if let Some(c) = f.claims {
                    self.rec.tenant = c.tenant;
                    self.rec.installation = c.installation;
                    self.rec.caller.sub = c.sub;
                    self.rec.caller.client = c.client_id;
                }
                return Err(f.error);
            }
        };
        self.authenticated = true;
        self.rec.tenant = Some(caller.tenant.clone());
        self.rec.installation = Some(caller.installation.clone());
        self.rec.caller.sub = caller.claims.sub.clone();
        self.rec.caller.client = caller.claims.client_id.clone();
        self.rec.sender_binding = Some(caller.binding.describe());
        if let Some(h) = parts.headers.get("x-stella-tenant") {
            if h.as_bytes() != caller.tenant.as_bytes() {
                return Err(ApiError::new(
                    Code::TenantMismatch,
                    "X-Stella-Tenant names another tenant than the access token",
                ));
            }
        }
        if self.app.keys.for_tenant(&caller.tenant).is_none()
            && !crate::keyless::serves(self.app, &caller.tenant)
        {
            return Err(ApiError::new(
                Code::TenantMismatch,
                format!("this signer does not sign for tenant {:?}", caller.tenant),
            ));
        }
        Ok(caller)
    }

    /// Every header that carries a credential, a proof or an identity appears at most once:
    /// a second copy is never ignored (whichever copy a proxy, a log or this service reads,
    /// they would disagree about who called).
    pub(crate) fn single_identity_headers(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        for (name, code) in IDENTITY_HEADERS {
            if headers.get_all(*name).iter().nth(1).is_some() {
                let mut e = ApiError::new(
                    *code,
                    format!("the {name} header appears more than once; send it once"),
                );
                e.dpop_algs = Some(self.app.auth.dpop.algs_header());
                e.bearer_challenge = *code == Code::InvalidToken;
                return Err(e);
            }
        }
        Ok(())
    }

    pub(crate) fn target_url(
        &self,
        parts: &axum::http::request::Parts,
        tls: bool,
    ) -> Result<url::Url, ApiError> {
        let path = parts.uri.path();
        let s = match &self.app.config.server.public_url {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), path),
            None => {
                let host = parts
                    .uri
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .or_else(|| {
                        parts
                            .headers
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                    })
                    .ok_or_else(|| invalid("the request has no Host"))?;
                format!("{}://{}{}", if tls { "https" } else { "http" }, host, path)
            }
        };
        url::Url::parse(&s).map_err(|_| invalid("the request URI is not valid"))
    }

    /// Gate 3: the body, bounded.
    async fn read_body(&self, body: Body) -> Result<bytes::Bytes, ApiError> {
        let limit = usize::try_from(self.app.config.server.max_body_bytes).unwrap_or(usize::MAX);
        let timeout_ms = self.app.config.server.request_timeout_ms;
        let read = http_body_util::Limited::new(body, limit).collect();
        // A body that trickles in is cut off: the response goes out with the body unread,
        // and hyper closes such a connection.
        let Ok(read) = tokio::time::timeout(Duration::from_millis(timeout_ms), read).await else {
            return Err(invalid(format!(
                "the request body did not arrive within {timeout_ms} ms"
            )));
        };
        match read {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                self.app.metrics.quota_hit("artifact_bytes");
                Err(ApiError::new(
                    Code::ArtifactTooLarge,
                    format!("the request body exceeds {limit} bytes"),
                ))
            }
            Err(e) => Err(invalid(format!("cannot read the request body: {e}"))),
        }
    }

    /// Gates 4–5.
    async fn admit(
        &mut self,
        caller: Caller,
        poe: Option<&PoeIn>,
        body_len: usize,
    ) -> Result<Admitted, ApiError> {
        if let Some(p) = poe {
            if p.format != "jwt" {
                return Err(invalid(format!(
                    "poe.format {:?} is not supported (jwt)",
                    p.format
                )));
            }
        }
        let decision = match self
            .app
            .licensing
            .check(poe.map(|p| p.value.as_str()))
            .await
        {
            Ok(d) => d,
            Err(f) => {
                self.app.metrics.poe_failure(f.kind);
                self.rec.poe_state = Some(stella_store::PoeState::Denied);
                return Err(f.error);
            }
        };
        if decision.state == stella_store::PoeState::Grace {
            self.app.metrics.poe_failure("grace");
        }
        let ent = &decision.entitlement;
        self.rec.poe_state = Some(decision.state);
        self.rec.license_id = Some(ent.license_id.clone());
        self.rec.plan = Some(ent.limits.plan.clone());
        self.rec.bypass_reason = decision.bypass_reason.clone();
        match ent.tenant.as_deref() {
            Some(t) if t == caller.tenant => {}
            Some(_) => {
                return Err(ApiError::new(
                    Code::TenantMismatch,
                    "the Proof-of-Entitlement belongs to another tenant",
                ))
            }
            // Only the operator's bypass plan and the dev profile's Licensing entitle every
            // tenant; an introspected license must name its tenant.
            None if decision.state == stella_store::PoeState::Bypass || self.app.dev.is_some() => {}
            None => {
                return Err(ApiError::new(
                    Code::EntitlementDenied,
                    "the license names no tenant, so it cannot entitle any caller",
                ))
            }
        }
        if ent
            .installation
            .as_deref()
            .is_some_and(|i| i != caller.installation)
        {
            return Err(ApiError::new(
                Code::TenantMismatch,
                "the Proof-of-Entitlement belongs to another installation",
            ));
        }
        let limits = &ent.limits;
        if body_len as u64 > limits.max_artifact_bytes {
            self.app
                .metrics
                .quota_hit_plan("artifact_bytes", &limits.plan);
            return Err(ApiError::new(
                Code::ArtifactTooLarge,
                format!(
                    "the artifact is {body_len} bytes; plan {:?} allows {}",
                    limits.plan, limits.max_artifact_bytes
                ),
            ));
        }
        let key = format!("lic:{}", ent.license_id);
        let rate = RateLimit {
            per_second: limits.qps,
            burst: limits.burst.max(1.0),
        };
        let store_err = |e: stella_store::StoreError| {
            ApiError::unavailable(
                "the quota store is unavailable; retry later",
                format!("quota store: {e}"),
            )
        };
        // Token and concurrency slot in one step (one Redis round trip with the shared store).
        let (qps_remaining, lease) = match self
            .app
            .quotas
            .admit(&key, rate, limits.max_concurrent)
            .await
            .map_err(store_err)?
        {
            Admission::Admitted { remaining, lease } => (remaining, lease),
            Admission::Throttled { retry_after } => {
                self.app.metrics.quota_hit_plan("qps", &limits.plan);
                let mut e = ApiError::new(
                    Code::PlanThrottled,
                    format!(
                        "plan {:?} allows {} requests per second",
                        limits.plan, limits.qps
                    ),
                );
                e.retry_after = Some(retry_after.as_secs_f64().ceil() as u64);
                return Err(e);
            }
            Admission::Busy => {
                self.app.metrics.quota_hit_plan("concurrency", &limits.plan);
                let mut e = ApiError::new(
                    Code::PlanThrottled,
                    format!(
                        "plan {:?} allows {} concurrent requests",
                        limits.plan, limits.max_concurrent
                    ),
                );
                e.retry_after = Some(1);
                return Err(e);
            }
        };
        self.app.metrics.quota_admitted(&limits.plan);
        Ok(Admitted {
            caller,
            poe: decision,
            qps_remaining,
            _lease: lease,
        })
    }

    /// Gate 6.
    async fn check_release(
        &mut self,
        digest: Option<&str>,
        required: bool,
    ) -> Result<(), ApiError> {
        let enforce = self.app.config.release.enforce;
        self.rec.scanner_digest = digest.map(str::to_string);
        let Some(d) = digest else {
            if enforce && required {
                self.rec.scanner_verdict = Some("missing".into());
                return Err(invalid("scannerImageDigest is required"));
            }
            self.rec.scanner_verdict = Some("not-checked".into());
            return Ok(());
        };
        if !crate::config::is_sha256_digest(d) {
            self.rec.scanner_verdict = Some("malformed".into());
            return Err(invalid(
                "scannerImageDigest must be sha256:<64 lowercase hex>",
            ));
        }
        if !enforce {
            self.rec.scanner_verdict = Some("not-checked".into());
            return Ok(());
        }
        let v = self.release_verdict(d).await?;
        if v.trusted {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::ReleaseUntrusted,
                format!(
                    "scannerImageDigest is not a trusted scanner release: {}",
                    v.reason
                ),
            ))
        }
    }

    /// The release verdict for a well-formed digest, recorded in the audit record; a registry
    /// that cannot answer is `503 upstream_unavailable` (fail closed).
    async fn release_verdict(
        &mut self,
        digest: &str,
    ) -> Result<crate::release::ReleaseVerdict, ApiError> {
        match self.app.release.verdict(digest).await {
            Ok(v) => {
                self.rec.scanner_verdict = Some(v.audit_label().into());
                Ok(v)
            }
            Err(e) => {
                self.app.metrics.release_unavailable();
                self.rec.scanner_verdict = Some("unavailable".into());
                Err(ApiError::unavailable(
                    "the release registry cannot tell whether the scanner image is a trusted release; nothing was signed; retry later",
                    e.to_string(),
                ))
            }
        }
    }

    /// The tenant's signers, checked against a requested mode.
    fn signers(
        &mut self,
        caller: &Caller,
        plan: &str,
        options: Option<&OptionsIn>,
    ) -> Result<Vec<Arc<dyn Signer>>, ApiError> {
        let keys = self
            .app
            .keys
            .for_tenant_plan(&caller.tenant, plan)
            .ok_or_else(|| ApiError::new(Code::TenantMismatch, "no keys for this tenant"))?
            .to_vec();
        let mode = keys.first().map(|k| k.mode()).unwrap_or("file");
        if let Some(m) = options.and_then(|o| o.signing_mode.as_deref()) {
            if !["keyless", "kms", "hsm", "file"].contains(&m) {
                return Err(invalid(format!(
                    "options.signingMode {m:?} is not one of keyless, kms, hsm, file"
                )));
            }
            if m != mode {
                return Err(invalid(format!(
                    "signing mode {m:?} is not configured for this tenant (configured: {mode})"
                )));
            }
        }
        self.rec.signing_mode = Some(mode.to_string());
        // Named before signing, so a failed signature (token gone, KMS down) is audited with
        // the keys and their source too.
        self.rec.key_ids = keys.iter().map(|k| k.key_id().to_string()).collect();
        Ok(keys)
    }

    fn record_signature(&mut self, env: &stella_dsse::Envelope, keys: &[Arc<dyn Signer>]) {
        let json = env.to_json();
        self.rec.envelope_sha256 = Some(stella_keys::hex(&stella_keys::sha256(&json)));
        self.rec.key_ids = keys.iter().map(|k| k.key_id().to_string()).collect();
        for k in keys {
            self.app.metrics.key_used(k.key_id().as_str(), k.mode());
        }
    }
}

/// Run `sign` with `keys`. In-memory keys (`file`: a P-256 signature is ~12 µs of CPU) sign
/// right here, on the worker thread that verified the request: handing that to another
/// thread costs more than the signature on a busy machine, and an unbounded blocking pool
/// would only add runnable threads to the same cores. HSM and KMS signers block (FFI, HTTP):
/// they sign on the blocking pool.
async fn sign_with<T, F>(keys: &[Arc<dyn Signer>], sign: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&[&dyn Signer]) -> T + Send + 'static,
{
    if keys.iter().all(|k| k.mode() == "file") {
        let refs: Vec<&dyn Signer> = keys.iter().map(|k| k.as_ref()).collect();
        // A panic is a 503 (and an audit record), as it is from the blocking pool.
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sign(&refs))).map_err(
            |_| ApiError::unavailable("the signing backend failed; retry later", "signer panicked"),
        );
    }
    let keys = keys.to_vec();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&dyn Signer> = keys.iter().map(|k| k.as_ref()).collect();
        sign(&refs)
    })
    .await
    .map_err(|e| ApiError::unavailable("the signing backend failed; retry later", e.to_string()))
}

fn policy_json(a: &Admitted) -> Value {
    let l = &a.poe.entitlement.limits;
    json!({
        "plan": l.plan,
        "maxArtifactBytes": l.max_artifact_bytes,
        "qpsRemaining": a.qps_remaining,
    })
}

fn identity_json(caller: &Caller, keys: &[Arc<dyn Signer>]) -> Value {
    json!({
        "type": "key",
        "tenant": caller.tenant,
        "keyIds": keys.iter().map(|k| k.key_id().to_string()).collect::<Vec<_>>(),
        "algorithms": keys.iter().map(|k| k.algorithm().name()).collect::<Vec<_>>(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v = stella_dsse::jcs::parse_strict(body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| invalid(format!("the body does not match the API: {e}")))
}

async fn sign_dsse(State(app): State<AppState>, req: Request) -> Response {
    run(app, req, SignRoute::Dsse).await
}

async fn sign_export(State(app): State<AppState>, req: Request) -> Response {
    run(app, req, SignRoute::Export).await
}

async fn verify_referrers(State(app): State<AppState>, req: Request) -> Response {
    run(app, req, SignRoute::VerifyReferrers).await
}

#[derive(Clone, Copy)]
enum SignRoute {
    Dsse,
    Export,
    VerifyReferrers,
}

/// Run a sign route in its own task, so the pipeline runs to completion — audit record
/// included — even when the client goes away (hyper drops the handler future of a closed
/// connection; a key used by then must still be audited). Shutdown waits for these tasks
/// before it closes the audit log ([`App::pipelines_finished`]).
async fn run(app: AppState, req: Request, which: SignRoute) -> Response {
    let guard = app.0.pipeline_started();
    let task = tokio::spawn(async move {
        let _running = guard;
        run_to_completion(app, req, which).await
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "sign pipeline task failed");
            ApiError::unavailable("internal error; retry later", e.to_string()).into_response()
        }
    }
}

/// The pipeline, then the audit record, then the response.
async fn run_to_completion(app: AppState, req: Request, which: SignRoute) -> Response {
    let (route, label) = match which {
        SignRoute::Dsse => (ROUTE_SIGN_DSSE, "sign_dsse"),
        SignRoute::Export => (ROUTE_SIGN_EXPORT, "sign_export"),
        SignRoute::VerifyReferrers => (ROUTE_VERIFY_REFERRERS, "verify_referrers"),
    };
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let trace = req
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .unwrap_or_else(|| TraceContext::from_header(None));
    let mut ctx = Ctx {
        app: &app,
        rec: AuditRecord::new(
            crate::trace::new_audit_id(),
            trace.trace_id.clone(),
            format!("{method} {route}"),
            now_rfc3339(),
        ),
        authenticated: false,
    };
    let (parts, body) = req.into_parts();
    let source = parts
        .extensions
        .get::<ConnInfo>()
        .and_then(|c| c.peer)
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let result = match which {
        SignRoute::Dsse => sign_dsse_inner(&mut ctx, parts, body).await,
        SignRoute::Export => sign_export_inner(&mut ctx, parts, body).await,
        SignRoute::VerifyReferrers => verify_referrers_inner(&mut ctx, parts).await,
    };
    let authenticated = ctx.authenticated;
    let mut rec = ctx.rec;
    rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (status, code, outcome) = match &result {
        Ok(_) if matches!(which, SignRoute::VerifyReferrers) => (200u16, "ok", Outcome::Verified),
        Ok(_) => (200u16, "ok", Outcome::Signed),
        Err(e) => (
            e.status().as_u16(),
            e.code.as_str(),
            if e.status().is_server_error() {
                Outcome::Error
            } else {
                Outcome::Denied
            },
        ),
    };
    rec.status = status;
    rec.outcome = outcome;
    if let Err(e) = &result {
        rec.reason_code = Some(code.to_string());
        rec.reason = Some(e.internal_detail().to_string());
        if e.status().is_server_error() {
            tracing::error!(trace_id = %trace.trace_id, code, detail = e.internal_detail(), "request failed");
        }
    }
    crate::flood::bound_record(&mut rec);
    // An unauthenticated failure past its window's burst is counted into the window's
    // summary record instead of being written on its own (crate::flood).
    let aggregated = match &result {
        Err(e) if !authenticated => match app.unauth_failures.admit(
            &source,
            &rec.route,
            code,
            status,
            rec.reason.as_deref().unwrap_or(""),
            Instant::now(),
        ) {
            crate::flood::FailureRecord::Full => None,
            crate::flood::FailureRecord::Aggregated { summary_audit_id } => {
                app.metrics.audit_aggregated();
                tracing::debug!(code = e.code.as_str(), %source, "unauthenticated failure aggregated");
                Some(summary_audit_id)
            }
        },
        _ => None,
    };
    let (audit_id, audited) = match aggregated {
        Some(summary) => (
            summary,
            Ok(stella_store::audit::Appended {
                seq: 0,
                hash: String::new(),
            }),
        ),
        None => {
            let id = rec.audit_id.clone();
            (id, app.audit.append(rec).await)
        }
    };
    let (mut resp, code) = match (audited, result) {
        (Ok(_), Ok((mut body, lease))) => {
            body["auditId"] = json!(audit_id);
            drop(lease);
            (json_response(body), code)
        }
        (Ok(_), Err(mut e)) => {
            e.audit_id = Some(audit_id.clone());
            e.trace_id = Some(trace.trace_id.clone());
            (e.into_response(), code)
        }
        (Err(err), _) => {
            app.metrics.audit_failure();
            tracing::error!(trace_id = %trace.trace_id, error = %err, "audit write failed: request refused");
            let mut e = ApiError::unavailable(
                "the audit log is unavailable; nothing was signed; retry later",
                err.to_string(),
            );
            e.trace_id = Some(trace.trace_id.clone());
            (e.into_response(), "upstream_unavailable")
        }
    };
    let outcome_label = match resp.status().as_u16() {
        200 if matches!(which, SignRoute::VerifyReferrers) => "ok",
        200 => "signed",
        s if s >= 500 => "error",
        _ => "denied",
    };
    app.metrics
        .observe_request(label, outcome_label, code, start.elapsed().as_secs_f64());
    if let Some(n) = app.auth.dpop.fresh_nonce() {
        if !resp.headers().contains_key("dpop-nonce") {
            if let Ok(v) = HeaderValue::from_str(&n) {
                resp.headers_mut().insert("dpop-nonce", v);
            }
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(Handled { audit_id, code });
    resp
}

async fn sign_dsse_inner(
    ctx: &mut Ctx<'_>,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<(Value, Option<Lease>), ApiError> {
    let caller = ctx.authenticate(&parts).await?;
    let bytes = ctx.read_body(body).await?;
    let input: SignDsseIn = parse_json(&bytes)?;
    let max_subjects = ctx.app.config.server.max_subjects;
    if input.subject.len() > max_subjects {
        return Err(invalid(format!(
            "{} subjects; at most {max_subjects} per request",
            input.subject.len()
        )));
    }
    ctx.rec.predicate_type = Some(input.predicate_type.clone());
    let mut subjects = Vec::with_capacity(input.subject.len());
    for (i, s) in input.subject.iter().enumerate() {
        let sha = s
            .digest
            .get("sha256")
            .ok_or_else(|| invalid(format!("subject[{i}] has no sha256 digest")))?;
        ctx.rec.subject_digests.push(format!("sha256:{sha}"));
        subjects.push(Subject {
            name: s.name.clone(),
            digest: s.digest.clone(),
        });
    }
    if !stella_dsse::predicates::is_allowed(&input.predicate_type) {
        return Err(invalid(format!(
            "predicateType {:?} is not in the predicate catalogue",
            input.predicate_type
        )));
    }
    let statement = Statement::new(subjects, input.predicate_type.clone(), input.predicate)
        .map_err(|e| invalid(format!("invalid statement: {e}")))?;
    let return_bundle = match input
        .options
        .as_ref()
        .and_then(|o| o.return_bundle.as_deref())
        .unwrap_or("dsse")
    {
        // The seeds' spelling of the Sigstore bundle.
        "dsse+cert" => "sigstore",
        other => other,
    };
    if !["dsse", "sigstore"].contains(&return_bundle) {
        return Err(invalid(
            "options.returnBundle must be dsse, sigstore or dsse+cert",
        ));
    }
    let admitted = ctx.admit(caller, input.poe.as_ref(), bytes.len()).await?;
    ctx.check_release(input.scanner_image_digest.as_deref(), true)
        .await?;
    let requested = input
        .options
        .as_ref()
        .and_then(|o| o.signing_mode.as_deref());
    if crate::keyless::wants_keyless(ctx.app, &admitted.caller.tenant, requested)? {
        let payload = statement
            .to_canonical_json()
            .map_err(|e| invalid(format!("invalid statement: {e}")))?;
        let signed = crate::keyless::sign(
            ctx.app,
            &mut ctx.rec,
            stella_dsse::PAYLOAD_TYPE_IN_TOTO,
            payload,
        )
        .await?;
        let bundle = signed.bundle_json(&admitted.caller.tenant, return_bundle == "sigstore");
        let policy = policy_json(&admitted);
        return Ok((
            json!({"bundle": bundle, "policy": policy}),
            Some(admitted._lease),
        ));
    }
    let keys = ctx.signers(
        &admitted.caller,
        &admitted.poe.entitlement.limits.plan,
        input.options.as_ref(),
    )?;
    if return_bundle == "sigstore" && keys.len() != 1 {
        return Err(invalid(
            "a Sigstore bundle holds one signature; this tenant signs with several keys (use returnBundle dsse)",
        ));
    }
    let refs: Vec<&dyn Signer> = keys.iter().map(|k| k.as_ref()).collect();
    let envelope = sign_with(&keys, move |refs| stella_keys::attest(&statement, refs))
        .await?
        .map_err(|e| {
            ApiError::unavailable("the signing backend failed; retry later", e.to_string())
        })?;
    ctx.record_signature(&envelope, &keys);
    // The same JSON value as parsing the bytes just hashed (field for field).
    let dsse = envelope.to_value();
    let mut bundle = json!({
        "dsse": dsse,
        "certificateChain": [],
        "mode": ctx.rec.signing_mode,
        "signingIdentity": identity_json(&admitted.caller, &keys),
    });
    if return_bundle == "sigstore" {
        let b = stella_keys::to_bundle(envelope, refs[0])
            .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
        bundle["sigstore"] = b.to_value();
    }
    let policy = policy_json(&admitted);
    Ok((
        json!({"bundle": bundle, "policy": policy}),
        Some(admitted._lease),
    ))
}

async fn sign_export_inner(
    ctx: &mut Ctx<'_>,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<(Value, Option<Lease>), ApiError> {
    let caller = ctx.authenticate(&parts).await?;
    let bytes = ctx.read_body(body).await?;
    let input: SignExportIn = parse_json(&bytes)?;
    if !input.manifest.is_object() {
        return Err(invalid("manifest must be a JSON object"));
    }
    let payload_type = input
        .payload_type
        .clone()
        .unwrap_or_else(|| EXPORT_PAYLOAD_TYPES[0].to_string());
    if !EXPORT_PAYLOAD_TYPES.contains(&payload_type.as_str()) {
        return Err(invalid(format!(
            "payloadType {payload_type:?} is not one of {EXPORT_PAYLOAD_TYPES:?}"
        )));
    }
    ctx.rec.predicate_type = Some(payload_type.clone());
    let canonical =
        stella_dsse::jcs::to_vec(&input.manifest).map_err(|e| invalid(format!("manifest: {e}")))?;
    let digest = stella_keys::hex(&stella_keys::sha256(&canonical));
    ctx.rec.subject_digests.push(format!("sha256:{digest}"));
    let admitted = ctx.admit(caller, input.poe.as_ref(), bytes.len()).await?;
    ctx.check_release(input.scanner_image_digest.as_deref(), false)
        .await?;
    let requested = input
        .options
        .as_ref()
        .and_then(|o| o.signing_mode.as_deref());
    if crate::keyless::wants_keyless(ctx.app, &admitted.caller.tenant, requested)? {
        let signed = crate::keyless::sign(ctx.app, &mut ctx.rec, &payload_type, canonical).await?;
        let body = signed.export_json(
            &admitted.caller.tenant,
            input.manifest,
            &digest,
            &payload_type,
            policy_json(&admitted),
        );
        return Ok((body, Some(admitted._lease)));
    }
    let keys = ctx.signers(
        &admitted.caller,
        &admitted.poe.entitlement.limits.plan,
        input.options.as_ref(),
    )?;
    let envelope = {
        let payload_type = payload_type.clone();
        sign_with(&keys, move |refs| {
            stella_keys::sign_envelope(&payload_type, canonical, refs)
        })
        .await?
    }
    .map_err(|e| ApiError::unavailable("the signing backend failed; retry later", e.to_string()))?;
    ctx.record_signature(&envelope, &keys);
    let dsse = envelope.to_value();
    let signatures: Vec<Value> = envelope
        .signatures
        .iter()
        .zip(&keys)
        .map(|(s, k)| {
            json!({
                "keyid": s.keyid,
                "sig": stella_dsse::b64::encode(&s.sig),
                "algorithm": k.algorithm().name(),
                "publicKey": k.public_key().to_pem(),
            })
        })
        .collect();
    let body = json!({
        "manifest": input.manifest,
        "manifestDigest": format!("sha256:{digest}"),
        "payloadType": payload_type,
        "signatures": signatures,
        "dsse": dsse,
        "certificateChain": [],
        "mode": ctx.rec.signing_mode,
        "signingIdentity": identity_json(&admitted.caller, &keys),
        "policy": policy_json(&admitted),
    });
    Ok((body, Some(admitted._lease)))
}

/// `GET /verify/referrers?digest=sha256:...`: authenticated like the sign routes (OpTok with
/// scope `authority.required_scope` + DPoP or mTLS, tenant served here), no PoE or quota,
/// audited; the verdict of the release gate (allow-list, then OCI referrers).
async fn verify_referrers_inner(
    ctx: &mut Ctx<'_>,
    parts: axum::http::request::Parts,
) -> Result<(Value, Option<Lease>), ApiError> {
    ctx.authenticate(&parts).await?;
    let mut digests = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "digest")
        .map(|(_, v)| v.into_owned());
    let digest = match (digests.next(), digests.next()) {
        (Some(d), None) => d,
        (None, _) => return Err(invalid("the query parameter digest is required")),
        (Some(_), Some(_)) => return Err(invalid("give the query parameter digest once")),
    };
    ctx.rec.subject_digests.push(digest.clone());
    ctx.rec.scanner_digest = Some(digest.clone());
    if !crate::config::is_sha256_digest(&digest) {
        ctx.rec.scanner_verdict = Some("malformed".into());
        return Err(invalid("digest must be sha256:<64 lowercase hex>"));
    }
    let v = ctx.release_verdict(&digest).await?;
    Ok((v.to_json(), None))
}

// ------------------------------------------------------------------------------------------
// DEV ONLY: embedded Authority and Licensing (see crate::dev).
// ------------------------------------------------------------------------------------------

async fn dev_jwks(State(app): State<AppState>) -> Response {
    match &app.dev {
        Some(d) => json_response(d.jwks_json()),
        None => not_found().await,
    }
}

async fn dev_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let Some(dev) = &app.dev else {
        return not_found().await;
    };
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let err = |code: &str, desc: &str| {
        let mut r = (
            StatusCode::BAD_REQUEST,
            json!({"error": code, "error_description": desc}).to_string(),
        )
            .into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return err("unsupported_grant_type", "only client_credentials");
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id.is_empty()
        || form.get("client_secret").map(String::as_str) != Some(crate::dev::DEV_CLIENT_SECRET)
    {
        return err(
            "invalid_client",
            "dev Authority: any client_id with client_secret=dev-secret",
        );
    }
    if headers.get_all("dpop").iter().nth(1).is_some() {
        return err("invalid_dpop_proof", "send one DPoP header");
    }
    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return err(
            "invalid_dpop_proof",
            "the dev Authority issues DPoP-bound tokens only: send a DPoP proof",
        );
    };
    let jkt = match dev.check_token_proof(proof) {
        Ok(j) => j,
        Err(e) => return err("invalid_dpop_proof", &e),
    };
    let tid = form.get("tid").map(String::as_str).unwrap_or("dev-tenant");
    let inst = form
        .get("inst")
        .map(String::as_str)
        .unwrap_or("dev-installation");
    match dev.issue(&client_id, tid, inst, &jkt, 600) {
        Ok(t) => json_response(
            json!({"access_token": t, "token_type": "DPoP", "expires_in": 600, "scope": "signer.sign"}),
        ),
        Err(e) => ApiError::unavailable("token issuance failed", e.to_string()).into_response(),
    }
}

async fn dev_introspect(State(app): State<AppState>, body: bytes::Bytes) -> Response {
    if app.dev.is_none() {
        return not_found().await;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let poe = v.get("value").and_then(Value::as_str).unwrap_or("");
    if !poe.starts_with("dev-") {
        return json_response(
            json!({"active": false, "reason": "dev Licensing accepts PoE values starting with dev-"}),
        );
    }
    let e = crate::poe::dev_entitlement();
    json_response(json!({
        "active": true, "licenseId": e.license_id, "plan": e.limits.plan,
        "limits": {"qps": e.limits.qps, "burst": e.limits.burst, "maxConcurrent": e.limits.max_concurrent,
                   "maxArtifactBytes": e.limits.max_artifact_bytes},
    }))
}
