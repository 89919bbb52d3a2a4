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
use serde::Serialize;
use stella_keys::{DevKeys, Keyring};
use stella_mirror::{ErrorKind, HttpTimeStamper, Output, Source};
use stella_oci::{Event, Progress};
use time::OffsetDateTime;

use crate::exit::{fail, NOT_FOUND, USAGE, VERIFY_FAILED};
use crate::verify::TrustArgs;
use crate::view::SignerView;

#[derive(Subcommand)]
pub(crate) enum MirrorCommand {
    /// Build a bundle folder from a YAML spec (thin with --base).
    Create(CreateArgs),
    /// Sign a bundle: manifest.dsse, SHA256SUMS(.dsse/.sig), public-key.pem, detached header
    /// (and an RFC 3161 time anchor with --tsa-url or --tsa-key/--tsa-cert).
    Sign(SignArgs),
    /// Stamp a signed bundle with an RFC 3161 time anchor (time-anchor.json): from a TSA URL,
    /// a local TSA key and certificate, or a token obtained elsewhere.
    Anchor(AnchorArgs),
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
    /// Verify a bundle (folder or archive), then push its images into a registry, digests and tags kept.
    Load(LoadArgs),
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
    /// Trust roots (PEM certificates) for the bundle's time anchor: a time-anchor.json whose
    /// TSA certificate chains to one of them is trusted, and its time bounds the local clock
    /// from below when judging freshness. Without it an anchor is checked but not trusted.
    #[arg(long, value_name = "PEM")]
    time_trust_roots: Option<PathBuf>,
    /// Signed key revocation list (`stella key revoke`): listed keys are refused.
    #[arg(long, value_name = "FILE")]
    revocations: Option<PathBuf>,
    /// The loaded --time-trust-roots (filled by `keyring`).
    #[arg(skip)]
    time_roots: std::sync::OnceLock<stella_mirror::AnchorTrustRoots>,
}

impl MirrorTrust {
    /// The signature keyring; also loads --time-trust-roots (see `opts`).
    fn keyring(&self, dev: DevKeys) -> Result<Keyring> {
        if let Some(p) = &self.time_trust_roots {
            let pem = crate::io::read_limited(&p.display().to_string(), 16 << 20)?;
            let roots = stella_mirror::AnchorTrustRoots::from_pem(&pem)
                .map_err(|e| fail(USAGE, format!("--time-trust-roots {}: {e}", p.display())))?;
            let _ = self.time_roots.set(roots);
        }
        TrustArgs {
            key: self.key.clone(),
            keyring: self.keyring.clone(),
            purpose: None,
            revocations: self.revocations.clone(),
        }
        .keyring(dev)
    }
}

/// The report format of a command whose `--output` names the file or folder it writes
/// (create, sign, pack, unpack, apply): `--format json`. Every other command takes
/// `--output json`.
#[derive(Args)]
pub(crate) struct ReportFormat {
    /// Report format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Same as --format json (hidden; the older spelling).
    #[arg(long, hide = true)]
    json: bool,
}

impl ReportFormat {
    fn json(&self) -> bool {
        self.json || self.format == "json"
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
    /// Registries of the spec's `ref:` images.
    #[command(flatten)]
    registry: crate::registry::RegistryArgs,
    #[command(flatten)]
    report: ReportFormat,
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
    /// Pin the detached header's `created` (RFC 3339); default SOURCE_DATE_EPOCH if set, else
    /// now. With Ed25519 keys, a pinned time makes signing byte-reproducible.
    #[arg(long, value_name = "TIME")]
    created: Option<String>,
    #[command(flatten)]
    tsa: TsaArgs,
    #[command(flatten)]
    report: ReportFormat,
}

/// Where an RFC 3161 time anchor comes from.
#[derive(Args)]
pub(crate) struct TsaArgs {
    /// Time stamp authority URL: the signed manifest's SHA-256 is POSTed there as an RFC 3161
    /// request (application/timestamp-query) and the token kept in time-anchor.json.
    #[arg(long, value_name = "URL", conflicts_with = "tsa_key")]
    tsa_url: Option<String>,
    /// Local TSA: its signing key (ECDSA P-256 key reference).
    #[arg(long, value_name = "KEYREF", requires = "tsa_cert")]
    tsa_key: Option<String>,
    /// Local TSA: its certificate (PEM; extended key usage id-kp-timeStamping, critical),
    /// followed by any chain to include in the tokens.
    #[arg(long, value_name = "PEM", requires = "tsa_key")]
    tsa_cert: Option<PathBuf>,
    /// Local TSA: the policy OID of its tokens (default: the first certificatePolicies OID of
    /// the TSA certificate).
    #[arg(long, value_name = "OID", requires = "tsa_key")]
    tsa_policy: Option<String>,
    /// Seconds to wait for --tsa-url.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    tsa_timeout: u64,
}

#[derive(Args)]
pub(crate) struct AnchorArgs {
    /// Signed bundle folder.
    dir: PathBuf,
    #[command(flatten)]
    tsa: TsaArgs,
    /// A TimeStampToken or TimeStampResp (DER) obtained elsewhere, e.g. with `openssl ts
    /// -query -data DIR/manifest.json -sha256 -cert` sent to a TSA from a connected machine.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tsa_url", "tsa_key"])]
    tsa_token: Option<PathBuf>,
    /// The anchor's `source` for --tsa-token (default: the file name).
    #[arg(long, requires = "tsa_token")]
    source: Option<String>,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Same as --output json (hidden; the older spelling).
    #[arg(long, hide = true)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Bundle folder, its manifest.dsse, a bundle archive (.tar.gz / .tar.zst / .tar, told
    /// by its name or its first bytes), or its detached header
    /// DIR/mirror/metadata/mirror.dsse.json (checked on its own: signatures over the manifest,
    /// fields, freshness; not the content).
    target: PathBuf,
    /// With a detached header: the manifest.json it signs (default: the bundle's, DIR of
    /// DIR/mirror/metadata/mirror.dsse.json). Keyless signatures (manifest.sigstore.json)
    /// are read from beside it when present.
    #[arg(long, value_name = "FILE")]
    payload: Option<PathBuf>,
    #[command(flatten)]
    trust: MirrorTrust,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

#[derive(Args)]
pub(crate) struct ChecksumArgs {
    /// Bundle folder. Its SHA256SUMS may list any number of files in any line order, as
    /// `sha256sum -c` takes it; it is read as a stream, memory growing only by a compact list
    /// of the listed paths (peak about 115 MiB at 1,000,000 files of ~86-byte paths, sorted
    /// or not).
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
    #[command(flatten)]
    report: ReportFormat,
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
    #[command(flatten)]
    report: ReportFormat,
}

#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// Thin bundle: folder or archive.
    thin: PathBuf,
    /// The bundle folder it updates (replaced atomically unless --output is given; in place,
    /// its unchanged files are hard-linked into the result, not copied).
    #[arg(long)]
    onto: PathBuf,
    /// Write the updated bundle here instead of replacing --onto (every file a copy: the two
    /// folders share nothing).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    trust: MirrorTrust,
    #[command(flatten)]
    report: ReportFormat,
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

#[derive(Args)]
pub(crate) struct LoadArgs {
    /// Bundle folder, its manifest.dsse, or a bundle archive (.tar.zst / .tar.gz): verified
    /// first (an archive in a temporary folder), nothing pushed unless it verifies.
    bundle: PathBuf,
    /// Target registry: HOST[:PORT].
    #[arg(long)]
    registry: String,
    /// Repository path prefix under the registry: HOST:PORT/PREFIX/REPO:TAG.
    #[arg(long)]
    prefix: Option<String>,
    /// Verify and ask the registry what it lacks, but push nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    trust: MirrorTrust,
    #[command(flatten)]
    registry_args: crate::registry::RegistryArgs,
    /// Folder for unpacking an archive before pushing (default: the system temp folder).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Output format: text, or json (the verification and one push report per image).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

pub(crate) fn run(cmd: MirrorCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        MirrorCommand::Create(a) => create(a),
        MirrorCommand::Sign(a) => sign(a, dev),
        MirrorCommand::Anchor(a) => anchor_cmd(a, dev),
        MirrorCommand::Verify(a) => verify_cmd(a, dev),
        MirrorCommand::VerifyChecksums(a) => verify_checksums(a),
        MirrorCommand::Pack(a) => pack(a),
        MirrorCommand::Unpack(a) => unpack(a, dev),
        MirrorCommand::Apply(a) => apply(a, dev),
        MirrorCommand::Diff(a) => diff(a),
        MirrorCommand::Load(a) => load(a, dev),
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
        // The exit codes of keyless signing: unavailable 10, refused 2 (3 for 401/403),
        // untrusted 1.
        ErrorKind::Timestamp => match e {
            stella_mirror::Error::Timestamp(u) => {
                anyhow::Error::new(stella_keyless::KeylessError::Upstream(u))
            }
            other => fail(USAGE, other.to_string()),
        },
        _ => fail(USAGE, e.to_string()),
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    crate::view::print(v)
}

fn create(a: CreateArgs) -> Result<()> {
    let spec = stella_mirror::Spec::load(&a.spec).map_err(lib)?;
    let generated_at =
        stella_mirror::time_or_now(explicit_time("--generated-at", a.generated_at.as_deref())?)
            .map_err(lib)?;
    let progress = Bar::new();
    let r = stella_mirror::create(
        &spec,
        &a.output,
        &stella_mirror::CreateOptions {
            generated_at,
            base: a.base.clone(),
            registry: a.registry.config(),
        },
        &progress,
    )
    .map_err(lib_or_registry)?;
    let m = &r.head;
    if a.report.json() {
        return print_json(&CreateView {
            output: &a.output,
            bundle: &m.bundle,
            version: &m.version,
            generation: m.generation,
            kind: m.kind,
            generated_at: &m.generated_at,
            files: r.files,
            bytes: r.bytes,
            written: r.written,
            written_bytes: r.written_bytes,
            images: &m.images,
            removed: &m.removed,
            pulled: r
                .pulled
                .iter()
                .map(|p| PulledView {
                    reference: &p.reference,
                    source: &p.source,
                    digest: p.digest.to_string(),
                    source_digest: p.source_digest.to_string(),
                    platforms: &p.platforms,
                    blobs_downloaded: p.blobs_downloaded,
                    bytes_downloaded: p.bytes_downloaded,
                })
                .collect(),
        });
    }
    println!(
        "Created {} bundle {} {} (generation {}) in {}: {} files, {} bytes{}",
        kind_name(m.kind),
        m.bundle,
        m.version,
        m.generation,
        a.output.display(),
        r.files,
        r.bytes,
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

/// `thin` or `full`, for the text reports.
fn kind_name(kind: stella_mirror::Kind) -> &'static str {
    match kind {
        stella_mirror::Kind::Thin => "thin",
        stella_mirror::Kind::Full => "full",
    }
}

/// An RFC 3339 time given with `flag`.
fn explicit_time(flag: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>> {
    value
        .map(|t| stella_mirror::parse_time(t).map_err(|e| fail(USAGE, format!("{flag}: {e}"))))
        .transpose()
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
    // A local TSA is checked before anything is signed.
    let tsa_key = match &a.tsa.tsa_key {
        Some(k) => Some(crate::attest::load_signers(std::slice::from_ref(k), dev)?),
        None => None,
    };
    let local = match (&tsa_key, &a.tsa.tsa_cert) {
        (Some(k), Some(cert)) => Some(local_tsa(k[0].as_ref(), cert, a.tsa.tsa_policy.as_deref())?),
        _ => None,
    };
    let created = stella_mirror::time_or_now(explicit_time("--created", a.created.as_deref())?)
        .map_err(lib)?;
    let progress = Bar::new();
    let mut r = stella_mirror::sign_with(
        &a.manifest,
        &out,
        &refs,
        created,
        local.as_ref().map(|t| t as &dyn stella_mirror::TimeStamper),
        &progress,
    )
    .map_err(lib)?;
    if let Some(url) = &a.tsa.tsa_url {
        // By the signed manifest's digest: a manifest of millions of files is never read
        // back into memory.
        r.anchor = Some(
            stamp_url_digest(&r.dir, &r.manifest_digest, url, a.tsa.tsa_timeout).map_err(|e| {
                e.context(format!(
                    "{} is signed, but has no time anchor",
                    r.dir.display()
                ))
            })?,
        );
    }
    if a.report.json() {
        return print_json(&SignView {
            envelope: &r.envelope,
            dir: &r.dir,
            manifest_sha256: r.manifest_digest.hex(),
            keyids: &r.key_ids,
            files: r.files,
            time_anchor: r.anchor.as_ref().map(AnchorView::of),
        });
    }
    println!(
        "Signed {} ({} files) with {} key(s): {}",
        r.dir.display(),
        r.files,
        r.key_ids.len(),
        r.key_ids.join(", ")
    );
    println!("Wrote {}, SHA256SUMS, SHA256SUMS.dsse, SHA256SUMS.sig, public-key.pem, mirror/metadata/mirror.dsse.json", r.envelope.display());
    if let Some(an) = &r.anchor {
        print_anchor_written(an);
    }
    Ok(())
}

fn local_tsa<'a>(
    key: &'a dyn stella_keys::Signer,
    cert: &Path,
    policy: Option<&str>,
) -> Result<stella_mirror::LocalTsa<'a>> {
    let pem = crate::io::read_limited(&cert.display().to_string(), 16 << 20)?;
    stella_mirror::local_tsa(key, &pem, policy).map_err(lib)
}

/// The TSA at `url`, asked once with a `timeout` in seconds (`--tsa-timeout`).
fn http_tsa(url: &str, timeout: u64) -> Result<HttpTimeStamper> {
    HttpTimeStamper::new(
        url,
        HttpTimeStamper::single_attempt(Duration::from_secs(timeout)),
    )
    .map_err(lib)
}

/// Ask the RFC 3161 TSA at `url` to stamp the manifest whose SHA-256 is `sha256` (the
/// manifest `dir` was just signed over), and write the anchor: one attempt, `timeout` seconds.
fn stamp_url_digest(
    dir: &Path,
    sha256: &stella_mirror::Digest,
    url: &str,
    timeout: u64,
) -> Result<stella_mirror::Anchor> {
    stella_mirror::stamp_digest(dir, sha256, &http_tsa(url, timeout)?).map_err(lib)
}

fn anchor_cmd(a: AnchorArgs, dev: DevKeys) -> Result<()> {
    let an = if let Some(p) = &a.tsa_token {
        let bytes = crate::io::read_limited(&p.display().to_string(), 1 << 20)?;
        let source = a
            .source
            .clone()
            .unwrap_or_else(|| format!("token file {}", p.display()));
        stella_mirror::attach_anchor_token(&a.dir, &bytes, &source).map_err(lib)?
    } else if let Some(url) = &a.tsa.tsa_url {
        stella_mirror::attach_anchor(&a.dir, &http_tsa(url, a.tsa.tsa_timeout)?).map_err(lib)?
    } else if let (Some(k), Some(cert)) = (&a.tsa.tsa_key, &a.tsa.tsa_cert) {
        let key = crate::attest::load_signers(std::slice::from_ref(k), dev)?;
        let tsa = local_tsa(key[0].as_ref(), cert, a.tsa.tsa_policy.as_deref())?;
        stella_mirror::attach_anchor(&a.dir, &tsa).map_err(lib)?
    } else {
        return Err(fail(
            USAGE,
            "give --tsa-url URL, --tsa-key KEY with --tsa-cert PEM, or --tsa-token FILE",
        ));
    };
    if a.json || a.output == "json" {
        return print_json(&AnchorWrittenView {
            dir: &a.dir,
            time_anchor: AnchorView::of(&an),
        });
    }
    print_anchor_written(&an);
    Ok(())
}

fn print_anchor_written(an: &stella_mirror::Anchor) {
    println!(
        "Wrote time-anchor.json: RFC 3161 token from {} at {} (TSA {}, serial {})",
        an.source,
        stella_mirror::format_time(an.time),
        an.tsa,
        an.serial
    );
}

fn opts<'a>(keyring: &'a Keyring, t: &'a MirrorTrust) -> stella_mirror::VerifyOptions<'a> {
    stella_mirror::VerifyOptions {
        keyring,
        threshold: t.threshold,
        now: OffsetDateTime::now_utc(),
        max_age: t.max_age,
        time_roots: t.time_roots.get(),
    }
}

fn report_json<'a>(r: &'a stella_mirror::VerifiedBundle, source: &'a Path) -> ReportView<'a> {
    let m = &r.meta.manifest;
    ReportView {
        verified: true,
        source,
        summary: SummaryView::of(m, r.meta.age_seconds, &m.issuer),
        manifest_sha256: r.meta.manifest_digest.hex(),
        signers: SignerView::all(&r.meta.signers),
        files: r.files_checked,
        bytes: r.bytes_checked,
        from_base: r.from_base.len(),
        images: &m.images,
        time_anchor: r.meta.anchor.as_ref().map(AnchorView::of),
        freshness: FreshnessView {
            judged_at: stella_mirror::format_time(r.meta.judged_at),
            time_source: r.meta.time_source.name(),
        },
        warnings: &r.meta.warnings,
    }
}

fn print_report(r: &stella_mirror::VerifiedBundle, source: &Path) {
    let m = &r.meta.manifest;
    println!(
        "Verified OK: {} {} (generation {}, {}) from {}",
        m.bundle,
        m.version,
        m.generation,
        kind_name(m.kind),
        source.display()
    );
    println!(
        "signed by {} trusted key(s): {}",
        r.meta.signers.len(),
        crate::view::signer_ids(&r.meta.signers)
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
    if let Some(an) = &r.meta.anchor {
        println!(
            "time anchor: {} from {} (RFC 3161, TSA {}): {}",
            stella_mirror::format_time(an.time),
            an.source,
            an.tsa,
            match &an.chain {
                Some(chain) => format!("trusted: {}", chain.join(" issued by ")),
                None => "NOT trusted (no --time-trust-roots)".to_string(),
            }
        );
        if r.meta.time_source == stella_mirror::TimeSource::TimeAnchor {
            println!(
                "freshness judged at the anchor time {}: the local clock is behind it",
                stella_mirror::format_time(r.meta.judged_at)
            );
        }
    }
}

fn warn_all(r: &stella_mirror::VerifiedBundle) {
    for w in &r.meta.warnings {
        eprintln!("warning: {w}");
    }
}

fn verify_cmd(a: VerifyArgs, dev: DevKeys) -> Result<()> {
    match verify_target(&a, dev) {
        Ok(()) => Ok(()),
        Err(e) if a.output == "json" => Err(crate::exit::print_json_failure(
            e,
            crate::view::fields(&crate::view::VerifyFailureView {
                source: &a.target,
                threshold: a.trust.threshold,
            }),
        )),
        Err(e) => Err(e),
    }
}

/// Is `p` a detached header (by name, or because --payload was given for it)?
fn is_header(p: &Path, payload: Option<&Path>) -> bool {
    payload.is_some()
        || (p.file_name() == Path::new(stella_mirror::names::HEADER).file_name() && p.is_file())
}

/// `stella mirror verify DIR/mirror/metadata/mirror.dsse.json`: the header on its own.
fn verify_header_cmd(a: &VerifyArgs, o: &stella_mirror::VerifyOptions<'_>) -> Result<()> {
    let t = &a.target;
    let header =
        crate::io::read_limited(&t.display().to_string(), stella_mirror::MAX_METADATA_BYTES)?;
    let payload_path = match &a.payload {
        Some(p) => p.clone(),
        None => {
            // DIR/mirror/metadata/mirror.dsse.json -> DIR/manifest.json
            let abs = std::path::absolute(t).unwrap_or_else(|_| t.clone());
            let dir = abs
                .ancestors()
                .nth(Path::new(stella_mirror::names::HEADER).components().count())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            dir.join(stella_mirror::names::MANIFEST)
        }
    };
    // Keyless signatures (a bundle signed with a short-lived key) sit beside the payload.
    // Opened once, never blocking: a FIFO there is not waited on.
    let keyless = stella_mirror::open_keyless_beside(&payload_path).map_err(lib)?;
    let r = if payload_path.is_file() {
        // A file of any size (a manifest of a million files is checked as a stream, and so
        // are the keyless signatures beside it, which carry it again).
        stella_mirror::verify_header_file(
            &header,
            &payload_path,
            keyless.as_ref().map(stella_mirror::KeylessInput::File),
            o,
        )
    } else {
        let keyless = keyless.map(|k| k.read()).transpose().map_err(lib)?;
        // Standard input or a pipe; a missing payload says how to give one.
        let payload = crate::io::read_limited(
            &payload_path.display().to_string(),
            stella_mirror::MAX_METADATA_BYTES,
        )
        .map_err(|e| e.context("the detached header's payload (give it with --payload FILE)"))?;
        stella_mirror::verify_header_with_keyless(&header, &payload, keyless.as_deref(), o)
    }
    .map_err(lib)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let m = &r.manifest;
    if a.output == "json" {
        return print_json(&HeaderView {
            verified: true,
            form: "detached-header",
            source: t,
            payload: &payload_path,
            summary: SummaryView::of(m, r.age_seconds, &r.header.issuer),
            created: &r.header.created,
            purpose: &r.header.purpose,
            payload_type: &r.header.payload_type,
            manifest_sha256: r.manifest_digest.hex(),
            signers: SignerView::all(&r.signers),
            content_checked: false,
            warnings: &r.warnings,
        });
    }
    println!(
        "Verified OK: detached header of {} {} (generation {}, {}), created {}",
        m.bundle,
        m.version,
        m.generation,
        kind_name(m.kind),
        r.header.created
    );
    println!(
        "signed by {} trusted key(s): {}; issuer {}; payload {} sha256:{}",
        r.signers.len(),
        crate::view::signer_ids(&r.signers),
        r.header.issuer,
        payload_path.display(),
        r.manifest_digest.hex()
    );
    println!(
        "generated {} ({} s ago, valid for {} s); the bundle's files were not checked (verify the folder or archive for that)",
        m.generated_at,
        r.age_seconds,
        m.valid_for()
    );
    Ok(())
}

fn verify_target(a: &VerifyArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    if is_header(&a.target, a.payload.as_deref()) {
        return verify_header_cmd(a, &o);
    }
    let progress = Bar::new();
    let t = &a.target;
    let source = Source::for_verify(t).map_err(|e| match e {
        stella_mirror::Error::NotFound(_) => {
            fail(NOT_FOUND, format!("{}: no such file", t.display()))
        }
        e => lib(e),
    })?;
    let limits = stella_mirror::ArchiveLimits::default();
    let r = source
        .verify(&o, &limits, Output::verify_only(), &progress)
        .map_err(lib)?
        .report;
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
    let (n, bytes) = match stella_mirror::verify_checksums(&a.dir, &progress).map_err(lib) {
        Ok(r) => r,
        Err(e) if a.output == "json" => {
            return Err(crate::exit::print_json_failure(
                e,
                crate::view::fields(&DirView { dir: &a.dir }),
            ))
        }
        Err(e) => return Err(e),
    };
    if a.output == "json" {
        return print_json(&ChecksumsView {
            verified: true,
            files: n,
            bytes,
        });
    }
    println!("SHA256SUMS OK: {n} files, {bytes} bytes");
    Ok(())
}

fn pack(a: PackArgs) -> Result<()> {
    let mtime = stella_mirror::archive_mtime().map_err(lib)?;
    let progress = Bar::new();
    let r = stella_mirror::pack(&a.dir, &a.output, mtime, &progress).map_err(lib)?;
    if a.report.json() {
        return print_json(&PackView {
            archive: &a.output,
            entries: r.entries,
            content_bytes: r.content_bytes,
            archive_bytes: r.archive_bytes,
            mtime,
        });
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
    let mut limits = stella_mirror::ArchiveLimits::default();
    if let Some(m) = a.max_size {
        limits.max_total = m;
        limits.max_entry = limits.max_entry.min(m);
    }
    let progress = Bar::new();
    let r = stella_mirror::unpack(&a.archive, &a.output, limits, &o, &progress).map_err(lib)?;
    warn_all(&r);
    if a.report.json() {
        return print_json(&UnpackView {
            report: report_json(&r, &a.archive),
            output: &a.output,
        });
    }
    print_report(&r, &a.archive);
    println!("Unpacked into {}", a.output.display());
    Ok(())
}

fn apply(a: ApplyArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    let progress = Bar::new();
    let r =
        stella_mirror::apply(&a.thin, &a.onto, a.output.as_deref(), &o, &progress).map_err(lib)?;
    warn_all(&r.report);
    if a.report.json() {
        return print_json(&ApplyView {
            report: report_json(&r.report, &r.target),
            carried: r.carried,
            copied_from_base: r.from_base,
            removed: r.removed,
        });
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

/// A manifest (a bundle folder's or a file) without its files, and the files as a compact
/// index: a big manifest is read as a stream, never held whole.
fn load_manifest(p: &Path) -> Result<(stella_mirror::Manifest, stella_mirror::FileIndex)> {
    let file = if p.is_dir() {
        p.join(stella_mirror::names::MANIFEST)
    } else {
        p.to_path_buf()
    };
    if file.as_os_str() == "-" {
        let bytes = crate::io::read_limited("-", stella_mirror::MAX_METADATA_BYTES)?;
        let mut m = stella_mirror::Manifest::from_json(&bytes)
            .map_err(|e| fail(USAGE, format!("-: {e}")))?;
        let mut index = stella_mirror::FileIndex::default();
        for f in std::mem::take(&mut m.files) {
            index.push(f).map_err(|e| fail(USAGE, format!("-: {e}")))?;
        }
        return Ok((m, index));
    }
    let limits = stella_mirror::StreamLimits::default();
    let (m, index, _) = stella_mirror::read_file_list(&file, &limits).map_err(|e| match e {
        stella_mirror::Error::NotFound(_) => fail(
            crate::exit::NOT_FOUND,
            format!("{}: no such file", file.display()),
        ),
        e => lib(e),
    })?;
    Ok((m, index))
}

/// The manifest file of a bundle folder or a file.
fn manifest_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join(stella_mirror::names::MANIFEST)
    } else {
        p.to_path_buf()
    }
}

fn diff(a: DiffArgs) -> Result<()> {
    let (old_file, new_file) = (manifest_file(&a.a), manifest_file(&a.b));
    let (old, new, d) = if old_file.as_os_str() == "-" || new_file.as_os_str() == "-" {
        // Standard input (bounded by the metadata limit) is held, as before.
        let (old, old_files) = load_manifest(&a.a)?;
        let (new, new_files) = load_manifest(&a.b)?;
        let d = stella_mirror::diff_indexed(&old, &old_files, &new, &new_files);
        (old, new, d)
    } else {
        // Two files: read as two streams at once, merged as they come (neither file list
        // is held: memory follows the differences, not the file count).
        let limits = stella_mirror::StreamLimits::default();
        stella_mirror::diff_manifest_files(&old_file, &new_file, &limits).map_err(|e| match e {
            stella_mirror::Error::NotFound(f) => fail(
                crate::exit::NOT_FOUND,
                format!("{}: no such file", f.display()),
            ),
            e => lib(e),
        })?
    };
    let view = DiffView {
        from: BundleIdView::of(&old),
        to: BundleIdView::of(&new),
        diff: &d,
    };
    if a.output == "json" {
        // Written as the lists are read back (they may be spilled to temporary files).
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &DiffJson(&view))?;
        std::io::Write::write_all(&mut out, b"\n")?;
        std::io::Write::flush(&mut out)?;
        return Ok(());
    }
    println!(
        "{} {} (generation {}) -> {} {} (generation {})",
        old.bundle, old.version, old.generation, new.bundle, new.version, new.generation
    );
    let spill = |e: std::io::Error| {
        lib(stella_mirror::Error::Io {
            path: std::env::temp_dir(),
            source: e,
        })
    };
    for f in d.added.iter().map_err(spill)? {
        let f = f.map_err(spill)?;
        println!("+ {}  ({} bytes)", f.path, f.size);
    }
    for c in d.changed.iter().map_err(spill)? {
        let c = c.map_err(spill)?;
        println!("~ {}  ({} -> {} bytes)", c.path, c.old_size, c.new_size);
    }
    for f in d.removed.iter().map_err(spill)? {
        let f = f.map_err(spill)?;
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

/// A library error; registry errors get the exit code of their kind (10 unavailable, 3 auth,
/// 4 not found, 1 integrity).
fn lib_or_registry(e: stella_mirror::Error) -> anyhow::Error {
    match e {
        stella_mirror::Error::Registry(o) => crate::registry::oci_error(o),
        e => lib(e),
    }
}

fn load(a: LoadArgs, dev: DevKeys) -> Result<()> {
    match load_bundle(&a, dev) {
        Err(e) if a.output == "json" => Err(crate::exit::print_json_failure(
            e,
            crate::view::fields(&LoadFailureView {
                source: &a.bundle,
                registry: &a.registry,
                dry_run: a.dry_run,
            }),
        )),
        r => r,
    }
}

fn load_bundle(a: &LoadArgs, dev: DevKeys) -> Result<()> {
    let ring = a.trust.keyring(dev)?;
    let o = opts(&ring, &a.trust);
    let mut lo = stella_mirror::LoadOptions::new(&a.registry);
    lo.prefix = a.prefix.clone();
    lo.dry_run = a.dry_run;
    lo.client = a.registry_args.config();
    lo.work_dir = a.work_dir.clone();
    let progress = Bar::new();
    let r = stella_mirror::load(&a.bundle, &o, &lo, &progress).map_err(|e| match e {
        stella_mirror::Error::Registry(o) => crate::registry::oci_push_error(o),
        e => lib(e),
    })?;
    warn_all(&r.verified);
    let sum =
        |f: fn(&stella_oci::Report) -> u64| -> u64 { r.images.iter().map(|i| f(&i.report)).sum() };
    let uploaded = sum(|x| x.blobs_uploaded as u64);
    let resumed = sum(|x| x.blobs_resumed as u64);
    let mounted = sum(|x| x.blobs_mounted as u64);
    let existing = sum(|x| x.blobs_existing as u64);
    let bytes_up = sum(|x| x.bytes_uploaded);
    let bytes_skipped = sum(|x| x.bytes_skipped);
    if a.output == "json" {
        return print_json(&LoadView {
            report: report_json(&r.verified, &a.bundle),
            registry: &a.registry,
            prefix: a.prefix.as_deref(),
            dry_run: a.dry_run,
            from_archive: r.from_archive,
            reports: r
                .images
                .iter()
                .map(|i| PushView {
                    report: &i.report,
                    reference: &i.reference,
                    platforms: &i.platforms,
                })
                .collect(),
            totals: LoadTotalsView {
                images: r.images.len(),
                blobs_uploaded: uploaded,
                blobs_resumed: resumed,
                blobs_mounted: mounted,
                blobs_existing: existing,
                bytes_uploaded: bytes_up,
                bytes_skipped,
                verify_ms: r.verify_ms,
                push_ms: r.push_ms,
            },
        });
    }
    print_report(&r.verified, &a.bundle);
    for i in &r.images {
        let x = &i.report;
        if a.dry_run {
            let todo = x
                .blobs
                .iter()
                .filter(|b| b.action == stella_oci::BlobAction::WouldUpload)
                .count();
            println!(
                "  {} -> {} {}: would upload {todo} blob(s), {} already there",
                i.reference, x.target, x.digest, x.blobs_existing
            );
        } else {
            println!(
                "  {} -> {} {}: {} uploaded ({} resumed), {} already there, {} mounted; {} bytes sent",
                i.reference,
                x.target,
                x.digest,
                x.blobs_uploaded + x.blobs_resumed,
                x.blobs_resumed,
                x.blobs_existing,
                x.blobs_mounted,
                x.bytes_uploaded
            );
        }
    }
    let secs = (r.verify_ms + r.push_ms) as f64 / 1000.0;
    if a.dry_run {
        // Per image, as if alone: a real load mounts blobs shared between repositories.
        let (todo, todo_bytes) = r
            .images
            .iter()
            .flat_map(|i| &i.report.blobs)
            .filter(|b| b.action == stella_oci::BlobAction::WouldUpload)
            .fold((0u64, 0u64), |(n, s), b| (n + 1, s + b.size));
        println!(
            "Dry run (nothing pushed): {} image(s) for {}: {todo} blob upload(s) of {todo_bytes} bytes (blobs shared by several repositories are mounted, not sent again), {existing} blob(s) already there; {secs:.1} s",
            r.images.len(),
            a.registry,
        );
    } else {
        println!(
            "Loaded {} image(s) into {}: {} blob(s) uploaded ({resumed} resumed), {existing} already there, {mounted} mounted; {bytes_up} bytes sent, {bytes_skipped} bytes skipped; {secs:.1} s",
            r.images.len(),
            a.registry,
            uploaded + resumed,
        );
    }
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
    fn event(&self, event: &Event<'_>) {
        match *event {
            Event::Advance { n } => self.advance_by(n),
            Event::PhaseStart { phase, total } => self.begin(phase, total),
            Event::PhaseDone => self.end(),
            _ => {}
        }
    }
}

impl Bar {
    fn begin(&self, phase: &str, total: u64) {
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

    fn advance_by(&self, n: u64) {
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

    fn end(&self) {
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

// ------------------------------------------------------------------------------------------
// JSON views (printed through `crate::view::print`: keys sorted, `None` as `null`)
// ------------------------------------------------------------------------------------------

/// `mirror create --format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateView<'a> {
    output: &'a Path,
    bundle: &'a str,
    version: &'a str,
    generation: u64,
    kind: stella_mirror::Kind,
    generated_at: &'a str,
    files: usize,
    bytes: u64,
    written: usize,
    written_bytes: u64,
    images: &'a [stella_mirror::ImageEntry],
    removed: &'a [stella_mirror::BundlePath],
    pulled: Vec<PulledView<'a>>,
}

/// A registry image `create` pulled.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PulledView<'a> {
    reference: &'a str,
    source: &'a str,
    digest: String,
    source_digest: String,
    platforms: &'a [String],
    blobs_downloaded: usize,
    bytes_downloaded: u64,
}

/// `mirror sign --format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignView<'a> {
    envelope: &'a Path,
    dir: &'a Path,
    manifest_sha256: String,
    keyids: &'a [String],
    files: usize,
    time_anchor: Option<AnchorView<'a>>,
}

/// `mirror anchor --output json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnchorWrittenView<'a> {
    dir: &'a Path,
    time_anchor: AnchorView<'a>,
}

/// A time anchor that verified (`timeAnchor` of the sign, anchor and verify reports).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnchorView<'a> {
    anchor_time: String,
    format: &'static str,
    source: &'a str,
    tsa: &'a str,
    tsa_sha256: &'a str,
    policy: &'a str,
    serial: &'a str,
    token_digest: &'a str,
    trusted: bool,
    chain: Option<&'a [String]>,
}

impl<'a> AnchorView<'a> {
    fn of(an: &'a stella_mirror::Anchor) -> Self {
        AnchorView {
            anchor_time: stella_mirror::format_time(an.time),
            format: stella_mirror::ANCHOR_FORMAT,
            source: &an.source,
            tsa: &an.tsa,
            tsa_sha256: &an.tsa_fingerprint,
            policy: &an.policy,
            serial: &an.serial,
            token_digest: &an.token_digest,
            trusted: an.trusted(),
            chain: an.chain.as_deref(),
        }
    }
}

/// A verified bundle: `mirror verify --output json`, and the base of the unpack, apply and
/// load reports.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportView<'a> {
    verified: bool,
    source: &'a Path,
    #[serde(flatten)]
    summary: SummaryView<'a>,
    manifest_sha256: String,
    signers: Vec<SignerView<'a>>,
    files: usize,
    bytes: u64,
    from_base: usize,
    images: &'a [stella_mirror::ImageEntry],
    time_anchor: Option<AnchorView<'a>>,
    freshness: FreshnessView,
    warnings: &'a [String],
}

/// Which bundle, how old, who issued it (verify and header reports).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryView<'a> {
    bundle: &'a str,
    version: &'a str,
    generation: u64,
    kind: stella_mirror::Kind,
    generated_at: &'a str,
    age_seconds: i64,
    valid_for_seconds: u64,
    issuer: &'a str,
}

impl<'a> SummaryView<'a> {
    fn of(m: &'a stella_mirror::Manifest, age_seconds: i64, issuer: &'a str) -> Self {
        SummaryView {
            bundle: &m.bundle,
            version: &m.version,
            generation: m.generation,
            kind: m.kind,
            generated_at: &m.generated_at,
            age_seconds,
            valid_for_seconds: m.valid_for(),
            issuer,
        }
    }
}

/// Which clock judged freshness.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FreshnessView {
    judged_at: String,
    time_source: &'static str,
}

/// `mirror verify DIR/mirror/metadata/mirror.dsse.json --output json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeaderView<'a> {
    verified: bool,
    form: &'static str,
    source: &'a Path,
    payload: &'a Path,
    #[serde(flatten)]
    summary: SummaryView<'a>,
    created: &'a str,
    purpose: &'a str,
    payload_type: &'a str,
    manifest_sha256: String,
    signers: Vec<SignerView<'a>>,
    content_checked: bool,
    warnings: &'a [String],
}

/// The failure fields of `mirror verify-checksums --output json`.
#[derive(Serialize)]
struct DirView<'a> {
    dir: &'a Path,
}

/// `mirror verify-checksums --output json`.
#[derive(Serialize)]
struct ChecksumsView {
    verified: bool,
    files: usize,
    bytes: u64,
}

/// `mirror pack --format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PackView<'a> {
    archive: &'a Path,
    entries: usize,
    content_bytes: u64,
    archive_bytes: u64,
    mtime: u64,
}

/// `mirror unpack --format json`: the verification report and where it went.
#[derive(Serialize)]
struct UnpackView<'a> {
    #[serde(flatten)]
    report: ReportView<'a>,
    output: &'a Path,
}

/// `mirror apply --format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyView<'a> {
    #[serde(flatten)]
    report: ReportView<'a>,
    carried: usize,
    copied_from_base: usize,
    removed: usize,
}

/// `mirror diff --output json`: what [`view::print`](crate::view::print) prints of it is the
/// reference; [`DiffJson`] writes the same bytes as a stream.
#[derive(Serialize)]
struct DiffView<'a> {
    from: BundleIdView<'a>,
    to: BundleIdView<'a>,
    diff: &'a stella_mirror::Diff,
}

/// [`DiffView`] serialised without holding it as a `serde_json::Value` (the added, changed and
/// removed lists may hold a million entries, read back from their spill files one by one):
/// the keys in the sorted order a `Value` gives them, each entry through a `Value` of its own.
struct DiffJson<'a>(&'a DiffView<'a>);

impl Serialize for DiffJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        struct Body<'a>(&'a stella_mirror::Diff);
        impl Serialize for Body<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let d = self.0;
                let mut m = s.serialize_map(Some(8))?;
                m.serialize_entry("added", &Sorted(&d.added))?;
                m.serialize_entry("changed", &Sorted(&d.changed))?;
                m.serialize_entry("images_added", &d.images_added)?;
                m.serialize_entry("images_changed", &d.images_changed)?;
                m.serialize_entry("images_removed", &d.images_removed)?;
                m.serialize_entry("removed", &Sorted(&d.removed))?;
                m.serialize_entry("thin_bytes", &d.thin_bytes)?;
                m.serialize_entry("unchanged", &d.unchanged)?;
                m.end()
            }
        }
        /// A list whose entries are each written through a `Value` (keys sorted).
        struct Sorted<'a, T>(&'a stella_mirror::DiffList<T>);
        impl<T: stella_mirror::DiffRecord + Serialize> Serialize for Sorted<'_, T> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::{Error as _, SerializeSeq as _};
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for t in self.0.iter().map_err(S::Error::custom)? {
                    let t = t.map_err(S::Error::custom)?;
                    seq.serialize_element(&serde_json::to_value(&t).map_err(S::Error::custom)?)?;
                }
                seq.end()
            }
        }
        let v = self.0;
        let id = |b: &BundleIdView<'_>| serde_json::to_value(b).map_err(serde::ser::Error::custom);
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("diff", &Body(v.diff))?;
        m.serialize_entry("from", &id(&v.from)?)?;
        m.serialize_entry("to", &id(&v.to)?)?;
        m.end()
    }
}

/// Which bundle, which version.
#[derive(Serialize)]
struct BundleIdView<'a> {
    bundle: &'a str,
    version: &'a str,
    generation: u64,
}

impl<'a> BundleIdView<'a> {
    fn of(m: &'a stella_mirror::Manifest) -> Self {
        BundleIdView {
            bundle: &m.bundle,
            version: &m.version,
            generation: m.generation,
        }
    }
}

/// The failure fields of `mirror load --output json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadFailureView<'a> {
    source: &'a Path,
    registry: &'a str,
    dry_run: bool,
}

/// `mirror load --output json`: the verification report, one push report per image, totals.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadView<'a> {
    #[serde(flatten)]
    report: ReportView<'a>,
    registry: &'a str,
    prefix: Option<&'a str>,
    dry_run: bool,
    from_archive: bool,
    reports: Vec<PushView<'a>>,
    totals: LoadTotalsView,
}

/// One image pushed: the registry client's report, with the bundle's name and platforms
/// (which win over any same-named field of the report).
#[derive(Serialize)]
struct PushView<'a> {
    #[serde(flatten)]
    report: &'a stella_oci::Report,
    reference: &'a str,
    platforms: &'a [String],
}

/// `totals` of `mirror load --output json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadTotalsView {
    images: usize,
    blobs_uploaded: u64,
    blobs_resumed: u64,
    blobs_mounted: u64,
    blobs_existing: u64,
    bytes_uploaded: u64,
    bytes_skipped: u64,
    verify_ms: u64,
    push_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn anchor(chain: Option<Vec<String>>) -> stella_mirror::Anchor {
        stella_mirror::Anchor {
            time: OffsetDateTime::from_unix_timestamp(1_765_015_200).unwrap(),
            source: "http://tsa.example/tsa".into(),
            tsa: "CN=TSA".into(),
            tsa_fingerprint: "ab".repeat(32),
            policy: "1.2.3".into(),
            serial: "0x01".into(),
            token_digest: format!("sha256:{}", "cd".repeat(32)),
            chain,
        }
    }

    /// `mirror diff --output json` written as a stream is byte for byte what printing the
    /// view through a `serde_json::Value` gives, whether its lists are held or spilled.
    #[test]
    fn diff_json_stream_is_the_value_print() {
        use stella_mirror::FileEntry;
        use stella_mirror::{Diff, DiffChanged as Changed, DiffList as List};
        let entry = |p: &str, size: u64, b: u8| FileEntry {
            path: p.parse().unwrap(),
            size,
            sha256: stella_mirror::Digest::sha256([b; 32]),
            media_type: format!("text/x-{b}\"quoted\""),
        };
        for limit in [0, 1, 2, usize::MAX] {
            let mut d = Diff {
                added: List::with_limit(limit),
                removed: List::with_limit(limit),
                changed: List::with_limit(limit),
                ..Diff::default()
            };
            let view = |d: &Diff| {
                let v = DiffView {
                    from: BundleIdView {
                        bundle: "b\u{e9}",
                        version: "1",
                        generation: 1,
                    },
                    to: BundleIdView {
                        bundle: "b\u{e9}",
                        version: "2",
                        generation: u64::MAX,
                    },
                    diff: d,
                };
                let want = crate::view::pretty(&v).unwrap();
                let got = serde_json::to_string_pretty(&DiffJson(&v)).unwrap();
                assert_eq!(got, want, "limit {limit}");
                want
            };
            // Empty lists.
            assert!(view(&d).contains("\"added\": []"));
            for i in 0..3u8 {
                d.added
                    .push(entry(&format!("a/{i}\u{e000}.json"), u64::from(i), i));
                d.removed
                    .push(entry(&format!("r/{i} x"), 1 << 40, 0xff - i));
                d.changed.push(Changed {
                    path: format!("c/{i}").parse().unwrap(),
                    old_sha256: stella_mirror::Digest::sha256([i; 32]),
                    new_sha256: stella_mirror::Digest::sha256([i + 1; 32]),
                    old_size: 7,
                    new_size: u64::from(i),
                });
            }
            d.unchanged = 42;
            d.thin_bytes = 1 << 50;
            d.images_added = vec!["reg/a:1".into()];
            d.images_changed = vec!["reg/c:1".into(), "reg/c:2".into()];
            d.added.finish().unwrap();
            d.removed.finish().unwrap();
            d.changed.finish().unwrap();
            assert_eq!(d.added.spilled(), limit < 3);
            let want = view(&d);
            let v: serde_json::Value = serde_json::from_str(&want).unwrap();
            assert_eq!(v["diff"]["removed"][2]["path"], "r/2 x");
            assert_eq!(v["diff"]["changed"][1]["new_size"], 1);
            assert_eq!(v["to"]["generation"], u64::MAX);
        }
    }

    /// The literal `mirror sign/anchor/verify` printed before the views.
    fn old_literal(an: &stella_mirror::Anchor) -> serde_json::Value {
        json!({
            "anchorTime": stella_mirror::format_time(an.time),
            "format": stella_mirror::ANCHOR_FORMAT,
            "source": an.source,
            "tsa": an.tsa,
            "tsaSha256": an.tsa_fingerprint,
            "policy": an.policy,
            "serial": an.serial,
            "tokenDigest": an.token_digest,
            "trusted": an.trusted(),
            "chain": an.chain,
        })
    }

    #[test]
    fn the_anchor_view_prints_what_the_literal_did() {
        for an in [
            anchor(None),
            anchor(Some(vec!["CN=TSA".into(), "CN=Root".into()])),
        ] {
            let view = crate::view::pretty(&AnchorView::of(&an)).unwrap();
            assert_eq!(
                view,
                serde_json::to_string_pretty(&old_literal(&an)).unwrap()
            );
            // Untrusted: `chain` is null, not absent.
            if an.chain.is_none() {
                assert!(view.contains("\"chain\": null"), "{view}");
                assert!(view.contains("\"trusted\": false"), "{view}");
            }
        }
        let dir = Path::new("b");
        let an = anchor(None);
        assert_eq!(
            crate::view::to_value(&AnchorWrittenView {
                dir,
                time_anchor: AnchorView::of(&an),
            })
            .unwrap(),
            json!({"dir": dir, "timeAnchor": old_literal(&an)})
        );
    }

    #[test]
    fn flattened_views_keep_sorted_keys_and_the_later_field_wins() {
        #[derive(Serialize)]
        struct Base {
            zulu: u8,
            alpha: u8,
        }
        #[derive(Serialize)]
        struct Outer {
            #[serde(flatten)]
            base: Base,
            mike: u8,
            zulu: u8,
        }
        let out = crate::view::pretty(&Outer {
            base: Base { zulu: 1, alpha: 2 },
            mike: 3,
            zulu: 9,
        })
        .unwrap();
        assert_eq!(
            out, "{\n  \"alpha\": 2,\n  \"mike\": 3,\n  \"zulu\": 9\n}",
            "as `v[key] = json!(..)` on the base report did"
        );
    }

    #[test]
    fn text_reports_name_the_kind_and_the_signers() {
        assert_eq!(kind_name(stella_mirror::Kind::Thin), "thin");
        assert_eq!(kind_name(stella_mirror::Kind::Full), "full");
        let k = |id: &str| stella_keys::VerifiedKey {
            id: id.into(),
            key_id: stella_keys::KeyId::of_spki(id.as_bytes()),
        };
        assert_eq!(crate::view::signer_ids(&[k("a"), k("b")]), "a, b");
        assert_eq!(crate::view::signer_ids(&[]), "");
    }
}
