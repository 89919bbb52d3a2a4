//! End-to-end CLI behaviour: the happy paths, and every hostile input of issue #2 with its
//! exact exit code and message. Each case builds its inputs in a fresh temp folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::write(
            env.p("sbom.json"),
            r#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#,
        )
        .expect("write");
        std::fs::write(env.p("app.bin"), b"artefact bytes\n").expect("write");
        env
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_pw(args, "pw")
    }

    fn run_pw(&self, args: &[&str], password: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stella"))
            .args(args)
            .current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", password)
            .output()
            .expect("run stella")
    }

    fn keygen(&self, alg: &str, name: &str) {
        let out = self.run(&[
            "key",
            "generate",
            "--algorithm",
            alg,
            "--output",
            &self.s(name),
        ]);
        expect(&out, 0, "");
    }

    fn attest(&self, keys: &[&str], out: &str, extra: &[&str]) {
        let mut args = vec!["attest"];
        let keyfiles: Vec<String> = keys.iter().map(|k| self.s(&format!("{k}.key"))).collect();
        for k in &keyfiles {
            args.extend(["--key", k.as_str()]);
        }
        let (sbom, app, o) = (self.s("sbom.json"), self.s("app.bin"), self.s(out));
        args.extend([
            "-t",
            "stella.ops/sbom@v1",
            "-p",
            &sbom,
            "-s",
            &app,
            "-o",
            &o,
        ]);
        args.extend(extra);
        expect(&self.run(&args), 0, "");
    }

    fn verify(&self, keys: &[&str], file: &str, extra: &[&str]) -> Output {
        let mut args = vec!["verify".to_string()];
        for k in keys {
            args.push("--key".into());
            args.push(self.s(&format!("{k}.pub")));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.s(file));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }

    fn json(&self, file: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.p(file)).expect("read")).expect("json")
    }

    fn write_json(&self, file: &str, v: &Value) {
        std::fs::write(self.p(file), serde_json::to_vec(v).expect("json")).expect("write");
    }
}

/// Assert the exit code, and that stderr+stdout mention `needle`.
fn expect(out: &Output, code: i32, needle: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "exit code; output:\n{text}");
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

#[test]
fn attest_and_verify_both_algorithms_envelope_and_bundle() {
    let e = Env::new();
    for alg in ["p256", "ed25519"] {
        e.keygen(alg, alg);
        e.attest(&[alg], &format!("{alg}.dsse"), &[]);
        e.attest(&[alg], &format!("{alg}.bundle"), &["--bundle"]);
        expect(
            &e.verify(&[alg], &format!("{alg}.dsse"), &[]),
            0,
            "Verified OK",
        );
        expect(
            &e.verify(&[alg], &format!("{alg}.bundle"), &[]),
            0,
            "predicateType: stella.ops/sbom@v1",
        );
        let b = e.json(&format!("{alg}.bundle"));
        assert_eq!(
            b["mediaType"],
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
        let env = e.json(&format!("{alg}.dsse"));
        assert_eq!(
            b["verificationMaterial"]["publicKey"]["hint"],
            env["signatures"][0]["keyid"]
        );
        // Output base64 is standard and padded.
        let payload = env["payload"].as_str().unwrap();
        assert_eq!(payload.len() % 4, 0);
        assert!(!payload.contains('-') && !payload.contains('_'));
    }
}

#[test]
fn json_output_prints_the_verified_statement() {
    let e = Env::new();
    e.keygen("p256", "k");
    e.attest(&["k"], "a.dsse", &[]);
    let out = e.verify(&["k"], "a.dsse", &["--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["statement"]["predicateType"], "stella.ops/sbom@v1");
    let digest = v["statement"]["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap();
    let want = stella_keys::hex(&stella_keys::sha256(b"artefact bytes\n"));
    assert_eq!(digest, want);
    assert_eq!(v["statement"]["subject"][0]["name"], "app.bin");
}

#[test]
fn multi_signature_threshold_counts_distinct_keys() {
    let e = Env::new();
    for k in ["a", "b", "c"] {
        e.keygen(if k == "b" { "ed25519" } else { "p256" }, k);
    }
    e.attest(&["a", "b"], "ab.dsse", &[]);
    expect(
        &e.verify(&["a", "b", "c"], "ab.dsse", &["--threshold", "2"]),
        0,
        "2 of 2",
    );
    expect(
        &e.verify(&["a", "b", "c"], "ab.dsse", &["--threshold", "3"]),
        1,
        "2 of the required 3 distinct trusted keys signed",
    );
    // The same key signing twice counts once: duplicate a's signature under b's keyid.
    let mut env = e.json("ab.dsse");
    let sig_a = env["signatures"][0].clone();
    let mut dup = sig_a.clone();
    dup["keyid"] = env["signatures"][1]["keyid"].clone();
    env["signatures"] = Value::Array(vec![sig_a, dup]);
    e.write_json("aa.dsse", &env);
    expect(
        &e.verify(&["a", "b", "c"], "aa.dsse", &["--threshold", "2"]),
        1,
        "1 of the required 2",
    );
    // A threshold above the number of trusted keys can never be met: a usage error.
    expect(
        &e.verify(&["a"], "ab.dsse", &["--threshold", "2"]),
        1,
        "can never be met",
    );
    // The same key given twice to attest is refused.
    let out = e.run(&[
        "attest",
        "--key",
        &e.s("a.key"),
        "--key",
        &e.s("a.key"),
        "-t",
        "stella.ops/sbom@v1",
        "-p",
        &e.s("sbom.json"),
        "-s",
        &e.s("app.bin"),
    ]);
    expect(&out, 2, "more than once");
}

#[test]
fn tampering_is_detected() {
    let e = Env::new();
    e.keygen("p256", "k");
    e.keygen("p256", "other");
    e.attest(&["k"], "a.dsse", &[]);
    let env = e.json("a.dsse");

    // Payload changed (still a valid statement).
    let mut st: Value =
        serde_json::from_slice(&B64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    st["predicate"]["specVersion"] = "1.6".into();
    let mut t = env.clone();
    t["payload"] = B64.encode(serde_json::to_vec(&st).unwrap()).into();
    e.write_json("t1.dsse", &t);
    expect(
        &e.verify(&["k"], "t1.dsse", &[]),
        1,
        "no signature verifies",
    );

    // payloadType changed.
    let mut t = env.clone();
    t["payloadType"] = "application/json".into();
    e.write_json("t2.dsse", &t);
    expect(
        &e.verify(&["k"], "t2.dsse", &[]),
        1,
        "no signature verifies",
    );

    // Signature bytes changed.
    let mut sig = B64
        .decode(env["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let mut t = env.clone();
    t["signatures"][0]["sig"] = B64.encode(&sig).into();
    e.write_json("t3.dsse", &t);
    expect(
        &e.verify(&["k"], "t3.dsse", &[]),
        1,
        "no signature verifies",
    );

    // Wrong key.
    expect(
        &e.verify(&["other"], "a.dsse", &[]),
        1,
        "no signature verifies",
    );

    // No signatures at all.
    let mut t = env.clone();
    t["signatures"] = Value::Array(vec![]);
    e.write_json("t4.dsse", &t);
    expect(&e.verify(&["k"], "t4.dsse", &[]), 1, "no signatures");

    // A bundle whose envelope was edited.
    e.attest(&["k"], "b.json", &["--bundle"]);
    let mut b = e.json("b.json");
    b["dsseEnvelope"]["payloadType"] = "text/plain".into();
    e.write_json("t5.json", &b);
    expect(
        &e.verify(&["k"], "t5.json", &[]),
        1,
        "no signature verifies",
    );
}

#[test]
fn malformed_documents_are_specific_errors() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    e.attest(&["k"], "a.dsse", &[]);
    let good = std::fs::read_to_string(e.p("a.dsse")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_string(),
            "not a valid envelope",
        ),
        (
            "garbage-b64",
            good.replacen("\"payload\":\"", "\"payload\":\"%%%", 1),
            "invalid base64",
        ),
        (
            "garbage-sig",
            good.replacen("\"sig\":\"", "\"sig\":\"*", 1),
            "field `signatures[].sig`",
        ),
        (
            "dup-key",
            good.replacen(
                "{\"payloadType\":",
                "{\"payloadType\":\"x\",\"payloadType\":",
                1,
            ),
            "duplicate",
        ),
        ("not-json", "hello".to_string(), "not a valid envelope"),
        ("array", "[]".to_string(), "not a JSON object"),
        (
            "missing",
            r#"{"payloadType":"t","signatures":[]}"#.to_string(),
            "missing field `payload`",
        ),
    ];
    for (name, text, needle) in cases {
        std::fs::write(e.p(name), text).unwrap();
        // Not an envelope at all: an input error (exit 2), not a failed verification.
        expect(&e.verify(&["k"], name, &[]), 2, needle);
    }
    // A valid signature over something that is not an in-toto statement.
    let out = e.run(&["sign", "blob", "--key", &e.s("k.key"), &e.s("app.bin")]);
    expect(&out, 0, "");
    // Not found.
    expect(&e.verify(&["k"], "nope.dsse", &[]), 4, "no such file");
    // A bundle that is not a bundle we can use.
    let b = serde_json::json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "x"}}});
    e.write_json("nobundle.json", &b);
    expect(&e.verify(&["k"], "nobundle.json", &[]), 2, "dsseEnvelope");
}

#[test]
fn keyring_purposes_revocation_and_validity_windows() {
    let e = Env::new();
    e.keygen("p256", "k");
    e.attest(&["k"], "a.dsse", &[]);
    let pem = std::fs::read_to_string(e.p("k.pub")).unwrap();
    let ring = |name: &str, extra: &str| {
        let dir = e.p(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k.pub"), &pem).unwrap();
        std::fs::write(
            dir.join("keyring.toml"),
            format!("[[keys]]\nid = \"signer-1\"\npublic_key = \"k.pub\"\n{extra}\n"),
        )
        .unwrap();
        dir.display().to_string()
    };
    let verify = |dir: &str, purpose: &str| {
        e.run(&[
            "verify",
            "--keyring",
            dir,
            "--purpose",
            purpose,
            &e.s("a.dsse"),
        ])
    };
    let ok = ring("ok", "purposes = [\"attestation\"]");
    expect(&verify(&ok, "attestation"), 0, "signer-1");
    expect(
        &verify(&ok, "mirror-bundle"),
        1,
        "not trusted for purpose `mirror-bundle`",
    );
    let revoked = ring("revoked", "purposes = [\"attestation\"]\nrevoked = true");
    expect(&verify(&revoked, "attestation"), 1, "the key is revoked");
    let expired = ring(
        "expired",
        "purposes = [\"attestation\"]\nnot_after = 2020-01-01T00:00:00Z",
    );
    expect(
        &verify(&expired, "attestation"),
        1,
        "the key expired at 2020-01-01T00:00:00Z",
    );
    let future = ring(
        "future",
        "purposes = [\"attestation\"]\nnot_before = 2999-01-01T00:00:00Z",
    );
    expect(&verify(&future, "attestation"), 1, "not valid before 2999");
    let bad = ring("bad", "purposes = [\"everything\"]");
    expect(&verify(&bad, "attestation"), 2, "unknown purpose");
    expect(&verify(&ok, "sign-all"), 2, "is not a key purpose");
}

#[test]
fn passwords_and_key_files() {
    let e = Env::new();
    e.keygen("p256", "k");
    // Wrong password: exit 3, and the password never appears in the output.
    let out = e.run_pw(&["key", "public", "--key", &e.s("k.key")], "hunter2-wrong");
    expect(&out, 3, "wrong password");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    // Right password: the public key equals k.pub.
    let out = e.run(&["key", "public", "--key", &e.s("k.key")]);
    expect(&out, 0, "BEGIN PUBLIC KEY");
    assert_eq!(out.stdout, std::fs::read(e.p("k.pub")).unwrap());
    // Empty passwords are allowed.
    let out = e.run_pw(
        &["key", "generate", "-a", "ed25519", "-o", &e.s("empty")],
        "",
    );
    expect(&out, 0, "");
    expect(
        &e.run_pw(&["key", "public", "--key", &e.s("empty.key")], ""),
        0,
        "PUBLIC KEY",
    );
    // Never overwrite a key without --force.
    expect(
        &e.run(&["key", "generate", "-o", &e.s("k")]),
        2,
        "already exists",
    );
    // The key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(e.p("k.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(e.p("k.key")).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    }
    // A public key cannot sign.
    let out = e.run(&["sign", "blob", "--key", &e.s("k.pub"), &e.s("app.bin")]);
    expect(&out, 2, "signing needs the private key");
    // Unknown algorithm and unknown schemes.
    expect(
        &e.run(&["key", "generate", "-a", "rsa", "-o", &e.s("r")]),
        2,
        "supported: ed25519, p256",
    );
    expect(
        &e.run(&["key", "public", "--key", "gcpkms://x"]),
        2,
        "unknown key reference scheme",
    );
    expect(
        &e.run(&["key", "public", "--key", "pkcs11:token=x"]),
        2,
        "no PKCS#11 module",
    );
    // env://VAR with the key file in base64.
    let key_b64 = B64.encode(std::fs::read(e.p("k.key")).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_stella"))
        .args(["key", "public", "--key", "env://STELLA_TEST_KEY"])
        .env("STELLA_TEST_KEY", key_b64)
        .env("COSIGN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(out.stdout, std::fs::read(e.p("k.pub")).unwrap());
}

#[test]
fn the_dev_key_needs_the_dev_flag() {
    let e = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dev_key = root
        .join("tools/cosign/cosign.dev.key")
        .display()
        .to_string();
    let dev_pub = root
        .join("tools/cosign/cosign.dev.pub")
        .display()
        .to_string();
    let sign = |flag: bool| {
        let mut args = vec![];
        if flag {
            args.push("--allow-dev-key");
        }
        let (sbom, app, out) = (e.s("sbom.json"), e.s("app.bin"), e.s("dev.dsse"));
        args.extend([
            "attest",
            "--key",
            &dev_key,
            "-t",
            "stella.ops/sbom@v1",
            "-p",
            &sbom,
            "-s",
            &app,
            "-o",
            &out,
        ]);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        e.run_pw(&args, "stellaops-dev")
    };
    expect(&sign(false), 2, "published development key");
    let out = sign(true);
    expect(&out, 0, "WARNING: using the PUBLISHED DEVELOPMENT KEY");
    // Verifying against the dev key needs the flag too.
    let out = e.run(&["verify", "--key", &dev_pub, &e.s("dev.dsse")]);
    expect(&out, 2, "published development key");
    let out = e.run(&[
        "--allow-dev-key",
        "verify",
        "--key",
        &dev_pub,
        &e.s("dev.dsse"),
    ]);
    expect(&out, 0, "WARNING");
}

#[test]
fn predicate_catalogue_and_subjects() {
    let e = Env::new();
    e.keygen("p256", "k");
    let base = |t: &str, subject: &str| {
        e.run(&[
            "attest",
            "--key",
            &e.s("k.key"),
            "-t",
            t,
            "-p",
            &e.s("sbom.json"),
            "-s",
            subject,
            "-o",
            &e.s("x.dsse"),
        ])
    };
    expect(
        &base("https://example.com/custom@v1", &e.s("app.bin")),
        2,
        "not in the catalogue",
    );
    let hex = "a".repeat(64);
    expect(
        &base(
            "https://slsa.dev/provenance/v1",
            &format!("img@sha256:{hex}"),
        ),
        0,
        "",
    );
    expect(
        &base("stella.ops/sbom@v1", "img@sha256:ABC"),
        2,
        "NAME@sha256:HEX",
    );
    expect(
        &base("stella.ops/sbom@v1", "no-such-file"),
        4,
        "no such file",
    );
    // Predicate must be a JSON object, with no duplicate keys.
    std::fs::write(e.p("arr.json"), "[1]").unwrap();
    std::fs::write(e.p("dup.json"), r#"{"a":1,"a":2}"#).unwrap();
    for (p, needle) in [
        ("arr.json", "must be a JSON object"),
        ("dup.json", "duplicate"),
    ] {
        let out = e.run(&[
            "attest",
            "--key",
            &e.s("k.key"),
            "-t",
            "stella.ops/sbom@v1",
            "-p",
            &e.s(p),
            "-s",
            &e.s("app.bin"),
        ]);
        expect(&out, 2, needle);
    }
    // --bundle with two keys is refused.
    e.keygen("p256", "k2");
    let out = e.run(&[
        "attest",
        "--key",
        &e.s("k.key"),
        "--key",
        &e.s("k2.key"),
        "--bundle",
        "-t",
        "stella.ops/sbom@v1",
        "-p",
        &e.s("sbom.json"),
        "-s",
        &e.s("app.bin"),
    ]);
    expect(&out, 2, "exactly one --key");
}

#[test]
fn blob_signatures_round_trip_and_tamper() {
    let e = Env::new();
    for alg in ["p256", "ed25519"] {
        e.keygen(alg, alg);
        let sig = e.s(&format!("{alg}.sig"));
        expect(
            &e.run(&[
                "sign",
                "blob",
                "--key",
                &e.s(&format!("{alg}.key")),
                "--output-signature",
                &sig,
                &e.s("app.bin"),
            ]),
            0,
            "",
        );
        let pubk = e.s(&format!("{alg}.pub"));
        expect(
            &e.run(&[
                "verify",
                "blob",
                "--key",
                &pubk,
                "--signature",
                &sig,
                &e.s("app.bin"),
            ]),
            0,
            "Verified OK",
        );
        std::fs::write(e.p("app2.bin"), b"artefact bytes!\n").unwrap();
        expect(
            &e.run(&[
                "verify",
                "blob",
                "--key",
                &pubk,
                "--signature",
                &sig,
                &e.s("app2.bin"),
            ]),
            1,
            "does not verify",
        );
        std::fs::write(e.p("bad.sig"), "@@@").unwrap();
        expect(
            &e.run(&[
                "verify",
                "blob",
                "--key",
                &pubk,
                "--signature",
                &e.s("bad.sig"),
                &e.s("app.bin"),
            ]),
            // Not a signature file at all: an input error, like a malformed envelope.
            2,
            "invalid base64",
        );
    }
}

#[test]
fn promotion_attest_and_verify() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    let hex = "b".repeat(64);
    let subject = format!("registry.local/app@sha256:{hex}");
    let out = e.run(&[
        "promotion",
        "attest",
        "--key",
        &e.s("k.key"),
        "--subject",
        &subject,
        "--from",
        "staging",
        "--to",
        "prod",
        "--material",
        &format!("sbom={}", e.s("sbom.json")),
        "--actor",
        "alice",
        "--rekor-uuid",
        "24296fb2",
        "--rekor-log-index",
        "7",
        "--output",
        &e.s("promo.dsse"),
    ]);
    expect(&out, 0, "stella.ops/promotion@v1");
    let out = e.run(&[
        "promotion",
        "verify",
        "--key",
        &e.s("k.pub"),
        "--subject",
        &subject,
        "--output",
        "json",
        &e.s("promo.dsse"),
    ]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["from"], "staging");
    assert_eq!(v["predicate"]["promotion"]["actor"], "alice");
    assert_eq!(v["predicate"]["rekor"]["logIndex"], 7);
    assert_eq!(v["predicate"]["materials"][0]["role"], "sbom");
    assert_eq!(
        v["predicate"]["subject"][0]["digest"]["sha256"],
        hex.as_str()
    );
    // Another subject was not promoted.
    let other = format!("registry.local/app@sha256:{}", "c".repeat(64));
    expect(
        &e.run(&[
            "promotion",
            "verify",
            "--key",
            &e.s("k.pub"),
            "--subject",
            &other,
            &e.s("promo.dsse"),
        ]),
        1,
        "was not promoted",
    );
    // An SBOM attestation is not a promotion.
    e.attest(&["k"], "sbom.dsse", &[]);
    expect(
        &e.run(&[
            "promotion",
            "verify",
            "--key",
            &e.s("k.pub"),
            &e.s("sbom.dsse"),
        ]),
        1,
        "expected stella.ops/promotion@v1",
    );
    expect(
        &e.run(&[
            "promotion",
            "attest",
            "--key",
            &e.s("k.key"),
            "--subject",
            &subject,
            "--from",
            "a",
            "--to",
            "a",
        ]),
        2,
        "same environment",
    );
}

/// Regression: `-o /dev/null` once renamed a temp file over the device node, turning
/// `/dev/null` into a regular file for the whole machine. Outputs that are not regular files
/// are written straight into.
#[test]
fn output_to_a_device_writes_into_it_and_keeps_the_device() {
    use std::os::unix::fs::FileTypeExt as _;
    let e = Env::new();
    e.keygen("p256", "k");
    let out = e.run(&[
        "attest",
        "--key",
        &e.s("k.key"),
        "-t",
        "stella.ops/sbom@v1",
        "-p",
        &e.s("sbom.json"),
        "-s",
        &e.s("app.bin"),
        "-o",
        "/dev/null",
    ]);
    expect(&out, 0, "");
    let out = e.run(&[
        "sign",
        "blob",
        "--key",
        &e.s("k.key"),
        "--output-signature",
        "/dev/null",
        &e.s("app.bin"),
    ]);
    expect(&out, 0, "");
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "/dev/null must stay a character device"
    );
}

/// The same P-256 public key rewritten by openssl with a compressed point.
fn compressed_copy(e: &Env, from: &str, to: &str) {
    let out = Command::new("openssl")
        .args([
            "ec",
            "-pubin",
            "-in",
            &e.s(from),
            "-conv_form",
            "compressed",
            "-pubout",
            "-out",
            &e.s(to),
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::read(e.p(from)).expect("read"),
        std::fs::read(e.p(to)).expect("read")
    );
}

// Regression (issue #8 item 1): `--key a.pub --key a-compressed.pub --threshold 2` passed
// with one signature, and so did a keyring folder holding both files.
#[test]
fn reencoded_key_never_counts_twice() {
    let e = Env::new();
    e.keygen("p256", "a");
    compressed_copy(&e, "a.pub", "a2.pub");
    e.attest(&["a"], "a.dsse", &[]);
    // Alone, the compressed copy is the same trusted key.
    expect(&e.verify(&["a2"], "a.dsse", &[]), 0, "Verified OK");
    let out = e.verify(&["a", "a2"], "a.dsse", &["--threshold", "2"]);
    assert_ne!(out.status.code(), Some(0));
    expect(&out, out.status.code().unwrap_or(-1), "appears twice");
    std::fs::create_dir(e.p("ring")).unwrap();
    std::fs::copy(e.p("a.pub"), e.p("ring/a.pub")).unwrap();
    std::fs::copy(e.p("a2.pub"), e.p("ring/a2.pub")).unwrap();
    let ring = e.s("ring");
    let file = e.s("a.dsse");
    let out = e.run(&[
        "verify",
        "--keyring",
        &ring,
        "--purpose",
        "attestation",
        "--threshold",
        "2",
        &file,
    ]);
    expect(&out, 1, "larger than the 1 trusted key");
    expect(
        &e.run(&[
            "verify",
            "--keyring",
            &ring,
            "--purpose",
            "attestation",
            &file,
        ]),
        0,
        "Verified OK",
    );
}

// ------------------------------------------------------------------------------------------
// Issue #9: exit codes and JSON output a newcomer trips over.
// ------------------------------------------------------------------------------------------

#[test]
fn json_output_reports_a_failed_verification_with_what_failed() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    e.keygen("ed25519", "other");
    e.attest(&["k"], "a.dsse", &[]);
    let out = e.verify(&["other"], "a.dsse", &["--output", "json"]);
    expect(&out, 1, "no signature verifies");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["verified"], false);
    assert_eq!(v["exitCode"], 1);
    assert_eq!(v["outcome"], "verification-failed");
    assert_eq!(v["threshold"], 1);
    assert!(v["file"].as_str().unwrap().ends_with("a.dsse"));
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("no signature verifies"));
    // An input error is reported the same way, with its own code.
    std::fs::write(e.p("junk.json"), "{nope").unwrap();
    let out = e.verify(&["k"], "junk.json", &["--output", "json"]);
    expect(&out, 2, "not a valid envelope");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["verified"], false);
    assert_eq!(v["outcome"], "usage-or-input-error");
    // Success still prints the verified report.
    let out = e.verify(&["k"], "a.dsse", &["--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["verified"], true);
}

#[test]
fn an_unknown_purpose_is_a_usage_error_not_an_invalid_keyring() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    e.attest(&["k"], "a.dsse", &[]);
    for trust in [
        vec!["--key".to_string(), e.s("k.pub")],
        vec!["--keyring".to_string(), e.s("k.pub")],
    ] {
        let mut args = vec!["verify".to_string()];
        args.extend(trust);
        args.extend(["--purpose".into(), "bogus".into(), e.s("a.dsse")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = e.run(&args);
        expect(&out, 2, "--purpose \"bogus\" is not a key purpose");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("keyring"), "{err}");
    }
}

#[test]
fn a_missing_key_file_is_named_once() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    e.attest(&["k"], "a.dsse", &[]);
    let out = e.run(&["verify", "--key", "nope.pub", &e.s("a.dsse")]);
    expect(&out, 4, "nope.pub");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let out = e.run(&[
        "attest",
        "--key",
        "nope.key",
        "-t",
        "stella.ops/sbom@v1",
        "-p",
        "sbom.json",
        "-s",
        "app.bin",
        "-o",
        "x.dsse",
    ]);
    expect(&out, 4, "nope.key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn service_config_with_a_missing_signing_key_exits_not_found_like_a_missing_file() {
    let e = Env::new();
    // The config file itself missing.
    let out = e.run(&["signer", "serve", "--config", "nope.toml"]);
    expect(&out, 4, "nope.toml");
    // A config whose signing key file is missing: not found too, naming the key.
    std::fs::write(
        e.p("stella.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[authority]\nissuer = \"https://a.test\"\n\
         jwks_file = \"jwks.json\"\n[licensing]\nintrospect_url = \"https://l.test/i\"\n\
         [signing]\nkeys = [\"keys/absent.key\"]\ndefault_keys_for_unlisted_tenants = true\n[audit]\npath = \"data/audit.db\"\n",
    )
    .unwrap();
    std::fs::write(e.p("jwks.json"), r#"{"keys":[]}"#).unwrap();
    let out = e.run(&["signer", "serve", "--config", &e.s("stella.toml")]);
    expect(&out, 4, "absent.key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // The same for a missing TLS file or pinned JWKS, named by their configuration keys.
    let mut cfg = std::fs::read_to_string(e.p("stella.toml")).unwrap();
    cfg = cfg.replace(
        "[authority]",
        "[server.tls]\ncert = \"tls/none.pem\"\nkey = \"tls/none.key\"\n[authority]",
    );
    std::fs::write(e.p("tls.toml"), &cfg).unwrap();
    let out = e.run(&["signer", "serve", "--config", &e.s("tls.toml")]);
    expect(&out, 4, "server.tls.cert");
    std::fs::remove_file(e.p("jwks.json")).unwrap();
    let out = e.run(&["signer", "serve", "--config", &e.s("stella.toml")]);
    expect(&out, 4, "authority.jwks_file");
}

#[test]
fn signer_sign_help_lists_poe_as_required() {
    let e = Env::new();
    let out = e.run(&["signer", "sign", "--help"]);
    expect(&out, 0, "--poe <POE>");
    let text = String::from_utf8_lossy(&out.stdout);
    let usage = text.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(usage.contains("--poe <POE>"), "{usage}");
    // And clap refuses a call without it before anything reaches the network.
    let out = e.run(&[
        "signer",
        "sign",
        "--url",
        "http://127.0.0.1:9",
        "--predicate-type",
        "stella.ops/sbom@v1",
        "--predicate",
        "sbom.json",
        "--subject",
        "app.bin",
        "--output",
        "o.json",
    ]);
    expect(&out, 2, "--poe <POE>");
}

#[test]
fn verify_image_on_an_unreachable_registry_gives_no_upload_resume_hint() {
    let e = Env::new();
    e.keygen("ed25519", "k");
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = format!("127.0.0.1:{port}/app@sha256:{}", "ab".repeat(32));
    let out = e.run(&["verify", "image", &image, "--key", &e.s("k.pub")]);
    expect(&out, 10, "unreachable");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("resume") && !err.contains("uploaded"),
        "{err}"
    );
    // With --output json the failure is a JSON report too.
    let out = e.run(&[
        "verify",
        "image",
        &image,
        "--key",
        &e.s("k.pub"),
        "--output",
        "json",
    ]);
    expect(&out, 10, "unreachable");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["trusted"], false);
    assert_eq!(v["outcome"], "retryable");
    assert_eq!(v["image"], image);
}

#[test]
fn every_mirror_command_spells_its_json_report_one_way() {
    let e = Env::new();
    // `--output` names the file or folder written: the report format is `--format`.
    for cmd in ["create", "sign", "pack", "unpack", "apply"] {
        let out = e.run(&["mirror", cmd, "--help"]);
        expect(&out, 0, "--format <FORMAT>");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("--json"), "mirror {cmd}: {text}");
    }
    // Everywhere else: `--output json`, like `stella verify`.
    for cmd in ["verify", "verify-checksums", "diff", "load", "anchor"] {
        let out = e.run(&["mirror", cmd, "--help"]);
        expect(&out, 0, "--output <OUTPUT>");
        // Help wraps lines: compare with the whitespace folded.
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("[possible values: text, json]"),
            "mirror {cmd}: {text}"
        );
        assert!(!text.contains("--json"), "mirror {cmd}: {text}");
    }
}

#[test]
fn the_keyring_example_in_docs_keys_md_loads_as_written() {
    let e = Env::new();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/keys.md"))
        .unwrap();
    let start = doc
        .find("```toml\n")
        .expect("a ```toml block in docs/keys.md")
        + 8;
    let len = doc[start..].find("```").unwrap();
    std::fs::write(e.p("keyring.toml"), &doc[start..start + len]).unwrap();
    e.keygen("ed25519", "mirror-root");
    e.attest(&["mirror-root"], "a.dsse", &[]);
    let ring = e.s("keyring.toml");
    let out = e.run(&[
        "verify",
        "--keyring",
        &ring,
        "--purpose",
        "mirror-bundle",
        &e.s("a.dsse"),
    ]);
    expect(&out, 0, "mirror-root-ed25519-01");
    // The purposes it lists are enforced.
    let out = e.run(&[
        "verify",
        "--keyring",
        &ring,
        "--purpose",
        "release",
        &e.s("a.dsse"),
    ]);
    expect(&out, 1, "purpose");
}
