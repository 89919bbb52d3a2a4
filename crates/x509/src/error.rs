//! Typed errors: one enum per job (certificate profile, signature, digest, token, OID, input),
//! gathered in [`Error`]. The messages are the ones users and tests have always seen.

use crate::oid::Oid;

/// Why a certificate or token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate cannot be parsed or breaks a profile rule.
    #[error(transparent)]
    Certificate(CertError),
    /// A certificate does not chain to a trust anchor.
    #[error(transparent)]
    Chain(CertError),
    /// A signature does not verify or uses an unsupported algorithm.
    #[error(transparent)]
    Signature(SignatureError),
    /// A time-stamp token (or response) is malformed or fails a check.
    #[error(transparent)]
    Token(TokenError),
    /// Input the caller must fix (PEM text, TSA key and certificate, policy OID, encoding).
    #[error(transparent)]
    Input(InputError),
    /// The local TSA's key could not sign.
    #[error(transparent)]
    Sign(#[from] stella_keys::SignError),
}

/// A certificate that cannot be parsed or breaks a profile rule (RFC 5280, RFC 3161 §2.3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("not an X.509 certificate: {0}")]
    NotCertificate(der::Error),
    #[error("{0}")]
    Der(der::Error),
    #[error("not PEM: {0}")]
    NotPem(pem::PemError),
    #[error("no CERTIFICATE block")]
    NoCertificateBlock,
    #[error("certificate {subject} is valid from {not_before} to {not_after}, not at {at}")]
    NotValidAt {
        subject: String,
        not_before: String,
        not_after: String,
        at: String,
    },
    #[error("certificate {subject} has an unsupported critical extension {oid}")]
    UnsupportedCritical { subject: String, oid: Oid },
    /// An extension (`keyUsage`, `basicConstraints`) that does not decode.
    #[error("certificate {subject}: {extension}: {source}")]
    Extension {
        subject: String,
        extension: &'static str,
        source: der::Error,
    },
    #[error("certificate {0} is not a CA certificate (basicConstraints cA is not set) but issued the TSA certificate chain")]
    NotCa(String),
    #[error("certificate {0} may not sign certificates (keyUsage lacks keyCertSign)")]
    NoKeyCertSign(String),
    #[error("the TSA certificate {0} has no extended key usage: RFC 3161 requires id-kp-timeStamping (critical)")]
    TsaNoEku(String),
    #[error("the TSA certificate {subject}: extendedKeyUsage: {source}")]
    TsaBadEku { subject: String, source: der::Error },
    #[error("the TSA certificate {subject} is not for time stamping: its extended key usage must be exactly id-kp-timeStamping (has {has})")]
    TsaWrongEku { subject: String, has: String },
    #[error("the TSA certificate {0}: the id-kp-timeStamping extended key usage must be critical (RFC 3161 §2.3)")]
    TsaEkuNotCritical(String),
    #[error("the TSA certificate {0} may not sign (keyUsage lacks digitalSignature)")]
    TsaMayNotSign(String),
    #[error("the TSA certificate {0} does not chain to a trusted root (--time-trust-roots)")]
    NoPathToRoot(String),
}

/// A signature that does not verify or cannot be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(Oid),
    #[error("signature algorithm {sig_alg} disagrees with digest algorithm {digest}")]
    DigestDisagrees { sig_alg: Oid, digest: &'static str },
    #[error("public key bit string is not byte-aligned")]
    KeyNotByteAligned,
    /// `key` is `EC`, `RSA` or `Ed25519`.
    #[error("an {key} key cannot verify a {sig_alg} signature")]
    WrongKeyType { key: &'static str, sig_alg: Oid },
    #[error("EC key without a named curve")]
    NoNamedCurve,
    /// `scheme` is `ECDSA` or `RSA`.
    #[error("{scheme} without a digest algorithm")]
    NoDigest { scheme: &'static str },
    #[error("unsupported EC curve {0}")]
    UnsupportedCurve(Oid),
    #[error("unsupported public key algorithm {0}")]
    UnsupportedKey(Oid),
    #[error("the signature does not verify")]
    Invalid,
}

/// A digest algorithm we refuse; `what` names its user (`the message imprint`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    #[error("{what} uses SHA-1, which is refused")]
    Sha1 { what: &'static str },
    #[error("{what} uses unsupported digest {oid}")]
    Unsupported { what: &'static str, oid: Oid },
}

/// An RFC 3161 token or response that is malformed or fails a check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the token is above {0} bytes")]
    TooLarge(usize),
    #[error("the token carries {0} certificates, more than the {1} a verifier reads")]
    TooManyCertificates(usize, usize),
    #[error("the token is not a CMS ContentInfo: {0}")]
    NotContentInfo(der::Error),
    #[error("the token is a CMS {0}, not SignedData")]
    NotSignedData(Oid),
    #[error("{0}")]
    Der(der::Error),
    #[error("the token's SignedData: {0}")]
    SignedData(der::Error),
    #[error("empty SignedData")]
    EmptySignedData,
    #[error("no SignerInfo")]
    NoSignerInfo,
    #[error("the token signs {0}, not a TSTInfo")]
    NotTstInfo(Oid),
    #[error("the token has no encapsulated TSTInfo")]
    NoTstInfo,
    #[error("the encapsulated content is not an OCTET STRING")]
    ContentNotOctetString,
    #[error("TSTInfo: {0}")]
    TstInfo(der::Error),
    #[error("TSTInfo version {0} (expected 1)")]
    TstVersion(u8),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("the token has {0} SignerInfos (expected 1)")]
    SignerInfoCount(usize),
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("the TSA certificate is neither in the token nor among the trust roots")]
    SignerNotFound,
    #[error("the SignerInfo has no signed attributes")]
    NoSignedAttributes,
    #[error("the signed attributes lack {0}")]
    MissingAttribute(&'static str),
    #[error("the signed attribute {0} must appear once with one value")]
    AttributeNotSingle(&'static str),
    #[error("{0} has no value")]
    AttributeNoValue(&'static str),
    #[error("{name}: {source}")]
    AttributeDecode {
        name: &'static str,
        source: der::Error,
    },
    #[error("the content-type attribute is {0}, not TSTInfo")]
    ContentType(Oid),
    #[error("the message-digest attribute does not match the TSTInfo (tampered token)")]
    MessageDigest,
    /// `attribute` is `signing-certificate-v2` or `signing-certificate`.
    #[error("{attribute} names no certificate")]
    EssEmpty { attribute: &'static str },
    #[error("the {attribute} attribute does not name the signer certificate {subject}")]
    EssMismatch {
        attribute: &'static str,
        subject: String,
    },
    #[error(
        "the signed attributes lack the ESS signing-certificate(-v2) attribute RFC 3161 requires"
    )]
    NoEss,
    #[error("token signature by {subject}: {source} (tampered token or wrong certificate)")]
    Signature {
        subject: String,
        source: SignatureError,
    },
    #[error("the TSTInfo names a TSA that is not the signer {0}")]
    TsaName(String),
    #[error("the TSA stamped another digest than the one requested")]
    ImprintMismatch,
    #[error("the TSA response does not echo the request nonce (replayed response?)")]
    NonceMismatch,
    #[error("not an RFC 3161 TimeStampResp or TimeStampToken: {0}")]
    NotResponse(der::Error),
    #[error("the TSA refused the request (PKIStatus {status}){}", if .text.is_empty() { String::new() } else { format!(": {}", .text) })]
    Refused { status: u32, text: String },
    #[error("the TSA response carries no token")]
    NoToken,
}

/// A user-given dotted OID that is not one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidError {
    #[error("arcs must be decimal numbers below 2^32")]
    NotDecimal,
    #[error("an OID has at least two arcs, the first 0, 1 or 2")]
    FirstArcs,
    #[error("{0}")]
    Invalid(const_oid::Error),
}

/// Input the caller must fix: the messages name the flag (`--tsa-key`, `--tsa-cert`, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("DER encoding: {0}")]
    Der(der::Error),
    /// A PEM text of certificates (trust roots).
    #[error(transparent)]
    Pem(CertError),
    #[error("--tsa-cert: {0}")]
    TsaCert(CertError),
    #[error("--tsa-cert: {0}; tokens it signs would be refused")]
    TsaCertProfile(CertError),
    #[error("--tsa-key: a TSA key must be ECDSA P-256 (this one is {0})")]
    TsaKeyAlgorithm(stella_keys::Algorithm),
    #[error("--tsa-key does not match the certificate {0} (--tsa-cert): the first certificate must be the key's")]
    TsaKeyMismatch(String),
    #[error("--tsa-policy {text:?}: not an OID: {source}")]
    TsaPolicy { text: String, source: OidError },
    #[error("the TSA certificate {0} names no policy (certificatePolicies): give --tsa-policy OID, the policy its tokens are issued under")]
    NoPolicy(String),
    #[error("{0}")]
    Time(time::error::ComponentRange),
    #[error("no randomness for the serial number")]
    NoRandomness,
}

impl From<der::Error> for TokenError {
    fn from(e: der::Error) -> Self {
        TokenError::Der(e)
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Error::Token(e)
    }
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        Error::Input(e)
    }
}
