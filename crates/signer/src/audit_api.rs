//! The audit API: `GET /api/v1/signer/audit` (filtered, paginated reads of the audit log)
//! and `GET /api/v1/signer/audit/head` (the latest signed checkpoint of the chain head).
//!
//! **Authorization.** Same token and sender constraint (DPoP or mTLS) as the sign routes, but
//! its own scope, [`AUDIT_SCOPE`]: a `signer.sign` token cannot read the log, and a token
//! with only `signer.audit` cannot sign (the sign routes require `signer.sign`).
//!
//! **Tenant isolation.** A caller reads its own tenant's records (the token's `tid`) and
//! nothing else: the `tenant` filter defaults to the token's tenant, and naming another one
//! is refused (`403 tenant_mismatch`). Only a token that also carries the cross-tenant admin
//! scope [`AUDIT_ADMIN_SCOPE`] may name any tenant or leave the filter out (every tenant).
//! Every returned record is checked again against the filters on the record's own fields, so
//! what a caller sees never rests on an index alone.
//!
//! **Pagination.** Records come in chain order (`seq`), at most `limit` (1..=1000, default
//! 100) per page; `nextCursor` continues after the last one. The cursor is opaque and
//! tamper-evident: `base64url(version || seq || HMAC-SHA256(key, seq || filters)[..16])`,
//! bound to the exact filters and caller tenant it was issued for, so it cannot be edited,
//! nor replayed with other filters or by another tenant. The key comes from
//! `audit.cursor_secret_env` (replicas must share it) or is random per process (a cursor is
//! then good only on the replica that issued it).
//!
//! **Observability without flooding.** Reads are counted
//! (`stella_signer_audit_api_requests_total{route,outcome}`, `..._records_total`) and logged
//! (one line: caller, filters, count), but not written to the audit log: reading the log does
//! not change what it attests, and a client paging through it would otherwise multiply it.

use aws_lc_rs::hmac;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use stella_store::audit::{normalize_time, MAX_QUERY_LIMIT};
use stella_store::{AuditQuery, AuditRecord, Outcome};

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::trace::TraceContext;

pub const ROUTE_AUDIT: &str = "/api/v1/signer/audit";
pub const ROUTE_AUDIT_HEAD: &str = "/api/v1/signer/audit/head";

/// Scope the audit API requires.
pub const AUDIT_SCOPE: &str = "signer.audit";
/// Additional scope that lifts tenant isolation (operators' clients only).
pub const AUDIT_ADMIN_SCOPE: &str = "signer.audit.admin";

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

const CURSOR_VERSION: u8 = 1;
const CURSOR_MAC_LEN: usize = 16;

/// The cursor key of the audit API.
pub struct AuditApi {
    cursor_key: hmac::Key,
}

/// Why the audit API state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditApiError {
    #[error("the system random number generator failed: cannot make the audit cursor key")]
    Random,
}

impl AuditApi {
    /// With `secret` (shared by replicas) or a random per-process key.
    pub fn new(secret: Option<&[u8]>) -> Result<Self, AuditApiError> {
        let cursor_key = match secret {
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| AuditApiError::Random)?,
        };
        Ok(AuditApi { cursor_key })
    }

    fn mac(&self, seq: u64, binding: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.cursor_key);
        ctx.update(b"stella audit cursor v1\0");
        ctx.update(&seq.to_be_bytes());
        ctx.update(binding.as_bytes());
        ctx.sign()
    }

    /// The cursor continuing after `seq` for queries with `binding`.
    pub fn cursor(&self, seq: u64, binding: &str) -> String {
        let mut b = Vec::with_capacity(1 + 8 + CURSOR_MAC_LEN);
        b.push(CURSOR_VERSION);
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&self.mac(seq, binding).as_ref()[..CURSOR_MAC_LEN]);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The `seq` a cursor continues after, if it was issued here for `binding`.
    pub fn open_cursor(&self, cursor: &str, binding: &str) -> Option<u64> {
        let b = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if b.len() != 1 + 8 + CURSOR_MAC_LEN || b[0] != CURSOR_VERSION {
            return None;
        }
        let seq = u64::from_be_bytes(b[1..9].try_into().ok()?);
        let expected = self.mac(seq, binding);
        // Constant time: the tag must not be guessable byte by byte.
        aws_lc_rs::constant_time::verify_slices_are_equal(
            &b[9..],
            &expected.as_ref()[..CURSOR_MAC_LEN],
        )
        .ok()?;
        Some(seq)
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, detail)
}

/// The query string, each known parameter at most once.
struct Params {
    since: Option<String>,
    until: Option<String>,
    tenant: Option<String>,
    outcome: Option<Outcome>,
    subject: Option<String>,
    limit: usize,
    cursor: Option<String>,
}

fn parse_params(query: Option<&str>) -> Result<Params, ApiError> {
    let mut seen = std::collections::BTreeMap::<String, String>::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !matches!(
            k.as_ref(),
            "since" | "until" | "tenant" | "outcome" | "subject" | "limit" | "cursor"
        ) {
            return Err(invalid(format!(
                "unknown query parameter {k:?} (since, until, tenant, outcome, subject, limit, cursor)"
            )));
        }
        if seen.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(invalid(format!("give the query parameter {k} once")));
        }
    }
    let time = |k: &str| -> Result<Option<String>, ApiError> {
        seen.get(k)
            .map(|v| {
                normalize_time(v)
                    .ok_or_else(|| invalid(format!("{k} must be an RFC 3339 time, got {v:?}")))
            })
            .transpose()
    };
    let since = time("since")?;
    let until = time("until")?;
    let outcome = seen
        .get("outcome")
        .map(|o| match o.as_str() {
            "signed" => Ok(Outcome::Signed),
            "verified" => Ok(Outcome::Verified),
            "denied" => Ok(Outcome::Denied),
            "error" => Ok(Outcome::Error),
            _ => Err(invalid(
                "outcome must be one of signed, verified, denied, error",
            )),
        })
        .transpose()?;
    let subject = seen.get("subject").cloned();
    if let Some(s) = &subject {
        if !crate::config::is_sha256_digest(s) {
            return Err(invalid("subject must be sha256:<64 lowercase hex>"));
        }
    }
    let tenant = seen.get("tenant").cloned();
    if tenant
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 256)
    {
        return Err(invalid("tenant must be 1 to 256 characters"));
    }
    let limit = match seen.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "limit must be an integer from 1 to {MAX_QUERY_LIMIT}"
                )))
            }
        },
    };
    Ok(Params {
        since,
        until,
        tenant,
        outcome,
        subject,
        limit,
        cursor: seen.get("cursor").cloned(),
    })
}

/// Token, sender constraint and scope [`AUDIT_SCOPE`]; an `X-Stella-Tenant` header, if sent,
/// must name the token's tenant (as on the sign routes).
async fn authenticate(app: &App, parts: &axum::http::request::Parts) -> Result<Caller, ApiError> {
    let ctx = crate::api::Ctx::for_reads(app);
    ctx.single_identity_headers(&parts.headers)?;
    let conn = parts
        .extensions
        .get::<crate::api::ConnInfo>()
        .cloned()
        .unwrap_or_default();
    let target = ctx.target_url(parts, conn.tls)?;
    let req = crate::api::auth_request(app, parts, &target, &conn)?;
    let caller = app
        .auth
        .authenticate_scoped(&req, AUDIT_SCOPE)
        .await
        .map_err(|f| f.error)?;
    if let Some(h) = parts.headers.get("x-stella-tenant") {
        if h.as_bytes() != caller.tenant.as_bytes() {
            return Err(ApiError::new(
                Code::TenantMismatch,
                "X-Stella-Tenant names another tenant than the access token",
            ));
        }
    }
    Ok(caller)
}

fn is_admin(caller: &Caller) -> bool {
    caller.claims.scopes.iter().any(|s| s == AUDIT_ADMIN_SCOPE)
}

/// What a cursor is bound to: the filters as applied and who asked.
fn binding(q: &AuditQuery, caller: &Caller) -> String {
    json!([
        q.since,
        q.until,
        q.tenant,
        q.outcome.map(Outcome::as_str),
        q.subject_digest,
        caller.tenant,
        is_admin(caller),
    ])
    .to_string()
}

async fn query_inner(app: &App, req: Request) -> Result<(Value, usize), ApiError> {
    let (parts, _body) = req.into_parts();
    let caller = authenticate(app, &parts).await?;
    let p = parse_params(parts.uri.query())?;
    let tenant = match (p.tenant, is_admin(&caller)) {
        (None, false) => Some(caller.tenant.clone()),
        (Some(t), false) if t != caller.tenant => {
            return Err(ApiError::new(
                Code::TenantMismatch,
                format!(
                    "this token reads tenant {:?} only (cross-tenant reads need the {AUDIT_ADMIN_SCOPE} scope)",
                    caller.tenant
                ),
            ))
        }
        (t, _) => t,
    };
    let mut q = AuditQuery {
        after_seq: 0,
        limit: p.limit,
        since: p.since,
        until: p.until,
        tenant,
        outcome: p.outcome,
        subject_digest: p.subject,
    };
    let bind = binding(&q, &caller);
    if let Some(c) = &p.cursor {
        q.after_seq = app.audit_api.open_cursor(c, &bind).ok_or_else(|| {
            invalid("the cursor is not valid for this query (altered, from other filters or another replica's key): start again without it")
        })?;
    }
    let page = app.audit.query(q.clone()).await.map_err(|e| match e {
        stella_store::StoreError::Unsupported(_) => ApiError::new(
            Code::NotFound,
            format!(
                "the {} audit backend cannot be queried",
                app.audit.backend()
            ),
        ),
        e => ApiError::unavailable("the audit log cannot be read; retry later", e.to_string()),
    })?;
    let mut records = Vec::with_capacity(page.records.len());
    for r in &page.records {
        let rec: AuditRecord = serde_json::from_str(&r.record_json).map_err(|e| {
            ApiError::unavailable(
                "the audit log cannot be read; retry later",
                format!("audit record seq {}: {e}", r.seq),
            )
        })?;
        if !q.matches(r.seq, &rec) || rec.time != r.time {
            // An index or column that disagrees with the chained record: never shown.
            tracing::error!(
                seq = r.seq,
                "audit query returned a record that does not match its filters; skipped (run `stella audit verify`)"
            );
            continue;
        }
        let record: Value = serde_json::from_str(&r.record_json).map_err(|e| {
            ApiError::unavailable("the audit log cannot be read; retry later", e.to_string())
        })?;
        records
            .push(json!({"seq": r.seq, "hash": r.hash, "prevHash": r.prev_hash, "record": record}));
    }
    let next = match page.records.last() {
        Some(last) if page.more => Some(app.audit_api.cursor(last.seq, &bind)),
        _ => None,
    };
    let n = records.len();
    tracing::info!(
        client = caller.claims.client_id.as_deref().unwrap_or(""),
        sub = caller.claims.sub.as_deref().unwrap_or(""),
        caller_tenant = %caller.tenant,
        tenant = q.tenant.as_deref().unwrap_or("*"),
        outcome = q.outcome.map(Outcome::as_str).unwrap_or(""),
        subject = q.subject_digest.as_deref().unwrap_or(""),
        since = q.since.as_deref().unwrap_or(""),
        until = q.until.as_deref().unwrap_or(""),
        after_seq = q.after_seq,
        records = n,
        "audit API read"
    );
    Ok((
        json!({"records": records, "nextCursor": next, "limit": q.effective_limit()}),
        n,
    ))
}

async fn head_inner(app: &App, req: Request) -> Result<Value, ApiError> {
    let (parts, _body) = req.into_parts();
    let caller = authenticate(app, &parts).await?;
    let Some(key) = app.audit_checkpoint_key.clone() else {
        return Err(ApiError::new(
            Code::NotFound,
            "this signer writes no signed checkpoints (audit.checkpoint_key is not set)",
        ));
    };
    let path = app.config.audit.checkpoint_file();
    let read = tokio::task::spawn_blocking(move || {
        let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
            key.public_key().clone(),
        )])
        .map_err(|e| e.to_string())?;
        let cp =
            stella_store::checkpoint::read_verified(&path, &ring).map_err(|e| e.to_string())?;
        let env = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<_, String>((cp, env))
    })
    .await
    .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
    let (cp, env) = read.map_err(|e| {
        ApiError::unavailable("the audit checkpoint cannot be read; retry later", e)
    })?;
    let envelope: Value = serde_json::from_slice(&env)
        .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
    tracing::info!(
        client = caller.claims.client_id.as_deref().unwrap_or(""),
        caller_tenant = %caller.tenant,
        records = cp.records,
        "audit API head read"
    );
    Ok(json!({"checkpoint": cp, "envelope": envelope}))
}

fn finish(
    app: &App,
    route: &'static str,
    trace: &TraceContext,
    r: Result<Value, ApiError>,
) -> Response {
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) if e.status().is_server_error() => "error",
        Err(_) => "denied",
    };
    app.metrics.audit_api_request(route, outcome);
    let mut resp = match r {
        Ok(v) => {
            let mut resp = (axum::http::StatusCode::OK, v.to_string()).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(mut e) => {
            if e.status().is_server_error() {
                tracing::error!(trace_id = %trace.trace_id, route, detail = e.internal_detail(), "audit API failed");
            }
            e.trace_id = Some(trace.trace_id.clone());
            e.into_response()
        }
    };
    if let Some(n) = app.auth.dpop.fresh_nonce() {
        if !resp.headers().contains_key("dpop-nonce") {
            if let Ok(v) = HeaderValue::from_str(&n) {
                resp.headers_mut().insert("dpop-nonce", v);
            }
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn trace_of(req: &Request) -> TraceContext {
    req.extensions()
        .get::<TraceContext>()
        .cloned()
        .unwrap_or_else(|| TraceContext::from_header(None))
}

/// `GET /api/v1/signer/audit`.
pub async fn query(State(app): State<crate::AppState>, req: Request) -> Response {
    let trace = trace_of(&req);
    let r = query_inner(&app, req).await.map(|(v, n)| {
        app.metrics.audit_api_records(n);
        v
    });
    finish(&app, "audit", &trace, r)
}

/// `GET /api/v1/signer/audit/head`.
pub async fn head(State(app): State<crate::AppState>, req: Request) -> Response {
    let trace = trace_of(&req);
    let r = head_inner(&app, req).await;
    finish(&app, "audit_head", &trace, r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursors_are_bound_and_tamper_evident() {
        let api = AuditApi::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        let c = api.cursor(42, "filters-a");
        assert_eq!(api.open_cursor(&c, "filters-a"), Some(42));
        // A replica with the same secret accepts it.
        let replica = AuditApi::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        assert_eq!(replica.open_cursor(&c, "filters-a"), Some(42));
        // Other filters, another key, an edited seq, a cut tag, garbage.
        assert_eq!(api.open_cursor(&c, "filters-b"), None);
        let other = AuditApi::new(None).unwrap();
        assert_eq!(other.open_cursor(&c, "filters-a"), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        raw[8] ^= 1;
        assert_eq!(
            api.open_cursor(&URL_SAFE_NO_PAD.encode(&raw), "filters-a"),
            None
        );
        raw[8] ^= 1;
        raw[0] = 2;
        assert_eq!(
            api.open_cursor(&URL_SAFE_NO_PAD.encode(&raw), "filters-a"),
            None
        );
        assert_eq!(api.open_cursor(&c[..c.len() - 2], "filters-a"), None);
        assert_eq!(api.open_cursor("not base64 !", "filters-a"), None);
        assert_eq!(api.open_cursor("", "filters-a"), None);
    }

    #[test]
    fn params_are_strict() {
        let ok = parse_params(Some(
            "since=2026-01-02T04:00:00%2B01:00&outcome=signed&limit=5&tenant=t",
        ))
        .unwrap();
        assert_eq!(ok.since.as_deref(), Some("2026-01-02T03:00:00.000Z"));
        assert_eq!((ok.limit, ok.outcome), (5, Some(Outcome::Signed)));
        assert_eq!(parse_params(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=ten",
            "since=yesterday",
            "until=2026-13-01T00:00:00Z",
            "outcome=maybe",
            "subject=sha256:AB",
            "subject=md5:00",
            "tenant=",
            "tenant=a&tenant=b",
            "page=2",
        ] {
            let e = parse_params(Some(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.code, Code::InvalidRequest, "{bad}");
        }
    }
}
