//! The ephemeral signing key: P-256, generated in process memory for one certificate and
//! dropped with it. The private key lives only inside aws-lc's `EcdsaKeyPair`, whose memory
//! aws-lc wipes (`OPENSSL_cleanse`) when the pair is freed; nothing here can export it (the
//! `Signer` trait has no such method and this type has none either), and the PKCS#8 document
//! aws-lc produces at generation is never materialised: `EcdsaKeyPair::generate` keeps the
//! key internal.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use stella_keys::{PublicKey, SignError, Signer};

/// An in-memory P-256 key for one certificate.
pub struct EphemeralSigner {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl fmt::Debug for EphemeralSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralSigner")
            .field("key_id", self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl EphemeralSigner {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, SignError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|_| SignError::NoSigner)?;
        let der: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| SignError::Statement("cannot encode the ephemeral public key".into()))?;
        let public = PublicKey::from_spki_der(der.as_ref())
            .map_err(|e| SignError::Statement(format!("ephemeral public key: {e}")))?;
        Ok(EphemeralSigner {
            pair,
            public,
            rng: SystemRandom::new(),
        })
    }

    /// The public key as PEM SubjectPublicKeyInfo (what Fulcio is sent).
    pub fn public_pem(&self) -> String {
        self.public.to_pem()
    }
}

impl Signer for EphemeralSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError::Backend {
                key_id: self.public.key_id().clone(),
                reason: "ECDSA signing with the ephemeral key failed".into(),
            })
    }

    fn mode(&self) -> &'static str {
        crate::MODE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_sign_and_differ() {
        let a = EphemeralSigner::generate().unwrap();
        let b = EphemeralSigner::generate().unwrap();
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(a.mode(), "keyless");
        assert_eq!(a.algorithm(), stella_keys::Algorithm::EcdsaP256Sha256);
        let sig = a.sign(b"m").unwrap();
        assert!(a.public_key().verify(b"m", &sig));
        assert!(!b.public_key().verify(b"m", &sig));
        assert!(!a.public_key().verify(b"other", &sig));
        assert!(!format!("{a:?}").contains("pair"));
        assert!(a.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
