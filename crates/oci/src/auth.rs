//! Registry credentials and authentication challenges.
//!
//! Credentials come from the docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` entries (`auth` = base64 `user:password`, or `username` /
//! `password`, or an `identitytoken`), and credential helpers (`credHelpers` per registry,
//! `credsStore` for all), run as `docker-credential-NAME get` exactly as docker does. A
//! missing file means anonymous access. Secrets are never printed (`Debug` redacts them).
//!
//! Challenges: a `401` carries `WWW-Authenticate: Basic ...` (we then send the credentials)
//! or `Bearer realm=...,service=...,scope=...` (we fetch a token from the realm — with the
//! credentials when we have them, anonymously otherwise — and retry).

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken {
        username: String,
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(f, "Basic({username}, <redacted>)")
            }
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, <redacted>)")
            }
        }
    }
}

impl Credentials {
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken { .. } => None,
        }
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// The docker config file (`$DOCKER_CONFIG` or `~/.docker/config.json`).
    #[default]
    DockerConfig,
    /// A specific docker config file.
    DockerConfigFile(PathBuf),
    /// Fixed credentials per registry (`host[:port]`).
    Static(HashMap<String, Credentials>),
    /// Anonymous only.
    Anonymous,
}

/// The parsed docker config file (only what authentication needs).
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerConfig {
    auths: HashMap<String, Credentials>,
    creds_store: Option<String>,
    cred_helpers: HashMap<String, String>,
}

impl DockerConfig {
    /// The default path: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub(crate) fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// Load `path`; a missing file is an empty config.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::parse(&text)
            .map_err(|why| Error::Input(format!("docker config {}: {why}", path.display())))
    }

    pub(crate) fn parse(text: &[u8]) -> std::result::Result<Self, ConfigError> {
        let v: Value = serde_json::from_slice(text).map_err(ConfigError::Json)?;
        let mut cfg = DockerConfig::default();
        if let Some(auths) = v.get("auths").and_then(Value::as_object) {
            for (server, entry) in auths {
                if let Some(c) = parse_entry(entry)? {
                    cfg.auths.insert(normalize_server(server), c);
                }
            }
        }
        cfg.creds_store = v
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(h) = v.get("credHelpers").and_then(Value::as_object) {
            for (server, helper) in h {
                if let Some(helper) = helper.as_str() {
                    cfg.cred_helpers
                        .insert(normalize_server(server), helper.to_string());
                }
            }
        }
        Ok(cfg)
    }

    /// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
    pub(crate) fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        let key = normalize_server(registry);
        if let Some(helper) = self.cred_helpers.get(&key) {
            return run_helper(helper, &helper_server(&key));
        }
        if let Some(c) = self.auths.get(&key) {
            return Ok(Some(c.clone()));
        }
        if let Some(store) = &self.creds_store {
            return run_helper(store, &helper_server(&key));
        }
        Ok(None)
    }
}

/// Why a docker config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("an `auth` entry is not base64")]
    AuthNotBase64,
    #[error("an `auth` entry is not UTF-8")]
    AuthNotUtf8,
    #[error("an `auth` entry is not base64 of user:password")]
    AuthNotUserPassword,
}

fn parse_entry(entry: &Value) -> std::result::Result<Option<Credentials>, ConfigError> {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = s("identitytoken") {
        return Ok(Some(Credentials::IdentityToken {
            username: s("username").unwrap_or("<token>").to_string(),
            token: token.to_string(),
        }));
    }
    if let Some(auth) = s("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| ConfigError::AuthNotBase64)?;
        let text = String::from_utf8(raw).map_err(|_| ConfigError::AuthNotUtf8)?;
        let (u, p) = text
            .split_once(':')
            .ok_or(ConfigError::AuthNotUserPassword)?;
        return Ok(Some(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(Some(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://reg:5000/x` → `reg:5000`.
fn normalize_server(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

fn helper_server(key: &str) -> String {
    if key == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        key.to_string()
    }
}

/// Run `docker-credential-NAME get` with the server on stdin.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Error::Input(format!(
            "docker config: invalid credential helper name {name:?}"
        )));
    }
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Auth {
            registry: server.to_string(),
            detail: format!("cannot run credential helper {program}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::Auth {
        registry: server.to_string(),
        detail: format!("credential helper {program}: {e}"),
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Auth {
            registry: server.to_string(),
            detail: format!("credential helper {program} failed: {}", msg.trim()),
        });
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| Error::Auth {
        registry: server.to_string(),
        detail: format!("credential helper {program} printed invalid JSON: {e}"),
    })?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credentials::IdentityToken {
            username: user.to_string(),
            token: secret.to_string(),
        }
    } else {
        Credentials::Basic {
            username: user.to_string(),
            password: secret.to_string(),
        }
    }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parse the first Basic or Bearer challenge of a header value.
    pub(crate) fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `k="v", k2=v2` (quoted strings may hold commas and escaped quotes).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // Push whole UTF-8 characters.
                let ch_len = utf8_len(b[i]);
                val.push_str(&s[i..(i + ch_len).min(b.len())]);
                i += ch_len;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        out.insert(key, val);
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config() {
        let cfg = DockerConfig::parse(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                 "127.0.0.1:5000":{"username":"u","password":"p"},
                 "ghcr.io":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.lookup("docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert!(matches!(
            cfg.lookup("127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic { .. })
        ));
        assert!(matches!(
            cfg.lookup("ghcr.io").unwrap(),
            Some(Credentials::IdentityToken { .. })
        ));
        assert_eq!(cfg.lookup("other.io").unwrap(), None);
        let dbg = format!("{:?}", cfg.lookup("docker.io").unwrap());
        assert!(!dbg.contains("pa:ss"), "{dbg}");
        assert!(DockerConfig::parse(br#"{"auths":{"x":{"auth":"***"}}}"#).is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }
}
