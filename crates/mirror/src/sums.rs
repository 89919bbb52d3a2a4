//! `mirror verify-checksums` (`verify::verify_checksums`): every line `<sha256>  <path>` with
//! a bundle path, no path twice, every listed file present with its digest, no content file
//! unlisted.
//!
//! `SHA256SUMS` is read a line at a time into a [`Listed`] index (an arena of paths and one
//! fixed-size record per file, sorted once at the end, so a path is found by binary search):
//! memory grows with the file count only by the index, whatever the file's size (up to
//! [`crate::streamed::Limits::max_sums`]), and the lines may come in any order — `sha256sum
//! -c` takes them so, and so did this check when it read the file whole (until session 12, a
//! file above 32 MiB had to be sorted). Then one content stage: the folder walked once without
//! building a list of it, the listed files found hashed on the hashing threads in batches.

use std::io::BufRead as _;
use std::path::Path;

use crate::error::{
    missing_problem, Error, Field, IoContext as _, Result, Smallest, NAMED_PROBLEMS,
};
use crate::hash::{Digest, Progress};
use crate::names;

/// Line `i` (0-based) of `SHA256SUMS`.
pub(crate) fn sums_line(i: usize) -> Field {
    Field::Line {
        file: names::SUMS,
        line: i + 1,
    }
}

/// Files handed to the hashing threads at once: bounds the list and its results in memory.
const BATCH: usize = 1 << 16;

/// The files `SHA256SUMS` lists: the paths in one arena, a record each; sorted by path (then
/// line) by [`Listed::sort`] before any lookup.
#[derive(Default)]
struct Listed {
    arena: Vec<u8>,
    recs: Vec<Rec>,
}

/// One line of `SHA256SUMS`: its path (in the arena), its 0-based line number, its digest.
struct Rec {
    start: usize,
    len: u32,
    line: u32,
    digest: Digest,
}

impl Listed {
    fn path_of(&self, r: &Rec) -> &[u8] {
        self.arena
            .get(r.start..r.start.saturating_add(r.len as usize))
            .unwrap_or_default()
    }

    fn path(&self, i: usize) -> &str {
        self.recs
            .get(i)
            .and_then(|r| std::str::from_utf8(self.path_of(r)).ok())
            .unwrap_or_default()
    }

    /// Add `path`, read on line `line`.
    fn push(&mut self, line: usize, path: &str, digest: Digest) {
        self.recs.push(Rec {
            start: self.arena.len(),
            // Both fit: a path is at most one line of a file below 16 GiB, and such a file
            // has fewer than 2^32 lines that hold a path and a digest.
            len: u32::try_from(path.len()).unwrap_or(u32::MAX),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            digest,
        });
        self.arena.extend_from_slice(path.as_bytes());
    }

    /// Sort by path (a sorted file costs one pass), and the first line that repeats a path of
    /// a line before it, as reading the lines in order would find it — for each path listed
    /// more than once its second line, the smallest of those: (that line, the path's first
    /// line, the path).
    fn sort(&mut self) -> Option<(usize, usize, &str)> {
        let mut recs = std::mem::take(&mut self.recs);
        recs.sort_unstable_by(|a, b| {
            self.path_of(a)
                .cmp(self.path_of(b))
                .then(a.line.cmp(&b.line))
        });
        self.recs = recs;
        self.recs
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if self.path_of(a) == self.path_of(b) => Some((a, b)),
                _ => None,
            })
            .min_by_key(|(_, b)| b.line)
            .map(|(a, b)| {
                let path = std::str::from_utf8(self.path_of(b)).unwrap_or_default();
                (b.line as usize, a.line as usize, path)
            })
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.recs
            .binary_search_by(|r| self.path_of(r).cmp(path.as_bytes()))
            .ok()
    }

    fn digest(&self, i: usize) -> Option<&Digest> {
        self.recs.get(i).map(|r| &r.digest)
    }
}

/// Line `i` of `SHA256SUMS` (its text without the line end): its digest and path.
fn parse_line(i: usize, line: &str) -> Result<(Digest, &str)> {
    let (hex, path) = line.split_once("  ").ok_or_else(|| {
        Error::checksums(
            sums_line(i),
            format!("SHA256SUMS line {}: not `<sha256>  <path>`", i + 1),
        )
    })?;
    let d = crate::hash::parse_hex(hex).ok_or_else(|| {
        Error::checksums(
            sums_line(i),
            format!("SHA256SUMS line {}: malformed digest", i + 1),
        )
    })?;
    crate::BundlePath::new(path)
        .map_err(|e| Error::checksums(sums_line(i), format!("SHA256SUMS line {}: {e}", i + 1)))?;
    Ok((d, path))
}

/// `path` appears on line `i` and, before, on line `first`.
fn twice(i: usize, first: usize, path: &str) -> Error {
    Error::checksums(
        sums_line(i),
        format!(
            "SHA256SUMS lists {path} twice (lines {} and {})",
            first + 1,
            i + 1
        ),
    )
}

/// The problems found, in their order — unlisted, missing, changed — the first
/// [`NAMED_PROBLEMS`] by text, and `count` of them in all.
fn failed(count: usize, named: impl IntoIterator<Item = String>) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let named: Vec<String> = named.into_iter().take(NAMED_PROBLEMS).collect();
    let mut msg = format!("SHA256SUMS check failed: {}", named.join("; "));
    if count > named.len() {
        msg.push_str(&format!("; and {} more", count - named.len()));
    }
    Err(Error::checksums(Field::Content, msg))
}

/// The problem of a file whose digest is `got`, listed with `want`.
fn changed(path: &str, got: &Digest, want: &Digest) -> String {
    format!(
        "file {path} changed: sha256:{} != sha256:{}",
        got.hex(),
        want.hex()
    )
}

/// See the module documentation: `dir/SHA256SUMS` of at most `max_sums` bytes.
pub(crate) fn verify_checksums(
    dir: &Path,
    max_sums: u64,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    let (file, len, path) = crate::streamed::open_meta(dir, names::SUMS, Some(max_sums))?
        .ok_or_else(|| Error::NotFound(dir.join(names::SUMS)))?;
    let mut listed = Listed::default();
    // Read up to the size checked against `max_sums`: lines appended meanwhile (by another
    // writer of the folder) never grow the index.
    let mut r = std::io::BufReader::with_capacity(256 * 1024, std::io::Read::take(file, len));
    let mut line = Vec::new();
    // The first bad line; the rest is still read, for UTF-8 (a file that is not text is
    // refused as such, wherever its first bad line is) and for nothing else: the lines after
    // it are not kept.
    let mut bad_line = None;
    for i in 0.. {
        line.clear();
        if r.read_until(b'\n', &mut line).at(&path)? == 0 {
            break;
        }
        // As `str::lines`: the line end is `\n` or `\r\n` (a `\r` without `\n` after it,
        // at the end of the file, stays part of the line).
        let text = match line.strip_suffix(b"\n") {
            Some(t) => t.strip_suffix(b"\r").unwrap_or(t),
            None => &line,
        };
        let text = std::str::from_utf8(text).map_err(|_| {
            Error::checksums(Field::file(names::SUMS), "SHA256SUMS is not UTF-8 text")
        })?;
        if bad_line.is_none() {
            match parse_line(i, text) {
                Ok((d, p)) => listed.push(i, p, d),
                Err(e) => bad_line = Some(e),
            }
        }
    }
    drop((r, line));
    // A path repeated is reported at its second line; every line kept comes before the
    // first bad one, so a repeat is the first problem in line order if there is one.
    if let Some((i, first, p)) = listed.sort() {
        return Err(twice(i, first, p));
    }
    if let Some(e) = bad_line {
        return Err(e);
    }
    listed.arena.shrink_to_fit();
    listed.recs.shrink_to_fit();
    check_content(dir, &listed, progress)
}

/// The content stage: the folder walked once, each content file listed (then hashed
/// on the hashing threads, [`BATCH`] at a time) or unlisted; the problems in the order
/// reported — unlisted, missing, changed, each by path.
fn check_content(dir: &Path, listed: &Listed, progress: &dyn Progress) -> Result<(usize, u64)> {
    // The walk: each content file listed (and then queued for hashing) or unlisted.
    let mut seen = vec![false; listed.recs.len()];
    let mut unlisted = Smallest::new();
    let mut changed_files = Smallest::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut queue: Vec<usize> = Vec::with_capacity(BATCH.min(listed.recs.len()));
    progress.start("verify-checksums", 0);
    let mut hash_queued =
        |queue: &mut Vec<usize>, changed_files: &mut Smallest<(usize, Digest)>| {
            // No sizes listed: read to the end, as `sha256sum -c` reads.
            let batch: Vec<(&str, crate::hash::End)> = queue
                .iter()
                .map(|&i| (listed.path(i), crate::hash::End::Zero))
                .collect();
            let hashed = crate::hash::hash_tree(dir, &batch, progress)?;
            for (&i, h) in queue.iter().zip(hashed) {
                let (got, n) = (h.digest, h.size);
                if listed.digest(i).is_some_and(|d| *d != got) {
                    changed_files.push((i, got));
                }
                files += 1;
                bytes += n;
            }
            queue.clear();
            Ok::<_, Error>(())
        };
    let walked = crate::fs::walk_each(dir, &mut |rel| {
        if names::is_metadata(rel) {
            return Ok(());
        }
        match listed.find(rel) {
            Some(i) => {
                if let Some(s) = seen.get_mut(i) {
                    *s = true;
                }
                queue.push(i);
                if queue.len() >= BATCH {
                    hash_queued(&mut queue, &mut changed_files)?;
                }
            }
            None => unlisted.push(rel.to_string()),
        }
        Ok(())
    });
    let walked = walked.and_then(|()| hash_queued(&mut queue, &mut changed_files));
    progress.finish();
    walked?;

    // The problems in their order: unlisted, missing, changed (each by path).
    let missing = seen.iter().filter(|s| !**s).count();
    let count = unlisted.count + missing + changed_files.count;
    let named = (unlisted.sorted().into_iter())
        .map(|p| format!("unlisted file {p}"))
        .chain(
            seen.iter()
                .enumerate()
                .filter(|(_, s)| !**s)
                .map(|(i, _)| missing_problem(listed.path(i))),
        )
        .chain(
            changed_files
                .sorted()
                .into_iter()
                .filter_map(|(i, got)| Some(changed(listed.path(i), &got, listed.digest(i)?))),
        );
    failed(count, named)?;
    Ok((files, bytes))
}
