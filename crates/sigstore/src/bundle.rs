//! Sigstore bundles (protobuf-specs `dev.sigstore.bundle.v1.Bundle`, JSON mapping), read
//! into checked types before any cryptography runs.
//!
//! Versions: `application/vnd.dev.sigstore.bundle+json;version=0.1`, `...;version=0.2`,
//! `application/vnd.dev.sigstore.bundle.v0.3+json` (and the transitional
//! `...bundle+json;version=0.3`). What each version requires, as the spec does: v0.1 tlog
//! entries carry an inclusion promise (SET); v0.2 and later carry an inclusion proof; v0.3 names
//! the leaf `certificate` (never an `x509CertificateChain`).
//!
//! The JSON mapping is read the way protobuf allows and no further: `bytes` fields in standard
//! or URL-safe base64, padded or not; 64-bit integers as strings or numbers; `null` as an
//! absent field. Everything else is strict: unknown fields, wrong types, missing required
//! fields and unknown enum values are refused as [`BundleError`] (an input error).
//!
//! This parser reads; `stella_dsse::bundle` stays the writer of the v0.3 bundles stella
//! emits (their bytes are unchanged).

use serde_json::{Map, Value};

use crate::error::BundleError;

/// Largest bundle we read (32 MiB).
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;

/// The bundle format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Version {
    V01,
    V02,
    V03,
}

impl Version {
    fn from_media_type(m: &str) -> Option<Self> {
        match m {
            "application/vnd.dev.sigstore.bundle+json;version=0.1" => Some(Version::V01),
            "application/vnd.dev.sigstore.bundle+json;version=0.2" => Some(Version::V02),
            "application/vnd.dev.sigstore.bundle+json;version=0.3"
            | "application/vnd.dev.sigstore.bundle.v0.3+json" => Some(Version::V03),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V01 => "0.1",
            Version::V02 => "0.2",
            Version::V03 => "0.3",
        }
    }
}

/// Who signed, as the bundle says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Material {
    /// A key the verifier must supply (`hint` is an unauthenticated name for it).
    PublicKey { hint: Option<String> },
    /// v0.1/v0.2: the leaf first, then (optionally) intermediates.
    Chain(Vec<Vec<u8>>),
    /// v0.3: the leaf certificate alone.
    Certificate(Vec<u8>),
}

impl Material {
    /// The leaf certificate's DER, if the material is certificate-based.
    pub fn leaf(&self) -> Option<&[u8]> {
        match self {
            Material::PublicKey { .. } => None,
            Material::Chain(c) => c.first().map(Vec::as_slice),
            Material::Certificate(c) => Some(c),
        }
    }
}

/// A hash algorithm the bundle names (`HashAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    /// The protobuf enum name (`SHA2_256`, ...).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "SHA2_256" => Some(HashAlgorithm::Sha256),
            "SHA2_384" => Some(HashAlgorithm::Sha384),
            "SHA2_512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }

    /// Lowercase name as Rekor and in-toto spell it (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    pub(crate) fn aws(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            HashAlgorithm::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlgorithm::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlgorithm::Sha512 => &aws_lc_rs::digest::SHA512,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(self.aws(), data)
            .as_ref()
            .to_vec()
    }
}

/// `InclusionProof` of a Rekor v1 entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub log_index: u64,
    pub root_hash: Vec<u8>,
    pub tree_size: u64,
    pub(crate) hashes: Vec<Vec<u8>>,
    /// The signed note (C2SP) text.
    pub(crate) checkpoint: String,
}

/// One `TransparencyLogEntry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogEntry {
    pub log_index: u64,
    pub log_id: Vec<u8>,
    pub kind: String,
    pub kind_version: String,
    pub integrated_time: Option<i64>,
    pub inclusion_promise: Option<Vec<u8>>,
    pub inclusion_proof: Option<InclusionProof>,
    pub(crate) canonicalized_body: Vec<u8>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsseSignature {
    pub sig: Vec<u8>,
    pub keyid: Option<String>,
}

/// The DSSE envelope of a bundle (exactly one signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsseEnvelope {
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub signature: DsseSignature,
}

impl DsseEnvelope {
    /// The bytes the signature covers (DSSE PAE).
    pub(crate) fn pae(&self) -> Vec<u8> {
        stella_dsse::pae(&self.payload_type, &self.payload)
    }
}

/// The payload of a bundle's DSSE envelope, detached: read as the bundle was read (a payload
/// too large to hold, such as the manifest of a mirror bundle of a million files) and kept as
/// its length and SHA-256 ([`Bundle::from_value_detached`]). The signature is checked over a
/// digest of the envelope's PAE that the caller computes from its own copy of the payload
/// ([`Artifact::Pae`](crate::Artifact::Pae)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetachedPayload {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// A bundle's DSSE envelope with its payload detached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedDsse {
    pub payload: DetachedPayload,
    pub payload_type: String,
    pub signature: DsseSignature,
}

/// What is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// A signature over an artifact, with the artifact's digest.
    MessageSignature {
        digest: Option<(HashAlgorithm, Vec<u8>)>,
        signature: Vec<u8>,
    },
    Dsse(DsseEnvelope),
    /// A DSSE envelope whose payload was read apart ([`Bundle::from_value_detached`]).
    DetachedDsse(DetachedDsse),
}

impl Content {
    /// The signature bytes (what an RFC 3161 timestamp stamps).
    pub(crate) fn signature(&self) -> &[u8] {
        match self {
            Content::MessageSignature { signature, .. } => signature,
            Content::Dsse(e) => &e.signature.sig,
            Content::DetachedDsse(e) => &e.signature.sig,
        }
    }

    /// A DSSE envelope's payload SHA-256 and signature (what a log entry records of it).
    pub(crate) fn dsse(&self) -> Option<([u8; 32], &[u8])> {
        match self {
            Content::Dsse(e) => {
                let d = HashAlgorithm::Sha256.digest(&e.payload);
                Some((d.try_into().ok()?, &e.signature.sig))
            }
            Content::DetachedDsse(e) => Some((e.payload.sha256, &e.signature.sig)),
            Content::MessageSignature { .. } => None,
        }
    }
}

/// A structurally valid bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub version: Version,
    pub material: Material,
    pub tlog_entries: Vec<TlogEntry>,
    /// DER `TimeStampToken`s (`timestampVerificationData.rfc3161Timestamps`).
    pub timestamps: Vec<Vec<u8>>,
    pub content: Content,
}

type R<T> = Result<T, BundleError>;

/// Strict object access: only `allowed` keys may appear; `null` values count as absent.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str, allowed: &[&str]) -> R<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| BundleError::field(path, "not an object"))?;
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(BundleError::field(format!("{path}.{k}"), "unknown field"));
        }
        Ok(Obj {
            path: path.to_string(),
            map,
        })
    }

    fn p(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    fn req(&self, k: &str) -> R<&'a Value> {
        self.get(k)
            .ok_or_else(|| BundleError::field(self.p(k), "missing"))
    }

    fn str_opt(&self, k: &str) -> R<Option<&'a str>> {
        self.get(k)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| BundleError::field(self.p(k), "not a string"))
            })
            .transpose()
    }

    fn str(&self, k: &str) -> R<&'a str> {
        self.str_opt(k)?
            .ok_or_else(|| BundleError::field(self.p(k), "missing"))
    }

    fn bytes(&self, k: &str) -> R<Vec<u8>> {
        bytes_of(self.req(k)?, &self.p(k))
    }

    fn obj(&self, k: &str, allowed: &[&str]) -> R<Obj<'a>> {
        Obj::new(self.req(k)?, &self.p(k), allowed)
    }

    fn obj_opt(&self, k: &str, allowed: &[&str]) -> R<Option<Obj<'a>>> {
        self.get(k)
            .map(|v| Obj::new(v, &self.p(k), allowed))
            .transpose()
    }

    fn arr(&self, k: &str) -> R<&'a [Value]> {
        match self.get(k) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(BundleError::field(self.p(k), "not an array")),
        }
    }

    /// A protobuf 64-bit integer: a decimal string or a JSON number.
    fn int(&self, k: &str) -> R<Option<i64>> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let bad = || BundleError::field(self.p(k), "not a 64-bit integer");
        match v {
            Value::String(s) => {
                if s.is_empty()
                    || !s
                        .bytes()
                        .enumerate()
                        .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == b'-'))
                {
                    return Err(bad());
                }
                s.parse::<i64>().map(Some).map_err(|_| bad())
            }
            Value::Number(n) => n.as_i64().map(Some).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn uint(&self, k: &str) -> R<u64> {
        let v = self
            .int(k)?
            .ok_or_else(|| BundleError::field(self.p(k), "missing"))?;
        u64::try_from(v).map_err(|_| BundleError::field(self.p(k), "negative"))
    }
}

/// A protobuf `bytes` value: standard or URL-safe base64, padded or not.
pub(crate) fn bytes_of(v: &Value, path: &str) -> R<Vec<u8>> {
    let s = v
        .as_str()
        .ok_or_else(|| BundleError::field(path, "not a base64 string"))?;
    stella_dsse::b64::decode(s).map_err(|e| BundleError::field(path, e.to_string()))
}

impl Bundle {
    /// Parse a bundle document.
    pub fn from_json(bytes: &[u8]) -> R<Self> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                size: bytes.len(),
                limit: MAX_BUNDLE_BYTES,
            });
        }
        let v =
            stella_dsse::jcs::parse_strict(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
        Self::from_value(&v)
    }

    /// Check a bundle held as JSON.
    pub fn from_value(v: &Value) -> R<Self> {
        Self::from_value_with(v, None)
    }

    /// [`Bundle::from_value`] of a bundle whose DSSE envelope's payload was read apart
    /// (`stella_dsse::stream_detach::read_detaching_payloads`): `dsseEnvelope.payload` must be `""`
    /// and `payload` is what was read; the content is [`Content::DetachedDsse`]. A message
    /// signature bundle is read as [`Bundle::from_value`] reads it.
    pub fn from_value_detached(v: &Value, payload: DetachedPayload) -> R<Self> {
        Self::from_value_with(v, Some(payload))
    }

    fn from_value_with(v: &Value, detached: Option<DetachedPayload>) -> R<Self> {
        let top = Obj::new(
            v,
            "",
            &[
                "mediaType",
                "verificationMaterial",
                "messageSignature",
                "dsseEnvelope",
            ],
        )?;
        let media_type = top.str("mediaType")?;
        let version = Version::from_media_type(media_type)
            .ok_or_else(|| BundleError::MediaType(media_type.to_string()))?;
        let vm = top.obj(
            "verificationMaterial",
            &[
                "publicKey",
                "x509CertificateChain",
                "certificate",
                "tlogEntries",
                "timestampVerificationData",
            ],
        )?;
        let material = material(&vm, version)?;
        let tlog_entries = vm
            .arr("tlogEntries")?
            .iter()
            .enumerate()
            .map(|(i, e)| {
                tlog_entry(
                    e,
                    &format!("verificationMaterial.tlogEntries[{i}]"),
                    version,
                )
            })
            .collect::<R<Vec<_>>>()?;
        let mut timestamps = Vec::new();
        if let Some(tvd) = vm.obj_opt("timestampVerificationData", &["rfc3161Timestamps"])? {
            for (i, t) in tvd.arr("rfc3161Timestamps")?.iter().enumerate() {
                let o = Obj::new(
                    t,
                    &format!("{}.rfc3161Timestamps[{i}]", tvd.path),
                    &["signedTimestamp"],
                )?;
                timestamps.push(o.bytes("signedTimestamp")?);
            }
        }
        let content = match (top.get("messageSignature"), top.get("dsseEnvelope")) {
            (Some(_), Some(_)) => {
                return Err(BundleError::field(
                    "messageSignature",
                    "a bundle has either messageSignature or dsseEnvelope, not both",
                ))
            }
            (None, None) => {
                return Err(BundleError::field(
                    "dsseEnvelope",
                    "missing (neither messageSignature nor dsseEnvelope)",
                ))
            }
            (Some(_), None) => {
                let ms = top.obj("messageSignature", &["messageDigest", "signature"])?;
                let digest = match ms.obj_opt("messageDigest", &["algorithm", "digest"])? {
                    None => None,
                    Some(md) => {
                        let alg = md.str("algorithm")?;
                        let alg = HashAlgorithm::parse(alg).ok_or_else(|| {
                            BundleError::field(md.p("algorithm"), format!("unsupported {alg:?}"))
                        })?;
                        let d = md.bytes("digest")?;
                        if d.len() != alg.digest_len() {
                            return Err(BundleError::field(
                                md.p("digest"),
                                format!("{} bytes for {}", d.len(), alg.name()),
                            ));
                        }
                        Some((alg, d))
                    }
                };
                Content::MessageSignature {
                    digest,
                    signature: ms.bytes("signature")?,
                }
            }
            (None, Some(_)) => {
                let env = top.obj("dsseEnvelope", &["payload", "payloadType", "signatures"])?;
                let sigs = env.arr("signatures")?;
                let [sig] = sigs else {
                    return Err(BundleError::field(
                        env.p("signatures"),
                        format!(
                            "a bundle's envelope has exactly one signature, not {}",
                            sigs.len()
                        ),
                    ));
                };
                let s = Obj::new(sig, &env.p("signatures[0]"), &["sig", "keyid"])?;
                let signature = DsseSignature {
                    sig: s.bytes("sig")?,
                    keyid: s.str_opt("keyid")?.map(str::to_string),
                };
                let payload_type = env.str("payloadType")?.to_string();
                match detached {
                    None => Content::Dsse(DsseEnvelope {
                        payload: env.bytes("payload")?,
                        payload_type,
                        signature,
                    }),
                    Some(payload) => {
                        if !env.bytes("payload")?.is_empty() {
                            return Err(BundleError::field(
                                env.p("payload"),
                                "a detached payload is left empty in the bundle",
                            ));
                        }
                        Content::DetachedDsse(DetachedDsse {
                            payload,
                            payload_type,
                            signature,
                        })
                    }
                }
            }
        };
        if content.signature().is_empty() {
            return Err(BundleError::field("signature", "empty"));
        }
        Ok(Bundle {
            version,
            material,
            tlog_entries,
            timestamps,
            content,
        })
    }
}

fn material(vm: &Obj<'_>, version: Version) -> R<Material> {
    let present: Vec<&str> = ["publicKey", "x509CertificateChain", "certificate"]
        .into_iter()
        .filter(|k| vm.get(k).is_some())
        .collect();
    match present.as_slice() {
        ["publicKey"] => {
            let pk = vm.obj("publicKey", &["hint"])?;
            Ok(Material::PublicKey {
                hint: pk.str_opt("hint")?.map(str::to_string),
            })
        }
        ["x509CertificateChain"] => {
            if version == Version::V03 {
                return Err(BundleError::field(
                    vm.p("x509CertificateChain"),
                    "a v0.3 bundle carries the leaf `certificate`, not a chain",
                ));
            }
            let ch = vm.obj("x509CertificateChain", &["certificates"])?;
            let certs = ch
                .arr("certificates")?
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let o = Obj::new(c, &format!("{}.certificates[{i}]", ch.path), &["rawBytes"])?;
                    o.bytes("rawBytes")
                })
                .collect::<R<Vec<_>>>()?;
            if certs.is_empty() {
                return Err(BundleError::field(ch.p("certificates"), "empty"));
            }
            Ok(Material::Chain(certs))
        }
        ["certificate"] => {
            let c = vm.obj("certificate", &["rawBytes"])?;
            Ok(Material::Certificate(c.bytes("rawBytes")?))
        }
        [] => Err(BundleError::field(
            vm.p("publicKey"),
            "no publicKey, x509CertificateChain or certificate",
        )),
        many => Err(BundleError::field(
            vm.path.clone(),
            format!("more than one kind of material: {}", many.join(", ")),
        )),
    }
}

fn tlog_entry(v: &Value, path: &str, version: Version) -> R<TlogEntry> {
    let e = Obj::new(
        v,
        path,
        &[
            "logIndex",
            "logId",
            "kindVersion",
            "integratedTime",
            "inclusionPromise",
            "inclusionProof",
            "canonicalizedBody",
        ],
    )?;
    let log_id = e.obj("logId", &["keyId"])?.bytes("keyId")?;
    let kv = e.obj("kindVersion", &["kind", "version"])?;
    let inclusion_promise = e
        .obj_opt("inclusionPromise", &["signedEntryTimestamp"])?
        .map(|p| p.bytes("signedEntryTimestamp"))
        .transpose()?;
    let inclusion_proof = e
        .obj_opt(
            "inclusionProof",
            &["logIndex", "rootHash", "treeSize", "hashes", "checkpoint"],
        )?
        .map(|p| -> R<InclusionProof> {
            let hashes = p
                .arr("hashes")?
                .iter()
                .enumerate()
                .map(|(i, h)| bytes_of(h, &format!("{}.hashes[{i}]", p.path)))
                .collect::<R<Vec<_>>>()?;
            let cp = p.obj("checkpoint", &["envelope"])?;
            Ok(InclusionProof {
                log_index: p.uint("logIndex")?,
                root_hash: p.bytes("rootHash")?,
                tree_size: p.uint("treeSize")?,
                hashes,
                checkpoint: cp.str("envelope")?.to_string(),
            })
        })
        .transpose()?;
    if version == Version::V01 && inclusion_promise.is_none() {
        return Err(BundleError::field(
            e.p("inclusionPromise"),
            "a v0.1 bundle's log entries carry an inclusion promise",
        ));
    }
    if version >= Version::V02 && inclusion_proof.is_none() {
        return Err(BundleError::field(
            e.p("inclusionProof"),
            "v0.2 and later bundles' log entries carry an inclusion proof",
        ));
    }
    Ok(TlogEntry {
        log_index: e.uint("logIndex")?,
        log_id,
        kind: kv.str("kind")?.to_string(),
        kind_version: kv.str("version")?.to_string(),
        integrated_time: e.int("integratedTime")?,
        inclusion_promise,
        inclusion_proof,
        canonicalized_body: e.bytes("canonicalizedBody")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "k"}},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": stella_dsse::b64::encode(&[7u8; 32])},
                "signature": "MEUCIQ=="
            }
        })
    }

    #[test]
    fn bytes_fields_take_every_protobuf_base64_form() {
        for sig in ["+/+/", "-_-_", "+/8", "-_8", "+/8=", "-_8="] {
            let mut v = base();
            v["messageSignature"]["signature"] = json!(sig);
            let b = Bundle::from_value(&v).unwrap();
            assert!(!b.content.signature().is_empty(), "{sig}");
        }
        let mut v = base();
        v["messageSignature"]["signature"] = json!("+/-_");
        assert!(matches!(
            Bundle::from_value(&v),
            Err(BundleError::Field { .. })
        ));
    }

    #[test]
    fn everything_else_is_strict() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("unknown top field", Box::new(|v| v["extra"] = json!(1))),
            (
                "unknown nested field",
                Box::new(|v| v["verificationMaterial"]["publicKey"]["x"] = json!(1)),
            ),
            (
                "unknown version",
                Box::new(|v| {
                    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v0.4+json")
                }),
            ),
            (
                "digest algorithm",
                Box::new(|v| v["messageSignature"]["messageDigest"]["algorithm"] = json!("MD5")),
            ),
            (
                "digest length",
                Box::new(|v| v["messageSignature"]["messageDigest"]["digest"] = json!("AAAA")),
            ),
            (
                "both contents",
                Box::new(|v| {
                    v["dsseEnvelope"] = json!({"payload": "", "payloadType": "t", "signatures": []})
                }),
            ),
            (
                "no content",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("messageSignature");
                }),
            ),
            (
                "no material",
                Box::new(|v| v["verificationMaterial"] = json!({})),
            ),
            (
                "two materials",
                Box::new(|v| {
                    v["verificationMaterial"]["certificate"] = json!({"rawBytes": "AA=="})
                }),
            ),
            (
                "chain in v0.3",
                Box::new(|v| {
                    v["verificationMaterial"] =
                        json!({"x509CertificateChain": {"certificates": [{"rawBytes": "AA=="}]}})
                }),
            ),
            (
                "v0.1 without promise",
                Box::new(|v| {
                    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
                    v["verificationMaterial"]["tlogEntries"] = json!([{"logIndex": "1", "logId": {"keyId": "AA=="}, "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": "1", "canonicalizedBody": "e30="}]);
                }),
            ),
            (
                "v0.2 without proof",
                Box::new(|v| {
                    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.2");
                    v["verificationMaterial"]["tlogEntries"] = json!([{"logIndex": "1", "logId": {"keyId": "AA=="}, "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": "1", "inclusionPromise": {"signedEntryTimestamp": "AA=="}, "canonicalizedBody": "e30="}]);
                }),
            ),
            (
                "bad integer",
                Box::new(|v| {
                    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
                    v["verificationMaterial"]["tlogEntries"] = json!([{"logIndex": "1x", "logId": {"keyId": "AA=="}, "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": "1", "inclusionPromise": {"signedEntryTimestamp": "AA=="}, "canonicalizedBody": "e30="}]);
                }),
            ),
            (
                "wrong type",
                Box::new(|v| v["messageSignature"]["signature"] = json!(5)),
            ),
            (
                "two dsse signatures",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("messageSignature");
                    v["dsseEnvelope"] = json!({"payload": "", "payloadType": "t", "signatures": [{"sig": "AA=="}, {"sig": "AQ=="}]});
                }),
            ),
        ];
        for (name, mutate) in cases {
            let mut v = base();
            mutate(&mut v);
            let e = Bundle::from_value(&v).expect_err(name);
            assert!(
                matches!(e, BundleError::Field { .. } | BundleError::MediaType(_)),
                "{name}: {e}"
            );
        }
        // The base itself is fine, with integers as strings or numbers and nulls as absent.
        let mut v = base();
        v["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
        v["verificationMaterial"]["tlogEntries"] = json!([{"logIndex": 1, "logId": {"keyId": "AA=="}, "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"}, "integratedTime": "1", "inclusionPromise": {"signedEntryTimestamp": "AA=="}, "inclusionProof": null, "canonicalizedBody": "e30="}]);
        v["verificationMaterial"]["timestampVerificationData"] = json!(null);
        let b = Bundle::from_value(&v).unwrap();
        assert_eq!(b.tlog_entries[0].log_index, 1);
        assert_eq!(b.tlog_entries[0].integrated_time, Some(1));
    }
}
