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

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::hash::Digest;
use crate::path::BundlePath;

/// Default freshness budget when the manifest has no `validForSeconds`.
pub const DEFAULT_VALID_FOR_SECONDS: u64 = 24 * 3600;
/// Clock skew tolerated on freshness checks.
pub const SKEW_SECONDS: i64 = 5;

/// Full bundle, or thin update of a base bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Thin,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
}

/// One image in the shared OCI layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageEntry {
    pub reference: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
}

/// The bundle a thin bundle updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseRef {
    pub bundle: String,
    pub version: String,
    pub generation: u64,
    /// `sha256:<hex>` of the base's `manifest.json` bytes.
    pub manifest_digest: String,
}

/// A bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub bundle: String,
    pub version: String,
    pub generation: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    pub generated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_for_seconds: Option<u64>,
    pub issuer: String,
    pub purpose: String,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<FileEntry>,
}

/// Format a time as the manifest does: `2025-12-06T10:00:00.000Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parse an RFC 3339 time (any offset).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Largest integer a JSON number holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

impl FileEntry {
    pub fn digest(&self) -> Option<Digest> {
        crate::hash::parse_hex(&self.sha256)
    }

    fn check(&self) -> Result<(), String> {
        BundlePath::new(&self.path).map_err(|e| format!("file path: {e}"))?;
        if crate::hash::parse_hex(&self.sha256).is_none() {
            return Err(format!(
                "file {}: sha256 {:?} is not 64 lowercase hex digits",
                self.path, self.sha256
            ));
        }
        if self.size > MAX_SAFE_INTEGER {
            return Err(format!("file {}: size is too large", self.path));
        }
        if self.media_type.is_empty() {
            return Err(format!("file {}: empty mediaType", self.path));
        }
        Ok(())
    }
}

impl Manifest {
    /// Parse and validate manifest bytes (strict JSON: duplicate keys refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value = stella_dsse::jcs::parse_strict(bytes)
            .map_err(|e| format!("manifest is not valid JSON: {e}"))?;
        let m: Manifest = serde_json::from_value(value)
            .map_err(|e| format!("manifest does not have the bundle manifest shape: {e}"))?;
        m.validate()?;
        Ok(m)
    }

    /// Canonical (RFC 8785) bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // A manifest holds only strings, integers, arrays and objects: canonicalisation
        // cannot fail on it.
        stella_dsse::jcs::to_vec(self).unwrap_or_default()
    }

    /// The freshness budget in seconds.
    pub fn valid_for(&self) -> u64 {
        self.valid_for_seconds.unwrap_or(DEFAULT_VALID_FOR_SECONDS)
    }

    pub fn generated_at_time(&self) -> Result<OffsetDateTime, String> {
        parse_time(&self.generated_at).map_err(|e| format!("generatedAt: {e}"))
    }

    /// Structural checks: everything except signatures and file contents.
    pub fn validate(&self) -> Result<(), String> {
        if self.purpose != crate::PURPOSE {
            return Err(format!(
                "manifest purpose is {:?}, not \"mirror-bundle\"",
                self.purpose
            ));
        }
        for (name, v) in [
            ("bundle", &self.bundle),
            ("version", &self.version),
            ("issuer", &self.issuer),
        ] {
            if v.trim().is_empty() {
                return Err(format!("manifest field `{name}` is empty"));
            }
        }
        if self.generation > MAX_SAFE_INTEGER {
            return Err("manifest generation is too large".into());
        }
        self.generated_at_time()?;
        match (self.kind, &self.base) {
            (Kind::Full, Some(_)) => return Err("a full bundle cannot name a base".into()),
            (Kind::Thin, None) => return Err("a thin bundle must name its base".into()),
            (Kind::Full, None) if !self.removed.is_empty() => {
                return Err("a full bundle cannot list removed files".into())
            }
            (Kind::Thin, Some(b)) => {
                if Digest::parse(&b.manifest_digest).ok().is_none() {
                    return Err(format!(
                        "base manifestDigest {:?} is not sha256:<64 hex>",
                        b.manifest_digest
                    ));
                }
                if b.generation >= self.generation {
                    return Err(format!(
                        "a thin bundle of generation {} cannot update generation {}",
                        self.generation, b.generation
                    ));
                }
            }
            _ => {}
        }
        for (i, f) in self.files.iter().enumerate() {
            f.check()?;
            if crate::names::is_metadata(&f.path) {
                return Err(format!(
                    "file {} is a metadata name and cannot be listed",
                    f.path
                ));
            }
            if i > 0 && self.files[i - 1].path.as_bytes() >= f.path.as_bytes() {
                return Err(format!(
                    "files are not sorted by path or repeat a path (at {})",
                    f.path
                ));
            }
        }
        // A path that is a file cannot also be a folder of another file.
        for w in self.files.windows(2) {
            if w[1].path.starts_with(&w[0].path) && w[1].path.as_bytes()[w[0].path.len()] == b'/' {
                return Err(format!(
                    "file {} is also a folder of {}",
                    w[0].path, w[1].path
                ));
            }
        }
        for img in &self.images {
            if Digest::parse(&img.digest).ok().is_none() {
                return Err(format!(
                    "image {}: digest {:?} is not sha256:<64 hex>",
                    img.reference, img.digest
                ));
            }
        }
        for (i, r) in self.removed.iter().enumerate() {
            BundlePath::new(r).map_err(|e| format!("removed path: {e}"))?;
            if i > 0 && self.removed[i - 1].as_bytes() >= r.as_bytes() {
                return Err("removed paths are not sorted or repeat".into());
            }
            if self.file(r).is_some() {
                return Err(format!("{r} is listed both as a file and as removed"));
            }
        }
        if !self.checksums.is_empty() {
            let names: Vec<&str> = self.checksums.iter().map(|c| c.path.as_str()).collect();
            if names != [crate::names::SUMS, crate::names::SUMS_DSSE] {
                return Err(format!(
                    "checksums must list exactly SHA256SUMS and SHA256SUMS.dsse, found {names:?}"
                ));
            }
            for c in &self.checksums {
                if crate::hash::parse_hex(&c.sha256).is_none() {
                    return Err(format!("checksums: {} has a malformed sha256", c.path));
                }
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

    /// `SHA256SUMS` text for the listed files: `sha256sum` format, sorted, LF.
    pub fn sha256sums(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.files.len() * 100);
        for f in &self.files {
            out.extend_from_slice(f.sha256.as_bytes());
            out.extend_from_slice(b"  ");
            out.extend_from_slice(f.path.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            bundle: "b".into(),
            version: "1".into(),
            generation: 1,
            kind: Kind::Full,
            base: None,
            generated_at: "2025-01-01T00:00:00.000Z".into(),
            valid_for_seconds: None,
            issuer: "me".into(),
            purpose: "mirror-bundle".into(),
            files: vec![
                FileEntry {
                    path: "a".into(),
                    size: 1,
                    sha256: "0".repeat(64),
                    media_type: "text/plain".into(),
                },
                FileEntry {
                    path: "b/c".into(),
                    size: 2,
                    sha256: "1".repeat(64),
                    media_type: "text/plain".into(),
                },
            ],
            images: vec![],
            removed: vec![],
            checksums: vec![],
        }
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
        assert!(m.validate().unwrap_err().contains("not sorted"));
        let mut m = sample();
        m.files[1].path = "../x".into();
        assert!(m.validate().unwrap_err().contains("traversal"));
        let mut m = sample();
        m.purpose = "attestation".into();
        assert!(m.validate().unwrap_err().contains("purpose"));
        let mut m = sample();
        m.files[1].path = "a/b".into();
        assert!(m.validate().unwrap_err().contains("also a folder"));
        let mut m = sample();
        m.files[0].path = "manifest.json".into();
        assert!(m.validate().is_err());
        let bytes = br#"{"bundle":"b","bundle":"c"}"#;
        assert!(Manifest::from_json(bytes).unwrap_err().contains("JSON"));
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_canonical_json()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(Manifest::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn time_format() {
        let t = parse_time("2025-12-06T10:00:01.5+01:00").unwrap();
        assert_eq!(format_time(t), "2025-12-06T09:00:01.500Z");
    }
}
