//! Referrers: artifacts (signatures, attestations) that point at an image through their
//! `subject`.
//!
//! Reading ([`list_referrers`]) uses `GET /v2/<name>/referrers/<digest>` and falls back, when
//! the registry has no referrers API (404 — distribution 2.8 is one), to the OCI 1.1 tag
//! schema: an index tagged `sha256-<hex>` listing the referrers. cosign's legacy signatures
//! live under a third name, `sha256-<hex>.sig` ([`cosign_signature_manifest`]).
//!
//! Writing ([`attach_artifact`]) pushes an OCI 1.1 artifact manifest (`artifactType`, empty
//! config, one layer, `subject`). A registry that indexes referrers itself says so with the
//! `OCI-Subject` response header; otherwise we keep the `sha256-<hex>` index current by
//! read-modify-write, re-reading afterwards to catch a concurrent writer (and merging again),
//! and pruning entries whose manifests no longer exist.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::client::Client;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::media::{Descriptor, Document, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use crate::reference::Reference;

/// The media type of cosign's legacy signature layers.
pub(crate) const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a legacy cosign signature (base64).
pub(crate) const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Where a referrer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrerSource {
    /// `GET /v2/<name>/referrers/<digest>`.
    ReferrersApi,
    /// The OCI 1.1 tag schema (`sha256-<hex>` index).
    TagSchema,
    /// cosign's legacy `sha256-<hex>.sig` tag.
    CosignTag,
}

impl std::fmt::Display for ReferrerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferrerSource::ReferrersApi => "referrers API",
            ReferrerSource::TagSchema => "referrers tag schema",
            ReferrerSource::CosignTag => "cosign .sig tag",
        })
    }
}

/// The referrers of a subject and where the list came from.
#[derive(Debug, Clone)]
pub struct Referrers {
    pub source: ReferrerSource,
    pub descriptors: Vec<Descriptor>,
}

/// List the referrers of `subject` in `repo` (optionally only of one `artifact_type`).
pub async fn list_referrers(
    client: &Client,
    repo: &Reference,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Referrers> {
    let what = format!("referrers of {subject} in {}", repo.name());
    let (source, list) = match client.referrers_api(repo, subject, artifact_type).await? {
        Some(bytes) => {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::protocol(repo.registry(), format!("{what}: {e}")))?;
            (ReferrerSource::ReferrersApi, parse_entries(&v, &what)?)
        }
        None => match fallback_index(client, repo, subject).await? {
            Some(doc) => (ReferrerSource::TagSchema, doc.children(&what)?),
            None => (ReferrerSource::TagSchema, Vec::new()),
        },
    };
    let descriptors = list
        .into_iter()
        .filter(|d| artifact_type.is_none_or(|a| d.artifact_type.as_deref() == Some(a)))
        .collect();
    Ok(Referrers {
        source,
        descriptors,
    })
}

fn parse_entries(v: &Value, what: &str) -> Result<Vec<Descriptor>> {
    v.get("manifests")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|e| Descriptor::from_value(e, what)).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// The `sha256-<hex>` index, if any. A tag of that name holding something else is refused.
async fn fallback_index(
    client: &Client,
    repo: &Reference,
    subject: &Digest,
) -> Result<Option<Document>> {
    let tag = repo.with_tag(&subject.tag_form())?;
    match client.fetch_manifest(&tag).await {
        Ok(doc) if doc.is_index() => Ok(Some(doc)),
        Ok(doc) => Err(Error::Integrity(format!(
            "{tag} should be the referrers index of {subject} but is a {}",
            doc.media_type
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// cosign's legacy signature manifest (`sha256-<hex>.sig`), if any.
pub(crate) async fn cosign_signature_manifest(
    client: &Client,
    repo: &Reference,
    subject: &Digest,
) -> Result<Option<Document>> {
    let tag = repo.with_tag(&format!("{}.sig", subject.tag_form()))?;
    match client.fetch_manifest(&tag).await {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`attach_artifact`] pushed.
#[derive(Debug, Clone)]
pub(crate) struct Attached {
    /// The artifact manifest.
    pub manifest: Descriptor,
    /// `true` when we updated the `sha256-<hex>` fallback index (the registry did not
    /// announce `OCI-Subject`).
    pub fallback_updated: bool,
}

/// Push `blob` as an OCI 1.1 artifact referring to `subject` in `repo`.
pub(crate) async fn attach_artifact(
    client: &Client,
    repo: &Reference,
    subject: &Descriptor,
    artifact_type: &str,
    blob: &[u8],
    blob_media_type: &str,
    annotations: BTreeMap<String, String>,
) -> Result<Attached> {
    let repo = repo.clone().without_tag();
    let empty = b"{}";
    let empty_d = client.push_bytes(&repo, empty).await?;
    let blob_d = client.push_bytes(&repo, blob).await?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": empty_d.to_string(), "size": 2, "data": "e30="},
        "layers": [{"mediaType": blob_media_type, "digest": blob_d.to_string(), "size": blob.len()}],
        "subject": Descriptor::new(&subject.media_type, subject.digest, subject.size).to_value(),
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let bytes = stella_dsse::jcs::to_vec(&manifest)
        .map_err(|e| Error::Input(format!("cannot serialise the artifact manifest: {e}")))?;
    let d = Digest::of(&bytes);
    let (_, oci_subject) = client
        .put_manifest(&repo.pinned(d), &bytes, OCI_MANIFEST)
        .await?;
    let mut desc = Descriptor::new(OCI_MANIFEST, d, bytes.len() as u64);
    desc.artifact_type = Some(artifact_type.to_string());
    desc.annotations = annotations;
    let registry_indexes = oci_subject.as_deref() == Some(subject.digest.to_string().as_str());
    if !registry_indexes {
        update_fallback_index(client, &repo, &subject.digest, &desc).await?;
    }
    Ok(Attached {
        manifest: desc,
        fallback_updated: !registry_indexes,
    })
}

/// Add `entry` to the `sha256-<hex>` index of `subject` (read-modify-write, verified).
pub async fn update_fallback_index(
    client: &Client,
    repo: &Reference,
    subject: &Digest,
    entry: &Descriptor,
) -> Result<()> {
    let tag = repo.with_tag(&subject.tag_form())?;
    let what = format!("referrers index {tag}");
    for _round in 0..5 {
        let current = fallback_index(client, repo, subject).await?;
        let mut entries: Vec<Value> = Vec::new();
        if let Some(doc) = &current {
            for raw in doc.json["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let d = Descriptor::from_value(&raw, &what)?;
                if d.digest == entry.digest {
                    continue;
                }
                // Prune entries whose manifest was deleted: the index must only name content
                // the repository holds (registries verify that on upload).
                if client
                    .head_manifest(&repo.pinned(d.digest))
                    .await?
                    .is_none()
                {
                    continue;
                }
                entries.push(raw);
            }
        }
        entries.push(entry.to_value());
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let bytes = stella_dsse::jcs::to_vec(&index)
            .map_err(|e| Error::Input(format!("cannot serialise {what}: {e}")))?;
        client.put_manifest(&tag, &bytes, OCI_INDEX).await?;
        // Another writer may have replaced the index between our read and write: check.
        if let Some(doc) = fallback_index(client, repo, subject).await? {
            if doc
                .children(&what)?
                .iter()
                .any(|c| c.digest == entry.digest)
            {
                return Ok(());
            }
        }
    }
    Err(Error::protocol(
        repo.registry(),
        format!("{what} kept changing under us; the referrer is pushed but not listed"),
    ))
}
