//! Backend-independent trait suites.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use stella_store::{
    chain, AuditLog, AuditReader, AuditRecord, Outcome, PoeState, QuotaStore, RateDecision,
    RateLimit, ReplayCache, ReplayKey,
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
        .check_and_insert_in(ReplayKey::new("tenant-a", "jkt:jti-1"), now + 60)
        .await
        .unwrap());
    assert!(!c
        .check_and_insert_in(ReplayKey::new("tenant-a", "jkt:jti-1"), now + 60)
        .await
        .unwrap());
    assert!(c
        .check_and_insert_in(ReplayKey::new("tenant-b", "jkt:jti-1"), now + 60)
        .await
        .unwrap());
    assert!(c
        .check_and_insert_in(ReplayKey::new("tenant-a:jkt", "jti-1"), now + 60)
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
            .check_and_insert_in(ReplayKey::new("noisy", &format!("k{i}")), far)
            .await
            .unwrap());
    }
    assert!(matches!(
        c.check_and_insert_in(ReplayKey::new("noisy", "one-more"), far)
            .await,
        Err(stella_store::StoreError::Full(_))
    ));
    assert!(
        !c.check_and_insert_in(ReplayKey::new("noisy", "k0"), far)
            .await
            .unwrap(),
        "still a replay"
    );
    // The rest of the capacity goes to other partitions, each within its share.
    for i in per_partition..capacity {
        let p = format!("quiet-{}", i / per_partition);
        assert!(c
            .check_and_insert_in(ReplayKey::new(&p, &format!("k{i}")), far)
            .await
            .unwrap());
    }
    assert!(matches!(
        c.check_and_insert_in(ReplayKey::new("third", "k"), far)
            .await,
        Err(stella_store::StoreError::Full(_))
    ));
}

fn digest(n: usize) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// Thirty records of two tenants for [`audit_query`]: record `i` (seq `i + 1`) is tenant-a
/// when `i` is even, `signed` when `i % 3 == 0` (else `denied`), has subject `digest(i % 5)`
/// (record 7 also `digest(9)`), and its time is second `i` of 03:04.
pub(crate) async fn fill_for_query(log: &dyn AuditLog) {
    for i in 0..30usize {
        let mut r = record(&format!("q{i}"));
        r.time = format!("2026-01-02T03:04:{i:02}.000Z");
        r.tenant = Some(if i % 2 == 0 { "tenant-a" } else { "tenant-b" }.into());
        if i % 3 == 0 {
            r.outcome = Outcome::Signed;
            r.status = 200;
            r.reason_code = None;
        }
        r.subject_digests = vec![digest(i % 5)];
        if i == 7 {
            r.subject_digests.push(digest(9));
        }
        assert_eq!(log.append(r).await.unwrap().seq, i as u64 + 1);
    }
    log.flush().await.unwrap();
}

fn ids(page: &stella_store::AuditPage) -> Vec<u64> {
    page.records.iter().map(|r| r.seq).collect()
}

/// `AuditLog::query` on the records of [`fill_for_query`]: every filter alone and combined,
/// pagination, and filters that match nothing (including an injection attempt).
pub(crate) async fn audit_query(log: &dyn AuditLog) {
    use stella_store::AuditQuery;
    fill_for_query(log).await;
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let run = |q: AuditQuery| async move {
        let page = log.query(q.clone()).await.unwrap();
        for r in &page.records {
            let rec: AuditRecord = serde_json::from_str(&r.record_json).unwrap();
            assert!(q.matches(r.seq, &rec), "{q:?} returned {rec:?}");
        }
        page
    };
    let seqs = |f: &dyn Fn(usize) -> bool| -> Vec<u64> {
        (0..30usize)
            .filter(|i| f(*i))
            .map(|i| i as u64 + 1)
            .collect()
    };
    // Everything, in chain order.
    let all = run(q(&|_| {})).await;
    assert_eq!(ids(&all), seqs(&|_| true));
    assert!(!all.more);
    let first: AuditRecord = serde_json::from_str(&all.records[0].record_json).unwrap();
    assert_eq!(first.audit_id, "q0");
    assert_eq!(all.records[0].time, "2026-01-02T03:04:00.000Z");
    // Tenant.
    let a = run(q(&|q| q.tenant = Some("tenant-a".into()))).await;
    assert_eq!(ids(&a), seqs(&|i| i % 2 == 0));
    // Outcome and tenant.
    let b_signed = run(q(&|q| {
        q.tenant = Some("tenant-b".into());
        q.outcome = Some(Outcome::Signed);
    }))
    .await;
    assert_eq!(ids(&b_signed), vec![4, 10, 16, 22, 28]);
    let denied = run(q(&|q| q.outcome = Some(Outcome::Denied))).await;
    assert_eq!(ids(&denied), seqs(&|i| i % 3 != 0));
    // Subject digest (a record with two subjects matches on either).
    let d1 = run(q(&|q| q.subject_digest = Some(digest(1)))).await;
    assert_eq!(ids(&d1), seqs(&|i| i % 5 == 1));
    let d2 = run(q(&|q| q.subject_digest = Some(digest(2)))).await;
    assert_eq!(ids(&d2), seqs(&|i| i % 5 == 2));
    let d9 = run(q(&|q| q.subject_digest = Some(digest(9)))).await;
    assert_eq!(ids(&d9), vec![8]);
    // Time range: since inclusive, until exclusive.
    let window = run(q(&|q| {
        q.since = Some("2026-01-02T03:04:10.000Z".into());
        q.until = Some("2026-01-02T03:04:20.000Z".into());
    }))
    .await;
    assert_eq!(ids(&window), seqs(&|i| (10..20).contains(&i)));
    // Everything together.
    let combined = run(q(&|q| {
        q.tenant = Some("tenant-a".into());
        q.subject_digest = Some(digest(0));
        q.since = Some("2026-01-02T03:04:05.000Z".into());
    }))
    .await;
    assert_eq!(ids(&combined), vec![11, 21]);
    // Pages of four: the cursor is the last seq seen.
    let mut got = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = run(q(&|q| {
            q.tenant = Some("tenant-a".into());
            q.limit = 4;
            q.after_seq = after;
        }))
        .await;
        pages += 1;
        assert!(page.records.len() <= 4);
        got.extend(ids(&page));
        match page.records.last() {
            Some(last) if page.more => after = last.seq,
            _ => break,
        }
    }
    assert_eq!(got, seqs(&|i| i % 2 == 0));
    assert_eq!(pages, 4);
    // Limit 0 is clamped to 1.
    let one = run(q(&|q| q.limit = 0)).await;
    assert_eq!((ids(&one), one.more), (vec![1], true));
    // Matching nothing.
    for f in [
        &(|q: &mut AuditQuery| q.tenant = Some("tenant-c".into())) as &dyn Fn(&mut AuditQuery),
        &|q| q.tenant = Some("tenant-a' OR '1'='1".into()),
        &|q| q.subject_digest = Some("sha256:00' OR 1=1 --".into()),
        &|q| q.after_seq = 30,
        &|q| q.since = Some("2027-01-01T00:00:00.000Z".into()),
        &|q| {
            q.tenant = Some("tenant-b".into());
            q.subject_digest = Some(digest(0));
            q.outcome = Some(Outcome::Error);
        },
    ] {
        let page = run(q(f)).await;
        assert!(page.records.is_empty() && !page.more, "{:?}", ids(&page));
    }
}

/// The `seq`s of the records `log` finds by the subject digest `sha256:0909…` (within
/// `tenant`, when given): what the subject index answers.
pub(crate) async fn seqs_by_subject_09(log: &dyn AuditLog, tenant: Option<&str>) -> Vec<u64> {
    let page = log
        .query(stella_store::AuditQuery {
            tenant: tenant.map(str::to_string),
            subject_digest: Some(format!("sha256:{}", "09".repeat(32))),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    page.records.iter().map(|r| r.seq).collect()
}
