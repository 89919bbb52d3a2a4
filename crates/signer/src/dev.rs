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

use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey, Signer as _};

use crate::app::StartError;
use crate::config::Config;
use crate::jose::{self, Jwk, Jws};

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
    pub fn jwk(&self) -> Jwk {
        // Built from our own key: cannot fail.
        Jwk::from_value(&self.jwk_value).unwrap_or_else(|_| unreachable_jwk())
    }

    pub fn jwks_json(&self) -> Value {
        json!({"keys": [self.jwk_value]})
    }

    /// Issue a DPoP-bound access token.
    pub fn issue(
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
    pub fn identity(&self) -> DevIdentity {
        DevIdentity {
            key: self.key.clone(),
        }
    }

    /// Check a DPoP proof sent to the token endpoint; returns the key thumbprint.
    pub fn check_token_proof(&self, proof: &str) -> Result<String, String> {
        let jws = Jws::parse(proof).map_err(|e| e.to_string())?;
        if jws.header_str("typ") != Some("dpop+jwt") {
            return Err("DPoP proof `typ` must be dpop+jwt".into());
        }
        let jwk = Jwk::from_value(jws.header.get("jwk").unwrap_or(&Value::Null))
            .map_err(|e| e.to_string())?;
        jws.verify(&jwk).map_err(|e| e.to_string())?;
        if jws.claims.get("htm").and_then(Value::as_str) != Some("POST") {
            return Err("DPoP proof `htm` must be POST".into());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let iat = jws
            .claims
            .get("iat")
            .and_then(crate::auth::numeric_date)
            .ok_or("DPoP proof has no valid `iat`")?;
        if crate::auth::after(iat, now, 60) || crate::auth::older_than(iat, now, 60) {
            return Err("DPoP proof `iat` is not recent".into());
        }
        Ok(jwk.thumbprint().to_string())
    }
}

/// The identity (SAN) of the dev profile's keyless certificates.
pub const DEV_KEYLESS_IDENTITY: &str = "signer@dev.stella.invalid";

/// DEV ONLY: the Signer's OIDC identity tokens for keyless signing in the dev profile,
/// signed by the dev Authority's key: `iss` [`DEV_ISSUER`], `aud` `sigstore`, the verified
/// email [`DEV_KEYLESS_IDENTITY`] (the certificate's SAN), ten minutes.
pub struct DevIdentity {
    key: std::sync::Arc<FileKey>,
}

impl DevIdentity {
    pub fn token(&self) -> Result<String, jose::sign::JwsError> {
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

/// Adjust `cfg` for the dev profile and make the dev Authority.
pub fn prepare(cfg: &mut Config) -> Result<DevAuthority, StartError> {
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
        let dir = cfg.dev.data_dir.clone().unwrap_or_else(|| {
            cfg.audit
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("data"))
        });
        std::fs::create_dir_all(&dir)
            .map_err(|e| StartError::Io(format!("{}: {e}", dir.display())))?;
        let key_path = dir.join("dev-signing.key");
        let pub_path = dir.join("dev-signing.pub");
        if !key_path.exists() {
            let k = FileKey::generate(Algorithm::EcdsaP256Sha256)
                .map_err(|e| StartError::Config(format!("dev signing key: {e}")))?;
            let pem = k
                .to_pkcs8_pem()
                .map_err(|e| StartError::Config(format!("dev signing key: {e}")))?;
            write_private(&key_path, pem.as_bytes())
                .map_err(|e| StartError::Io(format!("{}: {e}", key_path.display())))?;
            std::fs::write(&pub_path, k.public_key().to_pem())
                .map_err(|e| StartError::Io(format!("{}: {e}", pub_path.display())))?;
            tracing::warn!(path = %key_path.display(), key_id = %k.key_id(), "generated a DEV signing key");
        }
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
    if cfg.signing.keyless == crate::keyless::KeylessUse::Off {
        cfg.signing.keyless = crate::keyless::KeylessUse::Default;
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
pub fn audit_checkpoint_key(cfg: &mut Config) -> Result<(), StartError> {
    if cfg.audit.checkpoint_key.is_some() {
        return Ok(());
    }
    let dir = cfg.dev.data_dir.clone().unwrap_or_else(|| {
        cfg.audit
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("data"))
    });
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Io(format!("{}: {e}", dir.display())))?;
    let key_path = dir.join("dev-audit.key");
    let pub_path = dir.join("dev-audit.pub");
    if !key_path.exists() {
        let k = FileKey::generate(Algorithm::EcdsaP256Sha256)
            .map_err(|e| StartError::Config(format!("dev audit checkpoint key: {e}")))?;
        let pem = k
            .to_pkcs8_pem()
            .map_err(|e| StartError::Config(format!("dev audit checkpoint key: {e}")))?;
        write_private(&key_path, pem.as_bytes())
            .map_err(|e| StartError::Io(format!("{}: {e}", key_path.display())))?;
        std::fs::write(&pub_path, k.public_key().to_pem())
            .map_err(|e| StartError::Io(format!("{}: {e}", pub_path.display())))?;
        tracing::warn!(path = %key_path.display(), key_id = %k.key_id(), "generated a DEV audit checkpoint key");
    }
    cfg.audit.checkpoint_key = Some(key_path.display().to_string());
    if cfg.audit.checkpoint_public_key.is_none() {
        cfg.audit.checkpoint_public_key = Some(pub_path);
    }
    Ok(())
}
