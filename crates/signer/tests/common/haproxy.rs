//! HAProxy (Debian package, `scripts/setup-test-deps.sh`) in TCP mode, round robin over the
//! replicas, killed on drop: shared by the scale-out tests (`tests/it/scaleout.rs`) and the
//! load bench (`benches/load.rs --replicas N`). Not a test crate of its own: included with
//! `#[path]`.

use std::net::SocketAddr;
use std::time::Duration;

/// Knobs that differ between a test (a few requests) and the bench (thousands of
/// connections on one thread).
pub(crate) struct Tuning {
    /// Lines of the `global` section, each without indentation.
    pub(crate) global: &'static [&'static str],
    /// Client and server timeouts.
    pub(crate) timeout: Duration,
}

pub(crate) struct Haproxy {
    pub(crate) addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Listen on 127.0.0.1:`port` (0: a free port) and wait until it accepts connections.
    pub(crate) fn start(port: u16, backends: &[SocketAddr], tuning: &Tuning) -> Haproxy {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let dir = tempfile::tempdir().unwrap();
        let t = tuning.timeout.as_secs();
        let mut cfg = String::from("global\n");
        for l in tuning.global {
            cfg.push_str(&format!("  {l}\n"));
        }
        cfg.push_str(&format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client {t}s\n  \
             timeout server {t}s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
             default_backend be\nbackend be\n  balance roundrobin\n"
        ));
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!("  server r{i} {b}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (run scripts/setup-test-deps.sh)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let lb = Haproxy {
            addr,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return lb;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(lb);
        panic!("haproxy did not start listening");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
