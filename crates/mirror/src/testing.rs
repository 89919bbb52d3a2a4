//! Test fixtures shared by the unit tests and the integration suite (`tests/it`): built with
//! `cfg(test)` or the `testing` feature, never in a release build.

use std::path::PathBuf;

use stella_keys::Signer as _;

use crate::hash::NoProgress;
use crate::manifest::{FileEntry, Kind, Manifest};
use crate::names;
use crate::verify::Options;
use crate::BundlePath;

/// A small valid full manifest (not signed, no folder): bundle `b` version `1`, generation 1,
/// issuer `me`, generated 2025-01-01, and two `text/plain` files `a` (1 byte, digest of all
/// `0x00` bytes) and `b/c` (2 bytes, all `0x11`).
#[allow(clippy::expect_used)]
pub fn sample_manifest() -> Manifest {
    let file = |path: &str, size: u64, byte: u8| FileEntry {
        path: BundlePath::new(path).expect("path"),
        size,
        sha256: stella_digest::Digest::sha256([byte; 32]),
        media_type: "text/plain".into(),
    };
    Manifest {
        bundle: "b".into(),
        version: "1".into(),
        generation: 1,
        kind: Kind::Full,
        base: None,
        generated_at: "2025-01-01T00:00:00.000Z".into(),
        valid_for_seconds: None,
        issuer: "me".into(),
        purpose: crate::PURPOSE.into(),
        files: vec![file("a", 1, 0), file("b/c", 2, 0x11)],
        images: vec![],
        removed: vec![],
        checksums: vec![],
    }
}

/// An honest bundle: two advisory files (`advisories/a.json`, `advisories/b.json`), created
/// and signed now with a fresh Ed25519 key, in a temporary folder; and the keyring that trusts
/// that key.
#[derive(Debug)]
pub struct SignedBundle {
    pub dir: tempfile::TempDir,
    pub ring: stella_keys::Keyring,
    /// The key that signed it (to re-sign an edited manifest).
    pub key: stella_keys::FileKey,
}

impl SignedBundle {
    /// Create and sign the bundle. Panics on failure (a test fixture).
    pub fn new() -> Self {
        Self::from_spec(
            "name: t\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds/a.json\n  - path: feeds/b.json\n",
            |src| {
                std::fs::create_dir_all(src.join("feeds")).expect("mkdir");
                std::fs::write(src.join("feeds/a.json"), b"{\"a\":1}").expect("write");
                std::fs::write(src.join("feeds/b.json"), vec![b'b'; 3000]).expect("write");
            },
        )
    }

    /// A bundle of the sources `fill` writes under `src/`, described by `spec` (YAML, paths
    /// relative to `src/`), created and signed now with a fresh Ed25519 key.
    #[allow(clippy::expect_used)]
    pub fn from_spec(spec: &str, fill: impl FnOnce(&std::path::Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        fill(&src);
        let spec = crate::spec::Spec::parse(spec, &src).expect("spec");
        let out = dir.path().join("bundle");
        let opts = crate::create::CreateOptions {
            generated_at: time::OffsetDateTime::now_utc(),
            base: None,
            registry: Default::default(),
        };
        crate::create::create(&spec, &out, &opts, &NoProgress).expect("create");
        let key = stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).expect("key");
        crate::sign::sign_with(
            &out.join(names::MANIFEST),
            &out.join(names::ENVELOPE),
            &[&key],
            time::OffsetDateTime::now_utc(),
            None,
            &NoProgress,
        )
        .expect("sign");
        let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
            key.public_key().clone(),
        )])
        .expect("keyring");
        SignedBundle { dir, ring, key }
    }

    /// The bundle folder.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// Verification options trusting the bundle's key, judged now.
    pub fn opts(&self) -> Options<'_> {
        Options {
            keyring: &self.ring,
            threshold: 1,
            now: time::OffsetDateTime::now_utc(),
            max_age: None,
            time_roots: None,
        }
    }
}

impl Default for SignedBundle {
    fn default() -> Self {
        Self::new()
    }
}
