//! The order of checks, and the typed report.
//!
//! [`verify`] takes only checked types (a parsed [`Bundle`], a parsed [`TrustedRoot`], a
//! built [`Policy`]) and runs, stopping at the first failure:
//!
//! 1. [`Check::Artifact`]: the artifact is what the bundle signs (message digest; for DSSE,
//!    a subject of the in-toto statement).
//! 2. [`Check::Material`]: the bundle's material fits the policy (a key for `--key`, a
//!    certificate for an identity); a bundle chain holding a root is refused.
//! 3. [`Check::TransparencyLog`]: every entry (at least `tlog_threshold`), see [`crate::tlog`].
//! 4. [`Check::Timestamps`]: every RFC 3161 timestamp, see [`crate::tsa`].
//! 5. [`Check::SigningTime`] (certificates): at least `time_threshold` verified times (SET
//!    integrated times and timestamps). Never the wall clock.
//! 6. [`Check::Certificate`]: at every verified time, the leaf is valid and chains to a Fulcio
//!    CA valid then; the code-signing profile.
//! 7. [`Check::CertificateTransparency`]: an embedded SCT by a CT log of the trusted root.
//! 8. [`Check::Identity`]: the policy's issuer, SAN and extensions.
//! 9. [`Check::Signature`]: the signature over the artifact (or DSSE PAE).

use serde::Serialize;
use time::OffsetDateTime;

use crate::bundle::{Bundle, Content, HashAlgorithm, Material};
use crate::cert::FulcioCert;
use crate::error::VerifyError;
use crate::key::{hex, VerifyingKey};
use crate::policy::Policy;
use crate::tlog::{self, Signer};
use crate::trust::TrustedRoot;
use crate::tsa;

/// One verification step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Check {
    Artifact,
    Material,
    TransparencyLog,
    Timestamps,
    SigningTime,
    Certificate,
    CertificateTransparency,
    Identity,
    Signature,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Artifact => "artifact",
            Check::Material => "material",
            Check::TransparencyLog => "transparency-log",
            Check::Timestamps => "timestamps",
            Check::SigningTime => "signing-time",
            Check::Certificate => "certificate",
            Check::CertificateTransparency => "certificate-transparency",
            Check::Identity => "identity",
            Check::Signature => "signature",
        }
    }
}

/// What is verified: the artifact's bytes, or only its digest (`sha256:<hex>`).
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    Bytes(&'a [u8]),
    Digest {
        algorithm: HashAlgorithm,
        digest: &'a [u8],
    },
    /// No artifact (`stella verify BUNDLE`): a message signature is checked over the bundle's
    /// own message digest, a statement's subjects are not matched, and [`Check::Artifact`]
    /// is not reported as passed.
    Unchecked,
    /// A bundle whose DSSE payload was read apart ([`Content::DetachedDsse`]): the caller has
    /// compared that payload (length and SHA-256) with its own copy of it, and gives the
    /// digest of its PAE under the hash the signing key asks for. A statement's subjects are
    /// not matched.
    Pae(PaeDigest<'a>),
}

/// The digest of a detached DSSE payload's PAE under a hash algorithm (see [`Artifact::Pae`]);
/// an error says why it could not be computed.
#[derive(Clone, Copy)]
pub struct PaeDigest<'a>(pub &'a dyn Fn(HashAlgorithm) -> Result<Vec<u8>, String>);

impl std::fmt::Debug for PaeDigest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaeDigest(..)")
    }
}

/// The error for an artifact of the wrong kind for a detached payload, or the other way round.
fn detached_mismatch(detached: bool) -> VerifyError {
    VerifyError::Material(if detached {
        "the bundle's DSSE payload was read apart: verify it with the digest of its PAE".into()
    } else {
        "a PAE digest was given for a bundle that carries its own payload or signs a message".into()
    })
}

/// Most transparency log entries a bundle may carry (sigstore-go's limit): each is a
/// signature check and a proof, and none of them is signed by the bundle's signer.
pub const MAX_TLOG_ENTRIES: usize = 32;

/// Most RFC 3161 timestamps a bundle may carry (sigstore-go's limit), for the same reason.
pub const MAX_TIMESTAMPS: usize = 32;

/// The first entry of `entries` that repeats an earlier one (same log, same index): the
/// earlier one's position, the repeat's and the entry.
fn duplicate_entry(entries: &[crate::bundle::TlogEntry]) -> Option<VerifyError> {
    entries.iter().enumerate().find_map(|(j, b)| {
        entries[..j]
            .iter()
            .position(|a| a.log_id == b.log_id && a.log_index == b.log_index)
            .map(|i| VerifyError::DuplicateTlogEntry {
                first: i,
                index: j,
                log_id: hex(&b.log_id),
                log_index: b.log_index,
            })
    })
}

/// Thresholds. Entries of one log count once towards `tlog_threshold`; towards
/// `time_threshold`, the integrated times of one log count once, and so do the timestamps
/// of one authority (copies cannot stand in for independent witnesses).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Transparency log entries required (default 1).
    pub tlog_threshold: usize,
    /// Verified signing times required for certificate bundles (default 1).
    pub time_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tlog_threshold: 1,
            time_threshold: 1,
        }
    }
}

/// Where a verified signing time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSource {
    TransparencyLog,
    Timestamp,
}

/// A verified signing time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningTime {
    pub source: TimeSource,
    /// RFC 3339 UTC.
    pub time: String,
    #[serde(skip)]
    pub at: OffsetDateTime,
}

/// The certificate identity of a verified bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerIdentity {
    pub subject_alternative_names: Vec<String>,
    pub issuer: Option<String>,
    pub certificate_authority: String,
}

/// A verified log entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub log: String,
    pub log_index: u64,
    pub signed_entry_timestamp: bool,
    pub inclusion_proof: bool,
}

/// A bundle that passed every check.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub bundle_version: &'static str,
    pub checks: Vec<Check>,
    pub signing_times: Vec<SigningTime>,
    pub identity: Option<SignerIdentity>,
    /// Fingerprint of the key (key-signed bundles).
    pub key: Option<String>,
    pub tlog_entries: Vec<Entry>,
    pub timestamps: usize,
}

/// A bundle that failed: the checks that passed, the one that failed, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} check failed: {error}", failed.name())]
pub struct Failure {
    pub passed: Vec<Check>,
    pub failed: Check,
    pub error: VerifyError,
}

struct Run {
    passed: Vec<Check>,
}

impl Run {
    fn fail(&self, check: Check, error: VerifyError) -> Failure {
        Failure {
            passed: self.passed.clone(),
            failed: check,
            error,
        }
    }

    fn step<T>(&mut self, check: Check, r: Result<T, VerifyError>) -> Result<T, Failure> {
        match r {
            Ok(v) => {
                self.passed.push(check);
                Ok(v)
            }
            Err(error) => Err(self.fail(check, error)),
        }
    }
}

/// The digest of the artifact to verify a message signature with.
enum Message<'a> {
    Bytes(&'a [u8], HashAlgorithm),
    Digest(HashAlgorithm, Vec<u8>),
}

fn check_artifact<'a>(
    bundle: &Bundle,
    artifact: Artifact<'a>,
) -> Result<Option<Message<'a>>, VerifyError> {
    match &bundle.content {
        Content::MessageSignature { digest, .. } => {
            let (alg, expected) = match digest {
                Some((a, d)) => (*a, Some(d)),
                None => (HashAlgorithm::Sha256, None),
            };
            let (actual, msg) = match artifact {
                Artifact::Pae(_) => return Err(detached_mismatch(false)),
                Artifact::Bytes(b) => (alg.digest(b), Message::Bytes(b, alg)),
                Artifact::Digest { algorithm, digest } => {
                    if algorithm != alg {
                        return Err(VerifyError::DigestMismatch {
                            algorithm: algorithm.name().into(),
                            expected: format!(
                                "{}:{}",
                                alg.name(),
                                expected.map(|d| hex(d)).unwrap_or_default()
                            ),
                            actual: hex(digest),
                        });
                    }
                    (digest.to_vec(), Message::Digest(algorithm, digest.to_vec()))
                }
                Artifact::Unchecked => return Ok(None),
            };
            if let Some(e) = expected {
                if *e != actual {
                    return Err(VerifyError::DigestMismatch {
                        algorithm: alg.name().into(),
                        expected: hex(e),
                        actual: hex(&actual),
                    });
                }
            }
            Ok(Some(msg))
        }
        Content::DetachedDsse(_) => match artifact {
            Artifact::Pae(_) => Ok(None),
            _ => Err(detached_mismatch(true)),
        },
        Content::Dsse(env) => {
            if matches!(artifact, Artifact::Pae(_)) {
                return Err(detached_mismatch(false));
            }
            if env.payload_type != "application/vnd.in-toto+json" {
                return Err(VerifyError::Statement(format!(
                    "payload type {:?}, not application/vnd.in-toto+json",
                    env.payload_type
                )));
            }
            let st: serde_json::Value = serde_json::from_slice(&env.payload)
                .map_err(|e| VerifyError::Statement(e.to_string()))?;
            let subjects = st
                .get("subject")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| VerifyError::Statement("no `subject` array".into()))?;
            let mut shown = String::new();
            for alg in [
                HashAlgorithm::Sha256,
                HashAlgorithm::Sha384,
                HashAlgorithm::Sha512,
            ] {
                let want = match artifact {
                    Artifact::Bytes(b) => hex(&alg.digest(b)),
                    Artifact::Digest { algorithm, digest } if algorithm == alg => hex(digest),
                    Artifact::Digest { .. } | Artifact::Unchecked | Artifact::Pae(_) => continue,
                };
                if shown.is_empty() {
                    shown = format!("{}:{want}", alg.name());
                }
                let found = subjects.iter().any(|s| {
                    s.get("digest")
                        .and_then(|d| d.get(alg.name()))
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|v| v.eq_ignore_ascii_case(&want))
                });
                if found {
                    return Ok(None);
                }
            }
            Err(VerifyError::SubjectNotFound { digest: shown })
        }
    }
}

fn parse_time(t: OffsetDateTime, source: TimeSource) -> SigningTime {
    SigningTime {
        source,
        time: stella_x509::format_time(t),
        at: t,
    }
}

/// Verify `bundle` over `artifact` for `policy`, with `root` as the trust anchors.
pub fn verify(
    bundle: &Bundle,
    artifact: Artifact<'_>,
    policy: &Policy,
    root: &TrustedRoot,
    options: &Options,
) -> Result<Verified, Failure> {
    let mut run = Run { passed: Vec::new() };
    let message = match artifact {
        Artifact::Unchecked => match &bundle.content {
            Content::MessageSignature {
                digest: Some((alg, d)),
                ..
            } => Some(Message::Digest(*alg, d.clone())),
            Content::MessageSignature { digest: None, .. } => {
                return Err(Failure {
                    passed: Vec::new(),
                    failed: Check::Artifact,
                    error: VerifyError::Material(
                        "the bundle states no message digest: give the artifact".into(),
                    ),
                })
            }
            Content::Dsse(_) => None,
            Content::DetachedDsse(_) => {
                return Err(run.fail(Check::Artifact, detached_mismatch(true)))
            }
        },
        a => run.step(Check::Artifact, check_artifact(bundle, a))?,
    };

    // Material against the policy.
    let material = run.step(Check::Material, material(bundle, policy))?;
    // The policy's key is borrowed (parsed once by the caller), a certificate's parsed here.
    let (key, leaf) = match &material {
        Signing::Key(k) => (std::borrow::Cow::Borrowed(*k), None),
        Signing::Cert(c) => (std::borrow::Cow::Owned(run_key(&mut run, c)?), Some(c)),
    };
    let signer = match leaf {
        Some(c) => Signer {
            der: c.cert.der(),
            is_certificate: true,
        },
        None => Signer {
            der: key.spki_der(),
            is_certificate: false,
        },
    };

    // Timestamps are verified first (reported after the log): a Rekor v2 entry has no
    // integrated time, so its log key's validity is checked at the verified timestamp times.
    let stamps = if bundle.timestamps.len() > MAX_TIMESTAMPS {
        // Refused before any is read.
        Err(VerifyError::TooManyTimestamps {
            count: bundle.timestamps.len(),
            max: MAX_TIMESTAMPS,
        })
    } else {
        bundle
            .timestamps
            .iter()
            .enumerate()
            .map(|(i, t)| tsa::verify_timestamp(i, t, bundle.content.signature(), root))
            .collect::<Result<Vec<_>, _>>()
    };
    let stamp_times: Vec<OffsetDateTime> = match &stamps {
        Ok(s) => s.iter().map(|s| s.time).collect(),
        Err(_) => Vec::new(),
    };

    // Transparency log.
    let entries = run.step(Check::TransparencyLog, {
        count_entries(&bundle.tlog_entries, options.tlog_threshold).and_then(|()| {
            bundle
                .tlog_entries
                .iter()
                .enumerate()
                .map(|(i, e)| tlog::verify_entry(bundle, i, e, &signer, root, &stamp_times))
                .collect::<Result<Vec<_>, _>>()
        })
    })?;

    // Timestamps.
    let stamps = run.step(Check::Timestamps, stamps)?;
    let mut times: Vec<SigningTime> = entries
        .iter()
        .filter_map(|e| e.integrated_time)
        .map(|t| parse_time(t, TimeSource::TransparencyLog))
        .collect();
    times.extend(
        stamps
            .iter()
            .map(|s| parse_time(s.time, TimeSource::Timestamp)),
    );

    // Witnesses of the signing time: one per log (its entries' integrated times) and one
    // per timestamp authority. Every time is still checked against the certificate below.
    let independent = distinct(
        entries
            .iter()
            .zip(&bundle.tlog_entries)
            .filter(|(e, _)| e.integrated_time.is_some())
            .map(|(_, b)| b.log_id.as_slice()),
    ) + distinct(stamps.iter().map(|s| s.authority.as_str()));

    let mut identity = None;
    if let Some(leaf) = leaf {
        run.step(
            Check::SigningTime,
            if independent < options.time_threshold.max(1) {
                Err(VerifyError::NoVerifiedTime {
                    have: independent,
                    need: options.time_threshold.max(1),
                })
            } else {
                Ok(())
            },
        )?;
        let ca = run.step(Check::Certificate, {
            let mut ca = None;
            let mut res = Ok(());
            for t in &times {
                if let Err(e) = leaf.check_valid_at(t.at) {
                    res = Err(e);
                    break;
                }
                match leaf.path(root, t.at) {
                    Ok(a) => ca = Some(a),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            res.and_then(|()| leaf.check_profile()).and_then(|()| {
                ca.ok_or_else(|| VerifyError::UntrustedCertificate("no signing time".into()))
            })
        })?;
        let issuer = ca.chain.first().cloned();
        run.step(
            Check::CertificateTransparency,
            match &issuer {
                Some(i) => leaf.check_scts(i, root).map(|_| ()),
                None => Err(VerifyError::Sct("the CA has no certificate".into())),
            },
        )?;
        if let Policy::Identity(id) = policy {
            run.step(Check::Identity, id.check(leaf))?;
        }
        identity = Some(SignerIdentity {
            subject_alternative_names: leaf.sans(),
            issuer: leaf.issuer(),
            certificate_authority: format!("{} ({})", ca.subject, ca.uri),
        });
    }

    // The signature.
    let ok = match (&bundle.content, &message) {
        (Content::MessageSignature { signature, .. }, Some(Message::Bytes(b, alg))) => {
            key.verify_with(Some(*alg), b, signature)
        }
        (Content::MessageSignature { signature, .. }, Some(Message::Digest(alg, d))) => {
            key.verify_prehashed(*alg, d, signature)
        }
        (Content::Dsse(env), _) => key.verify(&env.pae(), &env.signature.sig),
        (Content::DetachedDsse(env), _) => {
            let pae = match artifact {
                Artifact::Pae(p) => p,
                _ => return Err(run.fail(Check::Signature, detached_mismatch(true))),
            };
            match key.natural_hash() {
                None => false,
                Some(h) => match (pae.0)(h) {
                    Ok(d) => key.verify_prehashed(h, &d, &env.signature.sig),
                    Err(why) => {
                        return Err(run.fail(
                            Check::Signature,
                            VerifyError::Material(format!("the detached payload: {why}")),
                        ))
                    }
                },
            }
        }
        (Content::MessageSignature { .. }, None) => false,
    };
    let from_digest = matches!(message, Some(Message::Digest(..)))
        || matches!(bundle.content, Content::DetachedDsse(_));
    run.step(
        Check::Signature,
        if ok {
            Ok(())
        } else if from_digest && !key.supports_prehashed() {
            Err(VerifyError::Key(
                "an Ed25519 signature cannot be verified from a digest; give the file".into(),
            ))
        } else {
            Err(VerifyError::Signature {
                key: key.fingerprint(),
            })
        },
    )?;

    Ok(Verified {
        bundle_version: bundle.version.as_str(),
        checks: run.passed,
        signing_times: times,
        identity,
        key: match material {
            Signing::Key(k) => Some(k.fingerprint()),
            Signing::Cert(_) => None,
        },
        tlog_entries: entries
            .iter()
            .map(|e| Entry {
                log: e.log_url.clone(),
                log_index: e.log_index,
                signed_entry_timestamp: e.set_verified,
                inclusion_proof: e.inclusion_proof_verified,
            })
            .collect(),
        timestamps: stamps.len(),
    })
}

/// How many different items `items` yields.
fn distinct<T: Ord>(items: impl Iterator<Item = T>) -> usize {
    let mut all: Vec<T> = items.collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// The checks of a bundle's log entries before any is verified: at most
/// [`MAX_TLOG_ENTRIES`], none repeated, and from at least `threshold` logs.
fn count_entries(
    entries: &[crate::bundle::TlogEntry],
    threshold: usize,
) -> Result<(), VerifyError> {
    if entries.len() > MAX_TLOG_ENTRIES {
        return Err(VerifyError::TooManyTlogEntries {
            count: entries.len(),
            max: MAX_TLOG_ENTRIES,
        });
    }
    if let Some(e) = duplicate_entry(entries) {
        return Err(e);
    }
    if entries.len() < threshold {
        return Err(VerifyError::NoTlogEntry { need: threshold });
    }
    let logs = distinct(entries.iter().map(|e| e.log_id.as_slice()));
    if logs < threshold {
        return Err(VerifyError::TooFewLogs {
            have: logs,
            need: threshold,
        });
    }
    Ok(())
}

enum Signing<'p> {
    Key(&'p VerifyingKey),
    Cert(Box<FulcioCert>),
}

fn run_key(run: &mut Run, c: &FulcioCert) -> Result<VerifyingKey, Failure> {
    c.key().map_err(|error| run.fail(Check::Material, error))
}

fn material<'p>(bundle: &Bundle, policy: &'p Policy) -> Result<Signing<'p>, VerifyError> {
    match (policy, &bundle.material) {
        (Policy::Key(k), Material::PublicKey { .. }) => Ok(Signing::Key(k)),
        (Policy::Key(_), _) => Err(VerifyError::Material(
            "a key was given but the bundle is signed with a certificate: verify it with an identity".into(),
        )),
        (Policy::Identity(_), Material::PublicKey { .. }) => Err(VerifyError::Material(
            "an identity was given but the bundle is signed with a key: verify it with --key".into(),
        )),
        (Policy::Identity(_), m) => {
            if let Material::Chain(chain) = m {
                for der in chain.iter().skip(1) {
                    let c = stella_x509::Cert::from_der(der).map_err(|e| {
                        VerifyError::UntrustedCertificate(format!("a chain certificate: {e}"))
                    })?;
                    if c.is_self_signed() {
                        return Err(VerifyError::ChainIncludesRoot {
                            subject: c.subject(),
                        });
                    }
                }
            }
            let der = m.leaf().ok_or_else(|| VerifyError::Material("no leaf certificate".into()))?;
            FulcioCert::from_der(der).map(|c| Signing::Cert(Box::new(c)))
        }
    }
}
