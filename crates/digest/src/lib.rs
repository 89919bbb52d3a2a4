//! Content digests, the one vocabulary every crate shares: [`Digest`] is an algorithm and its
//! bytes, printed and parsed as `sha256:<64 lowercase hex>` (the OCI and in-toto form), with
//! serde as that string. [`Hasher`] streams SHA-256 (`sha2`, SHA-NI where the CPU has it) and
//! counts bytes; [`HashingWriter`] hashes a stream on its way to a writer. Only SHA-256 exists today; any other algorithm is refused by name rather
//! than trusted unchecked. Pure: no I/O.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

use std::fmt;

use sha2::Digest as _;

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Algorithm {
    Sha256,
}

impl Algorithm {
    /// The name in `<algorithm>:<hex>` (`sha256`).
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a digest string was refused; the text is quoted in every message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    #[error("digest {0:?}: expected sha256:<hex>")]
    NoAlgorithm(String),
    #[error("digest {0:?}: only sha256 digests are supported")]
    Algorithm(String),
    #[error("digest {0:?}: expected 64 hex digits")]
    Length(String),
    #[error("digest {0:?}: not lowercase hex")]
    NotHex(String),
}

/// A content digest: algorithm and bytes. `Display`, `FromStr` and serde use
/// `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 32],
}

impl Digest {
    /// A SHA-256 digest from its bytes.
    pub const fn sha256(bytes: [u8; 32]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            bytes,
        }
    }

    /// A SHA-256 digest from its bytes (the same as [`Digest::sha256`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::sha256(bytes)
    }

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Hasher::new();
        for p in parts {
            h.update(p);
        }
        h.finish()
    }

    /// Parse `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::NoAlgorithm(s.to_string()))?;
        if alg != Algorithm::Sha256.name() {
            return Err(DigestError::Algorithm(s.to_string()));
        }
        Self::hex_bytes(hex).map_err(|e| e(s.to_string()))
    }

    /// Parse the 64 lowercase hex digits of a SHA-256 digest (no `sha256:` prefix).
    pub fn parse_sha256_hex(hex: &str) -> Result<Self, DigestError> {
        Self::hex_bytes(hex).map_err(|e| e(hex.to_string()))
    }

    fn hex_bytes(hex: &str) -> Result<Self, fn(String) -> DigestError> {
        if hex.len() != 64 {
            return Err(DigestError::Length);
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => return Err(DigestError::NotHex),
            }
        }
        Ok(Digest::sha256(out))
    }

    /// Is `s` a well-formed `sha256:<64 lowercase hex>`?
    pub fn is_valid(s: &str) -> bool {
        Self::parse(s).is_ok()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The lowercase hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex(&self.bytes)
    }

    /// The lowercase hex digits as ASCII bytes, without allocating (for writers that emit
    /// millions of them).
    pub fn hex_ascii(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (o, b) in out.chunks_exact_mut(2).zip(self.bytes) {
            o[0] = DIGITS[(b >> 4) as usize];
            o[1] = DIGITS[(b & 15) as usize];
        }
        out
    }

    /// The OCI 1.1 referrers tag-schema form: `sha256-<hex>`.
    pub fn tag_form(&self) -> String {
        format!("{}-{}", self.algorithm, self.hex())
    }
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex of any bytes.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde as the bare 64 hex digits of a SHA-256 digest (no `sha256:` prefix), the form of
/// `sha256sum` lines and of the `sha256` fields of a mirror manifest:
/// `#[serde(with = "stella_digest::sha256_hex")]`.
pub mod sha256_hex {
    use super::Digest;

    pub fn serialize<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        let hex = d.hex_ascii();
        // 64 ASCII hex digits are always UTF-8.
        s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Digest::parse_sha256_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Streaming SHA-256 that also counts bytes.
///
/// The state is `sha2`'s, on the stack (SHA-NI where the CPU has it, detected once): aws-lc's
/// context allocates its state on the heap, one allocation per hasher — one per file when a
/// bundle holds 200,000 small files.
pub struct Hasher {
    ctx: sha2::Sha256,
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
            ctx: sha2::Sha256::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(&mut self.ctx, data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest::sha256(sha2::Digest::finalize(self.ctx).into())
    }
}

/// A writer that hashes what it passes on to `inner`: the digest of a stream written once,
/// on its way to a file, a compressor or a sink. (An adapter over a `Write` the caller gives;
/// it does no I/O of its own.)
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_print_round_trip() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(format!("{d:?}"), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), d);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::parse_sha256_hex(&d.hex()).unwrap(), d);
        assert_eq!(d.tag_form(), EMPTY.replace(':', "-"));
        assert_eq!(Digest::of_parts(&[b"ab", b"c"]), Digest::of(b"abc"));
    }

    #[test]
    fn malformed_digests_are_refused_by_name() {
        type Case = (&'static str, fn(String) -> DigestError);
        let cases: [Case; 6] = [
            ("e3b0", DigestError::NoAlgorithm),
            ("sha512:00", DigestError::Algorithm),
            ("SHA256:00", DigestError::Algorithm),
            ("sha256:abc", DigestError::Length),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                DigestError::NotHex,
            ),
            (
                "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                DigestError::NotHex,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Digest::parse(text), Err(want(text.to_string())), "{text}");
            assert!(!Digest::is_valid(text));
        }
        assert_eq!(
            Digest::parse("sha512:00").unwrap_err().to_string(),
            "digest \"sha512:00\": only sha256 digests are supported"
        );
    }

    #[test]
    fn serde_is_the_prefixed_string() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn bare_hex_serde_and_ascii() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Line {
            #[serde(with = "super::sha256_hex")]
            sha256: Digest,
        }
        let d = Digest::of(b"x");
        assert_eq!(d.hex_ascii().as_slice(), d.hex().as_bytes());
        let json = serde_json::to_string(&Line { sha256: d }).unwrap();
        assert_eq!(json, format!("{{\"sha256\":\"{}\"}}", d.hex()));
        assert_eq!(
            serde_json::from_str::<Line>(&json).unwrap(),
            Line { sha256: d }
        );
        for bad in [
            format!("sha256:{}", d.hex()),
            d.hex().to_uppercase(),
            "ab".into(),
        ] {
            let text = format!("{{\"sha256\":\"{bad}\"}}");
            assert!(serde_json::from_str::<Line>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn hasher_counts_bytes() {
        let mut h = Hasher::new();
        assert!(h.is_empty());
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.len(), 3);
        assert_eq!(h.finish(), Digest::of(b"abc"));
    }

    /// The `sha2` state gives aws-lc's digests (the hasher's engine before), at every length
    /// around the 64-byte block and its padding limit, fed whole or in pieces.
    #[test]
    fn hasher_agrees_with_aws_lc() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let mut lens: Vec<usize> = (0..=300).collect();
        lens.extend([511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 5000]);
        for len in lens {
            let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data[..len]);
            assert_eq!(Digest::of(&data[..len]).as_bytes(), want.as_ref(), "{len}");
            for step in [1, 3, 55, 64, 65] {
                let mut h = Hasher::new();
                for part in data[..len].chunks(step) {
                    h.update(part);
                }
                assert_eq!(h.len(), len as u64);
                assert_eq!(h.finish().as_bytes(), want.as_ref(), "{len} by {step}");
            }
        }
    }

    #[test]
    fn hashing_writer_passes_on_and_hashes_what_was_written() {
        use std::io::Write as _;
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        w.flush().unwrap();
        assert_eq!(w.inner, b"hello world");
        assert_eq!(w.hasher.len(), 11);
        assert_eq!(w.hasher.finish(), Digest::of(b"hello world"));
    }
}
