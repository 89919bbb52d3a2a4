//! The audit API (`GET /api/v1/signer/audit`, `/audit/head`): scope, sender constraint,
//! tenant isolation between two tenants, filters, the cursor, and the OpenAPI document checked
//! against the real responses.

use serde_json::Value;
use stella_keys::Signer as _;
use stella_signer::client::DpopKey;

use crate::support::*;

const AUDIT: &str = "/api/v1/signer/audit";
const HEAD: &str = "/api/v1/signer/audit/head";
const SIGN: &str = "/api/v1/signer/sign/dsse";

/// A DPoP-bound caller of one client.
struct Reader {
    http: reqwest::Client,
    key: DpopKey,
    token: String,
}

impl Reader {
    async fn new(client: &str, scope: &str) -> Reader {
        let key = DpopKey::generate().unwrap();
        let token = authority().token(client, scope, Some(&key), None).await;
        Reader {
            http: authority().pki.http(None),
            key,
            token,
        }
    }

    async fn get(&self, s: &TestSigner, path: &str, query: &str) -> Reply {
        get_as(&self.http, &self.key, &self.token, s, path, query).await
    }

    /// Every page of `query`, following `nextCursor`.
    async fn all(&self, s: &TestSigner, query: &str) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &cursor {
                Some(c) => format!("{query}&cursor={c}"),
                None => query.to_string(),
            };
            let r = self.get(s, AUDIT, &q).await;
            assert_eq!(r.status, 200, "{}", r.body);
            pages += 1;
            out.extend(r.body["records"].as_array().unwrap().iter().cloned());
            match r.body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return (out, pages),
            }
        }
    }
}

/// `GET path?query` with `token` and a fresh DPoP proof by `key`.
async fn get_as(
    http: &reqwest::Client,
    key: &DpopKey,
    token: &str,
    s: &TestSigner,
    path: &str,
    query: &str,
) -> Reply {
    let url = s.url(path);
    let full = if query.is_empty() {
        url.clone()
    } else {
        format!("{url}?{query}")
    };
    let resp = http
        .get(&full)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &url, Some(token), None).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        headers,
    }
}

fn tenants(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["record"]["tenant"].as_str().unwrap_or(""))
        .collect()
}

/// Minimal JSON Schema (the subset the document uses) against `doc`'s components.
pub(crate) fn check_schema(doc: &Value, schema: &Value, v: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        return check_schema(doc, &doc["components"]["schemas"][name], v, at);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("{at}: bad type in schema"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("{at}: unknown type {other}"),
        });
        assert!(ok, "{at}: {v} is not {types:?}");
    }
    if let Some(e) = schema["enum"].as_array() {
        assert!(e.contains(v), "{at}: {v} not in {e:?}");
    }
    if let Some(c) = schema.get("const") {
        assert_eq!(v, c, "{at}");
    }
    if let Some(p) = schema["pattern"].as_str() {
        let s = v.as_str().unwrap();
        let hex64 = |h: &str| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        match p {
            "^[0-9a-f]{64}$" => assert!(hex64(s), "{at}: {s}"),
            "^sha256:[0-9a-f]{64}$" => {
                assert!(s.strip_prefix("sha256:").is_some_and(hex64), "{at}: {s}")
            }
            other => panic!("{at}: pattern {other} not supported by this checker"),
        }
    }
    if let Some(min) = schema["minimum"].as_i64() {
        assert!(v.as_i64().unwrap() >= min, "{at}: {v} < {min}");
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            assert!(obj.contains_key(r.as_str().unwrap()), "{at}: missing {r}");
        }
        let props = schema["properties"].as_object();
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check_schema(doc, ps, x, &format!("{at}.{k}")),
                None => assert_ne!(
                    schema.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "{at}: unexpected property {k}"
                ),
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        if let Some(min) = schema["minItems"].as_u64() {
            assert!(a.len() as u64 >= min, "{at}: fewer than {min} items");
        }
        for (i, x) in a.iter().enumerate() {
            check_schema(doc, items, x, &format!("{at}[{i}]"));
        }
    }
}

/// The response `r` of `GET path` conforms to the document: its status is documented and the
/// body matches that status's schema.
fn conforms(doc: &Value, path: &str, r: &Reply) {
    let op = &doc["paths"][path]["get"];
    assert!(op.is_object(), "{path} is not in the OpenAPI document");
    let resp = &op["responses"][r.status.to_string()];
    assert!(
        resp.is_object(),
        "{path}: status {} is not documented",
        r.status
    );
    let content = resp["content"].as_object().unwrap();
    let ctype = r.headers["content-type"].to_str().unwrap();
    let media = &content
        .get(ctype)
        .unwrap_or_else(|| panic!("{path}: {ctype} not documented"));
    check_schema(doc, &media["schema"], &r.body, path);
}

#[tokio::test]
async fn audit_api_scopes_isolation_filters_cursor_and_openapi() {
    let keydir = tempfile::tempdir().unwrap();
    let (cp_key, key_path) = checkpoint_key_file(keydir.path());
    let s = TestSigner::start_with(Opts {
        toml: format!(
            "[audit]\ncheckpoint_key = \"{}\"\ncheckpoint_interval_seconds = 1\n",
            key_path.display()
        ),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);

    // Traffic of two tenants: tenant-a signs 3 and is refused once, tenant-b signs 2.
    let a_key = DpopKey::generate().unwrap();
    let a_sign = authority()
        .token("a-dpop", "signer.sign", Some(&a_key), None)
        .await;
    let b_key = DpopKey::generate().unwrap();
    let b_sign = authority()
        .token("b-dpop", "signer.sign", Some(&b_key), None)
        .await;
    let other_digest = format!("sha256:{}", "cd".repeat(32));
    for i in 0..3 {
        let mut body = sign_body("poe-a");
        if i == 2 {
            body["subject"][0]["digest"]["sha256"] = Value::from("cd".repeat(32));
        }
        let r = send_dpop(&http, &s.url(SIGN), &a_sign, &a_key, &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let refused = send_dpop(
        &http,
        &s.url(SIGN),
        &a_sign,
        &a_key,
        &sign_body("poe-unknown"),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    for _ in 0..2 {
        let r = send_dpop(&http, &s.url(SIGN), &b_sign, &b_key, &sign_body("poe-b")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let head_before = s.state.audit.head().await.unwrap().unwrap();

    let a = Reader::new("a-audit", "signer.audit").await;
    let b = Reader::new("b-audit", "signer.audit").await;
    let ops = Reader::new("ops-audit", "signer.audit signer.audit.admin").await;

    // Each tenant sees its own records only.
    let (a_all, _) = a.all(&s, "limit=100").await;
    assert_eq!(a_all.len(), 4);
    assert!(tenants(&a_all).iter().all(|t| *t == "tenant-a"));
    let (b_all, _) = b.all(&s, "limit=100").await;
    assert_eq!(b_all.len(), 2);
    assert!(tenants(&b_all).iter().all(|t| *t == "tenant-b"));
    // Entries carry the chain links, in chain order.
    let seqs: Vec<u64> = a_all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(a_all[0]["hash"].as_str().unwrap().len(), 64);
    // Naming its own tenant is fine; another tenant is refused.
    assert_eq!(a.all(&s, "tenant=tenant-a").await.0.len(), 4);
    let cross = a.get(&s, AUDIT, "tenant=tenant-b").await;
    assert_eq!(
        (cross.status, cross.code()),
        (403, "tenant_mismatch"),
        "{}",
        cross.body
    );
    let cross = b.get(&s, AUDIT, "tenant=tenant-a&outcome=signed").await;
    assert_eq!((cross.status, cross.code()), (403, "tenant_mismatch"));
    // The operator's admin scope reads every tenant, or the one it names.
    let (everything, _) = ops.all(&s, "limit=1000").await;
    assert!(everything.len() >= 6);
    let mut seen: Vec<&str> = tenants(&everything);
    seen.sort();
    seen.dedup();
    assert!(
        seen.contains(&"tenant-a") && seen.contains(&"tenant-b"),
        "{seen:?}"
    );
    let (ops_b, _) = ops.all(&s, "tenant=tenant-b").await;
    assert_eq!(ops_b, b_all);

    // Filters.
    let (signed, _) = a.all(&s, "outcome=signed").await;
    assert_eq!(signed.len(), 3);
    let (denied, _) = a.all(&s, "outcome=denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["record"]["auditId"], refused.audit_id());
    let (by_subject, _) = a.all(&s, &format!("subject={other_digest}")).await;
    assert_eq!(by_subject.len(), 1);
    assert_eq!(by_subject[0]["record"]["subjectDigests"][0], other_digest);
    assert!(b
        .all(&s, &format!("subject={other_digest}"))
        .await
        .0
        .is_empty());
    let t2 = a_all[1]["record"]["time"].as_str().unwrap().to_string();
    let (since, _) = a.all(&s, &format!("since={t2}")).await;
    assert_eq!(since, a_all[1..].to_vec());
    let (until, _) = a.all(&s, &format!("until={t2}")).await;
    assert!(until
        .iter()
        .all(|r| r["record"]["time"].as_str().unwrap() < t2.as_str()));
    assert!(a.all(&s, "since=2999-01-01T00:00:00Z").await.0.is_empty());

    // Pagination: pages of one, the same records; the cursor is bound and tamper-evident.
    let (paged, pages) = a.all(&s, "limit=1").await;
    assert_eq!((paged.clone(), pages), (a_all.clone(), 4));
    let first = a.get(&s, AUDIT, "limit=1").await;
    let cursor = first.body["nextCursor"].as_str().unwrap().to_string();
    let next = a.get(&s, AUDIT, &format!("limit=1&cursor={cursor}")).await;
    assert_eq!(next.body["records"][0], a_all[1]);
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    for (who, q) in [
        (
            &a,
            format!("limit=1&cursor={}", String::from_utf8(tampered).unwrap()),
        ),
        // Other filters, or another tenant, with a valid cursor.
        (&a, format!("limit=1&outcome=signed&cursor={cursor}")),
        (&b, format!("limit=1&cursor={cursor}")),
        (&a, "cursor=garbage".to_string()),
    ] {
        let r = who.get(&s, AUDIT, &q).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{q}: {}",
            r.body
        );
    }
    // Bounded pages and strict parameters.
    for q in [
        "limit=1001",
        "limit=0",
        "outcome=maybe",
        "since=yesterday",
        "foo=bar",
        "subject=sha256:XY",
    ] {
        let r = a.get(&s, AUDIT, q).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{q}");
    }

    // Scopes: a sign token cannot read the log; an audit token cannot sign.
    let sign_reader = Reader::new("a-dpop", "signer.sign").await;
    let r = sign_reader.get(&s, AUDIT, "").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "insufficient_scope"),
        "{}",
        r.body
    );
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"signer.audit\""));
    let r = send_dpop(&http, &s.url(SIGN), &a.token, &a.key, &sign_body("poe-a")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "insufficient_scope"),
        "{}",
        r.body
    );
    // A token with both scopes (b-audit may ask for both) does both.
    let both_key = DpopKey::generate().unwrap();
    let both = authority()
        .token("b-audit", "signer.audit signer.sign", Some(&both_key), None)
        .await;
    let r = send_dpop(&http, &s.url(SIGN), &both, &both_key, &sign_body("poe-b")).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Sender constraint: no token, a DPoP-bound token as Bearer, a proof for another key,
    // a replayed proof; then mTLS.
    let url = s.url(AUDIT);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .header("authorization", format!("Bearer {}", a.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let stranger = DpopKey::generate().unwrap();
    let r = http
        .get(&url)
        .header("authorization", format!("DPoP {}", a.token))
        .header(
            "dpop",
            stranger.proof("GET", &url, Some(&a.token), None).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let proof = a.key.proof("GET", &url, Some(&a.token), None).unwrap();
    for expect in [200, 401] {
        let r = http
            .get(&url)
            .header("authorization", format!("DPoP {}", a.token))
            .header("dpop", &proof)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expect, "replayed proof");
    }
    let pki = &authority().pki;
    let mtls_token = authority()
        .token("a-audit-mtls", "signer.audit", None, Some(&pki.client_a))
        .await;
    let with_cert = pki.http(Some(&pki.client_a));
    let r = with_cert
        .get(&url)
        .header("authorization", format!("Bearer {mtls_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["records"], a.get(&s, AUDIT, "").await.body["records"]);
    assert!(tenants(body["records"].as_array().unwrap())
        .iter()
        .all(|t| *t == "tenant-a"));
    let other_cert = pki.http(Some(&pki.client_b));
    let r = other_cert
        .get(&url)
        .header("authorization", format!("Bearer {mtls_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The head: the latest signed checkpoint, verifiable with the checkpoint key.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let head = a.get(&s, HEAD, "").await;
    assert_eq!(head.status, 200, "{}", head.body);
    let env =
        stella_dsse::Envelope::from_json(head.body["envelope"].to_string().as_bytes()).unwrap();
    let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
        cp_key.public_key().clone(),
    )])
    .unwrap();
    stella_keys::verify_envelope(&env, &ring, &stella_keys::Policy::new(1)).unwrap();
    let payload: Value = serde_json::from_slice(&env.payload).unwrap();
    assert_eq!(payload, head.body["checkpoint"]);
    assert!(payload["records"].as_u64().unwrap() >= head_before.seq);
    let r = sign_reader.get(&s, HEAD, "").await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));

    // Reads are counted, not audited: only the sign request above added a record.
    let head_after = s.state.audit.head().await.unwrap().unwrap();
    assert_eq!(
        head_after.seq,
        head_before.seq + 2,
        "the refused sign + the signed one"
    );
    let metrics = http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} missing"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        value("stella_signer_audit_api_requests_total{route=\"audit\",outcome=\"ok\"}") >= 15.0
    );
    assert!(
        value("stella_signer_audit_api_requests_total{route=\"audit\",outcome=\"denied\"}") >= 10.0
    );
    assert!(
        value("stella_signer_audit_api_requests_total{route=\"audit_head\",outcome=\"ok\"}") >= 1.0
    );
    assert!(value("stella_signer_audit_api_records_total") >= 30.0);

    // The OpenAPI document describes what the routes really answer.
    let doc: Value = http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    conforms(&doc, AUDIT, &a.get(&s, AUDIT, "limit=2").await);
    conforms(&doc, AUDIT, &ops.get(&s, AUDIT, "").await);
    conforms(&doc, AUDIT, &a.get(&s, AUDIT, "tenant=tenant-b").await);
    conforms(&doc, AUDIT, &a.get(&s, AUDIT, "limit=0").await);
    conforms(&doc, AUDIT, &sign_reader.get(&s, AUDIT, "").await);
    conforms(&doc, HEAD, &a.get(&s, HEAD, "").await);
    let params: Vec<&str> = doc["paths"][AUDIT]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "since", "until", "tenant", "outcome", "subject", "limit", "cursor",
    ] {
        assert!(params.contains(&p), "{p} undocumented");
    }
    drop(s);
}

/// Without a checkpoint key the head route says so (404), and the document covers that too.
#[tokio::test]
async fn audit_head_without_checkpoints_is_not_found() {
    let s = TestSigner::start().await;
    let a = Reader::new("a-audit", "signer.audit").await;
    let r = a.get(&s, HEAD, "").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    let http = authority().pki.http(None);
    let doc: Value = http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    conforms(&doc, HEAD, &r);
}

/// A fresh PostgreSQL database, dropped on drop.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgDb {
    fn new() -> PgDb {
        let admin = std::env::var("STELLA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("stella_auditapi_{}", stella_signer::random_hex(8));
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
        PgDb { admin, name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// The same API over the PostgreSQL audit log: isolation, filters and pages.
#[tokio::test]
async fn audit_api_on_postgres() {
    let db = PgDb::new();
    let log = stella_store::PgAudit::connect(stella_store::PgOptions::new(&db.url))
        .await
        .unwrap();
    let s = TestSigner::start_with(Opts {
        audit: Some(std::sync::Arc::new(log)),
        ..Opts::default()
    })
    .await;
    let http = authority().pki.http(None);
    for (client, poe, n) in [("a-dpop", "poe-a", 3), ("b-dpop", "poe-b", 2)] {
        let key = DpopKey::generate().unwrap();
        let token = authority()
            .token(client, "signer.sign", Some(&key), None)
            .await;
        for _ in 0..n {
            let r = send_dpop(&http, &s.url(SIGN), &token, &key, &sign_body(poe)).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    let a = Reader::new("a-audit", "signer.audit").await;
    let b = Reader::new("b-audit", "signer.audit").await;
    let (a_all, pages) = a.all(&s, "limit=2").await;
    assert_eq!((a_all.len(), pages), (3, 2));
    assert!(tenants(&a_all).iter().all(|t| *t == "tenant-a"));
    let (b_all, _) = b.all(&s, "outcome=signed").await;
    assert_eq!(b_all.len(), 2);
    assert!(tenants(&b_all).iter().all(|t| *t == "tenant-b"));
    let subject = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(b.all(&s, &format!("subject={subject}")).await.0, b_all);
    let r = b.get(&s, AUDIT, "tenant=tenant-a").await;
    assert_eq!((r.status, r.code()), (403, "tenant_mismatch"));
    drop(s);
}

/// Tokens signed by the Authority's key but wrong for the audit API: unbound, expired, the
/// admin scope without the audit scope, an audience for another service.
#[tokio::test]
async fn audit_api_refuses_unbound_expired_and_mis_scoped_tokens() {
    let s = TestSigner::start().await;
    let key = DpopKey::generate().unwrap();
    let http = authority().pki.http(None);
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = authority().good_claims(key.thumbprint());
        c["scope"] = Value::from("signer.audit");
        f(&mut c);
        authority().forge(at_header(), c)
    };
    // The control: a well-formed token (signed with the Authority's key) bound to `key`
    // reads tenant-a's records.
    let r = get_as(&http, &key, &claims(&|_| {}), &s, AUDIT, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["records"].is_array());
    let now = now();
    for (what, token, status, code) in [
        (
            "no cnf",
            claims(&|c| {
                c.as_object_mut().unwrap().remove("cnf");
            }),
            401,
            "invalid_token",
        ),
        (
            "expired",
            claims(&|c| {
                c["iat"] = Value::from(now - 900);
                c["exp"] = Value::from(now - 600);
            }),
            401,
            "invalid_token",
        ),
        (
            "admin scope alone",
            claims(&|c| c["scope"] = Value::from("signer.audit.admin")),
            403,
            "insufficient_scope",
        ),
        (
            "other audience",
            claims(&|c| c["aud"] = Value::from("not-the-signer")),
            401,
            "invalid_token",
        ),
    ] {
        let r = get_as(&http, &key, &token, &s, AUDIT, "").await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.body);
    }
}
