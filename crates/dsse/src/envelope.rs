//! The DSSE envelope (Dead Simple Signing Envelope, v1.0) and its pre-authentication encoding.
//!
//! Parsing is strict and structural only: it checks the JSON shape, refuses duplicate fields,
//! unknown top-level fields, empty payload types and undecodable base64, and bounds the input
//! size. It never looks at signatures' validity — that is `stella-keys`' job, which takes an
//! [`Envelope`] (already validated) and the trusted keys. The `keyid` of a signature is carried
//! as an unauthenticated hint; verification never relies on it.

use serde::Deserialize;

use crate::b64;
use crate::jcs;

/// Default upper bound for an envelope document (32 MiB).
pub const MAX_ENVELOPE_BYTES: usize = 32 * 1024 * 1024;

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The document is larger than the configured bound.
    #[error("envelope is {size} bytes, above the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// Not JSON, truncated, a missing or duplicate field, or a wrong type.
    #[error("malformed DSSE envelope: {0}")]
    Json(#[source] serde_json::Error),
    /// A base64 field did not decode.
    #[error("malformed DSSE envelope: field `{field}`: {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: b64::Base64Error,
    },
    /// The document is not a JSON object.
    #[error("malformed DSSE envelope: not a JSON object")]
    NotAnObject,
    /// `payloadType` is empty.
    #[error("malformed DSSE envelope: `payloadType` is empty")]
    EmptyPayloadType,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Unauthenticated key hint (`sha256:<hex of SPKI DER>` when we write it).
    pub keyid: String,
    /// Raw signature bytes (Ed25519 64 bytes, or ECDSA ASN.1 DER).
    pub sig: Vec<u8>,
}

/// A DSSE envelope with decoded payload and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Signature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    #[serde(rename = "payloadType", borrow)]
    payload_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    signatures: Vec<RawSignature<'a>>,
}

#[derive(Deserialize)]
struct RawSignature<'a> {
    #[serde(default, borrow)]
    keyid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    sig: std::borrow::Cow<'a, str>,
}

impl Envelope {
    /// Parse an envelope document with the default size bound.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::from_json_with_limit(bytes, MAX_ENVELOPE_BYTES)
    }

    /// Parse an envelope document, refusing documents above `limit` bytes.
    pub fn from_json_with_limit(bytes: &[u8], limit: usize) -> Result<Self, EnvelopeError> {
        if bytes.len() > limit {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        // serde derive would also accept a JSON array as a struct; an envelope is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(EnvelopeError::NotAnObject);
        }
        let raw: RawEnvelope<'_> = serde_json::from_slice(bytes).map_err(EnvelopeError::Json)?;
        Self::from_raw(raw)
    }

    /// Parse an envelope from an already-parsed JSON value (e.g. inside a Sigstore bundle).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, EnvelopeError> {
        if !value.is_object() {
            return Err(EnvelopeError::NotAnObject);
        }
        let raw = RawEnvelope::deserialize(value).map_err(EnvelopeError::Json)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawEnvelope<'_>) -> Result<Self, EnvelopeError> {
        if raw.payload_type.is_empty() {
            return Err(EnvelopeError::EmptyPayloadType);
        }
        let payload = b64::decode(&raw.payload).map_err(|source| EnvelopeError::Base64 {
            field: "payload",
            source,
        })?;
        let signatures = raw
            .signatures
            .into_iter()
            .map(|s| {
                Ok(Signature {
                    keyid: s.keyid.map(|k| k.into_owned()).unwrap_or_default(),
                    sig: b64::decode(&s.sig).map_err(|source| EnvelopeError::Base64 {
                        field: "signatures[].sig",
                        source,
                    })?,
                })
            })
            .collect::<Result<Vec<_>, EnvelopeError>>()?;
        Ok(Envelope {
            payload_type: raw.payload_type.into_owned(),
            payload,
            signatures,
        })
    }

    /// The bytes that are signed: `PAE(payloadType, payload)`.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Serialise as compact JSON with a stable field order
    /// (`payloadType`, `payload`, `signatures[{keyid, sig}]`), standard padded base64.
    pub fn to_json(&self) -> Vec<u8> {
        self.write_json().0
    }

    /// [`Envelope::to_json`]'s bytes and where its three values lie in them.
    fn write_json(&self) -> (Vec<u8>, JsonSpans) {
        let mut out =
            Vec::with_capacity(self.payload.len() * 4 / 3 + 160 * self.signatures.len() + 64);
        out.extend_from_slice(b"{\"payloadType\":");
        let type_start = out.len();
        jcs::write_str(&self.payload_type, &mut out);
        let payload_type = type_start..out.len();
        out.extend_from_slice(b",\"payload\":");
        let payload_start = out.len();
        out.push(b'"');
        b64::encode_into_vec(&self.payload, &mut out);
        let payload = payload_start..out.len() + 1;
        let tail = out.len();
        write_signatures_tail(&self.signatures, &mut out);
        // The tail is `","signatures":[...]}`: the array lies between its fixed prefix and
        // the closing brace.
        let signatures = tail + SIGNATURES_PREFIX.len()..out.len() - 1;
        let spans = JsonSpans {
            payload_type,
            payload,
            signatures,
        };
        (out, spans)
    }

    /// The envelope as a JSON value (for embedding in bundles and API responses).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "payloadType": self.payload_type,
            "payload": b64::encode(&self.payload),
            "signatures": self.signatures.iter().map(|s| serde_json::json!({
                "keyid": s.keyid,
                "sig": b64::encode(&s.sig),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Envelope {
    /// The envelope as `serde` writes [`Envelope::to_value`], members in sorted order
    /// (`payload`, `payloadType`, `signatures[{keyid, sig}]`), without building the
    /// `Value` tree: the same bytes from `serde_json::to_vec`, and the same `Value` from
    /// `serde_json::to_value` (tested). For API answers that embed the envelope.
    pub fn sorted_json(&self) -> SortedJson<'_> {
        SortedJson(self)
    }
}

/// See [`Envelope::sorted_json`].
#[derive(Debug, Clone, Copy)]
pub struct SortedJson<'a>(&'a Envelope);

impl serde::Serialize for SortedJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let e = self.0;
        let mut m = s.serialize_struct("Envelope", 3)?;
        m.serialize_field("payload", &b64::encode(&e.payload))?;
        m.serialize_field("payloadType", &e.payload_type)?;
        m.serialize_field("signatures", &SortedSignatures(&e.signatures))?;
        m.end()
    }
}

struct SortedSignatures<'a>(&'a [Signature]);

impl serde::Serialize for SortedSignatures<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(SortedSignature))
    }
}

struct SortedSignature<'a>(&'a Signature);

impl serde::Serialize for SortedSignature<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut m = s.serialize_struct("Signature", 2)?;
        m.serialize_field("keyid", &self.0.keyid)?;
        m.serialize_field("sig", &b64::encode(&self.0.sig))?;
        m.end()
    }
}

/// Where the values of `payloadType`, `payload` and `signatures` lie in
/// [`Envelope::to_json`]'s bytes.
#[derive(Debug, Clone)]
struct JsonSpans {
    payload_type: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
    signatures: std::ops::Range<usize>,
}

/// An envelope written as JSON once: the bytes of [`Envelope::to_json`] (what a digest of the
/// envelope is taken over), and out of them the envelope with its members in sorted order —
/// the bytes `serde_json` writes for [`Envelope::sorted_json`] — by copying the three values,
/// so the payload is base64-encoded and every string escaped once for both (an API answer
/// that records the envelope's digest and returns the envelope).
///
/// The values are the same in both forms: `serde_json` escapes strings exactly as
/// [`jcs::write_str`] does (`"`, `\\`, C0 controls as `\b \t \n \f \r` or lowercase
/// `\u00xx`, nothing else; tested), base64 needs no escaping, and each signature's members
/// (`keyid`, `sig`) are already in sorted order.
#[derive(Debug, Clone)]
pub struct EnvelopeJson {
    envelope: Envelope,
    json: Vec<u8>,
    spans: JsonSpans,
}

impl EnvelopeJson {
    /// Write `envelope` as JSON.
    pub fn new(envelope: Envelope) -> Self {
        let (json, spans) = envelope.write_json();
        EnvelopeJson {
            envelope,
            json,
            spans,
        }
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// [`Envelope::to_json`]'s bytes.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// Append the envelope with its members in sorted order (`payload`, `payloadType`,
    /// `signatures[{keyid, sig}]`): `serde_json::to_vec(&envelope.sorted_json())`'s bytes.
    pub fn write_sorted(&self, out: &mut Vec<u8>) {
        let part = |r: &std::ops::Range<usize>| self.json.get(r.clone()).unwrap_or_default();
        out.reserve(self.json.len());
        out.extend_from_slice(b"{\"payload\":");
        out.extend_from_slice(part(&self.spans.payload));
        out.extend_from_slice(b",\"payloadType\":");
        out.extend_from_slice(part(&self.spans.payload_type));
        out.extend_from_slice(b",\"signatures\":");
        out.extend_from_slice(part(&self.spans.signatures));
        out.push(b'}');
    }
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    pae_into(payload_type, payload, &mut out);
    out
}

/// Append the PAE of (`payload_type`, `payload`) to `out`.
pub(crate) fn pae_into(payload_type: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"DSSEv1 ");
    push_decimal(out, payload_type.len());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    push_decimal(out, payload.len());
    out.push(b' ');
    out.extend_from_slice(payload);
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// How [`write_signatures_tail`] begins: the payload's closing quote and the member name.
const SIGNATURES_PREFIX: &[u8] = b"\",\"signatures\":";

/// What follows the payload's base64 in [`Envelope::to_json`]'s form: the closing quote, the
/// signatures (`{keyid, sig}`, standard padded base64) and the closing brackets. Shared with
/// the streaming writer so that both write the same bytes.
pub(crate) fn write_signatures_tail(signatures: &[Signature], out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURES_PREFIX);
    out.push(b'[');
    for (i, s) in signatures.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"keyid\":");
        jcs::write_str(&s.keyid, out);
        out.extend_from_slice(b",\"sig\":\"");
        b64::encode_into_vec(&s.sig, out);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sorted_json` writes the bytes (and the `Value`) of `to_value`, on envelopes that
    /// exercise escaping, base64 padding, and zero, one and several signatures.
    #[test]
    fn sorted_json_is_to_value_byte_for_byte() {
        let types = [
            "application/vnd.in-toto+json",
            "t",
            "quote\" back\\slash \u{1}\u{1f} \u{7f} é \u{e000} \u{1f600} </script>",
        ];
        let keyids = ["", "sha256:00ff", "k\"\n\u{0}", "\u{2028}\u{2029}"];
        let mut n = 0;
        for ty in types {
            for len in [0usize, 1, 2, 3, 4, 5, 64, 1000] {
                for sigs in 0..4usize {
                    let env = Envelope {
                        payload_type: ty.to_string(),
                        payload: (0..len).map(|i| (i * 37 + sigs) as u8).collect(),
                        signatures: (0..sigs)
                            .map(|i| Signature {
                                keyid: keyids[(i + len) % keyids.len()].to_string(),
                                sig: (0..(i * 7 + len % 5)).map(|j| (j * 11) as u8).collect(),
                            })
                            .collect(),
                    };
                    let old = serde_json::to_vec(&env.to_value()).unwrap();
                    let new = serde_json::to_vec(&env.sorted_json()).unwrap();
                    assert_eq!(
                        String::from_utf8(new).unwrap(),
                        String::from_utf8(old).unwrap()
                    );
                    let pretty_old = serde_json::to_vec_pretty(&env.to_value()).unwrap();
                    let pretty_new = serde_json::to_vec_pretty(&env.sorted_json()).unwrap();
                    assert_eq!(pretty_new, pretty_old);
                    assert_eq!(
                        serde_json::to_value(env.sorted_json()).unwrap(),
                        env.to_value()
                    );
                    n += 1;
                }
            }
        }
        assert_eq!(n, 3 * 8 * 4);
        // It is the envelope, not a constant: a changed signature changes the output.
        let mut env = Envelope {
            payload_type: "t".into(),
            payload: b"x".to_vec(),
            signatures: vec![Signature {
                keyid: "k".into(),
                sig: vec![1],
            }],
        };
        let before = serde_json::to_vec(&env.sorted_json()).unwrap();
        env.signatures[0].sig[0] = 2;
        assert_ne!(serde_json::to_vec(&env.sorted_json()).unwrap(), before);
    }

    /// `EnvelopeJson` gives `to_json`'s bytes and, copied out of them, `sorted_json`'s (and so
    /// `to_value`'s), on envelopes whose payload type and key ids hold every ASCII character
    /// and a few beyond — the escaping of `jcs::write_str` and of `serde_json` agree.
    #[test]
    fn envelope_json_writes_both_forms_byte_for_byte() {
        let ascii: String = (0u8..=0x7f).map(char::from).collect();
        let types = [
            "application/vnd.in-toto+json".to_string(),
            String::new(),
            ascii.clone(),
            "é \u{e000} \u{ffff} \u{1f600} \u{2028}\u{2029} </script>".to_string(),
        ];
        let keyids = [
            String::new(),
            "sha256:00ff".to_string(),
            ascii,
            "k\"\n\u{0}".into(),
        ];
        let mut n = 0;
        for ty in &types {
            for len in [0usize, 1, 2, 3, 4, 700] {
                for sigs in 0..4usize {
                    let env = Envelope {
                        payload_type: ty.clone(),
                        payload: (0..len).map(|i| (i * 37 + sigs) as u8).collect(),
                        signatures: (0..sigs)
                            .map(|i| Signature {
                                keyid: keyids[(i + len) % keyids.len()].clone(),
                                sig: (0..(i * 7 + len % 5)).map(|j| (j * 11) as u8).collect(),
                            })
                            .collect(),
                    };
                    let json = EnvelopeJson::new(env.clone());
                    assert_eq!(json.json(), env.to_json());
                    assert_eq!(json.envelope(), &env);
                    let mut sorted = b"x".to_vec();
                    json.write_sorted(&mut sorted);
                    let want = serde_json::to_vec(&env.to_value()).unwrap();
                    assert_eq!(
                        String::from_utf8(sorted[1..].to_vec()).unwrap(),
                        String::from_utf8(want).unwrap()
                    );
                    assert_eq!(sorted[0], b'x', "appended, not overwritten");
                    // And what it writes parses back to the envelope (an empty payload
                    // type is refused on reading).
                    if !ty.is_empty() {
                        assert_eq!(Envelope::from_json(json.json()).unwrap(), env);
                    }
                    n += 1;
                }
            }
        }
        assert_eq!(n, 4 * 6 * 4);
    }

    #[test]
    fn pae_matches_spec_example() {
        // Example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn pae_is_injective_on_boundaries() {
        // Moving bytes between type and body must change the encoding.
        assert_ne!(pae("ab", b"c"), pae("a", b"bc"));
        assert_ne!(pae("a 1 b", b""), pae("a", b"b"));
    }

    #[test]
    fn round_trip_and_stable_output() {
        let env = Envelope {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: b"{\"a\":1}".to_vec(),
            signatures: vec![Signature {
                keyid: "sha256:00".into(),
                sig: vec![1, 2, 3, 250],
            }],
        };
        let json = env.to_json();
        let back = Envelope::from_json(&json).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.to_json(), json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(Envelope::from_value(&v).unwrap(), env);
    }

    #[test]
    fn strict_errors() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"payloadType":"t","payload":"eA==","signatures":[]"#,
                "EOF",
            ),
            (r#"{"payload":"eA==","signatures":[]}"#, "payloadType"),
            (r#"{"payloadType":"t","signatures":[]}"#, "payload"),
            (r#"{"payloadType":"t","payload":"eA=="}"#, "signatures"),
            (
                r#"{"payloadType":"t","payloadType":"u","payload":"eA==","signatures":[]}"#,
                "duplicate",
            ),
            (
                r#"{"payloadType":"t","payload":"eA==","signatures":[],"x":1}"#,
                "unknown field",
            ),
            (
                r#"{"payloadType":"","payload":"eA==","signatures":[]}"#,
                "empty",
            ),
            (
                r#"{"payloadType":"t","payload":"e!A","signatures":[]}"#,
                "payload",
            ),
            (
                r#"{"payloadType":"t","payload":"eA","signatures":[{"sig":"%%"}]}"#,
                "sig",
            ),
            (
                r#"{"payloadType":"t","payload":"eA","signatures":[{"sig":"AA","sig":"AA"}]}"#,
                "duplicate",
            ),
            (r#"[]"#, "not a JSON object"),
            (r#" ["t","eA==",[]]"#, "not a JSON object"),
        ];
        for (doc, needle) in cases {
            let err = Envelope::from_json(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
        let err = Envelope::from_json_with_limit(b"{}", 1).unwrap_err();
        assert!(matches!(err, EnvelopeError::TooLarge { size: 2, limit: 1 }));
    }

    #[test]
    fn accepts_url_safe_unpadded_and_missing_keyid() {
        let doc = r#"{"payloadType":"t","payload":"-_8","signatures":[{"sig":"-_8"}]}"#;
        let env = Envelope::from_json(doc.as_bytes()).unwrap();
        assert_eq!(env.payload, vec![0xfb, 0xff]);
        assert_eq!(env.signatures[0].keyid, "");
        // Emitted in standard padded form.
        let out = String::from_utf8(env.to_json()).unwrap();
        assert!(out.contains("\"payload\":\"+/8=\""), "{out}");
    }
}
