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

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stella_store::{normalize_time, MAX_QUERY_LIMIT};
use stella_store::{AuditQuery, AuditRecord, Outcome};

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::trace::TraceContext;
use crate::wire::{json_response, AuditEntry, AuditHead, AuditPage};

pub(crate) const ROUTE_AUDIT: &str = "/api/v1/signer/audit";
pub(crate) const ROUTE_AUDIT_HEAD: &str = "/api/v1/signer/audit/head";

/// Scope the audit API requires.
pub(crate) const AUDIT_SCOPE: &str = "signer.audit";
/// Additional scope that lifts tenant isolation (operators' clients only).
pub(crate) const AUDIT_ADMIN_SCOPE: &str = "signer.audit.admin";

/// Records per page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 100;

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
    crate::gates::single_identity_headers(app, &parts.headers)?;
    let conn = crate::gates::conn_info(parts);
    let target = crate::gates::target_url(app, parts, conn.tls)?;
    let req = crate::gates::auth_request(app, parts, &target, &conn)?;
    let caller = app
        .auth
        .authenticate_scoped(&req, AUDIT_SCOPE)
        .await
        .map_err(|f| f.error)?;
    crate::gates::check_tenant_header(parts, &caller)?;
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

async fn query_inner(app: &App, req: Request) -> Result<AuditPage, ApiError> {
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
        records.push(AuditEntry {
            seq: r.seq,
            hash: r.hash.clone(),
            prev_hash: r.prev_hash.clone(),
            record,
        });
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
    Ok(AuditPage {
        records,
        next_cursor: next,
        limit: q.effective_limit(),
    })
}

async fn head_inner(
    app: &App,
    req: Request,
) -> Result<AuditHead<stella_store::checkpoint::Checkpoint>, ApiError> {
    let (parts, _body) = req.into_parts();
    let caller = authenticate(app, &parts).await?;
    let Some(key) = app.audit_checkpoint_key.clone() else {
        return Err(ApiError::new(
            Code::NotFound,
            "this signer writes no signed checkpoints (audit.checkpoint_key is not set)",
        ));
    };
    let path = app.config.audit.checkpoint_file();
    let unreadable =
        |e: String| ApiError::unavailable("the audit checkpoint cannot be read; retry later", e);
    let (cp, env) = tokio::task::spawn_blocking(move || {
        let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
            key.public_key().clone(),
        )])
        .map_err(|e| unreadable(e.to_string()))?;
        let cp = stella_store::checkpoint::read_verified(&path, &ring)
            .map_err(|e| unreadable(e.to_string()))?;
        let env =
            std::fs::read(&path).map_err(|e| unreadable(format!("{}: {e}", path.display())))?;
        Ok::<_, ApiError>((cp, env))
    })
    .await
    .map_err(|e| ApiError::unavailable("internal error", e.to_string()))??;
    let envelope: Value = serde_json::from_slice(&env)
        .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
    tracing::info!(
        client = caller.claims.client_id.as_deref().unwrap_or(""),
        caller_tenant = %caller.tenant,
        records = cp.records,
        "audit API head read"
    );
    Ok(AuditHead {
        checkpoint: cp,
        envelope,
    })
}

fn finish<T: serde::Serialize>(
    app: &App,
    route: &'static str,
    trace: &TraceContext,
    r: Result<T, ApiError>,
) -> Response {
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) if e.status().is_server_error() => "error",
        Err(_) => "denied",
    };
    app.metrics.audit_api_request(route, outcome);
    let mut resp = match r {
        Ok(v) => json_response(&v),
        Err(mut e) => {
            if e.status().is_server_error() {
                tracing::error!(trace_id = %trace.trace_id, route, detail = e.internal_detail(), "audit API failed");
            }
            e.trace_id = Some(trace.trace_id.clone());
            e.into_response()
        }
    };
    crate::gates::authenticated_headers(app, &mut resp);
    resp
}

fn trace_of(req: &Request) -> TraceContext {
    req.extensions()
        .get::<TraceContext>()
        .cloned()
        .unwrap_or_else(|| TraceContext::from_header(None))
}

/// `GET /api/v1/signer/audit`.
pub(crate) async fn query(State(app): State<crate::AppState>, req: Request) -> Response {
    let trace = trace_of(&req);
    let r = query_inner(&app, req).await.inspect(|page| {
        app.metrics.audit_api_records(page.records.len());
    });
    finish(&app, "audit", &trace, r)
}

/// `GET /api/v1/signer/audit/head`.
pub(crate) async fn head(State(app): State<crate::AppState>, req: Request) -> Response {
    let trace = trace_of(&req);
    let r = head_inner(&app, req).await;
    finish(&app, "audit_head", &trace, r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
