//! `stella promotion attest|verify`: statements of predicate type `stella.ops/promotion@v1`,
//! recording that artefacts moved from one environment to another, with the evidence
//! (materials), the promotion itself, and optional Rekor and attestation references.
//!
//! Predicate shape (see docs/formats.md):
//! `{"subject":[{name,digest}], "materials":[{role,name?,digest}], "promotion":{from,to,actor,
//! timestamp, pipeline?, ticket?}, "rekor"?:{uuid, logIndex?}, "attestation"?:{bundleSha256}}`.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
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
        materials.push(MaterialView {
            role: role.to_string(),
            subject: s,
        });
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
    let attestation = match a.attestation {
        Some(path) => Some(AttestationRef {
            bundle_sha256: stella_keys::hex(&crate::io::sha256_file(std::path::Path::new(&path))?),
        }),
        None => None,
    };
    let predicate = PromotionPredicate::new(
        &subjects,
        &materials,
        PromotionView {
            from: &a.from,
            to: &a.to,
            actor: &actor,
            timestamp: &timestamp,
            pipeline: a.pipeline.as_deref(),
            ticket: a.ticket.as_deref(),
        },
        a.rekor_uuid.as_deref().map(|uuid| RekorRef {
            uuid,
            log_index: a.rekor_log_index,
        }),
        attestation,
    );
    // Through a `Value`: the statement's predicate, keys sorted as before.
    let predicate = crate::view::to_value(&predicate)?;
    attest::sign_statement(&a.keys, PROMOTION_V1, predicate, &a.out, dev)
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
    let outer = crate::view::to_value(
        &st.subject
            .iter()
            .map(crate::view::SubjectView)
            .collect::<Vec<_>>(),
    )?;
    if outer.as_array() != Some(inner) {
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
            crate::view::fields(&crate::view::FileFailureView {
                file: &a.file,
                threshold: a.threshold,
            }),
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
        crate::view::print(&PromotionVerifiedView {
            verified: true,
            from: &from,
            to: &to,
            signers: crate::view::SignerView::all(&v.signers),
            predicate: &st.predicate,
        })?;
    } else {
        println!(
            "Verified OK: promotion {from} -> {to} of {} subject(s), signed by {}",
            st.subject.len(),
            crate::view::signer_ids(&v.signers)
        );
    }
    Ok(())
}

/// A `--material ROLE=REF` before it goes into the predicate.
struct MaterialView {
    role: String,
    subject: stella_dsse::Subject,
}

/// The promotion predicate (`PROMOTION_V1`) as signed. `None` fields are left out.
#[derive(Serialize)]
struct PromotionPredicate<'a> {
    subject: Vec<crate::view::SubjectView<'a>>,
    materials: Vec<MaterialEntry<'a>>,
    promotion: PromotionView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rekor: Option<RekorRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation: Option<AttestationRef>,
}

impl<'a> PromotionPredicate<'a> {
    fn new(
        subjects: &'a [stella_dsse::Subject],
        materials: &'a [MaterialView],
        promotion: PromotionView<'a>,
        rekor: Option<RekorRef<'a>>,
        attestation: Option<AttestationRef>,
    ) -> Self {
        PromotionPredicate {
            subject: subjects.iter().map(crate::view::SubjectView).collect(),
            materials: materials
                .iter()
                .map(|m| MaterialEntry {
                    role: &m.role,
                    name: &m.subject.name,
                    digest: &m.subject.digest,
                })
                .collect(),
            promotion,
            rekor,
            attestation,
        }
    }
}

/// What the promoted artifact was built from.
#[derive(Serialize)]
struct MaterialEntry<'a> {
    role: &'a str,
    name: &'a str,
    digest: &'a std::collections::BTreeMap<String, String>,
}

/// Who promoted what, from where to where.
#[derive(Serialize)]
struct PromotionView<'a> {
    from: &'a str,
    to: &'a str,
    actor: &'a str,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
}

/// The Rekor entry of the promoted artifact's attestation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RekorRef<'a> {
    uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_index: Option<u64>,
}

/// The promoted artifact's attestation bundle, by digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttestationRef {
    bundle_sha256: String,
}

/// `promotion verify --output json`.
#[derive(Serialize)]
struct PromotionVerifiedView<'a> {
    verified: bool,
    from: &'a str,
    to: &'a str,
    signers: Vec<crate::view::SignerView<'a>>,
    predicate: &'a serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn subject(name: &str) -> stella_dsse::Subject {
        stella_dsse::Subject {
            name: name.into(),
            digest: [("sha256".to_string(), "ab".repeat(32))].into(),
        }
    }

    /// The predicate as `promotion attest` built it before the views (a `Map` by hand).
    fn old_literal(
        subjects: &[stella_dsse::Subject],
        materials: &[MaterialView],
        optional: bool,
    ) -> Value {
        let subject_json = |s: &stella_dsse::Subject| json!({"name": s.name, "digest": s.digest});
        let mut promotion = Map::new();
        promotion.insert("from".into(), json!("staging"));
        promotion.insert("to".into(), json!("prod"));
        promotion.insert("actor".into(), json!("alice"));
        promotion.insert("timestamp".into(), json!("2025-12-06T10:00:00Z"));
        if optional {
            promotion.insert("pipeline".into(), json!("ci/42"));
            promotion.insert("ticket".into(), json!("OPS-1"));
        }
        let mut predicate = Map::new();
        predicate.insert(
            "subject".into(),
            Value::Array(subjects.iter().map(subject_json).collect()),
        );
        predicate.insert(
            "materials".into(),
            Value::Array(
                materials
                    .iter()
                    .map(|m| json!({"role": m.role, "name": m.subject.name, "digest": m.subject.digest}))
                    .collect(),
            ),
        );
        predicate.insert("promotion".into(), Value::Object(promotion));
        if optional {
            predicate.insert("rekor".into(), json!({"uuid": "u1", "logIndex": 7}));
            predicate.insert("attestation".into(), json!({"bundleSha256": "cd"}));
        }
        Value::Object(predicate)
    }

    #[test]
    fn the_predicate_is_what_the_hand_built_map_was() {
        let subjects = [subject("app"), subject("web")];
        let materials = [MaterialView {
            role: "sbom".into(),
            subject: subject("sbom.json"),
        }];
        for optional in [false, true] {
            let view = PromotionPredicate::new(
                &subjects,
                &materials,
                PromotionView {
                    from: "staging",
                    to: "prod",
                    actor: "alice",
                    timestamp: "2025-12-06T10:00:00Z",
                    pipeline: optional.then_some("ci/42"),
                    ticket: optional.then_some("OPS-1"),
                },
                optional.then_some(RekorRef {
                    uuid: "u1",
                    log_index: Some(7),
                }),
                optional.then(|| AttestationRef {
                    bundle_sha256: "cd".into(),
                }),
            );
            let got = crate::view::to_value(&view).unwrap();
            assert_eq!(got, old_literal(&subjects, &materials, optional));
            // Unset options are absent, not null.
            assert_eq!(got.get("rekor").is_some(), optional);
            assert_eq!(got["promotion"].get("ticket").is_some(), optional);
        }
    }
}
