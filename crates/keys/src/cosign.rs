//! cosign's encrypted private key file format.
//!
//! `cosign generate-key-pair` writes the private key as one PEM block labelled
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (current cosign) or
//! `ENCRYPTED COSIGN PRIVATE KEY` (older cosign). The block's
//! bytes are the JSON document produced by go-securesystemslib's `encrypted`
//! package:
//!
//! ```text
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64, 32 bytes>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64, 24 bytes>"},
//!  "ciphertext":"<base64>"}
//! ```
//!
//! The secretbox key is `scrypt(password, salt, N, r, p)` truncated to 32
//! bytes; the ciphertext is a NaCl secretbox (XSalsa20-Poly1305, 16-byte
//! Poly1305 tag *before* the encrypted bytes) whose plaintext is the private
//! key, which cosign stores as PKCS#8 DER. Byte strings are standard base64
//! with padding, which is how Go's `encoding/json` writes `[]byte`.
//!
//! Decisions:
//!
//! * **Bounded work on read.** Only the three scrypt settings
//!   go-securesystemslib itself accepts are honoured: N ∈ {32768, 65536,
//!   131072} with r = 8 and p = 1 (at most 128 MiB and well under a second
//!   in release builds). Anything else is [`CosignKeyError::UnsupportedParams`]
//!   *before* any key derivation, so a hostile file cannot make us allocate
//!   gigabytes or spin for minutes. Salt (32 bytes), nonce (24 bytes) and the
//!   minimum ciphertext length are also checked before scrypt runs.
//! * **Strict JSON.** The document is parsed into serde-derived structs with
//!   unknown fields denied; duplicate fields, wrong types, missing fields and
//!   trailing bytes are rejected. Field names are case-sensitive (Go's decoder
//!   is not, but no cosign version writes anything but the lowercase/`N`
//!   spelling). Base64 must be canonical standard base64 with padding.
//! * **Secrets.** The derived key and the decrypted plaintext live in
//!   [`Zeroizing`] buffers (the secretbox cipher zeroizes its own key copy on
//!   drop). Error messages carry only structural facts (field names, lengths,
//!   algorithm names, scrypt parameters) — never the password, key or
//!   plaintext. A failed Poly1305 check is reported as
//!   [`CosignKeyError::WrongPassword`], since a wrong password and a
//!   corrupted ciphertext are indistinguishable.
//! * **Plaintext is not interpreted here.** [`decrypt`] returns whatever the
//!   box contained (cosign's own tests include a key whose plaintext is SEC1
//!   rather than PKCS#8); parsing the key is the caller's job.
//! * **Writing** mirrors current cosign: label `ENCRYPTED SIGSTORE PRIVATE KEY`,
//!   N = 65536 (go-securesystemslib's "Standard" level), r = 8, p = 1, a
//!   fresh random 32-byte salt and 24-byte nonce from the system RNG, compact
//!   JSON with cosign's field order, PEM with 64-column LF lines and a
//!   trailing newline. The empty password is allowed in both directions, as
//!   in cosign (`COSIGN_PASSWORD=""`).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// PEM label written by current cosign (and by us).
pub(crate) const LABEL_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label written by older cosign releases; still accepted on read.
pub(crate) const LABEL_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// scrypt N used when we write a key file.
pub(crate) const WRITE_N: u64 = 65536;
/// The scrypt N values accepted on read (and by [`encrypt_with_n`]).
pub(crate) const ACCEPTED_N: [u64; 3] = [32768, 65536, 131072];
/// The only scrypt `r` accepted.
pub(crate) const SCRYPT_R: u64 = 8;
/// The only scrypt `p` accepted.
pub(crate) const SCRYPT_P: u64 = 1;
/// Salt length in bytes.
pub(crate) const SALT_LEN: usize = 32;
/// XSalsa20 nonce length in bytes.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag length: the minimum ciphertext length.
pub(crate) const TAG_LEN: usize = 16;

const KEY_LEN: usize = 32;
const KDF_SCRYPT: &str = "scrypt";
const CIPHER_SECRETBOX: &str = "nacl/secretbox";
/// Longest attacker-supplied name echoed back in an error message.
const MAX_ECHOED_NAME: usize = 64;

/// Errors reading or writing a cosign encrypted key file.
///
/// Messages never include the password, the derived key or the plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosignKeyError {
    /// The PEM block's label is neither of cosign's two (see the module docs).
    #[error(
        "not a cosign encrypted private key (expected PEM label \"{LABEL_SIGSTORE}\" or \"{LABEL_COSIGN}\")"
    )]
    NotCosignPem,
    /// The input is not a well-formed PEM block.
    #[error("malformed PEM: {0}")]
    Pem(#[from] pem::PemError),
    /// The PEM contents are not the expected JSON document.
    #[error("malformed cosign key JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The `kdf.name` is not `scrypt`.
    #[error("unsupported key derivation function {0:?} (only \"scrypt\" is supported)")]
    UnsupportedKdf(String),
    /// The `cipher.name` is not `nacl/secretbox`.
    #[error("unsupported cipher {0:?} (only \"nacl/secretbox\" is supported)")]
    UnsupportedCipher(String),
    /// scrypt parameters outside the accepted set.
    #[error(
        "unsupported scrypt parameters N={n}, r={r}, p={p} (accepted: N in {{32768, 65536, 131072}}, r=8, p=1)"
    )]
    UnsupportedParams {
        /// The CPU/memory cost `N`.
        n: u64,
        /// The block size `r`.
        r: u64,
        /// The parallelism `p`.
        p: u64,
    },
    /// A byte-string field is not canonical, padded, standard base64.
    #[error("field `{field}` is not valid standard base64")]
    BadBase64 {
        /// JSON path of the field, e.g. `kdf.salt`.
        field: &'static str,
    },
    /// A fixed-size byte-string field has the wrong length.
    #[error("field `{field}` is {actual} bytes long, expected {expected}")]
    BadLength {
        /// JSON path of the field, e.g. `cipher.nonce`.
        field: &'static str,
        /// Required length in bytes.
        expected: usize,
        /// Length found in the file.
        actual: usize,
    },
    /// The ciphertext is shorter than the 16-byte Poly1305 tag.
    #[error("ciphertext is {actual} bytes long, shorter than the {TAG_LEN}-byte authenticator")]
    TruncatedCiphertext {
        /// Length found in the file.
        actual: usize,
    },
    /// Authentication failed: the password is wrong or the file was altered.
    #[error("wrong password or corrupted key file")]
    WrongPassword,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Rng,
    /// A cryptographic primitive reported an error that its inputs rule out.
    #[error("internal cryptographic error")]
    Crypto,
}

/// The JSON document inside the PEM block. Field order is cosign's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    kdf: KdfSpec,
    cipher: CipherSpec,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSpec {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u64,
    p: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherSpec {
    name: String,
    nonce: String,
}

/// True for the two PEM labels cosign uses for encrypted private keys.
pub(crate) fn is_cosign_label(label: &str) -> bool {
    label == LABEL_SIGSTORE || label == LABEL_COSIGN
}

/// Decrypt a cosign key file (whole PEM text, CRLF tolerated) → PKCS#8 DER,
/// zeroized on drop.
///
/// The first PEM block in `pem_text` is used; its label must be one of
/// cosign's two (see the module docs). The plaintext is returned as-is (see the module docs).
pub fn decrypt(pem_text: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, CosignKeyError> {
    let block = pem::parse(pem_text)?;
    if !is_cosign_label(block.tag()) {
        return Err(CosignKeyError::NotCosignPem);
    }
    decrypt_contents(block.contents(), password)
}

/// Decrypt from an already-parsed PEM block's contents (label checked by
/// caller): `contents` is the JSON document.
pub fn decrypt_contents(
    contents: &[u8],
    password: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CosignKeyError> {
    let envelope: Envelope = serde_json::from_slice(contents)?;

    // Every cheap check happens before scrypt runs.
    if envelope.kdf.name != KDF_SCRYPT {
        return Err(CosignKeyError::UnsupportedKdf(clip(&envelope.kdf.name)));
    }
    if envelope.cipher.name != CIPHER_SECRETBOX {
        return Err(CosignKeyError::UnsupportedCipher(clip(
            &envelope.cipher.name,
        )));
    }
    let ScryptParams { n, r, p } = envelope.kdf.params;
    let log_n = scrypt_log_n(n, r, p)?;
    let salt: [u8; SALT_LEN] = decode_fixed("kdf.salt", &envelope.kdf.salt)?;
    let nonce: [u8; NONCE_LEN] = decode_fixed("cipher.nonce", &envelope.cipher.nonce)?;
    let ciphertext = decode_b64("ciphertext", &envelope.ciphertext)?;
    if ciphertext.len() < TAG_LEN {
        return Err(CosignKeyError::TruncatedCiphertext {
            actual: ciphertext.len(),
        });
    }

    let key = derive_key(password, &salt, log_n, n)?;
    let cipher =
        XSalsa20Poly1305::new_from_slice(key.as_slice()).map_err(|_| CosignKeyError::Crypto)?;
    let plaintext = cipher
        .decrypt(&Nonce::from(nonce), ciphertext.as_slice())
        .map_err(|_| CosignKeyError::WrongPassword)?;
    Ok(Zeroizing::new(plaintext))
}

/// Encrypt PKCS#8 DER → PEM text with `LABEL_SIGSTORE`, scrypt
/// N = [`WRITE_N`], r = 8, p = 1, fresh random 32-byte salt and 24-byte nonce.
pub(crate) fn encrypt(pkcs8_der: &[u8], password: &[u8]) -> Result<String, CosignKeyError> {
    encrypt_with_n(pkcs8_der, password, WRITE_N)
}

/// Like [`encrypt`] with an explicit scrypt N, which must be one of
/// [`ACCEPTED_N`] (a file we could not read back is never written).
pub(crate) fn encrypt_with_n(
    pkcs8_der: &[u8],
    password: &[u8],
    n: u64,
) -> Result<String, CosignKeyError> {
    let log_n = scrypt_log_n(n, SCRYPT_R, SCRYPT_P)?;

    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt).map_err(|_| CosignKeyError::Rng)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CosignKeyError::Rng)?;

    let key = derive_key(password, &salt, log_n, n)?;
    let cipher =
        XSalsa20Poly1305::new_from_slice(key.as_slice()).map_err(|_| CosignKeyError::Crypto)?;
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), pkcs8_der)
        .map_err(|_| CosignKeyError::Crypto)?;

    let envelope = Envelope {
        kdf: KdfSpec {
            name: KDF_SCRYPT.to_owned(),
            params: ScryptParams {
                n,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: BASE64.encode(salt),
        },
        cipher: CipherSpec {
            name: CIPHER_SECRETBOX.to_owned(),
            nonce: BASE64.encode(nonce),
        },
        ciphertext: BASE64.encode(ciphertext),
    };
    let json = serde_json::to_vec(&envelope)?;
    let block = pem::Pem::new(LABEL_SIGSTORE, json);
    Ok(pem::encode_config(
        &block,
        pem::EncodeConfig::new()
            .set_line_ending(pem::LineEnding::LF)
            .set_line_wrap(64),
    ))
}

/// log2(N) for an accepted (N, r, p) triple, or `UnsupportedParams`.
fn scrypt_log_n(n: u64, r: u64, p: u64) -> Result<u8, CosignKeyError> {
    if !ACCEPTED_N.contains(&n) || r != SCRYPT_R || p != SCRYPT_P {
        return Err(CosignKeyError::UnsupportedParams { n, r, p });
    }
    // Every accepted N is a power of two.
    u8::try_from(n.trailing_zeros()).map_err(|_| CosignKeyError::UnsupportedParams { n, r, p })
}

/// scrypt(password, salt, 2^log_n, 8, 1) → 32-byte secretbox key.
fn derive_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    n: u64,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CosignKeyError> {
    let unsupported = || CosignKeyError::UnsupportedParams {
        n,
        r: SCRYPT_R,
        p: SCRYPT_P,
    };
    // r and p are the constants 8 and 1, which fit in u32.
    let params = scrypt::Params::new(log_n, 8, 1, KEY_LEN).map_err(|_| unsupported())?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice()).map_err(|_| unsupported())?;
    Ok(key)
}

fn decode_b64(field: &'static str, text: &str) -> Result<Vec<u8>, CosignKeyError> {
    BASE64
        .decode(text)
        .map_err(|_| CosignKeyError::BadBase64 { field })
}

fn decode_fixed<const LEN: usize>(
    field: &'static str,
    text: &str,
) -> Result<[u8; LEN], CosignKeyError> {
    let bytes = decode_b64(field, text)?;
    <[u8; LEN]>::try_from(bytes.as_slice()).map_err(|_| CosignKeyError::BadLength {
        field,
        expected: LEN,
        actual: bytes.len(),
    })
}

/// Bound an attacker-chosen name before echoing it in an error.
fn clip(name: &str) -> String {
    name.chars().take(MAX_ECHOED_NAME).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY_CONTROLLER_KEY: &str =
        include_str!("../tests/data/cosign/policy-controller-cosign.key");

    /// A P-256 PKCS#8 document (the plaintext is opaque to this module, but a
    /// realistic size keeps the round trip honest).
    fn sample_pkcs8() -> Vec<u8> {
        let rng = SystemRandom::new();
        aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .expect("generate P-256 key")
        .as_ref()
        .to_vec()
    }

    /// A well-formed (but undecryptable) document; tests override parts.
    struct Doc {
        kdf: String,
        n: u64,
        r: u64,
        p: u64,
        salt: String,
        cipher: String,
        nonce: String,
        ct: String,
    }

    impl Doc {
        fn new() -> Self {
            Doc {
                kdf: "scrypt".to_owned(),
                n: 32768,
                r: 8,
                p: 1,
                salt: BASE64.encode([7u8; SALT_LEN]),
                cipher: "nacl/secretbox".to_owned(),
                nonce: BASE64.encode([9u8; NONCE_LEN]),
                ct: BASE64.encode([1u8; 48]),
            }
        }

        /// Same document with a hostile N: every check up to the scrypt
        /// parameters passes, and nothing expensive runs.
        fn hostile() -> Self {
            Doc {
                n: 1 << 20,
                ..Doc::new()
            }
        }

        fn render(&self) -> String {
            let Doc {
                kdf,
                n,
                r,
                p,
                salt,
                cipher,
                nonce,
                ct,
            } = self;
            format!(
                r#"{{"kdf":{{"name":"{kdf}","params":{{"N":{n},"r":{r},"p":{p}}},"salt":"{salt}"}},"cipher":{{"name":"{cipher}","nonce":"{nonce}"}},"ciphertext":"{ct}"}}"#
            )
        }
    }

    fn err_of(json: &str) -> CosignKeyError {
        match decrypt_contents(json.as_bytes(), b"pw") {
            Ok(_) => panic!("expected an error for {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn labels() {
        assert!(is_cosign_label(LABEL_SIGSTORE));
        assert!(is_cosign_label(LABEL_COSIGN));
        assert!(!is_cosign_label("PRIVATE KEY"));
        assert!(!is_cosign_label("ENCRYPTED PRIVATE KEY"));
        assert!(!is_cosign_label("encrypted sigstore private key"));
    }

    #[test]
    fn round_trip_default_n_with_password() {
        let der = sample_pkcs8();
        let pem_text = encrypt(&der, b"correct horse").expect("encrypt");

        // Shape: cosign's label, 64-column LF lines, trailing newline.
        assert!(pem_text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(pem_text.ends_with("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(!pem_text.contains('\r'));
        assert!(pem_text.lines().all(|l| l.len() <= 64));

        // JSON: cosign's field order and parameters, compact.
        let block = pem::parse(&pem_text).expect("pem");
        let json = std::str::from_utf8(block.contents()).expect("utf8");
        assert!(
            json.starts_with(
                r#"{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":""#
            ),
            "{json}"
        );
        assert!(json.contains(r#""cipher":{"name":"nacl/secretbox","nonce":""#));
        let env: Envelope = serde_json::from_str(json).expect("envelope");
        assert_eq!(BASE64.decode(&env.kdf.salt).expect("salt").len(), SALT_LEN);
        assert_eq!(
            BASE64.decode(&env.cipher.nonce).expect("nonce").len(),
            NONCE_LEN
        );
        assert_eq!(
            BASE64.decode(&env.ciphertext).expect("ct").len(),
            der.len() + TAG_LEN
        );

        let back = decrypt(pem_text.as_bytes(), b"correct horse").expect("decrypt");
        assert_eq!(back.as_slice(), der.as_slice());
    }

    #[test]
    fn round_trip_legacy_n_empty_password() {
        let der = sample_pkcs8();
        let pem_text = encrypt_with_n(&der, b"", 32768).expect("encrypt");
        let block = pem::parse(&pem_text).expect("pem");
        assert!(std::str::from_utf8(block.contents())
            .expect("utf8")
            .contains(r#""params":{"N":32768,"r":8,"p":1}"#));
        let back = decrypt(pem_text.as_bytes(), b"").expect("decrypt");
        assert_eq!(back.as_slice(), der.as_slice());
    }

    #[test]
    fn two_encryptions_use_fresh_salt_and_nonce() {
        // Cheap: compare the headers only, no decryption.
        let a = encrypt_with_n(b"x", b"", 32768).expect("a");
        let b = encrypt_with_n(b"x", b"", 32768).expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn tampered_ciphertext_is_wrong_password() {
        let block = pem::parse(POLICY_CONTROLLER_KEY).expect("pem");
        let mut env: Envelope = serde_json::from_slice(block.contents()).expect("json");
        let mut ct = BASE64.decode(&env.ciphertext).expect("ct");
        let last = ct.len() - 1;
        ct[last] ^= 0x01;
        env.ciphertext = BASE64.encode(&ct);
        let json = serde_json::to_vec(&env).expect("json");
        let err = decrypt_contents(&json, b"").expect_err("tampered");
        assert!(matches!(err, CosignKeyError::WrongPassword), "{err:?}");
        assert_eq!(err.to_string(), "wrong password or corrupted key file");
    }

    #[test]
    fn encrypt_rejects_unaccepted_n() {
        for n in [0, 1, 1024, 16384, 32767, 1 << 20, u64::MAX] {
            let err = encrypt_with_n(b"x", b"", n).expect_err("bad n");
            assert!(
                matches!(err, CosignKeyError::UnsupportedParams { n: got, r: 8, p: 1 } if got == n),
                "{err:?}"
            );
        }
    }

    #[test]
    fn hostile_params_rejected_before_work() {
        let started = std::time::Instant::now();
        for (n, r, p) in [
            (1u64 << 20, 8u64, 1u64),
            (1 << 30, 8, 1),
            (u64::MAX, 8, 1),
            (32768, 1 << 20, 1),
            (32768, 8, 16),
            (32768, 0, 1),
            (16384, 8, 1),
            (32767, 8, 1),
            (0, 8, 1),
        ] {
            let json = Doc {
                n,
                r,
                p,
                ..Doc::new()
            }
            .render();
            let err = err_of(&json);
            assert!(
                matches!(err, CosignKeyError::UnsupportedParams { n: a, r: b, p: c } if (a, b, c) == (n, r, p)),
                "{err:?}"
            );
        }
        // N=2^20 would need 1 GiB and seconds of work; rejection is instant.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn unsupported_algorithms() {
        let json = Doc {
            kdf: "pbkdf2".into(),
            ..Doc::new()
        }
        .render();
        assert!(matches!(err_of(&json), CosignKeyError::UnsupportedKdf(name) if name == "pbkdf2"));
        let json = Doc {
            cipher: "aes-gcm".into(),
            ..Doc::new()
        }
        .render();
        assert!(
            matches!(err_of(&json), CosignKeyError::UnsupportedCipher(name) if name == "aes-gcm")
        );
        // Attacker-chosen names are echoed bounded.
        let json = Doc {
            kdf: "x".repeat(10_000),
            ..Doc::new()
        }
        .render();
        match err_of(&json) {
            CosignKeyError::UnsupportedKdf(name) => assert_eq!(name.len(), MAX_ECHOED_NAME),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_base64_and_lengths() {
        let json = Doc {
            salt: BASE64.encode([7u8; 16]),
            ..Doc::new()
        }
        .render();
        assert!(matches!(
            err_of(&json),
            CosignKeyError::BadLength {
                field: "kdf.salt",
                expected: 32,
                actual: 16
            }
        ));
        let json = Doc {
            nonce: BASE64.encode([9u8; 32]),
            ..Doc::new()
        }
        .render();
        assert!(matches!(
            err_of(&json),
            CosignKeyError::BadLength {
                field: "cipher.nonce",
                expected: 24,
                actual: 32
            }
        ));
        // Garbage, unpadded (truncated), URL-safe and embedded-newline
        // encodings are all refused.
        let unpadded = Doc::new().salt.trim_end_matches('=').to_owned();
        for bad in ["!!!!", "abc", unpadded.as_str(), "-_-_", "QUJD\\nRA=="] {
            type Slot = fn(&mut Doc) -> &mut String;
            let fields: [(&str, Slot); 3] = [
                ("kdf.salt", |d| &mut d.salt),
                ("cipher.nonce", |d| &mut d.nonce),
                ("ciphertext", |d| &mut d.ct),
            ];
            for (field, slot) in fields {
                let mut doc = Doc::new();
                *slot(&mut doc) = bad.into();
                let err = err_of(&doc.render());
                assert!(
                    matches!(err, CosignKeyError::BadBase64 { field: f } if f == field),
                    "{field} = {bad}: {err:?}"
                );
            }
        }
        for len in [0usize, 1, 15] {
            let json = Doc {
                ct: BASE64.encode(vec![1u8; len]),
                ..Doc::new()
            }
            .render();
            assert!(matches!(
                err_of(&json),
                CosignKeyError::TruncatedCiphertext { actual } if actual == len
            ));
        }
    }

    #[test]
    fn strict_json() {
        let good = Doc::hostile().render();
        // Sanity: the template itself reaches the parameter check.
        assert!(matches!(
            err_of(&good),
            CosignKeyError::UnsupportedParams { .. }
        ));

        let cases = [
            String::new(),
            "not json".to_owned(),
            "[]".to_owned(),
            format!("{good} trailing"),
            good.replacen(r#""ciphertext""#, r#""extra":1,"ciphertext""#, 1),
            good.replacen(r#","ciphertext":"#, r#","kdf":{},"ciphertext":"#, 1),
            good.replacen(r#""p":1"#, r#""p":1,"p":1"#, 1),
            good.replacen(r#""N":"#, r#""n":"#, 1),
            good.replacen(r#""N":1048576"#, r#""N":-1"#, 1),
            good.replacen(r#""N":1048576"#, r#""N":32768.0"#, 1),
            good.replacen(r#""N":1048576"#, r#""N":"32768""#, 1),
            good.replacen(r#""ciphertext":"AQEB"#, r#""ciphertext":null,"x":"AQEB"#, 1),
            r#"{"kdf":null,"cipher":null,"ciphertext":""}"#.to_owned(),
        ];
        for case in &cases {
            assert_ne!(case, &good);
            let err = err_of(case);
            assert!(matches!(err, CosignKeyError::Json(_)), "{case}: {err:?}");
        }
        // Missing ciphertext.
        let missing = good
            .split(r#","ciphertext""#)
            .next()
            .map(|s| format!("{s}}}"))
            .expect("prefix");
        assert!(
            matches!(err_of(&missing), CosignKeyError::Json(_)),
            "{missing}"
        );
    }

    #[test]
    fn pem_level_errors() {
        // Not PEM at all.
        assert!(matches!(
            decrypt(b"hello", b""),
            Err(CosignKeyError::Pem(_))
        ));
        assert!(matches!(decrypt(b"", b""), Err(CosignKeyError::Pem(_))));
        // Truncated: no END line.
        let truncated = POLICY_CONTROLLER_KEY
            .lines()
            .take(4)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(matches!(
            decrypt(truncated.as_bytes(), b""),
            Err(CosignKeyError::Pem(_))
        ));
        // Garbage base64 in the body.
        let garbage =
            format!("-----BEGIN {LABEL_SIGSTORE}-----\n@@@@\n-----END {LABEL_SIGSTORE}-----\n");
        assert!(matches!(
            decrypt(garbage.as_bytes(), b""),
            Err(CosignKeyError::Pem(_))
        ));
        // Mismatched BEGIN/END labels.
        let mismatched = POLICY_CONTROLLER_KEY.replacen(LABEL_COSIGN, LABEL_SIGSTORE, 1);
        assert!(matches!(
            decrypt(mismatched.as_bytes(), b""),
            Err(CosignKeyError::Pem(_))
        ));
        // Well-formed PEM, body not JSON.
        let not_json = format!(
            "-----BEGIN {LABEL_SIGSTORE}-----\nbm90IGEga2V5\n-----END {LABEL_SIGSTORE}-----\n"
        );
        assert!(matches!(
            decrypt(not_json.as_bytes(), b""),
            Err(CosignKeyError::Json(_))
        ));
        // Other labels.
        for label in ["PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"] {
            let other = POLICY_CONTROLLER_KEY.replace(LABEL_COSIGN, label);
            assert!(matches!(
                decrypt(other.as_bytes(), b""),
                Err(CosignKeyError::NotCosignPem)
            ));
        }
    }

    #[test]
    fn crlf_and_both_labels_reach_the_json_layer() {
        // A hostile N stops the work before scrypt, so reaching
        // UnsupportedParams proves the PEM layer accepted the input without
        // paying for a key derivation.
        let json = Doc::hostile().render();
        for label in [LABEL_SIGSTORE, LABEL_COSIGN] {
            let lf = pem::encode_config(
                &pem::Pem::new(label, json.as_bytes()),
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            );
            let crlf = lf.replace('\n', "\r\n");
            for text in [lf, crlf] {
                let err = decrypt(text.as_bytes(), b"").expect_err("hostile");
                assert!(
                    matches!(err, CosignKeyError::UnsupportedParams { .. }),
                    "{err:?}"
                );
            }
        }
    }

    #[test]
    fn accepted_n_table_matches_log_n() {
        for n in ACCEPTED_N {
            let log_n = scrypt_log_n(n, SCRYPT_R, SCRYPT_P).expect("accepted");
            assert_eq!(1u64 << log_n, n);
        }
        assert!(ACCEPTED_N.contains(&WRITE_N));
    }

    #[test]
    fn messages_are_structural() {
        let e = CosignKeyError::UnsupportedParams {
            n: 1 << 20,
            r: 8,
            p: 1,
        };
        assert_eq!(
            e.to_string(),
            "unsupported scrypt parameters N=1048576, r=8, p=1 (accepted: N in {32768, 65536, 131072}, r=8, p=1)"
        );
        let e = CosignKeyError::BadLength {
            field: "kdf.salt",
            expected: 32,
            actual: 16,
        };
        assert_eq!(
            e.to_string(),
            "field `kdf.salt` is 16 bytes long, expected 32"
        );
        assert!(CosignKeyError::NotCosignPem
            .to_string()
            .contains(LABEL_SIGSTORE));
    }
}
