//! File-backed keys: Ed25519 and P-256 private keys held in memory by aws-lc-rs, loaded from
//! PEM PKCS#8, SEC1 `EC PRIVATE KEY` or cosign's encrypted format, and written back as
//! cosign-encrypted files. aws-lc frees key material with `OPENSSL_cleanse`; every DER buffer
//! we hold on the way in or out is a `Zeroizing<Vec<u8>>`.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use pkcs8::der::Decode as _;
use pkcs8::ObjectIdentifier;
use zeroize::Zeroizing;

use crate::public::{Algorithm, PublicKey};
use crate::signer::{SignError, Signer};
use crate::stream::MessageSource;
use crate::{cosign, KeyError};

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

/// A private key held in process memory.
pub struct FileKey {
    pair: Pair,
    public: PublicKey,
    rng: SystemRandom,
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("FileKey")
            .field("algorithm", &self.public.algorithm())
            .field("key_id", self.public.key_id())
            .finish_non_exhaustive()
    }
}

fn public_of(pair: &Pair) -> Result<PublicKey, KeyError> {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    let der: PublicKeyX509Der<'static> = match pair {
        Pair::Ed25519(k) => k.public_key().as_der(),
        Pair::P256(k) => k.public_key().as_der(),
    }
    .map_err(|_| KeyError::Malformed("cannot encode the public key".into()))?;
    PublicKey::from_spki_der(der.as_ref())
}

impl FileKey {
    fn from_pair(pair: Pair) -> Result<Self, KeyError> {
        let public = public_of(&pair)?;
        Ok(FileKey {
            pair,
            public,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh key from the system CSPRNG.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let pair = match algorithm {
            Algorithm::Ed25519 => {
                Pair::Ed25519(Ed25519KeyPair::generate().map_err(|_| KeyError::Rng)?)
            }
            Algorithm::EcdsaP256Sha256 => Pair::P256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
                    .map_err(|_| KeyError::Rng)?,
            ),
        };
        Self::from_pair(pair)
    }

    /// Parse an unencrypted PKCS#8 `PrivateKeyInfo` (v1 or v2).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| KeyError::Malformed(format!("not a PKCS#8 private key: {e}")))?;
        let pair = match info.algorithm.oid {
            OID_ED25519 => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(|e| {
                    KeyError::Malformed(format!("invalid Ed25519 private key: {e}"))
                })?)
            }
            OID_EC_PUBLIC_KEY => Pair::P256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).map_err(|e| {
                    KeyError::UnsupportedAlgorithm(format!(
                        "EC private key is not a valid P-256 key ({e}); only P-256 is supported"
                    ))
                })?,
            ),
            OID_RSA => {
                return Err(KeyError::UnsupportedAlgorithm(
                    "RSA private key (supported: ed25519, p256)".into(),
                ))
            }
            other => {
                return Err(KeyError::UnsupportedAlgorithm(format!(
                    "private key algorithm {other} (supported: ed25519, p256)"
                )))
            }
        };
        Self::from_pair(pair)
    }

    /// Parse a SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` writes).
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|e| KeyError::Malformed(format!("invalid P-256 EC private key: {e}")))?;
        Self::from_pair(Pair::P256(pair))
    }

    /// Parse a private key file: PEM `PRIVATE KEY`, `EC PRIVATE KEY`, or a cosign encrypted
    /// key (`password` is asked for only in that case).
    pub fn from_pem(
        text: &[u8],
        password: &mut dyn FnMut() -> Result<Zeroizing<String>, KeyError>,
    ) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(text)
            .map_err(|e| KeyError::Malformed(format!("not a PEM key file: {e}")))?;
        let Some(block) = blocks.iter().find(|b| b.tag().contains("PRIVATE KEY")) else {
            return Err(match blocks.iter().find(|b| b.tag() == "PUBLIC KEY") {
                Some(_) => KeyError::Malformed(
                    "this is a public key; signing needs the private key file".into(),
                ),
                None => KeyError::Malformed("no PEM private key block found".into()),
            });
        };
        let contents = Zeroizing::new(block.contents().to_vec());
        match block.tag() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&contents),
            "EC PRIVATE KEY" => Self::from_sec1_der(&contents),
            tag if cosign::is_cosign_label(tag) => {
                let pw = password()?;
                let der = cosign::decrypt_contents(&contents, pw.as_bytes())?;
                Self::from_pkcs8_der(&der)
            }
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Malformed(
                "PKCS#8-encrypted keys are not supported; convert with `openssl pkcs8 -topk8 -nocrypt` \
                 and re-encrypt with `stella key generate`-style cosign files"
                    .into(),
            )),
            other => Err(KeyError::Malformed(format!("unsupported PEM block `{other}`"))),
        }
    }

    /// The private key as PKCS#8 v1 DER. Only the file backend can do this (to write key
    /// files); the `Signer` trait cannot.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let doc = match &self.pair {
            Pair::Ed25519(k) => k.to_pkcs8v1(),
            Pair::P256(k) => k.to_pkcs8v1(),
        }
        .map_err(|_| KeyError::Malformed("cannot encode the private key".into()))?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The private key as a cosign encrypted key file (scrypt N=65536, NaCl secretbox).
    pub fn to_cosign_pem(&self, password: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        Ok(Zeroizing::new(cosign::encrypt(&der, password)?))
    }

    /// The private key as unencrypted PEM PKCS#8 (for tests and tools that need it).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        Ok(Zeroizing::new(crate::pem_encode("PRIVATE KEY", &der)))
    }
}

impl Signer for FileKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.pair {
            Pair::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            Pair::P256(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::Backend {
                    key_id: self.public.key_id().clone(),
                    reason: "ECDSA signing failed".into(),
                }),
        }
    }

    fn sign_stream(&self, message: &mut dyn MessageSource) -> Result<Vec<u8>, SignError> {
        let failed = |reason: &str| SignError::Backend {
            key_id: self.public.key_id().clone(),
            reason: reason.into(),
        };
        match &self.pair {
            Pair::Ed25519(k) => {
                // RFC 8032 needs the message twice (r = H(prefix || M), then H(R || A || M)):
                // ed25519-dalek's hazmat signer takes it by update, from the expanded secret
                // of the same seed aws-lc holds, so the signature is the one `sign` gives.
                use aws_lc_rs::encoding::AsBigEndian as _;
                use ed25519_dalek::hazmat::{raw_sign_byupdate, ExpandedSecretKey};
                use ed25519_dalek::Digest as _;
                let seed = k
                    .seed()
                    .and_then(|s| s.as_be_bytes())
                    .map_err(|_| failed("cannot read the Ed25519 seed"))?;
                let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
                    seed.as_ref()
                        .try_into()
                        .map_err(|_| failed("the Ed25519 seed is not 32 bytes"))?,
                );
                let esk = ExpandedSecretKey::from(&*seed);
                let vk = ed25519_dalek::VerifyingKey::from(&esk);
                let source = std::cell::RefCell::new(message);
                let read_error = std::cell::RefCell::new(None);
                let sig = raw_sign_byupdate::<ed25519_dalek::Sha512, _>(
                    &esk,
                    |h| {
                        let fed = source.borrow_mut().feed(&mut |c| h.update(c));
                        fed.map_err(|e| {
                            *read_error.borrow_mut() = Some(e);
                            ed25519_dalek::SignatureError::new()
                        })
                    },
                    &vk,
                );
                if let Some(e) = read_error.into_inner() {
                    return Err(SignError::Read(e));
                }
                let sig = sig.map_err(|_| failed("Ed25519 signing failed"))?;
                Ok(sig.to_bytes().to_vec())
            }
            Pair::P256(k) => {
                // ECDSA signs SHA-256(message): hash the stream once, sign the prehash.
                let digest = crate::stream::sha256_of(message).map_err(SignError::Read)?;
                k.sign_digest(&digest)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| failed("ECDSA signing failed"))
            }
        }
    }

    fn mode(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_both() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let k = FileKey::generate(alg).unwrap();
            let sig = k.sign(b"msg").unwrap();
            assert!(k.public_key().verify(b"msg", &sig));
            assert!(!k.public_key().verify(b"msh", &sig));
            let der = k.to_pkcs8_der().unwrap();
            let back = FileKey::from_pkcs8_der(&der).unwrap();
            assert_eq!(back.public_key(), k.public_key());
            let pem = k.to_pkcs8_pem().unwrap();
            let crlf = pem.replace('\n', "\r\n");
            let back = FileKey::from_pem(crlf.as_bytes(), &mut || unreachable_password()).unwrap();
            assert_eq!(back.public_key(), k.public_key());
            assert!(!format!("{k:?}").contains(&crate::hex(&der)));
        }
    }

    /// A message fed in uneven chunks, counting its passes.
    struct Chunks<'a> {
        bytes: &'a [u8],
        chunk: usize,
        passes: usize,
    }

    impl MessageSource for Chunks<'_> {
        fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
            self.passes += 1;
            for c in self.bytes.chunks(self.chunk) {
                f(c);
            }
            Ok(())
        }
    }

    /// Fails after `after` chunks.
    struct Broken {
        after: usize,
    }

    impl MessageSource for Broken {
        fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
            for _ in 0..self.after {
                f(b"chunk");
            }
            Err(std::io::Error::other("disk gone"))
        }
    }

    /// Uses the trait's default `sign_stream` (reads the message into memory).
    struct Default(FileKey);

    impl Signer for Default {
        fn public_key(&self) -> &PublicKey {
            self.0.public_key()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            self.0.sign(message)
        }
        fn mode(&self) -> &'static str {
            "test"
        }
    }

    #[test]
    fn sign_stream_agrees_with_sign() {
        let msg: Vec<u8> = (0..300_007u32)
            .map(|i| (i.wrapping_mul(7) >> 2) as u8)
            .collect();
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let k = FileKey::generate(alg).unwrap();
            for chunk in [1 << 20, 4096, 7] {
                let mut src = Chunks {
                    bytes: &msg,
                    chunk,
                    passes: 0,
                };
                let streamed = k.sign_stream(&mut src).unwrap();
                assert!(k.public_key().verify(&msg, &streamed), "{alg} {chunk}");
                let mut changed = msg.clone();
                changed[150_000] ^= 1;
                assert!(!k.public_key().verify(&changed, &streamed), "{alg}");
                let whole = k.sign(&msg).unwrap();
                assert!(k.public_key().verify(&msg, &whole));
                match alg {
                    // Deterministic: the very same signature, the message read twice.
                    Algorithm::Ed25519 => {
                        assert_eq!(streamed, whole);
                        assert_eq!(src.passes, 2);
                    }
                    // Randomised: both verify, one pass.
                    Algorithm::EcdsaP256Sha256 => assert_eq!(src.passes, 1),
                }
            }
            // The empty message too.
            let mut empty = Chunks {
                bytes: b"",
                chunk: 1,
                passes: 0,
            };
            let sig = k.sign_stream(&mut empty).unwrap();
            assert!(k.public_key().verify(b"", &sig));
            // The default (in memory) gives a signature that verifies the same way.
            let d = Default(FileKey::from_pkcs8_der(&k.to_pkcs8_der().unwrap()).unwrap());
            let mut src = Chunks {
                bytes: &msg,
                chunk: 999,
                passes: 0,
            };
            let sig = d.sign_stream(&mut src).unwrap();
            assert!(k.public_key().verify(&msg, &sig));
            assert_eq!(src.passes, 1);
        }
    }

    #[test]
    fn sign_stream_reports_a_failing_message() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let k = FileKey::generate(alg).unwrap();
            for after in [0, 3] {
                let e = k.sign_stream(&mut Broken { after }).unwrap_err();
                assert!(matches!(e, SignError::Read(_)), "{alg}: {e:?}");
                assert_eq!(
                    e.to_string(),
                    "cannot read the message to sign: disk gone",
                    "{alg}"
                );
                let e = Default(FileKey::generate(alg).unwrap())
                    .sign_stream(&mut Broken { after })
                    .unwrap_err();
                assert!(matches!(e, SignError::Read(_)), "{alg}: {e:?}");
            }
        }
    }

    fn unreachable_password() -> Result<Zeroizing<String>, KeyError> {
        Err(KeyError::Password("not expected".into()))
    }

    #[test]
    fn public_key_file_is_refused_for_signing() {
        let k = FileKey::generate(Algorithm::Ed25519).unwrap();
        let err = FileKey::from_pem(
            k.public_key().to_pem().as_bytes(),
            &mut unreachable_password,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("public key"), "{err}");
    }
}
