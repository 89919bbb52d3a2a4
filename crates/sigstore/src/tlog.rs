//! Rekor v1 transparency log entries, checked offline.
//!
//! For each entry, in this order (each failure its own [`VerifyError`] variant):
//! 1. **Log**: the log id names a log of the trusted root whose key is valid at the
//!    integrated time ([`VerifyError::UnknownLog`], [`VerifyError::LogKeyNotValid`]); for a
//!    Rekor v2 entry (no integrated time), at every verified RFC 3161 timestamp time
//!    ([`VerifyError::LogKeyNotValidAtTimestamp`]).
//! 2. **Body**: `canonicalizedBody` is decoded and must describe this bundle
//!    ([`VerifyError::Body`]): `hashedrekord` 0.0.1 (artifact digest, signature, certificate
//!    or key), `dsse` 0.0.1 (payload hash, the one signature and its verifier), `intoto`
//!    0.0.2 (payload hash, the signature and its key); Rekor v2 `hashedrekord` 0.0.2 and
//!    `dsse` 0.0.2 (the same facts, DER verifiers).
//!
//! Rekor v2 (tlog-tiles) entries have no integrated time and no SET: they are proven by the
//! inclusion proof and checkpoint alone (an Ed25519 signed note; key hint = the first 4 bytes
//! of the log id), and the signing time must come from an RFC 3161 timestamp.
//! 3. **SET** (inclusion promise): an ECDSA signature by the log key over the canonical JSON
//!    `{"body","integratedTime","logID","logIndex"}` ([`VerifyError::Set`]). A verified SET
//!    makes the integrated time a verified signing time.
//! 4. **Inclusion proof** (RFC 6962 §2.1.1, RFC 9162 §2.1.3.2): the audit path from the leaf
//!    hash `SHA-256(0x00 || body)` must give the proof's root hash
//!    ([`VerifyError::InclusionProof`]); the checkpoint (a C2SP signed note) must be signed by
//!    the log (key hint = the first 4 bytes of the log id) and state the same tree size and
//!    root hash ([`VerifyError::Checkpoint`]).

use serde_json::Value;
use time::OffsetDateTime;

use crate::bundle::{Bundle, Content, HashAlgorithm, TlogEntry};
use crate::error::VerifyError;
use crate::key::hex;
use crate::trust::{LogInstance, TrustedRoot};

/// What an entry must be bound to: the signer's certificate or key (SPKI/certificate DER).
pub(crate) struct Signer<'a> {
    /// DER of the leaf certificate, or of the SubjectPublicKeyInfo for key-signed bundles.
    pub der: &'a [u8],
    pub is_certificate: bool,
}

/// An entry that verified.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedEntry {
    pub log_url: String,
    pub log_index: u64,
    /// The integrated time, when its SET verified (then it is a verified signing time).
    pub integrated_time: Option<OffsetDateTime>,
    pub set_verified: bool,
    pub inclusion_proof_verified: bool,
}

/// Verify one entry of `bundle` (index `index`).
pub(crate) fn verify_entry(
    bundle: &Bundle,
    index: usize,
    entry: &TlogEntry,
    signer: &Signer<'_>,
    root: &TrustedRoot,
    timestamp_times: &[OffsetDateTime],
) -> Result<VerifiedEntry, VerifyError> {
    let log_id_text = crate::key::hex(&entry.log_id);
    let log = root
        .tlogs
        .iter()
        .find(|l| l.log_id == entry.log_id)
        .ok_or_else(|| VerifyError::UnknownLog {
            index,
            log_id: log_id_text.clone(),
        })?;
    let integrated = entry
        .integrated_time
        .map(|t| {
            OffsetDateTime::from_unix_timestamp(t).map_err(|_| VerifyError::UnsupportedEntry {
                index,
                reason: format!("integrated time {t} is out of range"),
            })
        })
        .transpose()?;
    match integrated {
        Some(t) => {
            if !log.valid_for.contains(t) {
                return Err(VerifyError::LogKeyNotValid {
                    index,
                    log_id: log_id_text,
                    time: stella_x509::format_time(t),
                });
            }
        }
        // Rekor v2 (no integrated time): the log key must be valid at every verified
        // timestamp time, never judged by the wall clock.
        None => {
            if let Some(t) = timestamp_times
                .iter()
                .find(|t| !log.valid_for.contains(**t))
            {
                return Err(VerifyError::LogKeyNotValidAtTimestamp {
                    index,
                    log_id: log_id_text,
                    time: stella_x509::format_time(*t),
                });
            }
        }
    }
    check_body(bundle, entry, signer).map_err(|e| VerifyError::Body {
        index,
        reason: e.to_string(),
    })?;

    let mut set_verified = false;
    if let Some(set) = &entry.inclusion_promise {
        let t = entry.integrated_time.ok_or_else(|| VerifyError::Set {
            index,
            reason: "the entry has an inclusion promise but no integrated time".into(),
        })?;
        let payload = set_payload(entry, t);
        if !log.key.verify(&payload, set) {
            return Err(VerifyError::Set {
                index,
                reason: format!("not signed by the log key of {}", log.base_url),
            });
        }
        set_verified = true;
    }
    let mut proof_verified = false;
    if let Some(p) = &entry.inclusion_proof {
        let leaf = leaf_hash(&entry.canonicalized_body);
        let root_hash = root_from_inclusion_proof(p.log_index, p.tree_size, &leaf, &p.hashes)
            .map_err(|e| VerifyError::InclusionProof {
                index,
                reason: e.to_string(),
            })?;
        if root_hash.as_slice() != p.root_hash.as_slice() {
            return Err(VerifyError::InclusionProof {
                index,
                reason: format!(
                    "the audit path gives root {}, the proof states {}",
                    hex(&root_hash),
                    hex(&p.root_hash)
                ),
            });
        }
        let cp = verify_checkpoint(&p.checkpoint, log).map_err(|e| VerifyError::Checkpoint {
            index,
            reason: e.to_string(),
        })?;
        if cp.size != p.tree_size || cp.root_hash != p.root_hash {
            return Err(VerifyError::Checkpoint {
                index,
                reason: format!(
                    "the checkpoint states tree size {} root {}, the proof tree size {} root {}",
                    cp.size,
                    hex(&cp.root_hash),
                    p.tree_size,
                    hex(&p.root_hash)
                ),
            });
        }
        proof_verified = true;
    }
    if !set_verified && !proof_verified {
        return Err(VerifyError::UnsupportedEntry {
            index,
            reason: "neither an inclusion promise nor an inclusion proof".into(),
        });
    }
    Ok(VerifiedEntry {
        log_url: log.base_url.clone(),
        log_index: entry.log_index,
        integrated_time: if set_verified { integrated } else { None },
        set_verified,
        inclusion_proof_verified: proof_verified,
    })
}

/// The canonical JSON a SET signs (keys in lexicographic order, as Rekor's canonicalizer).
fn set_payload(entry: &TlogEntry, integrated_time: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.canonicalized_body.len() * 4 / 3 + 128);
    out.extend_from_slice(b"{\"body\":\"");
    stella_dsse::b64::encode_into_vec(&entry.canonicalized_body, &mut out);
    out.extend_from_slice(
        format!(
            "\",\"integratedTime\":{integrated_time},\"logID\":\"{}\",\"logIndex\":{}}}",
            hex(&entry.log_id),
            entry.log_index
        )
        .as_bytes(),
    );
    out
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// RFC 6962 leaf hash.
pub(crate) fn leaf_hash(body: &[u8]) -> [u8; 32] {
    sha256(&[&[0u8], body])
}

/// The root an RFC 6962 audit path leads to (RFC 9162 §2.1.3.2).
pub(crate) fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &[u8; 32],
    proof: &[Vec<u8>],
) -> Result<[u8; 32], ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondTree { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if p.len() != 32 {
            return Err(ProofError::HashLength { len: p.len() });
        }
        if s == 0 {
            return Err(ProofError::PathTooLong);
        }
        if f & 1 == 1 || f == s {
            r = sha256(&[&[1u8], p, &r]);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = sha256(&[&[1u8], &r, p]);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::PathTooShort);
    }
    Ok(r)
}

/// Why an RFC 6962 inclusion proof does not compute a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexBeyondTree { index: u64, size: u64 },
    #[error("a proof hash is {len} bytes, not 32")]
    HashLength { len: usize },
    #[error("the audit path is longer than the tree allows")]
    PathTooLong,
    #[error("the audit path is shorter than the tree requires")]
    PathTooShort,
}

/// Why a C2SP signed-note checkpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CheckpointError {
    #[error("not a signed note (no blank line before the signatures)")]
    NotASignedNote,
    #[error("log id shorter than 4 bytes")]
    ShortLogId,
    #[error("a signature line does not start with an em dash")]
    NoEmDash,
    #[error("a signature line has no signature")]
    NoSignatureOnLine,
    #[error("signature: {0}")]
    SignatureBase64(String),
    #[error("the note has no signature")]
    Unsigned,
    #[error("no signature by the log key of {log} (key hint {hint})")]
    NotSignedByLog { log: String, hint: String },
    #[error("no origin line")]
    NoOrigin,
    #[error("the tree size line is not a number")]
    TreeSize,
    #[error("the root hash line is not a base64 SHA-256")]
    RootHash,
}

/// A verified checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root_hash: Vec<u8>,
}

/// Verify a C2SP signed note checkpoint against the log's key and read it.
pub(crate) fn verify_checkpoint(
    note: &str,
    log: &LogInstance,
) -> Result<Checkpoint, CheckpointError> {
    let (body, sigs) = note
        .split_once("\n\n")
        .ok_or(CheckpointError::NotASignedNote)?;
    let body = format!("{body}\n");
    let hint = log.log_id.get(..4).ok_or(CheckpointError::ShortLogId)?;
    let mut lines = 0;
    let mut verified = false;
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        lines += 1;
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(CheckpointError::NoEmDash)?;
        let (_name, b64) = rest
            .rsplit_once(' ')
            .ok_or(CheckpointError::NoSignatureOnLine)?;
        let raw = stella_dsse::b64::decode(b64)
            .map_err(|e| CheckpointError::SignatureBase64(e.to_string()))?;
        if raw.len() < 5 || &raw[..4] != hint {
            continue;
        }
        if log.key.verify(body.as_bytes(), &raw[4..]) {
            verified = true;
        }
    }
    if lines == 0 {
        return Err(CheckpointError::Unsigned);
    }
    if !verified {
        return Err(CheckpointError::NotSignedByLog {
            log: log.base_url.clone(),
            hint: hex(hint),
        });
    }
    let mut it = body.lines();
    let origin = it.next().ok_or(CheckpointError::NoOrigin)?.to_string();
    let size = it
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CheckpointError::TreeSize)?;
    let root_hash = it
        .next()
        .and_then(|s| stella_dsse::b64::decode(s).ok())
        .filter(|h| h.len() == 32)
        .ok_or(CheckpointError::RootHash)?;
    Ok(Checkpoint {
        origin,
        size,
        root_hash,
    })
}

/// How a transparency-log entry's `canonicalizedBody` fails to describe the bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BodyError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not PEM: {0}")]
    NotPem(String),
    #[error("no `{0}`")]
    Missing(String),
    #[error("`{0}` is not a string")]
    NotString(String),
    #[error("`{0}` is not an array")]
    NotArray(&'static str),
    #[error("`{0}`: {1}")]
    Base64(String, String),
    #[error("`sig` is not base64 of a base64 signature")]
    DoubleBase64Sig,
    #[error("the body is {body}, the entry says {entry}")]
    KindMismatch { body: String, entry: String },
    #[error(
        "a {kind} entry cannot describe a message signature (expected hashedrekord 0.0.1 or 0.0.2)"
    )]
    WrongKindForMessage { kind: String },
    #[error("a {kind} entry cannot describe a DSSE envelope (expected dsse 0.0.1/0.0.2 or intoto 0.0.2)")]
    WrongKindForDsse { kind: String },
    #[error("the bundle has no message digest to match the entry's")]
    NoMessageDigest,
    /// `entry` is empty or starts with a space (the v0.0.1 body names its digest).
    #[error("the entry's artifact digest{entry} differs from the bundle's {bundle}")]
    ArtifactDigest { entry: String, bundle: String },
    #[error("the entry's signature differs from the bundle's")]
    SignatureDiffersFromBundle,
    #[error("the entry's signature differs from the envelope's")]
    SignatureDiffersFromEnvelope,
    #[error("the entry's payload hash differs from the envelope's payload")]
    PayloadHash,
    #[error("the entry has {0} signatures, the envelope 1")]
    SignatureCount(usize),
    #[error("the entry names another certificate")]
    OtherCertificate,
    #[error("the entry names another public key")]
    OtherKey,
}

fn pem_der(text: &[u8]) -> Result<Vec<u8>, BodyError> {
    pem::parse(text)
        .map(|p| p.contents().to_vec())
        .map_err(|e| BodyError::NotPem(e.to_string()))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, BodyError> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(*p)
            .ok_or_else(|| BodyError::Missing(path.join(".")))?;
    }
    Ok(cur)
}

fn get_str<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, BodyError> {
    get(v, path)?
        .as_str()
        .ok_or_else(|| BodyError::NotString(path.join(".")))
}

fn b64(v: &Value, path: &[&str]) -> Result<Vec<u8>, BodyError> {
    stella_dsse::b64::decode(get_str(v, path)?)
        .map_err(|e| BodyError::Base64(path.join("."), e.to_string()))
}

/// Is the signer's certificate or key the one the body names (PEM)?
fn same_signer(pem_text: &[u8], signer: &Signer<'_>) -> Result<(), BodyError> {
    same_der(&pem_der(pem_text)?, signer)
}

/// A Rekor v2 `Verifier`: `x509Certificate.rawBytes` or `publicKey.rawBytes` (DER).
fn same_verifier(v: &Value, signer: &Signer<'_>) -> Result<(), BodyError> {
    let der = if signer.is_certificate {
        b64(v, &["x509Certificate", "rawBytes"])?
    } else {
        b64(v, &["publicKey", "rawBytes"])?
    };
    same_der(&der, signer)
}

/// The DER the entry names is the signer's certificate or key.
fn same_der(der: &[u8], signer: &Signer<'_>) -> Result<(), BodyError> {
    match (der == signer.der, signer.is_certificate) {
        (true, _) => Ok(()),
        (false, true) => Err(BodyError::OtherCertificate),
        (false, false) => Err(BodyError::OtherKey),
    }
}

fn check_body(bundle: &Bundle, entry: &TlogEntry, signer: &Signer<'_>) -> Result<(), BodyError> {
    let body: Value = serde_json::from_slice(&entry.canonicalized_body)
        .map_err(|e| BodyError::NotJson(e.to_string()))?;
    let kind = get_str(&body, &["kind"])?;
    let version = get_str(&body, &["apiVersion"])?;
    if kind != entry.kind || version != entry.kind_version {
        return Err(BodyError::KindMismatch {
            body: format!("{kind} {version}"),
            entry: format!("{} {}", entry.kind, entry.kind_version),
        });
    }
    match (kind, version, &bundle.content) {
        ("hashedrekord", "0.0.1", Content::MessageSignature { digest, signature }) => {
            let alg = get_str(&body, &["spec", "data", "hash", "algorithm"])?;
            let value = get_str(&body, &["spec", "data", "hash", "value"])?;
            let (dalg, d) = digest.as_ref().ok_or(BodyError::NoMessageDigest)?;
            if alg != dalg.name() || value != hex(d) {
                return Err(BodyError::ArtifactDigest {
                    entry: format!(" {alg}:{value}"),
                    bundle: format!("{}:{}", dalg.name(), hex(d)),
                });
            }
            if b64(&body, &["spec", "signature", "content"])? != *signature {
                return Err(BodyError::SignatureDiffersFromBundle);
            }
            same_signer(
                &b64(&body, &["spec", "signature", "publicKey", "content"])?,
                signer,
            )
        }
        ("dsse", "0.0.1", Content::Dsse(_) | Content::DetachedDsse(_)) => {
            let (payload_sha256, env_sig) = dsse_of(&bundle.content)?;
            let alg = get_str(&body, &["spec", "payloadHash", "algorithm"])?;
            let value = get_str(&body, &["spec", "payloadHash", "value"])?;
            if alg != "sha256" || value != hex(&payload_sha256) {
                return Err(BodyError::PayloadHash);
            }
            let sigs = get(&body, &["spec", "signatures"])?
                .as_array()
                .ok_or(BodyError::NotArray("spec.signatures"))?;
            let [s] = sigs.as_slice() else {
                return Err(BodyError::SignatureCount(sigs.len()));
            };
            if b64(s, &["signature"])? != env_sig {
                return Err(BodyError::SignatureDiffersFromEnvelope);
            }
            same_signer(&b64(s, &["verifier"])?, signer)
        }
        ("intoto", "0.0.2", Content::Dsse(_) | Content::DetachedDsse(_)) => {
            let (payload_sha256, env_sig) = dsse_of(&bundle.content)?;
            let alg = get_str(&body, &["spec", "content", "payloadHash", "algorithm"])?;
            let value = get_str(&body, &["spec", "content", "payloadHash", "value"])?;
            if alg != "sha256" || value != hex(&payload_sha256) {
                return Err(BodyError::PayloadHash);
            }
            let sigs = get(&body, &["spec", "content", "envelope", "signatures"])?
                .as_array()
                .ok_or(BodyError::NotArray("signatures"))?;
            let [s] = sigs.as_slice() else {
                return Err(BodyError::SignatureCount(sigs.len()));
            };
            // intoto 0.0.2 stores the signature base64-encoded twice, and the key as PEM.
            let sig_text = b64(s, &["sig"])?;
            let sig = std::str::from_utf8(&sig_text)
                .ok()
                .and_then(|t| stella_dsse::b64::decode(t).ok())
                .ok_or(BodyError::DoubleBase64Sig)?;
            if sig != env_sig {
                return Err(BodyError::SignatureDiffersFromEnvelope);
            }
            same_signer(&b64(s, &["publicKey"])?, signer)
        }
        ("hashedrekord", "0.0.2", Content::MessageSignature { digest, signature }) => {
            let spec = get(&body, &["spec", "hashedRekordV002"])?;
            let (dalg, d) = digest.as_ref().ok_or(BodyError::NoMessageDigest)?;
            let alg = get_str(spec, &["data", "algorithm"])?;
            if HashAlgorithm::parse(alg) != Some(*dalg) || b64(spec, &["data", "digest"])? != *d {
                return Err(BodyError::ArtifactDigest {
                    entry: String::new(),
                    bundle: format!("{}:{}", dalg.name(), hex(d)),
                });
            }
            if b64(spec, &["signature", "content"])? != *signature {
                return Err(BodyError::SignatureDiffersFromBundle);
            }
            same_verifier(get(spec, &["signature", "verifier"])?, signer)
        }
        ("dsse", "0.0.2", Content::Dsse(_) | Content::DetachedDsse(_)) => {
            let (payload_sha256, env_sig) = dsse_of(&bundle.content)?;
            let spec = get(&body, &["spec", "dsseV002"])?;
            let alg = get_str(spec, &["payloadHash", "algorithm"])?;
            if alg != "SHA2_256" || b64(spec, &["payloadHash", "digest"])? != payload_sha256 {
                return Err(BodyError::PayloadHash);
            }
            let sigs = get(spec, &["signatures"])?
                .as_array()
                .ok_or(BodyError::NotArray("signatures"))?;
            let [s] = sigs.as_slice() else {
                return Err(BodyError::SignatureCount(sigs.len()));
            };
            if b64(s, &["content"])? != env_sig {
                return Err(BodyError::SignatureDiffersFromEnvelope);
            }
            same_verifier(get(s, &["verifier"])?, signer)
        }
        (k, v, Content::MessageSignature { .. }) => Err(BodyError::WrongKindForMessage {
            kind: format!("{k} {v}"),
        }),
        (k, v, Content::Dsse(_) | Content::DetachedDsse(_)) => Err(BodyError::WrongKindForDsse {
            kind: format!("{k} {v}"),
        }),
    }
}

/// The payload SHA-256 and the signature of a DSSE content.
fn dsse_of(content: &Content) -> Result<([u8; 32], &[u8]), BodyError> {
    content.dsse().ok_or(BodyError::PayloadHash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
        sha256(&[&[1u8], l, r])
    }

    #[test]
    fn inclusion_proofs_for_every_leaf_of_small_trees() {
        // Build trees of 1..=9 leaves the RFC 6962 way and check every audit path.
        fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let k = leaves.len().next_power_of_two() / 2;
            let k = if k == leaves.len() { k / 2 } else { k };
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
        fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
            if leaves.len() == 1 {
                return Vec::new();
            }
            let k = leaves.len().next_power_of_two() / 2;
            let k = if k == leaves.len() { k / 2 } else { k };
            if m < k {
                let mut p = path(m, &leaves[..k]);
                p.push(mth(&leaves[k..]).to_vec());
                p
            } else {
                let mut p = path(m - k, &leaves[k..]);
                p.push(mth(&leaves[..k]).to_vec());
                p
            }
        }
        for n in 1..=9usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let root = mth(&leaves);
            for m in 0..n {
                let p = path(m, &leaves);
                assert_eq!(
                    root_from_inclusion_proof(m as u64, n as u64, &leaves[m], &p).unwrap(),
                    root,
                    "n={n} m={m}"
                );
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(
                        root_from_inclusion_proof(m as u64, n as u64, &leaves[m], &bad).unwrap(),
                        root
                    );
                    assert!(
                        root_from_inclusion_proof(m as u64, n as u64, &leaves[m], &p[1..]).is_err()
                            || n == 1
                            || root_from_inclusion_proof(m as u64, n as u64, &leaves[m], &p[1..])
                                .unwrap()
                                != root
                    );
                }
            }
            assert!(root_from_inclusion_proof(n as u64, n as u64, &leaves[0], &[]).is_err());
        }
    }
}
