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

/// mimalloc instead of glibc malloc (feature `fast-alloc`, on by default): the Signer service
/// spends 17 % of its worker threads' CPU in glibc malloc/free. mimalloc's defaults keep freed
/// pages for a second, which would put `mirror verify` of a 1,000,000-file bundle at 233-247
/// MiB instead of 151 MiB, above the 200 MiB budget: every command but `signer serve` tunes
/// it first thing (`alloc_profile`; docs/design.md "Allocator").
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: stella_alloc::Global = stella_alloc::Global;

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

/// How `command` uses memory: `signer serve` is the one long-running service and keeps
/// mimalloc's defaults (freed pages reused, the Signer's speed); every other command is one
/// piece of work, which may allocate and free hundreds of MiB (mirror bundles), and returns
/// freed pages at once so its peak RSS is what it holds.
fn alloc_profile(command: &Command) -> stella_alloc::Profile {
    match command {
        Command::Signer(serve::SignerCommand::Serve(_)) => stella_alloc::Profile::Service,
        _ => stella_alloc::Profile::BulkWork,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stella_alloc::tune(alloc_profile(&cli.command));
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

#[cfg(test)]
mod tests {
    use super::*;
    use stella_alloc::{Profile, Settings};

    fn command(args: &[&str]) -> Command {
        let argv = std::iter::once("stella").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    const SERVE: &[&str] = &["signer", "serve", "--dev", "--listen", "127.0.0.1:0"];
    const BULK: &[&[&str]] = &[
        &["mirror", "create", "--spec", "b.yaml", "--output", "out"],
        &["mirror", "sign", "out/manifest.json", "--key", "k.key"],
        &["mirror", "verify", "out", "--key", "k.pub"],
        &["mirror", "verify", "out.tar.zst", "--key", "k.pub"],
        &["mirror", "pack", "out", "--output", "out.tar.zst"],
        &[
            "mirror",
            "unpack",
            "out.tar.zst",
            "--output",
            "u",
            "--key",
            "k.pub",
        ],
        &["mirror", "verify-checksums", "out"],
        &["verify", "--key", "k.pub", "a.dsse.json"],
        &["audit", "verify", "--db", "audit.db"],
        &[
            "signer",
            "sign",
            "--url",
            "http://127.0.0.1:1",
            "--predicate-type",
            "t",
            "--predicate",
            "p.json",
            "--subject",
            "s",
            "--poe",
            "dev-1",
            "--output",
            "o.json",
        ],
    ];

    #[test]
    fn only_signer_serve_keeps_the_service_profile() {
        assert_eq!(alloc_profile(&command(SERVE)), Profile::Service);
        for args in BULK {
            assert_eq!(alloc_profile(&command(args)), Profile::BulkWork, "{args:?}");
        }
    }

    // mimalloc's options are process-wide: the before/after checks run in order in one test
    // (the only one in this binary that changes them).
    #[test]
    fn mirror_commands_return_freed_pages_at_once_and_serve_keeps_the_defaults() {
        if !cfg!(feature = "fast-alloc") {
            assert_eq!(stella_alloc::settings(), None);
            return;
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some()
            || std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
            || stella_alloc::settings().is_some_and(|s| !s.huge_pages)
        {
            // The environment (or a parent without huge pages) set them: the environment wins
            // over the profiles, there is nothing to compare with.
            return;
        }
        assert_eq!(stella_alloc::settings(), Some(Settings::MIMALLOC_DEFAULTS));
        stella_alloc::tune(alloc_profile(&command(SERVE)));
        assert_eq!(stella_alloc::settings(), Some(Settings::MIMALLOC_DEFAULTS));
        stella_alloc::tune(alloc_profile(&command(&[
            "mirror", "verify", "out", "--key", "k.pub",
        ])));
        assert_eq!(stella_alloc::settings(), Some(Settings::BULK_WORK));
    }
}
