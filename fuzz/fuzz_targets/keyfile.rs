//! Key file parsers (PEM public keys, PKCS#8/SEC1 private keys, cosign encrypted files):
//! never panic on any input. Cosign files with accepted scrypt settings cost real work, so
//! the password callback supplies a fixed password and the parser's early checks must reject
//! malformed documents before key derivation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_keys::{FileKey, PublicKey};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let _ = PublicKey::from_pem(data);
    let _ = PublicKey::from_spki_der(data);
    let _ = FileKey::from_pkcs8_der(data);
    let _ = FileKey::from_pem(data, &mut || Ok(Zeroizing::new(String::from("pw"))));
    let _ = stella_keys::cosign::decrypt_contents(data, b"pw");
});
