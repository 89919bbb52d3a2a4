//! DSSE envelopes too large to hold in memory, read as a stream.
//!
//! [`read_envelope`] reads an envelope document from any [`Read`] and writes its decoded payload
//! to a [`Write`] (a temporary file, a hasher) as it goes: memory is a fixed buffer plus the
//! small fields (payload type, signatures), whatever the payload's size. The accepted documents
//! are those of [`Envelope::from_json`](crate::Envelope::from_json): one JSON object with
//! exactly `payloadType`, `payload` and `signatures` (any order, no duplicate), standard or
//! URL-safe base64, padded or not, never both alphabets in one string.
//!
//! [`pae_prefix`] gives the bytes that precede the payload in the pre-authentication encoding,
//! so a verifier hashes `prefix || payload` without building the PAE.

use std::io::{self, BufRead, BufReader, Read, Write};

use base64_simd::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::Deserialize;

pub use crate::stream_write::write_envelope;

use crate::b64;
use crate::Signature;

/// Largest JSON value other than the payload (payload type, signature list) kept in memory.
pub(crate) const MAX_FIELD_BYTES: usize = 1024 * 1024;

/// Why a streamed envelope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("reading the envelope: {0}")]
    Io(#[from] io::Error),
    /// More than the cap: refused before anything past the cap was read.
    #[error("envelope is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("malformed DSSE envelope: {0}")]
    Malformed(String),
    #[error("malformed DSSE envelope: field `{field}`: {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: b64::Base64Error,
    },
    #[error("malformed DSSE envelope: `payloadType` is empty")]
    EmptyPayloadType,
}

/// An envelope whose payload went to a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedEnvelope {
    pub payload_type: String,
    pub signatures: Vec<Signature>,
    /// Decoded payload bytes written.
    pub payload_len: u64,
}

/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP`: the PAE up to the payload.
pub fn pae_prefix(payload_type: &str, payload_len: u64) -> Vec<u8> {
    format!(
        "DSSEv1 {} {payload_type} {payload_len} ",
        payload_type.len()
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct RawSignature {
    #[serde(default)]
    keyid: Option<String>,
    sig: String,
}

/// Read an envelope document of at most `limit` bytes from `input`, writing the decoded payload
/// to `payload` (see the module docs).
pub fn read_envelope<R: Read, W: Write>(
    input: R,
    payload: &mut W,
    limit: u64,
) -> Result<StreamedEnvelope, StreamError> {
    let mut r = Scanner::new(input, limit);
    r.skip_ws()?;
    if r.next()? != Some(b'{') {
        return Err(StreamError::Malformed("not a JSON object".into()));
    }
    let mut payload_type: Option<String> = None;
    let mut signatures: Option<Vec<RawSignature>> = None;
    let mut payload_len: Option<u64> = None;
    r.skip_ws()?;
    if r.peek()? == Some(b'}') {
        return Err(StreamError::Malformed("missing field `payloadType`".into()));
    }
    loop {
        r.skip_ws()?;
        let key = r.small_string()?;
        r.skip_ws()?;
        if r.next()? != Some(b':') {
            return Err(StreamError::Malformed(format!(
                "expected `:` after {key:?}"
            )));
        }
        r.skip_ws()?;
        let dup = || StreamError::Malformed(format!("duplicate field `{key}`"));
        match key.as_str() {
            "payload" => {
                if payload_len.is_some() {
                    return Err(dup());
                }
                payload_len = Some(r.base64_string(payload)?);
            }
            "payloadType" => {
                if payload_type.is_some() {
                    return Err(dup());
                }
                let raw = r.raw_value()?;
                payload_type = Some(serde_json::from_slice(&raw).map_err(json_err)?);
            }
            "signatures" => {
                if signatures.is_some() {
                    return Err(dup());
                }
                let raw = r.raw_value()?;
                signatures = Some(serde_json::from_slice(&raw).map_err(json_err)?);
            }
            other => {
                return Err(StreamError::Malformed(format!(
                "unknown field `{other}`, expected one of `payloadType`, `payload`, `signatures`"
            )))
            }
        }
        r.skip_ws()?;
        match r.next()? {
            Some(b',') => continue,
            Some(b'}') => break,
            Some(c) => {
                return Err(StreamError::Malformed(format!(
                    "unexpected {:?} after a member",
                    char::from(c)
                )))
            }
            None => return Err(StreamError::Malformed("truncated document".into())),
        }
    }
    r.skip_ws()?;
    if r.peek()?.is_some() {
        return Err(StreamError::Malformed(
            "trailing characters after the object".into(),
        ));
    }
    let payload_type =
        payload_type.ok_or_else(|| StreamError::Malformed("missing field `payloadType`".into()))?;
    let payload_len =
        payload_len.ok_or_else(|| StreamError::Malformed("missing field `payload`".into()))?;
    let signatures =
        signatures.ok_or_else(|| StreamError::Malformed("missing field `signatures`".into()))?;
    if payload_type.is_empty() {
        return Err(StreamError::EmptyPayloadType);
    }
    let signatures = signatures
        .into_iter()
        .map(|s| {
            Ok(Signature {
                keyid: s.keyid.unwrap_or_default(),
                sig: b64::decode(&s.sig).map_err(|source| StreamError::Base64 {
                    field: "signatures[].sig",
                    source,
                })?,
            })
        })
        .collect::<Result<Vec<_>, StreamError>>()?;
    Ok(StreamedEnvelope {
        payload_type,
        signatures,
        payload_len,
    })
}

fn json_err(e: serde_json::Error) -> StreamError {
    StreamError::Malformed(e.to_string())
}

pub(crate) struct Scanner<R> {
    inner: BufReader<io::Take<R>>,
    read: u64,
    limit: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alphabet {
    Unknown,
    Standard,
    UrlSafe,
}

impl<R: Read> Scanner<R> {
    /// A scanner of at most `limit` bytes of `input`.
    pub(crate) fn new(input: R, limit: u64) -> Self {
        Scanner {
            inner: BufReader::with_capacity(64 * 1024, input.take(limit.saturating_add(1))),
            read: 0,
            limit,
        }
    }

    pub(crate) fn peek(&mut self) -> Result<Option<u8>, StreamError> {
        let buf = self.inner.fill_buf()?;
        Ok(buf.first().copied())
    }

    pub(crate) fn next(&mut self) -> Result<Option<u8>, StreamError> {
        let b = self.peek()?;
        if b.is_some() {
            self.bump(1)?;
        }
        Ok(b)
    }

    fn bump(&mut self, n: usize) -> Result<(), StreamError> {
        self.inner.consume(n);
        self.read += n as u64;
        if self.read > self.limit {
            return Err(StreamError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    pub(crate) fn skip_ws(&mut self) -> Result<(), StreamError> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek()? {
            self.bump(1)?;
        }
        Ok(())
    }

    /// A JSON string (a member name) decoded by serde_json from its raw text.
    pub(crate) fn small_string(&mut self) -> Result<String, StreamError> {
        if self.peek()? != Some(b'"') {
            return Err(StreamError::Malformed("expected a member name".into()));
        }
        let raw = self.raw_value()?;
        serde_json::from_slice(&raw).map_err(json_err)
    }

    /// The raw text of one JSON value (at most [`MAX_FIELD_BYTES`]), for serde_json to parse.
    pub(crate) fn raw_value(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut in_str = false;
        let mut escaped = false;
        loop {
            let Some(b) = self.peek()? else {
                return Err(StreamError::Malformed("truncated document".into()));
            };
            if out.len() >= MAX_FIELD_BYTES {
                return Err(StreamError::Malformed(format!(
                    "a field other than `payload` is larger than {MAX_FIELD_BYTES} bytes"
                )));
            }
            if in_str {
                out.push(b);
                self.bump(1)?;
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_str = false;
                    if depth == 0 {
                        return Ok(out);
                    }
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return Ok(out);
                    }
                    depth -= 1;
                    out.push(b);
                    self.bump(1)?;
                    if depth == 0 {
                        return Ok(out);
                    }
                    continue;
                }
                b',' if depth == 0 => return Ok(out),
                _ => {}
            }
            out.push(b);
            self.bump(1)?;
        }
    }

    /// The payload string: base64 decoded in chunks straight to `sink`; returns the byte count.
    pub(crate) fn base64_string<W: Write>(&mut self, sink: &mut W) -> Result<u64, StreamError> {
        if self.next()? != Some(b'"') {
            return Err(StreamError::Malformed(
                "invalid type: field `payload` is not a string".into(),
            ));
        }
        let mut text: Vec<u8> = Vec::with_capacity(DECODE_CHUNK + 64 * 1024);
        let mut decoded: Vec<u8> = Vec::new();
        let mut alphabet = Alphabet::Unknown;
        let mut total_chars = 0u64;
        let mut written = 0u64;
        let bad = |why: String| StreamError::Base64 {
            field: "payload",
            source: b64::Base64Error::new(why),
        };
        loop {
            // A run of plain base64 characters, taken from the buffer in one go (the payload
            // is almost all of them); a quote, an escape or a stray byte goes the slow way.
            let buf = self.inner.fill_buf()?;
            let (run, kinds) = b64_run(buf);
            if run > 0 {
                let kind = match kinds {
                    0 => Alphabet::Unknown,
                    B64_STD => Alphabet::Standard,
                    B64_URL => Alphabet::UrlSafe,
                    _ => return Err(bad("mixes standard and URL-safe alphabets".into())),
                };
                if kind != Alphabet::Unknown {
                    if alphabet != Alphabet::Unknown && alphabet != kind {
                        return Err(bad("mixes standard and URL-safe alphabets".into()));
                    }
                    alphabet = kind;
                }
                text.extend_from_slice(buf.get(..run).unwrap_or_default());
                total_chars += run as u64;
                self.bump(run)?;
                written += drain_groups(alphabet, &mut text, &mut decoded, sink, total_chars)?;
                continue;
            }
            let Some(b) = self.next()? else {
                return Err(StreamError::Malformed(
                    "EOF while parsing a string (payload truncated)".into(),
                ));
            };
            let c = match b {
                b'"' => break,
                b'\\' => match self.next()? {
                    Some(b'/') => b'/',
                    Some(b'u') => {
                        let mut h = [0u8; 4];
                        for x in &mut h {
                            *x = self.next()?.ok_or_else(|| {
                                StreamError::Malformed("truncated escape in `payload`".into())
                            })?;
                        }
                        let v = std::str::from_utf8(&h)
                            .ok()
                            .and_then(|s| u32::from_str_radix(s, 16).ok())
                            .ok_or_else(|| {
                                StreamError::Malformed("invalid escape in `payload`".into())
                            })?;
                        u8::try_from(v)
                            .ok()
                            .filter(u8::is_ascii)
                            .ok_or_else(|| bad(format!("unexpected character U+{v:04X}")))?
                    }
                    _ => return Err(bad("unexpected escape".into())),
                },
                0..=0x1f => {
                    return Err(StreamError::Malformed(
                        "control character in `payload`".into(),
                    ))
                }
                c => c,
            };
            let kind = match c {
                b'+' | b'/' => Alphabet::Standard,
                b'-' | b'_' => Alphabet::UrlSafe,
                c if c.is_ascii_alphanumeric() || c == b'=' => Alphabet::Unknown,
                c => {
                    return Err(bad(format!(
                        "unexpected character {:?} at offset {total_chars}",
                        char::from(c)
                    )))
                }
            };
            if kind != Alphabet::Unknown {
                if alphabet != Alphabet::Unknown && alphabet != kind {
                    return Err(bad("mixes standard and URL-safe alphabets".into()));
                }
                alphabet = kind;
            }
            text.push(c);
            total_chars += 1;
            written += drain_groups(alphabet, &mut text, &mut decoded, sink, total_chars)?;
        }
        let padded = text.last() == Some(&b'=');
        let engine = match (alphabet, padded) {
            (Alphabet::UrlSafe, true) => &URL_SAFE,
            (Alphabet::UrlSafe, false) => &URL_SAFE_NO_PAD,
            (_, true) => &STANDARD,
            (_, false) => &STANDARD_NO_PAD,
        };
        let tail = engine
            .decode_to_vec(&text)
            .map_err(|_| bad(format!("invalid length ({total_chars}) or padding")))?;
        sink.write_all(&tail)?;
        written += tail.len() as u64;
        sink.flush()?;
        Ok(written)
    }
}

/// [`B64_CLASS`] values: a letter, digit or `=` (0), a character of one alphabet only, or
/// anything else.
const B64_STD: u8 = 1;
const B64_URL: u8 = 2;
const B64_OTHER: u8 = 4;

/// The class of each byte in a base64 payload string.
static B64_CLASS: [u8; 256] = {
    let mut t = [B64_OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'=' {
            t[i] = 0;
        }
        i += 1;
    }
    t[b'+' as usize] = B64_STD;
    t[b'/' as usize] = B64_STD;
    t[b'-' as usize] = B64_URL;
    t[b'_' as usize] = B64_URL;
    t
};

/// Base64 text decoded at a time.
const DECODE_CHUNK: usize = 64 * 1024;

/// Once `text` holds a chunk: decode its whole groups but the last (which may carry padding)
/// into `out` (reused from chunk to chunk), write them to `sink` and drop them from `text`;
/// returns the bytes written.
fn drain_groups<W: Write>(
    alphabet: Alphabet,
    text: &mut Vec<u8>,
    out: &mut Vec<u8>,
    sink: &mut W,
    total_chars: u64,
) -> Result<u64, StreamError> {
    if text.len() < DECODE_CHUNK + 4 {
        return Ok(0);
    }
    let n = (text.len() - 4) / 4 * 4;
    let engine = match alphabet {
        Alphabet::UrlSafe => &URL_SAFE_NO_PAD,
        _ => &STANDARD_NO_PAD,
    };
    // Whole groups without padding: exactly 3 bytes per 4 characters.
    out.resize(n / 4 * 3, 0);
    let decoded = engine
        .decode(
            text.get(..n).unwrap_or_default(),
            base64_simd::Out::from_slice(out.as_mut_slice()),
        )
        .map_err(|_| StreamError::Base64 {
            field: "payload",
            source: b64::Base64Error::new(format!("invalid base64 before offset {total_chars}")),
        })?;
    sink.write_all(decoded)?;
    let len = decoded.len() as u64;
    text.drain(..n);
    Ok(len)
}

/// The leading run of `buf` made of base64 characters (letters, digits, `=`, `+`, `/`, `-`,
/// `_`) and the union of their [`B64_CLASS`] values (never [`B64_OTHER`]). Blocks of 32 bytes
/// are classified without a branch per byte (the compiler vectorises the block); the block
/// that holds the run's end is finished byte by byte with the table.
fn b64_run(buf: &[u8]) -> (usize, u8) {
    const BLOCK: usize = 32;
    let mut run = 0;
    let mut kinds = 0u8;
    for block in buf.chunks_exact(BLOCK) {
        let (mut ok, mut std, mut url) = (true, false, false);
        for &b in block {
            let s = b == b'+' || b == b'/';
            let u = b == b'-' || b == b'_';
            let alnum = b.wrapping_sub(b'0') < 10 || (b | 0x20).wrapping_sub(b'a') < 26;
            ok &= alnum || b == b'=' || s || u;
            std |= s;
            url |= u;
        }
        if !ok {
            break;
        }
        kinds |= if std { B64_STD } else { 0 } | if url { B64_URL } else { 0 };
        run += BLOCK;
    }
    let (tail, tail_kinds) = table_run(buf.get(run..).unwrap_or_default());
    (run + tail, kinds | tail_kinds)
}

/// The base64 run at the start of `buf`, byte by byte through [`B64_CLASS`]: its length and
/// the alphabets it used (the tail of [`b64_run`], and its reference in tests).
fn table_run(buf: &[u8]) -> (usize, u8) {
    let mut run = 0;
    let mut kinds = 0u8;
    for &b in buf {
        let k = B64_CLASS[usize::from(b)];
        if k == B64_OTHER {
            break;
        }
        kinds |= k;
        run += 1;
    }
    (run, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    fn env(payload: &[u8]) -> Envelope {
        Envelope {
            payload_type: "application/x".into(),
            payload: payload.to_vec(),
            signatures: vec![
                Signature {
                    keyid: "k1".into(),
                    sig: vec![1, 2, 3],
                },
                Signature {
                    keyid: String::new(),
                    sig: vec![9; 64],
                },
            ],
        }
    }

    fn stream(doc: &[u8], limit: u64) -> Result<(StreamedEnvelope, Vec<u8>), StreamError> {
        let mut out = Vec::new();
        read_envelope(doc, &mut out, limit).map(|e| (e, out))
    }

    #[test]
    fn agrees_with_the_in_memory_parser() {
        for len in [0usize, 1, 2, 3, 4, 5, 100, 65_535, 65_536, 65_537, 200_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 3) as u8).collect();
            let e = env(&payload);
            let doc = e.to_json();
            let (s, out) = stream(&doc, doc.len() as u64).unwrap();
            assert_eq!(out, payload, "len {len}");
            assert_eq!(s.payload_len, len as u64);
            assert_eq!(s.payload_type, e.payload_type);
            assert_eq!(s.signatures, e.signatures);
            let mut pae = pae_prefix(&s.payload_type, s.payload_len);
            pae.extend_from_slice(&out);
            assert_eq!(pae, e.pae());
        }
    }

    #[test]
    fn accepts_other_member_orders_url_safe_and_unpadded() {
        let payload = vec![0xfbu8; 1000];
        let url = URL_SAFE_NO_PAD.encode_to_string(&payload);
        let doc = format!(
            "  {{ \"signatures\" : [ {{\"sig\":\"AQID\"}} ] ,\n\"payload\":\"{url}\", \"payloadType\":\"t\" }} "
        );
        let (s, out) = stream(doc.as_bytes(), 1 << 20).unwrap();
        assert_eq!(out, payload);
        assert_eq!(
            Envelope::from_json(doc.as_bytes()).unwrap().payload,
            payload
        );
        assert_eq!(s.signatures[0].sig, vec![1, 2, 3]);
        let escaped = format!(
            "{{\"payloadType\":\"t\",\"payload\":\"{}\",\"signatures\":[]}}",
            STANDARD.encode_to_string(&payload).replace('/', "\\/")
        );
        assert_eq!(stream(escaped.as_bytes(), 1 << 20).unwrap().1, payload);
    }

    #[test]
    fn refuses_what_the_in_memory_parser_refuses() {
        let good = env(&[7u8; 300_000]).to_json();
        let text = String::from_utf8(good.clone()).unwrap();
        // Truncated anywhere (inside the base64, in the signatures, the closing brace).
        for cut in [10, 40, 1000, 150_000, 399_990, good.len() - 1] {
            let r = stream(&good[..cut], 1 << 30);
            assert!(r.is_err(), "cut at {cut}");
            assert!(Envelope::from_json(&good[..cut]).is_err());
        }
        // Bad base64 deep in the payload.
        let mut bad = good.clone();
        bad[250_000] = b'*';
        let e = stream(&bad, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("unexpected character '*'"), "{e}");
        let mixed = text
            .replacen("\"payload\":\"B", "\"payload\":\"-B", 1)
            .replacen("BwcH", "Bw+H", 1);
        assert!(stream(mixed.as_bytes(), 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("mixes"));
        // Padding in the middle, a missing character.
        let mid = text.replacen("BwcH", "Bw==", 1);
        assert!(stream(mid.as_bytes(), 1 << 30).is_err());
        assert!(Envelope::from_json(mid.as_bytes()).is_err());
        let short = text.replacen("BwcH", "Bwc", 1);
        assert!(stream(short.as_bytes(), 1 << 30).is_err());
        // Shape.
        for doc in [
            "[]",
            "{}",
            r#"{"payloadType":"t","payload":"","signatures":[],"x":1}"#,
            r#"{"payloadType":"t","payload":"","payload":"","signatures":[]}"#,
            r#"{"payloadType":"","payload":"","signatures":[]}"#,
            r#"{"payloadType":"t","signatures":[]}"#,
            r#"{"payloadType":"t","payload":1,"signatures":[]}"#,
            r#"{"payloadType":"t","payload":"","signatures":[{"sig":"!"}]}"#,
            r#"{"payloadType":"t","payload":"","signatures":[]} x"#,
        ] {
            assert!(stream(doc.as_bytes(), 1 << 20).is_err(), "{doc}");
            assert!(Envelope::from_json(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    /// The block-wise run finder gives what the byte-by-byte table loop gave.
    #[test]
    fn b64_run_agrees_with_the_table() {
        let by_table = table_run;
        let base: Vec<u8> = b"ABCxyz0189=+/-_"
            .iter()
            .copied()
            .cycle()
            .take(200)
            .collect();
        let plain: Vec<u8> = b"QUJDeHl6MDE4OQ"
            .iter()
            .copied()
            .cycle()
            .take(200)
            .collect();
        for src in [&base, &plain] {
            for len in 0..=130 {
                assert_eq!(b64_run(&src[..len]), by_table(&src[..len]), "{len}");
                for stop in 0..len {
                    // Every byte value at the block edges, the telling ones everywhere.
                    let every = matches!(stop % 32, 0 | 1 | 30 | 31);
                    for b in 0..=255u8 {
                        if !every && !b"\0\"\\\n Az09=+/-_*.:@[`{\x7f\x80\xff".contains(&b) {
                            continue;
                        }
                        let mut buf = src[..len].to_vec();
                        buf[stop] = b;
                        assert_eq!(b64_run(&buf), by_table(&buf), "{len} {stop} {b}");
                    }
                }
            }
        }
        // Every byte value alone and after a full block.
        for b in 0..=255u8 {
            let mut buf = plain[..64].to_vec();
            buf.push(b);
            assert_eq!(b64_run(&buf), by_table(&buf), "{b}");
            assert_eq!(b64_run(&[b]), by_table(&[b]), "{b}");
        }
    }

    #[test]
    fn refuses_over_the_cap_before_reading_past_it() {
        let doc = env(&[1u8; 100_000]).to_json();
        let limit = 50_000u64;
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1 += n;
                Ok(n)
            }
        }
        let mut src = Counting(&doc, 0);
        let mut out = Vec::new();
        let e = read_envelope(&mut src, &mut out, limit).unwrap_err();
        assert!(matches!(e, StreamError::TooLarge { limit: 50_000 }), "{e}");
        assert!(src.1 as u64 <= limit + 1, "read {} bytes", src.1);
        assert!(stream(&doc, doc.len() as u64).is_ok());
    }
}
