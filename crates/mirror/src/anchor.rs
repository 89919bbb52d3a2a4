//! Time anchors (`time-anchor.json`): an RFC 3161 timestamp token over the manifest digest.
//!
//! **What is stamped**: the SHA-256 of the `manifest.json` bytes — the bundle's manifest
//! digest (the value thin bundles name as `base.manifestDigest` and the detached header as
//! `payloadSha256`). `manifest.json` is byte-identical to the payload `manifest.dsse` signs, so
//! the token binds a trusted time to exactly the signed manifest.
//!
//! **The file** (canonical JSON, written after the manifest is signed, so it is not listed in
//! the manifest or `SHA256SUMS`: it is a known metadata file that `verify` checks on its own):
//! `anchorTime` (the token's `genTime`, RFC 3339 UTC), `format` (`rfc3161`), `source` (the TSA
//! URL, or `local TSA <subject>`; informative only), `token` (base64 DER of the
//! TimeStampToken, a CMS `ContentInfo`) and `tokenDigest` (`sha256:` of those DER bytes).
//!
//! **Producing tokens**: [`LocalTsa`] is a TSA of our own (a P-256 key and its certificate),
//! writing the same token `openssl ts -reply` would: CMS SignedData (version 3) of a `TSTInfo`,
//! one SignerInfo (issuer and serial) with the content-type, signing-time, message-digest and
//! ESS signing-certificate-v2 attributes, ECDSA P-256/SHA-256, the TSA certificate (and any
//! chain given with it) included. [`request`] and [`token_from_response`] are the two ends of
//! the RFC 3161 HTTP exchange; [`crate::tsa::HttpTimeStamper`] runs it against a TSA URL.
//!
//! **Verifying** ([`verify_anchor_for`]), every rule an error: the file is strict canonical JSON
//! with `format: rfc3161`; `tokenDigest` matches; the token is a SignedData of a TSTInfo
//! (version 1) whose message imprint (SHA-256/384/512) equals the manifest's digest and whose
//! `genTime` equals `anchorTime`; exactly one SignerInfo with signed attributes: content type
//! TSTInfo, message digest over the TSTInfo, an ESS signing-certificate (v1 or v2) naming the
//! signer's certificate; the signature (ECDSA P-256/P-384, RSA PKCS #1 v1.5 or Ed25519, over
//! the DER of the signed attributes) verifies with that certificate's key; the certificate is
//! valid at `genTime`, has the extended key usage extension **critical and holding only
//! id-kp-timeStamping** (RFC 3161 §2.3, as `openssl ts -verify` requires), a key usage (if any)
//! allowing signatures, no unknown critical extension, and a `tsa` name (if any) equal to its
//! subject. With trust roots, the certificate must chain — each link's signature checked, each
//! issuer a CA valid at `genTime` — to one of them; then the anchor is *trusted*. Without
//! trust roots everything but the chain is checked and the anchor is reported as untrusted.
//! Revocation is not checked (air-gapped sites have no CRL or OCSP).
//!
//! The certificate and token rules live in `stella-x509` (shared with Sigstore
//! verification); this module adds the anchor file and maps errors to the bundle's.

use std::fmt;

use serde::{Deserialize, Serialize};
use stella_keys::Signer;
use time::OffsetDateTime;

pub(crate) use stella_x509::tsp::TokenInfo;
pub(crate) use stella_x509::Cert;

use crate::error::{Error, Field, Result};
use crate::hash::Digest;
use crate::manifest::format_time;

/// The `format` of every anchor we write and accept.
pub const FORMAT: &str = "rfc3161";

/// A token or TSA error as the bundle reports it (`time anchor: ...`).
fn tsp_err(e: stella_x509::Error) -> Error {
    match e {
        stella_x509::Error::Sign(s) => Error::Sign(s),
        stella_x509::Error::Input(m) => Error::input(format!("time anchor: {m}")),
        other => Error::anchor(Field::Anchor("token"), format!("time anchor: {other}")),
    }
}

/// A TSA set-up error (key, certificate, policy): the message names the flag.
fn setup_err(e: stella_x509::Error) -> Error {
    match e {
        stella_x509::Error::Sign(s) => Error::Sign(s),
        other => Error::input(other.to_string()),
    }
}

/// Certificates trusted to anchor TSA certificates (`--time-trust-roots`).
#[derive(Debug, Clone)]
pub struct TrustRoots(stella_x509::TrustRoots);

impl TrustRoots {
    /// Every certificate of a PEM file is a trust anchor.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        stella_x509::TrustRoots::from_pem(text)
            .map(TrustRoots)
            .map_err(|e| Error::input(format!("time trust roots: {e}")))
    }

    pub fn certs(&self) -> &[Cert] {
        self.0.certs()
    }
}

/// Parse a token and check everything that needs no trust decision (see
/// [`stella_x509::tsp::check_token`]).
pub(crate) fn check_token(token: &[u8], extra: &[Cert]) -> Result<TokenInfo> {
    stella_x509::tsp::check_token(token, extra).map_err(tsp_err)
}

/// A token from a file: a TimeStampToken (CMS ContentInfo) as is, or the token of a
/// TimeStampResp (`openssl ts -reply` output) whose status is granted.
pub(crate) fn token_from_bytes(bytes: &[u8]) -> Result<Vec<u8>> {
    stella_x509::tsp::token_from_bytes(bytes).map_err(tsp_err)
}

/// A TSA of our own: [`stella_x509::tsp::LocalTsa`] (its `new_unchecked` builds the hostile
/// tokens verifiers must refuse, in tests).
pub use stella_x509::tsp::LocalTsa;

/// A [`LocalTsa`] for signing now. `certs_pem`: the TSA certificate first, then any chain to
/// include in tokens. The key must be ECDSA P-256 and match the certificate, and the
/// certificate must be a TSA certificate (critical extended key usage id-kp-timeStamping
/// only) valid now.
pub fn local_tsa<'a>(
    key: &'a dyn Signer,
    certs_pem: &[u8],
    policy: Option<&str>,
) -> Result<LocalTsa<'a>> {
    LocalTsa::new(key, certs_pem, policy, OffsetDateTime::now_utc()).map_err(setup_err)
}

// ------------------------------------------------------------------------------------------
// time-anchor.json
// ------------------------------------------------------------------------------------------

/// `time-anchor.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AnchorFile {
    pub anchor_time: String,
    pub format: String,
    pub source: String,
    pub token: String,
    pub token_digest: String,
}

/// A time anchor that verified (see `verify_anchor_for`).
#[derive(Debug, Clone)]
pub struct Anchor {
    /// The TSA's time (`genTime` = `anchorTime`).
    pub time: OffsetDateTime,
    pub source: String,
    /// Subject of the TSA certificate.
    pub tsa: String,
    /// SHA-256 fingerprint of the TSA certificate.
    pub tsa_fingerprint: String,
    pub policy: String,
    pub serial: String,
    pub token_digest: String,
    /// The certificate chain leads to a trust root (subjects, TSA first); `None` when no
    /// trust roots were given: the anchor is then reported, not trusted.
    pub chain: Option<Vec<String>>,
}

impl Anchor {
    pub fn trusted(&self) -> bool {
        self.chain.is_some()
    }
}

/// What a token must stamp: the manifest's bytes, or only their SHA-256 (a manifest too large
/// to hold in memory; a token over another hash of it is then refused).
#[derive(Debug, Clone, Copy)]
pub enum Stamped<'a> {
    Bytes(&'a [u8]),
    Sha256(&'a Digest),
}

impl Stamped<'_> {
    fn sha256(&self) -> Digest {
        match self {
            Stamped::Bytes(b) => Digest::of(b),
            Stamped::Sha256(d) => **d,
        }
    }
}

/// Build `time-anchor.json` for a token over a manifest given as [`Stamped`] (checked first).
pub(crate) fn anchor_file_for(
    token: &[u8],
    source: &str,
    manifest: Stamped<'_>,
) -> Result<(Vec<u8>, Anchor)> {
    let info = check_token(token, &[])?;
    check_imprint(&info, manifest)?;
    let file = AnchorFile {
        anchor_time: format_time(info.gen_time),
        format: FORMAT.into(),
        source: source.into(),
        token: stella_dsse::b64::encode(token),
        token_digest: Digest::of(token).to_string(),
    };
    let bytes = stella_dsse::jcs::to_vec(&file).map_err(|e| Error::input(e.to_string()))?;
    let anchor = verify_anchor_for(&bytes, manifest, None)?;
    Ok((bytes, anchor))
}

fn check_imprint(info: &TokenInfo, manifest: Stamped<'_>) -> Result<()> {
    let matches = match manifest {
        Stamped::Bytes(b) => info.imprint == info.imprint_hash.digest(b),
        Stamped::Sha256(_) if info.imprint_hash != stella_x509::Hash::Sha256 => {
            return Err(Error::anchor(
                Field::Anchor("token"),
                format!(
                    "time anchor: the token stamps the manifest's {} digest; a manifest too large \
                     to hold in memory is checked by its SHA-256 only: stamp it with SHA-256 \
                     (`stella mirror anchor` does)",
                    info.imprint_algorithm
                ),
            ));
        }
        Stamped::Sha256(d) => info.imprint == d.as_bytes(),
    };
    if !matches {
        return Err(Error::anchor(Field::Anchor("token"), format!(
            "time anchor: the token stamps {} {}, not this bundle's manifest (sha256:{}): it belongs to another manifest",
            info.imprint_algorithm,
            stella_keys::hex(&info.imprint),
            manifest.sha256().hex()
        )));
    }
    Ok(())
}

/// Verify `time-anchor.json` against the manifest it must stamp, given as [`Stamped`] (its
/// bytes, or only its SHA-256 when it is too large to hold in memory); with `roots`, also that
/// the TSA certificate chains to one of them (the anchor is then trusted).
pub(crate) fn verify_anchor_for(
    bytes: &[u8],
    manifest: Stamped<'_>,
    roots: Option<&TrustRoots>,
) -> Result<Anchor> {
    let malformed = |e: &dyn fmt::Display| {
        Error::anchor(
            Field::file(crate::names::TIME_ANCHOR),
            format!("time-anchor.json: {e}"),
        )
    };
    let value = stella_dsse::jcs::parse_strict(bytes).map_err(|e| malformed(&e))?;
    let file: AnchorFile = serde_json::from_value(value).map_err(|e| malformed(&e))?;
    if file.format != FORMAT {
        return Err(Error::anchor(
            Field::Anchor("format"),
            format!(
                "time-anchor.json has format {:?}; only \"{FORMAT}\" is supported",
                file.format
            ),
        ));
    }
    let token = stella_dsse::b64::decode(&file.token).map_err(|e| {
        Error::anchor(
            Field::Anchor("token"),
            format!("time-anchor.json token: {e}"),
        )
    })?;
    let digest = Digest::of(&token).to_string();
    if digest != file.token_digest {
        return Err(Error::anchor(
            Field::Anchor("tokenDigest"),
            format!(
            "time-anchor.json tokenDigest {} does not match the token ({digest}): tampered token",
            file.token_digest
        ),
        ));
    }
    let extra = roots.map(TrustRoots::certs).unwrap_or_default();
    let info = check_token(&token, extra)?;
    check_imprint(&info, manifest)?;
    let stated = crate::manifest::parse_time(&file.anchor_time).map_err(|e| {
        Error::anchor(
            Field::Anchor("anchorTime"),
            format!("time-anchor.json anchorTime: {e}"),
        )
    })?;
    let gen_ms = info.gen_time.unix_timestamp_nanos() / 1_000_000;
    if stated.unix_timestamp_nanos() / 1_000_000 != gen_ms {
        return Err(Error::anchor(
            Field::Anchor("anchorTime"),
            format!(
                "time-anchor.json anchorTime {} differs from the token's time {}",
                file.anchor_time,
                format_time(info.gen_time)
            ),
        ));
    }
    let chain = match roots {
        Some(r) => Some(
            r.0.chain(&info.signer, &info.certs, info.gen_time)
                .map_err(|e| Error::anchor(Field::Anchor("token"), format!("time anchor: {e}")))?,
        ),
        None => None,
    };
    Ok(Anchor {
        time: info.gen_time,
        source: file.source,
        tsa: info.signer.subject(),
        tsa_fingerprint: info.signer.fingerprint(),
        policy: info.policy,
        serial: info.serial,
        token_digest: file.token_digest,
        chain,
    })
}

/// Something that stamps a SHA-256 digest: a [`LocalTsa`], or a TSA over HTTP
/// ([`crate::tsa::HttpTimeStamper`]).
pub trait TimeStamper {
    /// The anchor's `source`.
    fn source(&self) -> String;
    /// A TimeStampToken (DER) over `sha256`.
    fn stamp(&self, sha256: &[u8; 32]) -> Result<Vec<u8>>;
}

impl TimeStamper for LocalTsa<'_> {
    fn source(&self) -> String {
        LocalTsa::source(self)
    }
    fn stamp(&self, sha256: &[u8; 32]) -> Result<Vec<u8>> {
        self.timestamp(sha256, OffsetDateTime::now_utc())
            .map_err(tsp_err)
    }
}

/// Stamp the signed bundle in `dir` and write its `time-anchor.json` (replacing any).
/// The folder must hold a `manifest.dsse` whose payload is `manifest.json` (no key is
/// needed: the anchor stamps whatever manifest the envelope signs, and `verify` checks the
/// signature).
///
/// A manifest of any size: above [`crate::MAX_METADATA_BYTES`] it is stamped by its SHA-256,
/// read as a stream ([`signed_manifest_of`]).
pub fn attach(dir: &std::path::Path, stamper: &dyn TimeStamper) -> Result<Anchor> {
    let manifest = signed_manifest_of(dir)?;
    let token = stamper.stamp(manifest.sha256().as_bytes())?;
    write_anchor_for(dir, &token, &stamper.source(), manifest.stamped())
}

/// Stamp `manifest` (the signed `manifest.json` bytes of the bundle in `dir`) and write
/// `dir/time-anchor.json`.
pub fn stamp_manifest(
    dir: &std::path::Path,
    manifest: &[u8],
    stamper: &dyn TimeStamper,
) -> Result<Anchor> {
    let token = stamper.stamp(Digest::of(manifest).as_bytes())?;
    write_anchor(dir, &token, &stamper.source(), manifest)
}

/// Attach a token obtained elsewhere (e.g. `openssl ts -query` → TSA → `-reply`).
pub fn attach_token(
    dir: &std::path::Path,
    token_or_response: &[u8],
    source: &str,
) -> Result<Anchor> {
    let manifest = signed_manifest_of(dir)?;
    let token = token_from_bytes(token_or_response)?;
    write_anchor_for(dir, &token, source, manifest.stamped())
}

/// Write `dir/time-anchor.json` for `token`, which must stamp `manifest` (the bundle's
/// `manifest.json` bytes) and verify (everything but the trust chain).
pub(crate) fn write_anchor(
    dir: &std::path::Path,
    token: &[u8],
    source: &str,
    manifest: &[u8],
) -> Result<Anchor> {
    write_anchor_for(dir, token, source, Stamped::Bytes(manifest))
}

/// `write_anchor` for a manifest given as [`Stamped`].
pub fn write_anchor_for(
    dir: &std::path::Path,
    token: &[u8],
    source: &str,
    manifest: Stamped<'_>,
) -> Result<Anchor> {
    let (bytes, anchor) = anchor_file_for(token, source, manifest)?;
    crate::fs::write_file(&dir.join(crate::names::TIME_ANCHOR), &bytes)?;
    Ok(anchor)
}

/// Stamp the manifest whose SHA-256 is `sha256` (the signed `manifest.json` of the bundle in
/// `dir`, which need not fit in memory) and write `dir/time-anchor.json`.
pub fn stamp_digest(
    dir: &std::path::Path,
    sha256: &Digest,
    stamper: &dyn TimeStamper,
) -> Result<Anchor> {
    let token = stamper.stamp(sha256.as_bytes())?;
    write_anchor_for(dir, &token, &stamper.source(), Stamped::Sha256(sha256))
}

/// The signed manifest of a bundle folder as a time anchor stamps it: its bytes, or, for a
/// manifest too large to hold in memory, only its SHA-256 ([`signed_manifest_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedManifest {
    Bytes(Vec<u8>),
    Sha256(Digest),
}

impl SignedManifest {
    /// What a token must stamp.
    pub fn stamped(&self) -> Stamped<'_> {
        match self {
            SignedManifest::Bytes(b) => Stamped::Bytes(b),
            SignedManifest::Sha256(d) => Stamped::Sha256(d),
        }
    }

    /// The manifest's SHA-256.
    pub fn sha256(&self) -> Digest {
        self.stamped().sha256()
    }
}

/// [`signed_manifest`] at any size: up to [`crate::MAX_METADATA_BYTES`] (both `manifest.json`
/// and `manifest.dsse`) the bytes; above, `manifest.dsse` is read as a stream, its payload
/// hashed as it is decoded, and `manifest.json` hashed and compared with it — the same
/// refusals (not signed, not an envelope, not the same manifest).
pub fn signed_manifest_of(dir: &std::path::Path) -> Result<SignedManifest> {
    signed_manifest_of_with(dir, &crate::streamed::Limits::default())
}

/// [`signed_manifest_of`] with explicit [`crate::streamed::Limits`]: streamed above
/// `stream_above` (tests take that path with small bundles), up to `max_manifest`.
pub fn signed_manifest_of_with(
    dir: &std::path::Path,
    limits: &crate::streamed::Limits,
) -> Result<SignedManifest> {
    use crate::names;
    use crate::streamed::{envelope_cap, hash_all, open_meta, Tee};

    let small = |name: &str| {
        std::fs::symlink_metadata(dir.join(name))
            .map(|m| m.len() <= limits.stream_above.min(crate::MAX_METADATA_BYTES))
            .unwrap_or(true)
    };
    if small(names::MANIFEST) && small(names::ENVELOPE) {
        return signed_manifest(dir).map(SignedManifest::Bytes);
    }
    let max = limits.max_manifest;
    let (mut manifest, manifest_len, manifest_path) =
        open_meta(dir, names::MANIFEST, Some(max))?
            .ok_or_else(|| Error::NotFound(dir.join(names::MANIFEST)))?;
    let (env, _, env_path) =
        open_meta(dir, names::ENVELOPE, Some(envelope_cap(max)))?.ok_or_else(|| not_signed(dir))?;
    let mut payload = Tee {
        inner: std::io::sink(),
        hasher: crate::hash::Hasher::new(),
    };
    let streamed = stella_dsse::stream::read_envelope(env, &mut payload, envelope_cap(max))
        .map_err(|e| match e {
            stella_dsse::stream::StreamError::Io(e) => Error::io(&env_path, e),
            e => Error::input(format!("manifest.dsse: {e}")),
        })?;
    let signed = payload.hasher.finish();
    let (digest, len) = hash_all(&mut manifest, &manifest_path)?;
    if digest != signed || len != streamed.payload_len || len != manifest_len {
        return Err(differs());
    }
    Ok(SignedManifest::Sha256(digest))
}

/// `dir` has no `manifest.dsse`.
fn not_signed(dir: &std::path::Path) -> Error {
    Error::input(format!(
        "{} is not signed (no manifest.dsse): a time anchor stamps the signed manifest",
        dir.display()
    ))
}

/// `manifest.json` is not the payload of `manifest.dsse`.
fn differs() -> Error {
    Error::input(
        "manifest.json differs from the payload of manifest.dsse: sign the bundle again first",
    )
}

/// `manifest.json` of a signed folder, checked to be the payload of `manifest.dsse` (the
/// bytes a time anchor stamps); each at most [`crate::MAX_METADATA_BYTES`] (any size:
/// [`signed_manifest_of`]).
pub fn signed_manifest(dir: &std::path::Path) -> Result<Vec<u8>> {
    use crate::names;
    let manifest = crate::fs::read_metadata_file(dir, names::MANIFEST)?
        .ok_or_else(|| Error::NotFound(dir.join(names::MANIFEST)))?;
    let env =
        crate::fs::read_metadata_file(dir, names::ENVELOPE)?.ok_or_else(|| not_signed(dir))?;
    let env = stella_dsse::Envelope::from_json_with_limit(&env, crate::MAX_METADATA_BYTES as usize)
        .map_err(|e| Error::input(format!("manifest.dsse: {e}")))?;
    if env.payload != manifest {
        return Err(differs());
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_clear_message() {
        let e = check_token(b"\x30\x03\x02\x01\x01", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("time anchor: the token is not a CMS ContentInfo"),
            "{e}"
        );
        let e = token_from_bytes(b"nonsense").unwrap_err().to_string();
        assert!(e.contains("time anchor: not an RFC 3161"), "{e}");
    }
}
