//! Sign a bundle folder keyless with the test Sigstore (`stella_sigstore::testing`), for
//! benchmarks of keyless verification at scale: the bundle is signed again with a fresh
//! certified (ephemeral) key, `manifest.sigstore.json` gets one Sigstore bundle over the
//! manifest, and OUT gets `root.json`, `ring.toml` (an identity entry trusting it) and
//! `leaf.pub` (the certified key).
//!
//! `cargo run --release -p stella-mirror --example keyless_sign -- BUNDLE OUT`
//! then `stella mirror verify BUNDLE --keyring OUT/ring.toml`. A bench fixture: the test
//! Sigstore's keys are made up on the spot and trusted by nothing else.
#![allow(clippy::expect_used)]

use stella_mirror::{names, NoProgress};
use stella_sigstore::testing::{LeafSpec, TestSigstore};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bundle, out] = args.as_slice() else {
        eprintln!("usage: keyless_sign BUNDLE OUT");
        std::process::exit(2);
    };
    let (bundle, out) = (std::path::Path::new(bundle), std::path::Path::new(out));
    const ISSUER: &str = "https://issuer.bench.invalid";
    const SAN: &str = "bench@example.com";
    let now = time::OffsetDateTime::now_utc();
    let sigstore = TestSigstore::new();
    let leaf = sigstore.issue(&LeafSpec::email(SAN, ISSUER, now));
    let key = stella_keys::FileKey::from_pem(leaf.key.private_pem().as_bytes(), &mut || {
        unreachable!("not encrypted")
    })
    .expect("leaf key");
    stella_mirror::sign_with(
        &bundle.join(names::MANIFEST),
        &bundle.join(names::ENVELOPE),
        &[&key],
        now,
        None,
        &NoProgress,
    )
    .expect("sign");
    let payload = std::fs::read(bundle.join(names::MANIFEST)).expect("manifest.json");
    let signed = sigstore.dsse_bundle(&leaf, stella_mirror::PAYLOAD_TYPE, &payload, now);
    std::fs::write(
        bundle.join(names::KEYLESS),
        serde_json::to_vec(&[signed]).expect("json"),
    )
    .expect("write manifest.sigstore.json");
    std::fs::create_dir_all(out).expect("mkdir");
    std::fs::write(out.join("root.json"), sigstore.trusted_root_json()).expect("root");
    // The certified key itself, to compare with a keyful verification of the same bundle.
    std::fs::write(out.join("leaf.pub"), leaf.key.public_pem()).expect("leaf.pub");
    std::fs::write(
        out.join("ring.toml"),
        format!(
            "[[identities]]\nid = \"bench\"\ncertificate_identity = \"{SAN}\"\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\n\
             purposes = [\"mirror-bundle\"]\n"
        ),
    )
    .expect("ring");
}
