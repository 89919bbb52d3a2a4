//! Blob uploads: an existence check first (`HEAD`), then a cross-repository mount when another
//! repository of the same registry is known to hold the blob, then either one `PUT` (blobs up
//! to `monolithic_max`) or a chunked upload (`PATCH` with `Content-Range`, one chunk at a
//! time, then a closing `PUT ?digest=`).
//!
//! Resume: after every accepted chunk the upload session (its `Location` and offset) is
//! written to an optional [`ResumeJournal`]. When a chunk fails — or a later run finds a
//! journal entry — we ask the registry where the session stands (`GET` on the session URL,
//! `Range: 0-N`) and continue from there; if the session is gone (registry restarted without
//! it, or it refuses the offset) the blob starts again from zero. The registry checks the
//! digest of what it assembled, so a resumed upload can never produce a wrong blob.

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use tokio::io::AsyncReadExt as _;

use crate::client::{header_str, status_error, Client, Scope};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, IoContext as _, Result};
use crate::progress::{BlobAction, Event, Progress};
use crate::reference::Reference;

/// Where blob bytes come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlobSource<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// The outcome of one blob push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushedBlob {
    pub(crate) action: BlobAction,
    /// For [`BlobAction::Resumed`]: the offset the upload continued from.
    pub(crate) resumed_from: u64,
    /// Bytes sent over the wire for this blob.
    pub(crate) bytes_sent: u64,
}

/// Upload sessions on disk, so a later run continues a chunked upload instead of restarting
/// it. One small JSON file per (repository, blob), mode 0600.
#[derive(Debug, Clone)]
pub struct ResumeJournal {
    dir: PathBuf,
}

impl ResumeJournal {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        Ok(ResumeJournal {
            dir: dir.to_path_buf(),
        })
    }

    /// `$XDG_CACHE_HOME/stella/oci-uploads`, else `~/.cache/stella/oci-uploads`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("stella").join("oci-uploads"))
    }

    fn path(&self, repo: &Reference, d: &Digest) -> PathBuf {
        let who = Digest::of(repo.name().as_bytes()).hex();
        self.dir.join(format!("{}-{}.json", &who[..16], d.hex()))
    }

    fn load(&self, repo: &Reference, d: &Digest) -> Option<(Url, u64)> {
        let bytes = std::fs::read(self.path(repo, d)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if v.get("repository")?.as_str()? != repo.name() {
            return None;
        }
        let url = Url::parse(v.get("location")?.as_str()?).ok()?;
        Some((url, v.get("offset")?.as_u64()?))
    }

    fn save(&self, repo: &Reference, d: &Digest, location: &Url, offset: u64) {
        let doc = serde_json::json!({
            "repository": repo.name(),
            "digest": d.to_string(),
            "location": location.as_str(),
            "offset": offset,
        });
        let path = self.path(repo, d);
        // Best effort: a journal that cannot be written only costs a restart later.
        let _ = (|| -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".journal-")
                .tempfile_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, doc.to_string().as_bytes())?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
    }

    fn remove(&self, repo: &Reference, d: &Digest) {
        let _ = std::fs::remove_file(self.path(repo, d));
    }
}

struct Session {
    location: Url,
    offset: u64,
}

enum Mount {
    Mounted,
    /// Not mounted; distribution then opens an ordinary upload session we can use.
    NotMounted(Option<Url>),
}

impl Client {
    /// Push small in-memory `bytes` (a config, an empty descriptor, a signature payload) as a
    /// blob of `repo`, without resume journal or progress, and return their digest.
    pub(crate) async fn push_bytes(&self, repo: &Reference, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        let progress: Arc<dyn Progress> = Arc::new(crate::progress::NoProgress);
        let src = BlobSource::Bytes(bytes);
        self.push_blob(repo, &d, bytes.len() as u64, src, None, &progress)
            .await?;
        Ok(d)
    }

    /// Push one blob into `repo` unless it is already there. `size` and `d` describe the
    /// bytes of `src`; the registry refuses the upload if they do not match.
    pub(crate) async fn push_blob(
        &self,
        repo: &Reference,
        d: &Digest,
        size: u64,
        src: BlobSource<'_>,
        journal: Option<&ResumeJournal>,
        progress: &Arc<dyn Progress>,
    ) -> Result<PushedBlob> {
        let done = |action, resumed_from, bytes_sent| PushedBlob {
            action,
            resumed_from,
            bytes_sent,
        };
        // A registry that keeps failing to say whether it holds the blob (after a crash while
        // it linked the blob into the repository, `docker-registry` answers 500 to `HEAD` for
        // good) is sent the blob: a `PUT` by digest is idempotent and writes the link again;
        // a registry really failing fails the upload too, with its own error.
        let known = match self.blob_exists(repo, d).await {
            Err(Error::Status { status, .. }) if status >= 500 => None,
            other => other?,
        };
        if known.is_some() {
            if let Some(j) = journal {
                j.remove(repo, d);
            }
            return Ok(done(BlobAction::Existed, 0, 0));
        }
        let mut session: Option<Session> = None;
        for from in self.mount_candidates(repo, d).into_iter().take(3) {
            match self.try_mount(repo, d, &from).await? {
                Mount::Mounted => {
                    self.remember(repo, d);
                    return Ok(done(BlobAction::Mounted, 0, 0));
                }
                Mount::NotMounted(Some(location)) => {
                    session = Some(Session {
                        location,
                        offset: 0,
                    });
                    break;
                }
                Mount::NotMounted(None) => {}
            }
        }
        let cfg = self.config();
        let mut resumed_from = 0;
        if let Some((loc, _)) = journal
            .and_then(|j| j.load(repo, d))
            .filter(|_| session.is_none())
        {
            if let Some(s) = self.upload_status(repo, &loc).await? {
                resumed_from = s.offset;
                session = Some(s);
            } else if let Some(j) = journal {
                j.remove(repo, d);
            }
        }
        let mut failures = 0u32;
        let mut sent = 0u64;
        loop {
            let mut s = match session.take() {
                Some(s) => s,
                None => Session {
                    location: self.start_upload(repo).await?,
                    offset: 0,
                },
            };
            let result = if s.offset == 0 && size <= cfg.monolithic_max {
                self.put_whole(repo, d, size, src, &s, progress, &mut sent)
                    .await
            } else {
                self.put_chunks(repo, d, size, src, &mut s, journal, progress, &mut sent)
                    .await
            };
            match result {
                Ok(()) => {
                    if let Some(j) = journal {
                        j.remove(repo, d);
                    }
                    self.remember(repo, d);
                    self.stats()
                        .bytes_uploaded
                        .fetch_add(sent, Ordering::Relaxed);
                    let action = if resumed_from > 0 {
                        BlobAction::Resumed
                    } else {
                        BlobAction::Uploaded
                    };
                    return Ok(done(action, resumed_from, sent));
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    failures += 1;
                    if failures >= cfg.retry.attempts.max(1) {
                        return Err(e);
                    }
                    self.stats().retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(cfg.retry.delay(failures)).await;
                    // The registry may have completed it after all; else continue the session.
                    if self.blob_exists(repo, d).await?.is_some() {
                        self.stats()
                            .bytes_uploaded
                            .fetch_add(sent, Ordering::Relaxed);
                        return Ok(done(BlobAction::Uploaded, resumed_from, sent));
                    }
                    if s.offset > 0 {
                        if let Some(st) = self.upload_status(repo, &s.location).await? {
                            if resumed_from == 0 && st.offset > 0 {
                                resumed_from = st.offset;
                            }
                            session = Some(st);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_mount(&self, repo: &Reference, d: &Digest, from: &str) -> Result<Mount> {
        let mut url = self.url(repo, &format!("/v2/{}/blobs/uploads/", repo.repository()))?;
        url.query_pairs_mut()
            .append_pair("mount", &d.to_string())
            .append_pair("from", from);
        let resp = match self
            .send(repo, &Scope::mount(repo, from), true, || {
                Ok(self
                    .request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, "0"))
            })
            .await
        {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::Auth => return Ok(Mount::NotMounted(None)),
            Err(e) => return Err(e),
        };
        Ok(match resp.status() {
            StatusCode::CREATED => Mount::Mounted,
            StatusCode::ACCEPTED => Mount::NotMounted(location(repo, &url, resp.headers()).ok()),
            _ => Mount::NotMounted(None),
        })
    }

    async fn start_upload(&self, repo: &Reference) -> Result<Url> {
        let url = self.url(repo, &format!("/v2/{}/blobs/uploads/", repo.repository()))?;
        let resp = self
            .send(repo, &Scope::push(repo), true, || {
                Ok(self
                    .request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(repo, "POST", url.path(), resp).await);
        }
        location(repo, &url, resp.headers())
    }

    /// Where an upload session stands: `None` when the registry no longer knows it.
    async fn upload_status(&self, repo: &Reference, loc: &Url) -> Result<Option<Session>> {
        let resp = self
            .send(repo, &Scope::push(repo), true, || {
                Ok(self.request(Method::GET, loc.clone()))
            })
            .await?;
        let st = resp.status();
        if st == StatusCode::NO_CONTENT || st == StatusCode::OK {
            let offset = header_str(resp.headers(), "range")
                .and_then(|r| parse_range_end(&r))
                .unwrap_or(0);
            let location = location(repo, loc, resp.headers()).unwrap_or_else(|_| loc.clone());
            return Ok(Some(Session { location, offset }));
        }
        if st.is_client_error() {
            return Ok(None);
        }
        Err(status_error(repo, "GET", loc.path(), resp).await)
    }

    #[allow(clippy::too_many_arguments)] // one upload step; a struct would only rename them
    async fn put_whole(
        &self,
        repo: &Reference,
        d: &Digest,
        size: u64,
        src: BlobSource<'_>,
        s: &Session,
        progress: &Arc<dyn Progress>,
        sent: &mut u64,
    ) -> Result<()> {
        let mut url = s.location.clone();
        url.query_pairs_mut().append_pair("digest", &d.to_string());
        let resp = self
            .send(repo, &Scope::push(repo), false, || {
                Ok(self
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size.to_string())
                    .body(body(src, 0, size, *d, progress)?))
            })
            .await?;
        finish(repo, d, &url, resp).await?;
        *sent += size;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one upload step; a struct would only rename them
    async fn put_chunks(
        &self,
        repo: &Reference,
        d: &Digest,
        size: u64,
        src: BlobSource<'_>,
        s: &mut Session,
        journal: Option<&ResumeJournal>,
        progress: &Arc<dyn Progress>,
        sent: &mut u64,
    ) -> Result<()> {
        let chunk = self.config().chunk_size.max(1 << 16);
        let mut stalls = 0;
        while s.offset < size {
            let start = s.offset;
            let end = (start + chunk).min(size);
            let loc = s.location.clone();
            let resp = self
                .send(repo, &Scope::push(repo), false, || {
                    Ok(self
                        .request(Method::PATCH, loc.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, (end - start).to_string())
                        .header("Content-Range", format!("{start}-{}", end - 1))
                        .body(body(src, start, end - start, *d, progress)?))
                })
                .await?;
            let st = resp.status();
            if st == StatusCode::RANGE_NOT_SATISFIABLE {
                // Our idea of the offset is stale: ask the registry, at most a few times.
                stalls += 1;
                match self.upload_status(repo, &s.location).await? {
                    Some(now) if stalls < 3 => *s = now,
                    _ => {
                        return Err(Error::protocol(
                            repo.registry(),
                            format!("upload of {d} was refused at offset {start}"),
                        ))
                    }
                }
                continue;
            }
            if st != StatusCode::ACCEPTED && st != StatusCode::NO_CONTENT {
                return Err(status_error(repo, "PATCH", loc.path(), resp).await);
            }
            let offset = header_str(resp.headers(), "range")
                .and_then(|r| parse_range_end(&r))
                .unwrap_or(end);
            s.location = location(repo, &loc, resp.headers()).unwrap_or(loc);
            s.offset = offset;
            *sent += end - start;
            if let Some(j) = journal {
                j.save(repo, d, &s.location, s.offset);
            }
            progress.event(&Event::ChunkDone {
                digest: d,
                offset: s.offset,
                size,
            });
        }
        let mut url = s.location.clone();
        url.query_pairs_mut().append_pair("digest", &d.to_string());
        let resp = self
            .send(repo, &Scope::push(repo), true, || {
                Ok(self
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_LENGTH, "0"))
            })
            .await?;
        if !resp.status().is_success() && self.blob_exists(repo, d).await?.is_some() {
            // An earlier attempt of this PUT completed the upload; its answer was lost.
            return Ok(());
        }
        finish(repo, d, &url, resp).await
    }
}

/// Check the answer to the closing `PUT`.
async fn finish(repo: &Reference, d: &Digest, url: &Url, resp: reqwest::Response) -> Result<()> {
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        let err = status_error(repo, "PUT", url.path(), resp).await;
        if err.to_string().contains("DIGEST_INVALID") || err.to_string().contains("SIZE_INVALID") {
            return Err(Error::Integrity(format!(
                "registry {} refused blob {d}: the bytes sent do not hash to it ({err})",
                repo.registry()
            )));
        }
        return Err(err);
    }
    if let Some(a) = header_str(resp.headers(), "docker-content-digest") {
        if a != d.to_string() {
            return Err(Error::protocol(
                repo.registry(),
                format!("stored blob {d} under digest {a}"),
            ));
        }
    }
    Ok(())
}

fn location(repo: &Reference, base: &Url, h: &reqwest::header::HeaderMap) -> Result<Url> {
    let loc = header_str(h, LOCATION.as_str()).ok_or_else(|| {
        Error::protocol(repo.registry(), "upload answer without a Location header")
    })?;
    base.join(&loc)
        .map_err(|e| Error::protocol(repo.registry(), format!("bad upload Location {loc:?}: {e}")))
}

/// `0-N` → `N + 1` bytes received (distribution writes `0-0` for an empty session too).
fn parse_range_end(r: &str) -> Option<u64> {
    let r = r.trim().trim_start_matches("bytes=");
    let (start, end) = r.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

/// A request body for bytes `[offset, offset + len)` of `src`.
fn body(
    src: BlobSource<'_>,
    offset: u64,
    len: u64,
    d: Digest,
    progress: &Arc<dyn Progress>,
) -> Result<reqwest::Body> {
    match src {
        BlobSource::Bytes(b) => {
            let part = b
                .get(offset as usize..(offset + len) as usize)
                .ok_or_else(|| Error::Input(format!("blob {d}: range outside the data")))?;
            progress.event(&Event::Bytes {
                digest: &d,
                n: part.len() as u64,
            });
            Ok(reqwest::Body::from(bytes::Bytes::copy_from_slice(part)))
        }
        BlobSource::File(path) => {
            let mut f = std::fs::File::open(path).at(path)?;
            if offset > 0 {
                f.seek(std::io::SeekFrom::Start(offset)).at(path)?;
            }
            // Small bodies: read now (no per-read thread hops). Large ones: stream.
            if len <= 1 << 20 {
                let mut buf = Vec::with_capacity(len as usize);
                (&mut f).take(len).read_to_end(&mut buf).at(path)?;
                progress.event(&Event::Bytes {
                    digest: &d,
                    n: buf.len() as u64,
                });
                return Ok(reqwest::Body::from(buf));
            }
            let file = tokio::fs::File::from_std(f).take(len);
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
            let p = progress.clone();
            let stream = stream.inspect_ok(move |b| {
                p.event(&Event::Bytes {
                    digest: &d,
                    n: b.len() as u64,
                })
            });
            Ok(reqwest::Body::wrap_stream(stream))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range_end("0-0"), Some(0));
        assert_eq!(parse_range_end("0-1048575"), Some(1 << 20));
        assert_eq!(parse_range_end("bytes=0-9"), Some(10));
        assert_eq!(parse_range_end("5-9"), None);
        assert_eq!(parse_range_end("x"), None);
    }
}
