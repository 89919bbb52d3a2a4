//! OIDC identity tokens. Fulcio verifies the token (signature, audience, expiry); the client
//! reads its claims without verifying them, for three things only: the proof-of-possession
//! challenge (the subject Fulcio expects to be signed), the identity the returned certificate
//! must carry (checked before the certificate is used), and expiry (an expired token is
//! refused locally instead of costing a round trip).
//!
//! A token is a bearer credential: it is held in a zeroised buffer and never printed.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::BoxFuture;

pub use crate::error::TokenError;

/// An OIDC identity token and the claims the client uses.
#[derive(Clone)]
pub struct IdentityToken {
    raw: Arc<Zeroizing<String>>,
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `email`, when present.
    pub email: Option<String>,
    pub email_verified: bool,
    /// `exp` (Unix seconds).
    pub expires_at: Option<i64>,
    /// GitHub Actions' `job_workflow_ref`, when present (Fulcio's SAN for CI tokens).
    pub job_workflow_ref: Option<String>,
    /// `aud` (a string or an array).
    pub audiences: Vec<String>,
}

impl fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityToken")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("email", &self.email)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn claim_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// A JWT claim that may be a string or an array of strings (`aud`, `scope`): the strings of
/// the array (other members skipped), or those `split` makes of the string; empty when the
/// claim is absent or of another type. `std::iter::once` reads `aud` (RFC 7519 §4.1.3),
/// `str::split_whitespace` reads `scope` (RFC 8693 §4.2).
pub fn claim_strings<'a, I>(
    claim: Option<&'a Value>,
    split: impl FnOnce(&'a str) -> I,
) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    match claim {
        Some(Value::String(s)) => split(s).into_iter().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

impl IdentityToken {
    /// Read a compact JWS (`header.payload.signature`) without verifying it.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        let raw = raw.trim();
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(TokenError::Malformed(
                "expected three base64url parts separated by dots".into(),
            ));
        }
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1].trim_end_matches('='))
            .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
        let claims: Value = serde_json::from_slice(&payload)
            .map_err(|e| TokenError::Malformed(format!("payload is not JSON: {e}")))?;
        if !claims.is_object() {
            return Err(TokenError::Malformed("payload is not a JSON object".into()));
        }
        let issuer = claim_str(&claims, "iss").ok_or(TokenError::MissingClaim("iss"))?;
        let subject = claim_str(&claims, "sub").ok_or(TokenError::MissingClaim("sub"))?;
        Ok(IdentityToken {
            raw: Arc::new(Zeroizing::new(raw.to_string())),
            issuer,
            subject,
            email: claim_str(&claims, "email"),
            email_verified: claims
                .get("email_verified")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            expires_at: claims.get("exp").and_then(Value::as_i64),
            job_workflow_ref: claim_str(&claims, "job_workflow_ref"),
            audiences: claim_strings(claims.get("aud"), std::iter::once),
        })
    }

    /// The token text, to send to Fulcio.
    pub fn raw(&self) -> &str {
        self.raw.as_str()
    }

    /// Refuse a token that is expired at `now` (or within `margin_secs` of expiring).
    pub fn check_fresh(&self, now: OffsetDateTime, margin_secs: i64) -> Result<(), TokenError> {
        if let Some(exp) = self.expires_at {
            if now.unix_timestamp().saturating_add(margin_secs) >= exp {
                return Err(TokenError::Expired {
                    expired_at: OffsetDateTime::from_unix_timestamp(exp)
                        .map(stella_x509::format_time)
                        .unwrap_or_else(|_| exp.to_string()),
                    now: stella_x509::format_time(now),
                });
            }
        }
        Ok(())
    }

    /// The challenge Fulcio expects signed as proof of possession: the email when the token
    /// carries one (it must be verified), else the subject (as sigstore clients do).
    pub fn challenge(&self) -> Result<&str, TokenError> {
        match &self.email {
            Some(e) if self.email_verified => Ok(e),
            Some(_) => Err(TokenError::EmailNotVerified),
            None => Ok(&self.subject),
        }
    }

    /// SAN values a certificate issued for this token may carry: the email, the subject,
    /// and for GitHub Actions tokens the workflow URL.
    pub(crate) fn acceptable_sans(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.email {
            out.push(e.clone());
        }
        out.push(self.subject.clone());
        if let Some(r) = &self.job_workflow_ref {
            out.push(format!("https://github.com/{r}"));
        }
        out
    }
}

/// Where identity tokens come from.
pub trait IdentityTokenSource: Send + Sync {
    /// A token valid for at least a few seconds more.
    fn token(&self) -> BoxFuture<'_, Result<IdentityToken, TokenError>>;
}

/// One fixed token (CLI `--identity-token`, tests).
#[derive(Debug, Clone)]
pub struct StaticToken(pub IdentityToken);

impl StaticToken {
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        IdentityToken::parse(raw).map(StaticToken)
    }
}

impl IdentityTokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<IdentityToken, TokenError>> {
        Box::pin(async move {
            self.0.check_fresh(OffsetDateTime::now_utc(), 0)?;
            Ok(self.0.clone())
        })
    }
}

/// Client-credentials tokens from an OAuth 2.0 authorization server (the StellaOps
/// Authority): `POST token_url` with `grant_type=client_credentials`, the client's id and
/// secret (`client_secret_post`), and optionally `audience`, `resource` (RFC 8707) and
/// `scope`. The token is cached and reused until `margin` before its `exp` (an expiring token
/// would make Fulcio refuse the next certificate); refreshes are single-flight. The returned
/// token's `aud` must contain `audience` when one is configured (a misconfigured client
/// fails here, not at Fulcio). Retries and timeouts as the other upstream clients.
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    client_secret: Zeroizing<String>,
    audience: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    margin: std::time::Duration,
    client: reqwest::Client,
    options: crate::HttpOptions,
    cached: tokio::sync::Mutex<Option<IdentityToken>>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ClientCredentials {
    pub fn new(
        token_url: &str,
        client_id: &str,
        client_secret: Zeroizing<String>,
        options: crate::HttpOptions,
    ) -> Result<Self, crate::UpstreamError> {
        let url = crate::http::check_url(crate::Service::IdentityProvider, token_url)?;
        Ok(ClientCredentials {
            client: crate::http::client(crate::Service::IdentityProvider, &url, &options)?,
            token_url: url,
            client_id: client_id.to_string(),
            client_secret,
            audience: Some("sigstore".into()),
            resource: None,
            scope: None,
            margin: std::time::Duration::from_secs(60),
            options,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The `audience` parameter and the `aud` the token must carry (default `sigstore`;
    /// `None`: neither sent nor checked).
    pub fn audience(mut self, a: Option<&str>) -> Self {
        self.audience = a.map(str::to_string);
        self
    }

    /// An RFC 8707 `resource` indicator.
    pub fn resource(mut self, r: Option<&str>) -> Self {
        self.resource = r.map(str::to_string);
        self
    }

    pub fn scope(mut self, s: Option<&str>) -> Self {
        self.scope = s.map(str::to_string);
        self
    }

    /// Refresh this long before `exp` (default 60 s).
    pub fn margin(mut self, m: std::time::Duration) -> Self {
        self.margin = m;
        self
    }

    async fn fetch(&self) -> Result<IdentityToken, TokenError> {
        let mut form = Zeroizing::new(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form_encode(&self.client_id),
            form_encode(&self.client_secret)
        ));
        for (k, v) in [
            ("audience", &self.audience),
            ("resource", &self.resource),
            ("scope", &self.scope),
        ] {
            if let Some(v) = v {
                form.push_str(&format!("&{k}={}", form_encode(v)));
            }
        }
        let answer = crate::http::send(
            &self.client,
            crate::http::Call {
                service: crate::Service::IdentityProvider,
                method: reqwest::Method::POST,
                url: &self.token_url,
                content_type: "application/x-www-form-urlencoded",
                accept: "application/json",
                body: Some(form.as_bytes()),
                conflict_ok: false,
            },
            &self.options,
        )
        .await;
        let (_, body, _) = answer.map_err(|e| match e {
            crate::UpstreamError::Unavailable { .. } => TokenError::Unavailable(e.to_string()),
            other => TokenError::Source(other.to_string()),
        })?;
        let body = Zeroizing::new(body);
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| TokenError::Source(format!("the token response is not JSON: {e}")))?;
        let raw = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Source("the token response has no access_token".into()))?;
        let token = IdentityToken::parse(raw)?;
        if let Some(a) = &self.audience {
            if !token.audiences.iter().any(|t| t == a) {
                return Err(TokenError::Source(format!(
                    "the token's audience {:?} does not include {a:?}",
                    token.audiences
                )));
            }
        }
        Ok(token)
    }
}

impl IdentityTokenSource for ClientCredentials {
    fn token(&self) -> BoxFuture<'_, Result<IdentityToken, TokenError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            let margin = i64::try_from(self.margin.as_secs()).unwrap_or(i64::MAX);
            let now = OffsetDateTime::now_utc();
            if let Some(t) = cached.as_ref() {
                if t.check_fresh(now, margin).is_ok() {
                    return Ok(t.clone());
                }
            }
            *cached = None;
            let t = self.fetch().await?;
            // A token that is already inside the margin is used once, not cached.
            if t.check_fresh(OffsetDateTime::now_utc(), margin).is_ok() {
                *cached = Some(t.clone());
            } else {
                t.check_fresh(OffsetDateTime::now_utc(), 0)?;
            }
            Ok(t)
        })
    }
}

/// An unsigned JWT with the given claims (`alg: none`): for the dev CA, which reads claims
/// and does not verify signatures, and for tests. Never accepted by a real Fulcio.
pub fn unsigned_jwt(claims: &Value) -> String {
    let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.{}",
        e(br#"{"alg":"none","typ":"JWT"}"#),
        e(claims.to_string().as_bytes()),
        e(b"unsigned")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_challenge_and_expiry() {
        let t = IdentityToken::parse(&unsigned_jwt(
            &json!({"iss":"https://i","sub":"s","exp": 2_000_000_000}),
        ))
        .unwrap();
        assert_eq!(t.challenge().unwrap(), "s");
        assert_eq!(t.acceptable_sans(), vec!["s".to_string()]);
        let before = OffsetDateTime::from_unix_timestamp(1_999_999_000).unwrap();
        assert!(t.check_fresh(before, 0).is_ok());
        assert!(matches!(
            t.check_fresh(before, 1000),
            Err(TokenError::Expired { .. })
        ));
        assert!(!format!("{t:?}").contains(t.raw()));

        let t = IdentityToken::parse(&unsigned_jwt(
            &json!({"iss":"https://i","sub":"s","email":"a@b","email_verified":false}),
        ))
        .unwrap();
        assert_eq!(t.challenge(), Err(TokenError::EmailNotVerified));
        for bad in ["", "a.b", "a..c", "a.!!!.c"] {
            assert!(matches!(
                IdentityToken::parse(bad),
                Err(TokenError::Malformed(_))
            ));
        }
        assert_eq!(
            IdentityToken::parse(&unsigned_jwt(&json!({"sub":"s"}))).unwrap_err(),
            TokenError::MissingClaim("iss")
        );
    }

    #[test]
    fn expiry_at_the_edges_of_the_clock() {
        let now = OffsetDateTime::from_unix_timestamp(1_999_999_000).unwrap();
        // `exp` comes from the token (anyone's input), the margin from configuration: no
        // value of either may overflow the check.
        let at = |exp: i64| {
            IdentityToken::parse(&unsigned_jwt(
                &json!({"iss":"https://i","sub":"s","exp": exp}),
            ))
            .unwrap()
        };
        assert!(at(i64::MAX).check_fresh(now, i64::MAX).is_err());
        assert!(at(i64::MAX).check_fresh(now, 0).is_ok());
        assert!(at(i64::MAX).check_fresh(now, i64::MIN).is_ok());
        assert!(at(i64::MIN).check_fresh(now, i64::MIN).is_err());
        let Err(TokenError::Expired { expired_at, .. }) = at(i64::MIN).check_fresh(now, 0) else {
            panic!("a token that expired before the epoch is expired");
        };
        assert_eq!(expired_at, i64::MIN.to_string());
    }
}
