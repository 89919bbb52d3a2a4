//! Mirror bundles and registries (issue #4 items 2, 3, 6): `stella mirror create` pulling
//! `ref:` images from one real `docker-registry`, `stella mirror load` pushing the signed
//! bundle into another, cross-checked with `skopeo`; and the faults: a corrupt, unsigned or
//! tampered bundle refused before any request, a registry stopped in the middle of a load,
//! dry runs.

// Helpers build fixtures; a helper that cannot is a failing test with a clear location.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stella_oci::testing::{self, Built, Registry};
use stella_oci::{BlockingClient, ClientConfig, CredentialSource, Digest, Layout, PushOptions};

use crate::support::{argv, assert_exit, assert_exit_ctx, stderr, stdout, stella, tempdir};

/// A work folder with a signing key pair and an upload-journal cache of its own.
struct Env {
    dir: tempfile::TempDir,
    key: String,
    public: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempdir();
        let prefix = dir.path().join("mirror");
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
        Env {
            key: format!("{}.key", prefix.display()),
            public: format!("{}.pub", prefix.display()),
            dir,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cache(&self) -> String {
        self.p("cache").display().to_string()
    }

    /// `stella ARGS` with this folder's journal cache.
    fn stella(&self, args: Vec<std::ffi::OsString>) -> Output {
        stella(args, &[("XDG_CACHE_HOME", &self.cache())])
    }

    fn spec(&self, name: &str, body: &str) -> PathBuf {
        let p = self.p(name);
        std::fs::write(
            &p,
            format!("name: stellaops-airgap\nversion: 2025.10.0\nissuer: mirror-guild@stella-ops.org\n{body}"),
        )
        .unwrap();
        p
    }

    /// create + sign; returns the bundle folder.
    fn bundle(&self, spec: &Path, out: &str) -> PathBuf {
        let dir = self.p(out);
        let o = self.stella(argv![
            "mirror", "create", "--spec", spec, "--output", &dir, "--json"
        ]);
        assert_exit_ctx(&o, 0, "mirror create");
        let o = self.stella(argv![
            "mirror",
            "sign",
            dir.join("manifest.json"),
            "--key",
            &self.key
        ]);
        assert_exit_ctx(&o, 0, "mirror sign");
        dir
    }

    fn load_json(&self, bundle: &Path, registry: &str, extra: &[&str]) -> Value {
        let mut args = argv![
            "mirror",
            "load",
            bundle,
            "--registry",
            registry,
            "--key",
            &self.public,
            "--output",
            "json"
        ];
        args.extend(extra.iter().map(std::ffi::OsString::from));
        let o = self.stella(args);
        assert_exit_ctx(&o, 0, "mirror load");
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn client() -> BlockingClient {
    BlockingClient::new(ClientConfig {
        credentials: CredentialSource::Anonymous,
        ..ClientConfig::default()
    })
    .unwrap()
}

/// Push image `digest` of `layout` to `reg` as `name` (REPO:TAG).
fn push(reg: &Registry, layout: &Layout, digest: &Digest, name: &str) {
    let target = stella_oci::Reference::parse(&format!("{}/{name}", reg.host())).unwrap();
    client()
        .push_from_layout(layout.root(), digest, &target, &PushOptions::default())
        .unwrap();
}

/// The digest of what the registry serves for `reference` (`skopeo inspect --raw`).
fn skopeo_digest(reference: &str) -> Digest {
    let raw = testing::run(testing::skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    Digest::of(raw.as_bytes())
}

/// `GET /v2/_catalog`.
fn catalog(reg: &Registry) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", reg.port())).unwrap();
    s.write_all(b"GET /v2/_catalog HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["repositories"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Registry API requests in the access log other than the readiness probe (`GET /v2/`).
fn api_requests(reg: &Registry) -> Vec<String> {
    reg.log()
        .lines()
        .filter(|l| {
            [
                "\"GET ",
                "\"HEAD ",
                "\"POST ",
                "\"PUT ",
                "\"PATCH ",
                "\"DELETE ",
            ]
            .iter()
            .any(|m| l.contains(m))
                && !l.contains(" /v2/ HTTP")
        })
        .map(str::to_string)
        .collect()
}

/// Blobs whose upload the registry completed (closing `PUT …?digest=` answered 201).
fn completed_digests(reg: &Registry) -> Vec<String> {
    let mut out = Vec::new();
    for l in reg.requests("PUT", "/blobs/uploads/") {
        if !l.contains("\" 201 ") {
            continue;
        }
        for marker in ["digest=sha256:", "digest=sha256%3A", "digest=sha256%3a"] {
            if let Some(i) = l.find(marker) {
                let hex: String = l[i + marker.len()..].chars().take(64).collect();
                out.push(format!("sha256:{hex}"));
            }
        }
    }
    out
}

fn image_entry<'a>(manifest: &'a Value, reference: &str) -> &'a Value {
    manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == reference)
        .unwrap_or_else(|| panic!("no image {reference} in {manifest:#}"))
}

fn count_blobs(bundle: &Path) -> usize {
    std::fs::read_dir(bundle.join("images/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn reports(v: &Value) -> &Vec<Value> {
    v["reports"].as_array().unwrap()
}

#[test]
fn create_from_registry_then_load_into_another() {
    let env = Env::new();
    let a = Registry::start();
    let src = Layout::create(&env.p("src")).unwrap();
    // One base layer under four images; a multi-platform index.
    let base = testing::random_layer(&src, 300_000);
    let l = |n| testing::random_layer(&src, n);
    let scanner = testing::image(&src, "linux/amd64", &[base, l(200_000)]);
    let notify = testing::image(&src, "linux/amd64", &[base, l(150_000)]);
    let amd = testing::image(&src, "linux/amd64", &[base, l(100_000)]);
    let arm = testing::image(&src, "linux/arm64", &[l(120_000)]);
    let multi = testing::index(&src, &[amd.clone(), arm.clone()]);
    let local = testing::image(&src, "linux/amd64", &[base, l(90_000)]);
    src.set_ref(&local.descriptor(), "local").unwrap();
    push(&a, &src, &scanner.digest, "stellaops/scanner:2025.10.0");
    push(&a, &src, &notify.digest, "stellaops/notify:2025.10.0");
    push(&a, &src, &multi.digest, "stellaops/multi:1");

    let ah = a.host();
    let notify_ref = format!("{ah}/stellaops/notify@{}", notify.digest);
    let spec = env.spec(
        "bundle.yaml",
        &format!(
            "images:
  - ref: {ah}/stellaops/scanner:2025.10.0
  - ref: {notify_ref}
  - ref: {ah}/stellaops/multi:1
  - ref: {ah}/stellaops/multi:1
    reference: registry.stella-ops.org/stellaops/multi:1-amd64
    platforms: [linux/amd64]
  - reference: registry.stella-ops.org/stellaops/local:1
    ociLayout: src
    refName: local
"
        ),
    );
    let bundle = env.bundle(&spec, "bundle");

    // Recorded like local images: reference, digest, platforms.
    let m: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let check = |reference: &str, img: &Built, platforms: &[&str]| {
        let e = image_entry(&m, reference);
        assert_eq!(e["digest"], img.digest.to_string(), "{reference}");
        let got: Vec<&str> = e["platforms"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got, platforms, "{reference}");
    };
    check(
        &format!("{ah}/stellaops/scanner:2025.10.0"),
        &scanner,
        &["linux/amd64"],
    );
    check(&notify_ref, &notify, &["linux/amd64"]);
    check(
        &format!("{ah}/stellaops/multi:1"),
        &multi,
        &["linux/amd64", "linux/arm64"],
    );
    check(
        "registry.stella-ops.org/stellaops/multi:1-amd64",
        &amd,
        &["linux/amd64"],
    );
    check(
        "registry.stella-ops.org/stellaops/local:1",
        &local,
        &["linux/amd64"],
    );
    // One shared layout: 6 layers, 5 configs, 6 manifests/indexes, each stored once.
    assert_eq!(count_blobs(&bundle), 17);
    let index: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("images/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 5);
    // skopeo reads the bundle's layout by reference, as before.
    let raw = testing::run(testing::skopeo().args([
        "inspect",
        "--raw",
        &format!(
            "oci:{}:registry.stella-ops.org/stellaops/multi:1-amd64",
            bundle.join("images").display()
        ),
    ]));
    assert_eq!(Digest::of(raw.as_bytes()), amd.digest);

    // Pack, then load the archive into another registry.
    let archive = env.p("bundle.tar.zst");
    assert_exit(
        &env.stella(argv!["mirror", "pack", &bundle, "--output", &archive]),
        0,
    );
    let b = Registry::start();
    let bh = b.host();
    let v = env.load_json(&archive, &bh, &[]);
    assert_eq!(v["verified"], true);
    assert_eq!(v["fromArchive"], true);
    assert_eq!(v["dryRun"], false);
    assert_eq!(reports(&v).len(), 5);
    let totals = &v["totals"];
    let blobs: usize = reports(&v)
        .iter()
        .map(|r| r["blobs"].as_array().unwrap().len())
        .sum();
    let counted = [
        "blobsUploaded",
        "blobsResumed",
        "blobsMounted",
        "blobsExisting",
    ]
    .iter()
    .map(|k| totals[k].as_u64().unwrap() as usize)
    .sum::<usize>();
    assert_eq!(counted, blobs, "{totals}");
    assert!(totals["bytesUploaded"].as_u64().unwrap() > 300_000);
    // The shared base layer went over the wire once; other repositories mounted it.
    assert!(totals["blobsMounted"].as_u64().unwrap() >= 1, "{totals}");

    // Same digests on B, under the same repositories and tags (or digest when untagged).
    let expect = [
        (format!("{bh}/stellaops/scanner:2025.10.0"), scanner.digest),
        (
            format!("{bh}/stellaops/notify@{}", notify.digest),
            notify.digest,
        ),
        (format!("{bh}/stellaops/multi:1"), multi.digest),
        (format!("{bh}/stellaops/multi:1-amd64"), amd.digest),
        (format!("{bh}/stellaops/local:1"), local.digest),
        // The index's other platform came along.
        (format!("{bh}/stellaops/multi@{}", arm.digest), arm.digest),
    ];
    for (target, digest) in &expect {
        assert_eq!(skopeo_digest(target), *digest, "{target}");
    }
    let inspect: Value = serde_json::from_str(&testing::run(testing::skopeo().args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{bh}/stellaops/scanner:2025.10.0"),
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"], scanner.digest.to_string());
    for r in reports(&v) {
        let e = image_entry(&m, r["reference"].as_str().unwrap());
        assert_eq!(r["digest"], e["digest"]);
        assert!(r["target"].as_str().unwrap().starts_with(&bh));
    }

    // Again, from the folder: everything is already there.
    let uploads = b.completed_uploads();
    let v = env.load_json(&bundle, &bh, &[]);
    assert_eq!(v["fromArchive"], false);
    assert_eq!(v["totals"]["blobsUploaded"], 0, "{:#}", v["totals"]);
    assert_eq!(v["totals"]["blobsResumed"], 0);
    assert_eq!(v["totals"]["bytesUploaded"], 0);
    for r in reports(&v) {
        for blob in r["blobs"].as_array().unwrap() {
            assert_eq!(blob["action"], "existed", "{blob}");
        }
    }
    assert_eq!(b.completed_uploads(), uploads);

    // Dry run with a prefix into a fresh registry: reports what it would push, pushes nothing.
    let c = Registry::start();
    let ch = c.host();
    let v = env.load_json(&bundle, &ch, &["--dry-run", "--prefix", "mirror/site-a"]);
    assert_eq!(v["dryRun"], true);
    for r in reports(&v) {
        assert!(
            r["target"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{ch}/mirror/site-a/stellaops/")),
            "{}",
            r["target"]
        );
        for blob in r["blobs"].as_array().unwrap() {
            assert_eq!(blob["action"], "would-upload", "{blob}");
        }
    }
    assert!(catalog(&c).is_empty());
    for m in ["PUT", "POST", "PATCH"] {
        assert!(c.requests(m, "/v2/").is_empty(), "{m} during a dry run");
    }

    // The bundle's own scripts/load.sh does the same with `stella mirror load`.
    let bin = Path::new(crate::support::stella_bin()).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(bundle.join("scripts/load.sh"))
        .args([&ch, "--key", &env.public, "--prefix", "mirror/site-a"])
        .env("PATH", path)
        .env("XDG_CACHE_HOME", env.cache())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit_ctx(&out, 0, "scripts/load.sh");
    assert!(stdout(&out).contains("Verified OK"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("advisories are in"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        skopeo_digest(&format!("{ch}/mirror/site-a/stellaops/scanner:2025.10.0")),
        scanner.digest
    );
    let mut repos = catalog(&c);
    repos.sort();
    assert_eq!(
        repos,
        [
            "mirror/site-a/stellaops/local",
            "mirror/site-a/stellaops/multi",
            "mirror/site-a/stellaops/notify",
            "mirror/site-a/stellaops/scanner"
        ]
    );

    // A thin update pulling from the registry carries only the new blobs; it cannot be
    // loaded on its own.
    let next = testing::image(&src, "linux/amd64", &[base, l(80_000)]);
    push(&a, &src, &next.digest, "stellaops/scanner:2025.11.0");
    let spec2 = env.spec(
        "bundle2.yaml",
        &format!(
            "generation: 2
images:
  - ref: {ah}/stellaops/scanner:2025.10.0
  - ref: {ah}/stellaops/scanner:2025.11.0
  - ref: {notify_ref}
  - ref: {ah}/stellaops/multi:1
"
        ),
    );
    let thin = env.p("thin");
    let o = env.stella(argv![
        "mirror",
        "create",
        "--spec",
        &spec2,
        "--base",
        bundle.join("manifest.json"),
        "--output",
        &thin
    ]);
    assert_exit_ctx(&o, 0, "thin create");
    // New: one layer, one config, one manifest.
    assert_eq!(count_blobs(&thin), 3);
    assert!(thin
        .join("images/blobs/sha256")
        .join(next.digest.hex())
        .exists());
    assert_exit(
        &env.stella(argv![
            "mirror",
            "sign",
            thin.join("manifest.json"),
            "--key",
            &env.key
        ]),
        0,
    );
    let o = env.stella(argv![
        "mirror",
        "load",
        &thin,
        "--registry",
        &bh,
        "--key",
        &env.public
    ]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("thin bundle"), "{}", stderr(&o));
}

/// A signed bundle of one local image (layers of the given payload sizes).
fn local_bundle(env: &Env, layers: &[u64]) -> (PathBuf, Built) {
    let (_, img) = testing::layout_with_image(&env.p("src"), "app", layers);
    let spec = env.spec(
        "bundle.yaml",
        "images:\n  - reference: registry.stella-ops.org/stellaops/app:1.0\n    ociLayout: src\n    refName: app\n",
    );
    (env.bundle(&spec, "bundle"), img)
}

#[test]
fn bad_bundles_are_refused_before_any_request() {
    let env = Env::new();
    let (bundle, img) = local_bundle(&env, &[200_000, 100_000]);
    let reg = Registry::start();
    let host = reg.host();
    let load = |target: &Path, key: &str| {
        env.stella(argv![
            "mirror",
            "load",
            target,
            "--registry",
            &host,
            "--key",
            key
        ])
    };

    // Untrusted key.
    let other = stella(
        argv![
            "key",
            "generate",
            "--algorithm",
            "p256",
            "--output",
            env.p("other")
        ],
        &[],
    );
    assert_exit(&other, 0);
    let o = load(&bundle, &env.p("other.pub").display().to_string());
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no signature verifies"),
        "{}",
        stderr(&o)
    );

    // A corrupted layer (same size), in the folder and in an archive packed from it.
    let layer = bundle
        .join("images/blobs/sha256")
        .join(img.layers[0].digest.hex());
    let good = std::fs::read(&layer).unwrap();
    let archive = env.p("good.tar.gz");
    assert_exit(
        &env.stella(argv!["mirror", "pack", &bundle, "--output", &archive]),
        0,
    );
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x55;
    std::fs::write(&layer, &bad).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = argv![
            "mirror",
            "load",
            &bundle,
            "--registry",
            &host,
            "--key",
            &env.public
        ];
        args.extend(extra.iter().map(std::ffi::OsString::from));
        let o = env.stella(args);
        assert_exit(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("does not match the signed manifest")
                && err.contains(&img.layers[0].digest.hex()),
            "{err}"
        );
    }
    std::fs::write(&layer, &good).unwrap();
    // Other files are hashed by the verification itself.
    let script = bundle.join("scripts/load.sh");
    let text = std::fs::read(&script).unwrap();
    std::fs::write(&script, [&text[..], b"#"].concat()).unwrap();
    let o = load(&bundle, &env.public);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("file scripts/load.sh changed"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&script, &text).unwrap();
    // A blob missing, and one too many.
    std::fs::rename(&layer, env.p("aside")).unwrap();
    let o = load(&bundle, &env.public);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("is missing"), "{}", stderr(&o));
    std::fs::rename(env.p("aside"), &layer).unwrap();
    std::fs::write(bundle.join("images/blobs/sha256/extra"), b"x").unwrap();
    let o = load(&bundle, &env.public);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("unlisted file images/blobs/sha256/extra"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(bundle.join("images/blobs/sha256/extra")).unwrap();
    // The same corruption inside the archive (decompressed, patched, recompressed).
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let probe = &good[at - 32..at + 32];
    let pos = tar
        .windows(probe.len())
        .position(|w| w == probe)
        .expect("layer bytes in the archive");
    tar[pos + 32] ^= 0x55;
    let bad_archive = env.p("bad.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bad_archive).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
    let o = load(&bad_archive, &env.public);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("changed"), "{}", stderr(&o));

    // Tampered manifest.json.
    let mpath = bundle.join("manifest.json");
    let manifest = std::fs::read(&mpath).unwrap();
    let edited = String::from_utf8(manifest.clone()).unwrap().replace(
        "registry.stella-ops.org/stellaops/app:1.0",
        "registry.stella-ops.org/stellaops/app:6.6",
    );
    std::fs::write(&mpath, edited).unwrap();
    let o = load(&bundle, &env.public);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("manifest.json differs"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&mpath, &manifest).unwrap();

    // Unsigned.
    std::fs::remove_file(bundle.join("manifest.dsse")).unwrap();
    let o = load(&bundle, &env.public);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("not signed"), "{}", stderr(&o));

    // The registry never heard from us.
    assert!(api_requests(&reg).is_empty(), "{:#?}", api_requests(&reg));
    assert!(catalog(&reg).is_empty());

    // The good archive still loads.
    let v = env.load_json(&archive, &host, &[]);
    assert_eq!(reports(&v)[0]["digest"], img.digest.to_string());
    assert_eq!(
        skopeo_digest(&format!("{host}/stellaops/app:1.0")),
        img.digest
    );
}

#[test]
fn registry_stopped_mid_load_then_rerun_resumes() {
    let env = Env::new();
    let (bundle, img) = local_bundle(&env, &[40_000, 60_000, 24 << 20, 24 << 20, 24 << 20]);
    let mut reg = Registry::start();
    let host = reg.host();
    let mut child = Command::new(crate::support::stella_bin())
        .args(["mirror", "load"])
        .arg(&bundle)
        .args(["--registry", &host, "--key", &env.public])
        .env("XDG_CACHE_HOME", env.cache())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the registry as soon as two blobs are complete (the large ones are still going).
    let deadline = Instant::now() + Duration::from_secs(60);
    while reg.completed_uploads() < 2 {
        assert!(
            Instant::now() < deadline,
            "no upload finished:\n{}",
            reg.log()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "load ended before the registry was stopped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    reg.stop();
    let finished = completed_digests(&reg);
    assert!(finished.len() >= 2 && finished.len() < 6, "{finished:?}");
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 10);
    let err = stderr(&out);
    assert!(
        err.contains("unreachable") && err.contains("rerun to resume"),
        "{err}"
    );

    reg.restart();
    let v = env.load_json(&bundle, &host, &[]);
    let r = &reports(&v)[0];
    assert_eq!(r["digest"], img.digest.to_string());
    // Finished blobs were found, not sent again; the rest went up now.
    for d in &finished {
        let b = r["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["digest"] == d.as_str())
            .unwrap_or_else(|| panic!("{d} not in {r:#}"));
        assert_eq!(b["action"], "existed", "{b}");
        assert!(reg.requests("PUT", d).is_empty(), "{d} uploaded again");
    }
    // (A blob may have completed between reading the log and the kill: it counts as existing.)
    let existing: Vec<&str> = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "existed")
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    for d in &existing {
        assert!(reg.requests("PUT", d).is_empty(), "{d} uploaded again");
    }
    let sent = r["blobsUploaded"].as_u64().unwrap() + r["blobsResumed"].as_u64().unwrap();
    assert!(sent >= 1, "nothing was left to send: {r:#}");
    assert_eq!(sent as usize + existing.len(), 6, "{r:#}");
    assert_eq!(reg.completed_uploads(), sent as usize);
    assert_eq!(
        skopeo_digest(&format!("{host}/stellaops/app:1.0")),
        img.digest
    );
}

#[test]
fn create_reports_registry_failures_with_their_exit_codes() {
    let env = Env::new();
    let reg = Registry::start();
    let (layout, img) = testing::layout_with_image(&env.p("src"), "app", &[10_000]);
    push(&reg, &layout, &img.digest, "stellaops/app:1");
    let host = reg.host();
    let cases = [
        (
            format!("  - ref: {host}/stellaops/missing:1\n"),
            4,
            "not found",
        ),
        (
            format!("  - ref: {host}/stellaops/app:1\n    platforms: [linux/arm64]\n"),
            2,
            "platform filter excludes",
        ),
        (
            format!(
                "  - ref: 127.0.0.1:{}/stellaops/app:1\n",
                testing::free_port()
            ),
            10,
            "unreachable",
        ),
    ];
    for (i, (images, code, why)) in cases.iter().enumerate() {
        let spec = env.spec(&format!("s{i}.yaml"), &format!("images:\n{images}"));
        let out = env.p(&format!("out{i}"));
        let o = env.stella(argv!["mirror", "create", "--spec", &spec, "--output", &out]);
        assert_exit_ctx(&o, *code, images);
        assert!(stderr(&o).contains(why), "{images}: {}", stderr(&o));
        assert!(!out.exists(), "{} left behind", out.display());
    }
}
