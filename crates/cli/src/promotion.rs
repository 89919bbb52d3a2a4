//! `stella promotion attest|verify`: statements of predicate type `stella.ops/promotion@v1`,
//! recording that artefacts moved from one environment to another, with the evidence
//! (materials), the promotion itself, and optional Rekor and attestation references.
//!
//! Predicate shape (see docs/formats.md):
//! `{"subject":[{name,digest}], "materials":[{role,name?,digest}], "promotion":{from,to,actor,
//! timestamp, pipeline?, ticket?}, "rekor"?:{uuid, logIndex?}, "attestation"?:{bundleSha256}}`.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use stella_dsse::predicates::PROMOTION_V1;
use stella_keys::DevKeys;
use time::format_description::well_known::Rfc3339;

use crate::attest::{self, KeyArgs, OutArgs};
use crate::exit::{fail, USAGE, VERIFY_FAILED};
use crate::verify::TrustArgs;

#[derive(Subcommand)]
pub(crate) enum PromotionCommand {
    /// Sign a promotion attestation.
    Attest(PromotionAttestArgs),
    /// Verify a promotion attestation and print what was promoted.
    Verify(PromotionVerifyArgs),
}

#[derive(Args)]
pub(crate) struct PromotionAttestArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Environment promoted from (e.g. staging).
    #[arg(long)]
    from: String,
    /// Environment promoted to (e.g. production).
    #[arg(long)]
    to: String,
    /// Who promoted (default: $USER).
    #[arg(long)]
    actor: Option<String>,
    /// Evidence: ROLE=FILE or ROLE=NAME@sha256:HEX (e.g. sbom=app.cdx.json); repeatable.
    #[arg(long)]
    material: Vec<String>,
    /// CI pipeline or run identifier.
    #[arg(long)]
    pipeline: Option<String>,
    /// Change ticket.
    #[arg(long)]
    ticket: Option<String>,
    /// Rekor entry UUID of the release attestation, when logged.
    #[arg(long)]
    rekor_uuid: Option<String>,
    /// Rekor log index.
    #[arg(long, requires = "rekor_uuid")]
    rekor_log_index: Option<u64>,
    /// The release attestation (bundle/envelope file) this promotion relies on.
    #[arg(long)]
    attestation: Option<String>,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args)]
pub(crate) struct PromotionVerifyArgs {
    #[command(flatten)]
    trust: TrustArgs,
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Require this subject (FILE or NAME@sha256:HEX) to be among the promoted artefacts.
    #[arg(long)]
    subject: Option<String>,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// The envelope or bundle.
    file: String,
}

pub(crate) fn run(cmd: PromotionCommand, dev: DevKeys) -> Result<()> {
    match cmd {
        PromotionCommand::Attest(a) => attest_promotion(a, dev),
        PromotionCommand::Verify(a) => verify_promotion(a, dev),
    }
}

fn subject_json(s: &stella_dsse::Subject) -> Value {
    json!({"name": s.name, "digest": s.digest})
}

fn attest_promotion(a: PromotionAttestArgs, dev: DevKeys) -> Result<()> {
    if a.from == a.to {
        return Err(fail(USAGE, "--from and --to name the same environment"));
    }
    let subjects = attest::subjects(&a.keys.subject)?;
    let mut materials = Vec::new();
    for m in &a.material {
        let (role, what) = m.split_once('=').ok_or_else(|| {
            fail(
                USAGE,
                format!("--material {m:?} is not ROLE=FILE or ROLE=NAME@sha256:HEX"),
            )
        })?;
        if role.is_empty() {
            return Err(fail(USAGE, format!("--material {m:?} has an empty role")));
        }
        let s = attest::subjects(&[what.to_string()])?.remove(0);
        materials.push(json!({"role": role, "name": s.name, "digest": s.digest}));
    }
    let actor = a
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let timestamp = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| fail(USAGE, e.to_string()))?
        .format(&Rfc3339)
        .map_err(|e| fail(USAGE, e.to_string()))?;
    let mut promotion = Map::new();
    promotion.insert("from".into(), json!(a.from));
    promotion.insert("to".into(), json!(a.to));
    promotion.insert("actor".into(), json!(actor));
    promotion.insert("timestamp".into(), json!(timestamp));
    if let Some(p) = a.pipeline {
        promotion.insert("pipeline".into(), json!(p));
    }
    if let Some(t) = a.ticket {
        promotion.insert("ticket".into(), json!(t));
    }
    let mut predicate = Map::new();
    predicate.insert(
        "subject".into(),
        Value::Array(subjects.iter().map(subject_json).collect()),
    );
    predicate.insert("materials".into(), Value::Array(materials));
    predicate.insert("promotion".into(), Value::Object(promotion));
    if let Some(uuid) = a.rekor_uuid {
        let mut rekor = Map::new();
        rekor.insert("uuid".into(), json!(uuid));
        if let Some(i) = a.rekor_log_index {
            rekor.insert("logIndex".into(), json!(i));
        }
        predicate.insert("rekor".into(), Value::Object(rekor));
    }
    if let Some(path) = a.attestation {
        let digest = crate::io::sha256_file(std::path::Path::new(&path))?;
        predicate.insert(
            "attestation".into(),
            json!({"bundleSha256": stella_keys::hex(&digest)}),
        );
    }
    attest::sign_statement(&a.keys, PROMOTION_V1, Value::Object(predicate), &a.out, dev)
}

/// Check the promotion predicate's shape; returns (from, to).
fn check_predicate(st: &stella_dsse::Statement) -> Result<(String, String)> {
    let bad = |m: &str| {
        fail(
            VERIFY_FAILED,
            format!("not a valid promotion predicate: {m}"),
        )
    };
    if st.predicate_type != PROMOTION_V1 {
        return Err(fail(
            VERIFY_FAILED,
            format!(
                "predicate type is {:?}, expected {PROMOTION_V1}",
                st.predicate_type
            ),
        ));
    }
    let p = &st.predicate;
    let promo = p
        .get("promotion")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `promotion` object"))?;
    let from = promo
        .get("from")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `promotion.from`"))?;
    let to = promo
        .get("to")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `promotion.to`"))?;
    if !p.get("materials").is_some_and(Value::is_array) {
        return Err(bad("no `materials` array"));
    }
    let inner = p
        .get("subject")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `subject` array"))?;
    let outer: Vec<Value> = st.subject.iter().map(subject_json).collect();
    if inner != &outer {
        return Err(bad(
            "the predicate's subjects differ from the statement's subjects",
        ));
    }
    Ok((from.to_string(), to.to_string()))
}

fn verify_promotion(a: PromotionVerifyArgs, dev: DevKeys) -> Result<()> {
    match verify_promotion_file(&a, dev) {
        Err(e) if a.output == "json" => Err(crate::exit::print_json_failure(
            e,
            json!({"file": a.file, "threshold": a.threshold}),
        )),
        r => r,
    }
}

fn verify_promotion_file(a: &PromotionVerifyArgs, dev: DevKeys) -> Result<()> {
    let v = crate::verify::verify_file(&a.file, &a.trust, a.threshold, dev)?;
    let st = v
        .statement
        .ok_or_else(|| fail(VERIFY_FAILED, "the payload is not an in-toto statement"))?;
    let (from, to) = check_predicate(&st)?;
    if let Some(want) = &a.subject {
        let want = attest::subjects(std::slice::from_ref(want))?.remove(0);
        let found = st
            .subject
            .iter()
            .any(|s| s.digest.get("sha256") == want.digest.get("sha256"));
        if !found {
            return Err(fail(
                VERIFY_FAILED,
                format!(
                    "subject {} ({}) was not promoted by this attestation",
                    want.name,
                    want.digest.get("sha256").map(String::as_str).unwrap_or("")
                ),
            ));
        }
    }
    if a.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "verified": true,
                "from": from,
                "to": to,
                "signers": v.signers.iter().map(|s| json!({"id": s.id, "keyid": s.key_id.as_str()})).collect::<Vec<_>>(),
                "predicate": st.predicate,
            }))?
        );
    } else {
        println!(
            "Verified OK: promotion {from} -> {to} of {} subject(s), signed by {}",
            st.subject.len(),
            v.signers
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
