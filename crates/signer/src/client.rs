//! A client for the Signer API: DPoP keys and proofs (RFC 9449 §4.2), client-credentials
//! tokens from an Authority, and the sign calls. Used by `stella signer sign`, the tests and
//! the benchmark.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey};

use crate::jose;

/// Why a client-side step failed: making a key or proof, or talking to the Authority or the
/// Signer. Messages name the URL and what was wrong with the answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A DPoP key could not be generated.
    #[error("cannot generate a DPoP key: {0}")]
    Key(#[from] stella_keys::KeyError),
    /// The key's public JWK could not be read back (to take its thumbprint).
    #[error("the DPoP key's JWK: {0}")]
    Jwk(#[from] jose::JoseError),
    /// A proof could not be signed.
    #[error("cannot sign a DPoP proof: {0}")]
    Proof(#[from] jose::sign::JwsError),
    /// The request did not get an answer.
    #[error("{what} {url}: {source}")]
    Transport {
        what: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint answered something that is not JSON.
    #[error("token response is not JSON: {0}")]
    NotJson(#[source] reqwest::Error),
    /// A successful token response without `access_token`.
    #[error("token response has no access_token")]
    NoAccessToken,
    /// The token endpoint refused.
    #[error("token request failed ({status}): {body}")]
    Refused {
        status: reqwest::StatusCode,
        body: Value,
    },
    /// The token endpoint asked for a nonce again after the retry with one.
    #[error("token request failed after a nonce retry")]
    NonceRetry,
    /// A proof's claims could not be written as JSON.
    #[error("cannot encode the DPoP proof's claims: {0}")]
    Claims(#[source] serde_json::Error),
}

/// A DPoP key pair held by a client.
pub struct DpopKey {
    key: FileKey,
    jwk: Value,
    thumbprint: String,
    /// The base64url of [`DpopKey::proof`]'s JWS header (the same for every proof).
    header_b64: String,
    /// The access token the last proof was bound to, and its `ath`: a client sends one token
    /// many times, so it is hashed once, not per proof.
    last_ath: std::sync::Mutex<Option<(String, String)>>,
}

/// The claims of [`DpopKey::proof`], members in sorted order: the same JSON text as the
/// `serde_json::Value` object of them (whose keys serialise sorted).
#[derive(serde::Serialize)]
struct ProofClaims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    htm: &'a str,
    htu: &'a str,
    iat: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl DpopKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, ClientError> {
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256)?;
        Self::from_key(key)
    }

    pub(crate) fn from_key(key: FileKey) -> Result<Self, ClientError> {
        let jwk = jose::sign::public_jwk(&key);
        let thumbprint = jose::Jwk::from_value(&jwk)?.thumbprint().to_string();
        let header_b64 = URL_SAFE_NO_PAD.encode(Self::header(&key, &jwk).to_string());
        Ok(DpopKey {
            key,
            jwk,
            thumbprint,
            header_b64,
            last_ath: std::sync::Mutex::new(None),
        })
    }

    /// The JWS header of this key's proofs.
    fn header(key: &FileKey, jwk: &Value) -> Value {
        json!({"typ": "dpop+jwt", "alg": jose::sign::alg_of(key), "jwk": jwk})
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
    ) -> Result<String, ClientError> {
        let claims = ProofClaims {
            ath: access_token.map(|t| self.ath(t)),
            htm: method,
            htu: url,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            jti: crate::trace::random_hex(16),
            nonce,
        };
        let claims = serde_json::to_vec(&claims).map_err(ClientError::Claims)?;
        Ok(jose::sign::compact_encoded(
            &self.key,
            &self.header_b64,
            &claims,
        )?)
    }

    /// `ath` of `access_token`: base64url(SHA-256(token)), remembered for the last token.
    fn ath(&self, access_token: &str) -> String {
        let mut last = self.last_ath.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, ath)) = last.as_ref() {
            if token == access_token {
                return ath.clone();
            }
        }
        let ath = URL_SAFE_NO_PAD.encode(stella_keys::sha256(access_token.as_bytes()));
        *last = Some((access_token.to_string(), ath.clone()));
        ath
    }

    /// A proof with exactly these claims (tests use it to make hostile proofs).
    pub fn proof_with_claims(&self, claims: &Value) -> Result<String, ClientError> {
        self.proof_with(&Self::header(&self.key, &self.jwk), claims)
    }

    /// A proof with this header and these claims.
    pub fn proof_with(&self, header: &Value, claims: &Value) -> Result<String, ClientError> {
        Ok(jose::sign::compact(&self.key, header, claims)?)
    }
}

/// An access token response.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: String,
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
) -> Result<Token, ClientError> {
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
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            what: "token request to",
            url: token_url.to_string(),
            source,
        })?;
        let status = resp.status();
        let server_nonce = resp
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = resp.json().await.map_err(ClientError::NotJson)?;
        if status.is_success() {
            let access_token = v
                .get("access_token")
                .and_then(Value::as_str)
                .ok_or(ClientError::NoAccessToken)?
                .to_string();
            return Ok(Token { access_token });
        }
        if v.get("error").and_then(Value::as_str) == Some("use_dpop_nonce") && nonce.is_none() {
            if let Some(n) = server_nonce {
                nonce = Some(n);
                continue;
            }
        }
        return Err(ClientError::Refused { status, body: v });
    }
    Err(ClientError::NonceRetry)
}

/// What a sign call answered.
#[derive(Debug, Clone)]
pub struct SignResponse {
    pub status: u16,
    pub body: Value,
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
) -> Result<SignResponse, ClientError> {
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
            .map_err(|source| ClientError::Transport {
                what: "POST",
                url: url.clone(),
                source,
            })?;
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
        return Ok(SignResponse { status, body });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The part of a compact JWS at `i`, decoded.
    fn part(jws: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(i).unwrap())
            .unwrap()
    }

    #[test]
    fn proofs_are_the_bytes_of_the_value_objects_and_verify() {
        let key = DpopKey::generate().unwrap();
        let url = "https://signer.example/api/v1/signer/sign/dsse?a=\"b\"";
        for (token, nonce) in [
            (None, None),
            (Some("tok.en"), None),
            (Some("tok.en"), Some("n\u{e9}\\once")),
            // Another token, then the first again: `ath` follows the token (it is
            // remembered for the last one only).
            (Some("other.token"), None),
            (Some("tok.en"), None),
            (None, None),
            (Some("tok.en"), None),
        ] {
            let proof = key.proof("POST", url, token, nonce).unwrap();
            // The header as the key's Value object writes it.
            assert_eq!(
                part(&proof, 0),
                DpopKey::header(&key.key, &key.jwk).to_string().into_bytes()
            );
            // The claims as a Value object of them writes them (keys sorted), with the
            // members asked for.
            let claims = part(&proof, 1);
            let v: Value = serde_json::from_slice(&claims).unwrap();
            assert_eq!(v.to_string().into_bytes(), claims);
            assert_eq!(v["htm"], "POST");
            assert_eq!(v["htu"], url);
            assert_eq!(v["jti"].as_str().unwrap().len(), 32);
            assert!(v["iat"].is_i64());
            assert_eq!(
                v.get("ath").and_then(Value::as_str).map(str::to_string),
                token.map(|t| URL_SAFE_NO_PAD.encode(stella_keys::sha256(t.as_bytes())))
            );
            assert_eq!(v.get("nonce").and_then(Value::as_str), nonce);
            let members = 4 + usize::from(token.is_some()) + usize::from(nonce.is_some());
            assert_eq!(v.as_object().unwrap().len(), members);
            // And it verifies under the key's JWK.
            let jws = jose::Jws::parse(&proof).unwrap();
            jws.verify(&jose::Jwk::from_value(key.jwk()).unwrap())
                .unwrap();
        }
    }
}
