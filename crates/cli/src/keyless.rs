//! `--keyless` signing (`stella sign blob --keyless --bundle OUT`, `stella attest --keyless`,
//! and every command built on `attest`): an ephemeral key certified by Fulcio for the caller's
//! OIDC identity, an RFC 3161 timestamp over the signature, optionally a Rekor entry; the
//! output is a Sigstore bundle v0.3 (`stella-keyless` does the work, this module parses flags
//! and drives it on a current-thread runtime).
//!
//! `--dev-ca DIR` (development only) replaces Fulcio and the TSA with the in-process dev CA
//! and TSA kept in DIR (created on first use, keys 0600); `DIR/trusted_root.json` verifies the
//! result offline. Without `--identity-token` it signs as `dev@stella.invalid`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use stella_keyless::dev::{DevIdentity, DevServices};
use stella_keyless::fulcio::FulcioClient;
use stella_keyless::rekor::RekorClient;
use stella_keyless::tsa::HttpTsa;
use stella_keyless::{
    HttpOptions, IdentityTokenSource, KeylessOutput, KeylessSigner, StaticToken, TlogPolicy,
};
use stella_sigstore::TrustedRoot;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::exit::{fail, USAGE};
use crate::io;

#[derive(Args, Clone, Debug)]
pub(crate) struct KeylessArgs {
    /// Sign keyless: a short-lived Fulcio certificate for your OIDC identity, an ephemeral key,
    /// an RFC 3161 timestamp (and a Rekor entry with --rekor-url); writes a Sigstore bundle.
    #[arg(long, conflicts_with = "key")]
    pub(crate) keyless: bool,
    /// Fulcio base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://fulcio.sigstore.dev"
    )]
    pub(crate) fulcio_url: String,
    /// RFC 3161 timestamp authority endpoint.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://timestamp.sigstore.dev/api/v1/timestamp"
    )]
    pub(crate) tsa_url: String,
    /// Rekor base URL: upload the signature to this transparency log (required to succeed).
    #[arg(long, value_name = "URL")]
    pub(crate) rekor_url: Option<String>,
    /// The OIDC identity token: the token itself, @FILE, or env://VAR (default:
    /// $SIGSTORE_ID_TOKEN).
    #[arg(long, value_name = "TOKEN|@FILE|env://VAR")]
    pub(crate) identity_token: Option<String>,
    /// Trusted root the certificate, timestamp and log entry must verify against
    /// (default: the Sigstore public-good root, or an imported one).
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_root: Option<String>,
    /// DEVELOPMENT ONLY: an in-process CA and TSA kept in DIR instead of Fulcio and a TSA
    /// (created on first use; DIR/trusted_root.json verifies the output). No network.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rekor_url", "trusted_root"])]
    pub(crate) dev_ca: Option<PathBuf>,
    /// Timeout of one request to Fulcio, the TSA or Rekor, in seconds (3 retries on 5xx and
    /// timeouts).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub(crate) upstream_timeout: u64,
}

/// The token text of `--identity-token` (or `$SIGSTORE_ID_TOKEN`).
fn token_text(args: &KeylessArgs) -> Result<Option<Zeroizing<String>>> {
    let Some(spec) = args
        .identity_token
        .clone()
        .or_else(|| std::env::var("SIGSTORE_ID_TOKEN").ok())
    else {
        return Ok(None);
    };
    let text = if let Some(path) = spec.strip_prefix('@') {
        let bytes = Zeroizing::new(io::read_limited(path, 64 * 1024)?);
        String::from_utf8(bytes.to_vec())
            .map_err(|_| fail(USAGE, format!("--identity-token @{path}: not UTF-8")))?
    } else if let Some(var) = spec.strip_prefix("env://") {
        std::env::var(var).map_err(|_| {
            fail(
                USAGE,
                format!("--identity-token env://{var}: the variable is not set"),
            )
        })?
    } else {
        spec
    };
    Ok(Some(Zeroizing::new(text.trim().to_string())))
}

fn build(args: &KeylessArgs) -> Result<KeylessSigner> {
    let token: Arc<dyn IdentityTokenSource> = match (token_text(args)?, &args.dev_ca) {
        (Some(t), _) => Arc::new(
            StaticToken::parse(&t).map_err(|e| fail(USAGE, format!("--identity-token: {e}")))?,
        ),
        (None, Some(_)) => Arc::new(DevIdentity::default()),
        (None, None) => {
            return Err(fail(
                USAGE,
                "keyless signing needs an OIDC identity token: --identity-token TOKEN|@FILE|env://VAR or $SIGSTORE_ID_TOKEN",
            ))
        }
    };
    if let Some(dir) = &args.dev_ca {
        eprintln!(
            "WARNING: --dev-ca: signing with the DEVELOPMENT CA and TSA in {} (no real identity, never trust in production)",
            dir.display()
        );
        let dev = DevServices::load_or_generate(dir, OffsetDateTime::now_utc())
            .with_context(|| format!("dev CA in {}", dir.display()))?;
        return dev
            .signer(token)
            .map_err(|e| fail(USAGE, format!("dev trusted root: {e}")));
    }
    let root: TrustedRoot = match &args.trusted_root {
        Some(p) => {
            let bytes = io::read_limited(p, 16 << 20)?;
            TrustedRoot::from_json(&bytes)
                .map_err(|e| fail(USAGE, format!("--trusted-root {p}: {e}")))?
        }
        None => crate::trust_root::load(crate::trust_root::PUBLIC_GOOD)?,
    };
    let root = Arc::new(root);
    let http = HttpOptions {
        timeout: Duration::from_secs(args.upstream_timeout.max(1)),
        ..HttpOptions::default()
    };
    let usage = |what: &str, e: stella_keyless::UpstreamError| fail(USAGE, format!("{what}: {e}"));
    let s = KeylessSigner::new(
        token,
        Arc::new(
            FulcioClient::new(&args.fulcio_url, root.clone(), http)
                .map_err(|e| usage("--fulcio-url", e))?,
        ),
        Arc::new(HttpTsa::new(&args.tsa_url, http).map_err(|e| usage("--tsa-url", e))?),
        root,
    );
    Ok(match &args.rekor_url {
        Some(u) => s.with_tlog(
            Arc::new(RekorClient::new(u, http).map_err(|e| usage("--rekor-url", e))?),
            TlogPolicy::Required,
        ),
        None => s,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Sign a blob keyless (message-signature bundle).
pub(crate) fn sign_blob(args: &KeylessArgs, data: &[u8]) -> Result<KeylessOutput> {
    let s = build(args)?;
    Ok(runtime()?.block_on(s.sign_blob(data))?)
}

/// Sign a statement keyless (DSSE bundle).
pub(crate) fn attest(
    args: &KeylessArgs,
    statement: &stella_dsse::Statement,
) -> Result<KeylessOutput> {
    let s = build(args)?;
    Ok(runtime()?.block_on(s.attest(statement))?)
}

/// One stderr line about what was signed.
pub(crate) fn report(out: &KeylessOutput, written_to: &str) {
    let id = &out.identity;
    let log = match &out.tlog_entry {
        Some(e) => format!("Rekor entry {} ({}) at {}", e.log_index, e.uuid, e.url),
        None => "no transparency log entry".into(),
    };
    eprintln!(
        "Signed keyless as {} (issuer {}); certificate {} valid until {}; timestamp {}; {}; bundle written to {}",
        id.san,
        id.oidc_issuer,
        id.certificate_serial,
        stella_x509::format_time(id.not_after),
        stella_x509::format_time(out.timestamp_time),
        log,
        written_to
    );
}
