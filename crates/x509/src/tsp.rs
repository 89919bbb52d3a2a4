//! RFC 3161 time-stamp tokens: the ASN.1 the `cms` crate lacks, token checks, the HTTP
//! exchange's request and response, and a local TSA that writes tokens like `openssl ts`.

use std::fmt;

use aws_lc_rs::digest;
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
use stella_keys::Signer;
use time::OffsetDateTime;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::cert::{hash_of, verify_signature, Cert, Hash};
use crate::error::{InputError, OidError, TokenError};
use crate::oid::{self, Oid};
use crate::{Error, Result};

/// Largest token we accept (a token with a certificate chain is a few KiB).
const MAX_TOKEN_BYTES: usize = 1 << 20;

/// Most certificates a token may carry (a TSA sends its own and its chain: two to four).
/// Each is a candidate issuer at every link of the chain to a time root, a signature check
/// when its subject matches: the count bounds that work (the token's certificates are not
/// signed by anything the token is checked against).
pub const MAX_TOKEN_CERTIFICATES: usize = 32;

/// Parse a dotted OID given by a user, refusing (rather than overflowing on) arcs above
/// 2^32 - 1, which the OID type cannot hold.
fn parse_oid(text: &str) -> std::result::Result<Oid, OidError> {
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
        .ok_or(OidError::NotDecimal)?;
    match nums.as_slice() {
        [first, second, ..] if *first <= 2 && (*first == 2 || *second < 40) => {}
        _ => return Err(OidError::FirstArcs),
    }
    Oid::new(text).map_err(OidError::Invalid)
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
    pub imprint_hash: Hash,
    /// Nonce, if the request had one (big-endian bytes).
    pub nonce: Option<Vec<u8>>,
    /// The signing (TSA) certificate.
    pub signer: Cert,
    /// Other certificates the token carries.
    pub certs: Vec<Cert>,
}

/// The TLVs of a DER SEQUENCE or SET value.
fn elements(value: &[u8]) -> std::result::Result<Vec<AnyRef<'_>>, TokenError> {
    let mut r = SliceReader::new(value)?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(AnyRef::decode(&mut r)?);
    }
    Ok(out)
}

struct RawParts {
    certs: Vec<Vec<u8>>,
    signed_attrs: Option<Vec<u8>>,
}

/// Raw DER pieces of a SignedData the decoded form would lose: the certificates exactly as
/// sent, and the signed attributes re-tagged as the SET OF that was signed.
fn raw_parts(signed_data: &[u8]) -> std::result::Result<RawParts, TokenError> {
    let sd = AnyRef::from_der(signed_data)?;
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
                    certs.push(c.to_der()?);
                }
            }
        }
    }
    let signer_infos = fields.last().ok_or(TokenError::EmptySignedData)?;
    let first = elements(signer_infos.value())?
        .into_iter()
        .next()
        .ok_or(TokenError::NoSignerInfo)?;
    let si = elements(first.value())?;
    let attrs = match si.get(3) {
        Some(a) if a.tag() == cert_tag => {
            let mut out = Vec::new();
            let len = Length::try_from(a.value().len())?;
            Header::new(Tag::Set, len)?.encode_to_vec(&mut out)?;
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

fn attr<'a>(
    attrs: &'a [Attribute],
    id: Oid,
    name: &'static str,
) -> std::result::Result<&'a Any, TokenError> {
    let mut found = attrs.iter().filter(|a| a.oid == id);
    let a = found.next().ok_or(TokenError::MissingAttribute(name))?;
    if found.next().is_some() || a.values.len() != 1 {
        return Err(TokenError::AttributeNotSingle(name));
    }
    a.values.get(0).ok_or(TokenError::AttributeNoValue(name))
}

/// Parse a token and check everything that needs no trust decision: structure, the CMS
/// signature (by the signer certificate found in the token, or else among `extra`), the ESS
/// binding of that certificate, and the certificate's RFC 3161 profile and validity at
/// `genTime`.
pub fn check_token(token: &[u8], extra: &[Cert]) -> Result<TokenInfo> {
    check_token_inner(token, extra).map_err(Error::Token)
}

fn check_token_inner(token: &[u8], extra: &[Cert]) -> std::result::Result<TokenInfo, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(MAX_TOKEN_BYTES));
    }
    let ci = ContentInfo::from_der(token).map_err(TokenError::NotContentInfo)?;
    if ci.content_type != oid::SIGNED_DATA {
        return Err(TokenError::NotSignedData(ci.content_type));
    }
    let sd_der = ci.content.to_der()?;
    let sd = SignedData::from_der(&sd_der).map_err(TokenError::SignedData)?;
    if sd.encap_content_info.econtent_type != oid::TST_INFO {
        return Err(TokenError::NotTstInfo(sd.encap_content_info.econtent_type));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(TokenError::NoTstInfo)?;
    if econtent.tag() != Tag::OctetString {
        return Err(TokenError::ContentNotOctetString);
    }
    let tst_der = econtent.value();
    let tst = TstInfo::from_der(tst_der).map_err(TokenError::TstInfo)?;
    if tst.version != 1 {
        return Err(TokenError::TstVersion(tst.version));
    }
    let imprint_hash = hash_of(&tst.message_imprint.hash_algorithm, "the message imprint")?;

    let infos: Vec<&SignerInfo> = sd.signer_infos.0.iter().collect();
    let [si] = infos.as_slice() else {
        return Err(TokenError::SignerInfoCount(infos.len()));
    };
    let raw = raw_parts(&sd_der)?;
    if raw.certs.len() > MAX_TOKEN_CERTIFICATES {
        return Err(TokenError::TooManyCertificates(
            raw.certs.len(),
            MAX_TOKEN_CERTIFICATES,
        ));
    }
    let certs: Vec<Cert> = raw
        .certs
        .iter()
        .map(|c| Cert::parse(c))
        .collect::<std::result::Result<_, _>>()?;
    let signer = certs
        .iter()
        .chain(extra)
        .find(|c| c.matches_sid(&si.sid))
        .cloned()
        .ok_or(TokenError::SignerNotFound)?;

    // Signed attributes: content type, message digest, ESS signing certificate.
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or(TokenError::NoSignedAttributes)?;
    let attrs: Vec<Attribute> = attrs.iter().cloned().collect();
    let digest_alg = hash_of(&si.digest_alg, "the SignerInfo")?;
    let ct = attr(&attrs, oid::CONTENT_TYPE, "content-type")?
        .decode_as::<Oid>()
        .map_err(|source| TokenError::AttributeDecode {
            name: "content-type",
            source,
        })?;
    if ct != oid::TST_INFO {
        return Err(TokenError::ContentType(ct));
    }
    let md = attr(&attrs, oid::MESSAGE_DIGEST, "message-digest")?
        .decode_as::<OctetString>()
        .map_err(|source| TokenError::AttributeDecode {
            name: "message-digest",
            source,
        })?;
    if md.as_bytes() != digest_alg.digest(tst_der).as_slice() {
        return Err(TokenError::MessageDigest);
    }
    check_ess(&attrs, &signer)?;

    // The signature over the signed attributes.
    let raw_attrs = raw.signed_attrs.ok_or(TokenError::NoSignedAttributes)?;
    verify_signature(
        signer.spki(),
        &si.signature_algorithm,
        Some(digest_alg),
        &raw_attrs,
        si.signature.as_bytes(),
    )
    .map_err(|source| TokenError::Signature {
        subject: signer.subject(),
        source,
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
            return Err(TokenError::TsaName(signer.subject()));
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
fn check_ess(attrs: &[Attribute], signer: &Cert) -> std::result::Result<(), TokenError> {
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
            .map_err(|source| TokenError::AttributeDecode {
                name: "signing-certificate-v2",
                source,
            })?;
        let first = v2.certs.first().ok_or(TokenError::EssEmpty {
            attribute: "signing-certificate-v2",
        })?;
        let h = match &first.hash_algorithm {
            None => Hash::Sha256,
            Some(a) => hash_of(a, "signing-certificate-v2")?,
        };
        if first.cert_hash.as_bytes() != h.digest(&signer.der).as_slice()
            || !issuer_serial_ok(&first.issuer_serial)
        {
            return Err(TokenError::EssMismatch {
                attribute: "signing-certificate-v2",
                subject: signer.subject(),
            });
        }
        return Ok(());
    }
    if attrs.iter().any(|a| a.oid == oid::SIGNING_CERT) {
        let v1 = attr(attrs, oid::SIGNING_CERT, "signing-certificate")?
            .decode_as::<SigningCertificate>()
            .map_err(|source| TokenError::AttributeDecode {
                name: "signing-certificate",
                source,
            })?;
        let first = v1.certs.first().ok_or(TokenError::EssEmpty {
            attribute: "signing-certificate",
        })?;
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &signer.der);
        if first.cert_hash.as_bytes() != sha1.as_ref() || !issuer_serial_ok(&first.issuer_serial) {
            return Err(TokenError::EssMismatch {
                attribute: "signing-certificate",
                subject: signer.subject(),
            });
        }
        return Ok(());
    }
    Err(TokenError::NoEss)
}

// ------------------------------------------------------------------------------------------
// The RFC 3161 HTTP exchange
// ------------------------------------------------------------------------------------------

/// The nonce as a positive INTEGER in canonical DER: the top bit cleared, and leading zero
/// bytes dropped unless the next byte needs one to stay positive.
fn nonce_int(nonce: &[u8; 8]) -> Result<Int> {
    let mut n = nonce.to_vec();
    n[0] &= 0x7f;
    let mut i = 0;
    while i + 1 < n.len() && n[i] == 0 && n[i + 1] < 0x80 {
        i += 1;
    }
    Int::new(&n[i..]).map_err(der_err)
}

/// A `TimeStampReq` (DER) for a SHA-256 digest, asking for the TSA certificate.
pub fn request(sha256: &[u8; 32], nonce: &[u8; 8]) -> Result<Vec<u8>> {
    let req = TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: sha256_algorithm(),
            hashed_message: OctetString::new(sha256.to_vec()).map_err(der_err)?,
        },
        req_policy: None,
        nonce: Some(nonce_int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(der_err)
}

fn der_err(e: der::Error) -> Error {
    Error::Input(InputError::Der(e))
}

/// The token of a `TimeStampResp`, after checking the status (granted), that it stamps
/// `sha256` and echoes `nonce`, and that its signature verifies.
pub fn token_from_response(resp: &[u8], sha256: &[u8; 32], nonce: &[u8; 8]) -> Result<Vec<u8>> {
    let token = unwrap_response(resp)?;
    let info = check_token(&token, &[])?;
    if info.imprint != sha256 {
        return Err(TokenError::ImprintMismatch.into());
    }
    let want = nonce_int(nonce)?;
    if info.nonce.as_deref() != Some(want.as_bytes()) {
        return Err(TokenError::NonceMismatch.into());
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
    let r = TimeStampResp::from_der(resp).map_err(TokenError::NotResponse)?;
    // 0 granted, 1 grantedWithMods; 2 rejection, 3 waiting, 4/5 revocation warning/notification.
    if r.status.status > 1 {
        let text = r
            .status
            .status_string
            .map(|s| s.join("; "))
            .unwrap_or_default();
        return Err(TokenError::Refused {
            status: r.status.status,
            text,
        }
        .into());
    }
    let token = r.time_stamp_token.ok_or(TokenError::NoToken)?;
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
    /// certificate (critical extended key usage id-kp-timeStamping only) valid at `now`.
    pub fn new(
        key: &'a dyn Signer,
        certs_pem: &[u8],
        policy: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let mut tsa = Self::new_unchecked(key, certs_pem, policy)?;
        tsa.checked = true;
        let cert = &tsa.chain[0];
        cert.check_tsa().map_err(InputError::TsaCertProfile)?;
        cert.valid_at(now).map_err(InputError::TsaCert)?;
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
            return Err(InputError::TsaKeyAlgorithm(key.algorithm()).into());
        }
        let chain = Cert::parse_pem_all(certs_pem).map_err(InputError::TsaCert)?;
        let spki = chain[0].spki().to_der().map_err(der_err)?;
        if spki != key.public_key().spki_der() {
            return Err(InputError::TsaKeyMismatch(chain[0].subject()).into());
        }
        // The TSA policy: given, or the first policy of the TSA certificate.
        let policy = match policy {
            Some(p) => parse_oid(p).map_err(|source| InputError::TsaPolicy {
                text: p.to_string(),
                source,
            })?,
            None => chain[0]
                .extension(oid::EXT_CERT_POLICIES)
                .and_then(|e| {
                    x509_cert::ext::pkix::CertificatePolicies::from_der(e.extn_value.as_bytes())
                        .ok()
                })
                .and_then(|p| p.0.first().map(|i| i.policy_identifier))
                .ok_or_else(|| InputError::NoPolicy(chain[0].subject()))?,
        };
        Ok(LocalTsa {
            key,
            chain,
            policy,
            checked: false,
        })
    }

    /// Skip the verification of each token [`LocalTsa::timestamp`] makes. Only for a caller
    /// that verifies every token itself before using it (the keyless flow verifies each one
    /// against its trusted root); the certificate checks of [`LocalTsa::new`] are unaffected.
    pub fn verified_by_caller(mut self) -> Self {
        self.checked = false;
        self
    }

    /// `local TSA <subject>`: the anchor's `source`.
    pub fn source(&self) -> String {
        format!("local TSA {}", self.chain[0].subject())
    }

    /// A TimeStampToken (DER) over a SHA-256 digest, stamped `at` (whole seconds).
    pub fn timestamp(&self, sha256: &[u8; 32], at: OffsetDateTime) -> Result<Vec<u8>> {
        let cert = &self.chain[0];
        let at = at.replace_nanosecond(0).map_err(InputError::Time)?;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| InputError::NoRandomness)?;
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
                cert_hash: OctetString::new(crate::sha256(&cert.der)).map_err(der_err)?,
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
                Any::encode_from(&OctetString::new(crate::sha256(&tst_der)).map_err(der_err)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format_time;

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

    /// Regression: a random nonce whose first byte masked to 0 (and second below 0x80) was
    /// encoded as a non-canonical INTEGER (a redundant leading zero); a TSA echoes it, and the
    /// strict TSTInfo parser then refused the token (about 1 request in 512).
    #[test]
    fn nonces_starting_with_zero_bytes_are_canonical_der() {
        for nonce in [
            [0u8, 1, 2, 3, 4, 5, 6, 7],
            [0x80, 0, 0, 0, 0, 0, 0, 1],
            [0; 8],
        ] {
            let req = request(&[7u8; 32], &nonce).unwrap();
            let r = TimeStampReq::from_der(&req).unwrap();
            assert!(r.nonce.is_some());
        }
    }

    /// A token carrying more certificates than [`MAX_TOKEN_CERTIFICATES`] is refused before
    /// any of them is parsed or tried as an issuer; one at the cap is checked as usual.
    #[test]
    fn tokens_carrying_too_many_certificates_are_refused() {
        use crate::certgen::{self, Spec};
        let key =
            stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).expect("key");
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("now");
        let cert = |cn: &str, extensions| {
            let name = certgen::name(&format!("CN={cn}")).expect("name");
            certgen::issue(
                &Spec {
                    subject: name.clone(),
                    issuer: name,
                    serial: certgen::random_serial().expect("serial"),
                    not_before: now - time::Duration::minutes(1),
                    not_after: now + time::Duration::hours(1),
                    spki_der: key.public_key().spki_der().to_vec(),
                    extensions,
                },
                &key,
            )
            .expect("cert")
        };
        let policy = Oid::new("1.2.3.4.1").expect("oid");
        let tsa = cert("tsa", certgen::tsa_extensions(policy).expect("ext"));
        let pem = |n: usize| {
            std::iter::once(tsa.clone())
                .chain((1..n).map(|i| cert(&format!("extra {i}"), Vec::new())))
                .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.der().to_vec())))
                .collect::<String>()
        };
        let stamp = |n: usize| {
            let certs = pem(n);
            let local = LocalTsa::new_unchecked(&key, certs.as_bytes(), None).expect("tsa");
            local.timestamp(&[7; 32], now).expect("token")
        };
        let at_cap = check_token(&stamp(MAX_TOKEN_CERTIFICATES), &[]).expect("at the cap");
        assert_eq!(at_cap.certs.len(), MAX_TOKEN_CERTIFICATES - 1);
        let e = check_token(&stamp(MAX_TOKEN_CERTIFICATES + 1), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "the token carries {} certificates, more than the {MAX_TOKEN_CERTIFICATES} a \
                 verifier reads",
                MAX_TOKEN_CERTIFICATES + 1
            )
        );
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
