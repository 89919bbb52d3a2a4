//! A client for the Signer API: DPoP keys and proofs (RFC 9449 §4.2), client-credentials
//! tokens from an Authority, and the sign calls. Used by `stella signer sign`, the tests and
//! the benchmark.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey};

use crate::jose;

/// A DPoP key pair held by a client.
pub struct DpopKey {
    key: FileKey,
    jwk: Value,
    thumbprint: String,
}

impl DpopKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, String> {
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256).map_err(|e| e.to_string())?;
        Self::from_key(key)
    }

    pub fn from_key(key: FileKey) -> Result<Self, String> {
        let jwk = jose::sign::public_jwk(&key);
        let thumbprint = jose::Jwk::from_value(&jwk)
            .map_err(|e| e.to_string())?
            .thumbprint()
            .to_string();
        Ok(DpopKey {
            key,
            jwk,
            thumbprint,
        })
    }

    /// RFC 7638 thumbprint (the token's `cnf.jkt`).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A proof for `method url`, bound to `access_token` when given (`ath`).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "jti": crate::trace::random_hex(16),
            "htm": method,
            "htu": url,
            "iat": now,
        });
        if let Some(t) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(stella_keys::sha256(t.as_bytes())));
        }
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        self.proof_with_claims(&claims)
    }

    /// A proof with exactly these claims (tests use it to make hostile proofs).
    pub fn proof_with_claims(&self, claims: &Value) -> Result<String, String> {
        self.proof_with(
            &json!({"typ": "dpop+jwt", "alg": jose::sign::alg_of(&self.key), "jwk": self.jwk}),
            claims,
        )
    }

    /// A proof with this header and these claims.
    pub fn proof_with(&self, header: &Value, claims: &Value) -> Result<String, String> {
        jose::sign::compact(&self.key, header, claims).map_err(|e| e.to_string())
    }

    /// The private key (tests: to build hostile JWKs).
    pub fn key(&self) -> &FileKey {
        &self.key
    }
}

/// An access token response.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: Option<u64>,
}

/// OAuth 2.0 client credentials (client_secret_post), optionally DPoP-bound, with RFC 8707
/// `resource` and extra form fields. Retries once with a server nonce if asked to.
pub async fn client_credentials(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    extra: &[(&str, &str)],
    dpop: Option<&DpopKey>,
) -> Result<Token, String> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    form.extend_from_slice(extra);
    let body = form
        .iter()
        .fold(
            url::form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(k, v);
                s
            },
        )
        .finish();
    let mut nonce: Option<String> = None;
    for _ in 0..2 {
        let mut req = http
            .post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(k) = dpop {
            req = req.header("DPoP", k.proof("POST", token_url, None, nonce.as_deref())?);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("token request to {token_url}: {e}"))?;
        let status = resp.status();
        let server_nonce = resp
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("token response is not JSON: {e}"))?;
        if status.is_success() {
            let access_token = v
                .get("access_token")
                .and_then(Value::as_str)
                .ok_or("token response has no access_token")?
                .to_string();
            return Ok(Token {
                access_token,
                token_type: v
                    .get("token_type")
                    .and_then(Value::as_str)
                    .unwrap_or("Bearer")
                    .to_string(),
                expires_in: v.get("expires_in").and_then(Value::as_u64),
            });
        }
        if v.get("error").and_then(Value::as_str) == Some("use_dpop_nonce") && nonce.is_none() {
            if let Some(n) = server_nonce {
                nonce = Some(n);
                continue;
            }
        }
        return Err(format!("token request failed ({status}): {v}"));
    }
    Err("token request failed after a nonce retry".into())
}

/// What a sign call answered.
#[derive(Debug, Clone)]
pub struct SignResponse {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// POST `body` to `base + path` with a DPoP-bound token (a fresh proof per attempt; one
/// retry when the server asks for a nonce).
pub async fn post_dpop(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    dpop: &DpopKey,
    body: &Value,
) -> Result<SignResponse, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let mut nonce: Option<String> = None;
    loop {
        let proof = dpop.proof("POST", &url, Some(token), nonce.as_deref())?;
        let resp = http
            .post(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 401
            && body.get("code").and_then(Value::as_str) == Some("use_dpop_nonce")
            && nonce.is_none()
        {
            if let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
                nonce = Some(n.to_string());
                continue;
            }
        }
        return Ok(SignResponse {
            status,
            body,
            headers,
        });
    }
}
