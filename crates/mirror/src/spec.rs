//! The bundle spec: the YAML file `stella mirror create --spec` reads.
//!
//! ```yaml
//! name: stellaops-airgap                 # bundle id (required)
//! version: 2025.10.0                     # release version (required)
//! generation: 7                          # series counter, default 1; thin updates must increase it
//! issuer: mirror-guild@stella-ops.org    # required; the signed header must agree
//! validForSeconds: 604800                # optional freshness budget (default 24 h)
//! images:
//!   - reference: registry.stella-ops.org/stellaops/authority:2025.10.0
//!     ociLayout: layouts/authority       # an OCI image layout folder
//!     refName: 2025.10.0                 # optional: which index.json entry (default: the only one)
//!   - reference: registry.stella-ops.org/stellaops/concelier:2025.10.0
//!     dockerArchive: concelier.tar       # `docker save` output (legacy or OCI form)
//!     repoTag: stellaops/concelier:2025.10.0   # optional: which image of the archive
//!   - ref: registry.stella-ops.org/stellaops/scanner:2025.10.0   # pulled from a registry
//!     platforms: [linux/amd64]           # optional filter for multi-platform indexes
//!   - ref: 127.0.0.1:5000/stellaops/notify@sha256:…              # by digest
//!     reference: registry.stella-ops.org/stellaops/notify:2025.10.0 # optional: record as
//! advisories:
//!   - path: feeds/nvd-2025-12-01.json.gz # a file → advisories/nvd-2025-12-01.json.gz
//!   - path: feeds/ghsa                   # a folder → advisories/ghsa/... (recursively)
//!     target: ghsa                       # optional name under advisories/
//! ```
//!
//! Relative paths resolve against the spec file's folder. Unknown keys are errors (a typo must
//! not silently drop an image).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IoContext as _, Result};

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("invalid spec: {0}")]
    Yaml(serde_norway::Error),
    #[error("`{0}` is empty")]
    EmptyField(&'static str),
    #[error("`name` {0:?} may hold only letters, digits, `.`, `_` and `-`")]
    Name(String),
    #[error("`generation` starts at 1")]
    GenerationZero,
    #[error("`validForSeconds` must be positive")]
    ValidForZero,
    #[error("an image needs `reference` (with `ociLayout` or `dockerArchive`) or `ref` (a registry image)")]
    ImageWithoutReference,
    #[error("an image has an empty `reference`")]
    EmptyReference,
    #[error("image {reference}: {problem}")]
    Image {
        reference: String,
        problem: ImageProblem,
    },
    #[error("image {0} is listed twice")]
    ImageTwice(String),
    #[error("advisory path {0:?} has no file name")]
    AdvisoryNoFileName(String),
    #[error("advisory target: {0}")]
    AdvisoryTarget(crate::path::PathError),
    #[error("two advisory entries map to advisories/{0}")]
    AdvisoryTwice(String),
}

impl SpecError {
    fn image(reference: String, problem: ImageProblem) -> Self {
        SpecError::Image { reference, problem }
    }
}

/// What is wrong with one image entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageProblem {
    #[error(
        "`platforms` filters registry images (`ref`); a local layout or archive is copied whole"
    )]
    PlatformsOnLocal,
    #[error("`refName`/`repoTag` are for local sources, not `ref`")]
    LocalNamesOnRef,
    #[error("`ref`: {0}")]
    Ref(Box<stella_oci::Error>),
    #[error("`platforms`: {0}")]
    Platforms(Box<stella_oci::Error>),
    #[error("`repoTag` is for `dockerArchive`; use `refName` with `ociLayout`")]
    RepoTagOnLayout,
    #[error("`refName` is for `ociLayout`; use `repoTag` with `dockerArchive`")]
    RefNameOnArchive,
    #[error("give exactly one of `ociLayout`, `dockerArchive` or `ref`")]
    NotOneSource,
}

/// A parsed spec with paths resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub version: String,
    pub generation: u64,
    pub issuer: String,
    pub valid_for_seconds: Option<u64>,
    pub images: Vec<ImageSpec>,
    pub advisories: Vec<AdvisorySpec>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry (`ref:`), pulled by tag or digest; `platforms` filters a multi-platform
    /// index (empty: every platform, the index kept whole).
    Registry {
        reference: stella_oci::Reference,
        platforms: Vec<stella_oci::Platform>,
    },
    /// An OCI image layout folder, optionally choosing an entry by `ref.name` annotation.
    OciLayout {
        dir: PathBuf,
        ref_name: Option<String>,
    },
    /// A `docker save` archive, optionally choosing an image by repo tag.
    DockerArchive {
        file: PathBuf,
        repo_tag: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The name recorded in the manifest and in `index.json` (for `ref:` images, `reference:`
    /// if given, else the `ref:` as written).
    pub reference: String,
    pub source: ImageSource,
}

#[derive(Debug, Clone)]
pub struct AdvisorySpec {
    pub path: PathBuf,
    /// Name under `advisories/`.
    pub target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    name: String,
    version: String,
    #[serde(default)]
    generation: Option<u64>,
    issuer: String,
    #[serde(default)]
    valid_for_seconds: Option<u64>,
    #[serde(default)]
    images: Vec<RawImage>,
    #[serde(default)]
    advisories: Vec<RawAdvisory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawImage {
    #[serde(default)]
    reference: Option<String>,
    #[serde(default, rename = "ref")]
    registry_ref: Option<String>,
    #[serde(default)]
    platforms: Option<Vec<String>>,
    #[serde(default)]
    oci_layout: Option<String>,
    #[serde(default)]
    ref_name: Option<String>,
    #[serde(default)]
    docker_archive: Option<String>,
    #[serde(default)]
    repo_tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdvisory {
    path: String,
    #[serde(default)]
    target: Option<String>,
}

impl Spec {
    /// Read and validate a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| Error::input(format!("{}: {e}", path.display())))
    }

    /// Parse spec text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, SpecError> {
        let raw: RawSpec = serde_norway::from_str(text).map_err(SpecError::Yaml)?;
        for (field, v) in [
            ("name", &raw.name),
            ("version", &raw.version),
            ("issuer", &raw.issuer),
        ] {
            if v.trim().is_empty() {
                return Err(SpecError::EmptyField(field));
            }
        }
        if !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(SpecError::Name(raw.name));
        }
        let generation = raw.generation.unwrap_or(1);
        if generation == 0 {
            return Err(SpecError::GenerationZero);
        }
        if raw.valid_for_seconds == Some(0) {
            return Err(SpecError::ValidForZero);
        }
        let mut images = Vec::new();
        for img in raw.images {
            let reference = match (&img.reference, &img.registry_ref) {
                (Some(r), _) => r.clone(),
                (None, Some(r)) => r.clone(),
                (None, None) => return Err(SpecError::ImageWithoutReference),
            };
            if reference.trim().is_empty() {
                return Err(SpecError::EmptyReference);
            }
            if img.platforms.is_some() && img.registry_ref.is_none() {
                return Err(SpecError::image(reference, ImageProblem::PlatformsOnLocal));
            }
            let source = match (img.oci_layout, img.docker_archive, img.registry_ref) {
                (None, None, Some(r)) => {
                    if img.ref_name.is_some() || img.repo_tag.is_some() {
                        return Err(SpecError::image(reference, ImageProblem::LocalNamesOnRef));
                    }
                    let parsed = stella_oci::Reference::parse(r.trim()).map_err(|e| {
                        SpecError::image(reference.clone(), ImageProblem::Ref(Box::new(e)))
                    })?;
                    let mut platforms = Vec::new();
                    for p in img.platforms.unwrap_or_default() {
                        let p = stella_oci::Platform::parse(p.trim()).map_err(|e| {
                            SpecError::image(
                                reference.clone(),
                                ImageProblem::Platforms(Box::new(e)),
                            )
                        })?;
                        if !platforms.contains(&p) {
                            platforms.push(p);
                        }
                    }
                    ImageSource::Registry {
                        reference: parsed,
                        platforms,
                    }
                }
                (Some(dir), None, None) => {
                    if img.repo_tag.is_some() {
                        return Err(SpecError::image(reference, ImageProblem::RepoTagOnLayout));
                    }
                    ImageSource::OciLayout {
                        dir: base.join(dir),
                        ref_name: img.ref_name,
                    }
                }
                (None, Some(file), None) => {
                    if img.ref_name.is_some() {
                        return Err(SpecError::image(reference, ImageProblem::RefNameOnArchive));
                    }
                    ImageSource::DockerArchive {
                        file: base.join(file),
                        repo_tag: img.repo_tag,
                    }
                }
                _ => {
                    return Err(SpecError::image(reference, ImageProblem::NotOneSource));
                }
            };
            if images.iter().any(|i: &ImageSpec| i.reference == reference) {
                return Err(SpecError::ImageTwice(reference));
            }
            images.push(ImageSpec { reference, source });
        }
        let mut advisories = Vec::new();
        for a in raw.advisories {
            let path = base.join(&a.path);
            let target = match a.target {
                Some(t) => t,
                None => Path::new(&a.path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| SpecError::AdvisoryNoFileName(a.path.clone()))?,
            };
            crate::BundlePath::new(&format!("advisories/{target}"))
                .map_err(SpecError::AdvisoryTarget)?;
            if advisories.iter().any(|x: &AdvisorySpec| x.target == target) {
                return Err(SpecError::AdvisoryTwice(target));
            }
            advisories.push(AdvisorySpec { path, target });
        }
        Ok(Spec {
            name: raw.name,
            version: raw.version,
            generation,
            issuer: raw.issuer,
            valid_for_seconds: raw.valid_for_seconds,
            images,
            advisories,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let text = r#"
name: stellaops-airgap
version: 2025.10.0
generation: 7
issuer: mirror-guild@stella-ops.org
validForSeconds: 604800
images:
  - reference: r/a:1
    ociLayout: layouts/a
    refName: "1"
  - reference: r/b:1
    dockerArchive: b.tar
advisories:
  - path: feeds/nvd.json.gz
  - path: feeds/ghsa
    target: gh
"#;
        let s = Spec::parse(text, Path::new("/s")).unwrap();
        assert_eq!(s.generation, 7);
        assert_eq!(
            s.images[0].source,
            ImageSource::OciLayout {
                dir: "/s/layouts/a".into(),
                ref_name: Some("1".into())
            }
        );
        assert_eq!(s.advisories[0].target, "nvd.json.gz");
        assert_eq!(s.advisories[1].target, "gh");
    }

    #[test]
    fn refuses_mistakes() {
        let base = "name: n\nversion: v\nissuer: i\n";
        assert!(Spec::parse(&format!("{base}imagez: []\n"), Path::new("."))
            .unwrap_err()
            .to_string()
            .contains("imagez"));
        let both =
            format!("{base}images:\n  - reference: r\n    ociLayout: a\n    dockerArchive: b\n");
        assert!(Spec::parse(&both, Path::new("."))
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let trav = format!("{base}advisories:\n  - path: x\n    target: ../../etc\n");
        assert!(Spec::parse(&trav, Path::new("."))
            .unwrap_err()
            .to_string()
            .contains("traversal"));
        assert!(Spec::parse("name: a/b\nversion: v\nissuer: i\n", Path::new(".")).is_err());
        let no_ref = format!("{base}images:\n  - ociLayout: a\n");
        assert!(Spec::parse(&no_ref, Path::new("."))
            .unwrap_err()
            .to_string()
            .contains("needs `reference`"));
    }

    #[test]
    fn registry_images() {
        let base = "name: n\nversion: v\nissuer: i\n";
        let d = format!("sha256:{}", "ab".repeat(32));
        let text = format!(
            "{base}images:\n  - ref: 127.0.0.1:5000/stellaops/scanner:2025.10.0\n    platforms: [linux/amd64, linux/arm64/v8]\n  - ref: 127.0.0.1:5000/x@{d}\n    reference: reg.example/x:1\n"
        );
        let s = Spec::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            s.images[0].reference,
            "127.0.0.1:5000/stellaops/scanner:2025.10.0"
        );
        match &s.images[0].source {
            ImageSource::Registry {
                reference,
                platforms,
            } => {
                assert_eq!(reference.registry(), "127.0.0.1:5000");
                assert_eq!(reference.tag(), Some("2025.10.0"));
                let p: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
                assert_eq!(p, ["linux/amd64", "linux/arm64/v8"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.images[1].reference, "reg.example/x:1");
        match &s.images[1].source {
            ImageSource::Registry { reference, .. } => {
                assert_eq!(reference.digest().map(|d| d.to_string()), Some(d.clone()))
            }
            other => panic!("{other:?}"),
        }
        for (bad, why) in [
            ("  - ref: 127.0.0.1:5000/Bad:1\n", "invalid image reference"),
            ("  - ref: r.io/a:1\n    ociLayout: x\n", "exactly one"),
            ("  - ref: r.io/a:1\n    platforms: [linux]\n", "platforms"),
            (
                "  - reference: r.io/a:1\n    ociLayout: x\n    platforms: [linux/amd64]\n",
                "filters registry images",
            ),
            ("  - ref: r.io/a:1\n    refName: x\n", "local sources"),
            ("  - ref: r.io/a:1\n  - ref: r.io/a:1\n", "listed twice"),
        ] {
            let e = Spec::parse(&format!("{base}images:\n{bad}"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
