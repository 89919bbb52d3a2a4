//! The OpenAPI document against the running service: every route and status code the
//! document lists is answered for real, each answer's body matches the schema documented
//! for its status and content type, and no answer has a status the document does not list.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use stella_signer::client::DpopKey;

use crate::audit_api::check_schema;
use crate::support::*;

const SIGN: &str = "/api/v1/signer/sign/dsse";
const EXPORT: &str = "/api/v1/signer/sign/export";
const VERIFY: &str = "/api/v1/signer/verify/referrers";
const AUDIT: &str = "/api/v1/signer/audit";
const HEAD: &str = "/api/v1/signer/audit/head";

/// A caller: a DPoP-bound token of one client and scope.
struct Caller {
    http: reqwest::Client,
    key: DpopKey,
    token: String,
}

impl Caller {
    async fn new(client: &str, scope: &str) -> Caller {
        let key = DpopKey::generate().unwrap();
        let token = authority().token(client, scope, Some(&key), None).await;
        Caller {
            http: authority().pki.http(None),
            key,
            token,
        }
    }
}

/// The document, and the (method, path, status) answers seen so far.
struct Coverage {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Coverage {
    /// Send `method path?query` (as `caller`, with `body`, plus `headers`), check the answer
    /// against the document and count it.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        s: &TestSigner,
        method: &str,
        path: &str,
        query: &str,
        caller: Option<&Caller>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = s.url(path);
        let full = if query.is_empty() {
            url.clone()
        } else {
            format!("{url}?{query}")
        };
        let http = match caller {
            Some(c) => c.http.clone(),
            None => authority().pki.http(None),
        };
        let mut req = match method {
            "get" => http.get(&full),
            "post" => http.post(&full),
            other => panic!("method {other}"),
        };
        if let Some(c) = caller {
            let proof = c
                .key
                .proof(&method.to_uppercase(), &url, Some(&c.token), None)
                .unwrap();
            req = req
                .header("authorization", format!("DPoP {}", c.token))
                .header("dpop", proof);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let resp_headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let r = Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: resp_headers,
        };
        self.check(method, path, &r);
        r
    }

    fn check(&mut self, method: &str, path: &str, r: &Reply) {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let documented = &op["responses"][r.status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path}: status {} is not documented: {}",
            r.status,
            r.body
        );
        if let Some(content) = documented["content"].as_object() {
            let ctype = r.headers["content-type"].to_str().unwrap();
            let media = content
                .iter()
                .find(|(m, _)| ctype == m.as_str() || ctype.starts_with(&format!("{m};")))
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("{method} {path} {}: {ctype} not documented", r.status));
            if let Some(schema) = media.get("schema") {
                check_schema(
                    &self.doc,
                    schema,
                    &r.body,
                    &format!("{method} {path} {}", r.status),
                );
            }
        }
        self.seen
            .insert((method.to_string(), path.to_string(), r.status));
    }

    /// Every (method, path, status) the document lists.
    fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut out = BTreeSet::new();
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for status in op["responses"].as_object().unwrap().keys() {
                    out.insert((method.clone(), path.clone(), status.parse().unwrap()));
                }
            }
        }
        out
    }
}

fn dsse_body(poe: &str) -> Vec<u8> {
    serde_json::to_vec(&sign_body(poe)).unwrap()
}

fn export_body(poe: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "manifest": {"version": 1, "artifacts": [{"name": "a.tar", "sha256": "ab".repeat(32)}]},
        "poe": {"format": "jwt", "value": poe},
    }))
    .unwrap()
}

#[tokio::test]
async fn every_documented_route_and_status_is_answered_as_documented() {
    // The main signer: SQLite audit log with signed checkpoints.
    let keydir = tempfile::tempdir().unwrap();
    let (_, key_path) = checkpoint_key_file(keydir.path());
    let mut s = TestSigner::start_with(Opts {
        toml: format!(
            "[audit]\ncheckpoint_key = \"{}\"\ncheckpoint_interval_seconds = 1\n",
            key_path.display()
        ),
        ..Opts::default()
    })
    .await;
    let doc: Value = authority()
        .pki
        .http(None)
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut cov = Coverage {
        doc,
        seen: BTreeSet::new(),
    };
    s.licensing
        .set("poe-a", license("tenant-a", 1000.0, 1 << 20));
    let mut slow = license("tenant-a", 0.001, 1 << 20);
    slow["licenseId"] = json!("lic-slow");
    s.licensing.set("poe-slow", slow);
    let signer = Caller::new("a-dpop", "signer.sign").await;
    let reader = Caller::new("a-audit", "signer.audit").await;
    let big = serde_json::to_vec(&json!({"manifest": {"blob": "x".repeat(300 * 1024)}})).unwrap();

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = cov.call(&s, "get", path, "", None, None, &[]).await;
        assert_eq!(r.status, 200, "{path}");
    }

    for (path, body) in [
        (SIGN, dsse_body as fn(&str) -> Vec<u8>),
        (EXPORT, export_body),
    ] {
        let ok = cov
            .call(
                &s,
                "post",
                path,
                "",
                Some(&signer),
                Some(body("poe-a")),
                &[],
            )
            .await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        assert!(ok.body["auditId"].is_string() && ok.body["policy"]["plan"] == "team");
        let r = cov
            .call(
                &s,
                "post",
                path,
                "",
                Some(&signer),
                Some(b"[]".to_vec()),
                &[],
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{path}");
        let r = cov
            .call(&s, "post", path, "", None, Some(body("poe-a")), &[])
            .await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{path}");
        let r = cov
            .call(
                &s,
                "post",
                path,
                "",
                Some(&reader),
                Some(body("poe-a")),
                &[],
            )
            .await;
        assert_eq!((r.status, r.code()), (403, "insufficient_scope"), "{path}");
        let r = cov
            .call(&s, "post", path, "", Some(&signer), Some(big.clone()), &[])
            .await;
        assert_eq!((r.status, r.code()), (413, "artifact_too_large"), "{path}");
    }
    // One request per thousand seconds: the first passes, the next is throttled.
    let r = cov
        .call(
            &s,
            "post",
            SIGN,
            "",
            Some(&signer),
            Some(dsse_body("poe-slow")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (path, body) in [
        (SIGN, dsse_body("poe-slow")),
        (EXPORT, export_body("poe-slow")),
    ] {
        let r = cov
            .call(&s, "post", path, "", Some(&signer), Some(body), &[])
            .await;
        assert_eq!((r.status, r.code()), (429, "plan_throttled"), "{path}");
        assert!(r.headers.contains_key("retry-after"));
    }

    let scanner = format!("digest={SCANNER}");
    let r = cov
        .call(&s, "get", VERIFY, &scanner, Some(&signer), None, &[])
        .await;
    assert_eq!(
        (r.status, &r.body["trusted"]),
        (200, &json!(true)),
        "{}",
        r.body
    );
    let r = cov
        .call(&s, "get", VERIFY, "", Some(&signer), None, &[])
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = cov.call(&s, "get", VERIFY, &scanner, None, None, &[]).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = cov
        .call(&s, "get", VERIFY, &scanner, Some(&reader), None, &[])
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));

    // The audit routes; the checkpoint of the records above is written within a second.
    let mut head = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let r = cov
            .call(&s, "get", HEAD, "", Some(&reader), None, &[])
            .await;
        if r.status == 200 {
            head = Some(r);
            break;
        }
    }
    assert!(head.is_some(), "no checkpoint was written");
    for path in [AUDIT, HEAD] {
        let r = cov
            .call(
                &s,
                "get",
                path,
                "",
                Some(&reader),
                None,
                &[
                    ("x-stella-tenant", "tenant-a"),
                    ("x-stella-tenant", "tenant-a"),
                ],
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{path}");
        let r = cov.call(&s, "get", path, "", None, None, &[]).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{path}");
        let r = cov
            .call(&s, "get", path, "", Some(&signer), None, &[])
            .await;
        assert_eq!((r.status, r.code()), (403, "insufficient_scope"), "{path}");
    }
    let r = cov
        .call(&s, "get", AUDIT, "limit=2", Some(&reader), None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["records"].as_array().unwrap().len(), 2);
    // A checkpoint that does not verify: 503 (then the real one back, for the shutdown).
    let cp_file = s.state.config.audit.checkpoint_file();
    let good = std::fs::read(&cp_file).unwrap();
    std::fs::write(&cp_file, b"not a checkpoint").unwrap();
    let r = cov
        .call(&s, "get", HEAD, "", Some(&reader), None, &[])
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "upstream_unavailable"),
        "{}",
        r.body
    );
    std::fs::write(&cp_file, good).unwrap();
    s.stop().await;

    // A signer whose audit log cannot be written nor queried, without checkpoints.
    let reads_fail = Arc::new(AtomicBool::new(false));
    let mut broken = TestSigner::start_with(Opts {
        audit: Some(Arc::new(FailingAudit {
            reads_fail: reads_fail.clone(),
        })),
        ..Opts::default()
    })
    .await;
    broken
        .licensing
        .set("poe-a", license("tenant-a", 1000.0, 1 << 20));
    let r = cov
        .call(&broken, "get", "/readyz", "", None, None, &[])
        .await;
    assert_eq!(r.status, 503);
    for (path, body) in [(SIGN, dsse_body("poe-a")), (EXPORT, export_body("poe-a"))] {
        let r = cov
            .call(&broken, "post", path, "", Some(&signer), Some(body), &[])
            .await;
        assert_eq!(
            (r.status, r.code()),
            (503, "upstream_unavailable"),
            "{path}"
        );
    }
    let r = cov
        .call(&broken, "get", VERIFY, &scanner, Some(&signer), None, &[])
        .await;
    assert_eq!((r.status, r.code()), (503, "upstream_unavailable"));
    for path in [AUDIT, HEAD] {
        let r = cov
            .call(&broken, "get", path, "", Some(&reader), None, &[])
            .await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
    }
    reads_fail.store(true, Ordering::SeqCst);
    let r = cov
        .call(&broken, "get", AUDIT, "", Some(&reader), None, &[])
        .await;
    assert_eq!((r.status, r.code()), (503, "upstream_unavailable"));
    broken.stop().await;

    // 8 routes, 36 (method, path, status) answers documented today; a shrinking document
    // must not make this test pass vacuously.
    assert!(cov.documented().len() >= 36, "{:?}", cov.documented());
    let missing: Vec<_> = cov.documented().difference(&cov.seen).cloned().collect();
    assert!(
        missing.is_empty(),
        "documented but never answered: {missing:?}"
    );
}
