//! Image signatures and the release-integrity verdict (SPEC §4).
//!
//! Signing ([`sign_image`]) writes what cosign v3 writes for `cosign sign`: an in-toto
//! statement with predicate type `https://sigstore.dev/cosign/sign/v1` and an empty predicate,
//! whose subject is the image manifest digest, signed as a DSSE envelope inside a Sigstore
//! bundle v0.3, pushed as an OCI 1.1 referrer (artifactType
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, `subject` = the image manifest).
//!
//! Verifying ([`verify_image`], [`verify_image_release`]) fails closed. The image must resolve
//! (digest-checked); every signature candidate — bundles from the referrers API or the tag
//! schema, and cosign's legacy `sha256-<hex>.sig` signatures — is checked on its own: the
//! artifact manifest must hash to its listed digest and name the image as `subject`; the
//! bundle must hash to its layer digest, carry a DSSE in-toto statement signed by an
//! eligible keyring key (purpose `release` for the release check, inside its validity window,
//! not revoked), with the image-signature predicate type and the image digest among its
//! subjects. The image is trusted only if at least one candidate passes all of that. A
//! registry we cannot reach or that refuses us is an error, never "no signatures".
//!
//! Keyless (certificate) bundles, as `cosign sign` makes without a key, are verified by
//! `stella-sigstore` against the keyring's `[[identities]]` entries (issuer + SAN, eligible
//! for the purpose, each against its trusted root; [`check_keyless_bundle`]): every Sigstore
//! check must pass (certificate chain to a Fulcio CA, SCT, transparency log entry, verified
//! signing time, identity), then the same statement rules as for keys. Key entries never
//! accept a keyless bundle and identity entries never accept a key-signed one.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use stella_dsse::{Bundle, Statement, Subject, VerificationMaterial, PAYLOAD_TYPE_IN_TOTO};
use stella_keys::{Keyring, Policy, Purpose, Signer};
use time::OffsetDateTime;

use crate::client::Client;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::media::{Descriptor, SIGSTORE_BUNDLE_V03};
use crate::reference::Reference;
use crate::referrers::{
    attach_artifact, cosign_signature_manifest, list_referrers, Attached, ReferrerSource,
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING,
};

/// cosign v3's image-signature predicate type (what `stella sign image` signs).
pub const COSIGN_SIGN_V1: &str = "https://sigstore.dev/cosign/sign/v1";
/// `critical.type` of cosign's legacy simple-signing payload.
pub(crate) const COSIGN_LEGACY_TYPE: &str = "cosign container image signature";
pub(crate) const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
pub(crate) const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// Bundle media types we read as signature referrers.
const BUNDLE_TYPES: &[&str] = &[
    SIGSTORE_BUNDLE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];
/// At most this many candidates are examined (a registry could list thousands).
const MAX_CANDIDATES: usize = 64;
const MAX_SIGNATURE_BLOB: u64 = 4 * 1024 * 1024;

/// What [`sign_image`] pushed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedImage {
    /// The image, pinned to the signed digest.
    pub image: String,
    pub digest: Digest,
    pub media_type: String,
    /// The referrer (artifact manifest) holding the bundle.
    pub referrer: Digest,
    pub key_id: String,
    pub predicate_type: String,
    /// The `sha256-<hex>` fallback index was updated (registry without referrers API).
    pub fallback_index_updated: bool,
    #[serde(skip)]
    pub bundle: Vec<u8>,
}

/// Sign the image `image` (tag or digest) and attach the bundle as a referrer.
pub async fn sign_image(
    client: &Client,
    image: &Reference,
    signer: &dyn Signer,
) -> Result<SignedImage> {
    let manifest = client.fetch_manifest(image).await?;
    let subject = manifest.descriptor();
    let repo = image.clone().without_tag();
    let statement = Statement::new(
        vec![Subject::sha256(repo.name(), subject.digest.hex())
            .map_err(|e| Error::Sign(e.to_string()))?],
        COSIGN_SIGN_V1,
        json!({}),
    )
    .map_err(|e| Error::Sign(e.to_string()))?;
    let envelope =
        stella_keys::attest(&statement, &[signer]).map_err(|e| Error::Sign(e.to_string()))?;
    let bundle = stella_keys::to_bundle(envelope, signer)
        .map_err(|e| Error::Sign(e.to_string()))?
        .to_json();
    let created = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let attached = attach_sigstore_bundle(client, &repo, &subject, &bundle, Some(&created)).await?;
    Ok(SignedImage {
        image: repo.pinned(subject.digest).to_string(),
        digest: subject.digest,
        media_type: subject.media_type,
        referrer: attached.manifest.digest,
        key_id: signer.key_id().to_string(),
        predicate_type: COSIGN_SIGN_V1.to_string(),
        fallback_index_updated: attached.fallback_updated,
        bundle,
    })
}

/// What a verification requires of signing keys.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// The purpose keys must be trusted for (`None`: any).
    pub purpose: Option<Purpose>,
    /// When keys must be valid (normally now).
    pub at: OffsetDateTime,
}

impl ReleasePolicy {
    /// Keys trusted for `release`, valid now.
    pub fn release() -> Self {
        ReleasePolicy {
            purpose: Some(Purpose::Release),
            at: OffsetDateTime::now_utc(),
        }
    }

    /// Any purpose, valid now.
    pub fn any_purpose() -> Self {
        ReleasePolicy {
            purpose: None,
            at: OffsetDateTime::now_utc(),
        }
    }
}

/// One signature candidate and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckedSignature {
    /// The referrer manifest (or, for legacy signatures, the `.sig` manifest).
    pub referrer: Digest,
    pub source: ReferrerSource,
    pub artifact_type: Option<String>,
    pub trusted: bool,
    pub signer: Option<String>,
    pub keyid: Option<String>,
    pub reason: String,
}

/// The trust verdict for an image (the shape of SPEC §4's referrers verdict, plus detail).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub reference: String,
    /// The image manifest digest the verdict is about (`None` if it did not resolve).
    pub digest: Option<Digest>,
    pub trusted: bool,
    /// Keyring id of the key that signed (trusted verdicts).
    pub signer: Option<String>,
    pub keyid: Option<String>,
    pub artifact_type: Option<String>,
    pub reason: String,
    /// Where the trusted signature was found.
    pub source: Option<ReferrerSource>,
    /// Every candidate examined.
    pub signatures: Vec<CheckedSignature>,
}

impl Verdict {
    fn untrusted(reference: &Reference, digest: Option<Digest>, reason: String) -> Self {
        Verdict {
            reference: reference.to_string(),
            digest,
            trusted: false,
            signer: None,
            keyid: None,
            artifact_type: None,
            reason,
            source: None,
            signatures: Vec::new(),
        }
    }
}

/// The release-integrity check the Signer service runs on scanner images: [`verify_image`]
/// with keys trusted for purpose `release`.
pub async fn verify_image_release(
    client: &Client,
    image: &Reference,
    keyring: &Keyring,
) -> Result<Verdict> {
    verify_image(client, image, keyring, &ReleasePolicy::release()).await
}

/// Verify that `image` carries a signature by an eligible key of `keyring`.
///
/// `Ok` with `trusted: false` and a reason when no signature qualifies (including an image
/// that does not exist, or a registry serving bytes that do not match their digests); `Err`
/// only when the answer cannot be known (registry unreachable, authentication refused).
pub async fn verify_image(
    client: &Client,
    image: &Reference,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> Result<Verdict> {
    if keyring.is_empty() {
        return Err(Error::Input("the keyring holds no keys".into()));
    }
    let repo = image.clone().without_tag();
    let manifest = match client.fetch_manifest(image).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound) => {
            return Ok(Verdict::untrusted(
                image,
                None,
                format!("image not found: {e}"),
            ))
        }
        Err(e) if matches!(e.kind(), ErrorKind::Integrity) => {
            return Ok(Verdict::untrusted(
                image,
                image.digest().copied(),
                format!("the registry's answer for the image failed verification: {e}"),
            ))
        }
        Err(e) => return Err(e),
    };
    let digest = manifest.digest;

    let mut checked = Vec::new();
    let referrers = match list_referrers(client, &repo, &digest, None).await {
        Ok(r) => Some(r),
        Err(e) if e.kind() == ErrorKind::Integrity => {
            checked.push(CheckedSignature {
                referrer: digest,
                source: ReferrerSource::TagSchema,
                artifact_type: None,
                trusted: false,
                signer: None,
                keyid: None,
                reason: e.to_string(),
            });
            None
        }
        Err(e) => return Err(e),
    };
    let mut listed_source = ReferrerSource::TagSchema;
    if let Some(r) = referrers {
        listed_source = r.source;
        for desc in r
            .descriptors
            .iter()
            .filter(|d| {
                d.artifact_type
                    .as_deref()
                    .is_some_and(|a| BUNDLE_TYPES.contains(&a))
            })
            .take(MAX_CANDIDATES)
        {
            checked
                .push(check_bundle(client, &repo, &digest, desc, r.source, keyring, policy).await?);
        }
    }
    match cosign_signature_manifest(client, &repo, &digest).await {
        Ok(Some(sig)) => {
            checked.extend(check_legacy(client, &repo, &digest, &sig, keyring, policy).await?)
        }
        Ok(None) => {}
        Err(e) if e.kind() == ErrorKind::Integrity => checked.push(CheckedSignature {
            referrer: digest,
            source: ReferrerSource::CosignTag,
            artifact_type: None,
            trusted: false,
            signer: None,
            keyid: None,
            reason: e.to_string(),
        }),
        Err(e) => return Err(e),
    }

    let mut v = Verdict::untrusted(image, Some(digest), String::new());
    if let Some(ok) = checked.iter().find(|c| c.trusted) {
        v.trusted = true;
        v.signer = ok.signer.clone();
        v.keyid = ok.keyid.clone();
        v.artifact_type = ok.artifact_type.clone();
        v.source = Some(ok.source);
        v.reason = format!(
            "signed by {} ({}), found through the {}",
            ok.signer.as_deref().unwrap_or("?"),
            ok.keyid.as_deref().unwrap_or("?"),
            ok.source
        );
    } else if checked.is_empty() {
        v.reason = format!(
            "no signature found (looked in the {listed_source} and the cosign tag {}.sig)",
            digest.tag_form()
        );
    } else {
        v.artifact_type = checked.first().and_then(|c| c.artifact_type.clone());
        v.reason = format!(
            "no trusted signature: {}",
            checked
                .iter()
                .map(|c| format!("{} ({}): {}", c.referrer, c.source, c.reason))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    v.signatures = checked;
    Ok(v)
}

async fn check_bundle(
    client: &Client,
    repo: &Reference,
    image: &Digest,
    desc: &Descriptor,
    source: ReferrerSource,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> Result<CheckedSignature> {
    let mut out = CheckedSignature {
        referrer: desc.digest,
        source,
        artifact_type: desc.artifact_type.clone(),
        trusted: false,
        signer: None,
        keyid: None,
        reason: String::new(),
    };
    match bundle_outcome(client, repo, image, desc, keyring, policy).await? {
        Ok((id, keyid)) => {
            out.trusted = true;
            out.reason = "signature verified".into();
            out.signer = Some(id);
            out.keyid = Some(keyid);
        }
        Err(refusal) => out.reason = refusal.to_string(),
    }
    Ok(out)
}

/// `Ok(Ok((keyring id, key id)))` when the candidate is a trusted signature of `image`,
/// `Ok(Err(refusal))` when it is not, `Err` when the registry cannot be asked.
async fn bundle_outcome(
    client: &Client,
    repo: &Reference,
    image: &Digest,
    desc: &Descriptor,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> Result<std::result::Result<(String, String), SignatureRefusal>> {
    let manifest = match client.fetch_manifest(&repo.pinned(desc.digest)).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
            return Ok(Err(SignatureRefusal::Fetch(e)))
        }
        Err(e) => return Err(e),
    };
    let what = format!("referrer {}", desc.digest);
    match manifest.subject(&what) {
        Ok(Some(s)) if s.digest == *image => {}
        Ok(Some(s)) => return Ok(Err(SignatureRefusal::OtherSubject(s.digest))),
        Ok(None) => return Ok(Err(SignatureRefusal::NoSubject)),
        Err(e) => return Ok(Err(SignatureRefusal::Manifest(e))),
    }
    let layers = match manifest.layers(&what) {
        Ok(l) => l,
        Err(e) => return Ok(Err(SignatureRefusal::Manifest(e))),
    };
    let bundles: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| BUNDLE_TYPES.contains(&l.media_type.as_str()))
        .collect();
    let [layer] = bundles.as_slice() else {
        return Ok(Err(SignatureRefusal::BundleLayers(bundles.len())));
    };
    let bytes = match client
        .fetch_blob_bytes(repo, layer, MAX_SIGNATURE_BLOB)
        .await
    {
        Ok(b) => b,
        Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
            return Ok(Err(SignatureRefusal::Fetch(e)))
        }
        Err(e) => return Err(e),
    };
    Ok(check_bundle_bytes(&bytes, image, keyring, policy))
}

/// Verify bundle bytes as a signature of `image`.
pub fn check_bundle_bytes(
    bytes: &[u8],
    image: &Digest,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> std::result::Result<(String, String), SignatureRefusal> {
    if let Ok(sb) = stella_sigstore::Bundle::from_json(bytes) {
        if !matches!(sb.material, stella_sigstore::Material::PublicKey { .. }) {
            return Ok(check_keyless_bundle(&sb, image, keyring, policy)?);
        }
    }
    let bundle = Bundle::from_json(bytes).map_err(SignatureRefusal::Bundle)?;
    if let VerificationMaterial::Certificate { .. } = bundle.material {
        return Err(SignatureRefusal::MalformedKeyless);
    }
    let mut p = Policy::new(1)
        .payload_type(PAYLOAD_TYPE_IN_TOTO)
        .at(policy.at);
    p.purpose = policy.purpose;
    let signers = stella_keys::verify_envelope(&bundle.envelope, keyring, &p)
        .map_err(SignatureRefusal::Envelope)?;
    let statement =
        Statement::from_json(&bundle.envelope.payload).map_err(SignatureRefusal::Statement)?;
    if statement.predicate_type != COSIGN_SIGN_V1 {
        return Err(SignatureRefusal::PredicateType(statement.predicate_type));
    }
    let hex = image.hex();
    if !statement.sha256_digests().any(|d| d == hex) {
        return Err(SignatureRefusal::OtherDigests(*image));
    }
    let first = signers.first().ok_or(SignatureRefusal::NoSigner)?;
    Ok((first.id.clone(), first.key_id.to_string()))
}

/// A keyless image signature: a Sigstore bundle with a certificate, accepted by an identity
/// entry of `keyring` eligible for `policy`; its DSSE statement must be an image signature
/// of `image`. Returns the entry id and the certificate key's id.
pub fn check_keyless_bundle(
    bundle: &stella_sigstore::Bundle,
    image: &Digest,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> std::result::Result<(String, String), KeylessRefusal> {
    let trust = stella_sigstore::IdentityTrust::from_keyring(keyring)?;
    if trust.is_empty() {
        return Err(KeylessRefusal::NoIdentities);
    }
    let stella_sigstore::Content::Dsse(env) = &bundle.content else {
        return Err(KeylessRefusal::MessageSignature);
    };
    let digest = hex_bytes(&image.hex()).ok_or(KeylessRefusal::ImageDigest)?;
    let m = trust
        .verify(
            bundle,
            stella_sigstore::Artifact::Digest {
                algorithm: stella_sigstore::HashAlgorithm::Sha256,
                digest: &digest,
            },
            policy.purpose,
            policy.at,
        )
        .map_err(KeylessRefusal::Bundle)?;
    let statement = Statement::from_json(&env.payload).map_err(KeylessRefusal::Statement)?;
    if statement.predicate_type != COSIGN_SIGN_V1 {
        return Err(KeylessRefusal::PredicateType(statement.predicate_type));
    }
    Ok((m.id, m.key.fingerprint()))
}

/// Why a signature candidate (a referrer's bundle or a legacy cosign signature) is not a
/// trusted signature of the image; its message is the candidate's `reason` in the verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureRefusal {
    /// The candidate's manifest or blob is missing or failed its digest check.
    #[error(transparent)]
    Fetch(Error),
    /// The candidate's manifest is malformed (its subject or layers).
    #[error(transparent)]
    Manifest(Error),
    #[error("its subject is {0}, not this image")]
    OtherSubject(Digest),
    #[error("it has no subject")]
    NoSubject,
    #[error("expected exactly one bundle layer, found {0}")]
    BundleLayers(usize),
    #[error(transparent)]
    Keyless(#[from] KeylessRefusal),
    #[error(transparent)]
    Bundle(stella_dsse::BundleError),
    #[error("certificate-based (keyless) bundle that is not a well-formed Sigstore bundle")]
    MalformedKeyless,
    #[error(transparent)]
    Envelope(stella_keys::VerifyError),
    #[error("signed payload is not an in-toto statement: {0}")]
    Statement(stella_dsse::StatementError),
    #[error("predicate type {0} is not an image signature ({COSIGN_SIGN_V1})")]
    PredicateType(String),
    #[error("the signed statement is about other digests, not {0}")]
    OtherDigests(Digest),
    #[error("no signer counted")]
    NoSigner,
    /// Legacy signatures: the simple-signing layer has no signature annotation.
    #[error("the layer has no signature annotation")]
    NoAnnotation,
    #[error("the signature annotation is not base64")]
    AnnotationNotBase64,
    /// A key verifies the signature but may not count for the policy.
    #[error("key {id:?}: {why}")]
    Ineligible {
        id: String,
        why: stella_keys::Ineligible,
    },
    #[error("no trusted key verifies the signature")]
    NoTrustedKey,
    #[error("signed payload is not JSON: {0}")]
    PayloadNotJson(serde_json::Error),
    #[error("signed payload type {0:?} is not an image signature")]
    PayloadType(String),
    #[error("the signed payload names {named:?}, not {image}")]
    OtherImage { named: String, image: Digest },
    #[error("the .sig manifest has no simple-signing layer")]
    NoSimpleSigningLayer,
}

/// Why a keyless (certificate) bundle is not a trusted image signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeylessRefusal {
    #[error(transparent)]
    Keyring(#[from] stella_sigstore::IdentityTrustError),
    #[error("certificate-based (keyless) bundle, and the keyring names no Sigstore identity ([[identities]])")]
    NoIdentities,
    #[error("a keyless image signature must be a DSSE in-toto statement, not a message signature")]
    MessageSignature,
    #[error("malformed image digest")]
    ImageDigest,
    #[error("keyless bundle: {0}")]
    Bundle(stella_sigstore::IdentityRefusal),
    #[error("signed payload is not an in-toto statement: {0}")]
    Statement(stella_dsse::StatementError),
    #[error("predicate type {0} is not an image signature ({COSIGN_SIGN_V1})")]
    PredicateType(String),
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Attach a Sigstore bundle made elsewhere (e.g. a keyless `cosign sign`) to `image` as an
/// OCI 1.1 referrer, the way [`sign_image`] attaches its own. Returns the referrer digest.
pub async fn attach_bundle(client: &Client, image: &Reference, bundle: &[u8]) -> Result<Digest> {
    let manifest = client.fetch_manifest(image).await?;
    let subject = manifest.descriptor();
    let repo = image.clone().without_tag();
    let attached = attach_sigstore_bundle(client, &repo, &subject, bundle, None).await?;
    Ok(attached.manifest.digest)
}

/// Attach `bundle` to `subject` in `repo` as an OCI 1.1 referrer of the Sigstore bundle type,
/// annotated as cosign annotates its bundles; `created` (RFC 3339) when we made the bundle.
async fn attach_sigstore_bundle(
    client: &Client,
    repo: &Reference,
    subject: &Descriptor,
    bundle: &[u8],
    created: Option<&str>,
) -> Result<Attached> {
    let mut annotations: BTreeMap<String, String> = [
        (BUNDLE_CONTENT_ANNOTATION, "dsse-envelope"),
        (BUNDLE_PREDICATE_ANNOTATION, COSIGN_SIGN_V1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(created) = created {
        annotations.insert(CREATED_ANNOTATION.to_string(), created.to_string());
    }
    attach_artifact(
        client,
        repo,
        subject,
        SIGSTORE_BUNDLE_V03,
        bundle,
        SIGSTORE_BUNDLE_V03,
        annotations,
    )
    .await
}

async fn check_legacy(
    client: &Client,
    repo: &Reference,
    image: &Digest,
    sig: &crate::media::Document,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> Result<Vec<CheckedSignature>> {
    let what = format!("cosign signature {}", sig.digest);
    let mut out = Vec::new();
    let layers = match sig.layers(&what) {
        Ok(l) => l,
        Err(e) => {
            out.push(legacy(sig.digest, false, None, e.to_string()));
            return Ok(out);
        }
    };
    for layer in layers
        .iter()
        .filter(|l| l.media_type == COSIGN_SIMPLESIGNING)
        .take(MAX_CANDIDATES)
    {
        let payload = match client
            .fetch_blob_bytes(repo, layer, MAX_SIGNATURE_BLOB)
            .await
        {
            Ok(b) => b,
            Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
                out.push(legacy(sig.digest, false, None, e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push(
            match check_legacy_payload(&payload, layer, image, keyring, policy) {
                Ok((id, keyid)) => legacy(
                    sig.digest,
                    true,
                    Some((id, keyid)),
                    "legacy cosign signature verified".into(),
                ),
                Err(refusal) => legacy(sig.digest, false, None, refusal.to_string()),
            },
        );
    }
    if out.is_empty() {
        let refusal = SignatureRefusal::NoSimpleSigningLayer;
        out.push(legacy(sig.digest, false, None, refusal.to_string()));
    }
    Ok(out)
}

fn legacy(
    referrer: Digest,
    trusted: bool,
    who: Option<(String, String)>,
    reason: String,
) -> CheckedSignature {
    let (signer, keyid) = match who {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    CheckedSignature {
        referrer,
        source: ReferrerSource::CosignTag,
        artifact_type: Some(COSIGN_SIMPLESIGNING.to_string()),
        trusted,
        signer,
        keyid,
        reason,
    }
}

/// A legacy cosign signature: the annotation signs the payload bytes (cosign's
/// `sign-blob` form); the payload must name the image digest.
fn check_legacy_payload(
    payload: &[u8],
    layer: &Descriptor,
    image: &Digest,
    keyring: &Keyring,
    policy: &ReleasePolicy,
) -> std::result::Result<(String, String), SignatureRefusal> {
    let sig_b64 = layer
        .annotations
        .get(COSIGN_SIGNATURE_ANNOTATION)
        .ok_or(SignatureRefusal::NoAnnotation)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .map_err(|_| SignatureRefusal::AnnotationNotBase64)?;
    let mut refused = None;
    let mut signer = None;
    for tk in keyring.keys() {
        if !tk.key.verify(payload, &sig) {
            continue;
        }
        match tk.check(policy.purpose, policy.at) {
            Ok(()) => {
                signer = Some((tk.id.clone(), tk.key.key_id().to_string()));
                break;
            }
            Err(why) => {
                refused = Some(SignatureRefusal::Ineligible {
                    id: tk.id.clone(),
                    why,
                })
            }
        }
    }
    let Some(who) = signer else {
        return Err(refused.unwrap_or(SignatureRefusal::NoTrustedKey));
    };
    let v: Value = serde_json::from_slice(payload).map_err(SignatureRefusal::PayloadNotJson)?;
    let ty = v["critical"]["type"].as_str().unwrap_or_default();
    if ty != COSIGN_LEGACY_TYPE && ty != COSIGN_SIGN_V1 {
        return Err(SignatureRefusal::PayloadType(ty.to_string()));
    }
    let named = v["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if named != image.to_string() {
        return Err(SignatureRefusal::OtherImage {
            named: named.to_string(),
            image: *image,
        });
    }
    Ok(who)
}

/// cosign's legacy simple-signing payload for `image` (used to write legacy signatures).
pub(crate) fn simple_signing_payload(image: &Reference, digest: &Digest) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": image.name()},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": COSIGN_LEGACY_TYPE,
        },
        "optional": null,
    });
    v.to_string().into_bytes()
}

/// Write a legacy cosign signature (`sha256-<hex>.sig`, simple-signing payload signed in
/// cosign's `sign-blob` form), appended to any signatures already there. For verifiers that
/// predate referrers; `stella sign image` writes bundles.
pub async fn sign_image_legacy(
    client: &Client,
    image: &Reference,
    signer: &dyn Signer,
) -> Result<Digest> {
    let manifest = client.fetch_manifest(image).await?;
    let repo = image.clone().without_tag();
    let payload = simple_signing_payload(&repo, &manifest.digest);
    let sig = signer
        .sign(&payload)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let payload_d = client.push_bytes(&repo, &payload).await?;
    let mut layer = Descriptor::new(COSIGN_SIMPLESIGNING, payload_d, payload.len() as u64);
    layer.annotations.insert(
        COSIGN_SIGNATURE_ANNOTATION.to_string(),
        base64::engine::general_purpose::STANDARD.encode(&sig),
    );
    let mut layers: Vec<Value> =
        match cosign_signature_manifest(client, &repo, &manifest.digest).await? {
            Some(old) => old.json["layers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|l| l["digest"].as_str() != Some(payload_d.to_string().as_str()))
                .collect(),
            None => Vec::new(),
        };
    layers.push(layer.to_value());
    let diff_ids: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = json!({
        "architecture": "", "os": "", "config": {},
        "created": "0001-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = stella_dsse::jcs::to_vec(&config).map_err(|e| Error::Sign(e.to_string()))?;
    let config_d = client.push_bytes(&repo, &config_bytes).await?;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": crate::media::OCI_MANIFEST,
        "config": {"mediaType": crate::media::OCI_CONFIG, "digest": config_d.to_string(), "size": config_bytes.len()},
        "layers": layers,
    });
    let bytes = stella_dsse::jcs::to_vec(&m).map_err(|e| Error::Sign(e.to_string()))?;
    let tag = repo.with_tag(&format!("{}.sig", manifest.digest.tag_form()))?;
    let (d, _) = client
        .put_manifest(&tag, &bytes, crate::media::OCI_MANIFEST)
        .await?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use stella_keys::{Algorithm, FileKey, TrustedKey};

    use super::*;

    fn layer(annotation: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(COSIGN_SIMPLESIGNING, Digest::of(b"payload"), 7);
        if let Some(a) = annotation {
            d.annotations
                .insert(COSIGN_SIGNATURE_ANNOTATION.to_string(), a.to_string());
        }
        d
    }

    /// Each refusal of a legacy cosign signature is its own variant, with the message the
    /// verdict's `reason` has always carried; the good signature is accepted.
    #[test]
    fn legacy_payload_refusals_are_typed() {
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let repo = Reference::parse("registry.test/app").unwrap();
        let image = Digest::of(b"image manifest");
        let other = Digest::of(b"another manifest");
        let mut tk = TrustedKey::unrestricted(key.public_key().clone());
        tk.id = "release-key".into();
        let ring = Keyring::new(vec![tk.clone()]).unwrap();
        let policy = ReleasePolicy::release();
        let check = |payload: &[u8], annotation: Option<&str>, ring: &Keyring| {
            check_legacy_payload(payload, &layer(annotation), &image, ring, &policy)
        };
        let signed = |payload: &[u8]| STANDARD.encode(key.sign(payload).unwrap());

        let good = simple_signing_payload(&repo, &image);
        let (id, _) = check(&good, Some(&signed(&good)), &ring).unwrap();
        assert_eq!(id, "release-key");

        let e = check(&good, None, &ring).unwrap_err();
        assert!(matches!(e, SignatureRefusal::NoAnnotation), "{e}");
        assert_eq!(e.to_string(), "the layer has no signature annotation");
        let e = check(&good, Some("!!"), &ring).unwrap_err();
        assert!(matches!(e, SignatureRefusal::AnnotationNotBase64), "{e}");
        let stranger = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let foreign = STANDARD.encode(stranger.sign(&good).unwrap());
        let e = check(&good, Some(&foreign), &ring).unwrap_err();
        assert!(matches!(e, SignatureRefusal::NoTrustedKey), "{e}");
        tk.revoked = true;
        let revoked = Keyring::new(vec![tk]).unwrap();
        let e = check(&good, Some(&signed(&good)), &revoked).unwrap_err();
        assert!(
            matches!(&e, SignatureRefusal::Ineligible { id, .. } if id == "release-key"),
            "{e}"
        );
        assert!(e.to_string().starts_with("key \"release-key\": "), "{e}");
        let e = check(b"not json", Some(&signed(b"not json")), &ring).unwrap_err();
        assert!(matches!(e, SignatureRefusal::PayloadNotJson(_)), "{e}");
        let wrong_type = br#"{"critical":{"type":"something else"}}"#;
        let e = check(wrong_type, Some(&signed(wrong_type)), &ring).unwrap_err();
        assert!(matches!(&e, SignatureRefusal::PayloadType(t) if t == "something else"));
        let elsewhere = simple_signing_payload(&repo, &other);
        let e = check(&elsewhere, Some(&signed(&elsewhere)), &ring).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the signed payload names {:?}, not {image}",
                other.to_string()
            )
        );
    }
}
