//! RFC 3161 over HTTP: `POST` a DER `TimeStampReq` (`application/timestamp-query`, SHA-256
//! imprint, a random nonce, certReq) to the configured URL (Sigstore's TSA:
//! `…/api/v1/timestamp`). The `TimeStampResp` must be granted, stamp our digest, echo our
//! nonce, and its CMS signature must verify (`stella_x509::tsp::token_from_response`); it is
//! put in the bundle as received. A TSA that cannot be reached is
//! [`UpstreamError::Unavailable`] (the Signer answers 503 `upstream_unavailable`).

use crate::error::{Service, UpstreamError};
use crate::http::{self, HttpOptions};
use crate::timestamp::Timestamper;
use crate::UpstreamFuture;

/// A TSA reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpTsa {
    url: String,
    client: reqwest::Client,
    options: HttpOptions,
}

impl HttpTsa {
    /// `url` is the full endpoint (e.g. `https://timestamp.sigstore.dev/api/v1/timestamp`).
    pub fn new(url: &str, options: HttpOptions) -> Result<Self, UpstreamError> {
        let url = http::check_url(Service::Tsa, url)?;
        Ok(HttpTsa {
            client: http::client(Service::Tsa, &url, &options)?,
            url,
            options,
        })
    }

    /// The endpoint (as checked by [`HttpTsa::new`]: no trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stamp a SHA-256 digest: the checked `TimeStampResp` (DER), as received. Keyless
    /// signing stamps the signature's digest ([`Timestamper::timestamp`]); a mirror bundle's
    /// time anchor stamps the manifest's (`stella_mirror::tsa`).
    pub async fn stamp_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, UpstreamError> {
        let digest = *digest;
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| UpstreamError::InvalidResponse {
            service: Service::Tsa,
            url: self.url.clone(),
            reason: "no randomness for the nonce".into(),
        })?;
        // A first byte in 1..=0x7f: the nonce is a positive INTEGER whose DER form keeps all
        // 8 bytes. (With a zero first byte, `tsp::request` would encode a non-canonical
        // INTEGER; the TSA echoes it and the strict TSTInfo parser refuses the token.)
        nonce[0] = (nonce[0] & 0x7f) | 0x01;
        let req = stella_x509::tsp::request(&digest, &nonce).map_err(|e| {
            UpstreamError::InvalidResponse {
                service: Service::Tsa,
                url: self.url.clone(),
                reason: e.to_string(),
            }
        })?;
        let (_, resp, _) = http::send(
            &self.client,
            http::Call {
                service: Service::Tsa,
                method: reqwest::Method::POST,
                url: &self.url,
                content_type: "application/timestamp-query",
                accept: "application/timestamp-reply",
                body: Some(&req),
                conflict_ok: false,
            },
            &self.options,
        )
        .await?;
        stella_x509::tsp::token_from_response(&resp, &digest, &nonce)
            .map_err(|e| UpstreamError::untrusted(Service::Tsa, e.to_string()))?;
        Ok(resp)
    }
}

impl Timestamper for HttpTsa {
    fn timestamp<'a>(&'a self, signature: &'a [u8]) -> UpstreamFuture<'a, Vec<u8>> {
        Box::pin(async move { self.stamp_digest(&stella_keys::sha256(signature)).await })
    }

    fn describe(&self) -> String {
        format!("TSA {}", self.url)
    }
}
