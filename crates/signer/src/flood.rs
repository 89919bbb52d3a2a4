//! Audit amplification defenses: what one record may hold, and how a flood of
//! unauthenticated failures is recorded without filling the disk.
//!
//! **Bounded records.** [`bound_record`] runs on every record just before it is appended:
//! every free-text field is cut to a fixed length with a visible marker
//! (`…[truncated N bytes]`), and a refused request keeps at most
//! [`MAX_REFUSED_SUBJECTS`] subject digests plus one marker entry saying how many more there
//! were (a signed request keeps all of them: they are what was signed, and their number is
//! bounded by `server.max_subjects` before anything is parsed into the record). So a caller
//! without entitlement cannot write megabytes into the log before the PoE and quota gates.
//!
//! **Unauthenticated failures are aggregated.** A request that fails before the caller is
//! authenticated costs the caller nothing, so each one writing a durable row would let anyone
//! fill the disk. Such failures are counted per (source address, route, code) in windows of
//! `audit.unauthenticated_window_seconds`: the first `audit.unauthenticated_burst` of a window
//! are written in full as before; the rest are not written one by one but counted, and when
//! the window closes one **summary record** is appended (same route and code, outcome
//! `denied`, reason `N more unauthenticated failures from SOURCE between T1 and T2 …`).
//! The responses of aggregated requests carry the summary's audit id, so a caller's support
//! ticket still leads to a record. The table of sources is bounded
//! (`audit.unauthenticated_sources`); past it, and past `audit.unauthenticated_records_per_window`
//! full records in a window over all sources, failures aggregate under the source `*`. No
//! failure goes uncounted: the evidence of a flood is its summary records. Summaries are
//! written by a ticker in [`crate::server::serve`] and at shutdown, before the log closes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stella_store::{AuditRecord, Outcome};

/// Longest kept free-text field (reasons may be longer: [`MAX_REASON_BYTES`]).
pub(crate) const MAX_FIELD_BYTES: usize = 256;
/// Longest kept `reason`.
pub(crate) const MAX_REASON_BYTES: usize = 1024;
/// Subject digests kept in the record of a refused request.
pub(crate) const MAX_REFUSED_SUBJECTS: usize = 16;

/// Cut `s` to at most `max` bytes (on a character boundary) with a marker saying how much
/// was cut.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("…[truncated {dropped} bytes]"));
}

fn truncate_opt(s: &mut Option<String>, max: usize) {
    if let Some(v) = s {
        truncate(v, max);
    }
}

/// Bound what `rec` holds (see the module docs).
pub(crate) fn bound_record(rec: &mut AuditRecord) {
    for f in [
        &mut rec.tenant,
        &mut rec.installation,
        &mut rec.caller.sub,
        &mut rec.caller.client,
        &mut rec.sender_binding,
        &mut rec.license_id,
        &mut rec.plan,
        &mut rec.bypass_reason,
        &mut rec.predicate_type,
        &mut rec.scanner_digest,
        &mut rec.scanner_verdict,
        &mut rec.signing_mode,
        &mut rec.certificate_serial,
        &mut rec.certificate_san,
        &mut rec.certificate_issuer,
        &mut rec.key_source,
        &mut rec.tlog_uuid,
        &mut rec.reason_code,
    ] {
        truncate_opt(f, MAX_FIELD_BYTES);
    }
    truncate_opt(&mut rec.reason, MAX_REASON_BYTES);
    truncate(&mut rec.route, MAX_FIELD_BYTES);
    truncate(&mut rec.trace_id, MAX_FIELD_BYTES);
    for d in rec.subject_digests.iter_mut().chain(rec.key_ids.iter_mut()) {
        truncate(d, MAX_FIELD_BYTES);
    }
    if rec.outcome != Outcome::Signed && rec.subject_digests.len() > MAX_REFUSED_SUBJECTS {
        let more = rec.subject_digests.len() - MAX_REFUSED_SUBJECTS;
        rec.subject_digests.truncate(MAX_REFUSED_SUBJECTS);
        rec.subject_digests
            .push(format!("…[{more} more subjects not recorded]"));
    }
}

/// Settings of [`UnauthFailures`].
#[derive(Debug, Clone, Copy)]
pub struct FloodLimits {
    pub window: Duration,
    pub burst: u32,
    pub max_sources: usize,
    pub records_per_window: u32,
}

/// What to do with one unauthenticated failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureRecord {
    /// Write the request's own record.
    Full,
    /// Do not write it: it is counted into the summary with this audit id.
    Aggregated { summary_audit_id: String },
}

#[derive(Debug)]
struct Window {
    started: Instant,
    started_at: String,
    full: u32,
    aggregated: u64,
    status: u16,
    last_reason: String,
    summary_audit_id: String,
}

type Key = (String, String, String);

#[derive(Default)]
struct State {
    windows: HashMap<Key, Window>,
    /// Windows closed with aggregated failures, awaiting their summary record.
    closed: Vec<(Key, Window)>,
    /// Full records written in the current global window, and when it began.
    global_full: u32,
    global_started: Option<Instant>,
}

/// Counts unauthenticated failures and decides which are written in full.
pub struct UnauthFailures {
    limits: FloodLimits,
    state: Mutex<State>,
}

/// The source `*`: failures past the table or global limits.
pub(crate) const OVERFLOW_SOURCE: &str = "*";

impl UnauthFailures {
    pub fn new(limits: FloodLimits) -> Self {
        UnauthFailures {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Count one failure of `route` with `code` (HTTP `status`) from `source` at `now`.
    pub fn admit(
        &self,
        source: &str,
        route: &str,
        code: &str,
        status: u16,
        reason: &str,
        now: Instant,
    ) -> FailureRecord {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.limits.window;
        if st
            .global_started
            .is_none_or(|s| now.saturating_duration_since(s) >= window)
        {
            st.global_started = Some(now);
            st.global_full = 0;
        }
        let mut key: Key = (source.to_string(), route.to_string(), code.to_string());
        if !st.windows.contains_key(&key) && st.windows.len() >= self.limits.max_sources {
            key.0 = OVERFLOW_SOURCE.to_string();
        }
        let global_exhausted = st.global_full >= self.limits.records_per_window;
        if let Some(w) = st.windows.get(&key) {
            if now.saturating_duration_since(w.started) >= window {
                if let Some(old) = st.windows.remove(&key) {
                    if old.aggregated > 0 {
                        st.closed.push((key.clone(), old));
                    }
                }
            }
        }
        let w = st.windows.entry(key).or_insert_with(|| Window {
            started: now,
            started_at: crate::trace::now_rfc3339(),
            full: 0,
            aggregated: 0,
            status,
            last_reason: String::new(),
            summary_audit_id: crate::trace::new_audit_id(),
        });
        w.status = status;
        if w.full < self.limits.burst && !global_exhausted {
            w.full += 1;
            st.global_full += 1;
            FailureRecord::Full
        } else {
            w.aggregated += 1;
            w.last_reason = reason.to_string();
            truncate(&mut w.last_reason, MAX_FIELD_BYTES);
            FailureRecord::Aggregated {
                summary_audit_id: w.summary_audit_id.clone(),
            }
        }
    }

    /// The summary records due at `now` (every window when `all`, e.g. at shutdown). Closed
    /// windows leave the table.
    pub fn take_summaries(&self, now: Instant, all: bool) -> Vec<AuditRecord> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.limits.window;
        let due: Vec<Key> = st
            .windows
            .iter()
            .filter(|(_, w)| all || now.saturating_duration_since(w.started) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut closed = std::mem::take(&mut st.closed);
        for k in due {
            if let Some(w) = st.windows.remove(&k) {
                if w.aggregated > 0 {
                    closed.push((k, w));
                }
            }
        }
        drop(st);
        closed
            .into_iter()
            .map(|((source, route, code), w)| summary(&source, &route, &code, w))
            .collect()
    }
}

fn summary(source: &str, route: &str, code: &str, w: Window) -> AuditRecord {
    let now = crate::trace::now_rfc3339();
    let mut rec = AuditRecord::new(
        w.summary_audit_id,
        crate::trace::random_hex(16),
        route.to_string(),
        now.clone(),
    );
    rec.outcome = Outcome::Denied;
    rec.status = w.status;
    rec.reason_code = Some(code.to_string());
    rec.reason = Some(format!(
        "{n} more unauthenticated failures ({code}) from {source} between {t1} and {t2} were aggregated into this record after the first {full} (last reason: {last})",
        n = w.aggregated,
        t1 = w.started_at,
        t2 = now,
        full = w.full,
        last = w.last_reason,
    ));
    bound_record(&mut rec);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, max_sources: usize, per_window: u32) -> FloodLimits {
        FloodLimits {
            window: Duration::from_secs(60),
            burst,
            max_sources,
            records_per_window: per_window,
        }
    }

    #[test]
    fn truncation_marks_what_was_cut_on_a_char_boundary() {
        let mut s = "é".repeat(300); // 600 bytes
        truncate(&mut s, 255);
        assert!(s.starts_with(&"é".repeat(127)));
        assert!(s.ends_with("…[truncated 346 bytes]"), "{s}");
        let mut short = "ok".to_string();
        truncate(&mut short, 255);
        assert_eq!(short, "ok");
    }

    #[test]
    fn records_are_bounded() {
        let mut rec = AuditRecord::new("id".into(), "t".into(), "POST /x".into(), "now".into());
        rec.outcome = Outcome::Denied;
        rec.predicate_type = Some("p".repeat(1 << 20));
        rec.reason = Some("r".repeat(1 << 20));
        rec.subject_digests = (0..10_000).map(|i| format!("sha256:{i:064}")).collect();
        bound_record(&mut rec);
        let bytes = rec.to_canonical_json().unwrap().len();
        assert!(bytes < 8 * 1024, "{bytes} bytes");
        assert_eq!(rec.subject_digests.len(), MAX_REFUSED_SUBJECTS + 1);
        assert!(rec.subject_digests[MAX_REFUSED_SUBJECTS].contains("9984 more subjects"));
        assert!(rec.reason.unwrap().contains("truncated"));
        // A signed record keeps every (bounded-length) subject.
        let mut signed = AuditRecord::new("id".into(), "t".into(), "POST /x".into(), "n".into());
        signed.outcome = Outcome::Signed;
        signed.subject_digests = (0..100).map(|i| format!("sha256:{i:064}")).collect();
        bound_record(&mut signed);
        assert_eq!(signed.subject_digests.len(), 100);
    }

    #[test]
    fn a_flood_from_one_source_becomes_one_summary() {
        let f = UnauthFailures::new(limits(3, 100, 1000));
        let t0 = Instant::now();
        let mut aggregated = Vec::new();
        for i in 0..1000 {
            match f.admit(
                "10.0.0.1",
                "POST /s",
                "invalid_token",
                401,
                &format!("r{i}"),
                t0,
            ) {
                FailureRecord::Full => assert!(i < 3),
                FailureRecord::Aggregated { summary_audit_id } => {
                    assert!(i >= 3);
                    aggregated.push(summary_audit_id);
                }
            }
        }
        aggregated.dedup();
        assert_eq!(aggregated.len(), 1, "one summary id per window");
        // Another source and another code are counted apart.
        assert_eq!(
            f.admit("10.0.0.2", "POST /s", "invalid_token", 401, "x", t0),
            FailureRecord::Full
        );
        assert_eq!(
            f.admit("10.0.0.1", "POST /s", "invalid_dpop_proof", 401, "x", t0),
            FailureRecord::Full
        );
        assert!(f.take_summaries(t0, false).is_empty(), "window still open");
        let later = t0 + Duration::from_secs(61);
        let s = f.take_summaries(later, false);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].audit_id, aggregated[0]);
        assert_eq!(s[0].reason_code.as_deref(), Some("invalid_token"));
        let reason = s[0].reason.as_deref().unwrap();
        assert!(
            reason.contains("997 more") && reason.contains("10.0.0.1"),
            "{reason}"
        );
        assert!(reason.contains("r999"), "{reason}");
        // A new window starts afresh.
        assert_eq!(
            f.admit("10.0.0.1", "POST /s", "invalid_token", 401, "x", later),
            FailureRecord::Full
        );
    }

    #[test]
    fn many_sources_overflow_into_one_bounded_entry() {
        let f = UnauthFailures::new(limits(1, 10, 15));
        let t0 = Instant::now();
        let mut full = 0;
        for i in 0..10_000 {
            if f.admit(
                &format!("10.0.{}.{}", i / 256, i % 256),
                "r",
                "c",
                401,
                "x",
                t0,
            ) == FailureRecord::Full
            {
                full += 1;
            }
        }
        // 10 sources in the table, one full record each, then the overflow source gets its
        // burst of 1; every other failure is aggregated.
        assert_eq!(full, 11);
        let s = f.take_summaries(t0, true);
        let total: u64 = s
            .iter()
            .map(|r| {
                let reason = r.reason.as_deref().unwrap();
                reason.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum();
        assert_eq!(total + full, 10_000, "every failure is counted");
        assert!(s
            .iter()
            .any(|r| r.reason.as_deref().unwrap().contains("from * ")));
        assert!(f.state.lock().unwrap().windows.is_empty());
    }

    #[test]
    fn the_global_cap_bounds_full_records_over_all_sources() {
        let f = UnauthFailures::new(limits(5, 1000, 20));
        let t0 = Instant::now();
        let full = (0..500)
            .filter(|i| f.admit(&format!("s{i}"), "r", "c", 401, "x", t0) == FailureRecord::Full)
            .count();
        assert_eq!(full, 20);
    }
}
