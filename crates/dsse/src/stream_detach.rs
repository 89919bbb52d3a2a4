//! Documents that carry DSSE envelopes (Sigstore bundles' `dsseEnvelope`), read as a stream
//! with every payload detached: decoded to a writer on the way and left out of the document.

use std::io::{Read, Write};

use crate::stream::{Scanner, StreamError};

/// The JSON other than the payloads kept from one document (bundles of a few certificates,
/// log entries and timestamps take a few KiB each).
pub const MAX_DETACHED_REST_BYTES: usize = 16 * 1024 * 1024;

/// A document read by [`read_detaching_payloads`], with the writers its payloads went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached<W> {
    /// The document with every detached payload written as `""`: compact JSON of the same
    /// members (each other value as it was written), one object or an array of them as the
    /// input was.
    pub document: Vec<u8>,
    /// Per item (the object, or each object of the array, in order): the decoded length of its
    /// envelope's payload and the writer it went to, or `None` when it has no `member` or
    /// that has no `payload`.
    pub payloads: Vec<Option<(u64, W)>>,
}

/// Read a JSON document of at most `limit` bytes — one object, or an array of at most
/// `max_items` objects — whose objects may hold a DSSE envelope as their member `member`
/// (`"dsseEnvelope"` for a Sigstore bundle). Each such envelope's `payload` is base64-decoded
/// as it is read (as [`read_envelope`](crate::stream::read_envelope) decodes one: standard or
/// URL-safe, padded or not, one alphabet per string) and written to a writer `sink()` makes
/// for it, handed back in [`Detached::payloads`]; the document is kept without it. A duplicate `member` in an object, or `payload` in an
/// envelope, is refused (a document parsed later must not see another payload than the one
/// written), as is a document whose other members pass [`MAX_DETACHED_REST_BYTES`].
pub fn read_detaching_payloads<R: Read, W: Write>(
    input: R,
    limit: u64,
    member: &str,
    max_items: usize,
    mut sink: impl FnMut() -> W,
) -> Result<Detached<W>, StreamError> {
    let mut r = Scanner::new(input, limit);
    let mut out = Out(Vec::new());
    let mut payloads = Vec::new();
    r.skip_ws()?;
    match r.peek()? {
        Some(b'[') => {
            r.next()?;
            out.push(b"[")?;
            r.skip_ws()?;
            if r.peek()? == Some(b']') {
                r.next()?;
            } else {
                loop {
                    if payloads.len() == max_items {
                        return Err(malformed(format!("more than {max_items} items")));
                    }
                    if !payloads.is_empty() {
                        out.push(b",")?;
                    }
                    payloads.push(item(&mut r, &mut out, member, &mut sink)?);
                    r.skip_ws()?;
                    match r.next()? {
                        Some(b',') => r.skip_ws()?,
                        Some(b']') => break,
                        None => return Err(malformed("truncated document".into())),
                        _ => return Err(malformed("expected `,` or `]` after an item".into())),
                    }
                }
            }
            out.push(b"]")?;
        }
        Some(b'{') => payloads.push(item(&mut r, &mut out, member, &mut sink)?),
        _ => return Err(malformed("not a JSON object or array".into())),
    }
    r.skip_ws()?;
    if r.peek()?.is_some() {
        return Err(malformed("trailing characters after the document".into()));
    }
    Ok(Detached {
        document: out.0,
        payloads,
    })
}

fn malformed(why: String) -> StreamError {
    StreamError::Malformed(why)
}

/// The kept document, bounded by [`MAX_DETACHED_REST_BYTES`].
struct Out(Vec<u8>);

impl Out {
    fn push(&mut self, b: &[u8]) -> Result<(), StreamError> {
        if self.0.len() + b.len() > MAX_DETACHED_REST_BYTES {
            return Err(malformed(format!(
                "more than {MAX_DETACHED_REST_BYTES} bytes besides the payloads"
            )));
        }
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn name(&mut self, key: &str) -> Result<(), StreamError> {
        let quoted = serde_json::to_vec(key).map_err(|e| malformed(e.to_string()))?;
        self.push(&quoted)?;
        self.push(b":")
    }
}

/// Called with each member's name once `"name":` is written: true if it took the value.
type Member<'a, R> = dyn FnMut(&str, &mut Scanner<R>, &mut Out) -> Result<bool, StreamError> + 'a;

/// The members of one object, calling `each(key, scanner, out)` after `"key":` is written for
/// every member whose value `each` takes (it returns false to have the value copied).
fn object<R: Read>(
    r: &mut Scanner<R>,
    out: &mut Out,
    each: &mut Member<'_, R>,
) -> Result<(), StreamError> {
    r.skip_ws()?;
    if r.next()? != Some(b'{') {
        return Err(malformed("an item is not a JSON object".into()));
    }
    out.push(b"{")?;
    r.skip_ws()?;
    if r.peek()? == Some(b'}') {
        r.next()?;
        return out.push(b"}");
    }
    let mut first = true;
    loop {
        r.skip_ws()?;
        let key = r.small_string()?;
        r.skip_ws()?;
        if r.next()? != Some(b':') {
            return Err(malformed(format!("expected `:` after {key:?}")));
        }
        r.skip_ws()?;
        if !first {
            out.push(b",")?;
        }
        first = false;
        out.name(&key)?;
        if !each(&key, r, out)? {
            let raw = r.raw_value()?;
            // Checked here so the kept document is JSON wherever the input was not.
            serde_json::from_slice::<serde::de::IgnoredAny>(&raw)
                .map_err(|e| malformed(format!("member {key:?}: {e}")))?;
            out.push(&raw)?;
        }
        r.skip_ws()?;
        match r.next()? {
            Some(b',') => continue,
            Some(b'}') => return out.push(b"}"),
            Some(c) => {
                return Err(malformed(format!(
                    "unexpected {:?} after a member",
                    char::from(c)
                )))
            }
            None => return Err(malformed("truncated document".into())),
        }
    }
}

/// One item: its `member` envelope's payload detached.
fn item<R: Read, W: Write>(
    r: &mut Scanner<R>,
    out: &mut Out,
    member: &str,
    sink: &mut dyn FnMut() -> W,
) -> Result<Option<(u64, W)>, StreamError> {
    let mut envelope_seen = false;
    let mut payload: Option<(u64, W)> = None;
    object(r, out, &mut |key, r, out| {
        if key != member {
            return Ok(false);
        }
        if envelope_seen {
            return Err(malformed(format!("duplicate member `{member}`")));
        }
        envelope_seen = true;
        r.skip_ws()?;
        if r.peek()? != Some(b'{') {
            // Not an envelope: kept as it is for the parser to refuse.
            return Ok(false);
        }
        object(r, out, &mut |key, r, out| {
            if key != "payload" {
                return Ok(false);
            }
            if payload.is_some() {
                return Err(malformed("duplicate member `payload`".into()));
            }
            let mut w = sink();
            payload = Some((r.base64_string(&mut w)?, w));
            out.push(b"\"\"")?;
            Ok(true)
        })?;
        Ok(true)
    })?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64;

    /// What the tests look at: the kept document and the payload lengths, and each payload's
    /// bytes by item (up to the last item with one).
    #[derive(Debug)]
    struct Lens {
        document: Vec<u8>,
        payloads: Vec<Option<u64>>,
    }

    fn detach(doc: &[u8], max: usize) -> Result<(Lens, Vec<Vec<u8>>), StreamError> {
        let d = read_detaching_payloads(doc, 1 << 30, "dsseEnvelope", max, Vec::new)?;
        let last = d
            .payloads
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        let mut sinks = Vec::new();
        let mut lens = Vec::new();
        for p in d.payloads {
            lens.push(p.as_ref().map(|(n, _)| *n));
            sinks.push(p.map(|(_, bytes)| bytes).unwrap_or_default());
        }
        sinks.truncate(last);
        let lens = Lens {
            document: d.document,
            payloads: lens,
        };
        Ok((lens, sinks))
    }

    fn bundle(payload: &[u8], extra: &str) -> String {
        format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"certificate":{{"rawBytes":"AQID"}}}}, "dsseEnvelope" : {{"payloadType":"application/x","payload":"{}","signatures":[{{"sig":"AQID","keyid":""}}]}}{extra}}}"#,
            b64::encode(payload)
        )
    }

    #[test]
    fn detaches_each_payload_and_keeps_the_rest_as_it_was() {
        let big: Vec<u8> = (0..300_001u32).map(|i| ((i * 13) >> 2) as u8).collect();
        let one = bundle(&big, "");
        let (d, sinks) = detach(one.as_bytes(), 16).unwrap();
        assert_eq!(d.payloads, vec![Some(big.len() as u64)]);
        assert_eq!(sinks, vec![big.clone()]);
        // The kept document is the input's JSON with the payload emptied.
        let mut want: serde_json::Value = serde_json::from_str(&one).unwrap();
        want["dsseEnvelope"]["payload"] = "".into();
        let got: serde_json::Value = serde_json::from_slice(&d.document).unwrap();
        assert_eq!(got, want);
        assert!(d.document.len() < 400, "{}", d.document.len());

        // An array: each item its own sink; an item without an envelope has no payload.
        let doc = format!(
            "[ {}, {{\"messageSignature\":{{}}}} ,{} ]",
            bundle(b"abc", ""),
            bundle(&big, ",\"x\":[1,{\"payload\":\"!\"}]")
        );
        let (d, sinks) = detach(doc.as_bytes(), 16).unwrap();
        assert_eq!(d.payloads, vec![Some(3), None, Some(big.len() as u64)]);
        assert_eq!(sinks[0], b"abc");
        assert_eq!(sinks[2], big);
        let got: serde_json::Value = serde_json::from_slice(&d.document).unwrap();
        assert_eq!(got[1], serde_json::json!({"messageSignature": {}}));
        assert_eq!(
            got[2]["x"][1]["payload"], "!",
            "only the envelope's payload is taken"
        );
        assert_eq!(got[2]["dsseEnvelope"]["payload"], "");
        assert_eq!(detach(b"[]", 16).unwrap().0.payloads, vec![]);
        // Escaped names are the same names.
        let esc = one.replacen("\"dsseEnvelope\"", "\"dsse\\u0045nvelope\"", 1);
        assert_eq!(detach(esc.as_bytes(), 16).unwrap().1, vec![big]);
    }

    /// What a whole-document parse sees, for a document the stream accepted: the same items,
    /// each envelope's payload (decoded as `Envelope::from_json` decodes it) the bytes the sink
    /// got, the rest as kept.
    fn agrees_with_a_whole_parse(input: &[u8]) {
        let Ok((d, sinks)) = detach(input, 16) else {
            return;
        };
        let kept: serde_json::Value =
            serde_json::from_slice(&d.document).expect("the kept document is JSON");
        let whole: serde_json::Value = match serde_json::from_slice(input) {
            Ok(v) => v,
            Err(e) => panic!("accepted what serde_json refuses ({e}): {input:?}"),
        };
        let (whole_items, kept_items) = match (&whole, &kept) {
            (serde_json::Value::Array(w), serde_json::Value::Array(k)) => (w.clone(), k.clone()),
            (w, k) if !w.is_array() && !k.is_array() => (vec![w.clone()], vec![k.clone()]),
            _ => panic!("the document's form changed"),
        };
        assert_eq!(whole_items.len(), d.payloads.len());
        assert_eq!(kept_items.len(), d.payloads.len());
        for (i, (w, mut k)) in whole_items.into_iter().zip(kept_items).enumerate() {
            match w["dsseEnvelope"]["payload"].as_str() {
                Some(text) => {
                    let bytes = b64::decode(text).expect("a payload the stream decoded");
                    assert_eq!(d.payloads[i], Some(bytes.len() as u64));
                    assert_eq!(sinks[i], bytes);
                    assert_eq!(k["dsseEnvelope"]["payload"], "");
                    k["dsseEnvelope"]["payload"] = text.into();
                }
                None => assert_eq!(d.payloads[i], None, "{input:?}"),
            }
            assert_eq!(k, w);
        }
    }

    /// Mutations of a two-item document (a byte changed, dropped or doubled; cut short)
    /// never panic, and what is accepted is what a whole parse sees.
    #[test]
    fn mutated_documents_agree_with_a_whole_parse() {
        let doc = format!(
            "[{}, {}]",
            bundle(b"first payload", ""),
            bundle(&[0xfe; 40], ",\"x\":{\"payload\":\"AA\"}")
        );
        let doc = doc.as_bytes();
        agrees_with_a_whole_parse(doc);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]\",:\\ AaZz09+/-_=\n";
        for _ in 0..20_000 {
            let mut m = doc.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() % m.len() as u64) as usize;
                match next() % 4 {
                    0 => m[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        m.remove(at);
                    }
                    2 => m.insert(at, m[at]),
                    _ => m.truncate(at),
                }
                if m.is_empty() {
                    break;
                }
            }
            agrees_with_a_whole_parse(&m);
        }
    }

    #[test]
    fn refuses_what_would_let_a_parser_see_another_payload() {
        let good = bundle(b"payload", "");
        for (doc, why) in [
            (
                good.replacen("\"payloadType\"", "\"payload\":\"AAAA\",\"payloadType\"", 1),
                "duplicate member `payload`",
            ),
            (
                good.replacen(
                    "\"dsseEnvelope\"",
                    "\"dsseEnvelope\":{},\"dsseEnvelope\"",
                    1,
                ),
                "duplicate member `dsseEnvelope`",
            ),
            (format!("[{good},{good},{good}]"), "more than 2 items"),
            (format!("{good} x"), "trailing"),
            (format!("[{good}"), "truncated"),
            ("\"x\"".into(), "not a JSON object or array"),
            ("[1]".into(), "not a JSON object"),
            (good.replacen("\"AQID\"", "tru", 1), "verificationMaterial"),
            (
                good.replacen("\"payload\":\"", "\"payload\":\"*", 1),
                "unexpected character",
            ),
        ] {
            let e = detach(doc.as_bytes(), 2).unwrap_err().to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
        // Beside the payloads, the rest is bounded.
        let fat = bundle(b"x", &format!(",\"y\":\"{}\"", "a".repeat(1_000_000)));
        let many = format!("[{}]", vec![fat.as_str(); 17].join(","));
        let e = detach(many.as_bytes(), 100).unwrap_err().to_string();
        assert!(e.contains("besides the payloads"), "{e}");
    }
}
