//! Known-answer tests for `stella_keys::cosign` against real key files
//! written by cosign (see `tests/data/cosign/README.md` for provenance).
//!
//! Every decryption here runs scrypt (N = 32768 or 65536); keep the count low.

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use stella_keys::cosign::{self, CosignKeyError};

const POLICY_CONTROLLER_KEY: &str = include_str!("data/cosign/policy-controller-cosign.key");
const POLICY_CONTROLLER_PUB: &str = include_str!("data/cosign/policy-controller-cosign.pub");
const COSIGN_TEST_SIGSTORE_KEY: &str = include_str!("data/cosign/cosign-keys-test-sigstore.key");
const COSIGN_TEST_EC_SEC1_KEY: &str =
    include_str!("data/cosign/cosign-keys-test-cosign-ec-sec1.key");
const SIGSTORE_RS_EMPTY_KEY: &str =
    include_str!("data/cosign/sigstore-rs-cosign-generated-empty.key");

/// The uncompressed EC point inside a PEM SubjectPublicKeyInfo.
fn spki_point(pem_text: &str) -> Vec<u8> {
    use spki::der::Decode as _;
    let block = pem::parse(pem_text).expect("public key PEM");
    assert_eq!(block.tag(), "PUBLIC KEY");
    let spki = spki::SubjectPublicKeyInfoRef::from_der(block.contents()).expect("SPKI");
    spki.subject_public_key
        .as_bytes()
        .expect("octet-aligned key")
        .to_vec()
}

fn p256(der: &[u8]) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).expect("PKCS#8 P-256 key")
}

#[test]
fn cosign_policy_controller_key_decrypts_and_matches_its_public_key() {
    // Older `ENCRYPTED COSIGN PRIVATE KEY` label, N=32768, empty password.
    let der = cosign::decrypt(POLICY_CONTROLLER_KEY.as_bytes(), b"").expect("decrypt");
    let pair = p256(&der);
    assert_eq!(
        pair.public_key().as_ref(),
        spki_point(POLICY_CONTROLLER_PUB).as_slice()
    );
}

#[test]
fn cosign_wrong_password_is_reported_without_echoing_it() {
    let password = b"definitely-not-the-password";
    let err = cosign::decrypt(POLICY_CONTROLLER_KEY.as_bytes(), password).expect_err("wrong");
    assert!(matches!(err, CosignKeyError::WrongPassword), "{err:?}");
    let text = format!("{err} {err:?}");
    assert_eq!(err.to_string(), "wrong password or corrupted key file");
    assert!(!text.contains("definitely-not-the-password"));
}

#[test]
fn cosign_sigstore_label_fixture() {
    // Current `ENCRYPTED SIGSTORE PRIVATE KEY` label, N=32768, password "hello".
    let der = cosign::decrypt(COSIGN_TEST_SIGSTORE_KEY.as_bytes(), b"hello").expect("decrypt");
    let pair = p256(&der);
    assert_eq!(pair.public_key().as_ref().len(), 65);
}

#[test]
fn cosign_generated_n65536_empty_password() {
    // `cosign generate-key-pair` output with COSIGN_PASSWORD="" (N=65536).
    let der = cosign::decrypt(SIGSTORE_RS_EMPTY_KEY.as_bytes(), b"").expect("decrypt");
    p256(&der);
}

#[test]
fn cosign_plaintext_is_returned_uninterpreted() {
    // cosign's own fixture whose plaintext is SEC1, not PKCS#8 (N=65536).
    let plain = cosign::decrypt(COSIGN_TEST_EC_SEC1_KEY.as_bytes(), b"hello").expect("decrypt");
    // SEC1 ECPrivateKey for P-256: SEQUENCE { INTEGER 1, OCTET STRING (32) ... }.
    assert_eq!(&plain[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
    assert!(
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &plain).is_err(),
        "not PKCS#8"
    );
}

#[test]
fn cosign_go_securesystemslib_vector() {
    // encrypted/encrypted_test.go, TestDecrypt (Decrypt returns the raw
    // plaintext; the kdfVectors there go through Unmarshal and hold JSON).
    let json = br#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}"#;
    let plain = cosign::decrypt_contents(json, b"supersecret").expect("decrypt");
    assert_eq!(plain.as_slice(), b"reallyimportant");
}

#[test]
fn cosign_hostile_n_in_a_real_file_is_refused_cheaply() {
    // Rewrite the real file's JSON to N=2^20: refused before any scrypt work.
    let block = pem::parse(POLICY_CONTROLLER_KEY).expect("pem");
    let json = std::str::from_utf8(block.contents())
        .expect("utf8")
        .replace(r#""N":32768"#, r#""N":1048576"#);
    let started = std::time::Instant::now();
    let err = cosign::decrypt_contents(json.as_bytes(), b"").expect_err("hostile");
    assert!(
        matches!(
            err,
            CosignKeyError::UnsupportedParams {
                n: 1048576,
                r: 8,
                p: 1
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}
