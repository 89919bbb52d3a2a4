//! A private Sigstore for tests (feature `testing`): a Fulcio-style CA, a CT log and a Rekor
//! log with fresh P-256 keys, the trusted root naming them, and keyless bundles (v0.3,
//! certificate + SCT + Rekor v1 entry with SET, inclusion proof and signed checkpoint) for any
//! identity and any signing time. No network, no files. Every bundle it makes verifies with
//! [`crate::verify`] against [`TestSigstore::trusted_root_json`] unless the caller asks for a
//! flaw; the flaws it can make (leaf validity, SAN, issuer, extensions) are the ones the
//! negative tests need whole, consistent bundles for.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey, Signer as _};
use stella_x509::certgen::{self, Spec};
use stella_x509::x509_cert::name::Name;
use stella_x509::{Cert, Oid};
use time::OffsetDateTime;

/// The SAN of a signing certificate.
pub(crate) use stella_x509::certgen::San;

/// A P-256 key pair (its PKCS#8 at hand, so tests can hand it to `stella ... --key`).
pub struct TestKey {
    key: FileKey,
}

impl TestKey {
    pub(crate) fn generate() -> Self {
        TestKey {
            key: FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap(),
        }
    }

    /// The same key pair again.
    pub(crate) fn duplicate(&self) -> Self {
        TestKey {
            key: FileKey::from_pkcs8_der(&self.key.to_pkcs8_der().unwrap()).unwrap(),
        }
    }

    pub fn spki_der(&self) -> Vec<u8> {
        self.key.public_key().spki_der().to_vec()
    }

    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8, unencrypted).
    pub fn private_pem(&self) -> String {
        self.key.to_pkcs8_pem().unwrap().to_string()
    }

    /// `-----BEGIN PUBLIC KEY-----`.
    pub fn public_pem(&self) -> String {
        self.key.public_key().to_pem()
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg).unwrap()
    }

    /// SHA-256 of the SubjectPublicKeyInfo (a log id).
    pub(crate) fn log_id(&self) -> Vec<u8> {
        crate::HashAlgorithm::Sha256.digest(&self.spki_der())
    }
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub(crate) san: San,
    /// The OIDC issuer (extension 1.3.6.1.4.1.57264.1.8, and the legacy .1.1).
    pub(crate) issuer: String,
    /// Other Fulcio extensions (dotted OID, value; .1.2–.1.6 raw, later ones UTF8String).
    pub(crate) extensions: Vec<(String, String)>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A ten-minute certificate from `at - 1 min`, as Fulcio issues.
    pub(crate) fn new(san: San, issuer: &str, at: OffsetDateTime) -> Self {
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
    pub(crate) der: Vec<u8>,
    pub key: TestKey,
}

impl Leaf {
    pub(crate) fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// The private Sigstore.
pub struct TestSigstore {
    pub(crate) ca_key: TestKey,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) ct_key: TestKey,
    pub(crate) rekor_key: TestKey,
    /// Start of every validity window in the trusted root.
    pub(crate) since: OffsetDateTime,
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
        let name = certgen::name("CN=stella test fulcio,O=stella-test").unwrap();
        let spec = Spec {
            subject: name.clone(),
            issuer: name,
            serial: certgen::random_serial().unwrap(),
            not_before: since,
            not_after: until,
            spki_der: ca_key.spki_der(),
            extensions: certgen::ca_extensions(None).unwrap(),
        };
        let ca_der = certgen::issue(&spec, &ca_key.key).unwrap().der().to_vec();
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
    pub(crate) fn trusted_root(&self) -> Value {
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
        let ca = Cert::from_der(&self.ca_der).unwrap();
        let mut extensions = certgen::fulcio_leaf_extensions(&spec.san, &spec.issuer).unwrap();
        for (o, v) in &spec.extensions {
            extensions.push(certgen::fulcio_extension(Oid::new(o).unwrap(), v).unwrap());
        }
        let leaf = Spec {
            subject: Name::default(),
            issuer: ca.certificate().tbs_certificate.subject.clone(),
            serial: certgen::random_serial().unwrap(),
            not_before: spec.not_before,
            not_after: spec.not_after,
            spki_der: key.spki_der(),
            extensions,
        };
        // The SCT is stamped when the certificate becomes valid.
        let cert =
            certgen::issue_with_sct(&leaf, &self.ca_key.key, &self.ct_key.key, spec.not_before)
                .unwrap();
        Leaf {
            der: cert.der().to_vec(),
            key,
        }
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
