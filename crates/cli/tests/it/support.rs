//! Shared helpers for the `it` integration-test binary: running `stella`, the interop peers
//! (`tests/interop/`, installed by `scripts/setup-test-deps.sh`) and `openssl`, temp dirs and
//! exit-code assertions.
//!
//! Peers that are missing make the tests fail loudly (never skip): the README's test command
//! runs `scripts/setup-test-deps.sh` first.

// Helpers are shared by several test modules; not every module uses every helper. A helper that
// cannot do its job panics: that is a failing test with a clear message.
#![allow(dead_code, clippy::panic, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

/// Password the `stella` runner puts in `COSIGN_PASSWORD` unless the caller overrides it.
pub(crate) const PASSWORD: &str = "stella-interop-password";

/// Build a `Vec<OsString>` argument list from anything that is `AsRef<OsStr>` (`&str`,
/// `String`, `&Path`, `PathBuf`, ...): `stella(argv!["verify", "--key", &pub_pem, &env], &[])`.
macro_rules! argv {
    ($($x:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from(::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(&$x))),*]
    };
}
pub(crate) use argv;

const SETUP_HINT: &str = "run scripts/setup-test-deps.sh (the README test command does this)";

/// The workspace root (`/work/main` style checkout root).
pub(crate) fn root() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    p.canonicalize().unwrap_or(p)
}

/// `tests/interop/` under the workspace root.
pub(crate) fn interop_dir() -> PathBuf {
    root().join("tests").join("interop")
}

/// The `stella` binary built for this test run.
pub(crate) fn stella_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stella")
}

/// A fresh temporary directory (removed when dropped).
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stella-it-")
        .tempdir()
        .expect("create temp dir")
}

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {what}: {e}; {SETUP_HINT}"),
    }
}

/// Run `stella ARGS` with `COSIGN_PASSWORD` = [`PASSWORD`] (unless `envs` sets it) and stdin
/// closed, so a missing password can never block on a prompt.
pub(crate) fn stella<I, S>(args: I, envs: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(stella_bin());
    cmd.args(args)
        .current_dir(root())
        .env("COSIGN_PASSWORD", PASSWORD);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(cmd, "stella")
}

/// `<root>/.venv/bin/python`; panics with the setup hint when the venv is missing.
pub(crate) fn peer_python() -> PathBuf {
    let py = root().join(".venv").join("bin").join("python");
    assert!(
        py.exists(),
        "interop peer missing: {} not found; {SETUP_HINT}",
        py.display()
    );
    py
}

/// Run `<root>/.venv/bin/python tests/interop/SCRIPT ARGS` from the workspace root.
pub(crate) fn python_peer<I, S>(script: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let py = peer_python();
    let script = interop_dir().join(script);
    assert!(
        script.exists(),
        "peer script {} not found",
        script.display()
    );
    let mut cmd = Command::new(py);
    cmd.arg(script).args(args).current_dir(root());
    run(cmd, "python interop peer")
}

/// Run `node tests/interop/SCRIPT ARGS` from the workspace root; panics with the setup hint
/// when node or `tests/interop/node_modules` is missing.
pub(crate) fn node_peer<I, S>(script: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let modules = interop_dir().join("node_modules");
    assert!(
        modules.join("@sigstore").exists(),
        "interop peer missing: {}/@sigstore not found; {SETUP_HINT}",
        modules.display()
    );
    let script = interop_dir().join(script);
    assert!(
        script.exists(),
        "peer script {} not found",
        script.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(script).args(args).current_dir(root());
    run(cmd, "node (interop peer)")
}

/// Run `openssl ARGS`.
pub(crate) fn openssl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(root());
    run(cmd, "openssl")
}

/// Lossy stdout/stderr for messages.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert the process exited with `code`; on mismatch print its stdout and stderr.
#[track_caller]
pub(crate) fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// [`assert_exit`] with a description of the step.
#[track_caller]
pub(crate) fn assert_exit_ctx(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Write a file (panics on error).
pub(crate) fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
    let path = path.as_ref();
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Read a file (panics on error).
pub(crate) fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Read and parse a JSON file.
pub(crate) fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Write a JSON value (pretty) to a file.
pub(crate) fn write_json(path: impl AsRef<Path>, value: &serde_json::Value) {
    write(path, serde_json::to_vec_pretty(value).unwrap());
}

/// Standard padded base64.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Standard base64 (whitespace ignored).
pub(crate) fn b64_decode(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .unwrap_or_else(|e| panic!("not standard base64 ({e}): {text:?}"))
}

/// The DER inside the first PEM block of `pem` (headers stripped).
pub(crate) fn pem_der(pem: &str) -> Vec<u8> {
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            if inside {
                return b64_decode(&body);
            }
        } else if inside {
            body.push_str(line);
        }
    }
    panic!("no complete PEM block in:\n{pem}");
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, lowercase hex (computed by `openssl dgst`, independent of Stella).
pub(crate) fn sha256_file(path: impl AsRef<Path>) -> String {
    let out = openssl(argv!["dgst", "-sha256", "-r", path.as_ref()]);
    assert_exit_ctx(&out, 0, "openssl dgst -sha256");
    let text = stdout(&out);
    let digest = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(digest.len(), 64, "unexpected openssl dgst output: {text}");
    digest
}

/// SubjectPublicKeyInfo DER of a PEM key file, by openssl: `public` = the file is a public key
/// (`-pubin`), otherwise a private key (PKCS#8 or traditional).
pub(crate) fn openssl_spki_der(key: &Path, public: bool) -> Vec<u8> {
    let mut args = argv!["pkey", "-in", key, "-pubout", "-outform", "DER"];
    if public {
        args.push("-pubin".into());
    }
    let out = openssl(args);
    assert_exit_ctx(
        &out,
        0,
        &format!("openssl pkey (SPKI DER of {})", key.display()),
    );
    out.stdout
}

/// Stella's key id convention computed independently: `sha256:` + hex(SHA-256(SPKI DER)),
/// with the DER from openssl.
pub(crate) fn keyid_of_pub(pub_pem: &Path, scratch_dir: &Path) -> String {
    let der = openssl_spki_der(pub_pem, true);
    let der_path = scratch_dir.join(format!(
        "keyid-{}.der",
        pub_pem.file_name().unwrap().to_string_lossy()
    ));
    write(&der_path, &der);
    format!("sha256:{}", sha256_file(&der_path))
}

/// Key algorithms the peers and Stella share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    P256,
    Ed25519,
}

impl Alg {
    /// The name `stella key generate --algorithm`, `sslib_*.py` and `--key ALG:` use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::P256 => "p256",
            Alg::Ed25519 => "ed25519",
        }
    }
}

/// Generate a key pair with openssl: `DIR/NAME.pem` (PKCS#8, unencrypted) and `DIR/NAME.pub`
/// (SPKI PEM). Returns (private, public).
pub(crate) fn openssl_keypair(dir: &Path, name: &str, alg: Alg) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let gen = match alg {
        Alg::P256 => argv![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &private
        ],
        Alg::Ed25519 => argv!["genpkey", "-algorithm", "ed25519", "-out", &private],
    };
    assert_exit_ctx(&openssl(gen), 0, "openssl genpkey");
    let out = openssl(argv!["pkey", "-in", &private, "-pubout", "-out", &public]);
    assert_exit_ctx(&out, 0, "openssl pkey -pubout");
    (private, public)
}
