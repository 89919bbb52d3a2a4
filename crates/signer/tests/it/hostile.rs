//! Hostile requests (issue #5 item 9): each refused with the right status and `code`, and
//! each leaving an audit record that says so.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use stella_keys::Signer as _;
use stella_signer::client::DpopKey;
use stella_store::PoeState;

use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";

struct Setup {
    s: TestSigner,
    http: reqwest::Client,
    url: String,
    key: DpopKey,
}

async fn setup() -> Setup {
    setup_with(Opts::default()).await
}

async fn setup_with(opts: Opts) -> Setup {
    let s = TestSigner::start_with(opts).await;
    let http = authority().pki.http(None);
    let url = s.url(SIGN);
    Setup {
        s,
        http,
        url,
        key: DpopKey::generate().unwrap(),
    }
}

impl Setup {
    async fn real_token(&self) -> String {
        authority()
            .token("a-dpop", "signer.sign", Some(&self.key), None)
            .await
    }

    async fn with_proof_claims(&self, token: &str, claims: serde_json::Value) -> Reply {
        let proof = self.key.proof_with_claims(&claims).unwrap();
        send(
            &self.http,
            &self.url,
            Some(format!("DPoP {token}")),
            &[proof],
            serde_json::to_vec(&sign_body("poe-a")).unwrap(),
        )
        .await
    }

    fn proof_claims(&self, token: &str) -> serde_json::Value {
        json!({"jti": stella_signer::random_hex(12), "htm": "POST", "htu": self.url,
               "iat": now(), "ath": URL_SAFE_NO_PAD.encode(stella_keys::sha256(token.as_bytes()))})
    }

    async fn forged(&self, claims: serde_json::Value) -> Reply {
        let token = authority().forge(at_header(), claims);
        send_dpop(
            &self.http,
            &self.url,
            &token,
            &self.key,
            &sign_body("poe-a"),
        )
        .await
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let t = setup().await;
    let claims = authority().good_claims(t.key.thumbprint());
    let token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("DPoP "));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    use aws_lc_rs::hmac;
    let t = setup().await;
    let claims = authority().good_claims(t.key.thumbprint());
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"at+jwt","kid":"test-key-1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // The classic confusion attack: the Authority's public key (as JWKS JSON and as PEM) used
    // as an HMAC secret.
    let jwks = t.http.get(&authority().jwks_url).send().await;
    let mut secrets = vec![authority().key.public_key().to_pem().into_bytes()];
    if let Ok(r) = jwks {
        secrets.push(r.bytes().await.unwrap().to_vec());
    }
    secrets.push(authority().key.public_key().spki_der().to_vec());
    for secret in secrets {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
        let rec = assert_refused(&t.s, &r, 401, "invalid_token");
        assert!(rec.reason.unwrap().contains("HS256"));
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let t = setup().await;
    let mut c = authority().good_claims(t.key.thumbprint());
    c["exp"] = json!(now() - 120);
    c["iat"] = json!(now() - 600);
    let r = t.forged(c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("expired"));
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let t = setup().await;
    let mut c = authority().good_claims(t.key.thumbprint());
    c["nbf"] = json!(now() + 600);
    let r = t.forged(c).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let t = setup().await;
    let mut c = authority().good_claims(t.key.thumbprint());
    c["iss"] = json!("https://evil.example");
    let r = t.forged(c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("iss"));
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let t = setup().await;
    let mut c = authority().good_claims(t.key.thumbprint());
    c["aud"] = json!(["scanner", "attestor"]);
    let r = t.forged(c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("aud"));
}

#[tokio::test]
async fn token_signed_by_another_key_is_refused() {
    let t = setup().await;
    let other = stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let token = stella_signer::jose::sign::compact(
        &other,
        &at_header(),
        &authority().good_claims(t.key.thumbprint()),
    )
    .unwrap();
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
}

#[tokio::test]
async fn missing_scope_is_refused() {
    let t = setup().await;
    // A real Authority token whose scope lacks signer.sign.
    let token = authority()
        .token("a-dpop", "other.scope", Some(&t.key), None)
        .await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    let rec = assert_refused(&t.s, &r, 403, "insufficient_scope");
    assert_eq!(rec.tenant.as_deref(), Some("tenant-a"));
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
}

#[tokio::test]
async fn another_tenants_entitlement_is_refused() {
    let t = setup().await;
    // Tenant B's real token with tenant A's Proof-of-Entitlement.
    let token = authority()
        .token("b-dpop", "signer.sign", Some(&t.key), None)
        .await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    let rec = assert_refused(&t.s, &r, 403, "tenant_mismatch");
    assert_eq!(rec.tenant.as_deref(), Some("tenant-b"));
    assert_eq!(rec.license_id.as_deref(), Some("lic-tenant-a"));
}

#[tokio::test]
async fn tenant_this_signer_does_not_serve_is_refused() {
    let t = setup().await;
    let token = authority()
        .token("z-dpop", "signer.sign", Some(&t.key), None)
        .await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_refused(&t.s, &r, 403, "tenant_mismatch");
}

#[tokio::test]
async fn dpop_bound_token_sent_as_bearer_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let r = send(
        &t.http,
        &t.url,
        Some(format!("Bearer {token}")),
        &[],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("Bearer"));
    // Also with a valid proof alongside: the scheme still decides.
    let proof = t.key.proof("POST", &t.url, Some(&token), None).unwrap();
    let r = send(
        &t.http,
        &t.url,
        Some(format!("Bearer {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_token");
}

#[tokio::test]
async fn unbound_token_is_refused() {
    let t = setup().await;
    let token = authority()
        .token("a-plain", "signer.sign", None, None)
        .await;
    let r = send(
        &t.http,
        &t.url,
        Some(format!("Bearer {token}")),
        &[],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("sender-constrained"));
}

#[tokio::test]
async fn replayed_dpop_proof_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let proof = t.key.proof("POST", &t.url, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let first = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        std::slice::from_ref(&proof),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        &[proof],
        body,
    )
    .await;
    let rec = assert_refused(&t.s, &again, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("replay"));
}

#[tokio::test]
async fn wrong_htm_and_htu_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut c = t.proof_claims(&token);
    c["htm"] = json!("GET");
    let r = t.with_proof_claims(&token, c).await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    let mut c = t.proof_claims(&token);
    c["htu"] = json!(t.s.url("/api/v1/signer/sign/export"));
    let r = t.with_proof_claims(&token, c).await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    let mut c = t.proof_claims(&token);
    c["htu"] = json!("https://evil.example/api/v1/signer/sign/dsse");
    let r = t.with_proof_claims(&token, c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("htu"));
    // The right target in spellings a WHATWG URL parser repairs but RFC 3986 refuses.
    let right = t.s.url("/api/v1/signer/sign/dsse");
    for bent in [
        format!(" {right}"),
        format!("{right}\t"),
        right.replacen("://", ":", 1),
        right.replace('/', "\\"),
    ] {
        let mut c = t.proof_claims(&token);
        c["htu"] = json!(bent);
        let r = t.with_proof_claims(&token, c).await;
        let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
        assert!(
            rec.reason.unwrap().contains("`htu` is not a URI"),
            "{bent:?}"
        );
    }
    // The right spelling still passes with the same proof shape.
    let c = t.proof_claims(&token);
    let r = t.with_proof_claims(&token, c).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn stale_and_future_iat_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut c = t.proof_claims(&token);
    c["iat"] = json!(now() - 600);
    let r = t.with_proof_claims(&token, c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("iat"));
    let mut c = t.proof_claims(&token);
    c["iat"] = json!(now() + 600);
    let r = t.with_proof_claims(&token, c).await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
}

#[tokio::test]
async fn ath_mismatch_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut c = t.proof_claims(&token);
    c["ath"] = json!(URL_SAFE_NO_PAD.encode(stella_keys::sha256(b"another token")));
    let r = t.with_proof_claims(&token, c).await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("ath"));
}

#[tokio::test]
async fn dpop_jwk_with_a_private_key_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut jwk = t.key.jwk().clone();
    // The private scalar is irrelevant to the check: its presence alone is refused.
    jwk["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
    let proof = t
        .key
        .proof_with(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}),
            &t.proof_claims(&token),
        )
        .unwrap();
    let r = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("private"));
}

#[tokio::test]
async fn proof_by_another_key_and_bad_typ_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let other = DpopKey::generate().unwrap();
    let proof = other.proof("POST", &t.url, Some(&token), None).unwrap();
    let r = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    assert!(rec.reason.unwrap().contains("cnf.jkt"));
    let proof = t
        .key
        .proof_with(
            &json!({"typ": "JWT", "alg": "ES256", "jwk": t.key.jwk()}),
            &t.proof_claims(&token),
        )
        .unwrap();
    let r = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        &[proof],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    // Two DPoP headers.
    let p1 = t.key.proof("POST", &t.url, Some(&token), None).unwrap();
    let p2 = t.key.proof("POST", &t.url, Some(&token), None).unwrap();
    let r = send(
        &t.http,
        &t.url,
        Some(format!("DPoP {token}")),
        &[p1, p2],
        serde_json::to_vec(&sign_body("poe-a")).unwrap(),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
}

#[tokio::test]
async fn mtls_bound_token_over_another_certificate_is_refused() {
    let t = setup().await;
    let pki = &authority().pki;
    let token = authority()
        .token("a-mtls", "signer.sign", None, Some(&pki.client_a))
        .await;
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    // The right certificate: signed.
    let ok = send(
        &pki.http(Some(&pki.client_a)),
        &t.url,
        Some(format!("Bearer {token}")),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let rec = t.s.audit(ok.audit_id());
    assert!(rec.sender_binding.unwrap().starts_with("mtls x5t#S256="));
    // Another client certificate (same CA): refused.
    let r = send(
        &pki.http(Some(&pki.client_b)),
        &t.url,
        Some(format!("Bearer {token}")),
        &[],
        body.clone(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 401, "invalid_token");
    assert!(rec.reason.unwrap().contains("another client certificate"));
    // No certificate at all: refused.
    let r = send(&t.http, &t.url, Some(format!("Bearer {token}")), &[], body).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
}

#[tokio::test]
async fn oversize_body_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut body = sign_body("poe-a");
    body["predicate"]["blob"] = json!("x".repeat(300 * 1024));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    assert_refused(&t.s, &r, 413, "artifact_too_large");
}

#[tokio::test]
async fn artifact_above_the_plan_limit_is_refused() {
    let t = setup().await;
    t.s.licensing
        .set("poe-small", license("tenant-a", 100.0, 512));
    let token = t.real_token().await;
    let mut body = sign_body("poe-small");
    body["predicate"]["blob"] = json!("x".repeat(1024));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 413, "artifact_too_large");
    assert_eq!(rec.plan.as_deref(), Some("team"));
}

#[tokio::test]
async fn malformed_bodies_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let cases: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"subject":[],"predicateType":"stella.ops/sbom@v1","predicate":{},"x":1}"#.to_vec(),
        br#"{"predicateType":"stella.ops/sbom@v1","predicateType":"stella.ops/vex@v1"}"#.to_vec(),
        serde_json::to_vec(&json!({"subject": [{"name": "a", "digest": {"sha256": "zz"}}],
            "predicateType": "stella.ops/sbom@v1", "predicate": {}, "poe": {"format": "jwt", "value": "poe-a"}})).unwrap(),
        serde_json::to_vec(&json!({"subject": [], "predicateType": "stella.ops/sbom@v1", "predicate": {},
            "poe": {"format": "jwt", "value": "poe-a"}})).unwrap(),
        b"[]".to_vec(),
    ];
    for body in cases {
        let proof = t.key.proof("POST", &t.url, Some(&token), None).unwrap();
        let r = send(
            &t.http,
            &t.url,
            Some(format!("DPoP {token}")),
            &[proof],
            body,
        )
        .await;
        assert_refused(&t.s, &r, 400, "invalid_request");
    }
}

#[tokio::test]
async fn unknown_predicate_type_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut body = sign_body("poe-a");
    body["predicateType"] = json!("https://evil.example/predicate/v1");
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 400, "invalid_request");
    assert_eq!(
        rec.predicate_type.as_deref(),
        Some("https://evil.example/predicate/v1")
    );
}

#[tokio::test]
async fn licensing_down_past_the_grace_ttl_is_refused() {
    let t = setup_with(Opts {
        toml: "[licensing]\ncache_ttl_seconds = 0\ngrace_ttl_seconds = 2\n".into(),
        ..Opts::default()
    })
    .await;
    let token = t.real_token().await;
    // Known entitlement, then Licensing goes down: inside the grace TTL the last answer holds.
    let ok = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(t.s.audit(ok.audit_id()).poe_state, Some(PoeState::Valid));
    t.s.licensing.set_down(true);
    let grace = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_eq!(grace.status, 200, "{}", grace.body);
    assert_eq!(t.s.audit(grace.audit_id()).poe_state, Some(PoeState::Grace));
    // Past the grace TTL: refused, 503.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    let rec = assert_refused(&t.s, &r, 503, "upstream_unavailable");
    assert_eq!(rec.poe_state, Some(PoeState::Denied));
    // A PoE never seen while Licensing is down: refused too.
    let r = send_dpop(
        &t.http,
        &t.url,
        &token,
        &t.key,
        &sign_body("poe-never-seen"),
    )
    .await;
    assert_refused(&t.s, &r, 503, "upstream_unavailable");
}

#[tokio::test]
async fn inactive_entitlement_is_refused() {
    let t = setup().await;
    t.s.licensing
        .set("poe-revoked", json!({"active": false, "reason": "revoked"}));
    let token = t.real_token().await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-revoked")).await;
    let rec = assert_refused(&t.s, &r, 403, "entitlement_denied");
    assert_eq!(rec.poe_state, Some(PoeState::Denied));
    let mut body = sign_body("x");
    body.as_object_mut().unwrap().remove("poe");
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    assert_refused(&t.s, &r, 403, "entitlement_denied");
}

#[tokio::test]
async fn untrusted_scanner_release_is_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let mut body = sign_body("poe-a");
    body["scannerImageDigest"] = json!(format!("sha256:{}", "2".repeat(64)));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 403, "release_untrusted");
    assert_eq!(rec.scanner_verdict.as_deref(), Some("untrusted"));
}

#[tokio::test]
async fn plan_qps_is_enforced_with_retry_after() {
    let t = setup().await;
    t.s.licensing
        .set("poe-slow", license("tenant-a", 1.0, 1 << 20));
    let token = t.real_token().await;
    let first = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-slow")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-slow")).await;
    assert_refused(&t.s, &r, 429, "plan_throttled");
    assert_eq!(r.headers["retry-after"].to_str().unwrap(), "1");
}

#[tokio::test]
async fn missing_and_garbage_authorization_are_refused() {
    let t = setup().await;
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let r = send(&t.http, &t.url, None, &[], body.clone()).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
    let r = send(
        &t.http,
        &t.url,
        Some("DPoP not.a.jwt".into()),
        &[],
        body.clone(),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_token");
    let r = send(&t.http, &t.url, Some("Basic YTpi".into()), &[], body).await;
    assert_refused(&t.s, &r, 401, "invalid_token");
}

/// Issue #8 item 4: times from outside at the integer limits. `iat = i64::MIN` in a DPoP
/// proof overflowed `now - iat` and passed the freshness check; token claims at `u64::MAX`
/// overflowed `exp + skew`.
#[tokio::test]
async fn dpop_and_token_times_at_the_integer_limits_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    for iat in [
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(1e300),
    ] {
        let mut c = t.proof_claims(&token);
        c["iat"] = iat.clone();
        let r = t.with_proof_claims(&token, c).await;
        let rec = assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
        assert!(rec.reason.unwrap().contains("iat"), "iat {iat}");
    }
    for (claim, v) in [
        ("exp", json!(u64::MAX)),
        ("exp", json!(i64::MAX)),
        ("exp", json!(1e300)),
        ("nbf", json!(i64::MIN)),
        ("iat", json!(i64::MIN)),
        ("iat", json!(-5)),
    ] {
        let mut c = authority().good_claims(t.key.thumbprint());
        c[claim] = v.clone();
        let r = t.forged(c).await;
        let rec = assert_refused(&t.s, &r, 401, "invalid_token");
        assert!(rec.reason.unwrap().contains(claim), "{claim} {v}");
    }
    // The control: the same token with a fresh proof is served.
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Issue #8 item 5: a second credential header was ignored (the first `Authorization` was
/// served and audited; an mTLS-bound request ignored its `DPoP` headers). Every header that
/// carries a credential, proof or identity must appear at most once.
#[tokio::test]
async fn duplicated_credential_headers_are_refused() {
    let t = setup().await;
    let token = t.real_token().await;
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let raw = |headers: Vec<(&'static str, String)>, http: reqwest::Client| {
        let mut req = http
            .post(&t.url)
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v); // appends: duplicates go out as separate header lines
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            Reply {
                status,
                body,
                headers,
            }
        }
    };
    let proof = || t.key.proof("POST", &t.url, Some(&token), None).unwrap();
    // Two Authorization headers, the valid one first and then last.
    for order in [0, 1] {
        let mut authz = [format!("DPoP {token}"), "DPoP not-a-token".to_string()];
        if order == 1 {
            authz.reverse();
        }
        let r = raw(
            vec![
                ("authorization", authz[0].clone()),
                ("authorization", authz[1].clone()),
                ("dpop", proof()),
            ],
            t.http.clone(),
        )
        .await;
        let rec = assert_refused(&t.s, &r, 401, "invalid_token");
        assert!(rec.reason.unwrap().contains("more than once"));
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("DPoP ") && challenge.contains("algs="),
            "{challenge}"
        );
    }
    // Two identical DPoP proofs.
    let p = proof();
    let r = raw(
        vec![
            ("authorization", format!("DPoP {token}")),
            ("dpop", p.clone()),
            ("dpop", p),
        ],
        t.http.clone(),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    // Two tenant headers, ours first.
    let r = raw(
        vec![
            ("authorization", format!("DPoP {token}")),
            ("dpop", proof()),
            ("x-stella-tenant", "tenant-a".into()),
            ("x-stella-tenant", "tenant-b".into()),
        ],
        t.http.clone(),
    )
    .await;
    assert_refused(&t.s, &r, 400, "invalid_request");
    // Two Host headers (they name the DPoP `htu` target when public_url is unset).
    let host = t
        .url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let r = raw(
        vec![
            ("authorization", format!("DPoP {token}")),
            ("dpop", proof()),
            ("host", host.clone()),
            ("host", "evil.example".into()),
        ],
        t.http.clone(),
    )
    .await;
    let rec = assert_refused(&t.s, &r, 400, "invalid_request");
    assert!(rec
        .reason
        .unwrap()
        .contains("host header appears more than once"));
    // An mTLS-bound token with a stray pair of DPoP headers: refused, not ignored.
    let pki = &authority().pki;
    let mtls = authority()
        .token("a-mtls", "signer.sign", None, Some(&pki.client_a))
        .await;
    let r = raw(
        vec![
            ("authorization", format!("Bearer {mtls}")),
            ("dpop", "x".into()),
            ("dpop", "y".into()),
        ],
        pki.http(Some(&pki.client_a)),
    )
    .await;
    assert_refused(&t.s, &r, 401, "invalid_dpop_proof");
    // The control: each header once is served.
    let r = raw(
        vec![
            ("authorization", format!("DPoP {token}")),
            ("dpop", proof()),
            ("x-stella-tenant", "tenant-a".into()),
        ],
        t.http.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Issue #8 item 10: a full replay cache refuses new proofs (fail closed, `503` with
/// `Retry-After`) instead of forgetting a live `jti`, and one tenant filling its share does
/// not lock the other tenants out.
#[tokio::test]
async fn full_replay_cache_fails_closed_per_tenant() {
    let t = setup_with(Opts {
        toml: "[dpop]\nreplay_cache_entries = 3\nreplay_cache_entries_per_tenant = 2\n".into(),
        ..Opts::default()
    })
    .await;
    let token = t.real_token().await;
    for _ in 0..2 {
        let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Tenant A's share is used up: its next fresh proof is refused, not let through.
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    let rec = assert_refused(&t.s, &r, 503, "upstream_unavailable");
    assert!(rec.reason.unwrap().contains("tenant-a"));
    assert!(r.headers.contains_key("retry-after"));
    // Tenant B still has room (the third and last entry overall)...
    let kb = DpopKey::generate().unwrap();
    let tb = authority()
        .token("b-dpop", "signer.sign", Some(&kb), None)
        .await;
    let r = send_dpop(&t.http, &t.url, &tb, &kb, &sign_body("poe-b")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ...and then the whole cache is full: refused too.
    let r = send_dpop(&t.http, &t.url, &tb, &kb, &sign_body("poe-b")).await;
    let rec = assert_refused(&t.s, &r, 503, "upstream_unavailable");
    assert!(rec.reason.unwrap().contains("replay cache"));
}

/// Issue #8 item 10: a license answer that names no tenant was usable by every tenant.
#[tokio::test]
async fn license_without_a_tenant_entitles_nobody() {
    let t = setup().await;
    let mut lic = license("tenant-a", 1000.0, 1 << 20);
    lic.as_object_mut().unwrap().remove("tenant");
    t.s.licensing.set("poe-any", lic);
    let token = t.real_token().await;
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-any")).await;
    let rec = assert_refused(&t.s, &r, 403, "entitlement_denied");
    assert!(rec.reason.unwrap().contains("names no tenant"));
    // The control: the tenant's own license is served.
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Issue #8 item 9: every unauthenticated failure wrote a durable row, so anyone could fill
/// the disk. Past the burst, a window's failures from one source are counted into one
/// summary record (whose id the aggregated responses carry); none goes uncounted.
#[tokio::test]
async fn unauthenticated_flood_is_aggregated_into_a_summary_record() {
    let mut t = setup_with(Opts {
        toml: "[audit]\nunauthenticated_burst = 2\nunauthenticated_window_seconds = 1\n".into(),
        ..Opts::default()
    })
    .await;
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = send(&t.http, &t.url, None, &[], body.clone()).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
        assert!(r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("DPoP "));
        ids.push(r.audit_id().to_string());
    }
    // The first two are written in full, the other four share the summary's id.
    t.s.audit(&ids[0]);
    t.s.audit(&ids[1]);
    assert_ne!(ids[0], ids[1]);
    assert!(ids[2..].iter().all(|i| *i == ids[2]), "{ids:?}");
    assert!(!ids[..2].contains(&ids[2]));
    let m = t
        .http
        .get(t.s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("stella_signer_audit_aggregated_total 4"), "{m}");
    // An authenticated caller's failures are never aggregated.
    let token = t.real_token().await;
    for _ in 0..3 {
        let r = send_dpop(&t.http, &t.url, &token, &t.key, &sign_body("no-such-poe")).await;
        assert_refused(&t.s, &r, 403, "entitlement_denied");
    }
    // The window closes; its summary is written (and shutdown writes any still open).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    t.s.stop().await;
    let summary = t.s.audit(&ids[2]);
    assert_eq!(summary.reason_code.as_deref(), Some("invalid_token"));
    assert_eq!(summary.status, 401);
    let reason = summary.reason.unwrap();
    assert!(
        reason.contains("4 more unauthenticated failures"),
        "{reason}"
    );
    assert!(reason.contains("127.0.0.1"), "{reason}");
    let reader = stella_store::SqliteReader::open(&t.s.audit_db).unwrap();
    let n = stella_store::AuditReader::read_after(&reader, 0, 100)
        .unwrap()
        .len();
    assert_eq!(
        n,
        2 + 1 + 3,
        "two full records, one summary, three authenticated refusals"
    );
}

/// Issue #8 item 9: a caller without entitlement could put megabytes of subjects (and of
/// predicate type, quoted in the reason) into one record before the PoE and quota gates.
#[tokio::test]
async fn refused_request_cannot_inflate_its_audit_record() {
    let t = setup().await;
    let token = t.real_token().await;
    let subjects = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| json!({"name": format!("s{i}"), "digest": {"sha256": format!("{i:064x}")}}))
            .collect()
    };
    let mut body = sign_body("no-such-poe");
    body["subject"] = json!(subjects(1000));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 403, "entitlement_denied");
    assert_eq!(rec.subject_digests.len(), 17, "16 digests and a marker");
    assert!(rec.subject_digests[16].contains("984 more subjects"));
    assert!(serde_json::to_vec(&rec).unwrap().len() < 8 * 1024);
    // A long predicate type quoted in the refusal is cut with a marker.
    let mut body = sign_body("poe-a");
    body["predicateType"] = json!("x".repeat(100_000));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 400, "invalid_request");
    assert!(rec.reason.unwrap().contains("…[truncated"));
    assert!(rec.predicate_type.unwrap().len() < 512);
    // More subjects than a request may hold: refused before any is looked at.
    let mut body = sign_body("poe-a");
    body["subject"] = json!(subjects(1025));
    let r = send_dpop(&t.http, &t.url, &token, &t.key, &body).await;
    let rec = assert_refused(&t.s, &r, 400, "invalid_request");
    assert!(rec.subject_digests.is_empty());
    assert!(rec.reason.unwrap().contains("at most 1024"));
}
