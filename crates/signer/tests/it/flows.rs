//! The main job end to end, and the service's operational behaviour.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use stella_dsse::Envelope;
use stella_keys::{Keyring, Policy, TrustedKey};
use stella_signer::client::{self, DpopKey};
use stella_store::{Outcome, PoeState};

use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";

fn verify_with(
    pubkey: &stella_keys::PublicKey,
    env: &Value,
    threshold: usize,
    extra: &[stella_keys::PublicKey],
) {
    let env = Envelope::from_json(env.to_string().as_bytes()).unwrap();
    let mut keys = vec![TrustedKey::unrestricted(pubkey.clone())];
    keys.extend(extra.iter().cloned().map(TrustedKey::unrestricted));
    let ring = Keyring::new(keys).unwrap();
    stella_keys::verify_envelope(&env, &ring, &Policy::new(threshold)).unwrap();
}

#[tokio::test]
async fn dpop_bound_sign_dsse_end_to_end() {
    let s = TestSigner::start().await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = s.url(SIGN);
    let mut req = http
        .post(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("POST", &url, Some(&token), None).unwrap())
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    req = req.json(&sign_body("poe-a"));
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let tp = resp.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    let body: Value = resp.json().await.unwrap();
    verify_with(&s.signing_pub, &body["bundle"]["dsse"], 1, &[]);
    assert_eq!(body["policy"]["plan"], "team");
    assert_eq!(body["policy"]["maxArtifactBytes"], 1 << 20);
    assert!(body["policy"]["qpsRemaining"].as_u64().unwrap() > 0);
    assert_eq!(body["bundle"]["mode"], "file");
    assert_eq!(body["bundle"]["signingIdentity"]["tenant"], "tenant-a");
    // The audit record, written before the response.
    let rec = s.audit(body["auditId"].as_str().unwrap());
    assert_eq!(rec.outcome, Outcome::Signed);
    assert_eq!(rec.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(rec.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(rec.installation.as_deref(), Some("inst-a1"));
    assert_eq!(rec.caller.client.as_deref(), Some("a-dpop"));
    assert_eq!(
        rec.sender_binding,
        Some(format!("dpop jkt={}", key.thumbprint()))
    );
    assert_eq!(rec.poe_state, Some(PoeState::Valid));
    assert_eq!(rec.scanner_verdict.as_deref(), Some("trusted-allowlist"));
    assert_eq!(
        rec.subject_digests,
        vec![format!("sha256:{}", "ab".repeat(32))]
    );
    assert_eq!(rec.key_ids, vec![s.signing_pub.key_id().to_string()]);
    let env_bytes = Envelope::from_json(body["bundle"]["dsse"].to_string().as_bytes())
        .unwrap()
        .to_json();
    assert_eq!(
        rec.envelope_sha256,
        Some(stella_keys::hex(&stella_keys::sha256(&env_bytes)))
    );
    // Second request: PoE from the cache.
    let r = send_dpop(&http, &url, &token, &key, &sign_body("poe-a")).await;
    assert_eq!(s.audit(r.audit_id()).poe_state, Some(PoeState::Cached));
    assert_eq!(s.licensing.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn multi_key_tenant_signs_with_every_key_and_sigstore_bundle_needs_one() {
    let s = TestSigner::start_with(Opts {
        extra_keys: 1,
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sigs = r.body["bundle"]["dsse"]["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    assert_ne!(sigs[0]["keyid"], sigs[1]["keyid"]);
    let mut body = sign_body("poe-a");
    body["options"] = json!({"returnBundle": "sigstore"});
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn sigstore_bundle_and_signing_mode() {
    let s = TestSigner::start().await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let mut body = sign_body("poe-a");
    body["options"] = json!({"returnBundle": "sigstore", "signingMode": "file"});
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = stella_dsse::Bundle::from_value(&r.body["bundle"]["sigstore"]).unwrap();
    assert_eq!(b.envelope.signatures.len(), 1);
    body["options"] = json!({"signingMode": "kms"});
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &body).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn sign_export_returns_manifest_and_signature_tuple() {
    let s = TestSigner::start().await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let manifest = json!({"bundleId": "exp-1", "files": [{"path": "a.json", "sha256": "cd".repeat(32)}], "b": 1});
    let body = json!({"manifest": manifest, "poe": {"format": "jwt", "value": "poe-a"}});
    let r = send_dpop(
        &http,
        &s.url("/api/v1/signer/sign/export"),
        &token,
        &key,
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let canonical = stella_dsse::jcs::to_vec(&manifest).unwrap();
    assert_eq!(
        r.body["manifestDigest"],
        format!(
            "sha256:{}",
            stella_keys::hex(&stella_keys::sha256(&canonical))
        )
    );
    let env = Envelope::from_json(r.body["dsse"].to_string().as_bytes()).unwrap();
    assert_eq!(env.payload, canonical);
    verify_with(&s.signing_pub, &r.body["dsse"], 1, &[]);
    let sig = stella_dsse::b64::decode(r.body["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    assert!(s.signing_pub.verify(&env.pae(), &sig));
    assert_eq!(s.audit(r.audit_id()).outcome, Outcome::Signed);
}

#[tokio::test]
async fn dpop_nonce_challenge() {
    let s = TestSigner::start_with(Opts {
        toml: "[dpop]\nrequire_nonce = true\n".into(),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = s.url(SIGN);
    let r = send_dpop(&http, &url, &token, &key, &sign_body("poe-a")).await;
    assert_refused(&s, &r, 401, "use_dpop_nonce");
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_string();
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("use_dpop_nonce"));
    let proof = key.proof("POST", &url, Some(&token), Some(&nonce)).unwrap();
    let r = send(
        &http,
        &url,
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("dpop-nonce"));
    // The client helper does the dance by itself.
    let r = client::post_dpop(&http, &s.base, SIGN, &token, &key, &sign_body("poe-a"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn licensing_bypass_is_audited() {
    let s = TestSigner::start_with(Opts {
        toml: "[licensing]\nbypass = true\nbypass_reason = \"INC-4242 Licensing outage\"\n".into(),
        ..Opts::default()
    })
    .await;
    s.licensing.set_down(true);
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("anything")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.poe_state, Some(PoeState::Bypass));
    assert_eq!(
        rec.bypass_reason.as_deref(),
        Some("INC-4242 Licensing outage")
    );
    assert_eq!(s.licensing.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn nothing_is_signed_when_the_audit_cannot_be_written() {
    let s = TestSigner::start_with(Opts {
        audit: Some(Arc::new(FailingAudit::default())),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!((r.status, r.code()), (503, "upstream_unavailable"));
    assert!(r.body.get("bundle").is_none());
    assert!(
        !r.body["detail"].as_str().unwrap().contains("disk full"),
        "5xx bodies stay generic"
    );
    let ready = http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let m = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("stella_signer_audit_failures_total 1"));
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = TestSigner::start().await;
    let http = authority().pki.http(None);
    assert_eq!(
        http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let ready = http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let ok = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!(ok.status, 200);
    let bad = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-unknown")).await;
    assert_eq!(bad.status, 403);
    let m = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "stella_signer_request_duration_seconds_bucket{route=\"sign_dsse\",le=\"0.005\"}",
        "stella_signer_requests_total{route=\"sign_dsse\",outcome=\"signed\",code=\"ok\"} 1",
        "stella_signer_requests_total{route=\"sign_dsse\",outcome=\"denied\",code=\"entitlement_denied\"} 1",
        "stella_signer_poe_failures_total{kind=\"denied\"} 1",
        &format!("stella_signer_key_usage_total{{key_id=\"{}\",mode=\"file\"}} 1", s.signing_pub.key_id()),
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
    let doc: Value = http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/signer/sign/dsse"]["post"].is_object());
    let nf = http.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(nf.status(), 404);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_flushes_the_audit() {
    let mut s = TestSigner::start().await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = s.url(SIGN);
    // Licensing answers slowly, so every request is inside the pipeline when shutdown starts.
    s.licensing.delay_ms.store(1500, Ordering::SeqCst);
    let mut wide = license("tenant-a", 1000.0, 1 << 20);
    wide["limits"]["maxConcurrent"] = json!(64);
    s.licensing.set("poe-wide", wide);
    let mut inflight = Vec::new();
    for _ in 0..20 {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let proof = key.proof("POST", &url, Some(&token), None).unwrap();
        inflight.push(tokio::spawn(async move {
            // Requests that reached the server before shutdown finish; later ones may fail
            // to connect (no status).
            http.post(&url)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .json(&sign_body("poe-wide"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    s.stop().await;
    assert!(s.state.is_draining());
    let mut ok = 0;
    let mut statuses = Vec::new();
    for t in inflight {
        let st = t.await.unwrap();
        statuses.push(st);
        if st == 200 {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 20,
        "in-flight requests finish during shutdown: {statuses:?}"
    );
    let report =
        stella_store::chain::verify(&stella_store::SqliteReader::open(&s.audit_db).unwrap())
            .unwrap();
    assert!(report.is_intact());
    assert_eq!(
        report.records as usize, ok,
        "every signed response has its audit record"
    );
}

#[tokio::test]
async fn jwks_is_refetched_on_unknown_kid_with_a_floor() {
    use axum::routing::get;
    // A JWKS server whose key set we switch, counting fetches.
    let fetches = Arc::new(AtomicUsize::new(0));
    let k1 = stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let k2 = stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let jwk = |k: &stella_keys::FileKey, kid: &str| {
        let mut j = stella_signer::jose::sign::public_jwk(k);
        j["kid"] = json!(kid);
        j
    };
    let current = Arc::new(std::sync::Mutex::new(json!({"keys": [jwk(&k1, "k1")]})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let (f, c) = (fetches.clone(), current.clone());
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            let (f, c) = (f.clone(), c.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(c.lock().unwrap().clone())
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = TestSigner::start_with(Opts {
        toml: format!("[authority]\njwks_url = \"{jwks_url}\"\njwks_refetch_floor_seconds = 1\n"),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let mint = |k: &stella_keys::FileKey, kid: &str| {
        stella_signer::jose::sign::compact(
            k,
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": kid}),
            &authority().good_claims(key.thumbprint()),
        )
        .unwrap()
    };
    let r = send_dpop(
        &http,
        &s.url(SIGN),
        &mint(&k1, "k1"),
        &key,
        &sign_body("poe-a"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Unknown kids within the floor: no refetch storm.
    for i in 0..5 {
        let r = send_dpop(
            &http,
            &s.url(SIGN),
            &mint(&k2, &format!("bogus-{i}")),
            &key,
            &sign_body("poe-a"),
        )
        .await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The Authority rotates to k2; after the floor, an unknown kid triggers one refetch.
    *current.lock().unwrap() = json!({"keys": [jwk(&k1, "k1"), jwk(&k2, "k2")]});
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = send_dpop(
        &http,
        &s.url(SIGN),
        &mint(&k2, "k2"),
        &key,
        &sign_body("poe-a"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// Issue #8 item 10: a client that goes away mid-request cancelled the handler, so a request
/// could end unaudited (and a key used without its record). The pipeline now runs to the end
/// whatever the client does: the record exists, and the signer says it signed.
#[tokio::test]
async fn dropped_connection_still_runs_the_pipeline_and_audits_it() {
    let mut s = TestSigner::start().await;
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let url = s.url(SIGN);
    // Licensing answers late: the client gives up (and closes its connection) while the
    // request is inside the pipeline.
    s.licensing.delay_ms.store(1200, Ordering::SeqCst);
    let impatient = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(authority().pki.ca_pem.as_bytes()).unwrap(),
        ])
        .no_proxy()
        .timeout(std::time::Duration::from_millis(400))
        .build()
        .unwrap();
    let proof = key.proof("POST", &url, Some(&token), None).unwrap();
    let r = impatient
        .post(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .json(&sign_body("poe-a"))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout(), "the client gave up");
    drop(impatient);
    // Give the pipeline time to finish on its own, then stop (which also waits for it).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    s.stop().await;
    let reader = stella_store::SqliteReader::open(&s.audit_db).unwrap();
    let records: Vec<stella_store::AuditRecord> =
        stella_store::AuditReader::read_after(&reader, 0, 100)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(&r.record_json).unwrap())
            .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Signed);
    assert!(records[0].envelope_sha256.is_some());
    assert_eq!(records[0].tenant.as_deref(), Some("tenant-a"));
}

/// Issue #8 item 10: without `public_url`, a non-loopback listener built the DPoP `htu` from
/// the client's `Host`. The server now refuses to start there.
#[tokio::test]
async fn non_loopback_listener_needs_public_url() {
    let s = TestSigner::start().await;
    assert!(s.state.config.server.public_url.is_none());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stella_signer::serve(s.state.clone(), listener, None, std::future::pending()),
    )
    .await
    .expect("refused at once, not served");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("public_url") && e.contains("loopback"), "{e}");
}
