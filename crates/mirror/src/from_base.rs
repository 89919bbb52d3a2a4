//! The listed files of a thin bundle that its base carries, as verification reports them.

/// The listed files a thin bundle does not carry (they come from its base), in manifest
/// order, front-coded as the file index codes its paths: a thin update of a 1,000,000-file
/// bundle lists nearly every file here — ~42 MB in the GHSA layout, against ~92 MB as whole
/// paths one after another (and twice that for a moment while such a buffer grows) — and
/// that list is alive while `apply` and thin `sign` hold their file index.
#[derive(Debug, Clone, Default)]
pub struct FromBase(SortedPaths);

/// Paths one after another in one buffer, each found by where it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Paths {
    text: String,
    ends: Vec<usize>,
}

impl Paths {
    /// Room for `paths` paths of `bytes` in all.
    pub(crate) fn with_capacity(paths: usize, bytes: usize) -> Self {
        Paths {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(paths),
        }
    }

    pub(crate) fn push(&mut self, path: &str) {
        self.text.push_str(path);
        self.ends.push(self.text.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `i`-th path.
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1],
        };
        self.text.get(start..end)
    }

    /// The paths, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        (starts.zip(&self.ends)).map(|(a, &b)| self.text.get(a..b).unwrap_or_default())
    }

    /// Empty, keeping the room.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
}

impl FromBase {
    /// Add the next path (in manifest order: each above the one before).
    pub(crate) fn push(&mut self, path: &str) {
        self.0.push(path);
    }

    /// Give back the growth slack once the list is complete.
    pub(crate) fn done(self) -> Self {
        FromBase(self.0.done())
    }

    /// How many files come from the base.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The `i`-th such file, in manifest order.
    pub fn get(&self, i: usize) -> Option<String> {
        let mut buf = Vec::new();
        self.0.decode_into(i, &mut buf);
        (i < self.len())
            .then(|| String::from_utf8(buf).ok())
            .flatten()
    }

    /// The files, in manifest order.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        let mut c = self.0.cursor();
        std::iter::from_fn(move || c.next_path().map(str::to_string))
    }

    /// Is `path` one of them? (A lookup in the sorted list: `unpack` asks of every
    /// `scripts/*.sh`, which a bundle may list by the thousand.)
    pub fn contains(&self, path: &str) -> bool {
        self.0.find(path).is_some()
    }
}

impl PartialEq for FromBase {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for FromBase {}

/// Paths in increasing byte order (a manifest's), front-coded: each entry is the length of
/// the prefix it shares with the one before, the length of the rest, then the rest; every
/// [`BLOCK`]-th entry shares nothing and starts a block. Advisory paths of one feed share most
/// of their bytes, so 1,000,000 of them (~41 MB as text) take ~13 MB here. Read back in order
/// ([`SortedPaths::cursor`], into one reused buffer) or looked up ([`SortedPaths::find`]:
/// a binary search over the blocks' first paths, then at most one block compared in place).
#[derive(Debug, Clone, Default)]
pub(crate) struct SortedPaths {
    /// The encoded entries: `varint(shared) varint(rest length) rest`.
    text: Vec<u8>,
    /// Where each block's first entry starts in `text`.
    blocks: Vec<usize>,
    len: usize,
    /// The last path pushed (the next is coded against it).
    last: Vec<u8>,
}

/// Entries per block of [`SortedPaths`].
pub(crate) const BLOCK: usize = 16;

impl SortedPaths {
    /// Add the next path: above the last one, for [`find`](Self::find) to find it (a
    /// [`FileIndex`](crate::FileIndex) and a manifest list them so).
    pub(crate) fn push(&mut self, path: &str) {
        let path = path.as_bytes();
        let shared = if self.len.is_multiple_of(BLOCK) {
            self.blocks.push(self.text.len());
            0
        } else {
            common_prefix(&self.last, path)
        };
        put_varint(&mut self.text, shared);
        put_varint(&mut self.text, path.len() - shared);
        self.text.extend_from_slice(&path[shared..]);
        self.last.clear();
        self.last.extend_from_slice(path);
        self.len += 1;
    }

    /// Give back the growth slack once the list is complete.
    pub(crate) fn done(mut self) -> Self {
        self.shrink_to_fit();
        self.last = Vec::new();
        self
    }

    /// Give back the growth slack, keeping the last path (more may be pushed).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.blocks.shrink_to_fit();
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The last path pushed (until [`done`](Self::done)).
    pub(crate) fn last(&self) -> Option<&str> {
        (self.len > 0)
            .then(|| std::str::from_utf8(&self.last).ok())
            .flatten()
    }

    /// Bytes of the coded text (for tests and the docs' bytes-per-file figures).
    #[cfg(test)]
    pub(crate) fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// The entry at `pos` of `text`: (shared prefix length, rest, where the next starts).
    fn entry(&self, pos: usize) -> (usize, &[u8], usize) {
        let (shared, pos) = get_varint(&self.text, pos);
        let (len, pos) = get_varint(&self.text, pos);
        let end = pos.saturating_add(len).min(self.text.len());
        (shared, &self.text[pos.min(end)..end], end)
    }

    /// The position of `path`, if listed. No allocation: the entries of the one block that
    /// can hold it are compared in place, keeping how much of `path` the previous entry
    /// matched (strictly increasing entries: one that shares more with its predecessor than
    /// that predecessor shared with `path` is still below `path`; one that shares less is
    /// above it, and so is every later one).
    pub(crate) fn find(&self, path: &str) -> Option<usize> {
        match self.seek(path.as_bytes()) {
            (i, true) => Some(i),
            _ => None,
        }
    }

    /// The position of the first path not below `key` in byte order (`len` when all are).
    pub(crate) fn lower_bound(&self, key: &[u8]) -> usize {
        self.seek(key).0
    }

    /// The position of the first path not below `want`, and whether it is `want` ([`find`]
    /// and [`lower_bound`] without an allocation).
    fn seek(&self, want: &[u8]) -> (usize, bool) {
        let Some(block) = self
            .blocks
            .partition_point(|&pos| self.entry(pos).1 <= want)
            .checked_sub(1)
        else {
            return (0, false);
        };
        let mut pos = self.blocks[block];
        // `want[..matched]` is the previous entry's prefix, and that entry is below `want`.
        let mut matched = 0usize;
        let first = block * BLOCK;
        let end = (first + BLOCK).min(self.len);
        for i in first..end {
            let (shared, rest, next) = self.entry(pos);
            pos = next;
            if shared > matched {
                continue;
            }
            if shared < matched {
                return (i, false);
            }
            let tail = &want[matched..];
            let same = common_prefix(rest, tail);
            if same == rest.len() && same == tail.len() {
                return (i, true);
            }
            // Below `want` when it ends first (a prefix of it) or its next byte is lower.
            let below = same == rest.len() || (same < tail.len() && rest[same] < tail[same]);
            if !below {
                return (i, false);
            }
            matched += same;
        }
        (end, false)
    }

    /// The paths in order, decoded one at a time into one buffer.
    pub(crate) fn cursor(&self) -> PathCursor<'_> {
        self.cursor_at(0)
    }

    /// The paths from the `i`-th on, in order (decoded from the start of its block).
    pub(crate) fn cursor_at(&self, i: usize) -> PathCursor<'_> {
        let i = i.min(self.len);
        let block = i / BLOCK;
        let mut c = PathCursor {
            paths: self,
            pos: self.blocks.get(block).copied().unwrap_or(self.text.len()),
            index: block * BLOCK,
            path: String::new(),
        };
        while c.index < i {
            c.next_path();
        }
        c
    }

    /// Decode the `i`-th path into `out` (its bytes; `false`, `out` empty, past the end).
    pub(crate) fn decode_into(&self, i: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        if i >= self.len {
            return false;
        }
        let block = i / BLOCK;
        let Some(&start) = self.blocks.get(block) else {
            return false;
        };
        let mut pos = start;
        for _ in block * BLOCK..=i {
            let (shared, rest, next) = self.entry(pos);
            out.truncate(shared);
            out.extend_from_slice(rest);
            pos = next;
        }
        true
    }

    /// Heap bytes held (coded text and block starts).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.blocks.capacity() * std::mem::size_of::<usize>()
    }

    /// Room for about `bytes` more bytes of coded text.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.text.reserve(bytes);
    }
}

/// Reads a [`SortedPaths`] in order (see [`SortedPaths::cursor`]).
pub(crate) struct PathCursor<'a> {
    paths: &'a SortedPaths,
    pos: usize,
    index: usize,
    path: String,
}

impl PathCursor<'_> {
    /// The position of the path [`next_path`](Self::next_path) gives next.
    pub(crate) fn position(&self) -> usize {
        self.index
    }

    /// The next path (`None` at the end).
    pub(crate) fn next_path(&mut self) -> Option<&str> {
        if self.index >= self.paths.len {
            return None;
        }
        let (shared, rest, next) = self.paths.entry(self.pos);
        self.pos = next;
        self.index += 1;
        // The bytes are exactly those of a path pushed (a `&str`): never "".
        let mut bytes = std::mem::take(&mut self.path).into_bytes();
        bytes.truncate(shared);
        bytes.extend_from_slice(rest);
        self.path = String::from_utf8(bytes).unwrap_or_default();
        Some(&self.path)
    }
}

/// How many bytes `a` and `b` start with alike.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// LEB128.
fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The LEB128 number at `pos` and where it ends (what [`put_varint`] wrote; 0 past the end).
fn get_varint(buf: &[u8], mut pos: usize) -> (usize, usize) {
    let mut v = 0usize;
    let mut shift = 0u32;
    while let Some(&b) = buf.get(pos) {
        pos += 1;
        if shift < usize::BITS {
            v |= usize::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    (v, pos)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A path in the GitHub advisory database's layout (~86 bytes; ids spread like hashes,
    /// so neighbours in path order share little past `…/GHSA-`).
    pub(crate) fn ghsa_path(i: usize) -> String {
        let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let id: String = (0..12)
            .map(|k| char::from(b"23456789cfghjmpqrvwx"[((h >> (k * 5)) % 20) as usize]))
            .collect();
        let id = format!("GHSA-{}-{}-{}", &id[..4], &id[4..8], &id[8..]);
        format!(
            "advisories/feeds/github-reviewed/{}/{:02}/{id}/{id}.json",
            2017 + i % 9,
            1 + i % 12
        )
    }

    /// A thin update of a GHSA-layout bundle lists nearly every path as coming from the base:
    /// the list keeps them front-coded, under half of their text.
    #[test]
    fn from_base_keeps_ghsa_paths_in_under_half_their_text() {
        let mut paths: Vec<String> = (0..50_000).map(ghsa_path).collect();
        paths.sort();
        paths.dedup();
        let mut fb = FromBase::default();
        for p in &paths {
            fb.push(p);
        }
        let fb = fb.done();
        let text: usize = paths.iter().map(String::len).sum();
        assert!(
            fb.0.heap_bytes() * 2 < text,
            "{} of {text}",
            fb.0.heap_bytes()
        );
        assert!(fb.iter().eq(paths.iter().cloned()));
        assert!(paths.iter().step_by(97).all(|p| fb.contains(p)));
    }

    #[test]
    fn sorted_paths_read_back_in_order_and_are_found() {
        let mut paths: Vec<String> = vec![
            "a".into(),
            "a.json".into(),
            "advisories/è".into(),
            "advisories/é".into(),
            "advisories/é/x".into(),
            format!("long/{}/{}", "n".repeat(150), "m".repeat(90)),
        ];
        for i in 0..100 {
            paths.push(format!("b/{:03}/f-{i}.json", i % 7));
        }
        paths.sort();
        let mut sp = SortedPaths::default();
        for p in &paths {
            sp.push(p);
        }
        let sp = sp.done();
        assert_eq!(sp.len(), paths.len());
        assert!(sp.text_bytes() < paths.iter().map(String::len).sum::<usize>());
        let mut c = sp.cursor();
        let mut back = Vec::new();
        while let Some(p) = c.next_path() {
            back.push(p.to_string());
        }
        assert_eq!(back, paths);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(sp.find(p), Some(i), "{p}");
        }
        for q in [
            "",
            "a.j",
            "advisories/ê",
            "advisories/é/",
            "b/000/f-0.jso",
            "zz",
        ] {
            assert_eq!(sp.find(q), None, "{q}");
        }
        assert_eq!(SortedPaths::default().cursor().next_path(), None);
        assert_eq!(SortedPaths::default().find("a"), None);
    }

    #[test]
    fn varints_read_back() {
        let mut buf = Vec::new();
        let values = [0usize, 1, 127, 128, 300, 16_383, 16_384, usize::MAX];
        for v in values {
            put_varint(&mut buf, v);
        }
        let mut pos = 0;
        for v in values {
            let (got, next) = get_varint(&buf, pos);
            assert_eq!(got, v);
            pos = next;
        }
        assert_eq!(pos, buf.len());
        assert_eq!(get_varint(&buf, buf.len()), (0, buf.len()));
    }

    #[test]
    fn from_base_keeps_every_path_in_order_and_answers_membership() {
        let empty = FromBase::default();
        assert!(empty.is_empty() && empty.get(0).is_none() && !empty.contains(""));
        // In manifest order, as every list is built.
        let paths = [
            "",
            "advisories/a.json",
            "advisories/ü/b.json",
            "scripts/load.sh",
        ];
        let mut fb = FromBase::default();
        for p in paths {
            fb.push(p);
        }
        let fb = fb.done();
        assert_eq!(fb.len(), 4);
        assert_eq!(fb.iter().collect::<Vec<_>>(), paths);
        assert_eq!(fb.get(2).as_deref(), Some("advisories/ü/b.json"));
        assert_eq!(fb.get(4), None);
        assert!(fb.contains("scripts/load.sh") && fb.contains(""));
        // Whole paths only: a prefix or two neighbours run together are not members.
        assert!(!fb.contains("scripts/load") && !fb.contains("advisories/a.jsonadvisories"));
        // Membership by search agrees with a scan, for lists of every length up to 40.
        let all: Vec<String> = (0..40).map(|i| format!("scripts/s{i:02}.sh")).collect();
        for n in 0..=all.len() {
            let mut fb = FromBase::default();
            for p in all.iter().take(n).step_by(2) {
                fb.push(p);
            }
            for p in all.iter().map(String::as_str).chain(["", "scripts/", "z"]) {
                assert_eq!(fb.contains(p), fb.iter().any(|q| q == p), "{n} {p}");
            }
        }
    }
}
