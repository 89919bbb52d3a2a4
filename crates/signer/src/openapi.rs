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
pub fn document() -> Value {
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
    json!({
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
                "dpop": {"type": "http", "scheme": "DPoP", "bearerFormat": "JWT", "description": "Authority access token (aud signer, scope signer.sign, tid, inst) bound with cnf.jkt; DPoP proof in the DPoP header"},
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
                    "payloadType": {"type": "string", "enum": crate::api::EXPORT_PAYLOAD_TYPES},
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
                    "code": {"enum": ["invalid_request", "invalid_token", "invalid_dpop_proof", "use_dpop_nonce", "insufficient_scope", "tenant_mismatch", "entitlement_denied", "release_untrusted", "artifact_too_large", "plan_throttled", "upstream_unavailable"]},
                    "detail": {"type": "string"}, "auditId": {"type": "string"}, "traceId": {"type": "string"}}}
            }
        }
    })
}
