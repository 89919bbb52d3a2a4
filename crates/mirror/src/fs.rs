//! File-system helpers every stage shares: bounded reads of metadata, the walk of a bundle
//! folder, atomic and create-only writes, and staging folders that become their target only
//! when complete.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Field, IoContext as _, Result};
use crate::path::BundlePath;

/// Metadata files by name (content of those present).
pub(crate) type Metadata = std::collections::BTreeMap<String, Vec<u8>>;

/// What [`open_regular`] found at a path.
pub(crate) enum Opened {
    /// A regular file, open for reading, and its length when opened.
    File(std::fs::File, u64),
    /// Nothing there.
    Missing,
    /// A link, a folder, a FIFO, a device...: never read.
    NotRegular,
}

/// Whether [`open_regular`] takes a link at the path's last component to what it names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// A link is [`Opened::NotRegular`] (bundle metadata).
    Refuse,
    /// A link to a regular file is opened (a path the user named, such as an archive).
    Follow,
}

/// Open `path` for reading if it is a regular file. Checked twice: by `lstat` (`stat` with
/// [`Links::Follow`]) before opening, so no device or FIFO is ever opened, and on the
/// descriptor after (`fstat`), the open never waiting (`O_NONBLOCK`) and, with
/// [`Links::Refuse`], refusing a link (`O_NOFOLLOW`): a link or a FIFO swapped in between the
/// two is refused, not followed or read — what was checked is what is read.
pub(crate) fn open_regular(path: &Path, links: Links) -> io::Result<Opened> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt as _;
    let before = match links {
        Links::Refuse => std::fs::symlink_metadata(path),
        Links::Follow => std::fs::metadata(path),
    };
    match before {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(e),
        Ok(m) if !m.file_type().is_file() => return Ok(Opened::NotRegular),
        Ok(_) => {}
    }
    let mut flags = OFlags::NONBLOCK | OFlags::NOCTTY;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path);
    match opened {
        Ok(f) => {
            let m = f.metadata()?;
            if m.file_type().is_file() {
                Ok(Opened::File(f, m.len()))
            } else {
                Ok(Opened::NotRegular)
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Ok(Opened::NotRegular)
        }
        Err(e) => Err(e),
    }
}

/// Read a metadata file of a bundle folder (bounded, also if it grows while read); `None` if
/// absent.
pub(crate) fn read_metadata_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = BundlePath::new(name).map_err(Error::input)?.under(dir);
    let too_large = |len: u64| {
        Error::metadata(
            Field::file(name),
            format!(
                "{name} is {len} bytes, above the {}-byte limit for bundle metadata",
                crate::MAX_METADATA_BYTES
            ),
        )
    };
    let (f, len) = match open_regular(&p, Links::Refuse).at(&p)? {
        Opened::Missing => return Ok(None),
        Opened::NotRegular => return Err(Error::metadata_not_regular(name)),
        Opened::File(f, len) => (f, len),
    };
    if len > crate::MAX_METADATA_BYTES {
        return Err(too_large(len));
    }
    read_to_limit(f, len, crate::MAX_METADATA_BYTES)
        .at(&p)?
        .map(Some)
        .ok_or_else(|| {
            Error::metadata(
                Field::file(name),
                format!(
                    "{name} grew above the {}-byte limit for bundle metadata while it was read",
                    crate::MAX_METADATA_BYTES
                ),
            )
        })
}

/// All of `r` if it holds at most `limit` bytes (`None` if more: never more than `limit + 1`
/// read); `len` is the expected size, to size the buffer once.
pub(crate) fn read_to_limit(r: impl io::Read, len: u64, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(usize::try_from(len.min(limit)).unwrap_or(0));
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// Every regular file under `dir`, as bundle-relative `/` paths, sorted. Links and other
/// special files are refused.
pub(crate) fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk_each(dir, &mut |rel| {
        out.push(rel.to_string());
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// Every regular file under `dir` as a bundle-relative `/` path, streamed (memory: the
/// folders still to visit). Links and special files are refused, as by the in-memory walk.
///
/// Folders are opened beneath `dir` by descriptor ([`crate::hash::open_dir_beneath`]: no link
/// followed, no path walked from `/`) and read with `getdents` into one 32 KiB buffer reused
/// for every folder (a folder of a few hundred advisory files is one or two calls); the path
/// handed to `each` is one reused buffer (no allocation per file).
pub(crate) fn walk_each(dir: &Path, each: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    let root = crate::hash::open_root(dir)?;
    let mut stack = vec![String::new()];
    let mut reader = FolderReader::new(dir);
    while let Some(rel) = stack.pop() {
        reader.read(&root, &rel, &mut |child, _, folder| {
            if folder {
                stack.push(child.to_string());
                Ok(())
            } else {
                each(child)
            }
        })?;
    }
    Ok(())
}

/// Every regular file under `dir` as a bundle-relative `/` path, streamed in byte order of
/// the paths (the order of [`walk`], without holding the list): each folder's entries are
/// read whole, sorted — a folder's name compared with its `/`, as its files' paths compare —
/// and a folder is walked where it sorts. Memory: the names of the folders on the current
/// branch (one arena each). Links and special files are refused as by [`walk_each`]; a
/// folder's problems are met when it is read, before any of its files is handed on.
pub(crate) fn walk_sorted_each(dir: &Path, each: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    let root = crate::hash::open_root(dir)?;
    let mut reader = FolderReader::new(dir);
    let mut levels = vec![SortedFolder::read(&mut reader, &root, String::new())?];
    let mut path = String::new();
    while let Some(top) = levels.last_mut() {
        let Some(span) = top.next_span() else {
            levels.pop();
            continue;
        };
        let name = top.names.get(span).unwrap_or_default();
        path.clear();
        if !top.rel.is_empty() {
            path.push_str(&top.rel);
            path.push('/');
        }
        match name.strip_suffix('/') {
            Some(folder) => {
                path.push_str(folder);
                let next = SortedFolder::read(&mut reader, &root, path.clone())?;
                levels.push(next);
            }
            None => {
                path.push_str(name);
                each(&path)?;
            }
        }
    }
    Ok(())
}

/// One folder's entries for [`walk_sorted_each`], sorted: the names in one buffer, a
/// folder's with its `/` (so that plain byte order is the order of the paths under it).
struct SortedFolder {
    rel: String,
    names: String,
    /// Where each name lies in `names` (start and end: 8 bytes a name where a
    /// `Range<usize>` took 16 — a flat folder of a million names is held whole), in sorted
    /// order.
    spans: Vec<(u32, u32)>,
    next: usize,
}

impl SortedFolder {
    fn read(
        reader: &mut FolderReader<'_>,
        root: &rustix::fd::OwnedFd,
        rel: String,
    ) -> Result<Self> {
        let (mut names, mut spans) = (String::new(), Vec::new());
        reader.read(root, &rel, &mut |_, name, folder| {
            let start = names.len();
            names.push_str(name);
            if folder {
                names.push('/');
            }
            match (u32::try_from(start), u32::try_from(names.len())) {
                (Ok(a), Ok(b)) => spans.push((a, b)),
                _ => {
                    return Err(Error::input(format!(
                        "folder {rel:?} holds more than 4 GiB of file names"
                    )))
                }
            }
            Ok(())
        })?;
        let bytes = names.as_bytes();
        let name = |&(a, b): &(u32, u32)| bytes.get(a as usize..b as usize).unwrap_or_default();
        spans.sort_unstable_by(|x, y| name(x).cmp(name(y)));
        Ok(SortedFolder {
            rel,
            names,
            spans,
            next: 0,
        })
    }

    /// Where the next name (a folder's ending in `/`) lies in `names`.
    fn next_span(&mut self) -> Option<std::ops::Range<usize>> {
        let &(a, b) = self.spans.get(self.next)?;
        self.next += 1;
        Some(a as usize..b as usize)
    }
}

/// Reads folders of a walk: one `getdents` buffer and one path buffer reused for all.
struct FolderReader<'a> {
    dir: &'a Path,
    dents: Vec<u8>,
    child: String,
}

impl<'a> FolderReader<'a> {
    fn new(dir: &'a Path) -> Self {
        FolderReader {
            dir,
            dents: Vec::with_capacity(DENTS_BUFFER),
            child: String::new(),
        }
    }

    /// Call `f` with each entry of the folder `rel` of the walked folder (opened beneath
    /// `root`, no link followed): its relative path, its name and whether it is a folder.
    /// Links and anything but regular files and folders are refused; so is a name without
    /// a UTF-8 form.
    fn read(
        &mut self,
        root: &rustix::fd::OwnedFd,
        rel: &str,
        f: &mut dyn FnMut(&str, &str, bool) -> Result<()>,
    ) -> Result<()> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
        let dir = self.dir;
        let abs = || {
            if rel.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(rel)
            }
        };
        let fd = if rel.is_empty() {
            rustix::fs::openat(
                root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        } else {
            crate::hash::open_dir_beneath(root, rel)
        }
        .map_err(|e| crate::hash::tree_error(dir, rel, e))?;
        let mut entries = RawDir::new(&fd, self.dents.spare_capacity_mut());
        while let Some(e) = entries.next() {
            let e = match e {
                Ok(e) => e,
                // The folder was removed meanwhile: nothing more in it (as `Dir` reads it).
                Err(rustix::io::Errno::NOENT) => break,
                Err(e) => return Err(Error::io(abs(), e.into())),
            };
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::str::from_utf8(name).map_err(|_| {
                // The field names the folder; the name itself has no UTF-8 form.
                Error::content(
                    Field::file(rel),
                    format!("{}: a file name is not UTF-8", abs().display()),
                )
            })?;
            let child = &mut self.child;
            child.clear();
            if !rel.is_empty() {
                child.push_str(rel);
                child.push('/');
            }
            child.push_str(name);
            let mut ft = e.file_type();
            if ft == FileType::Unknown {
                // A file system without types in its folder entries.
                let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(dir.join(&*child), e.into()))?;
                ft = FileType::from_raw_mode(st.st_mode);
            }
            match ft {
                FileType::Directory => f(child, name, true)?,
                FileType::RegularFile => f(child, name, false)?,
                FileType::Symlink => return Err(Error::content_link(child)),
                _ => {
                    return Err(Error::content(
                        Field::file(child.as_str()),
                        format!("{child} is not a regular file: bundles hold regular files only"),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Bytes of the `getdents` buffer of [`walk_each`]: some 800 entries of advisory names per
/// call (the longest name, 255 bytes, fits many times over).
const DENTS_BUFFER: usize = 32 << 10;

/// Write a file atomically (temp file in the same folder, then rename), mode 0644.
pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    // Never rename over a device or FIFO (`/dev/null`): write straight into it.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .at(path)?;
        return f.write_all(data).at(path);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".stella-tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(data).at(path)?;
    tmp.as_file().sync_all().at(path)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Create `dest` (never overwriting), open for writing.
pub(crate) fn create_new(dest: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .at(dest)
}

/// Create `dest` (never overwriting) with `bytes`.
pub(crate) fn write_new(dest: &Path, bytes: &[u8]) -> Result<()> {
    create_new(dest)?.write_all(bytes).at(dest)
}

pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).at(path)?;
    read_to_limit(f, 0, limit)
        .at(path)?
        .ok_or_else(|| larger_than(path, limit))
}

/// `path` holds more than `limit` bytes.
pub(crate) fn larger_than(path: &Path, limit: u64) -> Error {
    Error::input(format!(
        "{} is larger than the {limit}-byte limit",
        path.display()
    ))
}

/// Removes a staging folder unless disarmed.
pub(crate) struct Staging {
    pub(crate) path: PathBuf,
    armed: bool,
}

impl Staging {
    /// A fresh folder beside `target` (same file system, so the final rename is atomic).
    pub(crate) fn beside(target: &Path, what: &str) -> Result<Self> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).at(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".stella-{what}-"))
            .tempdir_in(&parent)
            .at(&parent)?;
        Ok(Staging {
            path: dir.keep(),
            armed: true,
        })
    }

    /// Move the staging folder to `target` (which must not exist, or be an empty folder).
    pub(crate) fn commit(mut self, target: &Path) -> Result<()> {
        if target.exists() {
            std::fs::remove_dir(target).at(target)?;
        }
        std::fs::rename(&self.path, target).at(target)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Refuse an output that exists and is not an empty folder.
pub(crate) fn check_output_free(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Error::input(format!(
                    "output folder {} exists and is not empty",
                    out.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::input(format!("output {}: {e}", out.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &Path) -> &'static str {
        match open_regular(p, Links::Refuse).expect("open") {
            Opened::File(..) => "file",
            Opened::Missing => "missing",
            Opened::NotRegular => "not regular",
        }
    }

    /// Only a regular file is opened: a link (also to a regular file, unless links are
    /// followed), a folder and a FIFO are refused — the FIFO without waiting for a writer —, a missing path is `Missing`.
    #[test]
    fn open_regular_opens_regular_files_only_and_never_blocks() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("f");
        std::fs::write(&file, b"12345").expect("write");
        match open_regular(&file, Links::Refuse).expect("open") {
            Opened::File(mut f, len) => {
                assert_eq!(len, 5);
                let mut s = String::new();
                f.read_to_string(&mut s).expect("read");
                assert_eq!(s, "12345");
            }
            _ => panic!("a regular file"),
        }
        std::os::unix::fs::symlink(&file, d.path().join("link")).expect("symlink");
        assert_eq!(kind(&d.path().join("link")), "not regular");
        std::os::unix::fs::symlink("/nowhere", d.path().join("dangling")).expect("symlink");
        assert_eq!(kind(&d.path().join("dangling")), "not regular");
        assert_eq!(kind(d.path()), "not regular");
        assert_eq!(kind(&d.path().join("absent")), "missing");
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        assert_eq!(kind(&fifo), "not regular");
        // Following links (a path the user named): a link to a file is that file; a link to
        // a FIFO or a folder is still refused, and nothing waits.
        let follow = |p: &Path| match open_regular(p, Links::Follow).expect("open") {
            Opened::File(_, len) => format!("file of {len}"),
            Opened::Missing => "missing".into(),
            Opened::NotRegular => "not regular".into(),
        };
        assert_eq!(follow(&d.path().join("link")), "file of 5");
        std::os::unix::fs::symlink(&fifo, d.path().join("to-fifo")).expect("symlink");
        assert_eq!(follow(&d.path().join("to-fifo")), "not regular");
        assert_eq!(follow(&d.path().join("dangling")), "missing");
        assert_eq!(follow(d.path()), "not regular");
    }

    /// The sorted walk hands on the paths the in-memory walk sorts, already in that order —
    /// names around `/` in byte order (`a-b` < `a/…` < `a.json` < `a0`), a folder beside a
    /// file of a longer name, multi-byte names, an empty folder, deep folders, a folder
    /// larger than one `getdents` buffer — and refuses a link or a FIFO as the walk does.
    #[test]
    fn the_sorted_walk_lists_paths_in_byte_order() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        let mut files = vec![
            "a!", "a-b/x", "a/b-c", "a/b/c", "a.json", "a0/z", "b", "é/1", "e/1", "z-/q", "z/q",
            "z.q",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        files.push(format!("deep/{}/f", ["n"; 20].join("/")));
        for i in 0..3000 {
            files.push(format!("big/{}-{i}", "x".repeat(i % 40)));
        }
        for f in &files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f.as_bytes()).expect("write");
        }
        std::fs::create_dir_all(root.join("empty/inner")).expect("mkdir");
        let mut streamed = Vec::new();
        walk_sorted_each(root, &mut |p| {
            streamed.push(p.to_string());
            Ok(())
        })
        .expect("walk");
        let listed = walk(root).expect("walk");
        files.sort();
        assert_eq!(listed, files);
        assert_eq!(streamed, files);

        // An error from the callback stops the walk and comes back as it was.
        let mut n = 0;
        let e = walk_sorted_each(root, &mut |_| {
            n += 1;
            if n == 5 {
                return Err(Error::input("enough"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!((n, e.to_string().as_str()), (5, "enough"));

        // A link, and a FIFO, deep in the tree: refused, as by the unsorted walk.
        std::os::unix::fs::symlink(root.join("b"), root.join("z/link")).expect("symlink");
        let sorted_err = walk_sorted_each(root, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        let err = walk_each(root, &mut |_| Ok(())).unwrap_err().to_string();
        assert_eq!(sorted_err, err);
        assert!(err.contains("z/link"), "{err}");
        std::fs::remove_file(root.join("z/link")).expect("rm");
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("a0/fifo"))
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let e = walk_sorted_each(root, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a0/fifo is not a regular file"), "{e}");
    }

    /// A metadata read is bounded by the limit, whatever length the file had when opened.
    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        let big = std::io::repeat(b'x');
        assert_eq!(read_to_limit(big, 3, 10).expect("read"), None);
        let exact = &b"0123456789"[..];
        assert_eq!(
            read_to_limit(exact, 0, 10).expect("read").as_deref(),
            Some(exact)
        );
        let d = tempfile::tempdir().expect("tempdir");
        assert!(read_metadata_file(d.path(), crate::names::SUMS)
            .expect("absent")
            .is_none());
        std::os::unix::fs::symlink("/etc/hostname", d.path().join(crate::names::SUMS))
            .expect("symlink");
        let e = read_metadata_file(d.path(), crate::names::SUMS).expect_err("a link");
        assert!(e.to_string().contains("regular"), "{e}");
    }
}
