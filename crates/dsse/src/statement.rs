//! in-toto Statement v1: a list of subjects (name + digests), a predicate type and a
//! predicate. We build statements from validated parts and serialise them straight into RFC
//! 8785 canonical form (the signed bytes), and parse foreign statements strictly (duplicate
//! keys refused) before checking their structure.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::jcs;

pub const STATEMENT_TYPE_V1: &str = "https://in-toto.io/Statement/v1";
pub const PAYLOAD_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";

/// Why a statement or subject was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    #[error("statement is not valid JSON: {0}")]
    Json(#[from] jcs::JcsError),
    #[error("statement `_type` is {0:?}, expected \"{STATEMENT_TYPE_V1}\"")]
    WrongType(String),
    #[error("statement field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("statement has no subject")]
    NoSubject,
    #[error("subject {index} has no digest")]
    NoDigest { index: usize },
    #[error(
        "subject {index}: digest `{algorithm}` is not valid lowercase hex of the right length"
    )]
    BadDigest { index: usize, algorithm: String },
    #[error("predicateType is empty")]
    EmptyPredicateType,
    #[error("subject reference {0:?} is not NAME@sha256:HEX (64 lowercase hex digits)")]
    BadSubjectRef(String),
}

/// A statement subject (an in-toto ResourceDescriptor with a name and digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    /// Algorithm → lowercase hex digest, e.g. `sha256` → 64 hex digits.
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject with one SHA-256 digest (validated).
    pub fn sha256(name: impl Into<String>, hex: impl Into<String>) -> Result<Self, StatementError> {
        let mut digest = BTreeMap::new();
        digest.insert("sha256".to_string(), hex.into());
        let s = Subject {
            name: name.into(),
            digest,
        };
        s.validate(0)?;
        Ok(s)
    }

    /// Parse `NAME@sha256:HEX`.
    pub fn parse_ref(reference: &str) -> Result<Self, StatementError> {
        let bad = || StatementError::BadSubjectRef(reference.to_string());
        let (name, digest) = reference.rsplit_once('@').ok_or_else(bad)?;
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        if name.is_empty() || !is_hex_of_len(hex, 64) {
            return Err(bad());
        }
        Subject::sha256(name, hex)
    }

    fn validate(&self, index: usize) -> Result<(), StatementError> {
        if self.digest.is_empty() {
            return Err(StatementError::NoDigest { index });
        }
        for (alg, hex) in &self.digest {
            let want = match alg.as_str() {
                "sha256" => Some(64),
                "sha384" => Some(96),
                "sha512" => Some(128),
                "sha1" | "gitCommit" => Some(40),
                _ => None,
            };
            let ok = match want {
                Some(len) => is_hex_of_len(hex, len),
                None => !hex.is_empty(),
            };
            if !ok {
                return Err(StatementError::BadDigest {
                    index,
                    algorithm: alg.clone(),
                });
            }
        }
        Ok(())
    }
}

fn is_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub subject: Vec<Subject>,
    pub predicate_type: String,
    pub predicate: Value,
}

impl Statement {
    /// Build a statement from validated parts.
    pub fn new(
        subject: Vec<Subject>,
        predicate_type: impl Into<String>,
        predicate: Value,
    ) -> Result<Self, StatementError> {
        let st = Statement {
            subject,
            predicate_type: predicate_type.into(),
            predicate,
        };
        st.validate()?;
        Ok(st)
    }

    fn validate(&self) -> Result<(), StatementError> {
        if self.subject.is_empty() {
            return Err(StatementError::NoSubject);
        }
        for (i, s) in self.subject.iter().enumerate() {
            s.validate(i)?;
        }
        if self.predicate_type.is_empty() {
            return Err(StatementError::EmptyPredicateType);
        }
        if !self.predicate.is_object() {
            return Err(StatementError::Field("predicate"));
        }
        Ok(())
    }

    /// The canonical (RFC 8785) bytes of the statement: what gets signed.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, jcs::JcsError> {
        // Room for a statement with a small predicate, inside the allocator's per-thread cache
        // (glibc serves up to ~1 KiB from it; 4 KiB took its slow path on every request).
        let mut out = Vec::with_capacity(1024);
        self.write_canonical(&mut out)?;
        Ok(out)
    }

    /// Append the canonical bytes to `out`. Keys are written in RFC 8785 order directly:
    /// `_type` < `predicate` < `predicateType` < `subject`; `digest` < `name`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), jcs::JcsError> {
        out.extend_from_slice(b"{\"_type\":\"");
        out.extend_from_slice(STATEMENT_TYPE_V1.as_bytes());
        out.extend_from_slice(b"\",\"predicate\":");
        jcs::write_value(&self.predicate, out)?;
        out.extend_from_slice(b",\"predicateType\":");
        jcs::write_str(&self.predicate_type, out);
        out.extend_from_slice(b",\"subject\":[");
        for (i, s) in self.subject.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"digest\":{");
            // BTreeMap orders by UTF-8 bytes, which equals UTF-16 order for these ASCII names;
            // non-ASCII algorithm names go through the general canonicaliser.
            if s.digest.keys().all(|k| k.is_ascii()) {
                for (j, (alg, hex)) in s.digest.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    jcs::write_str(alg, out);
                    out.push(b':');
                    jcs::write_str(hex, out);
                }
                out.push(b'}');
            } else {
                out.pop();
                let map: serde_json::Map<String, Value> = s
                    .digest
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                jcs::write_value(&Value::Object(map), out)?;
            }
            out.extend_from_slice(b",\"name\":");
            jcs::write_str(&s.name, out);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(())
    }

    /// Parse and validate a statement (strict JSON: duplicate keys refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, StatementError> {
        let value = jcs::parse_strict(bytes)?;
        Self::from_value(value)
    }

    /// Validate a statement held as a JSON value.
    pub fn from_value(value: Value) -> Result<Self, StatementError> {
        let Value::Object(mut obj) = value else {
            return Err(StatementError::Field("statement"));
        };
        match obj.get("_type") {
            Some(Value::String(t)) if t == STATEMENT_TYPE_V1 => {}
            Some(Value::String(t)) => return Err(StatementError::WrongType(t.clone())),
            _ => return Err(StatementError::Field("_type")),
        }
        let predicate_type = match obj.remove("predicateType") {
            Some(Value::String(t)) => t,
            _ => return Err(StatementError::Field("predicateType")),
        };
        let predicate = obj
            .remove("predicate")
            .unwrap_or_else(|| Value::Object(Default::default()));
        let Some(Value::Array(subjects)) = obj.remove("subject") else {
            return Err(StatementError::Field("subject"));
        };
        let mut subject = Vec::with_capacity(subjects.len());
        for (index, s) in subjects.into_iter().enumerate() {
            let Value::Object(mut s) = s else {
                return Err(StatementError::Field("subject[]"));
            };
            let name = match s.remove("name") {
                Some(Value::String(n)) => n,
                None => String::new(),
                Some(_) => return Err(StatementError::Field("subject[].name")),
            };
            let Some(Value::Object(d)) = s.remove("digest") else {
                return Err(StatementError::NoDigest { index });
            };
            let mut digest = BTreeMap::new();
            for (k, v) in d {
                let Value::String(v) = v else {
                    return Err(StatementError::BadDigest {
                        index,
                        algorithm: k,
                    });
                };
                digest.insert(k, v);
            }
            subject.push(Subject { name, digest });
        }
        Statement::new(subject, predicate_type, predicate)
    }

    /// SHA-256 hex digests of all subjects (those that have one).
    pub fn sha256_digests(&self) -> impl Iterator<Item = &str> {
        self.subject
            .iter()
            .filter_map(|s| s.digest.get("sha256").map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEX: &str = "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4";

    #[test]
    fn canonical_bytes_equal_general_canonicaliser() {
        let st = Statement::new(
            vec![Subject::sha256("app.tar", HEX).unwrap()],
            crate::predicates::SBOM_V1,
            json!({"z": 1, "a": [true, null, 1.5e300], "ü": "x\u{1}"}),
        )
        .unwrap();
        let direct = st.to_canonical_json().unwrap();
        let general = jcs::canonicalize(&direct).unwrap();
        assert_eq!(direct, general);
        let back = Statement::from_json(&direct).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn subject_refs() {
        let s = Subject::parse_ref(&format!("registry/app:1@sha256:{HEX}")).unwrap();
        assert_eq!(s.name, "registry/app:1");
        for bad in [
            "app".to_string(),
            format!("@sha256:{HEX}"),
            format!("app@sha512:{HEX}"),
            format!("app@sha256:{}", HEX.to_uppercase()),
            format!("app@sha256:{}", &HEX[1..]),
        ] {
            assert!(Subject::parse_ref(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn structure_errors() {
        let cases = [
            (
                json!({"_type": "https://in-toto.io/Statement/v0.1", "subject": [], "predicateType": "x"}),
                "expected",
            ),
            (
                json!({"_type": STATEMENT_TYPE_V1, "subject": [], "predicateType": "x", "predicate": {}}),
                "no subject",
            ),
            (
                json!({"_type": STATEMENT_TYPE_V1, "subject": [{"name": "a"}], "predicateType": "x"}),
                "no digest",
            ),
            (
                json!({"_type": STATEMENT_TYPE_V1, "subject": [{"name": "a", "digest": {"sha256": "XYZ"}}], "predicateType": "x"}),
                "lowercase hex",
            ),
            (
                json!({"_type": STATEMENT_TYPE_V1, "subject": [{"name": "a", "digest": {"sha256": HEX}}]}),
                "predicateType",
            ),
            (
                json!({"_type": STATEMENT_TYPE_V1, "subject": [{"name": "a", "digest": {"sha256": HEX}}], "predicateType": "x", "predicate": [1]}),
                "predicate",
            ),
        ];
        for (v, needle) in cases {
            let err = Statement::from_value(v.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{v}: {err}");
        }
        let dup = format!(
            r#"{{"_type":"{STATEMENT_TYPE_V1}","predicateType":"a","predicateType":"b","subject":[{{"digest":{{"sha256":"{HEX}"}}}}]}}"#
        );
        assert!(Statement::from_json(dup.as_bytes()).is_err());
    }
}
