//! The audit record (SPEC §4) and the audit log traits.
//!
//! One record per request, written durably *before* the response leaves: [`AuditLog::append`]
//! resolves only once the record (and its chain link) is on stable storage, and the service
//! fails the request when it errors. The record is plain data, serialised as JSON with
//! camelCase names; absent optional fields are omitted, so the stored form is compact and its
//! canonical (RFC 8785) bytes are what the hash chain covers.

use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreFuture};

/// State of the Proof-of-Entitlement for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoeState {
    /// Freshly introspected at Licensing and active.
    Valid,
    /// Answered from the introspection cache (within its TTL).
    Cached,
    /// Licensing unreachable; the last known entitlement was used inside the grace TTL.
    Grace,
    /// Operator emergency bypass: no introspection was done.
    Bypass,
    /// Licensing said no (or could not be asked and no grace applied).
    Denied,
}

impl PoeState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoeState::Valid => "valid",
            PoeState::Cached => "cached",
            PoeState::Grace => "grace",
            PoeState::Bypass => "bypass",
            PoeState::Denied => "denied",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Something was signed and returned.
    Signed,
    /// A read-only check answered (e.g. `GET /verify/referrers`): nothing was signed.
    Verified,
    /// Refused: authentication, authorization, entitlement, quota or input.
    Denied,
    /// Failed on our side or upstream.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Signed => "signed",
            Outcome::Verified => "verified",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// Who called: the token's subject and client id, when a token got that far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// One audit record (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub audit_id: String,
    pub trace_id: String,
    /// The API route, e.g. `POST /api/v1/signer/sign/dsse`.
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    #[serde(default)]
    pub caller: Caller,
    /// `dpop jkt=<thumbprint>`, `mtls x5t#S256=<thumbprint>`, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_binding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poe_state: Option<PoeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Operator reason recorded on every bypassed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_reason: Option<String>,
    /// `sha256:<hex>` of every subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// Keyless: the certificate's subject alternative name (the Signer's identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_san: Option<String>,
    /// Keyless: the OIDC issuer named in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issuer: Option<String>,
    /// Keyless: where the signing key came from (`ephemeral`, `ephemeral-reused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_source: Option<String>,
    /// Keyless with a transparency log: the entry's log index and UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlog_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlog_uuid: Option<String>,
    /// SHA-256 (hex) of the DSSE envelope JSON returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_sha256: Option<String>,
    pub outcome: Outcome,
    /// HTTP status of the response.
    pub status: u16,
    /// Stable error code (SPEC §4), absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Detail for operators (may say more than the response body did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds from request arrival to the audit write.
    pub latency_ms: f64,
}

impl AuditRecord {
    /// A record with the identity fields set and everything else empty (outcome `error`,
    /// status 500 until the caller says otherwise).
    pub fn new(audit_id: String, trace_id: String, route: String, time: String) -> Self {
        AuditRecord {
            time,
            audit_id,
            trace_id,
            route,
            tenant: None,
            installation: None,
            caller: Caller::default(),
            sender_binding: None,
            poe_state: None,
            license_id: None,
            plan: None,
            bypass_reason: None,
            subject_digests: Vec::new(),
            predicate_type: None,
            scanner_digest: None,
            scanner_verdict: None,
            signing_mode: None,
            key_ids: Vec::new(),
            certificate_serial: None,
            certificate_san: None,
            certificate_issuer: None,
            key_source: None,
            tlog_index: None,
            tlog_uuid: None,
            envelope_sha256: None,
            outcome: Outcome::Error,
            status: 500,
            reason_code: None,
            reason: None,
            latency_ms: 0.0,
        }
    }

    /// The canonical (RFC 8785) JSON bytes: what is stored and what the chain hashes.
    ///
    /// Written member by member in the canonical order (every name is ASCII, so byte order is
    /// RFC 8785's UTF-16 order) with the JCS writer's own string and number forms, instead of
    /// through a `serde_json::Value` tree: one allocation per record instead of one per field
    /// (issue #15). Byte for byte what `jcs::to_vec(self)` gives; a test holds them together.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, StoreError> {
        let mut w = Canon::new(384);
        w.str("auditId", &self.audit_id);
        w.opt("bypassReason", &self.bypass_reason);
        w.key("caller");
        w.out.push(b'{');
        let mut inner = Canon {
            out: std::mem::take(&mut w.out),
            first: true,
        };
        inner.opt("client", &self.caller.client);
        inner.opt("sub", &self.caller.sub);
        w.out = inner.out;
        w.out.push(b'}');
        w.opt("certificateIssuer", &self.certificate_issuer);
        w.opt("certificateSan", &self.certificate_san);
        w.opt("certificateSerial", &self.certificate_serial);
        w.opt("envelopeSha256", &self.envelope_sha256);
        w.opt("installation", &self.installation);
        w.list("keyIds", &self.key_ids);
        w.opt("keySource", &self.key_source);
        w.num("latencyMs", serde_json::Number::from_f64(self.latency_ms))?;
        w.opt("licenseId", &self.license_id);
        w.str("outcome", self.outcome.as_str());
        w.opt("plan", &self.plan);
        if let Some(p) = self.poe_state {
            w.str("poeState", p.as_str());
        }
        w.opt("predicateType", &self.predicate_type);
        w.opt("reason", &self.reason);
        w.opt("reasonCode", &self.reason_code);
        w.str("route", &self.route);
        w.opt("scannerDigest", &self.scanner_digest);
        w.opt("scannerVerdict", &self.scanner_verdict);
        w.opt("senderBinding", &self.sender_binding);
        w.opt("signingMode", &self.signing_mode);
        w.num("status", Some(self.status.into()))?;
        w.list("subjectDigests", &self.subject_digests);
        w.opt("tenant", &self.tenant);
        w.str("time", &self.time);
        if let Some(i) = self.tlog_index {
            w.num("tlogIndex", Some(i.into()))?;
        }
        w.opt("tlogUuid", &self.tlog_uuid);
        w.str("traceId", &self.trace_id);
        w.out.push(b'}');
        Ok(w.out)
    }
}

/// The members of one canonical JSON object, written in the order they are given (the caller
/// gives them sorted). The object's `{` is written by [`Canon::new`]; the caller closes it.
struct Canon {
    out: Vec<u8>,
    first: bool,
}

impl Canon {
    fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        Canon { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        stella_dsse::jcs::write_str(name, &mut self.out);
        self.out.push(b':');
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        stella_dsse::jcs::write_str(value, &mut self.out);
    }

    fn opt(&mut self, name: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.str(name, v);
        }
    }

    /// A list of strings, left out when empty (as `skip_serializing_if = "Vec::is_empty"`).
    fn list(&mut self, name: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(name);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            stella_dsse::jcs::write_str(v, &mut self.out);
        }
        self.out.push(b']');
    }

    /// A number in the JCS writer's form; `None` (a non-finite float) fails as `jcs::to_vec`.
    fn num(&mut self, name: &str, n: Option<serde_json::Number>) -> Result<(), StoreError> {
        let n =
            n.ok_or_else(|| StoreError::Encode(stella_dsse::jcs::JcsError::NonFinite.to_string()))?;
        self.key(name);
        stella_dsse::jcs::write_value(&serde_json::Value::Number(n), &mut self.out)
            .map_err(|e| StoreError::Encode(e.to_string()))
    }
}

/// Where an appended record landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// A record as stored, with its chain link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// 1-based position in the chain.
    pub seq: u64,
    /// The stored `time` column (what time-range queries select on). The chain covers it
    /// through the record JSON: a walker refuses a column that differs from the record's
    /// `time` ([`crate::chain::ChainError::Column`]).
    pub time: String,
    /// The stored `audit_id` column, covered the same way.
    pub audit_id: String,
    /// The stored canonical JSON of the record.
    pub record_json: String,
    /// Hash of the previous link (64 zeros for the first record).
    pub prev_hash: String,
    /// This link's hash (see [`crate::chain`]).
    pub hash: String,
}

/// An append-only, hash-chained audit log.
pub trait AuditLog: Send + Sync {
    /// Append `record`; resolves once it is durable (or fails: then nothing may be returned to
    /// the caller that the record would have covered).
    fn append(&self, record: AuditRecord) -> StoreFuture<'_, Appended>;

    /// Resolve once every record appended before the call is durable.
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// Flush and stop accepting records (graceful shutdown). Further appends fail.
    fn close(&self) -> StoreFuture<'_, ()>;

    /// Is the log able to take records (for `/readyz`)?
    fn is_healthy(&self) -> bool;

    /// The last durable link (`seq` 0 and the genesis hash of 64 zeros for an empty log): what a
    /// signed checkpoint ([`crate::checkpoint`]) records. Never ahead of what is committed.
    /// `None`: this backend cannot tell (no checkpoints are written for it).
    fn head(&self) -> StoreFuture<'_, Option<Appended>> {
        Box::pin(async { Ok(None) })
    }

    /// Short backend name for logs (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Committed records matching `query`, in chain (`seq`) order, at most `query.limit`
    /// (the audit API, `GET /api/v1/signer/audit`). Backends answer from indexes: tenant and
    /// outcome by `(field, seq)`, subject digests by digest, time by the `time` column (SQLite
    /// fills its indexes in batches after acknowledging and reads the records not yet indexed
    /// directly, so an acknowledged record is always found).
    /// The default: this backend cannot be queried ([`StoreError::Unsupported`]).
    fn query(&self, query: AuditQuery) -> StoreFuture<'_, AuditPage> {
        let _ = query;
        Box::pin(async { Err(StoreError::Unsupported("querying this audit backend")) })
    }
}

/// Most records one [`AuditLog::query`] returns.
pub const MAX_QUERY_LIMIT: usize = 1000;

/// A filtered read of the audit log (every filter optional; all given ones must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with `seq` greater than this (the pagination cursor; 0: from the start).
    pub after_seq: u64,
    /// Most records returned (clamped to 1..=[`MAX_QUERY_LIMIT`]).
    pub limit: usize,
    /// `time >= since`, in the stored form (`YYYY-MM-DDTHH:MM:SS.mmmZ`, see [`normalize_time`]).
    pub since: Option<String>,
    /// `time < until`, same form.
    pub until: Option<String>,
    pub tenant: Option<String>,
    pub outcome: Option<Outcome>,
    /// `sha256:<hex>`: one of the record's `subjectDigests`.
    pub subject_digest: Option<String>,
}

impl AuditQuery {
    /// The limit actually applied.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, MAX_QUERY_LIMIT)
    }

    /// Does `rec` satisfy every filter (the record's own fields, not the index columns)?
    /// Callers re-check rows with it, so what a caller sees never rests on an index alone.
    pub fn matches(&self, seq: u64, rec: &AuditRecord) -> bool {
        seq > self.after_seq
            && self.since.as_deref().is_none_or(|s| rec.time.as_str() >= s)
            && self.until.as_deref().is_none_or(|u| rec.time.as_str() < u)
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| rec.tenant.as_deref() == Some(t))
            && self.outcome.is_none_or(|o| rec.outcome == o)
            && self
                .subject_digest
                .as_deref()
                .is_none_or(|d| rec.subject_digests.iter().any(|x| x == d))
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub records: Vec<StoredRecord>,
    /// More records match past the last one returned.
    pub more: bool,
}

/// An RFC 3339 time (any offset) in the stored form, UTC with milliseconds, so that stored
/// times compare as strings. `None`: not RFC 3339.
pub fn normalize_time(s: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()?
        .to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).ok()
}

/// Reading a log back in chain order (verification, export). Synchronous: it is used by the
/// CLI and by tests, not on the request path.
pub trait AuditReader {
    /// Up to `limit` records with `seq > after`, in `seq` order.
    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError>;

    /// The smallest `seq` whose record time is at or after `since` (RFC 3339), if any.
    fn first_seq_since(&self, since: &str) -> Result<Option<u64>, StoreError>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The construction the direct writer replaced: serde through a `Value` tree, then JCS.
    fn through_value(r: &AuditRecord) -> Result<Vec<u8>, StoreError> {
        stella_dsse::jcs::to_vec(r).map_err(|e| StoreError::Encode(e.to_string()))
    }

    fn bare() -> AuditRecord {
        AuditRecord::new(
            "a-1".into(),
            "t-1".into(),
            "POST /api/v1/signer/sign/dsse".into(),
            "2026-12-06T11:00:00.123Z".into(),
        )
    }

    fn full() -> AuditRecord {
        let s = |x: &str| Some(x.to_string());
        AuditRecord {
            tenant: s("acme"),
            installation: s("inst-1"),
            caller: Caller {
                sub: s("svc"),
                client: s("ci"),
            },
            sender_binding: s("dpop jkt=abc"),
            poe_state: Some(PoeState::Grace),
            license_id: s("lic"),
            plan: s("pro"),
            bypass_reason: s("outage \"ticket\" 42\n"),
            subject_digests: vec!["sha256:00".into(), "sha256:ff".into()],
            predicate_type: s("https://slsa.dev/provenance/v1"),
            scanner_digest: s("sha256:aa"),
            scanner_verdict: s("pass"),
            signing_mode: s("keyless"),
            key_ids: vec!["k1".into(), "k\u{e000}2".into(), "\u{1f600}".into()],
            certificate_serial: s("01"),
            certificate_san: s("https://signer.example/\u{7f}"),
            certificate_issuer: s("https://issuer.example"),
            key_source: s("ephemeral-reused"),
            tlog_index: Some(7),
            tlog_uuid: s("uuid"),
            envelope_sha256: s("ee"),
            outcome: Outcome::Signed,
            status: 200,
            reason_code: s("code"),
            reason: s("ctrl \u{0}\u{1f}\\ tab\t"),
            latency_ms: 12.345,
            ..bare()
        }
    }

    #[test]
    fn direct_canonical_json_is_byte_identical_to_the_value_tree() {
        let mut cases = vec![bare(), full()];
        for latency in [
            0.0,
            -0.0,
            3.0,
            1.5,
            1e21,
            1e-7,
            123456.789,
            f64::MAX,
            5e-324,
        ] {
            cases.push(AuditRecord {
                latency_ms: latency,
                ..full()
            });
        }
        for index in [0, (1 << 53) - 1, 1 << 53, (1 << 53) + 1, u64::MAX] {
            cases.push(AuditRecord {
                tlog_index: Some(index),
                ..bare()
            });
        }
        for state in [
            PoeState::Valid,
            PoeState::Cached,
            PoeState::Bypass,
            PoeState::Denied,
        ] {
            cases.push(AuditRecord {
                poe_state: Some(state),
                outcome: Outcome::Denied,
                ..bare()
            });
        }
        cases.push(AuditRecord {
            caller: Caller {
                sub: Some("only".into()),
                client: None,
            },
            outcome: Outcome::Verified,
            status: u16::MAX,
            ..bare()
        });
        cases.push(AuditRecord {
            key_ids: vec![String::new()],
            ..bare()
        });
        for r in &cases {
            let direct = r.to_canonical_json().unwrap();
            assert_eq!(
                String::from_utf8(direct.clone()).unwrap(),
                String::from_utf8(through_value(r).unwrap()).unwrap()
            );
            assert!(stella_dsse::jcs::is_canonical(&direct));
            // Reads back (a log index above 2^53 is written as a double, as it always was).
            if r.tlog_index.is_none_or(|i| i <= 1 << 53) {
                let back: AuditRecord = serde_json::from_slice(&direct).unwrap();
                assert_eq!(back.to_canonical_json().unwrap(), direct);
            }
        }
    }

    #[test]
    fn a_non_finite_latency_fails_as_before() {
        for latency in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let r = AuditRecord {
                latency_ms: latency,
                ..full()
            };
            let direct = r.to_canonical_json().unwrap_err().to_string();
            assert_eq!(direct, through_value(&r).unwrap_err().to_string());
            assert!(direct.starts_with("cannot encode the record"), "{direct}");
        }
    }
}
