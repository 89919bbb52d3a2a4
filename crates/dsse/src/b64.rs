//! Base64 as DSSE users meet it: we always *emit* standard padded base64 (RFC 4648 §4), and
//! we *accept* standard or URL-safe alphabets, padded or not, because producers differ
//! (Go's `encoding/json` pads, some JavaScript and Python tools emit URL-safe unpadded).
//! Mixed alphabets in one string are refused: that is never produced by a real encoder.

//!
//! Encoding and decoding use `base64-simd` (SSE/AVX2 when the CPU has them): envelope payloads
//! sit on the verification hot path, and the scalar decoder was a measurable share of it.

use base64_simd::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Why a base64 field did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64: {0}")]
pub struct Base64Error(String);

impl Base64Error {
    pub(crate) fn new(why: String) -> Self {
        Base64Error(why)
    }
}

/// Standard, padded base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode_to_string(bytes)
}

/// Append standard padded base64 of `bytes` to a byte buffer (no intermediate `String`).
pub fn encode_into_vec(bytes: &[u8], out: &mut Vec<u8>) {
    STANDARD.encode_append(bytes, out);
}

/// Decode standard or URL-safe base64, padded or unpadded (never both alphabets at once).
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let b = text.as_bytes();
    let (std, url) = if b.last() == Some(&b'=') {
        (&STANDARD, &URL_SAFE)
    } else {
        (&STANDARD_NO_PAD, &URL_SAFE_NO_PAD)
    };
    std.decode_to_vec(b)
        .or_else(|_| url.decode_to_vec(b))
        .map_err(|_| Base64Error(describe(b)))
}

/// A useful reason for a string neither alphabet decodes (the SIMD decoder only says "no").
fn describe(b: &[u8]) -> String {
    let is_common = |c: u8| c.is_ascii_alphanumeric() || c == b'=';
    if let Some((i, c)) = b
        .iter()
        .enumerate()
        .find(|(_, &c)| !(is_common(c) || matches!(c, b'+' | b'/' | b'-' | b'_')))
    {
        return format!("unexpected character {:?} at offset {i}", char::from(*c));
    }
    let url = b.iter().any(|&c| c == b'-' || c == b'_');
    let std = b.iter().any(|&c| c == b'+' || c == b'/');
    if url && std {
        return "mixes standard and URL-safe alphabets".into();
    }
    format!("invalid length ({}) or padding", b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_all_four_forms() {
        let data = b"\xfb\xff\xfe hello!";
        let std = encode(data);
        assert!(std.ends_with('='));
        let std_unpadded = std.trim_end_matches('=').to_string();
        let url = std.replace('+', "-").replace('/', "_");
        let url_unpadded = url.trim_end_matches('=').to_string();
        for form in [&std, &std_unpadded, &url, &url_unpadded] {
            assert_eq!(decode(form).unwrap(), data, "form {form}");
        }
    }

    #[test]
    fn rejects_garbage_and_mixed() {
        assert!(decode("not base64!").is_err());
        assert!(decode("a+b_").is_err());
        assert!(decode("abc=d").is_err());
        assert!(decode("a").is_err());
        // Non-zero trailing bits are not canonical base64.
        assert_eq!(decode("QQ==").unwrap(), b"A");
        assert!(decode("QR==").is_err());
        assert!(decode("QQ=").is_err());
        assert!(decode("QQ= =").is_err());
        assert!(decode("Q Q==")
            .unwrap_err()
            .to_string()
            .contains("offset 1"));
    }
}
