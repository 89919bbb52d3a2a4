//! Registry images in bundles: `create` pulls the spec's `ref:` images into the bundle's
//! shared OCI image layout; [`crate::load`] pushes a verified bundle's images to a registry.
//! Both run on `stella-oci` ([`stella_oci::BlockingClient`]: its own small runtime, so the
//! mirror commands stay synchronous).
//!
//! Pulls go straight into `images/` after the local images (layouts, docker archives) are
//! in: `pull_to_layout` skips blobs the layout already holds, so a layer shared by a local and
//! a registry image — or by two registry images — is stored and downloaded once. Every blob is
//! hashed while it streams and renamed into place only when size and digest match; manifests
//! fetched by tag must match the registry's `Docker-Content-Digest`. The pull's own
//! `index.json` is discarded: `create` writes the bundle's (one entry per image, sorted by
//! reference, as for local images).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stella_oci::media::{is_index, is_manifest, Document, MAX_MANIFEST_BYTES, REF_NAME};
use stella_oci::{
    BlockingClient, ClientConfig, Descriptor, Digest, Layout, Platforms, PullOptions,
};

use crate::error::{Error, Field, Result};
use crate::hash::{Event, Progress};
use crate::spec::{ImageSource, ImageSpec};

/// A registry image pulled into the bundle's layout.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The name recorded in the manifest (`reference:` of the spec, else its `ref:`).
    pub reference: String,
    /// What was pulled (the spec's `ref:`).
    pub source: String,
    /// The stored manifest or index (what the manifest records).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// `os/arch[/variant]` of the stored image(s), sorted.
    pub platforms: Vec<String>,
    /// What the reference resolved to (differs from `digest` when a platform filter took part
    /// of an index).
    pub source_digest: Digest,
    /// Every blob of the image, manifests included: digest, size, media type.
    pub blobs: Vec<(Digest, u64, String)>,
    pub blobs_downloaded: usize,
    pub bytes_downloaded: u64,
}

pub(crate) fn to_sha(d: &Digest) -> Digest {
    *d
}

/// Pull the registry images of `images` into the layout at `layout_dir`, in order.
pub(crate) fn pull_images(
    config: &ClientConfig,
    images: &[&ImageSpec],
    layout_dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PulledImage>> {
    let client = BlockingClient::new(config.clone())?;
    with_byte_progress(progress, "pull", |oci_progress| {
        let mut out = Vec::new();
        for img in images {
            let ImageSource::Registry {
                reference,
                platforms,
            } = &img.source
            else {
                continue;
            };
            let filter = if platforms.is_empty() {
                Platforms::All
            } else {
                Platforms::Only(platforms.clone())
            };
            let p = client.pull_to_layout(
                reference,
                &filter,
                layout_dir,
                &PullOptions {
                    ref_name: Some(img.reference.clone()),
                    progress: oci_progress.clone(),
                },
            )?;
            let root = Descriptor::new(&p.media_type, p.digest, p.size);
            let blobs = image_blobs(&Layout::open(layout_dir)?, &root)?;
            out.push(PulledImage {
                reference: img.reference.clone(),
                source: reference.to_string(),
                digest: to_sha(&p.digest),
                media_type: p.media_type,
                size: p.size,
                platforms: p.platforms,
                source_digest: to_sha(&p.source_digest),
                blobs,
                blobs_downloaded: p.blobs_downloaded,
                bytes_downloaded: p.bytes_downloaded,
            });
        }
        Ok(out)
    })
}

/// Every blob of the image `root` in `layout` (manifests, configs, layers), each once.
/// Manifests are read back with their digests checked.
pub(crate) fn image_blobs(
    layout: &Layout,
    root: &Descriptor,
) -> Result<Vec<(Digest, u64, String)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk(layout, root, &mut out, &mut seen, 0)?;
    Ok(out)
}

fn walk(
    layout: &Layout,
    desc: &Descriptor,
    out: &mut Vec<(Digest, u64, String)>,
    seen: &mut HashSet<Digest>,
    depth: usize,
) -> Result<()> {
    let what = format!("pulled image {}", desc.digest);
    if depth > 4 {
        return Err(Error::content(
            Field::Image(desc.digest.to_string()),
            format!("{what}: indexes nest too deeply"),
        ));
    }
    if !seen.insert(desc.digest) {
        return Ok(());
    }
    out.push((to_sha(&desc.digest), desc.size, desc.media_type.clone()));
    if !is_index(&desc.media_type) && !is_manifest(&desc.media_type) {
        return Ok(());
    }
    let bytes = layout.read_blob(desc, MAX_MANIFEST_BYTES)?;
    let doc = Document::parse(bytes, desc.digest, &desc.media_type, &what)?;
    let children = if doc.is_index() {
        doc.children(&what)?
    } else {
        std::iter::once(doc.config(&what)?)
            .chain(doc.layers(&what)?)
            .collect()
    };
    for c in &children {
        walk(layout, c, out, seen, depth + 1)?;
    }
    Ok(())
}

/// Add the pulled images to an `index.json` written by [`crate::oci::LayoutWriter`], in the
/// same form: entries sorted by reference, annotated with `ref.name`; canonical JSON.
pub(crate) fn merge_index(index: &[u8], pulled: &[PulledImage]) -> Result<Vec<u8>> {
    let mut v: Value =
        serde_json::from_slice(index).map_err(|e| Error::input(format!("index.json: {e}")))?;
    let list = v["manifests"]
        .as_array_mut()
        .ok_or_else(|| Error::input("index.json has no manifests list"))?;
    for p in pulled {
        list.push(json!({
            "mediaType": p.media_type,
            "digest": p.digest.to_string(),
            "size": p.size,
            "annotations": {REF_NAME: p.reference},
        }));
    }
    list.sort_by(|a, b| {
        a["annotations"][REF_NAME]
            .as_str()
            .cmp(&b["annotations"][REF_NAME].as_str())
    });
    stella_dsse::jcs::to_vec(&v).map_err(|e| Error::input(e.to_string()))
}

/// The `'static` reporter handed to `stella-oci`: counts the bytes of [`Event::Bytes`] and
/// ignores the rest.
struct ByteCounter(Arc<AtomicU64>);

impl Progress for ByteCounter {
    fn event(&self, event: &Event<'_>) {
        if let Event::Bytes { n, .. } = event {
            self.0.fetch_add(*n, Ordering::Relaxed);
        }
    }
}

/// Run `f` with a reporter for `stella-oci` whose transfer bytes advance `progress` as one
/// phase `phase` (total unknown).
///
/// Both are the same [`Progress`] trait; what this relays is the lifetime: `stella-oci`'s
/// transfer tasks run on its runtime and need an `Arc<dyn Progress>` (`'static`), mirror
/// stages borrow theirs. A scoped watcher thread forwards the count as `advance` calls (at
/// most ten a second, the rate the CLI's bar draws at).
pub(crate) fn with_byte_progress<T>(
    progress: &dyn Progress,
    phase: &str,
    f: impl FnOnce(Arc<dyn Progress>) -> T,
) -> T {
    let counter = Arc::new(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    progress.start(phase, 0);
    let out = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut last = 0;
            loop {
                let stopping = stop.load(Ordering::Acquire);
                let now = counter.load(Ordering::Relaxed);
                if now > last {
                    progress.advance(now - last);
                    last = now;
                }
                if stopping {
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
        let out = f(Arc::new(ByteCounter(counter.clone())));
        stop.store(true, Ordering::Release);
        watcher.thread().unpark();
        out
    });
    progress.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_index_is_sorted_and_canonical() {
        let base = br#"{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"b.io/x:1"},"digest":"sha256:00","mediaType":"m","size":1}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#;
        let p = PulledImage {
            reference: "a.io/y:2".into(),
            source: "a.io/y:2".into(),
            digest: Digest::of(b"y"),
            media_type: stella_oci::media::OCI_MANIFEST.into(),
            size: 7,
            platforms: vec![],
            source_digest: Digest::of(b"y"),
            blobs: vec![],
            blobs_downloaded: 0,
            bytes_downloaded: 0,
        };
        let out = merge_index(base, &[p]).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["annotations"][REF_NAME].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a.io/y:2", "b.io/x:1"]);
        assert_eq!(stella_dsse::jcs::canonicalize(&out).unwrap(), out);
    }

    #[test]
    fn digests_convert() {
        let s = Digest::of(b"abc");
        assert_eq!(to_sha(&Digest::from_bytes(*s.as_bytes())), s);
        assert_eq!(Digest::from_bytes(*s.as_bytes()).to_string(), s.to_string());
    }

    #[test]
    fn relayed_transfer_bytes_advance_one_phase_and_nothing_else_passes() {
        use std::sync::Mutex;
        #[derive(Default)]
        struct Log(Mutex<Vec<String>>, AtomicU64);
        impl Progress for Log {
            fn event(&self, event: &Event<'_>) {
                match event {
                    Event::Advance { n } => {
                        self.1.fetch_add(*n, Ordering::SeqCst);
                    }
                    other => self.0.lock().unwrap().push(format!("{other:?}")),
                }
            }
        }
        let log = Log::default();
        let d = Digest::of(b"blob");
        let out = with_byte_progress(&log, "pull", |p| {
            // From another thread, as the transfer tasks do.
            std::thread::spawn(move || {
                p.event(&Event::BlobStart {
                    digest: &d,
                    size: 300,
                });
                for _ in 0..3 {
                    p.event(&Event::Bytes { digest: &d, n: 100 });
                }
                p.event(&Event::BlobDone {
                    digest: &d,
                    size: 300,
                    action: stella_oci::BlobAction::Downloaded,
                });
            })
            .join()
            .unwrap();
            42
        });
        assert_eq!(out, 42);
        assert_eq!(log.1.load(Ordering::SeqCst), 300);
        assert_eq!(
            *log.0.lock().unwrap(),
            [r#"PhaseStart { phase: "pull", total: 0 }"#, "PhaseDone"]
        );
    }
}
