//! **Development only**: an in-process Fulcio-like CA and RFC 3161 TSA, so keyless signing
//! works offline (the `--dev` quick start, `stella sign --keyless --dev`, tests). Nothing
//! here is a security boundary: the CA reads token claims **without verifying the token's
//! signature** (it checks expiry and the proof of possession only), and its keys are plain
//! files when saved. Every name says `dev`, and the trusted root it writes names the CA
//! `O=stella-dev, CN=stella dev keyless root` so a dev root is never mistaken for a real one.
//!
//! - [`DevCa`]: root (self-signed CA) → intermediate (CA, path length 0) → 10-minute leaf
//!   certificates with the token's identity as SAN, the OIDC issuer extension
//!   (1.3.6.1.4.1.57264.1.8, and the legacy .1.1), and an embedded SCT by a dev CT log key.
//! - [`DevTsa`]: `stella_x509::tsp::LocalTsa` with a TSA certificate issued by the dev root.
//! - [`TrustedRootBuilder`]: writes `trusted_root.json` (`dev.sigstore.trustedroot` 0.1)
//!   for these (and for the test harness's mock services).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey, Signer};
use stella_sigstore::TrustedRoot;
use stella_x509::certgen::{self, CertGenError, San, Spec};
use stella_x509::tsp::LocalTsa;
use stella_x509::x509_cert::name::Name;
use stella_x509::{Cert, Oid};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::{Service, UpstreamError};
use crate::issuer::{check_chain, CertificateIssuer, CertificateRequest, IssuedCertificate};
use crate::timestamp::{granted_response, Timestamper};
use crate::{BoxFuture, KeylessSigner, UpstreamFuture};

/// Leaf lifetime, as Fulcio.
pub(crate) const LEAF_VALIDITY: Duration = Duration::minutes(10);
/// CA, CT and TSA lifetime of a dev setup.
pub(crate) const DEV_VALIDITY: Duration = Duration::days(365);
/// TSA policy of dev timestamps (the Sigstore TSA arc).
pub(crate) const DEV_TSA_POLICY: &str = "1.3.6.1.4.1.57264.2";
/// The URI the dev CA is known by in its trusted root.
pub(crate) const DEV_CA_URI: &str = "https://fulcio.dev.stella.invalid";
pub(crate) const DEV_CT_URL: &str = "https://ctlog.dev.stella.invalid";
pub(crate) const DEV_TSA_URI: &str = "https://tsa.dev.stella.invalid";

fn p256() -> Result<FileKey, CertGenError> {
    FileKey::generate(Algorithm::EcdsaP256Sha256)
        .map_err(|e| CertGenError::Input(format!("key generation: {e}")))
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A key and its certificate.
struct Certified {
    key: FileKey,
    cert: Cert,
}

/// A dev CA: root → intermediate → leaves, plus a CT log key for SCTs.
pub struct DevCa {
    root: Certified,
    intermediate: Certified,
    ct_key: FileKey,
    created: OffsetDateTime,
    /// Trusted root with this CA and CT log only (for checking what it issues).
    own_root: TrustedRoot,
}

/// `name { field: <cert's subject>, .. }`: what a dev service shows of itself (never its keys).
fn debug_by_subject(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    field: &str,
    cert: &Cert,
) -> std::fmt::Result {
    f.debug_struct(name)
        .field(field, &cert.subject())
        .finish_non_exhaustive()
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_by_subject(f, "DevCa", "root", &self.root.cert)
    }
}

/// The dev CA (`root` → `intermediate`) and its CT log, as a trusted root names them.
fn add_dev_ca(
    b: &mut TrustedRootBuilder,
    root: &Cert,
    intermediate: &Cert,
    ct_key: &FileKey,
    created: OffsetDateTime,
) {
    b.authority(
        AuthorityKind::Certificate,
        DEV_CA_URI,
        "stella-dev",
        "stella dev keyless root",
        &[intermediate.der(), root.der()],
        created,
    );
    b.log(
        LogKind::Ctlog,
        DEV_CT_URL,
        ct_key.public_key().spki_der(),
        created,
    );
}

impl DevCa {
    /// New keys and certificates, valid from `now` (backdated one minute) for a year.
    pub(crate) fn generate(now: OffsetDateTime) -> Result<Self, CertGenError> {
        let start = whole_seconds(now) - Duration::minutes(1);
        let root_key = p256()?;
        let root_name = certgen::name("CN=stella dev keyless root,O=stella-dev")?;
        // A CA certificate for `key`, signed by the root key, valid for DEV_VALIDITY.
        let ca_cert = |subject: Name, key: &FileKey, path_len: Option<u8>| {
            let mut extensions = certgen::ca_extensions(path_len)?;
            extensions.extend(certgen::key_ids(
                key.public_key().spki_der(),
                root_key.public_key().spki_der(),
            )?);
            let spec = Spec {
                subject,
                issuer: root_name.clone(),
                serial: certgen::random_serial()?,
                not_before: start,
                not_after: start + DEV_VALIDITY,
                spki_der: key.public_key().spki_der().to_vec(),
                extensions,
            };
            certgen::issue(&spec, &root_key)
        };
        let root = ca_cert(root_name.clone(), &root_key, None)?;
        let intermediate_key = p256()?;
        let intermediate = ca_cert(
            certgen::name("CN=stella dev keyless intermediate,O=stella-dev")?,
            &intermediate_key,
            Some(0),
        )?;
        let ct_key = p256()?;
        Self::assemble(
            Certified {
                key: root_key,
                cert: root,
            },
            Certified {
                key: intermediate_key,
                cert: intermediate,
            },
            ct_key,
            start,
        )
    }

    fn assemble(
        root: Certified,
        intermediate: Certified,
        ct_key: FileKey,
        created: OffsetDateTime,
    ) -> Result<Self, CertGenError> {
        let mut b = TrustedRootBuilder::new();
        add_dev_ca(&mut b, &root.cert, &intermediate.cert, &ct_key, created);
        let own_root = TrustedRoot::from_json(&b.to_json())
            .map_err(|e| CertGenError::Input(format!("dev trusted root: {e}")))?;
        Ok(DevCa {
            root,
            intermediate,
            ct_key,
            created,
            own_root,
        })
    }

    pub fn root(&self) -> &Cert {
        &self.root.cert
    }

    pub fn intermediate(&self) -> &Cert {
        &self.intermediate.cert
    }

    /// Add this CA and its CT log to a trusted root.
    pub fn add_to(&self, b: &mut TrustedRootBuilder) {
        add_dev_ca(
            b,
            &self.root.cert,
            &self.intermediate.cert,
            &self.ct_key,
            self.created,
        );
    }

    /// Issue a leaf for `san`/`oidc_issuer` with any validity (tests build expired or
    /// mismatched certificates with it). Not checked.
    pub fn issue_leaf(
        &self,
        spki_der: &[u8],
        san: &str,
        oidc_issuer: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Cert, CertGenError> {
        let mut ext = certgen::fulcio_leaf_extensions(&San::of(san), oidc_issuer)?;
        ext.extend(certgen::key_ids(
            spki_der,
            self.intermediate.key.public_key().spki_der(),
        )?);
        certgen::issue_with_sct(
            &Spec {
                subject: Name::default(),
                issuer: self
                    .intermediate
                    .cert
                    .certificate()
                    .tbs_certificate
                    .subject
                    .clone(),
                serial: certgen::random_serial()?,
                not_before,
                not_after,
                spki_der: spki_der.to_vec(),
                extensions: ext,
            },
            &self.intermediate.key,
            &self.ct_key,
            not_before,
        )
    }

    fn issue_now(
        &self,
        req: &CertificateRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, UpstreamError> {
        let rejected = |status: u16, message: String| UpstreamError::Rejected {
            service: Service::Fulcio,
            url: DEV_CA_URI.into(),
            status,
            message,
        };
        req.token
            .check_fresh(now, 0)
            .map_err(|e| rejected(401, e.to_string()))?;
        let challenge = req
            .token
            .challenge()
            .map_err(|e| rejected(400, e.to_string()))?;
        if !req
            .public_key
            .verify(challenge.as_bytes(), req.proof_of_possession)
        {
            return Err(rejected(
                400,
                "the proof of possession does not verify with the public key".into(),
            ));
        }
        let nb = whole_seconds(now);
        let leaf = self
            .issue_leaf(
                req.public_key.spki_der(),
                challenge,
                &req.token.issuer,
                nb,
                nb + LEAF_VALIDITY,
            )
            .map_err(|e| UpstreamError::InvalidResponse {
                service: Service::Fulcio,
                url: DEV_CA_URI.into(),
                reason: e.to_string(),
            })?;
        check_chain(
            Service::Fulcio,
            &[leaf.der().to_vec(), self.intermediate.cert.der().to_vec()],
            req,
            &self.own_root,
            now,
        )
    }
}

impl CertificateIssuer for DevCa {
    fn issue<'a>(&'a self, req: CertificateRequest<'a>) -> UpstreamFuture<'a, IssuedCertificate> {
        Box::pin(async move { self.issue_now(&req, OffsetDateTime::now_utc()) })
    }

    fn describe(&self) -> String {
        format!("dev CA {} (in process, dev only)", self.root.cert.subject())
    }
}

/// A dev TSA: a P-256 key and a TSA certificate issued by the dev root.
pub struct DevTsa {
    key: FileKey,
    cert: Cert,
    root: Cert,
    chain_pem: Vec<u8>,
    created: OffsetDateTime,
}

impl std::fmt::Debug for DevTsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_by_subject(f, "DevTsa", "cert", &self.cert)
    }
}

fn pem_of(certs: &[&Cert]) -> Vec<u8> {
    certs
        .iter()
        .map(|c| {
            pem::encode_config(
                &pem::Pem::new("CERTIFICATE", c.der().to_vec()),
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            )
        })
        .collect::<String>()
        .into_bytes()
}

impl DevTsa {
    /// A TSA certificate from the dev CA's root key.
    pub(crate) fn generate(ca: &DevCa, now: OffsetDateTime) -> Result<Self, CertGenError> {
        let start = whole_seconds(now) - Duration::minutes(1);
        let key = p256()?;
        let policy = Oid::new(DEV_TSA_POLICY).map_err(|e| CertGenError::Input(e.to_string()))?;
        let mut ext = certgen::tsa_extensions(policy)?;
        ext.extend(certgen::key_ids(
            key.public_key().spki_der(),
            ca.root.key.public_key().spki_der(),
        )?);
        let cert = certgen::issue(
            &Spec {
                subject: certgen::name("CN=stella dev timestamp authority,O=stella-dev")?,
                issuer: ca.root.cert.certificate().tbs_certificate.subject.clone(),
                serial: certgen::random_serial()?,
                not_before: start,
                not_after: start + DEV_VALIDITY,
                spki_der: key.public_key().spki_der().to_vec(),
                extensions: ext,
            },
            &ca.root.key,
        )?;
        Ok(Self::assemble(key, cert, ca.root.cert.clone(), start))
    }

    fn assemble(key: FileKey, cert: Cert, root: Cert, created: OffsetDateTime) -> Self {
        let chain_pem = pem_of(&[&cert]);
        DevTsa {
            key,
            cert,
            root,
            chain_pem,
            created,
        }
    }

    /// Add this TSA to a trusted root (chain: TSA certificate, dev root).
    pub(crate) fn add_to(&self, b: &mut TrustedRootBuilder) {
        b.authority(
            AuthorityKind::Timestamp,
            DEV_TSA_URI,
            "stella-dev",
            "stella dev timestamp authority",
            &[self.cert.der(), self.root.der()],
            self.created,
        );
    }

    /// A granted `TimeStampResp` over `sha256`, stamped `at`.
    pub fn stamp(&self, sha256: &[u8; 32], at: OffsetDateTime) -> Result<Vec<u8>, UpstreamError> {
        let err = |e: String| UpstreamError::InvalidResponse {
            service: Service::Tsa,
            url: DEV_TSA_URI.into(),
            reason: e,
        };
        // The keyless flow verifies every token against the trusted root before a bundle
        // leaves (`stella_sigstore::verify_timestamp`: CMS signature, imprint, TSA of the
        // root, times), so the TSA's own re-verification of each token (a second P-256 verify
        // per signature) is skipped; `new`'s certificate checks still run.
        let tsa = LocalTsa::new(&self.key, &self.chain_pem, Some(DEV_TSA_POLICY), at)
            .map_err(|e| err(e.to_string()))?
            .verified_by_caller();
        let token = tsa.timestamp(sha256, at).map_err(|e| err(e.to_string()))?;
        granted_response(&token).map_err(|e| err(e.to_string()))
    }
}

impl Timestamper for DevTsa {
    fn timestamp<'a>(&'a self, signature: &'a [u8]) -> UpstreamFuture<'a, Vec<u8>> {
        Box::pin(
            async move { self.stamp(&stella_keys::sha256(signature), OffsetDateTime::now_utc()) },
        )
    }

    fn describe(&self) -> String {
        format!("dev TSA {} (in process, dev only)", self.cert.subject())
    }
}

/// Identity tokens for the dev CA: unsigned JWTs minted on every call (so a long-running dev
/// service never holds an expired one), `email` = `sub` = the identity. Dev only: no real
/// Fulcio accepts them.
#[derive(Debug, Clone)]
pub struct DevIdentity {
    pub issuer: String,
    pub identity: String,
}

/// The default dev identity and issuer (what `--dev-ca` and the dev profile sign as).
pub(crate) const DEV_IDENTITY: &str = "dev@stella.invalid";
pub(crate) const DEV_OIDC_ISSUER: &str = "https://oidc.dev.stella.invalid";

impl Default for DevIdentity {
    fn default() -> Self {
        DevIdentity {
            issuer: DEV_OIDC_ISSUER.into(),
            identity: DEV_IDENTITY.into(),
        }
    }
}

impl crate::IdentityTokenSource for DevIdentity {
    fn token(&self) -> BoxFuture<'_, Result<crate::IdentityToken, crate::token::TokenError>> {
        Box::pin(async move {
            let mut claims = json!({
                "iss": self.issuer,
                "sub": self.identity,
                "aud": "sigstore",
                "exp": OffsetDateTime::now_utc().unix_timestamp() + 600,
            });
            if !self.identity.contains("://") {
                claims["email"] = json!(self.identity);
                claims["email_verified"] = json!(true);
            }
            crate::IdentityToken::parse(&crate::token::unsigned_jwt(&claims))
        })
    }
}

/// A dev CA and TSA together, with the trusted root that verifies what they make.
#[derive(Debug)]
pub struct DevServices {
    pub ca: Arc<DevCa>,
    pub tsa: Arc<DevTsa>,
}

/// File name of a saved dev setup (private keys inside: mode 0600).
pub(crate) const DEV_STATE_FILE: &str = "dev-keyless.json";
/// File name of its trusted root.
pub const DEV_TRUSTED_ROOT_FILE: &str = "trusted_root.json";

/// Why a dev setup cannot be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevStateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a dev keyless state file: {reason}")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    Cert(#[from] CertGenError),
}

impl DevServices {
    pub fn generate(now: OffsetDateTime) -> Result<Self, CertGenError> {
        let ca = DevCa::generate(now)?;
        let tsa = DevTsa::generate(&ca, now)?;
        Ok(DevServices {
            ca: Arc::new(ca),
            tsa: Arc::new(tsa),
        })
    }

    /// `trusted_root.json` for the dev CA, CT log and TSA (no transparency log).
    pub fn trusted_root_json(&self) -> Vec<u8> {
        let mut b = TrustedRootBuilder::new();
        self.ca.add_to(&mut b);
        self.tsa.add_to(&mut b);
        b.to_json()
    }

    /// The parsed trusted root.
    pub fn trusted_root(&self) -> Result<TrustedRoot, stella_sigstore::TrustRootError> {
        TrustedRoot::from_json(&self.trusted_root_json())
    }

    /// Save keys and certificates to `dir/dev-keyless.json` (0600) and the trusted root to
    /// `dir/trusted_root.json`.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), DevStateError> {
        let io = |p: &Path, e| DevStateError::Io {
            path: p.display().to_string(),
            source: e,
        };
        let key = |k: &FileKey| -> Result<Zeroizing<String>, DevStateError> {
            k.to_pkcs8_pem()
                .map_err(|e| DevStateError::Cert(CertGenError::Input(e.to_string())))
        };
        let state = Zeroizing::new(
            json!({
                "warning": "stella DEV keyless CA and TSA: development only, never trust in production",
                "created": rfc3339(self.ca.created),
                "rootKey": key(&self.ca.root.key)?.as_str(),
                "root": b64(self.ca.root.cert.der()),
                "intermediateKey": key(&self.ca.intermediate.key)?.as_str(),
                "intermediate": b64(self.ca.intermediate.cert.der()),
                "ctKey": key(&self.ca.ct_key)?.as_str(),
                "tsaKey": key(&self.tsa.key)?.as_str(),
                "tsa": b64(self.tsa.cert.der()),
            })
            .to_string(),
        );
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(DEV_STATE_FILE);
        write_private(&path, state.as_bytes()).map_err(|e| io(&path, e))?;
        let path = dir.join(DEV_TRUSTED_ROOT_FILE);
        std::fs::write(&path, self.trusted_root_json()).map_err(|e| io(&path, e))
    }

    /// Load what [`DevServices::save`] wrote.
    pub(crate) fn load(dir: &Path) -> Result<Self, DevStateError> {
        let path = dir.join(DEV_STATE_FILE);
        let p = path.display().to_string();
        let text = Zeroizing::new(std::fs::read(&path).map_err(|e| DevStateError::Io {
            path: p.clone(),
            source: e,
        })?);
        let bad = |r: String| DevStateError::Malformed {
            path: p.clone(),
            reason: r,
        };
        let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("missing `{k}`")))
        };
        let key = |k: &str| -> Result<FileKey, DevStateError> {
            FileKey::from_pem(s(k)?.as_bytes(), &mut || {
                Err(stella_keys::KeyError::Password(
                    "unencrypted dev key".into(),
                ))
            })
            .map_err(|e| bad(format!("`{k}`: {e}")))
        };
        let cert = |k: &str| -> Result<Cert, DevStateError> {
            let der = base64::engine::general_purpose::STANDARD
                .decode(s(k)?)
                .map_err(|e| bad(format!("`{k}`: {e}")))?;
            Cert::from_der(&der).map_err(|e| bad(format!("`{k}`: {e}")))
        };
        let created = OffsetDateTime::parse(
            s("created")?,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| bad(format!("`created`: {e}")))?;
        let ca = DevCa::assemble(
            Certified {
                key: key("rootKey")?,
                cert: cert("root")?,
            },
            Certified {
                key: key("intermediateKey")?,
                cert: cert("intermediate")?,
            },
            key("ctKey")?,
            created,
        )?;
        let root = ca.root.cert.clone();
        let tsa = DevTsa::assemble(key("tsaKey")?, cert("tsa")?, root, created);
        Ok(DevServices {
            ca: Arc::new(ca),
            tsa: Arc::new(tsa),
        })
    }

    /// A [`KeylessSigner`] over this CA and TSA (no transparency log), for `tokens`.
    pub fn signer(
        &self,
        tokens: Arc<dyn crate::IdentityTokenSource>,
    ) -> Result<KeylessSigner, stella_sigstore::TrustRootError> {
        Ok(KeylessSigner::new(
            tokens,
            self.ca.clone(),
            self.tsa.clone(),
            Arc::new(self.trusted_root()?),
        ))
    }

    /// Load `dir`'s dev setup, or make and save one.
    pub fn load_or_generate(dir: &Path, now: OffsetDateTime) -> Result<Self, DevStateError> {
        if dir.join(DEV_STATE_FILE).exists() {
            return Self::load(dir);
        }
        let s = Self::generate(now)?;
        s.save(dir)?;
        Ok(s)
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Writes a `dev.sigstore.trustedroot` (media type `…trustedroot+json;version=0.1`).
#[derive(Debug, Clone, Default)]
pub struct TrustedRootBuilder {
    tlogs: Vec<Value>,
    ctlogs: Vec<Value>,
    cas: Vec<Value>,
    tsas: Vec<Value>,
}

/// The logs of a trusted root (`tlogs`, `ctlogs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A Rekor transparency log.
    Tlog,
    /// A certificate transparency log (SCTs).
    Ctlog,
}

/// The authorities of a trusted root (`certificateAuthorities`, `timestampAuthorities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityKind {
    /// A Fulcio CA.
    Certificate,
    /// An RFC 3161 TSA.
    Timestamp,
}

fn log_json(url: &str, spki_der: &[u8], start: OffsetDateTime) -> Value {
    json!({
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": b64(spki_der),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": rfc3339(start)}
        },
        "logId": {"keyId": b64(&stella_keys::sha256(spki_der))}
    })
}

fn authority_json(uri: &str, org: &str, cn: &str, chain: &[&[u8]], start: OffsetDateTime) -> Value {
    json!({
        "subject": {"organization": org, "commonName": cn},
        "uri": uri,
        "certChain": {"certificates": chain.iter().map(|d| json!({"rawBytes": b64(d)})).collect::<Vec<_>>()},
        "validFor": {"start": rfc3339(start)}
    })
}

impl TrustedRootBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A log (P-256 key, SPKI DER), valid from `start`.
    pub fn log(
        &mut self,
        kind: LogKind,
        url: &str,
        spki_der: &[u8],
        start: OffsetDateTime,
    ) -> &mut Self {
        let list = match kind {
            LogKind::Tlog => &mut self.tlogs,
            LogKind::Ctlog => &mut self.ctlogs,
        };
        list.push(log_json(url, spki_der, start));
        self
    }

    /// An authority: `chain` is DER, the issuing (or TSA) certificate first, root last.
    pub fn authority(
        &mut self,
        kind: AuthorityKind,
        uri: &str,
        org: &str,
        cn: &str,
        chain: &[&[u8]],
        start: OffsetDateTime,
    ) -> &mut Self {
        let list = match kind {
            AuthorityKind::Certificate => &mut self.cas,
            AuthorityKind::Timestamp => &mut self.tsas,
        };
        list.push(authority_json(uri, org, cn, chain, start));
        self
    }

    pub fn to_value(&self) -> Value {
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": self.tlogs,
            "certificateAuthorities": self.cas,
            "ctlogs": self.ctlogs,
            "timestampAuthorities": self.tsas,
        })
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.to_value()).unwrap_or_default();
        out.push(b'\n');
        out
    }
}
