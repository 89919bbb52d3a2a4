//! End to end: a real Prometheus (Debian package `prometheus`, scripts/setup-test-deps.sh)
//! scrapes a running `stella signer serve` with the repository's alert rules loaded; the
//! Licensing service the signer introspects with stops answering, and the PoE outage alert is
//! observed firing through the Prometheus HTTP API. The signer under test runs a real
//! (non-dev) configuration; a second `stella signer serve --dev` serves only as its Authority
//! (JWKS and client-credentials tokens), and a stub on a thread is its Licensing. Everything (both processes, the stub, the
//! temp folder with Prometheus's TSDB) is gone at the end, also when the test fails.
//!
//! The rules are the repository's file with one change: every `for:` hold is cut to 2 s so the
//! test does not wait minutes (the expressions, labels and annotations are the real ones; the
//! hold times themselves are covered by `promtool test rules`, scripts/promtool-test.sh).

// Helpers outside #[test] fns unwrap too: a failure is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{argv, root, stella, stella_bin, tempdir};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Licensing introspection stub on a thread: answers every PoE with an active `team`
/// license for `dev-tenant` until [`Licensing::stop`], which closes its socket (connection
/// refused from then on: Licensing is down).
struct Licensing {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    port: u16,
}

impl Licensing {
    fn start() -> Licensing {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let body = serde_json::json!({
                "active": true, "licenseId": "lic-e2e", "plan": "team", "tenant": "dev-tenant",
                "limits": {"qps": 1000, "burst": 1000, "maxConcurrent": 8, "maxArtifactBytes": 1048576},
                "expiresAt": "2099-01-01T00:00:00Z"
            })
            .to_string();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut req = Vec::new();
                        let mut buf = [0u8; 4096];
                        // Headers, then Content-Length bytes of body.
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            req.extend_from_slice(&buf[..n]);
                            let text = String::from_utf8_lossy(&req);
                            if let Some(end) = text.find("\r\n\r\n") {
                                let len = text[..end]
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().ok())?
                                    })
                                    .unwrap_or(0);
                                if req.len() >= end + 4 + len {
                                    break;
                                }
                            }
                        }
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
            // The listener drops here: the port refuses connections.
        });
        Licensing {
            url: format!("http://127.0.0.1:{port}/license/introspect"),
            stop,
            thread: Some(thread),
            port,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        assert!(
            TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the Licensing stub still answers"
        );
    }
}

impl Drop for Licensing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET http://127.0.0.1:port/path` (HTTP/1.0): status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository's rules with every `for:` hold cut to 2 s.
fn fast_rules(dir: &Path) -> std::path::PathBuf {
    let text =
        std::fs::read_to_string(root().join("etc/prometheus/stella-signer-rules.yml")).unwrap();
    let mut holds = 0;
    let fast: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => {
                holds += 1;
                format!("{}for: 2s", &l[..l.len() - l.trim_start().len()])
            }
            None => l.to_string(),
        })
        .collect();
    assert!(holds >= 9, "only {holds} `for:` holds in the rules file");
    let p = dir.join("rules.yml");
    std::fs::write(&p, fast.join("\n")).unwrap();
    p
}

/// The alerts Prometheus reports: (name, state).
fn alerts(port: u16) -> Vec<(String, String)> {
    let Some((200, body)) = http_get(port, "/api/v1/alerts") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `stella signer serve ARGS PATH`, up: the process and its URL.
fn serve(args: &[&str], path: Option<&Path>) -> (Proc, String) {
    let mut cmd = Command::new(stella_bin());
    cmd.args(["signer", "serve"]).args(args);
    if let Some(p) = path {
        cmd.arg(p);
    }
    let (child, line) = stella_keyless::testing::spawn_announced(
        cmd.env("STELLA_SIGNER__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
        "stella signer serve",
    );
    let proc = Proc(child);
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{args:?}: unexpected first line {line:?}"))
        .to_string();
    (proc, url)
}

/// One sign request through the CLI against `url`, with a token from `token_url`.
fn sign(url: &str, token_url: &str, dir: &Path, i: usize) -> std::process::Output {
    stella(
        argv![
            "signer",
            "sign",
            "--url",
            url,
            "--token-url",
            token_url,
            "--predicate-type",
            "stella.ops/sbom@v1",
            "--predicate",
            dir.join("sbom.json"),
            "--subject",
            dir.join("app.bin"),
            "--poe",
            "dev-poe",
            "--output",
            dir.join(format!("out-{i}.json"))
        ],
        &[("STELLA_CLIENT_SECRET", "dev-secret")],
    )
}

#[test]
fn prometheus_fires_the_licensing_outage_alert_on_a_running_signer() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/setup-test-deps.sh"
    );
    let dir = tempdir();
    std::fs::write(
        dir.path().join("sbom.json"),
        br#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("app.bin"), b"artefact").unwrap();
    let mut licensing = Licensing::start();

    // The Authority: a dev-profile signer's embedded one (its signing key is reused below).
    let authority = serve(
        &["--dev", "--listen", "127.0.0.1:0", "--data"],
        Some(&dir.path().join("authority")),
    );
    // The signer under test: the stub as Licensing (cache 1 s, so requests keep introspecting).
    let config = dir.path().join("signer.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [authority]\nissuer = \"urn:stella:dev-authority\"\njwks_url = \"{a}/dev/authority/jwks\"\n\
             [licensing]\nintrospect_url = \"{lic}\"\ncache_ttl_seconds = 1\ntimeout_ms = 500\n\
             [release]\nenforce = false\n\
             [audit]\npath = \"{db}\"\n\
             [signing]\nkeys = [\"{key}\"]\ndefault_keys_for_unlisted_tenants = true\n",
            a = authority.1,
            lic = licensing.url,
            db = dir.path().join("signer/audit.db").display(),
            key = dir.path().join("authority/dev-signing.key").display(),
        ),
    )
    .unwrap();
    let signer = serve(&["--config"], Some(&config));
    let url = signer.1.clone();
    let token_url = format!("{}/dev/authority/token", authority.1);
    let signer_port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();

    // Prometheus: 1 s scrapes and evaluations, the rules loaded.
    let rules = fast_rules(dir.path());
    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: stella-signer\n    static_configs:\n      - targets: ['127.0.0.1:{signer_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let prometheus = Proc(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(prom_port, "/-/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not start:\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every rule loaded and healthy.
    let (_, body) = http_get(prom_port, "/api/v1/rules").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rules_loaded: Vec<&serde_json::Value> = v["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules_loaded.len() >= 9, "{body}");
    assert!(rules_loaded
        .iter()
        .any(|r| r["name"] == "StellaSignerLicensingUnavailable"));

    // Licensing up: requests sign, the target is scraped, no outage alert.
    for i in 0..2 {
        let out = sign(&url, &token_url, dir.path(), i);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(prom_port, "/api/v1/targets").unwrap();
        if body.contains("\"health\":\"up\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signer is never scraped: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !alerts(prom_port)
            .iter()
            .any(|(n, _)| n.starts_with("StellaSignerLicensing")),
        "{:?}",
        alerts(prom_port)
    );

    // Licensing goes down; requests keep coming (served from grace or refused) until the alert
    // fires.
    licensing.stop();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 10;
    loop {
        let _ = sign(&url, &token_url, dir.path(), i);
        i += 1;
        let now = alerts(prom_port);
        let state = now
            .iter()
            .find(|(n, _)| n == "StellaSignerLicensingUnavailable")
            .map(|(_, s)| s.as_str());
        if state == Some("firing") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Licensing outage alert never fired: {now:?}\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The metric behind it, as Prometheus scraped it.
    let (_, body) = http_get(
        prom_port,
        "/api/v1/query?query=sum(stella_signer_poe_failures_total%7Bkind%3D~%22unavailable%7Cgrace%22%7D)",
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failures: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2.0, "{body}");
    drop(prometheus);
    drop(signer);
    drop(authority);
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(!path.exists());
}
