//! The signing flow with the in-process dev CA and TSA: bundles verify with our verifier
//! under an identity policy, and every check of an issued certificate refuses what it must.

use std::sync::Arc;

use serde_json::json;
use stella_keyless::dev::DevServices;
use stella_keyless::token::unsigned_jwt;
use stella_keyless::{KeylessSigner, Reuse, StaticToken};
use stella_sigstore::{Artifact, Bundle, Identity, Matcher, Options, Policy, TrustedRoot};
use time::OffsetDateTime;

const ISS: &str = "https://authority.stella.test";
const SUB: &str = "https://signer.stella.test/svc";

fn token(exp_in: i64) -> StaticToken {
    let exp = OffsetDateTime::now_utc().unix_timestamp() + exp_in;
    StaticToken::parse(&unsigned_jwt(
        &json!({"iss": ISS, "sub": SUB, "aud": "sigstore", "exp": exp}),
    ))
    .unwrap()
}

fn signer(dev: DevServices, reuse: Reuse) -> (KeylessSigner, TrustedRoot) {
    let root = dev.trusted_root().unwrap();
    let s = dev.signer(Arc::new(token(600))).unwrap().with_reuse(reuse);
    (s, root)
}

fn identity() -> Policy {
    Policy::Identity(Identity::new(Matcher::exact(SUB), Matcher::exact(ISS)))
}

#[tokio::test]
async fn dev_blob_and_attestation_bundles_verify_with_identity_policy() {
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let (s, root) = signer(dev, Reuse::default());
    let out = s.sign_blob(b"hello keyless").await.unwrap();
    assert!(out.new_certificate);
    assert_eq!(out.identity.san, SUB);
    assert_eq!(out.identity.oidc_issuer, ISS);
    assert_eq!(out.certificate_chain.len(), 3, "leaf, intermediate, root");
    let b = Bundle::from_json(&out.bundle_json()).unwrap();
    let opts = Options {
        tlog_threshold: 0,
        time_threshold: 1,
    };
    stella_sigstore::verify(
        &b,
        Artifact::Bytes(b"hello keyless"),
        &identity(),
        &root,
        &opts,
    )
    .unwrap();
    // Another artifact, another identity, another issuer: refused.
    assert!(
        stella_sigstore::verify(&b, Artifact::Bytes(b"other"), &identity(), &root, &opts).is_err()
    );
    let wrong = Policy::Identity(Identity::new(Matcher::exact("x"), Matcher::exact(ISS)));
    let f = stella_sigstore::verify(&b, Artifact::Bytes(b"hello keyless"), &wrong, &root, &opts)
        .unwrap_err();
    assert_eq!(f.failed, stella_sigstore::Check::Identity);

    // The second signing reuses the certificate.
    let st = stella_dsse::Statement::new(
        vec![
            stella_dsse::Subject::sha256("a", stella_keys::hex(&stella_keys::sha256(b"a")))
                .unwrap(),
        ],
        "https://slsa.dev/provenance/v1",
        json!({}),
    )
    .unwrap();
    let out2 = s.attest(&st).await.unwrap();
    assert!(!out2.new_certificate);
    assert_eq!(
        out2.identity.certificate_serial,
        out.identity.certificate_serial
    );
    let b = Bundle::from_json(&out2.bundle_json()).unwrap();
    stella_sigstore::verify(&b, Artifact::Bytes(b"a"), &identity(), &root, &opts).unwrap();
}

#[tokio::test]
async fn per_signature_reuse_gets_a_new_certificate_each_time() {
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let (s, _) = signer(dev, Reuse::PerSignature);
    let a = s.sign_blob(b"x").await.unwrap();
    let b = s.sign_blob(b"x").await.unwrap();
    assert!(a.new_certificate && b.new_certificate);
    assert_ne!(a.identity.certificate_serial, b.identity.certificate_serial);
    assert_ne!(a.identity.key_id, b.identity.key_id);
}

mod checks {
    use super::*;
    use stella_keyless::dev::TrustedRootBuilder;
    use stella_keyless::{check_chain, CertificateRequest};
    use stella_keyless::{
        CertificateIssuer, EphemeralSigner, IdentityToken, Service, UpstreamError,
    };
    use stella_keys::Signer;
    use time::Duration;

    fn tok(sub: &str, iss: &str, exp_in: i64) -> IdentityToken {
        IdentityToken::parse(&unsigned_jwt(&json!({
            "iss": iss, "sub": sub,
            "exp": OffsetDateTime::now_utc().unix_timestamp() + exp_in
        })))
        .unwrap()
    }

    fn untrusted(r: Result<stella_keyless::IssuedCertificate, UpstreamError>) -> String {
        match r {
            Err(UpstreamError::Untrusted {
                service: Service::Fulcio,
                reason,
            }) => reason,
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }

    #[test]
    fn every_check_of_an_issued_certificate_refuses_what_it_must() {
        let now = OffsetDateTime::now_utc();
        let dev = DevServices::generate(now).unwrap();
        let root = dev.trusted_root().unwrap();
        let key = EphemeralSigner::generate().unwrap();
        let spki = key.public_key().spki_der().to_vec();
        let token = tok(SUB, ISS, 600);
        let pop = key.sign(SUB.as_bytes()).unwrap();
        let req = CertificateRequest {
            public_key: key.public_key(),
            token: &token,
            proof_of_possession: &pop,
        };
        let inter = dev.ca.intermediate().der().to_vec();
        let check = |leaf: &stella_x509::Cert, root: &TrustedRoot| {
            check_chain(
                Service::Fulcio,
                &[leaf.der().to_vec(), inter.clone()],
                &req,
                root,
                now,
            )
        };
        let nb = now - Duration::seconds(5);
        // Good.
        let good = dev
            .ca
            .issue_leaf(&spki, SUB, ISS, nb, nb + Duration::minutes(10))
            .unwrap();
        let ok = check(&good, &root).unwrap();
        assert_eq!(ok.san(), SUB);
        assert_eq!(ok.oidc_issuer(), ISS);
        assert_eq!(ok.chain().len(), 3);
        // Expired.
        let old = now - Duration::hours(1);
        let expired = dev
            .ca
            .issue_leaf(&spki, SUB, ISS, old, old + Duration::minutes(10))
            .unwrap();
        assert!(untrusted(check(&expired, &root)).contains("valid"));
        // Another key.
        let other = EphemeralSigner::generate().unwrap();
        let c = dev
            .ca
            .issue_leaf(
                other.public_key().spki_der(),
                SUB,
                ISS,
                nb,
                nb + Duration::minutes(10),
            )
            .unwrap();
        assert!(untrusted(check(&c, &root)).contains("another public key"));
        // Another SAN, another issuer.
        let c = dev
            .ca
            .issue_leaf(
                &spki,
                "https://evil.test",
                ISS,
                nb,
                nb + Duration::minutes(10),
            )
            .unwrap();
        assert!(untrusted(check(&c, &root)).contains("SAN"));
        let c = dev
            .ca
            .issue_leaf(
                &spki,
                SUB,
                "https://evil.test",
                nb,
                nb + Duration::minutes(10),
            )
            .unwrap();
        assert!(untrusted(check(&c, &root)).contains("OIDC issuer"));
        // Another CA: not in the trusted root.
        let dev2 = DevServices::generate(now).unwrap();
        let c = dev2
            .ca
            .issue_leaf(&spki, SUB, ISS, nb, nb + Duration::minutes(10))
            .unwrap();
        assert!(untrusted(check(&c, &root)).contains("did not issue"));
        // Our CA, but the root lists another CT log: the SCT is by an unknown log.
        let mut b = TrustedRootBuilder::new();
        dev.ca.add_to(&mut b);
        let mut v = b.to_value();
        let mut b2 = TrustedRootBuilder::new();
        dev2.ca.add_to(&mut b2);
        v["ctlogs"] = b2.to_value()["ctlogs"].clone();
        let foreign_ct = TrustedRoot::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(untrusted(check(&good, &foreign_ct)).contains("SCT"));
    }

    #[tokio::test]
    async fn the_dev_ca_checks_expiry_and_proof_of_possession() {
        let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
        let key = EphemeralSigner::generate().unwrap();
        let ask = |token: IdentityToken, pop: Vec<u8>| {
            let ca = dev.ca.clone();
            let pk = key.public_key().clone();
            async move {
                ca.issue(CertificateRequest {
                    public_key: &pk,
                    token: &token,
                    proof_of_possession: &pop,
                })
                .await
            }
        };
        let good_pop = key.sign(SUB.as_bytes()).unwrap();
        assert!(ask(tok(SUB, ISS, 600), good_pop.clone()).await.is_ok());
        let e = ask(tok(SUB, ISS, -10), good_pop.clone()).await.unwrap_err();
        assert!(
            matches!(e, UpstreamError::Rejected { status: 401, .. }),
            "{e}"
        );
        let e = ask(tok(SUB, ISS, 600), key.sign(b"other").unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(e, UpstreamError::Rejected { status: 400, .. }),
            "{e}"
        );
    }
}

mod reuse {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use stella_keyless::dev::DevCa;
    use stella_keyless::{
        BoxFuture, CertificateIssuer, CertificateRequest, IssuedCertificate, UpstreamError,
    };

    struct Counting {
        ca: Arc<DevCa>,
        n: AtomicUsize,
    }

    impl CertificateIssuer for Counting {
        fn issue<'a>(
            &'a self,
            req: CertificateRequest<'a>,
        ) -> BoxFuture<'a, Result<IssuedCertificate, UpstreamError>> {
            self.n.fetch_add(1, Ordering::SeqCst);
            self.ca.issue(req)
        }
        fn describe(&self) -> String {
            "counting dev CA".into()
        }
    }

    fn counted(reuse: Reuse) -> (Arc<KeylessSigner>, Arc<Counting>) {
        let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
        let counting = Arc::new(Counting {
            ca: dev.ca.clone(),
            n: AtomicUsize::new(0),
        });
        let s = KeylessSigner::new(
            Arc::new(token(600)),
            counting.clone(),
            dev.tsa.clone(),
            Arc::new(dev.trusted_root().unwrap()),
        )
        .with_reuse(reuse);
        (Arc::new(s), counting)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_signings_share_one_certificate_fetch() {
        let (s, counting) = counted(Reuse::default());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.sign_blob(format!("blob {i}").as_bytes()).await })
            })
            .collect();
        let mut serials = std::collections::BTreeSet::new();
        for t in tasks {
            serials.insert(t.await.unwrap().unwrap().identity.certificate_serial);
        }
        assert_eq!(counting.n.load(Ordering::SeqCst), 1);
        assert_eq!(serials.len(), 1);
    }

    #[tokio::test]
    async fn a_margin_as_long_as_the_validity_never_reuses() {
        // Never past notAfter minus the margin: with a 600 s margin on a 600 s certificate,
        // no certificate is ever young enough to sign twice.
        let (s, counting) = counted(Reuse::WithinValidity {
            margin: std::time::Duration::from_secs(600),
        });
        for _ in 0..3 {
            assert!(s.sign_blob(b"x").await.unwrap().new_certificate);
        }
        assert_eq!(counting.n.load(Ordering::SeqCst), 3);
        // A 60 s margin reuses; rotate() forces a new one.
        let (s, counting) = counted(Reuse::WithinValidity {
            margin: std::time::Duration::from_secs(60),
        });
        assert!(s.sign_blob(b"x").await.unwrap().new_certificate);
        assert!(!s.sign_blob(b"x").await.unwrap().new_certificate);
        s.rotate().await;
        assert!(s.sign_blob(b"x").await.unwrap().new_certificate);
        assert_eq!(counting.n.load(Ordering::SeqCst), 2);
    }
}

mod self_check {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use stella_keyless::dev::DevTsa;
    use stella_keyless::{BoxFuture, KeylessError, Timestamper, UpstreamError};

    /// The trusted TSA for the first signature, a foreign one afterwards.
    struct Switching {
        good: Arc<DevTsa>,
        rogue: Arc<DevTsa>,
        n: AtomicUsize,
    }

    impl Timestamper for Switching {
        fn timestamp<'a>(&'a self, sig: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, UpstreamError>> {
            if self.n.fetch_add(1, Ordering::SeqCst) == 0 {
                self.good.timestamp(sig)
            } else {
                self.rogue.timestamp(sig)
            }
        }
        fn describe(&self) -> String {
            "switching".into()
        }
    }

    #[tokio::test]
    async fn a_reused_certificate_still_gets_every_timestamp_verified() {
        let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
        let other = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
        let s = KeylessSigner::new(
            Arc::new(token(600)),
            dev.ca.clone(),
            Arc::new(Switching {
                good: dev.tsa.clone(),
                rogue: other.tsa.clone(),
                n: AtomicUsize::new(0),
            }),
            Arc::new(dev.trusted_root().unwrap()),
        );
        assert!(s.sign_blob(b"one").await.unwrap().new_certificate);
        let e = s.sign_blob(b"two").await.unwrap_err();
        assert!(
            matches!(&e, KeylessError::SelfCheck(f) if f.failed == stella_sigstore::Check::Timestamps),
            "{e}"
        );
    }
}

/// The service holds a `KeylessSigner` in its shared state and awaits it in axum handlers:
/// the signer must be `Send + Sync` and its futures `Send`.
#[test]
fn signer_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KeylessSigner>();
    let dev = DevServices::generate(OffsetDateTime::now_utc()).unwrap();
    let s = dev.signer(Arc::new(token(600))).unwrap();
    let st = stella_dsse::Statement::new(
        vec![stella_dsse::Subject::sha256("a", "ab".repeat(32)).unwrap()],
        "https://slsa.dev/provenance/v1",
        json!({}),
    )
    .unwrap();
    send(&s.sign_blob(b"x"));
    send(&s.attest(&st));
    send(&s.sign_dsse("text/plain", b"x".to_vec()));
}
