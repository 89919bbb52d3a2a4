//! DEV ONLY: the development profile (`stella signer serve --dev`).
//!
//! It makes the service runnable with no other system, for the quick start and local
//! experiments — and is refused on anything but a loopback listener:
//! - an embedded **dev Authority**: a fresh P-256 key per start, `GET /dev/authority/jwks`, and
//!   `POST /dev/authority/token` (OAuth client credentials, `client_secret=dev-secret`, a DPoP
//!   proof required) issuing DPoP-bound `at+jwt` access tokens with `aud=signer`,
//!   `scope=signer.sign` and `tid`/`inst` from the form (defaults `dev-tenant`,
//!   `dev-installation`);
//! - an embedded **dev Licensing**: any PoE value starting with `dev-` is an active `dev` plan
//!   (`POST /dev/license/introspect` answers the same for inspection);
//! - a generated **dev signing key** (`dev-signing.key`, unencrypted PKCS#8, mode 0600, and
//!   `dev-signing.pub`) under the data folder, reused across starts so verification keeps
//!   working;
//! - a generated **audit checkpoint key** (`dev-audit.key`, `dev-audit.pub`) when
//!   `audit.checkpoint_key` is unset, so the dev audit log gets signed checkpoints;
//! - scanner release enforcement off unless an allow-list is configured.
//!
//! Nothing here is reachable unless `dev.enabled` is set, and the startup log says so loudly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey, Signer as _};

use crate::config::Config;
use crate::error::ApiError;
use crate::error::StartError;
use crate::jose::{self, Jwk, Jws};
use crate::wire::{json_response, json_status, DevIntrospection, DevLimits, DevToken, OAuthError};

/// The dev Authority's issuer.
pub const DEV_ISSUER: &str = "urn:stella:dev-authority";
/// The dev Authority's client secret (any client id).
pub const DEV_CLIENT_SECRET: &str = "dev-secret";
const DEV_KID: &str = "dev-authority";

/// The embedded dev Authority.
pub struct DevAuthority {
    key: std::sync::Arc<FileKey>,
    jwk_value: Value,
    /// Where the dev signing key's public half is (for `stella verify`).
    pub signing_pub: Option<PathBuf>,
}

impl DevAuthority {
    pub(crate) fn jwk(&self) -> Jwk {
        // Built from our own key: cannot fail.
        Jwk::from_value(&self.jwk_value).unwrap_or_else(|_| unreachable_jwk())
    }

    pub(crate) fn jwks_json(&self) -> Value {
        json!({"keys": [self.jwk_value]})
    }

    /// Issue a DPoP-bound access token.
    pub(crate) fn issue(
        &self,
        client_id: &str,
        tenant: &str,
        installation: &str,
        jkt: &str,
        lifetime: i64,
    ) -> Result<String, jose::sign::JwsError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        jose::sign::compact(
            &self.key,
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": DEV_KID}),
            &json!({
                "iss": DEV_ISSUER, "sub": client_id, "client_id": client_id,
                "aud": "signer", "scope": "signer.sign",
                "iat": now, "nbf": now, "exp": now + lifetime,
                "jti": crate::trace::random_hex(16),
                "tid": tenant, "inst": installation,
                "cnf": {"jkt": jkt},
            }),
        )
    }

    /// The Signer's own identity for keyless signing in the dev profile (tokens with `aud`
    /// `sigstore`, issued in process by this dev Authority).
    pub(crate) fn identity(&self) -> DevIdentity {
        DevIdentity {
            key: self.key.clone(),
        }
    }

    /// Check a DPoP proof sent to the token endpoint; returns the key thumbprint.
    pub(crate) fn check_token_proof(&self, proof: &str) -> Result<String, DevProofError> {
        let jws = Jws::parse(proof)?;
        if jws.header_str("typ") != Some("dpop+jwt") {
            return Err(DevProofError::Typ);
        }
        let jwk = Jwk::from_value(jws.header.get("jwk").unwrap_or(&Value::Null))?;
        jws.verify(&jwk)?;
        if jws.claims.get("htm").and_then(Value::as_str) != Some("POST") {
            return Err(DevProofError::Htm);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let iat = jws
            .claims
            .get("iat")
            .and_then(crate::auth::numeric_date)
            .ok_or(DevProofError::NoIat)?;
        if crate::auth::after(iat, now, 60) || crate::auth::older_than(iat, now, 60) {
            return Err(DevProofError::Stale);
        }
        Ok(jwk.thumbprint().to_string())
    }
}

/// Why the dev Authority refused the DPoP proof of a token request (the OAuth
/// `error_description`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DevProofError {
    /// Not a JWS, or its key or signature is bad.
    #[error("{0}")]
    Jose(#[from] jose::JoseError),
    #[error("DPoP proof `typ` must be dpop+jwt")]
    Typ,
    #[error("DPoP proof `htm` must be POST")]
    Htm,
    #[error("DPoP proof has no valid `iat`")]
    NoIat,
    #[error("DPoP proof `iat` is not recent")]
    Stale,
}

/// The identity (SAN) of the dev profile's keyless certificates.
pub const DEV_KEYLESS_IDENTITY: &str = "signer@dev.stella.invalid";

/// DEV ONLY: the Signer's OIDC identity tokens for keyless signing in the dev profile,
/// signed by the dev Authority's key: `iss` [`DEV_ISSUER`], `aud` `sigstore`, the verified
/// email [`DEV_KEYLESS_IDENTITY`] (the certificate's SAN), ten minutes.
pub(crate) struct DevIdentity {
    key: std::sync::Arc<FileKey>,
}

impl DevIdentity {
    pub(crate) fn token(&self) -> Result<String, jose::sign::JwsError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        jose::sign::compact(
            &self.key,
            &json!({"alg": "ES256", "typ": "JWT", "kid": DEV_KID}),
            &json!({
                "iss": DEV_ISSUER, "sub": "stella-signer", "aud": "sigstore",
                "email": DEV_KEYLESS_IDENTITY, "email_verified": true,
                "iat": now, "nbf": now, "exp": now + 600,
            }),
        )
    }
}

#[allow(clippy::panic)] // our own freshly generated P-256 key always forms a valid JWK
fn unreachable_jwk() -> Jwk {
    panic!("dev Authority JWK is invalid")
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// DEV ONLY: the P-256 key `<stem>.key` (PKCS#8, 0600) and `<stem>.pub` in the dev data
/// folder (`dev.data_dir`, else beside the audit log), generated on first use and reused
/// after; the paths of both.
fn dev_key(cfg: &Config, stem: &str, what: &str) -> Result<(PathBuf, PathBuf), StartError> {
    let dir = cfg.dev.data_dir.clone().unwrap_or_else(|| {
        cfg.audit
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("data"))
    });
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Io(format!("{}: {e}", dir.display())))?;
    let key_path = dir.join(format!("{stem}.key"));
    let pub_path = dir.join(format!("{stem}.pub"));
    if !key_path.exists() {
        let k = FileKey::generate(Algorithm::EcdsaP256Sha256)
            .map_err(|e| StartError::Config(format!("dev {what}: {e}")))?;
        let pem = k
            .to_pkcs8_pem()
            .map_err(|e| StartError::Config(format!("dev {what}: {e}")))?;
        write_private(&key_path, pem.as_bytes())
            .map_err(|e| StartError::Io(format!("{}: {e}", key_path.display())))?;
        std::fs::write(&pub_path, k.public_key().to_pem())
            .map_err(|e| StartError::Io(format!("{}: {e}", pub_path.display())))?;
        tracing::warn!(path = %key_path.display(), key_id = %k.key_id(), "generated a DEV {what}");
    }
    Ok((key_path, pub_path))
}

/// Adjust `cfg` for the dev profile and make the dev Authority.
pub(crate) fn prepare(cfg: &mut Config) -> Result<DevAuthority, StartError> {
    let addr: SocketAddr =
        cfg.server.listen.parse().map_err(|e| {
            StartError::Config(format!("server.listen {:?}: {e}", cfg.server.listen))
        })?;
    if !addr.ip().is_loopback() {
        return Err(StartError::Config(format!(
            "the dev profile serves an open token endpoint and may only listen on loopback, not {addr}"
        )));
    }
    // Also checked by `Config::validate`; repeated here for configurations built in code.
    let real = cfg.real_services();
    if !real.is_empty() {
        return Err(StartError::Config(format!(
            "the dev profile refuses a configuration with real keys or services: {}",
            real.join(", ")
        )));
    }
    tracing::warn!("DEV PROFILE: embedded dev Authority and Licensing, generated dev signing key. NEVER USE IN PRODUCTION.");
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256)
        .map_err(|e| StartError::Config(format!("dev Authority key: {e}")))?;
    let mut jwk_value = jose::sign::public_jwk(&key);
    jwk_value["kid"] = json!(DEV_KID);
    jwk_value["alg"] = json!("ES256");
    jwk_value["use"] = json!("sig");
    cfg.authority.issuer = DEV_ISSUER.into();
    cfg.authority.jwks_url = None;
    cfg.authority.jwks_file = None;
    let signing_pub = {
        let (key_path, pub_path) = dev_key(cfg, "dev-signing", "signing key")?;
        cfg.signing.keys = vec![key_path.display().to_string()];
        // The dev key signs for any tenant the dev Authority names.
        cfg.signing.default_keys_for_unlisted_tenants = true;
        Some(pub_path)
    };
    if cfg.release.trusted_scanner_digests.is_empty() {
        cfg.release.enforce = false;
    }
    // Keyless is the dev profile's default mode (the dev-only in-process CA and TSA), the
    // dev key stays available with `signingMode: file`.
    if cfg.keyless.issuer.is_none() {
        cfg.keyless.issuer = Some("dev".into());
    }
    if cfg.keyless.dev_dir.is_none() {
        cfg.keyless.dev_dir = cfg.dev.data_dir.clone().or_else(|| {
            cfg.signing
                .keys
                .first()
                .and_then(|k| Path::new(k).parent().map(Path::to_path_buf))
        });
    }
    if cfg.signing.keyless == crate::config::KeylessUse::Off {
        cfg.signing.keyless = crate::config::KeylessUse::Default;
    }
    Ok(DevAuthority {
        key: std::sync::Arc::new(key),
        jwk_value,
        signing_pub,
    })
}

/// DEV ONLY: when no audit checkpoint key is configured, generate one (`dev-audit.key`, 0600,
/// and `dev-audit.pub`) beside the dev signing key and use it, so the dev profile writes
/// signed checkpoints of the audit chain like a production setup should.
pub(crate) fn audit_checkpoint_key(cfg: &mut Config) -> Result<(), StartError> {
    if cfg.audit.checkpoint_key.is_some() {
        return Ok(());
    }
    let (key_path, pub_path) = dev_key(cfg, "dev-audit", "audit checkpoint key")?;
    cfg.audit.checkpoint_key = Some(key_path.display().to_string());
    if cfg.audit.checkpoint_public_key.is_none() {
        cfg.audit.checkpoint_public_key = Some(pub_path);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// DEV ONLY: the embedded Authority's and Licensing's routes, mounted by `crate::api::router`
// in the dev profile only.
// ------------------------------------------------------------------------------------------

/// `GET /dev/authority/jwks`, `POST /dev/authority/token`, `POST /dev/license/introspect`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(dev: Arc<DevAuthority>) -> Router<S> {
    Router::new()
        .route("/dev/authority/jwks", get(jwks))
        .route("/dev/authority/token", post(token))
        .route("/dev/license/introspect", post(introspect))
        .with_state(dev)
}

async fn jwks(State(dev): State<Arc<DevAuthority>>) -> Response {
    json_response(&dev.jwks_json())
}

/// An OAuth error answer (`400`).
fn oauth_error(error: &str, error_description: &str) -> Response {
    json_status(
        StatusCode::BAD_REQUEST,
        &OAuthError {
            error,
            error_description,
        },
    )
}

async fn token(
    State(dev): State<Arc<DevAuthority>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "only client_credentials");
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id.is_empty()
        || form.get("client_secret").map(String::as_str) != Some(DEV_CLIENT_SECRET)
    {
        return oauth_error(
            "invalid_client",
            "dev Authority: any client_id with client_secret=dev-secret",
        );
    }
    if headers.get_all("dpop").iter().nth(1).is_some() {
        return oauth_error("invalid_dpop_proof", "send one DPoP header");
    }
    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return oauth_error(
            "invalid_dpop_proof",
            "the dev Authority issues DPoP-bound tokens only: send a DPoP proof",
        );
    };
    let jkt = match dev.check_token_proof(proof) {
        Ok(j) => j,
        Err(e) => return oauth_error("invalid_dpop_proof", &e.to_string()),
    };
    let tid = form.get("tid").map(String::as_str).unwrap_or("dev-tenant");
    let inst = form
        .get("inst")
        .map(String::as_str)
        .unwrap_or("dev-installation");
    match dev.issue(&client_id, tid, inst, &jkt, 600) {
        Ok(t) => json_response(&DevToken {
            access_token: t,
            token_type: "DPoP",
            expires_in: 600,
            scope: "signer.sign",
        }),
        Err(e) => ApiError::unavailable("token issuance failed", e.to_string()).into_response(),
    }
}

async fn introspect(body: bytes::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let poe = v.get("value").and_then(Value::as_str).unwrap_or("");
    if !poe.starts_with("dev-") {
        return json_response(&DevIntrospection::Inactive {
            active: false,
            reason: "dev Licensing accepts PoE values starting with dev-",
        });
    }
    let e = crate::poe::dev_entitlement();
    json_response(&DevIntrospection::Active {
        active: true,
        license_id: e.license_id,
        limits: DevLimits {
            qps: e.limits.qps,
            burst: e.limits.burst,
            max_concurrent: e.limits.max_concurrent,
            max_artifact_bytes: e.limits.max_artifact_bytes,
        },
        plan: e.limits.plan,
    })
}

/// DEV ONLY: identity tokens from the dev profile's embedded Authority (aud `sigstore`).
pub(crate) struct DevTokens(pub(crate) std::sync::Arc<DevIdentity>);

impl stella_keyless::IdentityTokenSource for DevTokens {
    fn token(
        &self,
    ) -> stella_keyless::BoxFuture<
        '_,
        Result<stella_keyless::token::IdentityToken, stella_keyless::token::TokenError>,
    > {
        Box::pin(async move {
            let raw = self
                .0
                .token()
                .map_err(|e| stella_keyless::token::TokenError::Source(e.to_string()))?;
            stella_keyless::token::IdentityToken::parse(&raw)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::DpopKey;

    const URL: &str = "http://127.0.0.1:8080/dev/authority/token";

    fn authority() -> DevAuthority {
        DevAuthority {
            key: std::sync::Arc::new(FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap()),
            jwk_value: Value::Null,
            signing_pub: None,
        }
    }

    #[test]
    fn token_proofs_are_checked_with_typed_refusals() {
        let dev = authority();
        let key = DpopKey::generate().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // A fresh POST proof: its key's thumbprint binds the token.
        let ok = dev
            .check_token_proof(&key.proof("POST", URL, None, None).unwrap())
            .unwrap();
        assert_eq!(ok, key.thumbprint());
        let refused = |proof: String| dev.check_token_proof(&proof).unwrap_err();
        assert!(matches!(
            refused(key.proof("GET", URL, None, None).unwrap()),
            DevProofError::Htm
        ));
        assert!(matches!(
            refused(
                key.proof_with_claims(&json!({"htm": "POST", "htu": URL, "iat": now - 600}))
                    .unwrap()
            ),
            DevProofError::Stale
        ));
        assert!(matches!(
            refused(
                key.proof_with_claims(&json!({"htm": "POST", "htu": URL}))
                    .unwrap()
            ),
            DevProofError::NoIat
        ));
        let jwt = key
            .proof_with(
                &json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()}),
                &json!({"htm": "POST", "iat": now}),
            )
            .unwrap();
        assert!(matches!(refused(jwt), DevProofError::Typ));
        let e = refused("not.a.jws".into());
        assert!(matches!(e, DevProofError::Jose(_)), "{e}");
    }
}
