//! Key rotation and revocation at the command line: a rotation overlap in a keyring, and a
//! signed revocation list (`stella key revoke`) consumed by `stella verify --revocations`.

use std::path::PathBuf;

use crate::support::{
    argv, assert_exit_ctx, openssl_keypair, read_json, stderr, stella, tempdir, write, write_json,
    Alg,
};

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn attest(&self, key: &PathBuf, out: &str) -> PathBuf {
        let o = self.p(out);
        let res = stella(
            argv![
                "attest",
                "--key",
                key,
                "--predicate-type",
                "stella.ops/sbom@v1",
                "--predicate",
                self.p("pred.json"),
                "--subject",
                self.p("app.bin"),
                "--output",
                &o
            ],
            &[],
        );
        assert_exit_ctx(&res, 0, "attest");
        o
    }

    fn verify(&self, env: &PathBuf, extra: &[&str]) -> std::process::Output {
        let mut args = argv!["verify", "--keyring", self.p("ring.toml"), env];
        args.extend(extra.iter().map(std::ffi::OsString::from));
        stella(args, &[])
    }
}

#[test]
fn rotation_overlap_then_revocation_list() {
    let fx = Fx { dir: tempdir() };
    let (old_key, old_pub) = openssl_keypair(fx.dir.path(), "old", Alg::P256);
    let (new_key, new_pub) = openssl_keypair(fx.dir.path(), "new", Alg::Ed25519);
    let (root_key, root_pub) = openssl_keypair(fx.dir.path(), "root", Alg::Ed25519);
    write(fx.p("app.bin"), b"bytes\n");
    write_json(fx.p("pred.json"), &serde_json::json!({"x": 1}));
    // Rotation: the old key is valid until far in the future, the new one since the past:
    // both verify during the overlap.
    write(
        fx.p("ring.toml"),
        format!(
            "[[keys]]\nid = \"att-2025\"\npublic_key = \"{}\"\npurposes = [\"attestation\"]\nnot_after = \"2999-01-01T00:00:00Z\"\n\
             [[keys]]\nid = \"att-2026\"\npublic_key = \"{}\"\npurposes = [\"attestation\"]\nnot_before = \"2020-01-01T00:00:00Z\"\n\
             [[keys]]\nid = \"root\"\npublic_key = \"{}\"\npurposes = [\"release\"]\n",
            old_pub.display(),
            new_pub.display(),
            root_pub.display()
        ),
    );
    let by_old = fx.attest(&old_key, "old.json");
    let by_new = fx.attest(&new_key, "new.json");
    assert_exit_ctx(&fx.verify(&by_old, &[]), 0, "old key during the overlap");
    assert_exit_ctx(&fx.verify(&by_new, &[]), 0, "new key during the overlap");

    // Revoke the old key with a list signed by the root key.
    let list = fx.p("revocations.dsse.json");
    let out = stella(
        argv![
            "key", "revoke", "--list", &list, "--key", &root_key, "--revoke", &old_pub, "--reason",
            "rotated"
        ],
        &[],
    );
    assert_exit_ctx(&out, 0, "key revoke");
    let l = list.display().to_string();
    let refused = fx.verify(&by_old, &["--revocations", &l]);
    assert_exit_ctx(&refused, 1, "revoked key refused");
    assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));
    assert_exit_ctx(
        &fx.verify(&by_new, &["--revocations", &l]),
        0,
        "the new key still verifies",
    );

    // The list is cumulative: a second revocation keeps the first, serial 2.
    let out = stella(
        argv![
            "key",
            "revoke",
            "--list",
            &list,
            "--key",
            &root_key,
            "--revoke",
            &new_pub,
            "--at",
            "2999-01-01T00:00:00Z"
        ],
        &[],
    );
    assert_exit_ctx(&out, 0, "second revoke");
    let doc = read_json(&list);
    let payload: serde_json::Value = serde_json::from_slice(&crate::support::b64_decode(
        doc["payload"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(payload["serial"], 2);
    assert_eq!(payload["revocations"].as_array().unwrap().len(), 2);
    // No verified signing time on this path: a listed key is refused even before its
    // revocation time (a compromised key can backdate what it signs).
    assert_exit_ctx(
        &fx.verify(&by_new, &["--revocations", &l]),
        1,
        "listed key without a verified signing time",
    );

    // A list that is tampered with, or signed by a key outside the keyring, is refused.
    let mut bad = doc.clone();
    bad["payload"] = serde_json::Value::String(crate::support::b64_encode(
        br#"{"issued":"2026-01-01T00:00:00Z","kind":"stella.ops/key-revocations@v1","revocations":[],"serial":3}"#,
    ));
    let bad_path = fx.p("bad.dsse.json");
    write_json(&bad_path, &bad);
    let out = fx.verify(&by_old, &["--revocations", &bad_path.display().to_string()]);
    assert_exit_ctx(&out, 1, "tampered list");
    assert!(
        stderr(&out).contains("not signed by a trusted key"),
        "{}",
        stderr(&out)
    );
    let (stranger, _) = openssl_keypair(fx.dir.path(), "stranger", Alg::P256);
    let other = fx.p("other.dsse.json");
    let out = stella(
        argv!["key", "revoke", "--list", &other, "--key", &stranger, "--revoke", &new_pub],
        &[],
    );
    assert_exit_ctx(&out, 0, "stranger's list");
    let out = fx.verify(&by_old, &["--revocations", &other.display().to_string()]);
    assert_exit_ctx(&out, 1, "list signed outside the keyring");
}
