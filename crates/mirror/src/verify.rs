//! Verification rules of SPEC §5, for a bundle folder or straight from an archive stream.
//!
//! One flow, read top to bottom: **read** the metadata files ([`read_dir_metadata`], or the
//! archive reader) → a [`CheckedBundle`] (structure only, nothing trusted yet) →
//! [`CheckedBundle::verify`] (cryptography and every rule after it) → [`VerifiedMetadata`] →
//! the content ([`check_files`]) → a [`VerifiedBundle`].
//!
//! Both paths (in memory and streamed) run the same stages:
//! 0. **Structure** ([`CheckedBundle`]): the metadata files were read within their limits and
//!    are regular files; `manifest.dsse` is present and a DSSE envelope (within its cap) of a
//!    mirror payload type. No signature is checked and the payload is not parsed yet:
//!    authentication comes before parsing, so the order of the checks (and so which of two
//!    faults is reported) is that of the stages here.
//! 1. **Metadata** ([`CheckedBundle::verify`]):
//!    `manifest.dsse` is signed by enough distinct keyring keys valid for purpose
//!    `mirror-bundle`; its payload is a canonical, well-formed manifest with purpose
//!    `mirror-bundle`;
//!    `manifest.json` is byte-identical to it; the detached header agrees with it (purpose,
//!    issuer, keyid among the signers, payload type and digest, signatures); `SHA256SUMS` and
//!    `SHA256SUMS.dsse` match the digests the manifest signs, `SHA256SUMS` matches the file list,
//!    `SHA256SUMS.sig` verifies under a signer; `public-key.pem` holds only signer keys; the
//!    bundle is fresh (`generatedAt` + `validForSeconds`, default 24 h, ±5 s; not in the future).
//!    No Rekor entry is a warning, not a failure (offline sites have none). A `time-anchor.json`
//!    (RFC 3161 token over the manifest digest, see [`crate::anchor`]) is always checked; with
//!    trust roots it is trusted, `generatedAt` must not be after it, and freshness is judged at
//!    the later of the local clock and the anchor time ([`freshness_time`]).
//! 2. **Content** ([`check_files`]): every listed file is present with its size and SHA-256,
//!    and nothing unlisted is present. A thin bundle may lack files: those come from its base.
//!
//! The result is a [`VerifiedBundle`] ([`VerifiedMetadata`] plus what the content check found);
//! [`verify_dir_deferring`] gives a [`PartlyHashedBundle`] instead, a distinct type, when some
//! files are left for the caller to hash. A refusal is an [`Error::Verify`] naming its
//! [`Stage`](crate::Stage) and [`Field`] (the file, line or header/manifest field at fault);
//! the rules that both paths share (in memory and streamed) are the small functions below
//! `CheckedBundle`, one message each.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stella_dsse::Envelope;
use stella_keys::{Keyring, Policy, Purpose, VerifiedKey};
use time::OffsetDateTime;

use crate::error::{Detail, Error, Field, IoContext as _, Result};
use crate::hash::{Digest, Hashed, Progress};
use crate::keyless::KeylessSigners;
use crate::manifest::{format_time, Kind, Manifest, SKEW_SECONDS};
use crate::names;

/// The detached header (`mirror/metadata/mirror.dsse.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    pub created: String,
    pub issuer: String,
    pub keyid: String,
    pub payload_sha256: String,
    pub payload_type: String,
    pub purpose: String,
    pub signatures: Vec<HeaderSignature>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "rekorUUID")]
    pub rekor_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSignature {
    pub keyid: String,
    pub sig: String,
}

/// What the verifier trusts and how strict it is.
pub struct Options<'a> {
    pub keyring: &'a Keyring,
    /// Distinct trusted keys required.
    pub threshold: usize,
    /// The time freshness is judged at (normally now).
    pub now: OffsetDateTime,
    /// Override of the manifest's freshness budget.
    pub max_age: Option<u64>,
    /// Trust roots for time anchors (`--time-trust-roots`). Without them a time anchor is
    /// checked and reported but not trusted, and freshness is judged by the local clock.
    pub time_roots: Option<&'a crate::anchor::TrustRoots>,
}

pub use crate::error::TimeSource;

/// The time freshness is judged at. A trusted anchor proves the current time is at least its
/// `anchorTime`: a local clock behind it is wrong (the usual air-gap failure: a clock that was
/// never set) and is replaced by the anchor time; a clock ahead of it is kept, so an anchor
/// never makes an old bundle look fresh.
pub(crate) fn freshness_time(
    local: OffsetDateTime,
    anchor: Option<&crate::anchor::Anchor>,
) -> (OffsetDateTime, TimeSource) {
    match anchor {
        Some(a) if a.trusted() && a.time > local => (a.time, TimeSource::TimeAnchor),
        _ => (local, TimeSource::LocalClock),
    }
}

/// A bundle whose metadata verified.
#[derive(Debug, Clone)]
pub struct VerifiedMetadata {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub signers: Vec<VerifiedKey>,
    pub header: Header,
    pub warnings: Vec<String>,
    /// Age of the bundle at verification time, in seconds.
    pub age_seconds: i64,
    /// The time anchor (`time-anchor.json`), when the bundle has one.
    pub anchor: Option<crate::anchor::Anchor>,
    /// The time freshness was judged at, and by which clock.
    pub judged_at: OffsetDateTime,
    pub time_source: TimeSource,
}

/// What the time checks found: the anchor (when there is one), the bundle's age, and the
/// time freshness was judged at with its clock.
pub(crate) struct TimeChecked {
    anchor: Option<crate::anchor::Anchor>,
    age_seconds: i64,
    judged_at: OffsetDateTime,
    time_source: TimeSource,
}

impl VerifiedMetadata {
    /// The metadata stage's result from its parts (the in-memory and the streamed path).
    fn new(
        manifest: Manifest,
        manifest_bytes: Vec<u8>,
        manifest_digest: Digest,
        signers: Vec<VerifiedKey>,
        (header, warnings): (Header, Vec<String>),
        time: TimeChecked,
    ) -> Self {
        VerifiedMetadata {
            manifest,
            manifest_bytes,
            manifest_digest,
            signers,
            header,
            warnings,
            age_seconds: time.age_seconds,
            anchor: time.anchor,
            judged_at: time.judged_at,
            time_source: time.time_source,
        }
    }
}

/// A fully verified bundle: its metadata verified and every content file present was hashed
/// and matched the signed manifest (compare `PartlyHashedBundle`).
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub meta: VerifiedMetadata,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Thin bundles: listed files that were absent (they come from the base).
    pub from_base: crate::from_base::FromBase,
}

impl VerifiedBundle {
    /// The metadata that verified, with what the content check found.
    pub(crate) fn new(meta: VerifiedMetadata, content: ContentChecked) -> Self {
        let (files_checked, bytes_checked, from_base) = content;
        VerifiedBundle {
            meta,
            files_checked,
            bytes_checked,
            from_base,
        }
    }
}

pub(crate) use crate::fs::Metadata;

/// A bundle whose structure was checked, before any cryptography: its metadata files were
/// read within their limits (regular files, `read_dir_metadata` or the archive reader),
/// `manifest.dsse` is present and parses as a DSSE envelope (within
/// [`crate::MAX_METADATA_BYTES`], or the streamed caps) of a mirror bundle payload type. Nothing
/// in it is trusted yet: [`verify`](Self::verify) checks the signatures first (authenticate
/// before parsing), then the signed manifest, the header, the checksum files, the key file,
/// the time anchor and freshness, and gives the [`VerifiedMetadata`].
///
/// Two forms, one type: the metadata in memory ([`from_metadata`](Self::from_metadata)), or a
/// folder whose metadata is too large for memory ([`read_streamed`](Self::read_streamed)),
/// which holds the envelope's payload in memory up to a bound and in a private temporary file
/// above it, and reads the other metadata files from the folder when it verifies.
#[must_use = "nothing in a CheckedBundle is trusted before its verify()"]
pub struct CheckedBundle<'a> {
    form: Form<'a>,
}

enum Form<'a> {
    InMemory {
        meta: &'a Metadata,
        envelope: Envelope,
    },
    Streamed(Box<StreamedChecked<'a>>),
}

impl std::fmt::Debug for CheckedBundle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedBundle")
            .field("streamed", &matches!(self.form, Form::Streamed(_)))
            .field("payload_type", &self.payload_type())
            .field("signatures", &self.signature_count())
            .finish()
    }
}

impl<'a> CheckedBundle<'a> {
    /// The structure checks over metadata files held in memory.
    pub fn from_metadata(meta: &'a Metadata) -> Result<Self> {
        let env_bytes = meta.get(names::ENVELOPE).ok_or_else(unsigned)?;
        let envelope =
            Envelope::from_json_with_limit(env_bytes, crate::MAX_METADATA_BYTES as usize)
                .map_err(envelope_malformed)?;
        check_payload_type(&envelope.payload_type)?;
        Ok(CheckedBundle {
            form: Form::InMemory { meta, envelope },
        })
    }

    /// The structure checks over a folder's metadata read as streams (memory independent of
    /// the file count, see `crate::streamed`).
    pub fn read_streamed(dir: &'a Path, limits: &'a crate::streamed::Limits) -> Result<Self> {
        Ok(CheckedBundle {
            form: Form::Streamed(Box::new(check_streamed(dir, limits)?)),
        })
    }

    /// The payload type of `manifest.dsse` (one of the mirror bundle types; not yet
    /// authenticated).
    pub fn payload_type(&self) -> &str {
        match &self.form {
            Form::InMemory { envelope, .. } => &envelope.payload_type,
            Form::Streamed(s) => &s.env.payload_type,
        }
    }

    /// How many signatures `manifest.dsse` carries (none verified yet).
    pub fn signature_count(&self) -> usize {
        match &self.form {
            Form::InMemory { envelope, .. } => envelope.signatures.len(),
            Form::Streamed(s) => s.env.signatures.len(),
        }
    }

    /// The cryptographic checks and all that follows them (SPEC §5, in this order): the
    /// envelope's signatures ([`Stage::Envelope`](crate::Stage)), the signed manifest and
    /// `manifest.json`, the detached header, the checksum files, `public-key.pem`, the time
    /// anchor and freshness. The content is not looked at (`check_files` does that).
    pub fn verify(self, opts: &Options<'_>) -> Result<VerifiedMetadata> {
        match self.form {
            Form::InMemory { meta, envelope } => verify_in_memory(meta, envelope, opts),
            Form::Streamed(s) => verify_streamed(*s, opts, &crate::streamed::IndexGate::new()),
        }
    }
}

/// [`CheckedBundle::verify`] over metadata in memory.
fn verify_in_memory(
    meta: &Metadata,
    mut envelope: Envelope,
    opts: &Options<'_>,
) -> Result<VerifiedMetadata> {
    let policy = Policy::new(opts.threshold)
        .purpose(Purpose::MirrorBundle)
        .at(opts.now);
    // Keyless signers (manifest.sigstore.json) join the keyring as the keys they certify.
    let keyless = crate::keyless::keyless_signers(meta, &envelope, opts.keyring, opts.now)?;
    let opts = &Options {
        keyring: &keyless.keyring,
        ..*opts
    };
    let signers = stella_keys::verify_envelope(&envelope, opts.keyring, &policy)
        .map_err(|e| keyless.explain(e))?;
    let payload = &envelope.payload;
    let manifest = signed_manifest(payload, names::ENVELOPE)?;
    let digest = Digest::of(payload);
    match meta.get(names::MANIFEST) {
        None => return Err(manifest_json_missing()),
        Some(m) if m != payload => return Err(manifest_json_differs()),
        Some(_) => {}
    }

    let (header, mut warnings) = check_header(
        meta.get(names::HEADER).map(Vec::as_slice),
        &envelope.payload_type,
        &envelope.signatures,
        &digest,
        &manifest.issuer,
        &signers,
    )?;

    // Checksum files: their digests are signed in the manifest.
    check_signed_checksums(&manifest, |path| {
        Ok(meta
            .get(path)
            .map(|bytes| (Digest::of(bytes), bytes.len() as u64)))
    })?;
    let sums = meta
        .get(names::SUMS)
        .ok_or_else(|| missing_sums(names::SUMS))?;
    if !manifest.sha256sums_equal(sums) {
        return Err(sums_differ());
    }
    let sums_env = meta
        .get(names::SUMS_DSSE)
        .ok_or_else(|| missing_sums(names::SUMS_DSSE))?;
    let sums_env = Envelope::from_json_with_limit(sums_env, crate::MAX_METADATA_BYTES as usize)
        .map_err(sums_dsse_refused)?;
    if sums_env.payload != *sums || sums_env.payload_type != crate::SUMS_PAYLOAD_TYPE {
        return Err(sums_dsse_not_sums());
    }
    stella_keys::verify_envelope(&sums_env, opts.keyring, &sums_policy(opts))
        .map_err(sums_dsse_refused)?;
    let signer_keys = keys_of(opts.keyring, &signers);
    let sig = meta
        .get(names::SUMS_SIG)
        .ok_or_else(|| missing_sums(names::SUMS_SIG))?;
    let raw = sums_sig(sig)?;
    if !signer_keys.iter().any(|k| k.verify(sums, &raw)) {
        return Err(sums_sig_does_not_verify());
    }
    if let Some(pem_bytes) = meta.get(names::PUBLIC_KEY) {
        let mut pae: Option<Vec<u8>> = None;
        // Keys that are not signers are checked against every signature, the PAE built once.
        for k in public_keys(pem_bytes, envelope.signatures.len(), &signers)? {
            let pae = pae.get_or_insert_with(|| envelope.pae());
            if !envelope.signatures.iter().any(|s| k.verify(pae, &s.sig)) {
                return Err(foreign_key(&k));
            }
        }
    }

    let time = check_time(
        meta.get(names::TIME_ANCHOR).map(Vec::as_slice),
        crate::anchor::Stamped::Bytes(payload),
        &manifest,
        opts,
        &mut warnings,
    )?;
    Ok(VerifiedMetadata::new(
        manifest,
        // The envelope is done with: its payload moves here instead of being copied.
        std::mem::take(&mut envelope.payload),
        digest,
        signers,
        (header, warnings),
        time,
    ))
}

// The rules both paths (in memory and streamed) and both entry points (a bundle, a detached
// header on its own) share, each with its one message.

/// `manifest.dsse` is absent.
fn unsigned() -> Error {
    Error::envelope(
        Field::file(names::ENVELOPE),
        "manifest.dsse is missing: the bundle is not signed",
    )
}

/// `manifest.dsse` is not a DSSE envelope (within the limits).
fn envelope_malformed(e: impl std::fmt::Display) -> Error {
    Error::envelope(Field::file(names::ENVELOPE), format!("manifest.dsse: {e}"))
}

/// The envelope carries a mirror bundle manifest.
fn check_payload_type(payload_type: &str) -> Result<()> {
    if payload_type != crate::PAYLOAD_TYPE && payload_type != crate::PAYLOAD_TYPE_LEGACY {
        return Err(Error::envelope(
            Field::file(names::ENVELOPE),
            format!(
                "manifest.dsse has payload type {payload_type:?}, not a mirror bundle manifest ({})",
                crate::PAYLOAD_TYPE
            ),
        ));
    }
    Ok(())
}

/// The signed payload (read from `file`) is a well-formed manifest in canonical form.
fn signed_manifest(payload: &[u8], file: &str) -> Result<Manifest> {
    let manifest = Manifest::from_json(payload).map_err(|e| manifest_malformed(file, e))?;
    if !stella_dsse::jcs::is_canonical(payload) {
        return Err(not_canonical(file));
    }
    Ok(manifest)
}

fn manifest_malformed(file: &str, e: impl std::fmt::Display) -> Error {
    Error::manifest(Field::file(file), format!("signed manifest: {e}"))
}

fn not_canonical(file: &str) -> Error {
    Error::manifest(
        Field::file(file),
        "signed manifest is not canonical JSON (RFC 8785)",
    )
}

fn manifest_json_missing() -> Error {
    Error::manifest(Field::file(names::MANIFEST), "manifest.json is missing")
}

fn manifest_json_differs() -> Error {
    Error::manifest(
        Field::file(names::MANIFEST),
        "manifest.json differs from the payload signed in manifest.dsse (edited after signing?)",
    )
}

/// A checksum file (`SHA256SUMS`, `.dsse`, `.sig`) is absent.
fn missing_sums(name: &str) -> Error {
    Error::checksums(Field::file(name), format!("{name} is missing"))
}

fn sums_differ() -> Error {
    Error::checksums(
        Field::file(names::SUMS),
        "SHA256SUMS does not match the manifest's file list",
    )
}

fn sums_dsse_refused(e: impl std::fmt::Display) -> Error {
    Error::checksums(
        Field::file(names::SUMS_DSSE),
        format!("SHA256SUMS.dsse: {e}"),
    )
}

fn sums_dsse_not_sums() -> Error {
    Error::checksums(
        Field::file(names::SUMS_DSSE),
        "SHA256SUMS.dsse does not carry SHA256SUMS",
    )
}

/// What `SHA256SUMS.dsse` must satisfy: one signature of a key valid for `mirror-bundle`.
fn sums_policy(opts: &Options<'_>) -> Policy {
    Policy::new(1).purpose(Purpose::MirrorBundle).at(opts.now)
}

/// The signature bytes of `SHA256SUMS.sig` (base64, surrounding blanks ignored).
fn sums_sig(sig: &[u8]) -> Result<Vec<u8>> {
    stella_dsse::b64::decode(String::from_utf8_lossy(sig).trim())
        .map_err(|e| Error::checksums(Field::file(names::SUMS_SIG), format!("SHA256SUMS.sig: {e}")))
}

fn sums_sig_does_not_verify() -> Error {
    Error::checksums(
        Field::file(names::SUMS_SIG),
        "SHA256SUMS.sig does not verify SHA256SUMS under a key that signed the manifest",
    )
}

/// The keys of `public-key.pem` (at least one block), each parsed when it is reached.
/// The keys of `public-key.pem` that are not among `signers` (the trusted keys that counted),
/// each still to be matched with one of the envelope's `signatures`. Every key there must have
/// signed, and a signature is one key's: more distinct keys than signatures are refused
/// before any is checked (each check may be a pass over the payload, and the file is not
/// signed: anyone can fill it), and when the signers took every signature, the first other
/// key is named at once.
fn public_keys(
    pem_bytes: &[u8],
    signatures: usize,
    signers: &[stella_keys::VerifiedKey],
) -> Result<Vec<stella_keys::PublicKey>> {
    let blocks = pem::parse_many(pem_bytes)
        .map_err(|e| Error::public_key(format!("public-key.pem: {e}")))?;
    if blocks.is_empty() {
        return Err(Error::public_key("public-key.pem holds no key"));
    }
    // In the file's order, each key once.
    let mut distinct: Vec<&[u8]> = Vec::with_capacity(blocks.len());
    for b in &blocks {
        if !distinct.contains(&b.contents()) {
            distinct.push(b.contents());
        }
        if distinct.len() > signatures {
            let n = blocks
                .iter()
                .map(|b| b.contents())
                .collect::<std::collections::HashSet<_>>()
                .len();
            return Err(Error::public_key(format!(
                "public-key.pem holds {n} keys, more than the envelope's {signatures} signatures: some did not sign this bundle"
            )));
        }
    }
    let mut others = Vec::new();
    for der in distinct {
        let k = stella_keys::PublicKey::from_spki_der(der)
            .map_err(|e| Error::public_key(format!("public-key.pem: {e}")))?;
        // A key that already verified a signature of this envelope (its id is the SHA-256
        // of its SPKI) signed it; when such keys made every signature, no other key did.
        if signers.iter().any(|s| &s.key_id == k.key_id()) {
            continue;
        }
        if signatures <= signers.len() {
            return Err(foreign_key(&k));
        }
        others.push(k);
    }
    Ok(others)
}

/// `public-key.pem` holds `k`, which signed nothing.
fn foreign_key(k: &stella_keys::PublicKey) -> Error {
    Error::public_key(format!(
        "public-key.pem holds key {}, which did not sign this bundle",
        k.key_id()
    ))
}

/// The detached header as strict JSON of its shape; `refused` says how a malformed one fails
/// (a verification failure in a bundle, an input error on its own).
fn parse_header(bytes: &[u8], refused: impl Fn(String) -> Error) -> Result<Header> {
    let value = stella_dsse::jcs::parse_strict(bytes)
        .map_err(|e| refused(format!("detached header: {e}")))?;
    serde_json::from_value(value).map_err(|e| refused(format!("detached header: {e}")))
}

/// A rule about the detached header's `field`: it `holds`, or the failure says `msg()`.
fn header_rule(holds: bool, field: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(Error::header(Field::Header(field), msg()))
    }
}

fn check_header_purpose(header: &Header) -> Result<()> {
    header_rule(header.purpose == crate::PURPOSE, "purpose", || {
        format!(
            "detached header purpose is {:?}, not \"mirror-bundle\"",
            header.purpose
        )
    })
}

fn check_header_created(header: &Header) -> Result<()> {
    crate::manifest::parse_time(&header.created).map_err(|e| {
        Error::header(
            Field::Header("created"),
            format!("detached header created: {e}"),
        )
    })?;
    Ok(())
}

fn check_header_issuer(header: &Header, issuer: &str) -> Result<()> {
    header_rule(header.issuer == issuer, "issuer", || {
        format!(
            "detached header issuer {:?} does not match the manifest issuer {:?}",
            header.issuer, issuer
        )
    })
}

fn check_header_keyid(header: &Header, signers: &[VerifiedKey]) -> Result<()> {
    let signed = signers.iter().any(|s| s.key_id.as_str() == header.keyid);
    header_rule(signed, "keyid", || {
        format!(
            "detached header keyid {} is not a trusted key that signed the manifest",
            header.keyid
        )
    })
}

/// The warning of a header without a Rekor entry; `what` was verified against the keyring.
fn no_rekor_warning(header: &Header, what: &str) -> Option<String> {
    header.rekor_uuid.is_none().then(|| {
        format!(
            "no Rekor entry (rekorUUID) in the detached header: transparency-log inclusion was \
             not checked; {what} was verified against the local keyring only"
        )
    })
}

/// The detached header agrees with the signed payload (purpose, payload type and digest,
/// issuer, keyid among the signers, the envelope's signatures); returns it and its warnings.
pub(crate) fn check_header(
    hbytes: Option<&[u8]>,
    payload_type: &str,
    signatures: &[stella_dsse::Signature],
    digest: &Digest,
    issuer: &str,
    signers: &[VerifiedKey],
) -> Result<(Header, Vec<String>)> {
    // The detached header must agree with the signed payload.
    let hbytes = hbytes.ok_or_else(|| {
        Error::header(
            Field::file(names::HEADER),
            "mirror/metadata/mirror.dsse.json (detached header) is missing",
        )
    })?;
    let header = parse_header(hbytes, |m| Error::header(Field::file(names::HEADER), m))?;
    check_header_purpose(&header)?;
    header_rule(header.payload_type == payload_type, "payloadType", || {
        format!(
            "detached header payloadType {:?} does not match the envelope's {:?}",
            header.payload_type, payload_type
        )
    })?;
    header_rule(
        header.payload_sha256 == digest.hex(),
        "payloadSha256",
        || {
            format!(
                "detached header names payload sha256:{} but the signed manifest is sha256:{}",
                header.payload_sha256,
                digest.hex()
            )
        },
    )?;
    check_header_issuer(&header, issuer)?;
    check_header_keyid(&header, signers)?;
    let env_sigs: BTreeSet<(String, String)> = signatures
        .iter()
        .map(|s| (s.keyid.clone(), stella_dsse::b64::encode(&s.sig)))
        .collect();
    let hdr_sigs: BTreeSet<(String, String)> = header
        .signatures
        .iter()
        .map(|s| {
            let canon = stella_dsse::b64::decode(&s.sig)
                .map(|b| stella_dsse::b64::encode(&b))
                .unwrap_or_else(|_| s.sig.clone());
            (s.keyid.clone(), canon)
        })
        .collect();
    if env_sigs != hdr_sigs {
        // The envelope's stage: the two signature sets of one signing disagree.
        return Err(Error::envelope(
            Field::Header("signatures"),
            "detached header signatures differ from those of manifest.dsse",
        ));
    }
    check_header_created(&header)?;
    let warnings = no_rekor_warning(&header, "the bundle")
        .into_iter()
        .collect();
    Ok((header, warnings))
}

/// The time anchor (checked whenever present, over `payload`; trusted only with trust roots)
/// and freshness.
pub(crate) fn check_time(
    anchor_bytes: Option<&[u8]>,
    stamped: crate::anchor::Stamped<'_>,
    manifest: &Manifest,
    opts: &Options<'_>,
    warnings: &mut Vec<String>,
) -> Result<TimeChecked> {
    // The time anchor: checked whenever present; trusted only with trust roots.
    let anchor = match anchor_bytes {
        Some(bytes) => Some(crate::anchor::verify_anchor_for(
            bytes,
            stamped,
            opts.time_roots,
        )?),
        None => None,
    };
    match &anchor {
        Some(a) if !a.trusted() => warnings.push(format!(
            "time-anchor.json ({} by {}) is not trusted: no --time-trust-roots given; freshness is judged by the local clock",
            format_time(a.time),
            a.tsa
        )),
        None if opts.time_roots.is_some() => warnings.push(
            "--time-trust-roots given, but the bundle has no time-anchor.json: freshness is judged by the local clock"
                .to_string(),
        ),
        _ => {}
    }

    // Freshness.
    let generated = generated_at(manifest)?;
    if let Some(a) = anchor.as_ref().filter(|a| a.trusted()) {
        // The token proves the manifest existed at the anchor time.
        if (generated - a.time).whole_seconds() > SKEW_SECONDS {
            return Err(Error::freshness(Detail::AfterAnchor {
                generated_at: manifest.generated_at.clone(),
                anchor_time: a.time,
                skew: SKEW_SECONDS,
            }));
        }
    }
    let (now, time_source) = freshness_time(opts.now, anchor.as_ref());
    let age = check_age(manifest, generated, now, time_source, opts.max_age)?;
    Ok(TimeChecked {
        anchor,
        age_seconds: age,
        judged_at: now,
        time_source,
    })
}

/// The manifest's `generatedAt`, as a time.
fn generated_at(manifest: &Manifest) -> Result<OffsetDateTime> {
    manifest
        .generated_at_time()
        .map_err(|e| Error::freshness(Detail::Rule(e.to_string())))
}

/// The bundle's age at `now` (judged by `clock`): not in the future, not beyond its validity
/// (`max_age`, else the manifest's `validForSeconds`), both ± [`SKEW_SECONDS`].
fn check_age(
    manifest: &Manifest,
    generated: OffsetDateTime,
    now: OffsetDateTime,
    clock: TimeSource,
    max_age: Option<u64>,
) -> Result<i64> {
    let age = (now - generated).whole_seconds();
    if age < -SKEW_SECONDS {
        return Err(Error::freshness(Detail::InFuture {
            generated_at: manifest.generated_at.clone(),
            judged_at: now,
            skew: SKEW_SECONDS,
            clock,
        }));
    }
    let budget = max_age.unwrap_or(manifest.valid_for());
    if age
        > i64::try_from(budget)
            .unwrap_or(i64::MAX)
            .saturating_add(SKEW_SECONDS)
    {
        return Err(Error::freshness(Detail::Stale {
            generated_at: manifest.generated_at.clone(),
            age,
            budget,
            skew: SKEW_SECONDS,
            clock,
        }));
    }
    Ok(age)
}

/// A detached header that verified on its own (see [`verify_header`]).
#[derive(Debug, Clone)]
pub struct VerifiedHeader {
    pub header: Header,
    pub manifest: Manifest,
    pub manifest_digest: Digest,
    pub signers: Vec<VerifiedKey>,
    pub warnings: Vec<String>,
    /// Age of the bundle (from the manifest's `generatedAt`) at `opts.now`, in seconds.
    pub age_seconds: i64,
}

/// Verify the detached header `mirror/metadata/mirror.dsse.json` on its own, without the
/// envelope (`manifest.dsse`) and without the bundle's content: the header is a DSSE
/// signature set held apart from its payload, the signed `manifest.json` (seed 001: "to allow
/// verification without payload extraction").
///
/// The header's signatures are over the DSSE PAE of the manifest, so checking them needs the
/// manifest bytes (`payload`, a few KiB) — never the images or advisories. Checked: the
/// header's shape (strict JSON, no unknown fields), `purpose` is `mirror-bundle`, the payload
/// type is the mirror type, `created` is a time; `payloadSha256` is the payload's SHA-256
/// ("payload hash mismatch" otherwise); the signatures verify over the payload with
/// `opts.threshold` distinct keyring keys valid for `mirror-bundle` (the key ids are hints
/// only, as everywhere); `keyid` is one of those signers; the payload is a canonical bundle
/// manifest whose issuer is the header's; and the bundle is fresh by the local clock (or
/// `opts.max_age`). Not checked: the files, `SHA256SUMS*`, time anchors — `verify_dir` and
/// `verify_archive` do all of it. A bundle signed keyless: [`verify_header_with_keyless`].
pub fn verify_header(
    header_bytes: &[u8],
    payload: &[u8],
    opts: &Options<'_>,
) -> Result<VerifiedHeader> {
    verify_header_with_keyless(header_bytes, payload, None, opts)
}

/// [`verify_header`] of a bundle that may be signed keyless: `keyless` is the bundle's
/// `manifest.sigstore.json` (read from beside `manifest.json`), whose Sigstore bundles, each
/// over exactly `payload` and the header's payload type, are judged against the keyring's
/// `[[identities]]` as in a full verification (see `crate::keyless`): an accepted identity
/// counts as the key its certificate binds, for the threshold and the header's `keyid`.
pub fn verify_header_with_keyless(
    header_bytes: &[u8],
    payload: &[u8],
    keyless: Option<&[u8]>,
    opts: &Options<'_>,
) -> Result<VerifiedHeader> {
    let header = read_header(header_bytes)?;
    let digest = Digest::of(payload);
    check_header_digest(&header, &digest)?;
    let envelope = Envelope {
        payload_type: header.payload_type.clone(),
        payload: payload.to_vec(),
        signatures: header_signatures(&header)?,
    };
    let keyless = crate::keyless::keyless_signers_of(keyless, &envelope, opts.keyring, opts.now)?;
    let signers = stella_keys::verify_envelope(&envelope, &keyless.keyring, &header_policy(opts))
        .map_err(|e| keyless.explain(e))?;
    check_header_keyid(&header, &signers)?;
    // The payload on its own: what `manifest.json` holds.
    let manifest = signed_manifest(payload, names::MANIFEST)?;
    header_verified(header, manifest, digest, signers, opts)
}

/// [`verify_header_with_keyless`] of the payload in the file `payload`, whatever its size:
/// up to [`crate::MAX_METADATA_BYTES`] read into memory, above it (a bundle of hundreds of
/// thousands of files) checked as a stream — copied once into memory up to a bound or into a
/// private temporary file (so every check reads the same bytes), hashed on the way, the
/// signatures verified over its PAE as it is read, its canonical form and fields checked by
/// the streaming checker and parser — with the same checks in the same order and the same
/// messages. Keyless signatures beside a streamed payload are read as a stream too, each
/// Sigstore bundle's copy of the payload hashed as it is read.
pub fn verify_header_file(
    header_bytes: &[u8],
    payload: &Path,
    keyless: Option<KeylessInput<'_>>,
    opts: &Options<'_>,
) -> Result<VerifiedHeader> {
    verify_header_file_with(
        header_bytes,
        payload,
        keyless,
        opts,
        &crate::streamed::Limits::default(),
    )
}

/// [`verify_header_file`] with explicit [`crate::streamed::Limits`] (tests take the streamed
/// path with small payloads).
pub fn verify_header_file_with(
    header_bytes: &[u8],
    payload: &Path,
    keyless: Option<KeylessInput<'_>>,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
) -> Result<VerifiedHeader> {
    use std::io::{BufReader, Read as _};

    use crate::streamed::{
        parse_manifest, parse_manifest_slice, too_large, HashEvery, PaeOf, Spill, Stoppable,
        Verdict,
    };

    // Opened once, and only if a regular file (links followed: a path the user named): a
    // FIFO would block the open, a folder fail the read.
    let (file, len) =
        match crate::fs::open_regular(payload, crate::fs::Links::Follow).at(payload)? {
            crate::fs::Opened::File(f, len) => (f, len),
            crate::fs::Opened::Missing => return Err(Error::NotFound(payload.to_path_buf())),
            crate::fs::Opened::NotRegular => {
                return Err(Error::input(format!(
                    "{}: not a regular file",
                    payload.display()
                )))
            }
        };
    if len <= limits.stream_above {
        let mut bytes = Vec::new();
        crate::streamed::At::new(&file, 0)
            .take(limits.stream_above.saturating_add(1))
            .read_to_end(&mut bytes)
            .at(payload)?;
        if bytes.len() as u64 <= limits.stream_above {
            let held;
            let keyless = match keyless {
                None => None,
                Some(KeylessInput::Bytes(b)) => Some(b),
                Some(KeylessInput::File(f)) => {
                    held = f.read()?;
                    Some(held.as_slice())
                }
            };
            return verify_header_with_keyless(header_bytes, &bytes, keyless, opts);
        }
    }
    let header = read_header(header_bytes)?;
    if len > limits.max_manifest {
        return Err(too_large(names::MANIFEST, len, limits.max_manifest));
    }
    // One private copy, hashed as it is made: the checks below all read these bytes.
    let tmp_err = |e| Error::io(std::env::temp_dir(), e);
    let mut read = HashEvery::new(
        crate::streamed::At::new(&file, 0).take(limits.max_manifest.saturating_add(1)),
    );
    let mut spill = Spill::for_payload(limits).expecting(len);
    if let Err(e) = std::io::copy(&mut read, &mut spill) {
        return Err(if read.failed {
            Error::io(payload, e)
        } else {
            tmp_err(e)
        });
    }
    if read.read > limits.max_manifest {
        return Err(too_large(names::MANIFEST, read.read, limits.max_manifest));
    }
    let (n, digest) = (read.read, read.hasher.finish());
    let copy = spill.finish().map_err(tmp_err)?;
    check_header_digest(&header, &digest)?;
    let signatures = header_signatures(&header)?;
    let mut pae = PaeOf {
        prefix: stella_dsse::stream::pae_prefix(&header.payload_type, n),
        payload: &copy,
    };
    let keyless = match keyless {
        None => KeylessSigners::none(opts.keyring),
        Some(k) => {
            let (reader, len): (Box<dyn std::io::Read + '_>, u64) = match k {
                KeylessInput::Bytes(b) => (Box::new(b), b.len() as u64),
                KeylessInput::File(f) => (Box::new(crate::streamed::At::new(&f.file, 0)), f.len),
            };
            crate::keyless::keyless_signers_streamed(
                reader,
                len,
                (&header.payload_type, n),
                &digest,
                &mut pae,
                opts.keyring,
                opts.now,
            )?
        }
    };
    let opts = &Options {
        keyring: &keyless.keyring,
        ..*opts
    };
    // The signatures on this thread while the canonical form and the fields are checked on
    // two others (the typing stops if a signature fails); reported in the in-memory order:
    // signatures, key id, canonical form, fields.
    let verdict = Verdict::new();
    let (signers, canonical, parsed) = std::thread::scope(|s| {
        // A panic below must not leave the typing thread waiting for the verdict.
        let _settle = verdict.guard();
        let canonical = s.spawn(|| match copy.bytes() {
            Some(b) => Ok(stella_dsse::jcs::is_canonical(b)),
            None => stella_dsse::jcs::is_canonical_read(copy.reader()).map_err(tmp_err),
        });
        let parsed = s.spawn(|| match copy.bytes() {
            Some(b) => parse_manifest_slice(b),
            None => parse_manifest(BufReader::with_capacity(
                256 * 1024,
                Stoppable::new(copy.reader(), &verdict).waiting_after(limits.parse_ahead),
            )),
        });
        let signers = stella_keys::verify_envelope_stream(
            &header.payload_type,
            &signatures,
            &mut pae,
            opts.keyring,
            &header_policy(opts),
        );
        verdict.settle(signers.is_ok());
        let panicked = || Error::input("a verifying thread panicked");
        (
            signers,
            canonical.join().unwrap_or_else(|_| Err(panicked())),
            parsed.join().map_err(|_| panicked()),
        )
    });
    let signers = signers.map_err(|e| keyless.explain(e))?;
    check_header_keyid(&header, &signers)?;
    if !canonical? {
        return Err(not_canonical(names::MANIFEST));
    }
    let (manifest, index) = parsed?.map_err(|e| manifest_malformed(names::MANIFEST, e))?;
    drop((index, copy));
    header_verified(header, manifest, digest, signers, opts)
}

/// The keyless signatures beside a detached header's payload file (`manifest.sigstore.json`
/// in the payload's folder), for [`verify_header_file`]: `None` if there is no regular file
/// there (a link to one is followed, as for the payload). Opened once and checked on the
/// descriptor, never blocking (a FIFO swapped in after a look is refused, not waited on), and
/// read up to [`crate::MAX_METADATA_BYTES`] whatever the file grows to meanwhile.
pub fn read_keyless_beside(payload: &Path) -> Result<Option<Vec<u8>>> {
    open_keyless_beside(payload)?.map(|k| k.read()).transpose()
}

/// [`read_keyless_beside`] without reading: the file opened (as it opens it), for
/// [`verify_header_file`] to read whole beside a payload it holds, or as a stream beside a
/// payload it streams (its Sigstore bundles each carry that payload again).
pub fn open_keyless_beside(payload: &Path) -> Result<Option<KeylessFile>> {
    let path = payload.with_file_name(names::KEYLESS);
    Ok(
        match crate::fs::open_regular(&path, crate::fs::Links::Follow).at(&path)? {
            crate::fs::Opened::File(file, len) => Some(KeylessFile { file, len, path }),
            crate::fs::Opened::Missing | crate::fs::Opened::NotRegular => None,
        },
    )
}

/// An opened `manifest.sigstore.json` ([`open_keyless_beside`]).
#[derive(Debug)]
pub struct KeylessFile {
    file: std::fs::File,
    len: u64,
    path: PathBuf,
}

impl KeylessFile {
    /// Its bytes, up to [`crate::MAX_METADATA_BYTES`] (refused above, whatever it grows to).
    pub fn read(&self) -> Result<Vec<u8>> {
        let limit = crate::MAX_METADATA_BYTES;
        let too_large = || {
            Error::metadata(
                Field::file(names::KEYLESS),
                format!(
                    "{} is larger than the {limit}-byte limit for bundle metadata",
                    self.path.display()
                ),
            )
        };
        if self.len > limit {
            return Err(too_large());
        }
        crate::fs::read_to_limit(crate::streamed::At::new(&self.file, 0), self.len, limit)
            .at(&self.path)?
            .ok_or_else(too_large)
    }
}

/// The keyless signatures given with a detached header's payload: bytes, or an opened file
/// (read as a stream beside a streamed payload).
#[derive(Debug, Clone, Copy)]
pub enum KeylessInput<'a> {
    Bytes(&'a [u8]),
    File(&'a KeylessFile),
}

/// A detached header's own rules, before its payload is looked at: strict shape, purpose, a
/// mirror payload type, `created` a time.
fn read_header(header_bytes: &[u8]) -> Result<Header> {
    let header = parse_header(header_bytes, Error::input)?;
    check_header_purpose(&header)?;
    let mirror_type = [crate::PAYLOAD_TYPE, crate::PAYLOAD_TYPE_LEGACY];
    header_rule(
        mirror_type.contains(&header.payload_type.as_str()),
        "payloadType",
        || {
            format!(
                "detached header payloadType {:?} is not a mirror bundle manifest ({})",
                header.payload_type,
                crate::PAYLOAD_TYPE
            )
        },
    )?;
    check_header_created(&header)?;
    Ok(header)
}

/// `payloadSha256` names the payload's digest.
fn check_header_digest(header: &Header, digest: &Digest) -> Result<()> {
    header_rule(
        header.payload_sha256 == digest.hex(),
        "payloadSha256",
        || {
            format!(
                "payload hash mismatch: the detached header names payload sha256:{} but the \
             manifest is sha256:{}",
                header.payload_sha256,
                digest.hex()
            )
        },
    )
}

/// The header's signatures, decoded (at least one).
fn header_signatures(header: &Header) -> Result<Vec<stella_dsse::Signature>> {
    header_rule(!header.signatures.is_empty(), "signatures", || {
        "detached header carries no signatures".to_string()
    })?;
    header
        .signatures
        .iter()
        .map(|s| {
            let sig = stella_dsse::b64::decode(&s.sig).map_err(|e| {
                Error::header(
                    Field::Header("signatures"),
                    format!("detached header signature {}: {e}", s.keyid),
                )
            })?;
            Ok(stella_dsse::Signature {
                keyid: s.keyid.clone(),
                sig,
            })
        })
        .collect()
}

/// The signature policy of a detached header: `opts.threshold` keys for `mirror-bundle`.
fn header_policy(opts: &Options<'_>) -> Policy {
    Policy::new(opts.threshold)
        .purpose(Purpose::MirrorBundle)
        .at(opts.now)
}

/// The last rules of a detached header, once its signatures and payload verified: the
/// issuer is the manifest's, the bundle is fresh by the local clock (or `opts.max_age`).
fn header_verified(
    header: Header,
    manifest: Manifest,
    digest: Digest,
    signers: Vec<VerifiedKey>,
    opts: &Options<'_>,
) -> Result<VerifiedHeader> {
    check_header_issuer(&header, &manifest.issuer)?;
    let generated = generated_at(&manifest)?;
    let age = check_age(
        &manifest,
        generated,
        opts.now,
        TimeSource::LocalClock,
        opts.max_age,
    )?;
    let warnings = no_rekor_warning(&header, "the header")
        .into_iter()
        .collect();
    Ok(VerifiedHeader {
        header,
        manifest,
        manifest_digest: digest,
        signers,
        warnings,
        age_seconds: age,
    })
}

/// Stage 2: compare what is present with what the manifest lists.
pub(crate) fn check_files(
    manifest: &Manifest,
    observed: &BTreeMap<String, (u64, Digest)>,
) -> Result<ContentChecked> {
    let mut problems = Vec::new();
    for p in observed.keys() {
        if manifest.file(p).is_none() {
            problems.push(crate::error::unlisted_problem(p));
        }
    }
    let mut from_base = crate::from_base::FromBase::default();
    let mut bytes = 0;
    let mut count = 0;
    for f in &manifest.files {
        let seen = observed.get(f.path.as_str()).map(|&(size, digest)| Hashed {
            size,
            digest,
            whole: true,
        });
        match seen {
            None if manifest.kind == Kind::Thin => from_base.push(&f.path),
            None => problems.push(crate::error::missing_problem(&f.path)),
            Some(h) if h.size == f.size && h.digest() == Some(f.sha256) => {
                bytes += h.size;
                count += 1;
            }
            Some(h) => problems.push(h.changed_problem(&f.path, f.size, &f.sha256)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::content_mismatch(problems.len(), &problems));
    }
    Ok((count, bytes, from_base.done()))
}

/// Read the metadata files of a bundle folder.
/// (Bounded: each file by [`crate::MAX_METADATA_BYTES`], all of them by
/// [`crate::MAX_METADATA_TOTAL`].)
pub(crate) fn read_dir_metadata(dir: &Path) -> Result<Metadata> {
    read_dir_metadata_within(dir, crate::MAX_METADATA_TOTAL)
}

/// [`read_dir_metadata`], all of them bounded by `total_cap` (a folder above it is verified
/// streamed: [`crate::streamed::wants_stream`]).
fn read_dir_metadata_within(dir: &Path, total_cap: u64) -> Result<Metadata> {
    let mut meta = Metadata::new();
    let mut total: u64 = 0;
    for name in names::METADATA {
        if let Some(b) = crate::fs::read_metadata_file(dir, name)? {
            total = total.saturating_add(b.len() as u64);
            if total > total_cap {
                return Err(Error::metadata(
                    Field::Metadata,
                    format!("the metadata files exceed {total_cap} bytes in all (at {name})"),
                ));
            }
            meta.insert(name.to_string(), b);
        }
    }
    Ok(meta)
}

/// Verify a bundle folder.
///
/// The metadata stage runs on this thread while the content is walked and hashed on the
/// others (many small files: the metadata work is no longer a serial phase before the
/// hashing). Nothing is trusted before both are done: the hashes are compared with the
/// signed manifest only after it verified, and a metadata failure wins over a content one,
/// as when the two ran in turn.
///
/// A folder whose manifest or checksum files are above [`crate::MAX_METADATA_BYTES`] is
/// verified streamed (`crate::streamed`: memory independent of the file count).
pub fn verify_dir(
    dir: &Path,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    verify_dir_with(dir, opts, &crate::streamed::Limits::default(), progress)
}

/// [`verify_dir`] with explicit [`crate::streamed::Limits`] (tests take the streamed path with
/// small bundles).
pub fn verify_dir_with(
    dir: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    if !dir.is_dir() {
        return Err(Error::NotFound(dir.to_path_buf()));
    }
    if crate::streamed::wants_stream(dir, limits) {
        return verify_dir_streamed(dir, opts, limits, progress);
    }
    // The content is walked and hashed from the start, as on the streamed path
    // (`streamed::check_content_early`: a file read no further than its listed size once the
    // list is known, an unlisted one not read past its first bytes), while this thread checks
    // the metadata held in memory; the signed list is handed over through the gate.
    let gate = crate::streamed::IndexGate::new();
    let (vm, content) = std::thread::scope(|s| {
        let content = s.spawn(|| crate::streamed::check_content_early(dir, &gate, progress));
        let vm = {
            let _closer = gate.closer();
            read_dir_metadata_within(dir, limits.metadata_total)
                .and_then(|meta| CheckedBundle::from_metadata(&meta)?.verify(opts))
                .and_then(|vm| {
                    gate.open(vm.manifest.kind, index_of(&vm.manifest)?);
                    Ok(vm)
                })
        };
        if vm.is_err() {
            gate.close();
        }
        let content = content
            .join()
            .unwrap_or_else(|_| Err(Error::input("a hashing thread panicked")));
        (vm, content)
    });
    let vm = vm?;
    let content = content?.ok_or_else(|| Error::input("the content was not checked"))?;
    Ok(VerifiedBundle::new(vm, content))
}

/// Stage 2 against a manifest held in memory: the folder walked and hashed by the streamed
/// content check (`sign`, an envelope given apart from its folder).
pub(crate) fn check_content_of(
    dir: &Path,
    manifest: &Manifest,
    progress: &dyn Progress,
) -> Result<ContentChecked> {
    crate::streamed::check_content(dir, manifest.kind, &index_of(manifest)?, progress)
}

/// The files of a verified manifest as the streamed content check takes them.
fn index_of(manifest: &Manifest) -> Result<crate::streamed::FileIndex> {
    let mut index = crate::streamed::FileIndex::default();
    for f in &manifest.files {
        // Checked as the manifest was: in order, so this never fails.
        index
            .push(f.clone())
            .map_err(|e| Error::input(format!("the signed file list: {e}")))?;
    }
    Ok(index)
}

/// [`crate::verify::verify_dir`] for a folder whose metadata is above
/// [`Limits::stream_above`] (see the module docs of [`crate::streamed`]).
///
/// The checks are those of [`CheckedBundle::verify`] and [`check_files`], in their order as far as
/// any failure is concerned (the first failing step in that order is the one reported), but
/// spread over the cores: once the payload is out of its envelope, its signatures, canonical
/// form and `manifest.json` are checked on a second thread while this one types the manifest
/// into the index (stopped early if a signature fails); once the signatures verified and the
/// index is built, the content is walked and hashed on the hashing threads while this one
/// checks the rest of the metadata. Content results are used only when all the metadata
/// verified; a metadata failure wins over a content one.
///
/// [`Limits::stream_above`]: crate::streamed::Limits::stream_above
pub(crate) fn verify_dir_streamed(
    dir: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let (meta, _, content) = streamed_checks(dir, opts, limits, Some(progress))?;
    let content = content.ok_or_else(|| Error::input("the content was not checked"))?;
    Ok(VerifiedBundle::new(meta, content))
}

/// The metadata stage of [`verify_dir_streamed`] alone: the metadata files of `dir` (the
/// content is not looked at), and the signed file list as a [`crate::streamed::FileIndex`].
/// The archive reader spools a big archive's metadata entries into a folder and checks them
/// with this.
pub(crate) fn verify_metadata_streamed(
    dir: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
) -> Result<(VerifiedMetadata, crate::streamed::FileIndex)> {
    let (meta, index, _) = streamed_checks(dir, opts, limits, None)?;
    Ok((meta, index))
}

/// What [`check_content`](crate::streamed::check_content) found: files and bytes checked, and
/// the files left to the base.
pub(crate) type ContentChecked = crate::streamed::ContentChecked;

/// The streamed checks; the content too when given a `progress` to report it on.
///
/// The content is walked and hashed from the start, on the hashing threads, while this
/// thread checks the metadata ([`crate::streamed::check_content_early`]); it is judged
/// against the signed file list once the signatures and the manifest verified (the list is
/// handed over through an [`IndexGate`](crate::streamed::IndexGate)), and its result is used
/// only if all the metadata verified.
fn streamed_checks(
    dir: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
    content: Option<&dyn Progress>,
) -> Result<(
    VerifiedMetadata,
    crate::streamed::FileIndex,
    Option<ContentChecked>,
)> {
    let gate = crate::streamed::IndexGate::new();
    let (meta, content) = std::thread::scope(|s| {
        let content = content
            .map(|progress| s.spawn(|| crate::streamed::check_content_early(dir, &gate, progress)));
        let meta = {
            let _closer = gate.closer();
            check_streamed(dir, limits).and_then(|checked| verify_streamed(checked, opts, &gate))
        };
        if meta.is_err() {
            gate.close();
        }
        let content = content.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::input("a hashing thread panicked")))
        });
        (meta, content)
    });
    let meta = meta?;
    let content = match content.transpose()? {
        Some(c) => Some(c.ok_or_else(|| Error::input("the content was not checked"))?),
        None => None,
    };
    let index = gate
        .into_index()
        .ok_or_else(|| Error::input("the signed file list was not kept"))?;
    Ok((meta, index, content))
}

/// The streamed form of a [`CheckedBundle`]: the envelope's signatures and payload type, the
/// payload (in memory up to a bound, in a private temporary file above it) and its digest.
/// The other metadata files stay in the folder until [`verify_streamed`] reads them.
struct StreamedChecked<'a> {
    dir: &'a Path,
    limits: &'a crate::streamed::Limits,
    env: stella_dsse::stream::StreamedEnvelope,
    digest: Digest,
    payload: crate::streamed::Payload,
}

/// Step 1 of the streamed path, before any cryptography: the envelope within its cap, its
/// payload within `max_manifest` and of a mirror type.
fn check_streamed<'a>(
    dir: &'a Path,
    limits: &'a crate::streamed::Limits,
) -> Result<StreamedChecked<'a>> {
    use crate::hash::Hasher;
    use crate::streamed::{envelope_cap, open_meta, too_large, Spill, Tee};

    // 1. The envelope, its payload into memory (or, above PAYLOAD_IN_MEMORY, a private
    //    temporary file), hashed on the way.
    let env_cap = envelope_cap(limits.max_manifest);
    let (env_file, env_len, env_path) =
        open_meta(dir, names::ENVELOPE, Some(env_cap))?.ok_or_else(unsigned)?;
    let tmp_err = |e| Error::io(std::env::temp_dir(), e);
    let (env, digest, payload) = {
        let mut tee = Tee {
            inner: Spill::for_payload(limits).expecting(env_len / 4 * 3),
            hasher: Hasher::new(),
        };
        let env =
            stella_dsse::stream::read_envelope(env_file, &mut tee, env_cap).map_err(
                |e| match e {
                    stella_dsse::stream::StreamError::Io(e) => Error::io(&env_path, e),
                    e => envelope_malformed(e),
                },
            )?;
        let digest = tee.hasher.finish();
        (env, digest, tee.inner.finish().map_err(tmp_err)?)
    };
    if env.payload_len > limits.max_manifest {
        return Err(too_large(
            names::MANIFEST,
            env.payload_len,
            limits.max_manifest,
        ));
    }
    check_payload_type(&env.payload_type)?;
    Ok(StreamedChecked {
        dir,
        limits,
        env,
        digest,
        payload,
    })
}

/// Steps 2 and 3 of the streamed path ([`CheckedBundle::verify`] of the streamed form): the
/// signed list goes to `gate` as soon as the signatures and the manifest verified.
fn verify_streamed(
    checked: StreamedChecked<'_>,
    opts: &Options<'_>,
    gate: &crate::streamed::IndexGate<'_>,
) -> Result<VerifiedMetadata> {
    use std::io::BufReader;

    use crate::streamed::{
        hash_all, open_meta, parse_manifest, parse_manifest_slice, reads_exactly, PaeOf, Stoppable,
        Verdict,
    };

    let StreamedChecked {
        dir,
        limits,
        env,
        digest,
        payload,
    } = checked;
    let tmp_err = |e| Error::io(std::env::temp_dir(), e);
    let pae_prefix = stella_dsse::stream::pae_prefix(&env.payload_type, env.payload_len);

    // 2. Signatures, canonical form and manifest.json (second thread) while this one types the
    //    manifest into the index.
    let verdict = Verdict::new();
    let (signed, parsed) = std::thread::scope(|s| {
        let signed = s.spawn(
            || -> Result<(Vec<VerifiedKey>, KeylessSigners<'_>, Result<()>)> {
                // Settled below; if this thread unwinds first, as failed (the typing waits on it).
                let _settle = verdict.guard();
                let mut pae = PaeOf {
                    prefix: pae_prefix.clone(),
                    payload: &payload,
                };
                // Keyless signers (manifest.sigstore.json, its payloads hashed as they are read)
                // join the keyring as the keys they certify, as in memory (here, while the other
                // thread types the manifest).
                let keyless = match open_meta(dir, names::KEYLESS, None)? {
                    None => KeylessSigners::none(opts.keyring),
                    Some((f, len, _)) => crate::keyless::keyless_signers_streamed(
                        f,
                        len,
                        (&env.payload_type, env.payload_len),
                        &digest,
                        &mut pae,
                        opts.keyring,
                        opts.now,
                    )?,
                };
                let policy = Policy::new(opts.threshold)
                    .purpose(Purpose::MirrorBundle)
                    .at(opts.now);
                let signers = stella_keys::verify_envelope_stream(
                    &env.payload_type,
                    &env.signatures,
                    &mut pae,
                    &keyless.keyring,
                    &policy,
                );
                verdict.settle(signers.is_ok());
                let signers = signers.map_err(|e| keyless.explain(e))?;
                let rest = (|| {
                    let canonical = match payload.bytes() {
                        Some(b) => stella_dsse::jcs::is_canonical(b),
                        None => stella_dsse::jcs::is_canonical_read(payload.reader())
                            .map_err(tmp_err)?,
                    };
                    if !canonical {
                        return Err(not_canonical(names::ENVELOPE));
                    }
                    match open_meta(dir, names::MANIFEST, Some(limits.max_manifest))? {
                        None => Err(manifest_json_missing()),
                        Some((mut f, len, p)) => {
                            let same = len == env.payload_len
                                && match payload.bytes() {
                                    Some(b) => reads_exactly(&mut f, b).at(&p)?,
                                    None => hash_all(&mut f, &p)?.0 == digest,
                                };
                            if same {
                                Ok(())
                            } else {
                                Err(manifest_json_differs())
                            }
                        }
                    }
                })();
                Ok((signers, keyless, rest))
            },
        );
        let parsed = match payload.bytes() {
            Some(b) => parse_manifest_slice(b),
            None => parse_manifest(BufReader::with_capacity(
                256 * 1024,
                Stoppable::new(payload.reader(), &verdict).waiting_after(limits.parse_ahead),
            )),
        };
        let signed = signed
            .join()
            .unwrap_or_else(|_| Err(Error::input("a verifying thread panicked")));
        (signed, parsed)
    });
    // In the order of the in-memory path: signature, manifest shape, canonical, manifest.json.
    let (signers, keyless, canonical_and_copy) = signed?;
    let (manifest, index) = parsed.map_err(|e| manifest_malformed(names::ENVELOPE, e))?;
    canonical_and_copy?;
    let opts = &Options {
        keyring: &keyless.keyring,
        ..*opts
    };

    // 3. The content is judged against the index on the hashing threads while this one
    //    checks the rest of the metadata.
    gate.open(manifest.kind, index);
    let index = gate
        .listed_index()
        .ok_or_else(|| Error::input("the signed file list was not kept"))?;
    let meta = rest_of_streamed_metadata(
        dir,
        opts,
        limits,
        &env,
        &digest,
        &manifest,
        index,
        &signers,
        &mut PaeOf {
            prefix: pae_prefix.clone(),
            payload: &payload,
        },
    );
    drop(payload);
    let (header, warnings, time) = meta?;
    Ok(VerifiedMetadata::new(
        manifest,
        Vec::new(),
        digest,
        signers,
        (header, warnings),
        time,
    ))
}

/// What [`rest_of_streamed_metadata`] verified: the header, the warnings, the time checks.
type StreamedRest = (Header, Vec<String>, TimeChecked);

/// Steps 3-6 of the streamed path, once the signatures and the manifest verified: the detached
/// header, the checksum files (against the index), `public-key.pem` (over `pae`, the signed
/// PAE), the time anchor and freshness.
#[allow(clippy::too_many_arguments)]
fn rest_of_streamed_metadata(
    dir: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
    env: &stella_dsse::stream::StreamedEnvelope,
    digest: &Digest,
    manifest: &Manifest,
    index: &crate::streamed::FileIndex,
    signers: &[VerifiedKey],
    pae: &mut dyn stella_keys::stream::MessageSource,
) -> Result<StreamedRest> {
    use std::io::BufReader;

    use stella_keys::stream::Prefixed;

    use crate::streamed::{
        envelope_cap, hash_all, open_meta, At, HashEvery, SameAs, Stoppable, Verdict,
    };

    /// `SHA256SUMS.dsse`, read once (`read_sums_env`).
    struct SumsEnvRead {
        digest: Digest,
        len: u64,
        env: std::result::Result<
            stella_dsse::stream::StreamedEnvelope,
            stella_dsse::stream::StreamError,
        >,
        /// The decoded payload is `SHA256SUMS`, byte for byte.
        same: bool,
        /// Reading `SHA256SUMS` to compare failed.
        sums_failed: Option<Error>,
        path: PathBuf,
    }

    /// `SHA256SUMS`, read once: compared with the index and hashed.
    struct SumsRead {
        file: std::fs::File,
        len: u64,
        path: PathBuf,
        digest: Digest,
        same: bool,
    }

    let tmp_err = |e| Error::io(std::env::temp_dir(), e);
    // 3. The detached header.
    let hbytes = crate::fs::read_metadata_file(dir, names::HEADER)?;
    let (header, mut warnings) = check_header(
        hbytes.as_deref(),
        &env.payload_type,
        &env.signatures,
        digest,
        &manifest.issuer,
        signers,
    )?;

    // 4. Checksum files: digests signed in the manifest; SHA256SUMS against the index, read
    //    once for both (hashed while compared).
    let read_sums = || -> Result<Option<SumsRead>> {
        let Some((f, len, path)) =
            open_meta(dir, names::SUMS, Some(envelope_cap(limits.max_sums)))?
        else {
            return Ok(None);
        };
        // Hashed a buffer at a time as it is read (not per line compared).
        let mut r = BufReader::with_capacity(256 * 1024, HashEvery::new(At::new(&f, 0)));
        let same = index.sha256sums_equal(&mut r).at(&path)?;
        // The rest of a longer file, for its digest.
        std::io::copy(&mut r, &mut std::io::sink()).at(&path)?;
        let digest = r.into_inner().hasher.finish();
        Ok(Some(SumsRead {
            file: f,
            len,
            path,
            digest,
            same,
        }))
    };
    // `SHA256SUMS.dsse`, read once: hashed whole for its signed digest while its envelope is
    // read, the decoded payload compared with `SHA256SUMS` byte for byte (not hashed).
    let read_sums_env = || -> Result<Option<SumsEnvRead>> {
        let cap = envelope_cap(limits.max_sums);
        let Some((f, _, path)) = open_meta(dir, names::SUMS_DSSE, Some(cap))? else {
            return Ok(None);
        };
        let (sums_file, sums_path) = match open_meta(dir, names::SUMS, Some(cap))? {
            Some((f, _, p)) => (Some(f), p),
            None => (None, dir.join(names::SUMS)),
        };
        let sums_reader: Box<dyn std::io::BufRead + '_> = match &sums_file {
            Some(f) => Box::new(BufReader::with_capacity(256 * 1024, At::new(f, 0))),
            None => Box::new(std::io::empty()),
        };
        let mut same = SameAs::new(sums_reader);
        let mut raw = HashEvery::new(f);
        let env = stella_dsse::stream::read_envelope(&mut raw, &mut same, cap);
        let env = match env {
            Err(stella_dsse::stream::StreamError::Io(e)) if raw.failed => {
                return Err(Error::io(&path, e))
            }
            env => env,
        };
        // The rest of the file (after the envelope, or after a refused part), for its digest.
        std::io::copy(&mut raw, &mut std::io::sink()).at(&path)?;
        let equal = sums_file.is_some() && same.finish();
        Ok(Some(SumsEnvRead {
            digest: raw.hasher.finish(),
            len: raw.read,
            env,
            same: equal,
            sums_failed: same.failed.map(|e| Error::io(&sums_path, e)),
            path,
        }))
    };
    let mut sums = None;
    let mut sums_env = None;
    check_signed_checksums(manifest, |path| {
        if path == names::SUMS {
            sums = read_sums()?;
            return Ok(sums.as_ref().map(|s| (s.digest, s.len)));
        }
        if path == names::SUMS_DSSE {
            sums_env = read_sums_env()?;
            return Ok(sums_env.as_ref().map(|s| (s.digest, s.len)));
        }
        match open_meta(dir, path, Some(envelope_cap(limits.max_sums)))? {
            Some((mut f, _, p)) => hash_all(&mut f, &p).map(Some),
            None => Ok(None),
        }
    })?;
    let sums = match sums {
        Some(s) => s,
        None => read_sums()?.ok_or_else(|| missing_sums(names::SUMS))?,
    };
    if sums.len > limits.max_sums {
        return Err(crate::streamed::too_large(
            names::SUMS,
            sums.len,
            limits.max_sums,
        ));
    }
    if !sums.same {
        return Err(sums_differ());
    }
    let (sums_file, sums_len, sums_path) = (&sums.file, &sums.len, &sums.path);
    // `SHA256SUMS.dsse`, then `SHA256SUMS.sig` (each verified by a SHA-512 pass over the open
    // `SHA256SUMS`): the second is checked on another thread at the same time, its verdict
    // taken after every check of the first, as in sequence (a failure of the first wins and
    // stops the second).
    let dsse_failed = Verdict::new();
    let check_dsse = || -> Result<()> {
        let sums_env = match sums_env {
            Some(s) => s,
            None => read_sums_env()?.ok_or_else(|| missing_sums(names::SUMS_DSSE))?,
        };
        let same_as_sums = sums_env.same;
        let sums_env_failed = sums_env.sums_failed;
        let sums_env = sums_env.env.map_err(|e| match e {
            stella_dsse::stream::StreamError::Io(e) => Error::io(&sums_env.path, e),
            e => sums_dsse_refused(e),
        })?;
        if let Some(e) = sums_env_failed {
            return Err(e);
        }
        if !same_as_sums
            || sums_env.payload_len != *sums_len
            || sums_env.payload_type != crate::SUMS_PAYLOAD_TYPE
        {
            return Err(sums_dsse_not_sums());
        }
        stella_keys::verify_envelope_stream(
            &sums_env.payload_type,
            &sums_env.signatures,
            &mut Prefixed {
                prefix: stella_dsse::stream::pae_prefix(&sums_env.payload_type, *sums_len),
                body: At::new(sums_file, 0),
            },
            opts.keyring,
            &sums_policy(opts),
        )
        .map_err(sums_dsse_refused)?;
        Ok(())
    };
    let check_sig = || -> Result<()> {
        let signer_keys = keys_of(opts.keyring, signers);
        let sig = crate::fs::read_metadata_file(dir, names::SUMS_SIG)?
            .ok_or_else(|| missing_sums(names::SUMS_SIG))?;
        let raw = sums_sig(&sig)?;
        let mut raw_sums = Prefixed {
            prefix: Vec::new(),
            body: Stoppable::new(At::new(sums_file, 0), &dsse_failed),
        };
        let mut v = stella_keys::stream::StreamVerifier::new(&mut raw_sums);
        for k in &signer_keys {
            if v.verify(k, &raw).at(sums_path)? {
                return Ok(());
            }
        }
        Err(sums_sig_does_not_verify())
    };
    std::thread::scope(|s| {
        let sig = s.spawn(check_sig);
        let dsse = check_dsse();
        if dsse.is_err() {
            dsse_failed.settle(false);
        }
        let sig = sig
            .join()
            .unwrap_or_else(|_| Err(Error::input("a verifying thread panicked")));
        dsse.and(sig)
    })?;

    // 5. public-key.pem: only keys that signed.
    if let Some(pem_bytes) = crate::fs::read_metadata_file(dir, names::PUBLIC_KEY)? {
        let mut v = stella_keys::stream::StreamVerifier::new(pae);
        for k in public_keys(&pem_bytes, env.signatures.len(), signers)? {
            let mut signed = false;
            for s in &env.signatures {
                if v.verify(&k, &s.sig).map_err(tmp_err)? {
                    signed = true;
                    break;
                }
            }
            if !signed {
                return Err(foreign_key(&k));
            }
        }
    }

    // 6. Time anchor and freshness.
    let anchor_bytes = crate::fs::read_metadata_file(dir, names::TIME_ANCHOR)?;
    // Stamped by its SHA-256: the manifest is not in memory (a token over another hash of
    // it is refused, naming that hash).
    let time = check_time(
        anchor_bytes.as_deref(),
        crate::anchor::Stamped::Sha256(digest),
        manifest,
        opts,
        &mut warnings,
    )?;
    Ok((header, warnings, time))
}

/// A folder verified except that some content files were only checked for presence and size:
/// a distinct type from [`VerifiedBundle`], which it becomes only once the caller has hashed
/// those files itself ([`PartlyHashedBundle::hashed_by_caller`]).
#[derive(Debug, Clone)]
pub struct PartlyHashedBundle {
    bundle: VerifiedBundle,
    deferred: BTreeSet<String>,
}

impl PartlyHashedBundle {
    /// The verified metadata (signature, header, checksum files, freshness all passed).
    pub fn meta(&self) -> &VerifiedMetadata {
        &self.bundle.meta
    }

    /// The content files whose digests are left to the caller.
    pub fn deferred(&self) -> &BTreeSet<String> {
        &self.deferred
    }

    /// The fully verified bundle, once the caller has hashed every
    /// [`deferred`](Self::deferred) file against the signed manifest (the `load` push does,
    /// before its first request).
    pub fn hashed_by_caller(self) -> VerifiedBundle {
        self.bundle
    }
}

/// [`verify_dir`], except that the content files named by `defer(manifest)` are only checked
/// for presence and size here: the caller promises to hash them itself before using them
/// (`mirror load` pushes image blobs, and the push hashes every blob before its first request).
pub(crate) fn verify_dir_deferring(
    dir: &Path,
    opts: &Options<'_>,
    defer: impl FnOnce(&Manifest) -> HashSet<String>,
    progress: &dyn Progress,
) -> Result<PartlyHashedBundle> {
    if !dir.is_dir() {
        return Err(Error::NotFound(dir.to_path_buf()));
    }
    // The metadata files (manifest, envelope, checksum files: ~0.6 KiB per content file) are
    // dropped before the content is hashed.
    let meta = read_dir_metadata(dir)?;
    let vm = CheckedBundle::from_metadata(&meta)?.verify(opts)?;
    drop(meta);
    let deferred = defer(&vm.manifest);
    let index = index_of(&vm.manifest)?;
    let content = crate::streamed::check_content_deferring(
        dir,
        vm.manifest.kind,
        &index,
        Some(&deferred),
        progress,
    )?;
    Ok(PartlyHashedBundle {
        bundle: VerifiedBundle::new(vm, content),
        deferred: deferred.into_iter().collect(),
    })
}

/// `verify-checksums`: every line of `SHA256SUMS` matches, and the folder holds nothing else
/// but metadata. No keys involved (that is `verify`'s job). A `SHA256SUMS` of any size and in
/// any line order, read as a stream (`crate::sums`).
pub fn verify_checksums(dir: &Path, progress: &dyn Progress) -> Result<(usize, u64)> {
    verify_checksums_with(dir, &crate::streamed::Limits::default(), progress)
}

/// [`verify_checksums`] with explicit [`crate::streamed::Limits`]: `SHA256SUMS` up to
/// `max_sums` bytes.
pub fn verify_checksums_with(
    dir: &Path,
    limits: &crate::streamed::Limits,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    crate::sums::verify_checksums(dir, limits.max_sums, progress)
}

/// The public keys of the keyring that signed the manifest (`SHA256SUMS.sig` must verify
/// under one of them).
fn keys_of<'k>(keyring: &'k Keyring, signers: &[VerifiedKey]) -> Vec<&'k stella_keys::PublicKey> {
    keyring
        .keys()
        .iter()
        .filter(|k| signers.iter().any(|s| &s.key_id == k.key.key_id()))
        .map(|k| &k.key)
        .collect()
}

/// The checksum files the manifest signs: there must be some, and each must be present
/// (`digest_of` gives its digest and size, `None` when missing) with the signed digest and size.
fn check_signed_checksums(
    manifest: &Manifest,
    mut digest_of: impl FnMut(&str) -> Result<Option<(Digest, u64)>>,
) -> Result<()> {
    if manifest.checksums.is_empty() {
        return Err(Error::checksums(
            Field::Manifest("checksums"),
            "the signed manifest lists no checksum files (sign it with `stella mirror sign`)",
        ));
    }
    for c in &manifest.checksums {
        let (d, n) = digest_of(&c.path)?.ok_or_else(|| missing_sums(&c.path))?;
        if d != c.sha256 || n != c.size {
            return Err(Error::checksums(
                Field::file(&c.path),
                format!("{} does not match the digest the manifest signs", c.path),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;
    use time::macros::datetime;

    fn anchor(at: OffsetDateTime, trusted: bool) -> crate::anchor::Anchor {
        crate::anchor::Anchor {
            time: at,
            source: "test".into(),
            tsa: "CN=TSA".into(),
            tsa_fingerprint: String::new(),
            policy: "1.2.3".into(),
            serial: "01".into(),
            token_digest: String::new(),
            chain: trusted.then(|| vec!["CN=TSA".to_string(), "CN=Root".to_string()]),
        }
    }

    /// The routes that check a folder against a manifest held in memory (`verify`, `load`'s
    /// deferring verification) give the report `check_files` gives for the same folder: the
    /// first ten problems (unlisted by path, then missing in manifest order) and all of them
    /// counted.
    #[test]
    fn in_memory_routes_report_as_check_files_reports() {
        let b = crate::testing::SignedBundle::new();
        let dir = b.bundle();
        let vm = CheckedBundle::from_metadata(&read_dir_metadata(&dir).expect("meta"))
            .and_then(|c| c.verify(&b.opts()))
            .expect("honest");
        let same_report = |what: &str| {
            let mut all = Vec::new();
            crate::fs::walk_each(&dir, &mut |rel| {
                if !names::is_metadata(rel) {
                    all.push(rel.to_string());
                }
                Ok(())
            })
            .expect("walk");
            let observed: BTreeMap<String, (u64, Digest)> = all
                .into_iter()
                .map(|p| {
                    let f = vm.manifest.file(&p);
                    (p, f.map_or((0, Digest::of(b"")), |f| (f.size, f.sha256)))
                })
                .collect();
            let want = check_files(&vm.manifest, &observed)
                .expect_err(what)
                .to_string();
            let progress = crate::hash::NoProgress;
            let verified = verify_dir(&dir, &b.opts(), &progress).expect_err(what);
            assert_eq!(verified.to_string(), want, "{what}: verify");
            let deferring = verify_dir_deferring(&dir, &b.opts(), |_| HashSet::new(), &progress)
                .expect_err(what);
            assert_eq!(deferring.to_string(), want, "{what}: deferring");
            want
        };
        std::fs::remove_file(dir.join("advisories/a.json")).expect("rm");
        std::fs::write(dir.join("advisories/zz.json"), b"x").expect("write");
        let few = same_report("two problems");
        assert!(few.contains("(2 problems)"), "{few}");
        for k in (0..14).rev() {
            std::fs::write(dir.join(format!("advisories/u{k:02}.json")), b"x").expect("write");
        }
        let many = same_report("sixteen problems");
        assert!(
            many.contains("u09.json") && !many.contains("u10.json"),
            "{many}"
        );
        assert!(many.ends_with("; and 6 more"), "{many}");
    }

    #[test]
    fn a_trusted_anchor_only_moves_a_clock_that_is_behind_it() {
        let local = datetime!(2026-01-01 00:00 UTC);
        let later = datetime!(2026-03-01 00:00 UTC);
        let earlier = datetime!(2025-12-01 00:00 UTC);
        assert_eq!(freshness_time(local, None), (local, TimeSource::LocalClock));
        // The clock is behind the trusted anchor: the anchor time wins.
        assert_eq!(
            freshness_time(local, Some(&anchor(later, true))),
            (later, TimeSource::TimeAnchor)
        );
        // The clock is ahead: it stays (an anchor never makes an old bundle look fresh).
        assert_eq!(
            freshness_time(local, Some(&anchor(earlier, true))),
            (local, TimeSource::LocalClock)
        );
        // An untrusted anchor changes nothing.
        assert_eq!(
            freshness_time(local, Some(&anchor(later, false))),
            (local, TimeSource::LocalClock)
        );
    }

    // The type boundary: structure before crypto (CheckedBundle), then verify.

    use crate::testing::SignedBundle;
    use crate::Stage;

    /// A keyring that does not trust the bundle's key.
    fn stranger() -> Keyring {
        use stella_keys::Signer as _;
        let k = stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).expect("key");
        Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
            k.public_key().clone(),
        )])
        .expect("keyring")
    }

    /// Both forms of a checked bundle over the folder `dir`, each verified with `opts`.
    fn both_forms(dir: &Path, opts: &Options<'_>) -> [Result<VerifiedMetadata>; 2] {
        let meta = read_dir_metadata(dir).expect("metadata");
        let limits = crate::streamed::Limits::default();
        let in_memory = CheckedBundle::from_metadata(&meta).expect("structure in memory");
        let streamed = CheckedBundle::read_streamed(dir, &limits).expect("structure streamed");
        for c in [&in_memory, &streamed] {
            assert_eq!(c.payload_type(), crate::PAYLOAD_TYPE);
            assert_eq!(c.signature_count(), 1);
        }
        [in_memory.verify(opts), streamed.verify(opts)]
    }

    #[test]
    fn an_honest_bundle_checks_then_verifies_in_both_forms() {
        let b = SignedBundle::new();
        let json = std::fs::read(b.bundle().join(names::MANIFEST)).expect("manifest.json");
        let signed = Manifest::from_json(&json).expect("manifest");
        let [in_memory, streamed] = both_forms(&b.bundle(), &b.opts());
        let (in_memory, streamed) = (in_memory.expect("verifies"), streamed.expect("verifies"));
        for vm in [&in_memory, &streamed] {
            assert_eq!(vm.manifest_digest, Digest::of(&json));
            assert_eq!(vm.manifest.issuer, signed.issuer);
            assert_eq!(vm.signers.len(), 1);
        }
        // The streamed form keeps the file list as an index, not in the manifest.
        assert_eq!(in_memory.manifest.files.len(), signed.files.len());
    }

    #[test]
    fn a_bundle_signed_by_an_untrusted_key_is_checked_but_refused_at_the_envelope() {
        let b = SignedBundle::new();
        let ring = stranger();
        let opts = Options {
            keyring: &ring,
            ..b.opts()
        };
        for r in both_forms(&b.bundle(), &opts) {
            let e = r.expect_err("an untrusted signer");
            assert_eq!(e.stage(), Some(Stage::Envelope), "{e}");
            assert_eq!(e.field(), Some(Field::file(names::ENVELOPE)), "{e}");
        }
    }

    #[test]
    fn the_signature_is_judged_before_the_header() {
        // Two faults, the usual forgery: an untrusted signer and a header naming another
        // payload. Authentication comes first, so the signature is what is reported.
        let b = SignedBundle::new();
        let dir = b.bundle();
        let hpath = dir.join(names::HEADER);
        let mut header: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&hpath).expect("header")).expect("json");
        header["payloadSha256"] = serde_json::Value::String("00".repeat(32));
        std::fs::write(&hpath, serde_json::to_vec(&header).expect("json")).expect("write");
        // With the right key, the header is the fault.
        for r in both_forms(&dir, &b.opts()) {
            let e = r.expect_err("a header naming another payload");
            assert_eq!(e.stage(), Some(Stage::Header), "{e}");
        }
        let ring = stranger();
        let opts = Options {
            keyring: &ring,
            ..b.opts()
        };
        for r in both_forms(&dir, &opts) {
            let e = r.expect_err("two faults");
            assert_eq!(e.stage(), Some(Stage::Envelope), "{e}");
        }
    }

    #[test]
    fn structure_faults_are_refused_before_any_key_is_consulted() {
        let b = SignedBundle::new();
        let dir = b.bundle();
        let limits = crate::streamed::Limits::default();
        let epath = dir.join(names::ENVELOPE);
        let honest = std::fs::read(&epath).expect("envelope");

        // Another payload type.
        let mut env: serde_json::Value = serde_json::from_slice(&honest).expect("json");
        env["payloadType"] = serde_json::Value::String("text/plain".into());
        std::fs::write(&epath, serde_json::to_vec(&env).expect("json")).expect("write");
        let meta = read_dir_metadata(&dir).expect("metadata");
        for e in [
            CheckedBundle::from_metadata(&meta).expect_err("payload type"),
            CheckedBundle::read_streamed(&dir, &limits).expect_err("payload type"),
        ] {
            assert_eq!(e.stage(), Some(Stage::Envelope), "{e}");
            assert!(
                e.to_string().contains("not a mirror bundle manifest"),
                "{e}"
            );
        }

        // Not an envelope at all.
        std::fs::write(&epath, b"{\"payload\": 1}").expect("write");
        let meta = read_dir_metadata(&dir).expect("metadata");
        for e in [
            CheckedBundle::from_metadata(&meta).expect_err("malformed"),
            CheckedBundle::read_streamed(&dir, &limits).expect_err("malformed"),
        ] {
            assert_eq!(e.stage(), Some(Stage::Envelope), "{e}");
            assert_eq!(e.field(), Some(Field::file(names::ENVELOPE)), "{e}");
        }

        // No envelope: unsigned.
        std::fs::remove_file(&epath).expect("remove");
        let meta = read_dir_metadata(&dir).expect("metadata");
        for e in [
            CheckedBundle::from_metadata(&meta).expect_err("unsigned"),
            CheckedBundle::read_streamed(&dir, &limits).expect_err("unsigned"),
        ] {
            assert!(e.to_string().contains("not signed"), "{e}");
        }
    }
}
