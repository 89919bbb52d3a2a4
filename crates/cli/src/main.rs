//! `stella`: sign and verify software supply-chain artefacts, online and air-gapped.
//!
//! This file holds the argument model (clap derive) and dispatch; each command family lives in
//! its own module. Errors travel as `anyhow` chains and are mapped to the exit codes of
//! SPEC §1 in one place (`exit::code_for`).
#![forbid(unsafe_code)]

mod attest;
mod audit;
mod blob;
mod exit;
mod forensic;
mod io;
mod key;
mod keyless;
mod mirror;
mod promotion;
mod registry;
mod serve;
mod sigstore;
mod trust_root;
mod verify;
mod view;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc (feature `fast-alloc`, opt-in): the Signer service spends
/// 17 % of its worker threads' CPU in glibc malloc/free, but mimalloc keeps freed pages long
/// enough that `mirror verify` of a 1,000,000-file bundle peaks at 233-247 MiB instead of
/// 151 MiB, above the 200 MiB budget (docs/design.md "Allocator").
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stella Signer: in-toto attestations as DSSE envelopes and Sigstore bundles, cosign-compatible
/// keys, signed air-gap mirror bundles, and offline verification of all of it.
#[derive(Parser)]
#[command(name = "stella", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
stella key generate --algorithm p256 --output release\n  \
stella attest --key release.key -t stella.ops/sbom@v1 -p sbom.json -s app.tar -o app.dsse.json\n  \
stella verify --key release.pub app.dsse.json\n\n\
Exit codes: 0 ok, 1 verification failed, 2 usage or input error, \
3 authentication (e.g. wrong key password), 4 not found, 5 offline, 10 retryable.\n\
Key references (--key): a file path, env://VAR (key file or its base64 in VAR), pkcs11:URI, \
awskms://KEY, keyless. Encrypted key passwords come from COSIGN_PASSWORD or a prompt.")]
struct Cli {
    /// Accept the published development key (tools/cosign/cosign.dev.key). Never in production.
    #[arg(long, global = true)]
    allow_dev_key: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate key pairs and print public keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Build an in-toto statement about subjects and sign it as a DSSE envelope (or bundle).
    Attest(attest::AttestArgs),
    /// Verify a DSSE envelope or Sigstore bundle (or, with `blob`, a raw blob signature).
    Verify(Box<verify::VerifyArgs>),
    /// Sign a blob (cosign sign-blob form), an SBOM or a scan report.
    #[command(subcommand)]
    Sign(blob::SignCommand),
    /// Promotion attestations (stella.ops/promotion@v1).
    #[command(subcommand)]
    Promotion(promotion::PromotionCommand),
    /// Air-gap mirror bundles: create, sign, verify, pack, unpack, apply, diff, load.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// The Signer service.
    #[command(subcommand)]
    Signer(serve::SignerCommand),
    /// The Signer audit log: tamper-evidence check and export.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The Sigstore trusted roots used offline: import (Offline Kit) and show.
    #[command(subcommand)]
    TrustRoot(trust_root::TrustRootCommand),
    /// Look inside attestations: `forensic attest show FILE` decodes an envelope or bundle.
    #[command(subcommand)]
    Forensic(forensic::ForensicCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dev = if cli.allow_dev_key {
        stella_keys::DevKeys::Allow
    } else {
        stella_keys::DevKeys::Refuse
    };
    let result = match cli.command {
        Command::Key(c) => key::run(c, dev),
        Command::Attest(a) => attest::run(a, dev),
        Command::Verify(v) => verify::run(*v, dev),
        Command::Sign(s) => blob::run_sign(s, dev),
        Command::Promotion(p) => promotion::run(p, dev),
        Command::Mirror(m) => mirror::run(m, dev),
        Command::Signer(s) => serve::run(s, dev),
        Command::Audit(a) => audit::run(a, dev),
        Command::TrustRoot(t) => trust_root::run(t),
        Command::Forensic(f) => forensic::run(f, dev),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit::code_for(&err);
            let label = if code == exit::VERIFY_FAILED {
                "verification failed"
            } else {
                "error"
            };
            eprintln!("{label}: {}", exit::render(&err));
            ExitCode::from(code)
        }
    }
}

/// Warn loudly when the development key is in play.
pub(crate) fn warn_if_dev(key: &stella_keys::PublicKey) {
    if stella_keys::is_dev_key(key) {
        eprintln!(
            "WARNING: using the PUBLISHED DEVELOPMENT KEY ({}). Anyone can sign with it. \
             Never use it for releases or trust it in production.",
            key.key_id()
        );
    }
}
