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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::ConnInfo;
use crate::app::{AppState, StartError};
use crate::config::TlsConfig;

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
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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
    tokio::pin!(shutdown);
    loop {
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
                    serve_conn(stream, peer, tls, router, builder, watcher).await;
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
    app.audit.close().await?;
    tracing::info!("audit log flushed and closed");
    if let Some(c) = checkpoints {
        c.finish(&app).await?;
    }
    Ok(())
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let make_svc = |info: ConnInfo| {
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            router.clone().oneshot(req)
        })
    };
    match tls {
        Some(acceptor) => {
            let tls_stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
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
            let conn = builder.serve_connection(TokioIo::new(tls_stream), make_svc(info));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        }
        None => {
            let info = ConnInfo {
                tls: false,
                client_cert_sha256: None,
                peer: Some(peer),
            };
            let conn = builder.serve_connection(TokioIo::new(stream), make_svc(info));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        }
    }
}
