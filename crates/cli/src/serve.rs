//! `stella signer serve` (the service) and `stella signer sign` (a client for it).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use stella_keys::DevKeys;
use stella_signer::client::{self, DpopKey};
use stella_signer::{AppBuilder, AppState, Config};

use crate::exit::{code_for_std, fail, render_std, AUTH, OFFLINE, RETRYABLE, USAGE, VERIFY_FAILED};

#[derive(Subcommand)]
pub(crate) enum SignerCommand {
    /// Run the Signer service (HTTP, or HTTPS with optional mTLS).
    Serve(ServeArgs),
    /// Sign a statement through a running Signer service: get a DPoP-bound token from the
    /// Authority (OAuth client credentials), then POST /api/v1/signer/sign/dsse.
    Sign(Box<SignArgs>),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML; see etc/stella.toml). Without it: embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// DEV ONLY: embedded dev Authority and Licensing, generated dev signing key, loopback only.
    #[arg(long)]
    dev: bool,
    /// Listen address (overrides server.listen), e.g. 127.0.0.1:0 for any free port.
    #[arg(long)]
    listen: Option<String>,
    /// Data folder: audit database and dev keys (overrides audit.path to DIR/audit.db).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SignArgs {
    /// Signer base URL, e.g. http://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// Authority token endpoint (default with --dev-authority: URL/dev/authority/token).
    #[arg(long)]
    token_url: Option<String>,
    /// Use the service's dev profile Authority (DEV ONLY).
    #[arg(long)]
    dev_authority: bool,
    /// OAuth client id.
    #[arg(long, default_value = "stella-cli")]
    client_id: String,
    /// Environment variable holding the client secret (dev Authority: dev-secret).
    #[arg(long, default_value = "STELLA_CLIENT_SECRET")]
    client_secret_env: String,
    /// RFC 8707 resource indicator for the token request.
    #[arg(long)]
    resource: Option<String>,
    /// Predicate type (catalogue).
    #[arg(long)]
    predicate_type: String,
    /// Predicate JSON file.
    #[arg(long)]
    predicate: String,
    /// Subject: a file (hashed) or NAME@sha256:HEX. Repeatable.
    #[arg(long, required = true)]
    subject: Vec<String>,
    /// Proof-of-Entitlement value (required: the service refuses a request without one; the
    /// dev profile's Licensing accepts any value starting with dev-).
    #[arg(long)]
    poe: String,
    /// Scanner image digest (sha256:...).
    #[arg(long)]
    scanner_digest: Option<String>,
    /// Extra CA (PEM) for HTTPS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Write a Sigstore bundle instead of the DSSE envelope (a keyless signature's bundle
    /// carries the certificate and the RFC 3161 timestamp that verification needs).
    #[arg(long)]
    bundle: bool,
    /// Signing mode to ask for: keyless, file, kms or hsm (default: the tenant's default;
    /// keyless in the dev profile).
    #[arg(long, value_name = "MODE")]
    signing_mode: Option<String>,
    /// Output file for the envelope (or bundle).
    #[arg(long)]
    output: String,
}

pub(crate) fn run(cmd: SignerCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        SignerCommand::Serve(a) => serve(a, dev),
        SignerCommand::Sign(a) => sign(*a),
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match cfg.log.level.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        "off" => LevelFilter::OFF,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if cfg.log.format == "text" {
        let _ = builder.try_init();
    } else {
        // The stock JSON lines (`flatten_event(true).with_current_span(false)`), written by
        // the signer's own formatter: the same bytes at a fraction of the cost per request.
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(stella_signer::logfmt::JsonLines::new())
            .try_init();
    }
}

fn serve(a: ServeArgs, dev_keys: DevKeys) -> Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut env_with_flags = env;
    // Flags are applied as overrides after the file and the environment.
    if a.dev {
        env_with_flags.push(("STELLA_SIGNER__DEV__ENABLED".into(), "true".into()));
    }
    if let Some(l) = &a.listen {
        env_with_flags.push(("STELLA_SIGNER__SERVER__LISTEN".into(), format!("\"{l}\"")));
    }
    if let Some(d) = &a.data {
        let db = d.join("audit.db");
        env_with_flags.push((
            "STELLA_SIGNER__AUDIT__PATH".into(),
            toml_string(&db.display().to_string()),
        ));
        env_with_flags.push((
            "STELLA_SIGNER__DEV__DATA_DIR".into(),
            toml_string(&d.display().to_string()),
        ));
    }
    // A missing file (the config, or a file it names) is "not found" (exit 4), like
    // everywhere else; anything else wrong with the configuration is a usage error.
    let cfg = Config::load(a.config.as_deref(), env_with_flags)
        .map_err(|e| fail(code_for_std(&e, USAGE), render_std(&e)))?;
    files_exist(&cfg)?;
    init_logging(&cfg);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.server.worker_threads > 0 {
        rt.worker_threads(cfg.server.worker_threads);
    }
    let rt = rt.build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listen = cfg.server.listen.clone();
        let tls = match &cfg.server.tls {
            Some(t) => Some(
                stella_signer::tls_acceptor(t).map_err(|e| fail(USAGE, e.to_string()))?,
            ),
            None => None,
        };
        let mut builder = AppBuilder::new(cfg.clone());
        if cfg.audit.backend == "postgres" {
            let url = cfg.audit.url.clone().unwrap_or_default();
            let mut o = stella_store::PgOptions::new(url.clone());
            o.batch_max = cfg.audit.batch_max;
            o.timeout = std::time::Duration::from_millis(cfg.audit.timeout_ms);
            let log = stella_store::PgAudit::connect(o).await.map_err(|e| {
                fail(
                    RETRYABLE,
                    format!(
                        "cannot start the signer: audit log {}: {e}",
                        stella_store::redact(&url)
                    ),
                )
            })?;
            builder = builder.audit(std::sync::Arc::new(log));
        }
        if cfg.quotas.backend == "redis" {
            let mut o = stella_store::RedisOptions::new(cfg.quotas.url.clone().unwrap_or_default());
            o.prefix = cfg.quotas.prefix.clone();
            o.timeout = std::time::Duration::from_millis(cfg.quotas.timeout_ms);
            o.lease_ttl = std::time::Duration::from_secs(cfg.quotas.lease_seconds);
            let unavailable = |e: stella_store::StoreError| {
                fail(RETRYABLE, format!("cannot start the signer: quotas: {e}"))
            };
            let quotas = stella_store::RedisQuotaStore::connect(o.clone())
                .await
                .map_err(unavailable)?;
            let replay = stella_store::RedisReplayCache::connect(o.clone())
                .await
                .map_err(unavailable)?;
            // PoE answers, release verdicts and (unless a fixed key is configured) the
            // rotating DPoP nonce keys are shared through Redis too.
            let cache = stella_store::RedisCache::connect(o.clone())
                .await
                .map_err(unavailable)?;
            builder = builder.shared_cache(std::sync::Arc::new(cache));
            builder = builder
                .quotas(std::sync::Arc::new(quotas))
                .replay(std::sync::Arc::new(replay));
        }
        let app = builder.dev_keys(dev_keys).build().map_err(|e| {
            fail(
                code_for_std(&e, USAGE),
                format!("cannot start the signer: {}", render_std(&e)),
            )
        })?;
        let state = AppState(std::sync::Arc::new(app));
        if let Err(e) = state.auth.jwks.warm().await {
            tracing::warn!(error = %e, "Authority keys not fetched yet (will retry on demand)");
        }
        // A log behind its signed checkpoint (truncated or replaced while the service was
        // down) is refused before anything is announced.
        stella_signer::checkpoints::check(&state)
            .await
            .map_err(|e| fail(VERIFY_FAILED, format!("cannot start the signer: {e:#}")))?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(d) = &state.dev {
            if let Some(p) = &d.signing_pub {
                eprintln!(
                    "DEV PROFILE (never in production): signing key public half: {}",
                    p.display()
                );
            }
        }
        if let (Some(_), Some(k)) = (&state.dev, &state.keyless) {
            if let Some(root) = &k.trusted_root_path {
                eprintln!(
                    "DEV PROFILE: keyless is the default signing mode, with the DEV-ONLY in-process CA and TSA; trusted root {}; verify a bundle offline with: stella verify --trusted-root {} --certificate-identity {} --certificate-oidc-issuer {} --tlog-threshold 0 BUNDLE",
                    root.display(),
                    root.display(),
                    stella_signer::dev::DEV_KEYLESS_IDENTITY,
                    stella_signer::dev::DEV_ISSUER
                );
            }
        }
        // One line on stdout so scripts and tests can find the address (port 0 = any).
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
        drop(out);
        stella_signer::serve(state, listener, tls, shutdown_signal())
            .await
            .map_err(|e| fail(RETRYABLE, format!("{e:#}")))?;
        Ok(())
    })
}

/// Files the configuration names must exist: a missing one is "not found" (exit 4), named by
/// its configuration key, before anything starts. (Signing keys are checked when loaded.)
fn files_exist(cfg: &Config) -> Result<()> {
    let mut files: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(t) = &cfg.server.tls {
        files.push(("server.tls.cert", &t.cert));
        files.push(("server.tls.key", &t.key));
        if let Some(ca) = &t.client_ca {
            files.push(("server.tls.client_ca", ca));
        }
    }
    if !cfg.dev.enabled {
        if let Some(j) = &cfg.authority.jwks_file {
            files.push(("authority.jwks_file", j));
        }
    }
    for (key, path) in files {
        if !path.exists() {
            return Err(fail(
                crate::exit::NOT_FOUND,
                format!("{key} {}: no such file", path.display()),
            ));
        }
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn sign(a: SignArgs) -> Result<()> {
    let predicate = crate::attest::read_predicate(&a.predicate)?;
    let subjects = crate::attest::subjects(&a.subject)?;
    let body = crate::view::to_value(&SignBody {
        subject: subjects.iter().map(crate::view::SubjectView).collect(),
        predicate_type: &a.predicate_type,
        predicate: &predicate,
        options: SignOptions {
            return_bundle: if a.bundle { "sigstore" } else { "dsse" },
            signing_mode: a.signing_mode.as_deref(),
        },
        poe: Poe {
            format: "jwt",
            value: &a.poe,
        },
        scanner_image_digest: a.scanner_digest.as_deref(),
    })?;
    let token_url = match (&a.token_url, a.dev_authority) {
        (Some(u), _) => u.clone(),
        (None, true) => format!("{}/dev/authority/token", a.url.trim_end_matches('/')),
        (None, false) => {
            return Err(fail(
                USAGE,
                "give --token-url (or --dev-authority for the dev profile)",
            ))
        }
    };
    let secret = std::env::var(&a.client_secret_env).or_else(|_| {
        if a.dev_authority {
            Ok(stella_signer::dev::DEV_CLIENT_SECRET.to_string())
        } else {
            Err(fail(
                USAGE,
                format!("set the client secret in ${}", a.client_secret_env),
            ))
        }
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let resp = rt.block_on(async {
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &a.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem).context("--ca")? {
                b = b.tls_certs_merge([c]);
            }
        }
        let http = b.build().context("HTTP client")?;
        let dpop = DpopKey::generate().map_err(|e| fail(USAGE, e.to_string()))?;
        let mut extra = Vec::new();
        if let Some(r) = &a.resource {
            extra.push(("resource", r.as_str()));
        }
        let token = client::client_credentials(
            &http,
            &token_url,
            &a.client_id,
            &secret,
            &extra,
            Some(&dpop),
        )
        .await
        .map_err(|e| fail(AUTH, e.to_string()))?;
        eprintln!(
            "obtained a DPoP-bound access token (jkt {})",
            dpop.thumbprint()
        );
        client::post_dpop(
            &http,
            &a.url,
            "/api/v1/signer/sign/dsse",
            &token.access_token,
            &dpop,
            &body,
        )
        .await
        .map_err(|e| fail(OFFLINE, e.to_string()))
    })?;
    if resp.status != 200 {
        let code = resp.body.get("code").and_then(Value::as_str).unwrap_or("?");
        let detail = resp
            .body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("");
        let exit = match resp.status {
            401 | 403 => AUTH,
            429 | 503 => RETRYABLE,
            _ => USAGE,
        };
        return Err(fail(
            exit,
            format!("the signer refused ({} {code}): {detail}", resp.status),
        ));
    }
    let out = if a.bundle {
        &resp.body["bundle"]["sigstore"]
    } else {
        &resp.body["bundle"]["dsse"]
    };
    let mut text = serde_json::to_vec_pretty(out)?;
    text.push(b'\n');
    crate::io::write_atomic(&a.output, &text, false)?;
    let b = &resp.body["bundle"];
    let by = match b["mode"].as_str() {
        Some("keyless") => format!(
            "keyless: certificate for {} (issuer {}), serial {}",
            b["signingIdentity"]["san"].as_str().unwrap_or("?"),
            b["signingIdentity"]["oidcIssuer"].as_str().unwrap_or("?"),
            b["signingIdentity"]["certificateSerial"]
                .as_str()
                .unwrap_or("?")
        ),
        _ => format!("key {}", b["signingIdentity"]["keyIds"]),
    };
    eprintln!(
        "signed ({by}; audit id {}); wrote {}",
        resp.body["auditId"].as_str().unwrap_or("?"),
        a.output
    );
    if b["mode"] == "keyless" && !a.bundle {
        eprintln!("note: a keyless envelope alone cannot be verified later; use --bundle for the Sigstore bundle with its certificate and timestamp");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The sign request body is what the hand-built `json!` was: options present only when
    /// given, `returnBundle` from --bundle.
    #[test]
    fn the_sign_body_is_what_the_literal_was() {
        let subject = stella_dsse::Subject {
            name: "app".into(),
            digest: [("sha256".to_string(), "ab".repeat(32))].into(),
        };
        let predicate = serde_json::json!({"scanner": {"name": "x"}});
        for (bundle, mode, scanner) in [(false, None, None), (true, Some("kms"), Some("sha256:cd"))]
        {
            let body = crate::view::to_value(&SignBody {
                subject: vec![crate::view::SubjectView(&subject)],
                predicate_type: "https://in-toto.io/attestation/vulns",
                predicate: &predicate,
                options: SignOptions {
                    return_bundle: if bundle { "sigstore" } else { "dsse" },
                    signing_mode: mode,
                },
                poe: Poe {
                    format: "jwt",
                    value: "e.y.j",
                },
                scanner_image_digest: scanner,
            })
            .unwrap();
            let mut old = serde_json::json!({
                "subject": [{"name": subject.name, "digest": subject.digest}],
                "predicateType": "https://in-toto.io/attestation/vulns",
                "predicate": predicate,
                "options": {"returnBundle": if bundle { "sigstore" } else { "dsse" }},
            });
            old["poe"] = serde_json::json!({"format": "jwt", "value": "e.y.j"});
            if let Some(m) = mode {
                old["options"]["signingMode"] = serde_json::json!(m);
            }
            if let Some(d) = scanner {
                old["scannerImageDigest"] = serde_json::json!(d);
            }
            assert_eq!(body, old);
        }
    }

    /// Issue #8 item 8: `--dev` with real signing keys, a real Authority or real Licensing
    /// configured is a usage error (exit 2) that names the setting; nothing starts.
    #[test]
    fn dev_profile_with_real_keys_or_services_exits_2() {
        let dir = tempfile::tempdir().unwrap();
        for (extra, name) in [
            ("[signing]\nkeys = [\"prod.key\"]\n", "signing.keys"),
            (
                "[authority]\nissuer = \"https://a.example\"\njwks_url = \"https://a.example/jwks\"\n",
                "authority.jwks_url",
            ),
            (
                "[licensing]\nintrospect_url = \"https://l.example/license/introspect\"\n",
                "licensing.introspect_url",
            ),
        ] {
            let cfg = dir.path().join("stella.toml");
            std::fs::write(&cfg, extra).unwrap();
            let args = ServeArgs {
                config: Some(cfg),
                dev: true,
                listen: Some("127.0.0.1:0".into()),
                data: Some(dir.path().join("data")),
            };
            let e = serve(args, DevKeys::Refuse).unwrap_err();
            assert_eq!(crate::exit::code_for(&e), USAGE, "{e:#}");
            let m = format!("{e:#}");
            assert!(m.contains("dev profile") && m.contains(name), "{m}");
            assert!(!dir.path().join("data").exists(), "nothing was started");
        }
    }
}

/// The body of `POST /api/v1/signer/sign/dsse` (`signer sign`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignBody<'a> {
    subject: Vec<crate::view::SubjectView<'a>>,
    predicate_type: &'a str,
    predicate: &'a Value,
    options: SignOptions<'a>,
    poe: Poe<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scanner_image_digest: Option<&'a str>,
}

/// `options` of a sign request.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignOptions<'a> {
    return_bundle: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_mode: Option<&'a str>,
}

/// The proof of entitlement.
#[derive(Serialize)]
struct Poe<'a> {
    format: &'static str,
    value: &'a str,
}
