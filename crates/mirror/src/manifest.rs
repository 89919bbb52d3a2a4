//! The bundle manifest: the signed description of a bundle (SPEC §5).
//!
//! It is written as RFC 8785 canonical JSON, so the same content always gives the same bytes.
//! Fields, in canonical (sorted) order on disk:
//!
//! | field | meaning |
//! |---|---|
//! | `base` | thin bundles only: `{bundle, version, generation, manifestDigest}` of the bundle this one updates |
//! | `bundle` | bundle id (the spec's `name`) |
//! | `checksums` | after signing: entries for `SHA256SUMS` and `SHA256SUMS.dsse` |
//! | `files` | every content file: `{path, size, sha256, mediaType}`, sorted by path (bytes) |
//! | `generatedAt` | ISO-8601 UTC with milliseconds |
//! | `generation` | increases by one with each bundle of a series |
//! | `images` | `{reference, digest, platforms}` of each image in `images/` |
//! | `issuer` | who issued it; the signed header must agree |
//! | `kind` | `full` or `thin` |
//! | `purpose` | always `mirror-bundle` |
//! | `removed` | thin bundles only: paths of the base that the update deletes |
//! | `validForSeconds` | freshness budget (default 24 h when absent) |
//! | `version` | release version |
//!
//! Optional fields are left out when empty. Parsing is strict: unknown fields, unsorted or
//! duplicate files, unsafe paths and malformed digests are all refused before anything else
//! looks at the manifest.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::hash::Digest;
use crate::path::BundlePath;
use crate::path::PathError;

/// Default freshness budget when the manifest has no `validForSeconds`.
pub(crate) const DEFAULT_VALID_FOR_SECONDS: u64 = 24 * 3600;
/// Clock skew tolerated on freshness checks.
pub(crate) const SKEW_SECONDS: i64 = 5;

/// Full bundle, or thin update of a base bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Thin,
}

/// One file of a bundle. Serialised as `{path, size, sha256, mediaType}` with `sha256` the
/// bare 64 hex digits; parsing refuses an unsafe path or malformed digest with the
/// [`ManifestError`] message `validate` gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub path: BundlePath,
    pub size: u64,
    #[serde(with = "stella_digest::sha256_hex")]
    pub sha256: Digest,
    pub media_type: String,
}

/// One image in the shared OCI layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    pub reference: String,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
}

/// The bundle a thin bundle updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseRef {
    pub bundle: String,
    pub version: String,
    pub generation: u64,
    /// Digest of the base's `manifest.json` bytes.
    pub manifest_digest: Digest,
}

/// A bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub bundle: String,
    pub version: String,
    pub generation: u64,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    pub generated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_for_seconds: Option<u64>,
    pub issuer: String,
    pub purpose: String,
    pub files: Vec<FileEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<BundlePath>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<FileEntry>,
}

/// Format a time as the manifest does: `2025-12-06T10:00:00.000Z` (RFC 3339, UTC, milliseconds).
pub use stella_x509::format_time;

/// A time that is not RFC 3339.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time: {source}")]
pub struct TimeError {
    pub text: String,
    pub source: time::error::Parse,
}

/// Why a manifest is refused (shape and structural rules; signatures are checked elsewhere).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(stella_dsse::jcs::JcsError),
    #[error("manifest does not have the bundle manifest shape: {0}")]
    Shape(serde_json::Error),
    #[error("manifest purpose is {0:?}, not \"mirror-bundle\"")]
    Purpose(String),
    #[error("manifest field `{0}` is empty")]
    EmptyField(&'static str),
    #[error("manifest generation is too large")]
    GenerationTooLarge,
    #[error("generatedAt: {0}")]
    GeneratedAt(TimeError),
    #[error("a full bundle cannot name a base")]
    FullWithBase,
    #[error("a thin bundle must name its base")]
    ThinWithoutBase,
    #[error("a full bundle cannot list removed files")]
    FullWithRemoved,
    #[error("base manifestDigest {0:?} is not sha256:<64 hex>")]
    BaseDigest(String),
    #[error("a thin bundle of generation {generation} cannot update generation {base}")]
    ThinGeneration { generation: u64, base: u64 },
    #[error("file path: {0}")]
    FilePath(PathError),
    #[error("file {path}: sha256 {sha256:?} is not 64 lowercase hex digits")]
    FileSha256 { path: String, sha256: String },
    #[error("file {0}: size is too large")]
    FileSize(String),
    #[error("file {0}: empty mediaType")]
    FileMediaType(String),
    #[error("file {0} is a metadata name and cannot be listed")]
    MetadataName(String),
    #[error("files are not sorted by path or repeat a path (at {0})")]
    NotSorted(String),
    #[error("file {file} is also a folder of {of}")]
    FileIsFolder { file: String, of: String },
    #[error("image {reference}: digest {digest:?} is not sha256:<64 hex>")]
    ImageDigest { reference: String, digest: String },
    #[error("removed path: {0}")]
    RemovedPath(PathError),
    #[error("removed paths are not sorted or repeat")]
    RemovedNotSorted,
    #[error("{0} is listed both as a file and as removed")]
    FileAndRemoved(String),
    #[error("checksums must list exactly SHA256SUMS and SHA256SUMS.dsse, found {0:?}")]
    ChecksumNames(Vec<String>),
    #[error("checksums: {0} has a malformed sha256")]
    ChecksumSha256(String),
}

/// Parse an RFC 3339 time (any offset).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, TimeError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|source| TimeError {
        text: s.to_string(),
        source,
    })
}

/// Largest integer a JSON number holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

impl FileEntry {
    /// The checks typing leaves to `validate`: the size a JSON number holds exactly, a media
    /// type.
    pub(crate) fn check(&self) -> Result<(), ManifestError> {
        if self.size > MAX_SAFE_INTEGER {
            return Err(ManifestError::FileSize(self.path.to_string()));
        }
        if self.media_type.is_empty() {
            return Err(ManifestError::FileMediaType(self.path.to_string()));
        }
        Ok(())
    }

    /// Type an entry as written: the path first, then the digest (the order `validate`
    /// always checked them in).
    fn from_wire(w: WireEntry) -> Result<Self, ManifestError> {
        let path = BundlePath::try_from(w.path).map_err(ManifestError::FilePath)?;
        let sha256 = sha256_of_hex(&w.sha256).ok_or_else(|| ManifestError::FileSha256 {
            path: path.to_string(),
            sha256: w.sha256,
        })?;
        Ok(FileEntry {
            path,
            size: w.size,
            sha256,
            media_type: w.media_type,
        })
    }
}

/// Value of each ASCII hex digit a manifest may hold (lowercase), [`NOT_HEX`] for any other
/// byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};
const NOT_HEX: u8 = 0xf0;

/// The digest of 64 lowercase hex digits (what [`Digest::parse_sha256_hex`] accepts), by table:
/// a manifest of a million files holds a million of them.
pub(crate) fn sha256_of_hex(hex: &str) -> Option<Digest> {
    let hex: &[u8; 64] = hex.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [h, l] => (HEX_VALUE[usize::from(*h)], HEX_VALUE[usize::from(*l)]),
            _ => (NOT_HEX, NOT_HEX),
        };
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad & NOT_HEX == 0).then(|| Digest::sha256(out))
}

/// A `files` entry as written, its strings borrowed from the manifest text when they hold no
/// escape (the streamed path types hundreds of thousands of entries without a `String` per
/// field). Same shape and Rust name as [`WireEntry`] (in its own module), so serde's messages
/// about a malformed entry read the same.
mod borrowed {
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(crate) struct WireEntry<'a> {
        #[serde(borrow)]
        pub(crate) path: Cow<'a, str>,
        pub(crate) size: u64,
        #[serde(borrow)]
        pub(crate) sha256: Cow<'a, str>,
        #[serde(borrow)]
        pub(crate) media_type: Cow<'a, str>,
    }
}
pub(crate) use borrowed::WireEntry as WireEntryRef;

impl WireEntryRef<'_> {
    /// [`FileEntry::from_wire`] and [`check_next`] without building the entry: the same checks
    /// in the same order, with the same errors; the digest on success.
    pub(crate) fn check(&self, order: &mut PathOrder) -> Result<Digest, ManifestError> {
        crate::path::check(&self.path).map_err(ManifestError::FilePath)?;
        let sha256 = sha256_of_hex(&self.sha256).ok_or_else(|| ManifestError::FileSha256 {
            path: self.path.to_string(),
            sha256: self.sha256.to_string(),
        })?;
        check_next_parts(order, &self.path, self.size, &self.media_type)?;
        Ok(sha256)
    }
}

/// Parsed as written, then typed: an unsafe path or malformed digest is refused with the
/// [`ManifestError`] text (what `streamed::FileIndex` reports for the entry).
impl<'de> Deserialize<'de> for FileEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FileEntry::from_wire(WireEntry::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Parsed and validated as [`Manifest::from_json`] does (after the canonical-form check).
impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Wire::<TypedFiles>::deserialize(d)?
            .into_manifest()
            .map_err(serde::de::Error::custom)
    }
}

/// The checks [`Manifest::validate`] makes of one entry of `files`, given the order of the
/// entries before it (for lists checked as they are written).
pub(crate) fn check_next(order: &mut PathOrder, f: &FileEntry) -> Result<(), ManifestError> {
    check_next_parts(order, &f.path, f.size, &f.media_type)
}

/// The order of a file list, checked path by path: each path above the one before it, and no
/// listed file the folder of a later one — however many paths sort between the two (`a/x`,
/// `a/x-y`, `a/x.z`, `a/x/y`: `-` and `.` sort before `/`), so comparing each path with the
/// one before is not enough. Holds the last path and where each listed file that begins it
/// ends (the paths that begin with a file come together, right after it: a file leaves the
/// list at the first path that does not begin with it, so it holds at most a path's length).
#[derive(Debug, Default, Clone)]
pub(crate) struct PathOrder {
    last: String,
    any: bool,
    /// Lengths of the listed files that are prefixes of `last` (`last` itself the longest).
    files: Vec<usize>,
}

impl PathOrder {
    /// Check `path` as the next in the list, and take it as the last.
    pub(crate) fn next(&mut self, path: &str) -> Result<(), ManifestError> {
        if self.any {
            if self.last.as_bytes() >= path.as_bytes() {
                return Err(ManifestError::NotSorted(path.to_string()));
            }
            while let Some(&n) = self.files.last() {
                if path.as_bytes().starts_with(&self.last.as_bytes()[..n]) {
                    break;
                }
                self.files.pop();
            }
            if let Some(&n) = self.files.last() {
                if path.as_bytes().get(n) == Some(&b'/') {
                    return Err(ManifestError::FileIsFolder {
                        file: self.last[..n].to_string(),
                        of: path.to_string(),
                    });
                }
            }
        }
        self.last.clear();
        self.last.push_str(path);
        self.files.push(path.len());
        self.any = true;
        Ok(())
    }
}

/// [`check_next`] of an entry given by its fields (its path already a valid bundle path).
fn check_next_parts(
    order: &mut PathOrder,
    path: &str,
    size: u64,
    media_type: &str,
) -> Result<(), ManifestError> {
    if size > MAX_SAFE_INTEGER {
        return Err(ManifestError::FileSize(path.to_string()));
    }
    if media_type.is_empty() {
        return Err(ManifestError::FileMediaType(path.to_string()));
    }
    if crate::names::is_metadata(path) {
        return Err(ManifestError::MetadataName(path.to_string()));
    }
    order.next(path)
}

impl Manifest {
    /// Parse and validate manifest bytes (strict JSON: duplicate keys refused).
    ///
    /// A canonical manifest (every signed one) is typed straight from its bytes: canonical
    /// text has no duplicate member names, no lone surrogates and no whitespace, so
    /// `serde_json` reads exactly what the strict parser would, without the `Value` tree (for
    /// 1,000,000 files that tree is several times the manifest's size). Anything else —
    /// non-canonical input or a shape error — takes the strict parser, so errors read as
    /// they always did.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        // Above the in-memory JCS limit (64 MiB: some 400,000 files) the canonical check
        // streams over the bytes instead; such a manifest must be canonical (every signed one
        // is) since the strict tree parser refuses it.
        let canonical = if bytes.len() > stella_dsse::jcs::MAX_INPUT_BYTES {
            stella_dsse::jcs::is_canonical_read(bytes).unwrap_or(false)
        } else {
            stella_dsse::jcs::is_canonical(bytes)
        };
        let fast = canonical
            .then(|| serde_json::from_slice::<Wire<TypedFiles>>(bytes).ok())
            .flatten();
        let wire = match fast {
            Some(w) => w,
            None => {
                let value =
                    stella_dsse::jcs::parse_strict(bytes).map_err(ManifestError::NotJson)?;
                serde_json::from_value(value).map_err(ManifestError::Shape)?
            }
        };
        wire.into_manifest()
    }

    /// Canonical (RFC 8785) bytes, written field by field (no `serde_json::Value` tree; the
    /// test `canonical_writer_matches_jcs` holds it to `stella_dsse::jcs::to_vec`). Every
    /// member name is ASCII, so byte order is the UTF-16 order RFC 8785 sorts by.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            512 + self
                .files
                .iter()
                .map(|f| f.path.len() + f.media_type.len() + 140)
                .sum::<usize>(),
        );
        // Writing into a Vec cannot fail.
        let _ = self.write_canonical(&self.files, &mut out);
        out
    }

    /// The canonical bytes of this manifest with `files` as its file list (its own `files`
    /// are ignored), written to `out` as they are made: memory is a small buffer however many
    /// files there are. The same bytes as [`to_canonical_json`](Self::to_canonical_json) of
    /// the manifest holding those files.
    pub fn write_canonical(&self, files: &dyn FileList, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
        let mut obj = Obj::new(&mut buf);
        if let Some(b) = &self.base {
            obj.key("base");
            let mut o = Obj::new(obj.out);
            o.str("bundle", &b.bundle);
            o.num("generation", b.generation);
            o.str("manifestDigest", &b.manifest_digest.to_string());
            o.str("version", &b.version);
            o.end();
        }
        obj.str("bundle", &self.bundle);
        if !self.checksums.is_empty() {
            obj.key("checksums");
            write_entries(&self.checksums, obj.out, out)?;
        }
        obj.key("files");
        write_entries(files, obj.out, out)?;
        obj.str("generatedAt", &self.generated_at);
        obj.num("generation", self.generation);
        if !self.images.is_empty() {
            obj.key("images");
            obj.out.push(b'[');
            for (i, img) in self.images.iter().enumerate() {
                if i > 0 {
                    obj.out.push(b',');
                }
                let mut o = Obj::new(obj.out);
                o.str("digest", &img.digest.to_string());
                if !img.platforms.is_empty() {
                    o.key("platforms");
                    write_strs(&img.platforms, o.out);
                }
                o.str("reference", &img.reference);
                o.end();
            }
            obj.out.push(b']');
        }
        obj.str("issuer", &self.issuer);
        obj.str(
            "kind",
            match self.kind {
                Kind::Full => "full",
                Kind::Thin => "thin",
            },
        );
        obj.str("purpose", &self.purpose);
        if !self.removed.is_empty() {
            obj.key("removed");
            write_strs(&self.removed, obj.out);
        }
        if let Some(v) = self.valid_for_seconds {
            obj.num("validForSeconds", v);
        }
        obj.str("version", &self.version);
        obj.end();
        out.write_all(&buf)
    }

    /// The freshness budget in seconds.
    pub fn valid_for(&self) -> u64 {
        self.valid_for_seconds.unwrap_or(DEFAULT_VALID_FOR_SECONDS)
    }

    pub fn generated_at_time(&self) -> Result<OffsetDateTime, ManifestError> {
        parse_time(&self.generated_at).map_err(ManifestError::GeneratedAt)
    }

    /// Structural checks: everything except signatures and file contents (paths and
    /// digests are checked as they are typed).
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.validate_typed(Deferred::default())
    }

    /// [`validate`](Self::validate), returning each error met while typing the wire form
    /// where the checks of the string-typed manifest met it, so every malformed manifest is
    /// refused with the message it always was.
    fn validate_typed(&self, deferred: Deferred) -> Result<(), ManifestError> {
        if self.purpose != crate::PURPOSE {
            return Err(ManifestError::Purpose(self.purpose.clone()));
        }
        for (name, v) in [
            ("bundle", &self.bundle),
            ("version", &self.version),
            ("issuer", &self.issuer),
        ] {
            if v.trim().is_empty() {
                return Err(ManifestError::EmptyField(name));
            }
        }
        if self.generation > MAX_SAFE_INTEGER {
            return Err(ManifestError::GenerationTooLarge);
        }
        self.generated_at_time()?;
        let has_base = self.base.is_some() || deferred.base.is_some();
        match (self.kind, has_base) {
            (Kind::Full, true) => return Err(ManifestError::FullWithBase),
            (Kind::Thin, false) => return Err(ManifestError::ThinWithoutBase),
            (Kind::Full, false) if !self.removed.is_empty() || deferred.removed.is_some() => {
                return Err(ManifestError::FullWithRemoved)
            }
            (Kind::Thin, true) => {
                if let Some(e) = deferred.base {
                    return Err(e);
                }
                if let Some(b) = &self.base {
                    if b.generation >= self.generation {
                        return Err(ManifestError::ThinGeneration {
                            generation: self.generation,
                            base: b.generation,
                        });
                    }
                }
            }
            _ => {}
        }
        for (i, f) in self.files.iter().enumerate() {
            f.check()?;
            if crate::names::is_metadata(&f.path) {
                return Err(ManifestError::MetadataName(f.path.to_string()));
            }
            if i > 0 && self.files[i - 1].path.as_bytes() >= f.path.as_bytes() {
                return Err(ManifestError::NotSorted(f.path.to_string()));
            }
        }
        if let Some(e) = deferred.files {
            return Err(e);
        }
        // A path that is a file cannot also be a folder of another file.
        let mut order = PathOrder::default();
        for f in &self.files {
            order.next(&f.path)?;
        }
        if let Some(e) = deferred.images {
            return Err(e);
        }
        for (i, r) in self.removed.iter().enumerate() {
            if i > 0 && self.removed[i - 1].as_bytes() >= r.as_bytes() {
                return Err(ManifestError::RemovedNotSorted);
            }
            if self.file(r).is_some() {
                return Err(ManifestError::FileAndRemoved(r.to_string()));
            }
        }
        if let Some(e) = deferred.removed {
            return Err(e);
        }
        if let Some(e) = deferred.checksums {
            return Err(e);
        }
        if !self.checksums.is_empty() {
            let names: Vec<&str> = self.checksums.iter().map(|c| c.path.as_str()).collect();
            if names != [crate::names::SUMS, crate::names::SUMS_DSSE] {
                return Err(ManifestError::ChecksumNames(
                    names.iter().map(|n| n.to_string()).collect(),
                ));
            }
        }
        Ok(())
    }

    /// The entry for `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Total bytes of the listed files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether `sums` is exactly [`sha256sums`](Self::sha256sums), compared line by line
    /// without building the text.
    pub fn sha256sums_equal(&self, sums: &[u8]) -> bool {
        let mut rest = sums;
        for f in &self.files {
            let (hex, path) = (&f.sha256.hex_ascii()[..], f.path.as_bytes());
            let len = hex.len() + 2 + path.len() + 1;
            let Some((line, tail)) = rest.split_at_checked(len) else {
                return false;
            };
            if &line[..hex.len()] != hex
                || &line[hex.len()..hex.len() + 2] != b"  "
                || &line[hex.len() + 2..len - 1] != path
                || line[len - 1] != b'\n'
            {
                return false;
            }
            rest = tail;
        }
        rest.is_empty()
    }

    /// `SHA256SUMS` text for the listed files: `sha256sum` format, sorted, LF.
    pub fn sha256sums(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.files.len() * 100);
        // Writing into a Vec cannot fail.
        let _ = write_sha256sums(&self.files, &mut out);
        out
    }
}

/// A manifest as written, before typing: strings where the typed manifest holds paths and
/// digests, so [`Wire::into_manifest`] can refuse a malformed one with the message and in the
/// order [`Manifest::validate`] gives. `F` is how `files` is read: typed entry by entry into a
/// `Vec` ([`TypedFiles`]) or into the compact index of the streamed path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Wire<F> {
    bundle: String,
    version: String,
    generation: u64,
    kind: Kind,
    #[serde(default)]
    base: Option<WireBase>,
    generated_at: String,
    #[serde(default)]
    valid_for_seconds: Option<u64>,
    issuer: String,
    purpose: String,
    files: F,
    #[serde(default)]
    images: Vec<WireImage>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    checksums: Vec<WireEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireEntry {
    path: String,
    size: u64,
    sha256: String,
    media_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireImage {
    reference: String,
    digest: String,
    #[serde(default)]
    platforms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireBase {
    bundle: String,
    version: String,
    generation: u64,
    manifest_digest: String,
}

/// The first error met while typing each part of a [`Wire`], for
/// [`Manifest::validate_typed`] to return where the checks reach that part. A list holds
/// the entries typed before its error.
#[derive(Default)]
struct Deferred {
    base: Option<ManifestError>,
    files: Option<ManifestError>,
    images: Option<ManifestError>,
    removed: Option<ManifestError>,
    checksums: Option<ManifestError>,
}

/// `files` typed as they are read: the entries before the first malformed one, and its
/// error (the rest are still read, so a shape error anywhere is found first).
#[derive(Default)]
pub(crate) struct TypedFiles {
    files: Vec<FileEntry>,
    error: Option<ManifestError>,
}

impl<'de> Deserialize<'de> for TypedFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TypedFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TypedFiles, A::Error> {
                let mut out = TypedFiles {
                    files: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096)),
                    error: None,
                };
                while let Some(w) = seq.next_element::<WireEntry>()? {
                    if out.error.is_none() {
                        match FileEntry::from_wire(w) {
                            Ok(f) => out.files.push(f),
                            Err(e) => out.error = Some(e),
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Type the entries of a list until the first that fails.
fn type_list<W, T>(
    list: Vec<W>,
    f: impl Fn(W) -> Result<T, ManifestError>,
) -> (Vec<T>, Option<ManifestError>) {
    let mut out = Vec::with_capacity(list.len());
    for w in list {
        match f(w) {
            Ok(t) => out.push(t),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

impl<F> Wire<F> {
    /// This manifest with `files` read as `G` instead, and the files read so far.
    pub(crate) fn with_files<G>(self, files: G) -> (Wire<G>, F) {
        let w = Wire {
            bundle: self.bundle,
            version: self.version,
            generation: self.generation,
            kind: self.kind,
            base: self.base,
            generated_at: self.generated_at,
            valid_for_seconds: self.valid_for_seconds,
            issuer: self.issuer,
            purpose: self.purpose,
            files,
            images: self.images,
            removed: self.removed,
            checksums: self.checksums,
        };
        (w, self.files)
    }
}

impl Wire<TypedFiles> {
    /// The typed manifest, validated.
    pub(crate) fn into_manifest(self) -> Result<Manifest, ManifestError> {
        let mut deferred = Deferred {
            files: self.files.error,
            ..Deferred::default()
        };
        let base = match self.base {
            None => None,
            Some(b) => match Digest::parse(&b.manifest_digest) {
                Ok(manifest_digest) => Some(BaseRef {
                    bundle: b.bundle,
                    version: b.version,
                    generation: b.generation,
                    manifest_digest,
                }),
                Err(_) => {
                    deferred.base = Some(ManifestError::BaseDigest(b.manifest_digest));
                    None
                }
            },
        };
        let (images, e) = type_list(self.images, |i| match Digest::parse(&i.digest) {
            Ok(digest) => Ok(ImageEntry {
                reference: i.reference,
                digest,
                platforms: i.platforms,
            }),
            Err(_) => Err(ManifestError::ImageDigest {
                reference: i.reference,
                digest: i.digest,
            }),
        });
        deferred.images = e;
        let (removed, e) = type_list(self.removed, |r| {
            BundlePath::try_from(r).map_err(ManifestError::RemovedPath)
        });
        deferred.removed = e;
        let checksums = match type_checksums(self.checksums) {
            Ok(c) => c,
            Err(e) => {
                deferred.checksums = Some(e);
                Vec::new()
            }
        };
        let m = Manifest {
            bundle: self.bundle,
            version: self.version,
            generation: self.generation,
            kind: self.kind,
            base,
            generated_at: self.generated_at,
            valid_for_seconds: self.valid_for_seconds,
            issuer: self.issuer,
            purpose: self.purpose,
            files: self.files.files,
            images,
            removed,
            checksums,
        };
        m.validate_typed(deferred)?;
        Ok(m)
    }
}

/// The `checksums` entries typed: exactly `SHA256SUMS` and `SHA256SUMS.dsse` (checked on the
/// names as written), each with a well-formed digest.
fn type_checksums(list: Vec<WireEntry>) -> Result<Vec<FileEntry>, ManifestError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = list.iter().map(|c| c.path.as_str()).collect();
    if names != [crate::names::SUMS, crate::names::SUMS_DSSE] {
        return Err(ManifestError::ChecksumNames(
            names.iter().map(|n| n.to_string()).collect(),
        ));
    }
    list.into_iter()
        .map(|w| {
            let path = w.path.clone();
            FileEntry::from_wire(w).map_err(|_| ManifestError::ChecksumSha256(path))
        })
        .collect()
}

/// Bytes gathered before they are passed to the writer.
const FLUSH_AT: usize = 64 * 1024;

/// One file of a [`FileList`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef<'a> {
    pub path: &'a str,
    pub size: u64,
    pub sha256: Digest,
    pub media_type: &'a str,
}

/// The files of a manifest in path order, however they are held (a `Vec<FileEntry>`, a
/// compact index): what the streaming writers ([`Manifest::write_canonical`],
/// [`write_sha256sums`]) take.
pub trait FileList {
    /// How many files.
    fn count(&self) -> usize;
    /// Call `f` with each file, in order; stops at the first error.
    fn each(&self, f: &mut dyn FnMut(FileRef<'_>) -> io::Result<()>) -> io::Result<()>;
}

impl FileList for Vec<FileEntry> {
    fn count(&self) -> usize {
        self.len()
    }

    fn each(&self, f: &mut dyn FnMut(FileRef<'_>) -> io::Result<()>) -> io::Result<()> {
        for e in self {
            f(FileRef {
                path: &e.path,
                size: e.size,
                sha256: e.sha256,
                media_type: &e.media_type,
            })?;
        }
        Ok(())
    }
}

/// Write the `SHA256SUMS` text of `files` (`<hex>  <path>\n` each, in order) to `out`.
pub(crate) fn write_sha256sums(files: &dyn FileList, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    files.each(&mut |f| {
        buf.extend_from_slice(&f.sha256.hex_ascii());
        buf.extend_from_slice(b"  ");
        buf.extend_from_slice(f.path.as_bytes());
        buf.push(b'\n');
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    out.write_all(&buf)
}

/// A canonical JSON object being written: members must be added in canonical order.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        stella_dsse::jcs::write_str(name, self.out);
        self.out.push(b':');
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        stella_dsse::jcs::write_str(value, self.out);
    }

    fn num(&mut self, name: &str, value: u64) {
        self.key(name);
        // The JCS number writer (integers above 2^53 are written as the nearest double);
        // a u64 is always finite, so it cannot fail.
        let _ = stella_dsse::jcs::write_value(&serde_json::Value::from(value), self.out);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// The `files` (or `checksums`) array into `buf`, passing `buf` on to `out` whenever it
/// holds [`FLUSH_AT`] bytes (what is left stays in `buf`).
fn write_entries(entries: &dyn FileList, buf: &mut Vec<u8>, out: &mut dyn Write) -> io::Result<()> {
    buf.push(b'[');
    let mut first = true;
    entries.each(&mut |f| {
        if !first {
            buf.push(b',');
        }
        first = false;
        let mut o = Obj::new(buf);
        o.str("mediaType", f.media_type);
        o.str("path", f.path);
        // 64 hex digits: a JSON string as they are.
        o.key("sha256");
        o.out.push(b'"');
        o.out.extend_from_slice(&f.sha256.hex_ascii());
        o.out.push(b'"');
        o.num("size", f.size);
        o.end();
        if buf.len() >= FLUSH_AT {
            out.write_all(buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    buf.push(b']');
    Ok(())
}

fn write_strs<S: AsRef<str>>(items: &[S], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        stella_dsse::jcs::write_str(s.as_ref(), out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::sample_manifest as sample;

    fn path(s: &str) -> BundlePath {
        BundlePath::new(s).unwrap()
    }

    #[test]
    fn canonical_round_trip_omits_empty_fields() {
        let m = sample();
        let bytes = m.to_canonical_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"bundle\":\"b\",\"files\":["), "{text}");
        assert!(!text.contains("images") && !text.contains("removed") && !text.contains("base"));
        assert_eq!(Manifest::from_json(&bytes).unwrap(), m);
    }

    #[test]
    fn refuses_bad_manifests() {
        let mut m = sample();
        m.files.swap(0, 1);
        assert!(m.validate().unwrap_err().to_string().contains("not sorted"));
        let mut m = sample();
        m.files.swap(0, 1);
        m.files[1].path = path("a");
        assert!(m.validate().unwrap_err().to_string().contains("not sorted"));
        let mut m = sample();
        m.purpose = "attestation".into();
        assert!(m.validate().unwrap_err().to_string().contains("purpose"));
        let mut m = sample();
        m.files[1].path = path("a/b");
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("also a folder"));
        let mut m = sample();
        m.files[0].path = path("manifest.json");
        assert!(m.validate().is_err());
        let bytes = br#"{"bundle":"b","bundle":"c"}"#;
        assert!(Manifest::from_json(bytes)
            .unwrap_err()
            .to_string()
            .contains("JSON"));
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_canonical_json()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(Manifest::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn canonical_writer_matches_jcs() {
        let mut variants = vec![sample()];
        let mut m = sample();
        m.kind = Kind::Thin;
        m.generation = 3;
        m.base = Some(BaseRef {
            bundle: "b\"q\u{1}".into(),
            version: "0.9 é".into(),
            generation: 2,
            manifest_digest: Digest::sha256([0xaa; 32]),
        });
        m.removed = vec![path("old/x"), path("old/y\u{e000}")];
        m.valid_for_seconds = Some(u64::MAX);
        m.images = vec![
            ImageEntry {
                reference: "r/a:1".into(),
                digest: Digest::sha256([0xbb; 32]),
                platforms: vec![],
            },
            ImageEntry {
                reference: "r/b:\\2".into(),
                digest: Digest::sha256([0xcc; 32]),
                platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            },
        ];
        m.checksums = vec![m.files[0].clone(), m.files[1].clone()];
        m.files[1].size = (1 << 53) + 1;
        variants.push(m);
        let mut m = sample();
        m.files.clear();
        m.valid_for_seconds = Some(0);
        variants.push(m);
        for m in variants {
            let ours = m.to_canonical_json();
            assert_eq!(
                String::from_utf8(ours.clone()).unwrap(),
                String::from_utf8(stella_dsse::jcs::to_vec(&m).unwrap()).unwrap()
            );
            assert!(stella_dsse::jcs::is_canonical(&ours));
        }
    }

    #[test]
    fn typed_parse_of_canonical_and_other_forms_agree() {
        let m = sample();
        let canonical = m.to_canonical_json();
        let pretty = serde_json::to_vec_pretty(&m).unwrap();
        assert!(!stella_dsse::jcs::is_canonical(&pretty));
        assert_eq!(Manifest::from_json(&canonical).unwrap(), m);
        assert_eq!(Manifest::from_json(&pretty).unwrap(), m);
        // Errors read the same whichever path found them.
        let text = String::from_utf8(canonical).unwrap();
        let missing = text.replacen("\"bundle\":\"b\",", "", 1);
        assert!(stella_dsse::jcs::is_canonical(missing.as_bytes()));
        let e = Manifest::from_json(missing.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "manifest does not have the bundle manifest shape: missing field `bundle`"
        );
        let dup = text.replacen("\"bundle\":\"b\",", "\"bundle\":\"b\",\"bundle\":\"b\",", 1);
        let e = Manifest::from_json(dup.as_bytes()).unwrap_err().to_string();
        assert!(
            e.starts_with("manifest is not valid JSON: duplicate object key"),
            "{e}"
        );
    }

    #[test]
    fn sha256sums_compare_without_building_the_text() {
        let m = sample();
        let sums = m.sha256sums();
        assert!(m.sha256sums_equal(&sums));
        let mut longer = sums.clone();
        longer.extend_from_slice(b"x");
        assert!(!m.sha256sums_equal(&longer));
        assert!(!m.sha256sums_equal(&sums[..sums.len() - 1]));
        for i in 0..sums.len() {
            let mut t = sums.clone();
            t[i] ^= 1;
            assert!(!m.sha256sums_equal(&t), "byte {i}");
        }
        let mut empty = sample();
        empty.files.clear();
        assert!(empty.sha256sums_equal(b""));
        assert!(!empty.sha256sums_equal(b"\n"));
    }

    /// Takes at most `max` bytes per write, and records how many writes it saw.
    struct Small {
        out: Vec<u8>,
        max: usize,
        writes: usize,
    }

    impl Write for Small {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn streamed_writers_write_the_in_memory_bytes() {
        let mut m = sample();
        m.checksums = vec![m.files[0].clone(), m.files[1].clone()];
        m.files = (0..3000)
            .map(|i| FileEntry {
                path: path(&format!("advisories/osv/{:02}/OSV-{i:07}.json", i % 7)),
                size: i * 3,
                sha256: Digest::of(&(i * 7919).to_be_bytes()),
                media_type: "application/json".into(),
            })
            .collect();
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        let whole = m.to_canonical_json();
        assert!(whole.len() > 3 * FLUSH_AT, "crosses several flushes");
        let mut head = m.clone();
        let files = std::mem::take(&mut head.files);
        let mut w = Small {
            out: Vec::new(),
            max: 1000,
            writes: 0,
        };
        head.write_canonical(&files, &mut w).unwrap();
        assert!(w.out == whole);
        assert!(w.writes > 3, "written as it is made");
        let mut sums = Small {
            out: Vec::new(),
            max: 333,
            writes: 0,
        };
        write_sha256sums(&files, &mut sums).unwrap();
        assert!(sums.out == m.sha256sums());
        assert!(m.sha256sums_equal(&sums.out));
        // A failing writer stops the writers with its error.
        let mut full = [0u8; 100];
        let e = head
            .write_canonical(&files, &mut &mut full[..])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn sha256_of_hex_reads_what_parse_sha256_hex_reads() {
        let good = Digest::of(b"x").hex();
        let mut cases = vec![good.clone(), "0".repeat(64), "f".repeat(64), String::new()];
        cases.push(good[..63].to_string());
        cases.push(format!("{good}0"));
        for at in [0, 1, 31, 62, 63] {
            for c in ['A', 'F', 'g', 'G', '/', ':', '`', '@', ' ', '\u{e9}'] {
                let mut b: Vec<char> = good.chars().collect();
                b[at] = c;
                cases.push(b.into_iter().collect());
            }
        }
        for h in &cases {
            assert_eq!(sha256_of_hex(h), Digest::parse_sha256_hex(h).ok(), "{h:?}");
        }
        assert_eq!(sha256_of_hex(&good), Some(Digest::of(b"x")));
    }

    #[test]
    fn check_next_refuses_what_validate_refuses() {
        let e = |p: &str| FileEntry {
            path: path(p),
            size: 1,
            sha256: Digest::sha256([0; 32]),
            media_type: "text/plain".into(),
        };
        // The order after the entry `prev`, if any.
        let after = |prev: Option<&str>| {
            let mut order = PathOrder::default();
            if let Some(p) = prev {
                order.next(p).unwrap();
            }
            order
        };
        assert!(check_next(&mut after(None), &e("a")).is_ok());
        assert!(check_next(&mut after(Some("a")), &e("b")).is_ok());
        assert!(check_next(&mut after(Some("a")), &e("a-b/c")).is_ok());
        for (prev, path, want) in [
            (Some("b"), "a", "not sorted"),
            (Some("a"), "a", "not sorted"),
            (Some("a"), "a/b", "file a is also a folder of a/b"),
            (None, "manifest.json", "metadata name"),
        ] {
            let err = check_next(&mut after(prev), &e(path))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{prev:?} {path}: {err}");
            // validate says the same of the two-entry list.
            let mut m = sample();
            m.files = prev.map(e).into_iter().chain([e(path)]).collect();
            assert_eq!(m.validate().unwrap_err().to_string(), err);
        }
        let mut bad = e("x");
        bad.media_type.clear();
        assert!(check_next(&mut after(None), &bad)
            .unwrap_err()
            .to_string()
            .contains("mediaType"));
    }

    /// A file that a later path takes as its folder is refused however many paths sort
    /// between the two (`-`, `.` and other bytes below `/` sort a sibling in between), by
    /// `validate`, by the streamed reader and by `check_next` alike; a name that only begins
    /// with a file's name is not its folder.
    #[test]
    fn a_file_is_never_also_a_folder_however_far_apart_they_sort() {
        let refused: &[(&[&str], &str, &str)] = &[
            (&["a", "a-b", "a/b"], "a", "a/b"),
            (&["a/x", "a/x-y", "a/x.z", "a/x/y"], "a/x", "a/x/y"),
            (&["a", "a a", "a!", "a+b/c", "a.d", "a/e"], "a", "a/e"),
            (
                &["d/a", "d/a-1", "d/a-1-2", "d/a-1-2.x", "d/a-1/z"],
                "d/a-1",
                "d/a-1/z",
            ),
            (&["x", "x-1", "x-1.y", "x/y/z"], "x", "x/y/z"),
        ];
        let allowed: &[&[&str]] = &[
            &["a", "a-b", "a.c", "ab/c"],
            &["a-b", "a.c", "a/b"],
            &["a/x-y", "a/x.z", "a/x/y", "a/x0"],
            &["a", "a-b/c", "a-b/d", "a.c/e", "b/a"],
            &["x/a", "x/a-b", "x/b", "x/b-c/d", "y"],
        ];
        let entry = |p: &str| FileEntry {
            path: path(p),
            size: 1,
            sha256: Digest::sha256([0; 32]),
            media_type: "text/plain".into(),
        };
        let check_all = |paths: &[&str]| {
            let mut m = sample();
            m.files = paths.iter().map(|p| entry(p)).collect();
            let validated = m.validate().map_err(|e| e.to_string());
            let streamed = crate::streamed::parse_manifest(&m.to_canonical_json()[..])
                .map(|_| ())
                .map_err(|e| e.to_string());
            let mut order = PathOrder::default();
            let stepped = paths
                .iter()
                .try_for_each(|p| check_next(&mut order, &entry(p)))
                .map_err(|e| e.to_string());
            (validated, streamed, stepped)
        };
        for (paths, file, of) in refused {
            let want = format!("file {file} is also a folder of {of}");
            let (v, s, c) = check_all(paths);
            for got in [v, s, c] {
                assert!(
                    got.as_ref().is_err_and(|e| e.contains(&want)),
                    "{paths:?}: {got:?}"
                );
            }
        }
        for paths in allowed {
            let (v, s, c) = check_all(paths);
            assert_eq!((v, s, c), (Ok(()), Ok(()), Ok(())), "{paths:?}");
        }
    }

    /// The canonical text of a manifest, with `edit` applied to its JSON value (the shape a
    /// typed manifest cannot hold: unsafe paths, malformed digests).
    fn edited(m: &Manifest, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_canonical_json()).unwrap();
        edit(&mut v);
        stella_dsse::jcs::to_vec(&v).unwrap()
    }

    fn thin() -> Manifest {
        let mut m = sample();
        m.kind = Kind::Thin;
        m.generation = 2;
        m.base = Some(BaseRef {
            bundle: "b".into(),
            version: "0".into(),
            generation: 1,
            manifest_digest: Digest::sha256([7; 32]),
        });
        m.removed = vec![path("gone/x"), path("gone/y")];
        m.images = vec![ImageEntry {
            reference: "r/a:1".into(),
            digest: Digest::sha256([8; 32]),
            platforms: vec![],
        }];
        m.checksums = vec![m.files[0].clone(), m.files[1].clone()];
        m.checksums[0].path = path(crate::names::SUMS);
        m.checksums[1].path = path(crate::names::SUMS_DSSE);
        m
    }

    #[test]
    fn malformed_paths_and_digests_are_refused_as_before() {
        let upper = "A".repeat(64);
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Edit, String)> = vec![
            (
                Box::new(|v| v["files"][1]["path"] = "../x".into()),
                "file path: \"../x\" has a `..` component (path traversal)".into(),
            ),
            (
                Box::new(|v| v["files"][0]["path"] = "/a".into()),
                "file path: \"/a\" is an absolute path".into(),
            ),
            (
                Box::new(move |v| v["files"][1]["sha256"] = upper.into()),
                format!("file b/c: sha256 \"{}\" is not 64 lowercase hex digits", "A".repeat(64)),
            ),
            (
                Box::new(|v| v["files"][0]["sha256"] = format!("sha256:{}", "0".repeat(64)).into()),
                format!("file a: sha256 \"sha256:{}\" is not 64 lowercase hex digits", "0".repeat(64)),
            ),
            (
                Box::new(|v| v["images"][0]["digest"] = "0".repeat(64).into()),
                format!("image r/a:1: digest \"{}\" is not sha256:<64 hex>", "0".repeat(64)),
            ),
            (
                Box::new(|v| v["base"]["manifestDigest"] = "sha256:00".into()),
                "base manifestDigest \"sha256:00\" is not sha256:<64 hex>".into(),
            ),
            (
                Box::new(|v| v["removed"][1] = "gone//y".into()),
                "removed path: \"gone//y\" has an empty path component".into(),
            ),
            (
                Box::new(|v| v["checksums"][0]["path"] = "../SHA256SUMS".into()),
                "checksums must list exactly SHA256SUMS and SHA256SUMS.dsse, found [\"../SHA256SUMS\", \"SHA256SUMS.dsse\"]".into(),
            ),
            (
                Box::new(|v| v["checksums"][1]["sha256"] = "x".into()),
                "checksums: SHA256SUMS.dsse has a malformed sha256".into(),
            ),
            // The first problem in the order of the checks wins, as it always did.
            (
                Box::new(|v| {
                    v["files"][1]["path"] = "../x".into();
                    v["purpose"] = "other".into();
                }),
                "manifest purpose is \"other\", not \"mirror-bundle\"".into(),
            ),
            (
                Box::new(|v| {
                    v["files"][1]["path"] = "../x".into();
                    v["base"]["manifestDigest"] = "x".into();
                }),
                "base manifestDigest \"x\" is not sha256:<64 hex>".into(),
            ),
            (
                Box::new(|v| {
                    v["kind"] = "full".into();
                    v["base"]["manifestDigest"] = "x".into();
                }),
                "a full bundle cannot name a base".into(),
            ),
            (
                Box::new(|v| {
                    v["files"][0]["path"] = "z".into();
                    v["files"][1]["sha256"] = "x".into();
                }),
                "file b/c: sha256 \"x\" is not 64 lowercase hex digits".into(),
            ),
            (
                Box::new(|v| {
                    v["files"][0]["size"] = (1u64 << 60).into();
                    v["files"][1]["path"] = "../x".into();
                }),
                "file a: size is too large".into(),
            ),
            (
                Box::new(|v| {
                    v["files"][1]["path"] = "a/c".into();
                    v["images"][0]["digest"] = "x".into();
                }),
                "file a is also a folder of a/c".into(),
            ),
            (
                Box::new(|v| {
                    v["images"][0]["digest"] = "x".into();
                    v["removed"][0] = "../x".into();
                }),
                "image r/a:1: digest \"x\" is not sha256:<64 hex>".into(),
            ),
            (
                Box::new(|v| {
                    v["removed"] = serde_json::json!(["gone/y", "gone/x", "../x"]);
                }),
                "removed paths are not sorted or repeat".into(),
            ),
            (
                Box::new(|v| {
                    v["removed"] = serde_json::json!(["a", "../x"]);
                }),
                "a is listed both as a file and as removed".into(),
            ),
            (
                Box::new(|v| {
                    v["removed"][0] = "../x".into();
                    v["checksums"][1]["sha256"] = "x".into();
                }),
                "removed path: \"../x\" has a `..` component (path traversal)".into(),
            ),
            // A full bundle with removed paths that do not type is still a full bundle
            // with removed paths.
            (
                Box::new(|v| {
                    let o = v.as_object_mut().unwrap();
                    o.remove("base");
                    o.insert("kind".into(), "full".into());
                    o.insert("removed".into(), serde_json::json!(["../x"]));
                }),
                "a full bundle cannot list removed files".into(),
            ),
        ];
        let m = thin();
        assert!(Manifest::from_json(&m.to_canonical_json()).is_ok());
        for (edit, want) in cases {
            let bytes = edited(&m, edit);
            assert_eq!(
                Manifest::from_json(&bytes).unwrap_err().to_string(),
                want,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            // Not canonical (the strict parser's path): the same message.
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            assert_eq!(Manifest::from_json(&pretty).unwrap_err().to_string(), want);
            // And as serde refuses it.
            let e = serde_json::from_value::<Manifest>(v.take()).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn entries_refuse_what_they_cannot_hold() {
        let e = serde_json::from_str::<FileEntry>(
            r#"{"mediaType":"t","path":"a/./b","sha256":"00","size":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("file path: \"a/./b\" has a `.` component (path traversal)"),
            "{e}"
        );
        let e = serde_json::from_str::<FileEntry>(
            r#"{"mediaType":"t","path":"a","sha256":"00","size":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("file a: sha256 \"00\" is not 64 lowercase hex digits"),
            "{e}"
        );
        let ok = format!(
            r#"{{"mediaType":"t","path":"a","sha256":"{}","size":1}}"#,
            "0".repeat(64)
        );
        let f: FileEntry = serde_json::from_str(&ok).unwrap();
        assert_eq!(f.sha256, Digest::sha256([0; 32]));
        assert_eq!(stella_dsse::jcs::to_vec(&f).unwrap(), ok.as_bytes());
    }

    #[test]
    fn time_format() {
        let t = parse_time("2025-12-06T10:00:01.5+01:00").unwrap();
        assert_eq!(format_time(t), "2025-12-06T09:00:01.500Z");
    }
}
