//! The safe stream reader of bundle archives, behind `verify X.tar.zst`, `unpack` and thin
//! `apply`.
//!
//! **Reading** refuses, before writing anything for the entry: absolute paths, `..`, links
//! (symbolic and hard), devices and FIFOs, duplicate entries, entries that do not fit the
//! size limits, and — once `manifest.json` has been seen — entries the manifest does not list
//! or lists with another size. Content is hashed as it streams. The archive itself is written
//! by [`crate::pack`] and compressed by [`crate::codec`].

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::codec::{decompress, open_bundle_stream, ReadAhead, ZSTD_WINDOW_LOG_MAX};
use crate::error::{Error, IoContext as _, Result, Stage};
use crate::hash::{Digest, Hasher, Progress, CHUNK};
use crate::manifest::Manifest;
use crate::names;
use crate::path::BundlePath;
use crate::verify::{self, Options, Report, VerifiedMetadata};

/// Limits for reading an archive. The signed manifest is the real bound: no content entry is
/// written unless the verified manifest lists it, and never beyond its signed size. These
/// limits cap what even a correctly signed bundle may put on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry.
    pub max_entry: u64,
    /// Largest total of all content entries.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: 64 << 30,
            max_total: 1 << 40,
        }
    }
}

/// What streaming through a bundle archive found.
#[derive(Debug, Default)]
pub struct Observed {
    /// Metadata files, in memory until they verified and were staged: then (before the
    /// first content byte is read) their bytes are released and each name maps to an empty
    /// `Vec` (`metadata_bytes` keeps their total size).
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Total size of the metadata files.
    pub metadata_bytes: u64,
    /// Content files: path → (size, digest).
    pub files: BTreeMap<String, (u64, Digest)>,
}

/// Stream through a bundle archive and verify it; with `staging`, also write the content files
/// there (a fresh, empty folder the caller owns and removes on failure).
///
/// The metadata comes first (as `pack` writes it) and is verified — signature, threshold,
/// header, checksum files, freshness — when the first content entry arrives, before a byte of
/// content is read. From then on an entry is accepted only if the signed manifest lists it,
/// with exactly the signed size, and its digest is checked as soon as it ends.
pub fn read_archive(
    archive: &Path,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let reader = Box::new(ReadAhead::new(open_bundle_stream(archive)?));
    let total = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress.start("read", total);
    let r = read_entries(reader, staging, limits, opts, progress);
    progress.finish();
    r.map_err(|e| match e {
        Error::Verify(m) => Error::verify(m.stage, format!("{}: {m}", archive.display())),
        e => e,
    })
}

/// [`read_archive`] over any byte stream (gzip, zstd or plain tar, told apart by magic bytes),
/// on the calling thread: what the `archive` fuzz target drives.
pub fn read_stream<R: Read + Send + 'static>(
    reader: R,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let r = decompress(BufReader::new(reader), Some(ZSTD_WINDOW_LOG_MAX))
        .map_err(|e| bad(format!("corrupt archive: {e}")))?;
    read_entries(r, staging, limits, opts, progress)
}

fn bad(msg: String) -> Error {
    Error::verify(Stage::Archive, msg)
}

/// The name of an extension header type, or `None` for an ordinary entry.
fn extension_kind(kind: tar::EntryType) -> Option<&'static str> {
    if kind.is_pax_local_extensions() {
        Some("PAX extended header (type x)")
    } else if kind.is_pax_global_extensions() {
        Some("PAX global header (type g)")
    } else if kind.is_gnu_longname() {
        Some("GNU long-name header (type L)")
    } else if kind.is_gnu_longlink() {
        Some("GNU long-link header (type K)")
    } else if kind.is_gnu_sparse() {
        Some("GNU sparse file (type S)")
    } else {
        None
    }
}

fn read_entries(
    reader: Box<dyn Read + Send>,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let mut ar = tar::Archive::new(reader);
    let mut obs = Observed::default();
    let mut verified: Option<VerifiedMetadata> = None;
    let mut meta_total: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    // Raw entries: the tar crate applies no PAX record (whose `size` would override the header
    // we check) and reads no GNU long name into memory. Every header reaches the checks below,
    // and each entry's data is exactly the 512-byte-header size we checked.
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
        .raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        // At most 256 bytes (ustar prefix + name): raw entries have no long names.
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if let Some(ext) = extension_kind(kind) {
            return Err(bad(format!(
                "entry {shown:?} is a {ext}: bundle archives never carry extension headers \
                 (`stella mirror pack` writes plain ustar)"
            )));
        }
        match kind {
            k if k.is_symlink() => {
                return Err(bad(format!(
                    "entry {shown:?} is a symbolic link: bundles hold regular files only"
                )))
            }
            k if k.is_hard_link() => {
                return Err(bad(format!(
                    "entry {shown:?} is a hard link: bundles hold regular files only"
                )))
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                return Err(bad(format!(
                    "entry {shown:?} is a device or FIFO: bundles hold regular files only"
                )))
            }
            k if k.is_dir() => {
                return Err(bad(format!(
                    "entry {shown:?} is a directory: bundle archives hold regular files only \
                     (`stella mirror pack` writes no directory entries)"
                )))
            }
            k if k.is_file() => {}
            other => {
                return Err(bad(format!(
                "entry {shown:?} has unsupported type {other:?}: bundles hold regular files only"
            )))
            }
        }
        let text = std::str::from_utf8(&raw)
            .map_err(|_| bad(format!("entry {shown:?}: path is not UTF-8")))?;
        let p = text.strip_prefix("./").unwrap_or(text);
        let path = BundlePath::new(p).map_err(|e| {
            if p.starts_with('/') {
                bad(format!("entry {shown:?}: absolute path refused"))
            } else {
                bad(format!("entry {shown:?}: unsafe path refused: {e}"))
            }
        })?;
        let name = path.as_str().to_string();
        // Every earlier entry is in `obs` (a failed one ended the read).
        if obs.metadata.contains_key(&name) || obs.files.contains_key(&name) {
            return Err(bad(format!("duplicate entry {shown:?}")));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad(format!("entry {shown:?}: {e}")))?;
        let is_meta = names::is_metadata(&name);
        let signed: Option<Digest> = if is_meta {
            if verified.is_some() {
                return Err(bad(format!(
                    "metadata entry {shown:?} comes after content entries: the metadata must \
                     come first (as `stella mirror pack` writes it)"
                )));
            }
            if size > crate::MAX_METADATA_BYTES {
                return Err(bad(format!(
                    "entry {shown:?} is {size} bytes, above the {}-byte limit for bundle metadata (oversize entry)",
                    crate::MAX_METADATA_BYTES
                )));
            }
            meta_total = meta_total.saturating_add(size);
            if meta_total > crate::MAX_METADATA_TOTAL {
                return Err(bad(format!(
                    "the metadata entries exceed {} bytes in all (oversize at entry {shown:?})",
                    crate::MAX_METADATA_TOTAL
                )));
            }
            None
        } else {
            if size > limits.max_entry {
                return Err(bad(format!(
                    "entry {shown:?} is {size} bytes, above the {}-byte entry limit (oversize entry)",
                    limits.max_entry
                )));
            }
            let vm = match verified.as_ref() {
                Some(vm) => vm,
                None => {
                    if !obs.metadata.contains_key(names::ENVELOPE) {
                        return Err(bad(format!(
                            "content entry {shown:?} comes before manifest.dsse: the signed \
                             manifest must come first (as `stella mirror pack` writes it)"
                        )));
                    }
                    // Everything is checked before the first content byte is read.
                    let vm = verify::verify_metadata(&obs.metadata, opts)?;
                    check_signed_limits(&vm.manifest, limits)?;
                    stage_metadata(staging, &obs.metadata)?;
                    release_metadata(&mut obs);
                    verified.insert(vm)
                }
            };
            match vm.manifest.file(&name) {
                None => {
                    return Err(bad(format!(
                        "unlisted entry {shown:?}: the signed manifest does not list it"
                    )))
                }
                Some(f) if f.size != size => {
                    return Err(bad(format!(
                        "entry {shown:?} is {size} bytes but the manifest lists {} (oversize or truncated entry)",
                        f.size
                    )))
                }
                Some(f) => Some(crate::hash::parse_hex(&f.sha256).ok_or_else(|| {
                    bad(format!("manifest entry {name} has a malformed sha256"))
                })?),
            }
        };
        let mut out = match (staging, is_meta) {
            (Some(s), false) => {
                let dest = path.under(s);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        bad(format!("entry {shown:?} conflicts with another entry: {e}"))
                    })?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| bad(format!("entry {shown:?} cannot be created: {e}")))?;
                Some(BufWriter::with_capacity(CHUNK, f))
            }
            _ => None,
        };
        let mut h = Hasher::new();
        // Metadata sizes are bounded above (MAX_METADATA_BYTES): one allocation each.
        let mut meta_bytes = Vec::with_capacity(if is_meta { size as usize } else { 0 });
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(format!("entry {shown:?}: corrupt archive: {e}"))),
            };
            // The entry reader stops at `size`; this keeps the bound if that ever changed.
            if h.len().saturating_add(n as u64) > size {
                return Err(bad(format!(
                    "entry {shown:?} holds more than its {size} bytes"
                )));
            }
            h.update(&buf[..n]);
            if is_meta {
                meta_bytes.extend_from_slice(&buf[..n]);
            }
            if let Some(w) = out.as_mut() {
                w.write_all(&buf[..n]).at(&name)?;
            }
            progress.advance(n as u64);
        }
        if h.len() != size {
            return Err(bad(format!("entry {shown:?} is truncated")));
        }
        if let Some(mut w) = out {
            w.flush().at(&name)?;
        }
        let digest = h.finish();
        if let Some(want) = signed {
            if digest != want {
                return Err(bad(format!(
                    "file {name} changed: {size} bytes sha256:{}, the manifest says sha256:{}",
                    digest.hex(),
                    want.hex()
                )));
            }
            obs.files.insert(name, (size, digest));
        } else {
            obs.metadata.insert(name, meta_bytes);
        }
    }
    let meta = match verified {
        Some(vm) => vm,
        None => {
            let vm = verify::verify_metadata(&obs.metadata, opts)?;
            stage_metadata(staging, &obs.metadata)?;
            release_metadata(&mut obs);
            vm
        }
    };
    let (files_checked, bytes_checked, from_base) =
        verify::check_files(&meta.manifest, &obs.files)?;
    Ok((
        obs,
        Report {
            meta,
            files_checked,
            bytes_checked,
            from_base,
        },
    ))
}

/// Release the metadata bytes once verified and staged (for many small files the manifest,
/// its envelope and the checksum files are most of the memory); keep names and total size.
fn release_metadata(obs: &mut Observed) {
    obs.metadata_bytes = obs.metadata.values().map(|m| m.len() as u64).sum();
    for bytes in obs.metadata.values_mut() {
        *bytes = Vec::new();
    }
}

/// Write the (verified) metadata files into the staging folder.
fn stage_metadata(staging: Option<&Path>, metadata: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let Some(s) = staging else { return Ok(()) };
    for (name, bytes) in metadata {
        let dest = BundlePath::new(name)
            .map_err(|e| bad(e.to_string()))?
            .under(s);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .at(&dest)?;
        f.write_all(bytes).at(&dest)?;
    }
    Ok(())
}

/// A verified manifest whose listed files do not fit the limits is refused before any of them
/// is written.
fn check_signed_limits(manifest: &Manifest, limits: Limits) -> Result<()> {
    if let Some(f) = manifest.files.iter().find(|f| f.size > limits.max_entry) {
        return Err(bad(format!(
            "the signed manifest lists {} at {} bytes, above the {}-byte entry limit (oversize entry)",
            f.path, f.size, limits.max_entry
        )));
    }
    let total = manifest
        .files
        .iter()
        .fold(0u64, |a, f| a.saturating_add(f.size));
    if total > limits.max_total {
        return Err(bad(format!(
            "the signed manifest lists {total} bytes of files, above the {}-byte limit",
            limits.max_total
        )));
    }
    Ok(())
}

/// Verify an archive from its stream (no extraction).
pub fn verify_archive(path: &Path, opts: &Options<'_>, progress: &dyn Progress) -> Result<Report> {
    let (_, report) = read_archive(path, None, Limits::default(), opts, progress)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::open_decompressed;
    use crate::fs::{read_metadata_file, walk};
    use std::path::PathBuf;
    use std::sync::Arc;

    // --------------------------------------------------------------------------------------
    // Hostile streams (issue #8 items 2 and 3). The streams are generated on the fly and count
    // the bytes the reader pulls, so "refused before reading" is measured, not assumed.
    // --------------------------------------------------------------------------------------

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering};

    enum Part {
        Bytes(Vec<u8>),
        /// `n` bytes of `b`, generated lazily.
        Fill(u8, u64),
    }

    /// A tar stream assembled from parts; counts what was read from it.
    struct Synth {
        parts: VecDeque<Part>,
        pos: usize,
        consumed: Arc<AtomicU64>,
    }

    impl Read for Synth {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            loop {
                let Some(front) = self.parts.front_mut() else {
                    return Ok(0);
                };
                let n = match front {
                    Part::Bytes(b) => {
                        let n = out.len().min(b.len() - self.pos);
                        out[..n].copy_from_slice(&b[self.pos..self.pos + n]);
                        self.pos += n;
                        if self.pos == b.len() {
                            self.parts.pop_front();
                            self.pos = 0;
                        }
                        n
                    }
                    Part::Fill(byte, left) => {
                        let n = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                        out[..n].fill(*byte);
                        *left -= n as u64;
                        if *left == 0 {
                            self.parts.pop_front();
                        }
                        n
                    }
                };
                if n > 0 {
                    self.consumed.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
            }
        }
    }

    /// Builds a tar stream header by header.
    #[derive(Default)]
    struct Tar {
        parts: Vec<Part>,
    }

    impl Tar {
        fn header(&mut self, name: &str, size: u64, kind: tar::EntryType) -> &mut Self {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_entry_type(kind);
            h.set_cksum();
            self.parts.push(Part::Bytes(h.as_bytes().to_vec()));
            self
        }
        fn pad(&mut self, size: u64) -> &mut Self {
            let pad = (512 - (size % 512)) % 512;
            if pad > 0 {
                self.parts.push(Part::Bytes(vec![0; pad as usize]));
            }
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.header(name, data.len() as u64, tar::EntryType::Regular);
            self.parts.push(Part::Bytes(data.to_vec()));
            self.pad(data.len() as u64)
        }
        /// A regular entry of `size` bytes of `byte`.
        fn filled(&mut self, name: &str, size: u64, byte: u8) -> &mut Self {
            self.header(name, size, tar::EntryType::Regular);
            self.parts.push(Part::Fill(byte, size));
            self.pad(size)
        }
        fn raw(&mut self, data: Vec<u8>) -> &mut Self {
            self.parts.push(Part::Bytes(data));
            self
        }
        fn stream(&mut self) -> (Box<dyn Read + Send>, Arc<AtomicU64>) {
            self.parts.push(Part::Bytes(vec![0; 1024]));
            let consumed = Arc::new(AtomicU64::new(0));
            let s = Synth {
                parts: std::mem::take(&mut self.parts).into(),
                pos: 0,
                consumed: Arc::clone(&consumed),
            };
            (Box::new(s), consumed)
        }
    }

    /// The shared signed bundle ([`crate::testing::SignedBundle`]) and stream helpers.
    struct Signed(crate::testing::SignedBundle);

    impl Signed {
        fn new() -> Self {
            Signed(crate::testing::SignedBundle::new())
        }

        fn opts(&self) -> Options<'_> {
            self.0.opts()
        }

        fn bundle(&self) -> PathBuf {
            self.0.bundle()
        }

        /// The metadata entries in pack order.
        fn metadata(&self, t: &mut Tar) {
            for name in names::METADATA {
                if let Some(b) = read_metadata_file(&self.bundle(), name).unwrap() {
                    t.file(name, &b);
                }
            }
        }

        fn content(&self, path: &str) -> Vec<u8> {
            std::fs::read(BundlePath::new(path).unwrap().under(&self.bundle())).unwrap()
        }

        fn read(&self, t: &mut Tar, staging: Option<&Path>) -> (Result<(Observed, Report)>, u64) {
            let (r, consumed) = t.stream();
            let res = read_entries(r, staging, Limits::default(), &self.opts(), &NoopProgress);
            (res, consumed.load(Ordering::Relaxed))
        }
    }

    struct NoopProgress;
    impl Progress for NoopProgress {}

    fn err_text<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        walk(dir)
            .unwrap()
            .iter()
            .map(|p| std::fs::metadata(dir.join(p)).unwrap().len())
            .sum()
    }

    /// Bytes of content (not metadata) files under `dir`.
    fn content_bytes(dir: &Path) -> u64 {
        walk(dir)
            .unwrap()
            .iter()
            .filter(|p| !names::is_metadata(p))
            .map(|p| std::fs::metadata(dir.join(p)).unwrap().len())
            .sum()
    }

    const BIG: u64 = 64 << 20;

    /// One PAX record: `LEN key=value\n`, LEN counting the whole record.
    fn pax_record(kv: &str) -> String {
        let body = format!(" {kv}\n");
        let mut len = body.len() + 1;
        loop {
            let total = len.to_string().len() + body.len();
            if total == len {
                return format!("{len}{body}");
            }
            len = total;
        }
    }

    #[test]
    fn the_honest_stream_reads_and_verifies() {
        let s = Signed::new();
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        s.metadata(&mut t);
        let content: Vec<String> = walk(&s.bundle())
            .unwrap()
            .into_iter()
            .filter(|p| !names::is_metadata(p))
            .collect();
        assert!(content.len() > 2, "{content:?}");
        let mut bytes = 0;
        for p in &content {
            let data = s.content(p);
            bytes += data.len() as u64;
            t.file(p, &data);
        }
        let (r, _) = s.read(&mut t, Some(staging.path()));
        let (obs, report) = r.unwrap();
        assert_eq!(report.files_checked, content.len());
        assert_eq!(obs.files.len(), content.len());
        assert!(obs.metadata.values().all(|m| m.is_empty()), "released");
        assert!(obs.metadata.contains_key(names::MANIFEST));
        assert_eq!(dir_bytes(staging.path()), bytes + obs.metadata_bytes);
    }

    // Regression (issue #8 item 2): a PAX `size` record made the tar crate read far more than
    // the ustar size the limits had checked.
    #[test]
    fn pax_headers_are_refused_before_their_records_apply() {
        let s = Signed::new();
        let record = pax_record(&format!("size={BIG}"));
        assert_eq!(record, format!("17 size={BIG}\n"));
        let mut t = Tar::default();
        t.header(
            "PaxHeaders/manifest.dsse",
            record.len() as u64,
            tar::EntryType::XHeader,
        )
        .raw(record.clone().into_bytes())
        .pad(record.len() as u64)
        .header(names::ENVELOPE, 10, tar::EntryType::Regular)
        .raw(vec![b'{'; 1]);
        t.parts.push(Part::Fill(b' ', BIG));
        let (r, consumed) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(e.contains("PAX extended header (type x)"), "{e}");
        assert!(consumed < 64 * 1024, "read {consumed} bytes");
        // A global header is refused the same way.
        let mut t = Tar::default();
        t.header("pax_global_header", 20, tar::EntryType::XGlobalHeader)
            .raw(b"20 size=99999999999\n".to_vec())
            .pad(20);
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("PAX global header (type g)"), "{e}");
    }

    // Regression (issue #8 item 2): a GNU long name was read into memory whatever its size.
    #[test]
    fn gnu_long_names_and_links_are_refused_unread() {
        let s = Signed::new();
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long-name header (type L)"),
            (tar::EntryType::GNULongLink, "GNU long-link header (type K)"),
            (tar::EntryType::GNUSparse, "GNU sparse file (type S)"),
        ] {
            let mut t = Tar::default();
            t.header("././@LongLink", BIG, kind);
            t.parts.push(Part::Fill(b'a', BIG));
            t.pad(BIG).file(names::ENVELOPE, b"{}");
            let (r, consumed) = s.read(&mut t, None);
            let e = err_text(r);
            assert!(e.contains(what), "{e}");
            assert!(consumed < 64 * 1024, "{what}: read {consumed} bytes");
        }
    }

    // Regression (issue #8 item 3): content was written to disk before the signature was
    // checked; a small archive could fill the disk up to the 1 TiB entry limit.
    #[test]
    fn content_before_the_signed_manifest_is_neither_read_nor_written() {
        let s = Signed::new();
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        t.filled("advisories/fill.bin", BIG, 0);
        s.metadata(&mut t);
        let (r, consumed) = s.read(&mut t, Some(staging.path()));
        let e = err_text(r);
        assert!(e.contains("comes before manifest.dsse"), "{e}");
        assert!(consumed < 64 * 1024, "read {consumed} bytes");
        assert_eq!(dir_bytes(staging.path()), 0);
    }

    #[test]
    fn content_is_held_to_the_signed_manifest_while_it_streams() {
        let s = Signed::new();
        let a = s.content("advisories/a.json");
        type Hostile = Box<dyn Fn(&mut Tar)>;
        let cases: Vec<(&str, Hostile, &str)> = vec![
            (
                "unlisted",
                Box::new(|t: &mut Tar| {
                    t.filled("advisories/fill.bin", BIG, 0);
                }),
                "unlisted entry \"advisories/fill.bin\"",
            ),
            (
                "larger than signed",
                Box::new(|t: &mut Tar| {
                    t.filled("advisories/a.json", BIG, b' ');
                }),
                "but the manifest lists 7",
            ),
            (
                "bad signature",
                Box::new(|_: &mut Tar| {}),
                "no signature verifies",
            ),
        ];
        for (what, hostile, needle) in cases {
            let staging = tempfile::tempdir().unwrap();
            let mut t = Tar::default();
            if what == "bad signature" {
                // The manifest is re-signed by nobody: flip a byte of manifest.dsse's signature.
                let env = read_metadata_file(&s.bundle(), names::ENVELOPE)
                    .unwrap()
                    .unwrap();
                let mut v: serde_json::Value = serde_json::from_slice(&env).unwrap();
                let sig = v["signatures"][0]["sig"].as_str().unwrap().to_string();
                let mut raw = stella_dsse::b64::decode(&sig).unwrap();
                raw[0] ^= 1;
                v["signatures"][0]["sig"] = stella_dsse::b64::encode(&raw).into();
                for name in names::METADATA {
                    if name == names::ENVELOPE {
                        t.file(name, &serde_json::to_vec(&v).unwrap());
                    } else if let Some(b) = read_metadata_file(&s.bundle(), name).unwrap() {
                        t.file(name, &b);
                    }
                }
                t.filled("advisories/b.json", 3000, b'b');
            } else {
                s.metadata(&mut t);
                hostile(&mut t);
            }
            t.file("advisories/a.json", &a);
            let (r, consumed) = s.read(&mut t, Some(staging.path()));
            let e = err_text(r);
            assert!(e.contains(needle), "{what}: {e}");
            assert!(consumed < 1 << 20, "{what}: read {consumed} bytes");
            assert_eq!(content_bytes(staging.path()), 0, "{what}: wrote content");
        }
        // Right size, wrong bytes: refused as soon as the entry ends, before the next one.
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        s.metadata(&mut t);
        t.filled("advisories/a.json", 7, b'x');
        t.filled("advisories/b.json", BIG, b'b');
        let (r, consumed) = s.read(&mut t, Some(staging.path()));
        let e = err_text(r);
        assert!(e.contains("file advisories/a.json changed"), "{e}");
        assert!(consumed < 1 << 20, "read {consumed} bytes");
    }

    #[test]
    fn metadata_is_bounded_in_size_and_place() {
        let s = Signed::new();
        // Each under the per-file limit, together above the total.
        let mut t = Tar::default();
        for name in [names::ENVELOPE, names::MANIFEST, names::SUMS] {
            t.filled(name, crate::MAX_METADATA_BYTES, b' ');
        }
        let (r, consumed) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(e.contains("metadata entries exceed"), "{e}");
        assert!(
            consumed <= crate::MAX_METADATA_TOTAL + (1 << 20),
            "read {consumed}"
        );
        // One above the per-file limit.
        let mut t = Tar::default();
        t.filled(names::ENVELOPE, crate::MAX_METADATA_BYTES + 1, b' ');
        let (r, consumed) = s.read(&mut t, None);
        assert!(err_text(r).contains("limit for bundle metadata"));
        assert!(consumed < 64 * 1024);
        // Metadata after content.
        let mut t = Tar::default();
        for name in names::METADATA {
            if name == names::PUBLIC_KEY {
                continue;
            }
            if let Some(b) = read_metadata_file(&s.bundle(), name).unwrap() {
                t.file(name, &b);
            }
        }
        t.file("advisories/a.json", &s.content("advisories/a.json"));
        t.file(names::PUBLIC_KEY, b"x");
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("comes after content entries"), "{e}");
        // Directories are never written by pack.
        let mut t = Tar::default();
        s.metadata(&mut t);
        t.header("advisories/", 0, tar::EntryType::Directory);
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn signed_sizes_must_fit_the_limits_before_anything_is_written() {
        let s = Signed::new();
        let biggest = walk(&s.bundle())
            .unwrap()
            .iter()
            .filter(|p| !names::is_metadata(p))
            .map(|p| s.content(p).len() as u64)
            .max()
            .unwrap();
        for (limits, needle) in [
            (
                Limits {
                    max_entry: biggest - 1,
                    max_total: 1 << 30,
                },
                "entry limit (oversize entry)",
            ),
            (
                Limits {
                    max_entry: 1 << 30,
                    max_total: biggest,
                },
                "bytes of files, above the",
            ),
        ] {
            let staging = tempfile::tempdir().unwrap();
            let mut t = Tar::default();
            s.metadata(&mut t);
            // The first content entry is small: the refusal comes from the signed list.
            t.file("advisories/a.json", &s.content("advisories/a.json"));
            let (r, _) = t.stream();
            let res = read_entries(r, Some(staging.path()), limits, &s.opts(), &NoopProgress);
            let e = err_text(res);
            assert!(e.contains(needle), "{needle}: {e}");
            assert_eq!(dir_bytes(staging.path()), 0);
        }
    }

    #[test]
    fn zstd_windows_above_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.tar.zst");
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.write_all(&[0u8; 4096]).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut out = Vec::new();
        let err = open_bundle_stream(&path)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
        // The general reader (docker archives given to `create`) keeps libzstd's default.
        let mut out = Vec::new();
        open_decompressed(&path)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 4096);
    }
}
