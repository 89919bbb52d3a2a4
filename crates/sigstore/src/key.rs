//! Verification keys of every kind a trusted root or `--key` names: ECDSA P-256/P-384, RSA
//! PKCS #1 v1.5 and Ed25519, from a SubjectPublicKeyInfo (or, for `PKCS1_RSA_PKCS1V5`, a bare
//! RSAPublicKey). Signature math is aws-lc-rs; message signatures over a digest alone (a
//! `sha256:` artifact) use its prehashed verification.

use aws_lc_rs::signature::{self, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm};
use stella_x509::der::{Decode, Encode};
use stella_x509::x509_cert::spki::SubjectPublicKeyInfoOwned;
use stella_x509::{oid, Oid};

use crate::bundle::HashAlgorithm;

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    P256,
    P384,
    Rsa,
    Ed25519,
}

/// A public key that verifies signatures.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    kind: Kind,
    /// The bytes aws-lc-rs takes: the EC point, the RSAPublicKey DER, or the Ed25519 key.
    raw: Vec<u8>,
    /// The SubjectPublicKeyInfo DER (what certificates and Rekor bodies carry).
    spki_der: Vec<u8>,
    /// The key parsed once for its natural algorithm (log and CT keys verify many times).
    parsed: Option<ParsedPublicKey>,
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.raw == other.raw
    }
}
impl Eq for VerifyingKey {}

const P384: Oid = Oid::new_unwrap("1.3.132.0.34");

impl VerifyingKey {
    /// A DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoOwned::from_der(der)
            .map_err(|e| KeyError(format!("not a SubjectPublicKeyInfo: {e}")))?;
        Self::from_spki(&spki)
    }

    /// A decoded SubjectPublicKeyInfo (as in a certificate).
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, KeyError> {
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError("the key bit string is not byte-aligned".into()))?
            .to_vec();
        let kind = match spki.algorithm.oid {
            oid::EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<Oid>().ok())
                    .ok_or_else(|| KeyError("EC key without a named curve".into()))?;
                match curve {
                    oid::P256 => Kind::P256,
                    P384 => Kind::P384,
                    c => return Err(KeyError(format!("unsupported EC curve {c}"))),
                }
            }
            oid::RSA => Kind::Rsa,
            oid::ED25519 => Kind::Ed25519,
            o => return Err(KeyError(format!("unsupported key algorithm {o}"))),
        };
        let spki_der = spki
            .to_der()
            .map_err(|e| KeyError(format!("key encoding: {e}")))?;
        Ok(VerifyingKey::with_parsed(kind, raw, spki_der))
    }

    /// A PEM `PUBLIC KEY`.
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        let p = pem::parse(text).map_err(|e| KeyError(format!("not PEM: {e}")))?;
        if p.tag() != "PUBLIC KEY" {
            return Err(KeyError(format!("a PEM {} block, not PUBLIC KEY", p.tag())));
        }
        Self::from_spki_der(p.contents())
    }

    /// A bare PKCS #1 RSAPublicKey (trusted roots' `PKCS1_RSA_PKCS1V5`).
    pub fn from_pkcs1_rsa(der: &[u8]) -> Result<Self, KeyError> {
        if UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .parse()
            .is_err()
        {
            return Err(KeyError("not a PKCS #1 RSA public key".into()));
        }
        Ok(VerifyingKey::with_parsed(
            Kind::Rsa,
            der.to_vec(),
            der.to_vec(),
        ))
    }

    fn with_parsed(kind: Kind, raw: Vec<u8>, spki_der: Vec<u8>) -> Self {
        let mut k = VerifyingKey {
            kind,
            raw,
            spki_der,
            parsed: None,
        };
        k.parsed = k
            .algorithm(None)
            .and_then(|alg| ParsedPublicKey::new(alg, &k.raw).ok());
        k
    }

    /// The hash the key's natural algorithm uses (what `algorithm(None)` picks).
    pub(crate) fn natural_hash(&self) -> Option<HashAlgorithm> {
        match self.kind {
            Kind::P256 | Kind::Rsa => Some(HashAlgorithm::Sha256),
            Kind::P384 => Some(HashAlgorithm::Sha384),
            Kind::Ed25519 => None,
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The signature algorithm for a message hashed with `hash` (the key's natural hash when
    /// `None`).
    fn algorithm(&self, hash: Option<HashAlgorithm>) -> Option<&'static dyn VerificationAlgorithm> {
        use HashAlgorithm::*;
        Some(match (self.kind, hash) {
            (Kind::P256, None | Some(Sha256)) => &signature::ECDSA_P256_SHA256_ASN1,
            (Kind::P256, Some(Sha384)) => &signature::ECDSA_P256_SHA384_ASN1,
            (Kind::P256, Some(Sha512)) => &signature::ECDSA_P256_SHA512_ASN1,
            (Kind::P384, None | Some(Sha384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (Kind::P384, Some(Sha256)) => &signature::ECDSA_P384_SHA256_ASN1,
            (Kind::P384, Some(Sha512)) => &signature::ECDSA_P384_SHA512_ASN1,
            (Kind::Rsa, None | Some(Sha256)) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Kind::Rsa, Some(Sha384)) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Kind::Rsa, Some(Sha512)) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Kind::Ed25519, None) => &signature::ED25519,
            (Kind::Ed25519, Some(_)) => return None,
        })
    }

    /// Does `sig` verify over `msg` (hashed with the key's natural hash)?
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_with(None, msg, sig)
    }

    /// Does `sig` verify over `msg` hashed with `hash` (Ed25519: `None` only)?
    pub fn verify_with(&self, hash: Option<HashAlgorithm>, msg: &[u8], sig: &[u8]) -> bool {
        if let Some(p) = &self.parsed {
            if hash.is_none() || hash == self.natural_hash() {
                return p.verify_sig(msg, sig).is_ok();
            }
        }
        self.algorithm(hash).is_some_and(|alg| {
            UnparsedPublicKey::new(alg, &self.raw)
                .verify(msg, sig)
                .is_ok()
        })
    }

    /// Does `sig` verify over a message known only by its digest? (Ed25519 cannot.)
    pub fn verify_prehashed(&self, hash: HashAlgorithm, digest: &[u8], sig: &[u8]) -> bool {
        let Some(alg) = self.algorithm(Some(hash)) else {
            return false;
        };
        let Ok(d) = aws_lc_rs::digest::Digest::import_less_safe(digest, hash.aws()) else {
            return false;
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify_digest(&d, sig)
            .is_ok()
    }

    /// Can this key verify a signature over a digest alone?
    pub fn supports_prehashed(&self) -> bool {
        self.kind != Kind::Ed25519
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo (a display name).
    pub fn fingerprint(&self) -> String {
        format!(
            "sha256:{}",
            hex(&HashAlgorithm::Sha256.digest(&self.spki_der))
        )
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(D[usize::from(x >> 4)]));
        s.push(char::from(D[usize::from(x & 15)]));
    }
    s
}
