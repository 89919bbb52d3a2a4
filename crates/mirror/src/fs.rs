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
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
    let root = crate::hash::open_root(dir)?;
    let mut stack = vec![String::new()];
    let mut rel_child = String::new();
    let mut dents: Vec<u8> = Vec::with_capacity(DENTS_BUFFER);
    while let Some(rel) = stack.pop() {
        let abs = || {
            if rel.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(&rel)
            }
        };
        let fd = if rel.is_empty() {
            rustix::fs::openat(
                &root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        } else {
            crate::hash::open_dir_beneath(&root, &rel)
        }
        .map_err(|e| crate::hash::tree_error(dir, &rel, e))?;
        let mut entries = RawDir::new(&fd, dents.spare_capacity_mut());
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
                    Field::file(rel.as_str()),
                    format!("{}: a file name is not UTF-8", abs().display()),
                )
            })?;
            rel_child.clear();
            if !rel.is_empty() {
                rel_child.push_str(&rel);
                rel_child.push('/');
            }
            rel_child.push_str(name);
            let mut ft = e.file_type();
            if ft == FileType::Unknown {
                // A file system without types in its folder entries.
                let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(dir.join(&rel_child), e.into()))?;
                ft = FileType::from_raw_mode(st.st_mode);
            }
            match ft {
                FileType::Directory => stack.push(rel_child.clone()),
                FileType::RegularFile => each(&rel_child)?,
                FileType::Symlink => return Err(Error::content_link(&rel_child)),
                _ => {
                    return Err(Error::content(
                        Field::file(rel_child.as_str()),
                        format!(
                            "{rel_child} is not a regular file: bundles hold regular files only"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
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

/// Create `dest` (never overwriting) with `bytes`.
pub(crate) fn write_new(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .at(dest)?;
    f.write_all(bytes).at(dest)
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
