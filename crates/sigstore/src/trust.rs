//! Trusted roots (`dev.sigstore.trustedroot` JSON, protobuf-specs `TrustedRoot`): the Fulcio
//! CAs, Rekor logs, CT logs and TSAs a verifier trusts, each with a validity window.
//!
//! Reading is strict about the fields we use (types, base64, times, key details) and ignores
//! fields we do not use (a root is configuration that grows: `operator`, `checkpointKeyId`,
//! ...). The public-good and staging roots are compiled into the binary ([`TrustedRoot::public_good`],
//! [`TrustedRoot::staging`]) so verification works offline; an Offline Kit brings newer ones.

use serde_json::Value;
use stella_x509::Cert;
use time::OffsetDateTime;

use crate::bundle::bytes_of;
use crate::error::TrustRootError;
use crate::key::VerifyingKey;

/// The public-good root shipped with the binary (from the Sigstore TUF repository).
pub const PUBLIC_GOOD_JSON: &[u8] = include_bytes!("../roots/public-good.json");
/// The staging root shipped with the binary.
pub const STAGING_JSON: &[u8] = include_bytes!("../roots/staging.json");

const MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "application/vnd.dev.sigstore.trustedroot.v0.2+json",
];

/// `[start, end]`; an absent end is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub start: OffsetDateTime,
    pub end: Option<OffsetDateTime>,
}

impl Validity {
    pub(crate) fn contains(&self, t: OffsetDateTime) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log or CT log and its key.
#[derive(Debug, Clone)]
pub struct LogInstance {
    pub base_url: String,
    pub log_id: Vec<u8>,
    pub key: VerifyingKey,
    pub key_details: String,
    pub valid_for: Validity,
}

/// A certificate authority (Fulcio) or timestamp authority and its chain (issuing
/// certificate first, root last).
#[derive(Debug, Clone)]
pub struct Authority {
    pub uri: String,
    pub subject: String,
    pub chain: Vec<Cert>,
    pub valid_for: Validity,
    /// Every link of `chain` is signed by the next certificate (checked once, when the root
    /// is read: the chain is configuration and never changes between bundles).
    pub links_verified: bool,
}

/// Why an authority of the trusted root does not vouch for a certificate (Fulcio leaf or TSA).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuthorityError {
    #[error("the authority is not valid at the signing time")]
    NotValidAt,
    #[error("empty chain")]
    EmptyChain,
    #[error("did not issue the certificate")]
    NotIssuer,
    #[error("did not issue the TSA certificate {subject}")]
    NotTsaIssuer { subject: String },
    #[error("the authority's own chain does not verify link by link")]
    ChainUnverified,
    #[error(transparent)]
    Certificate(#[from] stella_x509::Error),
}

impl Authority {
    /// The authority's chain was verified link by link, and every CA certificate in `cas` is a
    /// CA valid at `t`.
    pub(crate) fn check_cas(&self, cas: &[Cert], t: OffsetDateTime) -> Result<(), AuthorityError> {
        if !self.links_verified {
            return Err(AuthorityError::ChainUnverified);
        }
        for c in cas {
            c.check_issuer_profile()?;
            c.check_valid_at(t)?;
        }
        Ok(())
    }
}

/// A parsed trusted root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub media_type: String,
    pub tlogs: Vec<LogInstance>,
    pub ctlogs: Vec<LogInstance>,
    pub certificate_authorities: Vec<Authority>,
    pub timestamp_authorities: Vec<Authority>,
}

type R<T> = Result<T, TrustRootError>;

fn time(v: &Value, path: &str) -> R<OffsetDateTime> {
    let s = v
        .as_str()
        .ok_or_else(|| TrustRootError::field(path, "not a string"))?;
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| TrustRootError::field(path, format!("not an RFC 3339 time: {e}")))
}

fn validity(v: Option<&Value>, path: &str) -> R<Validity> {
    let v = v
        .filter(|v| !v.is_null())
        .ok_or_else(|| TrustRootError::field(path, "missing"))?;
    let start = time(
        v.get("start")
            .ok_or_else(|| TrustRootError::field(format!("{path}.start"), "missing"))?,
        &format!("{path}.start"),
    )?;
    let end = match v.get("end").filter(|e| !e.is_null()) {
        None => None,
        Some(e) => Some(time(e, &format!("{path}.end"))?),
    };
    Ok(Validity { start, end })
}

fn bytes(v: &Value, path: &str) -> R<Vec<u8>> {
    bytes_of(v, path).map_err(|e| TrustRootError::field(path, e.to_string()))
}

fn str_of<'a>(v: &'a Value, k: &str, path: &str) -> R<&'a str> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TrustRootError::field(format!("{path}.{k}"), "not a string")),
    }
}

fn array<'a>(v: &'a Value, k: &str) -> R<&'a [Value]> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(TrustRootError::field(k, "not an array")),
    }
}

fn log(v: &Value, path: &str) -> R<LogInstance> {
    let pk = v
        .get("publicKey")
        .ok_or_else(|| TrustRootError::field(format!("{path}.publicKey"), "missing"))?;
    let details = str_of(pk, "keyDetails", &format!("{path}.publicKey"))?;
    let raw = bytes(
        pk.get("rawBytes").unwrap_or(&Value::Null),
        &format!("{path}.publicKey.rawBytes"),
    )?;
    let key = if details == "PKCS1_RSA_PKCS1V5" {
        VerifyingKey::from_pkcs1_rsa(&raw)
    } else {
        VerifyingKey::from_spki_der(&raw)
    }
    .map_err(|e| TrustRootError::field(format!("{path}.publicKey.rawBytes"), e.to_string()))?;
    let log_id = bytes(
        v.get("logId")
            .and_then(|l| l.get("keyId"))
            .unwrap_or(&Value::Null),
        &format!("{path}.logId.keyId"),
    )?;
    Ok(LogInstance {
        base_url: str_of(v, "baseUrl", path)?.to_string(),
        log_id,
        key,
        key_details: details.to_string(),
        valid_for: validity(pk.get("validFor"), &format!("{path}.publicKey.validFor"))?,
    })
}

fn authority(v: &Value, path: &str) -> R<Authority> {
    let certs = v
        .get("certChain")
        .map(|c| array(c, "certificates"))
        .transpose()?
        .unwrap_or(&[]);
    if certs.is_empty() {
        return Err(TrustRootError::field(
            format!("{path}.certChain.certificates"),
            "empty",
        ));
    }
    let chain = certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = format!("{path}.certChain.certificates[{i}].rawBytes");
            let der = bytes(c.get("rawBytes").unwrap_or(&Value::Null), &p)?;
            Cert::from_der(&der).map_err(|e| TrustRootError::field(p, e.to_string()))
        })
        .collect::<R<Vec<_>>>()?;
    let subject = v.get("subject").cloned().unwrap_or(Value::Null);
    let subject = format!(
        "O={}, CN={}",
        str_of(&subject, "organization", path)?,
        str_of(&subject, "commonName", path)?
    );
    let links_verified = chain.windows(2).all(|w| w[0].is_signed_by(&w[1]));
    Ok(Authority {
        uri: str_of(v, "uri", path)?.to_string(),
        subject,
        links_verified,
        chain,
        valid_for: validity(v.get("validFor"), &format!("{path}.validFor"))?,
    })
}

impl TrustedRoot {
    /// Parse a `dev.sigstore.trustedroot` JSON document.
    pub fn from_json(bytes: &[u8]) -> R<Self> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| TrustRootError::Json(e.to_string()))?;
        let media_type = v
            .get("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| TrustRootError::field("mediaType", "missing"))?;
        if !MEDIA_TYPES.contains(&media_type) {
            return Err(TrustRootError::MediaType(media_type.to_string()));
        }
        let logs = |k: &str| -> R<Vec<LogInstance>> {
            array(&v, k)?
                .iter()
                .enumerate()
                .map(|(i, l)| log(l, &format!("{k}[{i}]")))
                .collect()
        };
        let auths = |k: &str| -> R<Vec<Authority>> {
            array(&v, k)?
                .iter()
                .enumerate()
                .map(|(i, a)| authority(a, &format!("{k}[{i}]")))
                .collect()
        };
        Ok(TrustedRoot {
            media_type: media_type.to_string(),
            tlogs: logs("tlogs")?,
            ctlogs: logs("ctlogs")?,
            certificate_authorities: auths("certificateAuthorities")?,
            timestamp_authorities: auths("timestampAuthorities")?,
        })
    }

    /// The public-good root compiled into the binary.
    pub fn public_good() -> R<Self> {
        Self::from_json(PUBLIC_GOOD_JSON)
    }

    /// The staging root compiled into the binary.
    pub fn staging() -> R<Self> {
        Self::from_json(STAGING_JSON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_roots_parse() {
        let pg = TrustedRoot::public_good().unwrap();
        assert_eq!(pg.tlogs[0].base_url, "https://rekor.sigstore.dev");
        assert_eq!(pg.certificate_authorities.len(), 2);
        assert!(!pg.ctlogs.is_empty() && !pg.timestamp_authorities.is_empty());
        let st = TrustedRoot::staging().unwrap();
        assert_eq!(st.tlogs[0].base_url, "https://rekor.sigstage.dev");
        // The RSA CT log key in PKCS #1 form is read too.
        assert!(st
            .ctlogs
            .iter()
            .any(|l| l.key_details == "PKCS1_RSA_PKCS1V5"));
    }

    #[test]
    fn malformed_roots_are_input_errors() {
        assert!(matches!(
            TrustedRoot::from_json(b"{"),
            Err(TrustRootError::Json(_))
        ));
        assert!(matches!(
            TrustedRoot::from_json(br#"{"mediaType":"x"}"#),
            Err(TrustRootError::MediaType(_))
        ));
        let mut v: Value = serde_json::from_slice(PUBLIC_GOOD_JSON).unwrap();
        v["tlogs"][0]["publicKey"]["rawBytes"] = Value::String("AAAA".into());
        assert!(matches!(
            TrustedRoot::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(TrustRootError::Field { .. })
        ));
        let mut v: Value = serde_json::from_slice(PUBLIC_GOOD_JSON).unwrap();
        v["certificateAuthorities"][0]["validFor"]["start"] = Value::String("yesterday".into());
        assert!(matches!(
            TrustedRoot::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(TrustRootError::Field { .. })
        ));
    }
}
