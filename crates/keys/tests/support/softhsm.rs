//! A SoftHSM2 set-up in a temp dir (`apt-get install softhsm2`, done by
//! scripts/setup-test-deps.sh): its `softhsm2.conf` and token directory, and tokens initialised
//! with `softhsm2-util`. Shared by the keys, cli and signer test binaries.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialised in a process: a test
//! that loads the module in process sets it once; one that runs `stella` hands it to each
//! process.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SoftHSM2 PKCS#11 module.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A temp dir holding `softhsm2.conf` and the `tokens` directory it names; removed when
/// dropped.
pub(crate) struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    pub(crate) fn new() -> Self {
        assert!(
            Path::new(MODULE).is_file(),
            "{MODULE} missing: run scripts/setup-test-deps.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("stella-softhsm-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().display()
            ),
        )
        .unwrap();
        SoftHsm { dir }
    }

    /// `name` inside the temp dir.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file (the value of `SOFTHSM2_CONF`).
    pub(crate) fn conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    pub(crate) fn tokens(&self) -> PathBuf {
        self.path("tokens")
    }

    /// Initialise a token `label` in a free slot, with user PIN `pin`.
    pub(crate) fn init_token(&self, label: &str, pin: &str, so_pin: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ])
            .output()
            .expect("softhsm2-util (run scripts/setup-test-deps.sh)");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
