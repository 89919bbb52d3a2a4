//! Images into one shared OCI image layout (`images/` of a bundle).
//!
//! Sources are OCI image layout folders and `docker save` archives (the legacy form with
//! `manifest.json` and `<id>/layer.tar`, and the OCI form Docker 25+ writes). Every blob is
//! checked on the way in: its SHA-256 and size must match the descriptor that names it (for a
//! legacy docker archive, whose manifest we write ourselves, each layer must match the config's
//! `rootfs.diff_ids`). A blob is stored once however many images use it. Image indexes
//! (multi-platform images) are copied whole, with every platform.
//!
//! The layout's `index.json` is canonical JSON with one entry per bundle image, sorted by
//! reference, annotated with `org.opencontainers.image.ref.name` = the image reference.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write as _};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use stella_oci::media;

use crate::error::{Error, Field, IoContext as _, Result};
use crate::fs::{read_small, write_new};
use crate::hash::{copy_hashing_at_most, Digest, Hasher, Progress, CHUNK};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Largest manifest, index or config we parse.
const MAX_JSON_BLOB: u64 = 4 * 1024 * 1024;

/// A blob stored in the shared layout.
#[derive(Debug, Clone)]
pub(crate) struct StoredBlob {
    pub size: u64,
    pub media_type: String,
}

/// An image added to the layout.
#[derive(Debug, Clone)]
pub(crate) struct AddedImage {
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub platforms: Vec<String>,
}

/// Builds the shared layout under `root` (the bundle's `images/` folder).
pub(crate) struct LayoutWriter<'a> {
    root: PathBuf,
    blobs: BTreeMap<Digest, StoredBlob>,
    images: Vec<AddedImage>,
    /// Blobs the base bundle already holds (thin bundles): recorded, never copied.
    known: &'a HashSet<Digest>,
    progress: &'a dyn Progress,
}

/// Where blobs of one source come from.
enum Blobs {
    /// `<dir>/blobs/sha256/<hex>` of a layout folder.
    Dir(PathBuf),
    /// Files of an unpacked docker archive, by archive path.
    Archive(ArchiveFiles),
}

impl Blobs {
    fn path_of(&self, d: &Digest) -> Option<(PathBuf, Option<Digest>)> {
        match self {
            Blobs::Dir(dir) => Some((dir.join("blobs").join("sha256").join(d.hex()), None)),
            Blobs::Archive(a) => a
                .get(&format!("blobs/sha256/{}", d.hex()))
                .map(|f| (f.tmp.clone(), Some(f.sha256))),
        }
    }
}

impl<'a> LayoutWriter<'a> {
    pub(crate) fn new(
        root: &Path,
        known: &'a HashSet<Digest>,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        std::fs::create_dir_all(root.join("blobs").join("sha256")).at(root)?;
        Ok(LayoutWriter {
            root: root.to_path_buf(),
            blobs: BTreeMap::new(),
            images: Vec::new(),
            known,
            progress,
        })
    }

    pub(crate) fn blobs(&self) -> &BTreeMap<Digest, StoredBlob> {
        &self.blobs
    }

    pub(crate) fn images(&self) -> &[AddedImage] {
        &self.images
    }

    /// Path of a stored blob.
    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    /// Add the image of an OCI layout folder.
    pub(crate) fn add_oci_layout(
        &mut self,
        reference: &str,
        dir: &Path,
        ref_name: Option<&str>,
    ) -> Result<()> {
        let what = format!("OCI layout {}", dir.display());
        if !dir.is_dir() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        let layout = read_small(&dir.join("oci-layout"), MAX_JSON_BLOB)?;
        check_layout_file(&layout, &what)?;
        let index = read_small(&dir.join("index.json"), MAX_JSON_BLOB)?;
        let index = parse_json(&index, &format!("{what}: index.json"))?;
        let desc = select_entry(&index, ref_name, &what)?;
        self.add_image(reference, &desc, &Blobs::Dir(dir.to_path_buf()), &what)
    }

    /// Add an image of a `docker save` archive. `scratch` is a folder on the same file
    /// system as the layout, for the archive's files.
    pub(crate) fn add_docker_archive(
        &mut self,
        reference: &str,
        file: &Path,
        repo_tag: Option<&str>,
        scratch: &Path,
    ) -> Result<()> {
        let what = format!("docker archive {}", file.display());
        let files = ArchiveFiles::extract(file, scratch, self.progress)?;
        if files.get("oci-layout").is_some() && files.get("index.json").is_some() {
            let index = files.read_small("index.json", &what)?;
            let index = parse_json(&index, &format!("{what}: index.json"))?;
            let desc = select_docker_oci_entry(&index, repo_tag, &what)?;
            return self.add_image(reference, &desc, &Blobs::Archive(files), &what);
        }
        self.add_legacy_docker(reference, &files, repo_tag, &what)
    }

    fn add_legacy_docker(
        &mut self,
        reference: &str,
        files: &ArchiveFiles,
        repo_tag: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let m = files.read_small("manifest.json", what)?;
        let m = parse_json(&m, &format!("{what}: manifest.json"))?;
        let list = m
            .as_array()
            .ok_or_else(|| Error::input(format!("{what}: manifest.json is not a list")))?;
        let entry = match repo_tag {
            Some(tag) => list
                .iter()
                .find(|e| {
                    e["RepoTags"].as_array().is_some_and(|tags| {
                        tags.iter()
                            .filter_map(Value::as_str)
                            .any(|t| normalize_ref(t) == normalize_ref(tag))
                    })
                })
                .ok_or_else(|| Error::input(format!("{what}: no image tagged {tag}")))?,
            None if list.len() == 1 => &list[0],
            None => {
                return Err(Error::input(format!(
                    "{what} holds {} images: choose one with `repoTag`",
                    list.len()
                )))
            }
        };
        let config_path = entry["Config"]
            .as_str()
            .ok_or_else(|| Error::input(format!("{what}: manifest.json entry has no Config")))?;
        let config = files
            .get(config_path)
            .ok_or_else(|| Error::input(format!("{what}: {config_path} is missing")))?;
        let config_bytes = read_small(&config.tmp, MAX_JSON_BLOB)?;
        let config_json = parse_json(&config_bytes, &format!("{what}: {config_path}"))?;
        let diff_ids: Vec<&str> = config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let layers = entry["Layers"]
            .as_array()
            .ok_or_else(|| Error::input(format!("{what}: manifest.json entry has no Layers")))?;
        if layers.len() != diff_ids.len() {
            return Err(Error::content(
                Field::Image(what.to_string()),
                format!(
                    "{what}: {} layers but the config lists {} diff_ids",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let config_digest = self.put_file(
            &config.tmp,
            Some(config.sha256),
            config.size,
            media::OCI_CONFIG,
            true,
            what,
        )?;
        let mut layer_descs = Vec::new();
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            let lp = layer
                .as_str()
                .ok_or_else(|| Error::input(format!("{what}: a layer path is not a string")))?;
            let f = files
                .get(lp)
                .ok_or_else(|| Error::input(format!("{what}: layer {lp} is missing")))?;
            if f.sha256.to_string() != *diff_id {
                return Err(Error::content(
                    Field::Image(what.to_string()),
                    format!(
                        "{what}: layer {lp} has digest {} but the image config says {diff_id}",
                        f.sha256
                    ),
                ));
            }
            self.put_file(
                &f.tmp,
                Some(f.sha256),
                f.size,
                media::OCI_LAYER_TAR,
                true,
                what,
            )?;
            layer_descs.push(json!({"mediaType": media::OCI_LAYER_TAR, "digest": f.sha256.to_string(), "size": f.size}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.size},
            "layers": layer_descs,
        });
        let bytes = stella_dsse::jcs::to_vec(&manifest)
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        let digest = self.put_bytes(&bytes, media::OCI_MANIFEST)?;
        self.images.push(AddedImage {
            reference: reference.to_string(),
            digest,
            media_type: media::OCI_MANIFEST.into(),
            size: bytes.len() as u64,
            platforms: platform_of_config(&config_json).into_iter().collect(),
        });
        Ok(())
    }

    /// Add the image (manifest or index) named by `desc` from `blobs`.
    fn add_image(
        &mut self,
        reference: &str,
        desc: &Value,
        blobs: &Blobs,
        what: &str,
    ) -> Result<()> {
        let (digest, size, media_type) = parse_descriptor(desc, what)?;
        let mut platforms = Vec::new();
        self.copy_tree(&digest, size, &media_type, blobs, what, &mut platforms, 0)?;
        platforms.sort();
        platforms.dedup();
        self.images.push(AddedImage {
            reference: reference.to_string(),
            digest,
            media_type,
            size,
            platforms,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one recursive walk; a struct would only rename them
    fn copy_tree(
        &mut self,
        digest: &Digest,
        size: u64,
        media_type: &str,
        blobs: &Blobs,
        what: &str,
        platforms: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if depth > 4 {
            return Err(Error::input(format!(
                "{what}: image indexes nest too deeply"
            )));
        }
        let (path, _) = blobs
            .path_of(digest)
            .ok_or_else(|| Error::input(format!("{what}: blob {} is missing", digest)))?;
        match media_type {
            media::OCI_INDEX
            | media::DOCKER_LIST
            | media::OCI_MANIFEST
            | media::DOCKER_MANIFEST => {
                let bytes = read_small(&path, MAX_JSON_BLOB).map_err(|e| match e {
                    Error::NotFound(_) => {
                        Error::input(format!("{what}: blob {} is missing", digest))
                    }
                    e => e,
                })?;
                check_bytes(&bytes, digest, size, what)?;
                let doc = parse_json(&bytes, &format!("{what}: {}", digest))?;
                self.put_bytes(&bytes, media_type)?;
                if matches!(media_type, media::OCI_INDEX | media::DOCKER_LIST) {
                    let children = doc["manifests"].as_array().cloned().unwrap_or_default();
                    for child in &children {
                        let (d, s, mt) = parse_descriptor(child, what)?;
                        if let Some(p) = platform_of_descriptor(child) {
                            platforms.push(p);
                        }
                        let mut ignored = Vec::new();
                        self.copy_tree(&d, s, &mt, blobs, what, &mut ignored, depth + 1)?;
                    }
                } else {
                    let (cd, cs, cmt) = parse_descriptor(&doc["config"], what)?;
                    let (cpath, csha) = blobs.path_of(&cd).ok_or_else(|| {
                        Error::input(format!("{what}: config blob {} is missing", cd))
                    })?;
                    if depth == 0 {
                        if let Ok(cbytes) = read_small(&cpath, MAX_JSON_BLOB) {
                            if let Ok(cj) = serde_json::from_slice::<Value>(&cbytes) {
                                platforms.extend(platform_of_config(&cj));
                            }
                        }
                    }
                    self.put_file(&cpath, csha, cs, &cmt, false, what)?;
                    for layer in doc["layers"].as_array().cloned().unwrap_or_default() {
                        let (ld, ls, lmt) = parse_descriptor(&layer, what)?;
                        let (lpath, lsha) = blobs.path_of(&ld).ok_or_else(|| {
                            Error::input(format!("{what}: layer blob {} is missing", ld))
                        })?;
                        self.put_blob(
                            &ld,
                            ls,
                            &lmt,
                            &lpath,
                            lsha,
                            matches!(blobs, Blobs::Archive(_)),
                            what,
                        )?;
                    }
                }
                Ok(())
            }
            other => Err(Error::input(format!(
                "{what}: {} has media type {other:?}, not an image manifest or index",
                digest
            ))),
        }
    }

    /// Store bytes we generated or already checked.
    fn put_bytes(&mut self, bytes: &[u8], media_type: &str) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.blobs.contains_key(&d) {
            if !self.known.contains(&d) {
                let dest = self.blob_path(&d);
                write_new(&dest, bytes)?;
            }
            self.blobs.insert(
                d,
                StoredBlob {
                    size: bytes.len() as u64,
                    media_type: media_type.to_string(),
                },
            );
        }
        Ok(d)
    }

    /// Store a file whose digest we learn (or already know) while copying.
    fn put_file(
        &mut self,
        src: &Path,
        known_sha: Option<Digest>,
        size: u64,
        media_type: &str,
        movable: bool,
        what: &str,
    ) -> Result<Digest> {
        let d = match known_sha {
            Some(d) => d,
            None => crate::hash::hash_file(src, &crate::hash::NoProgress)?.0,
        };
        self.put_blob(&d, size, media_type, src, Some(d), movable, what)?;
        Ok(d)
    }

    /// Store blob `d` from `src`, checking digest and size on the way in.
    #[allow(clippy::too_many_arguments)]
    fn put_blob(
        &mut self,
        d: &Digest,
        size: u64,
        media_type: &str,
        src: &Path,
        known_sha: Option<Digest>,
        movable: bool,
        what: &str,
    ) -> Result<()> {
        if let Some(b) = self.blobs.get(d) {
            if b.size != size {
                return Err(Error::content(
                    Field::Image(what.to_string()),
                    format!(
                        "{what}: blob {} is named with size {size} here and {} elsewhere",
                        d, b.size
                    ),
                ));
            }
            return Ok(());
        }
        if self.known.contains(d) {
            // Thin bundle: the base already holds this blob (its digest is its name and the
            // base manifest lists it), so nothing is copied.
            self.blobs.insert(
                *d,
                StoredBlob {
                    size,
                    media_type: media_type.into(),
                },
            );
            return Ok(());
        }
        let dest = self.blob_path(d);
        match (movable, known_sha) {
            (true, Some(sha)) => {
                // Already hashed while the archive was read: check, then move.
                let got = std::fs::metadata(src).at(src)?.len();
                if sha != *d || got != size {
                    return Err(blob_mismatch(what, d, size, &sha, got));
                }
                std::fs::rename(src, &dest).at(&dest)?;
            }
            _ => {
                // No further than the descriptor's size: a blob far larger than described
                // is refused after one more read, not copied whole.
                let got =
                    copy_hashing_at_most(src, &dest, size, self.progress).map_err(|e| match e {
                        Error::NotFound(_) => {
                            Error::input(format!("{what}: blob {} is missing", d))
                        }
                        e => e,
                    })?;
                if got.digest() != Some(*d) || got.size != size {
                    let _ = std::fs::remove_file(&dest);
                    return Err(match got.digest() {
                        Some(sha) => blob_mismatch(what, d, size, &sha, got.size),
                        None => Error::content(
                            Field::Image(what.to_string()),
                            format!(
                                "{what}: blob {d} does not match its descriptor (expected {size} \
                                 bytes, got {} bytes: not read past the expected size)",
                                got.size
                            ),
                        ),
                    });
                }
            }
        }
        self.blobs.insert(
            *d,
            StoredBlob {
                size,
                media_type: media_type.into(),
            },
        );
        Ok(())
    }

    /// Write `oci-layout` and `index.json`; returns their bytes (for the manifest).
    pub(crate) fn finish(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let layout = stella_dsse::jcs::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))
            .map_err(|e| Error::input(e.to_string()))?;
        let mut images = self.images.clone();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let manifests: Vec<Value> = images
            .iter()
            .map(|i| {
                json!({
                    "mediaType": i.media_type,
                    "digest": i.digest.to_string(),
                    "size": i.size,
                    "annotations": {media::REF_NAME: i.reference},
                })
            })
            .collect();
        let index = stella_dsse::jcs::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        }))
        .map_err(|e| Error::input(e.to_string()))?;
        Ok((layout, index))
    }
}

fn blob_mismatch(what: &str, d: &Digest, size: u64, got: &Digest, got_size: u64) -> Error {
    Error::content(Field::Image(what.to_string()), format!(
        "{what}: blob {} does not match its descriptor (expected {size} bytes, got {got_size} bytes with digest {})",
        d,
        got
    ))
}

fn check_bytes(bytes: &[u8], d: &Digest, size: u64, what: &str) -> Result<()> {
    let got = Digest::of(bytes);
    if got != *d || bytes.len() as u64 != size {
        return Err(blob_mismatch(what, d, size, &got, bytes.len() as u64));
    }
    Ok(())
}

fn check_layout_file(bytes: &[u8], what: &str) -> Result<()> {
    let v = parse_json(bytes, &format!("{what}: oci-layout"))?;
    match v["imageLayoutVersion"].as_str() {
        Some(s) if s.starts_with("1.") => Ok(()),
        _ => Err(Error::input(format!(
            "{what}: oci-layout does not declare imageLayoutVersion 1.x"
        ))),
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::input(format!("{what} is not valid JSON: {e}")))
}

fn parse_descriptor(v: &Value, what: &str) -> Result<(Digest, u64, String)> {
    let digest = v["digest"].as_str().unwrap_or_default();
    let d = Digest::parse(digest).ok().ok_or_else(|| {
        Error::input(format!(
            "{what}: descriptor digest {digest:?} is not sha256:<64 lowercase hex> (only sha256 is supported)"
        ))
    })?;
    let size = v["size"]
        .as_u64()
        .ok_or_else(|| Error::input(format!("{what}: descriptor {digest} has no size")))?;
    let mt = v["mediaType"].as_str().unwrap_or_default().to_string();
    if mt.is_empty() {
        return Err(Error::input(format!(
            "{what}: descriptor {digest} has no mediaType"
        )));
    }
    Ok((d, size, mt))
}

fn platform_string(os: &str, arch: &str, variant: Option<&str>) -> Option<String> {
    if os.is_empty() || arch.is_empty() || os == "unknown" || arch == "unknown" {
        return None;
    }
    Some(match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

fn platform_of_descriptor(v: &Value) -> Option<String> {
    let p = &v["platform"];
    platform_string(
        p["os"].as_str()?,
        p["architecture"].as_str()?,
        p["variant"].as_str(),
    )
}

fn platform_of_config(v: &Value) -> Option<String> {
    platform_string(
        v["os"].as_str()?,
        v["architecture"].as_str()?,
        v["variant"].as_str(),
    )
}

/// Choose an `index.json` entry by `ref.name` (or the only entry).
fn select_entry(index: &Value, ref_name: Option<&str>, what: &str) -> Result<Value> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    match ref_name {
        Some(name) => entries
            .into_iter()
            .find(|e| e["annotations"][media::REF_NAME].as_str() == Some(name))
            .ok_or_else(|| {
                Error::input(format!("{what}: no index.json entry has ref.name {name:?}"))
            }),
        None if entries.len() == 1 => Ok(entries.into_iter().next().unwrap_or_default()),
        None => {
            let names: Vec<&str> = index["manifests"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["annotations"][media::REF_NAME].as_str())
                        .collect()
                })
                .unwrap_or_default();
            Err(Error::input(format!(
                "{what}: index.json holds {} entries: choose one with `refName` (ref names: {})",
                entries.len(),
                names.join(", ")
            )))
        }
    }
}

fn select_docker_oci_entry(index: &Value, repo_tag: Option<&str>, what: &str) -> Result<Value> {
    let Some(tag) = repo_tag else {
        return select_entry(index, None, what);
    };
    let want = normalize_ref(tag);
    index["manifests"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|e| {
                e["annotations"][CONTAINERD_NAME]
                    .as_str()
                    .is_some_and(|n| normalize_ref(n) == want)
            })
        })
        .cloned()
        .ok_or_else(|| Error::input(format!("{what}: no image tagged {tag}")))
}

/// Docker's reference normalisation: `alpine:3` → `docker.io/library/alpine:3`.
fn normalize_ref(r: &str) -> String {
    let (first, rest) = match r.split_once('/') {
        Some((f, rest)) => (f, Some(rest)),
        None => (r, None),
    };
    match rest {
        None => format!("docker.io/library/{r}"),
        Some(_) if first.contains('.') || first.contains(':') || first == "localhost" => {
            r.to_string()
        }
        Some(_) => format!("docker.io/{r}"),
    }
}

/// A regular file of an unpacked docker archive.
#[derive(Debug, Clone)]
struct Extracted {
    tmp: PathBuf,
    sha256: Digest,
    size: u64,
}

/// The files of a docker archive, unpacked into a scratch folder under numbered names (so no
/// archive path ever becomes a file-system path). Links are resolved inside the archive.
struct ArchiveFiles {
    files: HashMap<String, Extracted>,
    links: HashMap<String, String>,
}

impl ArchiveFiles {
    fn extract(file: &Path, scratch: &Path, progress: &dyn Progress) -> Result<Self> {
        let what = format!("docker archive {}", file.display());
        std::fs::create_dir_all(scratch).at(scratch)?;
        let reader = crate::codec::open_decompressed(file)?;
        let mut ar = tar::Archive::new(reader);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let entries = ar
            .entries()
            .map_err(|e| Error::input(format!("{what}: {e}")))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| Error::input(format!("{what}: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| Error::input(format!("{what}: {e}")))?
                .to_string_lossy()
                .into_owned();
            let Some(name) = normalize_archive_path(&raw) else {
                return Err(Error::input(format!("{what}: unsafe entry path {raw:?}")));
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let tmp = scratch.join(format!("f{n}"));
                let mut w = std::fs::File::create(&tmp).at(&tmp)?;
                let mut h = Hasher::new();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let k = entry
                        .read(&mut buf)
                        .map_err(|e| Error::input(format!("{what}: {e}")))?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    w.write_all(&buf[..k]).at(&tmp)?;
                    progress.advance(k as u64);
                }
                let size = h.len();
                files.insert(
                    name,
                    Extracted {
                        tmp,
                        sha256: h.finish(),
                        size,
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::input(format!("{what}: {e}")))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Symlinks are relative to the link's folder; hard links to the archive root.
                let joined = if kind.is_symlink() {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                if let Some(t) = normalize_archive_path(&joined) {
                    links.insert(name, t);
                }
            }
        }
        Ok(ArchiveFiles { files, links })
    }

    fn get(&self, path: &str) -> Option<&Extracted> {
        let mut p = normalize_archive_path(path)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Some(f);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }

    fn read_small(&self, path: &str, what: &str) -> Result<Vec<u8>> {
        let f = self
            .get(path)
            .ok_or_else(|| Error::input(format!("{what}: {path} is missing")))?;
        read_small(&f.tmp, MAX_JSON_BLOB)
    }
}

/// Normalise an archive path (`./a/../b` → `b`); `None` if it leaves the archive root.
fn normalize_archive_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_normalisation() {
        assert_eq!(normalize_ref("alpine:3"), "docker.io/library/alpine:3");
        assert_eq!(normalize_ref("me/app:1"), "docker.io/me/app:1");
        assert_eq!(normalize_ref("reg.io/me/app:1"), "reg.io/me/app:1");
        assert_eq!(normalize_ref("localhost/app:1"), "localhost/app:1");
    }

    #[test]
    fn archive_paths() {
        assert_eq!(normalize_archive_path("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize_archive_path("../x"), None);
        assert_eq!(normalize_archive_path("/x"), None);
    }
}
