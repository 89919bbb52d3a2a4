//! Thin bundles: `apply` a thin bundle onto the bundle it updates, and `diff` two manifests.
//!
//! A thin bundle's signed manifest describes the complete new bundle and names its base by the
//! SHA-256 of the base's `manifest.json`. `apply` therefore needs no trust in the base folder
//! beyond that digest: it checks the thin bundle's signature, that the folder it is applied
//! onto holds exactly that base manifest (so a thin bundle for another bundle, or one applied
//! out of order, is refused), then builds the new bundle in a staging folder — files carried by
//! the thin bundle, the rest copied from the base — checking every file's SHA-256 on the way,
//! and only then swaps it into place.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::Limits;
use crate::error::{Error, Field, IoContext as _, Result};
use crate::fs::{check_output_free, Staging};
use crate::hash::{Digest, Progress};
use crate::listing::{entries, read_file_list, stream_files};
use crate::manifest::{FileEntry, Kind, Manifest};
use crate::names;
use crate::source::{folder_of, Output, Source};
use crate::streamed::FileIndex;
use crate::verify::{self, Options, VerifiedBundle};
use crate::BundlePath;

/// Files `apply` copies at a time (on every core).
const APPLY_BATCH: usize = 1 << 14;

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub report: VerifiedBundle,
    pub target: PathBuf,
    pub carried: usize,
    pub from_base: usize,
    pub removed: usize,
}

/// Apply thin bundle `thin` (a folder or an archive) onto bundle folder `onto`; the result
/// replaces `onto` atomically, or goes to `output` when given.
pub fn apply(
    thin: &Path,
    onto: &Path,
    output: Option<&Path>,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    if !onto.is_dir() {
        return Err(Error::NotFound(onto.to_path_buf()));
    }
    let target = output.unwrap_or(onto).to_path_buf();
    if let Some(o) = output {
        check_output_free(o)?;
    }
    // A thin folder is verified where it is; a thin archive is unpacked (checked) into its
    // own staging folder beside the target first, removed when `thin_bundle` is dropped.
    let thin_bundle = Source::for_apply(thin).verify(
        opts,
        &Limits::default(),
        Output::staged_in(&folder_of(&target), "thin"),
        progress,
    )?;
    let thin_dir = thin_bundle
        .dir()
        .ok_or_else(|| Error::input("the thin bundle's files were not kept on disk"))?
        .to_path_buf();
    let thin_report = thin_bundle.report;
    let (thin_manifest, thin_digest) =
        (thin_report.meta.manifest, thin_report.meta.manifest_digest);
    // (A thin bundle's report lists every file it does not carry: ~80 MB at 1,000,000.)
    drop(thin_report.from_base);
    let m = &thin_manifest;
    let Some(base) = (m.kind == Kind::Thin).then_some(m.base.as_ref()).flatten() else {
        return Err(Error::input(format!(
            "{} is a full bundle; `apply` takes a thin bundle (kind: thin)",
            thin.display()
        )));
    };

    // The base must be exactly the bundle this update was made for: its manifest's digest
    // decides (hashed as a stream; parsed only to explain a mismatch).
    let limits = crate::streamed::Limits::default();
    let onto_manifest = onto.join(names::MANIFEST);
    let onto_digest = match crate::fs::open_regular(&onto_manifest, crate::fs::Links::Refuse)
        .at(&onto_manifest)?
    {
        crate::fs::Opened::Missing => return Err(Error::NotFound(onto_manifest)),
        crate::fs::Opened::NotRegular => return Err(Error::metadata_not_regular(names::MANIFEST)),
        crate::fs::Opened::File(mut f, _) => {
            crate::hash::hash_reader(&mut f, &crate::hash::NoProgress)
                .at(&onto_manifest)?
                .0
        }
    };
    if onto_digest != base.manifest_digest {
        let held = read_file_list(&onto_manifest, &limits)
            .ok()
            .map(|(h, _, _)| h);
        let msg = match held {
            Some(h) if h.bundle != base.bundle => format!(
                "wrong base: this thin bundle updates bundle {:?}, but {} holds bundle {:?}",
                base.bundle,
                onto.display(),
                h.bundle
            ),
            Some(h) if h.generation < base.generation => format!(
                "out of order: this thin bundle updates generation {} of {:?}, but {} holds generation {}; apply the updates in between first",
                base.generation,
                base.bundle,
                onto.display(),
                h.generation
            ),
            Some(h) if h.generation > base.generation => format!(
                "out of order: this thin bundle updates generation {} of {:?}, but {} already holds generation {}",
                base.generation,
                base.bundle,
                onto.display(),
                h.generation
            ),
            _ => format!(
                "wrong base: this thin bundle updates manifest {}, but {} holds manifest {}",
                base.manifest_digest,
                onto.display(),
                onto_digest
            ),
        };
        return Err(Error::content(Field::Manifest("base"), msg));
    }
    // The signed file list, as a compact index (big bundles verify without holding it): read
    // again from the verified folder, and it must be the bytes that verified.
    let (_, files, read) = read_file_list(&thin_dir.join(names::MANIFEST), &limits)?;
    if read != thin_digest {
        return Err(Error::manifest(
            Field::file(names::MANIFEST),
            format!(
                "{} changed after it verified",
                thin_dir.join(names::MANIFEST).display()
            ),
        ));
    }

    // Build the result.
    let staging = Staging::beside(&target, "apply")?;
    progress.start("apply", files.total_size());
    let (mut carried, mut from_base) = (0, 0);
    let mut list = files.cursor();
    // Copied a batch at a time on every core, each file from the thin bundle if it carries
    // it, else from the base (whose copy must hash to the signed digest: checked as it is
    // copied; no link followed in either). Memory: one batch of paths.
    let roots = [thin_dir.as_path(), onto];
    // In place, the base's files are linked, not copied: the base folder is removed once
    // the result is in place (and the result is verified again first). With `--output` the
    // base stays: every file is a copy of its own.
    let link_base = output.is_none().then_some(1);
    let mut paths = crate::from_base::Paths::default();
    let mut listed: Vec<(u64, Digest)> = Vec::with_capacity(APPLY_BATCH);
    loop {
        paths.clear();
        listed.clear();
        while listed.len() < APPLY_BATCH {
            let Some(f) = list.next_entry() else { break };
            BundlePath::new(f.path).map_err(|e| Error::content(Field::file(f.path), e))?;
            paths.push(f.path);
            listed.push((f.size, f.sha256));
        }
        if listed.is_empty() {
            break;
        }
        let jobs: Vec<crate::hash::CopyJob<'_>> = paths
            .iter()
            .zip(&listed)
            .map(|(p, &(size, _))| crate::hash::CopyJob {
                src: p,
                dest: p,
                end: crate::hash::End::At(size),
                // Scripts get their mode set below: never on a link to the base's file.
                may_link: crate::path::file_mode(p) == 0o644,
            })
            .collect();
        let copied = crate::hash::copy_tree_from(
            &roots,
            &staging.path,
            &jobs,
            crate::hash::Absent::Report,
            link_base,
            progress,
        )?;
        for ((path, &(size, sha256)), got) in paths.iter().zip(&listed).zip(copied) {
            let Some((root, got)) = got else {
                return Err(Error::content(
                    Field::file(path),
                    format!(
                        "file {path} is not carried by the thin bundle and the base does not hold it"
                    ),
                ));
            };
            if got.digest() != Some(sha256) || got.size != size {
                return Err(Error::content(
                    Field::file(path),
                    got.changed_problem(path, size, &sha256),
                ));
            }
            match root {
                0 => carried += 1,
                _ => from_base += 1,
            }
            // A copy is created 0644: scripts get their mode back, as `create` and
            // `unpack` give it.
            let mode = crate::path::file_mode(path);
            if mode != 0o644 {
                let dest = staging.path.join(path);
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).at(&dest)?;
            }
        }
    }
    progress.finish();
    let removed = m.removed.len();
    drop(files);
    for name in names::METADATA {
        copy_metadata(&thin_dir, &staging.path, name)?;
    }
    // The result must now verify as a complete bundle.
    let full = verify::verify_dir(&staging.path, opts, &crate::hash::NoProgress)?;
    if !full.from_base.is_empty() {
        return Err(Error::content(
            Field::Content,
            format!(
                "the rebuilt bundle lacks {} file(s), e.g. {}",
                full.from_base.len(),
                full.from_base.get(0).unwrap_or_default()
            ),
        ));
    }
    // The result is a folder like any other (a staging folder is created 0700).
    std::fs::set_permissions(&staging.path, std::fs::Permissions::from_mode(0o755))
        .at(&staging.path)?;
    // Swap into place.
    if output.is_some() {
        staging.commit(&target)?;
    } else {
        let old = Staging::beside(onto, "old")?;
        std::fs::remove_dir(&old.path).at(&old.path)?;
        std::fs::rename(onto, &old.path).at(onto)?;
        if let Err(e) = staging.commit(onto) {
            let _ = std::fs::rename(&old.path, onto);
            return Err(e);
        }
        drop(old); // removes the previous bundle
    }
    Ok(ApplyReport {
        report: full,
        target,
        carried,
        from_base,
        removed,
    })
}

/// Differences between two manifests.
///
/// The added, removed and changed files are [`List`]s: held in memory up to a few thousand
/// entries, then spilled to an anonymous temporary file (removed when the list is dropped),
/// so a diff's memory stays bounded however many files differ.
#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub added: List<FileEntry>,
    pub removed: List<FileEntry>,
    pub changed: List<Changed>,
    pub unchanged: usize,
    pub images_added: Vec<String>,
    pub images_removed: Vec<String>,
    pub images_changed: Vec<String>,
    /// Bytes a thin bundle from A to B carries.
    pub thin_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: BundlePath,
    #[serde(with = "stella_digest::sha256_hex")]
    pub old_sha256: Digest,
    #[serde(with = "stella_digest::sha256_hex")]
    pub new_sha256: Digest,
    pub old_size: u64,
    pub new_size: u64,
}

/// Entries a [`List`] holds in memory before it spills to a temporary file (~200 B each).
pub(crate) const SPILL_ABOVE: usize = 4096;

/// A list of entries that spills to an anonymous temporary file once it holds more than its
/// limit (4,096 entries for the diff of two manifest files): appended to in order, then read
/// back in that order with [`List::iter`] (or serialised as a JSON array).
#[derive(Debug)]
pub struct List<T> {
    mem: Vec<T>,
    spill: Option<std::io::BufWriter<std::fs::File>>,
    len: usize,
    limit: usize,
    /// The first error writing the spill file (reported by [`List::finish`]).
    failed: Option<std::io::Error>,
}

impl<T> Default for List<T> {
    /// A list held in memory, never spilled.
    fn default() -> Self {
        List::with_limit(usize::MAX)
    }
}

impl<T> List<T> {
    /// A list that spills once it holds more than `limit` entries.
    pub fn with_limit(limit: usize) -> Self {
        List {
            mem: Vec::new(),
            spill: None,
            len: 0,
            limit,
            failed: None,
        }
    }
}

impl<T: Record> List<T> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the entries went to a temporary file.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Append an entry (a write error is kept for [`List::finish`]).
    pub fn push(&mut self, t: T) {
        self.len += 1;
        if self.failed.is_some() {
            return;
        }
        if self.spill.is_none() && self.mem.len() < self.limit {
            self.mem.push(t);
            return;
        }
        let r = (|| {
            let w = match &mut self.spill {
                Some(w) => w,
                None => {
                    let mut w = std::io::BufWriter::with_capacity(256 << 10, tempfile::tempfile()?);
                    for m in std::mem::take(&mut self.mem) {
                        m.write_to(&mut w)?;
                    }
                    self.spill.insert(w)
                }
            };
            t.write_to(w)
        })();
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }

    /// Flush the spill file: the first error writing it, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match &mut self.spill {
            Some(w) => std::io::Write::flush(w),
            None => Ok(()),
        }
    }

    /// The entries, in the order they were pushed (read back from the spill file if there is
    /// one: [`List::finish`] first).
    pub fn iter(&self) -> std::io::Result<ListIter<'_, T>> {
        Ok(match &self.spill {
            None => ListIter::Mem(self.mem.iter()),
            Some(w) => {
                use std::io::Seek as _;
                let mut f = w.get_ref().try_clone()?;
                f.seek(std::io::SeekFrom::Start(0))?;
                ListIter::File {
                    r: std::io::BufReader::with_capacity(256 << 10, f),
                    left: self.len,
                }
            }
        })
    }
}

/// The entries of a [`List`].
pub enum ListIter<'a, T> {
    Mem(std::slice::Iter<'a, T>),
    File {
        r: std::io::BufReader<std::fs::File>,
        left: usize,
    },
}

impl<T: Record> Iterator for ListIter<'_, T> {
    type Item = std::io::Result<T>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ListIter::Mem(it) => it.next().cloned().map(Ok),
            ListIter::File { r, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                let t = T::read_from(r);
                if t.is_err() {
                    *left = 0;
                }
                Some(t)
            }
        }
    }
}

impl<T: Record + Serialize> Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq as _};
        let mut seq = s.serialize_seq(Some(self.len))?;
        for t in self.iter().map_err(S::Error::custom)? {
            seq.serialize_element(&t.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

/// An entry a [`List`] can spill: written and read back in a compact binary form.
pub trait Record: Clone + Sized {
    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()>;
    fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Self>;
}

fn write_str(w: &mut impl std::io::Write, s: &str) -> std::io::Result<()> {
    let n = u32::try_from(s.len()).map_err(std::io::Error::other)?;
    w.write_all(&n.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn read_u64(r: &mut impl std::io::Read) -> std::io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_digest(r: &mut impl std::io::Read) -> std::io::Result<Digest> {
    let mut b = [0; 32];
    r.read_exact(&mut b)?;
    Ok(Digest::sha256(b))
}

fn read_string(r: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut n = [0; 4];
    r.read_exact(&mut n)?;
    let mut b = vec![0; u32::from_le_bytes(n) as usize];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn read_path(r: &mut impl std::io::Read) -> std::io::Result<BundlePath> {
    BundlePath::new(&read_string(r)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Record for FileEntry {
    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        write_str(w, self.path.as_str())?;
        w.write_all(&self.size.to_le_bytes())?;
        w.write_all(self.sha256.as_bytes())?;
        write_str(w, &self.media_type)
    }
    fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Self> {
        Ok(FileEntry {
            path: read_path(r)?,
            size: read_u64(r)?,
            sha256: read_digest(r)?,
            media_type: read_string(r)?,
        })
    }
}

impl Record for Changed {
    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        write_str(w, self.path.as_str())?;
        w.write_all(self.old_sha256.as_bytes())?;
        w.write_all(self.new_sha256.as_bytes())?;
        w.write_all(&self.old_size.to_le_bytes())?;
        w.write_all(&self.new_size.to_le_bytes())
    }
    fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Self> {
        Ok(Changed {
            path: read_path(r)?,
            old_sha256: read_digest(r)?,
            new_sha256: read_digest(r)?,
            old_size: read_u64(r)?,
            new_size: read_u64(r)?,
        })
    }
}

/// Compare manifests `a` (old) and `b` (new).
pub fn diff(a: &Manifest, b: &Manifest) -> Diff {
    let mut d = Diff::default();
    diff_files(&mut d, a.files.iter().cloned(), b.files.iter().cloned());
    diff_images(&mut d, a, b);
    d
}

/// [`diff`] of two manifests whose files are held as indexes ([`read_file_list`]: big
/// manifests are never held whole); `a` and `b` are the manifests without their files.
pub fn diff_indexed(a: &Manifest, a_files: &FileIndex, b: &Manifest, b_files: &FileIndex) -> Diff {
    let mut d = Diff::default();
    diff_files(&mut d, entries(a_files), entries(b_files));
    diff_images(&mut d, a, b);
    d
}

/// Files added, changed, removed and unchanged: one merge of the two path-sorted lists (a
/// manifest's files are sorted bytewise, as `str` orders).
fn diff_files(
    d: &mut Diff,
    old: impl Iterator<Item = FileEntry>,
    new: impl Iterator<Item = FileEntry>,
) {
    let mut old = old.peekable();
    for f in new {
        while let Some(o) = old.next_if(|o| o.path < f.path) {
            d.removed.push(o);
        }
        match old.next_if(|o| o.path == f.path) {
            None => {
                d.thin_bytes += f.size;
                d.added.push(f);
            }
            Some(o) if o.sha256 != f.sha256 => {
                d.thin_bytes += f.size;
                d.changed.push(Changed {
                    path: f.path,
                    old_sha256: o.sha256,
                    new_sha256: f.sha256,
                    old_size: o.size,
                    new_size: f.size,
                });
            }
            Some(_) => d.unchanged += 1,
        }
    }
    for o in old {
        d.removed.push(o);
    }
}

/// Images added, changed and removed (by reference).
fn diff_images(d: &mut Diff, a: &Manifest, b: &Manifest) {
    let oi: BTreeMap<&str, &Digest> = a
        .images
        .iter()
        .map(|i| (i.reference.as_str(), &i.digest))
        .collect();
    let ni: BTreeMap<&str, &Digest> = b
        .images
        .iter()
        .map(|i| (i.reference.as_str(), &i.digest))
        .collect();
    for (r, dg) in &ni {
        match oi.get(r) {
            None => d.images_added.push(r.to_string()),
            Some(o) if o != dg => d.images_changed.push(r.to_string()),
            _ => {}
        }
    }
    for r in oi.keys() {
        if !ni.contains_key(r) {
            d.images_removed.push(r.to_string());
        }
    }
}

/// Batches a parsing thread may run ahead of the merge.
const QUEUE: usize = 4;

/// [`diff`] of the manifests in files `old` and `new` (each a `manifest.json`), read as two
/// streams at once: each is parsed on its own thread and its files sent, in path order,
/// through a bounded queue to a merge in the calling thread. Neither file list is held,
/// and the differences spill to temporary files past 4,096 entries each: memory stays
/// bounded whatever the number of files or of differences. Returns the two
/// manifests without their files, and the diff.
///
/// Errors are those of [`read_file_list`] (a manifest up to `limits.stream_above` is read
/// by it; a larger one is parsed as [`crate::streamed::parse_manifest`] parses it, with the
/// same checks and messages); when both manifests fail, `old`'s error is the one returned.
pub fn diff_manifest_files(
    old: &Path,
    new: &Path,
    limits: &crate::streamed::Limits,
) -> Result<(Manifest, Manifest, Diff)> {
    // An archive given where a manifest is expected: say so, not "expected value at line 1".
    for path in [old, new] {
        if crate::source::starts_as_archive(path)? {
            return Err(Error::input(format!(
                "{}: a bundle archive; diff compares bundle folders or manifest.json files \
                 (unpack it first: stella mirror unpack)",
                path.display()
            )));
        }
    }
    let (old_tx, old_rx) = std::sync::mpsc::sync_channel::<Vec<FileEntry>>(QUEUE);
    let (new_tx, new_rx) = std::sync::mpsc::sync_channel::<Vec<FileEntry>>(QUEUE);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (old_r, new_r, mut d) = std::thread::scope(|s| {
        let side = |path: &Path, tx| {
            let failed = &failed;
            let path = path.to_path_buf();
            s.spawn(move || {
                let r = stream_files(&path, limits, tx);
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            })
        };
        let old_h = side(old, old_tx);
        let new_h = side(new, new_tx);
        let mut d = Diff {
            added: List::with_limit(SPILL_ABOVE),
            removed: List::with_limit(SPILL_ABOVE),
            changed: List::with_limit(SPILL_ABOVE),
            ..Diff::default()
        };
        // Once a side fails the diff is dropped: stop collecting (the rest is drained below,
        // so each side runs to its end and reports its own error).
        let live = |_: &FileEntry| !failed.load(std::sync::atomic::Ordering::Relaxed);
        diff_files(
            &mut d,
            old_rx.iter().flatten().take_while(live),
            new_rx.iter().flatten().take_while(live),
        );
        old_rx.iter().for_each(drop);
        new_rx.iter().for_each(drop);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Manifest>>| {
            h.join()
                .unwrap_or_else(|_| Err(Error::input("manifest reader panicked".to_string())))
        };
        (join(old_h), join(new_h), d)
    });
    let a = old_r?;
    let b = new_r?;
    // (A spill file has no name: the error names the folder it is in.)
    let spill = |source| Error::Io {
        path: std::env::temp_dir(),
        source,
    };
    d.added.finish().map_err(spill)?;
    d.removed.finish().map_err(spill)?;
    d.changed.finish().map_err(spill)?;
    diff_images(&mut d, &a, &b);
    Ok((a, b, d))
}

/// Copy the metadata file `name` of the verified folder `from` into `to`, if present: opened
/// as verification opens it (a regular file, no link followed, a FIFO never waited on) and
/// copied no further than its size when opened and the cap of its kind — a link, FIFO or
/// growing file swapped in after verification is refused, not followed or copied without end
/// (the result is verified again before it is used).
fn copy_metadata(from: &Path, to: &Path, name: &str) -> Result<()> {
    use std::io::Read as _;
    let cap = if crate::streamed::STREAMED.contains(&name) {
        crate::streamed::MAX_STREAMED_MANIFEST_BYTES
    } else {
        crate::MAX_METADATA_BYTES
    };
    let Some((f, len, src)) = crate::streamed::open_meta(from, name, Some(cap))? else {
        return Ok(());
    };
    let dest = BundlePath::new(name)
        .map_err(|e| Error::content(Field::file(name), e))?
        .under(to);
    if let Some(p) = dest.parent() {
        std::fs::create_dir_all(p).at(p)?;
    }
    let mut out = crate::fs::create_new(&dest)?;
    let copied = std::io::copy(&mut f.take(len.saturating_add(1)), &mut out).at(&src)?;
    if copied != len {
        return Err(Error::metadata(
            Field::file(name),
            format!("{} changed while it was copied", src.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Metadata is copied only from a regular file, never through a link or from a FIFO (no
    /// wait), and never past the size it had when opened.
    #[test]
    fn metadata_is_copied_from_regular_files_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let (from, to) = (d.path().join("from"), d.path().join("to"));
        std::fs::create_dir_all(&from).expect("mkdir");
        std::fs::create_dir_all(&to).expect("mkdir");
        std::fs::write(from.join(names::SUMS), b"abc  x\n").expect("write");
        copy_metadata(&from, &to, names::SUMS).expect("copy");
        assert_eq!(
            std::fs::read(to.join(names::SUMS)).expect("read"),
            b"abc  x\n"
        );
        // Absent: nothing to copy.
        copy_metadata(&from, &to, names::KEYLESS).expect("absent");
        assert!(!to.join(names::KEYLESS).exists());
        // A link (to a file, or to /dev/zero) and a FIFO are refused; nothing is written.
        std::os::unix::fs::symlink("/dev/zero", from.join(names::SUMS_DSSE)).expect("link");
        std::os::unix::fs::symlink(from.join(names::SUMS), from.join(names::MANIFEST))
            .expect("link");
        let made = std::process::Command::new("mkfifo")
            .arg(from.join(names::TIME_ANCHOR))
            .status()
            .expect("mkfifo");
        assert!(made.success());
        for name in [names::SUMS_DSSE, names::MANIFEST, names::TIME_ANCHOR] {
            let e = copy_metadata(&from, &to, name).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{name}: {e}");
            assert!(!to.join(name).exists(), "{name}");
        }
    }

    fn entry(i: usize, b: u8) -> FileEntry {
        FileEntry {
            path: BundlePath::new(&format!("d/{i:06}\u{e9}.json")).unwrap(),
            size: i as u64,
            sha256: Digest::sha256([b; 32]),
            media_type: "application/json".into(),
        }
    }

    fn all<T: Record>(l: &List<T>) -> Vec<T> {
        l.iter().unwrap().collect::<std::io::Result<_>>().unwrap()
    }

    #[test]
    fn a_list_spills_past_its_limit_and_reads_back_in_order() {
        for limit in [0, 1, 5, 6, usize::MAX] {
            let mut l = List::with_limit(limit);
            assert!(l.is_empty() && all(&l).is_empty());
            let want: Vec<FileEntry> = (0..6).map(|i| entry(i, i as u8)).collect();
            for e in &want {
                l.push(e.clone());
            }
            l.finish().unwrap();
            assert_eq!(l.len(), 6);
            assert_eq!(l.spilled(), limit < 6, "limit {limit}");
            assert_eq!(all(&l), want);
            // Read twice: each iteration starts from the beginning.
            assert_eq!(all(&l), want);
            assert_eq!(
                serde_json::to_value(&l).unwrap(),
                serde_json::to_value(&want).unwrap()
            );
        }
        let mut c = List::with_limit(0);
        let ch = Changed {
            path: BundlePath::new("x/y").unwrap(),
            old_sha256: Digest::sha256([1; 32]),
            new_sha256: Digest::sha256([2; 32]),
            old_size: u64::MAX,
            new_size: 0,
        };
        c.push(ch.clone());
        c.finish().unwrap();
        assert_eq!(all(&c), vec![ch]);
    }

    #[test]
    fn a_record_read_back_refuses_truncated_or_unsafe_bytes() {
        let mut buf = Vec::new();
        entry(1, 1).write_to(&mut buf).unwrap();
        assert_eq!(
            FileEntry::read_from(&mut buf.as_slice()).unwrap(),
            entry(1, 1)
        );
        for cut in [0, 3, 4, 10, buf.len() - 1] {
            let e = FileEntry::read_from(&mut &buf[..cut]).expect_err("truncated");
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "cut {cut}");
        }
        // A path that is not a bundle path, and bytes that are not UTF-8.
        for bad in [&b"../x"[..], &b"\xff"[..]] {
            let mut b = (bad.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(bad);
            b.extend_from_slice(&buf[4 + entry(1, 1).path.as_str().len()..]);
            let e = FileEntry::read_from(&mut b.as_slice()).expect_err("bad path");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn the_streamed_diff_spills_many_differences_and_equals_the_in_memory_diff() {
        let n = 3 * SPILL_ABOVE;
        let mut a = crate::testing::sample_manifest();
        a.files = (0..n).map(|i| entry(i, 0)).collect();
        // B: the first third unchanged, every other file of the second changed (the rest
        // removed), and files added past the end.
        let mut b = a.clone();
        b.files = (0..n / 3)
            .map(|i| entry(i, 0))
            .chain((n / 3..2 * n / 3).step_by(2).map(|i| entry(i, 1)))
            .chain((n..n + SPILL_ABOVE + 1).map(|i| entry(i, 2)))
            .collect();
        b.version = "2".into();
        let dir = tempfile::tempdir().unwrap();
        let (ap, bp) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&ap, a.to_canonical_json()).unwrap();
        std::fs::write(&bp, b.to_canonical_json()).unwrap();
        let want = diff(&a, &b);
        assert!(!want.added.spilled() && !want.removed.spilled());
        assert_eq!(
            (want.added.len(), want.changed.len(), want.removed.len()),
            (SPILL_ABOVE + 1, SPILL_ABOVE / 2, n / 3 + SPILL_ABOVE / 2)
        );
        assert_eq!(want.unchanged, n / 3);
        for stream_above in [0, u64::MAX] {
            let limits = crate::streamed::Limits {
                stream_above,
                ..Default::default()
            };
            let (_, nb, got) = diff_manifest_files(&ap, &bp, &limits).unwrap();
            assert_eq!(nb.version, "2");
            assert!(got.added.spilled() && got.removed.spilled() && !got.changed.spilled());
            assert_eq!(all(&got.added), all(&want.added));
            assert_eq!(all(&got.removed), all(&want.removed));
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::to_value(&want).unwrap()
            );
        }
    }
}
