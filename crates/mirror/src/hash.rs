//! Streaming SHA-256 (aws-lc, which uses SHA-NI where the CPU has it) and parallel hashing of
//! many files over every core.
//!
//! Files are read in 256 KiB chunks into a buffer that stays in the L2 cache, so the hash reads
//! what the copy just wrote; memory is bounded by `threads × 256 KiB` whatever the bundle size.
//! Work is handed out largest file first from a shared counter, so one huge file and many
//! small ones still keep every core busy until the end.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, IoContext as _, Result};

/// Read chunk size for hashing and copying.
pub const CHUNK: usize = 256 * 1024;

pub use stella_digest::{Digest, Hasher};

/// 64 lowercase hex digits (the `sha256` fields of a manifest) as a digest.
pub fn parse_hex(s: &str) -> Option<Digest> {
    Digest::parse_sha256_hex(s).ok()
}

/// Progress reporting: the CLI draws a bar on a terminal; the library only counts.
pub trait Progress: Sync {
    /// A new phase of `total` bytes (0 when unknown) begins.
    fn start(&self, _phase: &str, _total: u64) {}
    /// `n` more bytes are done.
    fn advance(&self, _n: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Progress that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Hash everything `r` yields, in [`CHUNK`] reads; returns digest and length.
pub fn hash_reader(r: &mut dyn Read, progress: &dyn Progress) -> std::io::Result<(Digest, u64)> {
    let mut buf = vec![0u8; CHUNK];
    let mut h = Hasher::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        progress.advance(n as u64);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

/// Hash one file.
pub fn hash_file(path: &Path, progress: &dyn Progress) -> Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path).at(path)?;
    hash_reader(&mut f, progress).at(path)
}

/// Number of hashing threads: every core.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Hash `files` (with their expected sizes, used to schedule largest first) on every core.
/// Results come back in the order of `files`. The first I/O error stops the other threads.
pub fn hash_files(files: &[(PathBuf, u64)], progress: &dyn Progress) -> Result<Vec<(Digest, u64)>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[b].1.cmp(&files[a].1).then(a.cmp(&b)));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let workers = threads().min(files.len()).max(1);
    let results: Vec<Result<Vec<(usize, Digest, u64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&idx) = order.get(i) else {
                            return Ok(done);
                        };
                        let path = &files[idx].0;
                        let r = (|| {
                            let mut f = std::fs::File::open(path)?;
                            let mut h = Hasher::new();
                            loop {
                                let n = match f.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => n,
                                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                                        continue
                                    }
                                    Err(e) => return Err(e),
                                };
                                h.update(&buf[..n]);
                                progress.advance(n as u64);
                            }
                            let len = h.len();
                            Ok((h.finish(), len))
                        })();
                        match r {
                            Ok((d, n)) => done.push((idx, d, n)),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(Error::io(path, e));
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::input("a hashing thread panicked")))
            })
            .collect()
    });
    let mut out = vec![(Digest::sha256([0; 32]), 0u64); files.len()];
    for r in results {
        for (idx, d, n) in r? {
            out[idx] = (d, n);
        }
    }
    Ok(out)
}

/// Copy `src` to a new file `dest`, hashing on the way.
pub(crate) fn copy_hashing(
    src: &Path,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    copy_hashing_with(src, dest, &mut vec![0u8; CHUNK], progress)
}

/// [`copy_hashing`] with a caller's buffer (many small files: one buffer per worker instead
/// of a fresh 256 KiB allocation, an mmap and munmap, per file).
pub(crate) fn copy_hashing_with(
    src: &Path,
    dest: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    use std::io::{Read as _, Write as _};
    let mut r = std::fs::File::open(src).at(src)?;
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .at(dest)?;
    let mut h = Hasher::new();
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(src, e)),
        };
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).at(dest)?;
        progress.advance(n as u64);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_parallel() {
        assert_eq!(
            Digest::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = Digest::of(b"x");
        assert_eq!(crate::hash::parse_hex(&d.hex()), Some(d));
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
        assert!(crate::hash::parse_hex(&d.hex().to_uppercase()).is_none());

        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..20u64 {
            let p = dir.path().join(format!("f{i}"));
            let data = vec![i as u8; (i * 100_000) as usize];
            std::fs::write(&p, &data).unwrap();
            files.push((p, data.len() as u64));
        }
        let got = hash_files(&files, &NoProgress).unwrap();
        for (i, (d, n)) in got.iter().enumerate() {
            let data = vec![i as u8; i * 100_000];
            assert_eq!(*d, Digest::of(&data));
            assert_eq!(*n, data.len() as u64);
        }
        files.push((dir.path().join("missing"), 0));
        assert!(matches!(
            hash_files(&files, &NoProgress),
            Err(Error::NotFound(_))
        ));
    }
}
