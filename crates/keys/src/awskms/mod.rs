//! AWS KMS keys (`awskms://[ENDPOINT]/KEY`), over the KMS JSON API (`TrentService.*`) with our
//! own SigV4 ([`sigv4`]) and a blocking reqwest client.
//!
//! References follow cosign: `awskms:///KEY-ID`, `awskms:///alias/NAME`,
//! `awskms:///arn:aws:kms:REGION:ACCOUNT:key/ID`, and `awskms://HOST:PORT/KEY` for another
//! endpoint (https, or http for a loopback host such as a local emulator).
//! `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` (full URLs) override the endpoint as in the AWS
//! SDKs. Region: from a key ARN, else `AWS_REGION`, else `AWS_DEFAULT_REGION`. Credentials:
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`).
//!
//! Signing: P-256 keys are asked to sign the SHA-256 we compute (`MessageType=DIGEST`,
//! `ECDSA_SHA_256`), so any message size works and only 32 bytes travel; Ed25519 keys need the
//! whole message (`ED25519_SHA_512` requires `MessageType=RAW`, at most 4096 bytes). The key
//! is pinned at open: an alias is resolved to its key ARN once, and every signature KMS returns
//! is checked against the public key before it is used, so an alias moved to another key (or
//! a faulty endpoint) can never make us emit a signature that does not verify.
//!
//! Throttling (`ThrottlingException`), 5xx answers and network errors are retried with
//! exponential backoff and full jitter (6 attempts, ≈3 s at most); past that the signature
//! fails as [`SignError::Unavailable`] (the service answers 503, retry later).

pub mod sigv4;

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::public::{Algorithm, PublicKey};
use crate::signer::{SignError, Signer};
use crate::stream::MessageSource;
use crate::KeyError;
use sigv4::Credentials;

/// Largest message KMS signs with `MessageType=RAW`.
const MAX_RAW_MESSAGE: usize = 4096;
/// Attempts per call (the first one included).
const ATTEMPTS: u32 = 6;
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// A parsed `awskms://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsUri {
    /// `HOST[:PORT]` between `awskms://` and the key, if any.
    pub(crate) endpoint: Option<String>,
    /// Key id, `alias/NAME`, or a key/alias ARN.
    pub(crate) key: String,
}

impl KmsUri {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s.strip_prefix("awskms://").ok_or_else(|| {
            KeyError::Reference("an AWS KMS reference starts with awskms://".into())
        })?;
        let (host, key) = rest.split_once('/').ok_or_else(|| {
            KeyError::Reference(
                "awskms reference has no key: use awskms:///KEY-ID or awskms:///alias/NAME".into(),
            )
        })?;
        if key.is_empty() {
            return Err(KeyError::Reference(
                "awskms reference has no key: use awskms:///KEY-ID or awskms:///alias/NAME".into(),
            ));
        }
        if key
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(KeyError::Reference(format!(
                "awskms key {key:?} has characters a KMS key id cannot have"
            )));
        }
        if key.starts_with("alias/") && key.len() == "alias/".len() {
            return Err(KeyError::Reference("awskms alias has no name".into()));
        }
        if host.contains('@') || host.contains('/') {
            return Err(KeyError::Reference(
                "awskms endpoint must be HOST[:PORT] (no user info)".into(),
            ));
        }
        Ok(KmsUri {
            endpoint: (!host.is_empty()).then(|| host.to_string()),
            key: key.to_string(),
        })
    }

    /// The region named by a key or alias ARN.
    fn arn_region(&self) -> Option<&str> {
        let mut parts = self.key.strip_prefix("arn:")?.split(':');
        let _partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        (service == "kms" && !region.is_empty()).then_some(region)
    }
}

/// Where and as whom to call KMS.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    pub endpoint: String,
    pub region: String,
    pub credentials: Credentials,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn shared_credentials() -> Result<Option<Credentials>, KeyError> {
    let path = match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => match env("HOME") {
            Some(h) => std::path::Path::new(&h).join(".aws").join("credentials"),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::Io(path, e)),
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
                "aws_session_token" => token = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
    }
    Ok(match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => None,
    })
}

impl KmsConfig {
    /// Endpoint, region and credentials for `uri` from the environment.
    pub(crate) fn from_env(uri: &KmsUri) -> Result<Self, KeyError> {
        let region = uri
            .arn_region()
            .map(str::to_string)
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                KeyError::Reference(
                    "no AWS region: set AWS_REGION (or use a key ARN, which names its region)"
                        .into(),
                )
            })?;
        let endpoint =
            if let Some(url) = env("AWS_ENDPOINT_URL_KMS").or_else(|| env("AWS_ENDPOINT_URL")) {
                url.trim_end_matches('/').to_string()
            } else if let Some(host) = &uri.endpoint {
                let scheme = if is_loopback(host) { "http" } else { "https" };
                format!("{scheme}://{host}")
            } else {
                format!("https://kms.{region}.amazonaws.com")
            };
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret)) => Credentials {
                access_key_id,
                secret_access_key: Zeroizing::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
            },
            _ => shared_credentials()?.ok_or_else(|| {
                KeyError::Auth(
                    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or configure ~/.aws/credentials"
                        .into(),
                )
            })?,
        };
        Ok(KmsConfig {
            endpoint,
            region,
            credentials,
        })
    }
}

/// A KMS JSON API client (one endpoint, one identity).
pub struct KmsClient {
    config: KmsConfig,
    url: reqwest::Url,
    host: String,
    http: reqwest::blocking::Client,
}

impl fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsClient")
            .field("endpoint", &self.config.endpoint)
            .field("region", &self.config.region)
            .finish_non_exhaustive()
    }
}

/// Run `f` on a short-lived thread of its own (see [`KmsClient::new`]).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, KeyError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("stella-kms".into())
            .spawn_scoped(scope, f)
            .map_err(|e| KeyError::Backend(format!("cannot start the KMS client thread: {e}")))?
            .join()
            .map_err(|_| KeyError::Backend("the KMS client thread panicked".into()))
    })
}

/// How a failed call should be treated.
enum Failure {
    Retry(String),
    Final(KeyError),
}

fn amz_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return max;
    }
    let frac = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    max.mul_f64(frac)
}

fn classify(status: reqwest::StatusCode, body: &[u8], what: &str) -> Failure {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_default();
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect::<String>();
    let detail = format!("{what}: KMS answered {status} {kind}: {message}");
    match kind.as_str() {
        "ThrottlingException" | "ThrottledException" | "RequestLimitExceeded" => {
            Failure::Retry(detail)
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "IncompleteSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationTokenException" => Failure::Final(KeyError::Auth(detail)),
        "NotFoundException" => Failure::Final(KeyError::NotFound(detail)),
        _ if status.is_server_error() => Failure::Retry(detail),
        _ if status == reqwest::StatusCode::FORBIDDEN
            || status == reqwest::StatusCode::UNAUTHORIZED =>
        {
            Failure::Final(KeyError::Auth(detail))
        }
        _ => Failure::Final(KeyError::Backend(detail)),
    }
}

impl KmsClient {
    pub fn new(config: KmsConfig) -> Result<Self, KeyError> {
        let url = reqwest::Url::parse(&format!("{}/", config.endpoint))
            .map_err(|e| KeyError::Reference(format!("KMS endpoint {:?}: {e}", config.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" {
            return Err(KeyError::Reference(format!(
                "KMS endpoint {:?} must be http(s)://HOST[:PORT]",
                config.endpoint
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(KeyError::Reference(format!(
                    "KMS endpoint {:?} has no host",
                    config.endpoint
                )))
            }
        };
        // reqwest's blocking client must not be built or used on an async runtime's thread
        // (it runs its own runtime); callers may be async (the Signer service), so every
        // blocking HTTP step runs on a thread of its own.
        let http = off_runtime(|| {
            reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15))
                .build()
        })?
        .map_err(|e| KeyError::Backend(format!("cannot start the HTTP client: {e}")))?;
        Ok(KmsClient {
            config,
            url,
            host,
            http,
        })
    }

    /// One KMS API call (`TrentService.<op>`), retried on throttling, 5xx and network errors.
    pub fn call(&self, op: &str, body: &Value, what: &str) -> Result<Value, KeyError> {
        off_runtime(|| self.call_here(op, body, what))?
    }

    fn call_here(&self, op: &str, body: &Value, what: &str) -> Result<Value, KeyError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| KeyError::Backend(format!("cannot encode the KMS request: {e}")))?;
        let target = format!("TrentService.{op}");
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let ceiling = BACKOFF_BASE
                    .saturating_mul(1 << (attempt - 1).min(10))
                    .min(BACKOFF_CAP);
                std::thread::sleep(jitter(ceiling));
            }
            match self.once(&target, &body, what) {
                Ok(v) => return Ok(v),
                Err(Failure::Retry(why)) => last = why,
                Err(Failure::Final(e)) => return Err(e),
            }
        }
        Err(KeyError::Unavailable(format!(
            "{last} (gave up after {ATTEMPTS} attempts)"
        )))
    }

    fn once(&self, target: &str, body: &[u8], what: &str) -> Result<Value, Failure> {
        let date = amz_date();
        let token = self.config.credentials.session_token.clone();
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/x-amz-json-1.1"),
            ("host", &self.host),
            ("x-amz-date", &date),
            ("x-amz-target", target),
        ];
        if let Some(t) = &token {
            headers.push(("x-amz-security-token", t.as_str()));
        }
        let auth = sigv4::authorization(
            &self.config.credentials,
            &self.config.region,
            "kms",
            &date,
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body,
            },
        );
        let mut req = self.http.post(self.url.clone()).body(body.to_vec());
        for (n, v) in &headers {
            req = req.header(*n, *v);
        }
        let resp = req.header("authorization", auth).send().map_err(|e| {
            Failure::Retry(format!(
                "{what}: cannot reach KMS at {}: {e}",
                self.config.endpoint
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .map_err(|e| Failure::Retry(format!("{what}: reading the KMS answer: {e}")))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Final(KeyError::Backend(format!(
                    "{what}: KMS answered with invalid JSON: {e}"
                )))
            })
        } else {
            Err(classify(status, &bytes, what))
        }
    }
}

/// A signing key in AWS KMS.
pub struct KmsKey {
    client: KmsClient,
    /// The reference as written (for messages).
    reference: String,
    /// The key ARN KMS resolved the reference to (pinned at open).
    key_arn: String,
    public: PublicKey,
}

impl fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsKey")
            .field("reference", &self.reference)
            .field("key_arn", &self.key_arn)
            .field("key_id", self.public.key_id())
            .finish_non_exhaustive()
    }
}

/// Fetch a KMS key's public key (`GetPublicKey`) and check it is a signing key Stella uses.
/// Returns the key ARN and the public key.
pub(crate) fn get_public_key(
    client: &KmsClient,
    key: &str,
    what: &str,
) -> Result<(String, PublicKey), KeyError> {
    let v = client.call("GetPublicKey", &json!({ "KeyId": key }), what)?;
    let usage = v["KeyUsage"].as_str().unwrap_or("");
    if usage != "SIGN_VERIFY" {
        return Err(KeyError::UnsupportedAlgorithm(format!(
            "{what}: the KMS key's usage is {usage:?}, not SIGN_VERIFY"
        )));
    }
    let spec = v["KeySpec"]
        .as_str()
        .or_else(|| v["CustomerMasterKeySpec"].as_str())
        .unwrap_or("");
    let expected = match spec {
        "ECC_NIST_P256" => Algorithm::EcdsaP256Sha256,
        "ECC_NIST_EDWARDS25519" => Algorithm::Ed25519,
        other => {
            return Err(KeyError::UnsupportedAlgorithm(format!(
                "{what}: KMS key spec {other:?} (supported: ECC_NIST_P256, ECC_NIST_EDWARDS25519)"
            )))
        }
    };
    let der = v["PublicKey"]
        .as_str()
        .and_then(|b| stella_dsse::b64::decode(b).ok())
        .ok_or_else(|| KeyError::Backend(format!("{what}: GetPublicKey returned no public key")))?;
    let public = PublicKey::from_spki_der(&der)?;
    if public.algorithm() != expected {
        return Err(KeyError::Malformed(format!(
            "{what}: KMS says {spec} but the public key is {}",
            public.algorithm()
        )));
    }
    let arn = v["KeyId"].as_str().unwrap_or(key).to_string();
    Ok((arn, public))
}

impl KmsKey {
    /// Resolve the reference, fetch the public key and pin the key ARN.
    pub(crate) fn open(reference: &str) -> Result<Self, KeyError> {
        let uri = KmsUri::parse(reference)?;
        let client = KmsClient::new(KmsConfig::from_env(&uri)?)?;
        Self::with_client(client, &uri, reference)
    }

    /// Like `KmsKey::open` with an explicit client (configuration from elsewhere).
    pub fn with_client(client: KmsClient, uri: &KmsUri, reference: &str) -> Result<Self, KeyError> {
        let (key_arn, public) = get_public_key(&client, &uri.key, reference)?;
        Ok(KmsKey {
            client,
            reference: reference.to_string(),
            key_arn,
            public,
        })
    }

    /// The key ARN signatures are made with.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// ECDSA_SHA_256 over a SHA-256 digest made here (`MessageType: DIGEST`), checked
    /// against the public key before it is used.
    fn sign_p256_digest(&self, digest: &aws_lc_rs::digest::Digest) -> Result<Vec<u8>, SignError> {
        let sig = self.call_sign(&json!({
            "KeyId": self.key_arn,
            "Message": stella_dsse::b64::encode(digest.as_ref()),
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        }))?;
        let ok = self.public.parsed().verify_digest_sig(digest, &sig).is_ok();
        self.checked(ok, sig)
    }

    /// One `Sign` call; the signature bytes of the answer.
    fn call_sign(&self, body: &Value) -> Result<Vec<u8>, SignError> {
        let key_id = || self.public.key_id().clone();
        let v = self
            .client
            .call("Sign", body, &self.reference)
            .map_err(|e| match e {
                KeyError::Unavailable(reason) => SignError::Unavailable {
                    key_id: key_id(),
                    reason,
                },
                other => SignError::Backend {
                    key_id: key_id(),
                    reason: other.to_string(),
                },
            })?;
        v["Signature"]
            .as_str()
            .and_then(|b| stella_dsse::b64::decode(b).ok())
            .ok_or_else(|| SignError::Backend {
                key_id: key_id(),
                reason: format!("{}: KMS returned no signature", self.reference),
            })
    }

    /// `sig` when it verified under the key's public key; a signature that does not is
    /// never used.
    fn checked(&self, verified: bool, sig: Vec<u8>) -> Result<Vec<u8>, SignError> {
        if !verified {
            return Err(SignError::Backend {
                key_id: self.public.key_id().clone(),
                reason: format!(
                    "{}: the signature KMS returned does not verify with the key's public key; not used",
                    self.reference
                ),
            });
        }
        Ok(sig)
    }
}

/// The public key of a KMS key, for keyrings.
pub(crate) fn public_key(reference: &str) -> Result<PublicKey, KeyError> {
    let uri = KmsUri::parse(reference)?;
    let client = KmsClient::new(KmsConfig::from_env(&uri)?)?;
    get_public_key(&client, &uri.key, reference).map(|(_, p)| p)
}

impl Signer for KmsKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self.public.algorithm() {
            Algorithm::EcdsaP256Sha256 => self.sign_p256_digest(&aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                message,
            )),
            Algorithm::Ed25519 => {
                if message.len() > MAX_RAW_MESSAGE {
                    return Err(SignError::Backend {
                        key_id: self.public.key_id().clone(),
                        reason: format!(
                            "{}: KMS signs Ed25519 over the whole message and takes at most {MAX_RAW_MESSAGE} bytes; this one is {} (use a P-256 KMS key for larger payloads)",
                            self.reference,
                            message.len()
                        ),
                    });
                }
                let sig = self.call_sign(&json!({
                    "KeyId": self.key_arn,
                    "Message": stella_dsse::b64::encode(message),
                    "MessageType": "RAW",
                    "SigningAlgorithm": "ED25519_SHA_512",
                }))?;
                self.checked(self.public.verify(message, &sig), sig)
            }
        }
    }

    /// P-256: the message is hashed here in one pass and KMS signs the digest (as `sign`
    /// always does), so memory does not grow with the message. Ed25519 as the default.
    fn sign_stream(&self, message: &mut dyn MessageSource) -> Result<Vec<u8>, SignError> {
        if self.public.algorithm() == Algorithm::EcdsaP256Sha256 {
            let digest = crate::stream::sha256_of(message).map_err(SignError::Read)?;
            return self.sign_p256_digest(&digest);
        }
        let mut bytes = Vec::new();
        message
            .feed(&mut |c| bytes.extend_from_slice(c))
            .map_err(SignError::Read)?;
        self.sign(&bytes)
    }

    fn mode(&self) -> &'static str {
        "kms"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        let u = KmsUri::parse("awskms:///1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        assert_eq!(u.endpoint, None);
        assert_eq!(u.key, "1234abcd-12ab-34cd-56ef-1234567890ab");
        let u = KmsUri::parse("awskms:///alias/release").unwrap();
        assert_eq!(u.key, "alias/release");
        let u = KmsUri::parse("awskms://127.0.0.1:4566/alias/release").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("127.0.0.1:4566"));
        let u = KmsUri::parse(
            "awskms:///arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        assert_eq!(u.arn_region(), Some("eu-west-1"));
        for bad in [
            "awskms://",
            "awskms:///",
            "awskms://host",
            "awskms:///alias/",
            "awskms:///a b",
            "awskms://u@h/k",
            "gcpkms:///k",
        ] {
            assert!(KmsUri::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:4566",
            "localhost",
            "localhost:80",
            "[::1]:9",
            "127.8.0.1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "kms.us-east-1.amazonaws.com",
            "10.0.0.1:443",
            "example.com:80",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn error_classes() {
        let c = |status: u16, body: &str| {
            classify(
                reqwest::StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
                "k",
            )
        };
        assert!(matches!(
            c(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
            ),
            Failure::Retry(_)
        ));
        assert!(matches!(
            c(500, r#"{"__type":"KMSInternalException"}"#),
            Failure::Retry(_)
        ));
        assert!(matches!(c(503, "not json"), Failure::Retry(_)));
        assert!(matches!(
            c(
                400,
                r#"{"__type":"com.amazonaws.kms#NotFoundException","message":"x"}"#
            ),
            Failure::Final(KeyError::NotFound(_))
        ));
        assert!(matches!(
            c(400, r#"{"__type":"AccessDeniedException"}"#),
            Failure::Final(KeyError::Auth(_))
        ));
        assert!(matches!(
            c(400, r#"{"__type":"DisabledException"}"#),
            Failure::Final(KeyError::Backend(_))
        ));
    }

    #[test]
    fn shared_credentials_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key=s2\naws_session_token=tok\n",
        )
        .unwrap();
        // Environment is process-wide: this is the only test touching these variables.
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &f);
        std::env::set_var("AWS_PROFILE", "ci");
        let c = shared_credentials().unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.session_token.as_deref().map(String::as_str), Some("tok"));
        std::env::set_var("AWS_PROFILE", "missing");
        assert!(shared_credentials().unwrap().is_none());
        std::env::remove_var("AWS_PROFILE");
        assert_eq!(
            shared_credentials().unwrap().unwrap().access_key_id,
            "AKIDDEFAULT"
        );
        std::env::remove_var("AWS_SHARED_CREDENTIALS_FILE");
    }
}
