//! `create`: build a bundle folder from a [`Spec`].
//!
//! Everything is written into a staging folder beside the output and renamed into place at
//! the end, so a failure leaves nothing half-written. With a base manifest the result is a
//! **thin** bundle: the manifest describes the whole new bundle (every file, so `apply` can
//! rebuild and check it), but the folder holds only files that are new or changed against the
//! base — image blobs included, since blobs are named by digest — and the manifest lists the
//! base's paths that are gone under `removed`.
//!
//! Memory does not grow with the file count beyond a compact list of the files (`Collected`:
//! sorted runs of front-coded paths and 44-byte records, about 57 B per advisory file; the
//! advisory folders are walked in path order, so each is one run); advisory folders are
//! walked as a stream and copied in bounded batches, and
//! `manifest.json` is written canonically as a stream ([`Manifest::write_canonical`]), the
//! same bytes the in-memory writer produced. A base manifest above
//! [`crate::streamed::Limits::stream_above`] is read straight into a [`FileIndex`].

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use stella_oci::media;
use time::OffsetDateTime;

use crate::error::{Error, IoContext as _, Result};
use crate::from_base::SortedPaths;
use crate::fs::{check_output_free, Staging};
use crate::hash::{Digest, Progress};
use crate::manifest::{
    format_time, BaseRef, FileEntry, FileList, FileRef, ImageEntry, Kind, Manifest, ManifestError,
};
use crate::oci::LayoutWriter;
use crate::runs::{Merged, SortedRuns};
use crate::spec::{ImageSource, Spec};
use crate::streamed::FileIndex;
use crate::BundlePath;

/// Options of `create`.
pub struct CreateOptions {
    /// `generatedAt` (normally now; pinned for reproducible builds).
    pub generated_at: OffsetDateTime,
    /// Base manifest for a thin bundle.
    pub base: Option<PathBuf>,
    /// How to reach registries for `ref:` images (plain HTTP only for loopback registries
    /// unless `plain_http` says otherwise; credentials from the docker config file).
    pub registry: stella_oci::ClientConfig,
}

/// What `create` wrote.
#[derive(Debug, Clone)]
pub struct CreateReport {
    /// The manifest written, without its file list (`files` is empty: a bundle may list
    /// millions; see [`files`](Self::files) and [`bytes`](Self::bytes)).
    pub head: Manifest,
    /// Files the manifest lists.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Files written into the folder (all of them for a full bundle).
    pub written: usize,
    pub written_bytes: u64,
    /// Registry images (`ref:`) and what their pulls transferred.
    pub pulled: Vec<crate::registry::PulledImage>,
}

struct Base {
    /// Without its files (they are in `files`).
    head: Manifest,
    files: BaseFiles,
    /// The digests of the base's image blobs (`images/blobs/sha256/<hex>` listed with that
    /// SHA-256): a thin bundle does not carry them again.
    known: HashSet<Digest>,
    digest: Digest,
}

/// The base manifest's files as a thin `create` asks about them — is this path listed, with
/// which SHA-256; which listed paths are gone — and nothing else (sizes and media types are
/// not needed): the paths front-coded ([`SortedPaths`], taken over from the [`FileIndex`] it
/// is built from) and the first [`PREFIX`] bytes of each file's SHA-256. At 1,000,000 advisory
/// files that is ~30 MB (~58 MB in the GHSA layout), against ~57 MB (~86 MB) for the index
/// (its 44-byte records are dropped before the new file list grows).
///
/// Design decision: a 128-bit prefix decides "unchanged". A new file whose digest shares
/// its path's base prefix but not the rest would take a second preimage of 128 bits to make,
/// and even then only spoils the update: the manifest lists the new file's full digest, so
/// `apply` would refuse the base's copy left in its place.
#[derive(Default)]
struct BaseFiles {
    paths: SortedPaths,
    sha256: Vec<[u8; PREFIX]>,
}

/// Bytes of a base file's SHA-256 that [`BaseFiles`] keeps.
const PREFIX: usize = 16;

impl BaseFiles {
    /// The files of `index` (strictly increasing paths, as a [`FileIndex`] holds them).
    fn from_index(index: FileIndex) -> Self {
        let (paths, sha256) = index.into_paths_and_digest_prefixes();
        BaseFiles { paths, sha256 }
    }

    /// The position of `path`, if listed.
    fn find(&self, path: &str) -> Option<usize> {
        self.paths.find(path)
    }

    /// Whether the base lists `path` with this digest (its first [`PREFIX`] bytes).
    fn has(&self, path: &str, sha: &Digest) -> bool {
        self.find(path)
            .and_then(|i| self.sha256.get(i))
            .is_some_and(|d| sha.as_bytes().starts_with(d))
    }
}

/// The files recorded for the manifest ([`SortedRuns`]: ~57 B per advisory file; the advisory
/// walks come in path order ([`crate::fs::walk_sorted_each`]), so a folder of a million files
/// is one run). A path recorded twice is refused ("two inputs map to …") where two runs meet.
#[derive(Default)]
struct Collected {
    runs: SortedRuns,
}

impl Collected {
    fn new() -> Self {
        Collected::default()
    }

    fn push(&mut self, path: &str, size: u64, sha: Digest, media_type: &str) -> Result<()> {
        self.runs
            .push(path, size, *sha.as_bytes(), media_type, &mut refuse_repeat)
    }

    /// The files in path order.
    fn merged(&self) -> Merged<'_> {
        self.runs.merged()
    }

    /// Refuse a path recorded twice (the runs hold each path once; two may share one).
    fn finish(&mut self) -> Result<()> {
        self.runs.shrink_to_fit();
        self.runs.each_repeat(&mut refuse_repeat)
    }

    /// Every path of `base` (increasing) that is not recorded, in order: one pass beside the
    /// files (after [`finish`](Self::finish)).
    fn each_missing(
        &self,
        base: &mut crate::from_base::PathCursor<'_>,
        f: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let mut files = self.merged();
        let mut here = Vec::new();
        let mut next = |here: &mut Vec<u8>| match files.next() {
            Some(e) => {
                here.clear();
                here.extend_from_slice(e.path.as_bytes());
                true
            }
            None => false,
        };
        let mut more = next(&mut here);
        while let Some(p) = base.next_path() {
            while more && here.as_slice() < p.as_bytes() {
                more = next(&mut here);
            }
            if !(more && here.as_slice() == p.as_bytes()) {
                f(p)?;
            }
        }
        Ok(())
    }

    fn total_size(&self) -> u64 {
        self.runs.total_size()
    }

    /// The manifest's checks of `files` ([`Manifest::validate`]), entry by entry in order.
    fn validate(&self) -> std::result::Result<(), ManifestError> {
        let mut order = crate::manifest::PathOrder::default();
        let mut files = self.merged();
        while let Some(f) = files.next() {
            let entry = FileEntry {
                path: BundlePath::new(f.path).map_err(ManifestError::FilePath)?,
                size: f.size,
                sha256: f.sha256,
                media_type: f.media_type.to_string(),
            };
            crate::manifest::check_next(&mut order, &entry)?;
        }
        Ok(())
    }
}

/// "two inputs map to `path`": what `create` makes of a path recorded twice.
fn refuse_repeat(_first: FileRef<'_>, again: FileRef<'_>) -> Result<()> {
    Err(Error::input(format!("two inputs map to {}", again.path)))
}

impl FileList for Collected {
    fn count(&self) -> usize {
        self.runs.count()
    }

    fn each(&self, f: &mut dyn FnMut(FileRef<'_>) -> io::Result<()>) -> io::Result<()> {
        let mut files = self.merged();
        while let Some(e) = files.next() {
            f(e)?;
        }
        Ok(())
    }
}

/// Files collected for the manifest, and the thin-bundle decision for each.
struct Files<'a> {
    root: PathBuf,
    entries: Collected,
    base: Option<&'a Base>,
    written: usize,
    written_bytes: u64,
}

impl Files<'_> {
    fn unchanged(&self, path: &str, sha: &Digest) -> bool {
        self.base.is_some_and(|b| b.files.has(path, sha))
    }

    fn record(&mut self, path: &str, size: u64, sha: Digest, media_type: &str) -> Result<()> {
        BundlePath::new(path).map_err(Error::input)?;
        self.entries.push(path, size, sha, media_type)
    }

    /// A generated file: written unless the base already has these bytes.
    fn put_bytes(&mut self, path: &str, bytes: &[u8], media_type: &str, mode: u32) -> Result<()> {
        let sha = Digest::of(bytes);
        self.record(path, bytes.len() as u64, sha, media_type)?;
        if self.unchanged(path, &sha) {
            return Ok(());
        }
        let dest = BundlePath::new(path)
            .map_err(Error::input)?
            .under(&self.root);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).at(p)?;
        }
        crate::fs::write_new(&dest, bytes)?;
        set_mode(&dest, mode)?;
        self.written += 1;
        self.written_bytes += bytes.len() as u64;
        Ok(())
    }

    /// A copied file: hashed from the source first for thin bundles, copied when needed.
    fn put_copy(&mut self, path: &str, src: &Path, progress: &dyn Progress) -> Result<()> {
        if self.base.is_some() {
            let (sha, size) = crate::hash::hash_file(src, progress)?;
            return self.put_hashed(path, src, sha, size, progress);
        }
        self.copy_in(path, src, progress)
    }

    /// A thin bundle's file whose source hashed to `sha` (`size` bytes): recorded, and copied
    /// unless the base lists it with that digest.
    fn put_hashed(
        &mut self,
        path: &str,
        src: &Path,
        sha: Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        if self.unchanged(path, &sha) {
            return self.record(path, size, sha, media_type_for(path));
        }
        self.copy_in(path, src, progress)
    }

    /// Copy `src` into the bundle as `path` (hashing on the way) and record it.
    fn copy_in(&mut self, path: &str, src: &Path, progress: &dyn Progress) -> Result<()> {
        let mt = media_type_for(path);
        let dest = BundlePath::new(path)
            .map_err(Error::input)?
            .under(&self.root);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).at(p)?;
        }
        let (sha, size) = crate::hash::copy_hashing(src, &dest, progress)?;
        set_mode(&dest, 0o644)?;
        self.written += 1;
        self.written_bytes += size;
        self.record(path, size, sha, mt)
    }
}

/// Files [`Files::put_folder`] copies per batch: bounds the work list however many files a
/// folder holds.
const COPY_BATCH: usize = 4096;

/// One batch of files to copy: (source under the source root, destination path in the
/// bundle), their folders made.
type Jobs = Vec<(String, String)>;

impl Files<'_> {
    /// A full bundle's advisory folder: walked as a stream and copied and hashed on every
    /// core in batches of [`COPY_BATCH`] (a bounded work list however many files it holds).
    /// The walk, the path checks and the folders of the next batch are done on a thread of
    /// their own while a batch is copied (at most two batches ahead).
    fn put_folder(&mut self, target: &str, src_root: &Path, progress: &dyn Progress) -> Result<()> {
        let mut made: Option<PathBuf> = None;
        if self.walk_takes_output(src_root) {
            // The output is inside the source: list the source before anything is copied.
            for chunk in walk_sorted(src_root)?.chunks(COPY_BATCH) {
                let jobs = prepare_batch(&self.root, target, src_root, chunk, &mut made)?;
                self.copy_batch(src_root, &jobs, progress)?;
            }
            return Ok(());
        }
        let root = self.root.clone();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Jobs>>(1);
            s.spawn(move || {
                let mut batch: Vec<String> = Vec::with_capacity(COPY_BATCH);
                let walked = walk_source(src_root, &mut |rel| {
                    batch.push(rel.to_string());
                    if batch.len() == COPY_BATCH {
                        let jobs = prepare_batch(&root, target, src_root, &batch, &mut made)?;
                        batch.clear();
                        // The copying side stopped (it failed): so does the walk.
                        tx.send(Ok(jobs))
                            .map_err(|_| Error::input("stopped".to_string()))?;
                    }
                    Ok(())
                })
                .and_then(|()| prepare_batch(&root, target, src_root, &batch, &mut made));
                // Errors come in walk order, after every batch before them (as when the
                // walk and the copies took turns).
                let _ = tx.send(walked);
            });
            for jobs in rx {
                self.copy_batch(src_root, &jobs?, progress)?;
            }
            Ok(())
        })
    }

    /// Whether the bundle being built lies inside `src_root` (a streamed walk would meet
    /// the copies it makes).
    fn walk_takes_output(&self, src_root: &Path) -> bool {
        match (src_root.canonicalize(), self.root.canonicalize()) {
            (Ok(src), Ok(root)) => root.starts_with(src),
            _ => true,
        }
    }

    /// Copy one prepared batch (see [`prepare_batch`]) and record its files.
    fn copy_batch(&mut self, src_root: &Path, jobs: &Jobs, progress: &dyn Progress) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Copied and hashed on every core, files opened relative to their folders
        // without following links, created exclusively with mode 0644.
        let out = crate::hash::copy_tree(src_root, &self.root, jobs, progress)?;
        for ((_, path), (sha, size)) in jobs.iter().zip(out) {
            self.written += 1;
            self.written_bytes += size;
            self.record(path, size, sha, media_type_for(path))?;
        }
        Ok(())
    }
}

impl Files<'_> {
    /// A thin bundle's advisory folder: every file hashed (on every core, [`COPY_BATCH`]
    /// files at a time, the walk on a thread of its own as in [`put_folder`](Self::put_folder))
    /// and then, in walk order, recorded — and copied if the base does not list it with that
    /// digest — exactly as [`put_copy`](Self::put_copy) does file by file.
    fn put_folder_thin(
        &mut self,
        target: &str,
        src_root: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        if self.walk_takes_output(src_root) {
            // The output is inside the source: list the source before anything is copied.
            for chunk in walk_sorted(src_root)?.chunks(COPY_BATCH) {
                self.put_thin_batch(target, src_root, chunk, progress)?;
            }
            return Ok(());
        }
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<String>>>(1);
            s.spawn(move || {
                let mut batch: Vec<String> = Vec::with_capacity(COPY_BATCH);
                let walked = walk_source(src_root, &mut |rel| {
                    batch.push(rel.to_string());
                    if batch.len() == COPY_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(COPY_BATCH));
                        // The hashing side stopped (it failed): so does the walk.
                        tx.send(Ok(full))
                            .map_err(|_| Error::input("stopped".to_string()))?;
                    }
                    Ok(())
                });
                // The files walked before an error are handled before it is reported.
                let _ = tx.send(Ok(batch));
                if let Err(e) = walked {
                    let _ = tx.send(Err(e));
                }
            });
            for batch in rx {
                self.put_thin_batch(target, src_root, &batch?, progress)?;
            }
            Ok(())
        })
    }

    /// One batch of [`put_folder_thin`](Self::put_folder_thin): the files up to the first
    /// path that is not a bundle path are hashed on every core, then each is handled in
    /// order as `put_copy` would after hashing it. If the hashing fails, the batch is done
    /// file by file (`put_copy`), so the error reported is the one the file-by-file route
    /// meets first.
    fn put_thin_batch(
        &mut self,
        target: &str,
        src_root: &Path,
        rels: &[String],
        progress: &dyn Progress,
    ) -> Result<()> {
        let valid = rels
            .iter()
            .position(|r| BundlePath::new(r).is_err())
            .unwrap_or(rels.len());
        let list: Vec<(&str, crate::hash::End)> = rels[..valid]
            .iter()
            .map(|r| (r.as_str(), crate::hash::End::Zero))
            .collect();
        let hashed = if list.is_empty() {
            Some(Vec::new())
        } else {
            crate::hash::hash_tree(src_root, &list, progress).ok()
        };
        for (i, rel) in rels.iter().enumerate() {
            let src = BundlePath::new(rel)
                .map_err(|e| Error::input(format!("{}: {e}", src_root.display())))?
                .under(src_root);
            let path = format!("advisories/{target}/{rel}");
            match hashed.as_ref().and_then(|h| h.get(i)) {
                // Read to the end (`End::Zero`): the whole file.
                Some(h) => self.put_hashed(&path, &src, h.digest, h.size, progress)?,
                None => self.put_copy(&path, &src, progress)?,
            }
        }
        Ok(())
    }
}

/// A batch of files of `src_root` (relative paths) to copy under `advisories/{target}/` of
/// the bundle being built in `root`: each path checked, and the folders made.
fn prepare_batch(
    root: &Path,
    target: &str,
    src_root: &Path,
    batch: &[String],
    made: &mut Option<PathBuf>,
) -> Result<Jobs> {
    let mut jobs = Vec::with_capacity(batch.len());
    for rel in batch {
        BundlePath::new(rel).map_err(|e| Error::input(format!("{}: {e}", src_root.display())))?;
        let path = format!("advisories/{target}/{rel}");
        let dest = BundlePath::new(&path).map_err(Error::input)?.under(root);
        // The walk lists a folder's files together (its subfolders' where they sort): about
        // one create_dir_all per folder.
        if let Some(p) = dest.parent() {
            if made.as_deref() != Some(p) {
                std::fs::create_dir_all(p).at(p)?;
                *made = Some(p.to_path_buf());
            }
        }
        jobs.push((rel.clone(), path));
    }
    Ok(jobs)
}

/// A walk error of an advisory source, as an input error naming the source.
fn source_error(src: &Path, e: Error) -> Error {
    match e {
        Error::Verify(m) => Error::input(format!("{}: {m}", src.display())),
        e => e,
    }
}

/// Every file of an advisory source folder (relative path), streamed, in path order (so the
/// file list grows as one sorted run).
fn walk_source(src: &Path, each: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    // Errors of `each` pass through unchanged; only the walk's own are renamed.
    let mut inner: Option<Error> = None;
    let walked = crate::fs::walk_sorted_each(src, &mut |rel| {
        each(rel).map_err(|e| {
            inner = Some(e);
            Error::input("stopped")
        })
    });
    if let Some(e) = inner {
        return Err(e);
    }
    walked.map_err(|e| source_error(src, e))
}

/// Every file of an advisory source folder (relative path), sorted.
fn walk_sorted(src: &Path) -> Result<Vec<String>> {
    crate::fs::walk(src).map_err(|e| source_error(src, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at(path)
}

/// Media type of an advisory or other copied file, from its name.
pub(crate) fn media_type_for(path: &str) -> &'static str {
    let p = path.to_ascii_lowercase();
    if p.ends_with(".json.gz") || p.ends_with(".gz") || p.ends_with(".tgz") {
        "application/gzip"
    } else if p.ends_with(".zst") {
        "application/zstd"
    } else if p.ends_with(".json") {
        "application/json"
    } else if p.ends_with(".xml") {
        "application/xml"
    } else if p.ends_with(".csv") {
        "text/csv"
    } else if p.ends_with(".md") {
        "text/markdown"
    } else if p.ends_with(".txt") {
        "text/plain"
    } else if p.ends_with(".tar") {
        "application/x-tar"
    } else if p.ends_with(".yaml") || p.ends_with(".yml") {
        "application/yaml"
    } else {
        "application/octet-stream"
    }
}

/// Build the bundle of `spec` into `out`.
pub fn create(
    spec: &Spec,
    out: &Path,
    opts: &CreateOptions,
    progress: &dyn Progress,
) -> Result<CreateReport> {
    check_output_free(out)?;
    let base = match &opts.base {
        Some(p) => {
            let base = read_base(p, &crate::streamed::Limits::default())?;
            if base.head.bundle != spec.name {
                return Err(Error::input(format!(
                    "base {} is bundle {:?}, not {:?}",
                    p.display(),
                    base.head.bundle,
                    spec.name
                )));
            }
            if spec.generation <= base.head.generation {
                return Err(Error::input(format!(
                    "a thin bundle must have a higher generation than its base: spec says {}, base is {}",
                    spec.generation, base.head.generation
                )));
            }
            Some(base)
        }
        None => None,
    };
    let known: HashSet<Digest> = base.as_ref().map(|b| b.known.clone()).unwrap_or_default();

    let staging = Staging::beside(out, "create")?;
    let root = staging.path.clone();
    let mut files = Files {
        root: root.clone(),
        entries: Collected::new(),
        base: base.as_ref(),
        written: 0,
        written_bytes: 0,
    };

    // Images: local sources first, then registry pulls into the same layout (a pull skips
    // blobs the layout already holds, so shared layers are stored and fetched once).
    let mut images = Vec::new();
    let mut pulled = Vec::new();
    if !spec.images.is_empty() {
        progress.start("images", 0);
        let scratch = root.join(".scratch");
        let mut layout = LayoutWriter::new(&root.join("images"), &known, progress)?;
        for (i, img) in spec.images.iter().enumerate() {
            match &img.source {
                ImageSource::OciLayout { dir, ref_name } => {
                    layout.add_oci_layout(&img.reference, dir, ref_name.as_deref())?
                }
                ImageSource::DockerArchive { file, repo_tag } => layout.add_docker_archive(
                    &img.reference,
                    file,
                    repo_tag.as_deref(),
                    &scratch.join(i.to_string()),
                )?,
                ImageSource::Registry { .. } => {}
            }
        }
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).at(&scratch)?;
        }
        progress.finish();
        let remote: Vec<&crate::spec::ImageSpec> = spec
            .images
            .iter()
            .filter(|i| matches!(i.source, ImageSource::Registry { .. }))
            .collect();
        if !remote.is_empty() {
            let dir = root.join("images");
            pulled = crate::registry::pull_images(&opts.registry, &remote, &dir, progress)?;
            // The pull's own layout files: the bundle's are written below.
            for f in ["oci-layout", "index.json"] {
                std::fs::remove_file(dir.join(f)).at(dir.join(f))?;
            }
        }
        let (oci_layout, index) = layout.finish()?;
        let index = if pulled.is_empty() {
            index
        } else {
            crate::registry::merge_index(&index, &pulled)?
        };
        let mut blobs: BTreeMap<Digest, (u64, String)> = layout
            .blobs()
            .iter()
            .map(|(d, b)| (*d, (b.size, b.media_type.clone())))
            .collect();
        for p in &pulled {
            for (d, size, mt) in &p.blobs {
                blobs.entry(*d).or_insert_with(|| (*size, mt.clone()));
            }
        }
        for (d, (size, media_type)) in &blobs {
            let path = format!("images/blobs/sha256/{}", d.hex());
            files.record(&path, *size, *d, media_type)?;
            let file = layout.blob_path(d);
            if known.contains(d) {
                // Thin bundle: the base carries it (a pull may have fetched it anyway).
                if file.exists() {
                    std::fs::remove_file(&file).at(&file)?;
                }
            } else {
                files.written += 1;
                files.written_bytes += *size;
                set_mode(&file, 0o644)?;
            }
        }
        if !pulled.is_empty() {
            // Nothing unlisted may stay behind (a bundle with unlisted files does not verify).
            let dir = root.join("images").join("blobs").join("sha256");
            for e in std::fs::read_dir(&dir).at(&dir)? {
                let e = e.at(&dir)?;
                let listed = e
                    .file_name()
                    .to_str()
                    .and_then(crate::hash::parse_hex)
                    .is_some_and(|d| blobs.contains_key(&d) && !known.contains(&d));
                if !listed {
                    std::fs::remove_file(e.path()).at(e.path())?;
                }
            }
        }
        files.put_bytes(
            "images/oci-layout",
            &oci_layout,
            media::OCI_LAYOUT_HEADER,
            0o644,
        )?;
        files.put_bytes("images/index.json", &index, media::OCI_INDEX, 0o644)?;
        images = layout
            .images()
            .iter()
            .map(|i| ImageEntry {
                reference: i.reference.clone(),
                digest: i.digest,
                platforms: i.platforms.clone(),
            })
            .chain(pulled.iter().map(|p| ImageEntry {
                reference: p.reference.clone(),
                digest: p.digest,
                platforms: p.platforms.clone(),
            }))
            .collect::<Vec<_>>();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
    }

    // Advisories.
    for a in &spec.advisories {
        let meta = std::fs::metadata(&a.path).at(&a.path)?;
        if meta.is_file() {
            files.put_copy(&format!("advisories/{}", a.target), &a.path, progress)?;
        } else if meta.is_dir() {
            if files.base.is_some() {
                files.put_folder_thin(&a.target, &a.path, progress)?;
            } else {
                files.put_folder(&a.target, &a.path, progress)?;
            }
        } else {
            return Err(Error::input(format!(
                "advisory {} is neither a file nor a folder",
                a.path.display()
            )));
        }
    }

    // Scripts and docs.
    for (path, text, mt) in crate::scripts::generated(&spec.name, &spec.version) {
        files.put_bytes(&path, text.as_bytes(), mt, crate::path::file_mode(&path))?;
    }

    let (written, written_bytes) = (files.written, files.written_bytes);
    let mut entries = files.entries;
    entries.finish()?;
    let (kind, base_ref, removed) = match &base {
        Some(b) => {
            let mut removed = Vec::new();
            entries.each_missing(&mut b.files.paths.cursor(), &mut |p| {
                removed.push(BundlePath::new(p).map_err(Error::input)?);
                Ok(())
            })?;
            (
                Kind::Thin,
                Some(BaseRef {
                    bundle: b.head.bundle.clone(),
                    version: b.head.version.clone(),
                    generation: b.head.generation,
                    manifest_digest: b.digest,
                }),
                removed,
            )
        }
        None => (Kind::Full, None, Vec::new()),
    };
    drop(base);
    let manifest = Manifest {
        bundle: spec.name.clone(),
        version: spec.version.clone(),
        generation: spec.generation,
        kind,
        base: base_ref,
        generated_at: format_time(opts.generated_at),
        valid_for_seconds: spec.valid_for_seconds,
        issuer: spec.issuer.clone(),
        purpose: crate::PURPOSE.into(),
        files: Vec::new(),
        images,
        removed,
        checksums: Vec::new(),
    };
    manifest.validate().map_err(Error::input)?;
    entries.validate().map_err(Error::input)?;
    {
        let path = root.join(crate::names::MANIFEST);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        let mut w = BufWriter::with_capacity(256 * 1024, f);
        manifest.write_canonical(&entries, &mut w).at(&path)?;
        w.flush().at(&path)?;
    }
    set_mode(&root.join(crate::names::MANIFEST), 0o644)?;
    set_mode(&root, 0o755)?;
    // Empty folders (a thin bundle without image changes) are not part of a bundle.
    remove_empty_dirs(&root)?;
    staging.commit(out)?;
    Ok(CreateReport {
        head: manifest,
        files: entries.count(),
        bytes: entries.total_size(),
        written,
        written_bytes,
        pulled,
    })
}

/// The base manifest of a thin bundle, its files as a [`FileIndex`]: typed in memory up to
/// `limits.stream_above` bytes (the messages of [`Manifest::from_json`]), read straight into
/// the index above.
fn read_base(p: &Path, limits: &crate::streamed::Limits) -> Result<Base> {
    let bad = |e: ManifestError| Error::input(format!("base {}: {e}", p.display()));
    let size = std::fs::metadata(p).at(p)?.len();
    if size > limits.stream_above {
        let f = std::fs::File::open(p).at(p)?;
        let mut hashing = crate::streamed::Tee {
            inner: io::sink(),
            hasher: crate::hash::Hasher::new(),
        };
        let reader = TeeReader {
            inner: io::BufReader::new(f),
            copy: &mut hashing,
        };
        let (head, index) = crate::streamed::parse_manifest(reader).map_err(bad)?;
        // The digest is over every byte, including any after the JSON value.
        return Ok(Base::new(head, index, hashing.hasher.finish()));
    }
    let bytes = std::fs::read(p).at(p)?;
    let mut head = Manifest::from_json(&bytes).map_err(bad)?;
    let mut index = FileIndex::default();
    for f in std::mem::take(&mut head.files) {
        index.push(f).map_err(bad)?;
    }
    Ok(Base::new(head, index, Digest::of(&bytes)))
}

impl Base {
    /// The base as `create` keeps it: `index` packed ([`BaseFiles`]) and its image blobs
    /// noted; the caller drops `index`.
    fn new(head: Manifest, index: FileIndex, digest: Digest) -> Self {
        // Only the entries under the blob folder are read (the advisories are not decoded).
        const BLOBS: &str = "images/blobs/sha256/";
        let mut known = std::collections::HashSet::new();
        let range = index.in_folder(BLOBS.as_bytes(), &mut Vec::new());
        let mut files = index.cursor_at(range.start);
        for _ in range {
            let Some(f) = files.next_entry() else { break };
            let hex = f.path.strip_prefix(BLOBS);
            if hex.is_some_and(|hex| hex == f.sha256.hex()) {
                known.insert(f.sha256);
            }
        }
        Base {
            head,
            files: BaseFiles::from_index(index),
            known,
            digest,
        }
    }
}

/// A reader that copies what it reads to a writer.
struct TeeReader<'a, R> {
    inner: R,
    copy: &'a mut dyn io::Write,
}

impl<R: io::Read> io::Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        if e.file_type().at(e.path())?.is_dir() {
            if remove_empty_dirs(&e.path())? {
                std::fs::remove_dir(e.path()).at(e.path())?;
            } else {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest::sha256([i; 32])
    }

    /// Every entry of `c` as [`FileList::each`] hands them out: path, size, digest, type.
    fn listed(c: &Collected) -> Vec<(String, u64, Digest, String)> {
        let mut out = Vec::new();
        c.each(&mut |f| {
            out.push((
                f.path.to_string(),
                f.size,
                f.sha256,
                f.media_type.to_string(),
            ));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn collected_files_are_sorted_once_and_checked() {
        let mut c = Collected::new();
        for (p, i) in [("b/2", 2), ("b/1", 1), ("a", 0), ("c", 3)] {
            c.push(p, u64::from(i) * 10, d(i), "text/plain").unwrap();
        }
        c.push("a.json", 5, d(9), "application/json").unwrap();
        assert!(c.runs.runs().len() > 1);
        c.finish().unwrap();
        let seen = listed(&c);
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(paths, ["a", "a.json", "b/1", "b/2", "c"]);
        assert_eq!(seen[1].1, 5);
        assert_eq!(seen[1].2, d(9));
        assert_eq!(seen[1].3, "application/json");
        assert_eq!(seen[2].3, "text/plain");
        assert_eq!(c.count(), 5);
        assert_eq!(c.total_size(), 65);
        assert_eq!(missing(&c, &["a0", "b", "b/1", "c", "d"]), ["a0", "b", "d"]);
        c.validate().unwrap();

        // Already in order: no sort; two inputs to one path are refused.
        let mut c = Collected::new();
        c.push("x/a", 1, d(1), "t").unwrap();
        c.push("x/b", 1, d(1), "t").unwrap();
        assert_eq!(c.runs.runs().len(), 1);
        c.push("x/a", 1, d(2), "t").unwrap();
        let e = c.finish().unwrap_err().to_string();
        assert_eq!(e, "two inputs map to x/a");

        // A file that is also a folder, and a metadata name, as validate refuses them.
        let mut c = Collected::new();
        c.push("x/a", 1, d(1), "t").unwrap();
        c.push("x", 1, d(1), "t").unwrap();
        c.finish().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("file x is also a folder of x/a"), "{e}");
        let mut c = Collected::new();
        c.push("SHA256SUMS", 1, d(1), "t").unwrap();
        c.finish().unwrap();
        assert!(c.validate().is_err());
    }

    /// The paths of `base` (sorted) that `c` does not hold, by [`Collected::each_missing`].
    fn missing(c: &Collected, base: &[&str]) -> Vec<String> {
        let mut paths = SortedPaths::default();
        for p in base {
            paths.push(p);
        }
        let mut out = Vec::new();
        c.each_missing(&mut paths.cursor(), &mut |p| {
            out.push(p.to_string());
            Ok(())
        })
        .unwrap();
        out
    }

    /// Files recorded in any order read back sorted, with what they were recorded with, in
    /// few runs; a path recorded twice is refused wherever the two fall; the paths of a base
    /// not recorded are found in one pass.
    #[test]
    fn collected_runs_read_back_as_one_sorted_list() {
        let paths = corpus();
        let n = paths.len();
        // Orders: sorted; reversed (every file a run of its own); shuffled; sorted stretches
        // in a shuffled order (as sources come); sorted with a few files out of place.
        let mut rand = crate::runs::test_rng(0x9e37_79b9_7f4a_7c15u64);
        let sorted: Vec<usize> = (0..n).collect();
        let mut shuffled = sorted.clone();
        for i in (1..n).rev() {
            shuffled.swap(i, rand(i + 1));
        }
        let mut stretches: Vec<Vec<usize>> = sorted.chunks(97).map(<[usize]>::to_vec).collect();
        for i in (1..stretches.len()).rev() {
            stretches.swap(i, rand(i + 1));
        }
        let mut few_out = sorted.clone();
        for _ in 0..5 {
            let (a, b) = (rand(n), rand(n));
            few_out.swap(a, b);
        }
        let orders = [
            sorted.clone(),
            sorted.iter().rev().copied().collect(),
            shuffled,
            stretches.concat(),
            few_out,
        ];
        let media = |i: usize| ["application/json", "text/plain", "x/y"][i % 3];
        for order in &orders {
            let mut c = Collected::new();
            for &i in order {
                c.push(
                    &paths[i],
                    i as u64,
                    Digest::sha256([(i % 251) as u8; 32]),
                    media(i),
                )
                .unwrap();
                // Runs stay few: each at least twice the size of the next but the last (the
                // corpus is below MERGE_AT_MOST).
                assert!(c.runs.runs().len() <= 2 + (usize::BITS - n.leading_zeros()) as usize);
            }
            c.finish().unwrap();
            let back = listed(&c);
            let want: Vec<_> = (0..n)
                .map(|i| {
                    let sha = Digest::sha256([(i % 251) as u8; 32]);
                    (paths[i].clone(), i as u64, sha, media(i).to_string())
                })
                .collect();
            assert_eq!(back, want);
            assert_eq!(c.count(), n);
            assert_eq!(c.total_size(), (0..n as u64).sum::<u64>());
            // Base paths not recorded: every tenth path left out of a copy, and new ones.
            let mut base: Vec<String> = paths.clone();
            base.extend(["0", "advisories/zzz", "zzzz"].map(String::from));
            base.sort();
            let mut c2 = Collected::new();
            for &i in order.iter().filter(|&&i| i % 10 != 3) {
                c2.push(&paths[i], 1, d(1), "t").unwrap();
            }
            c2.finish().unwrap();
            let base_refs: Vec<&str> = base.iter().map(String::as_str).collect();
            let want: Vec<&str> = base_refs
                .iter()
                .copied()
                .filter(|p| {
                    paths
                        .binary_search(&p.to_string())
                        .map_or(true, |i| i % 10 == 3)
                })
                .collect();
            assert_eq!(missing(&c2, &base_refs), want);
            // A path recorded twice, at each end and in the middle of the order.
            for at in [0, order.len() / 2, order.len() - 1] {
                let mut c = Collected::new();
                let mut twice = Ok(());
                for (k, &i) in order.iter().enumerate() {
                    twice = twice.and(c.push(&paths[i], 1, d(1), "t"));
                    if k == at {
                        twice = twice.and(c.push(&paths[i], 2, d(2), "t"));
                    }
                }
                let e = twice.and_then(|()| c.finish()).unwrap_err().to_string();
                assert_eq!(e, format!("two inputs map to {}", paths[order[at]]));
            }
        }
    }

    /// A long run (an advisory folder) is never merged into another: out-of-order files
    /// around it start runs of their own, and all read back in order.
    #[test]
    fn long_runs_are_not_copied() {
        let mut c = Collected::new();
        c.push("z", 1, d(1), "t").unwrap();
        for i in 0..crate::runs::MERGE_AT_MOST {
            c.push(&format!("m/{i:08}"), 1, d(2), "t").unwrap();
        }
        c.push("a", 1, d(3), "t").unwrap();
        c.push("b", 1, d(3), "t").unwrap();
        c.push("0", 1, d(3), "t").unwrap();
        let lens: Vec<usize> = c.runs.runs().iter().map(FileIndex::len).collect();
        assert_eq!(lens[1], crate::runs::MERGE_AT_MOST, "{lens:?}");
        c.finish().unwrap();
        let back: Vec<String> = listed(&c).into_iter().map(|e| e.0).collect();
        let mut want: Vec<String> = (0..crate::runs::MERGE_AT_MOST)
            .map(|i| format!("m/{i:08}"))
            .collect();
        want.extend(["0", "a", "b", "z"].map(String::from));
        want.sort();
        assert_eq!(back, want);
    }

    /// A varied, sorted, duplicate-free list of bundle paths: shared prefixes of every
    /// length, one path a prefix of the next (`a` / `a.json`), bytes above and below `/`,
    /// multi-byte characters, long names, blocks of 16 and their edges.
    fn corpus() -> Vec<String> {
        let mut paths = vec![
            "a".to_string(),
            "a-b".into(),
            "a.json".into(),
            "a.json.gz".into(),
            "a0".into(),
            "b/c".into(),
            "b/c-d/e".into(),
            "b/cd".into(),
            "images/blobs/sha256/".to_string() + &"ab".repeat(32),
            "images/index.json".into(),
            "z/ü/x".into(),
            "z/ü/y".into(),
            "z/üb".into(),
            "z/ý".into(),
            // Shared prefixes and rests above 127 bytes (two-byte lengths).
            format!("long/{}/{}", "n".repeat(150), "m".repeat(90)),
            format!("long/{}/{}x", "n".repeat(150), "m".repeat(90)),
            format!("long/{}/{}", "n".repeat(15), "m".repeat(99)),
        ];
        for i in 0..1000u32 {
            let j = i.wrapping_mul(2_654_435_761) % 977;
            paths.push(format!("advisories/osv/{:03}/OSV-{:07}.json", i % 37, j));
            paths.push(format!("advisories/nvd/{i}"));
        }
        paths.sort();
        paths.dedup();
        paths
    }

    fn index_of(paths: &[String]) -> FileIndex {
        let mut index = FileIndex::default();
        for (i, p) in paths.iter().enumerate() {
            index
                .push(FileEntry {
                    path: BundlePath::new(p).unwrap(),
                    size: i as u64,
                    sha256: if p.starts_with("images/blobs/sha256/") {
                        Digest::sha256([0xab; 32])
                    } else {
                        d((i % 251) as u8)
                    },
                    media_type: "application/json".into(),
                })
                .unwrap();
        }
        index
    }

    #[test]
    fn packed_base_files_answer_as_the_index_does() {
        let paths = corpus();
        let index = index_of(&paths);
        let base = BaseFiles::from_index(index_of(&paths));
        assert_eq!(base.sha256.len(), index.len());
        // Much smaller than the index it comes from.
        assert!(base.paths.text_bytes() * 2 < paths.iter().map(String::len).sum::<usize>());
        // Every listed path, found where the index has it, with its digest.
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(base.find(p), Some(i), "{p}");
            assert_eq!(base.find(p), index.find(p));
            let sha = index.get(i).unwrap().sha256;
            assert!(base.has(p, &sha));
            assert!(!base.has(p, &d(255)), "{p}");
            // The prefix decides (see BaseFiles): a digest differing in its first 16 bytes is
            // another file, one differing only after them is taken as this one.
            let mut other = *sha.as_bytes();
            other[15] ^= 1;
            assert!(!base.has(p, &Digest::sha256(other)), "{p}");
            other[15] ^= 1;
            other[16] ^= 1;
            assert!(base.has(p, &Digest::sha256(other)), "{p}");
        }
        // Paths not listed: around every listed one (prefixes, extensions, neighbours).
        let mut probes: Vec<String> = vec!["".into(), "0".into(), "~".into(), "b".into()];
        for p in &paths {
            probes.push(format!("{p}/x"));
            probes.push(format!("{p}0"));
            probes.push(format!("{p}\u{10ffff}"));
            let mut shorter = p.clone();
            shorter.pop();
            probes.push(shorter);
            let mut b = p.clone().into_bytes();
            let last = b.len() - 1;
            b[last] = b[last].wrapping_add(1);
            if let Ok(s) = String::from_utf8(b) {
                probes.push(s);
            }
        }
        for q in &probes {
            assert_eq!(base.find(q), index.find(q), "{q:?}");
            assert_eq!(base.find(q), paths.binary_search(q).ok(), "{q:?}");
        }
        // Every path back, in order.
        let mut back = Vec::new();
        let mut c = base.paths.cursor();
        while let Some(p) = c.next_path() {
            back.push(p.to_string());
        }
        assert_eq!(back, paths);
        // The image blob listed under its own digest is known.
        let b = Base::new(crate::testing::sample_manifest(), index, d(1));
        assert_eq!(b.known.len(), 1);
        assert!(b.known.contains(&Digest::sha256([0xab; 32])));
        // Empty.
        let empty = BaseFiles::from_index(FileIndex::default());
        assert_eq!(empty.find("a"), None);
        assert_eq!(empty.find(""), None);
    }

    #[test]
    fn a_base_reads_the_same_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = crate::testing::sample_manifest();
        m.files = (0..500)
            .map(|i| FileEntry {
                path: BundlePath::new(&format!("advisories/{i:05}.json")).unwrap(),
                size: i,
                sha256: d((i % 250) as u8),
                media_type: "application/json".into(),
            })
            .collect();
        let mut bytes = m.to_canonical_json();
        bytes.push(b'\n');
        let p = dir.path().join("base.json");
        std::fs::write(&p, &bytes).unwrap();
        let small = crate::streamed::Limits {
            stream_above: 1024,
            ..Default::default()
        };
        let mem = read_base(&p, &Default::default()).unwrap();
        let streamed = read_base(&p, &small).unwrap();
        assert_eq!(mem.digest, Digest::of(&bytes));
        assert_eq!(streamed.digest, mem.digest);
        assert_eq!(streamed.head, mem.head);
        assert_eq!(streamed.files.sha256.len(), 500);
        assert_eq!(
            streamed.files.paths.text_bytes(),
            mem.files.paths.text_bytes()
        );
        assert_eq!(streamed.files.sha256, mem.files.sha256);
        assert_eq!(streamed.known, mem.known);
        for f in &m.files {
            let i = mem.files.find(f.path.as_str()).unwrap();
            assert_eq!(mem.files.sha256[i][..], f.sha256.as_bytes()[..PREFIX]);
            assert!(streamed.files.has(f.path.as_str(), &f.sha256));
        }
        // Refused alike, naming the base.
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        for limits in [Default::default(), small] {
            let e = read_base(&p, &limits).err().unwrap().to_string();
            assert!(
                e.contains(&format!("base {}: manifest", p.display())),
                "{e}"
            );
        }
    }
}
