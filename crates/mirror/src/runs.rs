//! A list of files recorded in any order and read back in path order, in little memory:
//! sorted runs of [`FileIndex`] (front-coded paths, 44-byte records — ~57 B per advisory file
//! against ~140 B as whole paths with fixed records).
//!
//! A file that sorts after the last one recorded extends the last run — a walk in path order
//! ([`crate::fs::walk_sorted_each`]) or a sorted `SHA256SUMS` is one run — and any other
//! starts a run. When a run starts, the last two are merged while the one before is no more
//! than twice the last's size and both together hold at most [`MERGE_AT_MOST`] files (so
//! short runs stay few however the files come, and a long run is never copied: that would
//! double its memory for a moment); the runs are merged as they are read ([`Merged`]).
//!
//! A path recorded twice is met where two runs meet — when they are merged, or when they are
//! read ([`SortedRuns::each_repeat`]) — and handed to the caller's [`Repeat`], with the entry
//! recorded first (runs are in recording order, and of two equal paths the earlier run's is
//! kept and read first).

use crate::error::Result;
use crate::manifest::FileRef;
use crate::streamed::FileIndex;

/// The most files two runs may hold together to be merged into one (a few MB): longer runs
/// stay as they are.
pub(crate) const MERGE_AT_MOST: usize = 1 << 16;

/// What to do with a path recorded again: called with the entry recorded first and the one
/// recorded later (which is dropped if this returns `Ok`).
pub(crate) type Repeat<'r> = dyn FnMut(FileRef<'_>, FileRef<'_>) -> Result<()> + 'r;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct SortedRuns {
    runs: Vec<FileIndex>,
}

impl SortedRuns {
    /// Record a file (`size`, `sha256` and `media_type` are kept as they are given).
    pub(crate) fn push(
        &mut self,
        path: &str,
        size: u64,
        sha256: [u8; 32],
        media_type: &str,
        repeat: &mut Repeat<'_>,
    ) -> Result<()> {
        if let Some(run) = self.runs.last_mut() {
            if run.push_above(path, size, sha256, media_type) {
                return Ok(());
            }
        }
        self.balance(repeat)?;
        let mut run = FileIndex::default();
        run.push_above(path, size, sha256, media_type);
        self.runs.push(run);
        Ok(())
    }

    /// Merge the last two runs while the one before is no more than twice the last's size
    /// and together they hold at most [`MERGE_AT_MOST`] files.
    fn balance(&mut self, repeat: &mut Repeat<'_>) -> Result<()> {
        while let [.., a, b] = self.runs.as_slice() {
            if a.len() > b.len().saturating_mul(2) || a.len() + b.len() > MERGE_AT_MOST {
                break;
            }
            let merged = merge_runs(&self.runs[self.runs.len() - 2..], repeat)?;
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
        Ok(())
    }

    /// Give back the growth slack once every file is recorded.
    pub(crate) fn shrink_to_fit(&mut self) {
        for run in &mut self.runs {
            run.finish();
        }
        self.runs.shrink_to_fit();
    }

    /// The runs, in recording order.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> &[FileIndex] {
        &self.runs
    }

    /// The files in path order (a path in two runs read twice, the first-recorded first).
    pub(crate) fn merged(&self) -> Merged<'_> {
        Merged::new(&self.runs)
    }

    /// Every path held by more than one run, to `repeat` (the first-recorded entry, each
    /// later one): one pass over [`merged`](Self::merged).
    pub(crate) fn each_repeat(&self, repeat: &mut Repeat<'_>) -> Result<()> {
        if self.runs.len() < 2 {
            return Ok(());
        }
        let mut files = self.merged();
        // The first entry of the current path: path, size, digest, media type.
        let mut first = (String::new(), 0, [0u8; 32], String::new());
        let mut any = false;
        while let Some(f) = files.next() {
            if any && f.path == first.0 {
                let kept = FileRef {
                    path: &first.0,
                    size: first.1,
                    sha256: crate::hash::Digest::sha256(first.2),
                    media_type: &first.3,
                };
                repeat(kept, f)?;
                continue;
            }
            any = true;
            first.0.clear();
            first.0.push_str(f.path);
            first.1 = f.size;
            first.2 = *f.sha256.as_bytes();
            first.3.clear();
            first.3.push_str(f.media_type);
        }
        Ok(())
    }

    /// Heap bytes held (for tests and the docs' bytes-per-file figures).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.runs.iter().map(FileIndex::heap_bytes).sum::<usize>()
            + self.runs.capacity() * std::mem::size_of::<FileIndex>()
    }

    /// Files recorded (a path recorded twice and not yet met counts twice).
    pub(crate) fn count(&self) -> usize {
        self.runs.iter().map(FileIndex::len).sum()
    }

    /// The sum of the sizes recorded.
    pub(crate) fn total_size(&self) -> u64 {
        self.runs.iter().map(FileIndex::total_size).sum()
    }
}

/// One run of the files of `runs`, in path order; a path in two of them goes to `repeat`
/// and, if that lets it, only its first-recorded entry is kept.
fn merge_runs(runs: &[FileIndex], repeat: &mut Repeat<'_>) -> Result<FileIndex> {
    let mut out = FileIndex::default();
    let mut files = Merged::new(runs);
    let mut buf = Vec::new();
    while let Some(f) = files.next() {
        if !out.push_above(f.path, f.size, *f.sha256.as_bytes(), f.media_type) {
            // Merged hands paths out in order: the one refused equals the last kept.
            if let Some(kept) = out
                .len()
                .checked_sub(1)
                .and_then(|i| out.entry(i, &mut buf))
            {
                repeat(kept, f)?;
            }
        }
    }
    Ok(out)
}

/// Sorted runs read as one list in path order (the smallest head each time: runs are few;
/// of equal paths, the earlier run's first).
pub(crate) struct Merged<'a> {
    heads: Vec<Head<'a>>,
    /// The head handed out last, advanced at the next call.
    taken: Option<usize>,
}

/// A run of [`Merged`] and its next entry (the path copied out of the run's cursor).
struct Head<'a> {
    run: &'a FileIndex,
    files: crate::streamed::IndexCursor<'a>,
    at: Option<usize>,
    path: String,
}

impl Head<'_> {
    fn advance(&mut self) {
        self.path.clear();
        self.at = match self.files.next_indexed() {
            Some((i, e)) => {
                self.path.push_str(e.path);
                Some(i)
            }
            None => None,
        };
    }
}

impl<'a> Merged<'a> {
    fn new(runs: &'a [FileIndex]) -> Self {
        let heads = runs
            .iter()
            .map(|run| {
                let mut h = Head {
                    run,
                    files: run.cursor(),
                    at: None,
                    path: String::new(),
                };
                h.advance();
                h
            })
            .collect();
        Merged { heads, taken: None }
    }

    /// The next file in path order.
    pub(crate) fn next(&mut self) -> Option<FileRef<'_>> {
        if let Some(t) = self.taken.take() {
            self.heads[t].advance();
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if h.at.is_none() {
                continue;
            }
            if best.is_none_or(|b| h.path.as_bytes() < self.heads[b].path.as_bytes()) {
                best = Some(i);
            }
        }
        let b = best?;
        self.taken = Some(b);
        let h = &self.heads[b];
        let at = h.at?;
        let (size, sha256) = h.run.size_and_sha256(at)?;
        Some(FileRef {
            path: &h.path,
            size,
            sha256,
            media_type: h.run.media_type_of(at).unwrap_or(""),
        })
    }
}

/// A small deterministic generator for tests that shuffle: `rand(m)` is in `0..m`.
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as usize
    }
}
