//! `stella` with PKCS#11 keys in a real SoftHSM2 token (installed by
//! scripts/setup-test-deps.sh). Every test initialises its own token in its own temp dir and
//! hands `SOFTHSM2_CONF` to each `stella` process.

#![allow(clippy::unwrap_used)]

#[path = "../../../keys/tests/support/softhsm.rs"]
mod softhsm;

use std::path::PathBuf;

use crate::support::{
    argv, assert_exit, assert_exit_ctx, b64_decode, openssl, python_peer, read, read_json, stderr,
    stdout, stella, write, write_json, Alg,
};
use softhsm::{SoftHsm, MODULE};

const PIN: &str = "2468";

struct Token {
    hsm: SoftHsm,
    conf: String,
}

impl Token {
    fn new(label: &str) -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token(label, PIN, "13579135");
        std::fs::write(hsm.path("pin"), format!("{PIN}\n")).unwrap();
        Token {
            conf: hsm.conf().display().to_string(),
            hsm,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.hsm.path(name)
    }

    /// A URI for `object` with the PIN from a file.
    fn uri(&self, label: &str, object: &str) -> String {
        format!(
            "pkcs11:token={label};object={object}?module-path={MODULE}&pin-source=file:{}",
            self.path("pin").display()
        )
    }

    fn stella<I, S>(&self, args: I) -> std::process::Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        stella(args, &[("SOFTHSM2_CONF", &self.conf)])
    }
}

fn hsm_sign_verify_interop(alg: Alg) {
    let t = Token::new("ci");
    let uri = t.uri("ci", "release");
    let prefix = t.path("release");
    let out = t.stella(argv![
        "key",
        "generate",
        "--pkcs11",
        &uri,
        "--algorithm",
        alg.name(),
        "--output",
        &prefix
    ]);
    assert_exit_ctx(&out, 0, "key generate --pkcs11");
    assert!(stderr(&out).contains("not extractable"), "{}", stderr(&out));
    assert!(
        !t.path("release.key").exists(),
        "a private key file was written"
    );
    let public = t.path("release.pub");
    let pub_pem = String::from_utf8(read(&public)).unwrap();
    // Nothing secret in the messages.
    assert!(!stderr(&out).contains(PIN));

    // The public key exported from the token is the one written at generation.
    let exported = t.stella(argv!["key", "public", "--key", &uri]);
    assert_exit_ctx(&exported, 0, "key public --key pkcs11:");
    assert_eq!(stdout(&exported), pub_pem);

    // Attest with the token key; we verify, securesystemslib verifies.
    write(t.path("app.bin"), b"artifact bytes\n");
    write_json(t.path("pred.json"), &serde_json::json!({"k": "v"}));
    let env = t.path("env.json");
    let out = t.stella(argv![
        "attest",
        "--key",
        &uri,
        "--predicate-type",
        "stella.ops/sbom@v1",
        "--predicate",
        t.path("pred.json"),
        "--subject",
        t.path("app.bin"),
        "--output",
        &env
    ]);
    assert_exit_ctx(&out, 0, "attest --key pkcs11:");
    let verify = t.stella(argv!["verify", "--key", &public, &env]);
    assert_exit_ctx(&verify, 0, "stella verify of the HSM envelope");
    let ok = python_peer(
        "sslib_verify.py",
        argv![
            &env,
            "--key",
            format!("{}:{}", alg.name(), public.display()),
            "--threshold",
            "1"
        ],
    );
    assert_exit_ctx(&ok, 0, "securesystemslib verifies the HSM envelope");
    // Tampered payload: refused by both.
    let mut doc = read_json(&env);
    doc["payload"] = serde_json::Value::String(crate::support::b64_encode(b"{}"));
    let bad = t.path("bad.json");
    write_json(&bad, &doc);
    assert_exit(&t.stella(argv!["verify", "--key", &public, &bad]), 1);
    let no = python_peer(
        "sslib_verify.py",
        argv![
            &bad,
            "--key",
            format!("{}:{}", alg.name(), public.display()),
            "--threshold",
            "1"
        ],
    );
    assert_exit_ctx(&no, 1, "securesystemslib refuses the tampered envelope");

    // A blob signature verifies with openssl.
    let sig_b64 = t.path("blob.sig.b64");
    let out = t.stella(argv![
        "sign",
        "blob",
        "--key",
        &uri,
        "--output-signature",
        &sig_b64,
        t.path("app.bin")
    ]);
    assert_exit_ctx(&out, 0, "sign blob --key pkcs11:");
    let raw = b64_decode(String::from_utf8(read(&sig_b64)).unwrap().trim());
    let sig = t.path("blob.sig");
    write(&sig, &raw);
    let openssl_verify = |blob: PathBuf| match alg {
        Alg::P256 => openssl(argv![
            "dgst",
            "-sha256",
            "-verify",
            &public,
            "-signature",
            &sig,
            blob
        ]),
        Alg::Ed25519 => openssl(argv![
            "pkeyutl", "-verify", "-pubin", "-inkey", &public, "-rawin", "-in", blob, "-sigfile",
            &sig
        ]),
    };
    assert_exit_ctx(
        &openssl_verify(t.path("app.bin")),
        0,
        "openssl verifies the HSM blob signature",
    );
    write(t.path("other.bin"), b"other bytes\n");
    assert_exit_ctx(
        &openssl_verify(t.path("other.bin")),
        1,
        "openssl refuses the signature over other bytes",
    );
}

#[test]
fn hsm_p256_sign_verify_interop() {
    hsm_sign_verify_interop(Alg::P256);
}

#[test]
fn hsm_ed25519_sign_verify_interop() {
    hsm_sign_verify_interop(Alg::Ed25519);
}

#[test]
fn hsm_wrong_pin_missing_key_and_module() {
    let t = Token::new("errs");
    let prefix = t.path("k");
    let ok = t.stella(argv![
        "key",
        "generate",
        "--pkcs11",
        t.uri("errs", "k"),
        "--output",
        &prefix
    ]);
    assert_exit_ctx(&ok, 0, "key generate --pkcs11");
    // The same label again: refused (exit 2), the key is not replaced.
    let again = t.stella(argv![
        "key",
        "generate",
        "--pkcs11",
        t.uri("errs", "k"),
        "--output",
        t.path("k2")
    ]);
    assert_exit_ctx(&again, 2, "second key under the same label");
    assert!(
        stderr(&again).contains("already holds"),
        "{}",
        stderr(&again)
    );

    write(t.path("blob"), b"x");
    let wrong_pin = format!("pkcs11:token=errs;object=k?module-path={MODULE}&pin-value=0000");
    let out = t.stella(argv!["sign", "blob", "--key", &wrong_pin, t.path("blob")]);
    assert_exit_ctx(&out, 3, "wrong PIN");
    assert!(stderr(&out).contains("PIN"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("0000"),
        "the PIN leaked: {}",
        stderr(&out)
    );

    let no_pin = format!("pkcs11:token=errs;object=k?module-path={MODULE}");
    let out = t.stella(argv!["sign", "blob", "--key", &no_pin, t.path("blob")]);
    assert_exit_ctx(&out, 3, "no PIN");
    assert!(
        stderr(&out).contains("STELLA_PKCS11_PIN"),
        "{}",
        stderr(&out)
    );
    // ... the PIN from the environment instead.
    let out = stella(
        argv!["sign", "blob", "--key", &no_pin, t.path("blob")],
        &[("SOFTHSM2_CONF", &t.conf), ("STELLA_PKCS11_PIN", PIN)],
    );
    assert_exit_ctx(&out, 0, "PIN from STELLA_PKCS11_PIN");

    let out = t.stella(argv![
        "sign",
        "blob",
        "--key",
        t.uri("errs", "absent"),
        t.path("blob")
    ]);
    assert_exit_ctx(&out, 4, "missing key");
    assert!(stderr(&out).contains("object=absent"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no private key"), "{}", stderr(&out));

    let out = t.stella(argv![
        "key",
        "public",
        "--key",
        format!("pkcs11:token=errs;object=k?module-path=/nonexistent/libp11.so")
    ]);
    assert_exit_ctx(&out, 4, "missing module");

    let out = t.stella(argv![
        "sign",
        "blob",
        "--key",
        "pkcs11:token=errs;objekt=k",
        t.path("blob")
    ]);
    assert_exit_ctx(&out, 2, "typo in the URI");
}
