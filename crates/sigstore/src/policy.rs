//! What the caller trusts: a public key, or a Fulcio identity (SAN and OIDC issuer, exact or
//! regular expression, plus any other Fulcio extension by OID).
//!
//! Regular expressions must match the **whole** value (they are anchored: `^(?:re)$`), so
//! `https://github\.com/org/.*` cannot be satisfied by a value that merely contains it. The
//! `regex` crate guarantees linear-time matching.

use std::fmt;

use stella_x509::Oid;

use crate::cert::FulcioCert;
use crate::error::VerifyError;
use crate::key::VerifyingKey;

/// A policy that cannot be built (bad regular expression or OID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("invalid regular expression {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("invalid OID {0:?}")]
    Oid(String),
}

/// Matches one string value.
#[derive(Clone)]
pub enum Matcher {
    Exact(String),
    Regex { pattern: String, re: regex::Regex },
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Regex { pattern, .. } => write!(f, "/{pattern}/"),
        }
    }
}

impl Matcher {
    pub fn exact(s: impl Into<String>) -> Self {
        Matcher::Exact(s.into())
    }

    /// A regular expression that must match the whole value.
    pub fn regex(pattern: &str) -> Result<Self, PolicyError> {
        let re =
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| PolicyError::Regex {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Matcher::Regex {
            pattern: pattern.to_string(),
            re,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex { re, .. } => re.is_match(value),
        }
    }
}

/// A Fulcio identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Matches one SAN (email or URI).
    pub san: Matcher,
    /// Matches the OIDC issuer.
    pub issuer: Matcher,
    /// Other Fulcio extensions (OID → value matcher), e.g. the GitHub workflow repository.
    pub extensions: Vec<(Oid, Matcher)>,
}

impl Identity {
    pub fn new(san: Matcher, issuer: Matcher) -> Self {
        Identity {
            san,
            issuer,
            extensions: Vec::new(),
        }
    }

    /// Also require a Fulcio extension (dotted OID) to match.
    pub fn with_extension(mut self, oid: &str, m: Matcher) -> Result<Self, PolicyError> {
        let o = Oid::new(oid).map_err(|_| PolicyError::Oid(oid.to_string()))?;
        self.extensions.push((o, m));
        Ok(self)
    }

    /// Check the certificate against this identity: issuer, SAN, then extensions.
    pub fn check(&self, cert: &FulcioCert) -> Result<(), VerifyError> {
        let issuer = cert.issuer();
        if !issuer.as_deref().is_some_and(|i| self.issuer.matches(i)) {
            return Err(VerifyError::Issuer {
                expected: self.issuer.to_string(),
                found: issuer,
            });
        }
        let sans = cert.sans();
        if !sans.iter().any(|s| self.san.matches(s)) {
            return Err(VerifyError::Identity {
                expected: self.san.to_string(),
                found: sans,
            });
        }
        for (o, m) in &self.extensions {
            let v = cert.extension_value(*o);
            if !v.as_deref().is_some_and(|v| m.matches(v)) {
                return Err(VerifyError::Extension {
                    oid: o.to_string(),
                    expected: m.to_string(),
                    found: v,
                });
            }
        }
        Ok(())
    }
}

/// Whom to trust for a bundle.
#[derive(Debug, Clone)]
pub enum Policy {
    /// A public key (`--key`): the bundle must carry `publicKey` material.
    Key(VerifyingKey),
    /// A Fulcio identity: the bundle must carry a certificate.
    Identity(Identity),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored() {
        let m = Matcher::regex(r"https://github\.com/org/.*").unwrap();
        assert!(m.matches("https://github.com/org/repo"));
        assert!(!m.matches("evil https://github.com/org/repo"));
        let m = Matcher::regex("a@b").unwrap();
        assert!(!m.matches("xa@by"));
        assert!(matches!(
            Matcher::regex("("),
            Err(PolicyError::Regex { .. })
        ));
        assert!(Matcher::exact("x").matches("x") && !Matcher::exact("x").matches("xx"));
    }
}
