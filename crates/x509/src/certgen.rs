//! Building certificates and SCTs, for the keyless dev CA and TSA (`stella-keyless`) and the
//! private Sigstore of tests (`stella-sigstore`'s `testing`): a `tbsCertificate` is assembled
//! from RustCrypto `x509-cert` types, encoded, and signed by any [`Signer`] (P-256, ECDSA with
//! SHA-256). For a Fulcio-style leaf the SCT is computed over the precertificate — the leaf's
//! TBS without the SCT extension, after the SHA-256 of the issuer's key (RFC 6962 §3.2) — and
//! the SCT list extension is appended last, so the verifier's "remove the SCT extension and
//! re-encode" gives back exactly the signed bytes.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, Ia5String, OctetString, Utf8StringRef};
use der::{Decode, Encode};
use stella_keys::{Algorithm, Signer};
use time::OffsetDateTime;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use crate::{oid, Cert, Oid};

/// Why a certificate could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertGenError {
    #[error("DER encoding: {0}")]
    Der(#[from] der::Error),
    #[error(transparent)]
    Sign(#[from] stella_keys::SignError),
    #[error("{0}")]
    Input(String),
}

type R<T> = Result<T, CertGenError>;

/// A name from an RFC 4514 string (`CN=…,O=…`).
pub fn name(text: &str) -> R<Name> {
    Name::from_str(text).map_err(|e| CertGenError::Input(format!("name {text:?}: {e}")))
}

fn time_of(t: OffsetDateTime) -> R<Time> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| CertGenError::Input("time before 1970".into()))?;
    Ok(Time::try_from(
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    )?)
}

/// A random positive 16-byte serial number.
pub fn random_serial() -> R<Vec<u8>> {
    let mut s = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut s).map_err(|_| CertGenError::Input("no randomness".into()))?;
    s[0] = (s[0] & 0x7f) | 0x01;
    Ok(s)
}

/// An extension with a DER-encodable value.
fn ext<T: Encode>(id: Oid, critical: bool, value: &T) -> R<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// An extension whose value is given as raw bytes.
fn raw_ext(id: Oid, critical: bool, value: Vec<u8>) -> R<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value)?,
    })
}

fn key_identifier(spki_der: &[u8]) -> R<OctetString> {
    // RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the key.
    Ok(OctetString::new(
        stella_keys::sha256(spki_der)[..20].to_vec(),
    )?)
}

fn spki_bits(spki_der: &[u8]) -> R<Vec<u8>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    Ok(spki.subject_public_key.raw_bytes().to_vec())
}

/// Subject and authority key identifier extensions.
pub fn key_ids(subject_spki: &[u8], issuer_spki: &[u8]) -> R<Vec<Extension>> {
    let _ = spki_bits(subject_spki)?;
    Ok(vec![
        ext(
            oid::EXT_SKI,
            false,
            &SubjectKeyIdentifier(key_identifier(subject_spki)?),
        )?,
        ext(
            oid::EXT_AKI,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(key_identifier(issuer_spki)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?,
    ])
}

/// CA extensions: basicConstraints cA (critical, optional path length), keyUsage
/// keyCertSign + cRLSign (critical).
pub fn ca_extensions(path_len: Option<u8>) -> R<Vec<Extension>> {
    Ok(vec![
        ext(
            oid::EXT_BASIC_CONSTRAINTS,
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: path_len,
            },
        )?,
        ext(
            oid::EXT_KEY_USAGE,
            true,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        )?,
    ])
}

/// keyUsage digitalSignature, critical: the usage of every leaf we issue (TSA and Fulcio).
fn digital_signature_usage() -> R<Extension> {
    ext(
        oid::EXT_KEY_USAGE,
        true,
        &KeyUsage(KeyUsages::DigitalSignature.into()),
    )
}

/// TSA extensions: keyUsage digitalSignature (critical), extendedKeyUsage
/// id-kp-timeStamping only (critical, RFC 3161 §2.3), a certificate policy.
pub fn tsa_extensions(policy: Oid) -> R<Vec<Extension>> {
    Ok(vec![
        digital_signature_usage()?,
        ext(
            oid::EXT_EKU,
            true,
            &ExtendedKeyUsage(vec![oid::KP_TIME_STAMPING]),
        )?,
        ext(
            oid::EXT_CERT_POLICIES,
            false,
            &CertificatePolicies(vec![PolicyInformation {
                policy_identifier: policy,
                policy_qualifiers: None,
            }]),
        )?,
    ])
}

/// The SAN of a signing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Email(String),
    Uri(String),
}

impl San {
    /// A URI when `identity` has a scheme (`https://…`), else an email address.
    pub fn of(identity: &str) -> Self {
        if identity.contains("://") {
            San::Uri(identity.to_string())
        } else {
            San::Email(identity.to_string())
        }
    }
}

/// Fulcio leaf extensions: keyUsage digitalSignature (critical), extendedKeyUsage
/// codeSigning, the SAN (critical as Fulcio does, since the subject is empty), and the OIDC
/// issuer (v2 UTF8String and legacy raw).
pub fn fulcio_leaf_extensions(san: &San, oidc_issuer: &str) -> R<Vec<Extension>> {
    let ia5 =
        |s: &str| Ia5String::new(s).map_err(|e| CertGenError::Input(format!("SAN {s:?}: {e}")));
    let general = match san {
        San::Email(e) => GeneralName::Rfc822Name(ia5(e)?),
        San::Uri(u) => GeneralName::UniformResourceIdentifier(ia5(u)?),
    };
    Ok(vec![
        digital_signature_usage()?,
        ext(
            oid::EXT_EKU,
            false,
            &ExtendedKeyUsage(vec![oid::KP_CODE_SIGNING]),
        )?,
        ext(oid::EXT_SAN, true, &SubjectAltName(vec![general]))?,
        raw_ext(
            oid::FULCIO_ISSUER_V1,
            false,
            oidc_issuer.as_bytes().to_vec(),
        )?,
        ext(
            oid::FULCIO_ISSUER_V2,
            false,
            &Utf8StringRef::new(oidc_issuer)
                .map_err(|e| CertGenError::Input(format!("issuer {oidc_issuer:?}: {e}")))?,
        )?,
    ])
}

/// Another Fulcio extension (`1.3.6.1.4.1.57264.1.N`) as Fulcio encodes it: the legacy ones
/// (N = 1 to 6) as raw bytes, the later ones as a DER UTF8String.
pub fn fulcio_extension(id: Oid, value: &str) -> R<Extension> {
    if oid::is_fulcio_legacy(id) {
        raw_ext(id, false, value.as_bytes().to_vec())
    } else {
        let utf8 = Utf8StringRef::new(value)
            .map_err(|e| CertGenError::Input(format!("extension {id}: {e}")))?;
        ext(id, false, &utf8)
    }
}

/// What a certificate says, before it is signed.
#[derive(Debug, Clone)]
pub struct Spec {
    pub subject: Name,
    pub issuer: Name,
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DER SubjectPublicKeyInfo of the certified key.
    pub spki_der: Vec<u8>,
    pub extensions: Vec<Extension>,
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::ECDSA_SHA256,
        parameters: None,
    }
}

/// The `tbsCertificate` of `spec` (signature algorithm ECDSA with SHA-256).
fn tbs(spec: &Spec) -> R<TbsCertificate> {
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&spec.serial)?,
        signature: ecdsa_sha256(),
        issuer: spec.issuer.clone(),
        validity: Validity {
            not_before: time_of(spec.not_before)?,
            not_after: time_of(spec.not_after)?,
        },
        subject: spec.subject.clone(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(&spec.spki_der)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: if spec.extensions.is_empty() {
            None
        } else {
            Some(spec.extensions.clone())
        },
    })
}

/// Sign a `tbsCertificate` with `key` (ECDSA P-256).
fn sign(tbs: TbsCertificate, key: &dyn Signer) -> R<Cert> {
    if key.algorithm() != Algorithm::EcdsaP256Sha256 {
        return Err(CertGenError::Input(
            "certificates are signed with ECDSA P-256 keys".into(),
        ));
    }
    let sig = key.sign(&tbs.to_der()?)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&sig)?,
    };
    Cert::from_der(&cert.to_der()?).map_err(|e| CertGenError::Input(e.to_string()))
}

/// A signed certificate for `spec`.
pub fn issue(spec: &Spec, key: &dyn Signer) -> R<Cert> {
    sign(tbs(spec)?, key)
}

/// An RFC 6962 v1 SCT (TLS encoding) for a precertificate: `ct_key` signs
/// `version ‖ certificate_timestamp ‖ timestamp ‖ precert_entry ‖ issuer_key_hash ‖
/// tbs ‖ extensions`.
fn precert_sct(
    ct_key: &dyn Signer,
    precert_tbs_der: &[u8],
    issuer_spki_der: &[u8],
    timestamp_ms: u64,
) -> R<Vec<u8>> {
    let len = u32::try_from(precert_tbs_der.len())
        .ok()
        .filter(|l| *l < 1 << 24)
        .ok_or_else(|| CertGenError::Input("precertificate too large".into()))?;
    let mut signed = Vec::with_capacity(precert_tbs_der.len() + 64);
    signed.extend_from_slice(&[0, 0]);
    signed.extend_from_slice(&timestamp_ms.to_be_bytes());
    signed.extend_from_slice(&1u16.to_be_bytes());
    signed.extend_from_slice(&stella_keys::sha256(issuer_spki_der));
    signed.extend_from_slice(&len.to_be_bytes()[1..]);
    signed.extend_from_slice(precert_tbs_der);
    signed.extend_from_slice(&0u16.to_be_bytes());
    let sig = ct_key.sign(&signed)?;
    let sig_len = u16::try_from(sig.len())
        .map_err(|_| CertGenError::Input("SCT signature too large".into()))?;
    let mut sct = Vec::with_capacity(sig.len() + 50);
    sct.push(0); // v1
    sct.extend_from_slice(&stella_keys::sha256(ct_key.public_key().spki_der()));
    sct.extend_from_slice(&timestamp_ms.to_be_bytes());
    sct.extend_from_slice(&0u16.to_be_bytes()); // no extensions
    sct.push(4); // sha256
    sct.push(3); // ecdsa
    sct.extend_from_slice(&sig_len.to_be_bytes());
    sct.extend_from_slice(&sig);
    Ok(sct)
}

/// The embedded SCT list extension (an OCTET STRING holding the TLS list).
fn sct_list_extension(scts: &[Vec<u8>]) -> R<Extension> {
    let mut body = Vec::new();
    for s in scts {
        let l = u16::try_from(s.len()).map_err(|_| CertGenError::Input("SCT too large".into()))?;
        body.extend_from_slice(&l.to_be_bytes());
        body.extend_from_slice(s);
    }
    let total =
        u16::try_from(body.len()).map_err(|_| CertGenError::Input("SCT list too large".into()))?;
    let mut list = total.to_be_bytes().to_vec();
    list.extend_from_slice(&body);
    ext(oid::SCT_LIST, false, &OctetString::new(list)?)
}

/// Issue a Fulcio-style leaf: `spec` plus an SCT by `ct_key` over its precertificate.
pub fn issue_with_sct(
    spec: &Spec,
    issuer_key: &dyn Signer,
    ct_key: &dyn Signer,
    sct_time: OffsetDateTime,
) -> R<Cert> {
    let mut t = tbs(spec)?;
    let precert = t.to_der()?;
    let ms = u64::try_from(sct_time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| CertGenError::Input("SCT time before 1970".into()))?;
    let sct = precert_sct(ct_key, &precert, issuer_key.public_key().spki_der(), ms)?;
    t.extensions
        .get_or_insert_with(Vec::new)
        .push(sct_list_extension(&[sct])?);
    sign(t, issuer_key)
}
