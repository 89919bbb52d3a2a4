//! `create`: build a bundle folder from a [`Spec`].
//!
//! Everything is written into a staging folder beside the output and renamed into place at
//! the end, so a failure leaves nothing half-written. With a base manifest the result is a
//! **thin** bundle: the manifest describes the whole new bundle (every file, so `apply` can
//! rebuild and check it), but the folder holds only files that are new or changed against the
//! base — image blobs included, since blobs are named by digest — and the manifest lists the
//! base's paths that are gone under `removed`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use stella_oci::media;
use time::OffsetDateTime;

use crate::error::{Error, IoContext as _, Result};
use crate::fs::{check_output_free, Staging};
use crate::hash::{Digest, Progress};
use crate::manifest::{format_time, BaseRef, FileEntry, ImageEntry, Kind, Manifest};
use crate::oci::LayoutWriter;
use crate::spec::{ImageSource, Spec};
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
    pub manifest: Manifest,
    /// Files written into the folder (all of them for a full bundle).
    pub written: usize,
    pub written_bytes: u64,
    /// Registry images (`ref:`) and what their pulls transferred.
    pub pulled: Vec<crate::registry::PulledImage>,
}

struct Base {
    manifest: Manifest,
    digest: Digest,
}

/// Files collected for the manifest, and the thin-bundle decision for each.
struct Files<'a> {
    root: PathBuf,
    entries: BTreeMap<String, FileEntry>,
    base: Option<&'a Base>,
    written: usize,
    written_bytes: u64,
}

impl Files<'_> {
    fn unchanged(&self, path: &str, sha: &Digest) -> bool {
        self.base
            .and_then(|b| b.manifest.file(path))
            .is_some_and(|f| f.sha256 == sha.hex())
    }

    fn record(&mut self, path: &str, size: u64, sha: Digest, media_type: &str) -> Result<()> {
        BundlePath::new(path).map_err(Error::input)?;
        if self.entries.contains_key(path) {
            return Err(Error::input(format!("two inputs map to {path}")));
        }
        self.entries.insert(
            path.to_string(),
            FileEntry {
                path: path.to_string(),
                size,
                sha256: sha.hex(),
                media_type: media_type.to_string(),
            },
        );
        Ok(())
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
        let mt = media_type_for(path);
        if self.base.is_some() {
            let (sha, size) = crate::hash::hash_file(src, progress)?;
            if self.unchanged(path, &sha) {
                return self.record(path, size, sha, mt);
            }
        }
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

impl Files<'_> {
    /// A full bundle's advisory folder: every file copied and hashed on every core, in
    /// batches of [`COPY_BATCH`] (a bounded work list); recorded in order.
    fn put_folder(
        &mut self,
        target: &str,
        src_root: &Path,
        rels: Vec<String>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut made: Option<PathBuf> = None;
        for batch in rels.chunks(COPY_BATCH) {
            // (source under src_root, destination under the bundle root)
            let mut jobs: Vec<(&str, String)> = Vec::with_capacity(batch.len());
            for rel in batch {
                BundlePath::new(rel)
                    .map_err(|e| Error::input(format!("{}: {e}", src_root.display())))?;
                let path = format!("advisories/{target}/{rel}");
                let dest = BundlePath::new(&path)
                    .map_err(Error::input)?
                    .under(&self.root);
                // The walk is sorted, so a folder's files come together: one create_dir_all
                // per folder.
                if let Some(p) = dest.parent() {
                    if made.as_deref() != Some(p) {
                        std::fs::create_dir_all(p).at(p)?;
                        made = Some(p.to_path_buf());
                    }
                }
                jobs.push((rel.as_str(), path));
            }
            // Copied and hashed on every core, files opened relative to their folders
            // without following links, created exclusively with mode 0644.
            let out = crate::hash::copy_tree(src_root, &self.root, &jobs, progress)?;
            for ((_, path), (sha, size)) in jobs.iter().zip(out) {
                self.written += 1;
                self.written_bytes += size;
                self.record(path, size, sha, media_type_for(path))?;
            }
        }
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at(path)
}

/// Media type of an advisory or other copied file, from its name.
pub fn media_type_for(path: &str) -> &'static str {
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
            let bytes = std::fs::read(p).at(p)?;
            let manifest = Manifest::from_json(&bytes)
                .map_err(|e| Error::input(format!("base {}: {e}", p.display())))?;
            if manifest.bundle != spec.name {
                return Err(Error::input(format!(
                    "base {} is bundle {:?}, not {:?}",
                    p.display(),
                    manifest.bundle,
                    spec.name
                )));
            }
            if spec.generation <= manifest.generation {
                return Err(Error::input(format!(
                    "a thin bundle must have a higher generation than its base: spec says {}, base is {}",
                    spec.generation, manifest.generation
                )));
            }
            Some(Base {
                digest: Digest::of(&bytes),
                manifest,
            })
        }
        None => None,
    };
    let known: HashSet<Digest> = base
        .as_ref()
        .map(|b| {
            b.manifest
                .files
                .iter()
                .filter_map(|f| {
                    let hex = f.path.strip_prefix("images/blobs/sha256/")?;
                    (hex == f.sha256)
                        .then(|| crate::hash::parse_hex(hex))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();

    let staging = Staging::beside(out, "create")?;
    let root = staging.path.clone();
    let mut files = Files {
        root: root.clone(),
        entries: BTreeMap::new(),
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
                digest: i.digest.to_string(),
                platforms: i.platforms.clone(),
            })
            .chain(pulled.iter().map(|p| ImageEntry {
                reference: p.reference.clone(),
                digest: p.digest.to_string(),
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
            let rels = crate::fs::walk(&a.path).map_err(|e| match e {
                Error::Verify(m) => Error::input(format!("{}: {m}", a.path.display())),
                e => e,
            })?;
            if files.base.is_some() {
                for rel in rels {
                    let src = BundlePath::new(&rel)
                        .map_err(|e| Error::input(format!("{}: {e}", a.path.display())))?
                        .under(&a.path);
                    files.put_copy(&format!("advisories/{}/{rel}", a.target), &src, progress)?;
                }
            } else {
                files.put_folder(&a.target, &a.path, rels, progress)?;
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
        let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
        files.put_bytes(&path, text.as_bytes(), mt, mode)?;
    }

    let entries: Vec<FileEntry> = files.entries.into_values().collect();
    let (kind, base_ref, removed) = match &base {
        Some(b) => {
            let now: HashSet<&str> = entries.iter().map(|f| f.path.as_str()).collect();
            let removed = b
                .manifest
                .files
                .iter()
                .filter(|f| !now.contains(f.path.as_str()))
                .map(|f| f.path.clone())
                .collect();
            (
                Kind::Thin,
                Some(BaseRef {
                    bundle: b.manifest.bundle.clone(),
                    version: b.manifest.version.clone(),
                    generation: b.manifest.generation,
                    manifest_digest: b.digest.to_string(),
                }),
                removed,
            )
        }
        None => (Kind::Full, None, Vec::new()),
    };
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
        files: entries,
        images,
        removed,
        checksums: Vec::new(),
    };
    manifest.validate().map_err(Error::input)?;
    crate::fs::write_new(
        &root.join(crate::names::MANIFEST),
        &manifest.to_canonical_json(),
    )?;
    set_mode(&root.join(crate::names::MANIFEST), 0o644)?;
    set_mode(&root, 0o755)?;
    // Empty folders (a thin bundle without image changes) are not part of a bundle.
    remove_empty_dirs(&root)?;
    staging.commit(out)?;
    Ok(CreateReport {
        manifest,
        written: files.written,
        written_bytes: files.written_bytes,
        pulled,
    })
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
