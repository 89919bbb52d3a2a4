//! `stella signer serve|sign` and `stella audit verify|export` through the binary: the dev
//! profile end to end (token, sign through the API, offline verify), graceful shutdown on
//! SIGTERM, and tamper detection on the audit database.

// Helpers outside #[test] fns unwrap too: a failure is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::{argv, stella, stella_bin, tempdir};

struct Service {
    child: Child,
    url: String,
}

impl Service {
    fn start(data: &Path) -> Service {
        let mut child = Command::new(stella_bin())
            .args([
                "signer",
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(data)
            .env("STELLA_SIGNER__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service { child, url }
    }

    /// SIGTERM, then wait: graceful shutdown must exit 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_profile_signs_through_the_api_and_verifies_offline() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let svc = Service::start(&data);
    let predicate = dir.path().join("sbom.json");
    std::fs::write(
        &predicate,
        br#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#,
    )
    .unwrap();
    let artefact = dir.path().join("app.bin");
    std::fs::write(&artefact, b"artefact").unwrap();
    let env = dir.path().join("app.dsse.json");
    for _ in 0..3 {
        let out = stella(
            argv![
                "signer",
                "sign",
                "--url",
                &svc.url,
                "--dev-authority",
                "--predicate-type",
                "stella.ops/sbom@v1",
                "--predicate",
                &predicate,
                "--subject",
                &artefact,
                "--poe",
                "dev-poe",
                "--output",
                &env
            ],
            &[],
        );
        ok(&out);
    }
    let out = stella(
        argv!["verify", "--key", data.join("dev-signing.pub"), &env],
        &[],
    );
    ok(&out);
    // A PoE the dev Licensing refuses: exit 3 (authorization).
    let out = stella(
        argv![
            "signer",
            "sign",
            "--url",
            &svc.url,
            "--dev-authority",
            "--predicate-type",
            "stella.ops/sbom@v1",
            "--predicate",
            &predicate,
            "--subject",
            &artefact,
            "--poe",
            "not-dev",
            "--output",
            dir.path().join("x.json")
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("entitlement_denied"));
    svc.stop();

    let db = data.join("audit.db");
    let out = stella(
        argv!["audit", "verify", "--db", &db, "--output", "json"],
        &[],
    );
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["intact"], true);
    assert_eq!(v["records"], 4);
    let head = v["headHash"].as_str().unwrap().to_string();
    let out = stella(
        argv!["audit", "verify", "--db", &db, "--expect-head", &head],
        &[],
    );
    ok(&out);

    let out = stella(argv!["audit", "export", "--db", &db, "--since", "1h"], &[]);
    ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["outcome"], "signed");
    assert_eq!(lines[3]["outcome"], "denied");
    assert_eq!(lines[3]["reasonCode"], "entitlement_denied");
    assert_eq!(lines[0]["chain"]["seq"], 1);
    let out = stella(
        argv!["audit", "export", "--db", &db, "--since", "2099-01-01"],
        &[],
    );
    ok(&out);
    assert!(out.stdout.is_empty());

    // Tampering: an edited record is found, exit 1.
    let reader = stella_store::sqlite::SqliteReader::open(&db).unwrap();
    reader
        .connection()
        .execute_batch(
            "UPDATE audit_log SET record = replace(record, '\"denied\"', '\"signed\"') WHERE seq = 4",
        )
        .unwrap();
    drop(reader);
    let out = stella(argv!["audit", "verify", "--db", &db], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seq 4: record was edited"));
    // A deleted record too.
    let reader = stella_store::sqlite::SqliteReader::open(&db).unwrap();
    reader
        .connection()
        .execute_batch("DELETE FROM audit_log WHERE seq = 2")
        .unwrap();
    drop(reader);
    let out = stella(argv!["audit", "verify", "--db", &db], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[test]
fn dev_profile_refuses_a_public_listener_and_bad_configs_are_usage_errors() {
    let dir = tempdir();
    let out = stella(
        argv![
            "signer",
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:0",
            "--data",
            dir.path()
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // No configuration and no dev profile: told what is missing.
    let out = stella(argv!["signer", "serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authority.issuer"));
    // A misspelt key is an error, not silently ignored.
    let cfg = dir.path().join("stella.toml");
    std::fs::write(&cfg, "[licensing]\nbypas = true\n").unwrap();
    let out = stella(argv!["signer", "serve", "--config", &cfg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bypas"));
    // The sample configuration in the repository parses (it then fails on its missing key:
    // not found, exit 4, like any missing file).
    let out = stella(argv!["signer", "serve", "--config", "etc/stella.toml"], &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("attestation-signing.key"));
}

#[test]
fn audit_commands_on_a_missing_database() {
    let dir = tempdir();
    let out = stella(
        argv!["audit", "verify", "--db", dir.path().join("none.db")],
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
}
