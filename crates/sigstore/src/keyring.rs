//! Keyring identities: a keyring entry (`[[identities]]`, `stella_keys::TrustedIdentity`)
//! names a Sigstore identity — OIDC issuer and SAN, exact or an anchored regular expression,
//! optionally other Fulcio extensions — as a trusted signer for purposes. [`IdentityTrust`]
//! compiles those entries (patterns into [`Identity`] policies; trusted roots parsed once per
//! process for the shipped ones and once per loaded keyring for files, so building it per
//! verification is cheap) and verifies keyless bundles with [`crate::verify`] against them.
//!
//! Rules (docs/keys.md, docs/sigstore.md):
//! - only certificate bundles are verified here; a key-signed bundle never satisfies an
//!   identity entry, and an identity entry never makes a key trusted by itself ([`Keyring::keys`]
//!   holds only key entries);
//! - the purpose, window and revoked flag of the entry apply as for keys
//!   ([`TrustedIdentity::check`]), at the caller's time;
//! - the bundle must pass every check of [`crate::verify`] with the default thresholds (a
//!   transparency log entry and a verified signing time);
//! - a threshold counts an identity once: [`IdentityMatch::identity`] is what callers count.

use std::sync::{Arc, OnceLock};

use stella_keys::{Ineligible, Keyring, Pattern, Purpose, TrustRootRef, TrustedIdentity};
use time::OffsetDateTime;

use crate::bundle::{Bundle, Material};
use crate::error::TrustRootError;
use crate::key::VerifyingKey;
use crate::policy::{Identity, Matcher, Policy, PolicyError};
use crate::trust::TrustedRoot;
use crate::verify::{verify, Artifact, Failure, Options, Verified};

/// An identity entry that cannot be used (its pattern or trusted root is bad).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityTrustError {
    #[error("identity {id:?}: {source}")]
    Policy {
        id: String,
        #[source]
        source: PolicyError,
    },
    #[error("identity {id:?}: trusted root {root}: {source}")]
    Root {
        id: String,
        root: String,
        #[source]
        source: TrustRootError,
    },
}

/// Why no identity entry accepted a bundle.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityRefusal {
    #[error("the keyring names no Sigstore identity")]
    NoIdentities,
    #[error("the bundle is signed with a key, not a certificate: identity entries verify only keyless (certificate) bundles")]
    NotKeyless,
    #[error("{}", .0.iter().map(|(id, r)| format!("identity {id:?}: {r}")).collect::<Vec<_>>().join("; "))]
    Refused(Vec<(String, EntryRefusal)>),
}

/// Why one identity entry did not accept a bundle.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EntryRefusal {
    /// The bundle verified for this identity, but the entry may not count (purpose, window,
    /// revoked).
    #[error("{}", .0.describe("identity"))]
    Ineligible(Ineligible),
    /// The bundle failed a check for this identity.
    #[error("{0}")]
    Failed(Failure),
}

/// A bundle accepted by an identity entry.
#[derive(Debug, Clone)]
pub struct IdentityMatch {
    /// The keyring entry's id.
    pub id: String,
    /// The certificate's (ephemeral) key.
    pub key: VerifyingKey,
    /// What a threshold counts once: the OIDC issuer and the SANs of the certificate.
    pub identity: String,
    pub verified: Verified,
}

struct Entry {
    source: TrustedIdentity,
    policy: Policy,
    root: Arc<TrustedRoot>,
}

/// The identity entries of a keyring, ready to verify bundles.
pub struct IdentityTrust {
    entries: Vec<Entry>,
    options: Options,
}

impl std::fmt::Debug for IdentityTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.source.id))
            .finish()
    }
}

fn matcher(p: &Pattern) -> Result<Matcher, PolicyError> {
    match p {
        Pattern::Exact(s) => Ok(Matcher::exact(s.clone())),
        Pattern::Regex(r) => Matcher::regex(r),
    }
}

fn shipped(staging: bool) -> Result<Arc<TrustedRoot>, TrustRootError> {
    static PUBLIC_GOOD: OnceLock<Arc<TrustedRoot>> = OnceLock::new();
    static STAGING: OnceLock<Arc<TrustedRoot>> = OnceLock::new();
    let (cell, json) = if staging {
        (&STAGING, crate::trust::STAGING_JSON)
    } else {
        (&PUBLIC_GOOD, crate::trust::PUBLIC_GOOD_JSON)
    };
    if let Some(r) = cell.get() {
        return Ok(r.clone());
    }
    let r = Arc::new(TrustedRoot::from_json(json)?);
    Ok(cell.get_or_init(|| r).clone())
}

/// A trusted root file of a loaded keyring, parsed once per loaded content: keyed by the
/// keyring's shared bytes (`Arc`), held weakly so a dropped keyring frees its entry.
fn file_root(json: &Arc<Vec<u8>>) -> Result<Arc<TrustedRoot>, TrustRootError> {
    type Cache = std::sync::Mutex<Vec<(std::sync::Weak<Vec<u8>>, Arc<TrustedRoot>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, r)) = c
            .iter()
            .find(|(w, _)| w.upgrade().is_some_and(|a| Arc::ptr_eq(&a, json)))
        {
            return Ok(r.clone());
        }
    }
    let r = Arc::new(TrustedRoot::from_json(json)?);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((Arc::downgrade(json), r.clone()));
    Ok(r)
}

impl IdentityTrust {
    /// Compile the identity entries of `ring` (none is fine: [`IdentityTrust::is_empty`]).
    pub fn from_keyring(ring: &Keyring) -> Result<Self, IdentityTrustError> {
        let mut entries = Vec::new();
        for ti in ring.identities() {
            let policy_err = |source| IdentityTrustError::Policy {
                id: ti.id.clone(),
                source,
            };
            let mut identity = Identity::new(
                matcher(&ti.san).map_err(policy_err)?,
                matcher(&ti.issuer).map_err(policy_err)?,
            );
            for (oid, p) in &ti.extensions {
                identity = identity
                    .with_extension(oid, matcher(p).map_err(policy_err)?)
                    .map_err(policy_err)?;
            }
            let root_err = |source| IdentityTrustError::Root {
                id: ti.id.clone(),
                root: ti.trusted_root.to_string(),
                source,
            };
            let root = match &ti.trusted_root {
                TrustRootRef::PublicGood => shipped(false).map_err(root_err)?,
                TrustRootRef::Staging => shipped(true).map_err(root_err)?,
                TrustRootRef::File { json, .. } => file_root(json).map_err(root_err)?,
            };
            entries.push(Entry {
                source: ti.clone(),
                policy: Policy::Identity(identity),
                root,
            });
        }
        Ok(IdentityTrust {
            entries,
            options: Options::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Verify a keyless `bundle` over `artifact`: the first identity entry for which it
    /// passes every check and that is eligible for `purpose` at `at`.
    pub fn verify(
        &self,
        bundle: &Bundle,
        artifact: Artifact<'_>,
        purpose: Option<Purpose>,
        at: OffsetDateTime,
    ) -> Result<IdentityMatch, IdentityRefusal> {
        if self.entries.is_empty() {
            return Err(IdentityRefusal::NoIdentities);
        }
        let leaf = match &bundle.material {
            Material::PublicKey { .. } => return Err(IdentityRefusal::NotKeyless),
            m => m.leaf(),
        };
        let mut refusals = Vec::new();
        for e in &self.entries {
            match verify(bundle, artifact, &e.policy, &e.root, &self.options) {
                Err(f) => refusals.push((e.source.id.clone(), EntryRefusal::Failed(f))),
                Ok(v) => {
                    if let Err(why) = e.source.check(purpose, at) {
                        refusals.push((e.source.id.clone(), EntryRefusal::Ineligible(why)));
                        continue;
                    }
                    let cert = leaf.map(crate::cert::FulcioCert::from_der);
                    let Some(Ok(cert)) = cert else {
                        continue;
                    };
                    let Ok(key) = cert.key() else {
                        continue;
                    };
                    let identity = format!(
                        "{} {}",
                        cert.issuer().unwrap_or_default(),
                        cert.sans().join(",")
                    );
                    return Ok(IdentityMatch {
                        id: e.source.id.clone(),
                        key,
                        identity,
                        verified: v,
                    });
                }
            }
        }
        Err(IdentityRefusal::Refused(refusals))
    }
}
