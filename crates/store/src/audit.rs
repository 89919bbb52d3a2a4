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
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, StoreError> {
        stella_dsse::jcs::to_vec(self).map_err(|e| StoreError::Encode(e.to_string()))
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
    /// This link's hash (see [`crate::chain::link_hash`]).
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

    /// The last durable link (`seq` 0 and [`crate::chain::GENESIS`] for an empty log): what a
    /// signed checkpoint ([`crate::checkpoint`]) records. Never ahead of what is committed.
    /// `None`: this backend cannot tell (no checkpoints are written for it).
    fn head(&self) -> StoreFuture<'_, Option<Appended>> {
        Box::pin(async { Ok(None) })
    }

    /// Short backend name for logs (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Committed records matching `query`, in chain (`seq`) order, at most `query.limit`
    /// (the audit API, `GET /api/v1/signer/audit`). Backends answer from indexes: tenant and
    /// outcome by `(field, seq)`, subject digests by digest, time by the `time` column.
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
