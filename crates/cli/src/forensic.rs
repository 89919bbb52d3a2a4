//! `stella forensic attest show FILE`: look inside a DSSE envelope or a Sigstore bundle.
//!
//! Decoding is the job of the existing parsers: `stella_dsse::Envelope` for bare envelopes and
//! `stella_sigstore::Bundle` for bundles v0.1–v0.3 (stella's own and real Sigstore ones). This
//! module only turns what they return into one report — a JSON value — and renders it for a
//! person (text) or a machine (`--output json`). Nothing shown is trusted until the
//! `verification` section says so: key ids, certificate identities, log entries and timestamp
//! times are what the file *claims*. The verdict is computed only when trust material is given,
//! by the same library calls `stella verify` uses (keyring verification for envelopes and
//! stella bundles, `stella_sigstore::verify` for certificate or cosign-era bundles).
//!
//! Text output escapes control characters in every string taken from the file, so a hostile
//! attestation cannot drive the terminal. Exit codes: 0 shown (verified, or no trust given),
//! 1 trust material given and verification failed (the report is still printed), 2 the file is
//! not an envelope or bundle.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use stella_keys::DevKeys;
use stella_sigstore::{Artifact, Bundle, Content, Material, Options, Policy};
use time::OffsetDateTime;

use crate::exit::{code_for, fail, render, USAGE, VERIFY_FAILED};
use crate::io;
use crate::sigstore::SigstoreArgs;
use crate::verify::TrustArgs;

#[derive(Subcommand)]
pub(crate) enum ForensicCommand {
    /// Attestations (DSSE envelopes and Sigstore bundles).
    #[command(subcommand)]
    Attest(AttestCommand),
}

#[derive(Subcommand)]
pub(crate) enum AttestCommand {
    /// Decode an envelope or bundle and show statement, subjects, predicate, signatures,
    /// certificate identity, log entries and timestamps; with trust material, the verdict.
    Show(Box<ShowArgs>),
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    sigstore: SigstoreArgs,
    /// Distinct trusted keys that must have signed (with --key/--keyring).
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Envelope or bundle (`-` for stdin).
    file: String,
}

pub(crate) fn run(c: ForensicCommand, dev: DevKeys) -> Result<()> {
    match c {
        ForensicCommand::Attest(AttestCommand::Show(a)) => show(&a, dev),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A time from the file: RFC 3339 when it fits, else the raw seconds as text.
fn time_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(stella_x509::format_time)
        .unwrap_or_else(|_| secs.to_string())
}

fn bad_input(path: &str, e: impl std::fmt::Display) -> anyhow::Error {
    fail(
        USAGE,
        format!("{path} is not a DSSE envelope or Sigstore bundle: {e}"),
    )
}

fn show(a: &ShowArgs, dev: DevKeys) -> Result<()> {
    let path = a.file.as_str();
    let bytes = io::read_limited(path, stella_sigstore::bundle::MAX_BUNDLE_BYTES as u64)?;
    let value = stella_dsse::jcs::parse_strict(&bytes).map_err(|e| bad_input(path, e))?;
    let mut warnings: Vec<String> = Vec::new();
    let (body, bundle) = if stella_dsse::looks_like_bundle(&value) {
        let b = Bundle::from_value(&value).map_err(|e| bad_input(path, e))?;
        (describe_bundle(&b, &mut warnings)?, Some(b))
    } else {
        let e = stella_dsse::Envelope::from_value(&value).map_err(|e| bad_input(path, e))?;
        let payload = describe_payload(&e.payload_type, &e.payload, &mut warnings)
            .map_err(|e| bad_input(path, e))?;
        let signatures = e
            .signatures
            .iter()
            .map(|s| SignatureView {
                keyid: Some(s.keyid.clone()),
                signature_bytes: s.sig.len(),
                ..SignatureView::default()
            })
            .collect();
        let body = Body {
            kind: "dsse-envelope",
            payload: Some(payload),
            signatures,
            ..Body::default()
        };
        (body, None)
    };
    let verdict = verdict(a, bundle.as_ref(), dev)?;
    let failure = verdict.failure();
    let report = crate::view::to_value(&ShowView {
        file: path,
        body,
        warnings,
        verification: verdict,
    })?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    if let Some(reason) = failure {
        return Err(fail(VERIFY_FAILED, reason));
    }
    Ok(())
}

/// Why an in-toto payload cannot be shown as a statement.
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("the in-toto payload is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the in-toto payload is not a JSON object")]
    NotObject,
}

/// The statement (or raw payload) inside an envelope.
fn describe_payload(
    payload_type: &str,
    payload: &[u8],
    warnings: &mut Vec<String>,
) -> std::result::Result<PayloadView, PayloadError> {
    let mut view = PayloadView {
        payload_type: payload_type.to_string(),
        payload_sha256: hex(&stella_sigstore::HashAlgorithm::Sha256.digest(payload)),
        payload_bytes: payload.len(),
        payload: None,
        statement: None,
    };
    if payload_type != stella_dsse::PAYLOAD_TYPE_IN_TOTO {
        // Not a statement (a mirror manifest, say): show it as JSON when it is JSON.
        view.payload = Some(serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null));
        return Ok(view);
    }
    let v: Value = serde_json::from_slice(payload).map_err(PayloadError::NotJson)?;
    let Some(o) = v.as_object() else {
        return Err(PayloadError::NotObject);
    };
    // Shown leniently (a forensic view reads Statement v0.1 and odd statements too); what
    // deviates from in-toto Statement v1 is listed as a warning.
    let ty = o.get("_type").and_then(Value::as_str);
    match ty {
        Some(stella_dsse::STATEMENT_TYPE_V1) => {}
        Some(t) => warnings.push(format!("statement _type {t:?} is not in-toto Statement v1")),
        None => warnings.push("the statement has no _type".into()),
    }
    let pt = o.get("predicateType").and_then(Value::as_str);
    if pt.is_none() {
        warnings.push("the statement has no predicateType".into());
    }
    let mut subjects = Vec::new();
    match o.get("subject").and_then(Value::as_array) {
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                let digest = s
                    .get("digest")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                if digest.is_empty() {
                    warnings.push(format!("subject[{i}] has no digest"));
                }
                subjects.push(StatementSubject {
                    name: name.to_string(),
                    digest,
                });
            }
        }
        None => warnings.push("the statement has no subject list".into()),
    }
    view.statement = Some(StatementView {
        kind: ty.map(str::to_string),
        predicate_type: pt.map(str::to_string),
        subjects,
        predicate: o.get("predicate").cloned().unwrap_or(Value::Null),
    });
    Ok(view)
}

fn describe_bundle(b: &Bundle, warnings: &mut Vec<String>) -> Result<Body> {
    let mut body = Body {
        kind: "sigstore-bundle",
        bundle_version: Some(b.version.as_str()),
        ..Body::default()
    };
    let mut sig = SignatureView::default();
    match &b.content {
        Content::Dsse(e) => {
            body.content = Some("dsseEnvelope");
            body.payload = Some(
                describe_payload(&e.payload_type, &e.payload, warnings)
                    .map_err(|m| fail(USAGE, format!("the bundle's envelope: {m}")))?,
            );
            sig.keyid = e.signature.keyid.clone();
            sig.signature_bytes = e.signature.sig.len();
        }
        Content::MessageSignature { digest, signature } => {
            body.content = Some("messageSignature");
            body.message = Some(MessageView {
                statement: (),
                message_digest: digest.as_ref().map(|(alg, d)| MessageDigest {
                    algorithm: alg.name(),
                    digest: hex(d),
                }),
            });
            sig.signature_bytes = signature.len();
        }
        _ => return Err(fail(USAGE, "the bundle's content kind is not supported")),
    }
    match &b.material {
        Material::PublicKey { hint } => {
            sig.public_key_hint = Some(hint.clone());
        }
        m => {
            let leaf = m.leaf().unwrap_or_default();
            sig.certificate = Some(certificate(leaf));
            if let Material::Chain(c) = m {
                sig.chain_certificates = Some(c.len());
            }
        }
    }
    sig.timestamps = Some(b.timestamps.iter().map(|t| timestamp(t)).collect());
    sig.tlog_entries = Some(
        b.tlog_entries
            .iter()
            .map(|e| TlogEntryView {
                log_index: e.log_index,
                log_id: hex(&e.log_id),
                kind: e.kind.clone(),
                kind_version: e.kind_version.clone(),
                integrated_time: e.integrated_time.map(time_text),
                inclusion_promise: e.inclusion_promise.is_some(),
                inclusion_proof: e.inclusion_proof.as_ref().map(|p| InclusionProofView {
                    log_index: p.log_index,
                    tree_size: p.tree_size,
                    root_hash: hex(&p.root_hash),
                }),
            })
            .collect(),
    );
    body.signatures = vec![sig];
    Ok(body)
}

/// What a certificate claims (not verified here).
fn certificate(der: &[u8]) -> Claimed<CertificateView> {
    match stella_sigstore::cert::FulcioCert::from_der(der) {
        Ok(c) => {
            let (nb, na) = c.cert.validity_secs();
            let tbs = &c.cert.certificate().tbs_certificate;
            Claimed::Read(CertificateView {
                subject_alternative_names: c.sans(),
                oidc_issuer: c.issuer(),
                subject: c.cert.subject(),
                issuer: tbs.issuer.to_string(),
                serial: hex(tbs.serial_number.as_bytes()),
                not_before: time_text(nb),
                not_after: time_text(na),
                sha256: c.cert.fingerprint(),
            })
        }
        Err(e) => Claimed::Unreadable {
            error: e.to_string(),
        },
    }
}

/// An RFC 3161 token's claimed time: the token's own CMS signature is checked, its TSA is
/// not checked against any trusted root here.
fn timestamp(t: &[u8]) -> Claimed<TimestampView> {
    let info = stella_x509::tsp::token_from_bytes(t)
        .and_then(|tok| stella_x509::tsp::check_token(&tok, &[]));
    match info {
        Ok(i) => Claimed::Read(TimestampView {
            gen_time: stella_x509::format_time(i.gen_time),
            serial: i.serial,
            policy: i.policy,
            tsa: i.signer.subject(),
        }),
        Err(e) => Claimed::Unreadable {
            error: e.to_string(),
        },
    }
}

/// Was any trust material given?
fn trust_given(a: &ShowArgs) -> bool {
    !a.trust.key.is_empty() || a.trust.keyring.is_some() || a.sigstore.any()
}

/// The verification verdict, through the library calls `stella verify` uses.
fn verdict(a: &ShowArgs, bundle: Option<&Bundle>, dev: DevKeys) -> Result<Verdict> {
    if !trust_given(a) {
        return Ok(Verdict::NotChecked {
            checked: false,
            reason: "no trust material given (--key/--keyring, or --trusted-root/--staging \
                     with --certificate-identity and --certificate-oidc-issuer)",
        });
    }
    let sigstore_path = bundle.is_some_and(|b| {
        a.sigstore.any()
            || b.material.leaf().is_some()
            || (a.trust.keyring.is_none() && b.version < stella_sigstore::Version::V03)
    });
    if let (true, Some(b)) = (sigstore_path, bundle) {
        let policy = match a.trust.key.first() {
            Some(k) => crate::sigstore::key_policy(k, dev, |m| fail(USAGE, m))?,
            None => Policy::Identity(a.sigstore.identity()?),
        };
        let root = a.sigstore.root()?;
        let options = Options {
            tlog_threshold: a.sigstore.tlog_threshold,
            time_threshold: a.sigstore.signing_time_threshold.max(1),
        };
        return Ok(
            match stella_sigstore::verify(b, Artifact::Unchecked, &policy, &root, &options) {
                Ok(v) => Verdict::SigstoreOk {
                    checked: true,
                    verified: true,
                    method: "sigstore",
                    artifact: "not checked (the subject's bytes are not given)",
                    result: Box::new(v),
                },
                Err(f) => Verdict::SigstoreFailed {
                    checked: true,
                    verified: false,
                    method: "sigstore",
                    error: f.to_string(),
                    passed: f.passed,
                    failed: f.failed,
                },
            },
        );
    }
    match crate::verify::verify_file(&a.file, &a.trust, a.threshold, dev) {
        Ok(v) => Ok(Verdict::KeyringOk {
            checked: true,
            verified: true,
            method: "keyring",
            threshold: a.threshold,
            signers: v
                .signers
                .iter()
                .map(|s| OwnedSigner {
                    id: s.id.clone(),
                    keyid: s.key_id.as_str().to_string(),
                })
                .collect(),
        }),
        Err(e) if code_for(&e) == VERIFY_FAILED => Ok(Verdict::KeyringFailed {
            checked: true,
            verified: false,
            method: "keyring",
            threshold: a.threshold,
            error: render(&e),
        }),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------------------------------
// The report (`--output json`; the text form is rendered from the same JSON)
// ------------------------------------------------------------------------------------------

/// `forensic attest show`.
#[derive(Serialize)]
struct ShowView<'a> {
    file: &'a str,
    #[serde(flatten)]
    body: Body,
    warnings: Vec<String>,
    verification: Verdict,
}

/// What the file holds. Fields a kind does not have are absent.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    payload: Option<PayloadView>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    message: Option<MessageView>,
    signatures: Vec<SignatureView>,
}

/// An envelope's payload: `payload` for a payload that is not a statement (`null` when it is
/// not JSON), and `statement` (`null` for such a payload).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PayloadView {
    payload_type: String,
    payload_sha256: String,
    payload_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
    statement: Option<StatementView>,
}

/// An in-toto statement as found (leniently).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatementView {
    #[serde(rename = "type")]
    kind: Option<String>,
    predicate_type: Option<String>,
    subjects: Vec<StatementSubject>,
    predicate: Value,
}

#[derive(Serialize)]
struct StatementSubject {
    name: String,
    digest: serde_json::Map<String, Value>,
}

/// A message-signature bundle: no statement, the digest it claims to sign.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageView {
    /// Always `null`.
    statement: (),
    message_digest: Option<MessageDigest>,
}

#[derive(Serialize)]
struct MessageDigest {
    algorithm: &'static str,
    digest: String,
}

/// One signature. An envelope's signatures have `keyid` and `signatureBytes` only.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct SignatureView {
    keyid: Option<String>,
    signature_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key_hint: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<Claimed<CertificateView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain_certificates: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamps: Option<Vec<Claimed<TimestampView>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tlog_entries: Option<Vec<TlogEntryView>>,
}

/// What a certificate or token claims, or why it cannot be read.
#[derive(Serialize)]
#[serde(untagged)]
enum Claimed<T> {
    Read(T),
    Unreadable { error: String },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateView {
    subject_alternative_names: Vec<String>,
    oidc_issuer: Option<String>,
    subject: String,
    issuer: String,
    serial: String,
    not_before: String,
    not_after: String,
    sha256: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimestampView {
    gen_time: String,
    serial: String,
    policy: String,
    tsa: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntryView {
    log_index: u64,
    log_id: String,
    kind: String,
    kind_version: String,
    integrated_time: Option<String>,
    inclusion_promise: bool,
    inclusion_proof: Option<InclusionProofView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProofView {
    log_index: u64,
    tree_size: u64,
    root_hash: String,
}

/// A key that signed (owned: the verdict outlives the verification result).
#[derive(Serialize)]
struct OwnedSigner {
    id: String,
    keyid: String,
}

/// `verification`: not checked, or checked through Sigstore or the keyring.
#[derive(Serialize)]
#[serde(untagged)]
enum Verdict {
    NotChecked {
        checked: bool,
        reason: &'static str,
    },
    SigstoreOk {
        checked: bool,
        verified: bool,
        method: &'static str,
        artifact: &'static str,
        result: Box<stella_sigstore::Verified>,
    },
    SigstoreFailed {
        checked: bool,
        verified: bool,
        method: &'static str,
        passed: Vec<stella_sigstore::Check>,
        failed: stella_sigstore::Check,
        error: String,
    },
    KeyringOk {
        checked: bool,
        verified: bool,
        method: &'static str,
        threshold: usize,
        signers: Vec<OwnedSigner>,
    },
    KeyringFailed {
        checked: bool,
        verified: bool,
        method: &'static str,
        threshold: usize,
        error: String,
    },
}

impl Verdict {
    /// Why verification failed, if it was checked and failed.
    fn failure(&self) -> Option<String> {
        match self {
            Verdict::SigstoreFailed { error, .. } | Verdict::KeyringFailed { error, .. } => {
                Some(error.clone())
            }
            _ => None,
        }
    }
}

/// Escape control characters (and nothing else) of a string taken from the file.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => clean(x),
        Value::Null => "-".into(),
        other => clean(&other.to_string()),
    }
}

/// The elements of a JSON array (none for anything else).
fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn render_text(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "File:            {}", s(&r["file"]));
    match r["kind"].as_str() {
        Some("sigstore-bundle") => {
            let _ = writeln!(
                o,
                "Kind:            Sigstore bundle v{} ({})",
                s(&r["bundleVersion"]),
                s(&r["content"])
            );
        }
        _ => {
            let _ = writeln!(o, "Kind:            DSSE envelope");
        }
    }
    if !r["payloadType"].is_null() {
        let _ = writeln!(o, "Payload type:    {}", s(&r["payloadType"]));
        let _ = writeln!(
            o,
            "Payload:         {} bytes, sha256:{}",
            s(&r["payloadBytes"]),
            s(&r["payloadSha256"])
        );
    }
    if let Some(d) = r.get("messageDigest").filter(|d| !d.is_null()) {
        let _ = writeln!(
            o,
            "Message digest:  {}:{}",
            s(&d["algorithm"]),
            s(&d["digest"])
        );
    }
    let st = &r["statement"];
    if !st.is_null() {
        let _ = writeln!(o, "Statement type:  {}", s(&st["type"]));
        let _ = writeln!(o, "Predicate type:  {}", s(&st["predicateType"]));
        let subjects = items(&st["subjects"]);
        let _ = writeln!(o, "Subjects ({}):", subjects.len());
        for sub in subjects {
            let _ = writeln!(o, "  {}", s(&sub["name"]));
            if let Some(d) = sub["digest"].as_object() {
                for (alg, val) in d {
                    let _ = writeln!(o, "    {}:{}", clean(alg), s(val));
                }
            }
        }
        let _ = writeln!(o, "Predicate:");
        let pretty = serde_json::to_string_pretty(&st["predicate"]).unwrap_or_default();
        for line in pretty.lines() {
            let _ = writeln!(o, "  {line}");
        }
    } else if let Some(p) = r.get("payload").filter(|p| !p.is_null()) {
        let _ = writeln!(o, "Payload (JSON):");
        let pretty = serde_json::to_string_pretty(p).unwrap_or_default();
        for line in pretty.lines() {
            let _ = writeln!(o, "  {line}");
        }
    }
    let sigs = items(&r["signatures"]);
    let _ = writeln!(o, "Signatures ({}):", sigs.len());
    for (i, sig) in sigs.iter().enumerate() {
        let _ = writeln!(
            o,
            "  [{i}] keyid: {} ({} signature bytes)",
            s(&sig["keyid"]),
            s(&sig["signatureBytes"])
        );
        if let Some(h) = sig.get("publicKeyHint") {
            let _ = writeln!(o, "      public key hint: {}", s(h));
        }
        if let Some(c) = sig.get("certificate") {
            if let Some(e) = c.get("error") {
                let _ = writeln!(o, "      certificate: unreadable ({})", s(e));
            } else {
                let sans: Vec<String> = c["subjectAlternativeNames"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                let _ = writeln!(o, "      certificate identity: {}", sans.join(", "));
                let _ = writeln!(o, "      OIDC issuer:          {}", s(&c["oidcIssuer"]));
                let _ = writeln!(o, "      certificate issuer:   {}", s(&c["issuer"]));
                let _ = writeln!(o, "      serial:               {}", s(&c["serial"]));
                let _ = writeln!(
                    o,
                    "      valid:                {} .. {}",
                    s(&c["notBefore"]),
                    s(&c["notAfter"])
                );
            }
        }
        for (j, t) in items(&sig["timestamps"]).iter().enumerate() {
            match t.get("error") {
                Some(e) => {
                    let _ = writeln!(o, "      timestamp [{j}]: unreadable ({})", s(e));
                }
                None => {
                    let _ = writeln!(
                        o,
                        "      timestamp [{j}]: {} by {} (serial {})",
                        s(&t["genTime"]),
                        s(&t["tsa"]),
                        s(&t["serial"])
                    );
                }
            }
        }
        for (j, e) in items(&sig["tlogEntries"]).iter().enumerate() {
            let proof = match e["inclusionProof"].get("treeSize") {
                Some(ts) => format!("inclusion proof (tree size {})", s(ts)),
                None => "no inclusion proof".into(),
            };
            let promise = if e["inclusionPromise"].as_bool() == Some(true) {
                ", inclusion promise"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "      tlog entry [{j}]: log index {}, integrated {}, {} {}, {proof}{promise}",
                s(&e["logIndex"]),
                s(&e["integratedTime"]),
                s(&e["kind"]),
                s(&e["kindVersion"]),
            );
            let _ = writeln!(o, "                      log id {}", s(&e["logId"]));
        }
    }
    for w in items(&r["warnings"]) {
        let _ = writeln!(o, "Warning:         {}", s(w));
    }
    let v = &r["verification"];
    let line = if v["checked"].as_bool() != Some(true) {
        format!(
            "not checked: {} (claims above are unverified)",
            s(&v["reason"])
        )
    } else if v["verified"].as_bool() == Some(true) {
        match v["method"].as_str() {
            Some("keyring") => format!(
                "VERIFIED by {} trusted key(s): {}",
                v["signers"].as_array().map(Vec::len).unwrap_or(0),
                v["signers"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .map(|x| format!("{} ({})", s(&x["id"]), s(&x["keyid"])))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            _ => format!(
                "VERIFIED (Sigstore checks: {}; the artifact itself not checked)",
                v["result"]["checks"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
        }
    } else {
        format!("FAILED: {}", s(&v["error"]))
    };
    let _ = writeln!(o, "Verification:    {line}");
    o
}
