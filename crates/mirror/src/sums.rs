//! `mirror verify-checksums` (`verify::verify_checksums`): every line `<sha256>  <path>` with
//! a bundle path, no path twice, every listed file present with its digest, no content file
//! unlisted.
//!
//! `SHA256SUMS` is read a line at a time into a [`Listed`] list — sorted runs of front-coded
//! paths with a 44-byte record each ([`SortedRuns`]; a sorted file, as `sign` writes it, is
//! one run: ~86 B per line in the GHSA layout, where whole paths with fixed records took
//! ~140 B and twice the paths' buffer while it grew): memory grows with the file count only
//! by that list, whatever the file's size (up to [`crate::streamed::Limits::max_sums`]), and
//! the lines may come in any order — `sha256sum -c` takes them so, and so did this check when
//! it read the file whole (until session 12, a file above 32 MiB had to be sorted). Then one
//! content stage: the folder walked once in path order ([`crate::fs::walk_sorted_each`])
//! beside the list read in path order, without building a list of the folder; the listed
//! files found are hashed on the hashing threads in batches.

use std::io::BufRead as _;
use std::path::Path;

use crate::error::{
    missing_problem, Error, Field, IoContext as _, Result, Smallest, NAMED_PROBLEMS,
};
use crate::hash::{Digest, Progress};
use crate::names;
use crate::runs::SortedRuns;

/// Line `i` (0-based) of `SHA256SUMS`.
pub(crate) fn sums_line(i: usize) -> Field {
    Field::Line {
        file: names::SUMS,
        line: i + 1,
    }
}

/// Files handed to the hashing threads at once: bounds the list and its results in memory.
const BATCH: usize = 1 << 16;

/// The files `SHA256SUMS` lists, as sorted runs ([`SortedRuns`]: front-coded paths, 57–86 B a
/// file; a sorted file is one run): each line's path and digest, and — in the record's size
/// field, since `SHA256SUMS` lists no sizes — its 0-based line number. Lines are taken in
/// chunks of [`CHUNK`], each sorted and added as at most one run, so lines in any order cost
/// a sort each chunk rather than a run for every line out of order. Of a path listed more
/// than once only its first line is kept; the repeat that reading the lines in order would
/// meet first is remembered.
#[derive(Default)]
struct Listed {
    runs: SortedRuns,
    /// For each path listed more than once its second line, the smallest of those: (that
    /// line, the path's first line, the path).
    repeat: Option<(u64, u64, String)>,
    /// Lines read, not yet in `runs`: their paths, and each line.
    paths: crate::from_base::Paths,
    chunk: Vec<ChunkLine>,
}

/// A line of [`Listed`]'s chunk: its path's place in the chunk's paths, its number, its
/// digest.
struct ChunkLine {
    at: usize,
    line: u64,
    sha256: [u8; 32],
}

/// Lines sorted at once before they join the runs (a few MB).
const CHUNK: usize = 1 << 16;

impl Listed {
    /// Add `path`, read on line `line`.
    fn push(&mut self, line: usize, path: &str, digest: Digest) -> Result<()> {
        self.chunk.push(ChunkLine {
            at: self.paths.len(),
            line: line as u64,
            sha256: *digest.as_bytes(),
        });
        self.paths.push(path);
        if self.chunk.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// The lines of the chunk into the runs, in path order (a stable sort: a path's lines
    /// stay in line order, so its first is kept and each later one is a repeat of it).
    fn flush(&mut self) -> Result<()> {
        let Listed {
            runs,
            repeat,
            paths,
            chunk,
        } = self;
        let path = |l: &ChunkLine| paths.get(l.at).unwrap_or("");
        chunk.sort_by(|x, y| path(x).cmp(path(y)));
        let mut kept: Option<&ChunkLine> = None;
        for l in chunk.iter() {
            if let Some(k) = kept.filter(|k| path(k) == path(l)) {
                note_repeat(repeat, k.line, l.line, path(l));
                continue;
            }
            kept = Some(l);
            runs.push(path(l), l.line, l.sha256, "", &mut |first, again| {
                note_repeat(repeat, first.size, again.size, again.path);
                Ok(())
            })?;
        }
        paths.clear();
        chunk.clear();
        Ok(())
    }

    /// The first line that repeats a path of a line before it, as reading the lines in order
    /// would find it: (that line, the path's first line, the path).
    /// (Called once every line is read: the last chunk joins the runs, and the list's growth
    /// slack is given back.)
    fn repeat(&mut self) -> Result<Option<(usize, usize, &str)>> {
        self.flush()?;
        self.paths = Default::default();
        self.chunk = Vec::new();
        let Listed { runs, repeat, .. } = self;
        runs.shrink_to_fit();
        runs.each_repeat(&mut |first, again| {
            note_repeat(repeat, first.size, again.size, again.path);
            Ok(())
        })?;
        Ok(self
            .repeat
            .as_ref()
            .map(|(i, first, p)| (*i as usize, *first as usize, p.as_str())))
    }
}

/// Keep the repeat of `path` on lines `x` and `y` if it comes before the one kept. Each
/// later line of a path meets an earlier one of it once (in its chunk, or when runs are
/// merged or read; chunks and runs keep line order) and is dropped; the smallest line so met
/// is the path's second, and the smallest over all paths the first repeat in line order.
fn note_repeat(kept: &mut Option<(u64, u64, String)>, x: u64, y: u64, path: &str) {
    let (a, b) = (x.min(y), x.max(y));
    if kept.as_ref().is_none_or(|(line, _, _)| b < *line) {
        *kept = Some((b, a, path.to_string()));
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
                Ok((d, p)) => listed.push(i, p, d)?,
                Err(e) => bad_line = Some(e),
            }
        }
    }
    drop((r, line));
    // A path repeated is reported at its second line; every line kept comes before the
    // first bad one, so a repeat is the first problem in line order if there is one.
    if let Some((i, first, p)) = listed.repeat()? {
        return Err(twice(i, first, p));
    }
    if let Some(e) = bad_line {
        return Err(e);
    }
    check_content(dir, &listed.runs, progress)
}

/// The content stage: the folder walked once in path order beside the listed files (merged
/// from their runs, also in path order), each content file listed — then hashed on the
/// hashing threads, [`BATCH`] at a time — or unlisted, each listed file the walk passes
/// missing; the problems in the order reported — unlisted, missing, changed, each by path.
/// Memory: the list, one batch, and the first [`NAMED_PROBLEMS`] of each kind.
fn check_content(dir: &Path, listed: &SortedRuns, progress: &dyn Progress) -> Result<(usize, u64)> {
    let mut unlisted = Smallest::new();
    let mut missing = Smallest::new();
    let mut changed_files = Smallest::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut queue = Batch::default();
    progress.start("verify-checksums", 0);
    let mut hash_queued =
        |queue: &mut Batch, changed_files: &mut Smallest<(String, Digest, Digest)>| {
            // No sizes listed: read to the end, as `sha256sum -c` reads.
            let batch: Vec<(&str, crate::hash::End)> = queue
                .paths
                .iter()
                .map(|p| (p, crate::hash::End::Zero))
                .collect();
            let hashed = crate::hash::hash_tree(dir, &batch, progress)?;
            for ((path, want), h) in queue.paths.iter().zip(&queue.want).zip(hashed) {
                if *want != h.digest {
                    changed_files.push((path.to_string(), h.digest, *want));
                }
                files += 1;
                bytes += h.size;
            }
            queue.clear();
            Ok::<_, Error>(())
        };
    // The listed file the walk has reached: its path (copied out of the merge into one
    // buffer) and digest, `None` past the last.
    let mut list = listed.merged();
    let mut here = String::new();
    let mut next_listed = |here: &mut String| {
        list.next().map(|f| {
            here.clear();
            here.push_str(f.path);
            f.sha256
        })
    };
    let mut want = next_listed(&mut here);
    let walked = crate::fs::walk_sorted_each(dir, &mut |rel| {
        if names::is_metadata(rel) {
            return Ok(());
        }
        while want.is_some() && here.as_bytes() < rel.as_bytes() {
            missing.push(here.clone());
            want = next_listed(&mut here);
        }
        match want {
            Some(w) if here == rel => {
                queue.push(rel, w);
                want = next_listed(&mut here);
                if queue.paths.len() >= BATCH {
                    hash_queued(&mut queue, &mut changed_files)?;
                }
            }
            _ => unlisted.push(rel.to_string()),
        }
        Ok(())
    });
    let walked = walked.and_then(|()| hash_queued(&mut queue, &mut changed_files));
    progress.finish();
    walked?;
    while want.is_some() {
        missing.push(here.clone());
        want = next_listed(&mut here);
    }

    // The problems in their order: unlisted, missing, changed (each by path).
    let count = unlisted.count + missing.count + changed_files.count;
    let named = (unlisted.sorted().into_iter())
        .map(|p| format!("unlisted file {p}"))
        .chain(missing.sorted().into_iter().map(|p| missing_problem(&p)))
        .chain(
            changed_files
                .sorted()
                .into_iter()
                .map(|(p, got, want)| changed(&p, &got, &want)),
        );
    failed(count, named)?;
    Ok((files, bytes))
}

/// Files queued for hashing: their paths, and the digests listed for them.
#[derive(Default)]
struct Batch {
    paths: crate::from_base::Paths,
    want: Vec<Digest>,
}

impl Batch {
    fn push(&mut self, path: &str, want: Digest) {
        self.paths.push(path);
        self.want.push(want);
    }

    fn clear(&mut self) {
        self.paths.clear();
        self.want.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::from_base::tests::ghsa_path;

    /// Lines in any order, some paths two or three times: the repeat reported is the one
    /// reading the lines in order meets first (with that path's first line), and each path
    /// is kept once, with its first line's digest and number — wherever the copies fall
    /// among chunks and runs (one chunk, one run, runs merged as they come, runs left apart
    /// and read merged).
    #[test]
    fn repeats_are_found_as_reading_the_lines_in_order_would() {
        let mut rand = crate::runs::test_rng(0x2545_f491_4f6c_dd1du64);
        for round in 0..300 {
            let n = match round {
                0..=9 => round,
                // Beyond a chunk, and beyond MERGE_AT_MOST: runs left apart, repeats met
                // when they are read.
                10 | 12 => 70_000,
                11 | 13 => 200_000,
                _ => 1 + rand(400),
            };
            let distinct = (n / 2).max(1);
            let mut lines: Vec<usize> = (0..n).map(|i| i % distinct).collect();
            match round % 3 {
                // Sorted, each repeat right after its first line.
                0 => lines.sort_unstable(),
                // Shuffled.
                1 => {
                    for i in (1..n).rev() {
                        lines.swap(i, rand(i + 1));
                    }
                }
                // Sorted, a few lines moved.
                _ => {
                    lines.sort_unstable();
                    lines.dedup();
                    for _ in 0..3.min(lines.len()) {
                        let k = rand(lines.len());
                        lines.insert(rand(lines.len()), lines[k]);
                    }
                }
            }
            let digest = |line: usize| Digest::sha256([(line % 251) as u8; 32]);
            let mut listed = Listed::default();
            for (i, &p) in lines.iter().enumerate() {
                listed.push(i, &ghsa_path(p), digest(i)).unwrap();
            }
            // The reference: the lines read in order.
            let mut first_line = std::collections::HashMap::new();
            let mut want = None;
            for (i, &p) in lines.iter().enumerate() {
                match first_line.get(&p) {
                    Some(&f) => {
                        if want.is_none() {
                            want = Some((i, f, ghsa_path(p)));
                        }
                    }
                    None => {
                        first_line.insert(p, i);
                    }
                }
            }
            let got = listed
                .repeat()
                .unwrap()
                .map(|(i, f, p)| (i, f, p.to_string()));
            assert_eq!(got, want, "round {round}, n {n}");
            let mut kept: Vec<(String, usize)> = first_line
                .iter()
                .map(|(&p, &f)| (ghsa_path(p), f))
                .collect();
            kept.sort();
            let mut back = Vec::new();
            let mut files = listed.runs.merged();
            let mut prev: Option<String> = None;
            while let Some(f) = files.next() {
                // Copies not yet merged read back beside their first: the first comes first.
                if prev.as_deref() == Some(f.path) {
                    continue;
                }
                prev = Some(f.path.to_string());
                back.push((f.path.to_string(), f.size as usize, f.sha256));
            }
            let want_back: Vec<(String, usize, Digest)> =
                kept.into_iter().map(|(p, f)| (p, f, digest(f))).collect();
            assert_eq!(back, want_back, "round {round}, n {n}");
        }
    }

    /// A sorted `SHA256SUMS` is one run of front-coded paths: in the GHSA layout (~86-byte
    /// paths) a line costs the list under 100 bytes — whole paths with fixed records, as the
    /// list was kept before, cost ~140 and twice the paths' buffer while it grew.
    #[test]
    fn a_sorted_listing_costs_under_100_bytes_a_ghsa_file() {
        let n = 100_000usize;
        let mut paths: Vec<String> = (0..n).map(ghsa_path).collect();
        paths.sort();
        paths.dedup();
        let text: usize = paths.iter().map(String::len).sum();
        let mut listed = Listed::default();
        for (i, p) in paths.iter().enumerate() {
            listed.push(i, p, Digest::sha256([7; 32])).unwrap();
        }
        assert_eq!(listed.runs.runs().len(), 1);
        assert!(listed.repeat().unwrap().is_none());
        let per_file = listed.runs.heap_bytes() as f64 / paths.len() as f64;
        let whole = text as f64 / paths.len() as f64;
        assert!(whole > 80.0, "{whole}");
        assert!(per_file < 100.0, "{per_file} bytes per file");
    }
}
