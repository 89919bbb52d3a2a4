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
    /// unless --force is given. With --pkcs11 URI the pair is created inside the token
    /// (sensitive, non-extractable) and only PREFIX.pub is written; see docs/keys.md.
    Generate(GenerateArgs),
    /// Print the public key (PEM) of a key reference.
    Public(PublicArgs),
    /// Add a key to a signed revocation list (created if missing) and sign it again.
    ///
    /// The list is cumulative: earlier entries are kept and the serial goes up. Verifiers take
    /// it with --revocations FILE (stella verify, verify image, mirror verify); see docs/keys.md.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub(crate) struct RevokeArgs {
    /// The revocation list file (DSSE envelope); extended in place.
    #[arg(long)]
    list: String,
    /// Key that signs the list (a key of the verifiers' keyring; any key reference).
    #[arg(long, short = 'k')]
    key: String,
    /// The key to revoke: a public key file or key reference, or its key id (sha256:HEX).
    #[arg(long)]
    revoke: String,
    /// When the key stops being trusted (RFC 3339; default: now). Signatures with a verified
    /// signing time before it stay valid.
    #[arg(long)]
    at: Option<String>,
    /// Why (kept in the list).
    #[arg(long, default_value = "")]
    reason: String,
    /// Keyring that signed the existing list, when it was not signed by --key.
    #[arg(long)]
    keyring: Option<std::path::PathBuf>,
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
    /// Create the key pair inside a PKCS#11 token named by this RFC 7512 URI
    /// (`pkcs11:token=T;object=LABEL?module-path=LIB&pin-source=FILE`); writes PREFIX.pub only.
    #[arg(long, value_name = "URI")]
    pkcs11: Option<String>,
}

#[derive(Args)]
pub(crate) struct PublicArgs {
    /// Key reference (private key file, env://VAR, pkcs11: URI, or a public key file).
    #[arg(long, short = 'k')]
    key: String,
}

pub(crate) fn run(cmd: KeyCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        KeyCommand::Generate(a) => generate(a),
        KeyCommand::Revoke(a) => revoke(a, dev),
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
    if let Some(uri) = &a.pkcs11 {
        return generate_pkcs11(uri, algorithm, &pub_path, a.force);
    }
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

fn generate_pkcs11(uri: &str, algorithm: Algorithm, pub_path: &str, force: bool) -> Result<()> {
    let uri = stella_keys::pkcs11::Pkcs11Uri::parse(uri).map_err(|e| fail(USAGE, e.to_string()))?;
    if !force && Path::new(pub_path).exists() {
        return Err(fail(
            USAGE,
            format!("{pub_path} already exists (use --force to overwrite)"),
        ));
    }
    let made = stella_keys::pkcs11::generate(&uri, algorithm)
        .with_context(|| format!("generating a {algorithm} key in {}", uri.describe()))?;
    io::write_atomic(pub_path, made.public.to_pem().as_bytes(), false)?;
    let mut at = uri.describe();
    if uri.id.is_none() {
        at.push_str(";id=");
        at.extend(made.id.iter().map(|b| format!("%{b:02X}")));
    }
    eprintln!("Key pair created in the token (sensitive, not extractable): {at}");
    eprintln!("Public key written to {pub_path}");
    eprintln!("Key id: {}", made.public.key_id());
    Ok(())
}

fn revoke(a: RevokeArgs, dev: DevKeys) -> Result<()> {
    use stella_keys::revocation::RevocationList;
    use time::format_description::well_known::Rfc3339;

    let now = time::OffsetDateTime::now_utc();
    let revoked_at = match &a.at {
        Some(t) => time::OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
            fail(
                USAGE,
                format!("--at {t:?} is not an RFC 3339 date-time: {e}"),
            )
        })?,
        None => now,
    };
    let key_id = if a.revoke.starts_with("sha256:") {
        let hex = &a.revoke["sha256:".len()..];
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail(
                USAGE,
                format!("--revoke {:?} is not a key id", a.revoke),
            ));
        }
        a.revoke.to_ascii_lowercase()
    } else {
        let r = KeyRef::parse(&a.revoke)?;
        stella_keys::load_public(&r, DevKeys::Allow, &mut || io::password(false))?
            .key_id()
            .to_string()
    };
    let signer = crate::attest::load_signers(std::slice::from_ref(&a.key), dev)?
        .pop()
        .ok_or_else(|| fail(USAGE, "no signing key"))?;
    let mut list = if Path::new(&a.list).exists() {
        let trust = match &a.keyring {
            Some(p) => stella_keys::Keyring::load(p, dev)?,
            None => stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
                signer.public_key().clone(),
            )])?,
        };
        RevocationList::load(Path::new(&a.list), &trust).with_context(|| {
            format!(
                "the existing list {} (pass --keyring if another key signed it)",
                a.list
            )
        })?
    } else {
        RevocationList::new(now)
    };
    list.revoke(stella_keys::revocation::Revocation {
        key_id: key_id.clone(),
        revoked_at,
        reason: a.reason.clone(),
    });
    list.serial += 1;
    list.issued = now;
    let env = list.sign(signer.as_ref())?;
    io::write_atomic(&a.list, &env.to_json(), false)?;
    eprintln!(
        "Revoked {key_id} from {} in {} (serial {}, {} entr{})",
        revoked_at.format(&Rfc3339).unwrap_or_default(),
        a.list,
        list.serial,
        list.entries().count(),
        if list.entries().count() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    Ok(())
}
