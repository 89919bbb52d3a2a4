//! Authentication against fake registries: Bearer tokens (credentials from a docker config
//! file), Basic, anonymous tokens, and refusals.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use stella_oci::{ClientConfig, CredentialSource, Digest, ErrorKind};

use crate::support::{client_with, reference, serve, Reply, Request};

const BODY: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

fn manifest_reply() -> Reply {
    Reply::new(200)
        .header("Content-Type", stella_oci::media::OCI_INDEX)
        .header("Docker-Content-Digest", &Digest::of(BODY).to_string())
        .body(BODY.to_vec())
}

fn docker_config(dir: &std::path::Path, host: &str, user: &str, pass: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

/// A registry that wants a Bearer token from its realm; the realm wants Basic `alice:s3cret`
/// unless `anonymous` tokens are allowed.
async fn bearer_registry(anonymous: bool) -> crate::support::FakeRegistry {
    let port: Arc<OnceLock<u16>> = Arc::default();
    let p2 = port.clone();
    let handler = move |r: &Request| {
        let port = *p2.get().unwrap();
        if r.path.starts_with("/token") {
            assert!(r.path.contains("service=fake"), "{}", r.path);
            assert!(
                r.path.contains("scope=repository%3Aapp%3Apull"),
                "{}",
                r.path
            );
            let good = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
            );
            return match r.header("authorization") {
                Some(h) if h == good => {
                    Reply::new(200).body(r#"{"token":"T-alice","expires_in":300}"#)
                }
                None if anonymous => Reply::new(200).body(r#"{"access_token":"T-anon"}"#),
                _ => Reply::new(401),
            };
        }
        match r.header("authorization") {
            Some("Bearer T-alice") | Some("Bearer T-anon") => manifest_reply(),
            _ => Reply::new(401).header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:app:pull""#
                ),
            ),
        }
    };
    let fake = serve(Arc::new(handler)).await;
    port.set(fake.addr.port()).unwrap();
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_with_docker_config_credentials() {
    let fake = bearer_registry(false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = docker_config(dir.path(), &fake.host(), "alice", "s3cret");
    let c =
        client_with(|c: &mut ClientConfig| c.credentials = CredentialSource::DockerConfigFile(cfg));
    let r = reference(&fake.host(), "app:1");
    assert!(c.fetch_manifest(&r).await.unwrap().is_index());
    // The token is cached: a second request needs no new challenge round.
    let before = c
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    c.fetch_manifest(&r).await.unwrap();
    let after = c
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 1);

    // Wrong password: an authentication error, not "not found".
    let cfg = docker_config(dir.path(), &fake.host(), "alice", "wrong");
    let c =
        client_with(|c: &mut ClientConfig| c.credentials = CredentialSource::DockerConfigFile(cfg));
    let err = c.fetch_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    // No credentials at all.
    let err = client_with(|_| {}).fetch_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("anonymous"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens() {
    let fake = bearer_registry(true).await;
    let c = client_with(|_| {});
    assert!(c
        .fetch_manifest(&reference(&fake.host(), "app:1"))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:pw")
    );
    let handler = move |r: &Request| match r.header("authorization") {
        Some(h) if h == good => manifest_reply(),
        _ => Reply::new(401).header("WWW-Authenticate", r#"Basic realm="fake""#),
    };
    let fake = serve(Arc::new(handler)).await;
    let mut creds = std::collections::HashMap::new();
    creds.insert(
        fake.host(),
        stella_oci::Credentials::Basic {
            username: "bob".into(),
            password: "pw".into(),
        },
    );
    let c = client_with(|c: &mut ClientConfig| c.credentials = CredentialSource::Static(creds));
    assert!(c
        .fetch_manifest(&reference(&fake.host(), "app:1"))
        .await
        .is_ok());
    let err = client_with(|_| {})
        .fetch_manifest(&reference(&fake.host(), "app:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("docker login"), "{err}");
}
