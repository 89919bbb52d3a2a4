//! Offline Sigstore verification, as the Sigstore client spec describes it and sigstore-go,
//! sigstore-python and sigstore-js implement it.
//!
//! Structure before crypto: [`Bundle::from_json`] reads a bundle (v0.1, v0.2, v0.3) into
//! checked types, refusing anything malformed as an input error; [`TrustedRoot`] does the same
//! for trusted roots. [`verify`] then runs the checks in a fixed order and returns a typed
//! [`Verified`] report (which checks passed, the signing times, the identity) or a [`Failure`]
//! naming the [`Check`] that failed with a [`VerifyError`]. Pure: no I/O, no clock — every
//! time comes from a verified timestamp or log entry.
//!
//! Public namespaces: [`bundle`] (format), [`trust`] (trusted roots, the embedded ones
//! included), [`cert`] (Fulcio certificates: path building, profile, SCTs, identity
//! extensions). Private modules, re-exported here where other crates need them: `key`
//! (verification keys), `keyring` (identity trust from a keyring), `policy` (what the caller
//! trusts: a key or an identity), `tlog` (Rekor v1 entries: SET, RFC 6962 inclusion proof,
//! signed-note checkpoint, body), `tsa` (RFC 3161 timestamps), `verify` (the order of checks
//! and the report).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod bundle;
pub mod cert;
mod error;
mod key;
mod keyring;
mod policy;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
mod tlog;
pub mod trust;
mod tsa;
mod verify;

pub use bundle::{
    Bundle, Content, DetachedDsse, DetachedPayload, HashAlgorithm, Material, Version,
};
pub use error::{BundleError, TrustRootError, VerifyError};
pub use key::VerifyingKey;
pub use keyring::{
    EntryRefusal, IdentityMatch, IdentityRefusal, IdentityTrust, IdentityTrustError,
};
pub use policy::{Identity, Matcher, Policy, PolicyError};
pub use trust::TrustedRoot;
pub use tsa::{verify_timestamp, VerifiedTimestamp};
pub use verify::{
    verify, Artifact, Check, Failure, Options, PaeDigest, TimeSource, Verified, MAX_TIMESTAMPS,
    MAX_TLOG_ENTRIES,
};
