//! Keyring files (TOML with inline PEM keys, purposes, validity windows) as `--keyring` and
//! the service config read them. Never panics; a keyring never holds one key twice (keys
//! compare in canonical form), and every key's id is the SHA-256 of its canonical SPKI.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_keys::{DevKeys, KeyId, Keyring};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // File references resolve under a folder that does not exist.
    let base = std::path::Path::new("/nonexistent-stella-fuzz");
    if let Ok(ring) = Keyring::from_toml(text, base, DevKeys::Refuse) {
        let keys = ring.keys();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k.key.key_id(), &KeyId::of_spki(k.key.spki_der()));
            for other in &keys[i + 1..] {
                assert!(other.key != k.key, "one key twice in a keyring");
                assert!(other.key.key_id() != k.key.key_id());
            }
        }
    }
});
