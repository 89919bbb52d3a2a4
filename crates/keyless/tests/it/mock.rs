//! Keyless signing against Fulcio, Rekor and a TSA (the Sigstore mock services with the
//! real services' checks, tests/sigstore-mock/serve.mjs): bundles verify with our verifier,
//! with sigstore-js `@sigstore/verify`, and their timestamps with `openssl ts -verify`; each
//! failure is its documented typed error.

use serde_json::{json, Value};
use stella_keyless::CertificateRequest;
use stella_keyless::{
    CertificateIssuer, EphemeralSigner, IdentityToken, KeylessError, Service, TlogPolicy,
    UpstreamError,
};
use stella_keys::Signer;
use stella_sigstore::{Artifact, Bundle, Identity, Matcher, Options, Policy};

use stella_keyless::testing::*;

const SUB: &str = "https://signer.stella.test/tenants/acme";

fn policy(m: &MockSigstore) -> Policy {
    Policy::Identity(Identity::new(
        Matcher::exact(SUB),
        Matcher::exact(m.issuer.clone()),
    ))
}

fn statement(artifact: &[u8]) -> stella_dsse::Statement {
    stella_dsse::Statement::new(
        vec![stella_dsse::Subject::sha256(
            "artifact.bin",
            stella_keys::hex(&stella_keys::sha256(artifact)),
        )
        .unwrap()],
        "https://slsa.dev/provenance/v1",
        json!({"buildDefinition": {"buildType": "https://stella.test/build"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn blob_bundle_with_rekor_verifies_with_stella_sigstore_js_and_openssl() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let artifact = b"release artifact bytes\n";
    let out = s.sign_blob(artifact).await.unwrap();
    assert_eq!(out.identity.san, SUB);
    assert_eq!(out.identity.oidc_issuer, m.issuer);
    let entry = out.tlog_entry.as_ref().expect("a Rekor entry");
    assert_eq!(entry.kind, "hashedrekord");
    assert!(entry.set.is_some() && entry.inclusion_proof.is_some());
    assert_eq!(out.certificate_chain.len(), 2, "leaf and the mock's root");

    // Our verifier: identity policy, one tlog entry with SET + proof, one timestamp.
    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    let v = stella_sigstore::verify(
        &b,
        Artifact::Bytes(artifact),
        &policy(&m),
        &m.root,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(v.tlog_entries.len(), 1);
    assert!(v.tlog_entries[0].signed_entry_timestamp && v.tlog_entries[0].inclusion_proof);
    assert_eq!(v.timestamps, 1);

    // sigstore-js.
    let bundle_path = m.dir.path().join("blob.sigstore.json");
    let artifact_path = m.dir.path().join("artifact.bin");
    std::fs::write(&bundle_path, out.bundle_json()).unwrap();
    std::fs::write(&artifact_path, artifact).unwrap();
    let ok = sigstore_js(
        &bundle_path,
        &m.trusted_root_path(),
        SUB,
        &m.issuer,
        Some(&artifact_path),
        1,
    )
    .unwrap();
    assert!(
        ok.contains("messageSignature") && ok.contains("tlog=1"),
        "{ok}"
    );
    // ... and it refuses another identity and another artifact.
    assert!(sigstore_js(
        &bundle_path,
        &m.trusted_root_path(),
        "https://evil.test",
        &m.issuer,
        Some(&artifact_path),
        1
    )
    .is_err());
    std::fs::write(&artifact_path, b"tampered").unwrap();
    assert!(sigstore_js(
        &bundle_path,
        &m.trusted_root_path(),
        SUB,
        &m.issuer,
        Some(&artifact_path),
        1
    )
    .is_err());

    // openssl ts -verify on the timestamp, over SHA-256 of the signature.
    let (sig, ts) = signature_and_timestamp(&out.bundle);
    let tsa_root = m.dir.path().join("tsa-root.pem");
    let tsa_cert = m.dir.path().join("tsa-signing.pem");
    openssl_ts_verify(m.dir.path(), &ts, &sig, &tsa_root, &tsa_cert).unwrap();
    assert!(openssl_ts_verify(
        m.dir.path(),
        &ts,
        b"another signature",
        &tsa_root,
        &tsa_cert
    )
    .is_err());
}

#[tokio::test]
async fn dsse_bundle_has_a_canonical_rekor_dsse_body_and_verifies_with_sigstore_js() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let artifact = b"container image config";
    let out = s.attest(&statement(artifact)).await.unwrap();
    let env = out.envelope.as_ref().unwrap();
    let entry = out.tlog_entry.as_ref().unwrap();
    // The body is what real Rekor stores for dsse 0.0.1, not the proposal.
    let body: Value = serde_json::from_slice(&entry.body).unwrap();
    assert_eq!(body["kind"], "dsse");
    let spec = &body["spec"];
    assert!(spec.get("proposedContent").is_none(), "{body}");
    assert_eq!(
        spec["payloadHash"]["value"],
        stella_keys::hex(&stella_keys::sha256(&env.payload))
    );
    assert_eq!(
        spec["envelopeHash"]["value"],
        stella_keys::hex(&stella_keys::sha256(env.to_value().to_string().as_bytes()))
    );
    assert_eq!(spec["signatures"].as_array().unwrap().len(), 1);

    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    stella_sigstore::verify(
        &b,
        Artifact::Bytes(artifact),
        &policy(&m),
        &m.root,
        &Options::default(),
    )
    .unwrap();
    let bundle_path = m.dir.path().join("att.sigstore.json");
    std::fs::write(&bundle_path, out.bundle_json()).unwrap();
    let ok = sigstore_js(
        &bundle_path,
        &m.trusted_root_path(),
        SUB,
        &m.issuer,
        None,
        1,
    )
    .unwrap();
    assert!(ok.contains("dsseEnvelope") && ok.contains("tlog=1"), "{ok}");

    let (sig, ts) = signature_and_timestamp(&out.bundle);
    openssl_ts_verify(
        m.dir.path(),
        &ts,
        &sig,
        &m.dir.path().join("tsa-root.pem"),
        &m.dir.path().join("tsa-signing.pem"),
    )
    .unwrap();
}

#[tokio::test]
async fn a_dsse_proposal_whose_signature_does_not_verify_is_refused_by_the_log() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let out = s.attest(&statement(b"x")).await.unwrap();
    let mut env = out.envelope.clone().unwrap();
    env.payload = b"{\"tampered\":true}".to_vec();
    let leaf = pem::parse(&out.certificate_chain[0])
        .unwrap()
        .into_contents();
    let log = stella_keyless::rekor::RekorClient::new(&m.url, fast()).unwrap();
    let e = stella_keyless::TransparencyLog::upload(
        &log,
        stella_keyless::Proposal::Dsse {
            envelope: &env,
            certificate_der: &leaf,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Rejected { service: Service::Rekor, status: 400, message, .. } if message.contains("does not verify")),
        "{e}"
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_before_use() {
    let m = MockSigstore::start();
    // The CA's clock is an hour behind: its 10-minute certificate expired long ago.
    m.control(json!({"fulcioClockOffset": -3600})).await;
    let s = m.signer(SUB, None).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(&e, KeylessError::Upstream(UpstreamError::Untrusted { service: Service::Fulcio, reason }) if reason.contains("valid")),
        "{e}"
    );
}

#[tokio::test]
async fn san_mismatch_is_refused_before_use() {
    let m = MockSigstore::start();
    m.control(json!({"fulcioSan": "https://someone-else.test"}))
        .await;
    let s = m.signer(SUB, None).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(&e, KeylessError::Upstream(UpstreamError::Untrusted { service: Service::Fulcio, reason }) if reason.contains("SAN")),
        "{e}"
    );
}

#[tokio::test]
async fn certificates_chaining_to_another_root_are_refused() {
    let m = MockSigstore::start();
    let other = MockSigstore::start();
    // Fulcio of `m`, trusted root of `other`.
    let fulcio =
        stella_keyless::fulcio::FulcioClient::new(&m.url, other.root.clone(), fast()).unwrap();
    let token = IdentityToken::parse(&m.token(SUB, 600).await).unwrap();
    let key = EphemeralSigner::generate().unwrap();
    let pop = key.sign(SUB.as_bytes()).unwrap();
    let e = fulcio
        .issue(CertificateRequest {
            public_key: key.public_key(),
            token: &token,
            proof_of_possession: &pop,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            UpstreamError::Untrusted {
                service: Service::Fulcio,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn fulcio_down_is_upstream_unavailable_after_retries_and_4xx_is_not_retried() {
    let m = MockSigstore::start();
    m.control(json!({"fulcio": "down"})).await;
    let s = m.signer(SUB, None).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(e.is_upstream_unavailable(), "{e}");
    assert_eq!(e.service(), Some(Service::Fulcio));
    assert_eq!(m.stats().await["fulcio"], 3, "one attempt + 2 retries");

    // A refused token (expired at Fulcio) is a 4xx: one attempt, no retry.
    m.control(json!({"fulcio": "up"})).await;
    let fulcio = m.fulcio(fast());
    let token = IdentityToken::parse(&m.token(SUB, -30).await).unwrap();
    let key = EphemeralSigner::generate().unwrap();
    let pop = key.sign(SUB.as_bytes()).unwrap();
    let e = fulcio
        .issue(CertificateRequest {
            public_key: key.public_key(),
            token: &token,
            proof_of_possession: &pop,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            UpstreamError::Rejected {
                service: Service::Fulcio,
                status: 401,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(m.stats().await["fulcio"], 4);

    // The flow refuses an expired token before asking.
    let expired = stella_keyless::StaticToken(token);
    let s = stella_keyless::KeylessSigner::new(
        std::sync::Arc::new(expired),
        std::sync::Arc::new(m.fulcio(fast())),
        std::sync::Arc::new(stella_keyless::tsa::HttpTsa::new(&m.tsa_url(), fast()).unwrap()),
        m.root.clone(),
    );
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(
            e,
            KeylessError::Token(stella_keyless::token::TokenError::Expired { .. })
        ),
        "{e}"
    );
    assert_eq!(m.stats().await["fulcio"], 4);
}

#[tokio::test]
async fn a_wrong_proof_of_possession_is_rejected() {
    let m = MockSigstore::start();
    let fulcio = m.fulcio(fast());
    let token = IdentityToken::parse(&m.token(SUB, 600).await).unwrap();
    let key = EphemeralSigner::generate().unwrap();
    let other = EphemeralSigner::generate().unwrap();
    for pop in [
        key.sign(b"another subject").unwrap(),
        other.sign(SUB.as_bytes()).unwrap(),
    ] {
        let e = fulcio
            .issue(CertificateRequest {
                public_key: key.public_key(),
                token: &token,
                proof_of_possession: &pop,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, UpstreamError::Rejected { status: 400, message, .. } if message.contains("proof of possession")),
            "{e}"
        );
    }
}

#[tokio::test]
async fn tsa_down_or_hanging_is_upstream_unavailable() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, None).await;
    m.control(json!({"tsa": "down"})).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        e.is_upstream_unavailable() && e.service() == Some(Service::Tsa),
        "{e}"
    );
    assert_eq!(m.stats().await["tsa"], 3);
    m.control(json!({"tsa": "hang"})).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(&e, KeylessError::Upstream(UpstreamError::Unavailable { service: Service::Tsa, reason, .. }) if reason.contains("timed out")),
        "{e}"
    );
}

#[tokio::test]
async fn rekor_down_fails_when_required_and_is_skipped_when_best_effort() {
    let m = MockSigstore::start();
    m.control(json!({"rekor": "down"})).await;
    let required = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let e = required.sign_blob(b"x").await.unwrap_err();
    assert!(
        e.is_upstream_unavailable() && e.service() == Some(Service::Rekor),
        "{e}"
    );

    let best = m.signer(SUB, Some(TlogPolicy::BestEffort)).await;
    let out = best.sign_blob(b"x").await.unwrap();
    assert!(out.tlog_entry.is_none());
    assert!(out.tlog_skipped.as_deref().unwrap().contains("Rekor"));
    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    stella_sigstore::verify(
        &b,
        Artifact::Bytes(b"x"),
        &policy(&m),
        &m.root,
        &Options {
            tlog_threshold: 0,
            time_threshold: 1,
        },
    )
    .unwrap();
}

#[tokio::test]
async fn unreachable_services_are_upstream_unavailable() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = MockSigstore::start();
    let dead = format!("http://127.0.0.1:{port}");
    let s = stella_keyless::KeylessSigner::new(
        std::sync::Arc::new(stella_keyless::StaticToken::parse(&m.token(SUB, 600).await).unwrap()),
        std::sync::Arc::new(
            stella_keyless::fulcio::FulcioClient::new(&dead, m.root.clone(), fast()).unwrap(),
        ),
        std::sync::Arc::new(stella_keyless::tsa::HttpTsa::new(&m.tsa_url(), fast()).unwrap()),
        m.root.clone(),
    );
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(&e, KeylessError::Upstream(UpstreamError::Unavailable { service: Service::Fulcio, reason, .. }) if reason.contains("connection")),
        "{e}"
    );
}

#[tokio::test]
async fn a_duplicate_rekor_upload_follows_the_409_to_the_existing_entry() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let out = s.attest(&statement(b"dup")).await.unwrap();
    let first = out.tlog_entry.clone().unwrap();
    let leaf = pem::parse(&out.certificate_chain[0])
        .unwrap()
        .into_contents();
    let log = stella_keyless::rekor::RekorClient::new(&m.url, fast()).unwrap();
    let again = stella_keyless::TransparencyLog::upload(
        &log,
        stella_keyless::Proposal::Dsse {
            envelope: out.envelope.as_ref().unwrap(),
            certificate_der: &leaf,
        },
    )
    .await
    .unwrap();
    assert_eq!(again, first, "the existing entry, as first logged");
    // POST (201), POST (409), GET (200).
    assert_eq!(m.stats().await["rekor"], 3);
}

#[tokio::test]
async fn a_hashedrekord_whose_signature_does_not_match_the_digest_is_refused_by_the_log() {
    let m = MockSigstore::start();
    let s = m.signer(SUB, Some(TlogPolicy::Required)).await;
    let out = s.sign_blob(b"artifact").await.unwrap();
    let leaf = pem::parse(&out.certificate_chain[0])
        .unwrap()
        .into_contents();
    let (sig, _) = signature_and_timestamp(&out.bundle);
    let log = stella_keyless::rekor::RekorClient::new(&m.url, fast()).unwrap();
    let other = stella_keys::sha256(b"another artifact");
    let e = stella_keyless::TransparencyLog::upload(
        &log,
        stella_keyless::Proposal::HashedRekord {
            sha256: &other,
            signature: &sig,
            certificate_der: &leaf,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Rejected { status: 400, message, .. } if message.contains("does not verify")),
        "{e}"
    );
}

#[tokio::test]
async fn a_ca_clock_a_little_ahead_is_waited_out_and_far_ahead_is_refused() {
    let m = MockSigstore::start();
    m.control(json!({"fulcioClockOffset": 3})).await;
    let s = m.signer(SUB, None).await;
    let out = s.sign_blob(b"x").await.unwrap();
    assert!(out.timestamp_time >= out.identity.not_before);
    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    stella_sigstore::verify(
        &b,
        Artifact::Bytes(b"x"),
        &policy(&m),
        &m.root,
        &Options {
            tlog_threshold: 0,
            time_threshold: 1,
        },
    )
    .unwrap();

    m.control(json!({"fulcioClockOffset": 120})).await;
    let s = m.signer(SUB, None).await;
    let e = s.sign_blob(b"x").await.unwrap_err();
    assert!(
        matches!(&e, KeylessError::Upstream(UpstreamError::Untrusted { service: Service::Fulcio, reason }) if reason.contains("valid")),
        "{e}"
    );
}
