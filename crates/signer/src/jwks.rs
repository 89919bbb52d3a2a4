//! The Authority's signing keys: a JWKS fetched from a URL and cached, or pinned from a file
//! (offline sites), or held in memory (the dev profile).
//!
//! A fetched set is used for `jwks_cache_seconds`; a token whose `kid` is not in the set
//! triggers a refetch (the Authority rotated its key), but never more often than
//! `jwks_refetch_floor_seconds`, so a stream of tokens with made-up `kid`s cannot turn the
//! service into a load generator against the Authority. Fetches are single-flight. When a
//! refetch fails, the last good set stays in use (keys do not stop being valid because the
//! Authority is briefly down); with no set at all, requests fail `503 upstream_unavailable`.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::jose::{Alg, JwkSet, Jws};

/// Why a token's key could not be found or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("no Authority key matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the Authority's keys cannot be fetched: {0}")]
    Unavailable(String),
}

/// Why a JWKS could not be had from a file or a URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksLoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: crate::jose::JoseError,
    },
    #[error("{0}: no usable keys")]
    NoKeys(String),
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Why a bounded response body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("{what} larger than {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
}

struct Remote {
    url: String,
    http: reqwest::Client,
    cache_for: Duration,
    floor: Duration,
    state: RwLock<RemoteState>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RemoteState {
    set: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

enum Source {
    Fixed(Arc<JwkSet>),
    Remote(Remote),
}

/// Where token keys come from.
pub struct Jwks {
    source: Source,
}

impl Jwks {
    /// A fixed set (pinned file or dev profile).
    pub fn fixed(set: JwkSet) -> Self {
        Jwks {
            source: Source::Fixed(Arc::new(set)),
        }
    }

    /// A set read from a file once at start.
    pub fn from_file(path: &std::path::Path) -> Result<Self, JwksLoadError> {
        let shown = || path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| JwksLoadError::Read {
            path: shown(),
            source,
        })?;
        let set = JwkSet::from_json(&bytes).map_err(|source| JwksLoadError::Parse {
            origin: shown(),
            source,
        })?;
        if set.keys.is_empty() {
            return Err(JwksLoadError::NoKeys(shown()));
        }
        Ok(Self::fixed(set))
    }

    /// A set fetched from `url`.
    pub fn remote(
        url: String,
        http: reqwest::Client,
        cache_for: Duration,
        floor: Duration,
    ) -> Self {
        Jwks {
            source: Source::Remote(Remote {
                url,
                http,
                cache_for,
                floor,
                state: RwLock::new(RemoteState::default()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Verify `jws` with a key from the set.
    pub async fn verify(&self, jws: &Jws) -> Result<(), JwksError> {
        let kid = jws.header_str("kid");
        match &self.source {
            Source::Fixed(set) => check(set, jws, kid),
            Source::Remote(r) => {
                let (set, fresh) = r.current();
                if let Some(set) = &set {
                    if fresh {
                        match check(set, jws, kid) {
                            Err(JwksError::UnknownKey(_)) => {}
                            other => return other,
                        }
                    }
                }
                // Stale, missing, or an unknown kid: refetch (rate-limited), then decide.
                // Boxed: the HTTP client's future is large, and only this rare path needs
                // it (every caller's future would carry its size otherwise; issue #15).
                let set = Box::pin(r.refresh()).await?;
                check(&set, jws, kid)
            }
        }
    }

    /// Fetch now (startup warm-up). Pinned sets are always ready.
    pub async fn warm(&self) -> Result<(), JwksError> {
        match &self.source {
            Source::Fixed(_) => Ok(()),
            Source::Remote(r) => r.refresh().await.map(|_| ()),
        }
    }

    /// Has a usable key set?
    pub fn is_ready(&self) -> bool {
        match &self.source {
            Source::Fixed(_) => true,
            Source::Remote(r) => r.current().0.is_some(),
        }
    }
}

fn check(set: &JwkSet, jws: &Jws, kid: Option<&str>) -> Result<(), JwksError> {
    let mut any = false;
    for key in set.candidates(kid, jws.alg) {
        any = true;
        if jws.verify(key).is_ok() {
            return Ok(());
        }
    }
    if any {
        Err(JwksError::BadSignature)
    } else {
        Err(JwksError::UnknownKey(kid.map(str::to_string)))
    }
}

impl Remote {
    fn current(&self) -> (Option<Arc<JwkSet>>, bool) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let fresh = st.fetched_at.is_some_and(|t| t.elapsed() < self.cache_for);
        (st.set.clone(), fresh)
    }

    async fn refresh(&self) -> Result<Arc<JwkSet>, JwksError> {
        let _guard = self.fetching.lock().await;
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if let (Some(set), Some(last)) = (&st.set, st.last_attempt) {
                if last.elapsed() < self.floor {
                    // Fetched (or tried) very recently — maybe by the request we waited on.
                    return Ok(set.clone());
                }
            }
            if st.set.is_none()
                && st
                    .last_attempt
                    .is_some_and(|l| l.elapsed() < Duration::from_secs(1))
            {
                return Err(JwksError::Unavailable("fetch failed moments ago".into()));
            }
        }
        let result = self.fetch().await;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.last_attempt = Some(Instant::now());
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                st.set = Some(set.clone());
                st.fetched_at = Some(Instant::now());
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
                st.set
                    .clone()
                    .ok_or_else(|| JwksError::Unavailable(e.to_string()))
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwksLoadError> {
        let resp = self
            .http
            .get(&self.url)
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(JwksLoadError::Transport)?;
        if !resp.status().is_success() {
            return Err(JwksLoadError::Status(resp.status()));
        }
        let bytes = read_limited(resp, MAX_JWKS_BYTES, "JWKS").await?;
        let set = JwkSet::from_json(&bytes).map_err(|source| JwksLoadError::Parse {
            origin: "JWKS".into(),
            source,
        })?;
        if set.keys.is_empty() {
            return Err(JwksLoadError::NoKeys("JWKS".into()));
        }
        Ok(set)
    }
}

/// Largest JWKS accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Read a response body, refusing it as soon as it passes `limit` bytes (announced by
/// `Content-Length` or counted while reading): an upstream cannot make us buffer more than
/// `limit` (plus one chunk) whatever it sends.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, BodyError> {
    let too_large = || BodyError::TooLarge {
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Parse the configured algorithm names (validated by the config already).
pub(crate) fn algs(names: &[String]) -> Vec<Alg> {
    names.iter().filter_map(|n| Alg::parse(n)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A server that sends `chunks` chunks of 64 KiB (chunked encoding, or with an honest
    /// `Content-Length` when `announce`), then holds the connection open without ending.
    async fn endless_server(chunks: usize, announce: bool) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    let head = if announce {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            64 * 1024 * (chunks + 1)
                        )
                    } else {
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
                    };
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..chunks {
                        let r = if announce {
                            s.write_all(&chunk).await
                        } else {
                            let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                            c.extend_from_slice(&chunk);
                            c.extend_from_slice(b"\r\n");
                            s.write_all(&c).await
                        };
                        if r.is_err() {
                            return;
                        }
                    }
                    // Never finish the body.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        format!("http://{addr}/jwks")
    }

    /// Issue #8 item 10: the JWKS body was read whole before its size was checked. Now the
    /// read stops as soon as it passes 1 MiB: the answer comes at once, not when the
    /// endless body times out.
    #[tokio::test]
    async fn oversized_jwks_is_refused_while_reading() {
        for announce in [false, true] {
            let url = endless_server(32, announce).await;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .no_proxy()
                .build()
                .unwrap();
            let j = Jwks::remote(url, http, Duration::from_secs(60), Duration::ZERO);
            let started = Instant::now();
            let e = j.warm().await.unwrap_err();
            let JwksError::Unavailable(m) = e else {
                panic!("{e:?}")
            };
            assert!(m.contains("larger than 1048576"), "{m}");
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "refused while reading, not after the whole body"
            );
        }
    }
}
