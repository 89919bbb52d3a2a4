//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]`, normalised the way docker
//! does it (`alpine` → `docker.io/library/alpine:latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse a reference. Without tag or digest the tag is `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Reference {
            reference: s.to_string(),
            why: why.to_string(),
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (s, None),
        };
        // The tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_registry(&registry) {
            return Err(bad("invalid registry host"));
        }
        if !valid_repository(&repository) {
            return Err(bad(
                "repository must be lowercase path components of [a-z0-9] separated by . _ - or /",
            ));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// A reference from parts (validated).
    pub fn new(registry: &str, repository: &str) -> Result<Self> {
        Reference::parse(&format!("{registry}/{repository}")).map(|r| r.without_tag())
    }

    /// The registry as written (`host[:port]`), `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to talk to (Docker Hub's API lives on another name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    pub fn with_digest(&self, d: Digest) -> Self {
        let mut r = self.clone();
        r.digest = Some(d);
        r
    }

    /// The same repository pinned to `d`, without tag.
    pub fn pinned(&self, d: Digest) -> Self {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(d),
        }
    }

    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        if !valid_tag(tag) {
            return Err(Error::Reference {
                reference: format!("{}:{tag}", self.name()),
                why: "invalid tag".into(),
            });
        }
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    pub fn without_tag(mut self) -> Self {
        self.tag = None;
        self
    }

    /// Same registry, other repository.
    pub fn in_repository(&self, repository: &str) -> Result<Self> {
        Reference::new(&self.registry, repository)
    }

    /// Is the registry on the loopback interface (plain HTTP allowed without a flag)?
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") || host == "::1" {
        return true;
    }
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

fn valid_registry(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn valid_repository(r: &str) -> bool {
    if r.is_empty() || r.len() > 255 {
        return false;
    }
    r.split('/').all(|comp| {
        let b = comp.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
    })
}

pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("v1"));
        assert!(r.is_loopback());
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.manifest_ref(), d.to_string());
        let r = Reference::parse(&format!("reg.example/app:1@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert!(!r.is_loopback());
        assert!(Reference::parse("Reg/App").is_err());
        assert!(Reference::parse("reg.example/app:bad tag").is_err());
        assert!(Reference::parse("reg.example/app@sha256:00").is_err());
        assert!(Reference::parse("reg.example//app").is_err());
        assert!(is_loopback_host("[::1]:5000"));
        assert!(is_loopback_host("127.0.0.2"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }
}
