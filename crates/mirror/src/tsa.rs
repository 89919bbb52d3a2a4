//! A time stamp authority over HTTP for bundle time anchors (`mirror sign/anchor --tsa-url`).
//!
//! One RFC 3161 client serves keyless signing and bundle anchors: this is
//! [`stella_keyless::tsa::HttpTsa`] (request with a random nonce, `POST`
//! `application/timestamp-query`, the `TimeStampResp` checked: granted, our imprint, our nonce,
//! a CMS signature that verifies), driven by a current-thread runtime so the blocking bundle
//! code can call it. Its failures are [`stella_keyless::UpstreamError`]s, wrapped as
//! [`Error::Timestamp`]: unreachable, timed out, 5xx or 429 is `Unavailable` (retryable), any
//! other 4xx `Rejected`, an answer that does not check `Untrusted` or `InvalidResponse`.
//!
//! Blocking: do not call [`HttpTimeStamper::stamp`] from inside an async runtime.

use std::fmt;
use std::time::Duration;

use stella_keyless::tsa::HttpTsa;
use stella_keyless::HttpOptions;

use crate::anchor::{self, TimeStamper};
use crate::error::{Error, Result};

/// A TSA reached over HTTP, as an [`anchor::TimeStamper`].
pub struct HttpTimeStamper {
    tsa: HttpTsa,
    /// The URL as given: the anchor's `source`.
    source: String,
}

impl fmt::Debug for HttpTimeStamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTimeStamper")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl HttpTimeStamper {
    /// `url`: the TSA endpoint (`http(s)://`); `options`: timeouts and retries.
    pub fn new(url: &str, options: HttpOptions) -> Result<Self> {
        Ok(HttpTimeStamper {
            tsa: HttpTsa::new(url, options)?,
            source: url.to_string(),
        })
    }

    /// The options of a bundle anchor: one attempt (the operator re-runs `mirror anchor`),
    /// `timeout` for connecting and for the whole exchange.
    pub fn single_attempt(timeout: Duration) -> HttpOptions {
        HttpOptions {
            timeout,
            connect_timeout: timeout,
            retries: 0,
            ..HttpOptions::default()
        }
    }
}

impl TimeStamper for HttpTimeStamper {
    fn source(&self) -> String {
        self.source.clone()
    }

    fn stamp(&self, sha256: &[u8; 32]) -> Result<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::input(format!("cannot start the HTTP client: {e}")))?;
        let resp = rt.block_on(self.tsa.stamp_digest(sha256))?;
        anchor::token_from_bytes(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn only_http_urls_are_accepted() {
        let e = HttpTimeStamper::new("ftp://tsa.example", HttpOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timestamp);
        assert!(e.to_string().contains("must start with https://"), "{e}");
        let t = HttpTimeStamper::new("http://127.0.0.1:9/tsa/", HttpOptions::default()).unwrap();
        // The source is the URL as given.
        assert_eq!(t.source(), "http://127.0.0.1:9/tsa/");
    }

    #[test]
    fn nobody_listening_is_unavailable_after_one_attempt() {
        let opts = HttpTimeStamper::single_attempt(Duration::from_secs(5));
        assert_eq!(opts.retries, 0);
        let t = HttpTimeStamper::new("http://127.0.0.1:9/tsa", opts).unwrap();
        let e = t.stamp(&[7; 32]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Timestamp(stella_keyless::UpstreamError::Unavailable { .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("(after 1 attempts)"), "{e}");
    }
}
