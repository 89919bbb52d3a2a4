//! `stella verify blob --bundle`, `stella verify` with identities, and `stella trust-root`,
//! on the real Sigstore vectors of crates/sigstore/tests/data (the library tests hold the
//! negative twin of every check; these check the CLI contract: exit codes, JSON results on
//! success and failure, trusted-root selection).

#![allow(clippy::unwrap_used, clippy::panic)]

use crate::support::*;

const STAGING_DIGEST: &str =
    "sha256:4191e6b4e2b0260e6e297d4797d2a873584965afef021bf22f2bb7bec41102d0";
const NPM_DIGEST: &str = "sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751";

fn data(p: &str) -> String {
    root()
        .join("crates/sigstore/tests/data")
        .join(p)
        .display()
        .to_string()
}

fn staging_bundle() -> String {
    data("staging/bundle_v3_alt.txt.sigstore")
}

/// Run stella with an empty trust-root directory of its own.
fn st(args: Vec<std::ffi::OsString>, dir: &std::path::Path) -> std::process::Output {
    stella(args, &[("STELLA_TRUST_ROOT_DIR", dir.to_str().unwrap())])
}

fn identity() -> Vec<&'static str> {
    vec![
        "--certificate-identity",
        "william@yossarian.net",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
    ]
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

#[test]
fn verify_blob_bundle_with_identity_and_digest() {
    let tmp = tempdir();
    let mut args = argv!["verify", "blob", "--bundle", staging_bundle(), "--staging"];
    args.extend(identity().into_iter().map(Into::into));
    args.extend(argv!["--output", "json", STAGING_DIGEST]);
    let out = st(args, tmp.path());
    assert_exit(&out, 0);
    let v = json_out(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["bundleVersion"], "0.3");
    assert_eq!(v["identity"]["issuer"], "https://github.com/login/oauth");
    assert_eq!(v["signingTimes"][0]["time"], "2024-04-02T19:20:16.000Z");
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "certificate-transparency"));
}

#[test]
fn verify_blob_bundle_failures_say_which_check() {
    let tmp = tempdir();
    // Wrong identity (regexp form): exit 1, JSON names the failed check.
    let out = st(
        argv![
            "verify",
            "blob",
            "--bundle",
            staging_bundle(),
            "--staging",
            "--certificate-identity-regexp",
            ".*@example\\.com",
            "--certificate-oidc-issuer",
            "https://github.com/login/oauth",
            "--output",
            "json",
            STAGING_DIGEST
        ],
        tmp.path(),
    );
    assert_exit(&out, 1);
    let v = json_out(&out);
    assert_eq!(v["verified"], false);
    assert_eq!(v["failed"]["check"], "identity");
    assert!(v["passed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "certificate"));
    // The wrong artifact: the artifact check.
    let f = tmp.path().join("other.txt");
    write(&f, "not the artifact");
    let mut args = argv![
        "verify",
        "blob",
        "--bundle",
        staging_bundle(),
        "--staging",
        "--output",
        "json"
    ];
    args.extend(identity().into_iter().map(Into::into));
    args.push(f.clone().into());
    let out = st(args, tmp.path());
    assert_exit(&out, 1);
    assert_eq!(json_out(&out)["failed"]["check"], "artifact");
    // The public-good root (the default) does not know the staging log.
    let mut args = argv![
        "verify",
        "blob",
        "--bundle",
        staging_bundle(),
        "--output",
        "json"
    ];
    args.extend(identity().into_iter().map(Into::into));
    args.push(STAGING_DIGEST.into());
    let out = st(args, tmp.path());
    assert_exit(&out, 1);
    let v = json_out(&out);
    assert_eq!(v["failed"]["check"], "transparency-log");
    assert!(v["failed"]["error"]
        .as_str()
        .unwrap()
        .contains("unknown log id"));
}

#[test]
fn malformed_bundles_and_flags_are_input_errors() {
    let tmp = tempdir();
    let mut b = read_json(staging_bundle());
    b["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.9+json".into();
    let p = tmp.path().join("v09.json");
    write_json(&p, &b);
    let mut args = argv![
        "verify",
        "blob",
        "--bundle",
        &p,
        "--staging",
        "--output",
        "json"
    ];
    args.extend(identity().into_iter().map(Into::into));
    args.push(STAGING_DIGEST.into());
    let out = st(args, tmp.path());
    assert_exit(&out, 2);
    assert_eq!(json_out(&out)["failed"]["check"], "input");
    // An unknown field.
    let mut b = read_json(staging_bundle());
    b["verificationMaterial"]["extra"] = 1.into();
    let p = tmp.path().join("extra.json");
    write_json(&p, &b);
    let mut args = argv!["verify", "blob", "--bundle", &p, "--staging"];
    args.extend(identity().into_iter().map(Into::into));
    args.push(STAGING_DIGEST.into());
    assert_exit(&st(args, tmp.path()), 2);
    // A short digest that is not a file; a certificate bundle without an identity.
    let mut args = argv!["verify", "blob", "--bundle", staging_bundle(), "--staging"];
    args.extend(identity().into_iter().map(Into::into));
    args.push("sha256:abcd".into());
    assert_exit(&st(args, tmp.path()), 2);
    let out = st(
        argv![
            "verify",
            "blob",
            "--bundle",
            staging_bundle(),
            "--staging",
            STAGING_DIGEST
        ],
        tmp.path(),
    );
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("--certificate-identity"),
        "{}",
        stderr(&out)
    );
    // A broken trusted root.
    let bad = tmp.path().join("root.json");
    write(&bad, "{\"mediaType\": \"application/vnd.dev.sigstore.trustedroot+json;version=0.1\", \"tlogs\": 5}");
    let mut args = argv![
        "verify",
        "blob",
        "--bundle",
        staging_bundle(),
        "--trusted-root",
        &bad
    ];
    args.extend(identity().into_iter().map(Into::into));
    args.push(STAGING_DIGEST.into());
    assert_exit(&st(args, tmp.path()), 2);
}

#[test]
fn key_signed_dsse_bundle_by_subject_digest() {
    let tmp = tempdir();
    let key = data("public-good/npm-registry.pub");
    let bundle = data("public-good/bundle-publish.json");
    let out = st(
        argv!["verify", "blob", "--bundle", &bundle, "--key", &key, NPM_DIGEST],
        tmp.path(),
    );
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("rekor.sigstore.dev"),
        "{}",
        stdout(&out)
    );
    // `stella verify` takes the same bundle (cosign-era v0.1) and key.
    let out = st(
        argv!["verify", "--key", &key, "--output", "json", &bundle],
        tmp.path(),
    );
    assert_exit(&out, 0);
    assert_eq!(json_out(&out)["verified"], true);
    // Another subject: exit 1 at the artifact check.
    let other = format!("sha512:{}", "ab".repeat(64));
    let out = st(
        argv!["verify", "blob", "--bundle", &bundle, "--key", &key, "--output", "json", other],
        tmp.path(),
    );
    assert_exit(&out, 1);
    assert_eq!(json_out(&out)["failed"]["check"], "artifact");
}

#[test]
fn verify_with_identity_flags_and_trusted_root_file() {
    let tmp = tempdir();
    let root_file = root().join("crates/sigstore/roots/staging.json");
    let mut args = argv!["verify", "--trusted-root", &root_file];
    args.extend(identity().into_iter().map(Into::into));
    args.push(staging_bundle().into());
    let out = st(args, tmp.path());
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("william@yossarian.net"),
        "{}",
        stdout(&out)
    );
    // A certificate bundle given to `stella verify` without an identity: usage error.
    assert_exit(
        &st(argv!["verify", "--staging", staging_bundle()], tmp.path()),
        2,
    );
}

#[test]
fn trust_root_import_and_show() {
    let tmp = tempdir();
    let out = st(argv!["trust-root", "show", "--output", "json"], tmp.path());
    assert_exit(&out, 0);
    let v = json_out(&out);
    assert_eq!(v["source"], "shipped with stella");
    assert_eq!(v["tlogs"][0]["url"], "https://rekor.sigstore.dev");
    // Import the staging root as the public-good one: verification by default now uses it.
    let staging = root().join("crates/sigstore/roots/staging.json");
    let out = st(argv!["trust-root", "import", &staging], tmp.path());
    assert_exit(&out, 0);
    let v = json_out(&st(
        argv!["trust-root", "show", "--output", "json"],
        tmp.path(),
    ));
    assert!(v["source"].as_str().unwrap().starts_with("imported"), "{v}");
    assert_eq!(v["tlogs"][0]["url"], "https://rekor.sigstage.dev");
    let mut args = argv!["verify", "blob", "--bundle", staging_bundle()];
    args.extend(identity().into_iter().map(Into::into));
    args.push(STAGING_DIGEST.into());
    assert_exit(&st(args, tmp.path()), 0);
    // A file that is not a trusted root is refused and changes nothing.
    let bad = tmp.path().join("bad.json");
    write(&bad, "{\"mediaType\": \"text/plain\"}");
    assert_exit(
        &st(argv!["trust-root", "import", "--staging", &bad], tmp.path()),
        2,
    );
    assert!(!tmp.path().join("staging.json").exists());
}

#[test]
fn timestamp_only_bundle_with_tlog_threshold_zero() {
    // sigstore-go's timestamped bundle has no log entry: refused by default, verified by its
    // RFC 3161 time when no log entry is required.
    let tmp = tempdir();
    let mut r = read_json(root().join("crates/sigstore/roots/public-good.json"));
    r["timestampAuthorities"] = read_json(data("public-good/tsa-github-staging.json"));
    let root_file = tmp.path().join("root.json");
    write_json(&root_file, &r);
    let bundle = data("public-good/bundle-with-timestamp.json");
    let digest = "sha512:bbfd372fc9beeb777fe35d05bb10c0c70a9733d366a75fed7dd18866c7391de3ee7e88ba74dd47abf3e15c845e547fcf0e5c3da80854c751554224d3a6d4e55f";
    let base = argv![
        "verify",
        "blob",
        "--bundle",
        &bundle,
        "--trusted-root",
        &root_file,
        "--certificate-identity",
        "brian@dehamer.com",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
        "--output",
        "json"
    ];
    let mut args = base.clone();
    args.push(digest.into());
    let out = st(args, tmp.path());
    assert_exit(&out, 1);
    assert_eq!(json_out(&out)["failed"]["check"], "transparency-log");
    let mut args = base;
    args.extend(argv!["--tlog-threshold", "0", digest]);
    let out = st(args, tmp.path());
    assert_exit(&out, 0);
    assert_eq!(json_out(&out)["signingTimes"][0]["source"], "timestamp");
}

/// `stella verify BUNDLE --keyring K --purpose P`: a keyless bundle accepted by a keyring
/// `[[identities]]` entry (no identity flags), refused for another purpose or identity.
#[test]
fn verify_keyless_bundle_with_keyring_identities() {
    use stella_sigstore::testing::{LeafSpec, TestSigstore};
    let tmp = tempdir();
    let s = TestSigstore::new();
    let now = time::OffsetDateTime::now_utc();
    std::fs::write(tmp.path().join("root.json"), s.trusted_root_json()).unwrap();
    let leaf = s.issue(&LeafSpec::email(
        "build@ci.example.com",
        "https://issuer.test.invalid",
        now,
    ));
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a", "digest": {"sha256": "00".repeat(32)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    });
    let bundle = tmp.path().join("b.sigstore.json");
    std::fs::write(
        &bundle,
        serde_json::to_vec(&s.dsse_bundle(
            &leaf,
            "application/vnd.in-toto+json",
            &serde_json::to_vec(&statement).unwrap(),
            now,
        ))
        .unwrap(),
    )
    .unwrap();
    let ring = tmp.path().join("ring.toml");
    let write_ring = |san: &str| {
        std::fs::write(
            &ring,
            format!(
                "[[identities]]\nid = \"ci\"\ncertificate_identity_regexp = '{san}'\n\
                 certificate_oidc_issuer = \"https://issuer.test.invalid\"\n\
                 trusted_root = \"root.json\"\npurposes = [\"attestation\"]\n"
            ),
        )
        .unwrap()
    };
    let run = |purpose: &str, json: bool| {
        let mut args = argv!["verify", &bundle, "--keyring", &ring, "--purpose", purpose];
        if json {
            args.extend(argv!["--output", "json"]);
        }
        st(args, tmp.path())
    };
    write_ring(r".*@ci\.example\.com");
    let out = run("attestation", false);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("signer: ci (keyring identity)"),
        "{}",
        stdout(&out)
    );
    let v = json_out(&run("attestation", true));
    assert_eq!(
        (v["verified"].clone(), v["signer"].clone()),
        (true.into(), "ci".into())
    );
    // Another purpose: refused, with the entry's reason.
    let out = run("release", true);
    assert_exit(&out, 1);
    let v = json_out(&out);
    assert_eq!(v["failed"]["check"], "keyring-identity");
    assert!(
        v["failed"]["error"]
            .as_str()
            .unwrap()
            .contains("purpose `release`"),
        "{v}"
    );
    // Another identity (anchored: the pattern must match the whole SAN).
    write_ring(r"ci\.example\.com");
    let out = run("attestation", false);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
}
