//! The Signer's identity token from the Authority: client credentials against the real test
//! Authority (oidc-provider, tests/authority/authority.mjs), cached until `margin` before
//! expiry, its audience checked, failures typed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use stella_keyless::token::TokenError;
use stella_keyless::{ClientCredentials, HttpOptions, IdentityTokenSource};
use stella_keys::{Algorithm, FileKey};
use zeroize::Zeroizing;

struct Authority {
    child: Child,
    token_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECRET: &str = "client secret with spaces & symbols=%";

fn start() -> Authority {
    let root = stella_keyless::testing::repo_root();
    assert!(
        root.join("tests/authority/node_modules/oidc-provider")
            .exists(),
        "tests/authority/node_modules is missing: run scripts/setup-test-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let cfg = json!({
        "issuer": "https://authority.stella.test",
        "signingKeyPem": key.to_pkcs8_pem().unwrap().as_str(),
        "clients": [{"client_id": "signer-keyless", "client_secret": SECRET,
                     "tid": "t1", "inst": "i1", "scope": "signer.sign"}],
    });
    let path = dir.path().join("authority.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (child, line) = stella_keyless::testing::spawn_announced(
        Command::new("node")
            .arg(root.join("tests/authority/authority.mjs"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit()),
        "authority.mjs",
    );
    let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
        .as_u64()
        .unwrap();
    Authority {
        child,
        token_url: format!("http://127.0.0.1:{port}/token"),
        _dir: dir,
    }
}

fn fast() -> HttpOptions {
    stella_keyless::testing::fast()
}

fn client(a: &Authority, secret: &str) -> ClientCredentials {
    ClientCredentials::new(
        &a.token_url,
        "signer-keyless",
        Zeroizing::new(secret.to_string()),
        fast(),
    )
    .unwrap()
    .resource(Some("urn:stella:signer"))
    .scope(Some("signer.sign"))
    // The test Authority issues for the resource `urn:stella:signer` (aud "signer"); the
    // production configuration asks for audience `sigstore`.
    .audience(Some("signer"))
}

#[tokio::test]
async fn tokens_are_cached_until_the_margin_before_expiry() {
    let a = start();
    let c = client(&a, SECRET);
    let t1 = c.token().await.unwrap();
    assert_eq!(t1.issuer, "https://authority.stella.test");
    assert!(t1.audiences.contains(&"signer".to_string()));
    let t2 = c.token().await.unwrap();
    assert_eq!(t1.raw(), t2.raw(), "a fresh token is reused");

    // The Authority's tokens live 300 s: with a 400 s margin none is ever fresh enough to
    // cache, so every call asks again (and gets another token).
    let c = client(&a, SECRET).margin(Duration::from_secs(400));
    let t3 = c.token().await.unwrap();
    let t4 = c.token().await.unwrap();
    assert_ne!(t3.raw(), t4.raw());
}

#[tokio::test]
async fn wrong_secret_wrong_audience_and_unreachable_authority_are_typed() {
    let a = start();
    let e = client(&a, "wrong").token().await.unwrap_err();
    assert!(
        matches!(&e, TokenError::Source(m) if m.contains("HTTP 400") || m.contains("HTTP 401")),
        "{e}"
    );
    let e = client(&a, SECRET)
        .audience(Some("sigstore"))
        .token()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, TokenError::Source(m) if m.contains("audience")),
        "{e}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ClientCredentials::new(
        &format!("http://127.0.0.1:{port}/token"),
        "x",
        Zeroizing::new("y".into()),
        fast(),
    )
    .unwrap();
    let e = c.token().await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable(_)), "{e}");
    assert!(stella_keyless::KeylessError::from(e).is_upstream_unavailable());
}
