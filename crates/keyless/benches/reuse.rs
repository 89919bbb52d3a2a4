//! Keyless signing throughput: may a key + certificate sign several requests? One run,
//! interleaved rounds, side by side:
//!
//! - `keyful`: a P-256 file key signing the same DSSE statement (the reference);
//! - `dev reuse` / `dev per-signature`: the in-process dev CA and TSA, certificate reused
//!   within its validity vs a new key + certificate per signature;
//! - `http reuse` / `http per-signature`: Fulcio and a TSA over HTTP on loopback (the
//!   Sigstore mock services, tests/sigstore-mock/serve.mjs).
//!
//! Every keyless signature includes its RFC 3161 timestamp and the self-check of the bundle
//! with `stella-sigstore`. The certificate cost is the per-signature time minus the reuse
//! time. Run: `cargo bench -p stella-keyless --bench reuse` (BENCH_N, BENCH_ROUNDS).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stella_keyless::dev::DevServices;
use stella_keyless::testing::MockSigstore;
use stella_keyless::tsa::HttpTsa;
use stella_keyless::{HttpOptions, KeylessSigner, Reuse, StaticToken};
use stella_keys::{Algorithm, FileKey, Signer};
use time::OffsetDateTime;

fn statement() -> stella_dsse::Statement {
    stella_dsse::Statement::new(
        vec![stella_dsse::Subject::sha256("artifact", "ab".repeat(32)).unwrap()],
        "https://slsa.dev/provenance/v1",
        serde_json::json!({"buildDefinition": {"buildType": "https://stella.test/build"}}),
    )
    .unwrap()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn time_keyless(s: &KeylessSigner, st: &stella_dsse::Statement, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(s.attest(st).await.unwrap());
    }
    t.elapsed()
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = env("BENCH_N", 200);
    let n_http = env("BENCH_N_HTTP", 50);
    let rounds = env("BENCH_ROUNDS", 3);
    let st = statement();

    let file_key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let dev_token = || {
        Arc::new(
            StaticToken::parse(&stella_keyless::token::unsigned_jwt(&serde_json::json!({
                "iss": "https://oidc.bench.invalid", "sub": "bench@stella.invalid",
                "email": "bench@stella.invalid", "email_verified": true,
                "exp": OffsetDateTime::now_utc().unix_timestamp() + 3600,
            })))
            .unwrap(),
        )
    };
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let dev_reuse = dev.signer(dev_token()).unwrap();
    let dev_each = dev
        .signer(dev_token())
        .unwrap()
        .with_reuse(Reuse::PerSignature);

    let m = MockSigstore::start();
    let http = HttpOptions::default();
    let http_signer = |reuse: Reuse, token: String| {
        KeylessSigner::new(
            Arc::new(StaticToken::parse(&token).unwrap()),
            Arc::new(m.fulcio(http)),
            Arc::new(HttpTsa::new(&m.tsa_url(), http).unwrap()),
            m.root.clone(),
        )
        .with_reuse(reuse)
    };
    let sub = "https://bench.stella.test/signer";
    let http_reuse = http_signer(Reuse::default(), m.token(sub, 3600).await);
    let http_each = http_signer(Reuse::PerSignature, m.token(sub, 3600).await);

    // Warm up (first certificate, connections).
    dev_reuse.attest(&st).await.unwrap();
    http_reuse.attest(&st).await.unwrap();

    let mut totals = [Duration::ZERO; 5];
    for round in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(stella_keys::attest(&st, &[&file_key as &dyn Signer]).unwrap());
        }
        let keyful = t.elapsed();
        let dr = time_keyless(&dev_reuse, &st, n).await;
        let de = time_keyless(&dev_each, &st, n).await;
        let hr = time_keyless(&http_reuse, &st, n_http).await;
        let he = time_keyless(&http_each, &st, n_http).await;
        println!(
            "round {round}: keyful {:.0}/s, dev reuse {:.0}/s, dev per-signature {:.0}/s, http reuse {:.1}/s, http per-signature {:.1}/s",
            per_sec(n, keyful),
            per_sec(n, dr),
            per_sec(n, de),
            per_sec(n_http, hr),
            per_sec(n_http, he)
        );
        for (t, d) in totals.iter_mut().zip([keyful, dr, de, hr, he]) {
            *t += d;
        }
    }
    let nn = n * rounds;
    let nh = n_http * rounds;
    let [k, dr, de, hr, he] = totals;
    let us = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    println!();
    println!("| path | signatures/s | µs/signature | vs keyful | vs reuse |");
    println!("|---|---|---|---|---|");
    println!(
        "| keyful (P-256 file key, DSSE) | {:.0} | {:.0} | 1 | – |",
        per_sec(nn, k),
        us(k, nn)
    );
    println!(
        "| keyless dev CA+TSA, reuse within validity | {:.0} | {:.0} | {:.3} | 1 |",
        per_sec(nn, dr),
        us(dr, nn),
        per_sec(nn, dr) / per_sec(nn, k)
    );
    println!(
        "| keyless dev CA+TSA, one certificate per signature | {:.0} | {:.0} | {:.3} | {:.3} |",
        per_sec(nn, de),
        us(de, nn),
        per_sec(nn, de) / per_sec(nn, k),
        per_sec(nn, de) / per_sec(nn, dr)
    );
    println!(
        "| keyless HTTP Fulcio+TSA (loopback mock), reuse | {:.1} | {:.0} | {:.4} | 1 |",
        per_sec(nh, hr),
        us(hr, nh),
        per_sec(nh, hr) / per_sec(nn, k)
    );
    println!(
        "| keyless HTTP Fulcio+TSA (loopback mock), per signature | {:.1} | {:.0} | {:.4} | {:.3} |",
        per_sec(nh, he), us(he, nh), per_sec(nh, he) / per_sec(nn, k), per_sec(nh, he) / per_sec(nh, hr)
    );
    println!();
    println!(
        "certificate cost per signature: dev {:.0} µs, HTTP {:.0} µs",
        us(de, nn) - us(dr, nn),
        us(he, nh) - us(hr, nh)
    );
}
