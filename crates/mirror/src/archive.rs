//! The safe stream reader of bundle archives, behind `verify X.tar.zst`, `unpack` and thin
//! `apply`.
//!
//! **Reading** refuses, before writing anything for the entry: absolute paths, `..`, links
//! (symbolic and hard), devices and FIFOs, duplicate entries, entries that do not fit the
//! size limits, and — once `manifest.json` has been seen — entries the manifest does not list
//! or lists with another size. Content is hashed as it streams. The archive itself is written
//! by [`crate::pack`] and compressed by [`crate::codec`].
//!
//! **Big bundles** (issue #15): when `manifest.dsse`, `manifest.json`, `SHA256SUMS`,
//! `SHA256SUMS.dsse` or `manifest.sigstore.json` is above
//! [`crate::streamed::Limits::stream_above`] (or the metadata passes the in-memory total),
//! the metadata entries are not held in memory but spooled into a folder — the staging folder
//! when unpacking (where they end up anyway), else a private temporary folder — under the caps
//! of the streamed folder path (16 GiB of manifest or `SHA256SUMS`, an envelope 4/3 of that
//! plus 64 KiB, the keyless signatures sixteen copies of the envelope read before them, every
//! other metadata file [`crate::MAX_METADATA_BYTES`]), and never more than
//! [`BOMB_RATIO`] times the compressed bytes taken so far past [`BOMB_SLACK`] (the spool is
//! written before the signature can be checked: a decompression bomb is refused, not
//! spooled). At the first content
//! entry they are verified there by the streamed rules (the streamed form of a
//! [`crate::verify::CheckedBundle`], through `verify::verify_metadata_streamed`), which give the
//! signed file list as a
//! [`FileIndex`] (~100 B per file); each content entry is then looked up in it, marked seen
//! (one byte per file) and hashed as it streams. Memory does not depend on the metadata
//! size; small bundles keep the in-memory path and its exact messages.

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::{decompress, open_bundle_stream, ReadAhead, ReadCount, ZSTD_WINDOW_LOG_MAX};
use crate::error::{Error, Field, IoContext as _, Result};
use crate::hash::{Digest, Hasher, Progress, CHUNK};

use crate::names;
use crate::path::BundlePath;
use crate::streamed::{envelope_cap, FileIndex};
use crate::verify::{self, Options, VerifiedBundle, VerifiedMetadata};

/// Limits for reading an archive. The signed manifest is the real bound: no content entry is
/// written unless the verified manifest lists it, and never beyond its signed size. These
/// limits cap what even a correctly signed bundle may put on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry.
    pub max_entry: u64,
    /// Largest total of all content entries.
    pub max_total: u64,
    /// When the metadata is spooled instead of held in memory, and the caps it then has.
    pub stream: crate::streamed::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: 64 << 30,
            max_total: 1 << 40,
            stream: crate::streamed::Limits::default(),
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
    /// Content files: path → (size, digest). Empty for a big bundle (see `index`).
    pub files: BTreeMap<String, (u64, Digest)>,
    /// A big bundle (metadata spooled, see the module docs): the signed file list. Every file
    /// of it that is not in `from_base` of the report was read and matched.
    pub index: Option<FileIndex>,
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
) -> Result<(Observed, VerifiedBundle)> {
    let (stream, taken) = open_bundle_stream(archive)?;
    let reader = Box::new(ReadAhead::new(stream));
    let total = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress.start("read", total);
    let r = read_entries(reader, Some(&taken), staging, limits, opts, progress);
    progress.finish();
    r.map_err(|e| e.in_archive(archive))
}

/// [`read_archive`] over any byte stream (gzip, zstd or plain tar, told apart by magic bytes),
/// on the calling thread: what the `archive` fuzz target drives.
pub fn read_stream<R: Read + Send + 'static>(
    reader: R,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, VerifiedBundle)> {
    let (reader, taken) = ReadCount::wrap(reader);
    let r = decompress(BufReader::new(reader), Some(ZSTD_WINDOW_LOG_MAX))
        .map_err(|e| bad(format!("corrupt archive: {e}")))?;
    read_entries(r, Some(&taken), staging, limits, opts, progress)
}

/// The archive stream as a whole is refused.
fn bad(msg: String) -> Error {
    Error::archive(Field::Archive, msg)
}

/// The entry `shown` (its name as stored) is refused.
fn bad_entry(shown: &str, msg: String) -> Error {
    Error::archive(Field::Entry(shown.to_string()), msg)
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

/// The metadata entries of a big bundle, spooled into files of a folder.
struct Spool {
    dir: PathBuf,
    /// The private temporary folder, when not spooling into the staging folder.
    _tmp: Option<tempfile::TempDir>,
}

impl Spool {
    /// Spool into `staging`, or a fresh private folder; what `obs` holds so far goes first.
    fn open(staging: Option<&Path>, obs: &mut Observed) -> Result<Spool> {
        let spool = match staging {
            Some(s) => Spool {
                dir: s.to_path_buf(),
                _tmp: None,
            },
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix(".stella-archive-")
                    .tempdir()
                    .at(std::env::temp_dir())?;
                Spool {
                    dir: tmp.path().to_path_buf(),
                    _tmp: Some(tmp),
                }
            }
        };
        stage_metadata(Some(&spool.dir), &obs.metadata)?;
        release_metadata(obs);
        Ok(spool)
    }

    /// A new file for metadata entry `name`.
    fn create(&self, name: &BundlePath) -> Result<std::fs::File> {
        let dest = name.under(&self.dir);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .at(&dest)
    }
}

/// Whether metadata entry `name` of `size` bytes puts the archive on the spooled path.
fn wants_spool(name: &str, size: u64, limits: &Limits) -> bool {
    size > limits.stream.stream_above && crate::streamed::STREAMED.contains(&name)
}

/// The largest metadata entry `name` may be on the spooled path (those of the folder path).
/// `envelope`: the size of the `manifest.dsse` entry already read, if it was (its payload is
/// no larger, so the keyless signatures, sixteen copies of it at most, are capped by it).
fn spooled_cap(name: &str, limits: &Limits, envelope: Option<u64>) -> u64 {
    match name {
        names::ENVELOPE => envelope_cap(limits.stream.max_manifest),
        names::MANIFEST => limits.stream.max_manifest,
        names::SUMS => limits.stream.max_sums,
        names::SUMS_DSSE => envelope_cap(limits.stream.max_sums),
        names::KEYLESS => {
            crate::keyless::streamed_cap(envelope.map_or(limits.stream.max_manifest, |e| {
                e.min(limits.stream.max_manifest)
            }))
        }
        _ => crate::MAX_METADATA_BYTES,
    }
}

/// The verified metadata and, on the spooled path, the signed file list and what was seen.
struct Checked {
    meta: VerifiedMetadata,
    index: Option<(FileIndex, Vec<bool>)>,
}

/// Verify the metadata read so far (in memory, or spooled) and stage it.
fn check_metadata(
    obs: &mut Observed,
    spool: Option<&Spool>,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
) -> Result<Checked> {
    match spool {
        None => {
            let vm = verify::CheckedBundle::from_metadata(&obs.metadata)?.verify(opts)?;
            let files = &vm.manifest.files;
            check_signed_limits(
                files.iter().map(|f| f.size),
                &|i| files.get(i).map(|f| f.path.to_string()).unwrap_or_default(),
                limits,
            )?;
            stage_metadata(staging, &obs.metadata)?;
            release_metadata(obs);
            Ok(Checked {
                meta: vm,
                index: None,
            })
        }
        Some(sp) => {
            let (vm, index) = verify::verify_metadata_streamed(&sp.dir, opts, &limits.stream)?;
            check_signed_limits(
                index.sizes(),
                &|i| index.get(i).map(|f| f.path.to_string()).unwrap_or_default(),
                limits,
            )?;
            let seen = vec![false; index.len()];
            Ok(Checked {
                meta: vm,
                index: Some((index, seen)),
            })
        }
    }
}

/// Spooled metadata may expand its compressed stream this many times over (plus
/// [`BOMB_SLACK`]) before the signature can be checked: bundle metadata is mostly SHA-256
/// digests, which do not compress (a real manifest or `SHA256SUMS` expands ~2–5×), so only a
/// decompression bomb comes near it — a 183 KB archive whose `manifest.dsse` expanded to 2 GB
/// of spool before its signature failed (session 13).
const BOMB_RATIO: u64 = 64;
/// What spooled metadata may expand to whatever the ratio.
const BOMB_SLACK: u64 = 64 << 20;

/// `taken`: the bytes of the stream before decompression (`None`: not known, no ratio kept).
fn read_entries(
    reader: Box<dyn Read + Send>,
    taken: Option<&ReadCount>,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, VerifiedBundle)> {
    let mut ar = tar::Archive::new(reader);
    let mut obs = Observed::default();
    let mut checked: Option<Checked> = None;
    let mut spool: Option<Spool> = None;
    // The size of the `manifest.dsse` entry, once read.
    let mut envelope_size: Option<u64> = None;
    let mut meta_total: u64 = 0;
    // Bytes of spooled metadata read so far (against `taken`: BOMB_RATIO).
    let mut spooled: u64 = 0;
    // Spooled path: content files read and matched, and their bytes.
    let (mut count, mut bytes) = (0usize, 0u64);
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
            return Err(bad_entry(
                &shown,
                format!(
                    "entry {shown:?} is a {ext}: bundle archives never carry extension headers \
                 (`stella mirror pack` writes plain ustar)"
                ),
            ));
        }
        match kind {
            k if k.is_symlink() => {
                return Err(bad_entry(
                    &shown,
                    format!("entry {shown:?} is a symbolic link: bundles hold regular files only"),
                ))
            }
            k if k.is_hard_link() => {
                return Err(bad_entry(
                    &shown,
                    format!("entry {shown:?} is a hard link: bundles hold regular files only"),
                ))
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                return Err(bad_entry(
                    &shown,
                    format!("entry {shown:?} is a device or FIFO: bundles hold regular files only"),
                ))
            }
            k if k.is_dir() => {
                return Err(bad_entry(
                    &shown,
                    format!(
                        "entry {shown:?} is a directory: bundle archives hold regular files only \
                     (`stella mirror pack` writes no directory entries)"
                    ),
                ))
            }
            k if k.is_file() => {}
            other => {
                return Err(bad_entry(
                    &shown,
                    format!(
                "entry {shown:?} has unsupported type {other:?}: bundles hold regular files only"
            ),
                ))
            }
        }
        let text = std::str::from_utf8(&raw)
            .map_err(|_| bad_entry(&shown, format!("entry {shown:?}: path is not UTF-8")))?;
        let p = text.strip_prefix("./").unwrap_or(text);
        let path = BundlePath::new(p).map_err(|e| {
            if p.starts_with('/') {
                bad_entry(&shown, format!("entry {shown:?}: absolute path refused"))
            } else {
                bad_entry(&shown, format!("entry {shown:?}: unsafe path refused: {e}"))
            }
        })?;
        let name = path.as_str().to_string();
        // Every earlier entry is in `obs` or marked seen in the index (a failed one ended the
        // read).
        if obs.metadata.contains_key(&name) || obs.files.contains_key(&name) {
            return Err(bad_entry(&shown, format!("duplicate entry {shown:?}")));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad_entry(&shown, format!("entry {shown:?}: {e}")))?;
        let is_meta = names::is_metadata(&name);
        if name == names::ENVELOPE {
            envelope_size = Some(size);
        }
        // Content: the signed digest, and the entry's place in the index (spooled path).
        let mut signed: Option<(Digest, Option<usize>)> = None;
        if is_meta {
            if checked.is_some() {
                return Err(bad_entry(
                    &shown,
                    format!(
                        "metadata entry {shown:?} comes after content entries: the metadata must \
                     come first (as `stella mirror pack` writes it)"
                    ),
                ));
            }
            // Spooled: once one of them is, when this one is large, or when keeping it in
            // memory too would pass the in-memory total (a bundle of some 100,000 to 145,000
            // files, each metadata file below the threshold).
            let over_total = meta_total.saturating_add(size) > limits.stream.metadata_total;
            if spool.is_some() || over_total || wants_spool(&name, size, &limits) {
                let cap = spooled_cap(&name, &limits, envelope_size);
                if size > cap {
                    return Err(bad_entry(&shown, format!(
                        "entry {shown:?} is {size} bytes, above the {cap}-byte limit for bundle metadata (oversize entry)"
                    )));
                }
                if spool.is_none() {
                    spool = Some(Spool::open(staging, &mut obs)?);
                }
            } else {
                if size > crate::MAX_METADATA_BYTES {
                    return Err(bad_entry(&shown, format!(
                        "entry {shown:?} is {size} bytes, above the {}-byte limit for bundle metadata (oversize entry)",
                        crate::MAX_METADATA_BYTES
                    )));
                }
                meta_total = meta_total.saturating_add(size);
            }
        } else {
            if size > limits.max_entry {
                return Err(bad_entry(&shown, format!(
                    "entry {shown:?} is {size} bytes, above the {}-byte entry limit (oversize entry)",
                    limits.max_entry
                )));
            }
            if checked.is_none() && !obs.metadata.contains_key(names::ENVELOPE) {
                return Err(bad_entry(
                    &shown,
                    format!(
                        "content entry {shown:?} comes before manifest.dsse: the signed \
                     manifest must come first (as `stella mirror pack` writes it)"
                    ),
                ));
            }
            // Everything is checked before the first content byte is read.
            if checked.is_none() {
                checked = Some(check_metadata(
                    &mut obs,
                    spool.as_ref(),
                    staging,
                    limits,
                    opts,
                )?);
            }
            let Some(c) = checked.as_ref() else {
                return Err(bad("the metadata was not checked".to_string()));
            };
            let listed = match &c.index {
                None => c
                    .meta
                    .manifest
                    .file(&name)
                    .map(|f| Ok((f.size, f.sha256, None))),
                Some((index, seen)) => index.find(&name).and_then(|i| {
                    if seen.get(i) == Some(&true) {
                        return Some(Err(bad_entry(&shown, format!("duplicate entry {shown:?}"))));
                    }
                    index
                        .size_and_sha256(i)
                        .map(|(size, sha256)| Ok((size, sha256, Some(i))))
                }),
            };
            match listed.transpose()? {
                None => {
                    return Err(bad_entry(&shown, format!(
                        "unlisted entry {shown:?}: the signed manifest does not list it"
                    )))
                }
                Some((want, _, _)) if want != size => {
                    return Err(bad_entry(&shown, format!(
                        "entry {shown:?} is {size} bytes but the manifest lists {want} (oversize or truncated entry)"
                    )))
                }
                Some((_, d, i)) => signed = Some((d, i)),
            }
        }
        let mut out = match (staging, is_meta, &spool) {
            (_, true, Some(sp)) => Some(BufWriter::with_capacity(CHUNK, sp.create(&path)?)),
            (Some(s), false, _) => {
                let dest = path.under(s);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        bad_entry(
                            &shown,
                            format!("entry {shown:?} conflicts with another entry: {e}"),
                        )
                    })?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| {
                        bad_entry(&shown, format!("entry {shown:?} cannot be created: {e}"))
                    })?;
                Some(BufWriter::with_capacity(CHUNK, f))
            }
            _ => None,
        };
        let mut h = Hasher::new();
        // In memory, metadata sizes are bounded above (MAX_METADATA_BYTES): one allocation
        // each. Spooled metadata goes to its file.
        let keep = is_meta && spool.is_none();
        let mut meta_bytes = Vec::with_capacity(if keep { size as usize } else { 0 });
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(bad_entry(
                        &shown,
                        format!("entry {shown:?}: corrupt archive: {e}"),
                    ))
                }
            };
            // The entry reader stops at `size`; this keeps the bound if that ever changed.
            if h.len().saturating_add(n as u64) > size {
                return Err(bad_entry(
                    &shown,
                    format!("entry {shown:?} holds more than its {size} bytes"),
                ));
            }
            h.update(&buf[..n]);
            if is_meta && spool.is_some() {
                spooled = spooled.saturating_add(n as u64);
                let took = taken.map_or(u64::MAX, ReadCount::get);
                if spooled > BOMB_SLACK.saturating_add(took.saturating_mul(BOMB_RATIO)) {
                    return Err(Error::archive(
                        Field::Metadata,
                        format!(
                            "the metadata expands {spooled} bytes out of {took} compressed ones \
                             (more than {BOMB_RATIO} to 1 past {BOMB_SLACK} bytes) before its \
                             signature can be checked: a decompression bomb (at entry {shown:?})"
                        ),
                    ));
                }
            }
            if keep {
                meta_bytes.extend_from_slice(&buf[..n]);
            }
            if let Some(w) = out.as_mut() {
                w.write_all(&buf[..n]).at(&name)?;
            }
            progress.advance(n as u64);
        }
        if h.len() != size {
            return Err(bad_entry(&shown, format!("entry {shown:?} is truncated")));
        }
        if let Some(mut w) = out {
            w.flush().at(&name)?;
        }
        let digest = h.finish();
        match signed {
            Some((want, _)) if digest != want => {
                return Err(bad_entry(
                    &shown,
                    format!(
                        "file {name} changed: {size} bytes sha256:{}, the manifest says sha256:{}",
                        digest.hex(),
                        want.hex()
                    ),
                ));
            }
            Some((_, Some(i))) => {
                if let Some(Checked {
                    index: Some((_, seen)),
                    ..
                }) = checked.as_mut()
                {
                    if let Some(s) = seen.get_mut(i) {
                        *s = true;
                    }
                }
                count += 1;
                bytes += size;
            }
            Some((_, None)) => {
                obs.files.insert(name, (size, digest));
            }
            None => {
                if !keep {
                    obs.metadata_bytes += size;
                }
                obs.metadata.insert(name, meta_bytes);
            }
        }
    }
    let c = match checked {
        Some(c) => c,
        None => check_metadata(&mut obs, spool.as_ref(), staging, limits, opts)?,
    };
    let content = match c.index {
        None => verify::check_files(&c.meta.manifest, &obs.files)?,
        Some((index, seen)) => {
            let from_base = unseen(&index, &seen, c.meta.manifest.kind)?;
            obs.index = Some(index);
            (count, bytes, from_base)
        }
    };
    Ok((obs, VerifiedBundle::new(c.meta, content)))
}

/// The listed files an archive did not carry: missing (reported as `check_files` does, first
/// ten), or, for a thin bundle, carried by its base.
fn unseen(
    index: &FileIndex,
    seen: &[bool],
    kind: crate::Kind,
) -> Result<crate::from_base::FromBase> {
    let mut from_base = crate::from_base::FromBase::default();
    let mut missing = Vec::new();
    let mut n = 0;
    index.each_unseen(seen, &mut |path| {
        if kind == crate::Kind::Thin {
            from_base.push(path);
        } else {
            n += 1;
            if missing.len() < crate::error::NAMED_PROBLEMS {
                missing.push(crate::error::missing_problem(path));
            }
        }
    });
    if n > 0 {
        return Err(Error::content_mismatch(n, &missing));
    }
    Ok(from_base.done())
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
            .map_err(|e| Error::archive(Field::file(name.as_str()), e))?
            .under(s);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        crate::fs::write_new(&dest, bytes)?;
    }
    Ok(())
}

/// A verified manifest whose listed files (path, size) do not fit the limits is refused before
/// any of them is written.
/// `sizes` in manifest order; `path_at(i)` names the `i`-th file (only for the refusal).
fn check_signed_limits(
    sizes: impl Iterator<Item = u64>,
    path_at: &dyn Fn(usize) -> String,
    limits: Limits,
) -> Result<()> {
    let mut total = 0u64;
    for (i, size) in sizes.enumerate() {
        if size > limits.max_entry {
            let path = path_at(i);
            return Err(Error::archive(Field::file(&path), format!(
                "the signed manifest lists {path} at {size} bytes, above the {}-byte entry limit (oversize entry)",
                limits.max_entry
            )));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_total {
        return Err(Error::archive(
            Field::Content,
            format!(
                "the signed manifest lists {total} bytes of files, above the {}-byte limit",
                limits.max_total
            ),
        ));
    }
    Ok(())
}

/// Verify an archive from its stream (no extraction).
pub fn verify_archive(
    path: &Path,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let (_, report) = read_archive(path, None, Limits::default(), opts, progress)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::open_decompressed;
    use crate::fs::{read_metadata_file, walk};
    use crate::hash::NoProgress;
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

        fn read(
            &self,
            t: &mut Tar,
            staging: Option<&Path>,
        ) -> (Result<(Observed, VerifiedBundle)>, u64) {
            let (r, consumed) = t.stream();
            let res = read_entries(
                r,
                None,
                staging,
                Limits::default(),
                &self.opts(),
                &NoProgress,
            );
            (res, consumed.load(Ordering::Relaxed))
        }
    }

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

    /// Keyless signatures far larger than sixteen copies of the manifest the envelope before
    /// them carries: refused on their size, unread and unspooled (they used to be capped by
    /// the largest manifest there could be).
    #[test]
    fn keyless_signatures_are_capped_by_the_envelope_before_them() {
        let s = Signed::new();
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        s.metadata(&mut t);
        t.filled(names::KEYLESS, BIG, b' ');
        let (r, consumed) = s.read(&mut t, Some(staging.path()));
        let e = err_text(r);
        assert!(
            e.contains("manifest.sigstore.json") && e.contains("oversize entry"),
            "{e}"
        );
        assert!(consumed < 1 << 20, "read {consumed} bytes");
        assert!(dir_bytes(staging.path()) < 64 * 1024);
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
        // Each under the per-file limit, together above the in-memory total: spooled (as a
        // bundle of ~120,000 files is) and refused for what it is, not for its total.
        let mut t = Tar::default();
        for name in [names::ENVELOPE, names::MANIFEST, names::SUMS] {
            t.filled(name, crate::MAX_METADATA_BYTES, b' ');
        }
        let (r, _) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(!e.contains("exceed"), "{e}");
        assert!(e.contains("manifest.dsse"), "{e}");
        // One above the per-file limit (a small metadata file: never spooled).
        let mut t = Tar::default();
        t.filled(names::HEADER, crate::MAX_METADATA_BYTES + 1, b' ');
        let (r, consumed) = s.read(&mut t, None);
        assert!(err_text(r).contains("limit for bundle metadata"));
        assert!(consumed < 64 * 1024);
        // An envelope above the spooled cap (4/3 of 16 GiB + 64 KiB): refused on its header.
        let cap = envelope_cap(crate::streamed::MAX_STREAMED_MANIFEST_BYTES);
        let mut t = Tar::default();
        t.filled(names::ENVELOPE, cap + 1, b' ');
        let (r, consumed) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(
            e.contains(&format!("above the {cap}-byte limit for bundle metadata")),
            "{e}"
        );
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
                    ..Limits::default()
                },
                "entry limit (oversize entry)",
            ),
            (
                Limits {
                    max_entry: 1 << 30,
                    max_total: biggest,
                    ..Limits::default()
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
            let res = read_entries(
                r,
                None,
                Some(staging.path()),
                limits,
                &s.opts(),
                &NoProgress,
            );
            let e = err_text(res);
            assert!(e.contains(needle), "{needle}: {e}");
            assert_eq!(dir_bytes(staging.path()), 0);
        }
    }

    /// Spooled metadata may not expand its compressed stream more than [`BOMB_RATIO`] to 1
    /// past [`BOMB_SLACK`] before its signature is checked: a zstd archive whose
    /// `manifest.dsse` is 80 MiB of one byte (a few KiB compressed) is refused as a bomb with
    /// little more than the slack spooled; the same entry in a plain tar (nothing to expand)
    /// is read on and refused for what it is, not as a bomb.
    #[test]
    fn metadata_that_expands_past_the_ratio_is_refused_as_a_bomb() {
        let b = crate::testing::SignedBundle::new();
        let dir = tempfile::tempdir().unwrap();
        let size = 80u64 << 20;
        let tar_of = |w: &mut dyn Write| {
            let mut t = tar::Builder::new(w);
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, names::ENVELOPE, io::repeat(b'A').take(size))
                .unwrap();
            t.finish().unwrap();
        };
        let zst = dir.path().join("bomb.tar.zst");
        let mut enc =
            zstd::stream::write::Encoder::new(std::fs::File::create(&zst).unwrap(), 3).unwrap();
        tar_of(&mut enc);
        enc.finish().unwrap();
        let compressed = std::fs::metadata(&zst).unwrap().len();
        assert!(compressed < 1 << 20, "{compressed}");
        let e = read_archive(&zst, None, Limits::default(), &b.opts(), &NoProgress)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a decompression bomb"), "{e}");
        let spooled: u64 = e
            .split("expands ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            spooled <= BOMB_SLACK + BOMB_RATIO * compressed + (1 << 20),
            "{e}"
        );
        // Plain tar: the stream is what it takes, whatever the entry holds.
        let plain = dir.path().join("big.tar");
        tar_of(&mut std::fs::File::create(&plain).unwrap());
        let e = read_archive(&plain, None, Limits::default(), &b.opts(), &NoProgress)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("bomb"), "{e}");
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
            .0
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
