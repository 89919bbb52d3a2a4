//! Signed key revocation lists: the file an Offline Kit carries so an air-gapped verifier
//! learns that a key was compromised or retired.
//!
//! A list is a DSSE envelope (payload type
//! `application/vnd.stellaops.key-revocations+json;version=1`) over canonical JSON (RFC 8785):
//!
//! ```json
//! {"kind":"stella.ops/key-revocations@v1","serial":3,"issued":"2026-05-01T00:00:00Z",
//!  "revocations":[{"keyId":"sha256:…","revokedAt":"2026-04-30T12:00:00Z","reason":"compromised"}]}
//! ```
//!
//! Lists are cumulative (each new one carries every earlier entry, with a higher serial), so
//! the newest list is the only one a verifier needs. A list counts only when a key of the
//! verifier's own keyring signed it; a list can only take trust away, never add it.
//!
//! Applying a list to a keyring ([`RevocationList::apply`]): a listed key stays usable only
//! for signatures whose signing time is *verified* (an RFC 3161 time anchor or transparency-log
//! time, never a time the signer wrote itself) and earlier than `revokedAt`. With no verified
//! signing time, a listed key is refused outright: whoever holds a compromised key can write
//! any date into what it signs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stella_dsse::Envelope;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::keyring::{Keyring, TrustedKey};
use crate::public::KeyId;
use crate::signer::{SignError, Signer};
use crate::KeyError;

/// DSSE payload type of a revocation list.
pub(crate) const PAYLOAD_TYPE: &str = "application/vnd.stellaops.key-revocations+json;version=1";
/// The `kind` field of a revocation list.
pub(crate) const KIND: &str = "stella.ops/key-revocations@v1";

/// One revoked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// `sha256:<hex>` of the key's SPKI (what [`KeyId`] holds).
    pub key_id: String,
    /// From this instant on, the key's signatures are refused.
    pub revoked_at: OffsetDateTime,
    pub reason: String,
}

/// A verified (or about to be signed) revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    pub serial: u64,
    pub issued: OffsetDateTime,
    /// By key id; one entry per key (the earliest revocation time wins).
    entries: BTreeMap<String, Revocation>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    kind: String,
    serial: u64,
    issued: String,
    revocations: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    key_id: String,
    revoked_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn parse_time(s: &str, what: &str) -> Result<OffsetDateTime, KeyError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        KeyError::Keyring(format!(
            "revocation list: {what} {s:?} is not an RFC 3339 date-time: {e}"
        ))
    })
}

fn valid_key_id(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl RevocationList {
    /// An empty list (serial 0).
    pub fn new(issued: OffsetDateTime) -> Self {
        RevocationList {
            serial: 0,
            issued,
            entries: BTreeMap::new(),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Revocation> {
        self.entries.values()
    }

    pub fn get(&self, key_id: &KeyId) -> Option<&Revocation> {
        self.entries.get(key_id.as_str())
    }

    /// Revoke a key (see [`RevocationList::revoke`]) by its public key.
    pub fn revoke_key(&mut self, key_id: &KeyId, revoked_at: OffsetDateTime, reason: &str) {
        self.revoke(Revocation {
            key_id: key_id.as_str().to_string(),
            revoked_at,
            reason: reason.to_string(),
        });
    }

    /// Add (or move earlier) a revocation.
    pub fn revoke(&mut self, r: Revocation) {
        match self.entries.get(&r.key_id) {
            Some(old) if old.revoked_at <= r.revoked_at => {}
            _ => {
                self.entries.insert(r.key_id.clone(), r);
            }
        }
    }

    /// The canonical JSON payload.
    pub(crate) fn to_payload(&self) -> Result<Vec<u8>, KeyError> {
        let doc = Doc {
            kind: KIND.into(),
            serial: self.serial,
            issued: fmt_time(self.issued),
            revocations: self
                .entries
                .values()
                .map(|r| Entry {
                    key_id: r.key_id.clone(),
                    revoked_at: fmt_time(r.revoked_at),
                    reason: r.reason.clone(),
                })
                .collect(),
        };
        stella_dsse::jcs::to_vec(&doc)
            .map_err(|e| KeyError::Keyring(format!("cannot encode the revocation list: {e}")))
    }

    /// Parse a payload (structure only: call [`RevocationList::verify`] for a signed file).
    pub(crate) fn from_payload(bytes: &[u8]) -> Result<Self, KeyError> {
        let v = stella_dsse::jcs::parse_strict(bytes)
            .map_err(|e| KeyError::Keyring(format!("revocation list is not JSON: {e}")))?;
        let doc: Doc = serde_json::from_value(v)
            .map_err(|e| KeyError::Keyring(format!("revocation list: {e}")))?;
        if doc.kind != KIND {
            return Err(KeyError::Keyring(format!(
                "revocation list kind is {:?}, expected {KIND:?}",
                doc.kind
            )));
        }
        let mut list = RevocationList {
            serial: doc.serial,
            issued: parse_time(&doc.issued, "issued")?,
            entries: BTreeMap::new(),
        };
        for e in doc.revocations {
            if !valid_key_id(&e.key_id) {
                return Err(KeyError::Keyring(format!(
                    "revocation list: {:?} is not a key id (sha256:<64 hex>)",
                    e.key_id
                )));
            }
            if list.entries.contains_key(&e.key_id) {
                return Err(KeyError::Keyring(format!(
                    "revocation list: key {} is listed twice",
                    e.key_id
                )));
            }
            let r = Revocation {
                key_id: e.key_id.clone(),
                revoked_at: parse_time(&e.revoked_at, "revokedAt")?,
                reason: e.reason,
            };
            list.entries.insert(e.key_id, r);
        }
        Ok(list)
    }

    /// Sign the list (DSSE, canonical JSON payload).
    pub fn sign(&self, signer: &dyn Signer) -> Result<Envelope, SignError> {
        let payload = self
            .to_payload()
            .map_err(|e| SignError::Statement(e.to_string()))?;
        crate::dsse::sign_envelope(PAYLOAD_TYPE, payload, &[signer])
    }

    /// Verify a signed list against `keyring` (a signature by any of its keys, valid now)
    /// and parse it.
    pub(crate) fn verify(envelope: &Envelope, keyring: &Keyring) -> Result<Self, KeyError> {
        let policy = crate::dsse::Policy::new(1).payload_type(PAYLOAD_TYPE);
        crate::dsse::verify_envelope(envelope, keyring, &policy).map_err(|e| {
            KeyError::Keyring(format!(
                "the revocation list is not signed by a trusted key: {e}"
            ))
        })?;
        Self::from_payload(&envelope.payload)
    }

    /// Load and verify a signed list file.
    pub fn load(path: &std::path::Path, keyring: &Keyring) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
        let env = Envelope::from_json(&bytes).map_err(|e| {
            KeyError::Keyring(format!("{}: not a DSSE envelope: {e}", path.display()))
        })?;
        Self::verify(&env, keyring).map_err(|e| KeyError::In {
            context: path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// The keyring as it stands for a signature made at `signing_time` (verified, or `None`):
    /// each listed key is marked revoked unless the verified signing time precedes its
    /// revocation.
    pub fn apply(&self, keyring: &Keyring, signing_time: Option<OffsetDateTime>) -> Keyring {
        let keys: Vec<TrustedKey> = keyring
            .keys()
            .iter()
            .map(|k| {
                let mut k = k.clone();
                if let Some(r) = self.get(k.key.key_id()) {
                    let before = signing_time.is_some_and(|t| t < r.revoked_at);
                    if !before {
                        k.revoked = true;
                    }
                }
                k
            })
            .collect();
        // The keys were distinct in `keyring`, so they still are; identities are kept.
        keyring.with_keys(keys).unwrap_or_else(|_| keyring.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileKey;
    use crate::keyring::{Ineligible, Purpose};
    use crate::public::Algorithm;
    use time::macros::datetime;

    fn key() -> FileKey {
        FileKey::generate(Algorithm::Ed25519).unwrap()
    }

    fn trusted(k: &FileKey, id: &str) -> TrustedKey {
        let mut t = TrustedKey::unrestricted(k.public_key().clone());
        t.id = id.into();
        t
    }

    #[test]
    fn sign_verify_roundtrip_and_tamper() {
        let root = key();
        let victim = key();
        let ring = Keyring::new(vec![trusted(&root, "root"), trusted(&victim, "v")]).unwrap();
        let mut list = RevocationList::new(datetime!(2026-05-01 0:00 UTC));
        list.serial = 2;
        list.revoke_key(
            victim.public_key().key_id(),
            datetime!(2026-04-30 12:00 UTC),
            "compromised",
        );
        let env = list.sign(&root).unwrap();
        let back = RevocationList::verify(&env, &ring).unwrap();
        assert_eq!(back, list);
        // Canonical payload: stable bytes.
        assert_eq!(env.payload, list.to_payload().unwrap());
        // Signed by a stranger: refused.
        let stranger = key();
        let env2 = list.sign(&stranger).unwrap();
        assert!(RevocationList::verify(&env2, &ring).is_err());
        // Tampered payload: refused.
        let mut t = env.clone();
        t.payload = t.payload.replace_first(b"compromised", b"fine-ok-xyz");
        assert!(RevocationList::verify(&t, &ring).is_err());
    }

    #[test]
    fn malformed_lists_refused() {
        for bad in [
            r#"{"kind":"other","serial":1,"issued":"2026-01-01T00:00:00Z","revocations":[]}"#,
            r#"{"kind":"stella.ops/key-revocations@v1","serial":1,"issued":"yesterday","revocations":[]}"#,
            r#"{"kind":"stella.ops/key-revocations@v1","serial":1,"issued":"2026-01-01T00:00:00Z","revocations":[{"keyId":"abc","revokedAt":"2026-01-01T00:00:00Z"}]}"#,
            r#"{"kind":"stella.ops/key-revocations@v1","serial":1,"issued":"2026-01-01T00:00:00Z","revocations":[],"extra":1}"#,
        ] {
            assert!(
                RevocationList::from_payload(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        let id = format!("sha256:{}", "a".repeat(64));
        let twice = format!(
            r#"{{"kind":"stella.ops/key-revocations@v1","serial":1,"issued":"2026-01-01T00:00:00Z","revocations":[{{"keyId":"{id}","revokedAt":"2026-01-01T00:00:00Z"}},{{"keyId":"{id}","revokedAt":"2026-02-01T00:00:00Z"}}]}}"#
        );
        assert!(RevocationList::from_payload(twice.as_bytes()).is_err());
    }

    #[test]
    fn revocation_time_against_verified_signing_time() {
        let old = key();
        let ring = Keyring::new(vec![trusted(&old, "old")]).unwrap();
        let mut list = RevocationList::new(datetime!(2026-05-01 0:00 UTC));
        list.revoke_key(
            old.public_key().key_id(),
            datetime!(2026-04-30 12:00 UTC),
            "retired",
        );
        let policy = |at| crate::dsse::Policy::new(1).at(at);
        let env = crate::dsse::sign_envelope("t", b"p".to_vec(), &[&old]).unwrap();
        // Verified signing time before the revocation: still accepted.
        let before = datetime!(2026-04-30 11:59 UTC);
        let r = list.apply(&ring, Some(before));
        assert!(crate::dsse::verify_envelope(&env, &r, &policy(before)).is_ok());
        // At or after the revocation: refused as revoked.
        for t in [
            datetime!(2026-04-30 12:00 UTC),
            datetime!(2026-06-01 0:00 UTC),
        ] {
            let r = list.apply(&ring, Some(t));
            let e = crate::dsse::verify_envelope(&env, &r, &policy(t)).unwrap_err();
            assert!(
                matches!(
                    e,
                    crate::dsse::VerifyError::Ineligible {
                        why: Ineligible::Revoked,
                        ..
                    }
                ),
                "{e}"
            );
        }
        // No verified signing time: refused.
        let r = list.apply(&ring, None);
        assert!(crate::dsse::verify_envelope(&env, &r, &policy(before)).is_err());
        // An earlier revocation replaces a later one, never the reverse.
        list.revoke_key(
            old.public_key().key_id(),
            datetime!(2026-04-01 0:00 UTC),
            "earlier",
        );
        list.revoke_key(
            old.public_key().key_id(),
            datetime!(2026-09-01 0:00 UTC),
            "later",
        );
        assert_eq!(
            list.get(old.public_key().key_id()).unwrap().revoked_at,
            datetime!(2026-04-01 0:00 UTC)
        );
    }

    #[test]
    fn rotation_overlap_both_keys_verify() {
        // Old key valid until June, new key from May: in May both verify; in July only the new.
        let (old, new) = (key(), key());
        let mut o = trusted(&old, "release-2025");
        o.not_after = Some(datetime!(2026-06-01 0:00 UTC));
        o.purposes = [Purpose::Release].into_iter().collect();
        let mut n = trusted(&new, "release-2026");
        n.not_before = Some(datetime!(2026-05-01 0:00 UTC));
        n.purposes = [Purpose::Release].into_iter().collect();
        let ring = Keyring::new(vec![o, n]).unwrap();
        let by_old = crate::dsse::sign_envelope("t", b"p".to_vec(), &[&old]).unwrap();
        let by_new = crate::dsse::sign_envelope("t", b"p".to_vec(), &[&new]).unwrap();
        let at = |t| crate::dsse::Policy::new(1).purpose(Purpose::Release).at(t);
        let may = datetime!(2026-05-15 0:00 UTC);
        assert!(crate::dsse::verify_envelope(&by_old, &ring, &at(may)).is_ok());
        assert!(crate::dsse::verify_envelope(&by_new, &ring, &at(may)).is_ok());
        let july = datetime!(2026-07-01 0:00 UTC);
        assert!(crate::dsse::verify_envelope(&by_old, &ring, &at(july)).is_err());
        assert!(crate::dsse::verify_envelope(&by_new, &ring, &at(july)).is_ok());
        let april = datetime!(2026-04-01 0:00 UTC);
        assert!(crate::dsse::verify_envelope(&by_new, &ring, &at(april)).is_err());
    }

    trait ReplaceFirst {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }
    impl ReplaceFirst for Vec<u8> {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let i = self.windows(from.len()).position(|w| w == from).unwrap();
            let mut out = self[..i].to_vec();
            out.extend_from_slice(to);
            out.extend_from_slice(&self[i + from.len()..]);
            out
        }
    }
}
