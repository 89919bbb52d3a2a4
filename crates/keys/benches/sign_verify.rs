#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a broken setup, reported loudly
//! `cargo bench -p stella-keys --bench sign_verify`
//!
//! The full attest path (statement → RFC 8785 bytes → PAE → signature → envelope JSON) and the
//! full verify path (envelope JSON → strict parse → PAE → signature check under the keyring
//! policy → statement parse) of a ~1 KiB statement, side by side with the bare primitive
//! (sign / verify of the same bytes with the same key), in one run. Rounds alternate between
//! the two so machine noise hits both alike; the figure is the ratio of rates (median of the
//! per-round ratios). Target (issue #2): full path ≥ 80% of the bare primitive's rate.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use stella_dsse::{Envelope, Statement, Subject};
use stella_keys::{Algorithm, FileKey, Keyring, Policy, Signer, TrustedKey};

const ROUNDS: usize = 15;
const ROUND_TIME: Duration = Duration::from_millis(200);
const TARGET: f64 = 0.80;

fn statement() -> Statement {
    let subjects = (0..3)
        .map(|i| {
            Subject::sha256(
                format!("registry.stella-ops.org/stellaops/scanner-worker-{i}:2025.10.0"),
                format!("{:064x}", 0xabcdef0123456789u64 * (i + 1)),
            )
            .unwrap()
        })
        .collect();
    let predicate = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "metadata": {"timestamp": "2025-12-06T10:00:00Z", "tools": [{"vendor": "StellaOps", "name": "scanner", "version": "2025.10.0"}]},
        "components": [
            {"type": "library", "name": "openssl", "version": "3.0.15", "purl": "pkg:deb/debian/openssl@3.0.15-1~deb12u1"},
            {"type": "library", "name": "zlib", "version": "1.2.13", "purl": "pkg:deb/debian/zlib@1.2.13.dfsg-1"},
            {"type": "library", "name": "serde", "version": "1.0.215", "purl": "pkg:cargo/serde@1.0.215"}
        ],
        "stats": {"packages": 312, "critical": 0, "high": 2, "score": 7.5}
    });
    Statement::new(subjects, stella_dsse::predicates::SBOM_V1, predicate).unwrap()
}

/// Operations per second of `f` over one round.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND_TIME {
        for _ in 0..32 {
            f();
        }
        n += 32;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn compare(name: &str, mut bare: impl FnMut(), mut full: impl FnMut()) -> bool {
    let (mut rb, mut rf, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let b = rate(&mut bare);
        let f = rate(&mut full);
        rb.push(b);
        rf.push(f);
        ratios.push(f / b);
    }
    let ratio = median(ratios);
    let ok = ratio >= TARGET;
    println!(
        "{name:<28} bare {:>9.0}/s   full {:>9.0}/s   ratio {:>5.1}%   target >= {:.0}%   {}",
        median(rb),
        median(rf),
        ratio * 100.0,
        TARGET * 100.0,
        if ok { "PASS" } else { "MISS" }
    );
    ok
}

/// Where the full verify path spends its time beyond the primitive (informational).
fn breakdown(st: &Statement) {
    let key = FileKey::generate(Algorithm::Ed25519).unwrap();
    let env_json = stella_keys::attest(st, &[&key as &dyn Signer])
        .unwrap()
        .to_json();
    let env = Envelope::from_json(&env_json).unwrap();
    let per_op = |f: &mut dyn FnMut()| 1e9 / median((0..5).map(|_| rate(&mut *f)).collect());
    println!("verify-path pieces (ns/op):");
    println!(
        "  Envelope::from_json   {:>7.0}",
        per_op(&mut || {
            black_box(Envelope::from_json(black_box(&env_json)).unwrap());
        })
    );
    println!(
        "  pae                   {:>7.0}",
        per_op(&mut || {
            black_box(env.pae());
        })
    );
    println!(
        "  Statement::from_json  {:>7.0}",
        per_op(&mut || {
            black_box(Statement::from_json(black_box(&env.payload)).unwrap());
        })
    );
    println!(
        "  jcs::parse_strict     {:>7.0}",
        per_op(&mut || {
            black_box(stella_dsse::jcs::parse_strict(black_box(&env.payload)).unwrap());
        })
    );
    println!(
        "  serde_json Value      {:>7.0}",
        per_op(&mut || {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(&env.payload)).unwrap(),
            );
        })
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run briefly then.
    let st = statement();
    let canonical = st.to_canonical_json().unwrap();
    println!(
        "statement: {} bytes canonical; {} rounds x {:?} per side, interleaved",
        canonical.len(),
        ROUNDS,
        ROUND_TIME
    );
    let mut all = true;
    for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
        let key = FileKey::generate(alg).unwrap();
        let signers: [&dyn Signer; 1] = [&key];
        all &= compare(
            &format!("{alg} attest+sign"),
            || {
                black_box(key.sign(black_box(&canonical)).unwrap());
            },
            || {
                let env = stella_keys::attest(black_box(&st), &signers).unwrap();
                black_box(env.to_json());
            },
        );
        let env_json = stella_keys::attest(&st, &signers).unwrap().to_json();
        let sig = key.sign(&canonical).unwrap();
        let ring = Keyring::new(vec![TrustedKey::unrestricted(key.public_key().clone())]).unwrap();
        let policy = Policy::new(1).payload_type(stella_dsse::PAYLOAD_TYPE_IN_TOTO);
        all &= compare(
            &format!("{alg} verify"),
            || {
                assert!(key
                    .public_key()
                    .verify(black_box(&canonical), black_box(&sig)));
            },
            || {
                let env = Envelope::from_json(black_box(&env_json)).unwrap();
                stella_keys::verify_envelope(&env, &ring, &policy).unwrap();
                black_box(Statement::from_json(&env.payload).unwrap());
            },
        );
    }
    breakdown(&st);
    println!(
        "{}",
        if all {
            "all targets met"
        } else {
            "some targets missed"
        }
    );
}
