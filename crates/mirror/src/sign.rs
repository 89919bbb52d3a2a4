//! `sign`: check the folder against its manifest, then write `SHA256SUMS`, `SHA256SUMS.dsse`,
//! `SHA256SUMS.sig` (cosign `sign-blob` form, by the first key), record the two checksum
//! files' digests in the manifest, sign the manifest (`manifest.dsse`, one signature per key),
//! and write the detached header and `public-key.pem`; optionally stamp the signed manifest
//! with an RFC 3161 time anchor (`time-anchor.json`).
//!
//! The checksum digests live inside the signed manifest, so `SHA256SUMS` (which lists the
//! content files) is covered by the manifest signature too; `SHA256SUMS` itself cannot list
//! `manifest.json` without a digest cycle.

use std::path::{Path, PathBuf};

use stella_keys::Signer;
use time::OffsetDateTime;

use crate::error::{Error, IoContext as _, Result};
use crate::fs::write_file;
use crate::hash::{Digest, Progress};
use crate::manifest::{format_time, FileEntry, Manifest};
use crate::names;
use crate::verify::{Header, HeaderSignature};

/// What `sign` wrote.
#[derive(Debug, Clone)]
pub struct SignReport {
    pub dir: PathBuf,
    pub envelope: PathBuf,
    pub manifest_digest: Digest,
    pub key_ids: Vec<String>,
    pub files: usize,
    /// The time anchor written, if a time stamper was given.
    pub anchor: Option<crate::anchor::Anchor>,
}

/// Sign the bundle whose manifest is `manifest_path`; the envelope goes to `envelope_out`.
pub fn sign(
    manifest_path: &Path,
    envelope_out: &Path,
    signers: &[&dyn Signer],
    now: OffsetDateTime,
    progress: &dyn Progress,
) -> Result<SignReport> {
    sign_with(manifest_path, envelope_out, signers, now, None, progress)
}

/// [`sign`], then, with a time stamper, stamp the signed manifest and write
/// `time-anchor.json` (see [`crate::anchor`]). Without one, a previous anchor is removed: it
/// stamped the previous manifest.
pub fn sign_with(
    manifest_path: &Path,
    envelope_out: &Path,
    signers: &[&dyn Signer],
    now: OffsetDateTime,
    stamper: Option<&dyn crate::anchor::TimeStamper>,
    progress: &dyn Progress,
) -> Result<SignReport> {
    if signers.is_empty() {
        return Err(Error::input("give at least one --key"));
    }
    let dir = match manifest_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Each intermediate is dropped as soon as it is used: for many small files the manifest,
    // SHA256SUMS and their envelopes are the bulk of the memory.
    let mut manifest = {
        let bytes = std::fs::read(manifest_path).at(manifest_path)?;
        Manifest::from_json(&bytes)
            .map_err(|e| Error::input(format!("{}: {e}", manifest_path.display())))?
    };

    // Never sign a manifest the folder does not match.
    {
        let observed =
            crate::verify::hash_dir_content(&dir, &manifest, &Default::default(), progress)?;
        crate::verify::check_files(&manifest, &observed).map_err(|e| match e {
            Error::Verify(m) => Error::input(format!("cannot sign {}: {m}", dir.display())),
            e => e,
        })?;
    }

    let sums = manifest.sha256sums();
    write_file(&dir.join(names::SUMS), &sums)?;
    let sig = signers[0].sign(&sums)?;
    write_file(
        &dir.join(names::SUMS_SIG),
        stella_dsse::b64::encode(&sig).as_bytes(),
    )?;
    let (sums_size, sums_digest) = (sums.len() as u64, Digest::of(&sums));
    let (env_size, env_digest) = {
        let sums_env_bytes =
            stella_keys::sign_envelope(crate::SUMS_PAYLOAD_TYPE, sums, signers)?.to_json();
        write_file(&dir.join(names::SUMS_DSSE), &sums_env_bytes)?;
        (sums_env_bytes.len() as u64, Digest::of(&sums_env_bytes))
    };

    manifest.checksums = vec![
        FileEntry {
            path: names::SUMS.into(),
            size: sums_size,
            sha256: sums_digest.hex(),
            media_type: "text/plain; charset=utf-8".into(),
        },
        FileEntry {
            path: names::SUMS_DSSE.into(),
            size: env_size,
            sha256: env_digest.hex(),
            media_type: "application/vnd.dsse.envelope.v1+json".into(),
        },
    ];
    let payload = manifest.to_canonical_json();
    let (issuer, files) = (manifest.issuer.clone(), manifest.files.len());
    drop(manifest);
    write_file(manifest_path, &payload)?;
    let digest = Digest::of(&payload);
    let envelope = stella_keys::sign_envelope(crate::PAYLOAD_TYPE, payload, signers)?;
    write_file(envelope_out, &envelope.to_json())?;

    let header = Header {
        created: format_time(now),
        issuer,
        keyid: signers[0].key_id().to_string(),
        payload_sha256: digest.hex(),
        payload_type: crate::PAYLOAD_TYPE.into(),
        purpose: crate::PURPOSE.into(),
        signatures: envelope
            .signatures
            .iter()
            .map(|s| HeaderSignature {
                keyid: s.keyid.clone(),
                sig: stella_dsse::b64::encode(&s.sig),
            })
            .collect(),
        rekor_uuid: None,
        rekor_url: None,
    };
    let hpath = crate::BundlePath::new(names::HEADER)
        .map_err(Error::input)?
        .under(&dir);
    if let Some(parent) = hpath.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    let hbytes = stella_dsse::jcs::to_vec(&header).map_err(|e| Error::input(e.to_string()))?;
    write_file(&hpath, &hbytes)?;
    let pems: String = signers.iter().map(|s| s.public_key().to_pem()).collect();
    write_file(&dir.join(names::PUBLIC_KEY), pems.as_bytes())?;
    // An older time anchor is over an older manifest.
    let anchor = dir.join(names::TIME_ANCHOR);
    if anchor.exists() {
        std::fs::remove_file(&anchor).at(&anchor)?;
    }
    let anchor = match stamper {
        Some(s) => {
            let token = s.stamp(digest.as_bytes())?;
            Some(crate::anchor::write_anchor(
                &dir,
                &token,
                &s.source(),
                &envelope.payload,
            )?)
        }
        None => None,
    };
    Ok(SignReport {
        anchor,
        dir,
        envelope: envelope_out.to_path_buf(),
        manifest_digest: digest,
        key_ids: signers.iter().map(|s| s.key_id().to_string()).collect(),
        files,
    })
}
