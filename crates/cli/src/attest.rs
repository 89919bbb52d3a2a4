//! `stella attest`: subjects + predicate → canonical in-toto statement → DSSE envelope or
//! Sigstore bundle. Also the shared machinery behind `sign sbom|report` and `promotion attest`.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::Value;
use stella_dsse::{predicates, Statement, Subject};
use stella_keys::{DevKeys, KeyRef, Signer};

use crate::exit::{fail, USAGE};
use crate::io;

/// Largest predicate file we read (64 MiB).
const MAX_PREDICATE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Args)]
pub(crate) struct AttestArgs {
    #[command(flatten)]
    pub(crate) keys: KeyArgs,
    /// Predicate type, from the catalogue (`stella.ops/sbom@v1`, `https://slsa.dev/provenance/v1`, …).
    #[arg(long, short = 't')]
    predicate_type: String,
    /// JSON file holding the predicate (an object); `-` reads stdin.
    #[arg(long, short = 'p')]
    predicate: String,
    #[command(flatten)]
    pub(crate) out: OutArgs,
    /// Allow a predicate type outside the StellaOps catalogue.
    #[arg(long)]
    allow_any_predicate: bool,
}

/// Signing keys and subjects, shared by every attesting command.
#[derive(Args)]
pub(crate) struct KeyArgs {
    /// Signing key reference; repeat for a multi-signature envelope.
    #[arg(long, short = 'k', required_unless_present = "keyless")]
    pub(crate) key: Vec<String>,
    /// A file (named by its file name, digested with SHA-256) or NAME@sha256:HEX; repeatable.
    #[arg(long, short = 's', required = true)]
    pub(crate) subject: Vec<String>,
    #[command(flatten)]
    pub(crate) keyless: Box<crate::keyless::KeylessArgs>,
}

#[derive(Args)]
pub(crate) struct OutArgs {
    /// Write a Sigstore bundle v0.3 instead of a bare DSSE envelope (needs exactly one key;
    /// always the output with --keyless).
    #[arg(long)]
    pub(crate) bundle: bool,
    /// Output file (`-` for stdout).
    #[arg(long, short = 'o', default_value = "-")]
    pub(crate) output: String,
}

pub(crate) fn run(a: AttestArgs, dev: DevKeys) -> Result<()> {
    if !a.allow_any_predicate && !predicates::is_allowed(&a.predicate_type) {
        return Err(fail(
            USAGE,
            format!(
                "predicate type {:?} is not in the catalogue (allowed: {}); pass --allow-any-predicate to sign it anyway",
                a.predicate_type,
                predicates::allowed_types().join(", ")
            ),
        ));
    }
    let predicate = read_predicate(&a.predicate)?;
    sign_statement(&a.keys, &a.predicate_type, predicate, &a.out, dev)
}

/// Read a predicate file strictly (duplicate keys refused); it must be a JSON object.
pub(crate) fn read_predicate(path: &str) -> Result<Value> {
    let bytes = io::read_limited(path, MAX_PREDICATE_BYTES)?;
    let v = stella_dsse::jcs::parse_strict(&bytes)
        .map_err(|e| fail(USAGE, format!("predicate {path}: {e}")))?;
    if !v.is_object() {
        return Err(fail(
            USAGE,
            format!("predicate {path} must be a JSON object"),
        ));
    }
    Ok(v)
}

/// Turn `--subject` arguments into subjects: an existing file is hashed, otherwise the
/// argument must be NAME@sha256:HEX.
pub(crate) fn subjects(args: &[String]) -> Result<Vec<Subject>> {
    args.iter()
        .map(|s| {
            let path = Path::new(s);
            if path.is_file() {
                let digest = io::sha256_file(path)?;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(s)
                    .to_string();
                Ok(Subject::sha256(name, stella_keys::hex(&digest))?)
            } else if s.contains('@') {
                Subject::parse_ref(s).map_err(|e| fail(USAGE, e.to_string()))
            } else {
                Err(crate::io::open_error(
                    s,
                    std::io::ErrorKind::NotFound.into(),
                ))
            }
        })
        .collect()
}

/// Load every `--key` as a signer, warning about the dev key.
pub(crate) fn load_signers(keys: &[String], dev: DevKeys) -> Result<Vec<Box<dyn Signer>>> {
    keys.iter()
        .map(|k| {
            let r = KeyRef::parse(k)?;
            let s = stella_keys::load_signer(&r, dev, &mut || io::password(false))
                .with_context(|| format!("loading signing key {}", r.describe()))?;
            crate::warn_if_dev(s.public_key());
            Ok(s)
        })
        .collect()
}

/// Build, sign and write a statement.
pub(crate) fn sign_statement(
    keys: &KeyArgs,
    predicate_type: &str,
    predicate: Value,
    out: &OutArgs,
    dev: DevKeys,
) -> Result<()> {
    if out.bundle && keys.key.len() != 1 {
        return Err(fail(
            USAGE,
            "--bundle needs exactly one --key (a v0.3 bundle carries one signature)",
        ));
    }
    let subjects = subjects(&keys.subject)?;
    let statement = Statement::new(subjects, predicate_type, predicate)
        .map_err(|e| fail(USAGE, e.to_string()))?;
    if keys.keyless.keyless {
        let out_k = crate::keyless::attest(&keys.keyless, &statement)?;
        io::write_atomic(&out.output, &out_k.bundle_json(), false)?;
        crate::keyless::report(&out_k, &out.output);
        return Ok(());
    }
    let signers = load_signers(&keys.key, dev)?;
    let refs: Vec<&dyn Signer> = signers.iter().map(|s| s.as_ref()).collect();
    let envelope = stella_keys::attest(&statement, &refs)?;
    let mut bytes = if out.bundle {
        stella_keys::to_bundle(envelope, refs[0])?.to_json()
    } else {
        envelope.to_json()
    };
    bytes.push(b'\n');
    io::write_atomic(&out.output, &bytes, false)?;
    if out.output != "-" {
        eprintln!(
            "Signed {} statement about {} subject(s) with {} key(s); {} written to {}",
            predicate_type,
            statement.subject.len(),
            refs.len(),
            if out.bundle {
                "Sigstore bundle"
            } else {
                "DSSE envelope"
            },
            out.output
        );
    }
    Ok(())
}
