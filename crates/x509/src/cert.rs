//! X.509 certificates: parsing that keeps the exact DER, validity, CA and TSA profiles,
//! path building to trust anchors, and signature verification with aws-lc-rs.

use std::fmt;

use aws_lc_rs::{digest, signature};
use cms::signed_data::SignerIdentifier;
use der::asn1::AnyRef;
use der::{Decode, Encode, SliceReader};
use time::OffsetDateTime;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

use crate::error::{CertError, DigestError, InputError, SignatureError};
use crate::oid::{self, Oid};
use crate::{format_time, sha256, Error, Result};

// ------------------------------------------------------------------------------------------
// Certificates and trust roots
// ------------------------------------------------------------------------------------------

/// A parsed certificate with its exact DER and the exact DER of its `tbsCertificate`.
#[derive(Clone)]
pub struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) tbs: Vec<u8>,
    pub(crate) cert: Certificate,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

impl Cert {
    /// Parse one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        Self::parse(der).map_err(Error::Certificate)
    }

    pub(crate) fn parse(der: &[u8]) -> std::result::Result<Self, CertError> {
        let cert = Certificate::from_der(der).map_err(CertError::NotCertificate)?;
        // The signed bytes are the first element of the outer SEQUENCE, exactly as sent.
        let outer = AnyRef::from_der(der).map_err(CertError::Der)?;
        let mut r = SliceReader::new(outer.value()).map_err(CertError::Der)?;
        let tbs = AnyRef::decode(&mut r).map_err(CertError::Der)?;
        Ok(Cert {
            der: der.to_vec(),
            tbs: tbs.to_der().map_err(CertError::Der)?,
            cert,
        })
    }

    /// Every `CERTIFICATE` block of a PEM text.
    pub fn from_pem_all(text: &[u8]) -> Result<Vec<Self>> {
        Self::parse_pem_all(text).map_err(|e| Error::Input(InputError::Pem(e)))
    }

    pub(crate) fn parse_pem_all(text: &[u8]) -> std::result::Result<Vec<Self>, CertError> {
        let blocks = pem::parse_many(text).map_err(CertError::NotPem)?;
        let certs: Vec<Cert> = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Cert::parse(b.contents()))
            .collect::<std::result::Result<_, _>>()?;
        if certs.is_empty() {
            return Err(CertError::NoCertificateBlock);
        }
        Ok(certs)
    }

    /// The exact DER of the certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The exact DER of the `tbsCertificate` (the signed bytes).
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs
    }

    /// The decoded certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The subject public key.
    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        self.spki()
    }

    /// The extension with this OID, if present.
    pub fn find_extension(&self, id: Oid) -> Option<&x509_cert::ext::Extension> {
        self.extension(id)
    }

    /// `notBefore` and `notAfter` as Unix seconds.
    pub fn validity_secs(&self) -> (i64, i64) {
        let v = &self.tbs().validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (secs(v.not_before), secs(v.not_after))
    }

    /// Is this certificate valid at `at` (inclusive bounds)?
    pub fn check_valid_at(&self, at: OffsetDateTime) -> Result<()> {
        self.valid_at(at).map_err(Error::Certificate)
    }

    /// May this certificate issue certificates (basicConstraints cA, keyUsage keyCertSign),
    /// with no unknown critical extension?
    pub fn check_issuer_profile(&self) -> Result<()> {
        self.check_ca()
            .and_then(|()| self.check_critical())
            .map_err(Error::Certificate)
    }

    /// Did `issuer` sign this certificate (names chain and the signature verifies)?
    pub fn is_signed_by(&self, issuer: &Cert) -> bool {
        self.signed_by(issuer)
    }

    /// Is this a self-signed certificate (a root)?
    pub fn is_self_signed(&self) -> bool {
        self.issuer_der() == self.subject_der() && self.signed_by(self)
    }

    /// The subject, RFC 4514 style.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Lowercase hex SHA-256 of the DER (the certificate's fingerprint).
    pub fn fingerprint(&self) -> String {
        stella_keys::hex(&sha256(&self.der))
    }

    pub(crate) fn tbs(&self) -> &x509_cert::TbsCertificate {
        &self.cert.tbs_certificate
    }

    pub(crate) fn subject_der(&self) -> Vec<u8> {
        self.tbs().subject.to_der().unwrap_or_default()
    }

    pub(crate) fn issuer_der(&self) -> Vec<u8> {
        self.tbs().issuer.to_der().unwrap_or_default()
    }

    pub(crate) fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.tbs().subject_public_key_info
    }

    pub(crate) fn extension(&self, id: Oid) -> Option<&x509_cert::ext::Extension> {
        self.tbs()
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id == id))
    }

    pub(crate) fn valid_at(&self, at: OffsetDateTime) -> std::result::Result<(), CertError> {
        let v = &self.tbs().validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        let (from, to) = (secs(v.not_before), secs(v.not_after));
        let at_s = at.unix_timestamp();
        if at_s < from || at_s > to {
            return Err(CertError::NotValidAt {
                subject: self.subject(),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
                at: format_time(at),
            });
        }
        Ok(())
    }

    /// Extensions we understand; any other extension marked critical makes the certificate
    /// unusable (RFC 5280 §4.2).
    pub(crate) fn check_critical(&self) -> std::result::Result<(), CertError> {
        const KNOWN: [Oid; 6] = [
            oid::EXT_SKI,
            oid::EXT_KEY_USAGE,
            oid::EXT_SAN,
            oid::EXT_BASIC_CONSTRAINTS,
            oid::EXT_AKI,
            oid::EXT_EKU,
        ];
        for e in self.tbs().extensions.iter().flatten() {
            if e.critical && !KNOWN.contains(&e.extn_id) {
                return Err(CertError::UnsupportedCritical {
                    subject: self.subject(),
                    oid: e.extn_id,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn key_usage(&self) -> std::result::Result<Option<KeyUsage>, CertError> {
        self.extension(oid::EXT_KEY_USAGE)
            .map(|e| KeyUsage::from_der(e.extn_value.as_bytes()))
            .transpose()
            .map_err(|source| CertError::Extension {
                subject: self.subject(),
                extension: "keyUsage",
                source,
            })
    }

    /// May this certificate issue certificates? (basicConstraints cA, keyUsage keyCertSign)
    pub(crate) fn check_ca(&self) -> std::result::Result<(), CertError> {
        let bc = self
            .extension(oid::EXT_BASIC_CONSTRAINTS)
            .map(|e| BasicConstraints::from_der(e.extn_value.as_bytes()))
            .transpose()
            .map_err(|source| CertError::Extension {
                subject: self.subject(),
                extension: "basicConstraints",
                source,
            })?;
        if !bc.is_some_and(|b| b.ca) {
            return Err(CertError::NotCa(self.subject()));
        }
        if let Some(ku) = self.key_usage()? {
            if !ku.key_cert_sign() {
                return Err(CertError::NoKeyCertSign(self.subject()));
            }
        }
        Ok(())
    }

    /// RFC 3161 §2.3: the TSA certificate has one extended key usage, id-kp-timeStamping,
    /// and the extension is critical. Key usage, if present, must allow signatures.
    pub(crate) fn check_tsa(&self) -> std::result::Result<(), CertError> {
        let Some(ext) = self.extension(oid::EXT_EKU) else {
            return Err(CertError::TsaNoEku(self.subject()));
        };
        let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).map_err(|source| {
            CertError::TsaBadEku {
                subject: self.subject(),
                source,
            }
        })?;
        if eku.0.as_slice() != [oid::KP_TIME_STAMPING] {
            return Err(CertError::TsaWrongEku {
                subject: self.subject(),
                has: eku
                    .0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if !ext.critical {
            return Err(CertError::TsaEkuNotCritical(self.subject()));
        }
        if let Some(ku) = self.key_usage()? {
            if !ku.digital_signature() && !ku.non_repudiation() {
                return Err(CertError::TsaMayNotSign(self.subject()));
            }
        }
        self.check_critical()
    }

    /// Did `issuer` sign this certificate?
    pub(crate) fn signed_by(&self, issuer: &Cert) -> bool {
        self.issuer_der() == issuer.subject_der()
            && verify_signature(
                issuer.spki(),
                &self.cert.signature_algorithm,
                None,
                &self.tbs,
                self.cert.signature.raw_bytes(),
            )
            .is_ok()
    }

    pub(crate) fn matches_sid(&self, sid: &SignerIdentifier) -> bool {
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                ias.issuer.to_der().ok() == Some(self.issuer_der())
                    && ias.serial_number.as_bytes() == self.tbs().serial_number.as_bytes()
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => self
                .extension(oid::EXT_SKI)
                .and_then(|e| {
                    x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes())
                        .ok()
                })
                .is_some_and(|own| own.0.as_bytes() == ski.0.as_bytes()),
        }
    }
}

/// Certificates trusted to anchor TSA certificates (`--time-trust-roots`).
#[derive(Debug, Clone)]
pub struct TrustRoots {
    certs: Vec<Cert>,
}

impl TrustRoots {
    /// Every certificate of a PEM file is a trust anchor.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        Cert::from_pem_all(text).map(|certs| TrustRoots { certs })
    }

    /// Trust anchors given as parsed certificates.
    pub fn new(certs: Vec<Cert>) -> Self {
        TrustRoots { certs }
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// The path from `leaf` (a TSA certificate) to one of these anchors, subjects leaf
    /// first: each link's signature checked, each issuer a CA valid at `at`; intermediates
    /// come from `intermediates` (the token's certificates).
    pub fn chain(
        &self,
        leaf: &Cert,
        intermediates: &[Cert],
        at: OffsetDateTime,
    ) -> Result<Vec<String>> {
        chain_to_root(leaf, intermediates, self, at).map_err(Error::Chain)
    }
}

/// Walk from `leaf` to a trust root, checking each link's signature, each issuer's CA rights
/// and each certificate's validity at `at`. Intermediates come from the token.
pub(crate) fn chain_to_root(
    leaf: &Cert,
    intermediates: &[Cert],
    roots: &TrustRoots,
    at: OffsetDateTime,
) -> std::result::Result<Vec<String>, CertError> {
    let mut path = vec![leaf.subject()];
    let mut current = leaf;
    for _ in 0..8 {
        if roots.certs.iter().any(|r| r.der == current.der) {
            return Ok(path);
        }
        if let Some(root) = roots.certs.iter().find(|r| current.signed_by(r)) {
            root.check_ca()?;
            root.valid_at(at)?;
            path.push(root.subject());
            return Ok(path);
        }
        let Some(next) = intermediates
            .iter()
            .find(|c| c.der != current.der && current.signed_by(c))
        else {
            break;
        };
        next.check_ca()?;
        next.valid_at(at)?;
        next.check_critical()?;
        path.push(next.subject());
        current = next;
    }
    Err(CertError::NoPathToRoot(leaf.subject()))
}

// ------------------------------------------------------------------------------------------
// Signatures and digests
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn from_oid(o: &Oid) -> Option<Self> {
        match *o {
            oid::SHA256 => Some(Hash::Sha256),
            oid::SHA384 => Some(Hash::Sha384),
            oid::SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }
}

pub(crate) fn hash_of(
    alg: &AlgorithmIdentifierOwned,
    what: &'static str,
) -> std::result::Result<Hash, DigestError> {
    if alg.oid == oid::SHA1 {
        return Err(DigestError::Sha1 { what });
    }
    Hash::from_oid(&alg.oid).ok_or(DigestError::Unsupported { what, oid: alg.oid })
}

/// Verify `sig` over `msg` with the key of `spki`. `sig_alg` names the signature algorithm;
/// `digest` is the CMS digest algorithm, used when `sig_alg` names only the key type
/// (`rsaEncryption`, `id-ecPublicKey`) and required to agree when it names a hash.
pub(crate) fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    sig_alg: &AlgorithmIdentifierOwned,
    digest: Option<Hash>,
    msg: &[u8],
    sig: &[u8],
) -> std::result::Result<(), SignatureError> {
    let named = match sig_alg.oid {
        oid::ECDSA_SHA256 | oid::RSA_SHA256 => Some(Hash::Sha256),
        oid::ECDSA_SHA384 | oid::RSA_SHA384 => Some(Hash::Sha384),
        oid::ECDSA_SHA512 | oid::RSA_SHA512 => Some(Hash::Sha512),
        oid::RSA | oid::EC_PUBLIC_KEY | oid::ED25519 => None,
        other => return Err(SignatureError::UnsupportedAlgorithm(other)),
    };
    let hash = match (named, digest) {
        (Some(n), Some(d)) if n != d => {
            return Err(SignatureError::DigestDisagrees {
                sig_alg: sig_alg.oid,
                digest: d.name(),
            })
        }
        (Some(n), _) => Some(n),
        (None, d) => d,
    };
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(SignatureError::KeyNotByteAligned)?;
    let alg: &'static dyn signature::VerificationAlgorithm = match spki.algorithm.oid {
        oid::EC_PUBLIC_KEY => {
            if !matches!(
                sig_alg.oid,
                oid::ECDSA_SHA256 | oid::ECDSA_SHA384 | oid::ECDSA_SHA512 | oid::EC_PUBLIC_KEY
            ) {
                return Err(SignatureError::WrongKeyType {
                    key: "EC",
                    sig_alg: sig_alg.oid,
                });
            }
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<Oid>().ok())
                .ok_or(SignatureError::NoNamedCurve)?;
            let hash = hash.ok_or(SignatureError::NoDigest { scheme: "ECDSA" })?;
            match (curve, hash) {
                (oid::P256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (oid::P256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (oid::P256, Hash::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                (oid::P384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (oid::P384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                (oid::P384, Hash::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                (c, _) => return Err(SignatureError::UnsupportedCurve(c)),
            }
        }
        oid::RSA => {
            if !matches!(
                sig_alg.oid,
                oid::RSA | oid::RSA_SHA256 | oid::RSA_SHA384 | oid::RSA_SHA512
            ) {
                return Err(SignatureError::WrongKeyType {
                    key: "RSA",
                    sig_alg: sig_alg.oid,
                });
            }
            match hash.ok_or(SignatureError::NoDigest { scheme: "RSA" })? {
                Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            }
        }
        oid::ED25519 => {
            if sig_alg.oid != oid::ED25519 {
                return Err(SignatureError::WrongKeyType {
                    key: "Ed25519",
                    sig_alg: sig_alg.oid,
                });
            }
            &signature::ED25519
        }
        other => return Err(SignatureError::UnsupportedKey(other)),
    };
    signature::UnparsedPublicKey::new(alg, key)
        .verify(msg, sig)
        .map_err(|_| SignatureError::Invalid)
}
