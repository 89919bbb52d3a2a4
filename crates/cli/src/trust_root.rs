//! `stella trust-root import|show`: the Sigstore trusted roots used offline.
//!
//! Two roots are shipped in the binary (`public-good`, `staging`). An Offline Kit brings newer
//! ones with `stella trust-root import FILE [--staging]`: the file is checked (it must parse as
//! a `dev.sigstore.trustedroot` document with usable keys and certificates) and stored as
//! `<dir>/<name>.json`, where `<dir>` is `$STELLA_TRUST_ROOT_DIR`, else
//! `$XDG_CONFIG_HOME/stella/trust-roots`, else `~/.config/stella/trust-roots`. An imported
//! root replaces the shipped one of the same name; `--trusted-root FILE` overrides both.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use stella_sigstore::TrustedRoot;

use crate::exit::{fail, USAGE};
use crate::io;

pub(crate) const PUBLIC_GOOD: &str = "public-good";
pub(crate) const STAGING: &str = "staging";

#[derive(Subcommand)]
pub(crate) enum TrustRootCommand {
    /// Check a trusted root file and store it for offline use (replacing the shipped one).
    Import(ImportArgs),
    /// Show the trusted root in use: logs, CAs, CT logs, TSAs and their validity.
    Show(ShowArgs),
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The trusted_root.json file (dev.sigstore.trustedroot JSON).
    file: String,
    /// Import it as the staging root (default: public-good).
    #[arg(long)]
    staging: bool,
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// Show the staging root.
    #[arg(long)]
    staging: bool,
    /// Show this file instead.
    #[arg(long, value_name = "FILE", conflicts_with = "staging")]
    trusted_root: Option<String>,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

fn dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("STELLA_TRUST_ROOT_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("stella").join("trust-roots"));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        fail(
            USAGE,
            "set STELLA_TRUST_ROOT_DIR (no HOME to keep trust roots in)",
        )
    })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("stella")
        .join("trust-roots"))
}

/// Where a root comes from.
fn source(name: &str) -> Result<(String, Vec<u8>)> {
    let p = dir()?.join(format!("{name}.json"));
    match std::fs::read(&p) {
        Ok(b) => Ok((format!("imported ({})", p.display()), b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            "shipped with stella".into(),
            match name {
                STAGING => stella_sigstore::trust::STAGING_JSON.to_vec(),
                _ => stella_sigstore::trust::PUBLIC_GOOD_JSON.to_vec(),
            },
        )),
        Err(e) => Err(fail(USAGE, format!("{}: {e}", p.display()))),
    }
}

/// The named root's imported file and content, if one was imported.
pub(crate) fn imported(name: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let p = dir()?.join(format!("{name}.json"));
    match std::fs::read(&p) {
        Ok(b) => Ok(Some((p, b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(USAGE, format!("{}: {e}", p.display()))),
    }
}

/// Keyring identity entries naming `public-good` or `staging` (or nothing) use the imported
/// root of that name when there is one, as `stella verify blob` does.
pub(crate) fn resolve_keyring_roots(ring: &mut stella_keys::Keyring) -> Result<()> {
    use stella_keys::TrustRootRef;
    if ring.identities().is_empty() {
        return Ok(());
    }
    let as_ref = |name: &str| -> Result<Option<TrustRootRef>> {
        Ok(imported(name)?.map(|(path, json)| TrustRootRef::File {
            path,
            json: std::sync::Arc::new(json),
        }))
    };
    let (pg, st) = (as_ref(PUBLIC_GOOD)?, as_ref(STAGING)?);
    ring.resolve_trust_roots(|r| match r {
        TrustRootRef::PublicGood => pg.clone(),
        TrustRootRef::Staging => st.clone(),
        TrustRootRef::File { .. } => None,
    });
    Ok(())
}

/// The named root: imported, else shipped.
pub(crate) fn load(name: &str) -> Result<TrustedRoot> {
    let (from, bytes) = source(name)?;
    TrustedRoot::from_json(&bytes)
        .map_err(|e| fail(USAGE, format!("{name} trusted root {from}: {e}")))
}

pub(crate) fn run(cmd: TrustRootCommand) -> Result<()> {
    match cmd {
        TrustRootCommand::Import(a) => {
            let bytes = io::read_limited(&a.file, 16 << 20)?;
            let root = TrustedRoot::from_json(&bytes)
                .map_err(|e| fail(USAGE, format!("{}: {e}", a.file)))?;
            let name = if a.staging { STAGING } else { PUBLIC_GOOD };
            let d = dir()?;
            std::fs::create_dir_all(&d)
                .map_err(|e| fail(USAGE, format!("{}: {e}", d.display())))?;
            let dest = d.join(format!("{name}.json"));
            io::write_atomic(&dest.display().to_string(), &bytes, false)?;
            println!(
                "imported the {name} trusted root into {} ({} tlog(s), {} CA(s), {} CT log(s), {} TSA(s))",
                dest.display(),
                root.tlogs.len(),
                root.certificate_authorities.len(),
                root.ctlogs.len(),
                root.timestamp_authorities.len()
            );
            Ok(())
        }
        TrustRootCommand::Show(a) => {
            let (name, from, bytes) = match &a.trusted_root {
                Some(f) => (
                    "file".to_string(),
                    f.clone(),
                    io::read_limited(f, 16 << 20)?,
                ),
                None => {
                    let name = if a.staging { STAGING } else { PUBLIC_GOOD };
                    let (from, b) = source(name)?;
                    (name.to_string(), from, b)
                }
            };
            let root =
                TrustedRoot::from_json(&bytes).map_err(|e| fail(USAGE, format!("{from}: {e}")))?;
            let out = TrustedRootView {
                name: &name,
                source: &from,
                media_type: &root.media_type,
                tlogs: LogView::all(&root.tlogs),
                certificate_authorities: AuthorityView::all(&root.certificate_authorities),
                ctlogs: LogView::all(&root.ctlogs),
                timestamp_authorities: AuthorityView::all(&root.timestamp_authorities),
            };
            if a.output == "json" {
                crate::view::print(&out)?;
            } else {
                println!("trusted root: {name} ({from})");
                let log_rows = |l: &[LogView<'_>]| -> Vec<[String; 3]> {
                    l.iter()
                        .map(|l| [l.url.into(), l.key_details.into(), l.valid_for.clone()])
                        .collect()
                };
                let authority_rows = |l: &[AuthorityView<'_>]| -> Vec<[String; 3]> {
                    l.iter()
                        .map(|a| [a.uri.into(), a.subject.into(), a.valid_for.clone()])
                        .collect()
                };
                for (title, rows) in [
                    ("transparency logs", log_rows(&out.tlogs)),
                    (
                        "certificate authorities",
                        authority_rows(&out.certificate_authorities),
                    ),
                    ("CT logs", log_rows(&out.ctlogs)),
                    (
                        "timestamp authorities",
                        authority_rows(&out.timestamp_authorities),
                    ),
                ] {
                    println!("{title}:");
                    for [what, extra, valid] in rows {
                        println!("  {what} {extra} valid {valid}");
                    }
                }
            }
            Ok(())
        }
    }
}

/// `trust-root show --output json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootView<'a> {
    name: &'a str,
    source: &'a str,
    media_type: &'a str,
    tlogs: Vec<LogView<'a>>,
    certificate_authorities: Vec<AuthorityView<'a>>,
    ctlogs: Vec<LogView<'a>>,
    timestamp_authorities: Vec<AuthorityView<'a>>,
}

/// A transparency or certificate-transparency log of the trusted root.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogView<'a> {
    url: &'a str,
    log_id: String,
    key_details: &'a str,
    valid_for: String,
}

/// A certificate or timestamp authority of the trusted root.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthorityView<'a> {
    uri: &'a str,
    subject: &'a str,
    certificates: Vec<String>,
    valid_for: String,
}

impl<'a> LogView<'a> {
    fn all(logs: &'a [stella_sigstore::trust::LogInstance]) -> Vec<Self> {
        logs.iter()
            .map(|l| LogView {
                url: &l.base_url,
                log_id: stella_dsse::b64::encode(&l.log_id),
                key_details: &l.key_details,
                valid_for: window(&l.valid_for),
            })
            .collect()
    }
}

impl<'a> AuthorityView<'a> {
    fn all(authorities: &'a [stella_sigstore::trust::Authority]) -> Vec<Self> {
        authorities
            .iter()
            .map(|a| AuthorityView {
                uri: &a.uri,
                subject: &a.subject,
                certificates: a.chain.iter().map(|c| c.subject()).collect(),
                valid_for: window(&a.valid_for),
            })
            .collect()
    }
}

/// `START .. END` (`open` for no end).
fn window(v: &stella_sigstore::trust::Validity) -> String {
    format!(
        "{} .. {}",
        stella_x509::format_time(v.start),
        v.end
            .map(stella_x509::format_time)
            .unwrap_or_else(|| "open".into())
    )
}
