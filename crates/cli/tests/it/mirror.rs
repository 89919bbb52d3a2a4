//! `stella mirror` end to end: create from a spec (OCI layouts and docker archives built by
//! hand here), sign, verify, pack, unpack, thin updates — and every hostile case of issue #3
//! with its exact message fragment and exit code.

// Test helpers build fixtures; a helper that cannot is a failing test with a clear location.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const PW: &str = "pw";

fn sha(data: &[u8]) -> String {
    stella_keys::hex(&stella_keys::sha256(data))
}

/// A test folder with keys and sources.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::Builder::new()
                .prefix("stella-mirror-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stella"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", PW)
            .env_remove("SOURCE_DATE_EPOCH");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run stella")
    }

    fn keygen(&self, name: &str) {
        let out = self.run(&[
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--output",
            name,
        ]);
        expect(&out, 0, "");
    }

    /// Sources: two OCI layouts sharing a layer, a docker archive (legacy) sharing it too,
    /// an advisory file and an advisory folder; and the spec naming them.
    fn sources(&self, generation: u64, variant: &str) {
        let shared = b"shared layer bytes".repeat(1000);
        oci_layout(
            &self.p("src/app"),
            &[shared.as_slice(), format!("app layer {variant}").as_bytes()],
            "amd64",
            "1.0",
        );
        oci_layout(
            &self.p("src/web"),
            &[shared.as_slice(), b"web layer"],
            "arm64",
            "2.0",
        );
        docker_archive(
            &self.p("src/worker.tar"),
            &[shared.as_slice(), b"worker layer"],
        );
        std::fs::create_dir_all(self.p("src/feeds/ghsa/2025")).unwrap();
        write(
            self.p("src/feeds/nvd.json"),
            format!("{{\"nvd\":\"{variant}\"}}"),
        );
        write(
            self.p("src/feeds/ghsa/2025/GHSA-1.json"),
            b"{\"id\":\"GHSA-1\"}",
        );
        write(self.p("src/feeds/ghsa/index.json"), b"[]");
        write(
            self.p("src/bundle.yaml"),
            format!(
                "name: stellaops-airgap\nversion: 2025.10.{generation}\ngeneration: {generation}\n\
                 issuer: mirror-guild@stella-ops.org\nvalidForSeconds: 3600\nimages:\n\
                 \x20 - reference: registry.stella-ops.org/stellaops/app:1.0\n    ociLayout: app\n\
                 \x20 - reference: registry.stella-ops.org/stellaops/web:2.0\n    ociLayout: web\n    refName: \"2.0\"\n\
                 \x20 - reference: registry.stella-ops.org/stellaops/worker:1.0\n    dockerArchive: worker.tar\n\
                 advisories:\n  - path: feeds/nvd.json\n  - path: feeds/ghsa\n"
            ),
        );
    }

    fn create(&self, out: &str, extra: &[&str]) -> Output {
        let spec = self.s("src/bundle.yaml");
        let mut args = vec!["mirror", "create", "--spec", spec.as_str(), "--output", out];
        args.extend(extra);
        self.run(&args)
    }

    fn sign(&self, bundle: &str, keys: &[&str]) {
        let m = format!("{bundle}/manifest.json");
        let o = format!("{bundle}/manifest.dsse");
        let mut args = vec!["mirror", "sign", m.as_str()];
        for k in keys {
            args.extend(["--key", k]);
        }
        args.extend(["--output", o.as_str()]);
        expect(&self.run(&args), 0, "Signed");
    }

    /// A signed full bundle in `b/` by key `k`.
    fn signed_bundle(&self) {
        self.keygen("k");
        self.sources(1, "a");
        expect(&self.create("b", &[]), 0, "Created full bundle");
        self.sign("b", &["k.key"]);
    }

    fn verify(&self, target: &str, extra: &[&str]) -> Output {
        let mut args = vec!["mirror", "verify", target];
        if !extra.iter().any(|a| *a == "--keyring" || *a == "--key") {
            args.extend(["--key", "k.pub"]);
        }
        args.extend(extra);
        self.run(&args)
    }
}

#[track_caller]
fn expect(out: &Output, code: i32, fragment: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, got {:?}:\n{text}",
        out.status
    );
    assert!(
        text.contains(fragment),
        "expected {fragment:?} in output:\n{text}"
    );
}

fn write(p: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let p = p.as_ref();
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha(data);
    write(layout.join("blobs/sha256").join(&d), data);
    format!("sha256:{d}")
}

/// An OCI image layout with one image (config + the given layers), tagged `tag`.
fn oci_layout(dir: &Path, layers: &[&[u8]], arch: &str, tag: &str) -> String {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = put_blob(dir, &config);
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put_blob(dir, l), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
    write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                           "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
        }))
        .unwrap(),
    );
    md
}

/// A legacy `docker save` archive: manifest.json, <config>.json, <id>/layer.tar.
fn docker_archive(path: &Path, layers: &[&[u8]]) {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", sha(&config));
    let layer_names: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| format!("{i:064}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": ["stellaops/worker:1.0"], "Layers": layer_names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    for (n, l) in layer_names.iter().zip(layers) {
        add(n, l);
    }
    add("manifest.json", &manifest);
    write(path, b.into_inner().unwrap());
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk_files(dir, |e| std::fs::read(e.path()).unwrap())
}

/// Every file under `dir` (relative path) with its size, sorted; nothing read.
fn sizes(dir: &Path) -> Vec<(String, u64)> {
    walk_files(dir, |e| e.metadata().unwrap().len())
}

/// Every file under `dir` (relative path) with what `of` makes of it, sorted by path.
fn walk_files<T: Ord>(dir: &Path, of: impl Fn(&std::fs::DirEntry) -> T) -> Vec<(String, T)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, of(&e)));
            }
        }
    }
    out.sort();
    out
}

// ------------------------------------------------------------------------------------------
// create / sign / verify
// ------------------------------------------------------------------------------------------

#[test]
fn create_writes_the_spec_layout_with_shared_blobs() {
    let env = Env::new();
    env.sources(1, "a");
    let out = env.create("b", &[]);
    expect(&out, 0, "Created full bundle stellaops-airgap 2025.10.1");
    let b = env.p("b");
    for f in [
        "manifest.json",
        "images/oci-layout",
        "images/index.json",
        "advisories/nvd.json",
        "advisories/ghsa/2025/GHSA-1.json",
        "scripts/load.sh",
        "scripts/verify.sh",
        "scripts/update.sh",
        "docs/INSTALL.md",
        "docs/VERIFY.md",
        "docs/TROUBLESHOOT.md",
    ] {
        assert!(b.join(f).is_file(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(b.join("scripts/load.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // The shared layer is stored once, though three images use it.
    let shared = sha(&b"shared layer bytes".repeat(1000));
    assert!(b.join("images/blobs/sha256").join(&shared).is_file());
    let m = manifest(&b);
    let paths: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.iter().filter(|p| p.ends_with(&shared)).count(), 1);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "files sorted by path");
    assert_eq!(m["kind"], "full");
    assert_eq!(m["purpose"], "mirror-bundle");
    assert_eq!(m["validForSeconds"], 3600);
    assert!(m.get("base").is_none() && m.get("removed").is_none());
    let images = m["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(images[0]["platforms"], json!(["linux/amd64"]));
    assert_eq!(images[1]["platforms"], json!(["linux/arm64"]));
    // index.json names every image by reference.
    let index: Value =
        serde_json::from_slice(&std::fs::read(b.join("images/index.json")).unwrap()).unwrap();
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(refs.len(), 3);
    assert!(refs.contains(&"registry.stella-ops.org/stellaops/worker:1.0"));
    // The manifest is canonical JSON.
    let raw = std::fs::read(b.join("manifest.json")).unwrap();
    assert_eq!(stella_dsse::jcs::canonicalize(&raw).unwrap(), raw);
    // Output must be new.
    expect(&env.create("b", &[]), 2, "exists and is not empty");
}

#[test]
fn create_is_deterministic() {
    let env = Env::new();
    env.sources(1, "a");
    let t = "2025-12-06T10:00:00Z";
    expect(&env.create("one", &["--generated-at", t]), 0, "");
    expect(&env.create("two", &["--generated-at", t]), 0, "");
    assert_eq!(all_files(&env.p("one")), all_files(&env.p("two")));
    assert_eq!(
        manifest(&env.p("one"))["generatedAt"],
        "2025-12-06T10:00:00.000Z"
    );
    // SOURCE_DATE_EPOCH pins it too; unpinned runs differ only in generatedAt.
    let spec = env.s("src/bundle.yaml");
    let out = env.run_env(
        &["mirror", "create", "--spec", &spec, "--output", "three"],
        &[("SOURCE_DATE_EPOCH", "1765015200")],
    );
    expect(&out, 0, "");
    assert_eq!(all_files(&env.p("one")), all_files(&env.p("three")));
    expect(&env.create("four", &[]), 0, "");
    let mut a = manifest(&env.p("one"));
    let mut b = manifest(&env.p("four"));
    a["generatedAt"] = Value::Null;
    b["generatedAt"] = Value::Null;
    assert_eq!(a, b);
}

#[test]
fn create_checks_blob_digests_on_the_way_in() {
    let env = Env::new();
    env.sources(1, "a");
    // A layer blob whose bytes no longer match its name.
    let shared = sha(&b"shared layer bytes".repeat(1000));
    write(env.p("src/app/blobs/sha256").join(&shared), b"tampered");
    expect(&env.create("b", &[]), 1, "does not match its descriptor");
    assert!(!env.p("b").exists(), "nothing left behind");
    // One far larger than its descriptor (64 GiB, sparse): refused after one byte past the
    // described size, not copied whole into the bundle.
    let blob = env.p("src/app/blobs/sha256").join(&shared);
    std::fs::File::create(&blob)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let described = b"shared layer bytes".repeat(1000).len();
    expect(
        &env.create("b", &[]),
        1,
        &format!(
            "does not match its descriptor (expected {described} bytes, got 68719476736 bytes: not read past the expected size)"
        ),
    );
    assert!(!env.p("b").exists(), "nothing left behind");
    // A docker archive whose layer does not match the config's diff_ids.
    let env = Env::new();
    env.sources(1, "a");
    docker_archive(&env.p("src/worker.tar"), &[b"one"]);
    let mut bytes = std::fs::read(env.p("src/worker.tar")).unwrap();
    let pos = bytes.windows(3).position(|w| w == b"one").unwrap();
    bytes[pos] = b'0';
    write(env.p("src/worker.tar"), bytes);
    expect(&env.create("b", &[]), 1, "but the image config says");
    // Spec mistakes are usage errors.
    write(
        env.p("src/bad.yaml"),
        "name: x\nversion: 1\nissuer: i\nimagez: []\n",
    );
    let spec = env.s("src/bad.yaml");
    expect(
        &env.run(&["mirror", "create", "--spec", &spec, "--output", "c"]),
        2,
        "unknown field `imagez`",
    );
    expect(
        &env.run(&["mirror", "create", "--spec", "nope.yaml", "--output", "c"]),
        4,
        "no such file",
    );
}

#[test]
fn sign_and_verify_multi_signature_bundle() {
    let env = Env::new();
    env.keygen("k");
    env.keygen("k2");
    env.sources(1, "a");
    expect(&env.create("b", &[]), 0, "");
    env.sign("b", &["k.key", "k2.key"]);
    let b = env.p("b");
    for f in [
        "manifest.dsse",
        "SHA256SUMS",
        "SHA256SUMS.dsse",
        "SHA256SUMS.sig",
        "public-key.pem",
        "mirror/metadata/mirror.dsse.json",
    ] {
        assert!(b.join(f).is_file(), "{f} missing");
    }
    let env_json: Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.dsse")).unwrap()).unwrap();
    assert_eq!(
        env_json["payloadType"],
        "application/vnd.stellaops.mirror+json;version=1"
    );
    assert_eq!(env_json["signatures"].as_array().unwrap().len(), 2);
    let header: Value =
        serde_json::from_slice(&std::fs::read(b.join("mirror/metadata/mirror.dsse.json")).unwrap())
            .unwrap();
    assert_eq!(header["purpose"], "mirror-bundle");
    assert_eq!(header["issuer"], "mirror-guild@stella-ops.org");
    let m = manifest(&b);
    assert_eq!(m["checksums"][0]["path"], "SHA256SUMS");
    assert_eq!(
        m["checksums"][0]["sha256"],
        sha(&std::fs::read(b.join("SHA256SUMS")).unwrap())
    );

    // Both keys: threshold 2 is met.
    let out = env.run(&[
        "mirror",
        "verify",
        "b/manifest.dsse",
        "--key",
        "k.pub",
        "--key",
        "k2.pub",
        "--threshold",
        "2",
    ]);
    expect(&out, 0, "Verified OK: stellaops-airgap 2025.10.1");
    expect(&out, 0, "warning: no Rekor entry");
    // The folder itself, JSON report.
    let out = env.verify("b", &["--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
    assert!(v["files"].as_u64().unwrap() > 10);
    // Only one of the two required keys trusted.
    let out = env.verify("b/manifest.dsse", &["--threshold", "2"]);
    expect(&out, 1, "threshold 2 is larger than the 1 trusted key");

    // SHA256SUMS.sig is a cosign sign-blob signature over SHA256SUMS by the first key.
    let out = env.run(&[
        "verify",
        "blob",
        "--key",
        "k.pub",
        "--signature",
        "b/SHA256SUMS.sig",
        "b/SHA256SUMS",
    ]);
    expect(&out, 0, "Verified OK");
    // Plain coreutils accepts SHA256SUMS.
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&b)
        .output()
        .unwrap();
    expect(&out, 0, "OK");
    expect(
        &env.run(&["mirror", "verify-checksums", "b"]),
        0,
        "SHA256SUMS OK",
    );
    write(b.join("advisories/nvd.json"), b"changed");
    expect(
        &env.run(&["mirror", "verify-checksums", "b"]),
        1,
        "file advisories/nvd.json changed",
    );
}

#[test]
fn seed_command_lines_work() {
    // Seed 000: create --images FILE --output bundle/; sign --key --output bundle/manifest.dsse;
    // verify bundle/manifest.dsse --key PUB; verify-checksums bundle/; pack bundle/ --output X.tar.gz.
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    let spec = env.s("src/bundle.yaml");
    expect(
        &env.run(&["mirror", "create", "--images", &spec, "--output", "bundle/"]),
        0,
        "",
    );
    expect(
        &env.run(&[
            "mirror",
            "sign",
            "bundle/manifest.json",
            "--key",
            "k.key",
            "--output",
            "bundle/manifest.dsse",
        ]),
        0,
        "",
    );
    expect(
        &env.run(&["mirror", "verify", "bundle/manifest.dsse", "--key", "k.pub"]),
        0,
        "Verified OK",
    );
    expect(
        &env.run(&["mirror", "verify-checksums", "bundle/"]),
        0,
        "OK",
    );
    expect(
        &env.run(&[
            "mirror",
            "pack",
            "bundle/",
            "--output",
            "stellaops-airgap-2025.10.0.tar.gz",
        ]),
        0,
        "Packed",
    );
    // The bundle's own verify script.
    let out = Command::new("bash")
        .args(["bundle/scripts/verify.sh", "--key", "k.pub"])
        .current_dir(env.dir.path())
        .env("PATH", path_with_stella())
        .output()
        .unwrap();
    expect(&out, 0, "Verified OK");
}

fn path_with_stella() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_stella")).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

// ------------------------------------------------------------------------------------------
// Hostile folders
// ------------------------------------------------------------------------------------------

#[test]
fn tampered_folders_are_refused() {
    let env = Env::new();
    env.signed_bundle();
    expect(&env.verify("b/manifest.dsse", &[]), 0, "Verified OK");
    let pristine = env.p("pristine");
    copy_tree(&env.p("b"), &pristine);
    let reset = || {
        std::fs::remove_dir_all(env.p("b")).unwrap();
        copy_tree(&pristine, &env.p("b"));
    };
    let b = env.p("b");

    // A file changed.
    write(b.join("advisories/nvd.json"), b"{\"nvd\":\"evil\"}");
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "file advisories/nvd.json changed",
    );
    reset();
    // A file added.
    write(b.join("advisories/extra.json"), b"{}");
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "unlisted file advisories/extra.json (not in the signed manifest)",
    );
    reset();
    // A file removed.
    std::fs::remove_file(b.join("docs/VERIFY.md")).unwrap();
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "file docs/VERIFY.md is missing",
    );
    reset();
    // A symlink planted in the folder.
    std::os::unix::fs::symlink("/etc/passwd", b.join("advisories/link")).unwrap();
    expect(
        &env.verify("b", &[]),
        1,
        "advisories/link is a symbolic link",
    );
    reset();
    // manifest.json edited after signing.
    let mut m = manifest(&b);
    m["validForSeconds"] = json!(999_999_999);
    write(
        b.join("manifest.json"),
        stella_dsse::jcs::to_vec(&m).unwrap(),
    );
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "manifest.json differs from the payload signed in manifest.dsse",
    );
    reset();
    // The signed payload itself edited (manifest.json edited to match).
    let mut e: Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.dsse")).unwrap()).unwrap();
    let payload = std::fs::read(b.join("manifest.json")).unwrap();
    let edited = String::from_utf8(payload)
        .unwrap()
        .replace("mirror-guild", "evil-guild!!");
    e["payload"] = json!(b64(edited.as_bytes()));
    write(b.join("manifest.dsse"), serde_json::to_vec(&e).unwrap());
    write(b.join("manifest.json"), edited.as_bytes());
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "no signature verifies with a trusted key",
    );
    reset();
    // Header purpose changed.
    edit_header(&b, |h| h["purpose"] = json!("attestation"));
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "detached header purpose is \"attestation\", not \"mirror-bundle\"",
    );
    reset();
    // Header naming another payload.
    edit_header(&b, |h| h["payloadSha256"] = json!("0".repeat(64)));
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "detached header names payload sha256:0000",
    );
    reset();
    // Header issuer disagreeing.
    edit_header(&b, |h| h["issuer"] = json!("someone-else"));
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "detached header issuer",
    );
    reset();
    // Header missing.
    std::fs::remove_file(b.join("mirror/metadata/mirror.dsse.json")).unwrap();
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "detached header) is missing",
    );
    reset();
    // Header keyid naming a key that did not sign.
    edit_header(&b, |h| {
        h["keyid"] = json!(format!("sha256:{}", "1".repeat(64)))
    });
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "is not a trusted key that signed the manifest",
    );
    reset();
    // SHA256SUMS.sig by another key.
    env.keygen("sig2");
    let out = env.run(&[
        "sign",
        "blob",
        "--key",
        "sig2.key",
        "--output-signature",
        "b/SHA256SUMS.sig",
        "b/SHA256SUMS",
    ]);
    expect(&out, 0, "");
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "SHA256SUMS.sig does not verify SHA256SUMS",
    );
    reset();
    // A malformed time anchor is refused, never ignored.
    write(b.join("time-anchor.json"), b"{}");
    expect(
        &env.verify("b", &[]),
        1,
        "time-anchor.json: missing field `anchorTime`",
    );
    reset();
    // SHA256SUMS edited.
    write(b.join("SHA256SUMS"), b"");
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "SHA256SUMS does not match the digest the manifest signs",
    );
    reset();
    // public-key.pem swapped for another key.
    env.keygen("other");
    std::fs::copy(env.p("other.pub"), b.join("public-key.pem")).unwrap();
    expect(
        &env.verify("b/manifest.dsse", &[]),
        1,
        "which did not sign this bundle",
    );
    reset();
    // Signed by a key we do not trust.
    expect(
        &env.verify("b/manifest.dsse", &["--key", "other.pub"]),
        1,
        "no signature verifies with a trusted key",
    );
    // Not signed at all.
    std::fs::remove_file(b.join("manifest.dsse")).unwrap();
    expect(&env.verify("b", &[]), 1, "manifest.dsse is missing");
    expect(&env.verify("nowhere/manifest.dsse", &[]), 4, "no such file");
}

fn b64(data: &[u8]) -> String {
    stella_dsse::b64::encode(data)
}

fn edit_header(b: &Path, f: impl FnOnce(&mut Value)) {
    let p = b.join("mirror/metadata/mirror.dsse.json");
    let mut h: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut h);
    write(&p, serde_json::to_vec(&h).unwrap());
}

fn copy_tree(from: &Path, to: &Path) {
    for (rel, data) in all_files(from) {
        write(to.join(rel), data);
    }
}

#[test]
fn keyring_purpose_revocation_and_expiry() {
    let env = Env::new();
    env.signed_bundle();
    let ring = |purposes: &str, extra: &str| {
        write(
            env.p("ring.toml"),
            format!(
                "[[keys]]\nid = \"mirror-root-ed25519-01\"\npublic_key = \"k.pub\"\npurposes = {purposes}\n{extra}"
            ),
        );
    };
    ring("[\"mirror-bundle\"]", "");
    expect(
        &env.verify("b/manifest.dsse", &["--keyring", "ring.toml"]),
        0,
        "mirror-root-ed25519-01",
    );
    ring("[\"attestation\", \"release\"]", "");
    expect(
        &env.verify("b/manifest.dsse", &["--keyring", "ring.toml"]),
        1,
        "the key is not trusted for purpose `mirror-bundle`",
    );
    ring("[\"mirror-bundle\"]", "revoked = true\n");
    expect(
        &env.verify("b/manifest.dsse", &["--keyring", "ring.toml"]),
        1,
        "the key is revoked",
    );
    ring(
        "[\"mirror-bundle\"]",
        "not_after = \"2020-01-01T00:00:00Z\"\n",
    );
    expect(
        &env.verify("b/manifest.dsse", &["--keyring", "ring.toml"]),
        1,
        "the key expired at 2020-01-01T00:00:00Z",
    );
}

#[test]
fn mirror_verify_honours_a_revocation_list() {
    let env = Env::new();
    env.signed_bundle();
    env.keygen("root");
    write(
        env.p("ring.toml"),
        "[[keys]]\nid = \"mirror-k\"\npublic_key = \"k.pub\"\npurposes = [\"mirror-bundle\"]\n\
         [[keys]]\nid = \"root\"\npublic_key = \"root.pub\"\npurposes = [\"release\"]\n",
    );
    let ok = env.verify("b/manifest.dsse", &["--keyring", "ring.toml"]);
    expect(&ok, 0, "mirror-k");
    let out = env.run(&[
        "key",
        "revoke",
        "--list",
        "rev.dsse",
        "--key",
        "root.key",
        "--revoke",
        "k.pub",
        "--reason",
        "compromised",
    ]);
    expect(&out, 0, "serial 1");
    expect(
        &env.verify(
            "b/manifest.dsse",
            &["--keyring", "ring.toml", "--revocations", "rev.dsse"],
        ),
        1,
        "the key is revoked",
    );
}

#[test]
fn freshness_is_enforced() {
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    expect(
        &env.create("old", &["--generated-at", "2020-01-01T00:00:00Z"]),
        0,
        "",
    );
    env.sign("old", &["k.key"]);
    expect(
        &env.verify("old/manifest.dsse", &[]),
        1,
        "bundle is stale: generated at 2020-01-01T00:00:00.000Z",
    );
    // An operator may widen the budget explicitly.
    expect(
        &env.verify("old/manifest.dsse", &["--max-age", "999999999"]),
        0,
        "Verified OK",
    );
    expect(
        &env.create("future", &["--generated-at", "2099-01-01T00:00:00Z"]),
        0,
        "",
    );
    env.sign("future", &["k.key"]);
    expect(&env.verify("future", &[]), 1, "is in the future");
}

// ------------------------------------------------------------------------------------------
// pack / verify archive / unpack
// ------------------------------------------------------------------------------------------

#[test]
fn pack_is_byte_reproducible() {
    let env = Env::new();
    env.signed_bundle();
    for ext in ["tar.gz", "tar.zst"] {
        let a = format!("a.{ext}");
        let b2 = format!("b.{ext}");
        expect(
            &env.run(&["mirror", "pack", "b", "--output", &a]),
            0,
            "Packed",
        );
        expect(
            &env.run(&["mirror", "pack", "b/", "--output", &b2]),
            0,
            "Packed",
        );
        assert_eq!(
            std::fs::read(env.p(&a)).unwrap(),
            std::fs::read(env.p(&b2)).unwrap()
        );
    }
    // A copy of the tree written in reverse order, with other mtimes and modes, packs the same.
    let copy = env.p("copy");
    let mut files = all_files(&env.p("b"));
    files.reverse();
    for (rel, data) in files {
        let p = copy.join(&rel);
        write(&p, data);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
    }
    for ext in ["tar.gz", "tar.zst"] {
        let c = format!("c.{ext}");
        expect(&env.run(&["mirror", "pack", "copy", "--output", &c]), 0, "");
        assert_eq!(
            std::fs::read(env.p(&c)).unwrap(),
            std::fs::read(env.p(&format!("a.{ext}"))).unwrap(),
            "{ext} differs for a differently written copy"
        );
    }
    // SOURCE_DATE_EPOCH changes mtimes (and so the bytes), deterministically.
    let out = env.run_env(
        &["mirror", "pack", "b", "--output", "d.tar.gz"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    expect(&out, 0, "");
    assert_ne!(
        std::fs::read(env.p("d.tar.gz")).unwrap(),
        std::fs::read(env.p("a.tar.gz")).unwrap()
    );
    // Standard tools read it: metadata first, fixed owner and modes.
    let out = Command::new("tar")
        .args(["-tvzf", "a.tar.gz"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    expect(&out, 0, "");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let first: Vec<&str> = listing.lines().take(2).collect();
    assert!(
        first[0].ends_with(" manifest.dsse") && first[1].ends_with(" manifest.json"),
        "{listing}"
    );
    assert!(listing.lines().all(|l| l.contains(" 0/0 ")), "{listing}");
    assert!(listing.contains("-rwxr-xr-x 0/0") && listing.contains("scripts/load.sh"));
    std::fs::create_dir(env.p("x")).unwrap();
    let out = Command::new("tar")
        .args(["--zstd", "-xf", "../a.tar.zst"])
        .current_dir(env.p("x"))
        .output()
        .unwrap();
    expect(&out, 0, "");
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(env.p("x"))
        .output()
        .unwrap();
    expect(&out, 0, "");
    // Unsigned or dirty folders are not packed.
    write(env.p("b/stray.txt"), b"x");
    expect(
        &env.run(&["mirror", "pack", "b", "--output", "e.tar.gz"]),
        2,
        "unlisted file stray.txt",
    );
    expect(
        &env.run(&["mirror", "pack", "b", "--output", "e.zip"]),
        2,
        ".tar.gz or .tar.zst",
    );
    std::fs::remove_file(env.p("b/stray.txt")).unwrap();
    let out = env.run(&[
        "mirror",
        "pack",
        "b",
        "--output",
        "f.tar.zst",
        "--format",
        "json",
    ]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["archiveBytes"].as_u64().unwrap(),
        std::fs::metadata(env.p("f.tar.zst")).unwrap().len()
    );
    // The older `--json` spelling still works (a hidden alias).
    let out = env.run(&["mirror", "pack", "b", "--output", "g.tar.zst", "--json"]);
    expect(&out, 0, "");
    let w: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w["archiveBytes"], v["archiveBytes"]);
}

/// A bundle big enough for several gzip blocks and zstd jobs: standard tools accept the
/// archives (`gzip -t`, `zstd -t`, `tar -t` lists exactly our entries in our order), they
/// unpack to the same bytes, and packing twice gives the same archive.
#[test]
fn multi_block_archives_pass_standard_tools() {
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    // ~9 MiB: compressible text and pseudo-random stretches (several 1 MiB gzip blocks, two
    // 8 MiB zstd jobs).
    let mut big = Vec::with_capacity(9 << 20);
    let mut x: u64 = 7;
    while big.len() < 9 << 20 {
        if (big.len() >> 18) % 2 == 0 {
            big.extend_from_slice(b"{\"id\":\"CVE-2025-0001\",\"severity\":\"high\"}\n");
        } else {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            big.extend_from_slice(&x.to_le_bytes());
        }
    }
    write(env.p("src/feeds/ghsa/big.bin"), &big);
    expect(&env.create("b", &[]), 0, "");
    env.sign("b", &["k.key"]);
    let listed: Vec<String> = {
        let m = manifest(&env.p("b"));
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    };
    let tool = |args: &[&str]| -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    for ext in ["tar.gz", "tar.zst"] {
        let a = format!("a.{ext}");
        let again = format!("again.{ext}");
        expect(&env.run(&["mirror", "pack", "b", "--output", &a]), 0, "");
        expect(
            &env.run(&["mirror", "pack", "b", "--output", &again]),
            0,
            "",
        );
        assert_eq!(
            std::fs::read(env.p(&a)).unwrap(),
            std::fs::read(env.p(&again)).unwrap()
        );
        let test = if ext == "tar.gz" {
            tool(&["gzip", "-t", &a])
        } else {
            tool(&["zstd", "-t", "-q", &a])
        };
        expect(&test, 0, "");
        let z = if ext == "tar.gz" { "-z" } else { "--zstd" };
        let out = tool(&["tar", z, "-tf", &a]);
        expect(&out, 0, "");
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let meta = [
            "manifest.dsse",
            "manifest.json",
            "mirror/metadata/mirror.dsse.json",
            "SHA256SUMS",
            "SHA256SUMS.dsse",
            "SHA256SUMS.sig",
            "public-key.pem",
        ];
        let want: Vec<String> = meta
            .iter()
            .map(|s| s.to_string())
            .chain(listed.iter().cloned())
            .collect();
        assert_eq!(names, want, "{ext} entry list");
        let dest = format!("x-{}", ext.replace('.', ""));
        std::fs::create_dir(env.p(&dest)).unwrap();
        let out = tool(&["tar", z, "-xf", &a, "-C", &dest]);
        expect(&out, 0, "");
        assert_eq!(all_files(&env.p(&dest)), all_files(&env.p("b")));
        expect(&env.verify(&a, &[]), 0, "Verified OK");
    }
}

#[test]
fn archives_verify_from_the_stream_and_unpack_atomically() {
    let env = Env::new();
    env.signed_bundle();
    for ext in ["tar.gz", "tar.zst"] {
        let a = format!("a.{ext}");
        expect(&env.run(&["mirror", "pack", "b", "--output", &a]), 0, "");
        expect(&env.verify(&a, &[]), 0, "Verified OK");
        let dest = format!("out-{ext}");
        let out = env.run(&["mirror", "unpack", &a, "--output", &dest, "--key", "k.pub"]);
        expect(&out, 0, "Unpacked into");
        assert_eq!(all_files(&env.p("b")), all_files(&env.p(&dest)));
        expect(&env.verify(&dest, &[]), 0, "Verified OK");
        // Not over an existing folder.
        let out = env.run(&["mirror", "unpack", &a, "--output", &dest, "--key", "k.pub"]);
        expect(&out, 2, "exists and is not empty");
        // Wrong key: refused, nothing written.
        env.keygen(&format!("o-{}", ext.replace('.', "")));
        let other = format!("o-{}.pub", ext.replace('.', ""));
        let out = env.run(&["mirror", "unpack", &a, "--output", "nope", "--key", &other]);
        expect(&out, 1, "no signature verifies");
        assert!(!env.p("nope").exists());
    }
    assert_no_staging(env.dir.path());
}

fn assert_no_staging(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".stella-"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

/// Entries of a real signed bundle, to rebuild hostile archives from.
fn bundle_entries(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut files = all_files(&env.p("b"));
    // Metadata first, in the order pack writes it; then the content in manifest order.
    files.sort_by_key(|(p, _)| {
        let meta = stella_mirror::names::METADATA
            .iter()
            .position(|m| m == p)
            .unwrap_or(usize::MAX);
        (meta, p.clone())
    });
    files
}

enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str, tar::EntryType),
    Device(&'a str),
    /// A header claiming `size` bytes, followed by nothing.
    Claim(&'a str, u64),
}

/// A gzip'd tar built with raw headers (paths set byte by byte, no sanitising).
fn hostile_archive(path: &Path, entries: &[Raw<'_>]) {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, size, kind, link, data): (&str, u64, tar::EntryType, &str, &[u8]) = match e {
            Raw::File(n, d) => (n, d.len() as u64, tar::EntryType::Regular, "", d),
            Raw::Link(n, t, k) => (n, 0, *k, t, b""),
            Raw::Device(n) => (n, 0, tar::EntryType::Char, "", b""),
            Raw::Claim(n, s) => (n, *s, tar::EntryType::Regular, "", b""),
        };
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&out).unwrap();
    write(path, gz.finish().unwrap());
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let env = Env::new();
    env.signed_bundle();
    let files = bundle_entries(&env);
    let good: Vec<Raw<'_>> = files.iter().map(|(p, d)| Raw::File(p, d)).collect();
    // The honest rebuild unpacks fine (so each failure below is the hostile entry's doing).
    hostile_archive(&env.p("honest.tar.gz"), &good);
    expect(
        &env.run(&[
            "mirror",
            "unpack",
            "honest.tar.gz",
            "--output",
            "ok",
            "--key",
            "k.pub",
        ]),
        0,
        "Unpacked",
    );
    let evil = b"evil".as_slice();
    let nvd = files
        .iter()
        .find(|(p, _)| p == "advisories/nvd.json")
        .map(|(_, d)| d.as_slice())
        .unwrap();
    let cases: Vec<(&str, Raw<'_>, &str)> = vec![
        (
            "traversal",
            Raw::File("../evil.txt", evil),
            "unsafe path refused",
        ),
        (
            "traversal2",
            Raw::File("advisories/../../evil.txt", evil),
            "path traversal",
        ),
        (
            "absolute",
            Raw::File("/tmp/stella-evil.txt", evil),
            "absolute path refused",
        ),
        (
            "symlink",
            Raw::Link("advisories/x", "/etc/passwd", tar::EntryType::Symlink),
            "is a symbolic link",
        ),
        (
            "hardlink",
            Raw::Link("advisories/x", "manifest.json", tar::EntryType::Link),
            "is a hard link",
        ),
        (
            "device",
            Raw::Device("advisories/tty"),
            "is a device or FIFO",
        ),
        (
            "duplicate",
            Raw::File("advisories/nvd.json", nvd),
            "duplicate entry \"advisories/nvd.json\"",
        ),
        (
            "unlisted",
            Raw::File("advisories/new.json", evil),
            "unlisted entry \"advisories/new.json\"",
        ),
        (
            "oversize",
            Raw::Claim("docs/huge.md", 1 << 50),
            "oversize entry",
        ),
        (
            "oversize-meta",
            Raw::Claim("SHA256SUMS.sig", 200 << 20),
            "limit for bundle metadata (oversize entry)",
        ),
    ];
    for (name, bad, fragment) in cases {
        let mut entries: Vec<Raw<'_>> = files.iter().map(|(p, d)| Raw::File(p, d)).collect();
        if name == "oversize-meta" {
            entries.retain(|e| !matches!(e, Raw::File("SHA256SUMS.sig", _)));
        }
        // Hostile entry right after the metadata, before the content.
        let after_meta = entries
            .iter()
            .take_while(|e| matches!(e, Raw::File(p, _) if stella_mirror::names::is_metadata(p)))
            .count();
        entries.insert(after_meta, bad);
        let archive = env.p(&format!("{name}.tar.gz"));
        hostile_archive(&archive, &entries);
        let a = archive.display().to_string();
        let out = env.run(&["mirror", "unpack", &a, "--output", "dest", "--key", "k.pub"]);
        expect(&out, 1, fragment);
        assert!(!env.p("dest").exists(), "{name}: dest written");
        expect(&env.verify(&a, &[]), 1, fragment);
    }
    assert!(!Path::new("/tmp/stella-evil.txt").exists());
    assert!(
        !env.p("evil.txt").exists() && !env.dir.path().parent().unwrap().join("evil.txt").exists()
    );
    assert_no_staging(env.dir.path());

    // A changed file inside an otherwise intact archive.
    let mut entries: Vec<(String, Vec<u8>)> = files.clone();
    for (p, d) in entries.iter_mut() {
        if p == "advisories/nvd.json" {
            d[0] ^= 1;
        }
    }
    let raw: Vec<Raw<'_>> = entries.iter().map(|(p, d)| Raw::File(p, d)).collect();
    hostile_archive(&env.p("changed.tar.gz"), &raw);
    expect(
        &env.verify("changed.tar.gz", &[]),
        1,
        "file advisories/nvd.json changed",
    );
    // A missing file.
    let raw: Vec<Raw<'_>> = files
        .iter()
        .filter(|(p, _)| p != "docs/INSTALL.md")
        .map(|(p, d)| Raw::File(p, d))
        .collect();
    hostile_archive(&env.p("missing.tar.gz"), &raw);
    let out = env.run(&[
        "mirror",
        "unpack",
        "missing.tar.gz",
        "--output",
        "dest",
        "--key",
        "k.pub",
    ]);
    expect(&out, 1, "file docs/INSTALL.md is missing");
    assert!(!env.p("dest").exists());
    assert_no_staging(env.dir.path());
}

// ------------------------------------------------------------------------------------------
// Thin bundles
// ------------------------------------------------------------------------------------------

#[test]
fn thin_bundles_carry_only_changes_and_apply_in_order() {
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    expect(&env.create("gen1", &[]), 0, "");
    env.sign("gen1", &["k.key"]);
    // Generation 2: the app layer and an advisory change, one advisory disappears.
    env.sources(2, "b");
    std::fs::remove_file(env.p("src/feeds/ghsa/index.json")).unwrap();
    expect(&env.create("full2", &[]), 0, "");
    let out = env.create("thin2", &["--base", "gen1/manifest.json"]);
    expect(&out, 0, "Created thin bundle stellaops-airgap 2025.10.2");
    let m = manifest(&env.p("thin2"));
    assert_eq!(m["kind"], "thin");
    assert_eq!(
        m["base"]["manifestDigest"],
        format!(
            "sha256:{}",
            sha(&std::fs::read(env.p("gen1/manifest.json")).unwrap())
        )
    );
    let removed: Vec<&str> = m["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        removed.contains(&"advisories/ghsa/index.json"),
        "{removed:?}"
    );
    let old_layer = format!("images/blobs/sha256/{}", sha(b"app layer a"));
    assert!(removed.contains(&old_layer.as_str()), "{removed:?}");
    // The shared layer is not carried; the new app layer is.
    let shared = sha(&b"shared layer bytes".repeat(1000));
    assert!(!env.p("thin2/images/blobs/sha256").join(&shared).exists());
    assert!(env
        .p("thin2/images/blobs/sha256")
        .join(sha(b"app layer b"))
        .exists());
    assert!(env.p("thin2/advisories/nvd.json").exists());
    assert!(!env.p("thin2/scripts/load.sh").exists());
    env.sign("thin2", &["k.key"]);
    // Verifies on its own (files from the base are reported, not required).
    expect(
        &env.verify("thin2", &[]),
        0,
        "files come from the base bundle",
    );
    // diff shows what changed.
    let out = env.run(&["mirror", "diff", "gen1", "full2"]);
    expect(&out, 0, "~ advisories/nvd.json");
    expect(&out, 0, "- advisories/ghsa/index.json");
    expect(&out, 0, "~ image registry.stella-ops.org/stellaops/app:1.0");
    let out = env.run(&[
        "mirror",
        "diff",
        "gen1/manifest.json",
        "full2/manifest.json",
        "--output",
        "json",
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        d["diff"]["removed"][0]["path"],
        "advisories/ghsa/index.json"
    );

    // Apply onto a copy of gen1, via the archive form too.
    copy_tree(&env.p("gen1"), &env.p("site"));
    copy_tree(&env.p("gen1"), &env.p("site2"));
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site", "--key", "k.pub",
    ]);
    expect(&out, 0, "Applied thin2 onto site");
    expect(&env.verify("site", &[]), 0, "generation 2");
    // Same content as the full generation-2 bundle.
    let content = |d: &str| -> Vec<(String, Vec<u8>)> {
        all_files(&env.p(d))
            .into_iter()
            .filter(|(p, _)| {
                !p.starts_with("manifest")
                    && !p.starts_with("SHA256SUMS")
                    && !p.starts_with("mirror/")
                    && p != "public-key.pem"
            })
            .collect()
    };
    assert_eq!(content("site"), content("full2"));
    // A base whose uncarried file is far larger than signed (a 64 GiB sparse file in place of
    // the shared layer): refused after reading one byte past the signed size, nothing copied,
    // the base left as it was (it was copied whole, 64 GiB onto the disk, before).
    copy_tree(&env.p("gen1"), &env.p("site3"));
    let layer = env.p("site3/images/blobs/sha256").join(&shared);
    let signed_size = std::fs::metadata(&layer).unwrap().len();
    std::fs::File::create(&layer)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let before = sizes(&env.p("site3"));
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site3", "--key", "k.pub",
    ]);
    expect(
        &out,
        1,
        &format!(
            "file images/blobs/sha256/{shared} changed: 68719476736 bytes (larger than listed: not read past its listed size), the manifest says {signed_size} bytes"
        ),
    );
    assert_eq!(sizes(&env.p("site3")), before, "the base changed");
    assert!(
        std::fs::read_dir(env.p("")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".stella")),
        "a staging folder was left"
    );
    expect(
        &env.run(&["mirror", "pack", "thin2", "--output", "thin2.tar.zst"]),
        0,
        "",
    );
    expect(&env.verify("thin2.tar.zst", &[]), 0, "Verified OK");
    let out = env.run(&[
        "mirror",
        "apply",
        "thin2.tar.zst",
        "--onto",
        "site2",
        "--output",
        "site2-new",
        "--key",
        "k.pub",
    ]);
    expect(&out, 0, "Applied");
    assert_eq!(content("site2-new"), content("full2"));
    // Modes as `create` gives them: the folder 0755 (not the staging folder's 0700), scripts
    // executable whether they came from the base (folder form) or the archive.
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(env.p(p)).unwrap().permissions().mode() & 0o7777
    };
    for d in ["site", "site2-new"] {
        assert_eq!(mode(d), mode("full2"), "{d}");
        assert_eq!(mode(d), 0o755, "{d}");
        for f in ["scripts/load.sh", "advisories/nvd.json"] {
            let p = format!("{d}/{f}");
            assert_eq!(mode(&p), mode(&format!("full2/{f}")), "{p}");
        }
    }
    assert_eq!(mode("site/scripts/load.sh"), 0o755);

    // Applying it again (site is now generation 2) is out of order.
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site", "--key", "k.pub",
    ]);
    expect(&out, 1, "already holds generation 2");
    // Generation 3 over generation 2, applied onto generation 1: out of order.
    env.sources(3, "c");
    expect(
        &env.create("thin3", &["--base", "site/manifest.json"]),
        0,
        "",
    );
    env.sign("thin3", &["k.key"]);
    let out = env.run(&[
        "mirror", "apply", "thin3", "--onto", "site2", "--key", "k.pub",
    ]);
    expect(
        &out,
        1,
        "out of order: this thin bundle updates generation 2",
    );
    expect(&out, 1, "apply the updates in between first");
    // A thin bundle for another bundle altogether.
    let other = Env::new();
    other.sources(1, "z");
    let spec = std::fs::read_to_string(other.p("src/bundle.yaml"))
        .unwrap()
        .replace("stellaops-airgap", "other-bundle");
    write(other.p("src/bundle.yaml"), spec);
    expect(&other.create("o", &[]), 0, "");
    copy_tree(&other.p("o"), &env.p("foreign"));
    let out = env.run(&[
        "mirror", "apply", "thin3", "--onto", "foreign", "--key", "k.pub",
    ]);
    expect(
        &out,
        1,
        "wrong base: this thin bundle updates bundle \"stellaops-airgap\"",
    );
    // site still intact after refusals.
    expect(&env.verify("site", &[]), 0, "Verified OK");
    // A full bundle is not a thin one; and thin generation must increase.
    let out = env.run(&[
        "mirror", "apply", "gen1", "--onto", "site", "--key", "k.pub",
    ]);
    expect(&out, 2, "`apply` takes a thin bundle");
    env.sources(1, "d");
    expect(
        &env.create("bad", &["--base", "gen1/manifest.json"]),
        2,
        "higher generation",
    );
    assert_no_staging(env.dir.path());
}

/// `apply` takes the files a thin bundle does not carry from the base without following a
/// link there (a link to a file outside with the very bytes signed is refused, as `verify`
/// refuses a link), says which listed file the base lacks, and leaves the base as it was.
#[test]
fn apply_takes_no_link_and_no_missing_file_from_the_base() {
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    expect(&env.create("gen1", &[]), 0, "");
    env.sign("gen1", &["k.key"]);
    env.sources(2, "b");
    expect(
        &env.create("thin2", &["--base", "gen1/manifest.json"]),
        0,
        "",
    );
    env.sign("thin2", &["k.key"]);
    assert!(!env.p("thin2/scripts/load.sh").exists(), "carried");
    copy_tree(&env.p("gen1"), &env.p("site"));
    let outside = env.p("outside-load.sh");
    std::fs::rename(env.p("site/scripts/load.sh"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.p("site/scripts/load.sh")).unwrap();
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site", "--key", "k.pub",
    ]);
    expect(&out, 1, "scripts/load.sh is a symbolic link");
    assert!(std::fs::symlink_metadata(env.p("site/scripts/load.sh"))
        .unwrap()
        .file_type()
        .is_symlink());
    // The file gone altogether.
    std::fs::remove_file(env.p("site/scripts/load.sh")).unwrap();
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site", "--key", "k.pub",
    ]);
    expect(
        &out,
        1,
        "file scripts/load.sh is not carried by the thin bundle and the base does not hold it",
    );
    // Put back: it applies.
    std::fs::rename(&outside, env.p("site/scripts/load.sh")).unwrap();
    let out = env.run(&[
        "mirror", "apply", "thin2", "--onto", "site", "--key", "k.pub",
    ]);
    expect(&out, 0, "Applied thin2 onto site");
    expect(&env.verify("site", &[]), 0, "generation 2");
    assert_no_staging(env.dir.path());
}

// ------------------------------------------------------------------------------------------
// Time anchors (RFC 3161)
// ------------------------------------------------------------------------------------------

/// Run openssl in the test folder; it must succeed.
fn ossl(env: &Env, args: &[&str]) -> Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test PKI made by openssl: `ca` (root) issuing `tsa` (P-256, extended key usage
/// timeStamping critical, certificatePolicies 1.2.3.4.1) and `notsa` (same key, no extended
/// key usage); an unrelated root `other` issuing `othertsa`; `rsatsa` (RSA 2048) under `ca`;
/// and `tsa.cnf`/`rsa.cnf` for `openssl ts -reply`.
fn tsa_pki(env: &Env) {
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, cn) in [("ca", "Test Time Root"), ("other", "Other Root")] {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-x509", "-new"];
        args.extend(p256);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &subj,
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ossl(env, &args);
    }
    write(
        env.p("tsa-ext.cnf"),
        "extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n\
         basicConstraints=CA:FALSE\ncertificatePolicies=1.2.3.4.1\n",
    );
    write(
        env.p("plain-ext.cnf"),
        "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n",
    );
    ossl(
        env,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "tsa.key",
        ],
    );
    ossl(
        env,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsatsa.key",
        ],
    );
    for (name, key, cn, ca, ext) in [
        ("tsa", "tsa.key", "Test TSA", "ca", "tsa-ext.cnf"),
        ("notsa", "tsa.key", "Not A TSA", "ca", "plain-ext.cnf"),
        ("othertsa", "tsa.key", "Other TSA", "other", "tsa-ext.cnf"),
        ("rsatsa", "rsatsa.key", "RSA TSA", "ca", "tsa-ext.cnf"),
    ] {
        let csr = format!("{name}.csr");
        ossl(
            env,
            &[
                "req",
                "-new",
                "-key",
                key,
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &csr,
            ],
        );
        ossl(
            env,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "365",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    for (cnf, cert, key, extra) in [
        ("tsa.cnf", "tsa.pem", "tsa.key", ""),
        (
            "tsa-v2.cnf",
            "tsa.pem",
            "tsa.key",
            "ess_cert_id_alg = sha256\n",
        ),
        (
            "rsa.cnf",
            "rsatsa.pem",
            "rsatsa.key",
            "clock_precision_digits = 3\n",
        ),
    ] {
        write(
            env.p(cnf),
            format!(
                "[ tsa ]\ndefault_tsa = tsa_config1\n[ tsa_config1 ]\nserial = ./tsaserial\n\
                 crypto_device = builtin\nsigner_cert = ./{cert}\ncerts = ./ca.pem\n\
                 signer_key = ./{key}\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n\
                 other_policies = 1.2.3.4.5\ndigests = sha256, sha384, sha512\n\
                 accuracy = secs:1\nordering = no\ntsa_name = yes\ness_cert_id_chain = no\n{extra}"
            ),
        );
    }
    write(env.p("tsaserial"), "01\n");
}

fn anchor_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("time-anchor.json")).unwrap()).unwrap()
}

fn token_of(dir: &Path) -> Vec<u8> {
    stella_dsse::b64::decode(anchor_json(dir)["token"].as_str().unwrap()).unwrap()
}

/// Rewrite `time-anchor.json` with another token (and the matching digest).
fn put_token(dir: &Path, token: &[u8]) {
    let mut a = anchor_json(dir);
    a["token"] = json!(b64(token));
    a["tokenDigest"] = json!(format!("sha256:{}", sha(token)));
    write(
        dir.join("time-anchor.json"),
        stella_dsse::jcs::to_vec(&a).unwrap(),
    );
}

/// A signed bundle in `b/` stamped by the local TSA.
fn anchored_bundle(env: &Env) {
    env.keygen("k");
    env.sources(1, "a");
    expect(&env.create("b", &[]), 0, "");
    let out = env.run(&[
        "mirror",
        "sign",
        "b/manifest.json",
        "--key",
        "k.key",
        "--tsa-key",
        "tsa.key",
        "--tsa-cert",
        "tsa.pem",
    ]);
    expect(
        &out,
        0,
        "Wrote time-anchor.json: RFC 3161 token from local TSA CN=Test TSA",
    );
}

#[test]
fn time_anchor_from_a_local_tsa_verifies_here_and_in_openssl() {
    let env = Env::new();
    tsa_pki(&env);
    anchored_bundle(&env);
    let b = env.p("b");
    let a = anchor_json(&b);
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["anchorTime", "format", "source", "token", "tokenDigest"]
    );
    assert_eq!(a["format"], "rfc3161");
    assert_eq!(a["source"], "local TSA CN=Test TSA");
    let token = token_of(&b);
    assert_eq!(a["tokenDigest"], format!("sha256:{}", sha(&token)));
    // The anchor is metadata: not in the manifest, not in SHA256SUMS; both checks still pass.
    assert!(
        !String::from_utf8(std::fs::read(b.join("SHA256SUMS")).unwrap())
            .unwrap()
            .contains("time-anchor")
    );
    let out = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&b)
        .output()
        .unwrap();
    expect(&out, 0, "");
    expect(
        &env.run(&["mirror", "verify-checksums", "b"]),
        0,
        "SHA256SUMS OK",
    );

    // Trusted with the roots; freshness by the local clock (it is not behind the anchor).
    let out = env.verify("b", &["--time-trust-roots", "ca.pem"]);
    expect(
        &out,
        0,
        "(RFC 3161, TSA CN=Test TSA): trusted: CN=Test TSA issued by CN=Test Time Root",
    );
    let out = env.verify("b", &["--time-trust-roots", "ca.pem", "--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timeAnchor"]["trusted"], true);
    assert_eq!(v["timeAnchor"]["anchorTime"], a["anchorTime"]);
    assert_eq!(v["timeAnchor"]["policy"], "1.2.3.4.1");
    assert_eq!(v["freshness"]["timeSource"], "local-clock");
    // Without roots: checked, reported, not trusted.
    let out = env.verify("b", &[]);
    expect(&out, 0, "NOT trusted (no --time-trust-roots)");
    expect(&out, 0, "warning: time-anchor.json");

    // openssl accepts the token: over the data and over the digest.
    write(env.p("token.der"), &token);
    for how in [["-data", "b/manifest.json"], ["-digest", ""]] {
        let digest = sha(&std::fs::read(b.join("manifest.json")).unwrap());
        let arg = if how[0] == "-digest" {
            digest.as_str()
        } else {
            how[1]
        };
        let out = ossl(
            &env,
            &[
                "ts",
                "-verify",
                "-token_in",
                "-in",
                "token.der",
                how[0],
                arg,
                "-CAfile",
                "ca.pem",
                "-untrusted",
                "tsa.pem",
            ],
        );
        expect(&out, 0, "Verification: OK");
    }

    // Archives carry it; the stream verifier checks it; unpack keeps it.
    expect(
        &env.run(&["mirror", "pack", "b", "--output", "b.tar.zst"]),
        0,
        "",
    );
    expect(
        &env.verify("b.tar.zst", &["--time-trust-roots", "ca.pem"]),
        0,
        "trusted: CN=Test TSA",
    );
    let out = env.run(&[
        "mirror",
        "unpack",
        "b.tar.zst",
        "--output",
        "u",
        "--key",
        "k.pub",
        "--time-trust-roots",
        "ca.pem",
    ]);
    expect(&out, 0, "trusted: CN=Test TSA");
    assert_eq!(anchor_json(&env.p("u")), a);

    // Re-signing removes the anchor of the previous manifest; `anchor` adds a new one.
    env.sign("b", &["k.key"]);
    assert!(!b.join("time-anchor.json").exists());
    let out = env.run(&[
        "mirror",
        "anchor",
        "b",
        "--tsa-key",
        "tsa.key",
        "--tsa-cert",
        "tsa.pem",
        "--output",
        "json",
    ]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timeAnchor"]["tsa"], "CN=Test TSA");
    expect(
        &env.verify("b", &["--time-trust-roots", "ca.pem"]),
        0,
        "trusted",
    );
}

#[test]
fn time_anchor_accepts_openssl_ts_reply_tokens() {
    let env = Env::new();
    tsa_pki(&env);
    env.signed_bundle();
    ossl(
        &env,
        &[
            "ts",
            "-query",
            "-data",
            "b/manifest.json",
            "-sha256",
            "-cert",
            "-out",
            "q.tsq",
        ],
    );
    // ESS signing-certificate v1 (SHA-1, OpenSSL 3.0's default) and v2 (SHA-256), P-256;
    // RSA with a fractional genTime. As a TimeStampResp and as a bare token.
    for (cnf, tsa, fraction) in [
        ("tsa.cnf", "CN=Test TSA", false),
        ("tsa-v2.cnf", "CN=Test TSA", false),
        ("rsa.cnf", "CN=RSA TSA", true),
    ] {
        ossl(
            &env,
            &[
                "ts",
                "-reply",
                "-config",
                cnf,
                "-queryfile",
                "q.tsq",
                "-out",
                "r.tsr",
            ],
        );
        ossl(
            &env,
            &[
                "ts",
                "-reply",
                "-in",
                "r.tsr",
                "-token_out",
                "-out",
                "t.der",
            ],
        );
        for file in ["r.tsr", "t.der"] {
            let out = env.run(&["mirror", "anchor", "b", "--tsa-token", file]);
            expect(&out, 0, &format!("from token file {file}"));
            let out = env.verify("b", &["--time-trust-roots", "ca.pem", "--output", "json"]);
            expect(&out, 0, "");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["timeAnchor"]["tsa"], tsa, "{cnf} {file}");
            assert_eq!(v["timeAnchor"]["trusted"], true, "{cnf} {file}");
            let at = v["timeAnchor"]["anchorTime"].as_str().unwrap().to_string();
            assert_eq!(!at.ends_with(".000Z"), fraction, "{at}");
        }
    }
    // A token over other data is refused when attached.
    write(env.p("other.txt"), b"other");
    ossl(
        &env,
        &[
            "ts",
            "-query",
            "-data",
            "other.txt",
            "-sha256",
            "-cert",
            "-out",
            "q2.tsq",
        ],
    );
    ossl(
        &env,
        &[
            "ts",
            "-reply",
            "-config",
            "tsa.cnf",
            "-queryfile",
            "q2.tsq",
            "-out",
            "r2.tsr",
        ],
    );
    let out = env.run(&["mirror", "anchor", "b", "--tsa-token", "r2.tsr"]);
    expect(&out, 1, "not this bundle's manifest");
}

/// A one-request-at-a-time HTTP endpoint on 127.0.0.1 answering each POST with the next
/// reply: `None` = `openssl ts -reply` to the query, `Some((status, body))` = that. Stops
/// after the replies are used up or 60 s.
fn tsa_endpoint(env: &Env, replies: Vec<Option<(u16, Vec<u8>)>>) -> String {
    use std::io::{BufRead as _, BufReader, Read as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tsa", listener.local_addr().unwrap());
    let dir = env.dir.path().to_path_buf();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for (i, reply) in replies.into_iter().enumerate() {
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut kind = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if let Some(v) = l.strip_prefix("content-type:") {
                    kind = v.trim().to_string();
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let (status, out) = match reply {
                Some(r) => r,
                None => {
                    assert_eq!(kind, "application/timestamp-query");
                    let q = dir.join(format!("http-{i}.tsq"));
                    let a = dir.join(format!("http-{i}.tsr"));
                    std::fs::write(&q, &body).unwrap();
                    let ok = Command::new("openssl")
                        .args(["ts", "-reply", "-config", "tsa.cnf", "-queryfile"])
                        .arg(&q)
                        .arg("-out")
                        .arg(&a)
                        .current_dir(&dir)
                        .output()
                        .unwrap();
                    assert!(
                        ok.status.success(),
                        "{}",
                        String::from_utf8_lossy(&ok.stderr)
                    );
                    (200, std::fs::read(&a).unwrap())
                }
            };
            let mut w = stream;
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/timestamp-reply\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                out.len()
            );
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&out);
        }
    });
    url
}

/// The TSA endpoint is on this machine: keep any proxy of the environment out of the way.
const NO_PROXY: &[(&str, &str)] = &[("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")];

#[test]
fn time_anchor_from_a_tsa_url() {
    let env = Env::new();
    tsa_pki(&env);
    env.keygen("k");
    env.sources(1, "a");
    expect(&env.create("b", &[]), 0, "");
    let url = tsa_endpoint(
        &env,
        vec![
            None,
            Some((503, b"busy".to_vec())),
            Some((200, b"not DER at all".to_vec())),
        ],
    );
    let out = env.run_env(
        &[
            "mirror",
            "sign",
            "b/manifest.json",
            "--key",
            "k.key",
            "--tsa-url",
            &url,
        ],
        NO_PROXY,
    );
    expect(&out, 0, &format!("RFC 3161 token from {url}"));
    let out = env.verify("b", &["--time-trust-roots", "ca.pem", "--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timeAnchor"]["source"], url.as_str());
    assert_eq!(v["timeAnchor"]["trusted"], true);
    // A TSA that is down is retryable (exit 10); one that answers nonsense fails (exit 1).
    // The messages are the keyless signing path's: one RFC 3161 client for both.
    let out = env.run_env(&["mirror", "anchor", "b", "--tsa-url", &url], NO_PROXY);
    expect(
        &out,
        10,
        &format!(
            "the timestamp authority is unavailable ({url}): HTTP 503: busy (after 1 attempts)"
        ),
    );
    let out = env.run_env(&["mirror", "anchor", "b", "--tsa-url", &url], NO_PROXY);
    expect(&out, 1, "not an RFC 3161 TimeStampResp");
    // Nobody listening.
    let out = env.run_env(
        &[
            "mirror",
            "anchor",
            "b",
            "--tsa-url",
            "http://127.0.0.1:9/tsa",
        ],
        NO_PROXY,
    );
    expect(
        &out,
        10,
        "the timestamp authority is unavailable (http://127.0.0.1:9/tsa)",
    );
    // The anchor from the first request is still there and valid.
    expect(
        &env.verify("b", &["--time-trust-roots", "ca.pem"]),
        0,
        "trusted",
    );
}

/// A token for `dir`'s manifest by the local TSA in `cert` (unchecked: it may be a hostile
/// certificate), stamped `at`; written as the bundle's anchor.
fn forge_anchor(env: &Env, dir: &str, cert: &str, at: time::OffsetDateTime) {
    let key =
        stella_keys::FileKey::from_pem(&std::fs::read(env.p("tsa.key")).unwrap(), &mut || {
            unreachable!("the key is not encrypted")
        })
        .unwrap();
    let pem = std::fs::read(env.p(cert)).unwrap();
    let tsa = stella_mirror::LocalTsa::new_unchecked(&key, &pem, Some("1.2.3.4.1")).unwrap();
    let manifest = std::fs::read(env.p(dir).join("manifest.json")).unwrap();
    let token = tsa.timestamp(&stella_keys::sha256(&manifest), at).unwrap();
    let file = json!({
        "anchorTime": stella_mirror::format_time(at.replace_nanosecond(0).unwrap()),
        "format": "rfc3161",
        "source": "forged",
        "token": b64(&token),
        "tokenDigest": format!("sha256:{}", sha(&token)),
    });
    write(
        env.p(dir).join("time-anchor.json"),
        stella_dsse::jcs::to_vec(&file).unwrap(),
    );
}

#[test]
fn hostile_time_anchors_are_refused() {
    let env = Env::new();
    tsa_pki(&env);
    anchored_bundle(&env);
    let b = env.p("b");
    let good = std::fs::read(b.join("time-anchor.json")).unwrap();
    let reset = || write(b.join("time-anchor.json"), &good);
    let roots = ["--time-trust-roots", "ca.pem"];
    expect(&env.verify("b", &roots), 0, "trusted");

    // Signed by a TSA that does not chain to the trust roots.
    expect(
        &env.verify("b", &["--time-trust-roots", "other.pem"]),
        1,
        "the TSA certificate CN=Test TSA does not chain to a trusted root (--time-trust-roots)",
    );
    // The anchor of another manifest (wrong digest).
    let other = Env::new();
    other.sources(2, "z");
    expect(&other.create("o", &[]), 0, "");
    copy_tree(&other.p("o"), &env.p("o"));
    env.sign("o", &["k.key"]);
    write(env.p("o/time-anchor.json"), &good);
    let out = env.verify("o", &roots);
    expect(&out, 1, "time anchor: the token stamps SHA-256");
    expect(&out, 1, "not this bundle's manifest");
    // A tampered token: the genTime inside the TSTInfo changed (digest fixed up).
    let mut token = token_of(&b);
    let at = token
        .windows(2)
        .position(|w| w == [0x18, 0x0f])
        .expect("genTime in the token");
    token[at + 2 + 3] = if token[at + 2 + 3] == b'9' {
        b'8'
    } else {
        b'9'
    };
    put_token(&b, &token);
    expect(
        &env.verify("b", &roots),
        1,
        "the message-digest attribute does not match the TSTInfo (tampered token)",
    );
    reset();
    // A tampered token: a signature byte changed.
    let mut token = token_of(&b);
    let n = token.len();
    token[n - 3] ^= 0x55;
    put_token(&b, &token);
    expect(
        &env.verify("b", &roots),
        1,
        "token signature by CN=Test TSA",
    );
    reset();
    // Tampered without fixing the digest.
    let mut a = anchor_json(&b);
    let mut token = token_of(&b);
    token[40] ^= 1;
    a["token"] = json!(b64(&token));
    write(
        b.join("time-anchor.json"),
        stella_dsse::jcs::to_vec(&a).unwrap(),
    );
    expect(&env.verify("b", &roots), 1, "does not match the token");
    reset();
    // anchorTime edited.
    let mut a = anchor_json(&b);
    a["anchorTime"] = json!("2099-01-01T00:00:00.000Z");
    write(
        b.join("time-anchor.json"),
        stella_dsse::jcs::to_vec(&a).unwrap(),
    );
    expect(&env.verify("b", &roots), 1, "differs from the token's time");
    reset();
    // A TSA certificate without the timeStamping extended key usage: refused when signing,
    // and a token made with it anyway is refused on verify, with or without roots.
    let out = env.run(&[
        "mirror",
        "anchor",
        "b",
        "--tsa-key",
        "tsa.key",
        "--tsa-cert",
        "notsa.pem",
        "--tsa-policy",
        "1.2.3.4.1",
    ]);
    expect(&out, 2, "has no extended key usage");
    forge_anchor(&env, "b", "notsa.pem", time::OffsetDateTime::now_utc());
    expect(
        &env.verify("b", &roots),
        1,
        "the TSA certificate CN=Not A TSA has no extended key usage: RFC 3161 requires id-kp-timeStamping (critical)",
    );
    expect(&env.verify("b", &[]), 1, "has no extended key usage");
    reset();
    // Not an anchor format we know.
    let mut a = anchor_json(&b);
    a["format"] = json!("roughtime");
    write(
        b.join("time-anchor.json"),
        stella_dsse::jcs::to_vec(&a).unwrap(),
    );
    expect(&env.verify("b", &roots), 1, "only \"rfc3161\" is supported");
    reset();
    expect(&env.verify("b", &roots), 0, "trusted");
}

#[test]
fn a_trusted_time_anchor_overrides_a_clock_that_is_behind() {
    let env = Env::new();
    tsa_pki(&env);
    env.keygen("k");
    env.sources(1, "a");
    // Generated "two hours from now": as if this machine's clock were two hours behind.
    let now = time::OffsetDateTime::now_utc();
    let ahead = now + time::Duration::hours(2);
    let gen = stella_mirror::format_time(ahead);
    expect(&env.create("b", &["--generated-at", &gen]), 0, "");
    env.sign("b", &["k.key"]);
    expect(&env.verify("b", &[]), 1, "is in the future");
    // A TSA (with the right time) stamped it a minute after it was generated.
    forge_anchor(&env, "b", "tsa.pem", ahead + time::Duration::minutes(1));
    let out = env.verify("b", &["--time-trust-roots", "ca.pem", "--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["freshness"]["timeSource"], "time-anchor");
    assert_eq!(v["freshness"]["judgedAt"], v["timeAnchor"]["anchorTime"]);
    expect(
        &env.verify("b", &["--time-trust-roots", "ca.pem"]),
        0,
        "the local clock is behind it",
    );
    // Untrusted (no roots): the local clock decides, and it says "future".
    expect(&env.verify("b", &[]), 1, "is in the future");
    // Judged at the anchor time, the budget still applies.
    expect(
        &env.verify("b", &["--time-trust-roots", "ca.pem", "--max-age", "1"]),
        1,
        "bundle is stale",
    );
    // A manifest generated after its anchor is not credible.
    forge_anchor(&env, "b", "tsa.pem", ahead - time::Duration::minutes(10));
    expect(
        &env.verify("b", &["--time-trust-roots", "ca.pem"]),
        1,
        "is after its time anchor",
    );
}

/// Issue `name.pem` for `key` under `ca` with the extensions `ext` (openssl syntax).
fn issue(env: &Env, name: &str, key: &str, ca: &str, ext: &str) {
    let extfile = format!("{name}-ext.cnf");
    write(env.p(&extfile), ext);
    let csr = format!("{name}.csr");
    ossl(
        env,
        &[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &csr,
        ],
    );
    ossl(
        env,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            &extfile,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

#[test]
fn time_anchor_certificate_rules() {
    let env = Env::new();
    tsa_pki(&env);
    anchored_bundle(&env);
    let roots = ["--time-trust-roots", "ca.pem"];
    let tsa_ext = "extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n";
    // An intermediate CA between the root and the TSA: the token carries it (--tsa-cert is
    // the TSA certificate followed by its chain) and verify walks it.
    ossl(
        &env,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "inter.key",
        ],
    );
    issue(
        &env,
        "inter",
        "inter.key",
        "ca",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    );
    issue(&env, "tsa2", "tsa.key", "inter", tsa_ext);
    let chain = [
        std::fs::read(env.p("tsa2.pem")).unwrap(),
        std::fs::read(env.p("inter.pem")).unwrap(),
    ]
    .concat();
    write(env.p("tsa2-chain.pem"), chain);
    let anchor = |cert: &str| {
        env.run(&[
            "mirror",
            "anchor",
            "b",
            "--tsa-key",
            "tsa.key",
            "--tsa-cert",
            cert,
            "--tsa-policy",
            "1.2.3.4.1",
        ])
    };
    expect(&anchor("tsa2-chain.pem"), 0, "TSA CN=tsa2");
    expect(
        &env.verify("b", &roots),
        0,
        "trusted: CN=tsa2 issued by CN=inter issued by CN=Test Time Root",
    );
    // Without the intermediate in the token, there is no path to the root.
    expect(&anchor("tsa2.pem"), 0, "");
    expect(
        &env.verify("b", &roots),
        1,
        "does not chain to a trusted root",
    );
    // An "intermediate" that is not a CA cannot vouch for a TSA.
    std::fs::copy(env.p("inter.key"), env.p("notca.key")).unwrap();
    issue(
        &env,
        "notca",
        "notca.key",
        "ca",
        "basicConstraints=CA:FALSE\n",
    );
    issue(&env, "tsa3", "tsa.key", "notca", tsa_ext);
    let chain = [
        std::fs::read(env.p("tsa3.pem")).unwrap(),
        std::fs::read(env.p("notca.pem")).unwrap(),
    ]
    .concat();
    write(env.p("tsa3-chain.pem"), chain);
    expect(&anchor("tsa3-chain.pem"), 0, "");
    expect(
        &env.verify("b", &roots),
        1,
        "CN=notca is not a CA certificate",
    );
    // RFC 3161 §2.3 profile of the TSA certificate, refused when signing and when verifying.
    for (name, ext, msg) in [
        (
            "eku-not-critical",
            "extendedKeyUsage=timeStamping\n",
            "the id-kp-timeStamping extended key usage must be critical",
        ),
        (
            "eku-extra",
            "extendedKeyUsage=critical,timeStamping,codeSigning\n",
            "its extended key usage must be exactly id-kp-timeStamping",
        ),
        (
            "no-signing",
            "extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,keyEncipherment\n",
            "may not sign (keyUsage lacks digitalSignature)",
        ),
    ] {
        issue(&env, name, "tsa.key", "ca", ext);
        let pem = format!("{name}.pem");
        expect(&anchor(&pem), 2, msg);
        forge_anchor(&env, "b", &pem, time::OffsetDateTime::now_utc());
        expect(&env.verify("b", &roots), 1, msg);
    }
    // A token stamped after the TSA certificate expired.
    forge_anchor(
        &env,
        "b",
        "tsa.pem",
        time::OffsetDateTime::now_utc() + time::Duration::days(400),
    );
    expect(
        &env.verify("b", &roots),
        1,
        "certificate CN=Test TSA is valid from",
    );
    // The key must be the certificate's, and P-256.
    let out = env.run(&[
        "mirror",
        "anchor",
        "b",
        "--tsa-key",
        "rsatsa.key",
        "--tsa-cert",
        "tsa.pem",
    ]);
    expect(&out, 2, "");
    env.keygen("ed");
    let out = env.run(&[
        "mirror",
        "anchor",
        "b",
        "--tsa-key",
        "ed.key",
        "--tsa-cert",
        "tsa.pem",
    ]);
    expect(&out, 2, "a TSA key must be ECDSA P-256");
    ossl(
        &env,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "wrong.key",
        ],
    );
    let out = env.run(&[
        "mirror",
        "anchor",
        "b",
        "--tsa-key",
        "wrong.key",
        "--tsa-cert",
        "tsa.pem",
    ]);
    expect(
        &out,
        2,
        "--tsa-key does not match the certificate CN=Test TSA",
    );
}

// Regression (issue #8 item 1): a P-256 key and its compressed-point copy counted as two
// keys toward `mirror verify --threshold 2`.
#[test]
fn mirror_threshold_counts_a_reencoded_key_once() {
    let env = Env::new();
    expect(
        &env.run(&["key", "generate", "--algorithm", "p256", "--output", "p"]),
        0,
        "",
    );
    let out = Command::new("openssl")
        .args(["ec", "-pubin", "-in", "p.pub", "-conv_form", "compressed"])
        .args(["-pubout", "-out", "p2.pub"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.sources(1, "a");
    expect(&env.create("b", &[]), 0, "");
    env.sign("b", &["p.key"]);
    let out = env.run(&[
        "mirror",
        "verify",
        "b/manifest.dsse",
        "--key",
        "p.pub",
        "--key",
        "p2.pub",
        "--threshold",
        "2",
    ]);
    assert_ne!(out.status.code(), Some(0));
    expect(&out, out.status.code().unwrap_or(-1), "appears twice");
    std::fs::create_dir(env.p("ring")).unwrap();
    std::fs::copy(env.p("p.pub"), env.p("ring/p.pub")).unwrap();
    std::fs::copy(env.p("p2.pub"), env.p("ring/p2.pub")).unwrap();
    let out = env.verify(
        "b/manifest.dsse",
        &["--keyring", "ring", "--threshold", "2"],
    );
    expect(&out, 1, "threshold 2 is larger than the 1 trusted key");
    let out = env.verify("b/manifest.dsse", &["--keyring", "ring"]);
    expect(&out, 0, "Verified OK");
}

/// Issue #9: with SOURCE_DATE_EPOCH, create + sign + pack twice gives byte-identical
/// archives, signatures included (Ed25519 signatures are deterministic). `sign` used to stamp
/// the detached header's `created` with the wall clock.
#[test]
fn create_sign_pack_is_byte_reproducible_with_source_date_epoch() {
    let env = Env::new();
    env.keygen("k");
    env.sources(1, "a");
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut archives = Vec::new();
    for run in ["r1", "r2"] {
        let spec = env.s("src/bundle.yaml");
        let out = env.run_env(
            &["mirror", "create", "--spec", &spec, "--output", run],
            &sde,
        );
        expect(&out, 0, "Created full bundle");
        let m = format!("{run}/manifest.json");
        expect(
            &env.run_env(&["mirror", "sign", &m, "--key", "k.key"], &sde),
            0,
            "Signed",
        );
        if run == "r2" {
            // Let the clock move on: only the pinned time may end up in the bundle.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let archive = format!("{run}.tar.zst");
        expect(
            &env.run_env(&["mirror", "pack", run, "--output", &archive], &sde),
            0,
            "Packed",
        );
        archives.push(std::fs::read(env.p(&archive)).unwrap());
        let header: Value = serde_json::from_slice(
            &std::fs::read(env.p(&format!("{run}/mirror/metadata/mirror.dsse.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(header["created"], "2023-11-14T22:13:20.000Z");
    }
    assert!(archives[0] == archives[1], "the two archives differ");
    // --created pins the header time without the variable, and wins over it.
    let out = env.run_env(
        &[
            "mirror",
            "sign",
            "r1/manifest.json",
            "--key",
            "k.key",
            "--created",
            "2024-02-03T04:05:06Z",
        ],
        &sde,
    );
    expect(&out, 0, "Signed");
    let header: Value = serde_json::from_slice(
        &std::fs::read(env.p("r1/mirror/metadata/mirror.dsse.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(header["created"], "2024-02-03T04:05:06.000Z");
    // (generated in 2023: an old bundle, so the freshness budget is widened.)
    expect(
        &env.verify("r1", &["--max-age", "4000000000"]),
        0,
        "Verified OK",
    );
    // A bad value is an input error, before anything is written.
    let out = env.run_env(
        &["mirror", "sign", "r1/manifest.json", "--key", "k.key"],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    expect(&out, 2, "SOURCE_DATE_EPOCH");
    let out = env.run(&[
        "mirror",
        "sign",
        "r1/manifest.json",
        "--key",
        "k.key",
        "--created",
        "noon",
    ]);
    expect(&out, 2, "--created");
}

/// The signed samples shipped under docs/samples/mirror (scripts/mirror-samples.sh, seed 001).
fn samples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/samples/mirror"
    ))
}

#[test]
fn shipped_samples_verify_with_the_sample_key() {
    let env = Env::new();
    let s = samples();
    let ring = s.join("keyring.toml").display().to_string();
    let key = s.join("mirror-root-ed25519-01.pub").display().to_string();
    let full = s.join("m0-sample").display().to_string();
    let thin = s.join("mirror-thin-m0-sample.tar.gz").display().to_string();
    let out = env.run(&["mirror", "verify", &full, "--keyring", &ring]);
    expect(
        &out,
        0,
        "signed by 1 trusted key(s): mirror-root-ed25519-01",
    );
    let out = env.run(&[
        "mirror",
        "verify",
        &thin,
        "--keyring",
        &ring,
        "--output",
        "json",
    ]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "thin");
    assert_eq!(v["generation"], 2);
    // The thin sample applies onto (a copy of) the full one.
    copy_tree(&s.join("m0-sample"), &env.p("site"));
    let out = env.run(&["mirror", "apply", &thin, "--onto", "site", "--key", &key]);
    expect(&out, 0, "Applied");
    expect(
        &env.run(&["mirror", "verify", "site", "--key", &key]),
        0,
        "2025.12.1",
    );
    // Another key does not verify them.
    env.keygen("k");
    expect(&env.verify(&full, &[]), 1, "no signature verifies");
}

#[test]
fn a_detached_header_verifies_on_its_own() {
    let env = Env::new();
    let s = samples();
    let key = s.join("mirror-root-ed25519-01.pub").display().to_string();
    let header = s.join("m0-sample/mirror/metadata/mirror.dsse.json");
    let hs = header.display().to_string();
    // In place: the payload is the bundle's manifest.json.
    let out = env.run(&["mirror", "verify", &hs, "--key", &key]);
    expect(
        &out,
        0,
        "Verified OK: detached header of stellaops-mirror-sample 2025.12.0",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("files were not checked"));
    // On its own: the header and the manifest it signs, nothing else (no manifest.dsse, no
    // content, no checksum files).
    std::fs::create_dir_all(env.p("alone")).unwrap();
    std::fs::copy(&header, env.p("alone/mirror.dsse.json")).unwrap();
    std::fs::copy(
        s.join("m0-sample/manifest.json"),
        env.p("alone/manifest.json"),
    )
    .unwrap();
    let out = env.run(&[
        "mirror",
        "verify",
        "alone/mirror.dsse.json",
        "--payload",
        "alone/manifest.json",
        "--key",
        &key,
        "--output",
        "json",
    ]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["form"], "detached-header");
    assert_eq!(v["purpose"], "mirror-bundle");
    assert_eq!(v["contentChecked"], false);
    assert_eq!(v["signers"].as_array().unwrap().len(), 1);

    let h: Value = serde_json::from_slice(&std::fs::read(&header).unwrap()).unwrap();
    let hostile = |name: &str, edit: &dyn Fn(&mut Value)| -> Output {
        let mut x = h.clone();
        edit(&mut x);
        write(env.p(name), serde_json::to_vec(&x).unwrap());
        env.run(&[
            "mirror",
            "verify",
            name,
            "--payload",
            "alone/manifest.json",
            "--key",
            &key,
        ])
    };
    let out = hostile("purpose.json", &|x| x["purpose"] = json!("attestation"));
    expect(&out, 1, "not \"mirror-bundle\"");
    let out = hostile("digest.json", &|x| {
        x["payloadSha256"] = json!("00".repeat(32))
    });
    expect(&out, 1, "payload hash mismatch");
    let out = hostile("sig.json", &|x| {
        let sig = x["signatures"][0]["sig"].as_str().unwrap().to_string();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        x["signatures"][0]["sig"] = json!(format!("{flipped}{}", &sig[1..]));
    });
    expect(&out, 1, "no signature verifies");
    let out = hostile("issuer.json", &|x| x["issuer"] = json!("someone@else"));
    expect(&out, 1, "issuer");
    let out = hostile("keyid.json", &|x| {
        x["keyid"] = json!("sha256:".to_string() + &"ab".repeat(32))
    });
    expect(&out, 1, "keyid");
    let out = hostile("nosigs.json", &|x| x["signatures"] = json!([]));
    expect(&out, 1, "no signatures");
    let out = hostile("extra.json", &|x| x["extra"] = json!(1));
    expect(&out, 2, "unknown field");
    // The header with another manifest (the thin sample's is not the one it signs).
    write(env.p("other.json"), b"{}");
    let out = env.run(&[
        "mirror",
        "verify",
        "alone/mirror.dsse.json",
        "--payload",
        "other.json",
        "--key",
        &key,
    ]);
    expect(&out, 1, "payload hash mismatch");
    // By another key.
    env.keygen("k");
    let out = env.run(&[
        "mirror",
        "verify",
        "alone/mirror.dsse.json",
        "--payload",
        "alone/manifest.json",
        "--key",
        "k.pub",
    ]);
    expect(&out, 1, "no signature verifies");
    // Without a manifest to check it against: not found, and told how to give one.
    std::fs::remove_file(env.p("alone/manifest.json")).unwrap();
    let out = env.run(&["mirror", "verify", "alone/mirror.dsse.json", "--key", &key]);
    expect(&out, 4, "--payload");
}

#[test]
fn mirror_verify_json_reports_a_failure() {
    let env = Env::new();
    env.signed_bundle();
    write(env.p("b/advisories/nvd.json"), b"{\"nvd\":\"tampered\"}");
    let out = env.verify("b", &["--output", "json"]);
    expect(&out, 1, "changed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["outcome"], "verification-failed");
    assert!(v["error"].as_str().unwrap().contains("nvd.json"));
    assert_eq!(v["source"], "b");
}

/// One raw ustar header (any name up to 100 bytes, no sanitising). ustar, not v7: tar
/// readers honour extension headers only in ustar/GNU archives.
fn raw_tar_header(name: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    if let Some(u) = h.as_ustar_mut() {
        u.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// `n` bytes of `byte`, written in 1 MiB pieces (the archives below are far larger than
/// what a test should hold in memory), then the tar padding.
fn put_filled(w: &mut dyn Write, byte: u8, n: u64) {
    let chunk = vec![byte; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k]).expect("write");
        left -= k as u64;
    }
    let pad = (512 - (n % 512)) % 512;
    w.write_all(&vec![0u8; pad as usize]).expect("write");
}

/// A PAX record `LEN key=value\n` (LEN counts the whole record).
fn pax_record(kv: &str) -> String {
    let body = format!(" {kv}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

/// Peak resident memory of a `stella` run, from GNU time (`/usr/bin/time -f %M`, KiB).
fn run_measured(env: &Env, args: &[&str]) -> (Output, u64) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("STELLA_MAXRSS_KIB=%M")
        .arg(env!("CARGO_BIN_EXE_stella"))
        .args(args)
        .current_dir(env.dir.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run /usr/bin/time (apt package `time`, see scripts/setup-test-deps.sh)");
    let err = String::from_utf8_lossy(&out.stderr);
    let kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("STELLA_MAXRSS_KIB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max RSS in: {err}"));
    (out, kib)
}

// Regression (issue #8 items 2 and 3): PAX size records and GNU long names walked past the
// size limits (a 1 MB archive grew memory to 1.8 GB), and content was written before the
// signature was checked. Each hostile archive is small on disk and huge decompressed; every
// one is refused, in well under the 200 MiB memory budget, with nothing written.
#[test]
fn hostile_extension_headers_and_bombs_stay_within_memory_and_disk() {
    let env = Env::new();
    env.signed_bundle();
    let files = bundle_entries(&env);
    let meta_file = |name: &str| -> Vec<u8> {
        files
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, d)| d.clone())
            .expect("metadata file")
    };
    let envelope = meta_file("manifest.dsse");
    type Build<'a> = Box<dyn Fn(&mut dyn Write, u64) + 'a>;
    let cases: Vec<(&str, Build<'_>, &str)> = vec![
        (
            "pax-size",
            Box::new(|w: &mut dyn Write, big: u64| {
                // A PAX record saying the next entry is `big` bytes; its ustar size says 2.
                let rec = pax_record(&format!("size={big}"));
                w.write_all(&raw_tar_header(
                    "PaxHeaders/manifest.dsse",
                    rec.len() as u64,
                    tar::EntryType::XHeader,
                ))
                .unwrap();
                w.write_all(rec.as_bytes()).unwrap();
                w.write_all(&vec![0u8; 512 - rec.len()]).unwrap();
                w.write_all(&raw_tar_header("manifest.dsse", 2, tar::EntryType::Regular))
                    .unwrap();
                put_filled(w, b' ', big);
            }),
            "PAX extended header (type x)",
        ),
        (
            "gnu-longname",
            Box::new(|w: &mut dyn Write, big: u64| {
                w.write_all(&raw_tar_header(
                    "././@LongLink",
                    big,
                    tar::EntryType::GNULongName,
                ))
                .unwrap();
                put_filled(w, b'a', big);
                w.write_all(&raw_tar_header("manifest.dsse", 2, tar::EntryType::Regular))
                    .unwrap();
                put_filled(w, b' ', 2);
            }),
            "GNU long-name header (type L)",
        ),
        (
            "content-first",
            Box::new(|w: &mut dyn Write, big: u64| {
                w.write_all(&raw_tar_header(
                    "advisories/nvd.json",
                    big,
                    tar::EntryType::Regular,
                ))
                .unwrap();
                put_filled(w, 0, big);
                w.write_all(&raw_tar_header(
                    "manifest.dsse",
                    envelope.len() as u64,
                    tar::EntryType::Regular,
                ))
                .unwrap();
                w.write_all(&envelope).unwrap();
                let pad = (512 - envelope.len() % 512) % 512;
                w.write_all(&vec![0u8; pad]).unwrap();
            }),
            "comes before manifest.dsse",
        ),
        (
            "metadata-bomb",
            Box::new(|w: &mut dyn Write, _big: u64| {
                for name in ["manifest.dsse", "manifest.json", "SHA256SUMS"] {
                    let n = stella_mirror::MAX_METADATA_BYTES;
                    w.write_all(&raw_tar_header(name, n, tar::EntryType::Regular))
                        .unwrap();
                    put_filled(w, b' ', n);
                }
            }),
            // Above the in-memory total: spooled (as the metadata of a bundle of ~120,000
            // files is) and refused for what it is.
            "manifest.dsse: malformed DSSE envelope",
        ),
    ];
    for (name, build, fragment) in &cases {
        for (ext, big) in [("tar.gz", 300u64 << 20), ("tar.zst", 2u64 << 30)] {
            let file = format!("{name}.{ext}");
            let f = std::fs::File::create(env.p(&file)).unwrap();
            if ext == "tar.gz" {
                let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                build(&mut gz, big);
                gz.write_all(&[0u8; 1024]).unwrap();
                gz.finish().unwrap();
            } else {
                let mut z = zstd::stream::write::Encoder::new(f, 1).unwrap();
                build(&mut z, big);
                z.write_all(&[0u8; 1024]).unwrap();
                z.finish().unwrap();
            }
            let on_disk = std::fs::metadata(env.p(&file)).unwrap().len();
            assert!(on_disk < 8 << 20, "{file} is {on_disk} bytes");
            let dest = format!("dest-{name}-{}", ext.replace('.', ""));
            for args in [
                vec!["mirror", "verify", file.as_str(), "--key", "k.pub"],
                vec![
                    "mirror",
                    "unpack",
                    file.as_str(),
                    "--output",
                    &dest,
                    "--key",
                    "k.pub",
                ],
            ] {
                let (out, kib) = run_measured(&env, &args);
                expect(&out, 1, fragment);
                assert!(kib < 200 * 1024, "{file} {}: peak RSS {kib} KiB", args[1]);
            }
            assert!(!env.p(&dest).exists(), "{file}: dest written");
            assert_no_staging(env.dir.path());
            std::fs::remove_file(env.p(&file)).unwrap();
        }
    }
}

/// Sign `b/` keyless: `stella mirror sign` with each leaf's (ephemeral) key, then
/// `manifest.sigstore.json` holding one Sigstore bundle per leaf, each over the manifest.dsse
/// payload, logged now by the issuing test Sigstore.
fn keyless_sign(
    env: &Env,
    leaves: &[(
        &stella_sigstore::testing::TestSigstore,
        &stella_sigstore::testing::Leaf,
    )],
) {
    let mut keys = Vec::new();
    for (i, (_, leaf)) in leaves.iter().enumerate() {
        let name = format!("leaf{i}.pem");
        write(env.p(&name), leaf.key.private_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(env.p(&name), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        keys.push(name);
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    env.sign("b", &refs);
    let env_json: Value =
        serde_json::from_slice(&std::fs::read(env.p("b/manifest.dsse")).unwrap()).unwrap();
    let payload = stella_dsse::b64::decode(env_json["payload"].as_str().unwrap()).unwrap();
    let payload_type = env_json["payloadType"].as_str().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let bundles: Vec<Value> = leaves
        .iter()
        .map(|(s, leaf)| s.dsse_bundle(leaf, payload_type, &payload, now))
        .collect();
    write(
        env.p("b/manifest.sigstore.json"),
        serde_json::to_vec(&bundles).unwrap(),
    );
}

/// Issue #11 item 5: a keyring entry naming a Sigstore identity makes keyless-signed mirror
/// bundles verify; each rule has its own refusal.
#[test]
fn keyless_mirror_bundles_verify_with_keyring_identities() {
    use stella_sigstore::testing::{LeafSpec, TestSigstore};
    const ISSUER: &str = "https://issuer.test.invalid";
    let env = Env::new();
    env.sources(1, "a");
    expect(&env.create("b", &[]), 0, "Created full bundle");
    let sigstore = TestSigstore::new();
    write(env.p("root.json"), sigstore.trusted_root_json());
    let ring = |purposes: &str| {
        write(
            env.p("ring.toml"),
            format!(
                "[[identities]]\nid = \"mirror-ci\"\ncertificate_identity_regexp = '.*@ops\\.example\\.com'\n\
                 certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = {purposes}\n"
            ),
        )
    };
    ring("[\"mirror-bundle\"]");
    let now = time::OffsetDateTime::now_utc();
    let email = |san: &str| LeafSpec::email(san, ISSUER, now);
    const HEADER: &str = "b/mirror/metadata/mirror.dsse.json";
    let verify_target = |target: &str, extra: &[&str]| {
        let mut args = vec!["--keyring", "ring.toml"];
        args.extend(extra);
        env.verify(target, &args)
    };
    let verify = |extra: &[&str]| verify_target("b/manifest.dsse", extra);
    // The bundle and its detached header on its own (keyless signatures read from beside the
    // payload): the same verdict, each naming `fragment`.
    let check = |extra: &[&str], code: i32, fragment: &str| {
        expect(&verify(extra), code, fragment);
        expect(&verify_target(HEADER, extra), code, fragment);
    };

    // Signed keyless by a matching identity: verified, the signer is the identity entry.
    let good = sigstore.issue(&email("release@ops.example.com"));
    keyless_sign(&env, &[(&sigstore, &good)]);
    check(&[], 0, "Verified OK");
    check(&[], 0, "mirror-ci");
    // The header's JSON report names the identity entry as the signer.
    let out = verify_target(HEADER, &["--output", "json"]);
    expect(&out, 0, "");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["form"], "detached-header", "{v}");
    assert!(v["signers"].to_string().contains("mirror-ci"), "{v}");
    // With --payload elsewhere, the keyless signatures are read from beside that payload.
    std::fs::create_dir(env.p("elsewhere")).unwrap();
    std::fs::copy(env.p("b/manifest.json"), env.p("elsewhere/manifest.json")).unwrap();
    let elsewhere = ["--payload", "elsewhere/manifest.json"];
    expect(
        &verify_target(HEADER, &elsewhere),
        1,
        "threshold 1 is larger than the 0 trusted key",
    );
    std::fs::copy(
        env.p("b/manifest.sigstore.json"),
        env.p("elsewhere/manifest.sigstore.json"),
    )
    .unwrap();
    expect(
        &verify_target(HEADER, &elsewhere),
        0,
        "Verified OK: detached header",
    );
    // A changed payload is refused before any signature is judged.
    let mut m = std::fs::read(env.p("elsewhere/manifest.json")).unwrap();
    m.push(b' ');
    write(env.p("elsewhere/manifest.json"), &m);
    expect(
        &verify_target(HEADER, &elsewhere),
        1,
        "payload hash mismatch",
    );
    // Through the archive stream too (manifest.sigstore.json is packed as metadata).
    expect(
        &env.run(&["mirror", "pack", "b", "--output", "b.tar.gz"]),
        0,
        "",
    );
    expect(
        &env.run(&["mirror", "verify", "b.tar.gz", "--keyring", "ring.toml"]),
        0,
        "Verified OK",
    );
    // A Sigstore bundle over anything but the manifest.dsse payload is refused outright.
    let other = sigstore.dsse_bundle(&good, "application/vnd.in-toto+json", b"{}", now);
    write(
        env.p("b/manifest.sigstore.json"),
        serde_json::to_vec(&other).unwrap(),
    );
    check(&[], 1, "does not sign the manifest of manifest.dsse");
    // Without the Sigstore bundle the ephemeral key is nobody.
    std::fs::remove_file(env.p("b/manifest.sigstore.json")).unwrap();
    check(&[], 1, "threshold 1 is larger than the 0 trusted key");
    // A keyring trusting the identity for another purpose only.
    keyless_sign(&env, &[(&sigstore, &good)]);
    ring("[\"release\"]");
    check(&[], 1, "not trusted for purpose `mirror-bundle`");
    ring("[\"mirror-bundle\"]");

    // No `trusted_root`: the public-good root, shipped (which does not know the test log)
    // or imported with `stella trust-root import` (an Offline Kit update), which then counts.
    let text = std::fs::read_to_string(env.p("ring.toml")).unwrap();
    write(
        env.p("ring.toml"),
        text.replace("trusted_root = \"root.json\"\n", ""),
    );
    let roots = env.p("trust-roots");
    let roots_env = [("STELLA_TRUST_ROOT_DIR", roots.to_str().unwrap())];
    let verify_with_roots = || {
        env.run_env(
            &[
                "mirror",
                "verify",
                "b/manifest.dsse",
                "--keyring",
                "ring.toml",
            ],
            &roots_env,
        )
    };
    expect(&verify_with_roots(), 1, "unknown log id");
    expect(
        &env.run_env(&["trust-root", "import", "root.json"], &roots_env),
        0,
        "imported the public-good trusted root",
    );
    expect(&verify_with_roots(), 0, "Verified OK");
    write(env.p("ring.toml"), text);

    // Each negative twin: a whole keyless signature that differs in one thing.
    let mut expired = email("release@ops.example.com");
    expired.not_before = now - time::Duration::minutes(20);
    expired.not_after = now - time::Duration::minutes(10);
    let other_ca = sigstore.other_ca();
    let cases: Vec<(&str, &TestSigstore, LeafSpec, &str)> = vec![
        (
            "regex anchoring",
            &sigstore,
            email("release@ops.example.com.attacker"),
            "does not match",
        ),
        (
            "wrong SAN",
            &sigstore,
            email("release@example.org"),
            "does not match",
        ),
        (
            "wrong issuer",
            &sigstore,
            LeafSpec::email("release@ops.example.com", "https://evil.test.invalid", now),
            "OIDC issuer",
        ),
        (
            "unknown CA",
            &other_ca,
            email("release@ops.example.com"),
            "does not chain to a Fulcio CA",
        ),
        ("expired leaf at log time", &sigstore, expired, "not at"),
    ];
    for (name, s, spec, why) in cases {
        let leaf = s.issue(&spec);
        keyless_sign(&env, &[(s, &leaf)]);
        for target in ["b/manifest.dsse", HEADER] {
            let out = verify_target(target, &[]);
            assert_eq!(out.status.code(), Some(1), "{name} {target}");
            expect(&out, 1, why);
            expect(&out, 1, "keyless signatures");
        }
    }

    // Thresholds count an identity once: two leaves (two keys) of one identity are one signer.
    let a = sigstore.issue(&email("a@ops.example.com"));
    let a2 = sigstore.issue(&email("a@ops.example.com"));
    keyless_sign(&env, &[(&sigstore, &a), (&sigstore, &a2)]);
    check(&["--threshold", "2"], 1, "threshold 2");
    check(&[], 0, "Verified OK");
    // Two identity entries, two identities: threshold 2 is met.
    write(
        env.p("ring.toml"),
        format!(
            "[[identities]]\nid = \"ci-a\"\ncertificate_identity = \"a@ops.example.com\"\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = [\"mirror-bundle\"]\n\
             [[identities]]\nid = \"ci-b\"\ncertificate_identity = \"b@ops.example.com\"\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = [\"mirror-bundle\"]\n"
        ),
    );
    let b = sigstore.issue(&email("b@ops.example.com"));
    keyless_sign(&env, &[(&sigstore, &a), (&sigstore, &b)]);
    let out = verify(&["--threshold", "2"]);
    expect(&out, 0, "ci-a");
    expect(&out, 0, "ci-b");
    // A key entry for the certified key and an identity entry for its certificate are still
    // one signer (the key is not counted twice).
    write(env.p("a.pub"), a.key.public_pem());
    let text = std::fs::read_to_string(env.p("ring.toml")).unwrap();
    write(
        env.p("ring.toml"),
        format!(
            "{}[[keys]]\nid = \"a-key\"\npublic_key = \"a.pub\"\npurposes = [\"mirror-bundle\"]\n",
            text.replace(
                "id = \"ci-b\"\ncertificate_identity = \"b@",
                "id = \"ci-b\"\ncertificate_identity = \"c@"
            )
        ),
    );
    keyless_sign(&env, &[(&sigstore, &a)]);
    check(&["--threshold", "2"], 1, "threshold 2");
}

/// `mirror verify` tells an archive by its bytes when its name does not say (a download saved
/// as `bundle.bin`), and refuses what it cannot verify — a detached envelope under another
/// name, a text file — with exit 2 and what it takes, instead of failing on a wrong folder.
#[test]
fn verify_tells_archives_by_their_bytes_and_refuses_what_is_not_a_bundle() {
    let env = Env::new();
    env.signed_bundle();
    for ext in ["tar.gz", "tar.zst"] {
        let packed = format!("b.{ext}");
        expect(
            &env.run(&["mirror", "pack", "b", "--output", &packed]),
            0,
            "Packed",
        );
        let renamed = format!("download-{}.bin", ext.replace('.', "-"));
        std::fs::rename(env.p(&packed), env.p(&renamed)).unwrap();
        expect(&env.verify(&renamed, &[]), 0, "Verified OK");
        // Tampered, it is still read as the archive it is: the verdict is the archive's.
        let mut bytes = std::fs::read(env.p(&renamed)).unwrap();
        let n = bytes.len();
        bytes.truncate(n - 40);
        write(env.p(&renamed), &bytes);
        let out = env.verify(&renamed, &[]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{renamed}: truncated archive verified"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("not a bundle"),
            "{renamed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A detached envelope beside the folder, and inside it: refused up front, exit 2.
    std::fs::copy(env.p("b/manifest.dsse"), env.p("release.dsse")).unwrap();
    std::fs::copy(env.p("b/manifest.dsse"), env.p("b/release.dsse")).unwrap();
    for target in ["release.dsse", "b/release.dsse"] {
        let out = env.verify(target, &[]);
        expect(&out, 2, "not a bundle");
        expect(&out, 2, "manifest.dsse");
    }
    std::fs::remove_file(env.p("b/release.dsse")).unwrap();
    write(env.p("notes.txt"), "not an archive");
    expect(&env.verify("notes.txt", &[]), 2, "not a bundle");
    // The folder's own envelope still verifies the folder.
    expect(&env.verify("b/manifest.dsse", &[]), 0, "Verified OK");
}
