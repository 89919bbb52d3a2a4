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

impl<'k> KeylessSigners<'k> {
    /// No keyless signatures: the keyring as it is.
    pub(crate) fn none(keyring: &'k Keyring) -> Self {
        KeylessSigners {
            keyring: Cow::Borrowed(keyring),
            refused: Vec::new(),
        }
    }

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
    judge(
        &items,
        stella_sigstore::Bundle::from_value,
        |content| {
            matches!(content, stella_sigstore::Content::Dsse(env)
                if env.payload == envelope.payload && env.payload_type == envelope.payload_type)
        },
        stella_sigstore::Artifact::Unchecked,
        keyring,
        now,
    )
}

/// [`keyless_signers_of`] on the streamed path: `manifest.sigstore.json` (`file`, `len` bytes)
/// read as a stream with each bundle's payload detached (hashed on the way, never held), for
/// a streamed payload of `payload_type` and `payload_len` bytes hashing to `payload_digest`.
/// A bundle signs the manifest when its payload has that length, that digest and that type;
/// its signature is checked over the PAE `pae` gives (the one `manifest.dsse`'s signatures are
/// checked over), hashed once per algorithm asked for.
pub(crate) fn keyless_signers_streamed<'k>(
    file: impl std::io::Read,
    len: u64,
    (payload_type, payload_len): (&str, u64),
    payload_digest: &crate::hash::Digest,
    pae: &mut dyn stella_keys::stream::MessageSource,
    keyring: &'k Keyring,
    now: OffsetDateTime,
) -> Result<KeylessSigners<'k>> {
    use std::cell::RefCell;

    use stella_sigstore::{Artifact, Content, DetachedPayload, HashAlgorithm, PaeDigest};

    let what = crate::names::KEYLESS;
    let refuse = |why: String| Error::envelope(Field::file(what), format!("{what}: {why}"));
    // Each bundle carries the payload again (base64), plus a few KiB of certificates and proofs.
    let cap = streamed_cap(payload_len);
    if len > cap {
        return Err(refuse(format!(
            "{len} bytes, above the {cap} bytes that {MAX_BUNDLES} bundles of this manifest take"
        )));
    }
    let detached = stella_dsse::stream_detach::read_detaching_payloads(
        file,
        cap,
        "dsseEnvelope",
        MAX_BUNDLES,
        || stella_digest::HashingWriter::new(std::io::sink()),
    )
    .map_err(|e| match e {
        stella_dsse::stream::StreamError::Malformed(m) => {
            refuse(format!("not a Sigstore bundle or array of them: {m}"))
        }
        e => refuse(e.to_string()),
    })?;
    let digests: Vec<Option<DetachedPayload>> = detached
        .payloads
        .into_iter()
        .map(|p| {
            p.map(|(len, w)| DetachedPayload {
                len,
                sha256: *w.hasher.finish().as_bytes(),
            })
        })
        .collect();
    let value: Value =
        serde_json::from_slice(&detached.document).map_err(|e| refuse(format!("not JSON: {e}")))?;
    let items = match value {
        Value::Array(a) => a,
        v => vec![v],
    };
    if items.is_empty() {
        return Err(refuse(format!(
            "0 Sigstore bundles (1 to {MAX_BUNDLES} allowed)"
        )));
    }
    // The digest of the PAE under each hash asked for, computed once.
    let pae = RefCell::new(pae);
    let done: RefCell<Vec<(HashAlgorithm, Vec<u8>)>> = RefCell::new(Vec::new());
    let pae_digest = |alg: HashAlgorithm| -> std::result::Result<Vec<u8>, String> {
        if let Some((_, d)) = done.borrow().iter().find(|(a, _)| *a == alg) {
            return Ok(d.clone());
        }
        let mut ctx = aws_lc_rs::digest::Context::new(match alg {
            HashAlgorithm::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlgorithm::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlgorithm::Sha512 => &aws_lc_rs::digest::SHA512,
            a => return Err(format!("no streamed {} here", a.name())),
        });
        pae.borrow_mut()
            .feed(&mut |c| ctx.update(c))
            .map_err(|e| format!("reading the manifest again: {e}"))?;
        let d = ctx.finish().as_ref().to_vec();
        done.borrow_mut().push((alg, d.clone()));
        Ok(d)
    };
    let mut detached_of = digests.into_iter();
    judge(
        &items,
        |item| {
            // Items are parsed in order: item i's payload was detached as payload i.
            match detached_of.next().flatten() {
                Some(p) => stella_sigstore::Bundle::from_value_detached(item, p),
                None => stella_sigstore::Bundle::from_value(item),
            }
        },
        |content| {
            matches!(content, Content::DetachedDsse(d)
                if d.payload.len == payload_len
                    && d.payload.sha256 == *payload_digest.as_bytes()
                    && d.payload_type == payload_type)
        },
        Artifact::Pae(PaeDigest(&pae_digest)),
        keyring,
        now,
    )
}

/// The largest `manifest.sigstore.json` read on the streamed path for a manifest of
/// `payload_len` bytes: [`MAX_BUNDLES`] bundles, each the payload in base64 and the rest.
pub(crate) fn streamed_cap(payload_len: u64) -> u64 {
    let per_bundle = payload_len.div_ceil(3).saturating_mul(4).saturating_add(2);
    per_bundle
        .saturating_mul(MAX_BUNDLES as u64)
        .saturating_add(stella_dsse::stream_detach::MAX_DETACHED_REST_BYTES as u64)
}

/// One item of `manifest.sigstore.json`, read as a Sigstore bundle.
type ParsedBundle = std::result::Result<stella_sigstore::Bundle, stella_sigstore::BundleError>;

/// The keyring with the identities the bundles `items` certify, each read with `parse`; a
/// bundle whose content `signs_manifest` refuses is an error (not a refusal), every other
/// check a refusal.
fn judge<'k>(
    items: &[Value],
    mut parse: impl FnMut(&Value) -> ParsedBundle,
    signs_manifest: impl Fn(&stella_sigstore::Content) -> bool,
    artifact: stella_sigstore::Artifact<'_>,
    keyring: &'k Keyring,
    now: OffsetDateTime,
) -> Result<KeylessSigners<'k>> {
    let what = crate::names::KEYLESS;
    let trust = stella_sigstore::IdentityTrust::from_keyring(keyring)
        .map_err(|e| Error::input(format!("keyring: {e}")))?;
    if trust.is_empty() {
        return Ok(KeylessSigners {
            keyring: Cow::Borrowed(keyring),
            refused: vec!["the keyring names no Sigstore identity ([[identities]])".into()],
        });
    }
    // The key entries (identities are not keys; they only vouch for certified keys below).
    let mut ring = Keyring::new(keyring.keys().to_vec())?;
    let mut refused = Vec::new();
    let mut counted: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let b = parse(item)
            .map_err(|e| Error::envelope(Field::file(what), format!("{what}: bundle {i}: {e}")))?;
        if !signs_manifest(&b.content) {
            return Err(Error::envelope(Field::file(what), format!(
                "{what}: bundle {i} does not sign the manifest of manifest.dsse (a DSSE envelope with the same payload and payload type)"
            )));
        }
        let m = match trust.verify(&b, artifact, Some(Purpose::MirrorBundle), now) {
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
