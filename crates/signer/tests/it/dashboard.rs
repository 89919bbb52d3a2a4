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
    // The series a signed request produces carry samples, not only a declaration.
    for n in [
        "stella_signer_requests_total",
        "stella_signer_key_usage_total",
        "stella_signer_request_duration_seconds_bucket",
        "stella_signer_poe_failures_total",
    ] {
        assert!(names.contains(n), "the dashboard shows {n}");
        assert!(sampled.contains(n), "no sample of {n} in\n{scrape}");
    }
}
