//! Three replicas (in process, each with its own connections) on shared state: the PostgreSQL
//! audit log and the Redis quota store and replay cache. Quotas hold across replicas, a DPoP
//! proof used at one replica is a replay at the others, and the audit chain stays one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stella_signer::client::DpopKey;
use stella_store::{
    chain, AuditLog, PgAudit, PgOptions, PgReader, RedisOptions, RedisQuotaStore, RedisReplayCache,
};

use crate::support::*;

const PUBLIC: &str = "https://signer.example.test";
const SIGN: &str = "/api/v1/signer/sign/dsse";

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database and Redis key prefix, removed on drop.
struct Shared {
    admin: String,
    db: String,
    pg_url: String,
    redis_url: String,
    prefix: String,
}

impl Shared {
    fn new() -> Shared {
        let admin = std::env::var("STELLA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let tag = stella_signer::trace::random_hex(8);
        let db = format!("stella_scaleout_{tag}");
        psql(&admin, &format!("CREATE DATABASE {db}"));
        let pg_url = format!("{}/{db}", &admin[..admin.rfind('/').unwrap()]);
        Shared {
            admin,
            db,
            pg_url,
            redis_url: std::env::var("STELLA_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            prefix: format!("stella-test:{tag}:"),
        }
    }

    fn redis(&self) -> RedisOptions {
        let mut o = RedisOptions::new(&self.redis_url);
        o.prefix = self.prefix.clone();
        o
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
        );
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli -u '{}' --scan --pattern '{}*' | xargs -r redis-cli -u '{}' DEL >/dev/null",
                self.redis_url, self.prefix, self.redis_url
            ))
            .status();
    }
}

async fn replica(shared: &Shared) -> TestSigner {
    let audit: Arc<dyn AuditLog> = Arc::new(
        PgAudit::connect(PgOptions::new(&shared.pg_url))
            .await
            .unwrap(),
    );
    TestSigner::start_with(Opts {
        toml: format!("[server]\npublic_url = \"{PUBLIC}\"\n"),
        audit: Some(audit),
        quotas: Some(Arc::new(
            RedisQuotaStore::connect(shared.redis()).await.unwrap(),
        )),
        replay: Some(Arc::new(
            RedisReplayCache::connect(shared.redis()).await.unwrap(),
        )),
        ..Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_quotas_replays_and_one_audit_chain() {
    let shared = Shared::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&shared).await);
    }
    // A plan with a burst of 4 and (practically) no refill, known to every replica.
    let plan = json!({"active": true, "licenseId": "lic-scaleout", "plan": "team",
        "tenant": "tenant-a",
        "limits": {"qps": 0.001, "burst": 4, "maxConcurrent": 8, "maxArtifactBytes": 1 << 20},
        "expiresAt": "2099-01-01T00:00:00Z"});
    for r in &replicas {
        r.licensing.set("poe-scaleout", plan.clone());
    }
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let public_sign = format!("{PUBLIC}{SIGN}");

    // Quotas: 12 requests round-robin; memory quotas would admit 4 per replica (12).
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = &replicas[i % 3];
        let proof = key.proof("POST", &public_sign, Some(&token), None).unwrap();
        let reply = send(
            &http,
            &r.url(SIGN),
            Some(format!("DPoP {token}")),
            &[proof],
            serde_json::to_vec(&sign_body("poe-scaleout")).unwrap(),
        )
        .await;
        statuses.push(reply.status);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 4, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{statuses:?}"
    );

    // Replay: one proof, accepted by replica 0, is a replay at replicas 1 and 2 (and 0).
    let proof = key.proof("POST", &public_sign, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let first = send(
        &http,
        &replicas[0].url(SIGN),
        Some(format!("DPoP {token}")),
        std::slice::from_ref(&proof),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    for r in [&replicas[1], &replicas[2], &replicas[0]] {
        let again = send(
            &http,
            &r.url(SIGN),
            Some(format!("DPoP {token}")),
            std::slice::from_ref(&proof),
            body.clone(),
        )
        .await;
        assert_eq!(again.status, 401, "{}", again.body);
        assert!(again.body.to_string().contains("replay"), "{}", again.body);
    }

    for r in &mut replicas {
        r.stop().await;
    }
    // One chain holds every request of every replica.
    let url = shared.pg_url.clone();
    let report = tokio::task::spawn_blocking(move || {
        chain::verify(&PgReader::connect(&url, Duration::from_secs(5)).unwrap()).unwrap()
    })
    .await
    .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 12 + 4);
}
