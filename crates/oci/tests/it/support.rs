//! A tiny HTTP/1.1 server on 127.0.0.1 for fake registries: one request per connection,
//! answered by a closure.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use stella_oci::{Client, ClientConfig, CredentialSource, RetryPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub(crate) fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub(crate) struct FakeRegistry {
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRegistry {
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(handler: Handler) -> FakeRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                let reply = handler(&req);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = sock.write_all(head.as_bytes()).await;
                if req.method != "HEAD" {
                    let _ = sock.write_all(&reply.body).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    FakeRegistry { addr, task }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// An anonymous client with quick retries (tests should not wait seconds).
pub(crate) fn client() -> Client {
    client_with(|_| {})
}

pub(crate) fn client_with(f: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = ClientConfig {
        credentials: CredentialSource::Anonymous,
        retry: RetryPolicy {
            attempts: 4,
            base_delay: std::time::Duration::from_millis(50),
            max_delay: std::time::Duration::from_millis(400),
        },
        ..ClientConfig::default()
    };
    f(&mut cfg);
    Client::new(cfg).unwrap()
}

pub(crate) fn reference(host: &str, rest: &str) -> stella_oci::Reference {
    stella_oci::Reference::parse(&format!("{host}/{rest}")).unwrap()
}
