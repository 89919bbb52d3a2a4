//! Keyrings: the trust roots a verifier uses. Each trusted key has an id, an algorithm,
//! the purposes it may sign for (`mirror-bundle`, `attestation`, `release`), an optional
//! validity window and a revoked flag.
//!
//! A keyring may also name **Sigstore identities** ([`TrustedIdentity`]): an OIDC issuer and a
//! certificate SAN (exact or an anchored regular expression, optionally other Fulcio
//! extensions) trusted for purposes, like a key. They are verified by `stella-sigstore`
//! (keyless bundles against a trusted root); this crate only reads and checks them. A key
//! entry and an identity entry never satisfy each other: [`Keyring::keys`] holds keys only.
//!
//! On disk a keyring is a TOML file, or a directory. A directory may hold `keyring.toml`
//! (whose relative paths resolve inside the directory); any other `*.pub` / `*.pem` public key
//! in it is trusted for every purpose with no window, which is what a directory of plain PEM
//! files means to cosign users. The file format and its rules are in `docs/keys.md`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::keyref::{is_dev_key, DevKeys};
use crate::public::{Algorithm, PublicKey};
use crate::KeyError;

/// What a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    MirrorBundle,
    Attestation,
    Release,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [
        Purpose::MirrorBundle,
        Purpose::Attestation,
        Purpose::Release,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Purpose::MirrorBundle => "mirror-bundle",
            Purpose::Attestation => "attestation",
            Purpose::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Result<Self, KeyError> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                KeyError::Keyring(format!(
                    "unknown purpose {s:?} (known: mirror-bundle, attestation, release)"
                ))
            })
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key the verifier trusts, with the limits of that trust.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: String,
    pub key: PublicKey,
    pub purposes: BTreeSet<Purpose>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    pub revoked: bool,
}

/// Why a key that made a valid signature could not be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    Revoked,
    Purpose(Purpose),
    NotYetValid(OffsetDateTime),
    Expired(OffsetDateTime),
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("key"))
    }
}

impl Ineligible {
    /// The reason, naming what was refused (`key`, `identity`).
    pub fn describe(&self, what: &str) -> String {
        match self {
            Ineligible::Revoked => format!("the {what} is revoked"),
            Ineligible::Purpose(p) => format!("the {what} is not trusted for purpose `{p}`"),
            Ineligible::NotYetValid(t) => {
                format!("the {what} is not valid before {}", fmt_time(*t))
            }
            Ineligible::Expired(t) => format!("the {what} expired at {}", fmt_time(*t)),
        }
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl TrustedKey {
    /// A key trusted for every purpose, forever (what `--key PUB` means on the command line).
    pub fn unrestricted(key: PublicKey) -> Self {
        TrustedKey {
            id: key.key_id().to_string(),
            key,
            purposes: Purpose::ALL.into_iter().collect(),
            not_before: None,
            not_after: None,
            revoked: false,
        }
    }
}

/// A value a certificate field must have: exactly, or matching a regular expression that is
/// anchored to the whole value (`^(?:re)$`, so `.*@example\.com` does not match
/// `x@example.com.attacker`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Exact(String),
    Regex(String),
}

impl Pattern {
    /// A regular expression, checked to compile (anchored).
    pub fn regex(re: &str) -> Result<Self, KeyError> {
        regex::Regex::new(&format!("^(?:{re})$"))
            .map_err(|e| KeyError::Keyring(format!("invalid regular expression {re:?}: {e}")))?;
        Ok(Pattern::Regex(re.to_string()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) => write!(f, "{s:?}"),
            Pattern::Regex(r) => write!(f, "/{r}/"),
        }
    }
}

/// The Sigstore trusted root an identity is verified against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRootRef {
    /// The public-good root shipped with the binary (the default).
    PublicGood,
    /// The staging root shipped with the binary.
    Staging,
    /// A `dev.sigstore.trustedroot` JSON file, read when the keyring was loaded.
    File {
        path: PathBuf,
        json: std::sync::Arc<Vec<u8>>,
    },
}

impl fmt::Display for TrustRootRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustRootRef::PublicGood => f.write_str("public-good"),
            TrustRootRef::Staging => f.write_str("staging"),
            TrustRootRef::File { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

/// A Sigstore identity the verifier trusts (keyless signatures), with the limits of that
/// trust. Verified by `stella-sigstore` against `trusted_root`.
#[derive(Debug, Clone)]
pub struct TrustedIdentity {
    pub id: String,
    /// The OIDC issuer (Fulcio extension 1.3.6.1.4.1.57264.1.8, or the legacy .1.1).
    pub issuer: Pattern,
    /// One SAN of the certificate (email or URI).
    pub san: Pattern,
    /// Other Fulcio extensions by dotted OID.
    pub extensions: Vec<(String, Pattern)>,
    pub trusted_root: TrustRootRef,
    pub purposes: BTreeSet<Purpose>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    pub revoked: bool,
}

/// `check` for the two kinds of trusted entry, keys and identities: both carry the limits of
/// their trust in the same four fields (`revoked`, `purposes`, `not_before`, `not_after`), and
/// one set of rules reads them.
macro_rules! eligibility {
    ($($entry:ty),+) => {$(
        impl $entry {
            /// May this entry count for `purpose` at time `at`?
            pub fn check(
                &self,
                purpose: Option<Purpose>,
                at: OffsetDateTime,
            ) -> Result<(), Ineligible> {
                if self.revoked {
                    return Err(Ineligible::Revoked);
                }
                if let Some(p) = purpose {
                    if !self.purposes.contains(&p) {
                        return Err(Ineligible::Purpose(p));
                    }
                }
                if let Some(nb) = self.not_before {
                    if at < nb {
                        return Err(Ineligible::NotYetValid(nb));
                    }
                }
                if let Some(na) = self.not_after {
                    if at > na {
                        return Err(Ineligible::Expired(na));
                    }
                }
                Ok(())
            }
        }
    )+};
}

eligibility!(TrustedKey, TrustedIdentity);

/// A set of trusted keys and Sigstore identities.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
    identities: Vec<TrustedIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    keys: Vec<FileEntry>,
    #[serde(default)]
    identities: Vec<IdentityEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityEntry {
    id: String,
    certificate_identity: Option<String>,
    certificate_identity_regexp: Option<String>,
    certificate_oidc_issuer: Option<String>,
    certificate_oidc_issuer_regexp: Option<String>,
    #[serde(default)]
    extensions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    extensions_regexp: std::collections::BTreeMap<String, String>,
    trusted_root: Option<String>,
    purposes: Vec<String>,
    not_before: Option<toml::Value>,
    not_after: Option<toml::Value>,
    #[serde(default)]
    revoked: bool,
}

fn one_pattern(
    id: &str,
    exact: Option<String>,
    re: Option<String>,
    field: &str,
) -> Result<Pattern, KeyError> {
    match (exact, re) {
        (Some(e), None) if !e.is_empty() => Ok(Pattern::Exact(e)),
        (None, Some(r)) if !r.is_empty() => Pattern::regex(&r)
            .map_err(|e| KeyError::Keyring(format!("identity {id:?}: `{field}_regexp`: {e}"))),
        (Some(_), Some(_)) => Err(KeyError::Keyring(format!(
            "identity {id:?}: give `{field}` or `{field}_regexp`, not both"
        ))),
        _ => Err(KeyError::Keyring(format!(
            "identity {id:?}: `{field}` or `{field}_regexp` is required (and not empty)"
        ))),
    }
}

fn is_dotted_oid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn window(
    id: &str,
    nb: Option<&toml::Value>,
    na: Option<&toml::Value>,
) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), KeyError> {
    let not_before = nb.map(|v| parse_time(v, "not_before", id)).transpose()?;
    let not_after = na.map(|v| parse_time(v, "not_after", id)).transpose()?;
    if let (Some(a), Some(b)) = (not_before, not_after) {
        if a > b {
            return Err(KeyError::Keyring(format!(
                "key {id:?}: not_before is after not_after"
            )));
        }
    }
    Ok((not_before, not_after))
}

fn purposes_of(id: &str, list: &[String]) -> Result<BTreeSet<Purpose>, KeyError> {
    if list.is_empty() {
        return Err(KeyError::Keyring(format!("key {id:?} has no purposes")));
    }
    list.iter().map(|p| Purpose::parse(p)).collect()
}

impl IdentityEntry {
    fn into_identity(self, base: &Path) -> Result<TrustedIdentity, KeyError> {
        let id = self.id;
        let san = one_pattern(
            &id,
            self.certificate_identity,
            self.certificate_identity_regexp,
            "certificate_identity",
        )?;
        let issuer = one_pattern(
            &id,
            self.certificate_oidc_issuer,
            self.certificate_oidc_issuer_regexp,
            "certificate_oidc_issuer",
        )?;
        let mut extensions = Vec::new();
        for (oid, v) in self.extensions {
            extensions.push((oid, Pattern::Exact(v)));
        }
        for (oid, v) in self.extensions_regexp {
            let p = Pattern::regex(&v).map_err(|e| {
                KeyError::Keyring(format!("identity {id:?}: extensions_regexp {oid}: {e}"))
            })?;
            extensions.push((oid, p));
        }
        for (oid, _) in &extensions {
            if !is_dotted_oid(oid) {
                return Err(KeyError::Keyring(format!(
                    "identity {id:?}: extension {oid:?} is not a dotted OID"
                )));
            }
        }
        let trusted_root = match self.trusted_root.as_deref() {
            None | Some("public-good") => TrustRootRef::PublicGood,
            Some("staging") => TrustRootRef::Staging,
            Some(p) => {
                let path = base.join(p);
                let json = std::fs::read(&path).map_err(|e| KeyError::Io(path.clone(), e))?;
                TrustRootRef::File {
                    path,
                    json: std::sync::Arc::new(json),
                }
            }
        };
        let purposes = purposes_of(&id, &self.purposes)?;
        let (not_before, not_after) =
            window(&id, self.not_before.as_ref(), self.not_after.as_ref())?;
        Ok(TrustedIdentity {
            id,
            issuer,
            san,
            extensions,
            trusted_root,
            purposes,
            not_before,
            not_after,
            revoked: self.revoked,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    public_key: String,
    algorithm: Option<String>,
    purposes: Vec<String>,
    not_before: Option<toml::Value>,
    not_after: Option<toml::Value>,
    #[serde(default)]
    revoked: bool,
}

fn parse_time(v: &toml::Value, field: &str, id: &str) -> Result<OffsetDateTime, KeyError> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => {
            return Err(KeyError::Keyring(format!(
                "key {id:?}: `{field}` must be an RFC 3339 date-time"
            )))
        }
    };
    OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| {
        KeyError::Keyring(format!(
            "key {id:?}: `{field}` {text:?} is not an RFC 3339 date-time with offset: {e}"
        ))
    })
}

impl Keyring {
    pub fn new(keys: Vec<TrustedKey>) -> Result<Self, KeyError> {
        let mut ring = Keyring::default();
        for k in keys {
            ring.push(k)?;
        }
        Ok(ring)
    }

    /// Add a key; the same public key twice (or the same id twice) is an error, so a keyring
    /// can never make one key count twice towards a threshold.
    pub fn push(&mut self, key: TrustedKey) -> Result<(), KeyError> {
        if self.identities.iter().any(|i| i.id == key.id) {
            return Err(KeyError::Keyring(format!(
                "id {:?} appears twice in the keyring (a key and an identity)",
                key.id
            )));
        }
        if let Some(other) = self
            .keys
            .iter()
            .find(|k| k.key == key.key || k.id == key.id)
        {
            return Err(KeyError::Keyring(format!(
                "key {:?} appears twice in the keyring (also as {:?})",
                key.id, other.id
            )));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Add a Sigstore identity; the same id twice, or the same issuer and SAN patterns twice,
    /// is an error (one identity never counts twice towards a threshold).
    pub fn push_identity(&mut self, ident: TrustedIdentity) -> Result<(), KeyError> {
        if self.keys.iter().any(|k| k.id == ident.id) {
            return Err(KeyError::Keyring(format!(
                "id {:?} appears twice in the keyring (a key and an identity)",
                ident.id
            )));
        }
        if let Some(other) = self.identities.iter().find(|i| {
            i.id == ident.id
                || (i.issuer == ident.issuer
                    && i.san == ident.san
                    && i.extensions == ident.extensions)
        }) {
            return Err(KeyError::Keyring(format!(
                "identity {:?} appears twice in the keyring (also as {:?})",
                ident.id, other.id
            )));
        }
        self.identities.push(ident);
        Ok(())
    }

    /// The trusted keys (never the identities).
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The trusted Sigstore identities.
    pub fn identities(&self) -> &[TrustedIdentity] {
        &self.identities
    }

    /// Replace the trusted root of identity entries: `f` returns the new reference, or `None`
    /// to keep it (the CLI points `public-good`/`staging` at a root imported with `stella
    /// trust-root import`). Patterns, ids and purposes cannot change this way.
    pub fn resolve_trust_roots(&mut self, f: impl Fn(&TrustRootRef) -> Option<TrustRootRef>) {
        for i in &mut self.identities {
            if let Some(r) = f(&i.trusted_root) {
                i.trusted_root = r;
            }
        }
    }

    /// The same identities, these keys (revocation lists rewrite the keys only).
    pub fn with_keys(&self, keys: Vec<TrustedKey>) -> Result<Self, KeyError> {
        let mut ring = Keyring::new(keys)?;
        for i in &self.identities {
            ring.push_identity(i.clone())?;
        }
        Ok(ring)
    }

    /// No key and no identity.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.identities.is_empty()
    }

    /// Load a keyring from a TOML file or a directory.
    pub fn load(path: &Path, dev: DevKeys) -> Result<Self, KeyError> {
        let meta = std::fs::metadata(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
        let ring = if meta.is_dir() {
            Self::load_dir(path, dev)?
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.into(), e))?;
            let base = path.parent().unwrap_or(Path::new("."));
            Self::from_toml(&text, base, dev)?
        };
        if ring.is_empty() {
            return Err(KeyError::Keyring(format!(
                "keyring {} holds no keys and no identities",
                path.display()
            )));
        }
        Ok(ring)
    }

    fn load_dir(dir: &Path, dev: DevKeys) -> Result<Self, KeyError> {
        let toml_path = dir.join("keyring.toml");
        let mut ring = if toml_path.exists() {
            let text = std::fs::read_to_string(&toml_path)
                .map_err(|e| KeyError::Io(toml_path.clone(), e))?;
            Self::from_toml(&text, dir, dev)?
        } else {
            Keyring::default()
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| KeyError::Io(dir.into(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pub" | "pem")))
            .collect();
        files.sort();
        for path in files {
            let key = crate::keyref::load_public_file(&path, dev)?;
            if ring.keys.iter().any(|k| k.key == key) {
                // Already described by keyring.toml or an earlier file (keys compare in
                // their canonical form, so a re-encoded copy is the same key).
                continue;
            }
            let mut tk = TrustedKey::unrestricted(key);
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                tk.id = stem.to_string();
            }
            ring.push(tk)?;
        }
        Ok(ring)
    }

    /// Parse the TOML form; relative key paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path, dev: DevKeys) -> Result<Self, KeyError> {
        let doc: FileDoc =
            toml::from_str(text).map_err(|e| KeyError::Keyring(format!("invalid keyring: {e}")))?;
        let mut ring = Keyring::default();
        for e in doc.keys {
            let key = if e.public_key.trim_start().starts_with("-----BEGIN") {
                PublicKey::from_pem(e.public_key.as_bytes())?
            } else {
                crate::keyref::load_public_file(&base.join(&e.public_key), DevKeys::Allow)?
            };
            if is_dev_key(&key) && dev == DevKeys::Refuse {
                return Err(KeyError::DevKey);
            }
            if let Some(alg) = &e.algorithm {
                let want = Algorithm::parse(alg)?;
                if want != key.algorithm() {
                    return Err(KeyError::Keyring(format!(
                        "key {:?} is declared {want} but the key file holds a {} key",
                        e.id,
                        key.algorithm()
                    )));
                }
            }
            let purposes = purposes_of(&e.id, &e.purposes)?;
            let (not_before, not_after) =
                window(&e.id, e.not_before.as_ref(), e.not_after.as_ref())?;
            ring.push(TrustedKey {
                id: e.id,
                key,
                purposes,
                not_before,
                not_after,
                revoked: e.revoked,
            })?;
        }
        for i in doc.identities {
            ring.push_identity(i.into_identity(base)?)?;
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileKey;
    use crate::signer::Signer;
    use time::macros::datetime;

    fn pem(alg: Algorithm) -> (FileKey, String) {
        let k = FileKey::generate(alg).unwrap();
        let p = k.public_key().to_pem();
        (k, p)
    }

    #[test]
    fn toml_keyring_with_inline_and_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p1) = pem(Algorithm::Ed25519);
        let (_, p2) = pem(Algorithm::EcdsaP256Sha256);
        std::fs::write(dir.path().join("two.pub"), &p2).unwrap();
        let text = format!(
            r#"
[[keys]]
id = "one"
public_key = """{p1}"""
algorithm = "ed25519"
purposes = ["mirror-bundle"]
not_before = 2025-01-01T00:00:00Z
not_after = "2027-01-01T00:00:00Z"

[[keys]]
id = "two"
public_key = "two.pub"
purposes = ["attestation", "release"]
revoked = true
"#
        );
        std::fs::write(dir.path().join("keyring.toml"), &text).unwrap();
        let ring = Keyring::load(dir.path(), DevKeys::Refuse).unwrap();
        // two.pub is described by keyring.toml, so it is not added again.
        assert_eq!(ring.keys().len(), 2);
        let one = &ring.keys()[0];
        assert!(one
            .check(Some(Purpose::MirrorBundle), datetime!(2026-01-01 0:00 UTC))
            .is_ok());
        assert_eq!(
            one.check(Some(Purpose::Attestation), datetime!(2026-01-01 0:00 UTC)),
            Err(Ineligible::Purpose(Purpose::Attestation))
        );
        assert!(matches!(
            one.check(None, datetime!(2024-01-01 0:00 UTC)),
            Err(Ineligible::NotYetValid(_))
        ));
        assert!(matches!(
            one.check(None, datetime!(2028-01-01 0:00 UTC)),
            Err(Ineligible::Expired(_))
        ));
        assert_eq!(
            ring.keys()[1].check(None, datetime!(2026-01-01 0:00 UTC)),
            Err(Ineligible::Revoked)
        );
        // The same file loaded as a TOML path works too.
        let ring2 = Keyring::load(&dir.path().join("keyring.toml"), DevKeys::Refuse).unwrap();
        assert_eq!(ring2.keys().len(), 2);
    }

    #[test]
    fn keyring_errors() {
        let (_, p1) = pem(Algorithm::Ed25519);
        let base = Path::new(".");
        let cases = [
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=[]\n"), "no purposes"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=['sign-anything']\n"), "unknown purpose"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\nalgorithm='p256'\npurposes=['release']\n"), "declared p256"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=['release']\nnot_after='tomorrow'\n"), "RFC 3339"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=['release']\n[[keys]]\nid='b'\npublic_key='''{p1}'''\npurposes=['release']\n"), "twice"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=['release']\ncolour='red'\n"), "unknown field"),
            ("[[keys]]\nid='a'\npublic_key='missing.pub'\npurposes=['release']\n".to_string(), "missing.pub"),
        ];
        for (text, needle) in cases {
            let err = Keyring::from_toml(&text, base, DevKeys::Refuse)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(Keyring::load(empty.path(), DevKeys::Refuse)
            .unwrap_err()
            .to_string()
            .contains("no keys"));
    }

    #[test]
    fn identity_entries_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.json"), b"{}").unwrap();
        let (_, p1) = pem(Algorithm::Ed25519);
        let ok = format!(
            "[[keys]]\nid='k'\npublic_key='''{p1}'''\npurposes=['release']\n\
             [[identities]]\nid='ci'\ncertificate_identity_regexp='https://github\\.com/org/.*'\n\
             certificate_oidc_issuer='https://token.actions.githubusercontent.com'\n\
             trusted_root='root.json'\npurposes=['release','mirror-bundle']\n\
             [identities.extensions]\n'1.3.6.1.4.1.57264.1.12'='https://github.com/org/repo'\n\
             [[identities]]\nid='staging'\ncertificate_identity='a@b.c'\n\
             certificate_oidc_issuer='https://i'\ntrusted_root='staging'\npurposes=['attestation']\n\
             [[identities]]\nid='pg'\ncertificate_identity='x@b.c'\n\
             certificate_oidc_issuer='https://i'\npurposes=['attestation']\n"
        );
        let ring = Keyring::from_toml(&ok, dir.path(), DevKeys::Refuse).unwrap();
        assert_eq!(ring.keys().len(), 1, "identities are not keys");
        let ids = ring.identities();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            ids[0].san,
            Pattern::Regex(r"https://github\.com/org/.*".into())
        );
        assert_eq!(ids[0].extensions.len(), 1);
        assert!(matches!(ids[0].trusted_root, TrustRootRef::File { .. }));
        assert_eq!(ids[1].trusted_root, TrustRootRef::Staging);
        assert_eq!(ids[2].trusted_root, TrustRootRef::PublicGood);
        assert_eq!(
            ids[1].check(Some(Purpose::Release), datetime!(2026-01-01 0:00 UTC)),
            Err(Ineligible::Purpose(Purpose::Release))
        );
        // Revocation lists rewrite keys and keep identities.
        assert_eq!(ring.with_keys(Vec::new()).unwrap().identities().len(), 3);

        let id = |body: &str| format!("[[identities]]\nid='a'\npurposes=['release']\n{body}\n");
        let both = "certificate_identity='a'\ncertificate_oidc_issuer='https://i'";
        let cases = [
            (id("certificate_oidc_issuer='https://i'"), "certificate_identity` or"),
            (id("certificate_identity='a'\ncertificate_identity_regexp='a'\ncertificate_oidc_issuer='https://i'"), "not both"),
            (id("certificate_identity='a'\ncertificate_oidc_issuer_regexp='('"), "invalid regular expression"),
            (id("certificate_identity=''\ncertificate_oidc_issuer='https://i'"), "not empty"),
            (id(&format!("{both}\ntrusted_root='missing.json'")), "missing.json"),
            (id(&format!("{both}\n[identities.extensions]\n'github'='x'")), "dotted OID"),
            (id(&format!("{both}\ncolour='red'")), "unknown field"),
            (format!("{}{}", id(both), id("certificate_identity='b'\ncertificate_oidc_issuer='https://i'")), "twice"),
            (format!("{}{}", id(both), id(both).replace("id='a'", "id='b'")), "twice"),
            (format!("[[keys]]\nid='a'\npublic_key='''{p1}'''\npurposes=['release']\n{}", id(both)), "a key and an identity"),
            (format!("[[identities]]\nid='a'\npurposes=[]\n{both}\n"), "no purposes"),
        ];
        for (text, needle) in cases {
            let err = Keyring::from_toml(&text, dir.path(), DevKeys::Refuse)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // An identity-only keyring is not empty.
        std::fs::write(dir.path().join("keyring.toml"), id(both)).unwrap();
        let ring = Keyring::load(&dir.path().join("keyring.toml"), DevKeys::Refuse).unwrap();
        assert!(!ring.is_empty() && ring.keys().is_empty());
    }

    #[test]
    fn fuzz_seed_with_identities_parses() {
        let text = include_str!("../../../fuzz/seeds/keyring/identities.toml");
        let ring = Keyring::from_toml(text, Path::new("."), DevKeys::Refuse).unwrap();
        assert_eq!((ring.keys().len(), ring.identities().len()), (1, 1));
        assert_eq!(ring.identities()[0].extensions.len(), 2);
    }

    #[test]
    fn plain_pem_directory_trusts_all_purposes() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = pem(Algorithm::EcdsaP256Sha256);
        std::fs::write(dir.path().join("release.pem"), p).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let ring = Keyring::load(dir.path(), DevKeys::Refuse).unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.keys()[0].id, "release");
        assert_eq!(&ring.keys()[0].key, k.public_key());
        assert_eq!(ring.keys()[0].purposes.len(), 3);
    }

    /// The same P-256 key as PEM with a compressed point (what `openssl ec -pubin
    /// -conv_form compressed` writes).
    fn compressed_pem(k: &PublicKey) -> String {
        let der = k.spki_der();
        let point = &der[26..];
        let mut c = vec![0x02 | (point[64] & 1)];
        c.extend_from_slice(&point[1..33]);
        let mut spki = vec![0x30, 0x39];
        spki.extend_from_slice(&der[2..23]); // AlgorithmIdentifier, unchanged
        spki.extend_from_slice(&[0x03, 0x22, 0x00]);
        spki.extend_from_slice(&c);
        crate::pem_encode("PUBLIC KEY", &spki)
    }

    // Regression (issue #8 item 1): one key written twice (compressed and uncompressed
    // point) filled two keyring slots.
    #[test]
    fn reencoded_key_is_one_key_in_every_keyring_form() {
        let (k, p) = pem(Algorithm::EcdsaP256Sha256);
        let c = compressed_pem(k.public_key());
        assert_ne!(p, c);
        let same = PublicKey::from_pem(c.as_bytes()).unwrap();
        assert_eq!(same.key_id(), k.public_key().key_id());

        // TOML: two entries, two ids, one key.
        let text = format!(
            "[[keys]]\nid='a'\npublic_key='''{p}'''\npurposes=['release']\n\
             [[keys]]\nid='b'\npublic_key='''{c}'''\npurposes=['release']\n"
        );
        let err = Keyring::from_toml(&text, Path::new("."), DevKeys::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");

        // A directory of two files holding the one key: one slot.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pub"), &p).unwrap();
        std::fs::write(dir.path().join("b.pem"), &c).unwrap();
        let ring = Keyring::load(dir.path(), DevKeys::Refuse).unwrap();
        assert_eq!(ring.keys().len(), 1);

        // keyring.toml describes the key; the folder holds it again, re-encoded: one slot.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("keyring.toml"),
            "[[keys]]\nid='a'\npublic_key='a.pub'\npurposes=['release']\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.pub"), &p).unwrap();
        std::fs::write(dir.path().join("again.pem"), &c).unwrap();
        let ring = Keyring::load(dir.path(), DevKeys::Refuse).unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.keys()[0].id, "a");

        // `--key a --key b` builds a keyring with Keyring::new.
        let err = Keyring::new(vec![
            TrustedKey::unrestricted(k.public_key().clone()),
            TrustedKey::unrestricted(same),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
