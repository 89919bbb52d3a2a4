//! Keyless mirror signatures: the one place mirror verification meets Sigstore.
//!
//! A bundle signed keyless carries `manifest.sigstore.json` ([`crate::names::KEYLESS`]): one
//! Sigstore bundle, or a JSON array of them, each a DSSE envelope over exactly the payload
//! (and payload type) of `manifest.dsse`, signed by a short-lived key that a Fulcio
//! certificate binds to an identity. The signing itself is ordinary: `stella mirror sign --key`
//! with that key writes `manifest.dsse`, `SHA256SUMS.dsse`/`.sig` and the header as for any
//! key. [`keyless_signers`] verifies each Sigstore bundle against the keyring's
//! `[[identities]]` (purpose `mirror-bundle`, with `stella-sigstore`: certificate chain,
//! SCT, transparency log, signing time, identity) and returns the keyring plus one key entry
//! per accepted identity — the certificate's key, named by the identity entry's id — so the
//! rest of verification (threshold, header key id, checksum signatures) runs unchanged.
//!
//! An identity counts once: a second bundle by the same identity entry, or by the same
//! certificate identity (issuer + SANs) through another entry, adds no key; a certified key
//! that is already a key entry of the keyring adds nothing either (a key entry and an identity
//! entry never satisfy each other). Bundles refused by every identity add no key; their
//! reasons are added to the signature error if the threshold is then not met.

use std::borrow::Cow;

use serde_json::Value;
use stella_dsse::Envelope;
use stella_keys::{Keyring, Purpose, TrustedKey};
use time::OffsetDateTime;

use crate::error::{Error, Field, Result};
use crate::fs::Metadata;

/// At most this many Sigstore bundles are examined.
const MAX_BUNDLES: usize = 16;

/// The keyring to verify a bundle's signatures with, and why keyless signatures were refused.
pub(crate) struct KeylessSigners<'k> {
    pub(crate) keyring: Cow<'k, Keyring>,
    refused: Vec<String>,
}

impl KeylessSigners<'_> {
    /// A signature error, with the refused keyless signatures' reasons.
    pub(crate) fn explain(&self, e: stella_keys::VerifyError) -> Error {
        if self.refused.is_empty() {
            Error::Signature(e)
        } else {
            Error::envelope(
                Field::file(crate::names::KEYLESS),
                format!(
                    "manifest signature: {e}; keyless signatures ({}) refused: {}",
                    crate::names::KEYLESS,
                    self.refused.join("; ")
                ),
            )
        }
    }
}

/// See the module documentation: the keyless signatures of a bundle's metadata.
pub(crate) fn keyless_signers<'k>(
    meta: &Metadata,
    envelope: &Envelope,
    keyring: &'k Keyring,
    now: OffsetDateTime,
) -> Result<KeylessSigners<'k>> {
    keyless_signers_of(
        meta.get(crate::names::KEYLESS).map(Vec::as_slice),
        envelope,
        keyring,
        now,
    )
}

/// [`keyless_signers`] of the bytes of a `manifest.sigstore.json` (none: the keyring as it
/// is): a detached header's signatures over `envelope` (its payload beside it) are judged
/// with the same keyless signers as the bundle's own envelope.
pub(crate) fn keyless_signers_of<'k>(
    keyless: Option<&[u8]>,
    envelope: &Envelope,
    keyring: &'k Keyring,
    now: OffsetDateTime,
) -> Result<KeylessSigners<'k>> {
    let unchanged = |refused| KeylessSigners {
        keyring: Cow::Borrowed(keyring),
        refused,
    };
    let Some(bytes) = keyless else {
        return Ok(unchanged(Vec::new()));
    };
    let what = crate::names::KEYLESS;
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::envelope(Field::file(what), format!("{what}: not JSON: {e}")))?;
    let items = match value {
        Value::Array(a) => a,
        v => vec![v],
    };
    if items.is_empty() || items.len() > MAX_BUNDLES {
        return Err(Error::envelope(
            Field::file(what),
            format!(
                "{what}: {} Sigstore bundles (1 to {MAX_BUNDLES} allowed)",
                items.len()
            ),
        ));
    }
    let trust = stella_sigstore::IdentityTrust::from_keyring(keyring)
        .map_err(|e| Error::input(format!("keyring: {e}")))?;
    if trust.is_empty() {
        return Ok(unchanged(vec![
            "the keyring names no Sigstore identity ([[identities]])".into(),
        ]));
    }
    // The key entries (identities are not keys; they only vouch for certified keys below).
    let mut ring = Keyring::new(keyring.keys().to_vec())?;
    let mut refused = Vec::new();
    let mut counted: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let b = stella_sigstore::Bundle::from_value(item)
            .map_err(|e| Error::envelope(Field::file(what), format!("{what}: bundle {i}: {e}")))?;
        match &b.content {
            stella_sigstore::Content::Dsse(env)
                if env.payload == envelope.payload && env.payload_type == envelope.payload_type => {}
            _ => {
                return Err(Error::envelope(Field::file(what), format!(
                    "{what}: bundle {i} does not sign the manifest of manifest.dsse (a DSSE envelope with the same payload and payload type)"
                )))
            }
        }
        let m = match trust.verify(
            &b,
            stella_sigstore::Artifact::Unchecked,
            Some(Purpose::MirrorBundle),
            now,
        ) {
            Ok(m) => m,
            Err(e) => {
                refused.push(format!("bundle {i}: {e}"));
                continue;
            }
        };
        if counted
            .iter()
            .any(|(id, who)| *id == m.id || *who == m.identity)
        {
            continue;
        }
        let key = stella_keys::PublicKey::from_spki_der(m.key.spki_der())?;
        if ring.keys().iter().any(|k| k.key == key) {
            continue;
        }
        let mut tk = TrustedKey::unrestricted(key);
        tk.id = m.id.clone();
        tk.purposes = [Purpose::MirrorBundle].into_iter().collect();
        ring.push(tk)?;
        counted.push((m.id, m.identity));
    }
    Ok(KeylessSigners {
        keyring: Cow::Owned(ring),
        refused,
    })
}
