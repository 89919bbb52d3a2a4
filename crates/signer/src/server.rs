//! HTTP and HTTPS serving with optional mTLS, and graceful shutdown.
//!
//! One accept loop over a `TcpListener`; each connection is served by hyper (HTTP/1.1 and
//! HTTP/2, ALPN over TLS) with the router. For TLS connections the SHA-256 of the verified
//! client certificate (if any) rides along as a [`ConnInfo`] request extension, which is
//! what `cnf.x5t#S256` is compared with. Client certificates are optional unless
//! `require_client_cert` is set, so DPoP-bound callers need none.
//!
//! Shutdown: stop accepting, mark not-ready, let in-flight requests finish (up to
//! `shutdown_grace_seconds`; idle keep-alive connections are closed at once), then close the
//! audit log, which commits every queued record before returning, and write the final signed
//! checkpoint of its head ([`crate::checkpoints`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::app::AppState;
use crate::config::TlsConfig;
use crate::error::StartError;
use crate::gates::ConnInfo;

/// Build the TLS acceptor (aws-lc-rs provider; TLS 1.2 and 1.3; h2 and http/1.1).
pub fn tls_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    let tls_err = |what: &str, e: &dyn std::fmt::Display| StartError::Tls(format!("{what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| tls_err(&cfg.cert.display().to_string(), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&cfg.cert.display().to_string(), &e))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{}: no certificate",
            cfg.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| tls_err(&cfg.key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", &e))?;
    let mut config = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_err(&ca.display().to_string(), &e))?
            {
                let c = c.map_err(|e| tls_err(&ca.display().to_string(), &e))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(&ca.display().to_string(), &e))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if cfg.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v.build().map_err(|e| tls_err("client CA", &e))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    }
    .with_single_cert(certs, key)
    .map_err(|e| tls_err("certificate/key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener` until `shutdown` resolves, then shut down gracefully.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    // Also checked by `Config::validate` against `server.listen`; this is the socket
    // actually bound (tests and embedders bind their own).
    if app.config.server.public_url.is_none() {
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Io(format!("listener: {e}")))?;
        if !addr.ip().is_loopback() {
            return Err(StartError::Config(format!(
                "server.public_url is required on a non-loopback listener ({addr}): DPoP proofs are checked against it, never against the client's Host header"
            )));
        }
    }
    let router = crate::router(app.clone());
    let graceful = GracefulShutdown::new();
    let limits = ConnLimits::from_config(&app.config.server);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(MAX_H1_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        addr = %local, tls = tls.is_some(),
        audit = app.audit.backend(), quotas = app.quotas.backend(),
        keys = app.keys.all().count(), "signer listening"
    );
    let checkpoints = crate::checkpoints::start(&app).await?;
    // Summary records of unauthenticated-failure windows (crate::flood), written as the
    // windows close.
    let (stop_summaries, mut summaries_stopped) = tokio::sync::oneshot::channel::<()>();
    let summaries = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => app.write_failure_summaries(false).await,
                    _ = &mut summaries_stopped => break,
                }
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        // A connection slot first: beyond the limit, new connections are not accepted and
        // wait in the kernel's listen backlog, costing nothing here.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let tls = tls.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = permit;
                    serve_conn(stream, peer, tls, router, builder, watcher, limits).await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    app.start_draining();
    let grace = Duration::from_secs(app.config.server.shutdown_grace_seconds);
    tracing::info!("shutting down: finishing in-flight requests");
    let deadline = tokio::time::Instant::now() + grace;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("in-flight requests finished"),
        _ = tokio::time::sleep_until(deadline) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    // Pipelines whose client went away run on without a connection: let them write their
    // audit records too.
    tokio::select! {
        _ = app.pipelines_finished() => {}
        _ = tokio::time::sleep_until(deadline) => tracing::warn!(
            running = app.pipelines.running(),
            "shutdown grace period over with sign pipelines still running"
        ),
    }
    // Stop the ticker between two writes (never in the middle of one), then write every
    // summary still open.
    let _ = stop_summaries.send(());
    let _ = summaries.await;
    app.write_failure_summaries(true).await;
    app.audit.close().await?;
    tracing::info!("audit log flushed and closed");
    if let Some(c) = checkpoints {
        c.finish(&app).await?;
    }
    Ok(())
}

/// Largest HTTP/1 read buffer (request line and headers must fit).
const MAX_H1_BUF: usize = 64 * 1024;
/// HTTP/2: streams per connection and the largest header list.
const H2_MAX_STREAMS: u32 = 64;
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Per-connection limits from `[server]`.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    header_read: Duration,
    max_connections: usize,
}

impl ConnLimits {
    fn from_config(c: &crate::config::ServerConfig) -> Self {
        ConnLimits {
            header_read: Duration::from_millis(c.header_read_timeout_ms.max(1)),
            max_connections: c
                .max_connections
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        }
    }
}

/// Is a plain-TCP client speaking HTTP/2 with prior knowledge? Decided on the first bytes,
/// within `deadline` (hyper's own detection has no timeout: a client trickling the preface
/// would hold the connection forever). `None`: closed or too slow.
async fn sniff_h2(stream: &tokio::net::TcpStream, deadline: Duration) -> Option<bool> {
    tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // A prefix of the preface so far: wait for more bytes.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .ok()
    .flatten()
}

/// What a connection is doing: requests being handled, and when it last did something.
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<std::time::Instant>,
}

/// A request being handled on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            busy: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    fn start(this: &Arc<Self>) -> Busy {
        this.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(this.clone())
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// How long the connection has had no request in hand (zero while one is handled).
    fn idle_for(&self) -> Duration {
        if self.busy.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// Serve a connection until it ends, or until it has had no request in hand for `idle`:
/// then it is closed. This bounds what hyper does not — above all HTTP/2, where a client
/// can open a stream and trickle its header block (CONTINUATION frames) forever while
/// answering keep-alive pings; a stream reaches the service only once its headers are
/// complete, so such a connection is idle and is closed. (HTTP/1 has hyper's own header
/// read timeout as well.)
async fn drive<F, E>(conn: F, activity: &Activity, idle: Duration, peer: SocketAddr)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(20)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection error");
                }
                return;
            }
            _ = tick.tick() => {
                if activity.idle_for() > idle {
                    tracing::debug!(%peer, "connection idle past the header read timeout: closed");
                    return;
                }
            }
        }
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ConnLimits,
) {
    let activity = Arc::new(Activity::new());
    let make_svc = |info: ConnInfo| {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            let busy = Activity::start(&activity);
            let fut = router.clone().oneshot(req);
            async move {
                let r = fut.await;
                drop(busy);
                r
            }
        })
    };
    // One connection, TLS or not, served the same way once its protocol is known.
    macro_rules! serve {
        ($io:expr, $builder:expr, $info:expr) => {{
            activity.touch();
            let conn = $builder.serve_connection(TokioIo::new($io), make_svc($info));
            let conn = watcher.watch(conn.into_owned());
            drive(conn, &activity, limits.header_read, peer).await;
        }};
    }
    match tls {
        Some(acceptor) => {
            let tls_stream =
                match tokio::time::timeout(limits.header_read, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let cert = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| stella_keys::sha256(c.as_ref()));
            let info = ConnInfo {
                tls: true,
                client_cert_sha256: cert,
                peer: Some(peer),
            };
            // The protocol comes from ALPN: no sniffing of the first bytes.
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            serve!(tls_stream, builder, info);
        }
        None => {
            let info = ConnInfo {
                tls: false,
                client_cert_sha256: None,
                peer: Some(peer),
            };
            let builder = match sniff_h2(&stream, limits.header_read).await {
                Some(true) => builder.http2_only(),
                Some(false) => builder.http1_only(),
                None => {
                    tracing::debug!(%peer, "no request within the header read timeout");
                    return;
                }
            };
            serve!(stream, builder, info);
        }
    }
}
