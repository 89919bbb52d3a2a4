//! Test support (feature `testing`): a throw-away `docker-registry` (distribution 2.8, from
//! Debian) on 127.0.0.1, and random images written into OCI layouts. Used by this crate's and
//! the CLI's integration tests and by the benchmark. Never part of the shipped binary.
//!
//! Tests that need the registry fail loudly, never skip, when it is missing: run
//! `scripts/setup-test-deps.sh`.
#![allow(clippy::unwrap_used, clippy::panic)] // test support: a failure is a failing test

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::digest::{Digest, Hasher};
use crate::layout::Layout;
use crate::media::{Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use stella_digest::HashingWriter;

pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry` process with its own storage, killed on drop.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    generation: usize,
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Registry {
    /// Start a fresh registry on a free 127.0.0.1 port.
    pub fn start() -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup-test-deps.sh (Debian package docker-registry)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry {
            child: None,
            port: free_port(),
            dir,
            generation: 0,
        };
        r.spawn();
        r
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The storage folder (blobs live under `docker/registry/v2/blobs`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn log_path(&self, generation: usize) -> PathBuf {
        self.dir.path().join(format!("registry-{generation}.log"))
    }

    fn spawn(&mut self) {
        // A fixed `http.secret` keeps upload sessions valid across restarts (resume tests).
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: stella-test-secret\n",
            self.storage().display(),
            self.port
        );
        std::fs::write(self.config_path(), config).unwrap();
        self.generation += 1;
        let log = std::fs::File::create(self.log_path(self.generation)).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "docker-registry exited ({status}) at start:\n{}",
                        self.log()
                    );
                }
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains(" 200 ") {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not become ready:\n{}", self.log());
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the registry (SIGKILL, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Logs of the current process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.generation)).unwrap_or_default()
    }

    /// Access-log lines of the current process with this method whose path contains `part`.
    pub fn requests(&self, method: &str, part: &str) -> Vec<String> {
        let needle = format!("\"{method} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains(part))
            .map(str::to_string)
            .collect()
    }

    /// Blob uploads the current process completed (`PUT .../blobs/uploads/...digest=`).
    pub fn completed_uploads(&self) -> usize {
        self.requests("PUT", "/blobs/uploads/")
            .iter()
            .filter(|l| l.contains("digest=") && l.contains("\" 201 "))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Random bytes.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for chunk in v.chunks_mut(1 << 20) {
        aws_lc_rs::rand::fill(chunk).unwrap();
    }
    v
}

/// A layer written into a layout (a gzip-compressed tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

impl Layer {
    pub(crate) fn descriptor(&self) -> Descriptor {
        Descriptor::new(OCI_LAYER_GZIP, self.digest, self.size)
    }
}

/// An image or index written into a layout.
#[derive(Debug, Clone)]
pub struct Built {
    pub digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    pub(crate) platform: String,
    pub layers: Vec<Layer>,
    pub config: Option<Digest>,
}

impl Built {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest, self.size)
    }
}

/// Write a gzip-compressed tar (stored deflate blocks: random data does not compress)
/// holding one file of `payload` random bytes.
pub fn random_layer(layout: &Layout, payload: u64) -> Layer {
    let tmp_path = layout
        .root()
        .join("blobs")
        .join("sha256")
        .join(format!(".layer-{}", Digest::of(&random_bytes(16)).hex()));
    let file =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp_path).unwrap());
    let out = HashingWriter::new(file);
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::none());
    let mut tar_hash = Hasher::new();
    let mut put = |b: &[u8], gz: &mut flate2::write::GzEncoder<HashingWriter<_>>| {
        tar_hash.update(b);
        gz.write_all(b).unwrap();
    };
    put(&tar_header("data.bin", payload), &mut gz);
    let mut left = payload;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        aws_lc_rs::rand::fill(&mut buf[..n]).unwrap();
        put(&buf[..n], &mut gz);
        left -= n as u64;
    }
    let pad = (512 - (payload % 512) as usize) % 512;
    put(&vec![0u8; pad + 1024], &mut gz);
    let mut out = gz.finish().unwrap();
    out.flush().unwrap();
    let size = out.hasher.len();
    let digest = out.hasher.finish();
    drop(out.inner);
    std::fs::rename(&tmp_path, layout.blob_path(&digest)).unwrap();
    Layer {
        digest,
        size,
        diff_id: tar_hash.finish(),
    }
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let size_field = format!("{size:011o}\0");
    h[124..136].copy_from_slice(size_field.as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let chk = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(chk.as_bytes());
    h
}

/// Write an image manifest (and config) over `layers` for `platform` (`os/arch`).
pub fn image(layout: &Layout, platform: &str, layers: &[Layer]) -> Built {
    let (os, arch) = platform.split_once('/').unwrap();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = json!({
        "architecture": arch,
        "os": os,
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        // Unique per image, so images over the same layers still differ.
        "created": "2026-01-01T00:00:00Z",
        "history": [{"created_by": format!("stella test {}", Digest::of(&random_bytes(16)).hex())}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_d = layout.write_blob(&config_bytes).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_d.to_string(), "size": config_bytes.len()},
        "layers": layers.iter().map(|l| l.descriptor().to_value()).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = layout.write_blob(&bytes).unwrap();
    Built {
        digest,
        size: bytes.len() as u64,
        media_type: OCI_MANIFEST.to_string(),
        platform: platform.to_string(),
        layers: layers.to_vec(),
        config: Some(config_d),
    }
}

/// Write an index over `images` (each with its platform).
pub fn index(layout: &Layout, images: &[Built]) -> Built {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let (os, arch) = i.platform.split_once('/').unwrap();
            json!({"mediaType": i.media_type, "digest": i.digest.to_string(), "size": i.size,
                   "platform": {"os": os, "architecture": arch}})
        })
        .collect();
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let bytes = serde_json::to_vec(&idx).unwrap();
    let digest = layout.write_blob(&bytes).unwrap();
    Built {
        digest,
        size: bytes.len() as u64,
        media_type: OCI_INDEX.to_string(),
        platform: String::new(),
        layers: images.iter().flat_map(|i| i.layers.clone()).collect(),
        config: None,
    }
}

/// A layout at `dir` with one random single-platform image named `name`
/// (`layers` payload sizes in bytes).
pub fn layout_with_image(dir: &Path, name: &str, layers: &[u64]) -> (Layout, Built) {
    let layout = Layout::create(dir).unwrap();
    let ls: Vec<Layer> = layers.iter().map(|n| random_layer(&layout, *n)).collect();
    let img = image(&layout, "linux/amd64", &ls);
    layout.set_ref(&img.descriptor(), name).unwrap();
    (layout, img)
}

/// Run a command, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo`, failing loudly when missing.
pub fn skopeo() -> Command {
    assert!(
        Path::new("/usr/bin/skopeo").exists(),
        "/usr/bin/skopeo is missing: run scripts/setup-test-deps.sh (Debian package skopeo)"
    );
    let mut c = Command::new("/usr/bin/skopeo");
    // Our own policy: accept anything (we test transport, not skopeo's signature policy).
    c.arg("--insecure-policy");
    c
}
