//! Content digests. Only `sha256` is supported (what every registry and layout we meet uses);
//! any other algorithm is refused with a clear error rather than trusted unchecked.

use std::fmt;

use crate::error::{Error, Result};

/// A SHA-256 content digest, `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Input(format!("digest {s:?}: {why}"));
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected sha256:<hex>"))?;
        if alg != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64 {
            return Err(bad("expected 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(|| bad("not lowercase hex"))?;
            let lo = nibble(pair[1]).ok_or_else(|| bad("not lowercase hex"))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Digest(out))
    }

    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        Digest(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        stella_keys::hex(&self.0)
    }

    /// The OCI 1.1 referrers tag-schema form: `sha256-<hex>`.
    pub fn tag_form(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

/// Streaming SHA-256 that also counts bytes.
pub struct Hasher {
    ctx: aws_lc_rs::digest::Context,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Hasher {
            ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        Digest(out)
    }
}

/// Hash a file (1 MiB reads). Blocking: call from a blocking thread.
pub fn hash_file(path: &std::path::Path) -> Result<(Digest, u64)> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(d.tag_form().starts_with("sha256-e3b0"));
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse(&d.to_string().to_uppercase().replace("SHA", "sha")).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
    }
}
