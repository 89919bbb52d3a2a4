//! Streaming SHA-256 (aws-lc, which uses SHA-NI where the CPU has it) and parallel hashing of
//! many files over every core.
//!
//! Files are read in 256 KiB chunks into a buffer that stays in the L2 cache, so the hash reads
//! what the copy just wrote; memory is bounded by `threads × 256 KiB` whatever the bundle size.
//! Work is handed out largest file first from a shared counter, so one huge file and many
//! small ones still keep every core busy until the end.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext as _, Result};

/// Read chunk size for hashing and copying.
pub(crate) const CHUNK: usize = 256 * 1024;

pub(crate) use stella_digest::{Digest, Hasher};

/// 64 lowercase hex digits (the `sha256` fields of a manifest) as a digest.
pub(crate) fn parse_hex(s: &str) -> Option<Digest> {
    Digest::parse_sha256_hex(s).ok()
}

/// Progress reporting is the workspace's one trait, `stella_oci::Progress`: every stage here
/// reports phases of bytes through its `start` / `advance` / `finish`; the CLI draws a bar.
pub use stella_oci::{Event, NoProgress, Progress};

/// Hash everything `r` yields, in [`CHUNK`] reads; returns digest and length.
pub(crate) fn hash_reader(
    r: &mut dyn Read,
    progress: &dyn Progress,
) -> std::io::Result<(Digest, u64)> {
    hash_reader_with(r, &mut vec![0u8; CHUNK], progress)
}

/// [`hash_reader`] reading through the caller's buffer: a loop over many files allocates (and
/// zeroes) one buffer, not one per file.
pub(crate) fn hash_reader_with(
    r: &mut dyn Read,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> std::io::Result<(Digest, u64)> {
    let mut h = Hasher::new();
    read_chunks(r, buf, |data| {
        h.update(data);
        progress.advance(data.len() as u64);
        Ok(())
    })?;
    let len = h.len();
    Ok((h.finish(), len))
}

/// Read `r` to its end through `buf`, handing each chunk read to `each` (whose first error
/// ends the loop and is returned).
fn read_chunks(
    r: &mut dyn Read,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        each(&buf[..n])?;
    }
}

/// Hash one file.
pub(crate) fn hash_file(path: &Path, progress: &dyn Progress) -> Result<(Digest, u64)> {
    hash_file_with(path, &mut vec![0u8; CHUNK], progress)
}

/// [`hash_file`] reading through the caller's buffer (see [`hash_reader_with`]).
pub(crate) fn hash_file_with(
    path: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path).at(path)?;
    hash_reader_with(&mut f, buf, progress).at(path)
}

/// Number of hashing threads: every core.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Files a worker takes from the shared counter at a time in [`hash_tree`]: one atomic
/// operation (one contended cache line) per batch instead of per file, and consecutive files
/// of a sorted list share their folder, so the folder's descriptor is reused.
pub(crate) const TREE_BATCH: usize = 64;

/// A folder opened for [`hash_tree`]-style access: every file is opened relative to a
/// descriptor of its parent folder, which is itself opened beneath the root without following
/// any link (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; component by component
/// with `O_NOFOLLOW` where the kernel has no `openat2`). The last folder opened is kept, so a
/// sorted list of files costs one `openat` per file.
pub(crate) struct DirCursor<'a> {
    root: &'a rustix::fd::OwnedFd,
    parent: String,
    fd: Option<rustix::fd::OwnedFd>,
    /// Whether [`DirCursor::open_read`] still asks for `O_NOATIME`.
    noatime: bool,
}

impl<'a> DirCursor<'a> {
    pub(crate) fn new(root: &'a rustix::fd::OwnedFd) -> Self {
        DirCursor {
            root,
            parent: String::new(),
            fd: None,
            noatime: true,
        }
    }

    /// Open `rel` (as [`DirCursor::open`]) to read it without updating its access time
    /// (`O_NOATIME`: no inode made dirty, and no journal write, by reading a bundle; the
    /// kernel grants it on the caller's own files or with `CAP_FOWNER`). Once refused
    /// (`EPERM`), this cursor opens as any reader does.
    pub(crate) fn open_read(&mut self, rel: &str) -> std::io::Result<rustix::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        if self.noatime {
            match self.open(rel, flags | OFlags::NOATIME, Mode::empty()) {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                    self.noatime = false;
                }
                r => return r,
            }
        }
        self.open(rel, flags, Mode::empty())
    }

    /// The folder `rel`, the path last opened, was opened in.
    fn folder_of(&self, rel: &str) -> &rustix::fd::OwnedFd {
        match (rel.contains('/'), &self.fd) {
            (true, Some(fd)) => fd,
            _ => self.root,
        }
    }

    /// Open `rel` (a `/` path under the root, no `.`, `..` or empty components) with `flags`
    /// added to `O_NOFOLLOW | O_CLOEXEC | O_NOCTTY`, and `mode` if it creates.
    pub(crate) fn open(
        &mut self,
        rel: &str,
        flags: rustix::fs::OFlags,
        mode: rustix::fs::Mode,
    ) -> std::io::Result<rustix::fd::OwnedFd> {
        use rustix::fs::OFlags;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let (dir, name) = self.folder_for(rel)?;
        Ok(rustix::fs::openat(dir, name, flags, mode)?)
    }

    /// The folder `rel` lies in (opened beneath the root as [`DirCursor::open`] opens it,
    /// and kept) and its name there.
    fn folder_for<'r>(&mut self, rel: &'r str) -> std::io::Result<(&rustix::fd::OwnedFd, &'r str)> {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{rel}: not a file path"),
            ));
        }
        if parent.is_empty() {
            return Ok((self.root, name));
        }
        if self.fd.is_none() || self.parent != parent {
            self.fd = None;
            self.fd = Some(open_dir_beneath(self.root, parent)?);
            self.parent.clear();
            self.parent.push_str(parent);
        }
        Ok((self.fd.as_ref().unwrap_or(self.root), name))
    }
}

/// Open the folder `rel` beneath `root`, refusing links on the way and paths that leave it.
pub(crate) fn open_dir_beneath(
    root: &rustix::fd::OwnedFd,
    rel: &str,
) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // (RESOLVE_NO_SYMLINKS refuses a link anywhere with ELOOP; O_NOFOLLOW would turn a link
    // in last place into a less telling ENOTDIR.)
    match rustix::fs::openat2(
        root,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => {}
        r => return Ok(r?),
    }
    // No openat2 (Linux < 5.6): one component at a time, never following a link.
    open_components(root, rel, false)
}

/// Make the folder `rel` beneath `root`, and the parents it lacks. Usually only the last is
/// missing (the files of a list in path order fill a folder's siblings first): it is made in
/// its parent, opened beneath the root in one call; otherwise component by component.
fn make_folder(root: &rustix::fd::OwnedFd, rel: &str) -> std::io::Result<()> {
    if let Some((up, last)) = rel
        .rsplit_once('/')
        .filter(|(_, l)| !["", ".", ".."].contains(l))
    {
        if let Ok(dir) = open_dir_beneath(root, up) {
            // `mkdirat` follows no link in last place: a link there is `EEXIST`, and the
            // caller's open beneath the root refuses it.
            match rustix::fs::mkdirat(&dir, last, rustix::fs::Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => return Ok(()),
                Err(_) => {}
            }
        }
    }
    open_components(root, rel, true).map(|_| ())
}

/// Open the folder `rel` beneath `root` one component at a time, never following a link (a
/// link where a folder should be is refused with `ELOOP` or `ENOTDIR`); with `make`, each
/// component is made first if it is not there (made by another thread meanwhile is fine).
fn open_components(
    root: &rustix::fd::OwnedFd,
    rel: &str,
    make: bool,
) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur: Option<rustix::fd::OwnedFd> = None;
    for c in rel.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{rel}: not a folder path under the bundle"),
            ));
        }
        let at = cur.as_ref().unwrap_or(root);
        if make {
            match rustix::fs::mkdirat(at, c, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        cur = Some(rustix::fs::openat(at, c, flags, Mode::empty())?);
    }
    cur.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Open a root folder for [`DirCursor`].
pub(crate) fn open_root(root: &Path) -> Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(root, e.into()))
}

/// The error for `rel` under `root`: a link (refused by `O_NOFOLLOW` / `RESOLVE_NO_SYMLINKS`:
/// `ELOOP`, or `EXDEV` for a path leaving the root) gets the message the walk gives.
pub(crate) fn tree_error(root: &Path, rel: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(code)
            if code == rustix::io::Errno::LOOP.raw_os_error()
                || code == rustix::io::Errno::XDEV.raw_os_error() =>
        {
            Error::content_link(rel)
        }
        _ => Error::io(root.join(rel), e),
    }
}

/// Where a file read by [`read_all`] ends, and how much of it may be read.
///
/// A file is never read far past what it may hold: a listed file replaced by a 20 GB sparse
/// file (or one that grows while it is read) costs one more read, not 20 GB of hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Size unknown and unbounded (a source being copied, a file listed only by an unsigned
    /// `SHA256SUMS`, as `sha256sum -c` reads it): read until `read` returns 0.
    Zero,
    /// The file should hold exactly this many bytes (its listed size): a short read at that
    /// size is its end (one `read` for a small file). At most the size and one byte more are
    /// read: a larger file is cut there ([`Hashed::whole`] false).
    At(u64),
    /// Size not known yet (a file hashed before its list is): the first short read is the end
    /// (a regular file on Linux returns a short read only at its end), and at most this many
    /// bytes and one more are read: a larger file is cut there, to be read again once its
    /// listed size is known. A caller that learns the listed size while the file is read
    /// settles the bound then ([`hash_at_refined`]).
    Upto(u64),
}

impl End {
    /// How many bytes may be read before the file is cut (`None`: no bound).
    fn bound(self) -> Option<u64> {
        match self {
            End::Zero => None,
            End::At(n) | End::Upto(n) => Some(n),
        }
    }
}

/// What [`hash_at`] read of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hashed {
    /// The file's size: when it was cut, the size `fstat` gives (at least one byte past
    /// the bound).
    pub(crate) size: u64,
    /// The SHA-256 of the file; when it was cut, of the bytes read, which is not the file's
    /// digest (never compared or reported).
    pub(crate) digest: Digest,
    /// The whole file was read (false: cut at the bound of its [`End`]).
    pub(crate) whole: bool,
}

impl Hashed {
    /// The digest, if the whole file was read.
    pub(crate) fn digest(&self) -> Option<Digest> {
        self.whole.then_some(self.digest)
    }

    /// This read judged against a listed size, as reading the file up to that size
    /// ([`End::At`]) gives it: a whole file larger than listed counts as cut there (no digest
    /// reported); `None` when it was cut before its listed size was known at no more than
    /// that size, and must be read again.
    pub(crate) fn against(self, listed: u64) -> Option<Hashed> {
        match (self.whole, self.size > listed) {
            (true, true) => Some(Hashed {
                whole: false,
                ..self
            }),
            (true, false) | (false, true) => Some(self),
            (false, false) => None,
        }
    }

    /// The content problem of the listed file `path` that read as this instead of what the
    /// manifest lists (`size` bytes, `sha256`); beside `crate::error::missing_problem` and
    /// `unlisted_problem`. A file cut where its listed size ends is given by its size alone.
    pub(crate) fn changed_problem(&self, path: &str, size: u64, sha256: &Digest) -> String {
        match self.digest() {
            Some(d) => format!(
                "file {path} changed: {} bytes sha256:{}, the manifest says {size} bytes sha256:{}",
                self.size,
                d.hex(),
                sha256.hex()
            ),
            None => format!(
                "file {path} changed: {} bytes (larger than listed: not read past its listed \
                 size), the manifest says {size} bytes sha256:{}",
                self.size,
                sha256.hex()
            ),
        }
    }
}

/// Read `fd` into the hasher (and `sink`), through `buf`, up to `end`: a read that returns
/// less than asked is the end of a regular file on Linux (the files are opened by us, without
/// following links), so a 1 KiB file of known size costs one `read`, not two. Returns the
/// bytes read and whether that is the whole file (false: more than `end`'s bound is there,
/// and reading stopped).
fn read_all(
    fd: &rustix::fd::OwnedFd,
    buf: &mut [u8],
    end: End,
    h: &mut Hasher,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, bool)> {
    read_all_refined(fd, buf, end, &mut || None, h, sink)
}

/// [`read_all`], asking `refine` after each read that does not end the file whether its end
/// is now known (a listed size learnt meanwhile: the bound changes from then on, and a file
/// already past it is cut at once).
fn read_all_refined(
    fd: &rustix::fd::OwnedFd,
    buf: &mut [u8],
    mut end: End,
    refine: &mut dyn FnMut() -> Option<End>,
    h: &mut Hasher,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, bool)> {
    let mut total = 0u64;
    let mut bound = end.bound();
    loop {
        // Never ask for more than one byte past the bound.
        let ask = match bound {
            Some(b) => usize::try_from(b.saturating_add(1).saturating_sub(total))
                .map_or(buf.len(), |left| left.min(buf.len())),
            None => buf.len(),
        };
        let n = match rustix::io::read(fd, &mut buf[..ask]) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok((total, true));
        }
        h.update(&buf[..n]);
        sink(&buf[..n])?;
        total += n as u64;
        if bound.is_some_and(|b| total > b) {
            return Ok((total, false));
        }
        let done = match end {
            End::Zero => false,
            End::At(size) => total == size,
            End::Upto(_) => true,
        };
        if n < ask && done {
            return Ok((total, true));
        }
        if let Some(settled) = refine() {
            end = settled;
            bound = end.bound();
            if bound.is_some_and(|b| total > b) {
                return Ok((total, false));
            }
        }
    }
}

/// Hash the file `rel` opened through `dirs` (no link followed), reading through `buf` up
/// to `end` (see [`End`]; a file cut at its bound is sized by `fstat`).
pub(crate) fn hash_at(
    dirs: &mut DirCursor<'_>,
    rel: &str,
    end: End,
    buf: &mut [u8],
) -> std::io::Result<Hashed> {
    hash_at_refined(dirs, rel, end, &mut || None, buf)
}

/// The size of the file `rel` opened through `dirs` (no link followed), none of it read.
pub(crate) fn size_at(dirs: &mut DirCursor<'_>, rel: &str) -> std::io::Result<u64> {
    let fd = dirs.open_read(rel)?;
    Ok(u64::try_from(rustix::fs::fstat(&fd)?.st_size).unwrap_or(0))
}

/// [`hash_at`] whose end `refine` may settle while the file is read (see
/// [`read_all_refined`]).
pub(crate) fn hash_at_refined(
    dirs: &mut DirCursor<'_>,
    rel: &str,
    end: End,
    refine: &mut dyn FnMut() -> Option<End>,
    buf: &mut [u8],
) -> std::io::Result<Hashed> {
    let fd = dirs.open_read(rel)?;
    let mut h = Hasher::new();
    let (n, whole) = read_all_refined(&fd, buf, end, refine, &mut h, |_| Ok(()))?;
    let size = if whole {
        n
    } else {
        // Cut: say how large it is (never less than what was read, should it shrink now).
        rustix::fs::fstat(&fd).map_or(n, |st| u64::try_from(st.st_size).unwrap_or(0).max(n))
    };
    Ok(Hashed {
        size,
        digest: h.finish(),
        whole,
    })
}

/// Hash many files under `root` on every core. `files` holds `/` paths relative to `root`
/// (as the walk returns them), each with where it ends ([`End`]: a listed size is used to
/// schedule the largest first, to read a small file with a single call and to read no file
/// far past it). Results come back in the order of `files`. The first error stops the other
/// threads.
///
/// Built for folders of many small files: files are opened relative to their folder's
/// descriptor (one `openat`, no path walk from `/`, no `fstat`), read into one reused buffer
/// per worker, and handed out [`TREE_BATCH`] at a time. No link is followed anywhere under
/// `root` (a file or folder replaced by a link after the walk is refused, not read), and a
/// path cannot leave `root`. Memory: `threads × 256 KiB` of buffers and the result list.
pub(crate) fn hash_tree<S: AsRef<str> + Sync>(
    root: &Path,
    files: &[(S, End)],
    progress: &dyn Progress,
) -> Result<Vec<Hashed>> {
    let rootfd = open_root(root)?;
    let mut order: Vec<u32> = (0..files.len())
        .map(|i| u32::try_from(i).map_err(|_| Error::input("too many files to hash")))
        .collect::<Result<_>>()?;
    // Stable: equal sizes keep the (sorted) path order, so a batch shares one folder.
    let size = |i: u32| match files[i as usize].1 {
        End::At(n) => n,
        End::Zero | End::Upto(_) => 0,
    };
    order.sort_by_key(|&i| std::cmp::Reverse(size(i)));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let workers = threads().min(files.len().div_ceil(TREE_BATCH)).max(1);
    let work = |done: &mut Vec<(u32, Hashed)>| -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut dirs = DirCursor::new(&rootfd);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let start = next.fetch_add(TREE_BATCH, Ordering::Relaxed);
            let Some(batch) = order.get(start..(start + TREE_BATCH).min(order.len())) else {
                return Ok(());
            };
            if batch.is_empty() {
                return Ok(());
            }
            let mut bytes = 0u64;
            for &idx in batch {
                let (rel, end) = (files[idx as usize].0.as_ref(), files[idx as usize].1);
                match hash_at(&mut dirs, rel, end, &mut buf) {
                    Ok(r) => {
                        bytes += if r.whole { r.size } else { 0 };
                        done.push((idx, r));
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(tree_error(root, rel, e));
                    }
                }
            }
            progress.advance(bytes);
        }
    };
    let blank = Hashed {
        size: 0,
        digest: Digest::sha256([0; 32]),
        whole: false,
    };
    on_workers(
        workers,
        files.len(),
        "a hashing thread panicked",
        blank,
        work,
    )
}

/// Copy many files from under `src_root` to new files under `dest_root`, hashing on the way,
/// on every core; `files` holds `(source, destination)` `/` paths relative to the two roots,
/// and the destination folders exist. Results (digest, size) come back in the order of
/// `files`; the first error stops the other threads. [`copy_tree_from`] with one source root
/// and no bound.
pub(crate) fn copy_tree<S: AsRef<str> + Sync, D: AsRef<str> + Sync>(
    src_root: &Path,
    dest_root: &Path,
    files: &[(S, D)],
    progress: &dyn Progress,
) -> Result<Vec<(Digest, u64)>> {
    let jobs: Vec<CopyJob<'_>> = files
        .iter()
        .map(|(s, d)| CopyJob {
            src: s.as_ref(),
            dest: d.as_ref(),
            end: End::Zero,
            may_link: false,
        })
        .collect();
    let copied = copy_tree_from(&[src_root], dest_root, &jobs, Absent::Fail, None, progress)?;
    Ok(copied
        .into_iter()
        .map(|c| c.map_or((Digest::sha256([0; 32]), 0), |(_, h)| (h.digest, h.size)))
        .collect())
}

/// One file for [`copy_tree_from`]: its path under a source root, under the destination,
/// and how much of it may be read ([`End`]).
pub(crate) struct CopyJob<'a> {
    pub(crate) src: &'a str,
    pub(crate) dest: &'a str,
    pub(crate) end: End,
    /// Whether it may be linked (see [`copy_tree_from`]'s `link_from`): not a file whose
    /// mode the caller changes afterwards (that would change the source's too).
    pub(crate) may_link: bool,
}

/// What [`copy_tree_from`] does with a file no source root holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// Stop with the last root's error.
    Fail,
    /// Report it (`None` in its slot) and go on.
    Report,
}

/// Copy many files to new files under `dest_root`, hashing on the way, on every core: each
/// from the first of `src_roots` that holds it (a `/` path relative to the roots), read up to
/// its [`End`] (a file cut at its bound is copied that far and sized by `fstat`:
/// [`Hashed::whole`] false — the caller refuses it). Results come back in the order of
/// `files`: the root it came from and what was read, or `None` when no root holds it (with
/// [`Absent::Report`]). The first error stops the other threads. A destination folder that
/// does not exist yet is made (with the parents it lacks) by the worker that needs it.
///
/// With `link_from` set, a whole file of mode 0644 from that root (one its job lets link) is
/// hashed and hard-linked into place instead of copied (no data written, no inode made: for
/// a caller that removes the source folder once it is done, and checks the result again);
/// any other file of it, or one the file system will not link (another device, no hard
/// links), is copied.
///
/// The many-small-files counterpart of `copy_hashing_with`: every side is opened relative
/// to its folder's descriptor without following any link (`DirCursor`), the destination
/// is created exclusively (`O_CREAT | O_EXCL`, never overwriting) with mode 0644, whatever
/// the umask (set with `fchmod` on the open file when the umask or a default ACL of the
/// folder would give another mode: `Creates0644`), and a small file costs one `read` and
/// one `write` through a reused per-worker buffer. Work is handed out [`TREE_BATCH`] files at
/// a time from both ends of the list (`TwoEnds`): consecutive files share a folder, and
/// creating a file takes its folder's lock, so two workers create in different folders until
/// they meet. Memory: `threads × 256 KiB` and the result list.
pub(crate) fn copy_tree_from(
    src_roots: &[&Path],
    dest_root: &Path,
    files: &[CopyJob<'_>],
    absent: Absent,
    link_from: Option<usize>,
    progress: &dyn Progress,
) -> Result<Vec<Option<(usize, Hashed)>>> {
    let src_fds = src_roots
        .iter()
        .map(|r| open_root(r))
        .collect::<Result<Vec<_>>>()?;
    let dest_fd = open_root(dest_root)?;
    let ends = TwoEnds::new(files.len());
    let worker_ids = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let umask_keeps_0644 = umask_keeps_0644();
    let workers = threads().min(files.len().div_ceil(TREE_BATCH)).max(1);
    let work = |done: &mut Vec<(usize, Option<(usize, Hashed)>)>| -> Result<()> {
        let from_back = worker_ids.fetch_add(1, Ordering::Relaxed) % 2 == 1;
        let mut w = Placer {
            src_roots,
            dest_root,
            dest_fd: &dest_fd,
            absent,
            link_from,
            buf: vec![0u8; CHUNK],
            srcs: src_fds.iter().map(DirCursor::new).collect(),
            dests: DirCursor::new(&dest_fd),
            mode_ok: Creates0644::new(umask_keeps_0644),
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(range) = ends.take(from_back, TREE_BATCH) else {
                return Ok(());
            };
            let mut bytes = 0u64;
            for (i, job) in files.iter().enumerate().take(range.end).skip(range.start) {
                match w.place(job) {
                    Ok(got) => {
                        bytes += got.as_ref().map_or(0, |(_, h)| h.size);
                        done.push((i, got));
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            progress.advance(bytes);
        }
    };
    on_workers(
        workers,
        files.len(),
        "a copying thread panicked",
        None,
        work,
    )
}

/// One worker of [`copy_tree_from`]: its cursors, buffer and settings.
struct Placer<'a> {
    src_roots: &'a [&'a Path],
    dest_root: &'a Path,
    dest_fd: &'a rustix::fd::OwnedFd,
    absent: Absent,
    link_from: Option<usize>,
    buf: Vec<u8>,
    srcs: Vec<DirCursor<'a>>,
    dests: DirCursor<'a>,
    mode_ok: Creates0644,
}

impl Placer<'_> {
    /// Copy (or link) one file; `None` if no root holds it.
    fn place(&mut self, job: &CopyJob<'_>) -> Result<Option<(usize, Hashed)>> {
        use rustix::fs::{Mode, OFlags};
        let last = self.src_roots.len().saturating_sub(1);
        let mut from = None;
        for (k, (cursor, root)) in self.srcs.iter_mut().zip(self.src_roots).enumerate() {
            // Whether a file absent here is looked for further (or reported absent).
            let probe = k < last || self.absent == Absent::Report;
            match cursor.open_read(job.src) {
                Ok(fd) => {
                    // A folder by that name holds no such file (it opens for reading,
                    // though). The mode is kept for `link`.
                    let mode = probe
                        .then(|| rustix::fs::fstat(&fd).ok().map(|st| st.st_mode))
                        .flatten();
                    if mode.is_some_and(is_folder) {
                        continue;
                    }
                    from = Some((k, fd, mode));
                    break;
                }
                Err(e) if not_here(&e) && probe => {}
                Err(e) => return Err(tree_error(root, job.src, e)),
            }
        }
        let Some((k, from, mode)) = from else {
            return Ok(None);
        };
        let src_root = self.src_roots.get(k).copied().unwrap_or(self.dest_root);
        if job.may_link && self.link_from == Some(k) {
            if let Some(linked) = self.link(k, job, &from, mode)? {
                return Ok(Some((k, linked)));
            }
            // Copied after all: from the start again.
            rustix::fs::seek(&from, rustix::fs::SeekFrom::Start(0))
                .map_err(|e| Error::io(src_root.join(job.src), e.into()))?;
        }
        let to = in_dest(&mut self.dests, self.dest_fd, job.dest, |dir, name| {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
        })
        .map_err(|e| tree_error(self.dest_root, job.dest, e))?;
        let mut h = Hasher::new();
        let mut wrote = Ok(());
        let read = read_all(&from, &mut self.buf, job.end, &mut h, |data| {
            let r = write_all_fd(&to, data);
            if let Err(e) = &r {
                wrote = Err(std::io::Error::new(e.kind(), e.to_string()));
            }
            r
        });
        if let Err(e) = wrote {
            return Err(Error::io(self.dest_root.join(job.dest), e));
        }
        let (n, whole) = read.map_err(|e| Error::io(src_root.join(job.src), e))?;
        if !self
            .mode_ok
            .in_folder(job.dest, self.dests.folder_of(job.dest))
        {
            rustix::fs::fchmod(&to, Mode::from_raw_mode(0o644))
                .map_err(|e| Error::io(self.dest_root.join(job.dest), e.into()))?;
        }
        Ok(Some((k, read_as(&from, n, whole, h))))
    }

    /// Hash `from` (root `k`'s copy of `job.src`) and link it into place: what was read, or
    /// `None` if it is to be copied instead (not mode 0644, or the file system refuses the
    /// link). A file cut at its bound is not linked (nor copied: the caller refuses it).
    /// `mode` is its `st_mode` when the caller has it already.
    fn link(
        &mut self,
        k: usize,
        job: &CopyJob<'_>,
        from: &rustix::fd::OwnedFd,
        mode: Option<u32>,
    ) -> Result<Option<Hashed>> {
        let src_root = self.src_roots.get(k).copied().unwrap_or(self.dest_root);
        let mode = match mode {
            Some(m) => m,
            None => {
                rustix::fs::fstat(from)
                    .map_err(|e| Error::io(src_root.join(job.src), e.into()))?
                    .st_mode
            }
        };
        if mode & 0o7777 != 0o644 {
            return Ok(None);
        }
        let mut h = Hasher::new();
        let (n, whole) = read_all(from, &mut self.buf, job.end, &mut h, |_| Ok(()))
            .map_err(|e| Error::io(src_root.join(job.src), e))?;
        let got = read_as(from, n, whole, h);
        if !whole {
            return Ok(Some(got));
        }
        let Some(src) = self.srcs.get_mut(k) else {
            return Ok(None);
        };
        let (src_dir, src_name) = src
            .folder_for(job.src)
            .map_err(|e| tree_error(src_root, job.src, e))?;
        let linked = in_dest(&mut self.dests, self.dest_fd, job.dest, |dir, name| {
            // No AT_SYMLINK_FOLLOW: the name is linked as it is (a regular file: it was just
            // opened without following links; the caller checks the result again).
            rustix::fs::linkat(src_dir, src_name, dir, name, rustix::fs::AtFlags::empty())
        });
        match linked {
            Ok(()) => Ok(Some(got)),
            Err(e)
                if [
                    rustix::io::Errno::XDEV,
                    rustix::io::Errno::PERM,
                    rustix::io::Errno::MLINK,
                    rustix::io::Errno::NOTSUP,
                    rustix::io::Errno::OPNOTSUPP,
                ]
                .iter()
                .any(|c| e.raw_os_error() == Some(c.raw_os_error())) =>
            {
                Ok(None)
            }
            Err(e) => Err(tree_error(self.dest_root, job.dest, e)),
        }
    }
}

/// Run `make` on the folder and name of `dest` (opened through `dests`, beneath `dest_fd`),
/// making the folder (and the parents it lacks) once if it is not there.
fn in_dest<T>(
    dests: &mut DirCursor<'_>,
    dest_fd: &rustix::fd::OwnedFd,
    dest: &str,
    make: impl Fn(&rustix::fd::OwnedFd, &str) -> rustix::io::Result<T>,
) -> std::io::Result<T> {
    let first = match dests.folder_for(dest) {
        Ok((dir, name)) => make(dir, name).map_err(std::io::Error::from),
        Err(e) => Err(e),
    };
    match first {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some((parent, _)) = dest.rsplit_once('/') {
                make_folder(dest_fd, parent)?;
            }
            let (dir, name) = dests.folder_for(dest)?;
            Ok(make(dir, name)?)
        }
        r => r,
    }
}

/// Whether a file of this `st_mode` is a folder.
fn is_folder(mode: u32) -> bool {
    rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::Directory
}

/// Whether an open failed because the file is not there (nor a folder on its way).
fn not_here(e: &std::io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::NOENT.raw_os_error())
        || code == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// What reading `n` bytes of `fd` into `h` gave (a file cut at its bound sized by `fstat`,
/// as `hash_at` sizes it).
fn read_as(fd: &rustix::fd::OwnedFd, n: u64, whole: bool, h: Hasher) -> Hashed {
    let size = if whole {
        n
    } else {
        rustix::fs::fstat(fd).map_or(n, |st| u64::try_from(st.st_size).unwrap_or(0).max(n))
    };
    Hashed {
        size,
        digest: h.finish(),
        whole,
    }
}

/// A list handed out in batches from both ends: the first worker takes from the front, the
/// second from the back, the third from the front again, and so on.
struct TwoEnds {
    left: Mutex<std::ops::Range<usize>>,
}

impl TwoEnds {
    fn new(len: usize) -> Self {
        TwoEnds {
            left: Mutex::new(0..len),
        }
    }

    /// The next `n` (at most) positions from the front or the back; `None` when all are out.
    fn take(&self, from_back: bool, n: usize) -> Option<std::ops::Range<usize>> {
        let mut left = self.left.lock().ok()?;
        if left.is_empty() {
            return None;
        }
        let n = n.min(left.len());
        Some(if from_back {
            left.end -= n;
            left.end..left.end + n
        } else {
            left.start += n;
            left.start - n..left.start
        })
    }
}

/// Whether the process umask leaves mode 0644 as it is (read from `/proc/self/status`,
/// which Linux has shown since 4.7; false when it cannot be read).
fn umask_keeps_0644() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| umask_in(&s))
        .is_some_and(|umask| umask & 0o644 == 0)
}

/// The `Umask:` line of a `/proc/<pid>/status` text.
fn umask_in(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// Whether a file created with mode 0644 in a folder gets exactly 0644, so needs no
/// `fchmod`: when the umask keeps 0644 and the folder has no default ACL (which would set
/// the mode instead of the umask). Asked once per folder (one `fgetxattr`); when unsure, no.
struct Creates0644 {
    umask_keeps_0644: bool,
    /// The folder last asked about, and the answer.
    folder: Option<String>,
    plain: bool,
}

impl Creates0644 {
    fn new(umask_keeps_0644: bool) -> Self {
        Creates0644 {
            umask_keeps_0644,
            folder: None,
            plain: false,
        }
    }

    /// For the file `rel` just created in `folder` (its folder's descriptor).
    fn in_folder(&mut self, rel: &str, folder: &rustix::fd::OwnedFd) -> bool {
        if !self.umask_keeps_0644 {
            return false;
        }
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if self.folder.as_deref() != Some(parent) {
            self.folder = Some(parent.to_string());
            self.plain = matches!(
                rustix::fs::fgetxattr_query(folder, "system.posix_acl_default"),
                Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP)
            );
        }
        self.plain
    }
}

/// Run `work` on `workers` threads (this one included) until it returns, and put each
/// worker's `(index, result)` pairs in index order (`blank` in no slot once all succeeded);
/// the first error wins (the work itself tells the others to stop).
fn on_workers<I: Copy + Send + TryInto<usize>, T: Clone + Send>(
    workers: usize,
    len: usize,
    panicked: &str,
    blank: T,
    work: impl Fn(&mut Vec<(I, T)>) -> Result<()> + Sync,
) -> Result<Vec<T>> {
    let run = || {
        let mut done = Vec::new();
        work(&mut done).map(|()| done)
    };
    let results: Vec<Result<Vec<(I, T)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..workers).map(|_| s.spawn(run)).collect();
        // This thread is a worker too.
        let mine = run();
        std::iter::once(mine)
            .chain(
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(Error::input(panicked)))),
            )
            .collect()
    });
    let mut out = vec![blank; len];
    let mut first_err = None;
    for r in results {
        match r {
            Ok(done) => {
                for (idx, got) in done {
                    // Every index comes from `0..len`.
                    if let Some(slot) = idx.try_into().ok().and_then(|i: usize| out.get_mut(i)) {
                        *slot = got;
                    }
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn write_all_fd(fd: &rustix::fd::OwnedFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Copy `src` to a new file `dest`, hashing on the way.
pub(crate) fn copy_hashing(
    src: &Path,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    copy_hashing_with(src, dest, &mut vec![0u8; CHUNK], progress)
}

/// [`copy_hashing`] of a file that should hold `size` bytes (a signed or described size): at
/// most `size` and one byte more are read and written, so a source far larger than that (a
/// 20 GB sparse file in a base bundle) costs one more read, not 20 GB of disk. A larger one is
/// cut there ([`Hashed::whole`] false; its size from `fstat`); the caller refuses it and
/// removes the copy.
pub(crate) fn copy_hashing_at_most(
    src: &Path,
    dest: &Path,
    size: u64,
    progress: &dyn Progress,
) -> Result<Hashed> {
    let r = std::fs::File::open(src).at(src)?;
    let bound = size.saturating_add(1);
    let mut buf = vec![0u8; CHUNK];
    let (digest, n) = copy_reading(&mut (&r).take(bound), src, dest, &mut buf, progress)?;
    if n <= size {
        return Ok(Hashed {
            size: n,
            digest,
            whole: true,
        });
    }
    let real = r.metadata().map_or(n, |m| m.len().max(n));
    Ok(Hashed {
        size: real,
        digest,
        whole: false,
    })
}

/// [`copy_hashing`] with a caller's buffer (many small files: one buffer per worker instead
/// of a fresh 256 KiB allocation, an mmap and munmap, per file).
pub(crate) fn copy_hashing_with(
    src: &Path,
    dest: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    let mut r = std::fs::File::open(src).at(src)?;
    copy_reading(&mut r, src, dest, buf, progress)
}

/// Copy what `r` (reading `src`) yields to a new file `dest`, hashing on the way.
fn copy_reading(
    r: &mut dyn Read,
    src: &Path,
    dest: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    use std::io::Write as _;
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .at(dest)?;
    let mut h = Hasher::new();
    // A write error is the destination's, any other the source's.
    let mut write_failed = false;
    read_chunks(r, buf, |data| {
        h.update(data);
        w.write_all(data).inspect_err(|_| write_failed = true)?;
        progress.advance(data.len() as u64);
        Ok(())
    })
    .map_err(|e| Error::io(if write_failed { dest } else { src }, e))?;
    let len = h.len();
    Ok((h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_parallel() {
        assert_eq!(
            Digest::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = Digest::of(b"x");
        assert_eq!(crate::hash::parse_hex(&d.hex()), Some(d));
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
        assert!(crate::hash::parse_hex(&d.hex().to_uppercase()).is_none());

        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..20u64 {
            let name = format!("f{i}");
            let data = vec![i as u8; (i * 100_000) as usize];
            std::fs::write(dir.path().join(&name), &data).unwrap();
            files.push((name, End::At(data.len() as u64)));
        }
        let got = hash_tree(dir.path(), &files, &NoProgress).unwrap();
        for (i, h) in got.iter().enumerate() {
            let data = vec![i as u8; i * 100_000];
            assert_eq!(h.digest(), Some(Digest::of(&data)));
            assert_eq!(h.size, data.len() as u64);
        }
        files.push(("missing".into(), End::Zero));
        assert!(matches!(
            hash_tree(dir.path(), &files, &NoProgress),
            Err(Error::NotFound(_))
        ));
    }

    fn tree() -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..300usize {
            let rel = format!("a/{:02}/f{i:04}.json", i % 7);
            // Mostly small files, a few larger than one read chunk.
            let len = if i % 100 == 3 {
                CHUNK * 2 + 17
            } else {
                i * 13 % 2048
            };
            let data: Vec<u8> = (0..len).map(|k| (k * 31 + i) as u8).collect();
            let abs = dir.path().join(&rel);
            std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
            std::fs::write(&abs, &data).unwrap();
            files.push((rel, data));
        }
        files.push(("top.bin".to_string(), b"top".to_vec()));
        std::fs::write(dir.path().join("top.bin"), b"top").unwrap();
        (dir, files)
    }

    #[test]
    fn hash_tree_matches_digest_of_with_and_without_sizes() {
        let (dir, files) = tree();
        let ends: [fn(u64) -> End; 4] = [
            End::At,
            |_| End::Zero,
            |_| End::Upto(u64::MAX),
            |n| End::Upto(n),
        ];
        for end in ends {
            let list: Vec<(&str, End)> = files
                .iter()
                .map(|(r, d)| (r.as_str(), end(d.len() as u64)))
                .collect();
            let got = hash_tree(dir.path(), &list, &NoProgress).unwrap();
            assert_eq!(got.len(), files.len());
            for ((rel, data), h) in files.iter().zip(&got) {
                assert_eq!(h.digest(), Some(Digest::of(data)), "{rel}");
                assert_eq!(h.size, data.len() as u64, "{rel}");
            }
        }
        assert!(hash_tree(dir.path(), &[] as &[(&str, End)], &NoProgress)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn hashing_leaves_the_access_time_alone() {
        // An access time before the modification time: a read with relatime (or strictatime)
        // would set it to now; O_NOATIME keeps it.
        let (dir, files) = tree();
        let old = rustix::fs::Timespec {
            tv_sec: 946_684_800, // 2000-01-01
            tv_nsec: 0,
        };
        let keep_mtime = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: keep_mtime,
        };
        for (rel, _) in &files {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                dir.path().join(rel),
                &times,
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        }
        let list: Vec<(&str, End)> = files
            .iter()
            .map(|(r, d)| (r.as_str(), End::At(d.len() as u64)))
            .collect();
        let got = hash_tree(dir.path(), &list, &NoProgress).unwrap();
        for ((rel, data), h) in files.iter().zip(&got) {
            assert_eq!(h.digest(), Some(Digest::of(data)), "{rel}");
            let st = rustix::fs::stat(dir.path().join(rel)).unwrap();
            assert_eq!(st.st_atime, old.tv_sec, "{rel}: access time changed");
        }
    }

    #[test]
    fn hash_tree_reads_no_file_past_its_bound() {
        // A file that changed size since it was listed: a smaller one is read whole; a larger
        // one is read to its listed size and one byte more, no further (the digest of what
        // was read says exactly how much), and sized by `fstat`.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK as u32 + 5)).map(|k| (k * 7) as u8).collect();
        let len = data.len() as u64;
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let whole = |_: End| Hashed {
            size: len,
            digest: Digest::of(&data),
            whole: true,
        };
        let cut_at = |bound: u64| Hashed {
            size: len,
            digest: Digest::of(&data[..bound as usize + 1]),
            whole: false,
        };
        let c = CHUNK as u64;
        for bound in [0, 1, 4999, c - 1, c, c + 1, 2 * c, len - 1] {
            for end in [End::At(bound), End::Upto(bound)] {
                let got = hash_tree(dir.path(), &[("f", end)], &NoProgress).unwrap();
                assert_eq!(got, vec![cut_at(bound)], "{end:?}");
                assert_eq!(got[0].digest(), None, "{end:?}");
            }
        }
        for end in [
            End::At(len),
            End::At(len + 1),
            End::At(1 << 40),
            End::Upto(len),
            End::Zero,
        ] {
            let got = hash_tree(dir.path(), &[("f", end)], &NoProgress).unwrap();
            assert_eq!(got, vec![whole(end)], "{end:?}");
        }
        // An empty file listed as empty, and one byte where none is listed.
        std::fs::write(dir.path().join("e"), b"").unwrap();
        std::fs::write(dir.path().join("one"), b"x").unwrap();
        let got = hash_tree(
            dir.path(),
            &[("e", End::At(0)), ("one", End::At(0))],
            &NoProgress,
        )
        .unwrap();
        assert_eq!(got[0].digest(), Some(Digest::of(b"")));
        assert_eq!((got[1].size, got[1].whole), (1, false));
        // A huge sparse file listed at 1 KiB costs one read, not a terabyte of them.
        let huge = std::fs::File::create(dir.path().join("huge")).unwrap();
        huge.set_len(1 << 40).unwrap();
        let got = hash_tree(dir.path(), &[("huge", End::At(1024))], &NoProgress).unwrap();
        assert_eq!((got[0].size, got[0].whole), (1 << 40, false));
        assert_eq!(got[0].digest, Digest::of(&[0u8; 1025]));
    }

    #[test]
    fn a_read_is_judged_against_a_listed_size_as_a_listed_read_gives_it() {
        let d = Digest::of(b"0123456789");
        let read = |size, whole| Hashed {
            size,
            digest: d,
            whole,
        };
        // Whole: as it is, unless larger than listed (then as cut: no digest reported).
        assert_eq!(read(10, true).against(10), Some(read(10, true)));
        assert_eq!(read(10, true).against(11), Some(read(10, true)));
        assert_eq!(read(10, true).against(9), Some(read(10, false)));
        assert_eq!(read(10, true).against(9).unwrap().digest(), None);
        // Cut: larger than listed stays so; cut at or below its listed size: read again.
        assert_eq!(read(10, false).against(9), Some(read(10, false)));
        assert_eq!(read(10, false).against(10), None);
        assert_eq!(read(10, false).against(20), None);
    }

    #[test]
    fn a_bound_learnt_while_reading_applies_from_then_on() {
        // Hashed before its list was known (`Upto`), then its listed size is learnt: read on
        // to that size (the whole file, when it is the size), or cut at once when already
        // past it (unlisted: `At(0)`).
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(4 * CHUNK as u32)).map(|k| (k * 13) as u8).collect();
        let len = data.len() as u64;
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let root = open_root(dir.path()).unwrap();
        let mut buf = vec![0u8; CHUNK];
        for (listed, whole, read) in [
            (len, true, data.len()),
            (len - 1, false, data.len()),
            (0, false, CHUNK),
            (2 * CHUNK as u64 + 3, false, 2 * CHUNK + 4),
        ] {
            let mut dirs = DirCursor::new(&root);
            let mut asked = 0;
            let mut refine = || {
                asked += 1;
                Some(End::At(listed))
            };
            let got = hash_at_refined(&mut dirs, "f", End::Upto(u64::MAX), &mut refine, &mut buf)
                .unwrap();
            assert_eq!(got.whole, whole, "listed {listed}");
            assert_eq!(got.size, len, "listed {listed}");
            assert_eq!(got.digest, Digest::of(&data[..read]), "listed {listed}");
            assert!(asked >= 1, "listed {listed}: never asked");
        }
        // Nothing learnt: `Upto` alone decides.
        let mut dirs = DirCursor::new(&root);
        let got = hash_at_refined(&mut dirs, "f", End::Upto(10), &mut || None, &mut buf).unwrap();
        assert_eq!((got.whole, got.digest), (false, Digest::of(&data[..11])));
    }

    #[test]
    fn hash_tree_refuses_links_and_paths_out_of_the_root() {
        let (dir, _) = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        // A file that is a link (to a file inside or outside the root).
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("a/ln")).unwrap();
        std::os::unix::fs::symlink("00/f0000.json", dir.path().join("a/ln2")).unwrap();
        // A folder that is a link.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/lnd")).unwrap();
        for rel in ["a/ln", "a/ln2", "a/lnd/secret"] {
            let e = hash_tree(
                dir.path(),
                &[("a/00/f0000.json", End::Zero), (rel, End::Zero)],
                &NoProgress,
            )
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!("{rel} is a symbolic link")),
                "{rel}: {e}"
            );
        }
        for rel in ["../secret", "a/../../secret", "a/..", "a/", "/etc/passwd"] {
            assert!(
                hash_tree(dir.path(), &[(rel, End::Zero)], &NoProgress).is_err(),
                "{rel} was read"
            );
        }
    }

    #[test]
    fn hash_tree_errors_name_the_file() {
        let (dir, files) = tree();
        let mut list: Vec<(&str, End)> =
            files.iter().map(|(r, _)| (r.as_str(), End::Zero)).collect();
        list.push(("a/00/missing", End::Zero));
        match hash_tree(dir.path(), &list, &NoProgress) {
            Err(Error::NotFound(p)) => assert_eq!(p, dir.path().join("a/00/missing")),
            other => panic!("{other:?}"),
        }
        // Not a file: a folder where a file is listed cannot be read.
        let e = hash_tree(dir.path(), &[("a/00", End::Zero)], &NoProgress).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("a/00"), "{msg}");
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        // A root that does not exist.
        assert!(matches!(
            hash_tree(&dir.path().join("nope"), &[("x", End::Zero)], &NoProgress),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn copy_tree_copies_hashes_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt as _;
        let (src, files) = tree();
        let dest = tempfile::tempdir().unwrap();
        for d in 0..7 {
            std::fs::create_dir_all(dest.path().join(format!("x/a/{d:02}"))).unwrap();
        }
        let list: Vec<(String, String)> = files
            .iter()
            .map(|(r, _)| (r.clone(), format!("x/{r}")))
            .collect();
        let got = copy_tree(src.path(), dest.path(), &list, &NoProgress).unwrap();
        for ((rel, data), (d, n)) in files.iter().zip(&got) {
            assert_eq!(*d, Digest::of(data), "{rel}");
            assert_eq!(*n, data.len() as u64);
            let p = dest.path().join(format!("x/{rel}"));
            assert_eq!(std::fs::read(&p).unwrap(), *data);
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o644
            );
        }
        // Again: every destination exists, nothing is overwritten.
        let e = copy_tree(src.path(), dest.path(), &list[..1], &NoProgress).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        // A destination folder that is a link is refused (nothing written through it).
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("lnk")).unwrap();
        let e = copy_tree(
            src.path(),
            dest.path(),
            &[("top.bin", "lnk/top.bin")],
            &NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!outside.path().join("top.bin").exists());
        // A source that is a link is refused, and names the source.
        std::os::unix::fs::symlink(src.path().join("top.bin"), src.path().join("ln")).unwrap();
        let e = copy_tree(src.path(), dest.path(), &[("ln", "new.bin")], &NoProgress).unwrap_err();
        assert!(e.to_string().contains("ln is a symbolic link"), "{e}");
        // A missing source.
        assert!(matches!(
            copy_tree(src.path(), dest.path(), &[("nope", "n2")], &NoProgress),
            Err(Error::NotFound(p)) if p == src.path().join("nope")
        ));
    }

    #[test]
    fn copy_tree_from_takes_each_file_from_the_first_root_that_holds_it() {
        let (thin, base, dest) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let put = |root: &Path, rel: &str, data: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        // Enough files for both workers and several batches, in folders the destination
        // lacks (one per file, as advisories are laid out).
        let rels: Vec<String> = (0..300)
            .map(|i| format!("f/{:03}/{i}.json", i % 150))
            .collect();
        for (i, rel) in rels.iter().enumerate() {
            put(base.path(), rel, format!("base {i}").as_bytes());
            if i % 7 == 0 {
                put(thin.path(), rel, format!("thin {i}").as_bytes());
            }
        }
        fn job(rel: &str, end: End) -> CopyJob<'_> {
            CopyJob {
                src: rel,
                dest: rel,
                end,
                may_link: true,
            }
        }
        let roots = [thin.path(), base.path()];
        let jobs: Vec<CopyJob<'_>> = rels.iter().map(|r| job(r, End::Zero)).collect();
        let got = copy_tree_from(
            &roots,
            dest.path(),
            &jobs,
            Absent::Report,
            None,
            &NoProgress,
        )
        .unwrap();
        for (i, (rel, got)) in rels.iter().zip(&got).enumerate() {
            let (root, want) = match i % 7 {
                0 => (0, format!("thin {i}")),
                _ => (1, format!("base {i}")),
            };
            let (r, h) = got.unwrap();
            assert_eq!(
                (r, h.whole, h.size),
                (root, true, want.len() as u64),
                "{rel}"
            );
            assert_eq!(h.digest, Digest::of(want.as_bytes()), "{rel}");
            assert_eq!(
                std::fs::read(dest.path().join(rel)).unwrap(),
                want.as_bytes()
            );
        }
        // A folder by a file's name is not that file: the next root's copy is taken, and
        // where the last root has only a folder, no root holds it.
        std::fs::create_dir_all(thin.path().join("f/001/1.json")).unwrap();
        std::fs::create_dir_all(base.path().join("f/002/only-a-folder")).unwrap();
        let again = tempfile::tempdir().unwrap();
        let two = [
            job("f/001/1.json", End::Zero),
            job("f/002/only-a-folder", End::Zero),
        ];
        let got = copy_tree_from(
            &roots,
            again.path(),
            &two,
            Absent::Report,
            None,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            got[0].map(|(r, h)| (r, h.digest)),
            Some((1, Digest::of(b"base 1")))
        );
        assert!(got[1].is_none());
        // Held by neither: reported (or the error, with `Absent::Fail`).
        let nope = [job("f/none/x", End::Zero)];
        let got = copy_tree_from(
            &roots,
            dest.path(),
            &nope,
            Absent::Report,
            None,
            &NoProgress,
        )
        .unwrap();
        assert!(got[0].is_none());
        assert!(
            !dest.path().join("f/none").exists(),
            "a folder made for nothing"
        );
        let e = copy_tree_from(&roots, dest.path(), &nope, Absent::Fail, None, &NoProgress)
            .unwrap_err();
        assert!(
            matches!(e, Error::NotFound(ref p) if *p == base.path().join("f/none/x")),
            "{e:?}"
        );
        // A file larger than its bound is cut one byte past it, sized by fstat.
        put(base.path(), "big", &[7u8; 10_000]);
        let cut = [job("big", End::At(100))];
        let got =
            copy_tree_from(&roots, dest.path(), &cut, Absent::Report, None, &NoProgress).unwrap();
        let (_, h) = got[0].unwrap();
        assert_eq!((h.whole, h.size, h.digest()), (false, 10_000, None));
        assert_eq!(
            std::fs::metadata(dest.path().join("big")).unwrap().len(),
            101
        );
        // A link in the first root is refused, not followed and not skipped for the second.
        std::os::unix::fs::symlink(base.path().join("big"), thin.path().join("ln")).unwrap();
        put(base.path(), "ln", b"x");
        let ln = [job("ln", End::Zero)];
        let e = copy_tree_from(&roots, dest.path(), &ln, Absent::Report, None, &NoProgress)
            .unwrap_err();
        assert!(e.to_string().contains("ln is a symbolic link"), "{e}");
        // A folder on the way that is a link: refused too.
        std::os::unix::fs::symlink(base.path().join("f"), thin.path().join("g")).unwrap();
        let through = [job("g/000/0.json", End::Zero)];
        let e = copy_tree_from(
            &roots,
            dest.path(),
            &through,
            Absent::Report,
            None,
            &NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A destination folder that is a link is not written through when folders are made.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("d")).unwrap();
        put(base.path(), "d/new/x", b"x");
        let into = [job("d/new/x", End::Zero)];
        let e = copy_tree_from(
            &roots,
            dest.path(),
            &into,
            Absent::Report,
            None,
            &NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn copy_tree_from_links_only_plain_whole_files_of_its_link_root() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let (thin, base, dest) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let put = |root: &Path, rel: &str, data: &[u8], mode: u32| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        put(base.path(), "a/plain", b"plain", 0o644);
        put(base.path(), "a/private", b"private", 0o600);
        put(base.path(), "a/script.sh", b"script", 0o644);
        put(base.path(), "a/big", &[1u8; 5000], 0o644);
        put(thin.path(), "a/new", b"new", 0o644);
        let job = |rel: &'static str, end: End, may_link: bool| CopyJob {
            src: rel,
            dest: rel,
            end,
            may_link,
        };
        let jobs = [
            job("a/big", End::At(10), true),
            job("a/new", End::At(3), true),
            job("a/plain", End::At(5), true),
            job("a/private", End::At(7), true),
            job("a/script.sh", End::At(6), false),
        ];
        let roots = [thin.path(), base.path()];
        let got = copy_tree_from(
            &roots,
            dest.path(),
            &jobs,
            Absent::Report,
            Some(1),
            &NoProgress,
        )
        .unwrap();
        let ino = |root: &Path, rel: &str| std::fs::metadata(root.join(rel)).unwrap().ino();
        let mode = |rel: &str| {
            std::fs::metadata(dest.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        // Cut at its bound: neither linked nor copied whole.
        let (_, big) = got[0].unwrap();
        assert_eq!((big.whole, big.size), (false, 5000));
        assert!(
            !dest.path().join("a/big").exists(),
            "a cut file is left to the caller"
        );
        // From the thin root: a copy.
        assert_eq!(got[1].unwrap().0, 0);
        assert_ne!(ino(dest.path(), "a/new"), ino(thin.path(), "a/new"));
        // A plain file of the link root: linked, and hashed.
        let (root, plain) = got[2].unwrap();
        assert_eq!((root, plain.digest()), (1, Some(Digest::of(b"plain"))));
        assert_eq!(ino(dest.path(), "a/plain"), ino(base.path(), "a/plain"));
        // Another mode, or a job that may not link: copies of mode 0644.
        for (i, rel, data) in [
            (3, "a/private", &b"private"[..]),
            (4, "a/script.sh", b"script"),
        ] {
            assert_eq!(got[i].unwrap().1.digest(), Some(Digest::of(data)), "{rel}");
            assert_ne!(ino(dest.path(), rel), ino(base.path(), rel), "{rel}");
            assert_eq!(mode(rel), 0o644, "{rel}");
            assert_eq!(std::fs::read(dest.path().join(rel)).unwrap(), data);
        }
        assert_eq!(
            std::fs::metadata(base.path().join("a/private"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "the source's mode is its own"
        );
    }

    #[test]
    fn two_ends_hand_out_every_position_once() {
        for len in [0usize, 1, 5, 64, 129, 1000] {
            let ends = TwoEnds::new(len);
            let mut seen = vec![0u8; len];
            let (mut front, mut back) = (0, len);
            let mut turn = 0;
            while let Some(r) = ends.take(turn % 2 == 1, 7) {
                assert!(!r.is_empty() && r.len() <= 7, "{len}: {r:?}");
                if turn % 2 == 1 {
                    assert_eq!(r.end, back, "{len}");
                    back = r.start;
                } else {
                    assert_eq!(r.start, front, "{len}");
                    front = r.end;
                }
                for i in r {
                    seen[i] += 1;
                }
                turn += 1;
            }
            assert!(seen.iter().all(|&n| n == 1), "{len}: {seen:?}");
        }
    }

    #[test]
    fn umask_is_read_from_the_status_text() {
        assert_eq!(umask_in("Name:\tx\nUmask:\t0022\nState:\tR\n"), Some(0o022));
        assert_eq!(umask_in("Umask:\t0077\n"), Some(0o077));
        assert_eq!(umask_in("Name:\tx\n"), None);
        assert_eq!(umask_in("Umask:\tzz\n"), None);
    }

    #[test]
    fn copy_tree_gives_0644_under_a_default_acl() {
        use std::os::unix::fs::PermissionsExt as _;
        let (src, files) = tree();
        let dest = tempfile::tempdir().unwrap();
        let folder = dest.path().join("acl");
        std::fs::create_dir(&folder).unwrap();
        // A default ACL user::rw- group::r-- other::--- (posix_acl_xattr, version 2): new
        // files get no bit for others whatever the umask.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 0)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        match rustix::fs::setxattr(
            &folder,
            "system.posix_acl_default",
            &acl,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP) => {
                eprintln!("no ACLs on this file system: not tested");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        // The ACL works: a plain create leaves others nothing.
        std::fs::write(folder.join("plain"), b"x").unwrap();
        let plain = std::fs::metadata(folder.join("plain"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(plain & 0o007, 0, "{plain:o}");
        let list: Vec<(String, String)> = files
            .iter()
            .take(5)
            .enumerate()
            .map(|(i, (r, _))| (r.clone(), format!("acl/f{i}")))
            .collect();
        copy_tree(src.path(), dest.path(), &list, &NoProgress).unwrap();
        for (_, d) in &list {
            let mode = std::fs::metadata(dest.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644, "{d}");
        }
    }
}
