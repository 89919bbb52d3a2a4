//! Time anchors (`time-anchor.json`): an RFC 3161 timestamp token over the manifest digest.
//!
//! **What is stamped**: the SHA-256 of the `manifest.json` bytes — the bundle's manifest
//! digest (the value thin bundles name as `base.manifestDigest` and the detached header as
//! `payloadSha256`). `manifest.json` is byte-identical to the payload `manifest.dsse` signs, so
//! the token binds a trusted time to exactly the signed manifest.
//!
//! **The file** (canonical JSON, written after the manifest is signed, so it is not listed in
//! the manifest or `SHA256SUMS`: it is a known metadata file that `verify` checks on its own):
//! `anchorTime` (the token's `genTime`, RFC 3339 UTC), `format` (`rfc3161`), `source` (the TSA
//! URL, or `local TSA <subject>`; informative only), `token` (base64 DER of the
//! TimeStampToken, a CMS `ContentInfo`) and `tokenDigest` (`sha256:` of those DER bytes).
//!
//! **Producing tokens**: [`LocalTsa`] is a TSA of our own (a P-256 key and its certificate),
//! writing the same token `openssl ts -reply` would: CMS SignedData (version 3) of a `TSTInfo`,
//! one SignerInfo (issuer and serial) with the content-type, signing-time, message-digest and
//! ESS signing-certificate-v2 attributes, ECDSA P-256/SHA-256, the TSA certificate (and any
//! chain given with it) included. [`request`] and [`token_from_response`] are the two ends of
//! the RFC 3161 HTTP exchange (the CLI does the POST).
//!
//! **Verifying** ([`verify_anchor`]), every rule an error: the file is strict canonical JSON
//! with `format: rfc3161`; `tokenDigest` matches; the token is a SignedData of a TSTInfo
//! (version 1) whose message imprint (SHA-256/384/512) equals the manifest's digest and whose
//! `genTime` equals `anchorTime`; exactly one SignerInfo with signed attributes: content type
//! TSTInfo, message digest over the TSTInfo, an ESS signing-certificate (v1 or v2) naming the
//! signer's certificate; the signature (ECDSA P-256/P-384, RSA PKCS #1 v1.5 or Ed25519, over
//! the DER of the signed attributes) verifies with that certificate's key; the certificate is
//! valid at `genTime`, has the extended key usage extension **critical and holding only
//! id-kp-timeStamping** (RFC 3161 §2.3, as `openssl ts -verify` requires), a key usage (if any)
//! allowing signatures, no unknown critical extension, and a `tsa` name (if any) equal to its
//! subject. With trust roots, the certificate must chain — each link's signature checked, each
//! issuer a CA valid at `genTime` — to one of them; then the anchor is *trusted*. Without
//! trust roots everything but the chain is checked and the anchor is reported as untrusted.
//! Revocation is not checked (air-gapped sites have no CRL or OCSP).

use std::fmt;

use aws_lc_rs::{digest, signature};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, AnyRef, BitString, Int, OctetString, SetOfVec, UtcTime};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence,
    SliceReader, Tag, TagNumber, Tagged, Writer,
};
use serde::{Deserialize, Serialize};
use stella_keys::Signer;
use time::OffsetDateTime;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

use crate::error::{Error, Result};
use crate::hash::Sha256;
use crate::manifest::format_time;

type Oid = der::asn1::ObjectIdentifier;

/// The `format` of every anchor we write and accept.
pub const FORMAT: &str = "rfc3161";

/// Largest token we accept (a token with a certificate chain is a few KiB).
const MAX_TOKEN_BYTES: usize = 1 << 20;

/// Parse a dotted OID given by a user, refusing (rather than overflowing on) arcs above
/// 2^32 - 1, which the OID type cannot hold.
fn parse_oid(text: &str) -> std::result::Result<Oid, String> {
    let arcs: Vec<&str> = text.split('.').collect();
    let nums: Vec<u32> = arcs
        .iter()
        .map(|a| {
            if a.is_empty() || !a.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            a.parse::<u32>().ok()
        })
        .collect::<Option<_>>()
        .ok_or_else(|| "arcs must be decimal numbers below 2^32".to_string())?;
    match nums.as_slice() {
        [first, second, ..] if *first <= 2 && (*first == 2 || *second < 40) => {}
        _ => return Err("an OID has at least two arcs, the first 0, 1 or 2".to_string()),
    }
    Oid::new(text).map_err(|e| e.to_string())
}

mod oid {
    use super::Oid;
    pub(super) const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub(super) const TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
    pub(super) const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
    pub(super) const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
    pub(super) const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
    pub(super) const SIGNING_CERT: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");
    pub(super) const SIGNING_CERT_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
    pub(super) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub(super) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub(super) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub(super) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    pub(super) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub(super) const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub(super) const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub(super) const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub(super) const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub(super) const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub(super) const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub(super) const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub(super) const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub(super) const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub(super) const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub(super) const KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
    pub(super) const EXT_SKI: Oid = Oid::new_unwrap("2.5.29.14");
    pub(super) const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub(super) const EXT_SAN: Oid = Oid::new_unwrap("2.5.29.17");
    pub(super) const EXT_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub(super) const EXT_AKI: Oid = Oid::new_unwrap("2.5.29.35");
    pub(super) const EXT_EKU: Oid = Oid::new_unwrap("2.5.29.37");
    pub(super) const EXT_CERT_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
}

// ------------------------------------------------------------------------------------------
// ASN.1 of RFC 3161 and RFC 5035 (what the `cms` crate does not define)
// ------------------------------------------------------------------------------------------

/// `MessageImprint ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, hashedMessage OCTET STRING }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct MessageImprint {
    hash_algorithm: AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

/// `TSTInfo` (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TstInfo {
    version: u8,
    policy: Oid,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: GenTime,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<x509_cert::ext::Extensions>,
}

/// `Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] .., micros [1] .. }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct Accuracy {
    #[asn1(optional = "true")]
    seconds: Option<u64>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    millis: Option<u16>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    micros: Option<u16>,
}

/// `TimeStampReq` (RFC 3161 §2.4.1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampReq {
    version: u8,
    message_imprint: MessageImprint,
    #[asn1(optional = "true")]
    req_policy: Option<Oid>,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(default = "Default::default")]
    cert_req: bool,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<x509_cert::ext::Extensions>,
}

/// `PKIStatusInfo` (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PkiStatusInfo {
    status: u32,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// `TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken TimeStampToken OPTIONAL }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<ContentInfo>,
}

/// `IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct IssuerSerial {
    issuer: Vec<GeneralName>,
    serial_number: SerialNumber,
}

fn sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::SHA256,
        parameters: None,
    }
}

/// `ESSCertIDv2` (RFC 5035): hash algorithm DEFAULT SHA-256 (absent means SHA-256; DER
/// omits the default).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<IssuerSerial>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Vec<Any>>,
}

/// `ESSCertID` (RFC 2634): SHA-1 certificate hash.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<IssuerSerial>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Vec<Any>>,
}

/// A `GeneralizedTime` that also accepts fractional seconds (`YYYYMMDDHHMMSS[.f*]Z`), which
/// RFC 3161 allows in `genTime` and many TSAs use. Encoded without a fraction (we stamp whole
/// seconds).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct GenTime(OffsetDateTime);

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length)?;
        parse_generalized_time(&bytes)
            .map(GenTime)
            .ok_or_else(|| Tag::GeneralizedTime.value_error())
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.text().len())
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.text().as_bytes())
    }
}

impl GenTime {
    fn text(&self) -> String {
        let t = self.0.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// `YYYYMMDDHHMMSS[.fraction]Z` → UTC time (fraction kept to the nanosecond). DER forbids a
/// trailing zero in the fraction and a bare dot; both are refused.
fn parse_generalized_time(b: &[u8]) -> Option<OffsetDateTime> {
    let s = std::str::from_utf8(b).ok()?;
    let s = s.strip_suffix('Z')?;
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => {
            if f.is_empty()
                || f.len() > 9
                || f.ends_with('0')
                || !f.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            (m, Some(f))
        }
        None => (s, None),
    };
    if main.len() != 14 || !main.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| main[r].parse::<u32>().ok();
    let year = i32::try_from(n(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(n(6..8)?).ok()?).ok()?;
    let nanos = match frac {
        Some(f) => f.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(f.len()).ok()?),
        None => 0,
    };
    let t = time::Time::from_hms_nano(
        u8::try_from(n(8..10)?).ok()?,
        u8::try_from(n(10..12)?).ok()?,
        u8::try_from(n(12..14)?).ok()?,
        nanos,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

// ------------------------------------------------------------------------------------------
// Certificates and trust roots
// ------------------------------------------------------------------------------------------

/// A parsed certificate with its exact DER and the exact DER of its `tbsCertificate`.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    tbs: Vec<u8>,
    cert: Certificate,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

impl Cert {
    /// Parse one DER certificate.
    pub fn from_der(der: &[u8]) -> std::result::Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        // The signed bytes are the first element of the outer SEQUENCE, exactly as sent.
        let outer = AnyRef::from_der(der).map_err(|e| e.to_string())?;
        let mut r = SliceReader::new(outer.value()).map_err(|e| e.to_string())?;
        let tbs = AnyRef::decode(&mut r).map_err(|e| e.to_string())?;
        Ok(Cert {
            der: der.to_vec(),
            tbs: tbs.to_der().map_err(|e| e.to_string())?,
            cert,
        })
    }

    /// Every `CERTIFICATE` block of a PEM text.
    pub fn from_pem_all(text: &[u8]) -> std::result::Result<Vec<Self>, String> {
        let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
        let certs: Vec<Cert> = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Cert::from_der(b.contents()))
            .collect::<std::result::Result<_, _>>()?;
        if certs.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        Ok(certs)
    }

    /// The subject, RFC 4514 style.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Lowercase hex SHA-256 of the DER (the certificate's fingerprint).
    pub fn fingerprint(&self) -> String {
        Sha256::of(&self.der).hex()
    }

    fn tbs(&self) -> &x509_cert::TbsCertificate {
        &self.cert.tbs_certificate
    }

    fn subject_der(&self) -> Vec<u8> {
        self.tbs().subject.to_der().unwrap_or_default()
    }

    fn issuer_der(&self) -> Vec<u8> {
        self.tbs().issuer.to_der().unwrap_or_default()
    }

    fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.tbs().subject_public_key_info
    }

    fn extension(&self, id: Oid) -> Option<&x509_cert::ext::Extension> {
        self.tbs()
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id == id))
    }

    fn valid_at(&self, at: OffsetDateTime) -> std::result::Result<(), String> {
        let v = &self.tbs().validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        let (from, to) = (secs(v.not_before), secs(v.not_after));
        let at_s = at.unix_timestamp();
        if at_s < from || at_s > to {
            return Err(format!(
                "certificate {} is valid from {} to {}, not at {}",
                self.subject(),
                v.not_before,
                v.not_after,
                format_time(at)
            ));
        }
        Ok(())
    }

    /// Extensions we understand; any other extension marked critical makes the certificate
    /// unusable (RFC 5280 §4.2).
    fn check_critical(&self) -> std::result::Result<(), String> {
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
                return Err(format!(
                    "certificate {} has an unsupported critical extension {}",
                    self.subject(),
                    e.extn_id
                ));
            }
        }
        Ok(())
    }

    fn key_usage(&self) -> std::result::Result<Option<KeyUsage>, String> {
        self.extension(oid::EXT_KEY_USAGE)
            .map(|e| KeyUsage::from_der(e.extn_value.as_bytes()))
            .transpose()
            .map_err(|e| format!("certificate {}: keyUsage: {e}", self.subject()))
    }

    /// May this certificate issue certificates? (basicConstraints cA, keyUsage keyCertSign)
    fn check_ca(&self) -> std::result::Result<(), String> {
        let bc = self
            .extension(oid::EXT_BASIC_CONSTRAINTS)
            .map(|e| BasicConstraints::from_der(e.extn_value.as_bytes()))
            .transpose()
            .map_err(|e| format!("certificate {}: basicConstraints: {e}", self.subject()))?;
        if !bc.is_some_and(|b| b.ca) {
            return Err(format!(
                "certificate {} is not a CA certificate (basicConstraints cA is not set) but issued the TSA certificate chain",
                self.subject()
            ));
        }
        if let Some(ku) = self.key_usage()? {
            if !ku.key_cert_sign() {
                return Err(format!(
                    "certificate {} may not sign certificates (keyUsage lacks keyCertSign)",
                    self.subject()
                ));
            }
        }
        Ok(())
    }

    /// RFC 3161 §2.3: the TSA certificate has one extended key usage, id-kp-timeStamping,
    /// and the extension is critical. Key usage, if present, must allow signatures.
    fn check_tsa(&self) -> std::result::Result<(), String> {
        let Some(ext) = self.extension(oid::EXT_EKU) else {
            return Err(format!(
                "the TSA certificate {} has no extended key usage: RFC 3161 requires id-kp-timeStamping (critical)",
                self.subject()
            ));
        };
        let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).map_err(|e| {
            format!(
                "the TSA certificate {}: extendedKeyUsage: {e}",
                self.subject()
            )
        })?;
        if eku.0.as_slice() != [oid::KP_TIME_STAMPING] {
            return Err(format!(
                "the TSA certificate {} is not for time stamping: its extended key usage must be exactly id-kp-timeStamping (has {})",
                self.subject(),
                eku.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        if !ext.critical {
            return Err(format!(
                "the TSA certificate {}: the id-kp-timeStamping extended key usage must be critical (RFC 3161 §2.3)",
                self.subject()
            ));
        }
        if let Some(ku) = self.key_usage()? {
            if !ku.digital_signature() && !ku.non_repudiation() {
                return Err(format!(
                    "the TSA certificate {} may not sign (keyUsage lacks digitalSignature)",
                    self.subject()
                ));
            }
        }
        self.check_critical()
    }

    /// Did `issuer` sign this certificate?
    fn signed_by(&self, issuer: &Cert) -> bool {
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

    fn matches_sid(&self, sid: &SignerIdentifier) -> bool {
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
        Cert::from_pem_all(text)
            .map(|certs| TrustRoots { certs })
            .map_err(|e| Error::input(format!("time trust roots: {e}")))
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }
}

/// Walk from `leaf` to a trust root, checking each link's signature, each issuer's CA rights
/// and each certificate's validity at `at`. Intermediates come from the token.
fn chain_to_root(
    leaf: &Cert,
    intermediates: &[Cert],
    roots: &TrustRoots,
    at: OffsetDateTime,
) -> std::result::Result<Vec<String>, String> {
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
    Err(format!(
        "the TSA certificate {} does not chain to a trusted root (--time-trust-roots)",
        leaf.subject()
    ))
}

// ------------------------------------------------------------------------------------------
// Signatures and digests
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(o: &Oid) -> Option<Self> {
        match *o {
            oid::SHA256 => Some(Hash::Sha256),
            oid::SHA384 => Some(Hash::Sha384),
            oid::SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }
}

fn hash_of(alg: &AlgorithmIdentifierOwned, what: &str) -> std::result::Result<Hash, String> {
    if alg.oid == oid::SHA1 {
        return Err(format!("{what} uses SHA-1, which is refused"));
    }
    Hash::from_oid(&alg.oid).ok_or_else(|| format!("{what} uses unsupported digest {}", alg.oid))
}

/// Verify `sig` over `msg` with the key of `spki`. `sig_alg` names the signature algorithm;
/// `digest` is the CMS digest algorithm, used when `sig_alg` names only the key type
/// (`rsaEncryption`, `id-ecPublicKey`) and required to agree when it names a hash.
fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    sig_alg: &AlgorithmIdentifierOwned,
    digest: Option<Hash>,
    msg: &[u8],
    sig: &[u8],
) -> std::result::Result<(), String> {
    let named = match sig_alg.oid {
        oid::ECDSA_SHA256 | oid::RSA_SHA256 => Some(Hash::Sha256),
        oid::ECDSA_SHA384 | oid::RSA_SHA384 => Some(Hash::Sha384),
        oid::ECDSA_SHA512 | oid::RSA_SHA512 => Some(Hash::Sha512),
        oid::RSA | oid::EC_PUBLIC_KEY | oid::ED25519 => None,
        other => return Err(format!("unsupported signature algorithm {other}")),
    };
    let hash = match (named, digest) {
        (Some(n), Some(d)) if n != d => {
            return Err(format!(
                "signature algorithm {} disagrees with digest algorithm {}",
                sig_alg.oid,
                d.name()
            ))
        }
        (Some(n), _) => Some(n),
        (None, d) => d,
    };
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key bit string is not byte-aligned")?;
    let alg: &'static dyn signature::VerificationAlgorithm = match spki.algorithm.oid {
        oid::EC_PUBLIC_KEY => {
            if !matches!(
                sig_alg.oid,
                oid::ECDSA_SHA256 | oid::ECDSA_SHA384 | oid::ECDSA_SHA512 | oid::EC_PUBLIC_KEY
            ) {
                return Err(format!(
                    "an EC key cannot verify a {} signature",
                    sig_alg.oid
                ));
            }
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<Oid>().ok())
                .ok_or("EC key without a named curve")?;
            match (curve, hash.ok_or("ECDSA without a digest algorithm")?) {
                (oid::P256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (oid::P256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (oid::P256, Hash::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                (oid::P384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (oid::P384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                (oid::P384, Hash::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                (c, _) => return Err(format!("unsupported EC curve {c}")),
            }
        }
        oid::RSA => {
            if !matches!(
                sig_alg.oid,
                oid::RSA | oid::RSA_SHA256 | oid::RSA_SHA384 | oid::RSA_SHA512
            ) {
                return Err(format!(
                    "an RSA key cannot verify a {} signature",
                    sig_alg.oid
                ));
            }
            match hash.ok_or("RSA without a digest algorithm")? {
                Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            }
        }
        oid::ED25519 => {
            if sig_alg.oid != oid::ED25519 {
                return Err(format!(
                    "an Ed25519 key cannot verify a {} signature",
                    sig_alg.oid
                ));
            }
            &signature::ED25519
        }
        other => return Err(format!("unsupported public key algorithm {other}")),
    };
    signature::UnparsedPublicKey::new(alg, key)
        .verify(msg, sig)
        .map_err(|_| "the signature does not verify".to_string())
}

// ------------------------------------------------------------------------------------------
// Tokens
// ------------------------------------------------------------------------------------------

/// What a structurally valid token, whose signature verified, says.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// `genTime`.
    pub gen_time: OffsetDateTime,
    /// TSA policy OID.
    pub policy: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Hash algorithm and value of the message imprint.
    pub imprint_algorithm: &'static str,
    pub imprint: Vec<u8>,
    imprint_hash: Hash,
    /// Nonce, if the request had one (big-endian bytes).
    pub nonce: Option<Vec<u8>>,
    /// The signing (TSA) certificate.
    pub signer: Cert,
    /// Other certificates the token carries.
    pub certs: Vec<Cert>,
}

fn bad(msg: impl fmt::Display) -> String {
    msg.to_string()
}

/// The TLVs of a DER SEQUENCE or SET value.
fn elements(value: &[u8]) -> std::result::Result<Vec<AnyRef<'_>>, String> {
    let mut r = SliceReader::new(value).map_err(bad)?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(AnyRef::decode(&mut r).map_err(bad)?);
    }
    Ok(out)
}

struct RawParts {
    certs: Vec<Vec<u8>>,
    signed_attrs: Option<Vec<u8>>,
}

/// Raw DER pieces of a SignedData the decoded form would lose: the certificates exactly as
/// sent, and the signed attributes re-tagged as the SET OF that was signed.
fn raw_parts(signed_data: &[u8]) -> std::result::Result<RawParts, String> {
    let sd = AnyRef::from_der(signed_data).map_err(bad)?;
    let fields = elements(sd.value())?;
    let mut certs = Vec::new();
    let cert_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    for f in &fields {
        if f.tag() == cert_tag {
            for c in elements(f.value())? {
                if c.tag() == Tag::Sequence {
                    certs.push(c.to_der().map_err(bad)?);
                }
            }
        }
    }
    let signer_infos = fields.last().ok_or("empty SignedData")?;
    let first = elements(signer_infos.value())?
        .into_iter()
        .next()
        .ok_or("no SignerInfo")?;
    let si = elements(first.value())?;
    let attrs = match si.get(3) {
        Some(a) if a.tag() == cert_tag => {
            let mut out = Vec::new();
            let len = Length::try_from(a.value().len()).map_err(bad)?;
            Header::new(Tag::Set, len)
                .map_err(bad)?
                .encode_to_vec(&mut out)
                .map_err(bad)?;
            out.extend_from_slice(a.value());
            Some(out)
        }
        _ => None,
    };
    Ok(RawParts {
        certs,
        signed_attrs: attrs,
    })
}

fn attr<'a>(attrs: &'a [Attribute], id: Oid, name: &str) -> std::result::Result<&'a Any, String> {
    let mut found = attrs.iter().filter(|a| a.oid == id);
    let a = found
        .next()
        .ok_or_else(|| format!("the signed attributes lack {name}"))?;
    if found.next().is_some() || a.values.len() != 1 {
        return Err(format!(
            "the signed attribute {name} must appear once with one value"
        ));
    }
    a.values
        .get(0)
        .ok_or_else(|| format!("{name} has no value"))
}

/// Parse a token and check everything that needs no trust decision: structure, the CMS
/// signature (by the signer certificate found in the token, or else among `extra`), the ESS
/// binding of that certificate, and the certificate's RFC 3161 profile and validity at
/// `genTime`.
pub fn check_token(token: &[u8], extra: &[Cert]) -> Result<TokenInfo> {
    check_token_inner(token, extra).map_err(|e| Error::verify(format!("time anchor: {e}")))
}

fn check_token_inner(token: &[u8], extra: &[Cert]) -> std::result::Result<TokenInfo, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("the token is above {MAX_TOKEN_BYTES} bytes"));
    }
    let ci = ContentInfo::from_der(token)
        .map_err(|e| format!("the token is not a CMS ContentInfo: {e}"))?;
    if ci.content_type != oid::SIGNED_DATA {
        return Err(format!(
            "the token is a CMS {}, not SignedData",
            ci.content_type
        ));
    }
    let sd_der = ci.content.to_der().map_err(bad)?;
    let sd = SignedData::from_der(&sd_der).map_err(|e| format!("the token's SignedData: {e}"))?;
    if sd.encap_content_info.econtent_type != oid::TST_INFO {
        return Err(format!(
            "the token signs {}, not a TSTInfo",
            sd.encap_content_info.econtent_type
        ));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("the token has no encapsulated TSTInfo")?;
    if econtent.tag() != Tag::OctetString {
        return Err("the encapsulated content is not an OCTET STRING".into());
    }
    let tst_der = econtent.value();
    let tst = TstInfo::from_der(tst_der).map_err(|e| format!("TSTInfo: {e}"))?;
    if tst.version != 1 {
        return Err(format!("TSTInfo version {} (expected 1)", tst.version));
    }
    let imprint_hash = hash_of(&tst.message_imprint.hash_algorithm, "the message imprint")?;

    let infos: Vec<&SignerInfo> = sd.signer_infos.0.iter().collect();
    let [si] = infos.as_slice() else {
        return Err(format!(
            "the token has {} SignerInfos (expected 1)",
            infos.len()
        ));
    };
    let raw = raw_parts(&sd_der)?;
    let certs: Vec<Cert> = raw
        .certs
        .iter()
        .map(|c| Cert::from_der(c))
        .collect::<std::result::Result<_, _>>()?;
    let signer = certs
        .iter()
        .chain(extra)
        .find(|c| c.matches_sid(&si.sid))
        .cloned()
        .ok_or("the TSA certificate is neither in the token nor among the trust roots")?;

    // Signed attributes: content type, message digest, ESS signing certificate.
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or("the SignerInfo has no signed attributes")?;
    let attrs: Vec<Attribute> = attrs.iter().cloned().collect();
    let digest_alg = hash_of(&si.digest_alg, "the SignerInfo")?;
    let ct = attr(&attrs, oid::CONTENT_TYPE, "content-type")?
        .decode_as::<Oid>()
        .map_err(|e| format!("content-type: {e}"))?;
    if ct != oid::TST_INFO {
        return Err(format!("the content-type attribute is {ct}, not TSTInfo"));
    }
    let md = attr(&attrs, oid::MESSAGE_DIGEST, "message-digest")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("message-digest: {e}"))?;
    if md.as_bytes() != digest_alg.digest(tst_der).as_slice() {
        return Err(
            "the message-digest attribute does not match the TSTInfo (tampered token)".into(),
        );
    }
    check_ess(&attrs, &signer)?;

    // The signature over the signed attributes.
    let raw_attrs = raw
        .signed_attrs
        .ok_or("the SignerInfo has no signed attributes")?;
    verify_signature(
        signer.spki(),
        &si.signature_algorithm,
        Some(digest_alg),
        &raw_attrs,
        si.signature.as_bytes(),
    )
    .map_err(|e| {
        format!(
            "token signature by {}: {e} (tampered token or wrong certificate)",
            signer.subject()
        )
    })?;

    // The TSA certificate's profile, at the time it stamped.
    let gen_time = tst.gen_time.0;
    signer.check_tsa()?;
    signer.valid_at(gen_time)?;
    if let Some(name) = &tst.tsa {
        let ok = match name {
            GeneralName::DirectoryName(n) => n.to_der().ok() == Some(signer.subject_der()),
            other => signer
                .extension(oid::EXT_SAN)
                .and_then(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
                .is_some_and(|san| san.0.iter().any(|g| g == other)),
        };
        if !ok {
            return Err(format!(
                "the TSTInfo names a TSA that is not the signer {}",
                signer.subject()
            ));
        }
    }
    let others = certs.into_iter().filter(|c| c.der != signer.der).collect();
    Ok(TokenInfo {
        gen_time,
        policy: tst.policy.to_string(),
        serial: stella_keys::hex(tst.serial_number.as_bytes()),
        imprint_algorithm: imprint_hash.name(),
        imprint_hash,
        imprint: tst.message_imprint.hashed_message.as_bytes().to_vec(),
        nonce: tst.nonce.map(|n| n.as_bytes().to_vec()),
        signer,
        certs: others,
    })
}

/// The ESS signing-certificate attribute (v2, or v1 with SHA-1) must name the signer: its
/// first certificate ID hashes to the signer's certificate, and its issuer/serial (if given)
/// are the certificate's.
fn check_ess(attrs: &[Attribute], signer: &Cert) -> std::result::Result<(), String> {
    let issuer_serial_ok = |is: &Option<IssuerSerial>| {
        match is {
        None => true,
        Some(is) => {
            is.serial_number.as_bytes() == signer.tbs().serial_number.as_bytes()
                && is.issuer.iter().any(|g| matches!(g, GeneralName::DirectoryName(n) if n.to_der().ok() == Some(signer.issuer_der())))
        }
    }
    };
    if attrs.iter().any(|a| a.oid == oid::SIGNING_CERT_V2) {
        let v2 = attr(attrs, oid::SIGNING_CERT_V2, "signing-certificate-v2")?
            .decode_as::<SigningCertificateV2>()
            .map_err(|e| format!("signing-certificate-v2: {e}"))?;
        let first = v2
            .certs
            .first()
            .ok_or("signing-certificate-v2 names no certificate")?;
        let h = match &first.hash_algorithm {
            None => Hash::Sha256,
            Some(a) => hash_of(a, "signing-certificate-v2")?,
        };
        if first.cert_hash.as_bytes() != h.digest(&signer.der).as_slice()
            || !issuer_serial_ok(&first.issuer_serial)
        {
            return Err(format!(
                "the signing-certificate-v2 attribute does not name the signer certificate {}",
                signer.subject()
            ));
        }
        return Ok(());
    }
    if attrs.iter().any(|a| a.oid == oid::SIGNING_CERT) {
        let v1 = attr(attrs, oid::SIGNING_CERT, "signing-certificate")?
            .decode_as::<SigningCertificate>()
            .map_err(|e| format!("signing-certificate: {e}"))?;
        let first = v1
            .certs
            .first()
            .ok_or("signing-certificate names no certificate")?;
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &signer.der);
        if first.cert_hash.as_bytes() != sha1.as_ref() || !issuer_serial_ok(&first.issuer_serial) {
            return Err(format!(
                "the signing-certificate attribute does not name the signer certificate {}",
                signer.subject()
            ));
        }
        return Ok(());
    }
    Err(
        "the signed attributes lack the ESS signing-certificate(-v2) attribute RFC 3161 requires"
            .into(),
    )
}

// ------------------------------------------------------------------------------------------
// The RFC 3161 HTTP exchange
// ------------------------------------------------------------------------------------------

/// A `TimeStampReq` (DER) for a SHA-256 digest, asking for the TSA certificate.
pub fn request(sha256: &[u8; 32], nonce: &[u8; 8]) -> Result<Vec<u8>> {
    let mut n = nonce.to_vec();
    n[0] &= 0x7f; // positive
    let req = TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: sha256_algorithm(),
            hashed_message: OctetString::new(sha256.to_vec()).map_err(der_err)?,
        },
        req_policy: None,
        nonce: Some(Int::new(&n).map_err(der_err)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(der_err)
}

fn der_err(e: der::Error) -> Error {
    Error::input(format!("time anchor: DER encoding: {e}"))
}

/// The token of a `TimeStampResp`, after checking the status (granted), that it stamps
/// `sha256` and echoes `nonce`, and that its signature verifies.
pub fn token_from_response(resp: &[u8], sha256: &[u8; 32], nonce: &[u8; 8]) -> Result<Vec<u8>> {
    let token = unwrap_response(resp)?;
    let info = check_token(&token, &[])?;
    if info.imprint != sha256 {
        return Err(Error::verify(
            "time anchor: the TSA stamped another digest than the one requested",
        ));
    }
    let mut n = nonce.to_vec();
    n[0] &= 0x7f;
    let want = Int::new(&n).map_err(der_err)?;
    if info.nonce.as_deref() != Some(want.as_bytes()) {
        return Err(Error::verify(
            "time anchor: the TSA response does not echo the request nonce (replayed response?)",
        ));
    }
    Ok(token)
}

/// A token from a file: a TimeStampToken (CMS ContentInfo) as is, or the token of a
/// TimeStampResp (`openssl ts -reply` output) whose status is granted.
pub fn token_from_bytes(bytes: &[u8]) -> Result<Vec<u8>> {
    if let Ok(ci) = ContentInfo::from_der(bytes) {
        if ci.content_type == oid::SIGNED_DATA {
            return Ok(bytes.to_vec());
        }
    }
    unwrap_response(bytes)
}

fn unwrap_response(resp: &[u8]) -> Result<Vec<u8>> {
    let r = TimeStampResp::from_der(resp).map_err(|e| {
        Error::verify(format!(
            "time anchor: not an RFC 3161 TimeStampResp or TimeStampToken: {e}"
        ))
    })?;
    // 0 granted, 1 grantedWithMods; 2 rejection, 3 waiting, 4/5 revocation warning/notification.
    if r.status.status > 1 {
        let text = r
            .status
            .status_string
            .map(|s| s.join("; "))
            .unwrap_or_default();
        return Err(Error::verify(format!(
            "time anchor: the TSA refused the request (PKIStatus {}){}",
            r.status.status,
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        )));
    }
    let token = r
        .time_stamp_token
        .ok_or_else(|| Error::verify("time anchor: the TSA response carries no token"))?;
    token.to_der().map_err(der_err)
}

// ------------------------------------------------------------------------------------------
// A local TSA
// ------------------------------------------------------------------------------------------

/// Produces RFC 3161 tokens with a P-256 key and its TSA certificate.
pub struct LocalTsa<'a> {
    key: &'a dyn Signer,
    chain: Vec<Cert>,
    policy: Oid,
    /// Made by [`LocalTsa::new`]: tokens are checked before they are handed out.
    checked: bool,
}

impl fmt::Debug for LocalTsa<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTsa")
            .field("cert", &self.chain.first())
            .field("policy", &self.policy)
            .finish()
    }
}

impl<'a> LocalTsa<'a> {
    /// `certs_pem`: the TSA certificate first, then any chain to include in tokens. The key
    /// must be ECDSA P-256 and match the certificate, and the certificate must be a TSA
    /// certificate (critical extended key usage id-kp-timeStamping only) valid now.
    pub fn new(key: &'a dyn Signer, certs_pem: &[u8], policy: Option<&str>) -> Result<Self> {
        let mut tsa = Self::new_unchecked(key, certs_pem, policy)?;
        tsa.checked = true;
        let cert = &tsa.chain[0];
        cert.check_tsa().map_err(|e| {
            Error::input(format!("--tsa-cert: {e}; tokens it signs would be refused"))
        })?;
        cert.valid_at(OffsetDateTime::now_utc())
            .map_err(|e| Error::input(format!("--tsa-cert: {e}")))?;
        Ok(tsa)
    }

    /// [`LocalTsa::new`] without the TSA certificate profile checks: only for building the
    /// hostile tokens verifiers must refuse (tests).
    #[doc(hidden)]
    pub fn new_unchecked(
        key: &'a dyn Signer,
        certs_pem: &[u8],
        policy: Option<&str>,
    ) -> Result<Self> {
        if key.algorithm() != stella_keys::Algorithm::EcdsaP256Sha256 {
            return Err(Error::input(format!(
                "--tsa-key: a TSA key must be ECDSA P-256 (this one is {})",
                key.algorithm()
            )));
        }
        let chain =
            Cert::from_pem_all(certs_pem).map_err(|e| Error::input(format!("--tsa-cert: {e}")))?;
        let spki = chain[0].spki().to_der().map_err(der_err)?;
        if spki != key.public_key().spki_der() {
            return Err(Error::input(format!(
                "--tsa-key does not match the certificate {} (--tsa-cert): the first certificate must be the key's",
                chain[0].subject()
            )));
        }
        // The TSA policy: given, or the first policy of the TSA certificate.
        let policy = match policy {
            Some(p) => parse_oid(p)
                .map_err(|e| Error::input(format!("--tsa-policy {p:?}: not an OID: {e}")))?,
            None => chain[0]
                .extension(oid::EXT_CERT_POLICIES)
                .and_then(|e| {
                    x509_cert::ext::pkix::CertificatePolicies::from_der(e.extn_value.as_bytes()).ok()
                })
                .and_then(|p| p.0.first().map(|i| i.policy_identifier))
                .ok_or_else(|| {
                    Error::input(format!(
                        "the TSA certificate {} names no policy (certificatePolicies): give --tsa-policy OID, the policy its tokens are issued under",
                        chain[0].subject()
                    ))
                })?,
        };
        Ok(LocalTsa {
            key,
            chain,
            policy,
            checked: false,
        })
    }

    /// `local TSA <subject>`: the anchor's `source`.
    pub fn source(&self) -> String {
        format!("local TSA {}", self.chain[0].subject())
    }

    /// A TimeStampToken (DER) over a SHA-256 digest, stamped `at` (whole seconds).
    pub fn timestamp(&self, sha256: &[u8; 32], at: OffsetDateTime) -> Result<Vec<u8>> {
        let cert = &self.chain[0];
        let at = at
            .replace_nanosecond(0)
            .map_err(|e| Error::input(format!("time anchor: {e}")))?;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| Error::input("time anchor: no randomness for the serial number"))?;
        serial[0] = (serial[0] & 0x7f) | 0x40; // positive, 16 bytes
        let tst = TstInfo {
            version: 1,
            policy: self.policy,
            message_imprint: MessageImprint {
                hash_algorithm: sha256_algorithm(),
                hashed_message: OctetString::new(sha256.to_vec()).map_err(der_err)?,
            },
            serial_number: Int::new(&serial).map_err(der_err)?,
            gen_time: GenTime(at),
            accuracy: None,
            ordering: false,
            nonce: None,
            tsa: Some(GeneralName::DirectoryName(cert.tbs().subject.clone())),
            extensions: None,
        };
        let tst_der = tst.to_der().map_err(der_err)?;
        let unix = std::time::Duration::from_secs(u64::try_from(at.unix_timestamp()).unwrap_or(0));
        let signing_time = match UtcTime::from_unix_duration(unix) {
            Ok(t) => Any::encode_from(&t),
            Err(_) => Any::encode_from(
                &der::asn1::GeneralizedTime::from_unix_duration(unix).map_err(der_err)?,
            ),
        }
        .map_err(der_err)?;
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(Sha256::of(&cert.der).0.to_vec()).map_err(der_err)?,
                issuer_serial: Some(IssuerSerial {
                    issuer: vec![GeneralName::DirectoryName(cert.tbs().issuer.clone())],
                    serial_number: cert.tbs().serial_number.clone(),
                }),
            }],
            policies: None,
        };
        let attribute = |id: Oid, value: Any| -> Result<Attribute> {
            Ok(Attribute {
                oid: id,
                values: SetOfVec::try_from(vec![value]).map_err(der_err)?,
            })
        };
        let attrs = SetOfVec::try_from(vec![
            attribute(
                oid::CONTENT_TYPE,
                Any::encode_from(&oid::TST_INFO).map_err(der_err)?,
            )?,
            attribute(oid::SIGNING_TIME, signing_time)?,
            attribute(
                oid::MESSAGE_DIGEST,
                Any::encode_from(
                    &OctetString::new(Sha256::of(&tst_der).0.to_vec()).map_err(der_err)?,
                )
                .map_err(der_err)?,
            )?,
            attribute(
                oid::SIGNING_CERT_V2,
                Any::encode_from(&ess).map_err(der_err)?,
            )?,
        ])
        .map_err(der_err)?;
        let to_sign = attrs.to_der().map_err(der_err)?;
        let sig = self.key.sign(&to_sign)?;
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: cert.tbs().issuer.clone(),
                serial_number: cert.tbs().serial_number.clone(),
            }),
            digest_alg: sha256_algorithm(),
            signed_attrs: Some(attrs),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: oid::ECDSA_SHA256,
                parameters: None,
            },
            signature: OctetString::new(sig).map_err(der_err)?,
            unsigned_attrs: None,
        };
        let certs = self
            .chain
            .iter()
            .map(|c| CertificateChoices::Certificate(c.cert.clone()))
            .collect::<Vec<_>>();
        let signed_data = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![sha256_algorithm()]).map_err(der_err)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: oid::TST_INFO,
                econtent: Some(Any::new(Tag::OctetString, tst_der).map_err(der_err)?),
            },
            certificates: Some(CertificateSet::try_from(certs).map_err(der_err)?),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(der_err)?,
        };
        let token = ContentInfo {
            content_type: oid::SIGNED_DATA,
            content: Any::encode_from(&signed_data).map_err(der_err)?,
        }
        .to_der()
        .map_err(der_err)?;
        // Never hand out a token we would refuse.
        if self.checked {
            check_token(&token, &[])?;
        }
        Ok(token)
    }
}

// ------------------------------------------------------------------------------------------
// time-anchor.json
// ------------------------------------------------------------------------------------------

/// `time-anchor.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnchorFile {
    pub anchor_time: String,
    pub format: String,
    pub source: String,
    pub token: String,
    pub token_digest: String,
}

/// A time anchor that verified (see [`verify_anchor`]).
#[derive(Debug, Clone)]
pub struct Anchor {
    /// The TSA's time (`genTime` = `anchorTime`).
    pub time: OffsetDateTime,
    pub source: String,
    /// Subject of the TSA certificate.
    pub tsa: String,
    /// SHA-256 fingerprint of the TSA certificate.
    pub tsa_fingerprint: String,
    pub policy: String,
    pub serial: String,
    pub token_digest: String,
    /// The certificate chain leads to a trust root (subjects, TSA first); `None` when no
    /// trust roots were given: the anchor is then reported, not trusted.
    pub chain: Option<Vec<String>>,
}

impl Anchor {
    pub fn trusted(&self) -> bool {
        self.chain.is_some()
    }
}

/// Build `time-anchor.json` for a token over `manifest_bytes` (checked first).
pub fn anchor_file(token: &[u8], source: &str, manifest_bytes: &[u8]) -> Result<(Vec<u8>, Anchor)> {
    let info = check_token(token, &[])?;
    check_imprint(&info, manifest_bytes)?;
    let file = AnchorFile {
        anchor_time: format_time(info.gen_time),
        format: FORMAT.into(),
        source: source.into(),
        token: stella_dsse::b64::encode(token),
        token_digest: Sha256::of(token).prefixed(),
    };
    let bytes = stella_dsse::jcs::to_vec(&file).map_err(|e| Error::input(e.to_string()))?;
    let anchor = verify_anchor(&bytes, manifest_bytes, None)?;
    Ok((bytes, anchor))
}

fn check_imprint(info: &TokenInfo, manifest_bytes: &[u8]) -> Result<()> {
    if info.imprint != info.imprint_hash.digest(manifest_bytes) {
        return Err(Error::verify(format!(
            "time anchor: the token stamps {} {}, not this bundle's manifest (sha256:{}): it belongs to another manifest",
            info.imprint_algorithm,
            stella_keys::hex(&info.imprint),
            Sha256::of(manifest_bytes).hex()
        )));
    }
    Ok(())
}

/// Verify `time-anchor.json` against the manifest it must stamp; with `roots`, also that the
/// TSA certificate chains to one of them (the anchor is then trusted).
pub fn verify_anchor(
    bytes: &[u8],
    manifest_bytes: &[u8],
    roots: Option<&TrustRoots>,
) -> Result<Anchor> {
    let value = stella_dsse::jcs::parse_strict(bytes)
        .map_err(|e| Error::verify(format!("time-anchor.json: {e}")))?;
    let file: AnchorFile = serde_json::from_value(value)
        .map_err(|e| Error::verify(format!("time-anchor.json: {e}")))?;
    if file.format != FORMAT {
        return Err(Error::verify(format!(
            "time-anchor.json has format {:?}; only \"{FORMAT}\" is supported",
            file.format
        )));
    }
    let token = stella_dsse::b64::decode(&file.token)
        .map_err(|e| Error::verify(format!("time-anchor.json token: {e}")))?;
    let digest = Sha256::of(&token).prefixed();
    if digest != file.token_digest {
        return Err(Error::verify(format!(
            "time-anchor.json tokenDigest {} does not match the token ({digest}): tampered token",
            file.token_digest
        )));
    }
    let extra = roots.map(TrustRoots::certs).unwrap_or_default();
    let info = check_token(&token, extra)?;
    check_imprint(&info, manifest_bytes)?;
    let stated = crate::manifest::parse_time(&file.anchor_time)
        .map_err(|e| Error::verify(format!("time-anchor.json anchorTime: {e}")))?;
    let gen_ms = info.gen_time.unix_timestamp_nanos() / 1_000_000;
    if stated.unix_timestamp_nanos() / 1_000_000 != gen_ms {
        return Err(Error::verify(format!(
            "time-anchor.json anchorTime {} differs from the token's time {}",
            file.anchor_time,
            format_time(info.gen_time)
        )));
    }
    let chain = match roots {
        Some(r) => Some(
            chain_to_root(&info.signer, &info.certs, r, info.gen_time)
                .map_err(|e| Error::verify(format!("time anchor: {e}")))?,
        ),
        None => None,
    };
    Ok(Anchor {
        time: info.gen_time,
        source: file.source,
        tsa: info.signer.subject(),
        tsa_fingerprint: info.signer.fingerprint(),
        policy: info.policy,
        serial: info.serial,
        token_digest: file.token_digest,
        chain,
    })
}

/// Something that stamps a SHA-256 digest: a [`LocalTsa`], or (in the CLI) a TSA over HTTP.
pub trait TimeStamper {
    /// The anchor's `source`.
    fn source(&self) -> String;
    /// A TimeStampToken (DER) over `sha256`.
    fn stamp(&self, sha256: &[u8; 32]) -> Result<Vec<u8>>;
}

impl TimeStamper for LocalTsa<'_> {
    fn source(&self) -> String {
        LocalTsa::source(self)
    }
    fn stamp(&self, sha256: &[u8; 32]) -> Result<Vec<u8>> {
        self.timestamp(sha256, OffsetDateTime::now_utc())
    }
}

/// Stamp the signed bundle in `dir` and write its `time-anchor.json` (replacing any).
/// The folder must hold a `manifest.dsse` whose payload is `manifest.json` (no key is
/// needed: the anchor stamps whatever manifest the envelope signs, and `verify` checks the
/// signature).
pub fn attach(dir: &std::path::Path, stamper: &dyn TimeStamper) -> Result<Anchor> {
    let manifest = signed_manifest(dir)?;
    let token = stamper.stamp(&Sha256::of(&manifest).0)?;
    write_anchor(dir, &token, &stamper.source(), &manifest)
}

/// Attach a token obtained elsewhere (e.g. `openssl ts -query` → TSA → `-reply`).
pub fn attach_token(
    dir: &std::path::Path,
    token_or_response: &[u8],
    source: &str,
) -> Result<Anchor> {
    let manifest = signed_manifest(dir)?;
    let token = token_from_bytes(token_or_response)?;
    write_anchor(dir, &token, source, &manifest)
}

/// Write `dir/time-anchor.json` for `token`, which must stamp `manifest` (the bundle's
/// `manifest.json` bytes) and verify (everything but the trust chain).
pub fn write_anchor(
    dir: &std::path::Path,
    token: &[u8],
    source: &str,
    manifest: &[u8],
) -> Result<Anchor> {
    let (bytes, anchor) = anchor_file(token, source, manifest)?;
    crate::sign::write_file(&dir.join(crate::names::TIME_ANCHOR), &bytes)?;
    Ok(anchor)
}

/// `manifest.json` of a signed folder, checked to be the payload of `manifest.dsse` (the
/// bytes a time anchor stamps).
pub fn signed_manifest(dir: &std::path::Path) -> Result<Vec<u8>> {
    use crate::names;
    let manifest = crate::archive::read_metadata_file(dir, names::MANIFEST)?
        .ok_or_else(|| Error::NotFound(dir.join(names::MANIFEST)))?;
    let env = crate::archive::read_metadata_file(dir, names::ENVELOPE)?.ok_or_else(|| {
        Error::input(format!(
            "{} is not signed (no manifest.dsse): a time anchor stamps the signed manifest",
            dir.display()
        ))
    })?;
    let env = stella_dsse::Envelope::from_json_with_limit(&env, crate::MAX_METADATA_BYTES as usize)
        .map_err(|e| Error::input(format!("manifest.dsse: {e}")))?;
    if env.payload != manifest {
        return Err(Error::input(
            "manifest.json differs from the payload of manifest.dsse: sign the bundle again first",
        ));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_with_and_without_fraction() {
        let t = parse_generalized_time(b"20251126041500Z").unwrap();
        assert_eq!(format_time(t), "2025-11-26T04:15:00.000Z");
        let t = parse_generalized_time(b"20251126041500.25Z").unwrap();
        assert_eq!(format_time(t), "2025-11-26T04:15:00.250Z");
        for bad in [
            &b"20251126041500"[..],
            b"20251126041500.Z",
            b"20251126041500.50Z",
            b"2025112604150Z",
            b"20251326041500Z",
            b"20251126041500+0100",
        ] {
            assert!(
                parse_generalized_time(bad).is_none(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        let g = GenTime(parse_generalized_time(b"20251126041500Z").unwrap());
        let der = g.to_der().unwrap();
        assert_eq!(&der[2..], b"20251126041500Z");
        assert_eq!(GenTime::from_der(&der).unwrap(), g);
    }

    #[test]
    fn user_oids_are_checked_not_overflowed() {
        assert_eq!(parse_oid("1.2.3.4.1").unwrap().to_string(), "1.2.3.4.1");
        for bad in [
            "",
            "1",
            "3.1",
            "1.40",
            "1..2",
            "1.2.a",
            "2.25.50037994907732317489139054889395844863",
            "2.999.1",
        ] {
            assert!(parse_oid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_is_the_rfc_3161_shape() {
        let req = request(&[7u8; 32], &[0xff; 8]).unwrap();
        let r = TimeStampReq::from_der(&req).unwrap();
        assert_eq!(r.version, 1);
        assert!(r.cert_req);
        assert_eq!(r.message_imprint.hash_algorithm.oid, oid::SHA256);
        assert_eq!(r.message_imprint.hashed_message.as_bytes(), &[7u8; 32]);
        assert_eq!(r.nonce.unwrap().as_bytes()[0], 0x7f);
    }

    #[test]
    fn garbage_is_refused_with_a_clear_message() {
        let e = check_token(b"\x30\x03\x02\x01\x01", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a CMS ContentInfo"), "{e}");
        let e = token_from_bytes(b"nonsense").unwrap_err().to_string();
        assert!(e.contains("not an RFC 3161"), "{e}");
    }
}
