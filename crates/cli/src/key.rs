//! `stella key generate|public`.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use stella_keys::{Algorithm, DevKeys, FileKey, KeyRef, Signer as _};

use crate::exit::{fail, USAGE};
use crate::io;

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Generate a key pair: PREFIX.key (cosign encrypted format) and PREFIX.pub (PEM).
    ///
    /// The password comes from COSIGN_PASSWORD (may be empty) or is asked twice on the
    /// terminal. The key file is written with mode 0600; existing files are never overwritten
    /// unless --force is given.
    Generate(GenerateArgs),
    /// Print the public key (PEM) of a key reference.
    Public(PublicArgs),
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// ed25519 or p256.
    #[arg(long, short = 'a', default_value = "p256")]
    algorithm: String,
    /// Output prefix: writes PREFIX.key and PREFIX.pub.
    #[arg(long, short = 'o', default_value = "cosign")]
    output: String,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub(crate) struct PublicArgs {
    /// Key reference (private key file, env://VAR, or a public key file).
    #[arg(long, short = 'k')]
    key: String,
}

pub(crate) fn run(cmd: KeyCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        KeyCommand::Generate(a) => generate(a),
        KeyCommand::Public(a) => {
            let r = KeyRef::parse(&a.key)?;
            let key = stella_keys::load_public(&r, dev, &mut || io::password(false))?;
            crate::warn_if_dev(&key);
            print!("{}", key.to_pem());
            Ok(())
        }
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let algorithm = Algorithm::parse(&a.algorithm).map_err(|e| fail(USAGE, e.to_string()))?;
    let key_path = format!("{}.key", a.output);
    let pub_path = format!("{}.pub", a.output);
    if !a.force {
        for p in [&key_path, &pub_path] {
            if Path::new(p).exists() {
                return Err(fail(
                    USAGE,
                    format!("{p} already exists (use --force to overwrite)"),
                ));
            }
        }
    }
    let password = io::password(true)?;
    let key = FileKey::generate(algorithm)?;
    let pem = key.to_cosign_pem(password.as_bytes())?;
    io::write_atomic(&key_path, pem.as_bytes(), true)
        .with_context(|| format!("writing {key_path}"))?;
    io::write_atomic(&pub_path, key.public_key().to_pem().as_bytes(), false)?;
    eprintln!("Private key written to {key_path} (cosign encrypted format)");
    eprintln!("Public key written to {pub_path}");
    eprintln!("Key id: {}", key.key_id());
    Ok(())
}
