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
use serde_json::{json, Map, Value};
use stella_keys::{DevKeys, KeyRef};
use stella_sigstore::{Artifact, Bundle, Content, Material, Options, Policy, VerifyingKey};
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

fn time_text(secs: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| json!(stella_x509::format_time(t)))
        .unwrap_or_else(|_| json!(secs.to_string()))
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
    let mut report = Map::new();
    report.insert("file".into(), json!(path));
    let mut warnings: Vec<String> = Vec::new();
    let bundle = if stella_dsse::looks_like_bundle(&value) {
        let b = Bundle::from_value(&value).map_err(|e| bad_input(path, e))?;
        describe_bundle(&b, &mut report, &mut warnings)?;
        Some(b)
    } else {
        let e = stella_dsse::Envelope::from_value(&value).map_err(|e| bad_input(path, e))?;
        report.insert("kind".into(), json!("dsse-envelope"));
        describe_payload(&e.payload_type, &e.payload, &mut report, &mut warnings)
            .map_err(|e| bad_input(path, e))?;
        let sigs: Vec<Value> = e
            .signatures
            .iter()
            .map(|s| json!({"keyid": s.keyid, "signatureBytes": s.sig.len()}))
            .collect();
        report.insert("signatures".into(), Value::Array(sigs));
        None
    };
    report.insert("warnings".into(), json!(warnings));
    let verdict = verdict(a, bundle.as_ref(), dev)?;
    let failed = verdict.get("verified") == Some(&json!(false));
    let reason = verdict
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("verification failed")
        .to_string();
    report.insert("verification".into(), verdict);
    let report = Value::Object(report);
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    if failed {
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
    report: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> std::result::Result<(), PayloadError> {
    report.insert("payloadType".into(), json!(payload_type));
    report.insert(
        "payloadSha256".into(),
        json!(hex(&stella_sigstore::HashAlgorithm::Sha256.digest(payload))),
    );
    report.insert("payloadBytes".into(), json!(payload.len()));
    if payload_type != stella_dsse::PAYLOAD_TYPE_IN_TOTO {
        // Not a statement (a mirror manifest, say): show it as JSON when it is JSON.
        match serde_json::from_slice::<Value>(payload) {
            Ok(v) => report.insert("payload".into(), v),
            Err(_) => report.insert("payload".into(), Value::Null),
        };
        report.insert("statement".into(), Value::Null);
        return Ok(());
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
                subjects.push(json!({"name": name, "digest": digest}));
            }
        }
        None => warnings.push("the statement has no subject list".into()),
    }
    report.insert(
        "statement".into(),
        json!({
            "type": ty,
            "predicateType": pt,
            "subjects": subjects,
            "predicate": o.get("predicate").cloned().unwrap_or(Value::Null),
        }),
    );
    Ok(())
}

fn describe_bundle(
    b: &Bundle,
    report: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    report.insert("kind".into(), json!("sigstore-bundle"));
    report.insert("bundleVersion".into(), json!(b.version.as_str()));
    let mut sig = Map::new();
    match &b.content {
        Content::Dsse(e) => {
            report.insert("content".into(), json!("dsseEnvelope"));
            describe_payload(&e.payload_type, &e.payload, report, warnings)
                .map_err(|m| fail(USAGE, format!("the bundle's envelope: {m}")))?;
            sig.insert("keyid".into(), json!(e.signature.keyid));
            sig.insert("signatureBytes".into(), json!(e.signature.sig.len()));
        }
        Content::MessageSignature { digest, signature } => {
            report.insert("content".into(), json!("messageSignature"));
            report.insert("statement".into(), Value::Null);
            report.insert(
                "messageDigest".into(),
                match digest {
                    Some((alg, d)) => json!({"algorithm": alg.name(), "digest": hex(d)}),
                    None => Value::Null,
                },
            );
            sig.insert("keyid".into(), Value::Null);
            sig.insert("signatureBytes".into(), json!(signature.len()));
        }
        _ => return Err(fail(USAGE, "the bundle's content kind is not supported")),
    }
    match &b.material {
        Material::PublicKey { hint } => {
            sig.insert("publicKeyHint".into(), json!(hint));
        }
        m => {
            let leaf = m.leaf().unwrap_or_default();
            sig.insert("certificate".into(), certificate(leaf));
            if let Material::Chain(c) = m {
                sig.insert("chainCertificates".into(), json!(c.len()));
            }
        }
    }
    let timestamps: Vec<Value> = b.timestamps.iter().map(|t| timestamp(t)).collect();
    sig.insert("timestamps".into(), Value::Array(timestamps));
    let entries: Vec<Value> = b
        .tlog_entries
        .iter()
        .map(|e| {
            json!({
                "logIndex": e.log_index,
                "logId": hex(&e.log_id),
                "kind": e.kind,
                "kindVersion": e.kind_version,
                "integratedTime": e.integrated_time.map(time_text),
                "inclusionPromise": e.inclusion_promise.is_some(),
                "inclusionProof": e.inclusion_proof.as_ref().map(|p| json!({
                    "logIndex": p.log_index,
                    "treeSize": p.tree_size,
                    "rootHash": hex(&p.root_hash),
                })),
            })
        })
        .collect();
    sig.insert("tlogEntries".into(), Value::Array(entries));
    report.insert("signatures".into(), json!([Value::Object(sig)]));
    Ok(())
}

/// What a certificate claims (not verified here).
fn certificate(der: &[u8]) -> Value {
    match stella_sigstore::cert::FulcioCert::from_der(der) {
        Ok(c) => {
            let (nb, na) = c.cert.validity_secs();
            let tbs = &c.cert.certificate().tbs_certificate;
            json!({
                "subjectAlternativeNames": c.sans(),
                "oidcIssuer": c.issuer(),
                "subject": c.cert.subject(),
                "issuer": tbs.issuer.to_string(),
                "serial": hex(tbs.serial_number.as_bytes()),
                "notBefore": time_text(nb),
                "notAfter": time_text(na),
                "sha256": c.cert.fingerprint(),
            })
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// An RFC 3161 token's claimed time: the token's own CMS signature is checked, its TSA is
/// not checked against any trusted root here.
fn timestamp(t: &[u8]) -> Value {
    let info = stella_x509::tsp::token_from_bytes(t)
        .and_then(|tok| stella_x509::tsp::check_token(&tok, &[]));
    match info {
        Ok(i) => json!({
            "genTime": stella_x509::format_time(i.gen_time),
            "serial": i.serial,
            "policy": i.policy,
            "tsa": i.signer.subject(),
        }),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Was any trust material given?
fn trust_given(a: &ShowArgs) -> bool {
    !a.trust.key.is_empty() || a.trust.keyring.is_some() || a.sigstore.any()
}

/// The verification verdict, through the library calls `stella verify` uses.
fn verdict(a: &ShowArgs, bundle: Option<&Bundle>, dev: DevKeys) -> Result<Value> {
    if !trust_given(a) {
        return Ok(json!({
            "checked": false,
            "reason": "no trust material given (--key/--keyring, or --trusted-root/--staging \
                       with --certificate-identity and --certificate-oidc-issuer)",
        }));
    }
    let sigstore_path = bundle.is_some_and(|b| {
        a.sigstore.any()
            || b.material.leaf().is_some()
            || (a.trust.keyring.is_none() && b.version < stella_sigstore::Version::V03)
    });
    if let (true, Some(b)) = (sigstore_path, bundle) {
        let policy = match a.trust.key.first() {
            Some(k) => {
                let r = KeyRef::parse(k)?;
                let pk = stella_keys::load_public(&r, dev, &mut || io::password(false))?;
                crate::warn_if_dev(&pk);
                Policy::Key(
                    VerifyingKey::from_spki_der(pk.spki_der())
                        .map_err(|e| fail(USAGE, format!("--key {k}: {e}")))?,
                )
            }
            None => Policy::Identity(a.sigstore.identity()?),
        };
        let root = a.sigstore.root()?;
        let options = Options {
            tlog_threshold: a.sigstore.tlog_threshold,
            time_threshold: a.sigstore.signing_time_threshold.max(1),
        };
        return Ok(
            match stella_sigstore::verify(b, Artifact::Unchecked, &policy, &root, &options) {
                Ok(v) => json!({
                    "checked": true,
                    "verified": true,
                    "method": "sigstore",
                    "artifact": "not checked (the subject's bytes are not given)",
                    "result": v,
                }),
                Err(f) => json!({
                    "checked": true,
                    "verified": false,
                    "method": "sigstore",
                    "passed": f.passed,
                    "failed": f.failed,
                    "error": f.to_string(),
                }),
            },
        );
    }
    match crate::verify::verify_file(&a.file, &a.trust, a.threshold, dev) {
        Ok(v) => Ok(json!({
            "checked": true,
            "verified": true,
            "method": "keyring",
            "threshold": a.threshold,
            "signers": v.signers.iter()
                .map(|s| json!({"id": s.id, "keyid": s.key_id.as_str()}))
                .collect::<Vec<_>>(),
        })),
        Err(e) if code_for(&e) == VERIFY_FAILED => Ok(json!({
            "checked": true,
            "verified": false,
            "method": "keyring",
            "threshold": a.threshold,
            "error": render(&e),
        })),
        Err(e) => Err(e),
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
        let subjects = st["subjects"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(o, "Subjects ({}):", subjects.len());
        for sub in &subjects {
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
    let sigs = r["signatures"].as_array().cloned().unwrap_or_default();
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
        for (j, t) in sig["timestamps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
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
        for (j, e) in sig["tlogEntries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let proof = match e["inclusionProof"].get("treeSize") {
                Some(ts) => format!("inclusion proof (tree size {})", s(ts)),
                None => "no inclusion proof".into(),
            };
            let promise = if e["inclusionPromise"] == json!(true) {
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
    for w in r["warnings"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(o, "Warning:         {}", s(&w));
    }
    let v = &r["verification"];
    let line = if v["checked"] != json!(true) {
        format!(
            "not checked: {} (claims above are unverified)",
            s(&v["reason"])
        )
    } else if v["verified"] == json!(true) {
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
