//! Issue #15: the DPoP proof check reads the proof with a borrowing strict parse
//! ([`CompactJws`], [`StrictObject`]) instead of `Jws::parse`'s `Value` trees, remembers the
//! last `htu` it parsed per thread, and compares `ath` and hosts without allocating. These
//! tests run a corpus of hostile proofs through the check as it was (kept here as
//! [`validate_reference`], verbatim but for the key memo, which it never consults, and the
//! `htu` spelling rules added since, written apart: RFC 3986 syntax, dotted-decimal IPv4) and the
//! check as it is, and assert the same outcome — the same `ApiError` in every field, or both
//! accepted — case by case, twice each (the second time the replay cache and the `htu` memo
//! are warm). The strict object parse is also run against `jcs::parse_strict` directly over
//! a corpus of valid, invalid and randomly mutated JSON texts.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use stella_keys::{Algorithm, FileKey};
use stella_store::ReplayKey;

use super::*;
use crate::jose::{self, Jwk, Jws, Scalar, StrictObject};

/// The DPoP proof check before issue #15's typed parse (`DpopValidator::validate` at
/// `b094353`), minus the key memo (an optimisation that never changes a decision).
async fn validate_reference(
    v: &DpopValidator,
    req: &AuthRequest<'_>,
    access_token_sha256: &[u8; 32],
    jkt: &str,
    tenant: &str,
    now: i64,
) -> Result<(), ApiError> {
    let proof = match req.dpop.as_slice() {
        [] => return Err(bad_proof("the DPoP header is missing")),
        [one] => std::str::from_utf8(one).map_err(|_| bad_proof("the DPoP header is not text"))?,
        _ => return Err(bad_proof("more than one DPoP header")),
    };
    let jws = Jws::parse(proof).map_err(|e| bad_proof(format!("DPoP proof: {e}")))?;
    if jws.header_str("typ") != Some("dpop+jwt") {
        return Err(bad_proof("DPoP proof `typ` must be `dpop+jwt`"));
    }
    if !v.algs.contains(&jws.alg) {
        return Err(bad_proof(format!(
            "DPoP proof algorithm {} is not accepted",
            jws.alg
        )));
    }
    let jwk_value = jws
        .header
        .get("jwk")
        .ok_or_else(|| bad_proof("DPoP proof header has no `jwk`"))?;
    let jwk =
        Jwk::from_value(jwk_value).map_err(|e| bad_proof(format!("DPoP proof `jwk`: {e}")))?;
    jws.verify(&jwk)
        .map_err(|e| bad_proof(format!("DPoP proof: {e}")))?;
    let c = &jws.claims;
    let jti = claim_str(c, "jti").ok_or_else(|| bad_proof("DPoP proof has no `jti`"))?;
    if jti.is_empty() || jti.len() > 256 {
        return Err(bad_proof("DPoP proof `jti` must be 1..=256 characters"));
    }
    if claim_str(c, "htm").as_deref() != Some(req.method) {
        return Err(bad_proof(format!(
            "DPoP proof `htm` does not match the request method {}",
            req.method
        )));
    }
    let htu = claim_str(c, "htu").ok_or_else(|| bad_proof("DPoP proof has no `htu`"))?;
    let htu = written_as_uri(&htu)
        .then(|| url::Url::parse(&htu).ok())
        .flatten()
        .filter(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => {
                let ip = ip.to_string();
                htu.contains(&format!("://{ip}/"))
                    || htu.contains(&format!("://{ip}:"))
                    || htu.contains(&format!("@{ip}/"))
                    || htu.contains(&format!("@{ip}:"))
                    || htu.ends_with(&format!("://{ip}"))
            }
            _ => true,
        })
        .ok_or_else(|| bad_proof("DPoP proof `htu` is not a URI"))?;
    let same = htu.scheme() == req.target.scheme()
        && htu.host_str().map(str::to_ascii_lowercase)
            == req.target.host_str().map(str::to_ascii_lowercase)
        && htu.port_or_known_default() == req.target.port_or_known_default()
        && htu.path() == req.target.path();
    if !same {
        return Err(bad_proof(format!(
            "DPoP proof `htu` does not match the request URI {}",
            req.target
        )));
    }
    let iat = c
        .get("iat")
        .filter(|v| v.is_i64() || v.is_u64())
        .and_then(numeric_date)
        .ok_or_else(|| {
            bad_proof(format!(
                "DPoP proof has no integer `iat` in 0..={MAX_NUMERIC_DATE}"
            ))
        })?;
    if after(iat, now, v.skew) {
        return Err(bad_proof("DPoP proof `iat` is in the future"));
    }
    if older_than(iat, now, v.max_age) {
        return Err(bad_proof("DPoP proof is too old (`iat`)"));
    }
    let ath = claim_str(c, "ath").ok_or_else(|| bad_proof("DPoP proof has no `ath`"))?;
    let want_ath = URL_SAFE_NO_PAD.encode(access_token_sha256);
    if ath != want_ath {
        return Err(bad_proof(
            "DPoP proof `ath` does not match the access token",
        ));
    }
    if jwk.thumbprint() != jkt {
        return Err(bad_proof(
            "DPoP proof key does not match the token's `cnf.jkt`",
        ));
    }
    if let Some(n) = &v.nonce {
        n.ensure(now).await.map_err(|e| {
            let mut err = ApiError::unavailable(
                "the DPoP nonce key is unavailable; nothing was signed; retry later",
                format!("{e}"),
            );
            err.retry_after = Some(1);
            err
        })?;
        let ok = claim_str(c, "nonce").is_some_and(|x| n.check(&x, now));
        if !ok {
            let mut e = ApiError::new(Code::UseDpopNonce, "a fresh DPoP nonce is required");
            e.dpop_nonce = n.issue(now);
            return Err(e);
        }
    }
    let key = format!("{jkt}:{jti}");
    let expires = iat
        .max(now)
        .saturating_add(v.max_age)
        .saturating_add(v.skew);
    match v
        .replay
        .check_and_insert_in(ReplayKey::new(tenant, &key), expires)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(bad_proof("DPoP proof `jti` was already used (replay)")),
        Err(e) => {
            let mut err = ApiError::unavailable(
                "the replay cache cannot take this proof (full or unavailable); nothing was signed; retry later",
                format!("replay cache: {e}"),
            );
            err.retry_after = Some(u64::try_from(v.max_age).unwrap_or(60).max(1));
            Err(err)
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The reference's reading of RFC 3986 `absolute-URI` with an authority: `scheme "://"`, then
/// printable ASCII except the characters the RFC never allows unencoded.
fn written_as_uri(htu: &str) -> bool {
    let Some((scheme, _)) = htu.split_once("://") else {
        return false;
    };
    let mut sc = scheme.chars();
    sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        && sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && htu
            .chars()
            .all(|c| ('!'..='~').contains(&c) && !"\\\"<>^`{|}".contains(c))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exactly these header and claims bytes, signed by `key`.
fn sign_raw(key: &FileKey, header: &[u8], claims: &[u8]) -> String {
    jose::sign::compact_encoded(key, &b64(header), claims).unwrap()
}

struct Fixture {
    a: FileKey,
    b: FileKey,
    a_jwk: Value,
    b_jwk: Value,
    jkt: String,
    token_hash: [u8; 32],
    now: i64,
}

impl Fixture {
    fn new() -> Fixture {
        let a = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let b = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let a_jwk = jose::sign::public_jwk(&a);
        let b_jwk = jose::sign::public_jwk(&b);
        let jkt = Jwk::from_value(&a_jwk).unwrap().thumbprint().to_string();
        Fixture {
            a,
            b,
            a_jwk,
            b_jwk,
            jkt,
            token_hash: stella_keys::sha256(b"the-access-token"),
            now: now_unix(),
        }
    }

    fn ath(&self) -> String {
        b64(&self.token_hash)
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.a_jwk})
    }

    fn claims(&self, jti: &str) -> Value {
        json!({"jti": jti, "htm": "POST", "htu": TARGET, "iat": self.now, "ath": self.ath()})
    }

    /// Signed by A over these values.
    fn proof(&self, header: &Value, claims: &Value) -> String {
        sign_raw(
            &self.a,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }

    /// A with the standard header, claims as raw JSON text.
    fn proof_raw_claims(&self, claims: &str) -> String {
        sign_raw(
            &self.a,
            self.header().to_string().as_bytes(),
            claims.as_bytes(),
        )
    }

    /// A with the standard claims (fresh jti), header as raw JSON text.
    fn proof_raw_header(&self, header: &str, jti: &str) -> String {
        sign_raw(
            &self.a,
            header.as_bytes(),
            self.claims(jti).to_string().as_bytes(),
        )
    }
}

const TARGET: &str = "https://signer.test/api/v1/signer/sign/dsse";

/// Every hostile proof of the corpus (labelled), for the fixture's key A and [`TARGET`].
fn corpus(f: &Fixture) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |label: &str, proof: String| out.push((label.to_string(), proof.into_bytes()));
    let mut n = 0u32;
    let mut jti = || {
        n += 1;
        format!("jti-{n}")
    };

    add("valid", f.proof(&f.header(), &f.claims(&jti())));
    let a_x = f.a_jwk["x"].as_str().unwrap().to_string();
    let a_y = f.a_jwk["y"].as_str().unwrap().to_string();

    // --- header: typ, alg, crit, jwk --------------------------------------------------------
    for (label, typ) in [
        ("typ missing", None),
        ("typ JWT", Some(json!("JWT"))),
        ("typ upper case", Some(json!("DPOP+JWT"))),
        ("typ with media type", Some(json!("application/dpop+jwt"))),
        ("typ number", Some(json!(1))),
        ("typ null", Some(json!(null))),
        ("typ array", Some(json!(["dpop+jwt"]))),
    ] {
        let mut h = f.header();
        match typ {
            None => {
                h.as_object_mut().unwrap().remove("typ");
            }
            Some(t) => h["typ"] = t,
        }
        add(label, f.proof(&h, &f.claims(&jti())));
    }
    for alg in [
        json!("none"),
        json!("HS256"),
        json!("RS256"),
        json!("PS256"),
        json!("EdDSA"),
        json!("Ed25519"),
        json!("ES384"),
        json!("es256"),
        json!(" ES256"),
        json!(""),
        json!(256),
        json!(null),
        json!({"ES256": true}),
    ] {
        let mut h = f.header();
        h["alg"] = alg.clone();
        add(&format!("alg {alg}"), f.proof(&h, &f.claims(&jti())));
    }
    let mut h = f.header();
    h.as_object_mut().unwrap().remove("alg");
    add("alg missing", f.proof(&h, &f.claims(&jti())));
    for crit in [json!(["exp"]), json!([]), json!(null), json!("x")] {
        let mut h = f.header();
        h["crit"] = crit.clone();
        add(&format!("crit {crit}"), f.proof(&h, &f.claims(&jti())));
    }
    let mut h = f.header();
    h.as_object_mut().unwrap().remove("jwk");
    add("jwk missing", f.proof(&h, &f.claims(&jti())));
    for (label, jwk) in [
        ("jwk string", json!("abc")),
        ("jwk null", json!(null)),
        ("jwk number", json!(7)),
        ("jwk array", json!([f.a_jwk.clone()])),
        ("jwk empty", json!({})),
        ("jwk of B", f.b_jwk.clone()),
        (
            "jwk with d",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "d": "AAAA"}),
        ),
        (
            "jwk with kid",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "kid": "k1"}),
        ),
        (
            "jwk with alg ES256",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "alg": "ES256"}),
        ),
        (
            "jwk with alg RS256",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "alg": "RS256"}),
        ),
        (
            "jwk with alg HS256",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "alg": "HS256"}),
        ),
        (
            "jwk with use",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "use": "sig"}),
        ),
        (
            "jwk kty ec",
            json!({"kty": "ec", "crv": "P-256", "x": a_x, "y": a_y}),
        ),
        (
            "jwk kty OKP",
            json!({"kty": "OKP", "crv": "P-256", "x": a_x, "y": a_y}),
        ),
        ("jwk kty oct", json!({"kty": "oct", "k": "AAAA"})),
        (
            "jwk crv P-384",
            json!({"kty": "EC", "crv": "P-384", "x": a_x, "y": a_y}),
        ),
        (
            "jwk crv p-256",
            json!({"kty": "EC", "crv": "p-256", "x": a_x, "y": a_y}),
        ),
        ("jwk no y", json!({"kty": "EC", "crv": "P-256", "x": a_x})),
        (
            "jwk x number",
            json!({"kty": "EC", "crv": "P-256", "x": 1, "y": a_y}),
        ),
        (
            "jwk x short",
            json!({"kty": "EC", "crv": "P-256", "x": &a_x[..42], "y": a_y}),
        ),
        (
            "jwk x padded",
            json!({"kty": "EC", "crv": "P-256", "x": format!("{a_x}="), "y": a_y}),
        ),
        (
            "jwk x standard alphabet",
            json!({"kty": "EC", "crv": "P-256", "x": a_x.replace('-', "+").replace('_', "/"), "y": a_y}),
        ),
        (
            "jwk x 33 bytes",
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1u8; 33]), "y": a_y}),
        ),
        (
            "jwk not on the curve",
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1u8; 32]), "y": b64(&[2u8; 32])}),
        ),
        (
            "jwk A's x with B's y",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": f.b_jwk["y"]}),
        ),
        (
            "jwk B's x with A's y",
            json!({"kty": "EC", "crv": "P-256", "x": f.b_jwk["x"], "y": a_y}),
        ),
        (
            "jwk x and y swapped",
            json!({"kty": "EC", "crv": "P-256", "x": a_y, "y": a_x}),
        ),
        (
            "jwk nested",
            json!({"kty": "EC", "crv": "P-256", "x": a_x, "y": a_y, "ext": {"a": [1, {"b": null}]}}),
        ),
    ] {
        let mut h = f.header();
        h["jwk"] = jwk;
        add(label, f.proof(&h, &f.claims(&jti())));
    }
    // Raw headers: duplicates, escapes, whitespace, members in another order.
    let jwk_text = f.a_jwk.to_string();
    for (label, header) in [
        (
            "header duplicate typ",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"typ":"dpop+jwt"}}"#),
        ),
        (
            "header duplicate alg differing",
            format!(r#"{{"typ":"dpop+jwt","alg":"none","jwk":{jwk_text},"alg":"ES256"}}"#),
        ),
        (
            "header duplicate via escape",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"\u0074yp":"x"}}"#),
        ),
        (
            "header duplicate jwk member",
            format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{a_x}","y":"{a_y}","x":"{a_x}"}}}}"#
            ),
        ),
        (
            "header escaped values",
            format!(
                r#"{{"typ":"dpop\u002bjwt","alg":"ES\u0032\u0035\u0036","jwk":{{"kty":"\u0045C","crv":"P-256","x":"{a_x}","y":"{a_y}"}}}}"#
            ),
        ),
        (
            "header escaped member names",
            format!(
                r#"{{"\u0074yp":"dpop+jwt","al\u0067":"ES256","j\u0077k":{{"k\u0074y":"EC","crv":"P-256","\u0078":"{a_x}","y":"{a_y}"}}}}"#
            ),
        ),
        (
            "header escaped coordinate",
            format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"\u{}{}","y":"{a_y}"}}}}"#,
                format_args!("{:04x}", u32::from(a_x.as_bytes()[0])),
                &a_x[1..]
            ),
        ),
        (
            "header whitespace",
            format!(
                " \t\r\n{{ \"typ\" : \"dpop+jwt\" ,\n \"alg\":\"ES256\", \"jwk\" : {{ \"kty\":\"EC\", \"crv\":\"P-256\", \"x\":\"{a_x}\", \"y\":\"{a_y}\" }} }}\n "
            ),
        ),
        (
            "header reordered",
            format!(
                r#"{{"jwk":{{"y":"{a_y}","x":"{a_x}","crv":"P-256","kty":"EC"}},"alg":"ES256","typ":"dpop+jwt"}}"#
            ),
        ),
        (
            "header trailing comma",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},}}"#),
        ),
        (
            "header trailing text",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text}}} x"#),
        ),
        (
            "header two objects",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text}}}{{}}"#),
        ),
        (
            "header BOM",
            format!("\u{feff}{{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":{jwk_text}}}"),
        ),
        (
            "header lone surrogate",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":"\ud800"}}"#),
        ),
        (
            "header surrogate pair",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":"\ud83d\ude00"}}"#),
        ),
        (
            "header reversed pair",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":"\ude00\ud83d"}}"#),
        ),
        (
            "header NaN",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":NaN}}"#),
        ),
        (
            "header huge number",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":1e400}}"#),
        ),
        (
            "header control character",
            format!("{{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":{jwk_text},\"x\":\"a\u{1}b\"}}"),
        ),
        (
            "header bad escape",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"x":"\x41"}}"#),
        ),
        (
            "header single quotes",
            format!(r#"{{'typ':"dpop+jwt","alg":"ES256","jwk":{jwk_text}}}"#),
        ),
        ("header array", format!(r#"[{jwk_text}]"#)),
        ("header string", r#""dpop+jwt""#.to_string()),
        ("header empty", String::new()),
        (
            "header nested duplicate",
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"z":[{{"a":1,"a":2}}]}}"#),
        ),
        (
            "header depth 127",
            format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"z":{}{}}}"#,
                "[".repeat(127),
                "]".repeat(127)
            ),
        ),
        (
            "header depth 128",
            format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"z":{}{}}}"#,
                "[".repeat(128),
                "]".repeat(128)
            ),
        ),
    ] {
        add(label, f.proof_raw_header(&header, &jti()));
    }
    // Many members: the set-based duplicate check.
    let many: String = (0..300).map(|i| format!(r#""m{i}":{i},"#)).collect();
    add(
        "header 300 members",
        f.proof_raw_header(
            &format!(r#"{{{many}"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text}}}"#),
            &jti(),
        ),
    );
    add(
        "header 300 members and a duplicate",
        f.proof_raw_header(
            &format!(r#"{{{many}"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"m150":1}}"#),
            &jti(),
        ),
    );
    add(
        "header 17 members, duplicate escaped",
        f.proof_raw_header(
            &format!(
                r#"{{{}"typ":"dpop+jwt","alg":"ES256","jwk":{jwk_text},"\u006d3":1}}"#,
                (0..14)
                    .map(|i| format!(r#""m{i}":{i},"#))
                    .collect::<String>()
            ),
            &jti(),
        ),
    );
    // Key confusion.
    let by_b = |claims: &Value| {
        sign_raw(
            &f.b,
            f.header().to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    };
    add("A's jwk, signed by B", by_b(&f.claims(&jti())));
    let b_header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": f.b_jwk});
    add(
        "B's own proof (not cnf.jkt)",
        sign_raw(
            &f.b,
            b_header.to_string().as_bytes(),
            f.claims(&jti()).to_string().as_bytes(),
        ),
    );
    add(
        "B's jwk, signed by A",
        sign_raw(
            &f.a,
            b_header.to_string().as_bytes(),
            f.claims(&jti()).to_string().as_bytes(),
        ),
    );
    let ed = FileKey::generate(Algorithm::Ed25519).unwrap();
    add(
        "EdDSA proof",
        sign_raw(
            &ed,
            json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jose::sign::public_jwk(&ed)})
                .to_string()
                .as_bytes(),
            f.claims(&jti()).to_string().as_bytes(),
        ),
    );
    add(
        "ES256 header over an Ed25519 jwk",
        sign_raw(
            &ed,
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jose::sign::public_jwk(&ed)})
                .to_string()
                .as_bytes(),
            f.claims(&jti()).to_string().as_bytes(),
        ),
    );

    // --- claims ----------------------------------------------------------------------------
    for member in ["jti", "htm", "htu", "iat", "ath"] {
        let mut c = f.claims(&jti());
        c.as_object_mut().unwrap().remove(member);
        add(
            &format!("claims without {member}"),
            f.proof(&f.header(), &c),
        );
        for wrong in [json!(null), json!(1), json!(true), json!(["x"]), json!({})] {
            let mut c = f.claims(&jti());
            c[member] = wrong.clone();
            add(
                &format!("claims {member} = {wrong}"),
                f.proof(&f.header(), &c),
            );
        }
    }
    for (label, j) in [
        ("jti empty", String::new()),
        ("jti 256", "j".repeat(256)),
        ("jti 257", "j".repeat(257)),
        ("jti 128 two-byte chars", "é".repeat(128)),
        ("jti 129 two-byte chars", "é".repeat(129)),
        ("jti unicode", "jti-☃-1".to_string()),
        ("jti huge", "x".repeat(9000)),
    ] {
        let c = f.claims(&j);
        add(label, f.proof(&f.header(), &c));
    }
    for htm in ["post", "GET", "POST ", " POST", "PoST", "", "POST\u{0}"] {
        let mut c = f.claims(&jti());
        c["htm"] = json!(htm);
        add(&format!("htm {htm:?}"), f.proof(&f.header(), &c));
    }
    for htu in [
        TARGET,
        "https://SIGNER.TEST/api/v1/signer/sign/dsse",
        "HTTPS://signer.test/api/v1/signer/sign/dsse",
        "https://Signer.Test:443/api/v1/signer/sign/dsse",
        "https://signer.test:443/api/v1/signer/sign/dsse",
        "https://signer.test:0443/api/v1/signer/sign/dsse",
        "https://signer.test:8443/api/v1/signer/sign/dsse",
        "https://signer.test:80/api/v1/signer/sign/dsse",
        "https://signer.test:/api/v1/signer/sign/dsse",
        "https://signer.test:65536/api/v1/signer/sign/dsse",
        "http://signer.test/api/v1/signer/sign/dsse",
        "http://signer.test:443/api/v1/signer/sign/dsse",
        "wss://signer.test/api/v1/signer/sign/dsse",
        "https://signer.test/api/v1/signer/sign/dsse/",
        "https://signer.test/api/v1/signer/sign/dsse?",
        "https://signer.test/api/v1/signer/sign/dsse?x=1",
        "https://signer.test/api/v1/signer/sign/dsse#frag",
        "https://signer.test/api/v1/signer/sign/dsse?x=1#f",
        "https://signer.test/api/v1/signer/sign/DSSE",
        "https://signer.test/API/v1/signer/sign/dsse",
        "https://signer.test/%61pi/v1/signer/sign/dsse",
        "https://signer.test/api/v1/signer/sign/ds%73e",
        "https://signer.test/api/v1/signer/sign/dsse%2F",
        "https://signer.test/api/v1/signer/sign/%2e/dsse",
        "https://signer.test/api/v1/signer/sign/./dsse",
        "https://signer.test/api/v1/signer/sign/x/../dsse",
        "https://signer.test/api/v1/signer/sign/x/%2e%2e/dsse",
        "https://signer.test//api/v1/signer/sign/dsse",
        "https://signer.test\\api\\v1\\signer\\sign\\dsse",
        "https://signer.test/api/v1/signer/sign/dss\te",
        "https://signer.test/api/v1/signer/sign/dsse\n",
        " https://signer.test/api/v1/signer/sign/dsse ",
        "https://signer.test./api/v1/signer/sign/dsse",
        "https://user:pw@signer.test/api/v1/signer/sign/dsse",
        "https://signer.test@evil.test/api/v1/signer/sign/dsse",
        "https://evil.test#@signer.test/api/v1/signer/sign/dsse",
        "https:signer.test/api/v1/signer/sign/dsse",
        "https:/signer.test/api/v1/signer/sign/dsse",
        "//signer.test/api/v1/signer/sign/dsse",
        "/api/v1/signer/sign/dsse",
        "signer.test/api/v1/signer/sign/dsse",
        "",
        "https://",
        "https://sígner.test/api/v1/signer/sign/dsse",
        "https://xn--sgner-1sa.test/api/v1/signer/sign/dsse",
        "https://SİGNER.test/api/v1/signer/sign/dsse",
        "https://signer\u{200b}.test/api/v1/signer/sign/dsse",
        "https://ｓｉｇｎｅｒ.test/api/v1/signer/sign/dsse",
        "https://signer%2etest/api/v1/signer/sign/dsse",
        "https://%73igner.test/api/v1/signer/sign/dsse",
        "https://127.0.0.1/api/v1/signer/sign/dsse",
        "https://0x7f.1/api/v1/signer/sign/dsse",
        "https://[::1]/api/v1/signer/sign/dsse",
        "https://signer.test/api/v1/signer/sign/dsse/../../../../sign/dsse",
        "file:///api/v1/signer/sign/dsse",
        "urn:signer.test:/api/v1/signer/sign/dsse",
        // A scheme without special host rules: its host keeps its case.
        "x-signer://SIGNER.test/api/v1/signer/sign/dsse",
        "x-signer://signer.test/api/v1/signer/sign/dsse",
        "x-signer://signer.test:443/api/v1/signer/sign/dsse",
        "X-Signer://Signer.Test/api/v1/signer/sign/dsse",
    ] {
        let mut c = f.claims(&jti());
        c["htu"] = json!(htu);
        add(&format!("htu {htu:?}"), f.proof(&f.header(), &c));
    }
    let long_htu = format!("{TARGET}?{}", "q".repeat(8000));
    let mut c = f.claims(&jti());
    c["htu"] = json!(long_htu);
    add("htu long query", f.proof(&f.header(), &c));
    for (label, iat) in [
        ("iat now as text", format!("{}", f.now)),
        ("iat -0", "-0".to_string()),
        ("iat 0", "0".to_string()),
        ("iat float", format!("{}.0", f.now)),
        ("iat float fraction", format!("{}.5", f.now)),
        ("iat exponent", format!("{}e0", f.now)),
        ("iat exponent 2", "1.7e9".to_string()),
        ("iat stale", format!("{}", f.now - 61)),
        ("iat edge stale", format!("{}", f.now - 60)),
        ("iat future", format!("{}", f.now + 6)),
        ("iat edge future", format!("{}", f.now + 5)),
        ("iat negative", "-1".to_string()),
        ("iat i64 min", i64::MIN.to_string()),
        ("iat i64 max", i64::MAX.to_string()),
        ("iat u64 max", u64::MAX.to_string()),
        ("iat u64 max + 1", "18446744073709551616".to_string()),
        ("iat 400 digits", "9".repeat(400)),
        ("iat leading zero", format!("0{}", f.now)),
        ("iat plus", format!("+{}", f.now)),
        ("iat string", format!("\"{}\"", f.now)),
        ("iat max numeric date", MAX_NUMERIC_DATE.to_string()),
    ] {
        let claims = format!(
            r#"{{"jti":"{}","htm":"POST","htu":"{TARGET}","iat":{iat},"ath":"{}"}}"#,
            jti(),
            f.ath()
        );
        add(label, f.proof_raw_claims(&claims));
    }
    for (label, ath) in [
        ("ath of another token", b64(&stella_keys::sha256(b"other"))),
        ("ath padded", format!("{}=", f.ath())),
        ("ath upper case", f.ath().to_ascii_uppercase()),
        ("ath hex", hex(&f.token_hash)),
        ("ath empty", String::new()),
        ("ath truncated", f.ath()[..42].to_string()),
    ] {
        let mut c = f.claims(&jti());
        c["ath"] = json!(ath);
        add(label, f.proof(&f.header(), &c));
    }
    // Raw claims: duplicates, escapes.
    let base = |j: &str| {
        format!(
            r#""jti":"{j}","htm":"POST","htu":"{TARGET}","iat":{},"ath":"{}""#,
            f.now,
            f.ath()
        )
    };
    for (label, claims) in [
        (
            "claims duplicate jti",
            format!(r#"{{{},"jti":"again"}}"#, base(&jti())),
        ),
        (
            "claims duplicate htu",
            format!(r#"{{{},"htu":"{TARGET}"}}"#, base(&jti())),
        ),
        (
            "claims duplicate iat",
            format!(r#"{{{},"iat":0}}"#, base(&jti())),
        ),
        (
            "claims duplicate by escape",
            format!(r#"{{{},"\u0068tm":"GET"}}"#, base(&jti())),
        ),
        (
            "claims escaped htu",
            format!(
                r#"{{"jti":"{}","htm":"P\u004fST","htu":"https:\/\/signer.test\/api\/v1\/signer\/sign\/dsse","iat":{},"ath":"{}"}}"#,
                jti(),
                f.now,
                f.ath()
            ),
        ),
        (
            "claims escaped ath",
            format!(
                r#"{{"jti":"{}","htm":"POST","htu":"{TARGET}","iat":{},"ath":"\u{:04x}{}"}}"#,
                jti(),
                f.now,
                u32::from(f.ath().as_bytes()[0]),
                &f.ath()[1..]
            ),
        ),
        (
            "claims escaped jti",
            format!(r#"{{{}}}"#, base(r"j\u00e9\ud83d\ude00\n")),
        ),
        (
            "claims nested duplicate",
            format!(r#"{{{},"x":{{"a":{{"b":1,"b":1}}}}}}"#, base(&jti())),
        ),
        (
            "claims extra members",
            format!(r#"{{{},"x":[1,2.5,-0,true,null,"s",{{}}]}}"#, base(&jti())),
        ),
        (
            "claims lone surrogate",
            format!(r#"{{{},"x":"\udc00"}}"#, base(&jti())),
        ),
        (
            "claims trailing garbage",
            format!(r#"{{{}}}]"#, base(&jti())),
        ),
        ("claims not an object", format!(r#"[{{{}}}]"#, base(&jti()))),
        (
            "claims depth 129",
            format!(
                r#"{{{},"x":{}{}}}"#,
                base(&jti()),
                "[".repeat(128),
                "]".repeat(128)
            ),
        ),
        (
            "claims nonce",
            format!(r#"{{{},"nonce":"abc"}}"#, base(&jti())),
        ),
    ] {
        add(label, f.proof_raw_claims(&claims));
    }
    // Bytes that are not UTF-8 inside the JSON.
    let mut bad_utf8 = format!(r#"{{{},"x":""}}"#, base(&jti())).into_bytes();
    let at = bad_utf8.len() - 2;
    bad_utf8.insert(at, 0xff);
    add(
        "claims invalid UTF-8",
        sign_raw(&f.a, f.header().to_string().as_bytes(), &bad_utf8),
    );

    // --- the compact form ------------------------------------------------------------------
    let good = f.proof(&f.header(), &f.claims(&jti()));
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for (label, text) in [
        ("two parts", format!("{h}.{p}")),
        ("four parts", format!("{h}.{p}.{s}.")),
        ("empty header", format!(".{p}.{s}")),
        ("empty payload", format!("{h}..{s}")),
        ("empty signature", format!("{h}.{p}.")),
        ("padded header", format!("{h}=.{p}.{s}")),
        ("padded signature", format!("{h}.{p}.{s}=")),
        (
            "standard alphabet",
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
        ),
        ("space", format!("{h}.{p}. {s}")),
        ("trailing newline", format!("{h}.{p}.{s}\n")),
        (
            "truncated signature",
            format!("{h}.{p}.{}", &s[..s.len() - 1]),
        ),
        ("short signature", format!("{h}.{p}.{}", &s[..s.len() - 4])),
        ("signature of zeros", format!("{h}.{p}.{}", b64(&[0u8; 64]))),
        (
            "bad header base64",
            format!("{}!.{p}.{s}", &h[..h.len() - 1]),
        ),
        (
            "bad payload base64",
            format!("{h}.{}*.{s}", &p[..p.len() - 1]),
        ),
        ("bad everything", "!.!.!".to_string()),
        ("one byte", "x".to_string()),
        ("dots", "..".to_string()),
        ("empty", String::new()),
        ("too large", format!("{h}.{p}.{}", "A".repeat(16 * 1024))),
    ] {
        add(label, text);
    }
    // A trailing-bit variant of the signature's last character (non-canonical base64url).
    let mut nc = s.to_string();
    let last = nc.pop().unwrap();
    let flipped = if last == 'A' { 'B' } else { 'A' };
    nc.push(flipped);
    add("non-canonical signature tail", format!("{h}.{p}.{nc}"));
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The corpus plus random mutations of the valid proof's header and claims text (re-signed,
/// so they reach the JSON and claim checks) and of its compact form (not re-signed).
fn mutated(f: &Fixture, rng: &mut Rng, count: usize) -> Vec<(String, Vec<u8>)> {
    const SPICE: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\\u0000",
        b"\\ud800",
        b"1e999",
        b"-",
        b"0",
        b"null",
        b"\"jti\":1,",
        b"\"htu\":\"x\",",
        b"\xff",
        b"\xc3\xa9",
        b"\t",
    ];
    let header = f.header().to_string().into_bytes();
    let mut out = Vec::new();
    for i in 0..count {
        let jti = format!("mut-{i}");
        let claims = f.claims(&jti).to_string().into_bytes();
        let which = rng.below(3);
        let mut text = if which == 0 {
            header.clone()
        } else {
            claims.clone()
        };
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 if !text.is_empty() => {
                    let end = (at + 1 + rng.below(4)).min(text.len());
                    text.drain(at.min(end)..end);
                }
                1 => {
                    let s = SPICE[rng.below(SPICE.len())];
                    text.splice(at..at, s.iter().copied());
                }
                _ => {
                    if at < text.len() {
                        text[at] = text[at].wrapping_add(1 + rng.below(3) as u8);
                    }
                }
            }
        }
        let proof = match which {
            0 => sign_raw(&f.a, &text, &claims),
            1 => sign_raw(&f.a, &header, &text),
            _ => {
                // Mutate the compact text itself.
                let mut p = sign_raw(&f.a, &header, &claims).into_bytes();
                let at = rng.below(p.len());
                p[at] = b"AZaz09-_.=+/ "[rng.below(13)];
                out.push((format!("compact mutation {i}"), p));
                continue;
            }
        };
        out.push((format!("JSON mutation {i}"), proof.into_bytes()));
    }
    out
}

fn validator(nonce: bool) -> DpopValidator {
    DpopValidator {
        algs: vec![Alg::Es256],
        max_age: 60,
        skew: 5,
        replay: Arc::new(stella_store::MemoryReplayCache::new(100_000)),
        nonce: nonce.then(|| NonceIssuer::new(b"differential", 300)),
    }
}

/// Everything an outcome says: accepted, or the whole `ApiError` (code, detail, internal
/// detail, headers' values).
fn outcome(r: &Result<(), ApiError>) -> String {
    match r {
        Ok(()) => "accepted".to_string(),
        Err(e) => format!("{:?}", **e),
    }
}

/// Runs every case through both checks, twice, against `target`, and asserts equal outcomes;
/// returns how many cases each side accepted (first pass).
async fn differential(
    f: &Fixture,
    cases: &[(String, Vec<u8>)],
    target: &str,
    method: &str,
    nonce: bool,
) -> usize {
    let target = url::Url::parse(target).unwrap();
    let (old, new) = (validator(nonce), validator(nonce));
    let mut accepted = 0;
    for pass in 0..2 {
        for (label, proof) in cases {
            let req = AuthRequest {
                method,
                target: &target,
                authorization: None,
                dpop: vec![proof.as_slice()],
                client_cert_sha256: None,
            };
            let a = validate_reference(&old, &req, &f.token_hash, &f.jkt, "t", f.now).await;
            let b = validate_new(&new, &req, f).await;
            assert_eq!(
                outcome(&a),
                outcome(&b),
                "case {label:?} (pass {pass}, target {target}, nonce {nonce})"
            );
            if pass == 0 && b.is_ok() {
                accepted += 1;
            }
        }
    }
    accepted
}

/// The check as it is now.
async fn validate_new(
    v: &DpopValidator,
    req: &AuthRequest<'_>,
    f: &Fixture,
) -> Result<(), ApiError> {
    v.validate(req, &f.token_hash, &f.jkt, "t", f.now).await
}

/// The hostile corpus: identical outcomes, old check and new, for three request targets
/// (the `htu` the proofs name, another port, another host) and both methods.
#[tokio::test]
async fn hostile_proofs_decide_as_before() {
    let f = Fixture::new();
    let cases = corpus(&f);
    assert!(cases.len() > 250, "{}", cases.len());
    let accepted = differential(&f, &cases, TARGET, "POST", false).await;
    // The control cases are accepted (a corpus where everything fails proves little): the
    // valid proof, equivalent spellings of the header and claims, normalised `htu`s.
    assert!(accepted >= 20, "only {accepted} accepted");
    assert!(accepted < cases.len() / 2, "{accepted} accepted");
    for (target, method) in [
        ("https://signer.test:8443/api/v1/signer/sign/dsse", "POST"),
        ("http://127.0.0.1:3000/api/v1/signer/sign/dsse", "POST"),
        ("https://xn--sgner-1sa.test/api/v1/signer/sign/dsse", "POST"),
        ("x-signer://Signer.Test/api/v1/signer/sign/dsse", "POST"),
        (TARGET, "GET"),
    ] {
        // Fresh jtis would be needed for acceptance; outcomes must agree either way.
        differential(&f, &cases, target, method, false).await;
    }
}

/// With server nonces required, the nonce claim decides the same (missing, wrong, valid).
#[tokio::test]
async fn nonce_outcomes_decide_as_before() {
    let f = Fixture::new();
    let n = NonceIssuer::new(b"differential", 300).issue(f.now).unwrap();
    let mut cases = Vec::new();
    for (label, nonce) in [
        ("no nonce", None),
        ("nonce", Some(json!(n))),
        ("nonce number", Some(json!(1))),
        ("nonce garbage", Some(json!("garbage"))),
        (
            "nonce of another key",
            Some(json!(NonceIssuer::new(b"other", 300).issue(f.now).unwrap())),
        ),
    ] {
        let mut c = f.claims(&format!("nonce-{label}"));
        if let Some(v) = nonce {
            c["nonce"] = v;
        }
        cases.push((label.to_string(), f.proof(&f.header(), &c).into_bytes()));
    }
    let accepted = differential(&f, &cases, TARGET, "POST", true).await;
    assert_eq!(accepted, 1);
}

/// Random mutations of valid proofs: identical outcomes, and some of them still valid.
#[tokio::test]
async fn mutated_proofs_decide_as_before() {
    let f = Fixture::new();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let cases = mutated(&f, &mut rng, 1500);
    differential(&f, &cases, TARGET, "POST", false).await;
}

/// The DPoP header itself: missing, several, not UTF-8.
#[tokio::test]
async fn header_count_and_encoding_decide_as_before() {
    let f = Fixture::new();
    let target = url::Url::parse(TARGET).unwrap();
    let good = f.proof(&f.header(), &f.claims("count-1"));
    let (old, new) = (validator(false), validator(false));
    for dpop in [
        vec![],
        vec![good.as_bytes(), good.as_bytes()],
        vec![b"\xff\xfe".as_slice()],
        vec![good.as_bytes()],
    ] {
        let req = AuthRequest {
            method: "POST",
            target: &target,
            authorization: None,
            dpop,
            client_cert_sha256: None,
        };
        let a = validate_reference(&old, &req, &f.token_hash, &f.jkt, "t", f.now).await;
        let b = new.validate(&req, &f.token_hash, &f.jkt, "t", f.now).await;
        assert_eq!(outcome(&a), outcome(&b));
    }
}

/// `StrictObject::parse` accepts exactly what `jcs::parse_strict` accepts as an object, and
/// reads the same members: strings, numbers and the text of everything else.
#[test]
fn strict_object_agrees_with_parse_strict() {
    let mut texts: Vec<Vec<u8>> = [
        r#"{}"#,
        r#" { } "#,
        r#"{"a":1}"#,
        r#"{"a":1,"a":1}"#,
        r#"{"a":1,"\u0061":1}"#,
        r#"{"a":{"b":1,"b":2}}"#,
        r#"{"a":[{"b":1},{"b":1}]}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00\ud800"}"#,
        r#"{"a":"\ud800\u0041"}"#,
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\u00e9\n\t\/\\\"\b\f\r"}"#,
        r#"{"a":"\u00E9"}"#,
        r#"{"a":"\u00g9"}"#,
        r#"{"a":"\q"}"#,
        r#"{"a":1e400}"#,
        r#"{"a":-1e400}"#,
        r#"{"a":1e-400}"#,
        r#"{"a":-0}"#,
        r#"{"a":-0.0}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.1}"#,
        r#"{"a":1e}"#,
        r#"{"a":1e+}"#,
        r#"{"a":+1}"#,
        r#"{"a":-}"#,
        r#"{"a":18446744073709551615}"#,
        r#"{"a":18446744073709551616}"#,
        r#"{"a":-9223372036854775808}"#,
        r#"{"a":-9223372036854775809}"#,
        r#"{"a":NaN}"#,
        r#"{"a":Infinity}"#,
        r#"{"a":-Infinity}"#,
        r#"{"a":tru}"#,
        r#"{"a":true,"b":false,"c":null}"#,
        r#"{"a":nulll}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[,1]}"#,
        r#"{"a":[]}"#,
        r#"{"a":[ ]}"#,
        r#"{"a":1,}"#,
        r#"{,"a":1}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":1}}"#,
        r#"{"a":1"#,
        r#"{"a":"#,
        r#"{"a"#,
        r#"{"#,
        r#"["a"]"#,
        r#""a""#,
        r#"1"#,
        r#"null"#,
        "",
        " ",
        "{\"a\":\"\u{1}\"}",
        "{\"a\":\"\u{7f}\"}",
        "{\"a\":1}\u{a0}",
        "\u{feff}{}",
        "{\"a\":1}\n",
        "{\"a\"\n:\r1\t}",
        "{\"a\":1}\u{0}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    texts.push(b"{\"a\":\"\xff\"}".to_vec());
    texts.push(b"{\"\xc3\xa9\":1,\"\\u00e9\":2}".to_vec());
    texts.push(format!("{{\"a\":{}{}}}", "[".repeat(127), "]".repeat(127)).into_bytes());
    texts.push(format!("{{\"a\":{}{}}}", "[".repeat(128), "]".repeat(128)).into_bytes());
    texts.push(format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(126), "}".repeat(126)).into_bytes());
    texts.push(format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(127), "}".repeat(127)).into_bytes());
    let many: String = (0..100).map(|i| format!("\"k{i}\":{i},")).collect();
    texts.push(format!("{{{many}\"z\":0}}").into_bytes());
    texts.push(format!("{{{many}\"k99\":0}}").into_bytes());
    texts.push(format!("{{{many}\"k\\u0030\":0}}").into_bytes());
    // Random mutations of a representative object.
    let seed = br#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AbC","y":"d_E"},"n":[1,-2.5e3,true,null,{"k":"\u00e9"}],"s":"a\"b"}"#;
    const NOISE: &[u8] = b"{}[]\":,\\u0123456789-+.eEtrufalsn \x01\xff";
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..20_000 {
        let mut t = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(t.len());
            match rng.below(4) {
                0 => {
                    t.remove(at);
                }
                1 => t.insert(at, NOISE[rng.below(NOISE.len())]),
                2 => {
                    let b = t[at];
                    t.insert(at, b);
                }
                _ => t[at] = t[at].wrapping_add(1),
            }
        }
        texts.push(t);
    }
    let mut accepted = 0;
    for t in &texts {
        let old = match stella_dsse::jcs::parse_strict(t) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        };
        let new = StrictObject::parse(t);
        assert_eq!(
            old.is_some(),
            new.is_some(),
            "{:?}",
            String::from_utf8_lossy(t)
        );
        let (Some(old), Some(new)) = (old, new) else {
            continue;
        };
        accepted += 1;
        assert_eq!(old.len(), new.len(), "{:?}", String::from_utf8_lossy(t));
        for (k, v) in &old {
            assert_eq!(new.str(k), v.as_str(), "{k}");
            match (new.get(k).unwrap(), v) {
                (Scalar::Str(s), Value::String(o)) => assert_eq!(s, o),
                (Scalar::Num(n), Value::Number(o)) => assert_eq!(n, o),
                (Scalar::Other, o) => assert!(!o.is_string() && !o.is_number(), "{k}"),
                (a, b) => panic!("{k}: {a:?} against {b:?}"),
            }
            // The member's text parses to the same value.
            let text = new.text(k).unwrap();
            assert_eq!(
                &stella_dsse::jcs::parse_strict(text.as_bytes()).unwrap(),
                v,
                "{k}"
            );
        }
    }
    // Both outcomes occur often (the mutations are not all rejected).
    assert!(accepted > 1000, "{accepted} of {}", texts.len());
    assert!(
        accepted < texts.len() - 1000,
        "{accepted} of {}",
        texts.len()
    );
}

/// `CompactJws` decides and reports like `Jws::parse` (same error, same order), and reads the
/// same header and claims.
#[test]
fn compact_jws_agrees_with_jws_parse() {
    let f = Fixture::new();
    let mut cases: Vec<Vec<u8>> = corpus(&f).into_iter().map(|(_, p)| p).collect();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    cases.extend(mutated(&f, &mut rng, 500).into_iter().map(|(_, p)| p));
    for p in &cases {
        let Ok(text) = std::str::from_utf8(p) else {
            continue;
        };
        let old = Jws::parse(text);
        let split = crate::jose::CompactJws::split(text);
        let new = split.as_ref().map_err(Clone::clone).and_then(|c| {
            c.parse().map(|v| {
                (
                    v.alg,
                    v.header.str("typ").map(str::to_string),
                    v.claims.str("jti").map(str::to_string),
                )
            })
        });
        match (&old, &new) {
            (Err(a), Err(b)) => assert_eq!(a, b, "{text}"),
            (Ok(j), Ok((alg, typ, jti))) => {
                assert_eq!(j.alg, *alg);
                assert_eq!(j.header_str("typ").map(str::to_string), *typ);
                assert_eq!(claim_str(&j.claims, "jti"), *jti);
            }
            _ => panic!("{text}: {old:?} against {:?}", new.map(|_| ())),
        }
    }
}
