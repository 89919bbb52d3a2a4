//! Verification throughput on the real vectors, in one process: `cargo bench -p
//! stella-sigstore` (scripts/sigstore-bench.sh runs it next to @sigstore/verify).
//!
//! For each bundle: N iterations of parse + verify (the trusted root is parsed once, as a
//! long-running verifier would), then the same split into parse only and verify only, so the
//! report says where the time goes. Prints one line per bundle: µs per bundle.

use std::time::Instant;

use stella_sigstore::{
    verify, Artifact, Bundle, Identity, Matcher, Options, Policy, TrustedRoot, VerifyingKey,
};

fn data(p: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{p}", env!("CARGO_MANIFEST_DIR"))).expect("vector")
}

struct Case {
    name: &'static str,
    bundle: Vec<u8>,
    policy: Policy,
    root: TrustedRoot,
    options: Options,
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tsa_root = {
        let mut r: serde_json::Value =
            serde_json::from_slice(stella_sigstore::trust::PUBLIC_GOOD_JSON).expect("root");
        r["timestampAuthorities"] =
            serde_json::from_slice(&data("public-good/tsa-github-staging.json")).expect("tsa");
        TrustedRoot::from_json(&serde_json::to_vec(&r).expect("json")).expect("root")
    };
    let cases = [
        Case {
            name: "staging v0.3 message signature (cert, SCT, SET, inclusion proof, checkpoint)",
            bundle: data("staging/bundle_v3_alt.txt.sigstore"),
            policy: Policy::Identity(Identity::new(
                Matcher::exact("william@yossarian.net"),
                Matcher::exact("https://github.com/login/oauth"),
            )),
            root: TrustedRoot::staging().expect("root"),
            options: Options::default(),
        },
        Case {
            name: "public-good v0.1 DSSE (cert, SCT, RFC 3161 timestamp)",
            bundle: data("public-good/bundle-with-timestamp.json"),
            policy: Policy::Identity(Identity::new(
                Matcher::exact("brian@dehamer.com"),
                Matcher::exact("https://github.com/login/oauth"),
            )),
            root: tsa_root,
            options: Options {
                tlog_threshold: 0,
                ..Options::default()
            },
        },
        Case {
            name: "public-good v0.1 DSSE (npm key, intoto entry, SET)",
            bundle: data("public-good/bundle-publish.json"),
            policy: Policy::Key(
                VerifyingKey::from_pem(&data("public-good/npm-registry.pub")).expect("key"),
            ),
            root: TrustedRoot::public_good().expect("root"),
            options: Options::default(),
        },
    ];
    // CASE=<substring of the name>: run only matching cases (profiling one path).
    let only = std::env::var("CASE").unwrap_or_default();
    for c in cases.iter().filter(|c| c.name.contains(&only)) {
        // Warm up, and make sure the case verifies at all.
        let b = Bundle::from_json(&c.bundle).expect("bundle");
        verify(&b, Artifact::Unchecked, &c.policy, &c.root, &c.options).expect("verifies");
        let t = Instant::now();
        for _ in 0..n {
            let b = Bundle::from_json(&c.bundle).expect("bundle");
            verify(&b, Artifact::Unchecked, &c.policy, &c.root, &c.options).expect("verifies");
        }
        let total = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(Bundle::from_json(&c.bundle).expect("bundle"));
        }
        let parse = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                verify(&b, Artifact::Unchecked, &c.policy, &c.root, &c.options).expect("verifies"),
            );
        }
        let check = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "stella-sigstore  {:>8.1} us/bundle  (parse {:.1} us, verify {:.1} us)  n={n}  {}",
            total, parse, check, c.name
        );
    }
}
