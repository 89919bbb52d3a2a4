//! A patched moto KMS server (tests/kms/moto_kms.py, venv from scripts/setup-test-deps.sh) on
//! a free loopback port, killed when dropped. Shared by the keys and cli test binaries.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The workspace root.
pub(crate) fn workspace_root() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    p.canonicalize().unwrap_or(p)
}

/// The python of the KMS emulator's venv.
pub(crate) fn kms_python() -> PathBuf {
    let py = workspace_root().join(".venv-kms/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup-test-deps.sh",
        py.display()
    );
    py
}

/// The emulator script.
pub(crate) fn moto_script() -> PathBuf {
    workspace_root().join("tests/kms/moto_kms.py")
}

pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
}

impl Moto {
    /// Start the server; the first `throttle_first` Sign calls answer ThrottlingException.
    pub(crate) fn start(throttle_first: u32) -> Self {
        let mut cmd = Command::new(kms_python());
        cmd.arg(moto_script()).arg("serve");
        if throttle_first > 0 {
            cmd.args(["--throttle-first", &throttle_first.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_kms.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto_kms.py did not print its port: {line:?}");
            }
        };
        Moto { child, port }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop the server now (the KMS goes away mid-use).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
