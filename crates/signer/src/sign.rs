//! The audited routes' handlers, after the gates: `/sign/dsse`, `/sign/export` (both admitted
//! by [`Ctx::admit_signing`]) and `/verify/referrers`. Each returns its typed answer
//! ([`crate::wire`]); [`crate::api`] writes the audit record and the response.
//!
//! Signing never runs on the async executor's worker threads unless it is a few
//! microseconds of CPU: [`off_executor`] is the one way out, used for keys that block (HSM,
//! KMS: FFI, HTTP) and for keyless signing (key generation, certificate, timestamp and the
//! bundle's full verification).

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use stella_dsse::{Statement, Subject};
use stella_keys::Signer;
use stella_store::Lease;

use stella_store::AuditRecord;

use crate::app::App;
use crate::error::ApiError;
use crate::gates::{invalid, key_identity, Admitted, Ctx, SignBody, Signing};
use crate::wire::{
    Bundle, DsseJson, ExportSignature, GateFields, ReferrersVerdict, SignDsseIn, SignDsseResponse,
    SignExportIn, SignExportResponse, SignatureKey, SigningIdentity, EXPORT_PAYLOAD_TYPES,
};

/// A handler's answer: the typed body and the quota lease to hold until it is written.
pub(crate) enum Answer {
    Dsse(SignDsseResponse, Lease),
    Export(SignExportResponse, Lease),
    Referrers(ReferrersVerdict),
}

fn backend_failed(detail: String) -> ApiError {
    ApiError::unavailable("the signing backend failed; retry later", detail)
}

/// Run `work` on the blocking pool, off the executor's worker threads; a panic there is a
/// `503` (and an audit record), never a lost request.
pub(crate) async fn off_executor<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| backend_failed(e.to_string()))
}

/// Run `sign` with `keys`. In-memory keys (`file`: a P-256 signature is ~12 µs of CPU) sign
/// right here, on the worker thread that verified the request: handing that to another
/// thread costs more than the signature on a busy machine, and an unbounded blocking pool
/// would only add runnable threads to the same cores. Every other backend blocks (HSM: FFI,
/// KMS: HTTP): it signs [`off_executor`].
pub(crate) async fn sign_with<T, F>(keys: &[Arc<dyn Signer>], sign: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&[&dyn Signer]) -> T + Send + 'static,
{
    if keys.iter().all(|k| k.mode() == "file") {
        let refs: Vec<&dyn Signer> = keys.iter().map(|k| k.as_ref()).collect();
        // A panic is a 503 (and an audit record), as it is from the blocking pool.
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sign(&refs)))
            .map_err(|_| backend_failed("signer panicked".into()));
    }
    let keys = keys.to_vec();
    off_executor(move || {
        let refs: Vec<&dyn Signer> = keys.iter().map(|k| k.as_ref()).collect();
        sign(&refs)
    })
    .await
}

/// Sign `payload` keyless, [`off_executor`]: the keyless flow (its network calls still
/// driven by the runtime) runs on a blocking thread.
async fn sign_keyless(
    ctx: &mut Ctx<'_>,
    payload_type: &str,
    payload: Vec<u8>,
) -> Result<crate::keyless::Signed, ApiError> {
    ctx.rec.signing_mode = Some(stella_keyless::MODE.to_string());
    let app = ctx.app.clone();
    let payload_type = payload_type.to_string();
    let handle = tokio::runtime::Handle::current();
    let signed = off_executor(move || {
        handle.block_on(crate::keyless::sign(
            app.keyless.as_ref(),
            &app.metrics,
            &payload_type,
            payload,
        ))
    })
    .await??;
    signed.record(&mut ctx.rec);
    Ok(signed)
}

/// A sign route (`/sign/dsse`, or `/sign/export` when `export`): the gates, then the
/// route's signing.
pub(crate) async fn sign(
    ctx: &mut Ctx<'_>,
    parts: Parts,
    body: Body,
    export: bool,
) -> Result<Answer, ApiError> {
    if export {
        let admitted = ctx.admit_signing::<SignExportIn>(&parts, body).await?;
        sign_export(ctx, admitted).await
    } else {
        let admitted = ctx.admit_signing::<SignDsseIn>(&parts, body).await?;
        sign_dsse(ctx, admitted).await
    }
}

/// A checked `/sign/dsse` body: the statement, and whether a Sigstore bundle is asked.
pub(crate) struct Dsse {
    statement: Statement,
    sigstore: bool,
}

impl SignBody for SignDsseIn {
    const SCANNER_DIGEST_REQUIRED: bool = true;
    type Checked = Dsse;

    fn gate_fields(&mut self) -> GateFields {
        self.take_gate_fields()
    }

    fn check(self, app: &App, rec: &mut AuditRecord, gates: &GateFields) -> Result<Dsse, ApiError> {
        let max_subjects = app.config.server.max_subjects;
        if self.subject.len() > max_subjects {
            return Err(invalid(format!(
                "{} subjects; at most {max_subjects} per request",
                self.subject.len()
            )));
        }
        rec.predicate_type = Some(self.predicate_type.clone());
        let mut subjects = Vec::with_capacity(self.subject.len());
        for (i, s) in self.subject.into_iter().enumerate() {
            let sha = s
                .digest
                .get("sha256")
                .ok_or_else(|| invalid(format!("subject[{i}] has no sha256 digest")))?;
            rec.subject_digests.push(format!("sha256:{sha}"));
            subjects.push(Subject {
                name: s.name,
                digest: s.digest,
            });
        }
        if !stella_dsse::predicates::is_allowed(&self.predicate_type) {
            return Err(invalid(format!(
                "predicateType {:?} is not in the predicate catalogue",
                self.predicate_type
            )));
        }
        let statement = Statement::new(subjects, self.predicate_type, self.predicate)
            .map_err(|e| invalid(format!("invalid statement: {e}")))?;
        let sigstore = match gates
            .options
            .as_ref()
            .and_then(|o| o.return_bundle.as_deref())
            .unwrap_or("dsse")
        {
            "dsse" => false,
            // `dsse+cert`: the seeds' spelling of the Sigstore bundle.
            "sigstore" | "dsse+cert" => true,
            _ => {
                return Err(invalid(
                    "options.returnBundle must be dsse, sigstore or dsse+cert",
                ))
            }
        };
        Ok(Dsse {
            statement,
            sigstore,
        })
    }
}

/// `POST /sign/dsse`: an in-toto statement over the subjects, as a DSSE envelope (and a
/// Sigstore bundle on request).
async fn sign_dsse(ctx: &mut Ctx<'_>, admitted: Admitted<Dsse>) -> Result<Answer, ApiError> {
    let (policy, caller, lease, signing, request) = admitted.into_parts();
    let Dsse {
        statement,
        sigstore,
    } = request;
    let keys = match signing {
        Signing::Keyless => {
            let payload = statement
                .to_canonical_json()
                .map_err(|e| invalid(format!("invalid statement: {e}")))?;
            let signed = sign_keyless(ctx, stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload).await?;
            let bundle = signed.bundle(&caller.tenant, sigstore);
            return Ok(Answer::Dsse(SignDsseResponse { bundle, policy }, lease));
        }
        Signing::Keys(keys) => keys,
    };
    if sigstore && keys.len() != 1 {
        return Err(invalid(
            "a Sigstore bundle holds one signature; this tenant signs with several keys (use returnBundle dsse)",
        ));
    }
    let envelope = sign_with(&keys, move |refs| stella_keys::attest(&statement, refs))
        .await?
        .map_err(|e| backend_failed(e.to_string()))?;
    let envelope = ctx.record_signature(envelope, &keys);
    // Written as `to_value` writes it (the same JSON as parsing the bytes just hashed, field
    // for field), without the tree.
    let sigstore = if sigstore {
        let b = stella_keys::to_bundle(envelope.envelope().clone(), keys[0].as_ref())
            .map_err(|e| ApiError::unavailable("internal error", e.to_string()))?;
        Some(b.to_value())
    } else {
        None
    };
    let bundle = keyful_bundle(ctx, &caller, &keys, DsseJson::Envelope(envelope), sigstore);
    Ok(Answer::Dsse(SignDsseResponse { bundle, policy }, lease))
}

/// `bundle` of a keyful signature.
fn keyful_bundle(
    ctx: &Ctx<'_>,
    caller: &crate::auth::Caller,
    keys: &[Arc<dyn Signer>],
    dsse: DsseJson,
    sigstore: Option<serde_json::Value>,
) -> Bundle {
    Bundle {
        dsse,
        certificate_chain: Vec::new(),
        mode: ctx.rec.signing_mode.clone(),
        signing_identity: SigningIdentity::Key(key_identity(&caller.tenant, keys)),
        sigstore,
    }
}

/// A checked `/sign/export` body.
pub(crate) struct Export {
    manifest: serde_json::Value,
    payload_type: String,
    /// The manifest's canonical JSON (RFC 8785): the payload signed.
    canonical: Vec<u8>,
    digest_hex: String,
}

impl SignBody for SignExportIn {
    const SCANNER_DIGEST_REQUIRED: bool = false;
    type Checked = Export;

    fn gate_fields(&mut self) -> GateFields {
        self.take_gate_fields()
    }

    fn check(
        self,
        _app: &App,
        rec: &mut AuditRecord,
        _gates: &GateFields,
    ) -> Result<Export, ApiError> {
        if !self.manifest.is_object() {
            return Err(invalid("manifest must be a JSON object"));
        }
        let payload_type = self
            .payload_type
            .unwrap_or_else(|| EXPORT_PAYLOAD_TYPES[0].to_string());
        if !EXPORT_PAYLOAD_TYPES.contains(&payload_type.as_str()) {
            return Err(invalid(format!(
                "payloadType {payload_type:?} is not one of {EXPORT_PAYLOAD_TYPES:?}"
            )));
        }
        rec.predicate_type = Some(payload_type.clone());
        let canonical = stella_dsse::jcs::to_vec(&self.manifest)
            .map_err(|e| invalid(format!("manifest: {e}")))?;
        let digest_hex = stella_keys::hex(&stella_keys::sha256(&canonical));
        rec.subject_digests.push(format!("sha256:{digest_hex}"));
        Ok(Export {
            manifest: self.manifest,
            payload_type,
            canonical,
            digest_hex,
        })
    }
}

/// `POST /sign/export`: the canonical (JCS) manifest signed as a DSSE envelope, with the
/// signature tuple the Export Center stores.
async fn sign_export(ctx: &mut Ctx<'_>, admitted: Admitted<Export>) -> Result<Answer, ApiError> {
    let (policy, caller, lease, signing, request) = admitted.into_parts();
    let Export {
        manifest,
        payload_type,
        canonical,
        digest_hex,
    } = request;
    let manifest_digest = format!("sha256:{digest_hex}");
    let keys = match signing {
        Signing::Keyless => {
            let signed = sign_keyless(ctx, &payload_type, canonical).await?;
            return Ok(Answer::Export(
                SignExportResponse {
                    manifest,
                    manifest_digest,
                    payload_type,
                    signatures: signed.export_signatures(),
                    signed: signed.bundle(&caller.tenant, true),
                    policy,
                },
                lease,
            ));
        }
        Signing::Keys(keys) => keys,
    };
    let envelope = {
        let payload_type = payload_type.clone();
        sign_with(&keys, move |refs| {
            stella_keys::sign_envelope(&payload_type, canonical, refs)
        })
        .await?
    }
    .map_err(|e| backend_failed(e.to_string()))?;
    let envelope = ctx.record_signature(envelope, &keys);
    let signatures = envelope
        .envelope()
        .signatures
        .iter()
        .zip(&keys)
        .map(|(s, k)| ExportSignature {
            keyid: s.keyid.clone(),
            sig: stella_dsse::b64::encode(&s.sig),
            algorithm: k.algorithm().name(),
            key: SignatureKey::PublicKey {
                public_key: k.public_key().to_pem(),
            },
        })
        .collect();
    let signed = keyful_bundle(ctx, &caller, &keys, DsseJson::Envelope(envelope), None);
    Ok(Answer::Export(
        SignExportResponse {
            manifest,
            manifest_digest,
            payload_type,
            signatures,
            signed,
            policy,
        },
        lease,
    ))
}

/// `GET /verify/referrers?digest=sha256:...`: authenticated like the sign routes (OpTok with
/// scope `authority.required_scope` + DPoP or mTLS, tenant served here), no PoE or quota,
/// audited; the verdict of the release gate (allow-list, then OCI referrers).
pub(crate) async fn verify_referrers(ctx: &mut Ctx<'_>, parts: Parts) -> Result<Answer, ApiError> {
    ctx.authenticate(&parts).await?;
    let mut digests = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "digest")
        .map(|(_, v)| v.into_owned());
    let digest = match (digests.next(), digests.next()) {
        (Some(d), None) => d,
        (None, _) => return Err(invalid("the query parameter digest is required")),
        (Some(_), Some(_)) => return Err(invalid("give the query parameter digest once")),
    };
    ctx.rec.subject_digests.push(digest.clone());
    ctx.rec.scanner_digest = Some(digest.clone());
    if !crate::config::is_sha256_digest(&digest) {
        ctx.rec.scanner_verdict = Some("malformed".into());
        return Err(invalid("digest must be sha256:<64 lowercase hex>"));
    }
    Ok(Answer::Referrers(ctx.release_verdict(&digest).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A signer that blocks the way an HSM or KMS client does: it drives a future to
    /// completion on the calling thread, which panics on an executor worker thread.
    struct Blocking {
        inner: stella_keys::FileKey,
        mode: &'static str,
    }

    impl Signer for Blocking {
        fn algorithm(&self) -> stella_keys::Algorithm {
            self.inner.algorithm()
        }
        fn public_key(&self) -> &stella_keys::PublicKey {
            self.inner.public_key()
        }
        fn key_id(&self) -> &stella_keys::KeyId {
            self.inner.key_id()
        }
        fn mode(&self) -> &'static str {
            self.mode
        }
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, stella_keys::SignError> {
            tokio::runtime::Handle::current().block_on(async {});
            self.inner.sign(msg)
        }
    }

    fn blocking(mode: &'static str) -> Arc<dyn Signer> {
        Arc::new(Blocking {
            inner: stella_keys::FileKey::generate(stella_keys::Algorithm::EcdsaP256Sha256).unwrap(),
            mode,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_backends_sign_off_the_executor() {
        for mode in ["pkcs11", "kms"] {
            let keys = vec![blocking(mode)];
            let env = sign_with(&keys, |refs| {
                stella_keys::sign_envelope("text/plain", b"x".to_vec(), refs)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(env.signatures.len(), 1, "{mode}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_keys_sign_inline_and_a_panic_is_a_503() {
        // The same blocking signer declared `file` runs on the worker thread: block_on
        // panics there, and the panic comes back as 503 upstream_unavailable.
        let keys = vec![blocking("file")];
        let e = sign_with(&keys, |refs| {
            stella_keys::sign_envelope("text/plain", b"x".to_vec(), refs)
        })
        .await
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 503);
        assert_eq!(e.internal_detail(), "signer panicked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_executor_runs_blocking_work_and_reports_a_panic() {
        let handle = tokio::runtime::Handle::current();
        let v = off_executor(move || handle.block_on(async { 7 }))
            .await
            .unwrap();
        assert_eq!(v, 7);
        let e = off_executor(|| -> u8 { panic!("backend exploded") })
            .await
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 503);
    }
}
