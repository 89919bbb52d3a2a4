//! AWS KMS keys against moto's KMS (patched for its DIGEST and Ed25519 gaps by
//! tests/kms/moto_kms.py), each test with its own server on a free loopback port. Every
//! signature is verified by openssl as well as by us, so an emulator bug cannot hide ours.
#![cfg(feature = "awskms")]
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "support/big_message.rs"]
mod big_message;
mod support;

use std::process::Command;

use serde_json::json;
use stella_keys::awskms::sigv4::{self, Credentials};
use stella_keys::awskms::{KmsClient, KmsConfig, KmsKey, KmsUri};
use stella_keys::{Algorithm, KeyError, PublicKey, SignError, Signer};
use support::moto::{kms_python, moto_script, Moto};
use zeroize::Zeroizing;

fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDSTELLATEST".into(),
        secret_access_key: Zeroizing::new("stella-test-secret".into()),
        session_token: None,
    }
}

fn client(moto: &Moto) -> KmsClient {
    KmsClient::new(KmsConfig {
        endpoint: moto.endpoint(),
        region: "us-east-1".into(),
        credentials: creds(),
    })
    .unwrap()
}

/// Create a signing key (and an alias for it); returns the key id.
fn create_key(c: &KmsClient, spec: &str, alias: &str) -> String {
    let v = c
        .call(
            "CreateKey",
            &json!({"KeyUsage": "SIGN_VERIFY", "KeySpec": spec}),
            "test",
        )
        .unwrap();
    let id = v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    c.call(
        "CreateAlias",
        &json!({"AliasName": format!("alias/{alias}"), "TargetKeyId": id}),
        "test",
    )
    .unwrap();
    id
}

fn open(moto: &Moto, key: &str) -> Result<KmsKey, KeyError> {
    let r = format!("awskms:///{key}");
    KmsKey::with_client(client(moto), &KmsUri::parse(&r).unwrap(), &r)
}

/// openssl's verdict on `sig` over `msg` with `public`.
fn openssl_verifies(public: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (p, m, s) = (
        dir.path().join("pub.pem"),
        dir.path().join("msg"),
        dir.path().join("sig"),
    );
    std::fs::write(&p, public.to_pem()).unwrap();
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&s, sig).unwrap();
    let mut cmd = Command::new("openssl");
    match public.algorithm() {
        Algorithm::EcdsaP256Sha256 => cmd
            .args(["dgst", "-sha256", "-verify"])
            .arg(&p)
            .arg("-signature")
            .arg(&s)
            .arg(&m),
        Algorithm::Ed25519 => cmd
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&p)
            .arg("-in")
            .arg(&m)
            .arg("-sigfile")
            .arg(&s),
    };
    cmd.output().expect("openssl").status.success()
}

#[test]
fn kms_p256_and_ed25519_sign_verify() {
    let moto = Moto::start(0);
    let c = client(&moto);
    let p256_id = create_key(&c, "ECC_NIST_P256", "stella-p256");
    let ed_id = create_key(&c, "ECC_NIST_EDWARDS25519", "stella-ed");

    let p256 = open(&moto, "alias/stella-p256").unwrap();
    assert_eq!(p256.algorithm(), Algorithm::EcdsaP256Sha256);
    assert_eq!(p256.mode(), "kms");
    assert!(p256.key_arn().contains(&p256_id), "{}", p256.key_arn());
    let by_id = open(&moto, &p256_id).unwrap();
    assert_eq!(by_id.public_key(), p256.public_key());
    // Large messages are fine: only the SHA-256 travels (MessageType=DIGEST).
    let big = vec![0x5au8; 100_000];
    for msg in [b"hello kms".to_vec(), big.clone(), vec![0u8; 1]] {
        let sig = p256.sign(&msg).unwrap();
        assert!(p256.public_key().verify(&msg, &sig));
        assert!(
            openssl_verifies(p256.public_key(), &msg, &sig),
            "openssl refused a KMS P-256 signature"
        );
        assert!(!openssl_verifies(p256.public_key(), b"other", &sig));
    }

    let ed = open(&moto, "alias/stella-ed").unwrap();
    assert_eq!(ed.algorithm(), Algorithm::Ed25519);
    assert!(ed.key_arn().contains(&ed_id));
    for msg in [b"hello ed".to_vec(), vec![7u8; 4096]] {
        let sig = ed.sign(&msg).unwrap();
        assert_eq!(sig.len(), 64);
        assert!(openssl_verifies(ed.public_key(), &msg, &sig));
    }
    // Ed25519 in KMS signs whole messages of at most 4096 bytes: a clear error past that.
    let too_big = ed.sign(&[1u8; 4097]).unwrap_err();
    assert!(too_big.to_string().contains("4096"), "{too_big}");

    // DSSE through the generic path, verified by openssl over the PAE.
    let env = stella_keys::sign_envelope("application/x", b"{}".to_vec(), &[&p256, &ed]).unwrap();
    let pae = stella_dsse::pae("application/x", b"{}");
    assert!(openssl_verifies(
        p256.public_key(),
        &pae,
        &env.signatures[0].sig
    ));
    assert!(openssl_verifies(
        ed.public_key(),
        &pae,
        &env.signatures[1].sig
    ));

    // The alias moves to another key: the open signer keeps signing with the key it announced.
    let other = create_key(&c, "ECC_NIST_P256", "spare");
    c.call(
        "UpdateAlias",
        &json!({"AliasName": "alias/stella-p256", "TargetKeyId": other}),
        "test",
    )
    .unwrap();
    let sig = p256.sign(b"after alias move").unwrap();
    assert!(openssl_verifies(
        p256.public_key(),
        b"after alias move",
        &sig
    ));
    let reopened = open(&moto, "alias/stella-p256").unwrap();
    assert_ne!(reopened.public_key(), p256.public_key());
}

#[test]
fn kms_p256_signs_a_stream_without_holding_it() {
    let moto = Moto::start(0);
    let c = client(&moto);
    create_key(&c, "ECC_NIST_P256", "stella-stream");
    create_key(&c, "ECC_NIST_EDWARDS25519", "stella-stream-ed");
    let p256 = open(&moto, "alias/stella-stream").unwrap();

    // 384 MiB, read once: only its SHA-256 goes to KMS and memory does not grow with it.
    big_message::assert_signs_big_stream_in_bounded_memory(&p256);

    // A small stream gives a signature openssl accepts over the same bytes.
    let mut small = stella_keys::stream::Prefixed {
        prefix: b"DSSEv1 ".to_vec(),
        body: std::io::Cursor::new(b"payload".to_vec()),
    };
    let sig = p256.sign_stream(&mut small).unwrap();
    assert!(openssl_verifies(p256.public_key(), b"DSSEv1 payload", &sig));

    // Ed25519 signs whole messages in KMS: a stream is read, and the 4096-byte limit holds.
    let ed = open(&moto, "alias/stella-stream-ed").unwrap();
    let too_big = ed
        .sign_stream(&mut big_message::BigMessage::new(1))
        .unwrap_err();
    assert!(too_big.to_string().contains("4096"), "{too_big}");
}

#[test]
fn kms_errors_are_classified() {
    let mut moto = Moto::start(0);
    let c = client(&moto);
    let missing = open(&moto, "alias/nope").unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    let missing_id = open(&moto, "11111111-2222-3333-4444-555555555555").unwrap_err();
    assert!(missing_id.is_not_found(), "{missing_id}");
    // An encryption key, and an RSA signing key: not keys Stella signs with.
    let sym = c.call("CreateKey", &json!({}), "t").unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = open(&moto, &sym).unwrap_err();
    assert!(e.to_string().contains("SIGN_VERIFY"), "{e}");
    create_key(&c, "RSA_2048", "rsa");
    let e = open(&moto, "alias/rsa").unwrap_err();
    assert!(e.to_string().contains("RSA_2048"), "{e}");

    // The KMS goes away mid-use: a clear "unavailable" error (retried, then given up).
    create_key(&c, "ECC_NIST_P256", "k");
    let k = open(&moto, "alias/k").unwrap();
    k.sign(b"before").unwrap();
    moto.kill();
    let t = std::time::Instant::now();
    let gone = k.sign(b"after").unwrap_err();
    assert!(matches!(gone, SignError::Unavailable { .. }), "{gone}");
    assert!(gone.to_string().contains("cannot reach KMS"), "{gone}");
    assert!(gone.to_string().contains("6 attempts"), "{gone}");
    // Backoff is bounded (6 attempts, capped delays).
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn kms_throttling_is_retried_with_backoff() {
    // Three throttled answers, then success: the caller sees one good signature.
    let moto = Moto::start(3);
    let c = client(&moto);
    create_key(&c, "ECC_NIST_P256", "t");
    let k = open(&moto, "alias/t").unwrap();
    let sig = k.sign(b"throttled first").unwrap();
    assert!(openssl_verifies(k.public_key(), b"throttled first", &sig));

    // Throttled for longer than the retry budget: unavailable, naming the throttling.
    let moto = Moto::start(1000);
    let c = client(&moto);
    create_key(&c, "ECC_NIST_P256", "t");
    let k = open(&moto, "alias/t").unwrap();
    let e = k.sign(b"x").unwrap_err();
    assert!(matches!(e, SignError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("ThrottlingException"), "{e}");
}

#[test]
fn moto_patches_selftest() {
    // The emulator patches on their own: DIGEST signs the digest, Ed25519 keys exist, RAW is
    // required for ED25519_SHA_512 (and the unpatched moto fails the first check).
    let out = Command::new(kms_python())
        .arg(moto_script())
        .arg("selftest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "selftest ok");
}

#[test]
fn sigv4_matches_botocore() {
    // Our SigV4 for a KMS request (JSON body, session token) equals botocore's.
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        session_token: Some(Zeroizing::new("FQoGZXIvYXdzEXAMPLETOKEN".into())),
    };
    let body = br#"{"KeyId":"alias/x","Message":"AAEC","MessageType":"DIGEST","SigningAlgorithm":"ECDSA_SHA_256"}"#;
    let date = "20240229T235959Z";
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("host", "kms.eu-central-1.amazonaws.com"),
        ("x-amz-date", date),
        ("x-amz-target", "TrentService.Sign"),
        ("x-amz-security-token", "FQoGZXIvYXdzEXAMPLETOKEN"),
    ];
    let ours = sigv4::authorization(
        &creds,
        "eu-central-1",
        "kms",
        date,
        &sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        },
    );
    let script = r#"
import sys, datetime
from unittest import mock
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
body = sys.stdin.buffer.read()
req = AWSRequest(method="POST", url="https://kms.eu-central-1.amazonaws.com/", data=body,
                 headers={"Content-Type": "application/x-amz-json-1.1",
                          "X-Amz-Target": "TrentService.Sign"})
creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FQoGZXIvYXdzEXAMPLETOKEN")
fixed = datetime.datetime(2024, 2, 29, 23, 59, 59)
with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
    SigV4Auth(creds, "kms", "eu-central-1").add_auth(req)
print(req.headers["Authorization"])
"#;
    let mut child = Command::new(kms_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ours);
}
