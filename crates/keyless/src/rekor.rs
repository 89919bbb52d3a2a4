//! Rekor v1 client: `POST /api/v1/log/entries` with a `hashedrekord` 0.0.1 (blobs) or
//! `dsse` 0.0.1 (envelopes) proposal. The answer (`{uuid: {body, integratedTime, logID,
//! logIndex, verification: {signedEntryTimestamp, inclusionProof}}}`) becomes a bundle
//! `TransparencyLogEntry`; its SET, inclusion proof and checkpoint are verified with the
//! whole bundle against the trusted root's log key before the bundle is returned. A 409
//! (the entry exists already) is followed to the existing entry (`Location`).

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Service, UpstreamError};
use crate::http::{self, HttpOptions};
use crate::tlog::{InclusionProof, LogEntry, Proposal, TransparencyLog};
use crate::UpstreamFuture;

/// A Rekor v1 instance.
#[derive(Debug, Clone)]
pub struct RekorClient {
    base: String,
    client: reqwest::Client,
    options: HttpOptions,
}

impl RekorClient {
    /// `base_url` like `https://rekor.sigstore.dev`.
    pub fn new(base_url: &str, options: HttpOptions) -> Result<Self, UpstreamError> {
        let base = http::check_url(Service::Rekor, base_url)?;
        Ok(RekorClient {
            client: http::client(Service::Rekor, &base, &options)?,
            base,
            options,
        })
    }

    async fn upload_inner(&self, p: Proposal<'_>) -> Result<LogEntry, UpstreamError> {
        let url = format!("{}/api/v1/log/entries", self.base);
        let body = p.to_json().to_string().into_bytes();
        let (status, resp, location) = http::send(
            &self.client,
            http::Call {
                service: Service::Rekor,
                method: reqwest::Method::POST,
                url: &url,
                content_type: "application/json",
                accept: "application/json",
                body: Some(&body),
                conflict_ok: true,
            },
            &self.options,
        )
        .await?;
        let (resp, url) = if status == 409 {
            let loc = location.ok_or_else(|| UpstreamError::InvalidResponse {
                service: Service::Rekor,
                url: url.clone(),
                reason: "409 without a Location of the existing entry".into(),
            })?;
            let loc = if loc.starts_with('/') {
                format!("{}{loc}", self.base)
            } else {
                loc
            };
            if !loc.starts_with(&self.base) {
                return Err(UpstreamError::untrusted(
                    Service::Rekor,
                    format!("409 points to {loc}, outside {}", self.base),
                ));
            }
            let (_, r, _) = http::send(
                &self.client,
                http::Call {
                    service: Service::Rekor,
                    method: reqwest::Method::GET,
                    url: &loc,
                    content_type: "",
                    accept: "application/json",
                    body: None,
                    conflict_ok: false,
                },
                &self.options,
            )
            .await?;
            (r, loc)
        } else {
            (resp, url)
        };
        parse_entry(&resp, &self.base).map_err(|e| UpstreamError::InvalidResponse {
            service: Service::Rekor,
            url,
            reason: e.to_string(),
        })
    }
}

/// Why a Rekor answer cannot be read as a log entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EntryError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
    #[error("expected one entry, got {0}")]
    EntryCount(usize),
    #[error("the body is not JSON: {0}")]
    BodyNotJson(serde_json::Error),
    #[error("the body has no {0}")]
    BodyMissing(&'static str),
    #[error("`{0}` is not a string")]
    NotString(&'static str),
    #[error("`{0}` is not an integer")]
    NotInteger(&'static str),
    #[error("`{0}` is not a non-negative integer")]
    NotUnsigned(&'static str),
    #[error("`{0}` is not an array")]
    NotArray(&'static str),
    #[error("`{field}`: {source}")]
    Base64 {
        field: &'static str,
        source: base64::DecodeError,
    },
    #[error("odd-length hex {0:?}")]
    OddHex(String),
    #[error("not hex: {0:?}")]
    NotHex(String),
    #[error("the entry has neither a SET nor an inclusion proof")]
    NoProof,
}

fn hex_decode(s: &str) -> Result<Vec<u8>, EntryError> {
    if !s.len().is_multiple_of(2) {
        return Err(EntryError::OddHex(s.to_string()));
    }
    // By bytes: the text comes from the log (a multi-byte character must be refused, not
    // sliced through), and only hex digits count (`from_str_radix` would take "+f").
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
            _ => Err(EntryError::NotHex(s.to_string())),
        })
        .collect()
}

fn b64d(v: &Value, what: &'static str) -> Result<Vec<u8>, EntryError> {
    let s = v.as_str().ok_or(EntryError::NotString(what))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|source| EntryError::Base64 {
            field: what,
            source,
        })
}

fn u64_of(v: &Value, what: &'static str) -> Result<u64, EntryError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or(EntryError::NotUnsigned(what))
}

/// Read a Rekor v1 `LogEntry` answer (one entry).
pub(crate) fn parse_entry(resp: &[u8], base: &str) -> Result<LogEntry, EntryError> {
    let v: Value = serde_json::from_slice(resp).map_err(EntryError::NotJson)?;
    let obj = v.as_object().ok_or(EntryError::NotObject)?;
    let [(uuid, e)] = obj.iter().collect::<Vec<_>>()[..] else {
        return Err(EntryError::EntryCount(obj.len()));
    };
    let body = b64d(e.get("body").unwrap_or(&Value::Null), "body")?;
    let body_json: Value = serde_json::from_slice(&body).map_err(EntryError::BodyNotJson)?;
    let kind = body_json
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(EntryError::BodyMissing("kind"))?
        .to_string();
    let kind_version = body_json
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(EntryError::BodyMissing("apiVersion"))?
        .to_string();
    let integrated_time = e
        .get("integratedTime")
        .and_then(Value::as_i64)
        .ok_or(EntryError::NotInteger("integratedTime"))?;
    let log_id = hex_decode(
        e.get("logID")
            .and_then(Value::as_str)
            .ok_or(EntryError::NotString("logID"))?,
    )?;
    let log_index = u64_of(e.get("logIndex").unwrap_or(&Value::Null), "logIndex")?;
    let ver = e.get("verification").unwrap_or(&Value::Null);
    let set = match ver.get("signedEntryTimestamp") {
        None | Some(Value::Null) => None,
        Some(s) => Some(b64d(s, "signedEntryTimestamp")?),
    };
    let inclusion_proof = match ver.get("inclusionProof") {
        None | Some(Value::Null) => None,
        Some(p) => Some(InclusionProof {
            log_index: u64_of(p.get("logIndex").unwrap_or(&Value::Null), "logIndex")?,
            tree_size: u64_of(p.get("treeSize").unwrap_or(&Value::Null), "treeSize")?,
            root_hash: hex_decode(
                p.get("rootHash")
                    .and_then(Value::as_str)
                    .ok_or(EntryError::NotString("rootHash"))?,
            )?,
            hashes: p
                .get("hashes")
                .and_then(Value::as_array)
                .ok_or(EntryError::NotArray("hashes"))?
                .iter()
                .map(|h| hex_decode(h.as_str().unwrap_or("?")))
                .collect::<Result<_, _>>()?,
            checkpoint: p
                .get("checkpoint")
                .and_then(Value::as_str)
                .ok_or(EntryError::NotString("checkpoint"))?
                .to_string(),
        }),
    };
    if set.is_none() && inclusion_proof.is_none() {
        return Err(EntryError::NoProof);
    }
    Ok(LogEntry {
        url: base.to_string(),
        uuid: uuid.clone(),
        log_index,
        log_id,
        integrated_time,
        kind,
        kind_version,
        body,
        set,
        inclusion_proof,
    })
}

impl TransparencyLog for RekorClient {
    fn upload<'a>(&'a self, proposal: Proposal<'a>) -> UpstreamFuture<'a, LogEntry> {
        Box::pin(self.upload_inner(proposal))
    }

    fn url(&self) -> String {
        self.base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(entry: Value) -> Vec<u8> {
        json!({"24296fb24b8ad77a": entry}).to_string().into_bytes()
    }

    fn good() -> Value {
        let body = base64::engine::general_purpose::STANDARD
            .encode(br#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}"#);
        json!({
            "body": body, "integratedTime": 1_700_000_000, "logID": "c0d23d6a", "logIndex": 7,
            "verification": {
                "signedEntryTimestamp": "AAEC",
                "inclusionProof": {"logIndex": 7, "treeSize": 8, "rootHash": "00ff",
                                   "hashes": ["0a0b"], "checkpoint": "note\n"}
            }
        })
    }

    #[test]
    fn entries_are_read_and_malformed_ones_refused() {
        let e = parse_entry(&answer(good()), "https://rekor.test").unwrap();
        assert_eq!(
            (e.kind.as_str(), e.kind_version.as_str()),
            ("hashedrekord", "0.0.1")
        );
        assert_eq!(e.log_id, vec![0xc0, 0xd2, 0x3d, 0x6a]);
        assert_eq!(
            e.inclusion_proof.as_ref().unwrap().hashes,
            vec![vec![0x0a, 0x0b]]
        );
        let j = e.to_bundle_json();
        assert_eq!(j["logIndex"], "7");
        assert_eq!(j["kindVersion"]["kind"], "hashedrekord");

        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut v = good();
        v["logID"] = json!("xyz");
        cases.push((v, "hex"));
        let mut v = good();
        v["body"] = json!("bm90IGpzb24=");
        cases.push((v, "not JSON"));
        let mut v = good();
        v["verification"] = json!({});
        cases.push((v, "neither"));
        let mut v = good();
        v["logIndex"] = json!(-1);
        cases.push((v, "logIndex"));
        let mut v = good();
        v["verification"]["inclusionProof"]["hashes"] = json!([1]);
        cases.push((v, "hex"));
        for (v, want) in cases {
            let e = parse_entry(&answer(v), "u").unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let two = json!({"a": good(), "b": good()}).to_string();
        assert!(parse_entry(two.as_bytes(), "u")
            .unwrap_err()
            .to_string()
            .contains("one entry"));
        assert!(parse_entry(b"[]", "u").is_err());
    }

    #[test]
    fn hex_fields_take_hex_digits_only() {
        assert_eq!(hex_decode("00fF").unwrap(), vec![0x00, 0xff]);
        assert_eq!(hex_decode("").unwrap(), Vec::<u8>::new());
        // A multi-byte character (found by the `rekor_entry` fuzz target: it used to panic
        // slicing through it), signs and spaces `from_str_radix` would have taken.
        for bad in [
            "c\u{424}23d",
            "\u{424}\u{424}",
            "+f",
            "-1",
            " f",
            "0x",
            "gg",
        ] {
            assert!(
                matches!(hex_decode(bad), Err(EntryError::NotHex(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(hex_decode("abc"), Err(EntryError::OddHex(_))));
        let mut e = good();
        e["logID"] = json!("c\u{424}23d6ad4");
        assert!(parse_entry(&answer(e), "https://rekor.test").is_err());
    }
}
