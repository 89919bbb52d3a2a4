//! `stella sign blob|sbom|report` and `stella verify blob`.
//!
//! Blob signatures have cosign's `sign-blob` form: the signature algorithm applied to the raw
//! blob (ECDSA P-256/SHA-256 with an ASN.1 DER signature, or Ed25519), written as standard
//! base64 — so `cosign verify-blob` and `openssl dgst -sha256 -verify` accept them.

use anyhow::Result;
use clap::{Args, Subcommand};
use stella_dsse::predicates;
use stella_keys::{DevKeys, KeyRef};

use crate::attest::{self, KeyArgs, OutArgs};
use crate::exit::{fail, USAGE, VERIFY_FAILED};
use crate::io;

/// Largest blob we sign or verify in memory (Ed25519 needs the whole message): 2 GiB.
const MAX_BLOB_BYTES: u64 = 2 << 30;

#[derive(Subcommand)]
pub(crate) enum SignCommand {
    /// Sign a file; prints (or writes) the base64 signature, like `cosign sign-blob`.
    Blob(SignBlobArgs),
    /// Attest an SBOM: the predicate is the SBOM document itself.
    Sbom(SbomArgs),
    /// Attest a scan report (predicate type stella.ops/evidence@v1).
    Report(ReportArgs),
    /// Sign an image in its registry: a cosign-v3-style signature (in-toto statement,
    /// predicate https://sigstore.dev/cosign/sign/v1, about the manifest digest) as a Sigstore
    /// bundle v0.3 pushed as an OCI referrer.
    Image(SignImageArgs),
}

#[derive(Args)]
pub(crate) struct SignImageArgs {
    /// Signing key reference.
    #[arg(long, short = 'k')]
    key: String,
    #[command(flatten)]
    registry: crate::verify::RegistryArgs,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Image reference: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:HEX.
    image: String,
}

#[derive(Args)]
pub(crate) struct SignBlobArgs {
    /// Signing key reference.
    #[arg(long, short = 'k', required_unless_present = "keyless")]
    key: Option<String>,
    /// Write the base64 signature here instead of stdout.
    #[arg(long, conflicts_with = "keyless")]
    output_signature: Option<String>,
    /// With --keyless: write the Sigstore bundle v0.3 (certificate, timestamp, log entry) here
    /// (`-` for stdout).
    #[arg(long, value_name = "OUT", requires = "keyless")]
    bundle: Option<String>,
    #[command(flatten)]
    keyless: crate::keyless::KeylessArgs,
    /// The file to sign.
    file: String,
}

#[derive(Args)]
pub(crate) struct SbomArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// The SBOM document (JSON object).
    #[arg(long, alias = "sbom")]
    predicate: String,
    /// Predicate type: stella (stella.ops/sbom@v1), cyclonedx or spdx.
    #[arg(long, default_value = "stella", value_parser = ["stella", "cyclonedx", "spdx"])]
    format: String,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// The report document (JSON object).
    #[arg(long, alias = "report")]
    predicate: String,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args)]
pub(crate) struct VerifyBlobArgs {
    /// Trusted public key (PEM) or key reference.
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// File holding the signature (base64, as `sign blob` writes it).
    #[arg(long, conflicts_with = "bundle")]
    signature: Option<String>,
    /// A Sigstore bundle (v0.1-v0.3) to verify the file with, offline (cosign
    /// `verify-blob --bundle`): with --key, or with the --certificate-* identity flags.
    #[arg(long)]
    bundle: Option<String>,
    #[command(flatten)]
    sigstore: crate::sigstore::SigstoreArgs,
    /// Output format (bundles): text or json (a result on success and on failure).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// The signed file, or (with --bundle) `sha256:<hex>` when that is not a path.
    file: String,
}

pub(crate) fn run_sign(cmd: SignCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        SignCommand::Blob(a) => sign_blob(a, dev),
        SignCommand::Sbom(a) => {
            let t = match a.format.as_str() {
                "cyclonedx" => predicates::CYCLONEDX_BOM,
                "spdx" => predicates::SPDX_DOCUMENT,
                _ => predicates::SBOM_V1,
            };
            let predicate = attest::read_predicate(&a.predicate)?;
            attest::sign_statement(&a.keys, t, predicate, &a.out, dev)
        }
        SignCommand::Report(a) => {
            let predicate = attest::read_predicate(&a.predicate)?;
            attest::sign_statement(&a.keys, predicates::EVIDENCE_V1, predicate, &a.out, dev)
        }
        SignCommand::Image(a) => sign_image(a, dev),
    }
}

fn sign_image(a: SignImageArgs, dev: DevKeys) -> Result<()> {
    let image = crate::verify::image_ref(&a.image)?;
    let signer = attest::load_signers(&[a.key], dev)?
        .pop()
        .ok_or_else(|| fail(USAGE, "no key"))?;
    let client = a.registry.client()?;
    let signed = client
        .block_on(stella_oci::sign_image(
            client.client(),
            &image,
            signer.as_ref(),
        ))
        .map_err(crate::verify::oci_push_error)?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&signed)?);
    } else {
        println!("signed: {}", signed.image);
        println!("referrer: {}", signed.referrer);
        println!("key: {}", signed.key_id);
        eprintln!(
            "Signature bundle attached as a referrer{}",
            if signed.fallback_index_updated {
                " (registry without referrers API: the sha256-<hex> tag index was updated)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn sign_blob(a: SignBlobArgs, dev: DevKeys) -> Result<()> {
    let data = io::read_limited(&a.file, MAX_BLOB_BYTES)?;
    if a.keyless.keyless {
        let Some(bundle) = &a.bundle else {
            return Err(fail(
                USAGE,
                "--keyless needs --bundle OUT: the bundle carries the certificate and timestamp",
            ));
        };
        let out = crate::keyless::sign_blob(&a.keyless, &data)?;
        io::write_atomic(bundle, &out.bundle_json(), false)?;
        crate::keyless::report(&out, bundle);
        return Ok(());
    }
    let key = a
        .key
        .ok_or_else(|| fail(USAGE, "--key or --keyless is required"))?;
    let signer = attest::load_signers(&[key], dev)?
        .pop()
        .ok_or_else(|| fail(USAGE, "no key"))?;
    let sig = signer.sign(&data)?;
    let text = stella_dsse::b64::encode(&sig);
    match a.output_signature {
        Some(path) => {
            io::write_atomic(&path, text.as_bytes(), false)?;
            eprintln!("Signature written to {path}");
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub(crate) fn verify_blob(a: VerifyBlobArgs, dev: DevKeys) -> Result<()> {
    if let Some(bundle) = &a.bundle {
        return crate::sigstore::run(
            &crate::sigstore::Request {
                bundle_path: bundle,
                artifact: Some(&a.file),
                key: a.key.as_deref(),
                args: &a.sigstore,
                json: a.output == "json",
                identities: None,
            },
            dev,
        );
    }
    let (Some(key), Some(signature)) = (&a.key, &a.signature) else {
        return Err(fail(
            USAGE,
            "give --key PUB --signature SIG, or --bundle B (with --key or an identity)",
        ));
    };
    let r = KeyRef::parse(key)?;
    let key = stella_keys::load_public(&r, dev, &mut || io::password(false))?;
    crate::warn_if_dev(&key);
    let sig_text = io::read_limited(signature, 64 * 1024)?;
    let sig_str = String::from_utf8_lossy(&sig_text);
    let sig = stella_dsse::b64::decode(sig_str.trim())
        .map_err(|e| fail(USAGE, format!("signature file {signature}: {e}")))?;
    let data = io::read_limited(&a.file, MAX_BLOB_BYTES)?;
    if !key.verify(&data, &sig) {
        return Err(fail(
            VERIFY_FAILED,
            format!(
                "the signature does not verify {} with key {}",
                a.file,
                key.key_id()
            ),
        ));
    }
    println!("Verified OK ({} key {})", key.algorithm(), key.key_id());
    Ok(())
}
