//! Content digests: the workspace's one [`Digest`] type (`stella-digest`), and hashing of
//! files. Only `sha256` is supported (what every registry and layout we meet uses); any other
//! algorithm is refused with a clear error rather than trusted unchecked.

pub(crate) use stella_digest::{Digest, Hasher};

use crate::error::{Error, Result};

/// Hash a file (1 MiB reads). Blocking: call from a blocking thread.
pub(crate) fn hash_file(path: &std::path::Path) -> Result<(Digest, u64)> {
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
