//! Registry benchmark (issue #4 item 7), run by `scripts/oci-bench.sh`:
//!
//! - load: push a layout of several images sharing layers (≥ 1 GiB of unique blobs) into a
//!   fresh local `docker-registry` with `push_from_layout`, against `skopeo copy oci:… docker://…`
//!   of the same images into another fresh registry;
//! - pull: `pull_to_layout` of those images into an empty layout, against `skopeo copy
//!   docker://… oci:…`.
//!
//! Rounds alternate (ours, skopeo, ours, skopeo, …) with fresh registries and layouts each
//! round; the best round of each side is compared and the ratio printed (skopeo time / our
//! time: above 1.0 we are faster). Size: `STELLA_OCI_BENCH_MIB` (default 1100), rounds:
//! `STELLA_OCI_BENCH_ROUNDS` (default 2).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use stella_oci::testing::{self, run, skopeo, Built, Registry};
use stella_oci::{
    BlockingClient, ClientConfig, CredentialSource, Layout, Platforms, PullOptions, PushOptions,
    Reference,
};

const IMAGES: usize = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let total_mib = env_u64("STELLA_OCI_BENCH_MIB", 1100);
    let rounds = env_u64("STELLA_OCI_BENCH_ROUNDS", 2).max(1);
    let work = tempfile::Builder::new()
        .prefix("stella-oci-bench-")
        .tempdir()
        .unwrap();
    let src_dir = work.path().join("layout");

    // One shared base layer (~30 %), two own layers per image.
    let t = Instant::now();
    let layout = Layout::create(&src_dir).unwrap();
    let base_mib = total_mib * 3 / 10;
    let own_mib = (total_mib - base_mib) / (IMAGES as u64 * 2);
    let base = testing::random_layer(&layout, base_mib << 20);
    let mut images: Vec<Built> = Vec::new();
    for i in 0..IMAGES {
        let a = testing::random_layer(&layout, own_mib << 20);
        let b = testing::random_layer(&layout, own_mib << 20);
        let small = testing::random_layer(&layout, 4096);
        let img = testing::image(&layout, "linux/amd64", &[base, a, b, small]);
        layout
            .set_ref(&img.descriptor(), &format!("img{i}"))
            .unwrap();
        images.push(img);
    }
    let unique: u64 = std::fs::read_dir(src_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let referenced: u64 = images
        .iter()
        .map(|i| i.layers.iter().map(|l| l.size).sum::<u64>())
        .sum();
    println!(
        "layout: {IMAGES} images, {:.2} GiB unique blobs ({:.2} GiB referenced), built in {:.1}s",
        unique as f64 / (1u64 << 30) as f64,
        referenced as f64 / (1u64 << 30) as f64,
        secs(t.elapsed())
    );
    assert!(
        total_mib < 1024 || unique >= 1 << 30,
        "layout smaller than 1 GiB"
    );

    let defaults = ClientConfig::default();
    let mono = env_u64(
        "STELLA_OCI_BENCH_MONOLITHIC_MIB",
        defaults.monolithic_max >> 20,
    ) << 20;
    let chunk = env_u64("STELLA_OCI_BENCH_CHUNK_MIB", defaults.chunk_size >> 20) << 20;
    let concurrency = env_u64("STELLA_OCI_BENCH_CONCURRENCY", defaults.concurrency as u64) as usize;
    println!(
        "stella: {concurrency} transfers at once, one request up to {} MiB, {} MiB chunks above",
        mono >> 20,
        chunk >> 20
    );
    let client = || {
        BlockingClient::new(ClientConfig {
            credentials: CredentialSource::Anonymous,
            monolithic_max: mono,
            chunk_size: chunk,
            concurrency,
            ..ClientConfig::default()
        })
        .unwrap()
    };

    let mut ours_load = Vec::new();
    let mut skopeo_load = Vec::new();
    let mut ours_pull = Vec::new();
    let mut skopeo_pull = Vec::new();
    for round in 1..=rounds {
        // --- load: ours
        let reg = Registry::start();
        let c = client();
        let t = Instant::now();
        // What `stella mirror load` does: all images of the layout, verified once.
        let targets: Vec<(stella_oci::Digest, Reference)> = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let r = Reference::parse(&format!("{}/bench/img{i}:1", reg.host())).unwrap();
                (img.digest, r)
            })
            .collect();
        let reports = c
            .push_all_from_layout(&src_dir, &targets, &PushOptions::default())
            .unwrap();
        let d = t.elapsed();
        assert_eq!(reports.len(), images.len());
        ours_load.push(d);
        println!("round {round}: stella load  {:7.2}s", secs(d));

        // --- pull: ours, from the registry we just loaded
        let dst = work.path().join(format!("ours-pull-{round}"));
        let c = client();
        let t = Instant::now();
        for (i, img) in images.iter().enumerate() {
            let r = Reference::parse(&format!("{}/bench/img{i}:1", reg.host())).unwrap();
            let p = c
                .pull_to_layout(&r, &Platforms::All, &dst, &PullOptions::default())
                .unwrap();
            assert_eq!(p.digest, img.digest);
        }
        let d = t.elapsed();
        ours_pull.push(d);
        println!("round {round}: stella pull  {:7.2}s", secs(d));
        std::fs::remove_dir_all(&dst).unwrap();
        drop(reg);

        // --- load: skopeo, into a fresh registry
        let reg = Registry::start();
        let t = Instant::now();
        for i in 0..images.len() {
            run(skopeo().args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci:{}:img{i}", src_dir.display()),
                &format!("docker://{}/bench/img{i}:1", reg.host()),
            ]));
        }
        let d = t.elapsed();
        skopeo_load.push(d);
        println!("round {round}: skopeo load {:7.2}s", secs(d));
        check_digests(&reg, &images);

        // --- pull: skopeo
        let dst = work.path().join(format!("skopeo-pull-{round}"));
        let t = Instant::now();
        for i in 0..images.len() {
            run(skopeo().args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{}/bench/img{i}:1", reg.host()),
                &format!("oci:{}:img{i}", dst.display()),
            ]));
        }
        let d = t.elapsed();
        skopeo_pull.push(d);
        println!("round {round}: skopeo pull {:7.2}s", secs(d));
        check_layout(&dst, &images);
        std::fs::remove_dir_all(&dst).unwrap();
        drop(reg);
    }

    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let gib = unique as f64 / (1u64 << 30) as f64;
    let report = |what: &str, ours: Duration, theirs: Duration| {
        println!(
            "{what}: stella {:.2}s ({:.0} MiB/s), skopeo {:.2}s ({:.0} MiB/s), ratio {:.2}x",
            secs(ours),
            gib * 1024.0 / secs(ours),
            secs(theirs),
            gib * 1024.0 / secs(theirs),
            secs(theirs) / secs(ours)
        );
    };
    println!("--- best of {rounds} round(s), {gib:.2} GiB of unique blobs, {IMAGES} images");
    report("load (push)", best(&ours_load), best(&skopeo_load));
    report("pull", best(&ours_pull), best(&skopeo_pull));
}

/// skopeo's pushes kept our digests.
fn check_digests(reg: &Registry, images: &[Built]) {
    for (i, img) in images.iter().enumerate() {
        let raw = run(skopeo().args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/bench/img{i}:1", reg.host()),
        ]));
        assert_eq!(stella_oci::Digest::of(raw.as_bytes()), img.digest);
    }
}

fn check_layout(dir: &Path, images: &[Built]) {
    let l = Layout::open(dir).unwrap();
    for (i, img) in images.iter().enumerate() {
        assert_eq!(
            l.find_ref(&format!("img{i}")).unwrap().unwrap().digest,
            img.digest
        );
    }
}
