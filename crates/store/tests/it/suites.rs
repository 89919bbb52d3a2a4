//! Backend-independent trait suites.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use stella_store::{
    chain, AuditLog, AuditReader, AuditRecord, Outcome, PoeState, QuotaStore, RateDecision,
    RateLimit, ReplayCache,
};

pub(crate) fn record(id: &str) -> AuditRecord {
    let mut r = AuditRecord::new(
        id.to_string(),
        "0af7651916cd43dd8448eb211c80319c".into(),
        "POST /api/v1/signer/sign/dsse".into(),
        "2026-01-02T03:04:05.678Z".into(),
    );
    r.tenant = Some("tenant-a".into());
    r.poe_state = Some(PoeState::Valid);
    r.outcome = Outcome::Denied;
    r.status = 403;
    r.reason_code = Some("entitlement_denied".into());
    r.subject_digests = vec![format!("sha256:{}", "ab".repeat(32))];
    r
}

/// Appends (one, then 500 concurrently), flush, and ordering of the returned links.
pub(crate) async fn audit_log(log: Arc<dyn AuditLog>) {
    assert!(log.is_healthy());
    let first = log.append(record("first")).await.unwrap();
    assert_eq!(first.seq, 1);
    let mut tasks = Vec::new();
    for i in 0..500 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(record(&format!("c{i}"))).await.unwrap()
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().seq));
    }
    assert_eq!(seqs.len(), 500);
    assert!(seqs.iter().all(|s| (2..=501).contains(s)));
    log.flush().await.unwrap();
    log.close().await.unwrap();
    assert!(!log.is_healthy());
    assert!(log.append(record("late")).await.is_err());
}

/// Reading back: every record intact, in order, round-tripping through JSON.
pub(crate) fn audit_reader(reader: &dyn AuditReader, expected: u64) {
    let report = chain::verify(reader).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, expected);
    assert_eq!(report.head_seq, expected);
    let first = reader.read_after(0, 1).unwrap();
    let rec: AuditRecord = serde_json::from_str(&first[0].record_json).unwrap();
    assert_eq!(rec, record("first"));
    assert_eq!(
        reader.first_seq_since("2026-01-02T00:00:00.000Z").unwrap(),
        Some(1)
    );
    assert_eq!(
        reader.first_seq_since("2027-01-01T00:00:00.000Z").unwrap(),
        None
    );
}

pub(crate) async fn quota(q: &dyn QuotaStore) {
    let lim = RateLimit {
        per_second: 5.0,
        burst: 3.0,
    };
    for _ in 0..3 {
        assert!(matches!(
            q.take_rate("lic-1", lim).await.unwrap(),
            RateDecision::Allowed { .. }
        ));
    }
    match q.take_rate("lic-1", lim).await.unwrap() {
        RateDecision::Throttled { retry_after } => {
            assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}")
        }
        other => panic!("expected throttling, got {other:?}"),
    }
    assert!(matches!(
        q.take_rate("lic-2", lim).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        q.take_rate("lic-1", lim).await.unwrap(),
        RateDecision::Allowed { .. }
    ));

    let a = q.acquire_concurrency("lic-1", 2).await.unwrap().unwrap();
    let b = q.acquire_concurrency("lic-1", 2).await.unwrap().unwrap();
    assert!(q.acquire_concurrency("lic-1", 2).await.unwrap().is_none());
    assert!(q.acquire_concurrency("lic-2", 2).await.unwrap().is_some());
    drop(a);
    // A shared store gives the slot back asynchronously: allow it a moment.
    let mut c = None;
    for _ in 0..50 {
        c = q.acquire_concurrency("lic-1", 2).await.unwrap();
        if c.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.is_some(), "a dropped lease was not given back");
    drop((b, c));
}

pub(crate) async fn replay(c: &dyn ReplayCache) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(c.check_and_insert("jkt:jti-1", now + 60).await.unwrap());
    assert!(!c.check_and_insert("jkt:jti-1", now + 60).await.unwrap());
    assert!(c.check_and_insert("jkt:jti-2", now + 60).await.unwrap());
    // An expired entry does not block reuse.
    assert!(c.check_and_insert("jkt:old", now - 1).await.unwrap());
    assert!(c.check_and_insert("jkt:old", now + 60).await.unwrap());
    // Per-tenant partitions: a replay within one is caught, the same key in another is not
    // a replay, and partition names cannot be chosen to collide with another's keys.
    assert!(c
        .check_and_insert_in("tenant-a", "jkt:jti-1", now + 60)
        .await
        .unwrap());
    assert!(!c
        .check_and_insert_in("tenant-a", "jkt:jti-1", now + 60)
        .await
        .unwrap());
    assert!(c
        .check_and_insert_in("tenant-b", "jkt:jti-1", now + 60)
        .await
        .unwrap());
    assert!(c
        .check_and_insert_in("tenant-a:jkt", "jti-1", now + 60)
        .await
        .unwrap());
}

/// A cache that holds `capacity` live keys overall and `per_partition` per partition fails
/// closed past either bound, still reports replays, and gives other partitions their room.
pub(crate) async fn replay_bounds(c: &dyn ReplayCache, capacity: usize, per_partition: usize) {
    assert!(per_partition < capacity);
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    for i in 0..per_partition {
        assert!(c
            .check_and_insert_in("noisy", &format!("k{i}"), far)
            .await
            .unwrap());
    }
    assert!(matches!(
        c.check_and_insert_in("noisy", "one-more", far).await,
        Err(stella_store::StoreError::Full(_))
    ));
    assert!(
        !c.check_and_insert_in("noisy", "k0", far).await.unwrap(),
        "still a replay"
    );
    // The rest of the capacity goes to other partitions, each within its share.
    for i in per_partition..capacity {
        let p = format!("quiet-{}", i / per_partition);
        assert!(c
            .check_and_insert_in(&p, &format!("k{i}"), far)
            .await
            .unwrap());
    }
    assert!(matches!(
        c.check_and_insert_in("third", "k", far).await,
        Err(stella_store::StoreError::Full(_))
    ));
}
