//! The Grafana dashboard (etc/grafana/stella-signer.json) against a running service: the file
//! is valid JSON with panels and queries, and every metric a query names is exported by
//! `/metrics` of a real signer after a signed and a refused request.

use std::collections::BTreeSet;

use serde_json::Value;
use stella_signer::client::DpopKey;

use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";

/// Metric names (`stella_...`) a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("stella_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` of the dashboard (panel targets and templating queries).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn metric_names_are_extracted_from_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.9, sum by (le) (rate(stella_signer_x_bucket{a=\"b\"}[5m]))) / stella_y"
        ),
        vec!["stella_signer_x_bucket", "stella_y"]
    );
    assert!(metric_names("sum(rate(up[5m]))").is_empty());
}

#[tokio::test]
async fn dashboard_queries_name_metrics_the_service_exports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../etc/grafana/stella-signer.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    let panels = doc["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "the dashboard has its panels");
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
    }
    let mut all = Vec::new();
    exprs(&doc, &mut all);
    let names: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(names.len() >= 6, "{names:?}");

    // A running service, after one signed and one refused (unknown PoE) request.
    let s = TestSigner::start().await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("a-dpop", "signer.sign", Some(&key), None)
        .await;
    let ok = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-a")).await;
    assert_eq!(ok.status, 200);
    let bad = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-unknown")).await;
    assert_eq!(bad.status, 403);
    let scrape = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Declared families (`# TYPE name kind`) and names with samples.
    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let sampled: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for n in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| n.strip_suffix(suf).filter(|f| families.contains(f)))
            .unwrap_or(n.as_str());
        assert!(
            families.contains(family),
            "the dashboard queries {n}, which /metrics does not export:\n{scrape}"
        );
    }
    // Quota use by plan, key validity and the audit API are on the dashboard.
    for n in [
        "stella_signer_quota_admitted_total",
        "stella_signer_quota_hits_total",
        "stella_signer_key_expiry_seconds",
        "stella_signer_key_revoked",
        "stella_signer_audit_api_requests_total",
    ] {
        assert!(names.contains(n), "the dashboard shows {n}");
    }
    // The series a signed request produces carry samples, not only a declaration.
    for n in [
        "stella_signer_requests_total",
        "stella_signer_key_usage_total",
        "stella_signer_request_duration_seconds_bucket",
        "stella_signer_poe_failures_total",
        "stella_signer_quota_admitted_total",
    ] {
        assert!(names.contains(n), "the dashboard shows {n}");
        assert!(sampled.contains(n), "no sample of {n} in\n{scrape}");
    }
}

/// The signing keys' validity from `signing.keyring` as gauges, and the bounded `plan` label.
#[tokio::test]
async fn key_validity_gauges_and_plan_labels() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use stella_keys::{Algorithm, FileKey, Signer as _};

    let dir = tempfile::tempdir().unwrap();
    let a = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let b = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let (a_id, b_id) = (a.key_id().to_string(), b.key_id().to_string());
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let fmt = time::format_description::well_known::Rfc3339;
    let ring = dir.path().join("signing-keys.toml");
    std::fs::write(
        &ring,
        format!(
            "[[keys]]\nid = \"a\"\npublic_key = '''{}'''\npurposes = [\"attestation\"]\nnot_after = \"{}\"\n\n\
             [[keys]]\nid = \"b\"\npublic_key = '''{}'''\npurposes = [\"attestation\"]\nrevoked = true\n",
            a.public_key().to_pem(),
            not_after.format(&fmt).unwrap(),
            b.public_key().to_pem(),
        ),
    )
    .unwrap();
    let mut tenants: HashMap<String, Vec<Arc<dyn stella_keys::Signer>>> = HashMap::new();
    tenants.insert("tenant-a".into(), vec![Arc::new(a)]);
    tenants.insert("tenant-b".into(), vec![Arc::new(b)]);
    let s = TestSigner::start_with(Opts {
        toml: format!(
            "[signing]\nkeyring = \"{}\"\n[licensing]\nplans = [\"team\"]\n",
            ring.display()
        ),
        signers: Some(stella_signer::TenantKeys::new(Vec::new(), tenants)),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    let key = DpopKey::generate().unwrap();
    let token = authority()
        .token("b-dpop", "signer.sign", Some(&key), None)
        .await;
    // The revoked key still signs (the gauge drives the alert; signing is not refused).
    let ok = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-b")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // A license of a plan the configuration does not list: counted as `other`.
    let mut odd = license("tenant-b", 1000.0, 1 << 20);
    odd["plan"] = Value::from("custom-tenant-b-plan");
    s.licensing.set("poe-odd", odd);
    let ok = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body("poe-odd")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let scrape = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{scrape}"))
            .trim()
            .parse()
            .unwrap()
    };
    let expiry = value(&format!(
        "stella_signer_key_expiry_seconds{{key_id=\"{a_id}\"}}"
    ));
    let ten_days = 10.0 * 86400.0;
    assert!((ten_days - 120.0..=ten_days).contains(&expiry), "{expiry}");
    assert!(!scrape.contains(&format!(
        "stella_signer_key_expiry_seconds{{key_id=\"{b_id}\"}}"
    )));
    assert_eq!(
        value(&format!("stella_signer_key_revoked{{key_id=\"{a_id}\"}}")),
        0.0
    );
    assert_eq!(
        value(&format!("stella_signer_key_revoked{{key_id=\"{b_id}\"}}")),
        1.0
    );
    assert_eq!(
        value("stella_signer_quota_admitted_total{plan=\"team\"}"),
        1.0
    );
    assert_eq!(
        value("stella_signer_quota_admitted_total{plan=\"other\"}"),
        1.0
    );
    assert!(!scrape.contains("custom-tenant-b-plan"));
    // The revoked key was used: what StellaSignerKeyRevokedInUse joins on.
    assert_eq!(
        value(&format!(
            "stella_signer_key_usage_total{{key_id=\"{b_id}\",mode=\"file\"}}"
        )),
        2.0
    );
}
