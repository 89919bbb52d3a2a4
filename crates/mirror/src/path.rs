//! [`BundlePath`]: a path inside a bundle that cannot escape it.
//!
//! Every path that enters a bundle — from a spec, a manifest, an archive entry — is parsed
//! into this type first. It is relative, `/`-separated, with no empty, `.` or `..` component,
//! no backslash, no control character, and short enough for a ustar header (name ≤ 100 bytes,
//! optional prefix ≤ 155 bytes split at a `/`), so every bundle packs into a plain ustar
//! archive that every `tar` reads.
//!
//! It reads as a `str` (`Deref`, `AsRef`, `Borrow`, comparisons with `str`), orders as its
//! bytes (the order of a manifest's `files`), and serialises as the plain string; parsing it
//! from serde applies the same rules, so a typed manifest entry cannot hold an unsafe path.

use std::fmt;

/// Why a path cannot enter a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("{0:?} is an absolute path")]
    Absolute(String),
    #[error("{0:?} holds a control character or a backslash")]
    BadCharacter(String),
    #[error("{0:?} has an empty path component")]
    EmptyComponent(String),
    /// A `.` or `..` component.
    #[error("{path:?} has a `{component}` component (path traversal)")]
    Traversal {
        path: String,
        component: &'static str,
    },
    #[error("{0:?} is too long for a ustar archive (at most 255 bytes, file name at most 100)")]
    TooLong(String),
}

/// A validated bundle-relative path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(String);

impl BundlePath {
    /// Parse and validate. The error says what is wrong with the path.
    pub fn new(s: &str) -> Result<Self, PathError> {
        check(s)?;
        Ok(BundlePath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Join onto a folder.
    pub fn under(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let mut p = dir.to_path_buf();
        for c in self.0.split('/') {
            p.push(c);
        }
        p
    }
}

/// The rules of [`BundlePath::new`].
pub(crate) fn check(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute(s.to_string()));
    }
    if s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::BadCharacter(s.to_string()));
    }
    for c in s.split('/') {
        let component = match c {
            "" => return Err(PathError::EmptyComponent(s.to_string())),
            "." => ".",
            ".." => "..",
            _ => continue,
        };
        return Err(PathError::Traversal {
            path: s.to_string(),
            component,
        });
    }
    if ustar_split(s).is_none() {
        return Err(PathError::TooLong(s.to_string()));
    }
    Ok(())
}

impl TryFrom<String> for BundlePath {
    type Error = PathError;
    /// [`BundlePath::new`], keeping the string's allocation.
    fn try_from(s: String) -> Result<Self, PathError> {
        check(&s)?;
        Ok(BundlePath(s))
    }
}

impl std::str::FromStr for BundlePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        BundlePath::new(s)
    }
}

impl std::ops::Deref for BundlePath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for BundlePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for BundlePath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for BundlePath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for BundlePath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<BundlePath> for String {
    fn from(p: BundlePath) -> String {
        p.0
    }
}

impl From<&BundlePath> for String {
    fn from(p: &BundlePath) -> String {
        p.0.clone()
    }
}

impl serde::Serialize for BundlePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for BundlePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BundlePath::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Split a path into ustar `(prefix, name)`: name ≤ 100 bytes, prefix ≤ 155 bytes.
/// The mode a bundle file has on disk and in an archive: `scripts/*.sh` are executable
/// (0755), everything else is 0644. One rule for `pack`, `unpack` and `apply`.
pub(crate) fn file_mode(path: &str) -> u32 {
    if path.starts_with("scripts/") && path.ends_with(".sh") {
        0o755
    } else {
        0o644
    }
}

pub(crate) fn ustar_split(s: &str) -> Option<(&str, &str)> {
    if s.len() <= 100 {
        return Some(("", s));
    }
    if s.len() > 256 {
        return None;
    }
    // The prefix must end at a '/', be at most 155 bytes, and leave at most 100 for the name.
    let bytes = s.as_bytes();
    (0..bytes.len())
        .filter(|&i| bytes[i] == b'/' && i <= 155 && s.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&s[..i], &s[i + 1..]))
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(BundlePath::new(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "images/blobs/sha256/ab", "docs/INSTALL.md", "a..b/.c"] {
            assert!(BundlePath::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn reads_as_its_string() {
        let p: BundlePath = "docs/INSTALL.md".parse().unwrap();
        assert_eq!(p, "docs/INSTALL.md");
        assert!(p.starts_with("docs/"));
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"docs/INSTALL.md\"");
        assert_eq!(
            serde_json::from_str::<BundlePath>("\"docs/INSTALL.md\"").unwrap(),
            p
        );
        let e = serde_json::from_str::<BundlePath>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("path traversal"), "{e}");
        assert_eq!(
            BundlePath::try_from("a//b".to_string()),
            Err(PathError::EmptyComponent("a//b".into()))
        );
        assert_eq!(String::from(p.clone()), p.into_string());
    }

    #[test]
    fn ustar_limits() {
        let long_name = "x".repeat(101);
        assert!(BundlePath::new(&long_name).is_err());
        let ok = format!("{}/{}", "d".repeat(150), "f".repeat(100));
        assert!(BundlePath::new(&ok).is_ok());
        let (p, n) = ustar_split(&ok).unwrap();
        assert_eq!((p.len(), n.len()), (150, 100));
        assert!(BundlePath::new(&format!("{}/{}", "d".repeat(156), "f")).is_err());
    }
}
