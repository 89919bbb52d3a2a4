//! The `Signer` trait: where a key lives is separate from how it signs. A signer exposes its
//! public key (hence key id and algorithm) and signs bytes; nothing on the trait exports
//! private key material, so file keys, PKCS#11 tokens, KMS keys and keyless certificates all
//! fit it unchanged.

use crate::public::{Algorithm, KeyId, PublicKey};
use crate::stream::MessageSource;

/// Why a signing operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("signing with key {key_id} failed: {reason}")]
    Backend { key_id: KeyId, reason: String },
    /// The backend is unreachable for now (token removed, KMS throttling or down); a later
    /// attempt may succeed.
    #[error("signing with key {key_id} failed, the key's backend is unavailable: {reason}")]
    Unavailable { key_id: KeyId, reason: String },
    #[error("key {0} was given more than once")]
    DuplicateKey(KeyId),
    #[error("no signing key given")]
    NoSigner,
    #[error("cannot build the statement: {0}")]
    Statement(String),
    /// The message of [`Signer::sign_stream`] could not be read.
    #[error("cannot read the message to sign: {0}")]
    Read(#[source] std::io::Error),
}

/// Signs bytes with a key that never leaves its backend.
pub trait Signer: Send + Sync {
    /// The verification key matching this signer.
    fn public_key(&self) -> &PublicKey;

    /// Sign `message` (the whole message: hashing, if any, is the algorithm's business).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;

    /// Sign the message `message` feeds (the same bytes [`sign`](Self::sign) would take), for
    /// messages too large to hold in memory. The source may be fed more than once (Ed25519
    /// hashes the message twice). The default reads the whole message into memory and calls
    /// [`sign`](Self::sign), so every backend works unchanged; file keys override it to sign
    /// with memory independent of the message's size (P-256: one SHA-256 pass, then the
    /// prehash is signed; Ed25519: RFC 8032 over two passes).
    fn sign_stream(&self, message: &mut dyn MessageSource) -> Result<Vec<u8>, SignError> {
        let mut bytes = Vec::new();
        message
            .feed(&mut |c| bytes.extend_from_slice(c))
            .map_err(SignError::Read)?;
        self.sign(&bytes)
    }

    /// Short description of where the key lives, for logs and audit (`file`, `pkcs11`, …).
    /// Never contains secrets.
    fn mode(&self) -> &'static str;

    /// `sha256:<hex>` of the public key's SPKI DER.
    fn key_id(&self) -> &KeyId {
        self.public_key().key_id()
    }

    fn algorithm(&self) -> Algorithm {
        self.public_key().algorithm()
    }
}
