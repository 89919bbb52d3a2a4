//! `stella audit verify|export`: tamper-evidence check and JSON-lines export of the Signer
//! audit log.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use stella_keys::DevKeys;
use stella_store::chain::{self, ChainWalker};
use stella_store::sqlite::SqliteReader;
use stella_store::AuditReader as _;

use crate::exit::{fail, USAGE, VERIFY_FAILED};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain: detects edited, inserted and deleted records.
    Verify(VerifyArgs),
    /// Write records as JSON lines (each with its chain link).
    Export(ExportArgs),
}

#[derive(Args)]
pub(crate) struct Source {
    /// The audit database (default: audit.path of --config, or data/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The service configuration whose audit.path to read.
    #[arg(long)]
    config: Option<PathBuf>,
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

pub(crate) fn run(cmd: AuditCommand, _dev: DevKeys) -> Result<()> {
    match cmd {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Export(a) => export(a),
    }
}

fn db_path(s: &Source) -> Result<PathBuf> {
    if let Some(p) = &s.db {
        return Ok(p.clone());
    }
    if let Some(c) = &s.config {
        // Only audit.path matters here; the rest of the file is not validated.
        let text = std::fs::read_to_string(c)
            .map_err(|e| crate::io::open_error(&c.display().to_string(), e))?;
        let cfg = stella_signer::Config::from_toml_unvalidated(&text)
            .map_err(|e| fail(USAGE, format!("{}: {e}", c.display())))?;
        let p = cfg.audit.path;
        let base = c.parent().map(PathBuf::from).unwrap_or_default();
        return Ok(if p.is_relative() { base.join(p) } else { p });
    }
    Ok(PathBuf::from("data/audit.db"))
}

fn open(s: &Source) -> Result<SqliteReader> {
    let path = db_path(s)?;
    if !path.exists() {
        return Err(crate::io::open_error(
            &path.display().to_string(),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    SqliteReader::open(&path).with_context(|| format!("opening audit database {}", path.display()))
}

fn verify(a: VerifyArgs) -> Result<()> {
    let reader = open(&a.source)?;
    let mut report = chain::verify(&reader).context("reading the audit log")?;
    if let Some(expected) = &a.expect_head {
        if report.head_hash != *expected {
            report.problems.push(chain::ChainError::HeadMismatch {
                seq: report.head_seq,
                hash: report.head_hash.clone(),
                expected: expected.clone(),
            });
        }
    }
    match a.output {
        Format::Json => {
            let v = json!({
                "intact": report.is_intact(),
                "records": report.records,
                "headSeq": report.head_seq,
                "headHash": report.head_hash,
                "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            });
            println!("{v}");
        }
        Format::Text => {
            for p in &report.problems {
                eprintln!("{p}");
            }
            println!(
                "{} records; head seq {} hash {}",
                report.records, report.head_seq, report.head_hash
            );
        }
    }
    if report.is_intact() {
        if matches!(a.output, Format::Text) {
            println!("audit log intact");
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

fn export(a: ExportArgs) -> Result<()> {
    let reader = open(&a.source)?;
    let start = match &a.since {
        Some(s) => match reader.first_seq_since(&parse_since(s)?)? {
            Some(seq) => seq - 1,
            None => u64::MAX,
        },
        None => 0,
    };
    let mut out: Box<dyn std::io::Write> = if a.output == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&a.output).with_context(|| format!("creating {}", a.output))?,
        ))
    };
    let mut after = start;
    let mut n = 0u64;
    // The exported range is chain-checked as it is written; a broken link fails the export.
    let mut walker = ChainWalker::new();
    let mut first = true;
    while after != u64::MAX {
        let page = reader.read_after(after, 2048)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if first {
                // Start the walk mid-chain: trust the first exported link's predecessor.
                walker = ChainWalker::starting_at(r.seq, &r.prev_hash);
                first = false;
            }
            walker.push(r);
            let mut v: Value = serde_json::from_str(&r.record_json)
                .with_context(|| format!("record seq {} is not JSON", r.seq))?;
            v["chain"] = json!({"seq": r.seq, "prevHash": r.prev_hash, "hash": r.hash});
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    out.flush()?;
    let report = walker.finish();
    eprintln!("exported {n} record(s)");
    if !report.is_intact() {
        for p in &report.problems {
            eprintln!("{p}");
        }
        return Err(fail(
            VERIFY_FAILED,
            "the exported range of the audit log is not intact",
        ));
    }
    Ok(())
}
