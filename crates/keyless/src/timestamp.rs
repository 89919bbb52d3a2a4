//! RFC 3161 timestamps over keyless signatures. Bundle v0.3 with a leaf certificate needs a
//! verified time, and a TSA is the source we use on every signature (the Rekor integrated
//! time is optional, like the log itself). What a [`Timestamper`] returns is a DER
//! `TimeStampResp` (status granted) that was checked: it stamps SHA-256 of the signature,
//! echoes our nonce (HTTP), and its CMS signature verifies. Whether the TSA is trusted is
//! the trusted root's business, checked with the whole bundle.

use stella_x509::der::asn1::AnyRef;
use stella_x509::der::{Decode, Encode};

use crate::UpstreamFuture;

/// Gets RFC 3161 timestamps.
pub trait Timestamper: Send + Sync {
    /// A `TimeStampResp` (DER) over SHA-256 of `signature`.
    fn timestamp<'a>(&'a self, signature: &'a [u8]) -> UpstreamFuture<'a, Vec<u8>>;

    /// The TSA's URL or name, for logs and audit.
    fn describe(&self) -> String;
}

/// Wrap a bare `TimeStampToken` in a granted `TimeStampResp` (`SEQUENCE { PKIStatusInfo
/// { 0 }, token }`), the form bundles carry (sigstore-js reads only that form).
pub(crate) fn granted_response(token: &[u8]) -> Result<Vec<u8>, stella_x509::der::Error> {
    // Check that the token is one DER value before wrapping it.
    let any = AnyRef::from_der(token)?;
    let status: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];
    let mut content = status.to_vec();
    content.extend_from_slice(&any.to_der()?);
    let mut out = vec![0x30];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(&content);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_response_wraps_one_der_value() {
        use stella_x509::der::asn1::OctetString;
        use stella_x509::der::Tagged as _;
        // A short and a long (two-byte length) DER value.
        for len in [10usize, 300] {
            let token = OctetString::new(vec![7u8; len]).unwrap().to_der().unwrap();
            let r = granted_response(&token).unwrap();
            let outer = AnyRef::from_der(&r).unwrap();
            assert_eq!(outer.tag(), stella_x509::der::Tag::Sequence);
            assert!(r.ends_with(&token));
            let status_at = r.len() - token.len() - 5;
            assert_eq!(&r[status_at..status_at + 5], &[0x30, 3, 2, 1, 0]);
        }
        assert!(granted_response(b"\x30\x05\x00").is_err(), "truncated");
        assert!(
            granted_response(&[0x04, 0x00, 0x00]).is_err(),
            "trailing bytes"
        );
    }
}
