//! The router, its middleware and the audited-route runner.
//!
//! A sign request flows: [`observe`] (trace context, metrics, one log line) → [`run`] (its
//! own task, so the audit record is written even if the client goes away) →
//! [`crate::gates`] (authentication, tenant, body, entitlement, quotas, release integrity,
//! signing mode: one prologue, [`crate::gates::Ctx::admit_signing`]) → the route's handler
//! in [`crate::sign`] (statement or manifest, signature, typed answer of [`crate::wire`]) →
//! the audit record, appended durably; if that fails the response is `503` and the
//! signature is dropped (nothing signed leaves unaudited) → the response.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use stella_store::{AuditRecord, Outcome};

use crate::app::AppState;
use crate::error::{ApiError, Code};
use crate::gates::Ctx;
use crate::sign::Answer;
use crate::trace::TraceContext;
use crate::wire::{json_response, json_status, Audited, Health, Ready, ReadyChecks};

pub(crate) use crate::gates::ConnInfo;

/// Set on responses whose metrics and audit the handler already did.
#[derive(Debug, Clone)]
struct Handled {
    audit_id: String,
    code: &'static str,
}

pub(crate) const ROUTE_SIGN_DSSE: &str = "/api/v1/signer/sign/dsse";
pub(crate) const ROUTE_SIGN_EXPORT: &str = "/api/v1/signer/sign/export";
pub(crate) const ROUTE_VERIFY_REFERRERS: &str = "/api/v1/signer/verify/referrers";

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
    if let Some(dev) = &state.dev {
        r = r.merge(crate::dev::routes(dev.clone()));
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
    json_response(&Health { status: "ok" })
}

async fn readyz(State(app): State<AppState>) -> Response {
    if !app.auth.jwks.is_ready() {
        let _ = app.auth.jwks.warm().await;
    }
    let quotas = app.quotas.ping().await.is_ok();
    let checks = ReadyChecks {
        audit: app.audit.is_healthy(),
        quotas,
        authority_keys: app.auth.jwks.is_ready(),
        draining: app.is_draining(),
    };
    let ready = checks.audit && checks.quotas && checks.authority_keys && !checks.draining;
    let (status, text) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    json_status(
        status,
        &Ready {
            status: text,
            checks,
        },
    )
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
    json_response(&crate::openapi::document())
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
/// before it closes the audit log ([`crate::App::pipelines_finished`]).
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
            crate::trace::now_rfc3339(),
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
        SignRoute::Dsse => crate::sign::sign(&mut ctx, parts, body, false).await,
        SignRoute::Export => crate::sign::sign(&mut ctx, parts, body, true).await,
        SignRoute::VerifyReferrers => crate::sign::verify_referrers(&mut ctx, parts).await,
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
            Ok(stella_store::Appended {
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
        (Ok(_), Ok(answer)) => {
            let audit_id = audit_id.clone();
            let resp = match answer {
                Answer::Dsse(body, lease) => {
                    let r = crate::wire::sign_dsse_response(&body, &audit_id);
                    drop(lease);
                    r
                }
                Answer::Export(body, lease) => {
                    let r = json_response(&Audited { body, audit_id });
                    drop(lease);
                    r
                }
                Answer::Referrers(body) => json_response(&Audited { body, audit_id }),
            };
            (resp, code)
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
    crate::gates::authenticated_headers(&app, &mut resp);
    resp.extensions_mut().insert(Handled { audit_id, code });
    resp
}
