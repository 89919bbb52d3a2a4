//! Typed JSON views: what a command prints with `--output json` (or `--format json`).
//!
//! Each view borrows from the library's result and derives `Serialize`; nothing here builds
//! JSON by hand. Output stays byte-identical to the earlier `json!` literals: [`print`] goes
//! through a `serde_json::Value`, whose objects keep their keys sorted (serde_json without
//! `preserve_order`), as those literals did; an `Option` is `null` when empty, never absent.
//!
//! Views shared by several commands live here; the others beside their command.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

/// Print a view as pretty JSON on stdout (keys sorted, see the module docs).
pub(crate) fn print<T: Serialize + ?Sized>(view: &T) -> Result<()> {
    println!("{}", pretty(view)?);
    Ok(())
}

/// A view as pretty JSON (keys sorted).
pub(crate) fn pretty<T: Serialize + ?Sized>(view: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(&to_value(view)?)?)
}

/// A view as a JSON value (for `exit::print_json_failure`, which adds the failure fields).
pub(crate) fn to_value<T: Serialize + ?Sized>(view: &T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(view)?)
}

/// A view as a JSON value, for the fields of a failure report (`exit::print_json_failure`):
/// `null` if the view cannot be serialized (it always can: paths, strings and numbers).
pub(crate) fn fields<T: Serialize + ?Sized>(view: &T) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

/// A key that signed: `{"id": keyring id, "keyid": key id}`.
#[derive(Serialize)]
pub(crate) struct SignerView<'a> {
    pub(crate) id: &'a str,
    pub(crate) keyid: &'a str,
}

impl<'a> SignerView<'a> {
    pub(crate) fn all(keys: &'a [stella_keys::VerifiedKey]) -> Vec<SignerView<'a>> {
        keys.iter()
            .map(|s| SignerView {
                id: &s.id,
                keyid: s.key_id.as_str(),
            })
            .collect()
    }
}

/// A subject: `{"name", "digest": {alg: hex}}`.
pub(crate) struct SubjectView<'a>(pub(crate) &'a stella_dsse::Subject);

impl Serialize for SubjectView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            name: &'a str,
            digest: &'a std::collections::BTreeMap<String, String>,
        }
        Entry {
            name: &self.0.name,
            digest: &self.0.digest,
        }
        .serialize(s)
    }
}

/// The keyring ids of the keys that signed, `a, b` (text reports).
pub(crate) fn signer_ids(keys: &[stella_keys::VerifiedKey]) -> String {
    keys.iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The failure fields of `verify attestation` and `promotion verify`.
#[derive(Serialize)]
pub(crate) struct FileFailureView<'a> {
    pub(crate) file: &'a str,
    pub(crate) threshold: usize,
}

/// The failure fields of `stella mirror verify`.
#[derive(Serialize)]
pub(crate) struct VerifyFailureView<'a> {
    pub(crate) source: &'a Path,
    pub(crate) threshold: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Unsorted<'a> {
        zeta: u8,
        alpha: Option<&'a str>,
        #[serde(rename = "midCamel")]
        mid: &'a str,
    }

    #[test]
    fn views_print_with_sorted_keys_and_null_for_none() {
        let v = Unsorted {
            zeta: 1,
            alpha: None,
            mid: "m",
        };
        assert_eq!(
            pretty(&v).unwrap(),
            "{\n  \"alpha\": null,\n  \"midCamel\": \"m\",\n  \"zeta\": 1\n}"
        );
    }

    #[test]
    fn signer_view_matches_the_old_literal() {
        let k = stella_keys::VerifiedKey {
            id: "ops".into(),
            key_id: stella_keys::KeyId::of_spki(b"spki"),
        };
        let v = to_value(&SignerView::all(std::slice::from_ref(&k))).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"id": "ops", "keyid": k.key_id.as_str()}])
        );
    }
}
