//! Scale-out through the binary (issue #13 items 4–5): three `stella signer serve` processes
//! on one PostgreSQL audit chain and one Redis, behind a real HAProxy (HTTP mode, round robin,
//! `/readyz` health checks), with the test Authority (oidc-provider) and a Licensing stub
//! (the signer test harness, `crates/signer/tests/it/support.rs`).
//!
//! - `processes_share_quotas_replays_and_one_chain`: quotas hold across the processes, a DPoP
//!   proof accepted by one is a replay at the others, `stella audit verify --url` is intact.
//! - Faults under load, each its own test: an open-loop load driver offers ~2,000 req/s
//!   (bounded: a fixed duration and a cap on requests in flight) through the balancer while a
//!   replica is killed (-9), PostgreSQL or Redis is restarted, or one of them is paused
//!   (SIGSTOP) past the timeouts. Restarts and pauses use private servers (initdb/pg_ctl and
//!   redis-server on free loopback ports, in temp dirs): the machine's shared servers are
//!   never touched. After each: the chain verifies (`stella audit verify --url`) and every
//!   audit id the driver was answered 200 with is in the store (0 acknowledged without a
//!   record).

#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../../signer/tests/it/support.rs"]
#[allow(dead_code)]
mod support;

mod harness;

use std::time::Duration;

use harness::*;
use serde_json::json;
use stella_signer::client::DpopKey;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_quotas_replays_and_one_chain() {
    let pg = Db::on_shared_server();
    let redis = RedisTarget::shared();
    let cluster = Cluster::start(&pg, &redis, 3, "").await;
    let plan = json!({"active": true, "licenseId": "lic-proc", "plan": "team",
        "tenant": "tenant-a",
        "limits": {"qps": 0.001, "burst": 6, "maxConcurrent": 8, "maxArtifactBytes": 1 << 20},
        "expiresAt": "2099-01-01T00:00:00Z"});
    cluster.licensing.set("poe-proc", plan);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let http = plain_http();
    let sign_url = cluster.public_sign_url();

    // Quotas: 18 requests through the balancer (6 per process) against a burst of 6.
    let mut statuses = Vec::new();
    for _ in 0..18 {
        let proof = key.proof("POST", &sign_url, Some(&token), None).unwrap();
        let r = send(
            &http,
            &sign_url,
            Some(format!("DPoP {token}")),
            &[proof],
            serde_json::to_vec(&sign_body("poe-proc")).unwrap(),
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        12,
        "{statuses:?}"
    );

    // Replay: one proof, sent to each process directly: the first accepts, the others refuse.
    let proof = key.proof("POST", &sign_url, Some(&token), None).unwrap();
    let body = serde_json::to_vec(&sign_body("poe-a")).unwrap();
    let mut replies = Vec::new();
    for r in &cluster.replicas {
        replies.push(
            send(
                &http,
                &r.sign_url(),
                Some(format!("DPoP {token}")),
                std::slice::from_ref(&proof),
                body.clone(),
            )
            .await,
        );
    }
    assert_eq!(replies[0].status, 200, "{}", replies[0].body);
    for r in &replies[1..] {
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid_dpop_proof"),
            "{}",
            r.body
        );
        assert!(r.body.to_string().contains("replay"), "{}", r.body);
    }
    let acked = vec![replies[0].audit_id().to_string()];
    drop(cluster);
    let records = pg.reconcile(&acked);
    assert_eq!(records, 18 + 3);
}

/// kill -9 of one replica at ~2,000 req/s offered: the balancer routes around it, in-flight
/// requests on it fail (never acknowledged), everything acknowledged is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_replica_under_load() {
    let _one_at_a_time = LOAD.lock().await;
    let pg = Db::on_shared_server();
    let redis = RedisTarget::shared();
    let mut cluster = Cluster::start(&pg, &redis, 3, "").await;
    let report = load_with_fault(&cluster, Duration::from_secs(6), |c| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.replicas[1].kill9();
        })
    })
    .await;
    let mut acked = report.acked.clone();
    match cluster.recovered(Duration::from_secs(30)).await {
        Some(id) => acked.push(id),
        None => panic!("no recovery: {:?}\n{}", report.statuses, cluster.logs()),
    }
    cluster.stop();
    pg.reconcile(&acked);
}

/// PostgreSQL (private instance) restarted under load: requests during the outage are refused
/// 503 (nothing signed), service resumes without restarting the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_postgres_under_load() {
    let _one_at_a_time = LOAD.lock().await;
    let server = PrivatePg::start();
    let pg = Db::on(&server.admin_url());
    let redis = RedisTarget::shared();
    let mut cluster = Cluster::start(&pg, &redis, 3, "timeout_ms = 1000").await;
    let report = load_with_fault(&cluster, Duration::from_secs(8), |_| {
        let server = &server;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::block_in_place(|| server.restart());
        })
    })
    .await;
    let mut acked = report.acked.clone();
    match cluster.recovered(Duration::from_secs(30)).await {
        Some(id) => acked.push(id),
        None => panic!("no recovery: {:?}\n{}", report.statuses, cluster.logs()),
    }
    cluster.stop();
    pg.reconcile(&acked);
}

/// Redis (private instance) restarted under load: quota and replay checks fail closed (503)
/// while it is away; service resumes on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis_under_load() {
    let _one_at_a_time = LOAD.lock().await;
    let pg = Db::on_shared_server();
    let mut server = PrivateRedis::start();
    let redis = server.target();
    let mut cluster = Cluster::start(&pg, &redis, 3, "").await;
    let report = load_with_fault(&cluster, Duration::from_secs(7), |_| {
        let server = &mut server;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.stop();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.restart();
        })
    })
    .await;
    let mut acked = report.acked.clone();
    match cluster.recovered(Duration::from_secs(30)).await {
        Some(id) => acked.push(id),
        None => panic!("no recovery: {:?}\n{}", report.statuses, cluster.logs()),
    }
    assert!(
        report.status(503) > 0,
        "the outage was not seen: {report:?}"
    );
    cluster.stop();
    pg.reconcile(&acked);
}

/// PostgreSQL paused (SIGSTOP on every process of the private instance) for longer than the
/// audit timeout, then resumed: no signature without its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_postgres_past_the_timeout_under_load() {
    let _one_at_a_time = LOAD.lock().await;
    let server = PrivatePg::start();
    let pg = Db::on(&server.admin_url());
    let redis = RedisTarget::shared();
    let mut cluster = Cluster::start(&pg, &redis, 3, "timeout_ms = 1000").await;
    let report = load_with_fault(&cluster, Duration::from_secs(8), |_| {
        let server = &server;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.signal("STOP");
            tokio::time::sleep(Duration::from_millis(2500)).await;
            server.signal("CONT");
        })
    })
    .await;
    let mut acked = report.acked.clone();
    match cluster.recovered(Duration::from_secs(30)).await {
        Some(id) => acked.push(id),
        None => panic!("no recovery: {:?}\n{}", report.statuses, cluster.logs()),
    }
    assert!(
        report.status(503) > 0,
        "the pause was not seen: {:?}",
        report.statuses
    );
    cluster.stop();
    pg.reconcile(&acked);
}

/// Redis paused (SIGSTOP) past the Redis timeout, then resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_redis_past_the_timeout_under_load() {
    let _one_at_a_time = LOAD.lock().await;
    let pg = Db::on_shared_server();
    let server = PrivateRedis::start();
    let redis = server.target();
    let mut cluster = Cluster::start(&pg, &redis, 3, "").await;
    let report = load_with_fault(&cluster, Duration::from_secs(7), |_| {
        let server = &server;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.signal("STOP");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.signal("CONT");
        })
    })
    .await;
    let mut acked = report.acked.clone();
    match cluster.recovered(Duration::from_secs(30)).await {
        Some(id) => acked.push(id),
        None => panic!("no recovery: {:?}\n{}", report.statuses, cluster.logs()),
    }
    assert!(
        report.status(503) > 0,
        "the pause was not seen: {:?}",
        report.statuses
    );
    cluster.stop();
    pg.reconcile(&acked);
}
