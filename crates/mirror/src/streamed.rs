//! Verifying a bundle folder whose manifest is too large to hold in memory (hundreds of
//! thousands of files and more), with memory independent of the manifest's size.
//!
//! [`crate::verify::verify_dir`] takes this path (`verify::verify_dir_streamed`, built from the
//! pieces here; this module does not import `verify`) when `manifest.dsse`, `manifest.json`,
//! `SHA256SUMS` or `SHA256SUMS.dsse` is above [`Limits::stream_above`] (by default
//! [`crate::MAX_METADATA_BYTES`], so every bundle that verified before still takes the
//! in-memory path, with the same messages). The rules are those of
//! [`crate::verify::verify_metadata`] and [`crate::verify::check_files`]; only how the bytes
//! are held differs:
//!
//! - `manifest.dsse` is read as a stream ([`stella_dsse::stream::read_envelope`]): the payload
//!   is decoded and hashed on the way, into memory up to [`Limits::payload_in_memory`]
//!   (64 MiB), else into an unnamed temporary file (`Spill`); its signatures are checked
//!   over `PAE` fed from there ([`stella_keys::verify_envelope_stream`]), on a second thread
//!   while the manifest is typed, and the content is hashed while the rest of the metadata is
//!   checked (see `verify::verify_dir_streamed`; failures keep their sequential order).
//! - The manifest is typed in one pass ([`parse_manifest_slice`], [`parse_manifest`]): every
//!   field but `files` as usual, the files straight into a [`FileIndex`] (one path arena and fixed
//!   56-byte records: about 56 + path length bytes per file, ~90 B for advisory paths), each
//!   entry checked as it arrives (path rules, digest, sorted, not a metadata name, not also a
//!   folder). Its canonical form is checked by a second pass
//!   ([`stella_dsse::jcs::is_canonical`] or [`stella_dsse::jcs::is_canonical_read`]).
//! - `manifest.json` must have the payload's SHA-256 and length (same bytes); `SHA256SUMS` is
//!   compared line by line with the index (a merge of two sorted streams), and its envelope's
//!   payload is hashed, never held.
//! - Content: the folder is walked as a stream; each file is looked up in the index
//!   (binary search), marked seen and handed to the hashing threads in batches of 64
//!   through a bounded queue; listed files never seen are missing (or, thin, from the base).
//!
//! Not on this path (refused with a message naming the file): `time-anchor.json` and
//! `manifest.sigstore.json`, whose checks need the manifest bytes in memory.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::{Error, Field, IoContext as _, Result};
use crate::hash::{Digest, Hasher, Progress};
use crate::manifest::{FileEntry, Kind, Manifest, ManifestError, TypedFiles, Wire};
use crate::names;

/// Sizes that decide and bound the streamed path (injectable so tests take it with small
/// bundles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A bundle whose `manifest.dsse`, `manifest.json`, `SHA256SUMS` or `SHA256SUMS.dsse` is
    /// larger than this is verified streamed.
    pub stream_above: u64,
    /// Largest manifest (decoded payload) accepted; `manifest.dsse` may be 4/3 of it plus
    /// 64 KiB. A larger one is refused on its size, before it is opened.
    pub max_manifest: u64,
    /// Largest `SHA256SUMS` accepted (its envelope: 4/3 of it plus 64 KiB).
    pub max_sums: u64,
    /// Largest decoded manifest held in memory while it is checked (typed from a slice, several
    /// times faster than from a reader); a larger one goes to an unnamed temporary file. By
    /// default 64 MiB, about 370,000 files.
    pub payload_in_memory: u64,
}

/// 16 GiB: about 100 million files of manifest.
pub const MAX_STREAMED_MANIFEST_BYTES: u64 = 16 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stream_above: crate::MAX_METADATA_BYTES,
            max_manifest: MAX_STREAMED_MANIFEST_BYTES,
            max_sums: MAX_STREAMED_MANIFEST_BYTES,
            payload_in_memory: PAYLOAD_IN_MEMORY as u64,
        }
    }
}

/// Largest envelope for a payload of at most `payload_cap` bytes: its base64 (4/3) and 64 KiB
/// for the payload type and signatures.
pub(crate) fn envelope_cap(payload_cap: u64) -> u64 {
    payload_cap.saturating_mul(4) / 3 + (64 << 10)
}

/// One file of a [`FileIndex`] (and of `create`'s file list): 56 bytes (paths live in the
/// arena).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    /// Offset of the path in the arena.
    pub(crate) start: u64,
    pub(crate) size: u64,
    /// Length of the path in the arena.
    pub(crate) len: u32,
    /// Interned media type.
    pub(crate) media: u32,
    pub(crate) sha256: [u8; 32],
}

impl Rec {
    /// This record's path in `arena` ("" if the record does not fit it, which the index
    /// never builds).
    pub(crate) fn path_in<'a>(&self, arena: &'a [u8]) -> &'a str {
        let start = usize::try_from(self.start).unwrap_or(usize::MAX);
        arena
            .get(start..start.saturating_add(self.len as usize))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// The manifest's files, compact and sorted by path: one arena of path bytes, fixed-size
/// records, media types interned.
#[derive(Debug, Default)]
pub struct FileIndex {
    arena: Vec<u8>,
    recs: Vec<Rec>,
    media: Vec<String>,
}

/// One entry of a [`FileIndex`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry<'a> {
    pub path: &'a str,
    pub size: u64,
    pub sha256: Digest,
    pub media_type: &'a str,
}

impl FileIndex {
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    fn path_of(&self, r: &Rec) -> &str {
        r.path_in(&self.arena)
    }

    /// The `i`th entry (in path order).
    pub fn get(&self, i: usize) -> Option<IndexEntry<'_>> {
        let r = self.recs.get(i)?;
        Some(IndexEntry {
            path: self.path_of(r),
            size: r.size,
            sha256: Digest::sha256(r.sha256),
            media_type: self.media.get(r.media as usize).map_or("", String::as_str),
        })
    }

    fn path_bytes_of(&self, r: &Rec) -> &[u8] {
        let start = usize::try_from(r.start).unwrap_or(usize::MAX);
        self.arena
            .get(start..start.saturating_add(r.len as usize))
            .unwrap_or_default()
    }

    /// The position of `path`, if listed.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.recs
            .binary_search_by(|r| self.path_bytes_of(r).cmp(path.as_bytes()))
            .ok()
    }

    /// Total bytes of the listed files.
    pub fn total_size(&self) -> u64 {
        self.recs.iter().map(|r| r.size).sum()
    }

    /// Heap bytes held (arena and records), for the docs' bytes-per-file figure.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.recs.capacity() * std::mem::size_of::<Rec>()
    }

    /// Add the next entry (in path order), checked as [`Manifest::validate`] checks `files`.
    pub fn push(&mut self, f: FileEntry) -> std::result::Result<(), ManifestError> {
        crate::manifest::check_next(self.recs.last().map(|r| self.path_of(r)), &f)?;
        let sha256 = *f.sha256.as_bytes();
        let media = match self.media.iter().position(|m| *m == f.media_type) {
            Some(i) => i,
            None => {
                self.media.push(f.media_type);
                self.media.len() - 1
            }
        };
        let len = u32::try_from(f.path.len())
            .map_err(|_| ManifestError::NotSorted(f.path.to_string()))?;
        self.recs.push(Rec {
            start: self.arena.len() as u64,
            size: f.size,
            len,
            media: u32::try_from(media).unwrap_or(u32::MAX),
            sha256,
        });
        self.arena.extend_from_slice(f.path.as_bytes());
        Ok(())
    }

    /// Whether `sums` reads exactly the `SHA256SUMS` text of these files (`<hex>  <path>\n`
    /// in order), compared as two streams.
    pub fn sha256sums_equal(&self, sums: &mut dyn BufRead) -> std::io::Result<bool> {
        let mut want = Vec::with_capacity(512);
        let mut got = Vec::with_capacity(512);
        for i in 0..self.len() {
            let Some(e) = self.get(i) else {
                return Ok(false);
            };
            want.clear();
            want.extend_from_slice(e.sha256.hex().as_bytes());
            want.extend_from_slice(b"  ");
            want.extend_from_slice(e.path.as_bytes());
            want.push(b'\n');
            got.resize(want.len(), 0);
            match sums.read_exact(&mut got) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            if got != want {
                return Ok(false);
            }
        }
        Ok(sums.fill_buf()?.is_empty())
    }
}

/// The `files` array, read into a [`FileIndex`] entry by entry.
struct IndexSink(FileIndex);

impl<'de> Deserialize<'de> for IndexSink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IndexSink;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of file entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<IndexSink, A::Error> {
                let mut idx = FileIndex::default();
                while let Some(e) = seq.next_element::<FileEntry>()? {
                    idx.push(e).map_err(A::Error::custom)?;
                }
                idx.recs.shrink_to_fit();
                idx.arena.shrink_to_fit();
                Ok(IndexSink(idx))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Type and check a manifest from a reader in one pass: the manifest without its `files`
/// (left empty) and the files as a [`FileIndex`]. Refuses what [`Manifest::from_json`]
/// refuses of a canonical manifest (the canonical form itself is checked apart, with
/// [`stella_dsse::jcs::is_canonical_read`]).
pub fn parse_manifest(
    input: impl Read,
) -> std::result::Result<(Manifest, FileIndex), ManifestError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let m = Wire::<IndexSink>::deserialize(&mut de).map_err(ManifestError::Shape)?;
    de.end().map_err(ManifestError::Shape)?;
    split_manifest(m)
}

/// [`parse_manifest`] from bytes in memory (serde_json reads a slice several times faster
/// than a reader).
pub fn parse_manifest_slice(
    input: &[u8],
) -> std::result::Result<(Manifest, FileIndex), ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let m = Wire::<IndexSink>::deserialize(&mut de).map_err(ManifestError::Shape)?;
    de.end().map_err(ManifestError::Shape)?;
    split_manifest(m)
}

fn split_manifest(m: Wire<IndexSink>) -> std::result::Result<(Manifest, FileIndex), ManifestError> {
    let (m, index) = m.with_files(TypedFiles::default());
    let index = index.0;
    let manifest = m.into_manifest()?;
    for r in &manifest.removed {
        if index.find(r).is_some() {
            return Err(ManifestError::FileAndRemoved(r.to_string()));
        }
    }
    Ok((manifest, index))
}

/// Whether the folder's metadata is large enough for the streamed path.
pub(crate) fn wants_stream(dir: &Path, limits: &Limits) -> bool {
    [
        names::ENVELOPE,
        names::MANIFEST,
        names::SUMS,
        names::SUMS_DSSE,
    ]
    .iter()
    .any(|n| {
        std::fs::symlink_metadata(dir.join(n))
            .map(|m| m.is_file() && m.len() > limits.stream_above)
            .unwrap_or(false)
    })
}

/// A metadata file of the folder, opened (a regular file, no link); `None` if absent.
/// A file above `cap` is refused on its size, never opened.
pub(crate) fn open_meta(
    dir: &Path,
    name: &str,
    cap: Option<u64>,
) -> Result<Option<(File, u64, PathBuf)>> {
    let p = crate::BundlePath::new(name)
        .map_err(Error::input)?
        .under(dir);
    match std::fs::symlink_metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
        Ok(m) if !m.file_type().is_file() => Err(Error::metadata_not_regular(name)),
        Ok(m) => {
            if let Some(cap) = cap.filter(|c| m.len() > *c) {
                return Err(too_large(name, m.len(), cap));
            }
            let f = File::open(&p).at(&p)?;
            Ok(Some((f, m.len(), p)))
        }
    }
}

pub(crate) fn too_large(name: &str, size: u64, cap: u64) -> Error {
    Error::metadata(
        Field::file(name),
        format!("{name} is {size} bytes, above the {cap}-byte limit for streamed bundle metadata"),
    )
}

/// Hash a reader to the end: (digest, length).
pub(crate) fn hash_all(r: &mut dyn Read, path: &Path) -> Result<(Digest, u64)> {
    crate::hash::hash_reader(r, &crate::hash::NoProgress).at(path)
}

/// A writer that hashes what it passes on.
pub(crate) use stella_digest::HashingWriter as Tee;

/// Default [`Limits::payload_in_memory`]: the in-memory canonical check's bound.
pub const PAYLOAD_IN_MEMORY: usize = stella_dsse::jcs::MAX_INPUT_BYTES;

/// A writer that keeps what it is given in memory up to a bound, then moves it all to an
/// unnamed temporary file and goes on there: memory stays bounded whatever the size, and a
/// manifest of a few hundred thousand files is read and typed from memory.
pub(crate) enum Spill {
    Mem(Vec<u8>, usize),
    File(std::io::BufWriter<File>),
}

impl Spill {
    pub(crate) fn new(limit: usize) -> Self {
        Spill::Mem(Vec::new(), limit)
    }

    /// The bytes written, where they ended up.
    pub(crate) fn finish(self) -> std::io::Result<Payload> {
        match self {
            Spill::Mem(v, _) => Ok(Payload::Mem(v)),
            Spill::File(w) => w
                .into_inner()
                .map_err(|e| e.into_error())
                .map(Payload::File),
        }
    }
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Spill::Mem(v, limit) if v.len().saturating_add(buf.len()) <= *limit => {
                v.extend_from_slice(buf);
                Ok(buf.len())
            }
            Spill::Mem(v, _) => {
                let mut w = std::io::BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?);
                w.write_all(v)?;
                w.write_all(buf)?;
                *self = Spill::File(w);
                Ok(buf.len())
            }
            Spill::File(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Spill::Mem(..) => Ok(()),
            Spill::File(w) => w.flush(),
        }
    }
}

/// A decoded payload: in memory or in a temporary file ([`Spill`]).
pub(crate) enum Payload {
    Mem(Vec<u8>),
    File(File),
}

impl Payload {
    /// A reader from the start (each its own position: threads may read at once).
    pub(crate) fn reader(&self) -> PayloadReader<'_> {
        match self {
            Payload::Mem(v) => PayloadReader::Mem(std::io::Cursor::new(v)),
            Payload::File(f) => PayloadReader::File(At::new(f, 0)),
        }
    }

    /// The bytes, when in memory.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self {
            Payload::Mem(v) => Some(v),
            Payload::File(_) => None,
        }
    }
}

/// See [`Payload::reader`].
pub(crate) enum PayloadReader<'a> {
    Mem(std::io::Cursor<&'a Vec<u8>>),
    File(At<'a>),
}

impl Read for PayloadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PayloadReader::Mem(c) => c.read(buf),
            PayloadReader::File(f) => f.read(buf),
        }
    }
}

impl std::io::Seek for PayloadReader<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            PayloadReader::Mem(c) => c.seek(to),
            PayloadReader::File(f) => f.seek(to),
        }
    }
}

/// Whether `r` reads exactly `want` (compared in chunks, not hashed).
pub(crate) fn reads_exactly(r: &mut dyn Read, mut want: &[u8]) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(want.is_empty());
        }
        let got = buf.get(..n).unwrap_or_default();
        match want.strip_prefix(got) {
            Some(rest) => want = rest,
            None => return Ok(false),
        }
    }
}

/// A reader that hashes what it passes on (as it is consumed).
pub(crate) struct HashRead<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Hasher,
}

impl<R: BufRead> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let have = self.fill_buf()?;
            let n = have.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..n), have.get(..n)) {
                to.copy_from_slice(from);
            }
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for HashRead<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if n > 0 {
            // The bytes consumed are the front of the buffer just filled.
            if let Ok(have) = self.inner.fill_buf() {
                self.hasher.update(have.get(..n).unwrap_or(have));
            }
        }
        self.inner.consume(n);
    }
}

/// A file read from a position of its own (`pread`): threads share one descriptor without
/// sharing an offset.
pub(crate) struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> At<'a> {
    pub(crate) fn new(file: &'a File, pos: u64) -> Self {
        At { file, pos }
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for At<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
        self.pos = match to {
            std::io::SeekFrom::Start(n) => n,
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(invalid)?,
            std::io::SeekFrom::End(d) => self
                .file
                .metadata()?
                .len()
                .checked_add_signed(d)
                .ok_or_else(invalid)?,
        };
        Ok(self.pos)
    }
}

/// A reader that fails once `stop` is set (typing a manifest whose signature failed is
/// pointless: that failure is the one reported).
pub(crate) struct Stoppable<'a, R> {
    pub(crate) inner: R,
    pub(crate) stop: &'a AtomicBool,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "stopped: the signature did not verify",
            ));
        }
        self.inner.read(buf)
    }
}

/// Batches of [`crate::hash::TREE_BATCH`] files waiting for a hashing thread, at most.
const QUEUE: usize = 64;

#[derive(Default)]
struct Problems {
    count: usize,
    first: Vec<String>,
}

impl Problems {
    fn push(&mut self, p: String) {
        self.count += 1;
        if self.first.len() < 10 {
            self.first.push(p);
        }
    }
}

/// Stage 2 against the index: walk, look up, hash through a bounded queue.
///
/// This thread walks the folder and looks each file up in the index; the files are handed to
/// the hashing threads [`crate::hash::TREE_BATCH`] at a time (one queue operation per batch),
/// in walk order, so consecutive files share their folder's descriptor; each file is opened
/// beneath the root without following links and, being of the listed size, read with one
/// call into the thread's buffer ([`crate::hash::hash_at`]).
pub(crate) fn check_content(
    dir: &Path,
    kind: Kind,
    index: &FileIndex,
    progress: &dyn Progress,
) -> Result<(usize, u64, Vec<String>)> {
    use crate::hash::{hash_at, tree_error, DirCursor, CHUNK, TREE_BATCH};
    let rootfd = crate::hash::open_root(dir)?;
    let mut seen = vec![false; index.len()];
    let problems = Mutex::new(Problems::default());
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let (count, bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
    progress.start("verify", index.total_size());
    let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(QUEUE);
    let rx = Mutex::new(rx);
    let hash_batches = || {
        // One read buffer and one folder cursor per thread.
        let mut buf = vec![0u8; CHUNK];
        let mut dirs = DirCursor::new(&rootfd);
        loop {
            let Ok(Ok(batch)) = rx.lock().map(|r| r.recv()) else {
                return;
            };
            if stop.load(Ordering::Relaxed) {
                continue;
            }
            let (mut ok, mut ok_bytes, mut read) = (0, 0, 0);
            for i in batch {
                let Some(e) = index.get(i) else { continue };
                match hash_at(&mut dirs, e.path, e.size, &mut buf) {
                    Ok((d, n)) if d == e.sha256 && n == e.size => {
                        ok += 1;
                        ok_bytes += n;
                        read += n;
                    }
                    Ok((d, n)) => {
                        read += n;
                        if let Ok(mut p) = problems.lock() {
                            p.push(format!(
                                "file {} changed: {n} bytes sha256:{}, the manifest says {} bytes sha256:{}",
                                e.path,
                                d.hex(),
                                e.size,
                                e.sha256.hex()
                            ));
                        }
                    }
                    Err(err) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(tree_error(dir, e.path, err));
                        }
                        break;
                    }
                }
            }
            count.fetch_add(ok, Ordering::Relaxed);
            bytes.fetch_add(ok_bytes, Ordering::Relaxed);
            progress.advance(read);
        }
    };
    let walked = std::thread::scope(|s| {
        for _ in 0..crate::hash::threads() {
            s.spawn(hash_batches);
        }
        let mut batch = Vec::with_capacity(TREE_BATCH);
        let r = crate::fs::walk_each(dir, &mut |rel| {
            if names::is_metadata(rel) {
                return Ok(());
            }
            match index.find(rel) {
                None => {
                    if let Ok(mut p) = problems.lock() {
                        p.push(format!("unlisted file {rel} (not in the signed manifest)"));
                    }
                }
                Some(i) => {
                    if let Some(s) = seen.get_mut(i) {
                        *s = true;
                    }
                    batch.push(i);
                    if batch.len() == TREE_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(TREE_BATCH));
                        if !stop.load(Ordering::Relaxed) {
                            let _ = tx.send(full);
                        }
                    }
                }
            }
            Ok(())
        });
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        r
    });
    progress.finish();
    walked?;
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut problems = problems.into_inner().unwrap_or_default();
    let mut from_base = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        if *s {
            continue;
        }
        let Some(e) = index.get(i) else { continue };
        if kind == Kind::Thin {
            from_base.push(e.path.to_string());
        } else {
            problems.push(format!("file {} is missing", e.path));
        }
    }
    if problems.count > 0 {
        return Err(Error::content_mismatch(problems.count, &problems.first));
    }
    Ok((count.into_inner(), bytes.into_inner(), from_base))
}
