//! The OpenAPI 3.1 document served at `GET /openapi.json`.

use serde_json::{json, Value};

fn problem(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn errors() -> Value {
    json!({
        "400": problem("invalid_request: malformed body, unknown field, predicate type outside the catalogue"),
        "401": problem("invalid_token, invalid_dpop_proof, use_dpop_nonce (WWW-Authenticate: DPoP ...; DPoP-Nonce)"),
        "403": problem("insufficient_scope, tenant_mismatch, entitlement_denied, release_untrusted"),
        "413": problem("artifact_too_large"),
        "429": problem("plan_throttled (Retry-After)"),
        "503": problem("upstream_unavailable: Licensing past grace, Authority keys, audit log, key backend, release registry"),
    })
}

/// The document.
pub(crate) fn document() -> Value {
    let sec = json!([{"dpop": []}, {"mtls": []}]);
    let mut sign_dsse_responses = errors();
    sign_dsse_responses["200"] = json!({"description": "Signed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignDsseResponse"}}}});
    let mut export_responses = errors();
    export_responses["200"] = json!({"description": "Signed manifest tuple", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignExportResponse"}}}});
    let mut referrers_responses = json!({
        "400": problem("invalid_request: digest missing, repeated or not sha256:<64 lowercase hex>"),
        "401": problem("invalid_token, invalid_dpop_proof, use_dpop_nonce (WWW-Authenticate: DPoP ...; DPoP-Nonce)"),
        "403": problem("insufficient_scope, tenant_mismatch"),
        "503": problem("upstream_unavailable: the release registry cannot answer, audit log"),
    });
    referrers_responses["200"] = json!({"description": "Trust verdict (trusted or not)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReferrersVerdict"}}}});
    let audit_errors = json!({
        "400": problem("invalid_request: unknown or repeated parameter, bad time, outcome, subject or limit, cursor not valid for this query"),
        "401": problem("invalid_token, invalid_dpop_proof, use_dpop_nonce (WWW-Authenticate: DPoP ...; DPoP-Nonce)"),
        "403": problem("insufficient_scope (signer.audit), tenant_mismatch (another tenant without signer.audit.admin)"),
        "404": problem("not_found: this audit backend cannot be queried / no signed checkpoints configured"),
        "503": problem("upstream_unavailable: the audit log or checkpoint cannot be read"),
    });
    let mut audit_responses = audit_errors.clone();
    audit_responses["200"] = json!({"description": "One page of audit records in chain order", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}}});
    let mut head_responses = audit_errors;
    head_responses["200"] = json!({"description": "The latest signed checkpoint of the audit chain head", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditHead"}}}});
    let audit_headers = json!([
        {"name": "DPoP", "in": "header", "required": false, "schema": {"type": "string"}, "description": "DPoP proof (RFC 9449) for DPoP-bound tokens"},
        {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}},
        {"name": "X-Stella-Tenant", "in": "header", "required": false, "schema": {"type": "string"}}
    ]);
    let mut audit_params = json!([
        {"name": "since", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}, "description": "Records at or after this time (RFC 3339)"},
        {"name": "until", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}, "description": "Records before this time (RFC 3339)"},
        {"name": "tenant", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Defaults to the token's tenant; another tenant, or all (parameter absent), needs the signer.audit.admin scope"},
        {"name": "outcome", "in": "query", "required": false, "schema": {"enum": ["signed", "verified", "denied", "error"]}},
        {"name": "subject", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}, "description": "Records with this subject digest"},
        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": stella_store::MAX_QUERY_LIMIT, "default": crate::audit_api::DEFAULT_LIMIT}},
        {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "nextCursor of the previous page (opaque; valid only with the same filters)"}
    ]);
    if let (Some(p), Some(h)) = (audit_params.as_array_mut(), audit_headers.as_array()) {
        p.extend(h.iter().cloned());
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Stella Signer",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Signs in-toto statements (DSSE) and export manifests for StellaOps callers holding a sender-constrained Authority token (DPoP or mTLS) and a Proof-of-Entitlement."
        },
        "paths": {
            "/api/v1/signer/sign/dsse": {"post": {
                "operationId": "signDsse",
                "summary": "Sign an in-toto statement as a DSSE envelope",
                "security": sec,
                "parameters": [
                    {"name": "DPoP", "in": "header", "required": false, "schema": {"type": "string"}, "description": "DPoP proof (RFC 9449) for DPoP-bound tokens"},
                    {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}},
                    {"name": "X-Stella-Tenant", "in": "header", "required": false, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignDsseRequest"}}}},
                "responses": sign_dsse_responses
            }},
            "/api/v1/signer/sign/export": {"post": {
                "operationId": "signExport",
                "summary": "Sign an Export Center manifest: canonical manifest + signature tuple",
                "security": sec,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignExportRequest"}}}},
                "responses": export_responses
            }},
            "/api/v1/signer/verify/referrers": {"get": {
                "operationId": "verifyReferrers",
                "summary": "Release-integrity verdict for a scanner image: allow-list, then signature referrers in release.repository checked against the release keyring",
                "description": "Authenticated like the sign routes (scope signer.sign, DPoP or mTLS sender constraint); no Proof-of-Entitlement or quota. Audited.",
                "security": sec,
                "parameters": [
                    {"name": "digest", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}},
                    {"name": "DPoP", "in": "header", "required": false, "schema": {"type": "string"}, "description": "DPoP proof (RFC 9449) for DPoP-bound tokens"},
                    {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}},
                    {"name": "X-Stella-Tenant", "in": "header", "required": false, "schema": {"type": "string"}}
                ],
                "responses": referrers_responses
            }},
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "Process is alive"}}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready (audit log, Authority keys, draining)"}}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "This document"}}}}
        },
        "components": {
            "securitySchemes": {
                "dpop": {"type": "http", "scheme": "DPoP", "bearerFormat": "JWT", "description": "Authority access token (aud signer, scope signer.sign — signer.audit for the audit routes — tid, inst) bound with cnf.jkt; DPoP proof in the DPoP header"},
                "mtls": {"type": "mutualTLS", "description": "Authority access token bound with cnf.x5t#S256 to the TLS client certificate, sent as Bearer"}
            },
            "schemas": {
                "Subject": {"type": "object", "required": ["name", "digest"], "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "digest": {"type": "object", "required": ["sha256"], "additionalProperties": {"type": "string"}}}},
                "Poe": {"type": "object", "required": ["format", "value"], "additionalProperties": false,
                    "properties": {"format": {"const": "jwt"}, "value": {"type": "string"}}},
                "Options": {"type": "object", "additionalProperties": false, "properties": {
                    "signingMode": {"enum": ["keyless", "kms", "hsm", "file"]},
                    "returnBundle": {"enum": ["dsse", "sigstore", "dsse+cert"]}}},
                "SignDsseRequest": {"type": "object", "required": ["subject", "predicateType", "predicate"], "additionalProperties": false,
                    "properties": {
                        "subject": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Subject"}},
                        "predicateType": {"type": "string", "enum": stella_dsse::predicates::allowed_types()},
                        "predicate": {"type": "object"},
                        "scannerImageDigest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                        "poe": {"$ref": "#/components/schemas/Poe"},
                        "options": {"$ref": "#/components/schemas/Options"}}},
                "Policy": {"type": "object", "properties": {"plan": {"type": "string"}, "maxArtifactBytes": {"type": "integer"}, "qpsRemaining": {"type": "integer"}}},
                "SignDsseResponse": {"type": "object", "required": ["bundle", "policy", "auditId"], "properties": {
                    "bundle": {"type": "object", "properties": {
                        "dsse": {"type": "object", "description": "DSSE envelope {payloadType, payload, signatures[{keyid, sig}]}"},
                        "sigstore": {"type": "object", "description": "Sigstore bundle v0.3 (returnBundle sigstore or dsse+cert; keyless: leaf certificate, RFC 3161 timestamp, log entry when configured)"},
                        "certificateChain": {"type": "array", "items": {"type": "string"}},
                        "mode": {"type": "string"},
                        "signingIdentity": {"type": "object"}}},
                    "policy": {"$ref": "#/components/schemas/Policy"},
                    "auditId": {"type": "string"}}},
                "SignExportRequest": {"type": "object", "required": ["manifest"], "additionalProperties": false, "properties": {
                    "manifest": {"type": "object"},
                    "payloadType": {"type": "string", "enum": crate::wire::EXPORT_PAYLOAD_TYPES},
                    "scannerImageDigest": {"type": "string"},
                    "poe": {"$ref": "#/components/schemas/Poe"},
                    "options": {"$ref": "#/components/schemas/Options"}}},
                "SignExportResponse": {"type": "object", "properties": {
                    "manifest": {"type": "object"}, "manifestDigest": {"type": "string"}, "payloadType": {"type": "string"},
                    "signatures": {"type": "array", "items": {"type": "object", "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}, "algorithm": {"type": "string"}, "publicKey": {"type": "string"}}}},
                    "dsse": {"type": "object"}, "policy": {"$ref": "#/components/schemas/Policy"}, "auditId": {"type": "string"}}},
                "ReferrersVerdict": {"type": "object", "required": ["digest", "trusted", "reason"], "properties": {
                    "digest": {"type": "string"},
                    "trusted": {"type": "boolean"},
                    "signer": {"type": ["string", "null"], "description": "Keyring id of the release key that signed"},
                    "keyid": {"type": ["string", "null"]},
                    "artifactType": {"type": ["string", "null"], "description": "Artifact type of the trusted signature referrer"},
                    "reason": {"type": "string"},
                    "auditId": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status", "code"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "code": {"enum": ["invalid_request", "invalid_token", "invalid_dpop_proof", "use_dpop_nonce", "insufficient_scope", "tenant_mismatch", "entitlement_denied", "release_untrusted", "artifact_too_large", "plan_throttled", "upstream_unavailable", "not_found"]},
                    "detail": {"type": "string"}, "auditId": {"type": "string"}, "traceId": {"type": "string"}}}
            }
        }
    });
    // The audit API (crate::audit_api), added here to keep the literal above within the
    // macro's recursion limit.
    let audit_paths = json!({
            "/api/v1/signer/audit": {"get": {
                "operationId": "auditQuery",
                "summary": "Read audit records: filtered by time range, tenant, outcome and subject digest, in chain order, cursor-paginated",
                "description": "Scope signer.audit (a signer.sign token is refused), DPoP or mTLS sender constraint. A caller reads its own tenant's records only, unless its token also carries signer.audit.admin. Reads are counted in metrics, not written to the audit log.",
                "security": sec,
                "parameters": audit_params,
                "responses": audit_responses
            }},
            "/api/v1/signer/audit/head": {"get": {
                "operationId": "auditHead",
                "summary": "The latest signed checkpoint of the audit chain head (global: one chain for every tenant)",
                "description": "Scope signer.audit, DPoP or mTLS sender constraint. Verify the envelope with the audit checkpoint public key.",
                "security": sec,
                "parameters": audit_headers,
                "responses": head_responses
            }}
    });
    let audit_schemas = json!({
                "AuditPage": {"type": "object", "required": ["records", "nextCursor", "limit"], "additionalProperties": false, "properties": {
                    "records": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "nextCursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page; null on the last page"},
                    "limit": {"type": "integer"}}},
                "AuditEntry": {"type": "object", "required": ["seq", "hash", "prevHash", "record"], "additionalProperties": false, "properties": {
                    "seq": {"type": "integer", "minimum": 1, "description": "Position in the hash chain"},
                    "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "prevHash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "record": {"$ref": "#/components/schemas/AuditRecord"}}},
                "AuditRecord": {"type": "object", "description": "SPEC §4 audit record (stored canonical JSON)",
                    "required": ["time", "auditId", "traceId", "route", "caller", "outcome", "status", "latencyMs"], "additionalProperties": false, "properties": {
                    "time": {"type": "string"}, "auditId": {"type": "string"}, "traceId": {"type": "string"}, "route": {"type": "string"},
                    "tenant": {"type": "string"}, "installation": {"type": "string"},
                    "caller": {"type": "object", "additionalProperties": false, "properties": {"sub": {"type": "string"}, "client": {"type": "string"}}},
                    "senderBinding": {"type": "string"},
                    "poeState": {"enum": ["valid", "cached", "grace", "bypass", "denied"]},
                    "licenseId": {"type": "string"}, "plan": {"type": "string"}, "bypassReason": {"type": "string"},
                    "subjectDigests": {"type": "array", "items": {"type": "string"}},
                    "predicateType": {"type": "string"}, "scannerDigest": {"type": "string"}, "scannerVerdict": {"type": "string"},
                    "signingMode": {"type": "string"}, "keyIds": {"type": "array", "items": {"type": "string"}},
                    "certificateSerial": {"type": "string"}, "envelopeSha256": {"type": "string"},
                    "outcome": {"enum": ["signed", "verified", "denied", "error"]},
                    "status": {"type": "integer"}, "reasonCode": {"type": "string"}, "reason": {"type": "string"},
                    "latencyMs": {"type": "number"}}},
                "AuditHead": {"type": "object", "required": ["checkpoint", "envelope"], "additionalProperties": false, "properties": {
                    "checkpoint": {"type": "object", "required": ["type", "backend", "records", "headHash", "time"], "additionalProperties": false, "properties": {
                        "type": {"const": "stella.audit.checkpoint/v1"}, "backend": {"type": "string"},
                        "records": {"type": "integer", "minimum": 0}, "headHash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "time": {"type": "string"}}},
                    "envelope": {"type": "object", "required": ["payloadType", "payload", "signatures"], "description": "DSSE envelope, payload type application/vnd.stella.audit-checkpoint.v1+json", "properties": {
                        "payloadType": {"const": "application/vnd.stella.audit-checkpoint.v1+json"}, "payload": {"type": "string"},
                        "signatures": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["sig"], "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}}}}}}}}
    });
    if let (Some(d), Value::Object(e)) = (doc["paths"].as_object_mut(), audit_paths) {
        d.extend(e);
    }
    if let (Some(d), Value::Object(e)) =
        (doc["components"]["schemas"].as_object_mut(), audit_schemas)
    {
        d.extend(e);
    }
    doc
}
