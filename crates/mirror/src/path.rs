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

/// The rules of [`BundlePath::new`], in one pass over the bytes (a manifest holds hundreds of
/// thousands of paths): the first refusal in the order empty, absolute, bad character (anywhere),
/// empty or `.`/`..` component (the first one), too long.
pub(crate) fn check(s: &str) -> Result<(), PathError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(PathError::Empty);
    }
    if b[0] == b'/' {
        return Err(PathError::Absolute(s.to_string()));
    }
    // A control character (Unicode Cc: U+0000–U+001F, U+007F, U+0080–U+009F, the last encoded
    // as 0xC2 0x80–0x9F) or a backslash. 0xC2 also leads harmless characters (U+00A0–U+00BF),
    // so only a byte that may start a refusal is looked at twice.
    if may_have_bad(b) && has_bad_character(b) {
        return Err(PathError::BadCharacter(s.to_string()));
    }
    let mut start = 0;
    loop {
        let end = b[start..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(b.len(), |i| start + i);
        let component = match &b[start..end] {
            b"" => return Err(PathError::EmptyComponent(s.to_string())),
            b"." => ".",
            b".." => "..",
            _ => "",
        };
        if !component.is_empty() {
            return Err(PathError::Traversal {
                path: s.to_string(),
                component,
            });
        }
        if end == b.len() {
            break;
        }
        start = end + 1;
    }
    if ustar_split(s).is_none() {
        return Err(PathError::TooLong(s.to_string()));
    }
    Ok(())
}

/// A byte that may begin a refused character: below 0x20, DEL, a backslash or 0xC2.
fn may_be_bad(c: u8) -> bool {
    c < 0x20 || c == 0x7f || c == b'\\' || c == 0xc2
}

/// Does `b` hold a byte for which [`may_be_bad`] holds? Eight bytes at a time (SWAR: the
/// "has a zero byte" and "has a byte below n" tests on a u64, exact as a yes or no).
fn may_have_bad(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if below_space
            | zero(x ^ (ONES * 0x7f))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | zero(x ^ (ONES * 0xc2))
            != 0
        {
            return true;
        }
    }
    words.remainder().iter().any(|&c| may_be_bad(c))
}

/// Does UTF-8 text `b` hold a control character or a backslash?
fn has_bad_character(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        c < 0x20
            || c == 0x7f
            || c == b'\\'
            || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f)))
    })
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

    /// The rules as they were written before the one-pass [`check`] (chars, `split`).
    fn check_by_chars(s: &str) -> Result<(), PathError> {
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

    #[test]
    fn word_test_finds_every_byte_that_may_be_bad() {
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', 0x80, 0xc3, 0xff, 0x21] {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        let want = v.iter().any(|&c| may_be_bad(c));
                        assert_eq!(may_have_bad(&v), want, "{v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_pass_check_agrees_with_the_char_rules() {
        let mut cases: Vec<String> = [
            "",
            "/",
            "//",
            "/a",
            "a",
            ".",
            "..",
            "...",
            "./",
            "../",
            "a/",
            "/..",
            "a/.",
            "a/..",
            "a/./b",
            "a/../b",
            "a//b",
            ".a",
            "a.",
            "..a",
            "a..",
            "a/.b/..c",
            "a\\b",
            "\\",
            "a\0b",
            "\0",
            "a\tb",
            "a\rb",
            "a\x1fb",
            "a\x7fb",
            "a\u{80}b",
            "a\u{9f}b",
            "a\u{a0}b",
            "a\u{bf}b",
            "\u{85}",
            "caf\u{e9}/x",
            "cafe\u{301}/x",
            "\u{212b}",
            "\u{c5}",
            "\u{2028}",
            "\u{200b}",
            "\u{feff}a",
            "\u{ff0e}\u{ff0e}/x",
            "\u{2215}etc",
            "\u{ffff}",
            "\u{10ffff}",
            "a/\u{1f600}",
            "C:\\x",
            "C:/x",
            "a/b/c/../d",
            "a/\n/b",
            "/a\\b",
            "../a\\b",
            "a//\u{85}",
            "./\u{7f}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [99, 100, 101, 154, 155, 156, 255, 256, 257, 300] {
            cases.push("x".repeat(n));
            cases.push(format!("{}/{}", "d".repeat(n.min(200)), "f".repeat(100)));
            cases.push(format!("{}/{}", "d".repeat(155), "f".repeat(n.min(101))));
            cases.push(format!(
                "{}/{}/{}",
                "a".repeat(50),
                "b".repeat(n / 3),
                "c".repeat(n / 3)
            ));
            cases.push(format!("{}\u{e9}", "x".repeat(n)));
        }
        // Every string of up to 4 characters over an alphabet of the interesting ones.
        let alphabet = [
            'a',
            '.',
            '/',
            '\\',
            '\0',
            '\u{7f}',
            '\u{80}',
            '\u{a0}',
            '\u{e9}',
            '\u{1f600}',
        ];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &frontier {
                for c in alphabet {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            cases.extend(next.iter().cloned());
            frontier = next;
        }
        // Pseudo-random longer paths (xorshift), with every byte value's character.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = match x % 8 {
                    0 => '/',
                    1 => '.',
                    2 => char::from_u32((x >> 8) as u32 % 0x100).unwrap_or('a'),
                    3 => char::from_u32((x >> 8) as u32 % 0x11_0000).unwrap_or('b'),
                    _ => 'a',
                };
                s.push(c);
            }
            cases.push(s);
        }
        for s in &cases {
            assert_eq!(check(s), check_by_chars(s), "{s:?}");
        }
        assert!(cases.len() > 30_000);
        assert!(cases.iter().filter(|s| check(s).is_ok()).count() > 1000);
        assert!(matches!(check("a\u{85}b"), Err(PathError::BadCharacter(_))));
        assert_eq!(check("a\u{a0}b"), Ok(()));
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
