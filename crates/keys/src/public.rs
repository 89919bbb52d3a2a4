//! Public keys: algorithms, SubjectPublicKeyInfo (SPKI) parsing and encoding, key ids and
//! signature verification.
//!
//! A public key is held with its SPKI DER (what PEM `PUBLIC KEY` files contain and what key ids
//! hash) and a pre-parsed verification key, so verifying many signatures parses the key once.
//!
//! **One key, one form.** Whatever encoding a key arrives in, it is normalised at parse time to
//! one canonical SubjectPublicKeyInfo: Ed25519 as the 32 key bytes under the bare Ed25519 OID,
//! P-256 as the 65-byte uncompressed point under id-ecPublicKey with the named-curve OID. Key
//! equality, key ids (SHA-256 of that DER, SPEC §2) and threshold counting all use only this
//! form, so a compressed and an uncompressed copy of one key are the same key and can never
//! fill two keyring slots. Encodings that could give a second form and that no peer needs
//! (hybrid points, explicit curve parameters, unused BIT STRING bits, non-canonical Ed25519
//! points, BER lengths, trailing bytes, PEM files with several keys) are refused.

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};
use spki::der::{Decode as _, Tagged as _};
use spki::ObjectIdentifier;

use crate::KeyError;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Signature algorithms Stella signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032), 64-byte raw signatures.
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256, ASN.1 DER signatures.
    EcdsaP256Sha256,
}

impl Algorithm {
    /// The short name used on the command line and in keyrings: `ed25519`, `p256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "p256",
        }
    }

    /// Parse `ed25519` or `p256` (also `ecdsa-p256`, `ecdsa-sha2-nistp256`, `es256`).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "p256" | "p-256" | "ecdsa-p256" | "ecdsa-sha2-nistp256" | "es256" => {
                Ok(Algorithm::EcdsaP256Sha256)
            }
            other => Err(KeyError::UnsupportedAlgorithm(format!(
                "{other:?} (supported: ed25519, p256)"
            ))),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `sha256:<lowercase hex of SHA-256 over the SPKI DER>` — the key id we write in envelopes.
/// It is a hint only: verification never trusts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The key id of a SubjectPublicKeyInfo DER.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        KeyId(format!("sha256:{}", crate::hex(&crate::sha256(spki_der))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A verification key.
#[derive(Clone)]
pub struct PublicKey {
    algorithm: Algorithm,
    spki_der: Vec<u8>,
    key_id: KeyId,
    parsed: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    /// Parse a DER SubjectPublicKeyInfo (Ed25519 or P-256; RSA and other curves are refused).
    ///
    /// The key is normalised to its one canonical SPKI (see the module docs): a compressed
    /// P-256 point gives the same key, key id and equality as the uncompressed one. Encodings
    /// we never write and no peer needs are refused: hybrid points (`0x06`/`0x07`), explicit
    /// curve parameters, algorithm parameters on Ed25519, a BIT STRING with unused bits,
    /// non-canonical or small-order Ed25519 points, BER length forms and trailing bytes.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        // `der` decodes strict DER: long-form lengths that fit the short form, indefinite
        // lengths and trailing bytes after the SEQUENCE are errors.
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| {
            KeyError::Malformed(format!("public key is not a DER SubjectPublicKeyInfo: {e}"))
        })?;
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::Malformed("public key BIT STRING has unused bits".into()))?;
        let algorithm = match spki.algorithm.oid {
            OID_ED25519 => {
                if spki.algorithm.parameters.is_some() {
                    return Err(KeyError::Malformed(
                        "Ed25519 key with algorithm parameters".into(),
                    ));
                }
                Algorithm::Ed25519
            }
            OID_EC_PUBLIC_KEY => {
                let params = spki
                    .algorithm
                    .parameters
                    .ok_or_else(|| KeyError::Malformed("EC key without curve parameters".into()))?;
                if params.tag() != spki::der::Tag::ObjectIdentifier {
                    return Err(KeyError::UnsupportedAlgorithm(
                        "EC key with explicit curve parameters (only the named curve P-256, \
                         OID 1.2.840.10045.3.1.7, is accepted)"
                            .into(),
                    ));
                }
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|e| KeyError::Malformed(format!("EC curve OID: {e}")))?;
                if curve != OID_P256 {
                    return Err(KeyError::UnsupportedAlgorithm(format!(
                        "EC curve {curve} (supported: P-256)"
                    )));
                }
                Algorithm::EcdsaP256Sha256
            }
            OID_RSA => {
                return Err(KeyError::UnsupportedAlgorithm(
                    "RSA (supported: ed25519, p256)".into(),
                ))
            }
            other => {
                return Err(KeyError::UnsupportedAlgorithm(format!(
                    "key algorithm {other} (supported: ed25519, p256)"
                )))
            }
        };
        Self::from_point(algorithm, point)
    }

    /// Build from the key bytes of `algorithm` (the SPKI BIT STRING contents), normalising.
    fn from_point(algorithm: Algorithm, point: &[u8]) -> Result<Self, KeyError> {
        let (raw, parsed) = match algorithm {
            Algorithm::Ed25519 => {
                check_ed25519_point(point)?;
                let parsed = ParsedPublicKey::new(&ED25519, point).map_err(|e| {
                    KeyError::Malformed(format!("invalid {algorithm} public key: {e}"))
                })?;
                (point.to_vec(), parsed)
            }
            Algorithm::EcdsaP256Sha256 => {
                // Only the SEC1 point forms: aws-lc would also take a whole nested SPKI here.
                match (point.first(), point.len()) {
                    (Some(0x04), 65) | (Some(0x02 | 0x03), 33) => {}
                    (Some(0x06 | 0x07), _) => {
                        return Err(KeyError::Malformed(
                            "P-256 point in the hybrid form (0x06/0x07) is refused; \
                             use the uncompressed form"
                                .into(),
                        ))
                    }
                    (Some(0x00), 1) => {
                        return Err(KeyError::Malformed(
                            "P-256 public key is the point at infinity".into(),
                        ))
                    }
                    _ => {
                        return Err(KeyError::Malformed(format!(
                            "P-256 public key must be a 65-byte uncompressed or 33-byte \
                             compressed SEC1 point, got {} bytes",
                            point.len()
                        )))
                    }
                }
                let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).map_err(|e| {
                    KeyError::Malformed(format!("invalid {algorithm} public key: {e}"))
                })?;
                // aws-lc validated the point is on the curve; it re-encodes it uncompressed.
                let der = parsed.as_der().map_err(|_| {
                    KeyError::Malformed("cannot encode the P-256 public key".into())
                })?;
                let der = der.as_ref();
                let uncompressed = match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
                    Some(p) if p.len() == 65 && p[0] == 0x04 => p.to_vec(),
                    _ => {
                        return Err(KeyError::Malformed(
                            "P-256 public key did not re-encode to the canonical form".into(),
                        ))
                    }
                };
                if point.len() == 65 && point != uncompressed.as_slice() {
                    return Err(KeyError::Malformed(
                        "P-256 point changed when re-encoded".into(),
                    ));
                }
                (uncompressed, parsed)
            }
        };
        let spki_der = spki_der_for(algorithm, &raw)?;
        Ok(PublicKey {
            algorithm,
            key_id: KeyId::of_spki(&spki_der),
            spki_der,
            parsed,
        })
    }

    /// Parse PEM text holding one `PUBLIC KEY` block (CRLF tolerated). A file with two public
    /// keys is refused: which one it means would be a guess.
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        let blocks =
            pem::parse_many(text).map_err(|e| KeyError::Malformed(format!("not PEM: {e}")))?;
        let mut public = blocks.iter().filter(|b| b.tag() == "PUBLIC KEY");
        let first = public.next();
        if public.next().is_some() {
            return Err(KeyError::Malformed(
                "the PEM text holds more than one `PUBLIC KEY` block; give one key per file".into(),
            ));
        }
        let block = first.ok_or_else(|| match blocks.first() {
            Some(b) => KeyError::Malformed(format!(
                "expected a PEM `PUBLIC KEY` block, found `{}`",
                b.tag()
            )),
            None => KeyError::Malformed("no PEM block found".into()),
        })?;
        Self::from_spki_der(block.contents())
    }

    /// Build from raw key bytes: 32-byte Ed25519 key, or an SEC1 P-256 point (uncompressed
    /// or compressed; normalised like [`PublicKey::from_spki_der`]).
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Result<Self, KeyError> {
        Self::from_point(algorithm, raw)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key as PEM `PUBLIC KEY` (LF line ends, trailing newline).
    pub fn to_pem(&self) -> String {
        crate::pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// The pre-parsed aws-lc key (prehash verification in [`crate::stream`]).
    pub(crate) fn parsed(&self) -> &ParsedPublicKey {
        &self.parsed
    }

    /// Does `signature` verify `message` under this key?
    ///
    /// Ed25519 is verified strictly (as ed25519-dalek's `verify_strict`): besides aws-lc's
    /// checks (`S < ℓ`, `[S]B - [k]A` encodes to `R`), a signature whose `R` is a point of
    /// small order is refused (`ed25519_r_acceptable`); keys of small order never parse.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if self.algorithm == Algorithm::Ed25519 && !ed25519_r_acceptable(signature) {
            return false;
        }
        self.parsed.verify_sig(message, signature).is_ok()
    }

    /// Start verifying `signature` under this Ed25519 key over a message given in pieces
    /// ([`Ed25519Stream`]): what [`PublicKey::verify`] accepts over the same bytes. `None` when
    /// nothing can verify (not an Ed25519 key, not 64 bytes, `S ≥ ℓ`, `R` not a point or of
    /// small order).
    pub(crate) fn ed25519_stream(&self, signature: &[u8]) -> Option<Ed25519Stream> {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        use curve25519_dalek::scalar::Scalar;
        if self.algorithm != Algorithm::Ed25519 {
            return None;
        }
        let a: [u8; 32] = self
            .spki_der
            .get(ED25519_SPKI_PREFIX.len()..)?
            .try_into()
            .ok()?;
        let sig: &[u8; 64] = signature.try_into().ok()?;
        let (r, s) = sig.split_at(32);
        let r: [u8; 32] = r.try_into().ok()?;
        let s: [u8; 32] = s.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
        let r_point = CompressedEdwardsY(r).decompress()?;
        let a_point = CompressedEdwardsY(a).decompress()?;
        if r_point.is_small_order() || a_point.is_small_order() {
            return None;
        }
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
        h.update(&r);
        h.update(&a);
        Some(Ed25519Stream {
            h,
            minus_a: -a_point,
            s,
            r,
        })
    }
}

/// Ed25519 verification (RFC 8032 §5.1.7, cofactorless, with ed25519-dalek's `verify_strict`
/// rules) of a message fed in pieces: `k = SHA-512(R || A || M)` through aws-lc (about 1.6×
/// the speed of the `sha2` crate on this hardware; a manifest of a million files is hundreds
/// of MB of message), then `[S]B - [k]A` must encode to `R`, byte for byte.
pub(crate) struct Ed25519Stream {
    h: aws_lc_rs::digest::Context,
    minus_a: curve25519_dalek::edwards::EdwardsPoint,
    s: curve25519_dalek::scalar::Scalar,
    r: [u8; 32],
}

impl Ed25519Stream {
    /// The next piece of the message.
    pub(crate) fn update(&mut self, piece: &[u8]) {
        self.h.update(piece);
    }

    /// Whether the signature verifies over the message fed.
    pub(crate) fn verifies(self) -> bool {
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        let Ok(wide) = <[u8; 64]>::try_from(self.h.finish().as_ref()) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let r = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &self.s);
        r.compress().to_bytes() == self.r
    }
}

/// Whether an Ed25519 signature's `R` may verify under the strict rules: a signature of 64
/// bytes whose `R` does not encode a point of small order. With aws-lc's checks (`R` must be
/// the canonical encoding of `[S]B - [k]A`) this is ed25519-dalek's `verify_strict`: a
/// non-canonical or undecodable `R` never equals an encoding aws-lc computes, and the
/// canonical encodings of the eight small-order points are those whose `y` (sign bit cleared)
/// is one of [`ED25519_SMALL_ORDER_Y`]. Other lengths are left to aws-lc (which refuses them).
fn ed25519_r_acceptable(signature: &[u8]) -> bool {
    let Some(r) = signature.get(..32).filter(|_| signature.len() == 64) else {
        return true;
    };
    let mut y = [0u8; 32];
    y.copy_from_slice(r);
    y[31] &= 0x7f;
    !ED25519_SMALL_ORDER_Y.contains(&y)
}

/// The canonical SPKI DER header of an Ed25519 key (the 32 key bytes follow).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The canonical SPKI DER header of a P-256 key: id-ecPublicKey with the named curve
/// prime256v1 (the 65-byte uncompressed point follows).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The y coordinates (little-endian, sign bit cleared) of the eight Ed25519 points of small
/// order: 0 (order 4), 1 (identity), two of order 8 and p-1 (order 2). A key on one of them
/// verifies signatures that say nothing about the message, and with the sign bit flipped the
/// same point has a second encoding; both are refused (as libsodium does).
const ED25519_SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut y = [0u8; 32];
        y[0] = 1;
        y
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// An Ed25519 public key must be 32 bytes, encode y below p = 2^255 - 19 (otherwise y and
/// y + p are two encodings of one key) and not be a point of small order.
fn check_ed25519_point(point: &[u8]) -> Result<(), KeyError> {
    let bytes: [u8; 32] = point.try_into().map_err(|_| {
        KeyError::Malformed(format!(
            "Ed25519 public key must be 32 bytes, got {}",
            point.len()
        ))
    })?;
    let mut y = bytes;
    y[31] &= 0x7f;
    // y >= p  <=>  y[31] == 0x7f, y[1..31] all 0xff, y[0] >= 0xed.
    if y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed {
        return Err(KeyError::Malformed(
            "Ed25519 public key is not canonically encoded (y >= 2^255 - 19)".into(),
        ));
    }
    if ED25519_SMALL_ORDER_Y.contains(&y) {
        return Err(KeyError::Malformed(
            "Ed25519 public key is a point of small order".into(),
        ));
    }
    Ok(())
}

/// Encode canonical key bytes as SPKI DER (these two algorithms have fixed headers).
fn spki_der_for(algorithm: Algorithm, raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (prefix, len): (&[u8], usize) = match algorithm {
        Algorithm::Ed25519 => (&ED25519_SPKI_PREFIX, 32),
        Algorithm::EcdsaP256Sha256 => (&P256_SPKI_PREFIX, 65),
    };
    if raw.len() != len {
        return Err(KeyError::Malformed(format!(
            "{algorithm} public key must be {len} bytes, got {}",
            raw.len()
        )));
    }
    let mut der = prefix.to_vec();
    der.extend_from_slice(raw);
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::Signer as _;

    #[test]
    fn algorithm_names() {
        assert_eq!(
            Algorithm::parse("P256").unwrap(),
            Algorithm::EcdsaP256Sha256
        );
        assert_eq!(Algorithm::parse("ed25519").unwrap(), Algorithm::Ed25519);
        assert!(Algorithm::parse("rsa").is_err());
    }

    // This test used to run its assertions only `if let Ok(..)` on a made-up key, so it
    // passed whether or not the round trip worked; it now uses real keys of both algorithms.
    #[test]
    fn raw_and_spki_agree() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let pk = crate::file::FileKey::generate(alg)
                .unwrap()
                .public_key()
                .clone();
            let header = if alg == Algorithm::Ed25519 { 12 } else { 26 };
            let raw = &pk.spki_der()[header..];
            let k = PublicKey::from_raw(alg, raw).unwrap();
            assert_eq!(k, pk);
            assert_eq!(&k.spki_der()[header..], raw);
            let back = PublicKey::from_pem(k.to_pem().as_bytes()).unwrap();
            assert_eq!(back, k);
            assert!(k.key_id().as_str().starts_with("sha256:"));
            assert_eq!(k.key_id().as_str().len(), 7 + 64);
        }
        assert!(PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &[4u8; 10]).is_err());
    }

    #[test]
    fn refuses_garbage_and_other_algorithms() {
        assert!(PublicKey::from_spki_der(b"\x30\x00").is_err());
        assert!(PublicKey::from_pem(b"hello").is_err());
        let err =
            PublicKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("PUBLIC KEY"), "{err}");
        // An RSA SPKI header (truncated key is fine: the OID is checked first).
        let rsa = [
            0x30, 0x1a, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x01, 0x05, 0x00, 0x03, 0x09, 0x00, 0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03,
        ];
        let err = PublicKey::from_spki_der(&rsa).unwrap_err().to_string();
        assert!(err.contains("RSA"), "{err}");
    }

    /// DER TLV with a short- or long-form length as given.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x81);
            out.push(content.len() as u8);
        }
        out.extend_from_slice(content);
        out
    }

    const OID_EC: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const OID_P256_TLV: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    /// An EC SPKI with the given parameters TLV and BIT STRING contents (unused-bits byte first).
    fn ec_spki(params: &[u8], bits: &[u8]) -> Vec<u8> {
        let alg = tlv(0x30, &[&OID_EC[..], params].concat());
        tlv(0x30, &[alg, tlv(0x03, bits)].concat())
    }

    fn p256() -> (PublicKey, Vec<u8>) {
        let k = crate::file::FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let pk = k.public_key().clone();
        let point = pk.spki_der()[26..].to_vec();
        assert_eq!(point.len(), 65);
        (pk, point)
    }

    fn compressed(point: &[u8]) -> Vec<u8> {
        let mut c = vec![0x02 | (point[64] & 1)];
        c.extend_from_slice(&point[1..33]);
        c
    }

    // Regression (issue #8 item 1): a compressed and an uncompressed copy of one P-256 key
    // had two key ids and were two keys, so one signature met a threshold of two.
    #[test]
    fn compressed_and_uncompressed_p256_are_one_key() {
        let (pk, point) = p256();
        let c = compressed(&point);
        let from_compressed =
            PublicKey::from_spki_der(&ec_spki(&OID_P256_TLV, &[&[0u8][..], &c].concat())).unwrap();
        assert_eq!(from_compressed, pk);
        assert_eq!(from_compressed.key_id(), pk.key_id());
        assert_eq!(from_compressed.spki_der(), pk.spki_der());
        assert_eq!(from_compressed.spki_der()[26], 0x04, "stored uncompressed");
        let raw = PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &c).unwrap();
        assert_eq!(raw.key_id(), pk.key_id());
        // The wrong parity bit is another (valid) key, not this one.
        let mut flipped = c.clone();
        flipped[0] ^= 1;
        let other = PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &flipped).unwrap();
        assert_ne!(other, pk);
        // The canonical key id is SHA-256 over the 91-byte uncompressed named-curve SPKI.
        assert_eq!(pk.spki_der().len(), 91);
        assert_eq!(
            pk.key_id(),
            &KeyId::of_spki(&[&P256_SPKI_PREFIX[..], &point].concat())
        );
    }

    #[test]
    fn pem_variants_of_one_key_are_one_key() {
        let (pk, _) = p256();
        let pem = pk.to_pem();
        let crlf = pem.replace('\n', "\r\n");
        let chatty = format!("a comment line\n{pem}\ntrailing text\n");
        let narrow = {
            // 40-column body lines instead of 64.
            let b64 = stella_dsse::b64::encode(pk.spki_der());
            let body: Vec<String> = b64
                .as_bytes()
                .chunks(40)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                body.join("\n")
            )
        };
        for text in [crlf, chatty, narrow] {
            let k = PublicKey::from_pem(text.as_bytes()).unwrap();
            assert_eq!(k.key_id(), pk.key_id(), "{text}");
        }
        // Other labels and two keys in one file are refused.
        let der = pk.spki_der().to_vec();
        for label in ["EC PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"] {
            let text = crate::pem_encode(label, &der);
            let err = PublicKey::from_pem(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a PEM `PUBLIC KEY` block"),
                "{label}: {err}"
            );
        }
        let two = format!("{pem}{}", p256().0.to_pem());
        let err = PublicKey::from_pem(two.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
    }

    #[test]
    fn other_encodings_of_p256_are_refused() {
        let (pk, point) = p256();
        let good = ec_spki(&OID_P256_TLV, &[&[0u8][..], &point].concat());
        assert_eq!(PublicKey::from_spki_der(&good).unwrap(), pk);
        let refuse = |der: &[u8], needle: &str| {
            let err = PublicKey::from_spki_der(der).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        // Hybrid forms (0x06 | parity, x, y).
        let mut hybrid = point.clone();
        hybrid[0] = 0x06 | (point[64] & 1);
        refuse(
            &ec_spki(&OID_P256_TLV, &[&[0u8][..], &hybrid].concat()),
            "hybrid",
        );
        assert!(PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &hybrid).is_err());
        // Explicit curve parameters (any SEQUENCE in place of the named-curve OID).
        refuse(
            &ec_spki(&tlv(0x30, &tlv(0x02, &[1])), &[&[0u8][..], &point].concat()),
            "explicit curve parameters",
        );
        // No parameters, NULL parameters, another curve.
        refuse(
            &ec_spki(&[], &[&[0u8][..], &point].concat()),
            "without curve parameters",
        );
        refuse(
            &ec_spki(&[0x05, 0x00], &[&[0u8][..], &point].concat()),
            "explicit curve parameters",
        );
        let p384 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
        refuse(
            &ec_spki(&p384, &[&[0u8][..], &point].concat()),
            "EC curve 1.3.132.0.34",
        );
        // A BIT STRING with unused bits.
        refuse(
            &ec_spki(
                &OID_P256_TLV,
                &[&[1u8][..], &point[..64], &[point[64] & 0xfe]].concat(),
            ),
            "unused bits",
        );
        // A whole SPKI nested where the point belongs (aws-lc alone would accept it).
        refuse(
            &ec_spki(&OID_P256_TLV, &[&[0u8][..], pk.spki_der()].concat()),
            "SEC1 point",
        );
        // Point at infinity, truncated, off-curve.
        refuse(&ec_spki(&OID_P256_TLV, &[0, 0]), "infinity");
        refuse(
            &ec_spki(&OID_P256_TLV, &[&[0u8][..], &point[..64]].concat()),
            "SEC1 point",
        );
        let mut off = point.clone();
        off[64] ^= 1;
        refuse(
            &ec_spki(&OID_P256_TLV, &[&[0u8][..], &off].concat()),
            "invalid p256",
        );
        // BER: a long-form length where the short form fits, and an indefinite length.
        let mut ber = good.clone();
        let inner = ber.split_off(2);
        let ber = [&[0x30, 0x81, ber[1]][..], &inner].concat();
        refuse(&ber, "not a DER SubjectPublicKeyInfo");
        let indefinite = [&[0x30, 0x80][..], &good[2..], &[0, 0]].concat();
        refuse(&indefinite, "not a DER SubjectPublicKeyInfo");
        // Trailing bytes after the SEQUENCE, and an extra field inside it.
        refuse(
            &[&good[..], &[0]].concat(),
            "not a DER SubjectPublicKeyInfo",
        );
        let extra = tlv(0x30, &[&good[2..], &[0x05, 0x00][..]].concat());
        refuse(&extra, "not a DER SubjectPublicKeyInfo");
    }

    #[test]
    fn ed25519_encodings() {
        let k = crate::file::FileKey::generate(Algorithm::Ed25519).unwrap();
        let pk = k.public_key().clone();
        let raw = &pk.spki_der()[12..];
        assert_eq!(PublicKey::from_raw(Algorithm::Ed25519, raw).unwrap(), pk);
        let ed_spki = |params: &[u8], bits: &[u8]| {
            let alg = tlv(
                0x30,
                &[&[0x06, 0x03, 0x2b, 0x65, 0x70][..], params].concat(),
            );
            tlv(0x30, &[alg, tlv(0x03, bits)].concat())
        };
        assert_eq!(
            PublicKey::from_spki_der(&ed_spki(&[], &[&[0u8][..], raw].concat())).unwrap(),
            pk
        );
        let refuse = |der: &[u8], needle: &str| {
            let err = PublicKey::from_spki_der(der).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refuse(
            &ed_spki(&[0x05, 0x00], &[&[0u8][..], raw].concat()),
            "parameters",
        );
        refuse(&ed_spki(&[], &[&[0u8][..], raw, &[0]].concat()), "32 bytes");
        refuse(
            &ed_spki(&[], &[&[0u8][..], &raw[..31]].concat()),
            "32 bytes",
        );
        // Every small-order point, with either sign bit.
        for y in ED25519_SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                let mut e = y;
                e[31] |= sign;
                let err = PublicKey::from_raw(Algorithm::Ed25519, &e)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("small order"), "{err}");
            }
        }
        // y >= p: p itself (= 0), p + 1 (= 1), p + 2, and 2^255 - 1.
        for low in [0xed, 0xee, 0xef, 0xff] {
            let mut e = [0xffu8; 32];
            e[0] = low;
            e[31] = 0x7f;
            let err = PublicKey::from_raw(Algorithm::Ed25519, &e)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not canonically encoded"), "{err}");
        }
    }

    /// The three Ed25519 verifiers — `PublicKey::verify` (aws-lc plus the small-order `R`
    /// rule), the streamed one (`ed25519_stream`: aws-lc SHA-512, curve25519-dalek points) and
    /// ed25519-dalek's `verify_strict` — accept exactly the same signatures: valid ones, bit
    /// flips, non-canonical `S`, every small-order `R` encoding, `R` off the curve, wrong
    /// lengths, and a signature with `R` the identity that aws-lc alone accepts.
    #[test]
    fn ed25519_verifiers_agree_with_verify_strict() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        use curve25519_dalek::scalar::Scalar;
        use ed25519_dalek::hazmat::ExpandedSecretKey;
        use ed25519_dalek::Signer as _;

        // ℓ, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        fn add_le(a: &[u8], b: &[u8; 32]) -> Vec<u8> {
            let mut out = vec![0u8; 32];
            let mut carry = 0u16;
            for i in 0..32 {
                let v = u16::from(a[i]) + u16::from(b[i]) + carry;
                out[i] = v as u8;
                carry = v >> 8;
            }
            out
        }
        fn streamed(pk: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
            match pk.ed25519_stream(sig) {
                None => false,
                Some(mut v) => {
                    for piece in msg.chunks(7) {
                        v.update(piece);
                    }
                    v.verifies()
                }
            }
        }
        // Every small-order point's encodings: y from the list, both sign bits.
        let mut small_r: Vec<[u8; 32]> = Vec::new();
        for y in ED25519_SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                let mut r = y;
                r[31] |= sign;
                small_r.push(r);
            }
        }
        // y + p for the small y values (non-canonical encodings of 0 and 1).
        for low in [0u8, 1] {
            let mut r = [0xffu8; 32];
            r[0] = 0xed + low;
            r[31] = 0x7f;
            small_r.push(r);
        }
        let mut accepted_by_aws_lc_alone = 0;
        let mut cases = 0;
        for seed_byte in 0..4u8 {
            let seed = [seed_byte.wrapping_mul(37).wrapping_add(1); 32];
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            let vk = sk.verifying_key();
            let pk = PublicKey::from_raw(Algorithm::Ed25519, vk.as_bytes()).unwrap();
            for msg in [&b""[..], b"m", &[0x5a; 300][..]] {
                let good = sk.sign(msg).to_bytes().to_vec();
                let mut sigs: Vec<Vec<u8>> = vec![good.clone()];
                for at in [0, 17, 31, 32, 40, 63] {
                    let mut s = good.clone();
                    s[at] ^= 0x01;
                    sigs.push(s);
                }
                // S + ℓ (the same scalar, not reduced) and S with its top bits set.
                let mut s = good.clone();
                let big = add_le(&good[32..], &L);
                s[32..].copy_from_slice(&big);
                sigs.push(s);
                let mut s = good.clone();
                s[63] |= 0xe0;
                sigs.push(s);
                // R of small order with the real S, and with S = 0.
                for r in &small_r {
                    for zero_s in [false, true] {
                        let mut s = good.clone();
                        s[..32].copy_from_slice(r);
                        if zero_s {
                            s[32..].fill(0);
                        }
                        sigs.push(s);
                    }
                }
                // R the identity and S = k·a: [S]B - [k]A is the identity, so a cofactorless
                // check without the small-order rule (aws-lc's) accepts it.
                let identity = CompressedEdwardsY::default();
                let mut identity_bytes = [0u8; 32];
                identity_bytes[0] = 1;
                assert_eq!(identity.to_bytes(), identity_bytes);
                let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
                h.update(&identity_bytes);
                h.update(vk.as_bytes());
                h.update(msg);
                let wide: [u8; 64] = h.finish().as_ref().try_into().unwrap();
                let k = Scalar::from_bytes_mod_order_wide(&wide);
                let a = ExpandedSecretKey::from(&seed).scalar;
                let mut forged = identity_bytes.to_vec();
                forged.extend_from_slice((k * a).as_bytes());
                assert!(
                    pk.parsed().verify_sig(msg, &forged).is_ok(),
                    "aws-lc accepts an identity R"
                );
                accepted_by_aws_lc_alone += 1;
                sigs.push(forged);
                // R off the curve; wrong lengths.
                let mut s = good.clone();
                s[..32].copy_from_slice(&[2u8; 32]);
                assert!(CompressedEdwardsY([2u8; 32]).decompress().is_none());
                sigs.push(s);
                for len in [0, 32, 63, 65, 128] {
                    let mut s = good.clone();
                    s.resize(len, 0);
                    sigs.push(s);
                }
                for (i, sig) in sigs.iter().enumerate() {
                    let strict = ed25519_dalek::Signature::from_slice(sig)
                        .map(|s| vk.verify_strict(msg, &s).is_ok())
                        .unwrap_or(false);
                    assert_eq!(pk.verify(msg, sig), strict, "verify, case {i}");
                    assert_eq!(streamed(&pk, msg, sig), strict, "streamed, case {i}");
                    assert_eq!(
                        strict,
                        i == 0,
                        "only the real signature verifies (case {i})"
                    );
                    cases += 1;
                }
            }
        }
        assert!(cases > 300 && accepted_by_aws_lc_alone == 12, "{cases}");
    }
}
