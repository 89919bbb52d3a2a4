//! The Sigstore bundle (v0.3, `application/vnd.dev.sigstore.bundle.v0.3+json`) as interchange
//! form for one DSSE-signed statement: the envelope (exactly one signature), its verification
//! material (a public-key hint, or the leaf certificate — v0.3 carries no chain), and optional
//! transparency-log entries and RFC 3161 timestamps. Older media types (v0.1, v0.2) are read,
//! with an `x509CertificateChain` reduced to its leaf; we always write v0.3.

use serde_json::{json, Value};

use crate::b64;
use crate::envelope::{Envelope, EnvelopeError};

pub const BUNDLE_MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const READABLE_MEDIA_TYPES: &[&str] = &[
    BUNDLE_MEDIA_TYPE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
/// Default upper bound for a bundle document (32 MiB).
pub(crate) const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("bundle is {size} bytes, above the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed Sigstore bundle: {0}")]
    Json(#[from] crate::jcs::JcsError),
    #[error("unsupported bundle mediaType {0:?}")]
    MediaType(String),
    #[error("malformed Sigstore bundle: {0}")]
    Structure(String),
    #[error("malformed Sigstore bundle: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("a v0.3 bundle carries exactly one signature; this envelope has {0}")]
    SignatureCount(usize),
    #[error("malformed Sigstore bundle: field `{field}`: {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: b64::Base64Error,
    },
}

/// Who signed: a public key named by a hint, or a (short-lived) leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationMaterial {
    PublicKey { hint: String },
    Certificate { der: Vec<u8> },
}

/// A parsed, structurally valid Sigstore bundle carrying a DSSE envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub media_type: String,
    pub material: VerificationMaterial,
    /// Transparency log entries, kept as JSON (verified by the online tooling, not here).
    pub tlog_entries: Vec<Value>,
    /// DER-encoded RFC 3161 timestamp responses.
    pub rfc3161_timestamps: Vec<Vec<u8>>,
    pub envelope: Envelope,
}

impl Bundle {
    /// A v0.3 bundle around a single-signature envelope.
    pub fn new(envelope: Envelope, material: VerificationMaterial) -> Result<Self, BundleError> {
        if envelope.signatures.len() != 1 {
            return Err(BundleError::SignatureCount(envelope.signatures.len()));
        }
        Ok(Bundle {
            media_type: BUNDLE_MEDIA_TYPE_V03.to_string(),
            material,
            tlog_entries: Vec::new(),
            rfc3161_timestamps: Vec::new(),
            envelope,
        })
    }

    /// Parse a bundle document (strict JSON, size-bounded).
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                size: bytes.len(),
                limit: MAX_BUNDLE_BYTES,
            });
        }
        let v = crate::jcs::parse_strict(bytes)?;
        Self::from_value(&v)
    }

    /// Validate a bundle held as JSON.
    pub fn from_value(v: &Value) -> Result<Self, BundleError> {
        let st = |m: &str| BundleError::Structure(m.to_string());
        let media_type = v
            .get("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| st("missing `mediaType`"))?;
        if !READABLE_MEDIA_TYPES.contains(&media_type) {
            return Err(BundleError::MediaType(media_type.to_string()));
        }
        let vm = v
            .get("verificationMaterial")
            .and_then(Value::as_object)
            .ok_or_else(|| st("missing `verificationMaterial`"))?;
        let raw_bytes = |obj: &Value, field: &'static str| -> Result<Vec<u8>, BundleError> {
            let text = obj
                .get("rawBytes")
                .and_then(Value::as_str)
                .ok_or_else(|| BundleError::Structure(format!("`{field}.rawBytes` missing")))?;
            b64::decode(text).map_err(|source| BundleError::Base64 { field, source })
        };
        let material = if let Some(pk) = vm.get("publicKey") {
            let hint = pk
                .get("hint")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            VerificationMaterial::PublicKey { hint }
        } else if let Some(cert) = vm.get("certificate") {
            VerificationMaterial::Certificate {
                der: raw_bytes(cert, "certificate")?,
            }
        } else if let Some(chain) = vm.get("x509CertificateChain") {
            let leaf = chain
                .get("certificates")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .ok_or_else(|| st("`x509CertificateChain` has no certificate"))?;
            VerificationMaterial::Certificate {
                der: raw_bytes(leaf, "x509CertificateChain")?,
            }
        } else {
            return Err(st("`verificationMaterial` has no publicKey or certificate"));
        };
        let tlog_entries = match vm.get("tlogEntries") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(st("`tlogEntries` is not an array")),
        };
        let mut rfc3161_timestamps = Vec::new();
        if let Some(tvd) = vm.get("timestampVerificationData") {
            if let Some(list) = tvd.get("rfc3161Timestamps") {
                let list = list
                    .as_array()
                    .ok_or_else(|| st("`rfc3161Timestamps` is not an array"))?;
                for ts in list {
                    let text = ts
                        .get("signedTimestamp")
                        .and_then(Value::as_str)
                        .ok_or_else(|| st("timestamp without `signedTimestamp`"))?;
                    rfc3161_timestamps.push(b64::decode(text).map_err(|source| {
                        BundleError::Base64 {
                            field: "signedTimestamp",
                            source,
                        }
                    })?);
                }
            }
        }
        let env = v
            .get("dsseEnvelope")
            .ok_or_else(|| st("no `dsseEnvelope` (message-signature bundles are not supported)"))?;
        let envelope = Envelope::from_value(env)?;
        if media_type == BUNDLE_MEDIA_TYPE_V03 && envelope.signatures.len() != 1 {
            return Err(BundleError::SignatureCount(envelope.signatures.len()));
        }
        Ok(Bundle {
            media_type: media_type.to_string(),
            material,
            tlog_entries,
            rfc3161_timestamps,
            envelope,
        })
    }

    /// The bundle as JSON (v0.3 layout; base64 standard and padded).
    pub fn to_value(&self) -> Value {
        let material = match &self.material {
            VerificationMaterial::PublicKey { hint } => json!({"publicKey": {"hint": hint}}),
            VerificationMaterial::Certificate { der } => {
                json!({"certificate": {"rawBytes": b64::encode(der)}})
            }
        };
        let mut vm = material;
        if let Some(obj) = vm.as_object_mut() {
            obj.insert(
                "tlogEntries".into(),
                Value::Array(self.tlog_entries.clone()),
            );
            obj.insert(
                "timestampVerificationData".into(),
                json!({"rfc3161Timestamps": self.rfc3161_timestamps.iter()
                    .map(|t| json!({"signedTimestamp": b64::encode(t)})).collect::<Vec<_>>()}),
            );
        }
        json!({
            "mediaType": self.media_type,
            "verificationMaterial": vm,
            "dsseEnvelope": self.envelope.to_value(),
        })
    }

    /// Compact JSON bytes of [`Bundle::to_value`].
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

/// Does this JSON document look like a Sigstore bundle (rather than a bare envelope)?
pub fn looks_like_bundle(v: &Value) -> bool {
    v.get("mediaType").is_some() && v.get("verificationMaterial").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Signature;

    fn env(n: usize) -> Envelope {
        Envelope {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: b"{}".to_vec(),
            signatures: (0..n)
                .map(|i| Signature {
                    keyid: format!("k{i}"),
                    sig: vec![i as u8; 3],
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_public_key_and_certificate() {
        for material in [
            VerificationMaterial::PublicKey {
                hint: "sha256:ab".into(),
            },
            VerificationMaterial::Certificate {
                der: vec![0x30, 0x03, 1, 2, 3],
            },
        ] {
            let mut b = Bundle::new(env(1), material).unwrap();
            b.rfc3161_timestamps.push(vec![9, 9]);
            let json = b.to_json();
            let back = Bundle::from_json(&json).unwrap();
            assert_eq!(back, b);
        }
    }

    #[test]
    fn refuses_bad_bundles() {
        assert!(matches!(
            Bundle::new(
                env(2),
                VerificationMaterial::PublicKey {
                    hint: String::new()
                }
            ),
            Err(BundleError::SignatureCount(2))
        ));
        let good = Bundle::new(env(1), VerificationMaterial::PublicKey { hint: "h".into() })
            .unwrap()
            .to_value();
        let mut v = good.clone();
        v["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v9+json");
        assert!(matches!(
            Bundle::from_value(&v),
            Err(BundleError::MediaType(_))
        ));
        let mut v = good.clone();
        v["dsseEnvelope"]["signatures"] = json!([]);
        assert!(matches!(
            Bundle::from_value(&v),
            Err(BundleError::SignatureCount(0))
        ));
        let mut v = good.clone();
        v["verificationMaterial"] = json!({});
        assert!(Bundle::from_value(&v).is_err());
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("dsseEnvelope");
        assert!(Bundle::from_value(&v)
            .unwrap_err()
            .to_string()
            .contains("dsseEnvelope"));
        let mut v = good;
        v["verificationMaterial"] = json!({"certificate": {"rawBytes": "!!"}});
        assert!(matches!(
            Bundle::from_value(&v),
            Err(BundleError::Base64 { .. })
        ));
        assert!(Bundle::from_json(b"{\"mediaType\":").is_err());
    }

    #[test]
    fn reads_v02_chain_leaf() {
        let mut v = Bundle::new(env(1), VerificationMaterial::PublicKey { hint: "h".into() })
            .unwrap()
            .to_value();
        v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.2");
        v["verificationMaterial"] = json!({"x509CertificateChain": {"certificates": [
            {"rawBytes": b64::encode(b"leaf")}, {"rawBytes": b64::encode(b"ca")}]}});
        let b = Bundle::from_value(&v).unwrap();
        assert_eq!(
            b.material,
            VerificationMaterial::Certificate {
                der: b"leaf".to_vec()
            }
        );
    }
}
