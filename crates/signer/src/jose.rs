//! The JOSE subset the service needs, owned here so the rules are ours: compact JWS parsing,
//! public JWKs, RFC 7638 thumbprints and signature verification with aws-lc-rs.
//!
//! Only asymmetric algorithms exist in [`Alg`]: `none`, `HS*` and anything unknown fail at
//! parse time, before a key is even looked up, so "HS256 signed with the public key" and
//! `alg: none` can never verify. A key is used only with the algorithm its type fits (an EC
//! P-256 key with ES256, an OKP Ed25519 key with EdDSA, RSA with RS256/PS256 and at least
//! 2048 bits), and a JWK's own `alg`, when present, must agree. JWKs carrying private members
//! (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) are refused outright.
//!
//! Two readers of a compact JWS decide alike: [`Jws::parse`] builds `Value` trees (access
//! tokens, verified once and cached; the dev Authority); `CompactJws` (DPoP proofs, one per
//! request) decodes the three parts into one buffer and reads header and claims with a
//! borrowing scanner that accepts exactly what `stella_dsse::jcs::parse_strict` accepts,
//! with the same errors in the same order (differential tests in `auth_differential.rs`).

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, ED25519,
    RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Number, Value};
use stella_dsse::jcs::RawJson;

/// Largest compact JWS we look at (tokens and proofs are a few hundred bytes).
pub(crate) const MAX_JWS_BYTES: usize = 16 * 1024;

/// Asymmetric JWS algorithms we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Es256,
    EdDsa,
    Rs256,
    Ps256,
}

impl Alg {
    pub(crate) fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "EdDSA" | "Ed25519" => Some(Alg::EdDsa),
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a JWS or JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    #[error("not a compact JWS (three base64url parts)")]
    Shape,
    #[error("JWS is larger than {MAX_JWS_BYTES} bytes")]
    TooLarge,
    #[error("invalid base64url in the {0}")]
    Base64(&'static str),
    #[error("the {0} is not a JSON object")]
    Json(&'static str),
    #[error("algorithm {0:?} is not accepted (asymmetric algorithms only)")]
    Alg(String),
    #[error("header has `crit` parameters we do not understand")]
    Crit,
    #[error("invalid JWK: {0}")]
    Jwk(String),
    #[error("the JWK carries private key material")]
    PrivateJwk,
    #[error("key type does not fit algorithm {0}")]
    KeyAlgMismatch(Alg),
    #[error("signature does not verify")]
    BadSignature,
}

/// A compact JWS split and decoded (signature not yet checked).
#[derive(Debug, Clone)]
pub struct Jws {
    pub alg: Alg,
    pub header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    pub(crate) signing_input_len: usize,
    pub(crate) raw: String,
    pub(crate) signature: Vec<u8>,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JoseError::Base64(what))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JoseError> {
    // Strict parse: duplicate member names are refused (a claim cannot mean two things).
    match stella_dsse::jcs::parse_strict(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JoseError::Json(what)),
    }
}

impl Jws {
    /// Split and decode; refuses unknown or symmetric algorithms and `crit`.
    pub fn parse(token: &str) -> Result<Jws, JoseError> {
        if token.len() > MAX_JWS_BYTES {
            return Err(JoseError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Shape);
        };
        if h.is_empty() || p.is_empty() {
            return Err(JoseError::Shape);
        }
        let header = json_object(&b64(h, "header")?, "header")?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let alg = Alg::parse(alg_name).ok_or_else(|| JoseError::Alg(alg_name.to_string()))?;
        if header.contains_key("crit") {
            return Err(JoseError::Crit);
        }
        let claims = json_object(&b64(p, "payload")?, "payload")?;
        let signature = b64(s, "signature")?;
        Ok(Jws {
            alg,
            header,
            claims,
            signing_input_len: h.len() + 1 + p.len(),
            raw: token.to_string(),
            signature,
        })
    }

    pub fn signing_input(&self) -> &[u8] {
        &self.raw.as_bytes()[..self.signing_input_len]
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Verify the signature with `key`.
    pub fn verify(&self, key: &Jwk) -> Result<(), JoseError> {
        key.verify(self.alg, self.signing_input(), &self.signature)
    }
}

#[derive(Clone)]
enum KeyMaterial {
    P256(ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// A public JWK, parsed once for many verifications.
#[derive(Clone)]
pub struct Jwk {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, if it names one.
    pub(crate) alg: Option<Alg>,
    material: KeyMaterial,
    thumbprint: String,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn member<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, JoseError> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| JoseError::Jwk(format!("missing `{name}`")))
}

fn member_b64(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(member(m, name)?)
        .map_err(|_| JoseError::Jwk(format!("`{name}` is not base64url")))
}

impl Jwk {
    /// Parse a public JWK (refusing private members and symmetric keys).
    pub fn from_value(v: &Value) -> Result<Jwk, JoseError> {
        let m = v
            .as_object()
            .ok_or_else(|| JoseError::Jwk("not an object".into()))?;
        if PRIVATE_MEMBERS.iter().any(|k| m.contains_key(*k)) {
            return Err(JoseError::PrivateJwk);
        }
        let kty = member(m, "kty")?;
        let alg = match m.get("alg").and_then(Value::as_str) {
            Some(a) => Some(Alg::parse(a).ok_or_else(|| JoseError::Alg(a.to_string()))?),
            None => None,
        };
        let (material, thumb_input) = match kty {
            "EC" => {
                let crv = member(m, "crv")?;
                if crv != "P-256" {
                    return Err(JoseError::Jwk(format!("unsupported curve {crv:?}")));
                }
                let (x, y) = (member_b64(m, "x")?, member_b64(m, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::Jwk("P-256 coordinates must be 32 bytes".into()));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .map_err(|_| JoseError::Jwk("not a point on P-256".into()))?;
                (
                    KeyMaterial::P256(key),
                    format!(
                        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                        member(m, "x")?,
                        member(m, "y")?
                    ),
                )
            }
            "OKP" => {
                let crv = member(m, "crv")?;
                if crv != "Ed25519" {
                    return Err(JoseError::Jwk(format!("unsupported curve {crv:?}")));
                }
                let x = member_b64(m, "x")?;
                if x.len() != 32 {
                    return Err(JoseError::Jwk("Ed25519 keys are 32 bytes".into()));
                }
                let key = ParsedPublicKey::new(&ED25519, x)
                    .map_err(|_| JoseError::Jwk("invalid Ed25519 key".into()))?;
                (
                    KeyMaterial::Ed25519(key),
                    format!(
                        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                        member(m, "x")?
                    ),
                )
            }
            "RSA" => {
                let n = member_b64(m, "n")?;
                let e = member_b64(m, "e")?;
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 2048 {
                    return Err(JoseError::Jwk("RSA keys must be at least 2048 bits".into()));
                }
                (
                    KeyMaterial::Rsa { n, e },
                    format!(
                        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                        member(m, "e")?,
                        member(m, "n")?
                    ),
                )
            }
            other => {
                return Err(JoseError::Jwk(format!(
                    "key type {other:?} is not accepted"
                )))
            }
        };
        let thumbprint = URL_SAFE_NO_PAD.encode(stella_keys::sha256(thumb_input.as_bytes()));
        Ok(Jwk {
            kid: m.get("kid").and_then(Value::as_str).map(str::to_string),
            alg,
            material,
            thumbprint,
        })
    }

    /// RFC 7638 SHA-256 thumbprint, base64url (what `cnf.jkt` holds).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Does this key type fit `alg`?
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (KeyMaterial::P256(_), Alg::Es256)
                | (KeyMaterial::Ed25519(_), Alg::EdDsa)
                | (KeyMaterial::Rsa { .. }, Alg::Rs256 | Alg::Ps256)
        )
    }

    pub(crate) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        if !self.fits(alg) {
            return Err(JoseError::KeyAlgMismatch(alg));
        }
        let ok = match (&self.material, alg) {
            (KeyMaterial::P256(k), _) | (KeyMaterial::Ed25519(k), _) => {
                k.verify_sig(message, sig).is_ok()
            }
            (KeyMaterial::Rsa { n, e }, Alg::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            (KeyMaterial::Rsa { n, e }, _) => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PSS_2048_8192_SHA256, message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }
}

/// A JWK Set.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parse `{"keys":[...]}`. Keys we cannot use (symmetric, other curves, `use: enc`) are
    /// skipped, not fatal: an Authority may publish more than we need. Private members
    /// anywhere make the whole set invalid.
    pub fn from_json(bytes: &[u8]) -> Result<JwkSet, JoseError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|_| JoseError::Jwk("JWKS is not JSON".into()))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JoseError::Jwk("JWKS has no `keys` array".into()))?;
        let mut out = Vec::new();
        for k in keys {
            if k.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            match Jwk::from_value(k) {
                Ok(j) => out.push(j),
                Err(JoseError::PrivateJwk) => return Err(JoseError::PrivateJwk),
                Err(_) => continue,
            }
        }
        Ok(JwkSet { keys: out })
    }

    /// Keys that may have signed a JWS with this `kid` and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }
}

// ---------------------------------------------------------------------------------------------
// Borrowing strict parse of a compact JWS (the DPoP proof's hot path)
// ---------------------------------------------------------------------------------------------

/// One member value of a strictly parsed JSON object: the scalars the checks read, borrowed
/// from the decoded bytes where no escape had to be undone, plus the member's exact JSON text
/// (objects and arrays are validated, not built).
#[derive(Debug, Clone)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    /// The number `stella_dsse::jcs::parse_strict` makes of the same text.
    Num(Number),
    /// `true`, `false`, `null`, an object or an array.
    Other,
}

#[derive(Debug, Clone)]
struct Member<'a> {
    key: Cow<'a, str>,
    /// The value's JSON text, exactly as in the input.
    text: &'a str,
    value: Scalar<'a>,
}

/// A JSON object that `stella_dsse::jcs::parse_strict` accepts (duplicate member names at any
/// depth, lone surrogates, non-finite numbers, nesting deeper than `MAX_DEPTH` and trailing
/// text are refused exactly as there), read without building a `Value` tree: its members in
/// document order, strings borrowed where they hold no escape.
#[derive(Debug, Clone)]
pub(crate) struct StrictObject<'a> {
    members: Vec<Member<'a>>,
}

impl<'a> StrictObject<'a> {
    /// `Some` exactly when `parse_strict(bytes)` is `Ok(Value::Object(_))`: read by
    /// `stella_dsse::jcs::from_slice` (the one strict parser), each member's value kept as its
    /// exact text ([`RawJson`]) and, for a string or number, its value.
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<StrictObject<'a>> {
        stella_dsse::jcs::from_slice(bytes).ok()
    }

    fn member(&self, name: &str) -> Option<&Member<'a>> {
        self.members.iter().find(|m| m.key == name)
    }

    /// Is there a member `name` (of any type)?
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.member(name).is_some()
    }

    /// The member `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&Scalar<'a>> {
        self.member(name).map(|m| &m.value)
    }

    /// The member `name` if it is a string (`Value::as_str` of the tree's member).
    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON text of member `name`'s value.
    pub(crate) fn text(&self, name: &str) -> Option<&'a str> {
        self.member(name).map(|m| m.text)
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

impl<'de> serde::Deserialize<'de> for StrictObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = StrictObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StrictObject<'de>, A::Error> {
                // A proof's header and claims have 3–6 members: one allocation.
                let mut members = Vec::with_capacity(8);
                while let Some(Text(key)) = map.next_key()? {
                    let RawJson(text) = map.next_value()?;
                    let value = match text.as_bytes().first() {
                        // A checked string without an escape is its text between the quotes.
                        Some(b'"') if !text.contains('\\') => Ok(Scalar::Str(Cow::Borrowed(
                            text.get(1..text.len() - 1).unwrap_or_default(),
                        ))),
                        Some(b'"') => stella_dsse::jcs::from_slice(text.as_bytes())
                            .map(|Text(s)| Scalar::Str(s)),
                        Some(b'-' | b'0'..=b'9') => {
                            stella_dsse::jcs::from_slice(text.as_bytes()).map(Scalar::Num)
                        }
                        _ => Ok(Scalar::Other),
                    }
                    .map_err(serde::de::Error::custom)?;
                    members.push(Member { key, text, value });
                }
                Ok(StrictObject { members })
            }
        }
        d.deserialize_map(Object)
    }
}

/// A JSON string, borrowed from the input where it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> serde::de::Visitor<'de> for Str {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Str)
    }
}

/// A compact JWS split, its three parts base64url-decoded into one buffer (the signature not
/// checked). [`CompactJws::parse`] reads it with [`StrictObject`]s: the same decisions, in the
/// same order and with the same errors, as [`Jws::parse`], without `Value` trees or copies.
pub(crate) struct CompactJws<'t> {
    token: &'t str,
    signing_input_len: usize,
    buf: Vec<u8>,
    /// Where each decoded part lies in `buf`; `None`: not base64url.
    parts: [Option<std::ops::Range<usize>>; 3],
}

/// A [`CompactJws`] parsed: algorithm, header and claims, signature bytes.
pub(crate) struct JwsView<'p> {
    pub(crate) alg: Alg,
    pub(crate) header: StrictObject<'p>,
    pub(crate) claims: StrictObject<'p>,
    signing_input: &'p [u8],
    signature: &'p [u8],
}

impl<'t> CompactJws<'t> {
    /// Size and shape checks ([`JoseError::TooLarge`], [`JoseError::Shape`]) and the decoding.
    pub(crate) fn split(token: &'t str) -> Result<CompactJws<'t>, JoseError> {
        if token.len() > MAX_JWS_BYTES {
            return Err(JoseError::TooLarge);
        }
        let mut it = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(JoseError::Shape);
        };
        if h.is_empty() || p.is_empty() {
            return Err(JoseError::Shape);
        }
        let texts = [h, p, s];
        let sizes = texts.map(|t| base64::decoded_len_estimate(t.len()));
        let mut buf = vec![0u8; sizes.iter().sum()];
        let mut parts = [None, None, None];
        let mut at = 0;
        for ((text, size), part) in texts.iter().zip(sizes).zip(parts.iter_mut()) {
            let out = &mut buf[at..at + size];
            // The same decoder `Engine::decode` runs, into a buffer of the size it allocates.
            if let Ok(n) = URL_SAFE_NO_PAD.decode_slice(text, out) {
                *part = Some(at..at + n);
            }
            at += size;
        }
        Ok(CompactJws {
            token,
            signing_input_len: h.len() + 1 + p.len(),
            buf,
            parts,
        })
    }

    fn part(&self, i: usize, what: &'static str) -> Result<&[u8], JoseError> {
        match &self.parts[i] {
            Some(r) => Ok(&self.buf[r.clone()]),
            None => Err(JoseError::Base64(what)),
        }
    }

    /// Header, algorithm, `crit`, claims and signature, checked in [`Jws::parse`]'s order.
    pub(crate) fn parse(&self) -> Result<JwsView<'_>, JoseError> {
        let header =
            StrictObject::parse(self.part(0, "header")?).ok_or(JoseError::Json("header"))?;
        let alg_name = header.str("alg").unwrap_or("");
        let alg = Alg::parse(alg_name).ok_or_else(|| JoseError::Alg(alg_name.to_string()))?;
        if header.contains("crit") {
            return Err(JoseError::Crit);
        }
        let claims =
            StrictObject::parse(self.part(1, "payload")?).ok_or(JoseError::Json("payload"))?;
        let signature = self.part(2, "signature")?;
        Ok(JwsView {
            alg,
            header,
            claims,
            signing_input: &self.token.as_bytes()[..self.signing_input_len],
            signature,
        })
    }
}

impl JwsView<'_> {
    /// Verify the signature with `key` ([`Jws::verify`]).
    pub(crate) fn verify(&self, key: &Jwk) -> Result<(), JoseError> {
        key.verify(self.alg, self.signing_input, self.signature)
    }
}

/// Helpers to *make* JWS values: used by the client, the dev Authority, tests and the
/// benchmark. Signing keys are `stella_keys::FileKey` (P-256 or Ed25519).
pub mod sign {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::{json, Value};
    use stella_keys::{Algorithm, FileKey, Signer as _};

    /// The public JWK of a key (no `kid`).
    pub fn public_jwk(key: &FileKey) -> Value {
        let raw = key.public_key().spki_der();
        match key.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                // SPKI for P-256 ends with the 65-byte uncompressed point.
                let point = &raw[raw.len() - 65..];
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
            Algorithm::Ed25519 => json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(&raw[raw.len() - 32..]),
            }),
        }
    }

    /// The JWS `alg` for a key.
    pub(crate) fn alg_of(key: &FileKey) -> &'static str {
        match key.algorithm() {
            Algorithm::EcdsaP256Sha256 => "ES256",
            Algorithm::Ed25519 => "EdDSA",
        }
    }

    /// Why a compact JWS could not be made.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum JwsError {
        #[error(transparent)]
        Sign(#[from] stella_keys::SignError),
        #[error("the ECDSA signature is not DER ({0})")]
        SignatureEncoding(&'static str),
    }

    /// Sign `header` + `claims` as a compact JWS. ES256 signatures are converted from DER to
    /// the fixed `r || s` form JWS uses.
    pub fn compact(key: &FileKey, header: &Value, claims: &Value) -> Result<String, JwsError> {
        compact_encoded(
            key,
            &URL_SAFE_NO_PAD.encode(header.to_string()),
            claims.to_string().as_bytes(),
        )
    }

    /// [`compact`] with the header already in base64url (a client that signs many proofs
    /// with one key encodes its header once) and the claims as JSON text.
    pub(crate) fn compact_encoded(
        key: &FileKey,
        header_b64: &str,
        claims_json: &[u8],
    ) -> Result<String, JwsError> {
        let mut out = String::with_capacity(
            header_b64.len() + 1 + claims_json.len().div_ceil(3) * 4 + 1 + 88,
        );
        out.push_str(header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut out);
        let sig = key.sign(out.as_bytes())?;
        let sig = match key.algorithm() {
            Algorithm::EcdsaP256Sha256 => der_to_fixed(&sig)?,
            Algorithm::Ed25519 => sig,
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }

    /// ECDSA DER `SEQUENCE { r INTEGER, s INTEGER }` → 64-byte `r || s`.
    pub(crate) fn der_to_fixed(der: &[u8]) -> Result<Vec<u8>, JwsError> {
        fn int(b: &[u8]) -> Result<(&[u8], &[u8]), JwsError> {
            if b.len() < 2 || b[0] != 0x02 {
                return Err(JwsError::SignatureEncoding("bad DER integer"));
            }
            let len = b[1] as usize;
            if b.len() < 2 + len {
                return Err(JwsError::SignatureEncoding("short DER integer"));
            }
            Ok((&b[2..2 + len], &b[2 + len..]))
        }
        if der.len() < 3 || der[0] != 0x30 {
            return Err(JwsError::SignatureEncoding("bad DER signature"));
        }
        let body = if der[1] & 0x80 != 0 {
            &der[3..]
        } else {
            &der[2..]
        };
        let (r, rest) = int(body)?;
        let (s, _) = int(rest)?;
        let mut out = vec![0u8; 64];
        for (src, off) in [(r, 0usize), (s, 32usize)] {
            let src = if src.len() > 32 {
                &src[src.len() - 32..]
            } else {
                src
            };
            out[off + 32 - src.len()..off + 32].copy_from_slice(src);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stella_keys::{Algorithm, FileKey};

    #[test]
    fn es256_and_eddsa_round_trip() {
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let k = FileKey::generate(alg).unwrap();
            let jwk = Jwk::from_value(&sign::public_jwk(&k)).unwrap();
            let tok = sign::compact(
                &k,
                &json!({"alg": sign::alg_of(&k), "typ": "JWT"}),
                &json!({"a": 1}),
            )
            .unwrap();
            let jws = Jws::parse(&tok).unwrap();
            jws.verify(&jwk).unwrap();
            // Same signature over other claims: refused.
            let (_, sig) = tok.rsplit_once('.').unwrap();
            let other =
                sign::compact(&k, &json!({"alg": sign::alg_of(&k)}), &json!({"a": 2})).unwrap();
            let (head, _) = other.rsplit_once('.').unwrap();
            let forged = Jws::parse(&format!("{head}.{sig}")).unwrap();
            assert_eq!(forged.verify(&jwk), Err(JoseError::BadSignature));
        }
    }

    #[test]
    fn refuses_none_and_hmac() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(r#"{}"#);
        assert_eq!(
            Jws::parse(&format!("{h}.{p}.")).unwrap_err(),
            JoseError::Alg("none".into())
        );
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        assert!(matches!(
            Jws::parse(&format!("{h}.{p}.AAAA")),
            Err(JoseError::Alg(_))
        ));
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty":"RSA",
            "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        assert_eq!(
            Jwk::from_value(&jwk).unwrap().thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_jwk_refused() {
        let k = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let mut jwk = sign::public_jwk(&k);
        jwk["d"] = json!("AAAA");
        assert_eq!(Jwk::from_value(&jwk).unwrap_err(), JoseError::PrivateJwk);
    }

    #[test]
    fn key_type_must_fit_alg() {
        let k = FileKey::generate(Algorithm::Ed25519).unwrap();
        let jwk = Jwk::from_value(&sign::public_jwk(&k)).unwrap();
        assert!(!jwk.fits(Alg::Es256));
        assert!(jwk.fits(Alg::EdDsa));
    }
}
