//! Base64 as DSSE users meet it: we always *emit* standard padded base64 (RFC 4648 §4), and
//! we *accept* standard or URL-safe alphabets, padded or not, because producers differ
//! (Go's `encoding/json` pads, some JavaScript and Python tools emit URL-safe unpadded).
//! Mixed alphabets in one string are refused: that is never produced by a real encoder.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const LENIENT_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const LENIENT_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a base64 field did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64: {0}")]
pub struct Base64Error(String);

/// Standard, padded base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Append standard padded base64 of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    STANDARD.encode_string(bytes, out);
}

/// Append standard padded base64 of `bytes` to a byte buffer (no intermediate `String`).
pub fn encode_into_vec(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// Decode standard or URL-safe base64, padded or unpadded.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let has_url = text.bytes().any(|b| b == b'-' || b == b'_');
    let has_std = text.bytes().any(|b| b == b'+' || b == b'/');
    if has_url && has_std {
        return Err(Base64Error("mixes standard and URL-safe alphabets".into()));
    }
    let engine = if has_url { &LENIENT_URL } else { &LENIENT_STD };
    engine
        .decode(text.as_bytes())
        .map_err(|e| Base64Error(e.to_string()))
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
    }
}
