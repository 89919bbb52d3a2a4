//! `stella sign image` / `stella verify image` against a real registry (Debian's
//! docker-registry on 127.0.0.1, started per test): verdicts, exit codes, keyrings.

// Helpers outside #[test] fns: a failing unwrap is a failing test with a clear location.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use stella_oci::testing::{self, Registry};
use stella_oci::{BlockingClient, ClientConfig, CredentialSource, PushOptions, Reference};

use crate::support::{argv, assert_exit, stdout, stella, tempdir};

/// Push a small random image to `reg` as `name`; returns its digest.
fn push_image(reg: &Registry, name: &str) -> String {
    let dir = tempdir();
    let (layout, img) = testing::layout_with_image(dir.path(), "img", &[10_000]);
    let client = BlockingClient::new(ClientConfig {
        credentials: CredentialSource::Anonymous,
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Reference::parse(&format!("{}/{name}", reg.host())).unwrap();
    client
        .push_from_layout(layout.root(), &img.digest, &target, &PushOptions::default())
        .unwrap();
    img.digest.to_string()
}

fn keypair(dir: &Path, name: &str) -> (String, String) {
    let prefix = dir.join(name);
    let out = stella(
        argv![
            "key",
            "generate",
            "--algorithm",
            "p256",
            "--output",
            &prefix
        ],
        &[],
    );
    assert_exit(&out, 0);
    (
        format!("{}.key", prefix.display()),
        format!("{}.pub", prefix.display()),
    )
}

#[test]
fn sign_image_then_verify_image() {
    let reg = Registry::start();
    let digest = push_image(&reg, "scanner:1.2");
    let dir = tempdir();
    let (key, public) = keypair(dir.path(), "release");
    let (_, other_pub) = keypair(dir.path(), "other");
    let image = format!("{}/scanner:1.2", reg.host());

    let out = stella(argv!["sign", "image", "--key", &key, &image], &[]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("@{digest}")), "{text}");
    assert!(text.contains("referrer: sha256:"), "{text}");

    // Trusted with the right key, by tag and by digest.
    for r in [image.clone(), format!("{}/scanner@{digest}", reg.host())] {
        let out = stella(argv!["verify", "image", "--key", &public, &r], &[]);
        assert_exit(&out, 0);
        let text = stdout(&out);
        assert!(text.starts_with("trusted: "), "{text}");
        assert!(
            text.contains("artifactType: application/vnd.dev.sigstore.bundle.v0.3+json"),
            "{text}"
        );
    }
    let out = stella(
        argv!["verify", "image", "--key", &public, "--output", "json", &image],
        &[],
    );
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["trusted"], true);
    assert_eq!(v["digest"], digest);
    assert_eq!(v["source"], "tag-schema");
    assert!(v["keyid"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["signer"], v["keyid"], "a --key is named by its key id");

    // Wrong key: exit 1 and the reason.
    let out = stella(argv!["verify", "image", "--key", &other_pub, &image], &[]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.starts_with("NOT trusted: "), "{text}");
    assert!(text.contains("no signature verifies"), "{text}");
    let out = stella(
        argv!["verify", "image", "--key", &other_pub, "--output", "json", &image],
        &[],
    );
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["trusted"], false);
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .contains("no trusted signature"));

    // Unsigned image.
    push_image(&reg, "plain:1");
    let out = stella(
        argv![
            "verify",
            "image",
            "--key",
            &public,
            format!("{}/plain:1", reg.host())
        ],
        &[],
    );
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("no signature found"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn keyrings_need_the_release_purpose() {
    let reg = Registry::start();
    push_image(&reg, "svc:1");
    let dir = tempdir();
    let (key, public) = keypair(dir.path(), "k");
    let image = format!("{}/svc:1", reg.host());
    assert_exit(
        &stella(argv!["sign", "image", "--key", &key, &image], &[]),
        0,
    );

    let ring = |purpose: &str| {
        let d = dir.path().join(format!("ring-{purpose}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&public, d.join("k.pem")).unwrap();
        std::fs::write(
            d.join("keyring.toml"),
            format!(
                "[[keys]]\nid = \"release-key-01\"\npublic_key = \"k.pem\"\npurposes = [\"{purpose}\"]\n"
            ),
        )
        .unwrap();
        d
    };
    let out = stella(
        argv!["verify", "image", "--keyring", ring("release"), &image],
        &[],
    );
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("signer: release-key-01"),
        "{}",
        stdout(&out)
    );

    let out = stella(
        argv!["verify", "image", "--keyring", ring("attestation"), &image],
        &[],
    );
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("purpose `release`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn registry_errors_have_their_exit_codes() {
    let dir = tempdir();
    let (key, public) = keypair(dir.path(), "k");
    // Nobody listens on this port: retryable (10).
    let port = testing::free_port();
    let out = stella(
        argv![
            "verify",
            "image",
            "--key",
            &public,
            format!("127.0.0.1:{port}/x:1")
        ],
        &[],
    );
    assert_exit(&out, 10);
    // Malformed reference: usage (2).
    let out = stella(
        argv!["sign", "image", "--key", &key, "127.0.0.1:1/Bad:1"],
        &[],
    );
    assert_exit(&out, 2);
    // A missing image cannot be signed (4); verifying it is simply untrusted (1).
    let reg = Registry::start();
    let out = stella(
        argv![
            "sign",
            "image",
            "--key",
            &key,
            format!("{}/missing:1", reg.host())
        ],
        &[],
    );
    assert_exit(&out, 4);
    let out = stella(
        argv![
            "verify",
            "image",
            "--key",
            &public,
            format!("{}/missing:1", reg.host())
        ],
        &[],
    );
    assert_exit(&out, 1);
}
