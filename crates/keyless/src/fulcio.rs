//! Fulcio v2 client: `POST /api/v2/signingCert` with the identity token and the ephemeral
//! public key with its proof of possession (the key's signature over the token's challenge,
//! [`crate::IdentityToken::challenge`]). The answer must carry the chain with an embedded
//! SCT (`signedCertificateEmbeddedSct`; a detached SCT is refused), and the leaf is checked
//! by [`crate::issuer::check_chain`] against the configured trusted root before use.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stella_sigstore::TrustedRoot;
use time::OffsetDateTime;

use crate::error::{Service, UpstreamError};
use crate::http::{self, HttpOptions};
use crate::issuer::{check_chain, CertificateIssuer, CertificateRequest, IssuedCertificate};
use crate::UpstreamFuture;

/// A Fulcio instance.
#[derive(Debug, Clone)]
pub struct FulcioClient {
    base: String,
    client: reqwest::Client,
    options: HttpOptions,
    root: Arc<TrustedRoot>,
}

impl FulcioClient {
    /// `base_url` like `https://fulcio.sigstore.dev`; `root` holds the Fulcio CA and CT logs
    /// the returned certificates must chain to.
    pub fn new(
        base_url: &str,
        root: Arc<TrustedRoot>,
        options: HttpOptions,
    ) -> Result<Self, UpstreamError> {
        let base = http::check_url(Service::Fulcio, base_url)?;
        Ok(FulcioClient {
            client: http::client(Service::Fulcio, &base, &options)?,
            base,
            options,
            root,
        })
    }

    fn endpoint(&self) -> String {
        format!("{}/api/v2/signingCert", self.base)
    }

    async fn issue_inner(
        &self,
        req: &CertificateRequest<'_>,
    ) -> Result<IssuedCertificate, UpstreamError> {
        let url = self.endpoint();
        let body = json!({
            "credentials": {"oidcIdentityToken": req.token.raw()},
            "publicKeyRequest": {
                "publicKey": {"algorithm": "ECDSA", "content": req.public_key.to_pem()},
                "proofOfPossession": base64::engine::general_purpose::STANDARD.encode(req.proof_of_possession),
            }
        });
        let body = zeroize::Zeroizing::new(body.to_string().into_bytes());
        let (_, resp, _) = http::send(
            &self.client,
            http::Call {
                service: Service::Fulcio,
                method: reqwest::Method::POST,
                url: &url,
                content_type: "application/json",
                accept: "application/json",
                body: Some(&body),
                conflict_ok: false,
            },
            &self.options,
        )
        .await?;
        let chain = parse_chain(&resp).map_err(|e| UpstreamError::InvalidResponse {
            service: Service::Fulcio,
            url: url.clone(),
            reason: e.to_string(),
        })?;
        check_chain(
            Service::Fulcio,
            &chain,
            req,
            &self.root,
            OffsetDateTime::now_utc(),
        )
    }
}

/// Why a `signingCert` answer cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ChainError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("signedCertificateEmbeddedSct.chain.certificates is missing")]
    MissingCertificates,
    #[error(
        "Fulcio answered with a detached SCT; only certificates with an embedded SCT are accepted"
    )]
    DetachedSct,
    #[error("no signedCertificateEmbeddedSct in the answer")]
    NoEmbeddedSct,
    #[error("a chain entry is not a PEM string")]
    NotPemString,
    #[error("PEM: {0}")]
    Pem(pem::PemError),
    #[error("unexpected PEM block {0}")]
    UnexpectedBlock(String),
    #[error("the chain is empty")]
    Empty,
}

/// The DER certificates of a `signingCert` answer (leaf first).
pub(crate) fn parse_chain(resp: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let v: Value = serde_json::from_slice(resp).map_err(ChainError::NotJson)?;
    let certs = match (
        v.get("signedCertificateEmbeddedSct"),
        v.get("signedCertificateDetachedSct"),
    ) {
        (Some(e), _) => e
            .get("chain")
            .and_then(|c| c.get("certificates"))
            .and_then(Value::as_array)
            .ok_or(ChainError::MissingCertificates)?,
        (None, Some(_)) => return Err(ChainError::DetachedSct),
        (None, None) => return Err(ChainError::NoEmbeddedSct),
    };
    let mut out = Vec::new();
    for c in certs {
        let text = c.as_str().ok_or(ChainError::NotPemString)?;
        for block in pem::parse_many(text).map_err(ChainError::Pem)? {
            if block.tag() != "CERTIFICATE" {
                return Err(ChainError::UnexpectedBlock(block.tag().to_string()));
            }
            out.push(block.into_contents());
        }
    }
    if out.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(out)
}

impl CertificateIssuer for FulcioClient {
    fn issue<'a>(&'a self, req: CertificateRequest<'a>) -> UpstreamFuture<'a, IssuedCertificate> {
        Box::pin(async move { self.issue_inner(&req).await })
    }

    fn describe(&self) -> String {
        format!("Fulcio {}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_embedded_sct_are_refused() {
        assert!(parse_chain(br#"{"signedCertificateDetachedSct":{}}"#)
            .unwrap_err()
            .to_string()
            .contains("detached SCT"));
        assert!(matches!(parse_chain(b"{}"), Err(ChainError::NoEmbeddedSct)));
        assert!(matches!(parse_chain(b"["), Err(ChainError::NotJson(_))));
        assert!(matches!(
            parse_chain(br#"{"signedCertificateEmbeddedSct":{"chain":{"certificates":[]}}}"#),
            Err(ChainError::Empty)
        ));
    }
}
