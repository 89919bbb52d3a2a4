//! Content digests: the workspace's one [`Digest`] type (`stella-digest`), and hashing of
//! files. Only `sha256` is supported (what every registry and layout we meet uses); any other
//! algorithm is refused with a clear error rather than trusted unchecked.

pub(crate) use stella_digest::{Digest, Hasher};

use crate::error::{Error, Result};

/// What [`hash_file_upto`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hashed {
    /// The whole file: its digest and length.
    Whole(Digest, u64),
    /// A file longer than the limit, not read past it: its length (`fstat`).
    Longer(u64),
}

/// Hash a file (1 MiB reads) no further than `limit` bytes and one more, so a file swapped
/// for a far larger one (a sparse terabyte) costs one read past the limit, not its size.
/// Blocking: call from a blocking thread.
pub(crate) fn hash_file_upto(path: &std::path::Path, limit: u64) -> Result<Hashed> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = (&f).take(limit.saturating_add(1));
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    if len > limit {
        let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
        return Ok(Hashed::Longer(size.max(len)));
    }
    Ok(Hashed::Whole(h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_stops_one_byte_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(
            hash_file_upto(&p, 5).unwrap(),
            Hashed::Whole(Digest::of(b"hello"), 5)
        );
        assert_eq!(
            hash_file_upto(&p, 9).unwrap(),
            Hashed::Whole(Digest::of(b"hello"), 5)
        );
        assert_eq!(hash_file_upto(&p, 4).unwrap(), Hashed::Longer(5));
        assert_eq!(hash_file_upto(&p, 0).unwrap(), Hashed::Longer(5));
        // A sparse terabyte: one read, sized by fstat.
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(1 << 40).unwrap();
        drop(f);
        let started = std::time::Instant::now();
        assert_eq!(hash_file_upto(&p, 1024).unwrap(), Hashed::Longer(1 << 40));
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

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
