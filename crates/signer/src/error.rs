//! The one API error type: an HTTP status, a stable `code` (SPEC §4), a detail that tells a
//! caller what to fix (4xx) or nothing internal (5xx), and the headers some codes carry
//! (`WWW-Authenticate`, `DPoP-Nonce`, `Retry-After`). Rendered as
//! `application/problem+json` (RFC 9457). The internal detail of a 5xx goes to the log and
//! the audit record, never to the body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    InvalidToken,
    InvalidDpopProof,
    UseDpopNonce,
    InsufficientScope,
    TenantMismatch,
    EntitlementDenied,
    ReleaseUntrusted,
    ArtifactTooLarge,
    PlanThrottled,
    UpstreamUnavailable,
    NotFound,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidToken => "invalid_token",
            Code::InvalidDpopProof => "invalid_dpop_proof",
            Code::UseDpopNonce => "use_dpop_nonce",
            Code::InsufficientScope => "insufficient_scope",
            Code::TenantMismatch => "tenant_mismatch",
            Code::EntitlementDenied => "entitlement_denied",
            Code::ReleaseUntrusted => "release_untrusted",
            Code::ArtifactTooLarge => "artifact_too_large",
            Code::PlanThrottled => "plan_throttled",
            Code::UpstreamUnavailable => "upstream_unavailable",
            Code::NotFound => "not_found",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::InvalidToken | Code::InvalidDpopProof | Code::UseDpopNonce => {
                StatusCode::UNAUTHORIZED
            }
            Code::InsufficientScope
            | Code::TenantMismatch
            | Code::EntitlementDenied
            | Code::ReleaseUntrusted => StatusCode::FORBIDDEN,
            Code::ArtifactTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::PlanThrottled => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::NotFound => StatusCode::NOT_FOUND,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Code::InvalidRequest => "The request is malformed",
            Code::InvalidToken => "The access token is not valid",
            Code::InvalidDpopProof => "The DPoP proof is not valid",
            Code::UseDpopNonce => "A DPoP nonce is required",
            Code::InsufficientScope => "The access token lacks the required scope",
            Code::TenantMismatch => "The request is for another tenant",
            Code::EntitlementDenied => "No active entitlement",
            Code::ReleaseUntrusted => "The scanner release is not trusted",
            Code::ArtifactTooLarge => "The artifact is too large",
            Code::PlanThrottled => "The plan's rate or concurrency limit was reached",
            Code::UpstreamUnavailable => "A service the signer depends on is unavailable",
            Code::NotFound => "Not found",
        }
    }
}

/// An API error (boxed: it travels through many `Result`s on the request path).
#[derive(Debug, Clone)]
pub struct ApiError(Box<Problem>);

impl std::ops::Deref for ApiError {
    type Target = Problem;
    fn deref(&self) -> &Problem {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut Problem {
        &mut self.0
    }
}

/// The contents of an [`ApiError`].
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
    /// What the caller is told (4xx) — never secrets, never internals.
    pub detail: String,
    /// What operators are told (logs, audit). Defaults to `detail`.
    pub internal: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// A fresh nonce for `DPoP-Nonce`.
    pub dpop_nonce: Option<String>,
    /// The `algs` of the DPoP challenge.
    pub dpop_algs: Option<String>,
    /// Also send a `Bearer` challenge (the caller used Bearer).
    pub bearer_challenge: bool,
    /// Scope named in an `insufficient_scope` challenge.
    pub scope: Option<String>,
    /// Filled in just before rendering.
    pub audit_id: Option<String>,
    pub trace_id: Option<String>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError(Box::new(Problem {
            code,
            detail: detail.into(),
            internal: None,
            retry_after: None,
            dpop_nonce: None,
            dpop_algs: None,
            bearer_challenge: false,
            scope: None,
            audit_id: None,
            trace_id: None,
        }))
    }

    /// A 503 whose body says only what failed in general terms; `internal` is logged.
    pub fn unavailable(public: &str, internal: impl Into<String>) -> Self {
        let mut e = ApiError::new(Code::UpstreamUnavailable, public);
        e.internal = Some(internal.into());
        // A store or upstream outage is transient: tell clients when to come back.
        e.retry_after = Some(1);
        e
    }

    pub fn internal_detail(&self) -> &str {
        self.internal.as_deref().unwrap_or(&self.detail)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    fn challenge(&self) -> Option<String> {
        let esc = |s: &str| s.replace(['"', '\\'], "'");
        match self.code {
            Code::InvalidToken
            | Code::InvalidDpopProof
            | Code::UseDpopNonce
            | Code::InsufficientScope => {
                let mut dpop = format!(
                    "DPoP error=\"{}\", error_description=\"{}\"",
                    self.code.as_str(),
                    esc(&self.detail)
                );
                if let Some(s) = &self.scope {
                    dpop.push_str(&format!(", scope=\"{}\"", esc(s)));
                }
                if let Some(a) = &self.dpop_algs {
                    dpop.push_str(&format!(", algs=\"{a}\""));
                }
                if self.bearer_challenge && self.code != Code::InvalidDpopProof {
                    let code = if self.code == Code::InsufficientScope {
                        "insufficient_scope"
                    } else {
                        "invalid_token"
                    };
                    Some(format!("Bearer error=\"{code}\", {dpop}"))
                } else {
                    Some(dpop)
                }
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.internal_detail())
    }
}

/// The `application/problem+json` body (RFC 9457; `Problem` in the OpenAPI document).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProblemBody<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ProblemBody {
            kind: format!("urn:stella:signer:problem:{}", self.code.as_str()),
            title: self.code.title(),
            status: status.as_u16(),
            code: self.code.as_str(),
            detail: &self.detail,
            audit_id: self.audit_id.as_deref(),
            trace_id: self.trace_id.as_deref(),
        };
        // Through a `Value`: keys sorted, byte for byte as before.
        let body = serde_json::to_value(&body)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        if let Some(n) = self
            .0
            .dpop_nonce
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            h.insert("dpop-nonce", n);
        }
        resp
    }
}

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
