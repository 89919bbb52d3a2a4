//! Media types, descriptors, platforms and the structure of manifests and indexes (OCI and
//! Docker v2 schema 2). Documents are kept as the registry's exact bytes; we parse them only
//! to walk their descriptors, so digests never change on the way through.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// The Sigstore bundle v0.3 media type, also the artifactType of signature referrers.
pub(crate) const SIGSTORE_BUNDLE_V03: &str = stella_dsse::BUNDLE_MEDIA_TYPE_V03;
/// The `Accept` list for manifest requests.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest or index we read (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// `index.json` annotation naming an image.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Is `mt` an index (OCI or Docker manifest list)?
pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

/// Is `mt` an image manifest (OCI or Docker v2 schema 2)?
pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub(crate) platform: Option<Platform>,
    pub(crate) annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Parse a descriptor; `what` names the document for errors.
    pub fn from_value(v: &Value, what: &str) -> Result<Self> {
        let bad = |why: String| Error::Integrity(format!("{what}: {why}"));
        let digest = v
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a descriptor has no digest".into()))?;
        let digest = Digest::parse(digest).map_err(|e| bad(e.to_string()))?;
        let size = v
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("descriptor {digest} has no size")))?;
        let media_type = v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let artifact_type = v
            .get("artifactType")
            .and_then(Value::as_str)
            .map(str::to_string);
        let platform = v.get("platform").and_then(Platform::from_value);
        let annotations = v
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Descriptor {
            media_type,
            digest,
            size,
            artifact_type,
            platform,
            annotations,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), json!(self.media_type));
        m.insert("digest".into(), json!(self.digest.to_string()));
        m.insert("size".into(), json!(self.size));
        if let Some(a) = &self.artifact_type {
            m.insert("artifactType".into(), json!(a));
        }
        if let Some(p) = &self.platform {
            m.insert("platform".into(), p.to_value());
        }
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), json!(self.annotations));
        }
        Value::Object(m)
    }
}

/// An OS/architecture pair with optional variant, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::Input(format!(
                "platform {s:?} is not os/arch[/variant] (e.g. linux/amd64)"
            ))),
        }
    }

    /// From a descriptor's `platform` object or an image config.
    pub fn from_value(v: &Value) -> Option<Self> {
        let os = v.get("os")?.as_str()?;
        let arch = v.get("architecture")?.as_str()?;
        if os.is_empty() || arch.is_empty() {
            return None;
        }
        Some(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: v
                .get("variant")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    fn to_value(&self) -> Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }

    /// Does this filter entry select `other`? A filter without variant matches any variant.
    pub(crate) fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }

    /// Buildkit's attestation manifests carry `unknown/unknown`.
    pub(crate) fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Which platforms of a multi-platform image to take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Platforms {
    /// The whole index, every platform (digest preserved).
    #[default]
    All,
    /// Only these platforms. One match: that platform's manifest. Several: a new index of the
    /// matching entries (a new digest; the source digest is reported alongside).
    Only(Vec<Platform>),
}

impl Platforms {
    /// Parse a comma-separated list; empty or `all` means every platform.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "all" {
            return Ok(Platforms::All);
        }
        Ok(Platforms::Only(
            s.split(',')
                .map(|p| Platform::parse(p.trim()))
                .collect::<Result<_>>()?,
        ))
    }

    pub(crate) fn selects(&self, p: &Platform) -> bool {
        match self {
            Platforms::All => true,
            Platforms::Only(list) => list.iter().any(|f| f.matches(p)),
        }
    }
}

/// A manifest or index as bytes plus what we learnt parsing it.
#[derive(Debug, Clone)]
pub struct Document {
    pub(crate) bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub json: Value,
}

impl Document {
    /// Parse manifest/index bytes whose digest was already checked. `declared` is the media
    /// type the registry or the parent descriptor announced (may be empty).
    pub fn parse(bytes: Vec<u8>, digest: Digest, declared: &str, what: &str) -> Result<Self> {
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Integrity(format!("{what} is not valid JSON: {e}")))?;
        if !json.is_object() {
            return Err(Error::Integrity(format!("{what} is not a JSON object")));
        }
        let inner = json
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let declared = declared.split(';').next().unwrap_or("").trim();
        if DOCKER_SCHEMA1.contains(&declared)
            || DOCKER_SCHEMA1.contains(&inner)
            || json.get("schemaVersion").and_then(Value::as_u64) == Some(1)
        {
            return Err(Error::Input(format!(
                "{what} is a Docker schema 1 manifest, which is deprecated and unsupported"
            )));
        }
        let media_type = if is_index(inner) || is_manifest(inner) {
            if !declared.is_empty()
                && (is_index(declared) || is_manifest(declared))
                && declared != inner
            {
                return Err(Error::Integrity(format!(
                    "{what} declares media type {inner} but was served as {declared}"
                )));
            }
            inner.to_string()
        } else if is_index(declared) || is_manifest(declared) {
            declared.to_string()
        } else if json.get("manifests").is_some() {
            OCI_INDEX.to_string()
        } else if json.get("layers").is_some() || json.get("config").is_some() {
            OCI_MANIFEST.to_string()
        } else {
            return Err(Error::Input(format!(
                "{what} is neither an image manifest nor an index (media type {declared:?})"
            )));
        };
        Ok(Document {
            bytes,
            media_type,
            digest,
            json,
        })
    }

    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest, self.bytes.len() as u64)
    }

    /// Index entries.
    pub fn children(&self, what: &str) -> Result<Vec<Descriptor>> {
        self.json
            .get("manifests")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| Descriptor::from_value(v, what)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// A manifest's config descriptor.
    pub fn config(&self, what: &str) -> Result<Descriptor> {
        let c = self
            .json
            .get("config")
            .ok_or_else(|| Error::Integrity(format!("{what}: manifest has no config")))?;
        Descriptor::from_value(c, what)
    }

    /// A manifest's layers.
    pub fn layers(&self, what: &str) -> Result<Vec<Descriptor>> {
        self.json
            .get("layers")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| Descriptor::from_value(v, what)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// The `subject` of a referrer manifest.
    pub fn subject(&self, what: &str) -> Result<Option<Descriptor>> {
        match self.json.get("subject") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Descriptor::from_value(v, what).map(Some),
        }
    }

    /// `artifactType`, or the config media type for artifacts that predate the field.
    pub fn artifact_type(&self) -> Option<String> {
        self.json
            .get("artifactType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                self.json
                    .get("config")
                    .and_then(|c| c.get("mediaType"))
                    .and_then(Value::as_str)
                    .filter(|m| *m != OCI_EMPTY && *m != OCI_CONFIG && *m != DOCKER_CONFIG)
                    .map(str::to_string)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let f = Platforms::parse("linux/amd64, linux/arm64/v8").unwrap();
        assert!(f.selects(&Platform::parse("linux/amd64").unwrap()));
        assert!(f.selects(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!f.selects(&Platform::parse("linux/arm64").unwrap()));
        assert!(!f.selects(&Platform::parse("linux/arm/v7").unwrap()));
        assert_eq!(Platforms::parse("all").unwrap(), Platforms::All);
        assert!(Platforms::parse("linux").is_err());
    }

    #[test]
    fn documents() {
        let d = Digest::of(b"x");
        let doc = Document::parse(
            br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
            d,
            "",
            "t",
        )
        .unwrap();
        assert_eq!(doc.media_type, OCI_INDEX);
        let err = Document::parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
                .to_vec(),
            d,
            OCI_MANIFEST,
            "t",
        )
        .unwrap_err();
        assert!(err.to_string().contains("served as"), "{err}");
        assert!(Document::parse(br#"{"schemaVersion":1}"#.to_vec(), d, "", "t").is_err());
    }
}
