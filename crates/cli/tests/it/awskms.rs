//! `stella` with `awskms://` keys against the patched moto KMS (tests/kms/moto_kms.py): the
//! endpoint from the reference (loopback → http), credentials and region from the environment.
#![allow(clippy::unwrap_used)]

#[path = "../../../keys/tests/support/moto.rs"]
mod moto;

use std::process::Command;

use moto::{kms_python, Moto};

use crate::support::{
    argv, assert_exit_ctx, b64_decode, openssl, python_peer, read, stderr, stdout, stella, tempdir,
    write, write_json,
};

const ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIDSTELLACLI"),
    ("AWS_SECRET_ACCESS_KEY", "stella-cli-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/stella-test"),
];

/// Create a key with an alias through boto3 (an independent client).
fn create_key(moto: &Moto, spec: &str, alias: &str) {
    let script = format!(
        r#"
import boto3
kms = boto3.client("kms", endpoint_url="{}", region_name="us-east-1",
                   aws_access_key_id="x", aws_secret_access_key="y")
k = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="{spec}")["KeyMetadata"]["KeyId"]
kms.create_alias(AliasName="alias/{alias}", TargetKeyId=k)
"#,
        moto.endpoint()
    );
    let out = Command::new(kms_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kms_key_signs_attestations_and_blobs() {
    let moto = Moto::start(0);
    create_key(&moto, "ECC_NIST_P256", "release");
    let dir = tempdir();
    let key = format!("awskms://127.0.0.1:{}/alias/release", moto.port);
    let public = dir.path().join("release.pub");

    let out = stella(argv!["key", "public", "--key", &key], ENV);
    assert_exit_ctx(&out, 0, "key public --key awskms://");
    write(&public, stdout(&out));

    write(dir.path().join("app.bin"), b"kms artifact\n");
    write_json(dir.path().join("pred.json"), &serde_json::json!({"a": 1}));
    let env = dir.path().join("env.json");
    let out = stella(
        argv![
            "attest",
            "--key",
            &key,
            "--predicate-type",
            "stella.ops/sbom@v1",
            "--predicate",
            dir.path().join("pred.json"),
            "--subject",
            dir.path().join("app.bin"),
            "--output",
            &env
        ],
        ENV,
    );
    assert_exit_ctx(&out, 0, "attest --key awskms://");
    assert_exit_ctx(
        &stella(argv!["verify", "--key", &public, &env], &[]),
        0,
        "stella verify of the KMS envelope",
    );
    let ok = python_peer(
        "sslib_verify.py",
        argv![
            &env,
            "--key",
            format!("p256:{}", public.display()),
            "--threshold",
            "1"
        ],
    );
    assert_exit_ctx(&ok, 0, "securesystemslib verifies the KMS envelope");

    let sig_b64 = dir.path().join("sig.b64");
    let out = stella(
        argv![
            "sign",
            "blob",
            "--key",
            &key,
            "--output-signature",
            &sig_b64,
            dir.path().join("app.bin")
        ],
        ENV,
    );
    assert_exit_ctx(&out, 0, "sign blob --key awskms://");
    let sig = dir.path().join("sig");
    write(
        &sig,
        b64_decode(String::from_utf8(read(&sig_b64)).unwrap().trim()),
    );
    let v = openssl(argv![
        "dgst",
        "-sha256",
        "-verify",
        &public,
        "-signature",
        &sig,
        dir.path().join("app.bin")
    ]);
    assert_exit_ctx(&v, 0, "openssl verifies the KMS blob signature");

    // Errors: a missing alias is "not found" (4), missing credentials are auth (3), and the
    // secret never shows up in messages.
    let out = stella(
        argv![
            "key",
            "public",
            "--key",
            format!("awskms://127.0.0.1:{}/alias/nope", moto.port)
        ],
        ENV,
    );
    assert_exit_ctx(&out, 4, "missing KMS alias");
    assert!(
        stderr(&out).contains("NotFoundException"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stella-cli-secret"));
    let out = Command::new(crate::support::stella_bin())
        .args(["key", "public", "--key", &key])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/stella-test")
        .output()
        .unwrap();
    assert_exit_ctx(&out, 3, "no AWS credentials");
    assert!(
        stderr(&out).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(crate::support::stella_bin())
        .args(["key", "public", "--key", &key])
        .env("AWS_ACCESS_KEY_ID", "a")
        .env("AWS_SECRET_ACCESS_KEY", "b")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    assert_exit_ctx(&out, 2, "no AWS region");
    assert!(stderr(&out).contains("AWS_REGION"), "{}", stderr(&out));
}
