//! `stella mirror`: air-gap bundles — create, sign, verify (folder or archive stream),
//! verify-checksums, pack, unpack, apply (thin updates) and diff.
//!
//! The work is in `stella-mirror`; this module parses arguments, loads keys and trust roots,
//! draws progress on stderr when it is a terminal, prints text or JSON reports, and maps the
//! library's error kinds to the exit codes of SPEC §1 (verification failures exit 1).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use stella_keys::{DevKeys, Keyring};
use stella_mirror::hash::Progress;
use stella_mirror::{verify, ErrorKind};
use time::OffsetDateTime;

use crate::exit::{fail, NOT_FOUND, USAGE, VERIFY_FAILED};
use crate::verify::TrustArgs;

#[derive(Subcommand)]
pub(crate) enum MirrorCommand {
    /// Build a bundle folder from a YAML spec (thin with --base).
    Create(CreateArgs),
    /// Sign a bundle: manifest.dsse, SHA256SUMS(.dsse/.sig), public-key.pem, detached header.
    Sign(SignArgs),
    /// Verify a bundle folder, its manifest.dsse, or a .tar.gz/.tar.zst straight from the stream.
    Verify(VerifyArgs),
    /// Check every file against SHA256SUMS (no keys; like `sha256sum -c`, and refuses unlisted files).
    VerifyChecksums(ChecksumArgs),
    /// Pack a signed bundle folder into a byte-reproducible .tar.gz or .tar.zst.
    Pack(PackArgs),
    /// Unpack an archive: checked entry by entry, verified in a staging folder, then moved into place.
    Unpack(UnpackArgs),
    /// Apply a thin bundle onto the bundle it updates (atomically), verifying the result.
    Apply(ApplyArgs),
    /// Show what changed between two bundles (folders or manifest.json files).
    Diff(DiffArgs),
}

/// Trust roots for bundle signatures (keys must be valid for purpose `mirror-bundle`).
#[derive(Args)]
pub(crate) struct MirrorTrust {
    /// Trusted public key (PEM) or key reference; repeatable. Trusted for every purpose.
    #[arg(long, short = 'k', conflicts_with = "keyring")]
    key: Vec<String>,
    /// Keyring (TOML file or directory): only keys with purpose `mirror-bundle` count.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Override the bundle's freshness budget (seconds since generatedAt).
    #[arg(long)]
    max_age: Option<u64>,
}

impl MirrorTrust {
    fn keyring(&self, dev: DevKeys) -> Result<Keyring> {
        TrustArgs {
            key: self.key.clone(),
            keyring: self.keyring.clone(),
            purpose: None,
        }
        .keyring(dev)
    }
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The bundle spec (YAML; see docs/mirror.md).
    #[arg(long, alias = "images")]
    spec: PathBuf,
    /// Output folder (must not exist, or be empty).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Make a thin bundle over this base manifest (OLD/manifest.json).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Pin generatedAt (RFC 3339); default SOURCE_DATE_EPOCH if set, else now.
    #[arg(long)]
    generated_at: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct SignArgs {
    /// The bundle's manifest.json.
    manifest: PathBuf,
    /// Signing key reference; repeat for a multi-signature envelope.
    #[arg(long, short = 'k', required = true)]
    key: Vec<String>,
    /// Where the envelope goes (default: manifest.dsse beside the manifest).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Bundle folder, its manifest.dsse, or a bundle archive (.tar.gz / .tar.zst).
    target: PathBuf,
    #[command(flatten)]
    trust: MirrorTrust,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

#[derive(Args)]
pub(crate) struct ChecksumArgs {
    /// Bundle folder.
    dir: PathBuf,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

#[derive(Args)]
pub(crate) struct PackArgs {
    /// Signed bundle folder.
    dir: PathBuf,
    /// Archive to write: NAME.tar.gz or NAME.tar.zst.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct UnpackArgs {
    /// Bundle archive (.tar.gz / .tar.zst).
    archive: PathBuf,
    /// Destination folder (must not exist, or be empty).
    #[arg(long, short = 'o')]
    output: PathBuf,
    #[command(flatten)]
    trust: MirrorTrust,
    /// Largest total unpacked size in bytes.
    #[arg(long)]
    max_size: Option<u64>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// Thin bundle: folder or archive.
    thin: PathBuf,
    /// The bundle folder it updates (replaced atomically unless --output is given).
    #[arg(long)]
    onto: PathBuf,
    /// Write the updated bundle here instead of replacing --onto.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    trust: MirrorTrust,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// Old bundle (folder or manifest.json).
    a: PathBuf,
    /// New bundle (folder or manifest.json).
    b: PathBuf,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

pub(crate) fn run(cmd: MirrorCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        MirrorCommand::Create(a) => create(a),
        MirrorCommand::Sign(a) => sign(a, dev),
        MirrorCommand::Verify(a) => verify_cmd(a, dev),
        MirrorCommand::VerifyChecksums(a) => verify_checksums(a),
        MirrorCommand::Pack(a) => pack(a),
        MirrorCommand::Unpack(a) => unpack(a, dev),
        MirrorCommand::Apply(a) => apply(a, dev),
        MirrorCommand::Diff(a) => diff(a),
    }
}

/// Map a library error to an exit code (SPEC §1).
fn lib(e: stella_mirror::Error) -> anyhow::Error {
    match e.kind() {
        ErrorKind::Verification => fail(VERIFY_FAILED, e.to_string()),
        ErrorKind::NotFound => fail(NOT_FOUND, e.to_string()),
        ErrorKind::Key => match e {
            stella_mirror::Error::Key(k) => anyhow::Error::new(k),
            other => fail(USAGE, other.to_string()),
        },
        _ => fail(USAGE, e.to_string()),
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn create(a: CreateArgs) -> Result<()> {
    let spec = stella_mirror::spec::Spec::load(&a.spec).map_err(lib)?;
    let generated_at = match &a.generated_at {
        Some(t) => stella_mirror::manifest::parse_time(t).map_err(|e| fail(USAGE, e))?,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.trim().is_empty() => {
                let secs: i64 = v.trim().parse().map_err(|_| {
                    fail(USAGE, format!("SOURCE_DATE_EPOCH={v:?} is not an integer"))
                })?;
                OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|e| fail(USAGE, format!("SOURCE_DATE_EPOCH: {e}")))?
            }
            _ => OffsetDateTime::now_utc(),
        },
    };
    let progress = Bar::new();
    let r = stella_mirror::create::create(
        &spec,
        &a.output,
        &stella_mirror::create::CreateOptions {
            generated_at,
            base: a.base.clone(),
        },
        &progress,
    )
    .map_err(lib)?;
    let m = &r.manifest;
    if a.json {
        return print_json(&json!({
            "output": a.output,
            "bundle": m.bundle, "version": m.version, "generation": m.generation,
            "kind": m.kind, "generatedAt": m.generated_at,
            "files": m.files.len(), "bytes": m.total_size(),
            "written": r.written, "writtenBytes": r.written_bytes,
            "images": m.images, "removed": m.removed,
        }));
    }
    println!(
        "Created {} bundle {} {} (generation {}) in {}: {} files, {} bytes{}",
        if m.kind == stella_mirror::Kind::Thin {
            "thin"
        } else {
            "full"
        },
        m.bundle,
        m.version,
        m.generation,
        a.output.display(),
        m.files.len(),
        m.total_size(),
        if m.kind == stella_mirror::Kind::Thin {
            format!(
                " ({} carried, {} bytes; {} removed)",
                r.written,
                r.written_bytes,
                m.removed.len()
            )
        } else {
            String::new()
        }
    );
    println!(
        "Next: stella mirror sign {} --key KEY",
        a.output.join("manifest.json").display()
    );
    Ok(())
}

fn sign(a: SignArgs, dev: DevKeys) -> Result<()> {
    let signers = crate::attest::load_signers(&a.key, dev)?;
    let refs: Vec<&dyn stella_keys::Signer> = signers.iter().map(|s| s.as_ref()).collect();
    let out = a.output.clone().unwrap_or_else(|| {
        a.manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join(stella_mirror::names::ENVELOPE)
    });
    let progress = Bar::new();
    let r = stella_mirror::sign::sign(
        &a.manifest,
        &out,
        &refs,
        OffsetDateTime::now_utc(),
        &progress,
    )
    .map_err(lib)?;
    if a.json {
        return print_json(&json!({
            "envelope": r.envelope, "dir": r.dir,
            "manifestSha256": r.manifest_digest.hex(), "keyids": r.key_ids, "files": r.files,
        }));
    }
    println!(
        "Signed {} ({} files) with {} key(s): {}",
        r.dir.display(),
        r.files,
        r.key_ids.len(),
        r.key_ids.join(", ")
    );
    println!("Wrote {}, SHA256SUMS, SHA256SUMS.dsse, SHA256SUMS.sig, public-key.pem, mirror/metadata/mirror.dsse.json", r.envelope.display());
    Ok(())
}

fn is_archive(p: &Path) -> bool {
    stella_mirror::archive::Compression::from_name(p).is_some()
        || p.extension().is_some_and(|e| e == "tar")
}

fn opts<'a>(keyring: &'a Keyring, t: &MirrorTrust) -> verify::Options<'a> {
    verify::Options {
        keyring,
        threshold: t.threshold,
        now: OffsetDateTime::now_utc(),
        max_age: t.max_age,
    }
}

fn report_json(r: &verify::Report, source: &Path) -> serde_json::Value {
    let m = &r.meta.manifest;
    json!({
        "verified": true,
        "source": source,
        "bundle": m.bundle, "version": m.version, "generation": m.generation, "kind": m.kind,
        "generatedAt": m.generated_at, "ageSeconds": r.meta.age_seconds, "validForSeconds": m.valid_for(),
        "issuer": m.issuer,
        "manifestSha256": r.meta.manifest_digest.hex(),
        "signers": r.meta.signers.iter().map(|s| json!({"id": s.id, "keyid": s.key_id.as_str()})).collect::<Vec<_>>(),
        "files": r.files_checked, "bytes": r.bytes_checked, "fromBase": r.from_base.len(),
        "images": m.images,
        "warnings": r.meta.warnings,
    })
}

fn print_report(r: &verify::Report, source: &Path) {
    let m = &r.meta.manifest;
    println!(
        "Verified OK: {} {} (generation {}, {}) from {}",
        m.bundle,
        m.version,
        m.generation,
        if m.kind == stella_mirror::Kind::Thin {
            "thin"
        } else {
            "full"
        },
        source.display()
    );
    println!(
        "signed by {} trusted key(s): {}",
        r.meta.signers.len(),
        r.meta
            .signers
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} files, {} bytes match the manifest; generated {} ({} s ago, valid for {} s)",
        r.files_checked,
        r.bytes_checked,
        m.generated_at,
        r.meta.age_seconds,
        m.valid_for()
    );
    if !r.from_base.is_empty() {
        println!(
            "{} files come from the base bundle (apply with `stella mirror apply`)",
            r.from_base.len()
        );
    }
}

fn warn_all(r: &verify::Report) {
    for w in &r.meta.warnings {
        eprintln!("warning: {w}");
    }
}

fn verify_cmd(a: VerifyArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    let progress = Bar::new();
    let t = &a.target;
    let r = if t.is_dir() {
        verify::verify_dir(t, &o, &progress)
    } else if !t.exists() {
        return Err(fail(NOT_FOUND, format!("{}: no such file", t.display())));
    } else if is_archive(t) {
        verify::verify_archive(t, &o, &progress)
    } else {
        // An envelope path: the bundle is its folder.
        let dir = match t.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (|| {
            let mut meta = verify::read_dir_metadata(&dir)?;
            if t.file_name() != Some(std::ffi::OsStr::new(stella_mirror::names::ENVELOPE)) {
                let bytes = std::fs::read(t).map_err(|e| stella_mirror::Error::Io {
                    path: t.clone(),
                    source: e,
                })?;
                meta.insert(stella_mirror::names::ENVELOPE.into(), bytes);
            }
            let vm = verify::verify_metadata(&meta, &o)?;
            let observed = verify::hash_dir_content(&dir, &vm.manifest, &progress)?;
            let (files_checked, bytes_checked, from_base) =
                verify::check_files(&vm.manifest, &observed)?;
            Ok(verify::Report {
                meta: vm,
                files_checked,
                bytes_checked,
                from_base,
            })
        })()
    }
    .map_err(lib)?;
    warn_all(&r);
    if a.output == "json" {
        print_json(&report_json(&r, t))
    } else {
        print_report(&r, t);
        Ok(())
    }
}

fn verify_checksums(a: ChecksumArgs) -> Result<()> {
    let progress = Bar::new();
    let (n, bytes) = verify::verify_checksums(&a.dir, &progress).map_err(lib)?;
    if a.output == "json" {
        return print_json(&json!({"verified": true, "files": n, "bytes": bytes}));
    }
    println!("SHA256SUMS OK: {n} files, {bytes} bytes");
    Ok(())
}

fn pack(a: PackArgs) -> Result<()> {
    let mtime = stella_mirror::archive::source_date_epoch().map_err(lib)?;
    let progress = Bar::new();
    let r = stella_mirror::archive::pack(&a.dir, &a.output, mtime, &progress).map_err(lib)?;
    if a.json {
        return print_json(&json!({
            "archive": a.output, "entries": r.entries, "contentBytes": r.content_bytes,
            "archiveBytes": r.archive_bytes, "mtime": mtime,
        }));
    }
    println!(
        "Packed {} entries ({} bytes) into {}: {} bytes",
        r.entries,
        r.content_bytes,
        a.output.display(),
        r.archive_bytes
    );
    Ok(())
}

fn unpack(a: UnpackArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    let mut limits = stella_mirror::archive::Limits::default();
    if let Some(m) = a.max_size {
        limits.max_total = m;
        limits.max_entry = limits.max_entry.min(m);
    }
    let progress = Bar::new();
    let r = stella_mirror::archive::unpack(&a.archive, &a.output, limits, &o, &progress)
        .map_err(lib)?;
    warn_all(&r);
    if a.json {
        let mut v = report_json(&r, &a.archive);
        v["output"] = json!(a.output);
        return print_json(&v);
    }
    print_report(&r, &a.archive);
    println!("Unpacked into {}", a.output.display());
    Ok(())
}

fn apply(a: ApplyArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    let progress = Bar::new();
    let r = stella_mirror::thin::apply(&a.thin, &a.onto, a.output.as_deref(), &o, &progress)
        .map_err(lib)?;
    warn_all(&r.report);
    if a.json {
        let mut v = report_json(&r.report, &r.target);
        v["carried"] = json!(r.carried);
        v["copiedFromBase"] = json!(r.from_base);
        v["removed"] = json!(r.removed);
        return print_json(&v);
    }
    println!(
        "Applied {} onto {}: {} files carried, {} from the base, {} removed",
        a.thin.display(),
        a.onto.display(),
        r.carried,
        r.from_base,
        r.removed
    );
    print_report(&r.report, &r.target);
    Ok(())
}

fn load_manifest(p: &Path) -> Result<stella_mirror::Manifest> {
    let file = if p.is_dir() {
        p.join(stella_mirror::names::MANIFEST)
    } else {
        p.to_path_buf()
    };
    let bytes = crate::io::read_limited(
        &file.display().to_string(),
        stella_mirror::MAX_METADATA_BYTES,
    )?;
    stella_mirror::Manifest::from_json(&bytes)
        .map_err(|e| fail(USAGE, format!("{}: {e}", file.display())))
}

fn diff(a: DiffArgs) -> Result<()> {
    let old = load_manifest(&a.a)?;
    let new = load_manifest(&a.b)?;
    let d = stella_mirror::thin::diff(&old, &new);
    if a.output == "json" {
        return print_json(&json!({
            "from": {"bundle": old.bundle, "version": old.version, "generation": old.generation},
            "to": {"bundle": new.bundle, "version": new.version, "generation": new.generation},
            "diff": d,
        }));
    }
    println!(
        "{} {} (generation {}) -> {} {} (generation {})",
        old.bundle, old.version, old.generation, new.bundle, new.version, new.generation
    );
    for f in &d.added {
        println!("+ {}  ({} bytes)", f.path, f.size);
    }
    for c in &d.changed {
        println!("~ {}  ({} -> {} bytes)", c.path, c.old_size, c.new_size);
    }
    for f in &d.removed {
        println!("- {}", f.path);
    }
    for i in &d.images_added {
        println!("+ image {i}");
    }
    for i in &d.images_changed {
        println!("~ image {i}");
    }
    for i in &d.images_removed {
        println!("- image {i}");
    }
    println!(
        "{} added, {} changed, {} removed, {} unchanged; a thin bundle carries {} bytes",
        d.added.len(),
        d.changed.len(),
        d.removed.len(),
        d.unchanged,
        d.thin_bytes
    );
    Ok(())
}

/// A progress bar on stderr, drawn only when stderr is a terminal (at most 10 times a second).
struct Bar {
    tty: bool,
    done: AtomicU64,
    state: Mutex<BarState>,
}

struct BarState {
    phase: String,
    total: u64,
    started: Instant,
    last: Option<Instant>,
}

impl Bar {
    fn new() -> Self {
        Bar {
            tty: std::io::stderr().is_terminal(),
            done: AtomicU64::new(0),
            state: Mutex::new(BarState {
                phase: String::new(),
                total: 0,
                started: Instant::now(),
                last: None,
            }),
        }
    }

    fn draw(&self, st: &BarState, force: bool) {
        let done = self.done.load(Ordering::Relaxed);
        let secs = st.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs / 1e6;
        let line = if st.total > 0 {
            let pct = (done as f64 / st.total as f64 * 100.0).min(100.0);
            let width = 30usize;
            let filled = (pct / 100.0 * width as f64) as usize;
            format!(
                "\r{:<8} [{}{}] {:5.1}% {:.0} MB/s ",
                st.phase,
                "#".repeat(filled),
                "-".repeat(width - filled),
                pct,
                rate
            )
        } else {
            format!(
                "\r{:<8} {} MB {:.0} MB/s ",
                st.phase,
                done / 1_000_000,
                rate
            )
        };
        let _ = force;
        eprint!("{line}");
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        if !self.tty {
            return;
        }
        if let Ok(mut st) = self.state.lock() {
            st.phase = phase.to_string();
            st.total = total;
            st.started = Instant::now();
            st.last = None;
            self.done.store(0, Ordering::Relaxed);
        }
    }

    fn advance(&self, n: u64) {
        if !self.tty {
            return;
        }
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut st) = self.state.try_lock() {
            let now = Instant::now();
            if st
                .last
                .is_none_or(|l| now - l >= Duration::from_millis(100))
            {
                st.last = Some(now);
                self.draw(&st, false);
            }
        }
    }

    fn finish(&self) {
        if !self.tty {
            return;
        }
        if let Ok(st) = self.state.lock() {
            if st.last.is_some() {
                self.draw(&st, true);
                eprintln!();
            }
        }
    }
}
