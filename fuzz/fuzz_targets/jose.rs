//! JOSE as the Signer service reads it from callers and from the Authority: compact JWS
//! (access tokens and DPoP proofs, with the proof's embedded `jwk`), single JWKs and JWK
//! Sets. Never panics; a parsed JWS keeps its signing input inside the token; a key's
//! thumbprint is stable; nothing verifies under a key it was not made with (the input is
//! split so the fuzzer can pair any token with any key set).
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_signer::jose::{Jwk, JwkSet, Jws};

fuzz_target!(|data: &[u8]| {
    // First line: a compact JWS; the rest: a JWKS (or a single JWK).
    let (token, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    if let Ok(token) = std::str::from_utf8(token) {
        if let Ok(jws) = Jws::parse(token) {
            assert!(jws.signing_input().len() < token.len());
            assert!(token.as_bytes().starts_with(jws.signing_input()));
            let _ = jws.header_str("typ");
            let _ = jws.header_str("kid");
            // DPoP: the proof carries its own public key.
            if let Some(v) = jws.header.get("jwk") {
                if let Ok(k) = Jwk::from_value(v) {
                    let t = k.thumbprint().to_string();
                    assert_eq!(Jwk::from_value(v).map(|k| k.thumbprint().to_string()).ok(), Some(t));
                    let _ = k.fits(jws.alg);
                    let _ = jws.verify(&k);
                }
            }
            if let Ok(set) = JwkSet::from_json(rest) {
                let kid = jws.header_str("kid");
                for k in set.candidates(kid, jws.alg) {
                    let _ = jws.verify(k);
                }
            }
        }
    }
    if let Ok(set) = JwkSet::from_json(rest) {
        for k in &set.keys {
            assert!(!k.thumbprint().is_empty());
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
        let _ = Jwk::from_value(&v);
    }
});
