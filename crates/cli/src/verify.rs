//! `stella verify` (envelopes and bundles) and `stella verify blob`.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use stella_dsse::{Bundle, Envelope, Statement, VerificationMaterial, PAYLOAD_TYPE_IN_TOTO};
use stella_keys::{DevKeys, KeyRef, Keyring, Policy, Purpose, TrustedKey};

use crate::exit::{fail, USAGE, VERIFY_FAILED};
use crate::io;
use crate::registry::{image_ref, oci_error, RegistryArgs};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct VerifyArgs {
    #[command(subcommand)]
    blob: Option<VerifySub>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    sigstore: crate::sigstore::SigstoreArgs,
    /// Distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Output format: text or json (json prints the verified statement and signers).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Envelope or bundle to verify (`-` for stdin).
    file: Option<String>,
}

#[derive(Subcommand)]
enum VerifySub {
    /// Verify a raw signature over a blob (cosign verify-blob form).
    Blob(crate::blob::VerifyBlobArgs),
    /// Verify an image's signatures in its registry (referrers, tag-schema and cosign `.sig`
    /// fallbacks); prints the verdict: trusted or not, by whom, and why.
    Image(VerifyImageArgs),
}

#[derive(Args)]
pub(crate) struct VerifyImageArgs {
    /// Image reference: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:HEX.
    image: String,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Output format: text or json (the verdict with every signature examined).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

fn verify_image(a: VerifyImageArgs, dev: DevKeys) -> Result<()> {
    let json_out = a.output == "json";
    let image = a.image.clone();
    let mut printed = false;
    match verify_image_inner(a, dev, &mut printed) {
        // The verdict (trusted: false) is already on stdout; other failures print one here.
        Err(e) if json_out && !printed => Err(crate::exit::print_json_failure(
            e,
            crate::view::fields(&ImageFailureView {
                image: &image,
                trusted: false,
            }),
        )),
        r => r,
    }
}

fn verify_image_inner(a: VerifyImageArgs, dev: DevKeys, printed: &mut bool) -> Result<()> {
    let image = image_ref(&a.image)?;
    // A keyring must hold keys trusted for `release` unless --purpose says otherwise;
    // `--key` files are trusted for every purpose.
    let purpose = match a.trust.purpose()? {
        Some(p) => Some(p),
        None => Some(Purpose::Release),
    };
    let ring = a.trust.keyring(dev)?;
    let policy = stella_oci::ReleasePolicy {
        purpose,
        at: time::OffsetDateTime::now_utc(),
    };
    let client = a.registry.client()?;
    let verdict = client
        .verify_image(&image, &ring, &policy)
        .map_err(oci_error)?;
    *printed = true;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        let pinned = match verdict.digest {
            Some(d) => image.pinned(d).to_string(),
            None => image.to_string(),
        };
        if verdict.trusted {
            println!("trusted: {pinned}");
            println!(
                "signer: {} ({})",
                verdict.signer.as_deref().unwrap_or("?"),
                verdict.keyid.as_deref().unwrap_or("?")
            );
        } else {
            println!("NOT trusted: {pinned}");
        }
        if let Some(t) = &verdict.artifact_type {
            println!("artifactType: {t}");
        }
        println!("reason: {}", verdict.reason);
    }
    if !verdict.trusted {
        return Err(fail(
            VERIFY_FAILED,
            format!("{} is not trusted: {}", image, verdict.reason),
        ));
    }
    Ok(())
}

/// Trust roots: explicit keys or a keyring, and the purpose keys must hold.
#[derive(Args)]
pub(crate) struct TrustArgs {
    /// Trusted public key (PEM) or key reference; repeatable.
    #[arg(long, short = 'k', conflicts_with = "keyring")]
    pub(crate) key: Vec<String>,
    /// Keyring: a TOML file or a directory of keys (see docs/keys.md).
    #[arg(long)]
    pub(crate) keyring: Option<std::path::PathBuf>,
    /// Purpose the signing keys must be trusted for (keyring only): mirror-bundle, attestation, release.
    #[arg(long)]
    pub(crate) purpose: Option<String>,
    /// Signed key revocation list (`stella key revoke`), checked against the trusted keys: a
    /// listed key is refused (see docs/keys.md, "Rotation and revocation").
    #[arg(long, value_name = "FILE")]
    pub(crate) revocations: Option<std::path::PathBuf>,
}

impl TrustArgs {
    /// The trusted keys with the revocation list (if any) applied. No verified signing time
    /// is known on these paths, so a listed key is refused whatever its revocation time.
    pub(crate) fn keyring(&self, dev: DevKeys) -> Result<Keyring> {
        let ring = self.keyring_unrevoked(dev)?;
        match &self.revocations {
            None => Ok(ring),
            Some(path) => {
                let list =
                    stella_keys::revocation::RevocationList::load(path, &ring).map_err(|e| {
                        let mut msg = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            msg.push_str(&format!(": {s}"));
                            src = s.source();
                        }
                        fail(VERIFY_FAILED, msg)
                    })?;
                for k in ring.keys() {
                    if let Some(r) = list.get(k.key.key_id()) {
                        eprintln!(
                            "warning: key {:?} ({}) is revoked since {} ({})",
                            k.id,
                            k.key.key_id(),
                            r.revoked_at,
                            r.reason
                        );
                    }
                }
                Ok(list.apply(&ring, None))
            }
        }
    }

    fn keyring_unrevoked(&self, dev: DevKeys) -> Result<Keyring> {
        if let Some(path) = &self.keyring {
            let mut ring = Keyring::load(path, dev)?;
            crate::trust_root::resolve_keyring_roots(&mut ring)?;
            for k in ring.keys() {
                crate::warn_if_dev(&k.key);
            }
            return Ok(ring);
        }
        if self.key.is_empty() {
            return Err(fail(
                USAGE,
                "give the trusted key(s) with --key PUB or a --keyring",
            ));
        }
        let mut keys = Vec::new();
        for k in &self.key {
            let r = KeyRef::parse(k)?;
            let pk = stella_keys::load_public(&r, dev, &mut || io::password(false))
                .with_context(|| format!("loading trusted key {}", r.describe()))?;
            crate::warn_if_dev(&pk);
            keys.push(TrustedKey::unrestricted(pk));
        }
        Ok(Keyring::new(keys)?)
    }

    pub(crate) fn purpose(&self) -> Result<Option<Purpose>> {
        self.purpose
            .as_deref()
            .map(|p| {
                Purpose::parse(p).map_err(|_| {
                    fail(
                        USAGE,
                        format!(
                            "--purpose {p:?} is not a key purpose (known: {})",
                            Purpose::ALL.map(Purpose::name).join(", ")
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// What a successful verification established.
pub(crate) struct Verified {
    pub(crate) envelope: Envelope,
    pub(crate) signers: Vec<stella_keys::VerifiedKey>,
    pub(crate) statement: Option<Statement>,
    pub(crate) bundle: bool,
}

/// Parse an envelope or bundle file and verify it.
pub(crate) fn verify_file(
    path: &str,
    trust: &TrustArgs,
    threshold: usize,
    dev: DevKeys,
) -> Result<Verified> {
    // Usage first: a bad --purpose is reported before any file is read.
    let purpose = trust.purpose()?;
    let bytes = io::read_limited(path, stella_dsse::MAX_ENVELOPE_BYTES as u64)?;
    // A file that is not an envelope or bundle at all is an input error (exit 2); only a
    // well-formed envelope whose signatures or payload do not hold is a failed verification.
    let value = stella_dsse::jcs::parse_strict(&bytes).map_err(|e| {
        fail(
            USAGE,
            format!("{path} is not a valid envelope or bundle: {e}"),
        )
    })?;
    let (envelope, bundle) = if stella_dsse::looks_like_bundle(&value) {
        let b = Bundle::from_value(&value).map_err(|e| fail(USAGE, format!("{path}: {e}")))?;
        if let VerificationMaterial::Certificate { .. } = b.material {
            return Err(fail(
                USAGE,
                "this bundle is certificate-based (keyless); keyless verification needs the \
                 Fulcio and TSA trust roots, which this build does not support yet",
            ));
        }
        (b.envelope, true)
    } else {
        let e = Envelope::from_value(&value).map_err(|e| fail(USAGE, format!("{path}: {e}")))?;
        (e, false)
    };
    let ring = trust.keyring(dev)?;
    let mut policy = Policy::new(threshold);
    policy.purpose = purpose;
    let signers = stella_keys::verify_envelope(&envelope, &ring, &policy)?;
    let statement = if envelope.payload_type == PAYLOAD_TYPE_IN_TOTO {
        Some(Statement::from_json(&envelope.payload).map_err(|e| {
            fail(
                VERIFY_FAILED,
                format!(
                    "the signature is valid but the payload is not a valid in-toto statement: {e}"
                ),
            )
        })?)
    } else {
        None
    };
    Ok(Verified {
        envelope,
        signers,
        statement,
        bundle,
    })
}

pub(crate) fn run(a: VerifyArgs, dev: DevKeys) -> Result<()> {
    match a.blob {
        Some(VerifySub::Blob(b)) => return crate::blob::verify_blob(b, dev),
        Some(VerifySub::Image(i)) => return verify_image(i, dev),
        None => {}
    }
    let Some(file) = a.file.as_deref() else {
        return Err(fail(USAGE, "give the envelope or bundle file to verify"));
    };
    if crate::sigstore::wants(file, &a.sigstore, a.trust.keyring.is_some()) {
        let req = crate::sigstore::Request {
            bundle_path: file,
            artifact: None,
            key: a.trust.key.first().map(String::as_str),
            args: &a.sigstore,
            json: a.output == "json",
            identities: match &a.trust.keyring {
                Some(_) => Some((a.trust.keyring(dev)?, a.trust.purpose()?)),
                None => None,
            },
        };
        return crate::sigstore::run(&req, dev);
    }
    let v = match verify_file(file, &a.trust, a.threshold, dev) {
        Ok(v) => v,
        Err(e) if a.output == "json" => {
            return Err(crate::exit::print_json_failure(
                e,
                crate::view::fields(&crate::view::FileFailureView {
                    file,
                    threshold: a.threshold,
                }),
            ))
        }
        Err(e) => return Err(e),
    };
    if a.output == "json" {
        let statement = match &v.statement {
            Some(_) => serde_json::from_slice::<serde_json::Value>(&v.envelope.payload)?,
            None => serde_json::Value::Null,
        };
        crate::view::print(&EnvelopeView {
            verified: true,
            kind: if v.bundle {
                "sigstore-bundle"
            } else {
                "dsse-envelope"
            },
            payload_type: &v.envelope.payload_type,
            threshold: a.threshold,
            signers: crate::view::SignerView::all(&v.signers),
            statement,
        })?;
    } else {
        println!(
            "Verified OK: {} of {} required trusted key(s) signed ({})",
            v.signers.len(),
            a.threshold,
            crate::view::signer_ids(&v.signers)
        );
        println!("payloadType: {}", v.envelope.payload_type);
        if let Some(st) = &v.statement {
            println!("predicateType: {}", st.predicate_type);
            for s in &st.subject {
                let digests = s
                    .digest
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                println!("subject: {} {}", s.name, digests);
            }
        }
    }
    Ok(())
}

/// The failure fields of `verify image --output json`.
#[derive(Serialize)]
struct ImageFailureView<'a> {
    image: &'a str,
    trusted: bool,
}

/// `verify attestation --output json`: who signed, and the statement as signed (`null` for a
/// payload that is not an in-toto statement).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeView<'a> {
    verified: bool,
    kind: &'static str,
    payload_type: &'a str,
    threshold: usize,
    signers: Vec<crate::view::SignerView<'a>>,
    statement: serde_json::Value,
}
