//! `stella sign blob --keyless --bundle` and `stella attest --keyless`: against Fulcio, a TSA
//! and Rekor (the Sigstore mock services with the real services' checks, served by
//! tests/sigstore-mock/serve.mjs), and offline with the dev CA (`--dev-ca`). What we write
//! verifies with `stella verify` and sigstore-js `@sigstore/verify`; timestamps with
//! `openssl ts -verify`; failures exit with the documented codes (10 upstream unavailable,
//! 3 token refused or expired, 1 untrusted certificate, 2 usage).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::{json, Value};
use stella_keyless::testing::{
    openssl_ts_verify, pem, signature_and_timestamp, sigstore_js, MockSigstore,
};

const SUB: &str = "https://ci.stella.test/pipelines/release";

fn stella(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stella"));
    c.args(args).env_remove("SIGSTORE_ID_TOKEN");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn sign_blob_keyless_with_fulcio_tsa_rekor_verifies_with_stella_and_sigstore_js() {
    let m = MockSigstore::start();
    let d = m.dir.path();
    let file = d.join("release.tar");
    std::fs::write(&file, b"release bytes").unwrap();
    let token = d.join("token");
    std::fs::write(&token, m.token(SUB, 600).await).unwrap();
    let bundle = d.join("release.sigstore.json");
    let root = m.trusted_root_path();
    let o = stella(
        &[
            "sign",
            "blob",
            "--keyless",
            "--fulcio-url",
            &m.url,
            "--tsa-url",
            &m.tsa_url(),
            "--rekor-url",
            &m.url,
            "--identity-token",
            &format!("@{}", s(&token)),
            "--trusted-root",
            s(&root),
            "--bundle",
            s(&bundle),
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("Rekor entry"), "{}", text(&o));

    // stella verify blob (Rekor entry required by default) and sigstore-js.
    let verify = |f: &Path| {
        stella(
            &[
                "verify",
                "blob",
                "--bundle",
                s(&bundle),
                "--certificate-identity",
                SUB,
                "--certificate-oidc-issuer",
                &m.issuer,
                "--trusted-root",
                s(&root),
                s(f),
            ],
            &[],
        )
    };
    let o = verify(&file);
    assert_eq!(code(&o), 0, "{}", text(&o));
    sigstore_js(&bundle, &root, SUB, &m.issuer, Some(&file), 1).unwrap();
    let other = d.join("other.tar");
    std::fs::write(&other, b"not the release").unwrap();
    assert_eq!(code(&verify(&other)), 1);

    let b: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let (sig, ts) = signature_and_timestamp(&b);
    openssl_ts_verify(
        d,
        &ts,
        &sig,
        &d.join("tsa-root.pem"),
        &d.join("tsa-signing.pem"),
    )
    .unwrap();
}

#[tokio::test]
async fn attest_keyless_with_an_env_token_verifies_with_stella_and_sigstore_js() {
    let m = MockSigstore::start();
    let d = m.dir.path();
    let file = d.join("app.bin");
    std::fs::write(&file, b"app").unwrap();
    let pred = d.join("pred.json");
    std::fs::write(&pred, br#"{"format":"cyclonedx"}"#).unwrap();
    let out = d.join("att.sigstore.json");
    let root = m.trusted_root_path();
    let tok = m.token(SUB, 600).await;
    let o = stella(
        &[
            "attest",
            "--keyless",
            "--fulcio-url",
            &m.url,
            "--tsa-url",
            &m.tsa_url(),
            "--identity-token",
            "env://CI_OIDC_TOKEN",
            "--trusted-root",
            s(&root),
            "-t",
            "stella.ops/sbom@v1",
            "-p",
            s(&pred),
            "-s",
            s(&file),
            "-o",
            s(&out),
        ],
        &[("CI_OIDC_TOKEN", &tok)],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains(&tok), "the token must never be printed");
    let o = stella(
        &[
            "verify",
            s(&out),
            "--certificate-identity",
            SUB,
            "--certificate-oidc-issuer",
            &m.issuer,
            "--trusted-root",
            s(&root),
            "--tlog-threshold",
            "0",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    sigstore_js(&out, &root, SUB, &m.issuer, None, 0).unwrap();
    // Another identity is refused by both.
    let o = stella(
        &[
            "verify",
            s(&out),
            "--certificate-identity",
            "https://evil.test",
            "--certificate-oidc-issuer",
            &m.issuer,
            "--trusted-root",
            s(&root),
            "--tlog-threshold",
            "0",
        ],
        &[],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(sigstore_js(&out, &root, "https://evil.test", &m.issuer, None, 0).is_err());
}

#[tokio::test]
async fn keyless_failures_exit_with_documented_codes() {
    let m = MockSigstore::start();
    let d = m.dir.path();
    let file = d.join("f");
    std::fs::write(&file, b"f").unwrap();
    let root = m.trusted_root_path();
    let bundle = d.join("b.json");
    let run = |token: &str, extra: &[&str]| {
        let tsa = m.tsa_url();
        let mut args = vec![
            "sign",
            "blob",
            "--keyless",
            "--fulcio-url",
            &m.url,
            "--tsa-url",
            &tsa,
            "--trusted-root",
            s(&root),
            "--upstream-timeout",
            "2",
            "--bundle",
            s(&bundle),
        ];
        args.extend_from_slice(extra);
        args.push(s(&file));
        stella(&args, &[("SIGSTORE_ID_TOKEN", token)])
    };
    let good = m.token(SUB, 600).await;

    // TSA down: retryable, 10.
    m.control(json!({"tsa": "down"})).await;
    let o = run(&good, &[]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        text(&o).contains("timestamp authority is unavailable"),
        "{}",
        text(&o)
    );
    m.control(json!({"tsa": "up"})).await;

    // Fulcio down: 10. Rekor down when asked for: 10.
    m.control(json!({"fulcio": "down"})).await;
    assert_eq!(code(&run(&good, &[])), 10);
    m.control(json!({"fulcio": "up", "rekor": "down"})).await;
    let o = run(&good, &["--rekor-url", &m.url]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(text(&o).contains("Rekor is unavailable"), "{}", text(&o));
    m.control(json!({"rekor": "up"})).await;

    // Expired token: 3. A token Fulcio refuses (wrong audience): 3.
    let expired = m.token(SUB, -60).await;
    let o = run(&expired, &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("expired"), "{}", text(&o));
    let other_aud = m
        .token_with(json!({"sub": SUB, "aud": "not-sigstore"}))
        .await;
    let o = run(&other_aud, &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("HTTP 401"), "{}", text(&o));

    // A certificate for another identity: refused before use, 1.
    m.control(json!({"fulcioSan": "https://someone-else.test"}))
        .await;
    let o = run(&good, &[]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("SAN"), "{}", text(&o));
    m.control(json!({"fulcioSan": null})).await;

    // The mock works again, and nothing was written by the failures above... until now.
    assert!(!bundle.exists());
    assert_eq!(code(&run(&good, &[])), 0);
    assert!(bundle.exists());

    // Usage: no token at all, --bundle missing.
    let o = stella(
        &[
            "sign",
            "blob",
            "--keyless",
            "--bundle",
            s(&bundle),
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = stella(
        &[
            "sign",
            "blob",
            "--keyless",
            "--dev-ca",
            s(&d.join("dev")),
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
}

#[test]
fn dev_ca_signs_offline_and_its_trusted_root_verifies_the_output() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("dev");
    let file = d.path().join("a.txt");
    std::fs::write(&file, b"hello").unwrap();
    let bundle = d.path().join("a.sigstore.json");
    let o = stella(
        &[
            "sign",
            "blob",
            "--keyless",
            "--dev-ca",
            s(&dev),
            "--bundle",
            s(&bundle),
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("DEVELOPMENT CA"), "{}", text(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dev.join("dev-keyless.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let root = dev.join("trusted_root.json");
    let o = stella(
        &[
            "verify",
            "blob",
            "--bundle",
            s(&bundle),
            "--certificate-identity",
            "dev@stella.invalid",
            "--certificate-oidc-issuer",
            "https://oidc.dev.stella.invalid",
            "--trusted-root",
            s(&root),
            "--tlog-threshold",
            "0",
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    sigstore_js(
        &bundle,
        &root,
        "dev@stella.invalid",
        "https://oidc.dev.stella.invalid",
        Some(&file),
        0,
    )
    .unwrap();

    // The second signing reuses the saved CA: the first trusted root still verifies it.
    let bundle2 = d.path().join("b.sigstore.json");
    let o = stella(
        &[
            "sign",
            "blob",
            "--keyless",
            "--dev-ca",
            s(&dev),
            "--bundle",
            s(&bundle2),
            s(&file),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    sigstore_js(
        &bundle2,
        &root,
        "dev@stella.invalid",
        "https://oidc.dev.stella.invalid",
        Some(&file),
        0,
    )
    .unwrap();

    // openssl ts -verify with the dev TSA chain of the trusted root.
    let tr: Value = serde_json::from_slice(&std::fs::read(&root).unwrap()).unwrap();
    let chain = tr["timestampAuthorities"][0]["certChain"]["certificates"]
        .as_array()
        .unwrap();
    let der = |i: usize| {
        base64::engine::general_purpose::STANDARD
            .decode(chain[i]["rawBytes"].as_str().unwrap())
            .unwrap()
    };
    std::fs::write(d.path().join("tsa.pem"), pem(&der(0))).unwrap();
    std::fs::write(d.path().join("root.pem"), pem(&der(1))).unwrap();
    let b: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let (sig, ts) = signature_and_timestamp(&b);
    openssl_ts_verify(
        d.path(),
        &ts,
        &sig,
        &d.path().join("root.pem"),
        &d.path().join("tsa.pem"),
    )
    .unwrap();
}
