//! X.509 certificates and RFC 3161 time-stamp tokens, shared by mirror time anchors and
//! Sigstore verification.
//!
//! [`Cert`] keeps a certificate's exact DER and the exact DER of its `tbsCertificate` (the
//! signed bytes), beside the decoded form (RustCrypto `x509-cert`). Signatures are verified
//! with aws-lc-rs: ECDSA P-256/P-384, RSA PKCS #1 v1.5, Ed25519.
//! [`tsp`] holds the RFC 3161 side: token checks ([`tsp::check_token`]), the request and
//! response of the HTTP exchange, and [`tsp::LocalTsa`]. [`certgen`] builds and signs
//! certificates and SCTs (the keyless dev CA and TSA, and the private Sigstore of tests). Pure:
//! no I/O, no clock (every check takes its time as an argument).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod cert;
pub mod certgen;
mod error;
pub mod oid;
pub mod tsp;

pub use cert::{Cert, Hash, TrustRoots};
pub use der;
pub use error::{CertError, DigestError, Error, InputError, OidError, SignatureError, TokenError};
pub use oid::Oid;
pub use x509_cert;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// RFC 3339 UTC with milliseconds (`2025-11-26T04:15:00.000Z`).
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
