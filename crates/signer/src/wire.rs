//! The API's wire types: request bodies (`Deserialize`, strict: unknown fields refused) and
//! response bodies (`Serialize`). Handlers build these structs, never `json!` literals, and
//! the OpenAPI document ([`crate::openapi`]) describes exactly them (checked by the tests
//! that send every documented route and status through [`crate::openapi::document`]).
//!
//! Responses are written through [`json_response`], which serializes to a
//! [`serde_json::Value`] first: object keys come out sorted, byte for byte as the `json!`
//! literals this replaced.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------

/// `subject[]` of `/sign/dsse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectIn {
    pub(crate) name: String,
    pub(crate) digest: BTreeMap<String, String>,
}

/// `poe`: the Proof-of-Entitlement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoeIn {
    pub(crate) format: String,
    pub(crate) value: String,
}

/// `options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OptionsIn {
    #[serde(default)]
    pub(crate) signing_mode: Option<String>,
    #[serde(default)]
    pub(crate) return_bundle: Option<String>,
}

/// `POST /sign/dsse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SignDsseIn {
    pub(crate) subject: Vec<SubjectIn>,
    pub(crate) predicate_type: String,
    pub(crate) predicate: Value,
    #[serde(default)]
    pub(crate) scanner_image_digest: Option<String>,
    #[serde(default)]
    pub(crate) poe: Option<PoeIn>,
    #[serde(default)]
    pub(crate) options: Option<OptionsIn>,
}

/// Payload types `/sign/export` signs.
pub const EXPORT_PAYLOAD_TYPES: &[&str] = &[
    "application/vnd.stellaops.export-manifest+json;version=1",
    "application/vnd.stellaops.mirror+json;version=1",
];

/// `POST /sign/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SignExportIn {
    pub(crate) manifest: Value,
    #[serde(default)]
    pub(crate) payload_type: Option<String>,
    #[serde(default)]
    pub(crate) scanner_image_digest: Option<String>,
    #[serde(default)]
    pub(crate) poe: Option<PoeIn>,
    #[serde(default)]
    pub(crate) options: Option<OptionsIn>,
}

/// The fields of a sign request the gates read (entitlement, release, signing mode).
#[derive(Debug, Default)]
pub(crate) struct GateFields {
    pub(crate) poe: Option<PoeIn>,
    pub(crate) scanner_image_digest: Option<String>,
    pub(crate) options: Option<OptionsIn>,
}

impl GateFields {
    /// Take them out of a request body.
    pub(crate) fn take(
        poe: &mut Option<PoeIn>,
        scanner_image_digest: &mut Option<String>,
        options: &mut Option<OptionsIn>,
    ) -> Self {
        GateFields {
            poe: poe.take(),
            scanner_image_digest: scanner_image_digest.take(),
            options: options.take(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Responses
// ------------------------------------------------------------------------------------------

/// `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
}

/// `GET /readyz` (200 or 503).
#[derive(Debug, Serialize)]
pub struct Ready {
    pub status: &'static str,
    pub checks: ReadyChecks,
}

/// What `/readyz` checked.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyChecks {
    pub audit: bool,
    pub quotas: bool,
    pub authority_keys: bool,
    pub draining: bool,
}

/// `policy` of a sign answer: the caller's plan as applied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub plan: String,
    pub max_artifact_bytes: u64,
    pub qps_remaining: u64,
}

/// `signingIdentity` of a keyful signature.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyIdentity {
    /// Always `key`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tenant: String,
    pub key_ids: Vec<String>,
    pub algorithms: Vec<&'static str>,
}

/// `signingIdentity`: the keys, or the keyless certificate's identity (`type:
/// certificate`, as [`stella_keyless::SigningIdentity`] renders it, plus tenant, signing
/// time and log entry).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SigningIdentity {
    Key(KeyIdentity),
    Certificate(Value),
}

/// `bundle` of a `/sign/dsse` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// The DSSE envelope.
    pub dsse: Value,
    /// PEM certificates, leaf first (keyless); empty for keys.
    pub certificate_chain: Vec<String>,
    pub mode: Option<String>,
    pub signing_identity: SigningIdentity,
    /// Sigstore bundle v0.3 (`returnBundle: sigstore`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigstore: Option<Value>,
}

/// `POST /sign/dsse` 200 (before `auditId`).
#[derive(Debug, Serialize)]
pub struct SignDsseResponse {
    pub bundle: Bundle,
    pub policy: Policy,
}

/// What names the key of an export signature: its public key, or the keyless leaf
/// certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SignatureKey {
    #[serde(rename_all = "camelCase")]
    PublicKey {
        public_key: String,
    },
    Certificate {
        certificate: Option<String>,
    },
}

/// One signature of a `/sign/export` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSignature {
    pub keyid: String,
    pub sig: String,
    pub algorithm: &'static str,
    #[serde(flatten)]
    pub key: SignatureKey,
}

/// `POST /sign/export` 200 (before `auditId`): the manifest and its signature tuple, beside
/// the same `dsse`, `certificateChain`, `mode`, `signingIdentity` (and keyless: `sigstore`)
/// as a `/sign/dsse` bundle.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignExportResponse {
    pub manifest: Value,
    pub manifest_digest: String,
    pub payload_type: String,
    pub signatures: Vec<ExportSignature>,
    #[serde(flatten)]
    pub signed: Bundle,
    pub policy: Policy,
}

/// `GET /verify/referrers` 200 (before `auditId`): the release gate's verdict.
pub type ReferrersVerdict = crate::release::ReleaseVerdict;

/// The answer of an audited route: the body and the id of its audit record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audited<T> {
    #[serde(flatten)]
    pub body: T,
    pub audit_id: String,
}

/// One record of `GET /audit`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    /// The stored record (canonical JSON, SPEC §4).
    pub record: Value,
}

/// `GET /audit` 200.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub records: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
    pub limit: usize,
}

/// `GET /audit/head` 200.
#[derive(Debug, Serialize)]
pub struct AuditHead<C: Serialize> {
    pub checkpoint: C,
    pub envelope: Value,
}

/// `POST /dev/authority/token` 200 (dev only).
#[derive(Debug, Serialize)]
pub struct DevToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: &'static str,
}

/// `POST /dev/authority/token` 400 (OAuth error, dev only).
#[derive(Debug, Serialize)]
pub struct OAuthError<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
}

/// `POST /dev/license/introspect` (dev only).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DevIntrospection {
    #[serde(rename_all = "camelCase")]
    Active {
        active: bool,
        license_id: String,
        plan: String,
        limits: DevLimits,
    },
    Inactive {
        active: bool,
        reason: &'static str,
    },
}

/// `limits` of an active dev introspection.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevLimits {
    pub qps: f64,
    pub burst: f64,
    pub max_concurrent: u32,
    pub max_artifact_bytes: u64,
}

/// A JSON response with `status`.
pub(crate) fn json_status<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Through a `Value`: keys sorted, as every answer of this service always was.
    let text = match serde_json::to_value(body) {
        Ok(v) => v.to_string(),
        Err(e) => {
            tracing::error!(error = %e, "response body does not serialize");
            return crate::error::ApiError::unavailable("internal error", e.to_string())
                .into_response();
        }
    };
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response (200).
pub(crate) fn json_response<T: Serialize>(body: &T) -> Response {
    json_status(StatusCode::OK, body)
}
