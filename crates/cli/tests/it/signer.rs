//! `stella signer serve|sign` and `stella audit verify|export` through the binary: the dev
//! profile end to end (token, sign through the API, offline verify), graceful shutdown on
//! SIGTERM, and tamper detection on the audit database.

// Helpers outside #[test] fns unwrap too: a failure is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::{argv, stella, stella_bin, tempdir};

struct Service {
    child: Child,
    url: String,
}

impl Service {
    fn start(data: &Path) -> Service {
        Service::start_with(data, &[])
    }

    fn start_with(data: &Path, envs: &[(&str, &str)]) -> Service {
        let (child, line) = stella_keyless::testing::spawn_announced(
            Command::new(stella_bin())
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
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stderr(Stdio::null()),
            "stella signer serve --dev",
        );
        let url = line
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

/// `stella signer sign` through the dev service at `url` with the dev Authority: `predicate`
/// as an SBOM about `subject`, proof of entitlement `poe`, then `more` arguments.
fn sign(
    url: &str,
    predicate: &Path,
    subject: &Path,
    poe: &str,
    more: Vec<OsString>,
) -> std::process::Output {
    let mut args = argv![
        "signer",
        "sign",
        "--url",
        url,
        "--dev-authority",
        "--predicate-type",
        "stella.ops/sbom@v1",
        "--predicate",
        predicate,
        "--subject",
        subject,
        "--poe",
        poe
    ];
    args.extend(more);
    stella(args, &[])
}

/// The command exited with `code` and said `what` on stderr.
fn fails(out: &std::process::Output, code: i32, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(what), "expected {what:?} in {err}");
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
    let bundle = dir.path().join("app.sigstore.json");
    // Keyless is the dev profile's default mode (dev-only CA and TSA): a Sigstore bundle.
    let out = sign(
        &svc.url,
        &predicate,
        &artefact,
        "dev-poe",
        argv!["--bundle", "--output", &bundle],
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("keyless: certificate for signer@dev.stella.invalid"));
    // The dev key stays available: `--signing-mode file`.
    for _ in 0..2 {
        let out = sign(
            &svc.url,
            &predicate,
            &artefact,
            "dev-poe",
            argv!["--signing-mode", "file", "--output", &env],
        );
        ok(&out);
    }
    let out = stella(
        argv!["verify", "--key", data.join("dev-signing.pub"), &env],
        &[],
    );
    ok(&out);
    // The keyless bundle verifies offline with the dev trusted root the service wrote and
    // the dev identity; another identity fails (exit 1).
    let root = data.join("trusted_root.json");
    let verify_as = |identity: &str| {
        stella(
            argv![
                "verify",
                "--trusted-root",
                &root,
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer",
                "urn:stella:dev-authority",
                "--tlog-threshold",
                "0",
                &bundle
            ],
            &[],
        )
    };
    ok(&verify_as("signer@dev.stella.invalid"));
    assert_eq!(verify_as("someone@else.invalid").status.code(), Some(1));
    // A PoE the dev Licensing refuses: exit 3 (authorization).
    let out = sign(
        &svc.url,
        &predicate,
        &artefact,
        "not-dev",
        argv!["--output", dir.path().join("x.json")],
    );
    fails(&out, 3, "entitlement_denied");
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

    // The dev profile wrote signed checkpoints of the head: the final one covers all 4.
    let out = stella(
        argv![
            "audit",
            "verify",
            "--db",
            &db,
            "--checkpoint-key",
            data.join("dev-audit.pub"),
            "--output",
            "json"
        ],
        &[],
    );
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["anchored"], true);
    assert_eq!(v["checkpoint"]["records"], 4);
    assert_eq!(v["checkpoint"]["headHash"], head.as_str());
    checkpoint_tampering_is_detected(&data);

    // Tampering: an edited record is found, exit 1.
    stella_store::open_raw(&db)
        .unwrap()
        .execute_batch(
            "UPDATE audit_log SET record = replace(record, '\"denied\"', '\"signed\"') WHERE seq = 4",
        )
        .unwrap();
    let out = stella(argv!["audit", "verify", "--db", &db], &[]);
    fails(&out, 1, "seq 4: record was edited");
    // A deleted record too.
    stella_store::open_raw(&db)
        .unwrap()
        .execute_batch("DELETE FROM audit_log WHERE seq = 2")
        .unwrap();
    let out = stella(argv!["audit", "verify", "--db", &db], &[]);
    fails(&out, 1, "missing");
}

/// A copy of the dev service's audit database and checkpoint, to tamper with.
struct LogCopy {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    checkpoint: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl LogCopy {
    fn of(data: &Path) -> LogCopy {
        let dir = tempdir();
        for e in std::fs::read_dir(data).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("audit.") || name == "dev-audit.pub" {
                std::fs::copy(e.path(), dir.path().join(&name)).unwrap();
            }
        }
        LogCopy {
            db: dir.path().join("audit.db"),
            checkpoint: dir.path().join("audit.checkpoint.json"),
            key: dir.path().join("dev-audit.pub"),
            _dir: dir,
        }
    }

    fn sql(&self, sql: &str) {
        stella_store::open_raw(&self.db)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    /// `stella audit verify` against the signed checkpoint.
    fn verify(&self) -> std::process::Output {
        stella(
            argv![
                "audit",
                "verify",
                "--db",
                &self.db,
                "--checkpoint",
                &self.checkpoint,
                "--checkpoint-key",
                &self.key
            ],
            &[],
        )
    }

    /// Verification fails with exit 1 and says `what`.
    fn fails_with(&self, what: &str, case: &str) {
        let out = self.verify();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {err}");
        assert!(err.contains(what), "{case}: expected {what:?} in {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("intact"),
            "{case}"
        );
    }
}

/// Every way of hiding records from `stella audit verify` that a hash chain alone misses (or
/// that the reader used to repair) fails against the signed checkpoint.
fn checkpoint_tampering_is_detected(data: &Path) {
    let c = LogCopy::of(data);
    ok(&c.verify());

    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 4");
    // Without the checkpoint key the chain alone looks intact, and says it is not anchored.
    let out = stella(argv!["audit", "verify", "--db", &c.db], &[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("end not anchored"));
    c.fails_with("signed checkpoint covers 4 record(s)", "delete newest");

    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq >= 2");
    c.fails_with("the log ends at seq 1", "delete the newest three");

    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 2");
    c.fails_with("missing", "delete middle");

    let c = LogCopy::of(data);
    c.sql("UPDATE audit_log SET time = '2001-01-01T00:00:00.000Z' WHERE seq = 3");
    c.fails_with("`time` column", "edit time");
    // export --since trusts the time column only as far as the chain vouches for it.
    let out = stella(
        argv![
            "audit",
            "export",
            "--db",
            &c.db,
            "--checkpoint-key",
            &c.key,
            "--since",
            "2000-01-01"
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));

    let c = LogCopy::of(data);
    c.sql("DROP TABLE audit_log");
    c.fails_with("no audit table", "drop table");
    c.fails_with("no audit table", "drop table, verified twice");
    let tables: i64 = stella_store::open_raw(&c.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "verify recreated the dropped table");

    // The database replaced by an empty SQLite file, then by an empty audit log.
    let c = LogCopy::of(data);
    std::fs::remove_file(&c.db).unwrap();
    std::fs::write(&c.db, b"").unwrap();
    c.fails_with("no audit table", "empty file");
    std::fs::remove_file(&c.db).unwrap();
    c.fails_with("database", "deleted database");
    assert!(!c.db.exists(), "verify created a database");
    let conn = rusqlite_like_empty_log(&c.db);
    drop(conn);
    c.fails_with("the log ends at seq 0", "empty audit log");

    // A forged checkpoint: the payload edited to match a truncated log.
    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 4");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&c.checkpoint).unwrap()).unwrap();
    let payload = String::from_utf8(crate::support::b64_decode(env["payload"].as_str().unwrap()))
        .unwrap()
        .replace("\"records\":4", "\"records\":3");
    env["payload"] = crate::support::b64_encode(payload.as_bytes()).into();
    std::fs::write(&c.checkpoint, serde_json::to_vec(&env).unwrap()).unwrap();
    c.fails_with("signature not accepted", "forged checkpoint");

    // A checkpoint of the truncated log, validly signed by another key.
    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 4");
    let reader = stella_store::SqliteReader::open(&c.db).unwrap();
    let report = stella_store::chain::verify(&reader).unwrap();
    drop(reader);
    let other = stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let cp = stella_store::checkpoint::Checkpoint::of(
        "sqlite",
        &stella_store::Appended {
            seq: report.head_seq,
            hash: report.head_hash,
        },
    );
    std::fs::write(&c.checkpoint, cp.sign(&other).unwrap().to_json()).unwrap();
    c.fails_with("signature not accepted", "checkpoint from another key");

    // The checkpoint deleted along with the records.
    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 4");
    std::fs::remove_file(&c.checkpoint).unwrap();
    c.fails_with("is missing", "deleted checkpoint");

    // The service refuses to start on a log that is behind its checkpoint (it would otherwise
    // re-anchor the truncated log).
    let c = LogCopy::of(data);
    c.sql("DELETE FROM audit_log WHERE seq = 4");
    std::fs::copy(
        data.join("dev-audit.key"),
        c.db.with_file_name("dev-audit.key"),
    )
    .unwrap();
    let out = stella(
        argv![
            "signer",
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data",
            c.db.parent().unwrap()
        ],
        &[("STELLA_SIGNER__LOG__LEVEL", "off")],
    );
    fails(&out, 1, "truncated or replaced");
}

/// An empty but valid audit database at `path` (what a fresh service would create).
fn rusqlite_like_empty_log(path: &Path) -> stella_store::SqliteAudit {
    stella_store::SqliteAudit::open(stella_store::SqliteOptions::new(path)).unwrap()
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
    fails(&out, 2, "loopback");
    // No configuration and no dev profile: told what is missing.
    let out = stella(argv!["signer", "serve"], &[]);
    fails(&out, 2, "authority.issuer");
    // A misspelt key is an error, not silently ignored.
    let cfg = dir.path().join("stella.toml");
    std::fs::write(&cfg, "[licensing]\nbypas = true\n").unwrap();
    let out = stella(argv!["signer", "serve", "--config", &cfg], &[]);
    fails(&out, 2, "bypas");
    // The sample configuration in the repository parses (it then fails on its missing key:
    // not found, exit 4, like any missing file).
    let out = stella(argv!["signer", "serve", "--config", "etc/stella.toml"], &[]);
    fails(&out, 4, "attestation-signing.key");
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

/// `psql` against the test PostgreSQL (`STELLA_TEST_POSTGRES_URL` names the admin database).
fn psql(db_url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([db_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of its own, dropped on drop.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new() -> PgDb {
        let admin = std::env::var("STELLA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!(
            "stella_cli_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
        PgDb { admin, name, url }
    }

    fn drop_database(&self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.drop_database();
    }
}

/// The service on PostgreSQL: records land in the shared chain, checkpoints are signed, and
/// `stella audit verify|export --url` check it; truncation and a dropped database fail.
#[test]
fn postgres_audit_backend_end_to_end() {
    let db = PgDb::new();
    let dir = tempdir();
    let data = dir.path().join("data");
    let url_toml = format!("\"{}\"", db.url);
    let svc = Service::start_with(
        &data,
        &[
            ("STELLA_SIGNER__AUDIT__BACKEND", "\"postgres\""),
            ("STELLA_SIGNER__AUDIT__URL", &url_toml),
        ],
    );
    let predicate = dir.path().join("p.json");
    std::fs::write(&predicate, br#"{"x":1}"#).unwrap();
    for i in 0..3 {
        let out = sign(
            &svc.url,
            &predicate,
            &predicate,
            "dev-poe",
            argv!["--output", dir.path().join(format!("e{i}.json"))],
        );
        ok(&out);
    }
    svc.stop();
    let cp = data.join("audit.checkpoint.json");
    let key = data.join("dev-audit.pub");
    let verify = || {
        stella(
            argv![
                "audit",
                "verify",
                "--url",
                &db.url,
                "--checkpoint",
                &cp,
                "--checkpoint-key",
                &key,
                "--output",
                "json"
            ],
            &[],
        )
    };
    let out = verify();
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["records"].as_u64(), v["anchored"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(v["checkpoint"]["records"], 3);
    let out = stella(
        argv!["audit", "export", "--url", &db.url, "--since", "1h"],
        &[],
    );
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    // The newest record deleted, head row moved back to match: caught by the checkpoint.
    psql(
        &db.url,
        "DELETE FROM audit_log WHERE seq = 3; \
         UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2)",
    );
    let out = verify();
    fails(&out, 1, "tampered");
    // The database dropped.
    db.drop_database();
    let out = verify();
    fails(&out, 1, "is gone");
}
