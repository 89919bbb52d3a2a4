//! Processes and servers of the scale-out tests: PostgreSQL databases (on the shared server or
//! a private instance), Redis targets (a key prefix on the shared server, or a private
//! instance), `stella signer serve` replicas, HAProxy, and the load driver.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use stella_keys::{Algorithm, FileKey};
use stella_signer::client::DpopKey;

use crate::support::{authority, Licensing, ISSUER, SCANNER};

pub(crate) fn stella_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stella")
}

fn tag() -> String {
    stella_signer::random_hex(8)
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub(crate) fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(512)
        .build()
        .unwrap()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn psql(url: &str, sql: &str) {
    run(Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]));
}

// ------------------------------------------------------------------------------------------
// PostgreSQL
// ------------------------------------------------------------------------------------------

/// A fresh database, dropped on drop.
pub(crate) struct Db {
    admin: String,
    name: String,
    pub(crate) url: String,
}

impl Db {
    pub(crate) fn on_shared_server() -> Db {
        Db::on(
            &std::env::var("STELLA_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        )
    }

    pub(crate) fn on(admin: &str) -> Db {
        let name = format!("stella_procs_{}", tag());
        psql(admin, &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
        Db {
            admin: admin.to_string(),
            name,
            url,
        }
    }

    /// `stella audit verify --url` must find the chain intact, and every acknowledged audit
    /// id must be in it. Returns the number of records.
    pub(crate) fn reconcile(&self, acked: &[String]) -> u64 {
        tokio::task::block_in_place(|| self.reconcile_blocking(acked))
    }

    fn reconcile_blocking(&self, acked: &[String]) -> u64 {
        let out = Command::new(stella_bin())
            .args(["audit", "verify", "--url", &self.url, "--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stella audit verify --url: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["intact"], true, "{v}");
        let reader = stella_store::PgReader::connect(&self.url, Duration::from_secs(10)).unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut after = 0;
        loop {
            let page = stella_store::AuditReader::read_after(&reader, after, 5000).unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            ids.extend(page.into_iter().map(|r| r.audit_id));
        }
        let missing: Vec<&String> = acked.iter().filter(|id| !ids.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged signatures have no audit record: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        let records = v["records"].as_u64().unwrap();
        assert_eq!(records, ids.len() as u64);
        eprintln!(
            "reconciled: {} acknowledged signatures, all among {records} records of an intact chain",
            acked.len()
        );
        records
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").args([flag, "postgres"]));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A private PostgreSQL instance (initdb + pg_ctl from the Debian package, run as the
/// `postgres` user) on a free loopback port, in a temp dir; stopped and removed on drop.
pub(crate) struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    fn as_postgres(&self, args: &[&str]) -> Command {
        let program = pg_bin(args[0]);
        let mut args: Vec<&str> = args.to_vec();
        args[0] = &program;
        let mut c = if nix_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new(args[0])
        };
        if nix_is_root() {
            c.args(&args);
        } else {
            c.args(&args[1..]);
        }
        c.stdin(Stdio::null());
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn start() -> PrivatePg {
        // The postgres user must reach the directory: the test TMPDIR may be private to us.
        let mut dir = tempfile::Builder::new()
            .prefix("stella-pg-")
            .tempdir()
            .unwrap();
        let (uid, gid) = postgres_ids();
        if nix_is_root() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-w"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            if !reachable {
                dir = tempfile::Builder::new()
                    .prefix("stella-pg-")
                    .tempdir_in("/tmp")
                    .unwrap();
                std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            }
        }
        let pg = PrivatePg {
            dir,
            port: free_port(),
        };
        let data = pg.data();
        run(&mut pg.as_postgres(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ]));
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        run(&mut self.as_postgres(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]));
    }

    pub(crate) fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m fast` (clients are disconnected), then start again on the same port.
    pub(crate) fn restart(&self) {
        run(&mut self.as_postgres(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]));
        std::thread::sleep(Duration::from_millis(1000));
        self.pg_ctl_start();
    }

    /// The postmaster and every child process of this instance.
    fn pids(&self) -> Vec<u32> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let main: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
            if ppid == main {
                pids.push(pid);
            }
        }
        pids
    }

    /// Send `sig` (STOP, CONT) to every process of the instance.
    pub(crate) fn signal(&self, sig: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A PostgreSQL server program: on the PATH, else in the Debian package's
/// `/usr/lib/postgresql/<version>/bin` (newest version).
fn pg_bin(name: &str) -> String {
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join(name).is_file() {
                return d.join(name).display().to_string();
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("{name} not found (run scripts/setup-test-deps.sh)"))
        .display()
        .to_string()
}

fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self
            .as_postgres(&[
                "pg_ctl",
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

// ------------------------------------------------------------------------------------------
// Redis
// ------------------------------------------------------------------------------------------

/// Where the replicas keep shared state: a URL and a key prefix (deleted on drop when on the
/// shared server).
pub(crate) struct RedisTarget {
    pub(crate) url: String,
    pub(crate) prefix: String,
    cleanup: bool,
}

impl RedisTarget {
    pub(crate) fn shared() -> RedisTarget {
        RedisTarget {
            url: std::env::var("STELLA_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("stella-test:{}:", tag()),
            cleanup: true,
        }
    }
}

impl Drop for RedisTarget {
    fn drop(&mut self) {
        if self.cleanup {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "redis-cli -u '{0}' --scan --pattern '{1}*' | xargs -r redis-cli -u '{0}' DEL >/dev/null",
                    self.url, self.prefix
                ))
                .status();
        }
    }
}

/// A private redis-server (no persistence) on a free loopback port; killed on drop.
pub(crate) struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.restart();
        r
    }

    pub(crate) fn target(&self) -> RedisTarget {
        RedisTarget {
            url: format!("redis://127.0.0.1:{}/0", self.port),
            prefix: "stella:".into(),
            cleanup: false,
        }
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup-test-deps.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    /// kill -9 (state is lost, as after a crash without persistence).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal("CONT");
        self.stop();
    }
}

// ------------------------------------------------------------------------------------------
// Replicas and the balancer
// ------------------------------------------------------------------------------------------

pub(crate) struct Replica {
    child: Child,
    port: u16,
    public_url: String,
}

impl Replica {
    fn start(config: &Path, log: &Path) -> Replica {
        let mut child = Command::new(stella_bin())
            .args(["signer", "serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Replica {
            child,
            port,
            public_url: String::new(),
        }
    }

    /// This replica's own address, for a request addressed to the public URL (the proof's
    /// `htu` is the public URL; the replica checks it against its `public_url`).
    pub(crate) fn sign_url(&self) -> String {
        let _ = &self.public_url;
        format!("http://127.0.0.1:{}{}", self.port, SIGN)
    }

    pub(crate) fn kill9(&self) {
        run(Command::new("kill").args(["-9", &self.child.id().to_string()]));
    }

    /// SIGTERM (graceful: in-flight requests finish and the audit log is flushed), then wait.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) const SIGN: &str = "/api/v1/signer/sign/dsse";

/// HAProxy (Debian package) in HTTP mode: round robin per request, `/readyz` health checks,
/// a request is redispatched only if it never reached a server.
pub(crate) struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(port: u16, backends: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = format!(
            "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 1s\n  \
             timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  option httpchk\n  \
             http-check send meth GET uri /readyz\n  \
             default-server check inter 250ms fall 2 rise 2\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!("  server r{i} 127.0.0.1:{b}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (run scripts/setup-test-deps.sh)");
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replicas behind the balancer, with the Licensing stub and the files they read.
pub(crate) struct Cluster {
    pub(crate) replicas: Vec<Replica>,
    _lb: Haproxy,
    pub(crate) licensing: Licensing,
    pub(crate) lb_port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `audit_extra`: more lines of the `[audit]` section.
    pub(crate) async fn start(
        pg: &Db,
        redis: &RedisTarget,
        n: usize,
        audit_extra: &str,
    ) -> Cluster {
        let a = authority();
        let licensing = Licensing::start().await;
        licensing.set(
            "poe-load",
            json!({"active": true, "licenseId": "lic-load", "plan": "load", "tenant": "tenant-a",
                "limits": {"qps": 100000, "burst": 100000, "maxConcurrent": 10000,
                           "maxArtifactBytes": 1 << 20},
                "expiresAt": "2099-01-01T00:00:00Z"}),
        );
        let dir = tempfile::tempdir().unwrap();
        let files = a.pki.write_to(dir.path());
        let key_path = dir.path().join("signing.pem");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .unwrap();
            f.write_all(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        }
        let lb_port = free_port();
        let base = format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:{lb_port}"
worker_threads = 2
[authority]
issuer = "{ISSUER}"
jwks_url = "{jwks}"
ca_file = "{ca}"
[licensing]
introspect_url = "{lic}"
[release]
enforce = true
trusted_scanner_digests = ["{SCANNER}"]
[audit]
backend = "postgres"
url = "{pg}"
{audit_extra}
[quotas]
backend = "redis"
url = "{redis}"
prefix = "{prefix}"
timeout_ms = 300
[signing]
keys = ["{key}"]
default_keys_for_unlisted_tenants = true
[log]
level = "warn"
"#,
            jwks = a.jwks_url,
            ca = files.ca.display(),
            lic = licensing.url,
            pg = pg.url,
            redis = redis.url,
            prefix = redis.prefix,
            key = key_path.display(),
        );
        let mut replicas = Vec::new();
        for i in 0..n {
            // Each replica its own checkpoint file (none configured: no checkpoint key).
            let cfg = dir.path().join(format!("replica{i}.toml"));
            std::fs::write(&cfg, &base).unwrap();
            let log = dir.path().join(format!("replica{i}.log"));
            let mut r = tokio::task::block_in_place(|| Replica::start(&cfg, &log));
            r.public_url = format!("http://127.0.0.1:{lb_port}");
            replicas.push(r);
        }
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let lb = Haproxy::start(lb_port, &ports);
        // Up when every replica answered through the balancer.
        let http = plain_http();
        let mut ok = 0;
        for _ in 0..200 {
            match http
                .get(format!("http://127.0.0.1:{lb_port}/readyz"))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => ok += 1,
                _ => ok = 0,
            }
            if ok >= 2 * n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok >= 2 * n, "the balancer never saw the replicas ready");
        // Health checks need `rise` passes per server.
        tokio::time::sleep(Duration::from_millis(800)).await;
        Cluster {
            replicas,
            _lb: lb,
            licensing,
            lb_port,
            _dir: dir,
        }
    }

    /// The last lines of each replica's log (stderr), for failure messages.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.replicas.len() {
            let p = self._dir.path().join(format!("replica{i}.log"));
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- replica {i}:\n"));
            for l in &lines[lines.len().saturating_sub(8)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// After a fault: sign through the balancer until one succeeds (at most `within`): the
    /// replicas recovered without a restart. The audit id of that signature.
    pub(crate) async fn recovered(&self, within: Duration) -> Option<String> {
        let key = DpopKey::generate().unwrap();
        let token = authority()
            .token("a-dpop", "signer.sign", Some(&key), None)
            .await;
        let http = plain_http();
        let url = self.public_sign_url();
        let t = Instant::now();
        while t.elapsed() < within {
            let proof = key.proof("POST", &url, Some(&token), None).unwrap();
            if let Ok(r) = http
                .post(&url)
                .header("content-type", "application/json")
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .body(bytes_body())
                .send()
                .await
            {
                if r.status() == 200 {
                    let v: serde_json::Value = r.json().await.unwrap();
                    return Some(v["auditId"].as_str().unwrap().to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    pub(crate) fn public_sign_url(&self) -> String {
        format!("http://127.0.0.1:{}{SIGN}", self.lb_port)
    }

    /// Stop every replica gracefully (their audit batches are committed).
    pub(crate) fn stop(&mut self) {
        tokio::task::block_in_place(|| {
            for r in &mut self.replicas {
                r.stop();
            }
        });
    }
}

// ------------------------------------------------------------------------------------------
// Load driver
// ------------------------------------------------------------------------------------------

/// What the driver saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) offered: usize,
    /// Not sent: the cap on requests in flight was reached.
    pub(crate) skipped: usize,
    pub(crate) statuses: BTreeMap<u16, usize>,
    /// No HTTP answer (connection reset, timeout).
    pub(crate) transport_errors: usize,
    /// Audit ids of the 200 answers (acknowledged signatures).
    pub(crate) acked: Vec<String>,
    /// 200 answers received after the fault ended.
    pub(crate) acked_after_fault: usize,
    pub(crate) seconds: f64,
}

impl Report {
    pub(crate) fn status(&self, s: u16) -> usize {
        self.statuses.get(&s).copied().unwrap_or(0)
    }
}

/// One load test at a time in this binary: the machine has two cores, and overlapping load
/// tests would measure each other.
pub(crate) static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Offered rate and cap of the driver.
const RATE: u64 = 2000;
const MAX_IN_FLIGHT: usize = 400;

pub(crate) type FaultFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Offer `RATE` sign requests per second through the balancer for `duration` (open loop,
/// bounded in flight), running `fault` alongside; then wait for every answer.
pub(crate) async fn load_with_fault<'a, F>(c: &'a Cluster, duration: Duration, fault: F) -> Report
where
    F: FnOnce(&'a Cluster) -> FaultFuture<'a>,
{
    let key = Arc::new(DpopKey::generate().unwrap());
    let token = Arc::new(
        authority()
            .token("a-dpop", "signer.sign", Some(&key), None)
            .await,
    );
    let http = plain_http();
    let url = Arc::new(c.public_sign_url());
    let body = bytes_body();
    let report = Arc::new(Mutex::new(Report::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fault_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let start = Instant::now();
    let driver = {
        let report = report.clone();
        let in_flight = in_flight.clone();
        let fault_done = fault_done.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            while start.elapsed() < duration {
                tick.tick().await;
                report.lock().unwrap().offered += 1;
                if in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
                    report.lock().unwrap().skipped += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                let (http, url, token, key, body, report, in_flight, fault_done) = (
                    http.clone(),
                    url.clone(),
                    token.clone(),
                    key.clone(),
                    body.clone(),
                    report.clone(),
                    in_flight.clone(),
                    fault_done.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let proof = key.proof("POST", &url, Some(&token), None).unwrap();
                    let res = http
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("authorization", format!("DPoP {token}"))
                        .header("dpop", proof)
                        .body(body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let outcome = match res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let v: serde_json::Value = r
                                .bytes()
                                .await
                                .ok()
                                .and_then(|b| serde_json::from_slice(&b).ok())
                                .unwrap_or_default();
                            Some((status, v["auditId"].as_str().map(str::to_string)))
                        }
                        Err(_) => None,
                    };
                    let done = Instant::now();
                    let mut rep = report.lock().unwrap();
                    match outcome {
                        Some((status, id)) => {
                            *rep.statuses.entry(status).or_default() += 1;
                            if status == 200 {
                                rep.acked.push(id.expect("a 200 answer without auditId"));
                                if fault_done.lock().unwrap().is_some_and(|t| done > t) {
                                    rep.acked_after_fault += 1;
                                }
                            }
                        }
                        None => rep.transport_errors += 1,
                    }
                    drop(rep);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    };
    let faulted = async {
        fault(c).await;
        *fault_done.lock().unwrap() = Some(Instant::now());
    };
    tokio::join!(driver, faulted);
    let mut r = std::mem::take(&mut *report.lock().unwrap());
    r.seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "load: offered {} ({:.0}/s), skipped {} (in-flight cap), statuses {:?}, transport errors {}, \
         acknowledged {} ({} after the fault), {:.1} s",
        r.offered,
        r.offered as f64 / duration.as_secs_f64(),
        r.skipped,
        r.statuses,
        r.transport_errors,
        r.acked.len(),
        r.acked_after_fault,
        r.seconds
    );
    r
}

fn bytes_body() -> Vec<u8> {
    serde_json::to_vec(&crate::support::sign_body("poe-load")).unwrap()
}
