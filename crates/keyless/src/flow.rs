//! The keyless signing flow.
//!
//! 1. **Certificate**: reuse the current ephemeral key + certificate if [`Reuse`] allows it,
//!    else: a token from the [`IdentityTokenSource`], a fresh [`EphemeralSigner`], its proof
//!    of possession over the token's challenge, a certificate from the
//!    [`CertificateIssuer`] (checked by [`crate::issuer::check_chain`]). Refreshes are
//!    single-flight: concurrent signings wait for one certificate rather than each asking.
//! 2. **Signature**: DSSE over PAE (attestations) or ECDSA over the artifact (blobs).
//! 3. **Timestamp** over the signature bytes ([`Timestamper`]); required on every signature.
//! 4. **Log entry** (optional, [`TlogPolicy`]): `dsse` or `hashedrekord` to Rekor.
//! 5. **Bundle v0.3**, verified with `stella-sigstore` against the trusted root and the
//!    certificate's own identity before it is returned: in full for a certificate's first
//!    bundle and for bundles with a log entry; for later bundles of a reused certificate, the
//!    parts that changed (the timestamp, and the certificate's validity at its time).
//!
//! **Reuse decision** (see docs/keyless.md): a key + certificate may sign several requests
//! while `now + margin < notAfter` (default margin 120 s of Fulcio's 600 s: the timestamp
//! must fall inside the validity even after a slow TSA round trip and clock skew). The key
//! never outlives the certificate: when it is replaced, the old one is dropped (and wiped)
//! as soon as the last in-flight signing using it finishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stella_dsse::{Envelope, Statement};
use stella_keys::Signer;
use stella_sigstore::{Identity, Matcher, Policy, TrustedRoot};
use time::OffsetDateTime;

use crate::bundle::{bundle_json, Content};
use crate::ephemeral::EphemeralSigner;
use crate::error::{KeylessError, UpstreamError};
use crate::issuer::{CertificateIssuer, CertificateRequest, IssuedCertificate};
use crate::timestamp::Timestamper;
use crate::tlog::{LogEntry, Proposal, TlogPolicy, TransparencyLog};
use crate::token::IdentityTokenSource;

/// May a key + certificate sign more than once?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A new key and certificate for every signature.
    PerSignature,
    /// Reuse while `now + margin < notAfter`.
    WithinValidity { margin: Duration },
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse::WithinValidity {
            margin: Duration::from_secs(120),
        }
    }
}

/// Who signed, for the API response (`signingIdentity`) and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningIdentity {
    pub mode: &'static str,
    pub san: String,
    pub oidc_issuer: String,
    pub certificate_serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `sha256:` key id of the ephemeral key.
    pub key_id: String,
    /// The trusted-root CA that issued the certificate.
    pub certificate_authority: String,
}

impl SigningIdentity {
    /// `{"mode","san","oidcIssuer","certificateSerial","notBefore","notAfter","keyId",
    /// "certificateAuthority"}` (times RFC 3339 UTC, milliseconds).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "mode": self.mode,
            "san": self.san,
            "oidcIssuer": self.oidc_issuer,
            "certificateSerial": self.certificate_serial,
            "notBefore": stella_x509::format_time(self.not_before),
            "notAfter": stella_x509::format_time(self.not_after),
            "keyId": self.key_id,
            "certificateAuthority": self.certificate_authority,
        })
    }
}

/// The result of one keyless signing.
#[derive(Debug, Clone)]
pub struct KeylessOutput {
    /// Sigstore bundle v0.3 (JSON).
    pub bundle: Value,
    /// The envelope (DSSE signings).
    pub envelope: Option<Envelope>,
    /// Leaf, then the CA chain of the trusted root (PEM), for `certificateChain`.
    pub certificate_chain: Vec<String>,
    pub identity: SigningIdentity,
    /// The RFC 3161 `genTime`.
    pub timestamp_time: OffsetDateTime,
    /// The log entry, when one was made.
    pub tlog_entry: Option<LogEntry>,
    /// Why there is no log entry although a log is configured (best effort, log unavailable).
    pub tlog_skipped: Option<String>,
    /// This signing obtained a new certificate (false: a reused one).
    pub new_certificate: bool,
}

impl KeylessOutput {
    pub fn bundle_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(&self.bundle).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

struct Certified {
    key: EphemeralSigner,
    cert: IssuedCertificate,
    /// A bundle with this certificate passed the full verification.
    fully_verified: AtomicBool,
}

/// Keyless signing with a certificate issuer, a TSA and an optional transparency log.
pub struct KeylessSigner {
    tokens: Arc<dyn IdentityTokenSource>,
    issuer: Arc<dyn CertificateIssuer>,
    tsa: Arc<dyn Timestamper>,
    tlog: Option<(Arc<dyn TransparencyLog>, TlogPolicy)>,
    root: Arc<TrustedRoot>,
    reuse: Reuse,
    current: tokio::sync::Mutex<Option<Arc<Certified>>>,
}

impl std::fmt::Debug for KeylessSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeylessSigner")
            .field("issuer", &self.issuer.describe())
            .field("tsa", &self.tsa.describe())
            .field("tlog", &self.tlog.as_ref().map(|(l, p)| (l.url(), *p)))
            .field("reuse", &self.reuse)
            .finish_non_exhaustive()
    }
}

impl KeylessSigner {
    /// `root` must describe the issuer's CA and CT log, the TSA, and the log if any: every
    /// bundle is verified against it before it is returned.
    pub fn new(
        tokens: Arc<dyn IdentityTokenSource>,
        issuer: Arc<dyn CertificateIssuer>,
        tsa: Arc<dyn Timestamper>,
        root: Arc<TrustedRoot>,
    ) -> Self {
        KeylessSigner {
            tokens,
            issuer,
            tsa,
            tlog: None,
            root,
            reuse: Reuse::default(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Upload every signature to `log`.
    pub fn with_tlog(mut self, log: Arc<dyn TransparencyLog>, policy: TlogPolicy) -> Self {
        self.tlog = Some((log, policy));
        self
    }

    pub fn with_reuse(mut self, reuse: Reuse) -> Self {
        self.reuse = reuse;
        self
    }

    pub fn trusted_root(&self) -> &TrustedRoot {
        &self.root
    }

    /// A key + certificate usable now (reused or new) and whether it is new.
    async fn certified(&self) -> Result<(Arc<Certified>, bool), KeylessError> {
        // One certificate per signature: no shared state, concurrent signings fetch theirs
        // in parallel.
        let Reuse::WithinValidity { margin } = self.reuse else {
            return Ok((Arc::new(self.new_certificate().await?), true));
        };
        // Reuse: the lock is held across a refresh, so concurrent signings wait for one
        // certificate instead of each asking Fulcio.
        let mut cur = self.current.lock().await;
        let margin = time::Duration::try_from(margin).unwrap_or(time::Duration::MAX);
        if let Some(c) = cur.as_ref() {
            if OffsetDateTime::now_utc() + margin < c.cert.not_after() {
                return Ok((c.clone(), false));
            }
        }
        // Drop our reference to the old key before making the new one.
        *cur = None;
        let fresh = Arc::new(self.new_certificate().await?);
        *cur = Some(fresh.clone());
        Ok((fresh, true))
    }

    async fn new_certificate(&self) -> Result<Certified, KeylessError> {
        let token = self.tokens.token().await?;
        token.check_fresh(OffsetDateTime::now_utc(), 0)?;
        let challenge = token.challenge()?.to_string();
        let key = EphemeralSigner::generate()?;
        let pop = key.sign(challenge.as_bytes())?;
        let cert = self
            .issuer
            .issue(CertificateRequest {
                public_key: key.public_key(),
                token: &token,
                proof_of_possession: &pop,
            })
            .await?;
        // A CA clock slightly ahead of ours (accepted up to `issuer::MAX_CLOCK_SKEW`): wait
        // until the certificate is valid, or the timestamp would predate it.
        let wait = cert.not_before() - OffsetDateTime::now_utc();
        if wait.is_positive() {
            let d = std::time::Duration::try_from(wait + time::Duration::seconds(1))
                .unwrap_or_default()
                .min(crate::issuer::MAX_CLOCK_SKEW + Duration::from_secs(1));
            tokio::time::sleep(d).await;
        }
        Ok(Certified {
            key,
            cert,
            fully_verified: AtomicBool::new(false),
        })
    }

    /// Forget the current certificate (the next signing gets a new one).
    pub async fn rotate(&self) {
        *self.current.lock().await = None;
    }

    /// Sign an in-toto statement as a DSSE envelope.
    pub async fn attest(&self, statement: &Statement) -> Result<KeylessOutput, KeylessError> {
        let payload = statement
            .to_canonical_json()
            .map_err(|e| KeylessError::Input(e.to_string()))?;
        self.sign_dsse(stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload)
            .await
    }

    /// Sign `payload` as a DSSE envelope of `payload_type`.
    pub async fn sign_dsse(
        &self,
        payload_type: &str,
        payload: Vec<u8>,
    ) -> Result<KeylessOutput, KeylessError> {
        let (c, new_certificate) = self.certified().await?;
        let envelope = stella_keys::sign_envelope(payload_type, payload, &[&c.key])?;
        let signature = envelope.signatures[0].sig.clone();
        let proposal = Proposal::Dsse {
            envelope: &envelope,
            certificate_der: c.cert.leaf_der(),
        };
        let mut out = self
            .finish(&c, &signature, Content::Dsse(&envelope), proposal, None)
            .await?;
        out.new_certificate = new_certificate;
        out.envelope = Some(envelope);
        Ok(out)
    }

    /// Sign a blob (message signature: ECDSA P-256 over the bytes, SHA-256 digest in the
    /// bundle; cosign `sign-blob --bundle` form).
    pub async fn sign_blob(&self, artifact: &[u8]) -> Result<KeylessOutput, KeylessError> {
        let (c, new_certificate) = self.certified().await?;
        let signature = c.key.sign(artifact)?;
        let sha256 = stella_keys::sha256(artifact);
        let proposal = Proposal::HashedRekord {
            sha256: &sha256,
            signature: &signature,
            certificate_der: c.cert.leaf_der(),
        };
        let content = Content::Message {
            sha256: &sha256,
            signature: &signature,
        };
        let mut out = self
            .finish(&c, &signature, content, proposal, Some(artifact))
            .await?;
        out.new_certificate = new_certificate;
        Ok(out)
    }

    /// The whole verification of `bundle`; the verified RFC 3161 time.
    fn verify_bundle(
        &self,
        c: &Certified,
        bundle: &Value,
        artifact: Option<&[u8]>,
        has_entry: bool,
    ) -> Result<OffsetDateTime, KeylessError> {
        let text = serde_json::to_vec(bundle).map_err(|e| KeylessError::Input(e.to_string()))?;
        let parsed = stella_sigstore::Bundle::from_json(&text)
            .map_err(|e| KeylessError::Input(format!("the bundle we built: {e}")))?;
        let policy = Policy::Identity(Identity::new(
            Matcher::exact(c.cert.san()),
            Matcher::exact(c.cert.oidc_issuer()),
        ));
        let options = stella_sigstore::Options {
            tlog_threshold: usize::from(has_entry),
            time_threshold: 1,
        };
        let artifact = match artifact {
            Some(a) => stella_sigstore::Artifact::Bytes(a),
            None => stella_sigstore::Artifact::Unchecked,
        };
        let verified = stella_sigstore::verify(&parsed, artifact, &policy, &self.root, &options)
            .map_err(|f| KeylessError::SelfCheck(Box::new(f)))?;
        verified
            .signing_times
            .iter()
            .find(|t| t.source == stella_sigstore::TimeSource::Timestamp)
            .map(|t| t.at)
            .ok_or_else(|| KeylessError::Input("no verified timestamp".into()))
    }

    async fn finish(
        &self,
        c: &Certified,
        signature: &[u8],
        content: Content<'_>,
        proposal: Proposal<'_>,
        artifact: Option<&[u8]>,
    ) -> Result<KeylessOutput, KeylessError> {
        let stamp = self.tsa.timestamp(signature).await?;
        let (tlog_entry, tlog_skipped) = match &self.tlog {
            None => (None, None),
            Some((log, policy)) => match log.upload(proposal).await {
                Ok(e) => (Some(e), None),
                Err(e @ UpstreamError::Unavailable { .. }) if *policy == TlogPolicy::BestEffort => {
                    (None, Some(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            },
        };
        let entries: Vec<Value> = tlog_entry.iter().map(LogEntry::to_bundle_json).collect();
        let bundle = bundle_json(
            content,
            c.cert.leaf_der(),
            std::slice::from_ref(&stamp),
            entries,
        )
        .map_err(|e| KeylessError::Input(e.to_string()))?;

        // Never hand out a bundle our own verifier refuses. The first bundle of a certificate
        // (and every bundle with a log entry) gets the whole verification; later bundles of a
        // reused certificate differ from a verified one only in the signature and the
        // timestamp, so those are what is verified again: the token (CMS signature, TSA of the
        // trusted root, imprint = our signature) and the certificate's validity at genTime.
        let timestamp_time = if tlog_entry.is_some() || !c.fully_verified.load(Ordering::Acquire) {
            let t = self.verify_bundle(c, &bundle, artifact, tlog_entry.is_some())?;
            c.fully_verified.store(true, Ordering::Release);
            t
        } else {
            let check = |failed, error| {
                KeylessError::SelfCheck(Box::new(stella_sigstore::Failure {
                    passed: Vec::new(),
                    failed,
                    error,
                }))
            };
            let vt = stella_sigstore::verify_timestamp(0, &stamp, signature, &self.root)
                .map_err(|e| check(stella_sigstore::Check::Timestamps, e))?;
            c.cert
                .fulcio()
                .check_valid_at(vt.time)
                .map_err(|e| check(stella_sigstore::Check::Certificate, e))?;
            vt.time
        };

        Ok(KeylessOutput {
            bundle,
            envelope: None,
            certificate_chain: c.cert.chain_pem(),
            identity: SigningIdentity {
                mode: crate::MODE,
                san: c.cert.san().to_string(),
                oidc_issuer: c.cert.oidc_issuer().to_string(),
                certificate_serial: c.cert.serial().to_string(),
                not_before: c.cert.not_before(),
                not_after: c.cert.not_after(),
                key_id: c.key.key_id().to_string(),
                certificate_authority: c.cert.authority().to_string(),
            },
            timestamp_time,
            tlog_entry,
            tlog_skipped,
            new_certificate: false,
        })
    }
}
