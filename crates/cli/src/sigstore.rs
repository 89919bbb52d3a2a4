//! Sigstore bundle verification in the CLI: `stella verify blob --bundle B ...` (cosign
//! `verify-blob --bundle` form) and `stella verify BUNDLE` with an identity or a trusted root.
//!
//! Every rule lives in `stella-sigstore`; this module parses flags, loads the trusted root
//! (`--trusted-root FILE`, else an imported root, else the one shipped in the binary), and
//! renders the typed result: text, or with `--output json` a result object on success *and*
//! on failure (which check failed, and why). Exit codes: 0 verified, 1 a check failed, 2 the
//! bundle, trusted root or flags are unusable.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use stella_keys::{DevKeys, KeyRef};
use stella_sigstore::{
    verify, Artifact, Bundle, HashAlgorithm, Identity, Matcher, Options, Policy, TrustedRoot,
    VerifyingKey,
};

use crate::exit::{fail, USAGE, VERIFY_FAILED};
use crate::io;

/// Identity and trusted-root flags (shared by `verify` and `verify blob`).
#[derive(Args, Clone)]
pub(crate) struct SigstoreArgs {
    /// The certificate identity (SAN email or URI) that must have signed, exactly.
    #[arg(long, conflicts_with = "certificate_identity_regexp")]
    pub(crate) certificate_identity: Option<String>,
    /// The certificate identity as a regular expression (matching the whole SAN).
    #[arg(long)]
    pub(crate) certificate_identity_regexp: Option<String>,
    /// The OIDC issuer of the certificate, exactly.
    #[arg(long, conflicts_with = "certificate_oidc_issuer_regexp")]
    pub(crate) certificate_oidc_issuer: Option<String>,
    /// The OIDC issuer as a regular expression (matching the whole issuer).
    #[arg(long)]
    pub(crate) certificate_oidc_issuer_regexp: Option<String>,
    /// Another Fulcio certificate extension that must match: OID=VALUE (repeatable), e.g.
    /// 1.3.6.1.4.1.57264.1.12=https://github.com/org/repo.
    #[arg(long, value_name = "OID=VALUE")]
    pub(crate) certificate_extension: Vec<String>,
    /// Trusted root (dev.sigstore.trustedroot JSON) instead of the shipped or imported one.
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_root: Option<String>,
    /// Use the Sigstore staging trusted root.
    #[arg(long, conflicts_with = "trusted_root")]
    pub(crate) staging: bool,
    /// Transparency log entries the bundle must carry (each one present is verified).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) tlog_threshold: usize,
    /// Verified signing times a certificate bundle needs (SET-verified log entries and RFC
    /// 3161 timestamps; at least 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) signing_time_threshold: usize,
}

impl SigstoreArgs {
    /// Were any identity or trusted-root flags given?
    pub(crate) fn any(&self) -> bool {
        self.identity_given() || self.trusted_root.is_some() || self.staging
    }

    fn identity_given(&self) -> bool {
        self.certificate_identity.is_some()
            || self.certificate_identity_regexp.is_some()
            || self.certificate_oidc_issuer.is_some()
            || self.certificate_oidc_issuer_regexp.is_some()
            || !self.certificate_extension.is_empty()
    }

    pub(crate) fn identity(&self) -> Result<Identity> {
        let m = |exact: &Option<String>, re: &Option<String>, what: &str| -> Result<Matcher> {
            match (exact, re) {
                (Some(e), _) => Ok(Matcher::exact(e)),
                (None, Some(r)) => Matcher::regex(r).map_err(|e| fail(USAGE, e.to_string())),
                (None, None) => Err(fail(
                    USAGE,
                    format!("a certificate-signed bundle needs --{what} or --{what}-regexp"),
                )),
            }
        };
        let mut id = Identity::new(
            m(
                &self.certificate_identity,
                &self.certificate_identity_regexp,
                "certificate-identity",
            )?,
            m(
                &self.certificate_oidc_issuer,
                &self.certificate_oidc_issuer_regexp,
                "certificate-oidc-issuer",
            )?,
        );
        for e in &self.certificate_extension {
            let (oid, value) = e.split_once('=').ok_or_else(|| {
                fail(
                    USAGE,
                    format!("--certificate-extension {e:?}: expected OID=VALUE"),
                )
            })?;
            id = id
                .with_extension(oid, Matcher::exact(value))
                .map_err(|err| fail(USAGE, format!("--certificate-extension: {err}")))?;
        }
        Ok(id)
    }

    /// The trusted root to verify with.
    pub(crate) fn root(&self) -> Result<TrustedRoot> {
        if let Some(p) = &self.trusted_root {
            let bytes = io::read_limited(p, 16 << 20)?;
            return TrustedRoot::from_json(&bytes)
                .map_err(|e| fail(USAGE, format!("--trusted-root {p}: {e}")));
        }
        crate::trust_root::load(if self.staging {
            crate::trust_root::STAGING
        } else {
            crate::trust_root::PUBLIC_GOOD
        })
    }
}

/// `FILE_OR_DIGEST`: a path, or `sha256:<64 hex>` / `sha512:<128 hex>` that is not a path.
enum Subject {
    Bytes(Vec<u8>),
    Digest(HashAlgorithm, Vec<u8>),
}

fn subject(arg: &str) -> Result<Subject> {
    if !std::path::Path::new(arg).exists() {
        for (prefix, alg) in [
            ("sha256:", HashAlgorithm::Sha256),
            ("sha512:", HashAlgorithm::Sha512),
        ] {
            if let Some(hex) = arg.strip_prefix(prefix) {
                let ok =
                    hex.len() == alg.digest_len() * 2 && hex.bytes().all(|c| c.is_ascii_hexdigit());
                if !ok {
                    return Err(fail(
                        USAGE,
                        format!(
                            "{arg}: a {prefix} digest has {} hex digits",
                            alg.digest_len() * 2
                        ),
                    ));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|e| fail(USAGE, format!("{arg}: {e}")))?;
                return Ok(Subject::Digest(alg, bytes));
            }
        }
    }
    Ok(Subject::Bytes(io::read_limited(arg, 2 << 30)?))
}

/// What to verify against.
pub(crate) struct Request<'a> {
    pub(crate) bundle_path: &'a str,
    pub(crate) artifact: Option<&'a str>,
    pub(crate) key: Option<&'a str>,
    pub(crate) args: &'a SigstoreArgs,
    pub(crate) json: bool,
    /// `stella verify BUNDLE --keyring K [--purpose P]`: the keyring's `[[identities]]`
    /// verify a certificate bundle when no identity flag is given.
    pub(crate) identities: Option<(stella_keys::Keyring, Option<stella_keys::Purpose>)>,
}

fn input_error(req: &Request<'_>, msg: String) -> anyhow::Error {
    if req.json {
        let out = FailedView::<&str> {
            verified: false,
            bundle: req.bundle_path,
            passed: None,
            failed: CheckView {
                check: "input",
                error: msg.clone(),
            },
        };
        println!("{}", crate::view::pretty(&out).unwrap_or_default());
    }
    fail(USAGE, msg)
}

/// The policy of `--key K`: the bundle is signed by that public key. `bad` reports a key that
/// is not a Sigstore verifying key.
pub(crate) fn key_policy(
    k: &str,
    dev: DevKeys,
    bad: impl FnOnce(String) -> anyhow::Error,
) -> Result<Policy> {
    let r = KeyRef::parse(k)?;
    let pk = stella_keys::load_public(&r, dev, &mut || io::password(false))?;
    crate::warn_if_dev(&pk);
    match VerifyingKey::from_spki_der(pk.spki_der()) {
        Ok(key) => Ok(Policy::Key(key)),
        Err(e) => Err(bad(format!("--key {k}: {e}"))),
    }
}

/// Verify a Sigstore bundle and print the result.
pub(crate) fn run(req: &Request<'_>, dev: DevKeys) -> Result<()> {
    let bytes = io::read_limited(
        req.bundle_path,
        stella_sigstore::bundle::MAX_BUNDLE_BYTES as u64,
    )?;
    let bundle = Bundle::from_json(&bytes)
        .map_err(|e| input_error(req, format!("{}: {e}", req.bundle_path)))?;
    if let (None, false, Some((ring, purpose))) =
        (req.key, req.args.identity_given(), &req.identities)
    {
        if !ring.identities().is_empty() && bundle.material.leaf().is_some() {
            return run_identities(req, &bundle, ring, *purpose);
        }
    }
    let policy = match req.key {
        Some(k) => {
            if req.args.identity_given() {
                return Err(input_error(
                    req,
                    "give either --key or the --certificate-* identity flags, not both".into(),
                ));
            }
            key_policy(k, dev, |m| input_error(req, m))?
        }
        None => Policy::Identity(
            req.args
                .identity()
                .map_err(|e| input_error(req, format!("{e:#}")))?,
        ),
    };
    let root = req
        .args
        .root()
        .map_err(|e| input_error(req, format!("{e:#}")))?;
    let subject = req.artifact.map(subject).transpose()?;
    let artifact = match &subject {
        None => Artifact::Unchecked,
        Some(Subject::Bytes(b)) => Artifact::Bytes(b),
        Some(Subject::Digest(algorithm, digest)) => Artifact::Digest {
            algorithm: *algorithm,
            digest,
        },
    };
    let options = Options {
        tlog_threshold: req.args.tlog_threshold,
        time_threshold: req.args.signing_time_threshold.max(1),
    };
    match verify(&bundle, artifact, &policy, &root, &options) {
        Ok(v) => print_verified(req, &v, None),
        Err(f) => {
            if req.json {
                crate::view::print(&FailedView {
                    verified: false,
                    bundle: req.bundle_path,
                    passed: Some(&f.passed),
                    failed: CheckView {
                        check: f.failed,
                        error: f.error.to_string(),
                    },
                })?;
            }
            Err(fail(VERIFY_FAILED, f.to_string()))
        }
    }
}

/// A certificate bundle against the keyring's identity entries (purpose, window, revoked as
/// for keys; the default thresholds; each entry's trusted root). No artifact: `stella verify
/// BUNDLE` checks the bundle's own content.
fn run_identities(
    req: &Request<'_>,
    bundle: &Bundle,
    ring: &stella_keys::Keyring,
    purpose: Option<stella_keys::Purpose>,
) -> Result<()> {
    let trust = stella_sigstore::IdentityTrust::from_keyring(ring)
        .map_err(|e| input_error(req, format!("keyring: {e}")))?;
    match trust.verify(
        bundle,
        Artifact::Unchecked,
        purpose,
        time::OffsetDateTime::now_utc(),
    ) {
        Ok(m) => print_verified(req, &m.verified, Some(&m.id)),
        Err(e) => {
            if req.json {
                crate::view::print(&FailedView::<&str> {
                    verified: false,
                    bundle: req.bundle_path,
                    passed: None,
                    failed: CheckView {
                        check: "keyring-identity",
                        error: e.to_string(),
                    },
                })?;
            }
            Err(fail(
                VERIFY_FAILED,
                format!("no keyring identity accepts the bundle: {e}"),
            ))
        }
    }
}

fn print_verified(
    req: &Request<'_>,
    v: &stella_sigstore::Verified,
    signer: Option<&str>,
) -> Result<()> {
    if req.json {
        crate::view::print(&VerifiedView {
            verified: v,
            ok: true,
            bundle: req.bundle_path,
            signer,
        })?;
    } else {
        println!("Verified OK: {}", req.bundle_path);
        if let Some(s) = signer {
            println!("signer: {s} (keyring identity)");
        }
        match (&v.identity, &v.key) {
            (Some(id), _) => {
                println!(
                    "identity: {} (issuer {})",
                    id.subject_alternative_names.join(", "),
                    id.issuer.as_deref().unwrap_or("?")
                );
                println!("certificate authority: {}", id.certificate_authority);
            }
            (None, Some(k)) => println!("key: {k}"),
            (None, None) => {}
        }
        for t in &v.signing_times {
            println!("signing time: {} ({})", t.time, source(t.source));
        }
        for e in &v.tlog_entries {
            println!("transparency log: {} index {}", e.log, e.log_index);
        }
        println!(
            "checks: {}",
            v.checks
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn source(s: stella_sigstore::TimeSource) -> &'static str {
    match s {
        stella_sigstore::TimeSource::TransparencyLog => "transparency log",
        stella_sigstore::TimeSource::Timestamp => "RFC 3161 timestamp",
    }
}

/// Should `stella verify FILE` go through Sigstore verification? Yes when identity or
/// trusted-root flags are given, or the file is a Sigstore bundle stella's own keyring path
/// does not cover: certificate-signed, or v0.1/v0.2 (cosign-era) without `--keyring`.
pub(crate) fn wants(path: &str, args: &SigstoreArgs, keyring: bool) -> bool {
    if args.any() {
        return true;
    }
    let Ok(bytes) = io::read_limited(path, stella_sigstore::bundle::MAX_BUNDLE_BYTES as u64) else {
        return false;
    };
    Bundle::from_json(&bytes)
        .map(|b| {
            b.material.leaf().is_some() || (!keyring && b.version < stella_sigstore::Version::V03)
        })
        .unwrap_or(false)
}

/// A bundle that verified: the library's report, with `verified: true`, the bundle path and
/// (for a keyring identity) the entry that accepted it. These win over any same-named field
/// of the report.
#[derive(Serialize)]
struct VerifiedView<'a> {
    #[serde(flatten)]
    verified: &'a stella_sigstore::Verified,
    #[serde(rename = "verified")]
    ok: bool,
    bundle: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<&'a str>,
}

/// A bundle that did not verify: the checks that passed (when verification ran) and the one
/// that failed.
#[derive(Serialize)]
struct FailedView<'a, C: Serialize> {
    verified: bool,
    bundle: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    passed: Option<&'a [C]>,
    failed: CheckView<C>,
}

/// The check that failed and why.
#[derive(Serialize)]
struct CheckView<C: Serialize> {
    check: C,
    error: String,
}
