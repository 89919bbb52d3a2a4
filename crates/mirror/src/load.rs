//! `load`: push a bundle's images into a registry — after the bundle verified.
//!
//! 1. **Verify first, with the rules of `verify`**, before any network traffic, through
//!    [`Source::verify`] like every other command. A folder (or its `manifest.dsse`) is
//!    verified in place: signature, header, checksum files, freshness, every listed file
//!    present with its size, nothing unlisted, every SHA-256 — except that the blobs of the
//!    signed images, which the push hashes anyway before its first request, are hashed once,
//!    there, instead of twice ([`Output::deferring`] with `pushed_blobs`); a big folder,
//!    whose metadata is above the in-memory threshold, is verified streamed and hashed whole,
//!    since its signed file list is never held as a manifest. An archive (any other file:
//!    `.tar.zst`, `.tar.gz`, `.tar`) is written, every entry checked as it streams, into a
//!    temporary folder (under `work_dir`, default `$TMPDIR`) and verified there; nothing is
//!    pushed from an archive that did not verify. Thin bundles are refused (they lack the
//!    files their base carries: `apply` them first).
//! 2. **Targets** come from the signed manifest's `images`: `REGISTRY/[PREFIX/]REPO:TAG` for a
//!    recorded reference `ANY-REGISTRY/REPO:TAG`, or `…/REPO@DIGEST` when the reference has no
//!    tag; the manifest's digest is what gets pushed (so digests are preserved). Two images
//!    mapping to one target are refused.
//! 3. **Push** with `stella_oci::push_all_from_layout` from the bundle's `images/` layout:
//!    every blob of every image hashed once more (the folder could have changed since step 1)
//!    before the first request; then blobs (skipped when the registry has them, mounted from
//!    another repository when it can, resumed from the upload journal when an earlier run was
//!    interrupted), child manifests, and the root manifest under its tag. The journal lives in
//!    `resume_dir` (default `stella_oci::upload::ResumeJournal::default_dir()`, i.e.
//!    `~/.cache/stella/oci-uploads`), not in the temporary folder, so it survives the run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use stella_oci::upload::ResumeJournal;
use stella_oci::{
    BlockingClient, ClientConfig, Descriptor, Digest, Layout, PushOptions, Reference,
};

use crate::archive::Limits;
use crate::error::{Error, Field, Result};
use crate::hash::Progress;
use crate::manifest::{Kind, Manifest};
use crate::source::{Output, Report, Source};
use crate::verify::{self, Options};

/// Options of [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Target registry, `HOST[:PORT]`.
    pub registry: String,
    /// Repository path prefix under the registry (`mirror/site-a`).
    pub prefix: Option<String>,
    /// Verify and ask the registry what it has, but push nothing.
    pub dry_run: bool,
    pub client: ClientConfig,
    /// Upload journal for resuming across runs (`None`: [`ResumeJournal::default_dir`]).
    pub resume_dir: Option<PathBuf>,
    /// Where an archive is unpacked for verification (`None`: the system temp folder).
    pub work_dir: Option<PathBuf>,
    /// Archive limits (as for `unpack`).
    pub limits: Limits,
}

impl LoadOptions {
    pub fn new(registry: &str) -> Self {
        LoadOptions {
            registry: registry.to_string(),
            prefix: None,
            dry_run: false,
            client: ClientConfig::default(),
            resume_dir: None,
            work_dir: None,
            limits: Limits::default(),
        }
    }
}

/// One image of the bundle and what its push did.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The reference recorded in the bundle.
    pub reference: String,
    pub platforms: Vec<String>,
    pub report: stella_oci::Report,
}

/// What [`load`] did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The verification that came first.
    pub verified: verify::VerifiedBundle,
    /// Whether the bundle came from an archive (unpacked into a temporary folder).
    pub from_archive: bool,
    pub images: Vec<LoadedImage>,
    pub verify_ms: u64,
    pub push_ms: u64,
}

/// Where a bundle image goes: `(manifest digest, target reference)` in manifest order.
pub(crate) fn targets(
    manifest: &Manifest,
    registry: &str,
    prefix: Option<&str>,
) -> Result<Vec<(Digest, Reference)>> {
    let registry = check_registry(registry)?;
    let prefix = check_prefix(prefix)?;
    let mut out: Vec<(Digest, Reference)> = Vec::new();
    let mut by_target: HashMap<String, &str> = HashMap::new();
    for img in &manifest.images {
        let digest = img.digest;
        let source = Reference::parse(&img.reference).map_err(|e| {
            Error::input(format!(
                "image {} cannot be loaded: its reference is not an image reference ({e})",
                img.reference
            ))
        })?;
        let repo = match &prefix {
            Some(p) => format!("{p}/{}", source.repository()),
            None => source.repository().to_string(),
        };
        let target = match source.tag() {
            Some(tag) => format!("{registry}/{repo}:{tag}"),
            None => format!("{registry}/{repo}@{digest}"),
        };
        let target = Reference::parse(&target).map_err(|e| {
            Error::input(format!(
                "image {} cannot be pushed as {target}: {e}",
                img.reference
            ))
        })?;
        if let Some(other) = by_target.insert(target.to_string(), &img.reference) {
            return Err(Error::input(format!(
                "images {other} and {} would both be pushed as {target}; load them with different --prefix values from separate bundles",
                img.reference
            )));
        }
        out.push((digest, target));
    }
    Ok(out)
}

/// `HOST[:PORT]` that an image reference reads as a registry (a dot, a port or `localhost`).
fn check_registry(registry: &str) -> Result<String> {
    let r = registry.trim().trim_end_matches('/');
    let bad = || {
        Error::input(format!(
            "--registry {registry:?} is not HOST[:PORT] (a host name with a dot, an address, localhost, or any host with :PORT)"
        ))
    };
    if r.is_empty() || r.contains('/') || r.contains('@') {
        return Err(bad());
    }
    match Reference::parse(&format!("{r}/x")) {
        Ok(p) if p.registry() == r => Ok(r.to_string()),
        _ => Err(bad()),
    }
}

fn check_prefix(prefix: Option<&str>) -> Result<Option<String>> {
    let Some(p) = prefix else { return Ok(None) };
    let p = p.trim().trim_matches('/');
    if p.is_empty() {
        return Ok(None);
    }
    if Reference::parse(&format!("registry.invalid/{p}/x")).is_err() {
        return Err(Error::input(format!(
            "--prefix {p:?} is not a repository path (lowercase components of [a-z0-9] separated by . _ - or /)"
        )));
    }
    Ok(Some(p.to_string()))
}

/// Verify `bundle` (folder, its `manifest.dsse`, or an archive), then push its images.
pub fn load(
    bundle: &Path,
    verify_opts: &Options<'_>,
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<LoadReport> {
    // Arguments first: a typo must not cost a verification pass.
    check_registry(&opts.registry)?;
    check_prefix(opts.prefix.as_deref())?;

    let started = Instant::now();
    // `load`'s rule: a folder, its own `manifest.dsse`, else an archive. A folder defers the
    // image blobs to the push; an archive is fully hashed as it is written into a temporary
    // folder (under `work_dir`, default `$TMPDIR`), removed when `verified` is dropped.
    let source = Source::for_load(bundle)?;
    let from_archive = matches!(source, Source::Archive(_));
    let work = match &opts.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let verified = source.verify(
        verify_opts,
        &opts.limits,
        Output::staged_in(&work, "load").deferring(pushed_blobs),
        progress,
    )?;
    let dir = verified
        .dir()
        .ok_or_else(|| Error::input("the bundle's files were not kept on disk"))?
        .to_path_buf();
    let manifest = &verified.report.meta().manifest;
    if manifest.kind == Kind::Thin {
        return Err(Error::input(format!(
            "{} is a thin bundle: it carries only what changed since its base; apply it first (stella mirror apply THIN --onto BASE) and load the result",
            bundle.display()
        )));
    }
    let images = targets(manifest, &opts.registry, opts.prefix.as_deref())?;
    let verify_ms = started.elapsed().as_millis() as u64;

    let started = Instant::now();
    let reports = if images.is_empty() {
        Vec::new()
    } else {
        let client = BlockingClient::new(opts.client.clone())?;
        let resume_dir = opts.resume_dir.clone().or_else(ResumeJournal::default_dir);
        let layout = dir.join("images");
        crate::registry::with_byte_progress(progress, "push", |p| {
            client.push_all_from_layout(
                &layout,
                &images,
                &PushOptions {
                    dry_run: opts.dry_run,
                    progress: p,
                    resume_dir,
                },
            )
        })
        .map_err(|e| bundle_content_error(e, &layout))?
    };
    let push_ms = started.elapsed().as_millis() as u64;
    let images: Vec<LoadedImage> = manifest
        .images
        .iter()
        .zip(reports)
        .map(|(img, report)| LoadedImage {
            reference: img.reference.clone(),
            platforms: img.platforms.clone(),
            report,
        })
        .collect();
    // The push hashed every deferred blob against its descriptor (the signed digest) before
    // its first request, so the folder's report is now a full one.
    let verified = match verified.report {
        Report::Full(r) => r,
        Report::PartlyHashed(d) => d.hashed_by_caller(),
    };
    Ok(LoadReport {
        verified,
        from_archive,
        images,
        verify_ms,
        push_ms,
    })
}

/// A blob of the bundle's layout that does not hash to its name (found by the push's check,
/// before any request) is a verification failure of the bundle, not a registry error.
fn bundle_content_error(e: stella_oci::Error, layout: &Path) -> Error {
    let ours = format!("layout {}", layout.display());
    let ours_failed = match &e {
        stella_oci::Error::DigestMismatch { source_name, .. } => *source_name == ours,
        stella_oci::Error::Integrity(m) => m.starts_with(&ours),
        _ => false,
    };
    if ours_failed {
        Error::content(
            Field::Content,
            format!("bundle content does not match the signed manifest: {e}"),
        )
    } else {
        Error::Registry(e)
    }
}

/// Bundle paths of the blobs `push_all_from_layout` will hash, which the verification of a
/// folder about to be pushed leaves to it ([`Output::deferring`]): every blob of every signed
/// image whose manifest entry's SHA-256 is its file name and whose size is its descriptor's.
/// Manifests are read with their digests checked. Empty when anything does not add up.
///
/// The push hashes every one of them against its descriptor before its first request (and
/// refuses to push anything otherwise), and a blob's descriptor digest is its file name, which
/// must be the SHA-256 the manifest lists for it — so each byte is still checked against the
/// signed manifest before anything leaves, once instead of twice. Everything else (signature,
/// header, checksum files, freshness, other files, unlisted files, sizes of every file, links)
/// is checked as `verify` does. If the image trees cannot be read, nothing is deferred.
fn pushed_blobs(dir: &Path, manifest: &Manifest) -> HashSet<String> {
    let path_of = |d: &Digest| format!("images/blobs/sha256/{}", d.hex());
    let collect = || -> Option<HashSet<String>> {
        let layout = Layout::open(&dir.join("images")).ok()?;
        let mut out = HashSet::new();
        for img in &manifest.images {
            let d = img.digest;
            let entry = manifest.file(&path_of(&d))?;
            let root = Descriptor::new(&entry.media_type, d, entry.size);
            for (sha, size, _) in crate::registry::image_blobs(&layout, &root).ok()? {
                let p = format!("images/blobs/sha256/{}", sha.hex());
                let f = manifest.file(&p)?;
                if f.sha256 != sha || f.size != size {
                    return None;
                }
                out.insert(p);
            }
        }
        Some(out)
    };
    collect().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ImageEntry;

    fn manifest(images: &[(&str, &str)]) -> Manifest {
        let mut m = Manifest::from_json(
            br#"{"bundle":"b","files":[],"generatedAt":"2025-01-01T00:00:00.000Z","generation":1,"issuer":"i","kind":"full","purpose":"mirror-bundle","version":"1"}"#,
        )
        .unwrap();
        m.images = images
            .iter()
            .map(|(r, d)| ImageEntry {
                reference: r.to_string(),
                digest: d.parse().unwrap(),
                platforms: Vec::new(),
            })
            .collect();
        m
    }

    #[test]
    fn targets_keep_repository_and_tag_under_the_new_registry() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let m = manifest(&[
            ("registry.stella-ops.org/stellaops/scanner:2025.10.0", &d),
            (&format!("127.0.0.1:5000/stellaops/notify@{d}"), &d),
            ("alpine:3", &d),
            (&format!("r.io/a/b:1@{d}"), &d),
        ]);
        let t = targets(&m, "10.0.0.5:5000", None).unwrap();
        let names: Vec<String> = t.iter().map(|(_, r)| r.to_string()).collect();
        assert_eq!(
            names,
            [
                "10.0.0.5:5000/stellaops/scanner:2025.10.0".to_string(),
                format!("10.0.0.5:5000/stellaops/notify@{d}"),
                "10.0.0.5:5000/library/alpine:3".to_string(),
                "10.0.0.5:5000/a/b:1".to_string(),
            ]
        );
        let t = targets(&m, "localhost", Some("/mirror/site-a/")).unwrap();
        assert_eq!(
            t[0].1.to_string(),
            "localhost/mirror/site-a/stellaops/scanner:2025.10.0"
        );
        assert_eq!(t[0].0.to_string(), d);
    }

    #[test]
    fn bad_targets_are_refused() {
        let d = format!("sha256:{}", "cd".repeat(32));
        let m = manifest(&[("a.io/x/app:1", &d), ("b.io/x/app:1", &d)]);
        let e = targets(&m, "r.local:5000", None).unwrap_err().to_string();
        assert!(e.contains("would both be pushed"), "{e}");
        let m = manifest(&[("a.io/x/app:1", &d)]);
        for bad in ["myregistry", "", "r.io/path", "r.io@x"] {
            let e = targets(&m, bad, None).unwrap_err().to_string();
            assert!(e.contains("--registry"), "{bad}: {e}");
        }
        let e = targets(&m, "r.io", Some("Upper/Case"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prefix"), "{e}");
        let m = manifest(&[("Not A Reference", &d)]);
        assert!(targets(&m, "r.io", None)
            .unwrap_err()
            .to_string()
            .contains("cannot be loaded"));
    }
}
