//! Object identifiers used across the crate.

/// An ASN.1 object identifier.
pub type Oid = der::asn1::ObjectIdentifier;

pub(crate) const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub(crate) const TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
pub(crate) const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub(crate) const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
pub(crate) const SIGNING_CERT: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");
pub(crate) const SIGNING_CERT_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
pub(crate) const KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
pub(crate) const EXT_SKI: Oid = Oid::new_unwrap("2.5.29.14");
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub const EXT_SAN: Oid = Oid::new_unwrap("2.5.29.17");
pub(crate) const EXT_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub(crate) const EXT_AKI: Oid = Oid::new_unwrap("2.5.29.35");
pub const EXT_EKU: Oid = Oid::new_unwrap("2.5.29.37");
pub(crate) const EXT_CERT_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
/// id-kp-codeSigning (the extended key usage of Fulcio leaves).
pub const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
/// Fulcio's OIDC issuer extension (v2, DER UTF8String).
pub const FULCIO_ISSUER_V2: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's legacy OIDC issuer extension (raw bytes).
pub const FULCIO_ISSUER_V1: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Embedded SCT list (RFC 6962 §3.3).
pub const SCT_LIST: Oid = Oid::new_unwrap("1.3.6.1.4.1.11129.2.4.2");

/// Is `id` one of Fulcio's legacy extensions (1.3.6.1.4.1.57264.1.1 to .1.6), whose values
/// are raw bytes rather than a DER UTF8String?
pub fn is_fulcio_legacy(id: Oid) -> bool {
    id.to_string()
        .strip_prefix("1.3.6.1.4.1.57264.1.")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=6).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fulcio_legacy_extensions_are_1_to_6() {
        for n in 1..=6 {
            let id = Oid::new_unwrap(&format!("1.3.6.1.4.1.57264.1.{n}"));
            assert!(is_fulcio_legacy(id), "{id}");
        }
        for id in [
            "1.3.6.1.4.1.57264.1.7",
            "1.3.6.1.4.1.57264.1.8",
            "1.3.6.1.4.1.57264.1.16",
            "1.3.6.1.4.1.57264.2",
            "1.3.6.1.4.1.57264.1.1.1",
            "1.3.6.1.4.1.57265.1.1",
            "2.5.29.17",
        ] {
            assert!(!is_fulcio_legacy(Oid::new_unwrap(id)), "{id}");
        }
    }
}
