//! Tenants and plans signing with HSM (SoftHSM2 over PKCS#11) and KMS (the patched moto)
//! keys: the mode and key ids in every audit record, key usage metrics by key and source, and
//! 503 while the token or the KMS is away, recovering when the token is back.
//!
//! SoftHSM2 reads SOFTHSM2_CONF once per process: this is the only test of this binary that
//! loads it.

#[path = "../../../keys/tests/support/moto.rs"]
mod moto;
#[path = "../../../keys/tests/support/softhsm.rs"]
mod softhsm;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use stella_dsse::Envelope;
use stella_keys::awskms::sigv4::Credentials;
use stella_keys::awskms::{KmsClient, KmsConfig, KmsKey, KmsUri};
use stella_keys::pkcs11::{Pkcs11Key, Pkcs11Uri};
use stella_keys::{Algorithm, FileKey, Keyring, Policy, Signer, TrustedKey};
use stella_signer::client::DpopKey;
use stella_signer::TenantKeys;
use stella_store::Outcome;

use crate::support::*;
use softhsm::{SoftHsm, MODULE};

const SIGN: &str = "/api/v1/signer/sign/dsse";

fn verifies(public: &stella_keys::PublicKey, env: &serde_json::Value) -> bool {
    let env = Envelope::from_json(env.to_string().as_bytes()).unwrap();
    let ring = Keyring::new(vec![TrustedKey::unrestricted(public.clone())]).unwrap();
    stella_keys::verify_envelope(&env, &ring, &Policy::new(1)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_plans_sign_with_hsm_and_kms_keys() {
    // A SoftHSM2 token with a P-256 key.
    let hsm = SoftHsm::new();
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    hsm.init_token("svc", "1111", "22222222");
    let uri = Pkcs11Uri::parse(&format!(
        "pkcs11:token=svc;object=tenant-a-team?module-path={MODULE}&pin-value=1111"
    ))
    .unwrap();
    stella_keys::pkcs11::generate(&uri, Algorithm::EcdsaP256Sha256).unwrap();
    let hsm_key = Arc::new(Pkcs11Key::open(&uri).unwrap());

    // A KMS key in moto.
    let mut kms = moto::Moto::start(0);
    let client = || {
        KmsClient::new(KmsConfig {
            endpoint: kms.endpoint(),
            region: "us-east-1".into(),
            credentials: Credentials {
                access_key_id: "AKIDSVC".into(),
                secret_access_key: zeroize::Zeroizing::new("svc-secret".into()),
                session_token: None,
            },
        })
        .unwrap()
    };
    let c = client();
    let id = c
        .call(
            "CreateKey",
            &json!({"KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256"}),
            "t",
        )
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = format!("awskms:///{id}");
    let kms_key = Arc::new(KmsKey::with_client(client(), &KmsUri::parse(&r).unwrap(), &r).unwrap());

    // tenant-a: file key for the tenant, its own HSM key for plan "team"; tenant-b: KMS.
    let file_key = Arc::new(FileKey::generate(Algorithm::Ed25519).unwrap());
    let mut tenants: HashMap<String, Vec<Arc<dyn Signer>>> = HashMap::new();
    tenants.insert("tenant-a".into(), vec![file_key.clone()]);
    tenants.insert("tenant-b".into(), vec![kms_key.clone()]);
    let keys =
        TenantKeys::new(Vec::new(), tenants).with_plan("tenant-a", "team", vec![hsm_key.clone()]);
    let s = TestSigner::start_with(Opts {
        signers: Some(keys),
        ..Opts::default()
    })
    .await;
    s.licensing.set(
        "poe-a-free",
        json!({"active": true, "licenseId": "lic-a-free", "plan": "free", "tenant": "tenant-a",
               "limits": {"qps": 1000.0, "burst": 1000.0, "maxConcurrent": 8, "maxArtifactBytes": 1048576},
               "expiresAt": "2099-01-01T00:00:00Z"}),
    );
    let http = authority().pki.http(None);
    let dpop = DpopKey::generate().unwrap();
    let url = s.url(SIGN);
    let token_a = authority()
        .token("a-dpop", "signer.sign", Some(&dpop), None)
        .await;
    let token_b = authority()
        .token("b-dpop", "signer.sign", Some(&dpop), None)
        .await;

    // tenant-a, plan team: the HSM key.
    let r = send_dpop(&http, &url, &token_a, &dpop, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["bundle"]["mode"], "hsm");
    assert!(verifies(hsm_key.public_key(), &r.body["bundle"]["dsse"]));
    let rec = s.audit(r.audit_id());
    assert_eq!(rec.signing_mode.as_deref(), Some("hsm"));
    assert_eq!(rec.key_ids, vec![hsm_key.key_id().to_string()]);
    // ... and asking for another mode is refused.
    let mut body = sign_body("poe-a");
    body["options"] = json!({"signingMode": "kms"});
    let r = send_dpop(&http, &url, &token_a, &dpop, &body).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // tenant-a, plan free: the tenant's file key, not the team plan's HSM key.
    let r = send_dpop(&http, &url, &token_a, &dpop, &sign_body("poe-a-free")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["bundle"]["mode"], "file");
    assert!(verifies(file_key.public_key(), &r.body["bundle"]["dsse"]));
    assert!(!verifies(hsm_key.public_key(), &r.body["bundle"]["dsse"]));

    // tenant-b: KMS.
    let r = send_dpop(&http, &url, &token_b, &dpop, &sign_body("poe-b")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["bundle"]["mode"], "kms");
    assert!(verifies(kms_key.public_key(), &r.body["bundle"]["dsse"]));
    assert_eq!(s.audit(r.audit_id()).signing_mode.as_deref(), Some("kms"));

    // Key usage by key id and source.
    let m = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (k, mode) in [
        (hsm_key.key_id().to_string(), "hsm"),
        (kms_key.key_id().to_string(), "kms"),
        (file_key.key_id().to_string(), "file"),
    ] {
        let line = format!("stella_signer_key_usage_total{{key_id=\"{k}\",mode=\"{mode}\"}} 1");
        assert!(m.contains(&line), "{line} missing in:\n{m}");
    }

    // The token goes away: 503, audited with the key and its source; back: 200 again.
    let (tokens, aside) = (hsm.tokens(), hsm.path("aside"));
    std::fs::rename(&tokens, &aside).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let r = send_dpop(&http, &url, &token_a, &dpop, &sign_body("poe-a")).await;
    let rec = assert_refused(&s, &r, 503, "upstream_unavailable");
    assert_eq!(rec.signing_mode.as_deref(), Some("hsm"));
    assert_eq!(rec.key_ids, vec![hsm_key.key_id().to_string()]);
    assert_ne!(rec.outcome, Outcome::Signed);
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&aside, &tokens).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let r = send_dpop(&http, &url, &token_a, &dpop, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "token back: {}", r.body);
    assert!(verifies(hsm_key.public_key(), &r.body["bundle"]["dsse"]));

    // The KMS goes away: 503 for tenant-b, tenant-a unaffected.
    kms.kill();
    let r = send_dpop(&http, &url, &token_b, &dpop, &sign_body("poe-b")).await;
    let rec = assert_refused(&s, &r, 503, "upstream_unavailable");
    assert_eq!(rec.signing_mode.as_deref(), Some("kms"));
    let r = send_dpop(&http, &url, &token_a, &dpop, &sign_body("poe-a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
