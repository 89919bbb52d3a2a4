//! `mirror verify-checksums` (`verify::verify_checksums`): every line `<sha256>  <path>` with
//! a bundle path, no path twice, every listed file present with its digest, no content file
//! unlisted.
//!
//! `SHA256SUMS` is read one of two ways into a [`Listed`] index (an arena of paths and one
//! fixed-size record per file, sorted, so a path is found by binary search): up to
//! [`crate::MAX_METADATA_BYTES`] whole, in any line order; above it (a bundle of about 300,000
//! files and more) a line at a time, with memory independent of the file count but for the
//! index — and then it must be sorted by path, as `stella mirror create` writes it and the
//! spec requires (an unsorted one is refused on its first line out of order). Both share the
//! line parser, the verdicts and their wording, and one content stage: the folder walked once
//! without building a list of it, the listed files found hashed on the hashing threads in
//! batches.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;

use crate::error::{Error, Field, IoContext as _, Result};
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

/// The files `SHA256SUMS` lists, sorted by path: the paths in one arena, a record each.
#[derive(Default)]
struct Listed {
    arena: Vec<u8>,
    /// (start in the arena, length, digest).
    recs: Vec<(usize, usize, Digest)>,
}

impl Listed {
    fn path(&self, i: usize) -> &str {
        self.recs
            .get(i)
            .and_then(|&(s, l, _)| self.arena.get(s..s.saturating_add(l)))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// Add `path` after the paths already in (the caller keeps the order).
    fn push(&mut self, path: &str, d: Digest) {
        self.recs.push((self.arena.len(), path.len(), d));
        self.arena.extend_from_slice(path.as_bytes());
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.recs
            .binary_search_by(|&(s, l, _)| {
                self.arena
                    .get(s..s.saturating_add(l))
                    .unwrap_or_default()
                    .cmp(path.as_bytes())
            })
            .ok()
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

/// `path` appears twice.
fn twice(i: usize, path: &str) -> Error {
    Error::checksums(sums_line(i), format!("SHA256SUMS lists {path} twice"))
}

/// Line `i` into `listed`, after the paths before it; "not in path order" for a path before
/// the previous one.
fn push_line(listed: &mut Listed, i: usize, line: &str) -> Result<()> {
    let (d, path) = parse_line(i, line)?;
    if let Some(last) = listed.recs.len().checked_sub(1) {
        match listed.path(last).as_bytes().cmp(path.as_bytes()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Err(twice(i, path)),
            std::cmp::Ordering::Greater => {
                return Err(Error::checksums(
                    sums_line(i),
                    format!(
                        "SHA256SUMS line {}: {path} is not in path order; a SHA256SUMS above \
                         {} bytes is checked as a stream and must be sorted by path, as \
                         `stella mirror create` writes it",
                        i + 1,
                        crate::MAX_METADATA_BYTES
                    ),
                ))
            }
        }
    }
    listed.push(path, d);
    Ok(())
}

/// The problems found, in the order both checks report them: unlisted, missing, changed.
fn failed(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::checksums(
            Field::Content,
            format!("SHA256SUMS check failed: {}", problems.join("; ")),
        ))
    }
}

/// `SHA256SUMS` in memory (at most [`crate::MAX_METADATA_BYTES`]), in any line order.
pub(crate) fn verify_checksums_in_memory(
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    let sums = crate::fs::read_metadata_file(dir, names::SUMS)?
        .ok_or_else(|| Error::NotFound(dir.join(names::SUMS)))?;
    let text = std::str::from_utf8(&sums)
        .map_err(|_| Error::checksums(Field::file(names::SUMS), "SHA256SUMS is not UTF-8 text"))?;
    let mut listed: BTreeMap<String, Digest> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (d, path) = parse_line(i, line)?;
        if listed.insert(path.to_string(), d).is_some() {
            return Err(twice(i, path));
        }
    }
    let mut index = Listed::default();
    for (path, d) in listed {
        index.push(path.as_str(), d);
    }
    check_content(dir, &index, progress)
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
pub(crate) fn verify_checksums_streamed(
    dir: &Path,
    max_sums: u64,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    let (file, _, path) = crate::streamed::open_meta(dir, names::SUMS, Some(max_sums))?
        .ok_or_else(|| Error::NotFound(dir.join(names::SUMS)))?;
    let mut listed = Listed::default();
    let mut r = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    // The first bad line; the rest is still read for UTF-8, which the in-memory check tests
    // first, over the whole file: the same verdict for the same file.
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
            bad_line = push_line(&mut listed, i, text).err();
        }
    }
    drop((r, line));
    if let Some(e) = bad_line {
        return Err(e);
    }
    listed.arena.shrink_to_fit();
    listed.recs.shrink_to_fit();
    check_content(dir, &listed, progress)
}

/// Both checks' content stage: the folder walked once, each content file listed (then hashed
/// on the hashing threads, [`BATCH`] at a time) or unlisted; the problems in the order both
/// report them — unlisted, missing, changed, each by path.
fn check_content(dir: &Path, listed: &Listed, progress: &dyn Progress) -> Result<(usize, u64)> {
    // The walk: each content file listed (and then queued for hashing) or unlisted.
    let mut seen = vec![false; listed.recs.len()];
    let mut unlisted = Vec::new();
    let mut changed_files = Vec::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut queue: Vec<usize> = Vec::with_capacity(BATCH.min(listed.recs.len()));
    progress.start("verify-checksums", 0);
    let mut hash_queued = |queue: &mut Vec<usize>, changed_files: &mut Vec<(usize, Digest)>| {
        let batch: Vec<(&str, u64)> = queue.iter().map(|&i| (listed.path(i), 0)).collect();
        let hashed = crate::hash::hash_tree(dir, &batch, progress)?;
        for (&i, (got, n)) in queue.iter().zip(hashed) {
            if listed.recs.get(i).is_some_and(|r| r.2 != got) {
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

    // The problems in the in-memory check's order: unlisted, missing, changed (each by path).
    unlisted.sort();
    changed_files.sort_by_key(|&(i, _)| i);
    let mut problems: Vec<String> = unlisted
        .iter()
        .map(|p| format!("unlisted file {p}"))
        .collect();
    problems.extend(
        seen.iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| format!("file {} is missing", listed.path(i))),
    );
    problems.extend(
        changed_files
            .iter()
            .filter_map(|(i, got)| Some(changed(listed.path(*i), got, &listed.recs.get(*i)?.2))),
    );
    failed(problems)?;
    Ok((files, bytes))
}
