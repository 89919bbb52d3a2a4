//! Signatures over messages too large to hold in memory (a DSSE payload of hundreds of MiB).
//!
//! A [`MessageSource`] hands out the message again from the start each time it is asked (a
//! file is re-read; nothing is kept). P-256 signatures are checked against one SHA-256 of the
//! message (aws-lc's prehash verification), so every P-256 candidate costs one pass in all;
//! Ed25519 signatures are checked by `PublicKey::ed25519_stream` (RFC 8032 hashes
//! `R || A || M` in one pass, here with aws-lc's SHA-512), one pass per candidate key. Both
//! accept exactly what [`PublicKey::verify`] accepts over the same bytes (the tests hold them
//! to it).

use std::io::{self, Read, Seek, SeekFrom};

use aws_lc_rs::digest;

use crate::public::{Algorithm, PublicKey};

/// A message that can be fed again from its start.
pub trait MessageSource {
    /// Call `f` with the whole message, in order, in chunks of any size.
    fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()>;
}

impl MessageSource for &[u8] {
    fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        f(self);
        Ok(())
    }
}

/// SHA-256 of the message, in one pass (what a P-256 signature signs).
pub(crate) fn sha256_of(message: &mut dyn MessageSource) -> io::Result<digest::Digest> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    message.feed(&mut |c| ctx.update(c))?;
    Ok(ctx.finish())
}

/// `prefix || contents of a seekable reader` (the DSSE PAE of a payload held in a file:
/// [`stella_dsse::stream::pae_prefix`] then the payload).
pub struct Prefixed<R> {
    pub prefix: Vec<u8>,
    pub body: R,
}

impl<R: Read + Seek> MessageSource for Prefixed<R> {
    fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        f(&self.prefix);
        self.body.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match self.body.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => f(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Verifies signatures over one [`MessageSource`], hashing it for P-256 at most once.
pub struct StreamVerifier<'a> {
    message: &'a mut dyn MessageSource,
    sha256: Option<digest::Digest>,
}

impl<'a> StreamVerifier<'a> {
    pub fn new(message: &'a mut dyn MessageSource) -> Self {
        StreamVerifier {
            message,
            sha256: None,
        }
    }

    /// Whether `signature` verifies over the message under `key` (as [`PublicKey::verify`]).
    pub fn verify(&mut self, key: &PublicKey, signature: &[u8]) -> io::Result<bool> {
        match key.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                if self.sha256.is_none() {
                    self.sha256 = Some(sha256_of(self.message)?);
                }
                let Some(d) = &self.sha256 else {
                    return Ok(false);
                };
                Ok(key.parsed().verify_digest_sig(d, signature).is_ok())
            }
            Algorithm::Ed25519 => {
                let Some(mut v) = key.ed25519_stream(signature) else {
                    return Ok(false);
                };
                self.message.feed(&mut |c| v.update(c))?;
                Ok(v.verifies())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileKey;
    use crate::signer::Signer as _;

    struct Chunked<'a>(&'a [u8], usize, usize);
    impl MessageSource for Chunked<'_> {
        fn feed(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
            self.2 += 1;
            for c in self.0.chunks(self.1) {
                f(c);
            }
            Ok(())
        }
    }

    #[test]
    fn agrees_with_in_memory_verification() {
        let msg: Vec<u8> = (0..100_003u32).map(|i| ((i * 31) >> 3) as u8).collect();
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let k = FileKey::generate(alg).unwrap();
            let other = FileKey::generate(alg).unwrap();
            let sig = k.sign(&msg).unwrap();
            let mut src = Chunked(&msg, 997, 0);
            let mut v = StreamVerifier::new(&mut src);
            assert!(v.verify(k.public_key(), &sig).unwrap(), "{alg}");
            assert!(!v.verify(other.public_key(), &sig).unwrap(), "{alg}");
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(
                v.verify(k.public_key(), &bad).unwrap(),
                k.public_key().verify(&msg, &bad),
                "{alg}"
            );
            assert!(!v.verify(k.public_key(), &[]).unwrap());
            // P-256 hashes the message once whatever the number of candidates.
            let passes = src.2;
            if alg == Algorithm::EcdsaP256Sha256 {
                assert_eq!(passes, 1);
            }
            let mut changed = msg.clone();
            changed[99_999] ^= 0x80;
            let mut src = Chunked(&changed, 4096, 0);
            assert!(!StreamVerifier::new(&mut src)
                .verify(k.public_key(), &sig)
                .unwrap());
        }
    }

    #[test]
    fn prefixed_file_is_the_pae() {
        let k = FileKey::generate(Algorithm::Ed25519).unwrap();
        let payload = vec![5u8; 300_000];
        let pae = stella_dsse::pae("t", &payload);
        let sig = k.sign(&pae).unwrap();
        let mut src = Prefixed {
            prefix: stella_dsse::stream::pae_prefix("t", payload.len() as u64),
            body: io::Cursor::new(payload),
        };
        let mut v = StreamVerifier::new(&mut src);
        assert!(v.verify(k.public_key(), &sig).unwrap());
        // Fed twice: the body is re-read from its start.
        assert!(v.verify(k.public_key(), &sig).unwrap());
    }
}
