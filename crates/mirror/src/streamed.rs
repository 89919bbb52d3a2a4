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
//!   while the manifest is typed — at most [`Limits::parse_ahead`] bytes of it before the
//!   signatures' verdict ([`Verdict`], [`Stoppable`]), so a manifest signed by nobody builds a
//!   bounded index — and the content is hashed while the rest of the metadata is checked (see
//!   `verify::verify_dir_streamed`; failures keep their sequential order).
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
//!   (its folder's entries: [`Finder`]), marked seen and handed to the hashing threads in
//!   batches of [`BATCH`] through a bounded queue; listed files never seen are missing (or,
//!   thin, from the base).
//!
//! `time-anchor.json` is checked by the manifest's SHA-256 (the digest streamed out of the
//! envelope). `manifest.sigstore.json`, whose Sigstore bundles each carry the whole payload
//! again, is read as a stream with those payloads hashed, not held (`crate::keyless`).

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, OnceLock};

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::{Error, Field, IoContext as _, Result};
use crate::from_base::SortedPaths;
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
    /// 64 KiB. A larger one is refused on its size, before any byte of it is read.
    pub max_manifest: u64,
    /// Largest `SHA256SUMS` accepted (its envelope: 4/3 of it plus 64 KiB).
    pub max_sums: u64,
    /// Largest decoded manifest held in memory while it is checked (typed from a slice, several
    /// times faster than from a reader); a larger one goes to an unnamed temporary file. By
    /// default 64 MiB, about 370,000 files.
    pub payload_in_memory: u64,
    /// Bytes of a manifest typed from a file (one above `payload_in_memory`) before its
    /// signatures have verified: the typing runs beside the signature check and then waits for
    /// its verdict, so a manifest signed by nobody costs at most this much of index (about
    /// 0.6 byte per byte typed) whatever its size. By default 64 MiB.
    pub parse_ahead: u64,
    /// Largest total of a bundle's metadata files read into memory
    /// ([`crate::MAX_METADATA_TOTAL`]): a bundle whose metadata is larger in all, each file
    /// below `stream_above` (some 100,000 to 145,000 files), is verified streamed too.
    pub metadata_total: u64,
}

/// 16 GiB: about 100 million files of manifest.
pub(crate) const MAX_STREAMED_MANIFEST_BYTES: u64 = 16 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stream_above: crate::MAX_METADATA_BYTES,
            max_manifest: MAX_STREAMED_MANIFEST_BYTES,
            max_sums: MAX_STREAMED_MANIFEST_BYTES,
            payload_in_memory: PAYLOAD_IN_MEMORY as u64,
            parse_ahead: PAYLOAD_IN_MEMORY as u64,
            metadata_total: crate::MAX_METADATA_TOTAL,
        }
    }
}

/// Largest envelope for a payload of at most `payload_cap` bytes: its base64 (4/3) and 64 KiB
/// for the payload type and signatures.
pub(crate) fn envelope_cap(payload_cap: u64) -> u64 {
    payload_cap.saturating_mul(4) / 3 + (64 << 10)
}

/// What a [`FileIndex`] keeps of a file besides its path: 44 bytes (the size in two halves,
/// so the record needs no 8-byte alignment).
#[derive(Debug, Clone, Copy)]
struct Meta {
    sha256: [u8; 32],
    size: [u32; 2],
    /// Interned media type.
    media: u32,
}

impl Meta {
    fn size(&self) -> u64 {
        u64::from(self.size[0]) | (u64::from(self.size[1]) << 32)
    }
}

/// The manifest's files, compact and sorted by path: the paths front-coded
/// (`from_base::SortedPaths`: ~13 B for an advisory path of ~41), a 44-byte record per file, media
/// types interned. ~57 B per file against ~97 B with whole paths (the index is most of a
/// streamed verification's memory).
#[derive(Debug, Default)]
pub struct FileIndex {
    paths: SortedPaths,
    recs: Vec<Meta>,
    media: Vec<String>,
    /// Position in `media` of each media type, by its hash (a manifest may name as many as
    /// it lists files: found by hash, not by a scan; the text is held once, in `media`).
    media_ids: std::collections::HashMap<u64, u32>,
    hasher: std::collections::hash_map::RandomState,
    /// The media type interned last (files come in runs of one type: no hash for those).
    last_media: Option<u32>,
    /// The order of the entries pushed checked ([`FileIndex::push`]; boxed: an index is
    /// held by value in enums beside a reference).
    order: Box<crate::manifest::PathOrder>,
}

/// One entry of a [`FileIndex`], borrowed: the manifest's own borrowed entry.
pub(crate) use crate::manifest::FileRef as IndexEntry;

impl FileIndex {
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    fn media_of(&self, m: &Meta) -> &str {
        self.media.get(m.media as usize).map_or("", String::as_str)
    }

    /// The `i`th entry (in path order), its path decoded into `buf`.
    pub(crate) fn entry<'b>(&'b self, i: usize, buf: &'b mut Vec<u8>) -> Option<IndexEntry<'b>> {
        let m = self.recs.get(i)?;
        if !self.paths.decode_into(i, buf) {
            return None;
        }
        Some(IndexEntry {
            path: std::str::from_utf8(buf).ok()?,
            size: m.size(),
            sha256: Digest::sha256(m.sha256),
            media_type: self.media_of(m),
        })
    }

    /// The `i`th entry (in path order), owned.
    pub fn get(&self, i: usize) -> Option<FileEntry> {
        let mut buf = Vec::new();
        let e = self.entry(i, &mut buf)?;
        Some(FileEntry {
            path: crate::path::BundlePath::new(e.path).ok()?,
            size: e.size,
            sha256: e.sha256,
            media_type: e.media_type.to_string(),
        })
    }

    /// The paths and the first `N` bytes of each file's SHA-256, in path order (the paths
    /// moved, not copied).
    pub(crate) fn into_paths_and_digest_prefixes<const N: usize>(
        self,
    ) -> (SortedPaths, Vec<[u8; N]>) {
        let digests = (self.recs.iter())
            .map(|m| std::array::from_fn(|i| m.sha256.get(i).copied().unwrap_or(0)))
            .collect();
        let mut paths = self.paths;
        paths.shrink_to_fit();
        (paths, digests)
    }

    /// The listed sizes, in path order.
    pub(crate) fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.recs.iter().map(Meta::size)
    }

    /// Call `f` with the path of each entry `seen` does not mark, in order (`seen` has a flag
    /// per entry; a block of paths with none unmarked is not decoded).
    pub(crate) fn each_unseen(&self, seen: &[bool], f: &mut dyn FnMut(&str)) {
        use crate::from_base::BLOCK;
        for (b, flags) in seen.chunks(BLOCK).enumerate() {
            if flags.iter().all(|s| *s) {
                continue;
            }
            let mut c = self.paths.cursor_at(b * BLOCK);
            for s in flags {
                let Some(p) = c.next_path() else { return };
                if !*s {
                    f(p);
                }
            }
        }
    }

    /// The `i`th file's listed size.
    pub(crate) fn size_of(&self, i: usize) -> Option<u64> {
        self.recs.get(i).map(Meta::size)
    }

    /// The `i`th file's listed size and SHA-256.
    pub(crate) fn size_and_sha256(&self, i: usize) -> Option<(u64, Digest)> {
        self.recs
            .get(i)
            .map(|m| (m.size(), Digest::sha256(m.sha256)))
    }

    /// The entries in path order, decoded one at a time.
    pub(crate) fn cursor(&self) -> IndexCursor<'_> {
        self.cursor_at(0)
    }

    /// The entries from the `i`th on, in path order.
    pub(crate) fn cursor_at(&self, i: usize) -> IndexCursor<'_> {
        IndexCursor {
            index: self,
            paths: self.paths.cursor_at(i),
        }
    }

    /// The position of `path`, if listed.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.paths.find(path)
    }

    /// The positions of the entries whose path starts with `folder` (a folder's path and its
    /// trailing `/`, or "" for all): they are adjacent. `scratch` is reused for the bound.
    pub(crate) fn in_folder(&self, folder: &[u8], scratch: &mut Vec<u8>) -> std::ops::Range<usize> {
        match folder.split_last() {
            None => 0..self.len(),
            Some((&last, head)) => {
                let start = self.paths.lower_bound(folder);
                // The first path above every one with this prefix: the prefix with its last
                // byte (`/`) one higher.
                scratch.clear();
                scratch.extend_from_slice(head);
                scratch.push(last.saturating_add(1));
                start..self.paths.lower_bound(scratch).max(start)
            }
        }
    }

    /// Total bytes of the listed files.
    pub fn total_size(&self) -> u64 {
        self.recs.iter().map(Meta::size).sum()
    }

    /// Heap bytes held (paths and records), for the docs' bytes-per-file figure.
    pub fn heap_bytes(&self) -> usize {
        self.paths.heap_bytes() + self.recs.capacity() * std::mem::size_of::<Meta>()
    }

    fn intern(&mut self, media_type: &str) -> u32 {
        if let Some(id) = self.last_media {
            if self.media.get(id as usize).is_some_and(|m| m == media_type) {
                return id;
            }
        }
        let id = self.intern_by_hash(media_type);
        self.last_media = Some(id);
        id
    }

    fn intern_by_hash(&mut self, media_type: &str) -> u32 {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(media_type);
        let known = self.media_ids.get(&h).copied();
        if let Some(id) = known {
            if self.media.get(id as usize).is_some_and(|m| m == media_type) {
                return id;
            }
            // Another type of the same hash (keyed per process: chance, not choice): those
            // are found by a scan.
            if let Some(i) = self.media.iter().position(|m| m == media_type) {
                return u32::try_from(i).unwrap_or(u32::MAX);
            }
        }
        let id = u32::try_from(self.media.len()).unwrap_or(u32::MAX);
        self.media.push(media_type.to_string());
        if known.is_none() {
            self.media_ids.insert(h, id);
        }
        id
    }

    fn keep(&mut self, path: &str, size: u64, sha256: [u8; 32], media_type: &str) {
        let media = self.intern(media_type);
        self.recs.push(Meta {
            sha256,
            // The halves of the size: the cast keeps the low 32 bits.
            size: [size as u32, (size >> 32) as u32],
            media,
        });
        self.paths.push(path);
    }

    /// Add a file if its path sorts after the last one's (`false`, and nothing added, if
    /// not); the entry is not checked otherwise (`create` checks its list when complete).
    pub(crate) fn push_above(
        &mut self,
        path: &str,
        size: u64,
        sha256: [u8; 32],
        media_type: &str,
    ) -> bool {
        if self
            .paths
            .last()
            .is_some_and(|last| last.as_bytes() >= path.as_bytes())
        {
            return false;
        }
        self.keep(path, size, sha256, media_type);
        true
    }

    /// The `i`th file's media type.
    pub(crate) fn media_type_of(&self, i: usize) -> Option<&str> {
        self.recs.get(i).map(|m| self.media_of(m))
    }

    /// Add the next entry (in path order), checked as [`Manifest::validate`] checks `files`.
    pub fn push(&mut self, f: FileEntry) -> std::result::Result<(), ManifestError> {
        crate::manifest::check_next(&mut self.order, &f)?;
        self.keep(&f.path, f.size, *f.sha256.as_bytes(), &f.media_type);
        Ok(())
    }

    /// Add the next entry as written (in path order), checked as [`FileIndex::push`] checks a
    /// typed one (same errors), without building it.
    fn push_wire(
        &mut self,
        w: &crate::manifest::WireEntryRef<'_>,
    ) -> std::result::Result<(), ManifestError> {
        let sha256 = w.check(&mut self.order)?;
        self.keep(&w.path, w.size, *sha256.as_bytes(), &w.media_type);
        Ok(())
    }

    /// Whether `sums` reads exactly the `SHA256SUMS` text of these files (`<hex>  <path>\n`
    /// in order), compared as two streams (each line built in one reused buffer and compared
    /// in place in the reader's).
    pub fn sha256sums_equal(&self, sums: &mut dyn BufRead) -> std::io::Result<bool> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut want = Vec::with_capacity(512);
        let mut files = self.cursor();
        while let Some(e) = files.next_entry() {
            want.clear();
            for b in e.sha256.as_bytes() {
                want.push(DIGITS[usize::from(b >> 4)]);
                want.push(DIGITS[usize::from(b & 15)]);
            }
            want.extend_from_slice(b"  ");
            want.extend_from_slice(e.path.as_bytes());
            want.push(b'\n');
            // Most lines are whole in the reader's buffer: compared there at once.
            let have = sums.fill_buf()?;
            if let Some(line) = have.get(..want.len()) {
                if line != want.as_slice() {
                    return Ok(false);
                }
                sums.consume(want.len());
                continue;
            }
            if !consume_exact(sums, &want)? {
                return Ok(false);
            }
        }
        Ok(sums.fill_buf()?.is_empty())
    }
}

impl crate::manifest::FileList for FileIndex {
    fn count(&self) -> usize {
        self.len()
    }

    fn each(
        &self,
        f: &mut dyn FnMut(IndexEntry<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut files = self.cursor();
        while let Some(e) = files.next_entry() {
            f(e)?;
        }
        Ok(())
    }
}

/// Reads a [`FileIndex`] in path order (see [`FileIndex::cursor`]).
pub(crate) struct IndexCursor<'a> {
    index: &'a FileIndex,
    paths: crate::from_base::PathCursor<'a>,
}

impl IndexCursor<'_> {
    /// The next entry and its position (`None` at the end).
    pub(crate) fn next_indexed(&mut self) -> Option<(usize, IndexEntry<'_>)> {
        let i = self.paths.position();
        let m = self.index.recs.get(i)?;
        let path = self.paths.next_path()?;
        Some((
            i,
            IndexEntry {
                path,
                size: m.size(),
                sha256: Digest::sha256(m.sha256),
                media_type: self.index.media_of(m),
            },
        ))
    }

    /// The next entry (`None` at the end).
    pub(crate) fn next_entry(&mut self) -> Option<IndexEntry<'_>> {
        self.next_indexed().map(|(_, e)| e)
    }
}

/// Whether `r` reads `want` next (consumed if so; on a difference, what differs is left).
fn consume_exact(r: &mut dyn BufRead, mut want: &[u8]) -> std::io::Result<bool> {
    while !want.is_empty() {
        let have = r.fill_buf()?;
        let n = have.len().min(want.len());
        if n == 0 || have.get(..n) != want.get(..n) {
            return Ok(false);
        }
        r.consume(n);
        want = want.get(n..).unwrap_or_default();
    }
    Ok(true)
}

/// [`FileIndex::find`] for paths that come folder by folder (a walk): the entries of the
/// current folder are found once, and each name is looked up among them alone: through a
/// hash map of the folder's names built when the walk enters it (a folder of advisory files:
/// one hash and one comparison per file instead of a binary search and a block's scan), by
/// [`FileIndex::find`] in a folder of more than [`FINDER_MAP_MAX`] entries (nested ones
/// included) or fewer than [`FINDER_MAP_MIN`].
pub(crate) struct Finder<'a, S = std::collections::hash_map::RandomState> {
    index: &'a FileIndex,
    /// The current folder, with its trailing `/` ("" at the root).
    folder: Vec<u8>,
    /// Its first entry's position.
    first: usize,
    /// Its entries' names (the part of their path after the folder), one after another.
    names: Vec<u8>,
    /// Where each name ends in `names`.
    ends: Vec<usize>,
    /// Each name's position among `ends`, by its hash (two names of one hash: not mapped).
    by_hash: std::collections::HashMap<u64, usize>,
    /// Keyed per process: names cannot be chosen to collide.
    hasher: S,
    mapped: bool,
    /// Room for the bound of a folder's range.
    bound: Vec<u8>,
}

/// Largest folder range [`Finder`] maps (memory: some 40 B per entry, reused).
const FINDER_MAP_MAX: usize = 1 << 16;
/// Smallest folder range [`Finder`] maps (a binary search of a few entries is as quick).
const FINDER_MAP_MIN: usize = 16;

impl<'a> Finder<'a> {
    pub(crate) fn new(index: &'a FileIndex) -> Self {
        Finder::with_hasher(index, std::collections::hash_map::RandomState::new())
    }
}

impl<'a, S: std::hash::BuildHasher> Finder<'a, S> {
    fn with_hasher(index: &'a FileIndex, hasher: S) -> Self {
        Finder {
            index,
            folder: Vec::new(),
            // No folder entered yet.
            first: usize::MAX,
            names: Vec::new(),
            ends: Vec::new(),
            by_hash: std::collections::HashMap::new(),
            hasher,
            mapped: false,
            bound: Vec::new(),
        }
    }

    /// Map the folder's entries (`range`, each path starting with `cut` bytes of folder).
    fn map(&mut self, range: std::ops::Range<usize>, cut: usize) {
        self.first = range.start;
        self.names.clear();
        self.ends.clear();
        self.by_hash.clear();
        self.mapped = (FINDER_MAP_MIN..=FINDER_MAP_MAX).contains(&range.len());
        if !self.mapped {
            return;
        }
        let mut c = self.index.paths.cursor_at(range.start);
        for k in 0..range.len() {
            let Some(p) = c.next_path() else {
                self.mapped = false;
                return;
            };
            let name = p.as_bytes().get(cut..).unwrap_or_default();
            let h = self.hasher.hash_one(name);
            if self.by_hash.insert(h, k).is_some() {
                // Two names of one hash: this folder is searched instead.
                self.mapped = false;
                return;
            }
            self.names.extend_from_slice(name);
            self.ends.push(self.names.len());
        }
    }

    /// The position of `path`, if listed.
    pub(crate) fn find(&mut self, path: &str) -> Option<usize> {
        let bytes = path.as_bytes();
        let cut = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let (folder, name) = bytes.split_at(cut);
        if folder != self.folder.as_slice() || self.first == usize::MAX {
            self.folder.clear();
            self.folder.extend_from_slice(folder);
            let range = self.index.in_folder(folder, &mut self.bound);
            self.map(range, cut);
        }
        if !self.mapped {
            return self.index.find(path);
        }
        let k = *self.by_hash.get(&self.hasher.hash_one(name))?;
        let start = match k {
            0 => 0,
            _ => *self.ends.get(k - 1)?,
        };
        let end = *self.ends.get(k)?;
        (self.names.get(start..end)? == name).then_some(self.first + k)
    }
}

/// The shortest file entry of a manifest: `{"mediaType":"","path":"x","sha256":"<64 hex>","size":0}`.
const MIN_ENTRY_BYTES: usize = 115;

thread_local! {
    /// Room [`IndexSink`] makes at once (records, path bytes): at most one record per
    /// shortest entry of the manifest being typed, and path bytes for a quarter of it. The
    /// pages not used are never touched (not resident); what is used is not copied and
    /// faulted in again at each doubling of the lists.
    static ROOM: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

impl FileIndex {
    /// Room for about `recs` entries and `arena` bytes of paths (a hint: front-coded paths
    /// take a fraction of their text, and the pages not used are never touched).
    fn reserve(&mut self, recs: usize, arena: usize) {
        self.recs.reserve(recs);
        self.paths.reserve(arena);
    }

    /// Give back the growth slack once the list is complete.
    pub(crate) fn finish(&mut self) {
        self.recs.shrink_to_fit();
        self.paths.shrink_to_fit();
    }
}

/// The `files` array, read into a [`FileIndex`] entry by entry (each checked as
/// [`FileIndex::push`] checks it, with the same errors).
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
                let (recs, arena) = ROOM.get();
                idx.reserve(recs, arena);
                while let Some(e) = seq.next_element::<crate::manifest::WireEntryRef<'de>>()? {
                    idx.push_wire(&e).map_err(A::Error::custom)?;
                }
                idx.finish();
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
    split_manifest(deserialize_manifest(
        serde_json::Deserializer::from_reader(input),
    )?)
}

/// [`parse_manifest`] from bytes in memory (serde_json reads a slice several times faster
/// than a reader).
///
/// Valid UTF-8 (every manifest that verifies) is checked as UTF-8 once, whole, and read as
/// text: serde_json then takes each string as it stands instead of checking each of the
/// seven strings of every entry again. Other input is read as bytes, so its error (text and
/// position) is serde_json's as before (test `borrowed_entries_read_as_typed_entries_did`).
pub fn parse_manifest_slice(
    input: &[u8],
) -> std::result::Result<(Manifest, FileIndex), ManifestError> {
    ROOM.set((input.len() / MIN_ENTRY_BYTES, input.len() / 4));
    let m = match std::str::from_utf8(input) {
        Ok(text) => deserialize_manifest(serde_json::Deserializer::from_str(text)),
        Err(_) => deserialize_manifest(serde_json::Deserializer::from_slice(input)),
    };
    ROOM.set((0, 0));
    split_manifest(m?)
}

/// The manifest with its files in a [`FileIndex`], to the end of the input.
fn deserialize_manifest<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> std::result::Result<Wire<IndexSink>, ManifestError> {
    let m = Wire::<IndexSink>::deserialize(&mut de).map_err(ManifestError::Shape)?;
    de.end().map_err(ManifestError::Shape)?;
    Ok(m)
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

/// Whether the folder's metadata is large enough for the streamed path: one of the files that
/// grow with the file count above `stream_above`, or all of them above `metadata_total` (what
/// the in-memory path reads at most).
pub(crate) fn wants_stream(dir: &Path, limits: &Limits) -> bool {
    let mut total = 0u64;
    for name in names::METADATA {
        let Ok(m) = std::fs::symlink_metadata(dir.join(name)) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        if STREAMED.contains(&name) && m.len() > limits.stream_above {
            return true;
        }
        total = total.saturating_add(m.len());
    }
    total > limits.metadata_total
}

/// The metadata files that grow with the file count, read as streams on the streamed path.
pub(crate) const STREAMED: [&str; 5] = [
    names::ENVELOPE,
    names::MANIFEST,
    names::SUMS,
    names::SUMS_DSSE,
    names::KEYLESS,
];

/// A metadata file of the folder, opened (a regular file, no link: `fs::open_regular`);
/// `None` if absent. A file above `cap` is refused on its size, before any byte is read.
pub(crate) fn open_meta(
    dir: &Path,
    name: &str,
    cap: Option<u64>,
) -> Result<Option<(File, u64, PathBuf)>> {
    let p = crate::BundlePath::new(name)
        .map_err(Error::input)?
        .under(dir);
    match crate::fs::open_regular(&p, crate::fs::Links::Refuse).at(&p)? {
        crate::fs::Opened::Missing => Ok(None),
        crate::fs::Opened::NotRegular => Err(Error::metadata_not_regular(name)),
        crate::fs::Opened::File(f, len) => {
            if let Some(cap) = cap.filter(|c| len > *c) {
                return Err(too_large(name, len, cap));
            }
            Ok(Some((f, len, p)))
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
pub(crate) const PAYLOAD_IN_MEMORY: usize = stella_dsse::jcs::MAX_INPUT_BYTES;

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

    /// The spill of a decoded payload under `limits`: in memory up to
    /// `limits.payload_in_memory` (at most [`PAYLOAD_IN_MEMORY`]).
    pub(crate) fn for_payload(limits: &Limits) -> Self {
        Spill::new(
            usize::try_from(limits.payload_in_memory)
                .unwrap_or(PAYLOAD_IN_MEMORY)
                .min(PAYLOAD_IN_MEMORY),
        )
    }

    /// Room for `n` bytes (the payload's size as far as its envelope tells, at most the
    /// bound) made at once: a payload of tens of MB is not copied and faulted in again at
    /// each doubling of its buffer.
    pub(crate) fn expecting(mut self, n: u64) -> Self {
        if let Spill::Mem(v, limit) = &mut self {
            v.reserve(usize::try_from(n).unwrap_or(usize::MAX).min(*limit));
        }
        self
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

/// The DSSE PAE of a payload (`prefix`, [`stella_dsse::stream::pae_prefix`], then the
/// payload) as a message to verify signatures over: fed straight from memory when the payload
/// is there (no copy), else read from its file.
pub(crate) struct PaeOf<'a> {
    pub(crate) prefix: Vec<u8>,
    pub(crate) payload: &'a Payload,
}

impl stella_keys::stream::MessageSource for PaeOf<'_> {
    fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        match self.payload {
            Payload::Mem(v) => {
                f(&self.prefix);
                f(v);
                Ok(())
            }
            Payload::File(file) => stella_keys::stream::Prefixed {
                prefix: self.prefix.clone(),
                body: At::new(file, 0),
            }
            .feed(f),
        }
    }
}

/// A reader that hashes and counts every byte it reads, and notes an I/O error (so a caller
/// that hands it on can tell the file's errors from its other ones).
pub(crate) struct HashEvery<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Hasher,
    pub(crate) read: u64,
    pub(crate) failed: bool,
}

impl<R> HashEvery<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashEvery {
            inner,
            hasher: Hasher::new(),
            read: 0,
            failed: false,
        }
    }
}

impl<R: Read> Read for HashEvery<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let got = buf.get(..n).unwrap_or_default();
                self.hasher.update(got);
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed |= e.kind() != std::io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

/// A writer that compares what it is given with what a reader reads (a decoded payload with
/// the file it must equal), byte for byte, instead of hashing both: it never fails; the
/// reader's first I/O error is kept.
pub(crate) struct SameAs<R> {
    pub(crate) inner: R,
    same: bool,
    pub(crate) failed: Option<std::io::Error>,
}

impl<R: BufRead> SameAs<R> {
    pub(crate) fn new(inner: R) -> Self {
        SameAs {
            inner,
            same: true,
            failed: None,
        }
    }

    /// Whether everything written equalled the reader's bytes, to its end (false after an
    /// I/O error: see `failed`).
    pub(crate) fn finish(&mut self) -> bool {
        if !self.same || self.failed.is_some() {
            return false;
        }
        match self.inner.fill_buf() {
            Ok(rest) => rest.is_empty(),
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }
}

impl<R: BufRead> Write for SameAs<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.same && self.failed.is_none() {
            match consume_exact(&mut self.inner, buf) {
                Ok(same) => self.same = same,
                Err(e) => self.failed = Some(e),
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

/// A state other threads wait on (a mutex and a condition variable): what [`Verdict`] and
/// [`IndexGate`] are built on. Nothing panics while holding its lock, so a poisoned lock is
/// taken as it is.
struct Latch<S> {
    state: Mutex<S>,
    changed: Condvar,
}

impl<S: Copy + PartialEq> Latch<S> {
    fn new(s: S) -> Self {
        Latch {
            state: Mutex::new(s),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> S {
        *self.lock()
    }

    /// Move to `f(state)` and wake every waiting thread.
    fn update(&self, f: impl FnOnce(S) -> S) {
        {
            let mut s = self.lock();
            *s = f(*s);
        }
        self.changed.notify_all();
    }

    /// Wait until the state is no longer `pending`; that state.
    fn wait_while(&self, pending: S) -> S {
        let mut s = self.lock();
        while *s == pending {
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *s
    }
}

/// The outcome of a signature check that readers on other threads stop on or wait for
/// ([`Stoppable`]). The first [`Verdict::settle`] decides; a [`Verdict::guard`] held by the
/// checking thread settles it as failed if that thread ends (or unwinds) without settling, so
/// no reader waits forever.
pub(crate) struct Verdict(Latch<Outcome>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Good,
    Failed,
}

impl Verdict {
    pub(crate) fn new() -> Self {
        Verdict(Latch::new(Outcome::Pending))
    }

    /// Settle the verdict (only the first call counts) and wake every waiting reader.
    pub(crate) fn settle(&self, good: bool) {
        let to = if good { Outcome::Good } else { Outcome::Failed };
        self.0
            .update(|s| if s == Outcome::Pending { to } else { s });
    }

    /// Settles the verdict as failed when dropped, unless it was settled before.
    pub(crate) fn guard(&self) -> SettleOnExit<'_> {
        SettleOnExit(self)
    }

    fn failed(&self) -> bool {
        self.0.get() == Outcome::Failed
    }

    /// Wait until settled; whether it is good.
    fn wait(&self) -> bool {
        self.0.wait_while(Outcome::Pending) == Outcome::Good
    }
}

/// See [`Verdict::guard`].
pub(crate) struct SettleOnExit<'a>(&'a Verdict);

impl Drop for SettleOnExit<'_> {
    fn drop(&mut self) {
        self.0.settle(false);
    }
}

/// A reader that fails once its [`Verdict`] has failed (typing a manifest whose signature
/// failed is pointless: that failure is the one reported) and, with
/// [`Stoppable::waiting_after`], hands out at most that many bytes before the verdict is
/// known, then waits for it: what an unsigned input can make the reader's consumer build is
/// bounded by that, not by the input's size.
pub(crate) struct Stoppable<'a, R> {
    inner: R,
    verdict: &'a Verdict,
    /// Bytes handed out before a read waits for a pending verdict (`u64::MAX`: never waits).
    ahead: u64,
    read: u64,
}

impl<'a, R> Stoppable<'a, R> {
    /// Never waits: fails once `verdict` has failed.
    pub(crate) fn new(inner: R, verdict: &'a Verdict) -> Self {
        Stoppable {
            inner,
            verdict,
            ahead: u64::MAX,
            read: 0,
        }
    }

    /// Hands out at most `ahead` bytes before the verdict is known, then waits for it.
    pub(crate) fn waiting_after(self, ahead: u64) -> Self {
        Stoppable { ahead, ..self }
    }
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let stopped = || std::io::Error::other("stopped: the signature did not verify");
        if self.read >= self.ahead {
            if !self.verdict.wait() {
                return Err(stopped());
            }
            self.ahead = u64::MAX;
        }
        if self.verdict.failed() {
            return Err(stopped());
        }
        let room = usize::try_from(self.ahead - self.read).unwrap_or(usize::MAX);
        let take = buf.len().min(room);
        let n = self.inner.read(&mut buf[..take])?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Stoppable<'_, R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Batches of [`BATCH`] files waiting for a hashing thread, at most.
const QUEUE: usize = 64;

/// Files handed to a hashing thread at once by a content check: one queue operation (and at
/// most one wake-up of a sleeping thread) per 256 files; consecutive files share a folder.
const BATCH: usize = 256;

/// Bytes of results a content check holds while the signed file list is not known yet
/// (path, digest and size: about 100 B per advisory file, so some 300,000 files); when they
/// are reached, the walk waits for the list.
pub(crate) const EARLY_RESULTS_BYTES: usize = 32 << 20;

/// Most bytes of one file read while the signed file list is not known yet: a larger file
/// is cut there and read again, up to its listed size, once the list is known. A file being
/// read when the list becomes known is read from then on no further than its listed size
/// (unlisted: not at all), so a huge file dropped into the folder costs at most this, and
/// usually far less.
pub(crate) const EARLY_FILE_BYTES: u64 = 1 << 30;

/// What [`check_content`] found: files and bytes checked, and the files left to the base.
pub(crate) type ContentChecked = (usize, u64, crate::from_base::FromBase);

/// The problems of a content check, whatever order its threads find them in: counted, and the
/// first ten in the order of `verify::check_files`' report (unlisted files by path, then listed
/// files missing or changed by path) named.
struct Problems(crate::error::Smallest<(Listing, String, String)>);

/// Which part of the report a problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Listing {
    Unlisted,
    Listed,
}

impl Default for Problems {
    fn default() -> Self {
        Problems(crate::error::Smallest::new())
    }
}

impl Problems {
    fn push(&mut self, listing: Listing, path: &str, text: String) {
        self.0.push((listing, path.to_string(), text));
    }

    /// The content failure, if there were problems.
    fn failure(self) -> Option<Error> {
        let count = self.0.count;
        let named: Vec<String> = self.0.sorted().into_iter().map(|(_, _, t)| t).collect();
        (count > 0).then(|| Error::content_mismatch(count, &named))
    }
}

/// The signed file list, handed from the metadata checks to a content check that started
/// before the list was known ([`check_content_early`]); or the news that the metadata failed,
/// so the content check can stop.
pub(crate) struct IndexGate<'i> {
    listed: OnceLock<(Kind, Held<'i>)>,
    state: Latch<Gate>,
    /// Listed files only checked for presence and size (`mirror load`'s image blobs, hashed
    /// by the push): taken at their listed digest.
    deferred: Option<&'i std::collections::HashSet<String>>,
}

enum Held<'i> {
    Owned(FileIndex),
    Lent(&'i FileIndex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// The list is not known yet.
    Waiting,
    /// The list is known.
    Open,
    /// The metadata failed: the content's result will not be used.
    Closed,
}

impl<'i> IndexGate<'i> {
    pub(crate) fn new() -> Self {
        IndexGate {
            listed: OnceLock::new(),
            state: Latch::new(Gate::Waiting),
            deferred: None,
        }
    }

    /// The signed list is known (and the metadata checked so far verified): the content is
    /// checked against it.
    pub(crate) fn open(&self, kind: Kind, index: FileIndex) {
        self.publish(kind, Held::Owned(index));
    }

    fn publish(&self, kind: Kind, held: Held<'i>) {
        // Once: a second list would be ignored (nobody publishes two).
        let _ = self.listed.set((kind, held));
        self.set(Gate::Open);
    }

    /// The metadata failed: the content check stops.
    pub(crate) fn close(&self) {
        self.set(Gate::Closed);
    }

    /// A guard that closes the gate if it is still waiting when dropped (an early return or
    /// a panic on the metadata side never leaves the content check waiting).
    pub(crate) fn closer(&self) -> GateCloser<'_, 'i> {
        GateCloser(self)
    }

    /// Closed stays closed.
    fn set(&self, to: Gate) {
        self.state
            .update(|s| if s == Gate::Closed { s } else { to });
    }

    fn state(&self) -> Gate {
        self.state.get()
    }

    /// Wait until the gate opens or closes.
    fn wait(&self) -> Gate {
        self.state.wait_while(Gate::Waiting)
    }

    /// The index, once published.
    pub(crate) fn listed_index(&self) -> Option<&FileIndex> {
        self.listed().map(|(_, i)| i)
    }

    /// The list, once published.
    fn listed(&self) -> Option<(Kind, &FileIndex)> {
        self.listed.get().map(|(kind, held)| match held {
            Held::Owned(i) => (*kind, i),
            Held::Lent(i) => (*kind, *i),
        })
    }

    /// The list it was given to own.
    pub(crate) fn into_index(self) -> Option<FileIndex> {
        match self.listed.into_inner() {
            Some((_, Held::Owned(i))) => Some(i),
            _ => None,
        }
    }
}

/// See [`IndexGate::closer`].
pub(crate) struct GateCloser<'a, 'i>(&'a IndexGate<'i>);

impl Drop for GateCloser<'_, '_> {
    fn drop(&mut self) {
        if self.0.state() == Gate::Waiting {
            self.0.close();
        }
    }
}

/// Files walked before the signed list was known, and what hashing each gave.
struct EarlyBatch {
    paths: crate::from_base::Paths,
    hashed: Vec<std::io::Result<crate::hash::Hashed>>,
}

/// Listed files for a hashing thread: their positions in the index and their paths (as the
/// walk found them, so the thread need not decode them from the index).
struct ListedBatch {
    positions: Vec<usize>,
    paths: crate::from_base::Paths,
}

impl ListedBatch {
    fn new() -> Self {
        ListedBatch {
            positions: Vec::with_capacity(BATCH),
            paths: crate::from_base::Paths::with_capacity(BATCH, BATCH * 64),
        }
    }
}

/// Bytes an [`EarlyBatch`] holds per file besides its path.
const EARLY_PER_FILE: usize =
    std::mem::size_of::<usize>() + std::mem::size_of::<std::io::Result<(Digest, u64)>>();

impl EarlyBatch {
    /// Room for a batch of [`BATCH`] files (no growing on the way).
    fn new() -> Self {
        EarlyBatch {
            paths: crate::from_base::Paths::with_capacity(BATCH, BATCH * 64),
            hashed: Vec::with_capacity(BATCH),
        }
    }

    fn push(&mut self, rel: &str) {
        self.paths.push(rel);
    }

    fn len(&self) -> usize {
        self.paths.len()
    }

    fn is_empty(&self) -> bool {
        self.paths.len() == 0
    }

    fn path(&self, k: usize) -> &str {
        self.paths.get(k).unwrap_or("")
    }
}

/// Work for a hashing thread.
enum Batch {
    /// Files walked before the list was known: hashed up to their first short read
    /// ([`crate::hash::End::Short`]), judged later.
    Early(EarlyBatch),
    /// Listed files, judged as they are hashed.
    Listed(ListedBatch),
}

/// Progress whose total is known only with the signed list: bytes hashed before are held back
/// and reported when the phase starts.
struct LateProgress<'p> {
    progress: &'p dyn Progress,
    started: AtomicBool,
    pending: AtomicU64,
}

impl LateProgress<'_> {
    fn start(&self, total: u64) {
        self.progress.start("verify", total);
        self.started.store(true, Ordering::SeqCst);
        self.flush();
    }

    fn advance(&self, n: u64) {
        if self.started.load(Ordering::SeqCst) {
            self.progress.advance(n);
        } else {
            self.pending.fetch_add(n, Ordering::SeqCst);
            // Started meanwhile: what was just added may have been missed by `start`.
            if self.started.load(Ordering::SeqCst) {
                self.flush();
            }
        }
    }

    fn flush(&self) {
        let n = self.pending.swap(0, Ordering::SeqCst);
        if n > 0 {
            self.progress.advance(n);
        }
    }

    fn finish(&self) {
        if self.started.load(Ordering::SeqCst) {
            self.flush();
            self.progress.finish();
        }
    }
}

/// The findings of a content check, shared by its threads.
#[derive(Default)]
struct Tally {
    problems: Mutex<Problems>,
    /// The first I/O error on a listed file: it stops the check.
    failed: Mutex<Option<Error>>,
    stop: AtomicBool,
    count: AtomicUsize,
    bytes: AtomicU64,
}

impl Tally {
    fn problem(&self, listing: Listing, path: &str, text: String) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.push(listing, path, text);
        }
    }

    fn unlisted(&self, path: &str) {
        self.problem(
            Listing::Unlisted,
            path,
            crate::error::unlisted_problem(path),
        );
    }

    /// Judge what reading the listed file `e` gave, counting a file that verified in `ok`
    /// (added to the tally with [`Tally::add`] once per batch: no shared counter written per
    /// file); false when it failed (the check stops).
    fn judge(
        &self,
        dir: &Path,
        e: &IndexEntry<'_>,
        got: std::io::Result<crate::hash::Hashed>,
        ok: &mut (usize, u64),
    ) -> bool {
        match got {
            Ok(h) if h.digest() == Some(e.sha256) && h.size == e.size => {
                ok.0 += 1;
                ok.1 += h.size;
                true
            }
            Ok(h) => {
                let text = h.changed_problem(e.path, e.size, &e.sha256);
                self.problem(Listing::Listed, e.path, text);
                true
            }
            Err(err) => {
                self.stop.store(true, Ordering::Relaxed);
                if let Ok(mut f) = self.failed.lock() {
                    f.get_or_insert(crate::hash::tree_error(dir, e.path, err));
                }
                false
            }
        }
    }

    /// Count files (and their bytes) that verified.
    fn add(&self, (files, bytes): (usize, u64)) {
        self.count.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Judges the files hashed before the signed list was known, once it is.
struct EarlyJudge<'t, 'r> {
    tally: &'t Tally,
    /// To read again a file whose size is not the listed one.
    dirs: crate::hash::DirCursor<'r>,
    buf: Vec<u8>,
    /// Files (and bytes) that verified.
    ok: (usize, u64),
}

impl EarlyJudge<'_, '_> {
    fn judge_all(&mut self, batches: Vec<EarlyBatch>, l: &mut Listed<'_>, dir: &Path) {
        use crate::hash::{hash_at, End, CHUNK};
        for mut b in batches {
            if self.tally.stop.load(Ordering::Relaxed) {
                return;
            }
            for (k, got) in std::mem::take(&mut b.hashed).into_iter().enumerate() {
                let rel = b.path(k);
                let Some(i) = l.finder.find(rel) else {
                    self.tally.unlisted(rel);
                    continue;
                };
                if let Some(s) = l.seen.get_mut(i) {
                    *s = true;
                }
                let Some((size, sha256)) = l.index.size_and_sha256(i) else {
                    continue;
                };
                // The path found is the listed one.
                let e = IndexEntry {
                    path: rel,
                    size,
                    sha256,
                    media_type: "",
                };
                // As a listed file is read (up to its listed size); cut at the early bound
                // short of it: read again.
                let got = match got.map(|h| h.against(e.size)) {
                    Ok(Some(h)) => Ok(h),
                    Ok(None) => {
                        if self.buf.is_empty() {
                            self.buf = vec![0u8; CHUNK];
                        }
                        hash_at(&mut self.dirs, rel, End::At(e.size), &mut self.buf)
                    }
                    Err(e) => Err(e),
                };
                if !self.tally.judge(dir, &e, got, &mut self.ok) {
                    break;
                }
            }
        }
    }
}

/// The signed list as a content check uses it.
struct Listed<'a> {
    kind: Kind,
    index: &'a FileIndex,
    seen: Vec<bool>,
    finder: Finder<'a>,
}

/// Stage 2 against the index: walk, look up, hash through a bounded queue (see
/// [`check_content_early`], here with the list known from the start).
pub(crate) fn check_content(
    dir: &Path,
    kind: Kind,
    index: &FileIndex,
    progress: &dyn Progress,
) -> Result<ContentChecked> {
    check_content_deferring(dir, kind, index, None, progress)
}

/// [`check_content`], the listed files in `deferred` only checked for presence and size (read
/// no byte of them: the caller hashes them before use) and taken at their listed digest.
pub(crate) fn check_content_deferring(
    dir: &Path,
    kind: Kind,
    index: &FileIndex,
    deferred: Option<&std::collections::HashSet<String>>,
    progress: &dyn Progress,
) -> Result<ContentChecked> {
    let gate = IndexGate {
        deferred,
        ..IndexGate::new()
    };
    gate.publish(kind, Held::Lent(index));
    check_content_early(dir, &gate, progress)?
        .ok_or_else(|| Error::input("the content check was stopped"))
}

/// Stage 2, started before the signed file list is known: `None` if the gate closes (the
/// metadata failed) before the check is done.
///
/// This thread walks the folder; the files are handed to the hashing threads
/// [`BATCH`] at a time through a bounded queue, in walk order, so
/// consecutive files share their folder's descriptor; each file is opened beneath the root
/// without following links and read with one call into the thread's buffer
/// ([`crate::hash::hash_at`]). Until the gate opens, the walked files are hashed without
/// being looked up, their results (path, digest, size) kept — at most
/// [`EARLY_RESULTS_BYTES`]; past that the walk waits for the list. Once it is known, each
/// file is looked up in the index as it is walked, marked seen and judged as it is hashed;
/// the early results are judged at the end (a file whose size is not the listed one is read
/// again as a listed file would be, so the report is the same whenever the list came).
pub(crate) fn check_content_early(
    dir: &Path,
    gate: &IndexGate<'_>,
    progress: &dyn Progress,
) -> Result<Option<ContentChecked>> {
    check_content_holding(dir, gate, progress, EARLY_RESULTS_BYTES, EARLY_FILE_BYTES)
}

/// [`check_content_early`] holding at most `early_cap` bytes of early results, reading at most
/// `early_file` bytes (and one more) of a file before the list is known.
fn check_content_holding(
    dir: &Path,
    gate: &IndexGate<'_>,
    progress: &dyn Progress,
    early_cap: usize,
    early_file: u64,
) -> Result<Option<ContentChecked>> {
    use crate::hash::{hash_at, hash_at_refined, DirCursor, End, Hashed, CHUNK};
    let rootfd = crate::hash::open_root(dir)?;
    let tally = Tally::default();
    let early_done: Mutex<Vec<EarlyBatch>> = Mutex::new(Vec::new());
    let report = LateProgress {
        progress,
        started: AtomicBool::new(false),
        pending: AtomicU64::new(0),
    };
    let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE);
    let rx = Mutex::new(rx);
    let hash_batches = || {
        // One read buffer and one folder cursor per thread.
        let mut buf = vec![0u8; CHUNK];
        let mut dirs = DirCursor::new(&rootfd);
        loop {
            let Ok(Ok(batch)) = rx.lock().map(|r| r.recv()) else {
                return;
            };
            if tally.stop.load(Ordering::Relaxed) || gate.state() == Gate::Closed {
                // Failed, or the metadata did: the rest is not needed.
                tally.stop.store(true, Ordering::Relaxed);
                continue;
            }
            let mut read = 0;
            match batch {
                Batch::Early(mut b) => {
                    for k in 0..b.len() {
                        if tally.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Once the list is known (or the metadata failed), a file being
                        // read is read no further than its listed size (unlisted: not at
                        // all).
                        let rel = b.path(k);
                        let mut settled = || match gate.state() {
                            Gate::Waiting => None,
                            Gate::Closed => Some(End::At(0)),
                            Gate::Open => gate.listed().map(|(_, index)| {
                                End::At(index.find(rel).and_then(|i| index.size_of(i)).unwrap_or(0))
                            }),
                        };
                        let early = End::Upto(early_file);
                        let got = hash_at_refined(&mut dirs, rel, early, &mut settled, &mut buf);
                        if let Ok(h) = &got {
                            read += h.digest().map_or(0, |_| h.size);
                        }
                        b.hashed.push(got);
                    }
                    if let Ok(mut done) = early_done.lock() {
                        done.push(b);
                    }
                }
                Batch::Listed(list) => {
                    let Some((_, index)) = gate.listed() else {
                        continue;
                    };
                    let mut ok = (0, 0);
                    for (k, &i) in list.positions.iter().enumerate() {
                        if tally.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some((size, sha256)) = index.size_and_sha256(i) else {
                            continue;
                        };
                        // The path the walk found is the listed one.
                        let e = IndexEntry {
                            path: list.paths.get(k).unwrap_or(""),
                            size,
                            sha256,
                            media_type: "",
                        };
                        let got = if gate.deferred.is_some_and(|d| d.contains(e.path)) {
                            crate::hash::size_at(&mut dirs, e.path).map(|size| Hashed {
                                size,
                                digest: e.sha256,
                                whole: true,
                            })
                        } else {
                            hash_at(&mut dirs, e.path, End::At(e.size), &mut buf)
                        };
                        if let Ok(h) = &got {
                            read += h.digest().map_or(0, |_| h.size);
                        }
                        if !tally.judge(dir, &e, got, &mut ok) {
                            break;
                        }
                    }
                    tally.add(ok);
                }
            }
            report.advance(read);
        }
    };
    // Set up for the listed phase: the list, its seen flags, a finder.
    fn listing<'a>(report: &LateProgress<'_>, (kind, index): (Kind, &'a FileIndex)) -> Listed<'a> {
        report.start(index.total_size());
        Listed {
            kind,
            index,
            seen: vec![false; index.len()],
            finder: Finder::new(index),
        }
    }
    let listing = |l| listing(&report, l);
    let mut listed = match gate.state() {
        Gate::Open => gate.listed().map(listing),
        _ => None,
    };
    let mut judged = EarlyJudge {
        tally: &tally,
        dirs: DirCursor::new(&rootfd),
        buf: Vec::new(),
        ok: (0, 0),
    };
    let walked = std::thread::scope(|s| -> Result<bool> {
        for _ in 0..crate::hash::threads() {
            s.spawn(hash_batches);
        }
        let mut early = EarlyBatch::new();
        let mut held = 0usize;
        let mut closed = false;
        let mut batch = ListedBatch::new();
        let r = crate::fs::walk_each(dir, &mut |rel| {
            if names::is_metadata(rel) {
                return Ok(());
            }
            let Some(l) = listed.as_mut() else {
                early.push(rel);
                held += rel.len() + EARLY_PER_FILE;
                if early.len() < BATCH {
                    return Ok(());
                }
                let _ = tx.send(Batch::Early(std::mem::replace(
                    &mut early,
                    EarlyBatch::new(),
                )));
                // The list may be known by now; with the early results full, wait for it.
                let state = if held >= early_cap {
                    gate.wait()
                } else {
                    gate.state()
                };
                match state {
                    Gate::Waiting => {}
                    Gate::Open => listed = gate.listed().map(listing),
                    Gate::Closed => {
                        closed = true;
                        tally.stop.store(true, Ordering::Relaxed);
                        return Err(Error::input("the content check was stopped"));
                    }
                }
                return Ok(());
            };
            match l.finder.find(rel) {
                None => tally.unlisted(rel),
                Some(i) => {
                    if let Some(s) = l.seen.get_mut(i) {
                        *s = true;
                    }
                    batch.positions.push(i);
                    batch.paths.push(rel);
                    if batch.positions.len() == BATCH {
                        let full = std::mem::replace(&mut batch, ListedBatch::new());
                        if gate.state() == Gate::Closed {
                            closed = true;
                            tally.stop.store(true, Ordering::Relaxed);
                            return Err(Error::input("the content check was stopped"));
                        }
                        if !tally.stop.load(Ordering::Relaxed) {
                            let _ = tx.send(Batch::Listed(full));
                        }
                    }
                }
            }
            Ok(())
        });
        if !closed {
            if !early.is_empty() {
                let _ = tx.send(Batch::Early(early));
            }
            if !batch.positions.is_empty() {
                let _ = tx.send(Batch::Listed(batch));
            }
        }
        drop(tx);
        if closed {
            return Ok(false);
        }
        r?;
        // While the hashing threads finish the queue: the list (waited for if the walk was
        // quicker) and the early results hashed so far, judged on this thread.
        if listed.is_none() && gate.wait() == Gate::Open {
            listed = gate.listed().map(listing);
        }
        if let Some(l) = listed.as_mut() {
            let hashed = early_done
                .lock()
                .map(|mut done| std::mem::take(&mut *done))
                .unwrap_or_default();
            judged.judge_all(hashed, l, dir);
        }
        Ok(true)
    });
    let walked = walked.inspect_err(|_| report.finish())?;
    if !walked {
        return Ok(None);
    }
    let Some(mut l) = listed else {
        // The gate closed.
        return Ok(None);
    };
    // The early results hashed since.
    judged.judge_all(early_done.into_inner().unwrap_or_default(), &mut l, dir);
    tally.add(judged.ok);
    report.finish();
    if let Some(e) = tally.failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut problems = tally.problems.into_inner().unwrap_or_default();
    let mut from_base = crate::from_base::FromBase::default();
    l.index.each_unseen(&l.seen, &mut |path| {
        if l.kind == Kind::Thin {
            from_base.push(path);
        } else {
            problems.push(Listing::Listed, path, crate::error::missing_problem(path));
        }
    });
    if let Some(e) = problems.failure() {
        return Err(e);
    }
    Ok(Some((
        tally.count.into_inner(),
        tally.bytes.into_inner(),
        from_base.done(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::NoProgress;
    use crate::Stage;

    /// A reader of `n` bytes that counts what it handed out.
    struct Counted<'a> {
        left: usize,
        out: &'a AtomicUsize,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.left).min(1000);
            buf[..n].fill(b'x');
            self.left -= n;
            self.out.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }

    /// Read `Stoppable::new(Counted(10,000 bytes)).waiting_after(ahead)` to its end on another
    /// thread; `then` runs on this one once the reader has had time to run ahead. Returns the
    /// bytes handed out before `then`, and what the read gave.
    fn read_ahead_of(ahead: u64, then: impl FnOnce(&Verdict)) -> (usize, std::io::Result<usize>) {
        let verdict = Verdict::new();
        let out = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut r = Stoppable::new(
                    Counted {
                        left: 10_000,
                        out: &out,
                    },
                    &verdict,
                )
                .waiting_after(ahead);
                let mut all = Vec::new();
                r.read_to_end(&mut all).map(|_| all.len())
            });
            // The reader either blocks at `ahead` or, wrongly, reads everything meanwhile.
            let start = std::time::Instant::now();
            while out.load(Ordering::SeqCst) < 10_000
                && start.elapsed() < std::time::Duration::from_millis(300)
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let before = out.load(Ordering::SeqCst);
            then(&verdict);
            (before, reader.join().expect("reader"))
        })
    }

    #[test]
    fn a_stoppable_reader_waits_at_its_budget_for_the_verdict() {
        // A failed verdict: never more than the budget handed out, then an error.
        let (before, r) = read_ahead_of(2_500, |v| v.settle(false));
        assert_eq!(before, 2_500, "stops exactly at the budget");
        let e = r.expect_err("failed verdict");
        assert!(e.to_string().contains("did not verify"), "{e}");
        // A good verdict: the rest follows.
        let (before, r) = read_ahead_of(2_500, |v| v.settle(true));
        assert_eq!(before, 2_500);
        assert_eq!(r.expect("good verdict"), 10_000);
        // A budget of nothing waits before the first byte.
        let (before, r) = read_ahead_of(0, |v| v.settle(true));
        assert_eq!((before, r.expect("good")), (0, 10_000));
        // The checking thread gone without a verdict (its guard dropped): failed, not a hang.
        let (_, r) = read_ahead_of(2_500, |v| drop(v.guard()));
        assert!(r.is_err());
        // The first settlement counts: a later one does not turn a failure good.
        let (_, r) = read_ahead_of(2_500, |v| {
            v.settle(false);
            v.settle(true);
        });
        assert!(r.is_err());
        // Without a budget it never waits (reads all while the verdict is pending)...
        let (before, r) = read_ahead_of(u64::MAX, |_| {});
        assert_eq!((before, r.expect("never waits")), (10_000, 10_000));
        // ...and fails at its next read once the verdict has failed.
        let verdict = Verdict::new();
        let out = AtomicUsize::new(0);
        let mut r = Stoppable::new(
            Counted {
                left: 10_000,
                out: &out,
            },
            &verdict,
        );
        let mut buf = [0u8; 100];
        assert_eq!(r.read(&mut buf).expect("pending"), 100);
        verdict.settle(false);
        assert!(r.read(&mut buf).is_err());
    }

    /// A folder of small files in a few folders, an empty one and two above one read chunk.
    fn tree() -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..400usize {
            let rel = format!("advisories/f/{:02}/x{i:04}.json", i % 9);
            let len = match i {
                5 => 0,
                7 | 300 => crate::hash::CHUNK * 2 + 3,
                _ => 200 + i % 700,
            };
            files.push((rel, (0..len).map(|k| (k * 7 + i) as u8).collect()));
        }
        files.sort();
        for (rel, data) in &files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        (dir, files)
    }

    fn index_of(files: &[(String, Vec<u8>)]) -> FileIndex {
        let list: Vec<serde_json::Value> = files
            .iter()
            .map(|(rel, data)| {
                serde_json::json!({
                    "path": rel,
                    "size": data.len(),
                    "sha256": Digest::of(data).hex(),
                    "mediaType": "application/json",
                })
            })
            .collect();
        let m = serde_json::json!({
            "bundle": "b", "version": "1", "generation": 1, "kind": "full",
            "generatedAt": "2026-12-06T10:00:00Z", "issuer": "i", "purpose": crate::PURPOSE,
            "files": list,
        });
        parse_manifest_slice(&serde_json::to_vec(&m).unwrap())
            .unwrap()
            .1
    }

    /// How the list reaches the check.
    #[derive(Debug, Clone, Copy)]
    enum When {
        /// Known from the start ([`check_content`]).
        Start,
        /// After the first batch (the walk waits for it).
        FirstBatch,
        /// Later (after the walk, most likely).
        Late,
        /// Later, every file above 100 bytes cut while the list is not known (and read again
        /// once it is).
        LateCut,
    }

    fn check(dir: &Path, kind: Kind, index: &FileIndex, when: When) -> Result<ContentChecked> {
        let (gate, cap, file_cap) = match when {
            When::Start => return check_content(dir, kind, index, &NoProgress),
            When::FirstBatch => (IndexGate::new(), 0, EARLY_FILE_BYTES),
            When::Late => (IndexGate::new(), usize::MAX, EARLY_FILE_BYTES),
            When::LateCut => (IndexGate::new(), usize::MAX, 100),
        };
        std::thread::scope(|s| {
            let h = s.spawn(|| check_content_holding(dir, &gate, &NoProgress, cap, file_cap));
            std::thread::sleep(std::time::Duration::from_millis(50));
            gate.publish(kind, Held::Lent(index));
            h.join().unwrap()
        })
        .map(|r| r.expect("the gate opened"))
    }

    const WHEN: [When; 4] = [When::Start, When::FirstBatch, When::Late, When::LateCut];

    #[test]
    fn content_checks_the_same_whenever_the_list_comes() {
        let (dir, files) = tree();
        let index = index_of(&files);
        let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        // Metadata files at the root are not content.
        std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        for when in WHEN {
            let got = check(dir.path(), Kind::Full, &index, when).unwrap();
            assert_eq!(
                got,
                (files.len(), total, crate::from_base::FromBase::default()),
                "{when:?}"
            );
        }
    }

    #[test]
    fn content_problems_are_the_same_whenever_the_list_comes() {
        let (dir, files) = tree();
        let index = index_of(&files);
        let (first, last) = (&files[0].0, &files[files.len() - 1].0);
        let big = &files
            .iter()
            .find(|(_, d)| d.len() > crate::hash::CHUNK)
            .unwrap()
            .0;
        type Spoil<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: Vec<(&str, Spoil<'_>, String)> = vec![
            (
                "same size, other bytes",
                Box::new(|d: &Path| {
                    std::fs::write(d.join(first), vec![9u8; files[0].1.len()]).unwrap()
                }),
                format!("file {first} changed"),
            ),
            (
                "longer",
                Box::new(|d: &Path| {
                    let mut data = files[files.len() - 1].1.clone();
                    data.push(1);
                    std::fs::write(d.join(last), data).unwrap()
                }),
                format!(
                    "file {last} changed: {} bytes",
                    files[files.len() - 1].1.len() + 1
                ),
            ),
            (
                "shorter, large",
                Box::new(|d: &Path| std::fs::write(d.join(big), b"short").unwrap()),
                format!("file {big} changed: 5 bytes"),
            ),
            (
                "unlisted",
                Box::new(|d: &Path| {
                    std::fs::write(d.join("advisories/f/03/new.json"), b"x").unwrap()
                }),
                "unlisted file advisories/f/03/new.json (not in the signed manifest)".to_string(),
            ),
            (
                "missing",
                Box::new(|d: &Path| std::fs::remove_file(d.join(last)).unwrap()),
                format!("file {last} is missing"),
            ),
        ];
        for (what, spoil, want) in &cases {
            let (dir, _) = tree();
            spoil(dir.path());
            let mut messages = Vec::new();
            for when in WHEN {
                let e = check(dir.path(), Kind::Full, &index, when).unwrap_err();
                assert_eq!(e.stage(), Some(Stage::Content), "{what} {when:?}");
                let msg = e.to_string();
                assert!(msg.contains(want.as_str()), "{what} {when:?}: {msg}");
                assert!(msg.contains("(1 problem)"), "{what} {when:?}: {msg}");
                messages.push(msg);
            }
            assert!(
                messages.iter().all(|m| *m == messages[0]),
                "{what}: {messages:?}"
            );
        }
        drop(dir);
    }

    #[test]
    fn links_and_thin_bundles_whenever_the_list_comes() {
        let (dir, files) = tree();
        let index = index_of(&files);
        // Thin: a listed file absent is left to the base.
        let last = files[files.len() - 1].0.clone();
        std::fs::remove_file(dir.path().join(&last)).unwrap();
        for when in WHEN {
            let (n, _, from_base) = check(dir.path(), Kind::Thin, &index, when).unwrap();
            assert_eq!(
                (n, from_base.iter().collect::<Vec<_>>()),
                (files.len() - 1, vec![last.clone()]),
                "{when:?}"
            );
        }
        // A listed file replaced by a link is refused, never read.
        std::os::unix::fs::symlink("x0000.json", dir.path().join(&last)).unwrap();
        for when in WHEN {
            let e = check(dir.path(), Kind::Full, &index, when).unwrap_err();
            assert!(
                e.to_string().contains("is a symbolic link"),
                "{when:?}: {e}"
            );
        }
    }

    #[test]
    fn a_closed_gate_stops_the_check() {
        let (dir, files) = tree();
        let index = index_of(&files);
        // Closed while the walk waits for the list, or before the check starts.
        for cap in [0, usize::MAX] {
            let gate = IndexGate::new();
            let got = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    check_content_holding(dir.path(), &gate, &NoProgress, cap, EARLY_FILE_BYTES)
                });
                std::thread::sleep(std::time::Duration::from_millis(20));
                gate.close();
                h.join().unwrap()
            });
            assert!(matches!(got, Ok(None)), "{cap}");
        }
        let gate = IndexGate::new();
        gate.close();
        assert!(matches!(
            check_content_holding(dir.path(), &gate, &NoProgress, 0, EARLY_FILE_BYTES),
            Ok(None)
        ));
        // Closing after it opened stops it too; opening a closed gate does not reopen it.
        let gate = IndexGate::new();
        gate.publish(Kind::Full, Held::Lent(&index));
        gate.close();
        assert!(matches!(
            check_content_holding(dir.path(), &gate, &NoProgress, 0, EARLY_FILE_BYTES),
            Ok(None)
        ));
        let gate = IndexGate::new();
        gate.close();
        gate.open(Kind::Full, FileIndex::default());
        assert_eq!(gate.wait(), Gate::Closed);
        // A guard left while the gate waits closes it; once open, it leaves it open.
        let gate = IndexGate::new();
        drop(gate.closer());
        assert_eq!(gate.state(), Gate::Closed);
        let gate = IndexGate::new();
        gate.open(Kind::Full, index_of(&files));
        drop(gate.closer());
        assert_eq!(gate.state(), Gate::Open);
        assert_eq!(gate.into_index().map(|i| i.len()), Some(files.len()));
    }

    #[test]
    fn progress_counts_every_byte_once() {
        struct Count(AtomicU64, AtomicU64, AtomicUsize);
        impl Progress for Count {
            fn event(&self, event: &crate::hash::Event<'_>) {
                match event {
                    crate::hash::Event::PhaseStart { total, .. } => {
                        self.1.store(*total, Ordering::SeqCst);
                        self.2.fetch_add(1, Ordering::SeqCst);
                    }
                    crate::hash::Event::Advance { n } => {
                        self.0.fetch_add(*n, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        }
        let (dir, files) = tree();
        let index = index_of(&files);
        let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        for cap in [0, usize::MAX] {
            let count = Count(AtomicU64::new(0), AtomicU64::new(0), AtomicUsize::new(0));
            let gate = IndexGate::new();
            std::thread::scope(|s| {
                let h = s.spawn(|| {
                    check_content_holding(dir.path(), &gate, &count, cap, EARLY_FILE_BYTES)
                });
                std::thread::sleep(std::time::Duration::from_millis(20));
                gate.publish(Kind::Full, Held::Lent(&index));
                h.join().unwrap().unwrap().unwrap()
            });
            assert_eq!(count.0.load(Ordering::SeqCst), total, "{cap}");
            assert_eq!(count.1.load(Ordering::SeqCst), total, "{cap}");
            assert_eq!(count.2.load(Ordering::SeqCst), 1, "{cap}");
        }
    }

    #[test]
    fn finder_finds_what_find_finds() {
        let mut paths: Vec<String> = [
            "a-c/x", "a.b", "a/b", "a/b0/c", "a/c/d/e", "a/c/d/f", "a/c/e", "a/z", "a0", "b/x",
            "top",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        paths.sort();
        let files: Vec<(String, Vec<u8>)> = paths.iter().map(|p| (p.clone(), vec![1])).collect();
        let index = index_of(&files);
        let probes = [
            "a/b", "a/c", "a/c/d", "a/c/d/e", "a/c/d/g", "a/zz", "a-c/x", "a-c/y", "a0", "a",
            "top", "b/x", "b/y", "c/x", "", "a/", "a/b0/c", "a/b0",
        ];
        // In any order (the finder's folder changes back and forth).
        for order in [probes.to_vec(), probes.iter().rev().copied().collect()] {
            let mut f = Finder::new(&index);
            for p in order {
                assert_eq!(f.find(p), index.find(p), "{p}");
            }
        }
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(Finder::new(&index).find(p), Some(i), "{p}");
        }
        // Folders mapped and not: below, within and above the mapped sizes, with a subfolder.
        let mut paths: Vec<String> = Vec::new();
        for (folder, n) in [("s", FINDER_MAP_MIN - 1), ("m", 300), ("m/sub", 20)] {
            for i in 0..n {
                paths.push(format!("{folder}/f{i:05}"));
            }
        }
        paths.sort();
        let files: Vec<(String, Vec<u8>)> = paths.iter().map(|p| (p.clone(), vec![1])).collect();
        let index = index_of(&files);
        let mut f = Finder::new(&index);
        let mut probes: Vec<String> = paths.clone();
        probes.extend(["m/sub", "m/f99999", "s/f", "m/sub/f00000x", "m/f0000"].map(String::from));
        // Walk order is not sorted order: in reverse, and back to a folder already seen.
        for p in probes.iter().rev().chain(probes.iter()) {
            assert_eq!(f.find(p), index.find(p), "{p}");
        }
        // The last probe is in `m/`, which is mapped.
        assert!(f.mapped);
    }

    /// Sorted, distinct bundle paths drawn from a few names that sort around `/` (`a-c`,
    /// `a.b`, `a`, `a0`, `é`), one to four deep (xorshift from `seed`).
    fn random_paths(seed: u64, n: usize) -> Vec<String> {
        const NAMES: [&str; 8] = ["a", "a-c", "a.b", "a0", "b", "é", "f0", "zz"];
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut paths = std::collections::BTreeSet::new();
        for _ in 0..n {
            let depth = 1 + (next() % 4) as usize;
            let parts: Vec<&str> = (0..depth).map(|_| NAMES[(next() % 8) as usize]).collect();
            paths.insert(parts.join("/"));
        }
        // A path that is also a folder is not a bundle (`a` and `a/b`): keep the deeper.
        let all: Vec<String> = paths.into_iter().collect();
        all.iter()
            .filter(|p| {
                !all.iter()
                    .any(|q| q.len() > p.len() && q.starts_with(&format!("{p}/")))
            })
            .cloned()
            .collect()
    }

    /// Entries, lookups, folder ranges and walks of the front-coded index agree with the
    /// sorted list of paths it was built from, for sets small and large (blocks cut anywhere,
    /// folders mapped and not), probes listed and not.
    #[test]
    fn front_coded_index_agrees_with_the_plain_list() {
        for (seed, n) in [(1u64, 3usize), (7, 40), (99, 400), (12345, 3000)] {
            let paths = random_paths(seed, n);
            let files: Vec<(String, Vec<u8>)> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i.to_string().into_bytes()))
                .collect();
            let index = index_of(&files);
            assert_eq!(index.len(), paths.len());
            let mut buf = Vec::new();
            let mut c = index.cursor();
            for (i, (p, data)) in files.iter().enumerate() {
                let e = index.entry(i, &mut buf).expect("entry");
                assert_eq!(
                    (e.path, e.size, e.sha256),
                    (p.as_str(), data.len() as u64, Digest::of(data))
                );
                let (j, e) = c.next_indexed().expect("next");
                assert_eq!((j, e.path, e.sha256), (i, p.as_str(), Digest::of(data)));
                assert_eq!(e.media_type, "application/json");
            }
            assert!(c.next_indexed().is_none());
            assert!(index.entry(paths.len(), &mut buf).is_none());
            // The unseen ones, for all seen (0), some (whole blocks of 16 unseen, others in
            // part) and none seen (MAX).
            for every in [0usize, 3, 17, usize::MAX] {
                let seen: Vec<bool> = (0..paths.len())
                    .map(|i| {
                        every == 0 || (every != usize::MAX && i % every != 0 && (i / 16) % 3 != 1)
                    })
                    .collect();
                let mut got = Vec::new();
                index.each_unseen(&seen, &mut |p| got.push(p.to_string()));
                let want: Vec<String> = (0..paths.len())
                    .filter(|&i| !seen[i])
                    .map(|i| paths[i].clone())
                    .collect();
                assert_eq!(got, want, "{every}");
            }
            // Probes: every path, its folders (with and without `/`), and near misses.
            let mut probes: Vec<String> = Vec::new();
            for p in &paths {
                probes.push(p.clone());
                probes.push(format!("{p}x"));
                probes.push(format!("{p}/a"));
                let mut shorter = p.clone();
                shorter.pop();
                probes.push(shorter);
                let mut at = 0;
                while let Some(k) = p[at..].find('/') {
                    probes.push(p[..at + k].to_string());
                    probes.push(p[..=at + k].to_string());
                    at += k + 1;
                }
            }
            probes.extend(["", "/", "a", "a/", "zzz", "é/", "a.b/zz/zz/zz/zz"].map(String::from));
            let mut finder = Finder::new(&index);
            // Hashes that collide: blind to a final `x` (no listed name ends so: the folders
            // are mapped, and each probe `{p}x` hashes as `p` does and must be told apart),
            // and all alike (no folder can be mapped).
            let mut blind = Finder::with_hasher(
                &index,
                WeakHash(|b: &[u8]| {
                    use std::hash::Hasher as _;
                    let mut h = std::hash::DefaultHasher::new();
                    h.write(b.strip_suffix(b"x").unwrap_or(b));
                    h.finish()
                }),
            );
            let mut alike = Finder::with_hasher(&index, WeakHash(|_: &[u8]| 7));
            let mut mapped = 0;
            for q in probes.iter().chain(probes.iter().rev()) {
                let want = paths.binary_search(q).ok();
                assert_eq!(index.find(q), want, "find {q:?}");
                assert_eq!(finder.find(q), want, "finder {q:?}");
                assert_eq!(blind.find(q), want, "blind finder {q:?}");
                assert_eq!(alike.find(q), want, "colliding finder {q:?}");
                assert!(!alike.mapped || alike.by_hash.len() < 2);
                mapped += usize::from(finder.mapped && blind.mapped);
                assert_eq!(
                    index.paths.lower_bound(q.as_bytes()),
                    paths.partition_point(|p| p < q),
                    "lower bound {q:?}"
                );
                if q.is_empty() || q.ends_with('/') {
                    let inside: Vec<usize> = (0..paths.len())
                        .filter(|&i| paths[i].starts_with(q.as_str()))
                        .collect();
                    let r = index.in_folder(q.as_bytes(), &mut Vec::new());
                    assert_eq!(r.clone().collect::<Vec<_>>(), inside, "folder {q:?}");
                }
            }
            if n >= 400 {
                assert!(mapped > 0, "some folders are mapped");
            }
        }
    }

    /// A hash of a name by a function of its bytes (for collisions on purpose).
    #[derive(Clone, Copy)]
    struct WeakHash(fn(&[u8]) -> u64);

    struct WeakHasher(fn(&[u8]) -> u64, Vec<u8>);

    impl std::hash::Hasher for WeakHasher {
        fn finish(&self) -> u64 {
            (self.0)(&self.1)
        }
        fn write(&mut self, bytes: &[u8]) {
            self.1.extend_from_slice(bytes);
        }
        /// A slice's length prefix: left out (the function sees the name's bytes alone).
        fn write_usize(&mut self, _: usize) {}
    }

    impl std::hash::BuildHasher for WeakHash {
        type Hasher = WeakHasher;
        fn build_hasher(&self) -> WeakHasher {
            WeakHasher(self.0, Vec::new())
        }
    }

    /// What the index holds per file for advisory paths (`…/osv/123/OSV-0123456.json`, 41
    /// bytes): the 44-byte record and ~13 bytes of front-coded path; whole paths took ~97.
    #[test]
    fn an_advisory_file_costs_the_index_under_60_bytes() {
        let mut index = FileIndex::default();
        let n = 100_000usize;
        for i in 0..n {
            index
                .push(FileEntry {
                    path: format!("advisories/feeds/osv/{:03}/OSV-{i:07}.json", i / 1000)
                        .parse()
                        .unwrap(),
                    size: 1024,
                    sha256: Digest::of(&i.to_le_bytes()),
                    media_type: "application/json".into(),
                })
                .unwrap();
        }
        index.finish();
        let per_file = index.heap_bytes() as f64 / n as f64;
        assert!(
            (44.0..60.0).contains(&per_file),
            "{per_file} bytes per file"
        );
    }

    /// Media types are interned by hash: a manifest naming a new one for every file types in
    /// one pass (a scan of those seen so far made it quadratic: hours for a million), and
    /// each entry keeps its own.
    #[test]
    fn many_media_types_are_interned_and_read_back() {
        let mut index = FileIndex::default();
        let n = 50_000;
        for i in 0..n {
            index
                .push(FileEntry {
                    path: format!("a/{i:06}").parse().unwrap(),
                    size: i as u64,
                    sha256: Digest::of(&[]),
                    media_type: format!("application/x-{}", i % (n / 2)),
                })
                .unwrap();
        }
        assert_eq!(index.media.len(), n / 2);
        for i in [0, 1, n / 2, n - 1] {
            let e = index.get(i).unwrap();
            assert_eq!(e.media_type, format!("application/x-{}", i % (n / 2)));
            assert_eq!(e.size, i as u64);
        }
        // Two types of one hash (made so: `b`'s hash taken by `a`): each keeps its own id.
        use std::hash::BuildHasher as _;
        let mut index = FileIndex::default();
        let a = index.intern("a");
        let hb = index.hasher.hash_one("b");
        index.media_ids.insert(hb, a);
        let b = index.intern("b");
        assert_ne!(a, b);
        assert_eq!((index.intern("a"), index.intern("b")), (a, b));
        assert_eq!(index.media, ["a", "b"]);
        assert_eq!(index.media_ids.get(&hb), Some(&a));
    }

    /// The `files` sink as it was: each entry typed into a `FileEntry` (three `String`s),
    /// then pushed.
    struct TypedSink(FileIndex);

    impl<'de> Deserialize<'de> for TypedSink {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = TypedSink;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a list of file entries")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<TypedSink, A::Error> {
                    let mut idx = FileIndex::default();
                    while let Some(e) = seq.next_element::<FileEntry>()? {
                        idx.push(e).map_err(A::Error::custom)?;
                    }
                    Ok(TypedSink(idx))
                }
            }
            d.deserialize_seq(V)
        }
    }

    /// The borrowed entries of [`IndexSink`] refuse what typed entries refused, with the same
    /// text and position (serde's own errors: shape, types, fields; then the entry rules, in
    /// order), and index the same files.
    #[test]
    fn borrowed_entries_read_as_typed_entries_did() {
        let d = Digest::of(b"x").hex();
        let entry = |path: &str, size: &str, sha: &str, media: &str| {
            format!(r#"{{"mediaType":{media},"path":{path},"sha256":{sha},"size":{size}}}"#)
        };
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let e = |p: &str| entry(&q(p), "1", &q(&d), &q("t"));
        let mut lists: Vec<String> = vec![
            format!("[{}]", e("a/b")),
            format!("[{},{},{}]", e("a"), e("a-b/c"), e("b/c")),
            "[]".to_string(),
            // Escaped text (not borrowed) reads the same.
            format!(
                "[{}]",
                entry(r#""a\u002fb""#, "1", &q(&d), r#""te\u0078t""#)
            ),
        ];
        let good = lists.len();
        for (path, size, sha, media) in [
            (q("../x"), "1".to_string(), q(&d), q("t")),
            (q("/x"), "1".into(), q(&d), q("t")),
            (q("a//b"), "1".into(), q(&d), q("t")),
            (q("a\\b"), "1".into(), q(&d), q("t")),
            (q(""), "1".into(), q(&d), q("t")),
            (q("x"), "1".into(), q(&d.to_uppercase()), q("t")),
            (q("x"), "1".into(), q("nothex"), q("t")),
            (q("../x"), "1".into(), q("nothex"), q("t")),
            (q("x"), "9007199254740992".into(), q(&d), q("t")),
            (q("x"), "9007199254740992".into(), q(&d), q("")),
            (q("x"), "1".into(), q(&d), q("")),
            (q("manifest.json"), "1".into(), q(&d), q("t")),
            (q("SHA256SUMS"), "1".into(), q("bad"), q("t")),
            (q("x"), "-1".into(), q(&d), q("t")),
            (q("x"), "1.5".into(), q(&d), q("t")),
            (q("x"), "\"1\"".into(), q(&d), q("t")),
            (q("x"), "1".into(), "7".into(), q("t")),
            (q("x"), "1".into(), q(&d), "null".into()),
            ("1".into(), "1".into(), q(&d), q("t")),
        ] {
            lists.push(format!(
                "[{},{}]",
                e("a"),
                entry(&path, &size, &sha, &media)
            ));
        }
        // Order, folders, repeats.
        for (a, b) in [("b", "a"), ("a", "a"), ("a", "a/b")] {
            lists.push(format!("[{},{}]", e(a), e(b)));
        }
        // Shapes serde refuses.
        lists.extend([
            r#"[{"path":"x","size":1,"sha256":"00"}]"#.to_string(),
            format!(r#"[{{"path":"x","size":1,"sha256":"{d}","mediaType":"t","extra":1}}]"#),
            format!(r#"[{{"path":"x","path":"y","size":1,"sha256":"{d}","mediaType":"t"}}]"#),
            "[1]".into(),
            "[[]]".into(),
            "[{}]".into(),
            "{}".into(),
            "[".into(),
        ]);
        let manifest = |files: &str| {
            format!(
                r#"{{"bundle":"b","files":{files},"generatedAt":"2026-12-06T10:00:00Z","generation":1,"issuer":"i","kind":"full","purpose":"{}","version":"1"}}"#,
                crate::PURPOSE
            )
        };
        let listing = |idx: &FileIndex| -> Vec<String> {
            (0..idx.len())
                .map(|i| format!("{:?}", idx.get(i)))
                .collect()
        };
        for (n, files) in lists.iter().enumerate() {
            let text = manifest(files);
            let typed = serde_json::from_slice::<Wire<TypedSink>>(text.as_bytes())
                .map(|w| listing(&w.with_files(TypedFiles::default()).1 .0))
                .map_err(|e| ManifestError::Shape(e).to_string());
            let borrowed = parse_manifest_slice(text.as_bytes())
                .map(|(_, idx)| listing(&idx))
                .map_err(|e| e.to_string());
            // From a reader (a spilled payload), serde_json's positions are its own.
            let typed_reader = serde_json::from_reader::<_, Wire<TypedSink>>(text.as_bytes())
                .map(|w| listing(&w.with_files(TypedFiles::default()).1 .0))
                .map_err(|e| ManifestError::Shape(e).to_string());
            let from_reader = parse_manifest(text.as_bytes())
                .map(|(_, idx)| listing(&idx))
                .map_err(|e| e.to_string());
            assert_eq!(borrowed, typed, "{text}");
            assert_eq!(from_reader, typed_reader, "{text}");
            assert_eq!(typed.is_ok(), n < good, "{text}: {typed:?}");
        }
        // Not UTF-8 (read as bytes, not as text): the same refusal at the same position,
        // wherever the bad byte is; valid non-ASCII text reads as typed entries did.
        let text = manifest(&format!("[{},{}]", e("a/b"), e("é/ü")));
        let mut cases: Vec<Vec<u8>> = vec![text.clone().into_bytes()];
        for at in ["a/b", "é", "\"t\"", "mediaType", "issuer", "2026", ":", ","] {
            for bad in [&[0xffu8][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0xe2, 0x82]] {
                let k = text.find(at).unwrap();
                let mut b = text.clone().into_bytes();
                b.splice(k..k, bad.iter().copied());
                cases.push(b);
            }
        }
        for (n, bytes) in cases.iter().enumerate() {
            let typed = serde_json::from_slice::<Wire<TypedSink>>(bytes)
                .map(|w| listing(&w.with_files(TypedFiles::default()).1 .0))
                .map_err(|e| ManifestError::Shape(e).to_string());
            let borrowed = parse_manifest_slice(bytes)
                .map(|(_, idx)| listing(&idx))
                .map_err(|e| e.to_string());
            assert_eq!(borrowed, typed, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(typed.is_ok(), n == 0, "{typed:?}");
        }
    }

    /// `PaeOf` feeds the PAE of the payload, in memory or in a file, every time it is asked.
    #[test]
    fn pae_of_a_payload_is_its_pae() {
        use stella_keys::stream::MessageSource as _;
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let want = stella_dsse::pae("application/x", &payload);
        let prefix = stella_dsse::stream::pae_prefix("application/x", payload.len() as u64);
        let mut spilled = Spill::new(1000);
        spilled.write_all(&payload).unwrap();
        for (k, held) in [Payload::Mem(payload.clone()), spilled.finish().unwrap()]
            .iter()
            .enumerate()
        {
            assert_eq!(held.bytes().is_none(), k == 1);
            let mut src = PaeOf {
                prefix: prefix.clone(),
                payload: held,
            };
            for _ in 0..2 {
                let mut got = Vec::new();
                src.feed(&mut |c| got.extend_from_slice(c)).unwrap();
                assert!(got == want);
            }
        }
    }

    #[test]
    fn sha256sums_are_compared_as_streams() {
        let (_dir, files) = tree();
        let index = index_of(&files);
        let text: String = files
            .iter()
            .map(|(p, d)| format!("{}  {p}\n", Digest::of(d).hex()))
            .collect();
        let same = |t: &[u8], cap: usize| {
            index
                .sha256sums_equal(&mut std::io::BufReader::with_capacity(cap, t))
                .unwrap()
        };
        for cap in [1, 7, 64, 1 << 16] {
            assert!(same(text.as_bytes(), cap), "{cap}");
            assert!(!same(&text.as_bytes()[..text.len() - 1], cap), "{cap}");
            assert!(!same(format!("{text}x").as_bytes(), cap), "{cap}");
            assert!(!same(text.replacen("  ", " *", 1).as_bytes(), cap), "{cap}");
            let last = text.rfind("x0").unwrap();
            let mut changed = text.clone().into_bytes();
            changed[last] = b'y';
            assert!(!same(&changed, cap), "{cap}");
            assert!(!same(b"", cap), "{cap}");
        }
        assert!(FileIndex::default()
            .sha256sums_equal(&mut &b""[..])
            .unwrap());
    }
}
