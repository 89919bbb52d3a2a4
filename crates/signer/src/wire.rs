//! The API's wire types: request bodies (`Deserialize`, strict: unknown fields refused) and
//! response bodies (`Serialize`). Handlers build these structs, never `json!` literals, and
//! the OpenAPI document ([`crate::openapi`]) describes exactly them (checked by the tests
//! that send every documented route and status through [`crate::openapi::document`]).
//!
//! Responses are written through [`json_response`], which serializes to a
//! [`serde_json::Value`] first: object keys come out sorted, byte for byte as the `json!`
//! literals this replaced. The hot `/sign/dsse` answer is the exception: [`sign_dsse_response`]
//! writes its members in sorted order straight from the structs, the keyful envelope copied
//! from the JSON its audit digest was taken over (same bytes, tested; issue #15).

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

/// Declares a sign route's request body: the route's own members, then the members every
/// sign route takes for the gates (`scannerImageDigest`, `poe`, `options`, in that order: serde
/// names them so in its errors), and `take_gate_fields`. A macro rather than one shared struct
/// of the gates' members: the bodies are strict (`deny_unknown_fields`), and serde cannot
/// combine that with `flatten` (each side would see the other's members as unknown).
macro_rules! sign_request {
    ($(#[$doc:meta])* $name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub(crate) struct $name {
            $($(#[$attr])* pub(crate) $field: $ty,)*
            #[serde(default)]
            pub(crate) scanner_image_digest: Option<String>,
            #[serde(default)]
            pub(crate) poe: Option<PoeIn>,
            #[serde(default)]
            pub(crate) options: Option<OptionsIn>,
        }

        impl $name {
            /// Take the gates' members out of the body.
            pub(crate) fn take_gate_fields(&mut self) -> GateFields {
                GateFields {
                    poe: self.poe.take(),
                    scanner_image_digest: self.scanner_image_digest.take(),
                    options: self.options.take(),
                }
            }
        }
    };
}

sign_request! {
    /// `POST /sign/dsse`.
    SignDsseIn {
        subject: Vec<SubjectIn>,
        predicate_type: String,
        predicate: Value,
    }
}

/// Payload types `/sign/export` signs.
pub(crate) const EXPORT_PAYLOAD_TYPES: &[&str] = &[
    "application/vnd.stellaops.export-manifest+json;version=1",
    "application/vnd.stellaops.mirror+json;version=1",
];

sign_request! {
    /// `POST /sign/export`.
    SignExportIn {
        manifest: Value,
        #[serde(default)]
        payload_type: Option<String>,
    }
}

/// The fields of a sign request the gates read (entitlement, release, signing mode).
#[derive(Debug, Default)]
pub(crate) struct GateFields {
    pub(crate) poe: Option<PoeIn>,
    pub(crate) scanner_image_digest: Option<String>,
    pub(crate) options: Option<OptionsIn>,
}

// ------------------------------------------------------------------------------------------
// Responses
// ------------------------------------------------------------------------------------------

/// `GET /healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub status: &'static str,
}

/// `GET /readyz` (200 or 503).
#[derive(Debug, Serialize)]
pub(crate) struct Ready {
    pub status: &'static str,
    pub checks: ReadyChecks,
}

/// What `/readyz` checked.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReadyChecks {
    pub audit: bool,
    pub quotas: bool,
    pub authority_keys: bool,
    pub draining: bool,
}

/// `policy` of a sign answer: the caller's plan as applied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Policy {
    pub plan: String,
    pub max_artifact_bytes: u64,
    pub qps_remaining: u64,
}

/// `signingIdentity` of a keyful signature.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyIdentity {
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
pub(crate) enum SigningIdentity {
    Key(KeyIdentity),
    Certificate(Value),
}

/// `bundle` of a `/sign/dsse` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bundle {
    /// The DSSE envelope.
    pub dsse: DsseJson,
    /// PEM certificates, leaf first (keyless); empty for keys.
    pub certificate_chain: Vec<String>,
    pub mode: Option<String>,
    pub signing_identity: SigningIdentity,
    /// Sigstore bundle v0.3 (`returnBundle: sigstore`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigstore: Option<Value>,
}

/// `dsse` of a bundle: the keyful signer's envelope, written as [`stella_dsse::Envelope::to_value`]
/// writes it but without building that tree per request (issue #15) — by the `/sign/dsse`
/// answer copied out of the JSON the audit record's envelope digest was taken over
/// ([`stella_dsse::EnvelopeJson`]) — or a JSON value (keyless).
#[derive(Debug, Clone)]
pub(crate) enum DsseJson {
    Envelope(stella_dsse::EnvelopeJson),
    Value(Value),
}

impl Serialize for DsseJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DsseJson::Envelope(e) => e.envelope().sorted_json().serialize(s),
            DsseJson::Value(v) => v.serialize(s),
        }
    }
}

/// `POST /sign/dsse` 200 (before `auditId`).
#[derive(Debug, Serialize)]
pub(crate) struct SignDsseResponse {
    pub bundle: Bundle,
    pub policy: Policy,
}

/// What names the key of an export signature: its public key, or the keyless leaf
/// certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum SignatureKey {
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
pub(crate) struct ExportSignature {
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
pub(crate) struct SignExportResponse {
    pub manifest: Value,
    pub manifest_digest: String,
    pub payload_type: String,
    pub signatures: Vec<ExportSignature>,
    #[serde(flatten)]
    pub signed: Bundle,
    pub policy: Policy,
}

/// `GET /verify/referrers` 200 (before `auditId`): the release gate's verdict.
pub(crate) type ReferrersVerdict = crate::release::ReleaseVerdict;

/// The answer of an audited route: the body and the id of its audit record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Audited<T> {
    #[serde(flatten)]
    pub body: T,
    pub audit_id: String,
}

/// One record of `GET /audit`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditEntry {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    /// The stored record (canonical JSON, SPEC §4).
    pub record: Value,
}

/// `GET /audit` 200.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditPage {
    pub records: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
    pub limit: usize,
}

/// `GET /audit/head` 200.
#[derive(Debug, Serialize)]
pub(crate) struct AuditHead<C: Serialize> {
    pub checkpoint: C,
    pub envelope: Value,
}

/// `POST /dev/authority/token` 200 (dev only).
#[derive(Debug, Serialize)]
pub(crate) struct DevToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: &'static str,
}

/// `POST /dev/authority/token` 400 (OAuth error, dev only).
#[derive(Debug, Serialize)]
pub(crate) struct OAuthError<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
}

/// `POST /dev/license/introspect` (dev only).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum DevIntrospection {
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
pub(crate) struct DevLimits {
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

/// The `/sign/dsse` 200 answer, written straight from the structs (no `Value` tree of the
/// whole answer, issue #15): the same bytes as [`json_response`] of `Audited { body,
/// audit_id }`. [`write_dsse_answer`] writes every member in sorted order, the keyful envelope
/// copied from the JSON already written for its digest; tests hold it to `serde_json` over
/// [`SortedDsseAnswer`] (every member declared in sorted order; the nested `Value`s, envelope
/// and keyless identity, serialise sorted by themselves), and that to the `Value` tree.
pub(crate) fn sign_dsse_response(body: &SignDsseResponse, audit_id: &str) -> Response {
    match write_dsse_answer(body, audit_id) {
        Ok(bytes) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "response body does not serialize");
            crate::error::ApiError::unavailable("internal error", e.to_string()).into_response()
        }
    }
}

/// `Audited<SignDsseResponse>` as `serde_json` writes [`SortedDsseAnswer`]: the members in
/// sorted order, each value by `serde_json` — except a keyful envelope, copied in as
/// [`stella_dsse::EnvelopeJson::write_sorted`] writes it (base64 and escaping not done again).
///
/// The answer is written into a per-thread scratch buffer and copied out at its exact size:
/// one allocation, no spare capacity (a keyful answer is ~1 KB: sized to fit, it is served
/// from glibc's per-thread cache, where an estimate with room to spare was not; and `Bytes`
/// takes a vector whose length is its capacity without a second allocation for its
/// reference count).
fn write_dsse_answer(
    body: &SignDsseResponse,
    audit_id: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    thread_local! {
        static ANSWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Scratch kept between answers unless it grew past this (a rare huge answer).
    const KEEP: usize = 16 * 1024;
    ANSWER.with_borrow_mut(|scratch| {
        scratch.clear();
        let written = write_dsse_answer_into(body, audit_id, scratch);
        let out = written.map(|()| scratch.as_slice().to_vec());
        if scratch.capacity() > KEEP {
            *scratch = Vec::new();
        }
        out
    })
}

/// [`write_dsse_answer`]'s bytes, appended to `out`.
fn write_dsse_answer_into(
    body: &SignDsseResponse,
    audit_id: &str,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let b = &body.bundle;
    let p = &body.policy;
    let envelope_len = match &b.dsse {
        DsseJson::Envelope(e) => e.json().len(),
        DsseJson::Value(_) => 0,
    };
    out.reserve(envelope_len + 512);
    out.extend_from_slice(b"{\"auditId\":");
    serde_json::to_writer(&mut *out, audit_id)?;
    out.extend_from_slice(b",\"bundle\":{\"certificateChain\":");
    serde_json::to_writer(&mut *out, &b.certificate_chain)?;
    out.extend_from_slice(b",\"dsse\":");
    match &b.dsse {
        DsseJson::Envelope(e) => e.write_sorted(out),
        DsseJson::Value(v) => serde_json::to_writer(&mut *out, v)?,
    }
    out.extend_from_slice(b",\"mode\":");
    serde_json::to_writer(&mut *out, &b.mode)?;
    out.extend_from_slice(b",\"signingIdentity\":");
    serde_json::to_writer(&mut *out, &SortedIdentity::new(&b.signing_identity))?;
    if let Some(sigstore) = &b.sigstore {
        out.extend_from_slice(b",\"sigstore\":");
        serde_json::to_writer(&mut *out, sigstore)?;
    }
    out.extend_from_slice(b"},\"policy\":");
    serde_json::to_writer(
        &mut *out,
        &SortedPolicy {
            max_artifact_bytes: p.max_artifact_bytes,
            plan: &p.plan,
            qps_remaining: p.qps_remaining,
        },
    )?;
    out.push(b'}');
    Ok(())
}

/// `Audited<SignDsseResponse>` with its members (and its members' members) in sorted order:
/// the reference [`write_dsse_answer`] is held to.
#[cfg(test)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SortedDsseAnswer<'a> {
    audit_id: &'a str,
    bundle: SortedBundle<'a>,
    policy: SortedPolicy<'a>,
}

#[cfg(test)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SortedBundle<'a> {
    certificate_chain: &'a [String],
    dsse: &'a DsseJson,
    mode: &'a Option<String>,
    signing_identity: SortedIdentity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sigstore: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SortedIdentity<'a> {
    Key(SortedKeyIdentity<'a>),
    Certificate(&'a Value),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SortedKeyIdentity<'a> {
    algorithms: &'a [&'static str],
    key_ids: &'a [String],
    tenant: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SortedPolicy<'a> {
    max_artifact_bytes: u64,
    plan: &'a str,
    qps_remaining: u64,
}

impl<'a> SortedIdentity<'a> {
    fn new(identity: &'a SigningIdentity) -> Self {
        match identity {
            SigningIdentity::Key(k) => SortedIdentity::Key(SortedKeyIdentity {
                algorithms: &k.algorithms,
                key_ids: &k.key_ids,
                tenant: &k.tenant,
                kind: k.kind,
            }),
            SigningIdentity::Certificate(v) => SortedIdentity::Certificate(v),
        }
    }
}

#[cfg(test)]
impl<'a> SortedDsseAnswer<'a> {
    fn new(body: &'a SignDsseResponse, audit_id: &'a str) -> Self {
        let b = &body.bundle;
        let p = &body.policy;
        SortedDsseAnswer {
            audit_id,
            bundle: SortedBundle {
                certificate_chain: &b.certificate_chain,
                dsse: &b.dsse,
                mode: &b.mode,
                signing_identity: SortedIdentity::new(&b.signing_identity),
                sigstore: b.sigstore.as_ref(),
            },
            policy: SortedPolicy {
                max_artifact_bytes: p.max_artifact_bytes,
                plan: &p.plan,
                qps_remaining: p.qps_remaining,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn answer(
        identity: SigningIdentity,
        sigstore: Option<Value>,
        mode: Option<&str>,
    ) -> SignDsseResponse {
        SignDsseResponse {
            bundle: Bundle {
                dsse: DsseJson::Value(
                    json!({"payloadType": "application/vnd.in-toto+json", "payload": "eyJ9\"\u{1}",
                    "signatures": [{"sig": "MEUC", "keyid": "k1"}]}),
                ),
                certificate_chain: vec!["-----BEGIN CERTIFICATE-----\nAA\n".into()],
                mode: mode.map(str::to_string),
                signing_identity: identity,
                sigstore,
            },
            policy: Policy {
                plan: "pro \u{e000}\u{1f600}".into(),
                max_artifact_bytes: u64::MAX,
                qps_remaining: 0,
            },
        }
    }

    #[test]
    fn the_direct_dsse_answer_is_byte_identical_to_the_value_tree() {
        let key = SigningIdentity::Key(KeyIdentity {
            kind: "key",
            tenant: "acme".into(),
            key_ids: vec!["b".into(), "a".into()],
            algorithms: vec!["ecdsa-p256", "ed25519"],
        });
        let cert =
            SigningIdentity::Certificate(json!({"type": "certificate", "san": "x", "issuer": "y",
            "tlogEntry": {"logIndex": 9, "integratedTime": 1}}));
        let cases = [
            answer(key.clone(), None, Some("file")),
            answer(key, Some(json!({"mediaType": "m", "a": [1, 2.5]})), None),
            answer(cert, Some(json!({"z": null})), Some("keyless")),
        ];
        for body in cases {
            let direct = serde_json::to_vec(&SortedDsseAnswer::new(&body, "aud-\"1")).unwrap();
            let written = write_dsse_answer(&body, "aud-\"1").unwrap();
            // Copied out of the per-thread scratch at its exact size (one allocation, which
            // `Bytes` takes without another).
            assert_eq!(written.len(), written.capacity());
            let via_value = serde_json::to_value(Audited {
                body,
                audit_id: "aud-\"1".to_string(),
            })
            .unwrap()
            .to_string();
            assert_eq!(String::from_utf8(direct).unwrap(), via_value);
            assert_eq!(String::from_utf8(written).unwrap(), via_value);
        }
    }

    /// The hand-written answer is `serde_json`'s over the sorted structs, whatever the
    /// members hold: strings with every ASCII character (escapes), empty and several
    /// certificates, modes, identities, sigstore bundles, numbers at their limits, and keyful
    /// envelopes of varied payloads and signatures beside keyless `Value`s.
    #[test]
    fn the_written_answer_is_serde_json_over_the_sorted_structs() {
        let ascii: String = (0u8..=0x7f).map(char::from).collect();
        let strings = [
            String::new(),
            "acme".to_string(),
            ascii,
            "é \u{e000} \u{1f600} \u{2028}".to_string(),
        ];
        let mut n = 0;
        for (i, text) in strings.iter().enumerate() {
            let envelope = stella_dsse::Envelope {
                payload_type: text.clone(),
                payload: (0..i * 300).map(|j| (j * 7) as u8).collect(),
                signatures: (0..i)
                    .map(|j| stella_dsse::Signature {
                        keyid: strings[(i + j) % strings.len()].clone(),
                        sig: vec![j as u8; 70 + j],
                    })
                    .collect(),
            };
            let identities = [
                SigningIdentity::Key(KeyIdentity {
                    kind: "key",
                    tenant: text.clone(),
                    key_ids: strings.to_vec(),
                    algorithms: vec!["ecdsa-p256"; i],
                }),
                SigningIdentity::Certificate(json!({"type": "certificate", "san": text})),
            ];
            let dsses = [
                DsseJson::Envelope(stella_dsse::EnvelopeJson::new(envelope.clone())),
                DsseJson::Value(envelope.to_value()),
            ];
            for identity in &identities {
                for dsse in &dsses {
                    for sigstore in [None, Some(json!({"m": text, "n": [1, -2, 0.5]}))] {
                        let mut body = answer(identity.clone(), sigstore, Some(text.as_str()));
                        body.bundle.dsse = dsse.clone();
                        body.bundle.certificate_chain = strings[..i].to_vec();
                        body.policy.plan = text.clone();
                        body.policy.qps_remaining = i as u64;
                        if i == 0 {
                            body.bundle.mode = None;
                        }
                        let want = serde_json::to_vec(&SortedDsseAnswer::new(&body, text)).unwrap();
                        let got = write_dsse_answer(&body, text).unwrap();
                        assert_eq!(
                            String::from_utf8(got).unwrap(),
                            String::from_utf8(want).unwrap()
                        );
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 4 * 2 * 2 * 2);
    }

    /// An envelope written directly (`DsseJson::Envelope`) gives the bytes its `to_value` tree
    /// gave, in the direct answer and through `json_response`'s `Value` path alike.
    #[test]
    fn an_envelope_dsse_is_byte_identical_to_its_value() {
        let envelopes = [
            stella_dsse::Envelope {
                payload_type: "application/vnd.in-toto+json".into(),
                payload: br#"{"_type":"https://in-toto.io/Statement/v1","x":"\u0001"}"#.to_vec(),
                signatures: vec![stella_dsse::Signature {
                    keyid: "sha256:ab\"c".into(),
                    sig: vec![0x30, 0x45, 0, 255, 7],
                }],
            },
            stella_dsse::Envelope {
                payload_type: "t \u{1f600}".into(),
                payload: vec![],
                signatures: vec![
                    stella_dsse::Signature {
                        keyid: String::new(),
                        sig: vec![1],
                    },
                    stella_dsse::Signature {
                        keyid: "k2".into(),
                        sig: vec![2; 71],
                    },
                ],
            },
        ];
        for env in envelopes {
            let key = SigningIdentity::Key(KeyIdentity {
                kind: "key",
                tenant: "acme".into(),
                key_ids: vec!["a".into()],
                algorithms: vec!["ecdsa-p256"],
            });
            let mut new = answer(key, None, Some("file"));
            let mut old = answer(new.bundle.signing_identity.clone(), None, Some("file"));
            new.bundle.dsse = DsseJson::Envelope(stella_dsse::EnvelopeJson::new(env.clone()));
            old.bundle.dsse = DsseJson::Value(env.to_value());
            let direct_new = serde_json::to_vec(&SortedDsseAnswer::new(&new, "a1")).unwrap();
            let direct_old = serde_json::to_vec(&SortedDsseAnswer::new(&old, "a1")).unwrap();
            assert_eq!(
                String::from_utf8(direct_new).unwrap(),
                String::from_utf8(direct_old).unwrap()
            );
            assert_eq!(
                serde_json::to_value(&new.bundle).unwrap(),
                serde_json::to_value(&old.bundle).unwrap()
            );
            let written = write_dsse_answer(&new, "a1").unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_value(Audited {
                    body: old,
                    audit_id: "a1".to_string(),
                })
                .unwrap()
                .to_string()
            );
        }
    }
}
