//! Prometheus metrics, hand-written text exposition (format 0.0.4).
//!
//! - `stella_signer_request_duration_seconds{route}` — histogram with explicit buckets
//!   (1 ms … 10 s), the signing latency on the sign routes.
//! - `stella_signer_requests_total{route,outcome,code}` — requests by outcome.
//! - `stella_signer_poe_failures_total{kind}` — `denied`, `unavailable`, `grace` (served
//!   from grace: a failure of Licensing even though the request went on).
//! - `stella_signer_quota_hits_total{kind,plan}` — `qps`, `concurrency`, `artifact_bytes`,
//!   by plan; and `stella_signer_quota_admitted_total{plan}` — requests admitted under a plan
//!   quota. The `plan` label is bounded by the configuration ([`Metrics::with_plans`]): a plan
//!   named in `licensing.plans`, the bypass plan, a `signing.tenants.*.plans` key (or `dev`
//!   in the dev profile) keeps its name; any other plan Licensing answers is `other`, and a
//!   refusal before the entitlement is known (body over `server.max_body_bytes`) is `unknown`.
//! - `stella_signer_key_expiry_seconds{key_id}` — seconds until the signing key's `not_after`
//!   in `signing.keyring` (negative: expired), and `stella_signer_key_revoked{key_id}` — 1 when
//!   the keyring marks it revoked; one series per configured signing key.
//! - `stella_signer_key_usage_total{key_id,mode}` — signatures made, per key and mode.
//! - `stella_signer_audit_failures_total` — audit writes that failed (requests refused).
//! - `stella_signer_audit_aggregated_total` — unauthenticated failures counted into a summary
//!   record instead of a record of their own ([`crate::flood`]).
//! - `stella_signer_release_unavailable_total` — release verdicts the registry could not give
//!   (requests refused with 503).
//! - `stella_signer_keyless_signatures_total{certificate}` and
//!   `stella_signer_keyless_signing_seconds_sum{certificate}` — keyless signatures made with
//!   a `new` or a `reused` certificate, and the time they took (certificate, signature,
//!   timestamp, log entry, self-check): the certificate's cost is the difference of the means.
//! - `stella_signer_keyless_failures_total{service}` — keyless signings that failed, by the
//!   service at fault (`fulcio`, `tsa`, `rekor`, `identity-provider`, `keyless`).
//! - `stella_signer_audit_api_requests_total{route,outcome}` — audit API reads (`audit`,
//!   `audit_head`; `ok`, `denied`, `error`), and `stella_signer_audit_api_records_total` —
//!   records they returned (reads are counted, not audited: [`crate::audit_api`]).
//!
//! Histograms are lock-free atomics; the labelled counters sit in small mutex-guarded maps
//! (a handful of label sets each), locked for a map lookup and an increment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram.
pub(crate) const BUCKETS: [f64; 14] = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    f64::INFINITY,
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; 14],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

type Counters<K> = Mutex<BTreeMap<K, u64>>;

fn inc<K: Ord + Clone>(m: &Counters<K>, k: K, by: u64) {
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    match g.get_mut(&k) {
        Some(v) => *v += by,
        None => {
            g.insert(k, by);
        }
    }
}

/// The service's metrics.
#[derive(Default)]
pub struct Metrics {
    latency: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    requests: Counters<(&'static str, &'static str, &'static str)>,
    poe_failures: Counters<&'static str>,
    quota_hits: Counters<(&'static str, String)>,
    quota_admitted: Counters<String>,
    /// Plans that keep their name in the `plan` label (the rest are `other`).
    plans: std::collections::BTreeSet<String>,
    key_validity: Mutex<Vec<KeyValidity>>,
    /// Signatures per key id, then per mode: found by the borrowed key id, so counting one
    /// costs no allocation once the key has a counter (iterated in `(key_id, mode)` order).
    key_usage: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    audit_failures: AtomicU64,
    release_unavailable: AtomicU64,
    audit_aggregated: AtomicU64,
    audit_api_requests: Counters<(&'static str, &'static str)>,
    audit_api_records: AtomicU64,
    /// Keyless signatures by certificate (`new`, `reused`): (count, microseconds).
    keyless_signed: Counters<(&'static str, &'static str)>,
    keyless_failures: Counters<&'static str>,
}

/// What `signing.keyring` says about one signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValidity {
    pub key_id: String,
    /// `not_after`, Unix seconds.
    pub not_after: Option<i64>,
    pub revoked: bool,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe_request(
        &self,
        route: &'static str,
        outcome: &'static str,
        code: &'static str,
        secs: f64,
    ) {
        let h = {
            let mut g = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            g.entry(route).or_default().clone()
        };
        h.observe(secs);
        inc(&self.requests, (route, outcome, code), 1);
    }

    pub fn poe_failure(&self, kind: &'static str) {
        inc(&self.poe_failures, kind, 1);
    }

    /// Metrics whose `plan` label keeps these plan names (others become `other`).
    pub fn with_plans(plans: impl IntoIterator<Item = String>) -> Self {
        Metrics {
            plans: plans.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The bounded `plan` label of `plan`.
    pub fn plan_label<'a>(&self, plan: &'a str) -> &'a str {
        if self.plans.contains(plan) {
            plan
        } else {
            "other"
        }
    }

    /// A quota refusal before the plan is known (`plan="unknown"`).
    pub fn quota_hit(&self, kind: &'static str) {
        inc(&self.quota_hits, (kind, "unknown".to_string()), 1);
    }

    /// A quota refusal under `plan`.
    pub fn quota_hit_plan(&self, kind: &'static str, plan: &str) {
        inc(
            &self.quota_hits,
            (kind, self.plan_label(plan).to_string()),
            1,
        );
    }

    /// A request admitted under `plan`'s quotas (on every admitted request: no allocation
    /// once the plan's counter exists).
    pub fn quota_admitted(&self, plan: &str) {
        let label = self.plan_label(plan);
        let mut g = self
            .quota_admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match g.get_mut(label) {
            Some(v) => *v += 1,
            None => {
                g.insert(label.to_string(), 1);
            }
        }
    }

    /// The signing keys' validity (from `signing.keyring`), exported as gauges.
    pub fn set_key_validity(&self, keys: Vec<KeyValidity>) {
        *self.key_validity.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    pub fn key_used(&self, key_id: &str, mode: &'static str) {
        let mut g = self.key_usage.lock().unwrap_or_else(|p| p.into_inner());
        match g.get_mut(key_id) {
            Some(modes) => *modes.entry(mode).or_insert(0) += 1,
            None => {
                g.insert(key_id.to_string(), BTreeMap::from([(mode, 1)]));
            }
        }
    }

    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_aggregated(&self) {
        self.audit_aggregated.fetch_add(1, Ordering::Relaxed);
    }

    /// A keyless signature, with a new or a reused certificate, that took `secs`.
    pub fn keyless_signed(&self, new_certificate: bool, secs: f64) {
        let c = if new_certificate { "new" } else { "reused" };
        inc(&self.keyless_signed, (c, "count"), 1);
        inc(&self.keyless_signed, (c, "micros"), (secs * 1e6) as u64);
    }

    /// A keyless signing that failed at `service`.
    pub fn keyless_failure(&self, service: &'static str) {
        inc(&self.keyless_failures, service, 1);
    }

    pub fn audit_api_request(&self, route: &'static str, outcome: &'static str) {
        inc(&self.audit_api_requests, (route, outcome), 1);
    }

    pub fn audit_api_records(&self, n: usize) {
        self.audit_api_records
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn release_unavailable(&self) {
        self.release_unavailable.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP stella_signer_request_duration_seconds Request latency (sign routes: signing latency including audit).\n");
        out.push_str("# TYPE stella_signer_request_duration_seconds histogram\n");
        let hs: Vec<_> = {
            let g = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            g.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        for (route, h) in hs {
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += h.counts[i].load(Ordering::Relaxed);
                let le = if b.is_infinite() {
                    "+Inf".to_string()
                } else {
                    format!("{b}")
                };
                let _ = writeln!(
                    out,
                    "stella_signer_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "stella_signer_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "stella_signer_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP stella_signer_requests_total Requests by route, outcome and code.\n");
        out.push_str("# TYPE stella_signer_requests_total counter\n");
        for ((route, outcome, code), v) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_requests_total{{route=\"{route}\",outcome=\"{outcome}\",code=\"{code}\"}} {v}"
            );
        }
        out.push_str(
            "# HELP stella_signer_poe_failures_total Proof-of-Entitlement failures by kind.\n",
        );
        out.push_str("# TYPE stella_signer_poe_failures_total counter\n");
        for (kind, v) in self
            .poe_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_poe_failures_total{{kind=\"{kind}\"}} {v}"
            );
        }
        out.push_str(
            "# HELP stella_signer_quota_hits_total Requests refused by a plan quota, by kind and plan.\n",
        );
        out.push_str("# TYPE stella_signer_quota_hits_total counter\n");
        for ((kind, plan), v) in self
            .quota_hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_quota_hits_total{{kind=\"{kind}\",plan=\"{}\"}} {v}",
                escape(plan)
            );
        }
        out.push_str(
            "# HELP stella_signer_quota_admitted_total Requests admitted under a plan quota, by plan.\n",
        );
        out.push_str("# TYPE stella_signer_quota_admitted_total counter\n");
        for (plan, v) in self
            .quota_admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_quota_admitted_total{{plan=\"{}\"}} {v}",
                escape(plan)
            );
        }
        let keys = self
            .key_validity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        out.push_str("# HELP stella_signer_key_expiry_seconds Seconds until the signing key's not_after in signing.keyring (negative: expired).\n");
        out.push_str("# TYPE stella_signer_key_expiry_seconds gauge\n");
        for k in &keys {
            if let Some(na) = k.not_after {
                let _ = writeln!(
                    out,
                    "stella_signer_key_expiry_seconds{{key_id=\"{}\"}} {}",
                    escape(&k.key_id),
                    na.saturating_sub(now)
                );
            }
        }
        out.push_str("# HELP stella_signer_key_revoked 1 when signing.keyring marks the signing key revoked.\n");
        out.push_str("# TYPE stella_signer_key_revoked gauge\n");
        for k in &keys {
            let _ = writeln!(
                out,
                "stella_signer_key_revoked{{key_id=\"{}\"}} {}",
                escape(&k.key_id),
                u8::from(k.revoked)
            );
        }
        out.push_str(
            "# HELP stella_signer_key_usage_total Signatures made, by key id and signing mode.\n",
        );
        out.push_str("# TYPE stella_signer_key_usage_total counter\n");
        for (key, modes) in self
            .key_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (mode, v) in modes {
                let _ = writeln!(
                    out,
                    "stella_signer_key_usage_total{{key_id=\"{}\",mode=\"{mode}\"}} {v}",
                    escape(key)
                );
            }
        }
        out.push_str("# HELP stella_signer_audit_failures_total Audit writes that failed (the request was refused).\n");
        out.push_str("# TYPE stella_signer_audit_failures_total counter\n");
        let _ = writeln!(
            out,
            "stella_signer_audit_failures_total {}",
            self.audit_failures.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stella_signer_audit_aggregated_total Unauthenticated failures counted into a summary audit record.\n");
        out.push_str("# TYPE stella_signer_audit_aggregated_total counter\n");
        let _ = writeln!(
            out,
            "stella_signer_audit_aggregated_total {}",
            self.audit_aggregated.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stella_signer_release_unavailable_total Release verdicts the registry could not give (503).\n");
        out.push_str("# TYPE stella_signer_release_unavailable_total counter\n");
        let _ = writeln!(
            out,
            "stella_signer_release_unavailable_total {}",
            self.release_unavailable.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP stella_signer_audit_api_requests_total Audit API reads by route and outcome.\n",
        );
        out.push_str("# TYPE stella_signer_audit_api_requests_total counter\n");
        for ((route, outcome), v) in self
            .audit_api_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_audit_api_requests_total{{route=\"{route}\",outcome=\"{outcome}\"}} {v}"
            );
        }
        out.push_str("# HELP stella_signer_audit_api_records_total Audit records returned by the audit API.\n");
        out.push_str("# TYPE stella_signer_audit_api_records_total counter\n");
        let _ = writeln!(
            out,
            "stella_signer_audit_api_records_total {}",
            self.audit_api_records.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stella_signer_keyless_signatures_total Keyless signatures, by certificate (new or reused).\n");
        out.push_str("# TYPE stella_signer_keyless_signatures_total counter\n");
        let signed = self
            .keyless_signed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((c, what), v) in &signed {
            if *what == "count" {
                let _ = writeln!(
                    out,
                    "stella_signer_keyless_signatures_total{{certificate=\"{c}\"}} {v}"
                );
            }
        }
        out.push_str("# HELP stella_signer_keyless_signing_seconds_sum Time spent in keyless signings, by certificate (new or reused).\n");
        out.push_str("# TYPE stella_signer_keyless_signing_seconds_sum counter\n");
        for ((c, what), v) in &signed {
            if *what == "micros" {
                let _ = writeln!(
                    out,
                    "stella_signer_keyless_signing_seconds_sum{{certificate=\"{c}\"}} {}",
                    *v as f64 / 1e6
                );
            }
        }
        out.push_str("# HELP stella_signer_keyless_failures_total Keyless signings that failed, by the service at fault.\n");
        out.push_str("# TYPE stella_signer_keyless_failures_total counter\n");
        for (service, v) in self
            .keyless_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_signer_keyless_failures_total{{service=\"{service}\"}} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_label_is_bounded_and_key_gauges_render() {
        let m = Metrics::with_plans(["team".to_string(), "enterprise".to_string()]);
        m.quota_hit_plan("qps", "team");
        m.quota_hit_plan("qps", "team");
        m.quota_hit_plan("qps", "tenant-42-custom-plan");
        m.quota_hit_plan("concurrency", "x\"y");
        m.quota_admitted("enterprise");
        m.quota_admitted("whatever");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        m.set_key_validity(vec![
            KeyValidity {
                key_id: "sha256:aa".into(),
                not_after: Some(now + 3600),
                revoked: false,
            },
            KeyValidity {
                key_id: "sha256:bb".into(),
                not_after: None,
                revoked: true,
            },
        ]);
        let t = m.render();
        assert!(t.contains("stella_signer_quota_hits_total{kind=\"qps\",plan=\"team\"} 2"));
        assert!(t.contains("stella_signer_quota_hits_total{kind=\"qps\",plan=\"other\"} 1"));
        assert!(t.contains("stella_signer_quota_hits_total{kind=\"concurrency\",plan=\"other\"} 1"));
        assert!(!t.contains("tenant-42") && !t.contains("x\\\"y"));
        assert!(t.contains("stella_signer_quota_admitted_total{plan=\"enterprise\"} 1"));
        assert!(t.contains("stella_signer_quota_admitted_total{plan=\"other\"} 1"));
        let expiry: i64 = t
            .lines()
            .find_map(|l| l.strip_prefix("stella_signer_key_expiry_seconds{key_id=\"sha256:aa\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((3590..=3600).contains(&expiry), "{expiry}");
        assert!(!t.contains("stella_signer_key_expiry_seconds{key_id=\"sha256:bb\"}"));
        assert!(t.contains("stella_signer_key_revoked{key_id=\"sha256:aa\"} 0"));
        assert!(t.contains("stella_signer_key_revoked{key_id=\"sha256:bb\"} 1"));
    }

    /// The key usage lines are those the old `(key_id, mode)`-keyed map rendered: every pair
    /// counted, sorted by key id then mode, escaped.
    #[test]
    fn key_usage_renders_as_the_pair_keyed_map() {
        let m = Metrics::new();
        let mut old: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        let keys = [
            "sha256:bb",
            "sha256:aa",
            "kms:\"quoted\"\\key\nline",
            "",
            "sha256:aa0",
        ];
        let modes = ["file", "pkcs11", "kms", "keyless"];
        for i in 0..97usize {
            let (k, mode) = (keys[i * 7 % keys.len()], modes[i * 3 % modes.len()]);
            m.key_used(k, mode);
            *old.entry((k.to_string(), mode)).or_insert(0) += 1;
        }
        let expected: String = old
            .iter()
            .map(|((key, mode), v)| {
                format!(
                    "stella_signer_key_usage_total{{key_id=\"{}\",mode=\"{mode}\"}} {v}\n",
                    escape(key)
                )
            })
            .collect();
        let text = m.render();
        let got: String = text
            .lines()
            .filter(|l| l.starts_with("stella_signer_key_usage_total{"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(got, expected);
        assert!(
            old.len() > 10,
            "too few pairs to say anything: {}",
            old.len()
        );
    }

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::new();
        m.observe_request("sign_dsse", "signed", "ok", 0.0015);
        m.observe_request("sign_dsse", "denied", "invalid_token", 0.3);
        m.quota_hit("qps");
        m.key_used("sha256:ab", "file");
        let t = m.render();
        assert!(t.contains(
            "stella_signer_request_duration_seconds_bucket{route=\"sign_dsse\",le=\"0.001\"} 0"
        ));
        assert!(t.contains(
            "stella_signer_request_duration_seconds_bucket{route=\"sign_dsse\",le=\"0.002\"} 1"
        ));
        assert!(t.contains(
            "stella_signer_request_duration_seconds_bucket{route=\"sign_dsse\",le=\"+Inf\"} 2"
        ));
        assert!(t.contains("stella_signer_requests_total{route=\"sign_dsse\",outcome=\"denied\",code=\"invalid_token\"} 1"));
        assert!(t.contains("stella_signer_quota_hits_total{kind=\"qps\",plan=\"unknown\"} 1"));
        assert!(t.contains("stella_signer_key_usage_total{key_id=\"sha256:ab\",mode=\"file\"} 1"));
    }
}
