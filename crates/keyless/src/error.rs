//! Errors. One [`UpstreamError`] shape for the three services (and the identity provider), so
//! the Signer service maps them uniformly: [`UpstreamError::Unavailable`] → 503
//! `upstream_unavailable` (retryable, exit 10 in the CLI); [`UpstreamError::Rejected`] (a 4xx:
//! bad token, expired token, refused proof of possession) → the caller's fault;
//! [`UpstreamError::InvalidResponse`] and [`UpstreamError::Untrusted`] → the service answered
//! something we must not use (502-like: never retried blindly, always logged).

use std::fmt;

/// Which upstream service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Service {
    Fulcio,
    Tsa,
    Rekor,
    /// Where identity tokens come from (the Authority, client credentials).
    IdentityProvider,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Fulcio => "fulcio",
            Service::Tsa => "tsa",
            Service::Rekor => "rekor",
            Service::IdentityProvider => "identity-provider",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Fulcio => "Fulcio",
            Service::Tsa => "the timestamp authority",
            Service::Rekor => "Rekor",
            Service::IdentityProvider => "the identity provider",
        })
    }
}

/// A failure talking to (or believing) an upstream service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Unreachable, timed out, or 5xx/429 after the retries: a later attempt may succeed.
    #[error("{service} is unavailable ({url}): {reason}")]
    Unavailable {
        service: Service,
        url: String,
        reason: String,
    },
    /// A 4xx answer: the request itself is refused (not retried).
    #[error("{service} refused the request ({url}, HTTP {status}): {message}")]
    Rejected {
        service: Service,
        url: String,
        status: u16,
        message: String,
    },
    /// The answer cannot be read.
    #[error("{service} sent an unreadable response ({url}): {reason}")]
    InvalidResponse {
        service: Service,
        url: String,
        reason: String,
    },
    /// The answer was read but fails a check (certificate not ours, chain to an unknown root,
    /// SCT, SET or timestamp not verifying, identity mismatch).
    #[error("{service} returned something we do not trust: {reason}")]
    Untrusted { service: Service, reason: String },
}

impl UpstreamError {
    pub fn service(&self) -> Service {
        match self {
            UpstreamError::Unavailable { service, .. }
            | UpstreamError::Rejected { service, .. }
            | UpstreamError::InvalidResponse { service, .. }
            | UpstreamError::Untrusted { service, .. } => *service,
        }
    }

    pub(crate) fn untrusted(service: Service, reason: impl Into<String>) -> Self {
        UpstreamError::Untrusted {
            service,
            reason: reason.into(),
        }
    }
}

/// Why a keyless signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeylessError {
    /// No usable identity token.
    #[error("identity token: {0}")]
    Token(#[from] TokenError),
    /// Fulcio, the TSA, Rekor or the identity provider failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The ephemeral key could not be made or could not sign.
    #[error(transparent)]
    Sign(#[from] stella_keys::SignError),
    /// The statement or payload cannot be signed as given.
    #[error("cannot build the bundle: {0}")]
    Input(String),
    /// The bundle we built does not verify with our own verifier against the configured
    /// trusted root (a configuration error: the trusted root does not describe the services).
    #[error("the keyless bundle does not verify against the configured trusted root: {0}")]
    SelfCheck(#[source] Box<stella_sigstore::Failure>),
}

impl KeylessError {
    /// Should the caller answer 503 `upstream_unavailable` (CLI exit 10)?
    pub fn is_upstream_unavailable(&self) -> bool {
        matches!(
            self,
            KeylessError::Upstream(UpstreamError::Unavailable { .. })
                | KeylessError::Token(TokenError::Unavailable(_))
        )
    }

    /// The upstream service involved, if any.
    pub fn service(&self) -> Option<Service> {
        match self {
            KeylessError::Upstream(e) => Some(e.service()),
            KeylessError::Token(TokenError::Unavailable(_)) => Some(Service::IdentityProvider),
            _ => None,
        }
    }
}

/// Why a token is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token expired at {expired_at} (now {now})")]
    Expired { expired_at: String, now: String },
    #[error("the token's email is not verified by its issuer (email_verified is not true)")]
    EmailNotVerified,
    /// The token source (identity provider, file, environment) failed.
    #[error("cannot obtain an identity token: {0}")]
    Source(String),
    /// The identity provider cannot be reached (retryable).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}
