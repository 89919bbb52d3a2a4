//! Images between registries and OCI image layouts: [`pull_to_layout`] and
//! [`push_from_layout`], the two functions mirror bundles are built on.
//!
//! Pull: resolve the reference, select platforms, fetch every manifest (digest-checked) and
//! download every blob the layout lacks, hashing as bytes arrive; manifests are written after
//! the blobs they name, and the `index.json` entry last, so an interrupted pull never leaves an
//! entry pointing at missing content (rerunning it skips what is already there).
//!
//! Push: read the image tree from the layout and hash **every** blob before the first byte
//! goes out (a corrupt layout is refused with nothing pushed); then push blobs with bounded
//! concurrency — each one skipped when the registry has it, mounted when another repository
//! of the registry has it, resumed when an earlier run left an upload session — then child
//! manifests by digest, then the root under the tag.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::media::{Descriptor, Document, Platform, Platforms, MAX_MANIFEST_BYTES};
use crate::progress::{BlobAction, Event, NoProgress, Progress};
use crate::reference::Reference;
use crate::upload::{BlobSource, ResumeJournal};

/// Options of [`pull_to_layout`].
#[derive(Clone)]
pub struct PullOptions {
    /// The `index.json` name of the image (default: the reference as given).
    pub ref_name: Option<String>,
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            ref_name: None,
            progress: Arc::new(NoProgress),
        }
    }
}

/// What [`pull_to_layout`] stored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledImage {
    pub reference: String,
    /// Digest of the stored manifest or index (the `index.json` entry).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// `os/arch[/variant]` of the stored image(s), sorted.
    pub platforms: Vec<String>,
    /// What the reference resolved to in the registry (differs from `digest` when a platform
    /// filter took a subset of an index).
    pub source_digest: Digest,
    pub blobs_downloaded: usize,
    pub blobs_present: usize,
    pub bytes_downloaded: u64,
}

/// Pull `reference` into the OCI image layout at `layout_dir` (created if needed).
///
/// `platforms`: [`Platforms::All`] keeps a multi-platform index whole (same digest); a filter
/// selecting one platform stores that platform's manifest; selecting several stores a new
/// index of the selected entries. A single-platform image must match the filter.
pub async fn pull_to_layout(
    client: &Client,
    reference: &Reference,
    platforms: &Platforms,
    layout_dir: &Path,
    options: &PullOptions,
) -> Result<PulledImage> {
    let layout = Layout::create(layout_dir)?;
    let top = client.fetch_manifest(reference).await?;
    let source_digest = top.digest;
    let repo = reference.clone().without_tag();
    let what = format!("image {reference}");

    // Choose the root document.
    let root = if top.is_index() {
        let children = top.children(&what)?;
        match platforms {
            Platforms::All => top,
            Platforms::Only(_) => {
                let raw = top.json["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut keep = Vec::new();
                let mut chosen = Vec::new();
                for (desc, raw) in children.iter().zip(raw) {
                    if desc.platform.as_ref().is_some_and(|p| platforms.selects(p)) {
                        keep.push(raw);
                        chosen.push(desc.clone());
                    }
                }
                if chosen.is_empty() {
                    let have: Vec<String> = children
                        .iter()
                        .filter_map(|c| c.platform.as_ref())
                        .filter(|p| !p.is_unknown())
                        .map(Platform::to_string)
                        .collect();
                    return Err(Error::Input(format!(
                        "{what} has no manifest for the requested platform(s); it has: {}",
                        have.join(", ")
                    )));
                }
                if chosen.len() == children.len() {
                    top
                } else if chosen.len() == 1 {
                    client
                        .fetch_manifest(&repo.pinned(chosen[0].digest))
                        .await?
                } else {
                    let mut json = top.json.clone();
                    json["manifests"] = Value::Array(keep);
                    let bytes = serde_json::to_vec(&json)
                        .map_err(|e| Error::Input(format!("cannot build the index: {e}")))?;
                    let d = Digest::of(&bytes);
                    Document::parse(bytes, d, &top.media_type, &what)?
                }
            }
        }
    } else {
        top
    };

    // Walk: manifests (children before parents) and unique blobs.
    let mut walk = Walk::new(&what);
    collect_remote(client, &repo, root.clone(), &mut walk, 0).await?;
    let Walk {
        manifests,
        blobs,
        configs,
        platforms: mut image_platforms,
        ..
    } = walk;

    // Download what is missing, several at a time.
    let mut downloaded = 0;
    let mut present = 0;
    let mut bytes = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for desc in blobs {
        if layout.has_blob(&desc.digest, desc.size) {
            present += 1;
            options.progress.event(&Event::BlobDone {
                digest: &desc.digest,
                size: desc.size,
                action: BlobAction::Present,
            });
            continue;
        }
        let client = client.clone();
        let repo = repo.clone();
        let dest = layout.blob_path(&desc.digest);
        let progress = options.progress.clone();
        tasks.spawn(async move {
            let _permit = client.transfer_permit().await;
            progress.event(&Event::BlobStart {
                digest: &desc.digest,
                size: desc.size,
            });
            let d = desc.digest;
            let p = progress.clone();
            let on_bytes = move |n: u64| p.event(&Event::Bytes { digest: &d, n });
            client
                .fetch_blob_to_file(&repo, &desc, &dest, &on_bytes)
                .await?;
            progress.event(&Event::BlobDone {
                digest: &desc.digest,
                size: desc.size,
                action: BlobAction::Downloaded,
            });
            Ok::<u64, Error>(desc.size)
        });
    }
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(n)) => {
                downloaded += 1;
                bytes += n;
            }
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(Error::Input(format!("download task failed: {e}")));
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Platforms of single-platform images come from their configs.
    if !root.is_index() {
        for c in &configs {
            // Just downloaded and verified; an unusually large config only loses the platform.
            let Ok(cfg) = layout.read_blob(c, MAX_MANIFEST_BYTES) else {
                continue;
            };
            if let Some(p) = serde_json::from_slice::<Value>(&cfg)
                .ok()
                .and_then(|v| Platform::from_value(&v))
            {
                if let Platforms::Only(_) = platforms {
                    if !platforms.selects(&p) {
                        return Err(Error::Input(format!(
                            "{what} is a single-platform image for {p}, which the platform filter excludes"
                        )));
                    }
                }
                image_platforms.push(p.to_string());
            }
        }
    }
    image_platforms.sort();
    image_platforms.dedup();

    for m in &manifests {
        layout.write_blob(&m.bytes)?;
    }
    let desc = root.descriptor();
    let name = options
        .ref_name
        .clone()
        .unwrap_or_else(|| reference.to_string());
    layout.set_ref(&desc, &name)?;
    Ok(PulledImage {
        reference: name,
        digest: root.digest,
        media_type: root.media_type.clone(),
        size: desc.size,
        platforms: image_platforms,
        source_digest,
        blobs_downloaded: downloaded,
        blobs_present: present,
        bytes_downloaded: bytes,
    })
}

/// What a walk over an image tree collects: its manifests, children before parents (the order
/// a registry accepts them in), and its blobs, each once; of the top level also the platforms
/// an index names and the config of an image. Pull walks a registry ([`collect_remote`]), push
/// a layout ([`walk_doc`]); they differ only in how a child manifest is read.
struct Walk {
    /// Names the image in errors.
    what: String,
    manifests: Vec<Document>,
    blobs: Vec<Descriptor>,
    seen: HashSet<Digest>,
    configs: Vec<Descriptor>,
    platforms: Vec<String>,
}

impl Walk {
    fn new(what: &str) -> Self {
        Walk {
            what: what.to_string(),
            manifests: Vec::new(),
            blobs: Vec::new(),
            seen: HashSet::new(),
            configs: Vec::new(),
            platforms: Vec::new(),
        }
    }

    /// Enter `doc`, `depth` levels below the top: `None` when it was walked already; else the
    /// entries of an index to walk next (an image's config and layers are recorded now).
    fn enter(&mut self, doc: &Document, depth: usize) -> Result<Option<Vec<Descriptor>>> {
        let what = &self.what;
        if depth > 4 {
            return Err(Error::Integrity(format!("{what}: indexes nest too deeply")));
        }
        if !self.seen.insert(doc.digest) {
            return Ok(None);
        }
        if !doc.is_index() {
            let config = doc.config(what)?;
            let layers = doc.layers(what)?;
            if depth == 0 {
                self.configs.push(config.clone());
            }
            for b in std::iter::once(config).chain(layers) {
                self.blob(b);
            }
            return Ok(Some(Vec::new()));
        }
        let children = doc.children(what)?;
        if depth == 0 {
            let named = children.iter().filter_map(|c| c.platform.as_ref());
            self.platforms
                .extend(named.filter(|p| !p.is_unknown()).map(|p| p.to_string()));
        }
        Ok(Some(children))
    }

    /// An index entry: itself when it is a manifest or index to walk into; `None` when it is
    /// an artifact (rare), recorded as a plain blob.
    fn descend(&mut self, child: Descriptor) -> Option<Descriptor> {
        if crate::media::is_index(&child.media_type) || crate::media::is_manifest(&child.media_type)
        {
            return Some(child);
        }
        self.blob(child);
        None
    }

    fn blob(&mut self, b: Descriptor) {
        if self.seen.insert(b.digest) {
            self.blobs.push(b);
        }
    }

    /// `doc` and everything below it are walked.
    fn leave(&mut self, doc: Document) {
        self.manifests.push(doc);
    }
}

fn collect_remote<'a>(
    client: &'a Client,
    repo: &'a Reference,
    doc: Document,
    walk: &'a mut Walk,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let Some(children) = walk.enter(&doc, depth)? else {
            return Ok(());
        };
        for child in children {
            let Some(child) = walk.descend(child) else {
                continue;
            };
            let m = client.fetch_manifest(&repo.pinned(child.digest)).await?;
            if m.media_type != child.media_type {
                return Err(Error::Integrity(format!(
                    "{}: manifest {} is {} but its index entry says {}",
                    walk.what, child.digest, m.media_type, child.media_type
                )));
            }
            collect_remote(client, repo, m, walk, depth + 1).await?;
        }
        walk.leave(doc);
        Ok(())
    })
}

/// Options of [`push_from_layout`].
#[derive(Clone)]
pub struct PushOptions {
    /// Check the layout and ask the registry what it has, but send nothing.
    pub dry_run: bool,
    pub progress: Arc<dyn Progress>,
    /// Keep upload sessions here so a later run resumes partially uploaded blobs (see
    /// [`ResumeJournal::default_dir`]). Without it, resuming works within one run only.
    pub resume_dir: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            dry_run: false,
            progress: Arc::new(NoProgress),
            resume_dir: None,
        }
    }
}

/// One blob of a push.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobReport {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub action: BlobAction,
    #[serde(skip_serializing_if = "is_zero")]
    pub resumed_from: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One manifest of a push.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReport {
    pub digest: Digest,
    pub media_type: String,
    pub reference: String,
    /// `pushed`, `existed` or `would-push`.
    pub action: &'static str,
}

/// What [`push_from_layout`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: String,
    pub digest: Digest,
    pub media_type: String,
    pub dry_run: bool,
    pub blobs: Vec<BlobReport>,
    pub manifests: Vec<ManifestReport>,
    pub blobs_uploaded: usize,
    pub blobs_resumed: usize,
    pub blobs_mounted: usize,
    pub blobs_existing: usize,
    pub bytes_uploaded: u64,
    pub bytes_skipped: u64,
    pub duration_ms: u64,
}

/// The image tree of a layout entry: manifests children-first, unique blobs.
struct Tree {
    root: Document,
    manifests: Vec<Document>,
    blobs: Vec<Descriptor>,
}

fn walk_layout(layout: &Layout, digest: &Digest) -> Result<Tree> {
    let what = format!("layout {} image {digest}", layout.root().display());
    let entry = layout.entries()?.into_iter().find(|e| e.digest == *digest);
    let (mt, size) = match &entry {
        Some(e) => (e.media_type.clone(), e.size),
        None => {
            let size = std::fs::metadata(layout.blob_path(digest))
                .map(|m| m.len())
                .map_err(|_| {
                    Error::Integrity(format!(
                        "layout {} has no manifest {digest}",
                        layout.root().display()
                    ))
                })?;
            (String::new(), size)
        }
    };
    let desc = Descriptor::new(&mt, *digest, size);
    let bytes = layout.read_blob(&desc, MAX_MANIFEST_BYTES)?;
    let root = Document::parse(bytes, *digest, &mt, &what)?;
    let mut walk = Walk::new(&what);
    walk_doc(layout, root.clone(), &mut walk, 0)?;
    Ok(Tree {
        root,
        manifests: walk.manifests,
        blobs: walk.blobs,
    })
}

fn walk_doc(layout: &Layout, doc: Document, walk: &mut Walk, depth: usize) -> Result<()> {
    let Some(children) = walk.enter(&doc, depth)? else {
        return Ok(());
    };
    for child in children {
        let Some(child) = walk.descend(child) else {
            continue;
        };
        let bytes = layout.read_blob(&child, MAX_MANIFEST_BYTES)?;
        let m = Document::parse(bytes, child.digest, &child.media_type, &walk.what)?;
        walk_doc(layout, m, walk, depth + 1)?;
    }
    walk.leave(doc);
    Ok(())
}

/// Hash every blob of the tree (in parallel on blocking threads); the first mismatch wins.
async fn verify_blobs(layout: &Layout, blobs: &[Descriptor]) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let queue = Arc::new(std::sync::Mutex::new(blobs.to_vec()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..threads {
        let queue = queue.clone();
        let layout = layout.clone();
        tasks.spawn_blocking(move || loop {
            let next = queue.lock().ok().and_then(|mut q| q.pop());
            let Some(desc) = next else { return Ok(()) };
            if let Err(e) = layout.verify_blob(&desc) {
                if let Ok(mut q) = queue.lock() {
                    q.clear();
                }
                return Err(e);
            }
        });
    }
    let mut first_err = None;
    while let Some(j) = tasks.join_next().await {
        match j {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::Input(format!("verification task failed: {e}")));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Push the image `manifest_digest` of the layout at `layout_dir` to `target` (repository,
/// plus the tag to set, if any). Every blob is verified against its digest first.
pub async fn push_from_layout(
    client: &Client,
    layout_dir: &Path,
    manifest_digest: &Digest,
    target: &Reference,
    options: &PushOptions,
) -> Result<Report> {
    let layout = Layout::open(layout_dir)?;
    let tree = walk_layout(&layout, manifest_digest)?;
    verify_blobs(&layout, &tree.blobs).await?;
    push_tree(client, &layout, tree, target, options).await
}

/// Push several images of one layout (`(manifest digest, target)` pairs, in order). Every
/// blob of every image is verified first — shared blobs once — so a corrupt layout pushes
/// nothing at all; then the images go one after the other (blobs of one image in parallel,
/// shared blobs found by `HEAD` or mounted). Stops at the first failure.
pub async fn push_all_from_layout(
    client: &Client,
    layout_dir: &Path,
    images: &[(Digest, Reference)],
    options: &PushOptions,
) -> Result<Vec<Report>> {
    let layout = Layout::open(layout_dir)?;
    let mut trees = Vec::new();
    let mut union: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    for (d, _) in images {
        let tree = walk_layout(&layout, d)?;
        for b in &tree.blobs {
            if seen.insert(b.digest) {
                union.push(b.clone());
            }
        }
        trees.push(tree);
    }
    verify_blobs(&layout, &union).await?;
    let mut reports = Vec::new();
    for (tree, (_, target)) in trees.into_iter().zip(images) {
        reports.push(push_tree(client, &layout, tree, target, options).await?);
    }
    Ok(reports)
}

async fn push_tree(
    client: &Client,
    layout: &Layout,
    tree: Tree,
    target: &Reference,
    options: &PushOptions,
) -> Result<Report> {
    let started = Instant::now();
    let repo = target.clone().without_tag();
    let journal = match &options.resume_dir {
        Some(d) if !options.dry_run => Some(ResumeJournal::new(d)?),
        _ => None,
    };

    let mut reports: Vec<BlobReport> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    // After the first failure, uploads in flight finish (their work counts for the rerun)
    // but no new one starts.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for desc in tree.blobs.iter().cloned() {
        let stop = stop.clone();
        let client = client.clone();
        let repo = repo.clone();
        let path = layout.blob_path(&desc.digest);
        let progress = options.progress.clone();
        let journal = journal.clone();
        let dry = options.dry_run;
        tasks.spawn(async move {
            let _permit = client.transfer_permit().await;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            progress.event(&Event::BlobStart {
                digest: &desc.digest,
                size: desc.size,
            });
            let result = async {
                let (action, resumed_from) = if dry {
                    match client.blob_exists(&repo, &desc.digest).await? {
                        Some(_) => (BlobAction::Existed, 0),
                        None => (BlobAction::WouldUpload, 0),
                    }
                } else {
                    let r = client
                        .push_blob(
                            &repo,
                            &desc.digest,
                            desc.size,
                            BlobSource::File(&path),
                            journal.as_ref(),
                            &progress,
                        )
                        .await?;
                    (r.action, r.resumed_from)
                };
                progress.event(&Event::BlobDone {
                    digest: &desc.digest,
                    size: desc.size,
                    action,
                });
                Ok::<BlobReport, Error>(BlobReport {
                    digest: desc.digest,
                    size: desc.size,
                    media_type: desc.media_type.clone(),
                    action,
                    resumed_from,
                })
            }
            .await;
            if result.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result.map(Some)
        });
    }
    let mut first_err = None;
    while let Some(j) = tasks.join_next().await {
        match j {
            Ok(Ok(Some(r))) => reports.push(r),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(Error::Input(format!("upload task failed: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Report blobs in tree order.
    let order: Vec<Digest> = tree.blobs.iter().map(|b| b.digest).collect();
    reports.sort_by_key(|r| order.iter().position(|d| *d == r.digest));

    let mut manifests = Vec::new();
    for m in &tree.manifests {
        let is_root = m.digest == tree.root.digest;
        let dest = match (is_root, target.tag()) {
            (true, Some(t)) => repo.with_tag(t)?,
            _ => repo.pinned(m.digest),
        };
        let exists = if is_root && target.tag().is_some() {
            // A tag may point elsewhere: always (re)set it.
            false
        } else {
            client
                .head_manifest(&repo.pinned(m.digest))
                .await?
                .is_some()
        };
        let action = if exists {
            "existed"
        } else if options.dry_run {
            "would-push"
        } else {
            client.put_manifest(&dest, &m.bytes, &m.media_type).await?;
            "pushed"
        };
        let name = dest.to_string();
        options.progress.event(&Event::ManifestDone {
            digest: &m.digest,
            reference: &name,
        });
        manifests.push(ManifestReport {
            digest: m.digest,
            media_type: m.media_type.clone(),
            reference: name,
            action,
        });
    }

    let count = |a: BlobAction| reports.iter().filter(|r| r.action == a).count();
    let bytes_uploaded = reports
        .iter()
        .filter(|r| matches!(r.action, BlobAction::Uploaded | BlobAction::Resumed))
        .map(|r| r.size - r.resumed_from)
        .sum();
    let bytes_skipped = reports
        .iter()
        .filter(|r| matches!(r.action, BlobAction::Existed | BlobAction::Mounted))
        .map(|r| r.size)
        .sum();
    Ok(Report {
        target: target.to_string(),
        digest: tree.root.digest,
        media_type: tree.root.media_type.clone(),
        dry_run: options.dry_run,
        blobs_uploaded: count(BlobAction::Uploaded),
        blobs_resumed: count(BlobAction::Resumed),
        blobs_mounted: count(BlobAction::Mounted),
        blobs_existing: count(BlobAction::Existed),
        bytes_uploaded,
        bytes_skipped,
        blobs: reports,
        manifests,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Check a layout image without a registry: every manifest and blob against its digest.
/// Returns the number of blobs checked.
pub async fn verify_layout_image(layout_dir: &Path, manifest_digest: &Digest) -> Result<usize> {
    let layout = Layout::open(layout_dir)?;
    let tree = walk_layout(&layout, manifest_digest)?;
    verify_blobs(&layout, &tree.blobs).await?;
    Ok(tree.blobs.len())
}
