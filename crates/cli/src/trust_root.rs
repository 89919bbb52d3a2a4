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
use serde_json::json;
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
            let window = |v: &stella_sigstore::trust::Validity| {
                format!(
                    "{} .. {}",
                    stella_x509::format_time(v.start),
                    v.end
                        .map(stella_x509::format_time)
                        .unwrap_or_else(|| "open".into())
                )
            };
            let logs = |l: &[stella_sigstore::trust::LogInstance]| {
                l.iter()
                    .map(|l| {
                        json!({"url": l.base_url, "logId": stella_dsse::b64::encode(&l.log_id),
                        "keyDetails": l.key_details, "validFor": window(&l.valid_for)})
                    })
                    .collect::<Vec<_>>()
            };
            let auths = |l: &[stella_sigstore::trust::Authority]| {
                l.iter()
                    .map(|a| {
                        json!({"uri": a.uri, "subject": a.subject,
                        "certificates": a.chain.iter().map(|c| c.subject()).collect::<Vec<_>>(),
                        "validFor": window(&a.valid_for)})
                    })
                    .collect::<Vec<_>>()
            };
            let out = json!({
                "name": name,
                "source": from,
                "mediaType": root.media_type,
                "tlogs": logs(&root.tlogs),
                "certificateAuthorities": auths(&root.certificate_authorities),
                "ctlogs": logs(&root.ctlogs),
                "timestampAuthorities": auths(&root.timestamp_authorities),
            });
            if a.output == "json" {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("trusted root: {name} ({from})");
                for (title, key) in [
                    ("transparency logs", "tlogs"),
                    ("certificate authorities", "certificateAuthorities"),
                    ("CT logs", "ctlogs"),
                    ("timestamp authorities", "timestampAuthorities"),
                ] {
                    println!("{title}:");
                    for e in out[key].as_array().into_iter().flatten() {
                        let what = e
                            .get("url")
                            .or_else(|| e.get("uri"))
                            .and_then(|v| v.as_str())
                            .unwrap_or("");
                        let extra = e
                            .get("keyDetails")
                            .or_else(|| e.get("subject"))
                            .and_then(|v| v.as_str())
                            .unwrap_or("");
                        println!(
                            "  {what} {extra} valid {}",
                            e["validFor"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
