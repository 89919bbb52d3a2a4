//! A private Sigstore for tests (feature `testing`): a Fulcio-style CA, a CT log and a Rekor
//! log with fresh P-256 keys, the trusted root naming them, and keyless bundles (v0.3,
//! certificate + SCT + Rekor v1 entry with SET, inclusion proof and signed checkpoint) for any
//! identity and any signing time. No network, no files. Every bundle it makes verifies with
//! [`crate::verify`] against [`TestSigstore::trusted_root_json`] unless the caller asks for a
//! flaw; the flaws it can make (leaf validity, SAN, issuer, extensions) are the ones the
//! negative tests need whole, consistent bundles for.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};
use stella_x509::der::asn1::{BitString, Ia5String, OctetString, UtcTime, Utf8StringRef};
use stella_x509::der::{Decode, Encode};
use stella_x509::x509_cert::ext::pkix::name::GeneralName;
use stella_x509::x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use stella_x509::x509_cert::ext::Extension;
use stella_x509::x509_cert::name::Name;
use stella_x509::x509_cert::serial_number::SerialNumber;
use stella_x509::x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use stella_x509::x509_cert::time::{Time, Validity};
use stella_x509::x509_cert::{Certificate, TbsCertificate, Version};
use stella_x509::{oid, Oid};
use time::OffsetDateTime;

use crate::cert::{OID_ISSUER_V1, OID_ISSUER_V2, OID_SCT_LIST};

const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const OID_KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");

/// A P-256 key pair (its PKCS#8 kept, so tests can hand it to `stella ... --key`).
pub struct TestKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl TestKey {
    pub fn generate() -> Self {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pkcs8 = doc.as_ref().to_vec();
        TestKey {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).unwrap(),
            pkcs8,
        }
    }

    /// The same key pair again.
    pub fn duplicate(&self) -> Self {
        TestKey {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8).unwrap(),
            pkcs8: self.pkcs8.clone(),
        }
    }

    pub fn spki_der(&self) -> Vec<u8> {
        let mut d = P256_SPKI_PREFIX.to_vec();
        d.extend_from_slice(self.pair.public_key().as_ref());
        d
    }

    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8, unencrypted).
    pub fn private_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// `-----BEGIN PUBLIC KEY-----`.
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der()))
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// SHA-256 of the SubjectPublicKeyInfo (a log id).
    pub fn log_id(&self) -> Vec<u8> {
        crate::HashAlgorithm::Sha256.digest(&self.spki_der())
    }
}

fn utc(t: OffsetDateTime) -> Time {
    let secs = u64::try_from(t.unix_timestamp()).unwrap();
    Time::UtcTime(UtcTime::from_unix_duration(std::time::Duration::from_secs(secs)).unwrap())
}

fn ext(id: Oid, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value).unwrap(),
    }
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::ECDSA_SHA256,
        parameters: None,
    }
}

fn sign_tbs(tbs: TbsCertificate, key: &TestKey) -> Vec<u8> {
    let sig = key.sign(&tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&sig).unwrap(),
    }
    .to_der()
    .unwrap()
}

fn serial() -> SerialNumber {
    let mut s = [0u8; 16];
    aws_lc_rs::rand::fill(&mut s).unwrap();
    s[0] = (s[0] & 0x7f) | 0x40;
    SerialNumber::new(&s).unwrap()
}

/// A SAN of a signing certificate.
#[derive(Debug, Clone)]
pub enum San {
    Email(String),
    Uri(String),
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub san: San,
    /// The OIDC issuer (extension 1.3.6.1.4.1.57264.1.8, and the legacy .1.1).
    pub issuer: String,
    /// Other Fulcio extensions (dotted OID, value; .1.2–.1.6 raw, later ones UTF8String).
    pub extensions: Vec<(String, String)>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A ten-minute certificate from `at - 1 min`, as Fulcio issues.
    pub fn new(san: San, issuer: &str, at: OffsetDateTime) -> Self {
        LeafSpec {
            san,
            issuer: issuer.to_string(),
            extensions: Vec::new(),
            not_before: at - time::Duration::minutes(1),
            not_after: at + time::Duration::minutes(9),
        }
    }

    pub fn email(email: &str, issuer: &str, at: OffsetDateTime) -> Self {
        Self::new(San::Email(email.to_string()), issuer, at)
    }

    pub fn uri(uri: &str, issuer: &str, at: OffsetDateTime) -> Self {
        Self::new(San::Uri(uri.to_string()), issuer, at)
    }

    pub fn extension(mut self, oid: &str, value: &str) -> Self {
        self.extensions.push((oid.to_string(), value.to_string()));
        self
    }
}

/// An issued leaf: its DER and its (ephemeral) key.
pub struct Leaf {
    pub der: Vec<u8>,
    pub key: TestKey,
}

impl Leaf {
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// The private Sigstore.
pub struct TestSigstore {
    pub ca_key: TestKey,
    pub ca_der: Vec<u8>,
    pub ct_key: TestKey,
    pub rekor_key: TestKey,
    /// Start of every validity window in the trusted root.
    pub since: OffsetDateTime,
    log_index: std::sync::atomic::AtomicU64,
}

impl Default for TestSigstore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSigstore {
    /// Fresh keys; a root CA valid from 2020 to 2040.
    pub fn new() -> Self {
        let since = OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap(); // 2020-01-01
        let until = OffsetDateTime::from_unix_timestamp(2_208_988_800).unwrap(); // 2040-01-01
        let ca_key = TestKey::generate();
        let name = Name::from_str("CN=stella test fulcio,O=stella-test").unwrap();
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: serial(),
            signature: ecdsa_sha256(),
            issuer: name.clone(),
            validity: Validity {
                not_before: utc(since),
                not_after: utc(until),
            },
            subject: name,
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(&ca_key.spki_der())
                .unwrap(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                ext(
                    oid::EXT_BASIC_CONSTRAINTS,
                    true,
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    }
                    .to_der()
                    .unwrap(),
                ),
                ext(
                    oid::EXT_KEY_USAGE,
                    true,
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                        .to_der()
                        .unwrap(),
                ),
            ]),
        };
        let ca_der = sign_tbs(tbs, &ca_key);
        TestSigstore {
            ca_key,
            ca_der,
            ct_key: TestKey::generate(),
            rekor_key: TestKey::generate(),
            since,
            log_index: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Another CA (fresh key and certificate) with the same CT log and Rekor log: its
    /// bundles pass the log checks of this root's verifiers and fail at the certificate.
    pub fn other_ca(&self) -> Self {
        let mut other = Self::new();
        other.ct_key = self.ct_key.duplicate();
        other.rekor_key = self.rekor_key.duplicate();
        other
    }

    /// The `dev.sigstore.trustedroot` JSON naming this CA, CT log and Rekor log.
    pub fn trusted_root(&self) -> Value {
        let b64 = stella_dsse::b64::encode;
        let start = stella_x509::format_time(self.since);
        let log = |k: &TestKey, url: &str| {
            json!({
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(&k.spki_der()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": b64(&k.log_id())},
            })
        };
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor_key, "https://rekor.test.invalid")],
            "ctlogs": [log(&self.ct_key, "https://ct.test.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": "stella-test", "commonName": "stella test fulcio"},
                "uri": "https://fulcio.test.invalid",
                "certChain": {"certificates": [{"rawBytes": b64(&self.ca_der)}]},
                "validFor": {"start": start},
            }],
            "timestampAuthorities": [],
        })
    }

    pub fn trusted_root_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.trusted_root()).unwrap()
    }

    /// Issue a leaf certificate with an embedded SCT by the CT log, for a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> Leaf {
        let key = TestKey::generate();
        let ca = Certificate::from_der(&self.ca_der).unwrap();
        let san = match &spec.san {
            San::Email(e) => GeneralName::Rfc822Name(Ia5String::new(e).unwrap()),
            San::Uri(u) => GeneralName::UniformResourceIdentifier(Ia5String::new(u).unwrap()),
        };
        let mut exts = vec![
            ext(
                oid::EXT_KEY_USAGE,
                true,
                KeyUsage(KeyUsages::DigitalSignature.into())
                    .to_der()
                    .unwrap(),
            ),
            ext(
                oid::EXT_EKU,
                false,
                ExtendedKeyUsage(vec![OID_KP_CODE_SIGNING])
                    .to_der()
                    .unwrap(),
            ),
            ext(
                oid::EXT_SAN,
                true,
                SubjectAltName(vec![san]).to_der().unwrap(),
            ),
            ext(OID_ISSUER_V1, false, spec.issuer.as_bytes().to_vec()),
            ext(
                OID_ISSUER_V2,
                false,
                Utf8StringRef::new(&spec.issuer).unwrap().to_der().unwrap(),
            ),
        ];
        for (o, v) in &spec.extensions {
            let id = Oid::new(o).unwrap();
            let legacy = o
                .strip_prefix("1.3.6.1.4.1.57264.1.")
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| (1..=6).contains(&n));
            let value = if legacy {
                v.as_bytes().to_vec()
            } else {
                Utf8StringRef::new(v).unwrap().to_der().unwrap()
            };
            exts.push(ext(id, false, value));
        }
        let mut tbs = TbsCertificate {
            version: Version::V3,
            serial_number: serial(),
            signature: ecdsa_sha256(),
            issuer: ca.tbs_certificate.subject.clone(),
            validity: Validity {
                not_before: utc(spec.not_before),
                not_after: utc(spec.not_after),
            },
            subject: Name::default(),
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(&key.spki_der()).unwrap(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(exts),
        };
        // The SCT signs the precertificate: this TBS without the SCT extension.
        let pre = tbs.to_der().unwrap();
        let sct = self.sct(&pre, spec.not_before);
        let mut list = Vec::new();
        list.extend_from_slice(&u16::try_from(sct.len() + 2).unwrap().to_be_bytes());
        list.extend_from_slice(&u16::try_from(sct.len()).unwrap().to_be_bytes());
        list.extend_from_slice(&sct);
        let inner = OctetString::new(list).unwrap().to_der().unwrap();
        if let Some(e) = tbs.extensions.as_mut() {
            e.push(ext(OID_SCT_LIST, false, inner));
        }
        Leaf {
            der: sign_tbs(tbs, &self.ca_key),
            key,
        }
    }

    fn sct(&self, precert_tbs: &[u8], at: OffsetDateTime) -> Vec<u8> {
        let ts = u64::try_from(at.unix_timestamp()).unwrap() * 1000;
        let issuer_key_hash = crate::HashAlgorithm::Sha256.digest(&self.ca_key.spki_der());
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&ts.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        let len = u32::try_from(precert_tbs.len()).unwrap().to_be_bytes();
        signed.extend_from_slice(&len[1..]);
        signed.extend_from_slice(precert_tbs);
        signed.extend_from_slice(&0u16.to_be_bytes());
        let sig = self.ct_key.sign(&signed);
        let mut sct = vec![0u8];
        sct.extend_from_slice(&self.ct_key.log_id());
        sct.extend_from_slice(&ts.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
        sct.extend_from_slice(&u16::try_from(sig.len()).unwrap().to_be_bytes());
        sct.extend_from_slice(&sig);
        sct
    }

    /// A Rekor v1 entry for `body`, integrated at `at`: SET and a one-leaf inclusion proof
    /// with its checkpoint, all by the test log.
    fn tlog_entry(&self, kind: &str, body: &[u8], at: OffsetDateTime) -> Value {
        let b64 = stella_dsse::b64::encode;
        let index = self
            .log_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_id = self.rekor_key.log_id();
        let t = at.unix_timestamp();
        let set_payload = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{t},\"logID\":\"{}\",\"logIndex\":{index}}}",
            b64(body),
            crate::key::hex(&log_id)
        );
        let set = self.rekor_key.sign(set_payload.as_bytes());
        // A tree of one leaf: the root is the leaf hash, the audit path is empty.
        let root = crate::tlog::leaf_hash(body);
        let note = format!("rekor.test.invalid - 1\n1\n{}\n", b64(&root));
        let mut sig = log_id[..4].to_vec();
        sig.extend_from_slice(&self.rekor_key.sign(note.as_bytes()));
        let checkpoint = format!("{note}\n\u{2014} rekor.test.invalid {}\n", b64(&sig));
        json!({
            "logIndex": index.to_string(),
            "logId": {"keyId": b64(&log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": t.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": b64(&set)},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": b64(&root),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": b64(body),
        })
    }

    /// A v0.3 keyless bundle of a DSSE envelope (`payload_type`, `payload`) signed by the
    /// leaf's key, logged at `at`.
    pub fn dsse_bundle(
        &self,
        leaf: &Leaf,
        payload_type: &str,
        payload: &[u8],
        at: OffsetDateTime,
    ) -> Value {
        let b64 = stella_dsse::b64::encode;
        let pae = stella_dsse::pae(payload_type, payload);
        let sig = leaf.key.sign(&pae);
        let payload_hash = crate::key::hex(&crate::HashAlgorithm::Sha256.digest(payload));
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "payloadHash": {"algorithm": "sha256", "value": payload_hash},
                "signatures": [{"signature": b64(&sig), "verifier": b64(leaf.pem().as_bytes())}],
            },
        });
        let body = serde_json::to_vec(&body).unwrap();
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(&leaf.der)},
                "tlogEntries": [self.tlog_entry("dsse", &body, at)],
            },
            "dsseEnvelope": {
                "payload": b64(payload),
                "payloadType": payload_type,
                "signatures": [{"sig": b64(&sig), "keyid": ""}],
            },
        })
    }

    /// A v0.3 keyless bundle of a message signature over `artifact`, logged at `at`.
    pub fn message_bundle(&self, leaf: &Leaf, artifact: &[u8], at: OffsetDateTime) -> Value {
        let b64 = stella_dsse::b64::encode;
        let sig = leaf.key.sign(artifact);
        let digest = crate::HashAlgorithm::Sha256.digest(artifact);
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": crate::key::hex(&digest)}},
                "signature": {
                    "content": b64(&sig),
                    "publicKey": {"content": b64(leaf.pem().as_bytes())},
                },
            },
        });
        let body = serde_json::to_vec(&body).unwrap();
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(&leaf.der)},
                "tlogEntries": [self.tlog_entry("hashedrekord", &body, at)],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&digest)},
                "signature": b64(&sig),
            },
        })
    }
}
