//! PKCS#11 keys against a real SoftHSM2 token (`apt-get install softhsm2`, done by
//! scripts/setup-test-deps.sh).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialised, and a module is
//! initialised once per process; so this binary holds a single test that owns its temp dir
//! and walks through every case in order (the CLI tests cover the same backend one process
//! per command).
#![cfg(feature = "pkcs11")]
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "support/big_message.rs"]
mod big_message;
#[path = "support/softhsm.rs"]
mod softhsm;

use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use stella_keys::pkcs11::{self, Pkcs11Key, Pkcs11Uri};
use stella_keys::{Algorithm, KeyError, SignError, Signer};

use softhsm::{SoftHsm, MODULE};

const PIN: &str = "4321";
const SO_PIN: &str = "87654321";

fn uri(s: &str) -> Pkcs11Uri {
    let sep = if s.contains('?') { '&' } else { '?' };
    Pkcs11Uri::parse(&format!("{s}{sep}module-path={MODULE}")).unwrap()
}

fn sign_error(k: &Pkcs11Key) -> SignError {
    match k.sign(b"m") {
        Ok(_) => panic!("signing succeeded"),
        Err(e) => e,
    }
}

#[test]
fn softhsm_token_keys() {
    let hsm = SoftHsm::new();
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    std::env::remove_var("STELLA_PKCS11_PIN");
    std::env::remove_var("STELLA_PKCS11_MODULE");
    hsm.init_token("stella-a", PIN, SO_PIN);
    hsm.init_token("stella-b", PIN, SO_PIN);

    // Generate P-256 and Ed25519 keys inside the token.
    let p256 = pkcs11::generate(
        &uri(&format!(
            "pkcs11:token=stella-a;object=p256?pin-value={PIN}"
        )),
        Algorithm::EcdsaP256Sha256,
    )
    .unwrap();
    assert_eq!(p256.public.algorithm(), Algorithm::EcdsaP256Sha256);
    let ed = pkcs11::generate(
        &uri(&format!(
            "pkcs11:token=stella-a;object=ed;id=%0e%d0?pin-value={PIN}"
        )),
        Algorithm::Ed25519,
    )
    .unwrap();
    assert_eq!(ed.id, vec![0x0e, 0xd0]);
    // Same label again: refused, nothing overwritten.
    let again = pkcs11::generate(
        &uri(&format!(
            "pkcs11:token=stella-a;object=p256?pin-value={PIN}"
        )),
        Algorithm::EcdsaP256Sha256,
    )
    .unwrap_err();
    assert!(again.to_string().contains("already holds"), "{again}");

    // Sign and verify with both; the public key read back matches the generated one.
    let pin_file = hsm.path("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let k = Pkcs11Key::open(&uri(&format!(
        "pkcs11:token=stella-a;object=p256?pin-source=file:{}",
        pin_file.display()
    )))
    .unwrap();
    assert_eq!(k.public_key(), &p256.public);
    assert_eq!(k.mode(), "hsm");
    for i in 0..20u32 {
        let msg = format!("message {i}");
        let sig = k.sign(msg.as_bytes()).unwrap();
        assert!(k.public_key().verify(msg.as_bytes(), &sig), "sig {i}");
        assert!(!k.public_key().verify(b"other", &sig));
    }
    // Two tokens and no token= in the URI: ambiguous, refused rather than guessed.
    let ambiguous = Pkcs11Key::open(&uri(&format!("pkcs11:id=%0e%d0?pin-value={PIN}")))
        .expect_err("ambiguous URI accepted");
    assert!(
        ambiguous.to_string().contains("2 tokens match"),
        "{ambiguous}"
    );
    let e = Pkcs11Key::open(&uri(&format!(
        "pkcs11:token=stella-a;id=%0e%d0?pin-value={PIN}"
    )))
    .unwrap();
    assert_eq!(e.public_key(), &ed.public);
    let sig = e.sign(b"ed message").unwrap();
    assert_eq!(sig.len(), 64);
    assert!(e.public_key().verify(b"ed message", &sig));
    // Ed25519 is deterministic: the same message gives the same signature.
    assert_eq!(e.sign(b"ed message").unwrap(), sig);

    // Streams: P-256 hashes here and the token signs the digest (CKM_ECDSA), so a 384 MiB
    // message is read once and never held; Ed25519 (PureEdDSA in the token) reads it whole.
    big_message::assert_signs_big_stream_in_bounded_memory(&k);
    let mut small = stella_keys::stream::Prefixed {
        prefix: b"ed ".to_vec(),
        body: std::io::Cursor::new(b"message".to_vec()),
    };
    assert_eq!(e.sign_stream(&mut small).unwrap(), sig);
    let p256_small = k.sign_stream(&mut small).unwrap();
    assert!(k.public_key().verify(b"ed message", &p256_small));

    // Through the generic loader and the DSSE signer.
    let via_ref = stella_keys::load_signer(
        &stella_keys::KeyRef::parse(&format!(
            "pkcs11:token=stella-a;object=p256?module-path={MODULE}&pin-value={PIN}"
        ))
        .unwrap(),
        stella_keys::DevKeys::Refuse,
        &mut || Err(KeyError::Password("none".into())),
    )
    .unwrap();
    let env = stella_keys::sign_envelope("application/x", b"payload".to_vec(), &[via_ref.as_ref()])
        .unwrap();
    assert!(via_ref.public_key().verify(
        &stella_dsse::pae("application/x", b"payload"),
        &env.signatures[0].sig
    ));

    // Public key export without signing (no PIN needed for public objects).
    let public = pkcs11::public_key(&uri("pkcs11:token=stella-a;object=p256;type=public")).unwrap();
    assert_eq!(public, p256.public);

    // The private key is sensitive and not extractable: the token refuses its value.
    {
        let ctx = cryptoki::context::Pkcs11::new(MODULE).unwrap();
        // Already initialised by the key above in this process: that is fine.
        let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == "stella-a")
            .unwrap();
        let s = ctx.open_ro_session(slot).unwrap();
        let _ = s.login(
            cryptoki::session::UserType::User,
            Some(&cryptoki::types::AuthPin::from(PIN.to_string())),
        );
        let h = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"p256".to_vec()),
            ])
            .unwrap()[0];
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
        assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "the token gave out the private value: {attrs:?}"
        );
    }

    // Wrong PIN: an authentication error (exit 3 at the CLI); no PIN at all: the same kind.
    // (PKCS#11 logins are per application and token: token stella-a is already logged in by
    // the keys above, so the PIN check is shown on a fresh token.)
    let wrong_b = Pkcs11Key::open(&uri("pkcs11:token=stella-b;object=x?pin-value=0000"))
        .expect_err("wrong PIN accepted on a fresh token");
    assert!(wrong_b.is_auth(), "{wrong_b}");
    assert!(wrong_b.to_string().contains("PIN"), "{wrong_b}");
    let no_pin =
        Pkcs11Key::open(&uri("pkcs11:token=stella-b;object=x")).expect_err("no PIN accepted");
    assert!(no_pin.is_auth(), "{no_pin}");

    // Missing key and missing token: not found / unavailable, with the URI in the message.
    let missing = Pkcs11Key::open(&uri(&format!(
        "pkcs11:token=stella-a;object=nope?pin-value={PIN}"
    )))
    .expect_err("missing key found");
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains("object=nope"), "{missing}");
    let no_token = Pkcs11Key::open(&uri(&format!(
        "pkcs11:token=absent;object=p256?pin-value={PIN}"
    )))
    .expect_err("missing token found");
    assert!(no_token.is_unavailable(), "{no_token}");
    let no_module = Pkcs11Key::open(
        &Pkcs11Uri::parse("pkcs11:object=p256?module-path=/nonexistent/lib.so").unwrap(),
    )
    .expect_err("missing module loaded");
    assert!(no_module.is_not_found(), "{no_module}");

    // A pool of sessions: concurrent signers each get a session; all signatures verify.
    let shared = Arc::new(k);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let k = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let msg = format!("{t}/{i}");
                    let sig = k.sign(msg.as_bytes()).unwrap();
                    assert!(k.public_key().verify(msg.as_bytes(), &sig));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // The token goes away mid-use: a clear "unavailable" error, then recovery when it is back.
    let k = shared;
    let aside = hsm.path("aside");
    std::fs::rename(hsm.tokens(), &aside).unwrap();
    std::fs::create_dir(hsm.tokens()).unwrap();
    let gone = sign_error(&k);
    assert!(
        matches!(gone, SignError::Unavailable { .. }),
        "token removed: {gone}"
    );
    assert!(gone.to_string().contains("token=stella-a"), "{gone}");
    std::fs::remove_dir(hsm.tokens()).unwrap();
    std::fs::rename(&aside, hsm.tokens()).unwrap();
    // Module rescans are rate-limited (500 ms); let the floor pass.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let sig = k.sign(b"after").unwrap();
    assert!(k.public_key().verify(b"after", &sig));

    // The token is re-initialised under the same label with a new key of the same name: the
    // signer refuses to sign with a key that is not the one it announced.
    for entry in std::fs::read_dir(hsm.tokens()).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    hsm.init_token("stella-a", PIN, SO_PIN);
    // Module rescans are rate-limited (500 ms); the removal above just did one.
    std::thread::sleep(std::time::Duration::from_millis(600));
    pkcs11::generate(
        &uri(&format!(
            "pkcs11:token=stella-a;object=p256?pin-value={PIN}"
        )),
        Algorithm::EcdsaP256Sha256,
    )
    .unwrap();
    let swapped = sign_error(&k);
    assert!(
        swapped.to_string().contains("different key"),
        "swapped key: {swapped}"
    );
}
