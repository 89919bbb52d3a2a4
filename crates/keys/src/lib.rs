//! Keys and trust for Stella: the `Signer` trait (where a key lives is separate from how it
//! signs), public keys and key ids, key references (`PATH`, `env://`, `pkcs11:`, `awskms://`,
//! `keyless`), cosign's encrypted key files, keyrings with purposes and validity windows, and
//! DSSE signing plus the verification policy (distinct trusted keys toward a threshold).
//!
//! Public surface: the items re-exported here, plus five namespaces whose name reads as part
//! of their items' names: [`cosign`] (the encrypted key file format), [`revocation`] (signed
//! key revocation lists), [`stream`] (verifying a signature over a message read in pieces),
//! and the key backends [`pkcs11`] and [`awskms`] (features of the same names). Every other
//! module is private.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

#[cfg(feature = "awskms")]
pub mod awskms;
pub mod cosign;
mod dsse;
mod file;
mod keyref;
mod keyring;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
mod public;
pub mod revocation;
mod signer;
pub mod stream;

use std::path::PathBuf;

pub use dsse::{
    attest, sign_envelope, to_bundle, verify_envelope, verify_envelope_stream, Policy, VerifiedKey,
    VerifyError, MAX_SIGNATURES,
};
pub use file::FileKey;
pub use keyref::{is_dev_key, load_public, load_public_file, load_signer, DevKeys, KeyRef};
pub use keyring::{
    Ineligible, Keyring, Pattern, Purpose, TrustRootRef, TrustedIdentity, TrustedKey,
};
pub use public::{Algorithm, KeyId, PublicKey};
pub use signer::{SignError, Signer};

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("{context}")]
    In {
        context: String,
        #[source]
        source: Box<KeyError>,
    },
    #[error("unsupported key: {0}")]
    UnsupportedAlgorithm(String),
    #[error("invalid key reference: {0}")]
    Reference(String),
    #[error("{0} keys are not available in this build yet (use a key file or env://VAR)")]
    BackendUnavailable(&'static str),
    #[error("cannot read the key password: {0}")]
    Password(String),
    #[error(transparent)]
    Cosign(#[from] cosign::CosignKeyError),
    #[error("invalid keyring: {0}")]
    Keyring(String),
    #[error("this is the published development key (tools/cosign/cosign.dev.key); it is refused unless you pass --allow-dev-key")]
    DevKey,
    #[error("the system random number generator failed")]
    Rng,
    /// The key's backend refused our credentials (PIN, KMS credentials): exit 3.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The key (or token, module, KMS key) does not exist: exit 4.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend cannot be reached right now (token removed, KMS down): retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure.
    #[error("{0}")]
    Backend(String),
}

impl KeyError {
    fn in_ref(self, r: &KeyRef) -> Self {
        KeyError::In {
            context: r.describe(),
            source: Box::new(self),
        }
    }

    /// Did the backend refuse our credentials (wrong PIN, KMS access denied)?
    pub fn is_auth(&self) -> bool {
        match self {
            KeyError::Auth(_) => true,
            KeyError::In { source, .. } => source.is_auth(),
            _ => false,
        }
    }

    /// Does the key (or its token, module or KMS key) not exist?
    pub fn is_not_found(&self) -> bool {
        match self {
            KeyError::NotFound(_) => true,
            KeyError::In { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// Is the backend unreachable for now (retryable)?
    pub fn is_unavailable(&self) -> bool {
        match self {
            KeyError::Unavailable(_) => true,
            KeyError::In { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }

    /// Was the cause a wrong password (so a caller can prompt again or exit 3)?
    pub fn is_wrong_password(&self) -> bool {
        match self {
            KeyError::Cosign(cosign::CosignKeyError::WrongPassword) => true,
            KeyError::In { source, .. } => source.is_wrong_password(),
            _ => false,
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    *stella_digest::Digest::of(data).as_bytes()
}

/// Lowercase hex (the workspace's one hex helper, from `stella-digest`).
pub use stella_digest::hex;

/// PEM with LF line endings and 64-column lines.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    let block = pem::Pem::new(tag, der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
