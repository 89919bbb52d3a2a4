//! `stella forensic attest show`: what stella emits (envelopes and v0.3 bundles, with the
//! verdict by key) and real Sigstore bundles (with the verdict by identity), text and JSON,
//! and malformed input refused with exit 2.

#![allow(clippy::unwrap_used, clippy::panic)]

use crate::support::*;

fn data(p: &str) -> String {
    root()
        .join("crates/sigstore/tests/data")
        .join(p)
        .display()
        .to_string()
}

fn st(args: Vec<std::ffi::OsString>, dir: &std::path::Path) -> std::process::Output {
    stella(args, &[("STELLA_TRUST_ROOT_DIR", dir.to_str().unwrap())])
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

/// Sign an SBOM statement over `app.bin` with `key`; `bundle` picks the v0.3 bundle form.
fn attest(dir: &std::path::Path, key: &std::path::Path, out: &str, bundle: bool) -> String {
    write(
        dir.join("sbom.json"),
        r#"{"spdxVersion":"SPDX-2.3","name":"app"}"#,
    );
    write(dir.join("app.bin"), b"application bytes");
    let o = dir.join(out);
    let mut args = argv![
        "attest",
        "--key",
        key,
        "-t",
        "stella.ops/sbom@v1",
        "-p",
        dir.join("sbom.json"),
        "-s",
        dir.join("app.bin"),
        "-o",
        &o
    ];
    if bundle {
        args.push("--bundle".into());
    }
    assert_exit(&stella(args, &[]), 0);
    o.display().to_string()
}

#[test]
fn forensic_show_stella_envelope_with_and_without_key() {
    let tmp = tempdir();
    let (key, public) = openssl_keypair(tmp.path(), "a", Alg::P256);
    let (_, other) = openssl_keypair(tmp.path(), "b", Alg::Ed25519);
    let env = attest(tmp.path(), &key, "app.dsse.json", false);
    let app_digest = sha256_file(tmp.path().join("app.bin"));
    let keyid = keyid_of_pub(&public, tmp.path());

    // No trust material: shown, exit 0, verdict "not checked".
    let out = st(argv!["forensic", "attest", "show", &env], tmp.path());
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("Predicate type:  stella.ops/sbom@v1"),
        "{text}"
    );
    assert!(text.contains(&format!("sha256:{app_digest}")), "{text}");
    assert!(text.contains("\"spdxVersion\": \"SPDX-2.3\""), "{text}");
    assert!(text.contains(&keyid), "{text}");
    assert!(text.contains("not checked"), "{text}");

    // JSON, verified by the right key.
    let out = st(
        argv!["forensic", "attest", "show", "--key", &public, "--output", "json", &env],
        tmp.path(),
    );
    assert_exit(&out, 0);
    let v = json_out(&out);
    assert_eq!(v["kind"], "dsse-envelope");
    assert_eq!(v["statement"]["type"], "https://in-toto.io/Statement/v1");
    assert_eq!(v["statement"]["predicateType"], "stella.ops/sbom@v1");
    assert_eq!(
        v["statement"]["subjects"][0]["digest"]["sha256"],
        app_digest
    );
    assert_eq!(v["statement"]["predicate"]["name"], "app");
    assert_eq!(v["signatures"][0]["keyid"], keyid);
    assert_eq!(v["verification"]["verified"], true);
    assert_eq!(v["verification"]["signers"][0]["keyid"], keyid);

    // The wrong key: the report is still printed, the verdict says failed, exit 1.
    let out = st(
        argv!["forensic", "attest", "show", "--key", &other, "--output", "json", &env],
        tmp.path(),
    );
    assert_exit(&out, 1);
    let v = json_out(&out);
    assert_eq!(v["verification"]["verified"], false);
    assert_eq!(v["statement"]["predicateType"], "stella.ops/sbom@v1");

    // A tampered payload (valid envelope, signature no longer holds): exit 1 in text too.
    let mut e = read_json(&env);
    let stmt = String::from_utf8(b64_decode(e["payload"].as_str().unwrap()))
        .unwrap()
        .replace(&app_digest, &"0".repeat(64));
    e["payload"] = b64_encode(stmt.as_bytes()).into();
    let tampered = tmp.path().join("tampered.json");
    write_json(&tampered, &e);
    let out = st(
        argv!["forensic", "attest", "show", "--key", &public, &tampered],
        tmp.path(),
    );
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("Verification:    FAILED"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn forensic_show_stella_bundle() {
    let tmp = tempdir();
    let (key, public) = openssl_keypair(tmp.path(), "a", Alg::Ed25519);
    let b = attest(tmp.path(), &key, "app.bundle.json", true);
    let out = st(
        argv!["forensic", "attest", "show", "--key", &public, "--output", "json", &b],
        tmp.path(),
    );
    assert_exit(&out, 0);
    let v = json_out(&out);
    assert_eq!(v["kind"], "sigstore-bundle");
    assert_eq!(v["bundleVersion"], "0.3");
    assert_eq!(v["statement"]["predicateType"], "stella.ops/sbom@v1");
    assert_eq!(v["verification"]["verified"], true, "{v}");
}

#[test]
fn forensic_show_real_sigstore_bundles() {
    let tmp = tempdir();
    // Certificate-signed v0.3 blob bundle (staging): identity, issuer, log entry; verified
    // by identity against the staging root.
    let bundle = data("staging/bundle_v3_alt.txt.sigstore");
    let base = argv![
        "forensic",
        "attest",
        "show",
        "--staging",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
        "--output",
        "json",
        &bundle
    ];
    let mut args = base.clone();
    args.extend(argv!["--certificate-identity", "william@yossarian.net"]);
    let out = st(args, tmp.path());
    assert_exit(&out, 0);
    let v = json_out(&out);
    let sig = &v["signatures"][0];
    assert_eq!(
        sig["certificate"]["subjectAlternativeNames"][0],
        "william@yossarian.net"
    );
    assert_eq!(
        sig["certificate"]["oidcIssuer"],
        "https://github.com/login/oauth"
    );
    assert_eq!(sig["tlogEntries"][0]["logIndex"], 25915997);
    assert_eq!(
        sig["tlogEntries"][0]["integratedTime"],
        "2024-04-02T19:20:16.000Z"
    );
    assert_eq!(v["verification"]["verified"], true);
    // Another identity: exit 1, the failed check named.
    let mut args = base;
    args.extend(argv!["--certificate-identity", "someone@example.com"]);
    let out = st(args, tmp.path());
    assert_exit(&out, 1);
    assert_eq!(json_out(&out)["verification"]["failed"], "identity");

    // npm's key-signed v0.1 DSSE bundle: statement v0.1 shown with a warning, key verdict.
    let out = st(
        argv![
            "forensic",
            "attest",
            "show",
            "--key",
            data("public-good/npm-registry.pub"),
            "--output",
            "json",
            data("public-good/bundle-publish.json")
        ],
        tmp.path(),
    );
    assert_exit(&out, 0);
    let v = json_out(&out);
    assert_eq!(v["bundleVersion"], "0.1");
    assert_eq!(
        v["statement"]["subjects"][0]["name"],
        "pkg:npm/sigstore@1.3.0"
    );
    assert_eq!(v["signatures"][0]["tlogEntries"][0]["logIndex"], 18300940);
    assert_eq!(v["verification"]["verified"], true);
    assert!(!v["warnings"].as_array().unwrap().is_empty());

    // sigstore-go's bundle with an RFC 3161 timestamp: its genTime and TSA shown.
    let out = st(
        argv![
            "forensic",
            "attest",
            "show",
            data("public-good/bundle-with-timestamp.json")
        ],
        tmp.path(),
    );
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("timestamp [0]: 2023-05-08T21:42:05.000Z"),
        "{text}"
    );
    assert!(text.contains("brian@dehamer.com"), "{text}");
}

#[test]
fn forensic_show_refuses_malformed_input() {
    let tmp = tempdir();
    let cases: [(&str, &str); 5] = [
        ("not-json", "this is not json"),
        ("other-json", r#"{"a": 1}"#),
        (
            "bad-base64",
            r#"{"payloadType":"application/vnd.in-toto+json","payload":"%%%","signatures":[{"keyid":"","sig":"AA=="}]}"#,
        ),
        // An in-toto envelope whose payload is not JSON.
        (
            "payload-not-json",
            r#"{"payloadType":"application/vnd.in-toto+json","payload":"bm90IGpzb24=","signatures":[{"keyid":"","sig":"AA=="}]}"#,
        ),
        (
            "bad-bundle",
            r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{}}"#,
        ),
    ];
    for (name, body) in cases {
        let p = tmp.path().join(name);
        write(&p, body);
        let out = st(argv!["forensic", "attest", "show", &p], tmp.path());
        assert_exit_ctx(&out, 2, name);
        assert!(
            stderr(&out).contains("is not a DSSE envelope or Sigstore bundle"),
            "{name}: {}",
            stderr(&out)
        );
    }
    // Control characters from the file never reach the terminal raw.
    let payload = b64_encode(
        br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"x\u001b[31m","subject":[],"predicate":{}}"#,
    );
    let p = tmp.path().join("escape.json");
    write(
        &p,
        format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{payload}","signatures":[{{"keyid":"k","sig":"AA=="}}]}}"#
        ),
    );
    let out = st(argv!["forensic", "attest", "show", &p], tmp.path());
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains('\u{1b}'), "{}", stdout(&out));
    assert!(stdout(&out).contains("x\\u{1b}[31m"), "{}", stdout(&out));
}
