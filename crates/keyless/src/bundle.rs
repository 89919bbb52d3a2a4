//! Sigstore bundle v0.3 for keyless signatures: the leaf certificate as
//! `verificationMaterial.certificate` (v0.3 has no chain: the chain is in the verifier's
//! trusted root), `timestampVerificationData.rfc3161Timestamps[].signedTimestamp` (DER
//! `TimeStampResp`), `tlogEntries`, and either a `dsseEnvelope` (one signature) or a
//! `messageSignature` (SHA-256 digest + signature, cosign `sign-blob` form). Base64 standard
//! and padded.

use base64::Engine as _;
use serde_json::{json, Value};
use stella_dsse::{Envelope, VerificationMaterial};

/// What the bundle signs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Content<'a> {
    Dsse(&'a Envelope),
    Message {
        sha256: &'a [u8; 32],
        signature: &'a [u8],
    },
}

/// The bundle as JSON.
pub(crate) fn bundle_json(
    content: Content<'_>,
    leaf_der: &[u8],
    timestamps: &[Vec<u8>],
    tlog_entries: Vec<Value>,
) -> Result<Value, stella_dsse::BundleError> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match content {
        Content::Dsse(env) => {
            let mut b = stella_dsse::Bundle::new(
                env.clone(),
                VerificationMaterial::Certificate {
                    der: leaf_der.to_vec(),
                },
            )?;
            b.tlog_entries = tlog_entries;
            b.rfc3161_timestamps = timestamps.to_vec();
            Ok(b.to_value())
        }
        Content::Message { sha256, signature } => Ok(json!({
            "mediaType": stella_dsse::BUNDLE_MEDIA_TYPE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(leaf_der)},
                "tlogEntries": tlog_entries,
                "timestampVerificationData": {
                    "rfc3161Timestamps": timestamps.iter()
                        .map(|t| json!({"signedTimestamp": b64(t)})).collect::<Vec<_>>()
                }
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha256[..])},
                "signature": b64(signature)
            }
        })),
    }
}
