//! The gates every sign request passes, in this order; each refusal is audited before the
//! response leaves ([`crate::api`] writes the record):
//! 1. authentication — OpTok + sender constraint ([`crate::auth`]);
//! 2. tenant — this signer must hold keys for the token's `tid` (`tenant_mismatch`), and an
//!    `X-Stella-Tenant` header, if sent, must name the same tenant;
//! 3. body — bounded by `server.max_body_bytes` (`413 artifact_too_large`), strict JSON,
//!    known fields only ([`crate::wire`]), then the route's own checks (predicate type in
//!    the catalogue, payload type, subjects: `400 invalid_request`);
//! 4. entitlement — PoE introspection ([`crate::poe`]); the license's tenant/installation,
//!    when it names them, must match the token's (`tenant_mismatch`);
//! 5. quotas — artifact bytes (`413`), QPS token bucket and concurrency (`429 plan_throttled`
//!    with `Retry-After`), keyed by license;
//! 6. release integrity — `scannerImageDigest` on the allow-list, or signed by a release key
//!    per its OCI signature referrers ([`crate::release`]); `release_untrusted`, or `503
//!    upstream_unavailable` when the registry cannot answer (fail closed);
//! 7. signing mode — keyless ([`crate::keyless`]) or the tenant's keys, checked against a
//!    requested `options.signingMode`.
//!
//! [`Ctx::admit_signing`] runs gates 1–7 for both sign routes and returns an [`Admitted`]
//! context; `/verify/referrers` runs gates 1–2 and the release verdict. The audit API
//! ([`crate::audit_api`]) shares the header and target checks ([`single_identity_headers`],
//! [`target_url`], [`auth_request`], [`check_tenant_header`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use http_body_util::BodyExt as _;
use stella_keys::Signer;
use stella_store::{Admission, AuditRecord, Lease, RateLimit};

use crate::app::{App, AppState};
use crate::auth::{AuthRequest, Caller};
use crate::error::{ApiError, Code};
use crate::poe::PoeDecision;
use crate::wire::{GateFields, KeyIdentity, PoeIn, Policy};

/// Headers that carry a credential, a proof or an identity, and the code a duplicate gets.
/// (The client certificate comes from the TLS layer, never from a header; no forwarded
/// identity header is read.)
pub(crate) const IDENTITY_HEADERS: &[(&str, Code)] = &[
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

pub(crate) fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, detail)
}

/// A sign route's body, as the shared prologue sees it.
pub(crate) trait SignBody: serde::de::DeserializeOwned {
    /// Must `scannerImageDigest` be given when release integrity is enforced?
    const SCANNER_DIGEST_REQUIRED: bool;
    /// What the route signs, once its body is checked.
    type Checked;
    /// Take the gates' fields out of the body.
    fn gate_fields(&mut self) -> GateFields;
    /// The route's own checks of its body (gate 3), run before anything is spent on
    /// entitlement or quota; they fill the audit record (predicate type, subjects).
    fn check(
        self,
        app: &App,
        rec: &mut AuditRecord,
        gates: &GateFields,
    ) -> Result<Self::Checked, ApiError>;
}

/// How an admitted request signs.
pub(crate) enum Signing {
    /// Keyless ([`crate::keyless`]).
    Keyless,
    /// With the tenant's keys (for its plan), named in the audit record already.
    Keys(Vec<Arc<dyn Signer>>),
}

/// What passed the gates of a sign route: the caller, its entitlement and quota slot (held
/// until the answer is written), how to sign, and the route's validated request.
pub(crate) struct Admitted<P> {
    pub(crate) caller: Caller,
    pub(crate) poe: PoeDecision,
    pub(crate) qps_remaining: u64,
    pub(crate) lease: Lease,
    pub(crate) signing: Signing,
    /// What the route made of its body before the entitlement gate.
    pub(crate) request: P,
}

impl<P> Admitted<P> {
    /// `policy` of the answer, the caller, the quota lease, how to sign and what.
    pub(crate) fn into_parts(self) -> (Policy, Caller, Lease, Signing, P) {
        let l = &self.poe.entitlement.limits;
        let policy = Policy {
            plan: l.plan.clone(),
            max_artifact_bytes: l.max_artifact_bytes,
            qps_remaining: self.qps_remaining,
        };
        (policy, self.caller, self.lease, self.signing, self.request)
    }
}

/// `signingIdentity` of a keyful signature.
pub(crate) fn key_identity(tenant: &str, keys: &[Arc<dyn Signer>]) -> KeyIdentity {
    KeyIdentity {
        kind: "key",
        tenant: tenant.to_string(),
        key_ids: keys.iter().map(|k| k.key_id().to_string()).collect(),
        algorithms: keys.iter().map(|k| k.algorithm().name()).collect(),
    }
}

/// One request's pass through the gates: the app, and the audit record the gates fill.
pub(crate) struct Ctx<'a> {
    pub(crate) app: &'a AppState,
    pub(crate) rec: AuditRecord,
    /// The caller proved who it is (token and sender constraint).
    pub(crate) authenticated: bool,
}

/// What authentication reads from a request: method, target, `Authorization`, every `DPoP`
/// header and the TLS client certificate. One place for the sign and audit routes.
pub(crate) fn auth_request<'a>(
    app: &App,
    parts: &'a Parts,
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

/// The connection facts of a request (none: a plain in-process call).
pub(crate) fn conn_info(parts: &Parts) -> ConnInfo {
    parts
        .extensions
        .get::<ConnInfo>()
        .cloned()
        .unwrap_or_default()
}

/// Every header that carries a credential, a proof or an identity appears at most once:
/// a second copy is never ignored (whichever copy a proxy, a log or this service reads,
/// they would disagree about who called).
pub(crate) fn single_identity_headers(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    for (name, code) in IDENTITY_HEADERS {
        if headers.get_all(*name).iter().nth(1).is_some() {
            let mut e = ApiError::new(
                *code,
                format!("the {name} header appears more than once; send it once"),
            );
            e.dpop_algs = Some(app.auth.dpop.algs_header());
            e.bearer_challenge = *code == Code::InvalidToken;
            return Err(e);
        }
    }
    Ok(())
}

/// The URL the caller addressed (the DPoP `htu`): `server.public_url`, else the request's
/// authority or `Host`.
///
/// The URL is the parse of one string, `{public_url without trailing '/'}{path}` or
/// `{scheme}://{host}{path}`: each thread remembers the last string it parsed and its URL
/// (an exact memo, like the `htu` one in [`crate::auth`]; callers send the same target
/// request after request), so the parse runs once per distinct string and a hit costs a
/// comparison and a reference count.
pub(crate) fn target_url(app: &App, parts: &Parts, tls: bool) -> Result<Arc<url::Url>, ApiError> {
    target_url_of(app.config.server.public_url.as_deref(), parts, tls)
}

/// [`target_url`] with the configured `server.public_url`.
fn target_url_of(
    public_url: Option<&str>,
    parts: &Parts,
    tls: bool,
) -> Result<Arc<url::Url>, ApiError> {
    thread_local! {
        static LAST_TARGET: std::cell::RefCell<Option<(String, Arc<url::Url>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let path = parts.uri.path();
    let (a, b, c) = match public_url {
        Some(base) => (base.trim_end_matches('/'), "", ""),
        None => {
            let host = parts
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                })
                .ok_or_else(|| invalid("the request has no Host"))?;
            (if tls { "https" } else { "http" }, "://", host)
        }
    };
    let pieces = [a, b, c, path];
    let hit = LAST_TARGET.with_borrow(|last| {
        last.as_ref()
            .filter(|(s, _)| is_concat(s, &pieces))
            .map(|(_, u)| Arc::clone(u))
    });
    if let Some(u) = hit {
        return Ok(u);
    }
    let s = pieces.concat();
    let u = Arc::new(url::Url::parse(&s).map_err(|_| invalid("the request URI is not valid"))?);
    LAST_TARGET.with_borrow_mut(|last| *last = Some((s, Arc::clone(&u))));
    Ok(u)
}

/// Is `s` the concatenation of `pieces`?
fn is_concat(s: &str, pieces: &[&str]) -> bool {
    let mut rest = s.as_bytes();
    for p in pieces {
        match rest.strip_prefix(p.as_bytes()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// An `X-Stella-Tenant` header, if sent, names the token's tenant.
pub(crate) fn check_tenant_header(parts: &Parts, caller: &Caller) -> Result<(), ApiError> {
    if let Some(h) = parts.headers.get("x-stella-tenant") {
        if h.as_bytes() != caller.tenant.as_bytes() {
            return Err(ApiError::new(
                Code::TenantMismatch,
                "X-Stella-Tenant names another tenant than the access token",
            ));
        }
    }
    Ok(())
}

/// The headers every answer of an authenticated route carries: a fresh `DPoP-Nonce` (when
/// nonces are required and the answer has none yet) and `Cache-Control: no-store`.
pub(crate) fn authenticated_headers(app: &App, resp: &mut Response) {
    if let Some(n) = app.auth.dpop.fresh_nonce() {
        if !resp.headers().contains_key("dpop-nonce") {
            if let Ok(v) = HeaderValue::from_str(&n) {
                resp.headers_mut().insert("dpop-nonce", v);
            }
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Strict JSON (no duplicate keys, ...) into the route's request type, in one pass
/// ([`stella_dsse::jcs::from_slice`]: no `Value` tree, member names borrowed; issue #15).
///
/// That pass accepts exactly the bodies [`parse_json_tree`] accepts, with the same result, but
/// stops at the first problem in document order; a refused body is run through
/// [`parse_json_tree`] again, whose answer is the one given — so the wording of every `400`
/// stays what it was (a syntax error anywhere first, then the first type error in sorted
/// member order). A test holds the two routes together over a corpus of good and bad bodies.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    stella_dsse::jcs::from_slice(body).or_else(|_| parse_json_tree(body))
}

/// The tree route: [`stella_dsse::jcs::parse_strict`] into a `Value`, then `from_value`.
/// It words the refusals of [`parse_json`].
pub(crate) fn parse_json_tree<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v = stella_dsse::jcs::parse_strict(body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| invalid(format!("the body does not match the API: {e}")))
}

impl Ctx<'_> {
    /// Gates 1–7 of a sign route, with the route's own body checks ([`SignBody::check`]).
    pub(crate) async fn admit_signing<B: SignBody>(
        &mut self,
        parts: &Parts,
        body: Body,
    ) -> Result<Admitted<B::Checked>, ApiError> {
        let caller = self.authenticate(parts).await?;
        let bytes = self.read_body(body).await?;
        let mut input: B = parse_json(&bytes)?;
        let gates = input.gate_fields();
        let request = input.check(self.app, &mut self.rec, &gates)?;
        let GateFields {
            poe,
            scanner_image_digest,
            options,
        } = gates;
        let (poe, qps_remaining, lease) = self.admit(&caller, poe.as_ref(), bytes.len()).await?;
        self.check_release(scanner_image_digest.as_deref(), B::SCANNER_DIGEST_REQUIRED)
            .await?;
        let requested = options.as_ref().and_then(|o| o.signing_mode.as_deref());
        let signing = if crate::keyless::wants_keyless(
            self.app.keyless.as_ref(),
            &self.app.config,
            &caller.tenant,
            requested,
        )? {
            Signing::Keyless
        } else {
            Signing::Keys(self.signers(&caller, &poe.entitlement.limits.plan, requested)?)
        };
        Ok(Admitted {
            caller,
            poe,
            qps_remaining,
            lease,
            signing,
            request,
        })
    }

    /// Gates 1–2.
    pub(crate) async fn authenticate(&mut self, parts: &Parts) -> Result<Caller, ApiError> {
        let conn = conn_info(parts);
        single_identity_headers(self.app, &parts.headers)?;
        let target = target_url(self.app, parts, conn.tls)?;
        let req = auth_request(self.app, parts, &target, &conn)?;
        let caller = match self.app.auth.authenticate(&req).await {
            Ok(c) => c,
            Err(f) => {
                if let Some(c) = f.claims {
                    self.rec.tenant = c.tenant.clone();
                    self.rec.installation = c.installation.clone();
                    self.rec.caller.sub = c.sub.clone();
                    self.rec.caller.client = c.client_id.clone();
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
        check_tenant_header(parts, &caller)?;
        if self.app.keys.for_tenant(&caller.tenant).is_none()
            && !crate::keyless::serves(self.app.keyless.as_ref(), &self.app.config, &caller.tenant)
        {
            return Err(ApiError::new(
                Code::TenantMismatch,
                format!("this signer does not sign for tenant {:?}", caller.tenant),
            ));
        }
        Ok(caller)
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

    /// Gates 4–5: the entitlement, then the plan's quotas (one token and one concurrency
    /// slot, held by the returned lease).
    async fn admit(
        &mut self,
        caller: &Caller,
        poe: Option<&PoeIn>,
        body_len: usize,
    ) -> Result<(PoeDecision, u64, Lease), ApiError> {
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
        Ok((decision, qps_remaining, lease))
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
        if self.app.release.is_allow_listed(d) {
            // What `release_verdict` records for an allow-listed digest, without building
            // the verdict (its digest and reason strings) only to read its label.
            self.rec.scanner_verdict = Some(crate::release::ALLOW_LISTED_LABEL.into());
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
    pub(crate) async fn release_verdict(
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

    /// Gate 7, keyful: the tenant's signers, checked against a requested mode.
    fn signers(
        &mut self,
        caller: &Caller,
        plan: &str,
        requested: Option<&str>,
    ) -> Result<Vec<Arc<dyn Signer>>, ApiError> {
        let keys = self
            .app
            .keys
            .for_tenant_plan(&caller.tenant, plan)
            .ok_or_else(|| ApiError::new(Code::TenantMismatch, "no keys for this tenant"))?
            .to_vec();
        let mode = keys.first().map(|k| k.mode()).unwrap_or("file");
        if let Some(m) = requested {
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

    /// The audit record and metrics of a keyful signature by `keys` (the keys `Ctx::signers`
    /// named in the record already). The envelope is written as JSON once: its digest is
    /// taken over that here, and the answer copies its envelope out of it.
    pub(crate) fn record_signature(
        &mut self,
        envelope: stella_dsse::Envelope,
        keys: &[Arc<dyn Signer>],
    ) -> stella_dsse::EnvelopeJson {
        let json = stella_dsse::EnvelopeJson::new(envelope);
        self.rec.envelope_sha256 = Some(stella_keys::hex(&stella_keys::sha256(json.json())));
        for k in keys {
            self.app.metrics.key_used(k.key_id().as_str(), k.mode());
        }
        json
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::wire::{SignDsseIn, SignExportIn};

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn rare_paths_do_not_size_the_gates_futures() {
        // A registry lookup (release), a Licensing call or a shared-cache round trip (PoE) box
        // their own futures where they are awaited, so the gates' futures — inside every sign
        // request's boxed pipeline — carry only the hot path's state (issue #15: the release
        // gate's was 3,440 bytes with the registry client's future inline).
        type C = &'static mut Ctx<'static>;
        let admit = future_size(|c: C, k: &'static Caller| c.admit(k, None, 0));
        let release = future_size(|c: C, d: Option<&'static str>| c.check_release(d, true));
        let verdict = future_size(|c: C, d: &'static str| c.release_verdict(d));
        eprintln!("admit {admit} B, check_release {release} B, release_verdict {verdict} B");
        assert!(admit <= 512, "{admit}");
        assert!(release <= 512, "{release}");
        assert!(verdict <= 512, "{verdict}");
    }

    /// A JSON text to mutate: objects keep their member order and may hold duplicates.
    #[derive(Clone)]
    enum J {
        Obj(Vec<(String, J)>),
        Arr(Vec<J>),
        /// Any JSON text, written as it is.
        Raw(String),
    }

    impl J {
        fn text(&self, out: &mut String) {
            match self {
                J::Obj(members) => {
                    out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!("\"{k}\":"));
                        v.text(out);
                    }
                    out.push('}');
                }
                J::Arr(items) => {
                    out.push('[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        v.text(out);
                    }
                    out.push(']');
                }
                J::Raw(s) => out.push_str(s),
            }
        }

        fn to_text(&self) -> String {
            let mut s = String::new();
            self.text(&mut s);
            s
        }

        /// Every object and array in the tree, by path (indexes of members / items).
        fn paths(&self, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            match self {
                J::Obj(members) => {
                    out.push(at.clone());
                    for (i, (_, v)) in members.iter().enumerate() {
                        at.push(i);
                        v.paths(at, out);
                        at.pop();
                    }
                }
                J::Arr(items) => {
                    out.push(at.clone());
                    for (i, v) in items.iter().enumerate() {
                        at.push(i);
                        v.paths(at, out);
                        at.pop();
                    }
                }
                J::Raw(_) => {}
            }
        }

        fn at(&mut self, path: &[usize]) -> &mut J {
            match (path.split_first(), self) {
                (None, j) => j,
                (Some((i, rest)), J::Obj(m)) => m[*i].1.at(rest),
                (Some((i, rest)), J::Arr(a)) => a[*i].at(rest),
                (Some(_), J::Raw(_)) => unreachable!("paths lead to containers"),
            }
        }
    }

    fn raw(s: &str) -> J {
        J::Raw(s.to_string())
    }

    fn obj(members: &[(&str, J)]) -> J {
        J::Obj(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn hex(c: char) -> J {
        J::Raw(format!("\"{}\"", c.to_string().repeat(64)))
    }

    /// A `/sign/dsse` body with every member the route takes.
    fn full_body() -> J {
        obj(&[
            (
                "subject",
                J::Arr(vec![
                    obj(&[
                        ("name", raw("\"app.tar\"")),
                        (
                            "digest",
                            obj(&[("sha256", hex('a')), ("sha512", raw("\"ff\""))]),
                        ),
                    ]),
                    obj(&[
                        ("digest", obj(&[("sha256", hex('b'))])),
                        ("name", raw("\"b\"")),
                    ]),
                ]),
            ),
            ("predicateType", raw("\"stella.ops/sbom@v1\"")),
            (
                "predicate",
                obj(&[
                    ("bomFormat", raw("\"CycloneDX\"")),
                    ("n", raw("[1,-0,1.5e3,-7,18446744073709551615,1e-7]")),
                    (
                        "components",
                        J::Arr(vec![obj(&[
                            ("name", raw("\"openssl\"")),
                            ("x", raw("null")),
                        ])]),
                    ),
                    ("esc", raw(r#""tab\t \u00e9 \ud83d\ude02 \/ \"q\"""#)),
                ]),
            ),
            (
                "scannerImageDigest",
                raw(&format!("\"sha256:{}\"", "1".repeat(64))),
            ),
            (
                "poe",
                obj(&[("format", raw("\"jwt\"")), ("value", raw("\"poe\""))]),
            ),
            (
                "options",
                obj(&[
                    ("signingMode", raw("\"file\"")),
                    ("returnBundle", raw("\"dsse\"")),
                ]),
            ),
        ])
    }

    /// Values of every JSON type (and edge numbers and strings), to put where a member's
    /// value was.
    const PROBES: &[&str] = &[
        "null",
        "true",
        "0",
        "-1",
        "1.5",
        "1e400",
        "-1e400",
        "18446744073709551616",
        "1e-400",
        "\"s\"",
        "\"\"",
        "\"\\ud800\"",
        "\"\\u0000\"",
        "[]",
        "{}",
        "[\"x\"]",
        "{\"a\":1}",
        "{\"a\":1,\"a\":1}",
        "NaN",
        "tru",
        "01",
    ];

    /// Bodies: the full one, minimal ones, and mutations of the full one — truncations,
    /// duplicates, unknown and missing members and wrong types at each level, escapes, BOM,
    /// trailing data, a struct as an array, deep nesting, invalid UTF-8.
    fn corpus() -> Vec<Vec<u8>> {
        let full = full_body();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let text = full.to_text();
        out.push(text.clone().into_bytes());
        let minimal = format!(
            r#"{{"subject":[{{"name":"a","digest":{{"sha256":"{}"}}}}],"predicateType":"stella.ops/sbom@v1","predicate":{{}}}}"#,
            "c".repeat(64)
        );
        out.push(minimal.clone().into_bytes());
        // Truncations, every byte.
        for n in 0..text.len() {
            out.push(text.as_bytes()[..n].to_vec());
        }
        // Per container: duplicate first and last member (or item), add unknown members,
        // drop each member, put each probe in each member's place.
        let mut paths = Vec::new();
        full.paths(&mut Vec::new(), &mut paths);
        for path in &paths {
            let len = match full.clone().at(path) {
                J::Obj(m) => m.len(),
                J::Arr(a) => a.len(),
                J::Raw(_) => 0,
            };
            let mut push = |f: &dyn Fn(&mut J)| {
                let mut j = full.clone();
                f(j.at(path));
                out.push(j.to_text().into_bytes());
            };
            for i in [0, len.saturating_sub(1)] {
                push(&|j| match j {
                    J::Obj(m) => m.push(m[i].clone()),
                    J::Arr(a) => a.push(a[i].clone()),
                    J::Raw(_) => {}
                });
            }
            for name in ["aaa", "zzz", "Subject", "\\u0073ubject", "predicate_type"] {
                push(&|j| {
                    if let J::Obj(m) = j {
                        m.push((name.to_string(), raw("1")));
                    }
                });
            }
            for i in 0..len {
                push(&|j| match j {
                    J::Obj(m) => {
                        m.remove(i);
                    }
                    J::Arr(a) => {
                        a.remove(i);
                    }
                    J::Raw(_) => {}
                });
                for probe in PROBES {
                    push(&|j| match j {
                        J::Obj(m) => m[i].1 = raw(probe),
                        J::Arr(a) => a[i] = raw(probe),
                        J::Raw(_) => {}
                    });
                }
            }
        }
        // Member names spelled with escapes: the same name (accepted, or a duplicate).
        out.push(
            minimal
                .replace("\"subject\"", "\"\\u0073ubject\"")
                .into_bytes(),
        );
        out.push(
            minimal
                .replace("{\"subject\"", "{\"\\u0073ubject\":[],\"subject\"")
                .into_bytes(),
        );
        out.push(minimal.replace("\"name\"", "\"na\\u006de\"").into_bytes());
        // Framing: BOM, whitespace, trailing data, trailing commas, other top-level values.
        out.push(format!("\u{feff}{minimal}").into_bytes());
        out.push(format!(" \r\n\t{minimal} \n").into_bytes());
        for tail in ["x", "{}", ",", "\u{0}", "/", "]"] {
            out.push(format!("{minimal}{tail}").into_bytes());
        }
        out.push(minimal.replace("}}],", "},}],").into_bytes());
        out.push(minimal.replacen('}', ",}", 1).into_bytes());
        for top in ["null", "1", "\"x\"", "[]", "{}", "", " ", "[{}]"] {
            out.push(top.as_bytes().to_vec());
        }
        // A struct as an array (serde's derive takes it), too long, too short.
        let subject = format!(r#"[["a",{{"sha256":"{}"}}]]"#, "c".repeat(64));
        for tail in ["", ",null", ",null,null,null", ",null,null,null,1"] {
            out.push(format!(r#"[{subject},"stella.ops/sbom@v1",{{}}{tail}]"#).into_bytes());
        }
        out.push(format!(r#"[{subject},"stella.ops/sbom@v1"]"#).into_bytes());
        // Deep predicates around the nesting limit (the body itself is depth 1).
        for depth in 125..=129 {
            let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            out.push(
                minimal
                    .replace("\"predicate\":{}", &format!("\"predicate\":{deep}"))
                    .into_bytes(),
            );
        }
        // Invalid UTF-8 in a string, an overlong encoding, a lone surrogate encoded as UTF-8.
        for bad in [&b"\xff"[..], b"\xc0\xaf", b"\xed\xa0\x80"] {
            let mut b = minimal.clone().into_bytes();
            let at = minimal.find("\"a\"").unwrap() + 1;
            b.splice(at..at, bad.iter().copied());
            out.push(b);
        }
        // Huge numbers and escapes in the predicate.
        for v in [
            "1e308",
            "1e309",
            "-1e309",
            "123456789012345678901234567890",
            "0.1e-400",
        ] {
            out.push(
                minimal
                    .replace("\"predicate\":{}", &format!("\"predicate\":{{\"n\":{v}}}"))
                    .into_bytes(),
            );
        }
        for v in [
            r#""\ud83d""#,
            r#""\udc00\ud800""#,
            r#""\u12""#,
            r#""\x""#,
            "\"\t\"",
        ] {
            out.push(
                minimal
                    .replace("\"predicate\":{}", &format!("\"predicate\":{{\"s\":{v}}}"))
                    .into_bytes(),
            );
        }
        out
    }

    /// Same answer from the one-pass route and the tree route: equal values, or the same
    /// code and the same message; and the one-pass deserializer on its own accepts exactly
    /// what the tree route accepts (it is not the fallback that makes them agree).
    fn same<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &[u8]) -> bool {
        let new = parse_json::<T>(body);
        let old = parse_json_tree::<T>(body);
        let show = || String::from_utf8_lossy(body).into_owned();
        match (&new, &old) {
            (Ok(n), Ok(o)) => assert_eq!(format!("{n:?}"), format!("{o:?}"), "{}", show()),
            (Err(n), Err(o)) => {
                assert_eq!(n.code, o.code, "{}", show());
                assert_eq!(n.detail, o.detail, "{}", show());
            }
            _ => panic!("one route accepts, the other refuses: {}", show()),
        }
        assert_eq!(
            stella_dsse::jcs::from_slice::<T>(body).is_ok(),
            old.is_ok(),
            "the one-pass deserializer alone disagrees on {}",
            show()
        );
        old.is_ok()
    }

    #[test]
    fn the_one_pass_body_parse_answers_as_the_tree_route() {
        let bodies = corpus();
        let (mut good, mut bad) = (0, 0);
        for body in &bodies {
            if same::<SignDsseIn>(body) {
                good += 1;
            } else {
                bad += 1;
            }
            // The export route's type over the same bodies (all refused: no manifest) ...
            same::<SignExportIn>(body);
        }
        assert!(bad >= 100 && good >= 20, "{good} accepted, {bad} refused");
        // ... and over export bodies.
        let export = r#"{"manifest":{"b":[1,2.5,{"x":"\u00e9"}],"a":null},"payloadType":"application/vnd.stellaops.mirror+json;version=1","poe":{"format":"jwt","value":"p"}}"#;
        let mut export_ok = 0;
        for body in [
            export.to_string(),
            export.replace("\"a\":null", "\"a\":null,\"a\":1"),
            export.replace("\"payloadType\"", "\"payloadtype\""),
            export
                .replace("\"manifest\":{", "\"manifest\":[{")
                .replace(",\"payloadType\"", "],\"payloadType\""),
            export.replace("\"p\"", "7"),
            export[..export.len() - 1].to_string(),
        ] {
            if same::<SignExportIn>(body.as_bytes()) {
                export_ok += 1;
            }
        }
        assert_eq!(
            export_ok, 2,
            "the export bodies a manifest array and a good one are taken"
        );
    }

    /// `target_url` as it was before the per-thread memo: the string built and parsed on
    /// every request.
    fn target_url_parsed(
        public_url: Option<&str>,
        parts: &Parts,
        tls: bool,
    ) -> Result<url::Url, ApiError> {
        let path = parts.uri.path();
        let s = match public_url {
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

    #[test]
    fn remembered_targets_are_the_urls_parsed_each_time() {
        let bases = [
            None,
            Some("https://signer.example"),
            Some("https://signer.example/"),
            Some("https://signer.example//"),
            Some("http://Signer.Example:8443/base"),
            Some("https://signer.example:443"),
        ];
        let uris = [
            "/api/v1/signer/sign/dsse",
            "/api/v1/signer/sign/dsse?x=1",
            "/api/v1/signer/sign/dss",
            "/api/v1/signer/./sign/../sign/dsse",
            "/api/v1/signer/sign/%64sse",
            "http://127.0.0.1:8080/api/v1/signer/sign/dsse",
            "http://127.0.0.1:808/api/v1/signer/sign/dsse",
            "http://[::1]:8080/api/v1/signer/sign/dsse",
            "https://Exa-Mple.com:99/api",
            "*",
            "/",
        ];
        let hosts: [Option<&[u8]>; 10] = [
            None,
            Some(b"127.0.0.1:8080"),
            Some(b"127.0.0.1:80"),
            Some(b"LOCALHOST"),
            Some(b"localhost:0"),
            Some(b"bad host"),
            Some(b"exa mple"),
            Some(b"\xc3\xa9.example"),
            Some(b"[::1]"),
            Some(b"h:99999"),
        ];
        let mut cases = Vec::new();
        for base in bases {
            for uri in uris {
                for host in hosts {
                    for tls in [false, true] {
                        cases.push((base, uri, host, tls));
                    }
                }
            }
        }
        let outcome = |r: Result<url::Url, ApiError>| match r {
            Ok(u) => Ok(u.to_string()),
            Err(e) => Err((e.code, e.internal_detail().to_string())),
        };
        let (mut ok, mut refused) = (0, 0);
        // Twice through, and each case twice in a row: the second of a pair hits the memo,
        // the first follows another string (a miss).
        for round in 0..2 {
            for (base, uri, host, tls) in &cases {
                let mut b = axum::http::Request::builder().uri(*uri);
                if let Some(h) = host {
                    b = b.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
                }
                let (parts, ()) = b.body(()).unwrap().into_parts();
                let want = outcome(target_url_parsed(*base, &parts, *tls));
                for _ in 0..2 {
                    let got = outcome(target_url_of(*base, &parts, *tls).map(|u| (*u).clone()));
                    assert_eq!(got, want, "{base:?} {uri} {host:?} tls {tls}");
                }
                if round == 0 {
                    if want.is_ok() {
                        ok += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
        }
        // The corpus holds both outcomes in numbers.
        assert!(ok > 1000 && refused > 50, "{ok} parsed, {refused} refused");
    }

    #[test]
    fn a_target_is_the_concatenation_of_all_its_pieces() {
        assert!(is_concat("http://h/p", &["http", "://", "h", "/p"]));
        assert!(is_concat("", &["", "", ""]));
        assert!(!is_concat("http://h/p", &["http", "://", "h", "/"]));
        assert!(!is_concat("http://h/", &["http", "://", "h", "/p"]));
        assert!(!is_concat("http://hx/p", &["http", "://", "h", "/p"]));
        assert!(!is_concat("https://h/p", &["http", "://", "h", "/p"]));
    }
}
