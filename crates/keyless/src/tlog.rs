//! Rekor v1 transparency-log entries: what is proposed (`hashedrekord` 0.0.1 for message
//! signatures, `dsse` 0.0.1 for envelopes), what comes back (body, integrated time, log id
//! and index, SET, inclusion proof with checkpoint), and its form in a bundle
//! (`verificationMaterial.tlogEntries[]`).

use base64::Engine as _;
use serde_json::{json, Value};
use stella_dsse::Envelope;

use crate::UpstreamFuture;

/// What to log.
#[derive(Debug, Clone, Copy)]
pub enum Proposal<'a> {
    /// A message signature over an artifact with this SHA-256.
    HashedRekord {
        sha256: &'a [u8; 32],
        signature: &'a [u8],
        certificate_der: &'a [u8],
    },
    /// A DSSE envelope (one signature).
    Dsse {
        envelope: &'a Envelope,
        certificate_der: &'a [u8],
    },
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn cert_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

impl Proposal<'_> {
    /// The proposed entry as Rekor's `POST /api/v1/log/entries` takes it.
    pub fn to_json(&self) -> Value {
        match self {
            Proposal::HashedRekord {
                sha256,
                signature,
                certificate_der,
            } => json!({
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": stella_keys::hex(&sha256[..])}},
                    "signature": {
                        "content": b64(signature),
                        "publicKey": {"content": b64(cert_pem(certificate_der).as_bytes())}
                    }
                }
            }),
            Proposal::Dsse {
                envelope,
                certificate_der,
            } => json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "proposedContent": {
                        "envelope": envelope.to_value().to_string(),
                        "verifiers": [b64(cert_pem(certificate_der).as_bytes())]
                    }
                }
            }),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Proposal::HashedRekord { .. } => "hashedrekord",
            Proposal::Dsse { .. } => "dsse",
        }
    }
}

/// An RFC 6962 inclusion proof with its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    /// The C2SP signed note.
    pub checkpoint: String,
}

/// An entry the log accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The log's base URL.
    pub url: String,
    /// Entry UUID (hex), as Rekor names it.
    pub uuid: String,
    pub log_index: u64,
    /// SHA-256 of the log's public key.
    pub log_id: Vec<u8>,
    pub integrated_time: i64,
    pub kind: String,
    pub kind_version: String,
    /// The canonicalized body.
    pub body: Vec<u8>,
    /// Signed entry timestamp (inclusion promise).
    pub set: Option<Vec<u8>>,
    pub inclusion_proof: Option<InclusionProof>,
}

impl LogEntry {
    /// The entry as a bundle `TransparencyLogEntry` (protobuf JSON: int64 as strings).
    pub fn to_bundle_json(&self) -> Value {
        let mut v = json!({
            "logIndex": self.log_index.to_string(),
            "logId": {"keyId": b64(&self.log_id)},
            "kindVersion": {"kind": self.kind, "version": self.kind_version},
            "integratedTime": self.integrated_time.to_string(),
            "canonicalizedBody": b64(&self.body),
        });
        if let Some(set) = &self.set {
            v["inclusionPromise"] = json!({"signedEntryTimestamp": b64(set)});
        }
        if let Some(p) = &self.inclusion_proof {
            v["inclusionProof"] = json!({
                "logIndex": p.log_index.to_string(),
                "rootHash": b64(&p.root_hash),
                "treeSize": p.tree_size.to_string(),
                "hashes": p.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": p.checkpoint},
            });
        }
        v
    }
}

/// Whether a log entry is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlogPolicy {
    /// The signing fails when the log cannot be reached.
    Required,
    /// The signing goes on without an entry when the log is *unavailable* (reported in the
    /// output); an entry the log refuses or that does not verify still fails.
    BestEffort,
}

/// A transparency log.
pub trait TransparencyLog: Send + Sync {
    /// Upload a proposal; the returned entry was read, not yet verified (the whole bundle is
    /// verified before it is returned).
    fn upload<'a>(&'a self, proposal: Proposal<'a>) -> UpstreamFuture<'a, LogEntry>;

    /// The log's base URL.
    fn url(&self) -> String;
}
