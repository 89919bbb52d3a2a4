//! The HTTP exchange shared by the Fulcio, TSA and Rekor clients: timeouts, and retries with
//! exponential backoff (and jitter) on what may pass — connection failures, timeouts, 5xx and
//! 429 — and none on other 4xx answers, which a retry cannot change. After the last attempt a
//! retryable failure is [`UpstreamError::Unavailable`].

use std::time::Duration;

use crate::error::{Service, UpstreamError};

/// Timeouts and retries of one upstream service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Whole-request timeout (connect, send, read), per attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Backoff before the first retry; doubled each time, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Largest response body read (a certificate chain or log entry is a few KiB).
const MAX_BODY: usize = 4 << 20;

pub(crate) fn client(
    service: Service,
    url: &str,
    o: &HttpOptions,
) -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .timeout(o.timeout)
        .connect_timeout(o.connect_timeout)
        .user_agent(concat!("stella-keyless/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::InvalidResponse {
            service,
            url: url.to_string(),
            reason: format!("cannot build the HTTP client: {e}"),
        })
}

/// A full `http(s)://` URL; other schemes are refused up front.
pub(crate) fn check_url(service: Service, url: &str) -> Result<String, UpstreamError> {
    let u = url.trim_end_matches('/');
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(UpstreamError::Rejected {
            service,
            url: url.to_string(),
            status: 0,
            message: "the URL must start with https:// (or http:// for a local service)".into(),
        });
    }
    Ok(u.to_string())
}

fn backoff(o: &HttpOptions, attempt: u32) -> Duration {
    let base = o
        .initial_backoff
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(o.max_backoff);
    let mut r = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut r);
    // Up to +50 % jitter, so replicas that failed together do not retry together.
    let jitter = base.mul_f64(f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) / 2.0);
    base + jitter
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().replace(['\n', '\r'], " ")
}

/// One HTTP request to an upstream service.
pub(crate) struct Call<'a> {
    pub(crate) service: Service,
    pub(crate) method: reqwest::Method,
    pub(crate) url: &'a str,
    pub(crate) content_type: &'a str,
    pub(crate) accept: &'a str,
    pub(crate) body: Option<&'a [u8]>,
    /// A 409 answer is returned (Rekor: the entry exists) rather than refused.
    pub(crate) conflict_ok: bool,
}

/// An answer: status, body, `Location`.
pub(crate) type Answer = (u16, Vec<u8>, Option<String>);

/// Send `call`, retried as described above. Returns status and body of a 2xx answer (or of
/// a 409 when `conflict_ok`).
pub(crate) async fn send(
    client: &reqwest::Client,
    call: Call<'_>,
    o: &HttpOptions,
) -> Result<Answer, UpstreamError> {
    let Call {
        service,
        method,
        url,
        content_type,
        accept,
        body,
        conflict_ok,
    } = call;
    let mut last = String::new();
    for attempt in 0..=o.retries {
        if attempt > 0 {
            tokio::time::sleep(backoff(o, attempt - 1)).await;
        }
        let mut req = client
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT, accept);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b.to_vec());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = if e.is_timeout() {
                    format!("timed out after {:?}", o.timeout)
                } else if e.is_connect() {
                    "connection failed".to_string()
                } else {
                    format!("request failed: {e}")
                };
                continue;
            }
        };
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(len) = resp.content_length() {
            if len > MAX_BODY as u64 {
                return Err(UpstreamError::InvalidResponse {
                    service,
                    url: url.to_string(),
                    reason: format!("the response is {len} bytes, above {MAX_BODY}"),
                });
            }
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                last = if e.is_timeout() {
                    format!("timed out reading the response after {:?}", o.timeout)
                } else {
                    format!("reading the response failed: {e}")
                };
                continue;
            }
        };
        if bytes.len() > MAX_BODY {
            return Err(UpstreamError::InvalidResponse {
                service,
                url: url.to_string(),
                reason: format!("the response is above {MAX_BODY} bytes"),
            });
        }
        match status {
            200..=299 => return Ok((status, bytes.to_vec(), location)),
            409 if conflict_ok => return Ok((status, bytes.to_vec(), location)),
            429 | 500..=599 => {
                last = format!("HTTP {status}: {}", snippet(&bytes));
            }
            _ => {
                return Err(UpstreamError::Rejected {
                    service,
                    url: url.to_string(),
                    status,
                    message: snippet(&bytes),
                })
            }
        }
    }
    Err(UpstreamError::Unavailable {
        service,
        url: url.to_string(),
        reason: format!("{last} (after {} attempts)", o.retries + 1),
    })
}
