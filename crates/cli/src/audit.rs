//! `stella audit verify|export`: tamper-evidence check and JSON-lines export of the Signer
//! audit log.
//!
//! Both open the database read-only (nothing is created or migrated) and walk the whole hash
//! chain. When a checkpoint public key is given (`--checkpoint-key`, or
//! `audit.checkpoint_public_key` of `--config`), the latest signed checkpoint must exist and
//! verify, and the chain is anchored to it: records cut off the end, a replaced or emptied
//! database, a dropped table or a deleted database file all fail with exit 1. Without a key the
//! chain alone is checked and the output says that the end of the log is not anchored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;
use stella_keys::{DevKeys, Keyring, TrustedKey};
use stella_store::chain::{self, ChainReport, ChainWalker};
use stella_store::checkpoint::{self, Checkpoint};
use stella_store::SqliteReader;
use stella_store::{AuditReader, PgReader, StoreError};

use crate::exit::{fail, RETRYABLE, USAGE, VERIFY_FAILED};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain against the latest signed checkpoint: detects edited, inserted and
    /// deleted records, records cut off the end, and a replaced or dropped log.
    Verify(VerifyArgs),
    /// Write records as JSON lines (each with its chain link); the whole log is verified.
    Export(ExportArgs),
}

#[derive(Args)]
pub(crate) struct Source {
    /// The audit database (default: audit.path of --config, or data/audit.db).
    #[arg(long, conflicts_with = "url")]
    db: Option<PathBuf>,
    /// A PostgreSQL audit log (postgres://user@host:port/db) instead of a SQLite file
    /// (default: audit.url of --config when audit.backend is postgres).
    #[arg(long)]
    url: Option<String>,
    /// The service configuration whose [audit] section to read.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The signed checkpoint (default: audit.checkpoint_path of --config, or the database
    /// path with the extension checkpoint.json).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Public key (PEM) or keyring (TOML file or folder) that signs checkpoints (default:
    /// audit.checkpoint_public_key of --config). With it, a checkpoint is required.
    #[arg(long)]
    checkpoint_key: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    source: Source,
    /// Fail unless the head (last record) has this hash: detects records cut off the end.
    #[arg(long)]
    expect_head: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Format,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    source: Source,
    /// Records at or after T: RFC 3339 (2026-01-02T03:04:05Z), a date (2026-01-02), or an age
    /// (30m, 12h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Output file (default: standard output).
    #[arg(long, default_value = "-")]
    output: String,
}

pub(crate) fn run(cmd: AuditCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        AuditCommand::Verify(a) => verify(a, dev),
        AuditCommand::Export(a) => export(a, dev),
    }
}

/// Where the log and its checkpoint are, and what verifies the checkpoint.
struct Resolved {
    db: PathBuf,
    /// Set: the log is in PostgreSQL.
    url: Option<String>,
    checkpoint: PathBuf,
    checkpoint_key: Option<PathBuf>,
}

fn resolve(s: &Source) -> Result<Resolved> {
    let mut db = s.db.clone();
    let mut url = s.url.clone();
    let mut checkpoint = s.checkpoint.clone();
    let mut checkpoint_key = s.checkpoint_key.clone();
    if let Some(c) = &s.config {
        // Only the [audit] section matters here; the rest of the file is not validated.
        let text = std::fs::read_to_string(c)
            .map_err(|e| crate::io::open_error(&c.display().to_string(), e))?;
        let cfg = stella_signer::Config::from_toml_unvalidated(&text)
            .map_err(|e| fail(USAGE, format!("{}: {e}", c.display())))?;
        let base = c.parent().map(PathBuf::from).unwrap_or_default();
        let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let cfg_db = abs(cfg.audit.path.clone());
        if checkpoint.is_none() {
            checkpoint = Some(match &cfg.audit.checkpoint_path {
                Some(p) => abs(p.clone()),
                None => db
                    .clone()
                    .unwrap_or(cfg_db.clone())
                    .with_extension("checkpoint.json"),
            });
        }
        if checkpoint_key.is_none() {
            checkpoint_key = cfg.audit.checkpoint_public_key.map(abs);
        }
        if db.is_none() && url.is_none() && cfg.audit.backend == "postgres" {
            url = Some(cfg.audit.url.clone().ok_or_else(|| {
                fail(
                    USAGE,
                    format!("{}: audit.backend postgres needs audit.url", c.display()),
                )
            })?);
        }
        db.get_or_insert(cfg_db);
    }
    let db = db.unwrap_or_else(|| PathBuf::from("data/audit.db"));
    let checkpoint = checkpoint.unwrap_or_else(|| db.with_extension("checkpoint.json"));
    Ok(Resolved {
        db,
        url,
        checkpoint,
        checkpoint_key,
    })
}

fn keyring(path: &Path, dev: DevKeys) -> Result<Keyring> {
    let what = || format!("checkpoint key {}", path.display());
    let is_ring = path.is_dir() || path.extension().is_some_and(|e| e == "toml");
    if is_ring {
        return Keyring::load(path, dev).with_context(what);
    }
    let key = stella_keys::load_public_file(path, dev).with_context(what)?;
    Ok(Keyring::new(vec![TrustedKey::unrestricted(key)])?)
}

/// The verified checkpoint, when a key is configured. Every failure is exit 1.
fn read_checkpoint(r: &Resolved, dev: DevKeys) -> Result<Option<Checkpoint>> {
    let Some(key) = &r.checkpoint_key else {
        return Ok(None);
    };
    let ring = keyring(key, dev)?;
    checkpoint::read_verified(&r.checkpoint, &ring)
        .map(Some)
        .map_err(|e| {
            fail(
                VERIFY_FAILED,
                format!("the audit log cannot be trusted: {e}"),
            )
        })
}

/// Open the log read-only. A missing database or table is a verification failure when a
/// checkpoint vouches for the log; a missing file without one is "not found".
fn open(r: &Resolved, anchor: Option<&Checkpoint>) -> Result<Box<dyn AuditReader>> {
    if let Some(url) = &r.url {
        return open_postgres(url, anchor);
    }
    match SqliteReader::open(&r.db) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(StoreError::NoLog(p)) => Err(fail(
            VERIFY_FAILED,
            format!("the audit log was tampered with: {p} holds no audit table (dropped or replaced)"),
        )),
        Err(StoreError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            match anchor {
                Some(cp) => Err(fail(
                    VERIFY_FAILED,
                    format!(
                        "the audit log was tampered with: the database {} is gone, but the signed checkpoint {} covers {} record(s)",
                        r.db.display(),
                        r.checkpoint.display(),
                        cp.records
                    ),
                )),
                None => Err(crate::io::open_error(
                    &r.db.display().to_string(),
                    std::io::ErrorKind::NotFound.into(),
                )),
            }
        }
        Err(e) => Err(fail(
            VERIFY_FAILED,
            format!("cannot read the audit log {}: {e}", r.db.display()),
        )),
    }
}

/// PostgreSQL: a dropped table or database is tampering (exit 1); a server that cannot be
/// reached is retryable (exit 10), not evidence.
fn open_postgres(url: &str, anchor: Option<&Checkpoint>) -> Result<Box<dyn AuditReader>> {
    let shown = stella_store::redact(url);
    match PgReader::connect(url, std::time::Duration::from_secs(10)) {
        Ok(r) => Ok(Box::new(r)),
        Err(StoreError::NoLog(_)) => Err(fail(
            VERIFY_FAILED,
            format!("the audit log was tampered with: {shown} holds no audit table (dropped or replaced)"),
        )),
        // 3D000 invalid_catalog_name: the database does not exist.
        Err(StoreError::Database(m)) if m.contains("3D000") => Err(fail(
            VERIFY_FAILED,
            match anchor {
                Some(cp) => format!(
                    "the audit log was tampered with: the database {shown} is gone, but the signed checkpoint covers {} record(s)",
                    cp.records
                ),
                None => format!("the audit database {shown} does not exist"),
            },
        )),
        Err(e) => Err(fail(
            RETRYABLE,
            format!("cannot reach the audit log {shown}: {e}"),
        )),
    }
}

fn walker(anchor: Option<&Checkpoint>) -> ChainWalker {
    match anchor {
        Some(cp) => ChainWalker::new().anchor(cp.records, &cp.head_hash),
        None => ChainWalker::new(),
    }
}

const UNANCHORED: &str = "no checkpoint key given (--checkpoint-key or audit.checkpoint_public_key): the chain was checked, but records cut off its end cannot be detected";

fn verify(a: VerifyArgs, dev: DevKeys) -> Result<()> {
    let r = resolve(&a.source)?;
    let anchor = read_checkpoint(&r, dev)?;
    let reader = open(&r, anchor.as_ref())?;
    let mut report = chain::verify_with(reader.as_ref(), walker(anchor.as_ref()))
        .map_err(|e| fail(VERIFY_FAILED, format!("reading the audit log: {e}")))?;
    if let Some(expected) = &a.expect_head {
        if report.head_hash != *expected {
            report.problems.push(chain::ChainError::HeadMismatch {
                seq: report.head_seq,
                hash: report.head_hash.clone(),
                expected: expected.clone(),
            });
        }
    }
    print_report(&report, anchor.as_ref(), a.output);
    if report.is_intact() {
        if matches!(a.output, Format::Text) {
            match &anchor {
                Some(_) => println!("audit log intact"),
                None => {
                    eprintln!("warning: {UNANCHORED}");
                    println!("audit log intact (chain only: end not anchored)");
                }
            }
        }
        Ok(())
    } else {
        Err(fail(
            VERIFY_FAILED,
            format!(
                "the audit log was tampered with ({} problem(s))",
                report.problems.len()
            ),
        ))
    }
}

fn print_report(report: &ChainReport, anchor: Option<&Checkpoint>, output: Format) {
    match output {
        Format::Json => {
            let v = ChainView {
                intact: report.is_intact(),
                anchored: anchor.is_some(),
                records: report.records,
                head_seq: report.head_seq,
                head_hash: &report.head_hash,
                checkpoint: anchor.map(|c| CheckpointView {
                    records: c.records,
                    head_hash: &c.head_hash,
                    time: &c.time,
                }),
                problems: report.problems.iter().map(|p| p.to_string()).collect(),
            };
            // Compact, one line (keys sorted as every view's).
            match crate::view::to_value(&v) {
                Ok(v) => println!("{v}"),
                Err(e) => eprintln!("error: {e}"),
            }
        }
        Format::Text => {
            for p in &report.problems {
                eprintln!("{p}");
            }
            println!(
                "{} records; head seq {} hash {}",
                report.records, report.head_seq, report.head_hash
            );
            if let Some(c) = anchor {
                println!(
                    "signed checkpoint of {}: {} records, head {}",
                    c.time, c.records, c.head_hash
                );
            }
        }
    }
}

/// `T` as the stored time format (RFC 3339 UTC with milliseconds).
fn parse_since(s: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    let bad = || {
        fail(
            USAGE,
            format!("--since {s:?}: use RFC 3339, YYYY-MM-DD, or an age like 30m, 12h, 7d"),
        )
    };
    let t = if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else if let Ok(d) =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
    {
        d.midnight().assume_utc()
    } else {
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        let n: i64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad()),
        };
        OffsetDateTime::now_utc() - time::Duration::seconds(secs)
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).map_err(|_| bad())
}

fn export(a: ExportArgs, dev: DevKeys) -> Result<()> {
    let r = resolve(&a.source)?;
    let anchor = read_checkpoint(&r, dev)?;
    let reader = open(&r, anchor.as_ref())?;
    // The first record at or after --since, by the time column; the walk below checks every
    // column against its hashed record, so an edited time cannot steer the range unnoticed.
    let start = match &a.since {
        Some(s) => reader
            .first_seq_since(&parse_since(s)?)?
            .unwrap_or(u64::MAX),
        None => 1,
    };
    let mut out: Box<dyn std::io::Write> = if a.output == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&a.output).with_context(|| format!("creating {}", a.output))?,
        ))
    };
    let mut after = 0;
    let mut n = 0u64;
    // The whole log is chain-checked (and anchored) while the range is written; a problem
    // anywhere fails the export.
    let mut walker = walker(anchor.as_ref());
    loop {
        let page = reader
            .read_after(after, 2048)
            .map_err(|e| fail(VERIFY_FAILED, format!("reading the audit log: {e}")))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            walker.push(r);
            if r.seq < start {
                continue;
            }
            let mut v: Value = serde_json::from_str(&r.record_json)
                .with_context(|| format!("record seq {} is not JSON", r.seq))?;
            v["chain"] = crate::view::to_value(&LinkView {
                seq: r.seq,
                prev_hash: &r.prev_hash,
                hash: &r.hash,
            })?;
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    out.flush()?;
    let report = walker.finish();
    eprintln!("exported {n} record(s)");
    if anchor.is_none() {
        eprintln!("warning: {UNANCHORED}");
    }
    if !report.is_intact() {
        for p in &report.problems {
            eprintln!("{p}");
        }
        return Err(fail(VERIFY_FAILED, "the audit log is not intact"));
    }
    Ok(())
}

/// `audit verify --output json`: one line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChainView<'a> {
    intact: bool,
    anchored: bool,
    records: u64,
    head_seq: u64,
    head_hash: &'a str,
    checkpoint: Option<CheckpointView<'a>>,
    problems: Vec<String>,
}

/// The checkpoint the chain was anchored to.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointView<'a> {
    records: u64,
    head_hash: &'a str,
    time: &'a str,
}

/// `chain` of an exported record: its link.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkView<'a> {
    seq: u64,
    prev_hash: &'a str,
    hash: &'a str,
}
