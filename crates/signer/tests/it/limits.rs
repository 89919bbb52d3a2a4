//! Connection-level defenses (issue #8 item 6): a header trickle and a body trickle are cut
//! off within the configured timeouts, and connections beyond the limit wait unaccepted.
//! Each over a real TLS connection to the real server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";

fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(authority().pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn addr(s: &TestSigner) -> String {
    s.base.trim_start_matches("https://").to_string()
}

async fn tls_connect(s: &TestSigner) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr(s)).await.unwrap();
    tokio_rustls::TlsConnector::from(tls_config())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Write `data` one byte every `every` until the server closes the connection; returns how
/// long the server held it (or `None` if it was still open after `give_up`).
async fn trickle(
    conn: TlsStream<TcpStream>,
    data: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(conn);
    let writer = tokio::spawn(async move {
        for b in data {
            if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Everything sent: keep the connection open, silent.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(give_up, rd.read_to_end(&mut sink)).await;
    writer.abort();
    closed.ok().map(|_| started.elapsed())
}

#[tokio::test]
async fn header_trickle_is_closed_within_the_header_read_timeout() {
    let s = TestSigner::start_with(Opts {
        toml: "[server]\nheader_read_timeout_ms = 1000\n".into(),
        ..Opts::default()
    })
    .await;
    let conn = tls_connect(&s).await;
    let head = format!(
        "POST {SIGN} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nx-padding: {}\r\n\r\n",
        addr(&s),
        "a".repeat(200)
    );
    let held = trickle(
        conn,
        head.into_bytes(),
        Duration::from_millis(100),
        Duration::from_secs(8),
    )
    .await
    .expect("the server must close a connection that trickles its headers");
    assert!(held < Duration::from_secs(4), "held for {held:?}");
    // A connection that never sends anything is closed too (in the TLS handshake).
    let mut idle = TcpStream::connect(addr(&s)).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), idle.read_to_end(&mut buf))
        .await
        .expect("an idle connection is closed")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn body_trickle_is_cut_off_within_the_request_timeout() {
    let s = TestSigner::start_with(Opts {
        toml: "[server]\nrequest_timeout_ms = 1500\n".into(),
        ..Opts::default()
    })
    .await;
    let key = stella_signer::client::DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = s.url(SIGN);
    let proof = key.proof("POST", &url, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let head = format!(
        "POST {SIGN} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nauthorization: DPoP {token}\r\ndpop: {proof}\r\n\r\n",
        addr(&s),
        body.len()
    );
    let mut conn = tls_connect(&s).await;
    // The head at once, then the body one byte every 200 ms (it would take ~100 s).
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    let started = Instant::now();
    let held = trickle(
        conn,
        body,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await
    .expect("the server must close a connection that trickles its body");
    assert!(
        held < Duration::from_secs(6),
        "held for {:?}",
        started.elapsed()
    );
    // The refusal is audited like any other.
    let reader = stella_store::SqliteReader::open(&s.audit_db).unwrap();
    let recs = stella_store::AuditReader::read_after(&reader, 0, 10).unwrap();
    let rec: stella_store::AuditRecord = serde_json::from_str(&recs[0].record_json).unwrap();
    assert_eq!(rec.reason_code.as_deref(), Some("invalid_request"));
    assert!(rec.reason.unwrap().contains("did not arrive"));
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_unaccepted() {
    let s = TestSigner::start_with(Opts {
        toml: "[server]\nmax_connections = 2\nheader_read_timeout_ms = 30000\n".into(),
        ..Opts::default()
    })
    .await;
    let a = tls_connect(&s).await;
    let b = tls_connect(&s).await;
    // The third gets a TCP connection from the kernel's backlog, but no TLS handshake: the
    // server has not accepted it.
    let tcp = TcpStream::connect(addr(&s)).await.unwrap();
    let mut third = tokio::spawn(
        tokio_rustls::TlsConnector::from(tls_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut third)
            .await
            .is_err(),
        "a third connection was served beyond max_connections = 2"
    );
    drop(a);
    let mut c = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    c.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            addr(&s)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.ok();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(b);
}

/// HTTP/2 has no header read timeout in hyper: a client could open a stream, send the first
/// fragment of its header block and never the rest (no END_HEADERS), answering pings forever.
/// A connection with no request in hand is now closed after the header read timeout.
#[tokio::test]
async fn http2_header_block_trickle_is_closed() {
    let s = TestSigner::start_with(Opts {
        toml: "[server]\nheader_read_timeout_ms = 1000\n".into(),
        ..Opts::default()
    })
    .await;
    let mut cfg = (*tls_config()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr(&s)).await.unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let frame = |ty: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[ty, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
                                                           // Wait for the server's SETTINGS, acknowledge them like a real client.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= 9 && buf[3] == 0x4 && buf[4] & 1 == 0 {
            break;
        }
    }
    conn.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(); // SETTINGS ACK
                                                             // HEADERS on stream 1: `:method: POST` and no END_HEADERS — the block never completes.
    conn.write_all(&frame(0x1, 0, 1, &[0x83])).await.unwrap();
    conn.flush().await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), conn.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the connection was held open");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
