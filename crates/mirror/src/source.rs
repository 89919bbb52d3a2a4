//! One verification entry point behind the three forms a bundle arrives in: a folder, its
//! envelope (or, for library callers, a detached one beside or in it), or an archive read as a
//! stream.
//!
//! Every command that takes a bundle goes through [`Source::verify`]: `mirror verify`,
//! `unpack` ([`crate::unpack::unpack`]), `apply` ([`crate::thin::apply`]) and `load`
//! ([`crate::load::load`]). What differs between them is chosen by the caller, never by the
//! verification:
//!
//! - **how a path is classified**: one constructor per command's rule
//!   ([`Source::for_verify`], [`Source::for_unpack`], [`Source::for_apply`],
//!   [`Source::for_load`]);
//! - **what is left on disk** ([`Output`]): nothing (`verify`), an archive's files moved to a
//!   destination once they verified (`unpack`), or kept in a staging folder for as long as the
//!   result lives (`apply`, `load`); a folder is always verified where it is;
//! - **which files the caller hashes itself** ([`Output::deferring`]: `load` leaves a
//!   folder's image blobs to the push, which hashes them anyway), which changes the report's
//!   type ([`Report`], holding a [`PartlyHashedBundle`] or a full [`VerifiedBundle`]);
//! - **the limits** ([`Limits`]: `unpack --max-size`, `load`'s own).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::archive::{read_archive, Limits};
use crate::error::{Error, Field, IoContext as _, Result};
use crate::fs::Staging;
use crate::hash::Progress;
use crate::manifest::Manifest;
use crate::names;
use crate::path::BundlePath;
use crate::verify::{
    self, CheckedBundle, Options, PartlyHashedBundle, VerifiedBundle, VerifiedMetadata,
};

/// Where a bundle to verify is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A bundle folder.
    Folder(&'a Path),
    /// An envelope file: the bundle is its folder, and the envelope stands in for the
    /// folder's `manifest.dsse` (a detached signature) unless it is that file.
    Envelope(&'a Path),
    /// A `.tar.gz`/`.tar.zst`/`.tar` archive, verified from its stream.
    Archive(&'a Path),
}

impl<'a> Source<'a> {
    /// `mirror verify`'s rule: a folder; the folder's own `manifest.dsse`; a file named as an
    /// archive (`.tar`, `.tar.gz`, `.tgz`, `.tar.zst`, ...) or, whatever its name, a regular
    /// file that starts as one (gzip or zstd magic, a tar header). Anything else — a detached
    /// envelope under another name, which could never pass (inside the folder it is an
    /// unlisted file, outside it names the wrong folder), a file of another kind, a device — is
    /// refused with [`Error::Input`] naming what is accepted. A missing path is
    /// [`Error::NotFound`].
    pub fn for_verify(path: &'a Path) -> Result<Self> {
        Self::folder_or_file(path, |file| {
            if is_own_envelope(file) {
                Ok(Source::Envelope(file))
            } else if is_archive_name(file) || starts_as_archive(file)? {
                Ok(Source::Archive(file))
            } else {
                Err(Error::input(format!(
                    "{}: not a bundle: `mirror verify` takes a bundle folder, its manifest.dsse, \
                     a bundle archive (.tar, .tar.gz, .tar.zst) or its detached header \
                     ({}); a detached envelope is verified as the folder's manifest.dsse",
                    file.display(),
                    names::HEADER
                )))
            }
        })
    }

    /// A folder is a folder and a missing path is [`Error::NotFound`] for every command that
    /// takes either; what an existing non-folder is, `file` decides (each command's own rule).
    fn folder_or_file(path: &'a Path, file: impl FnOnce(&'a Path) -> Result<Self>) -> Result<Self> {
        if path.is_dir() {
            Ok(Source::Folder(path))
        } else if !path.exists() {
            Err(Error::NotFound(path.to_path_buf()))
        } else {
            file(path)
        }
    }

    /// `unpack`'s rule: a regular file, read as an archive whatever its name (a folder or a
    /// missing path is [`Error::NotFound`]).
    pub fn for_unpack(path: &'a Path) -> Result<Self> {
        if path.is_file() {
            Ok(Source::Archive(path))
        } else {
            Err(Error::NotFound(path.to_path_buf()))
        }
    }

    /// `apply`'s rule for the thin bundle: a folder, else an archive (a missing path is
    /// refused when the archive is opened).
    pub fn for_apply(path: &'a Path) -> Self {
        if path.is_dir() {
            Source::Folder(path)
        } else {
            Source::Archive(path)
        }
    }

    /// `load`'s rule: a folder; the folder's own `manifest.dsse`; else a regular file is an
    /// archive whatever its name (a detached envelope is not loaded). A missing path, or one
    /// that is neither a folder nor a regular file, is [`Error::NotFound`].
    pub fn for_load(path: &'a Path) -> Result<Self> {
        Self::folder_or_file(path, |file| {
            if is_own_envelope(file) {
                Ok(Source::Envelope(file))
            } else if file.is_file() {
                Ok(Source::Archive(file))
            } else {
                Err(Error::NotFound(file.to_path_buf()))
            }
        })
    }

    /// The folder the bundle's files are read from: the folder itself, or an envelope's folder
    /// (`.` for a bare file name); `None` for an archive, read as a stream.
    pub fn folder(&self) -> Option<PathBuf> {
        match self {
            Source::Folder(dir) => Some(dir.to_path_buf()),
            Source::Envelope(path) => Some(folder_of(path)),
            Source::Archive(_) => None,
        }
    }

    /// Verify the bundle: the same rules ([`CheckedBundle::verify`](crate::CheckedBundle::verify), then every content
    /// file) whatever form it came in, with `limits` (the archive caps, and when metadata is
    /// streamed), leaving on disk what `output` asks for.
    ///
    /// A folder (or an envelope's folder) is verified where it is. An archive is read as a
    /// stream: with [`Output::verify_only`] nothing is written; otherwise every entry is
    /// checked as it is written into a fresh staging folder, the `scripts/*.sh` that arrived
    /// are made executable, and the folder is moved to its destination ([`Output::moved_to`]) or
    /// kept until the result is dropped ([`Output::staged_in`]). On any failure nothing is
    /// left behind and a destination is untouched.
    pub fn verify<H: Hashing>(
        &self,
        opts: &Options<'_>,
        limits: &Limits,
        output: Output<'_, H>,
        progress: &dyn Progress,
    ) -> Result<Verified<H::Report>> {
        let stream = &limits.stream;
        let report = match *self {
            Source::Archive(path) => {
                let (bundle, dir, staging) = read(path, output.files, limits, opts, progress)?;
                return Ok(Verified {
                    report: H::full(bundle),
                    dir,
                    _staging: staging,
                });
            }
            Source::Folder(dir) => match output.hashing.deferring(dir, opts, stream, progress) {
                Some(r) => r?,
                None => H::full(verify::verify_dir_with(dir, opts, stream, progress)?),
            },
            Source::Envelope(path) => {
                let dir = folder_of(path);
                // Only the folder's own envelope defers: a detached one hashes everything.
                let deferred = is_own_envelope(path)
                    .then(|| output.hashing.deferring(&dir, opts, stream, progress))
                    .flatten();
                match deferred {
                    Some(r) => r?,
                    None => H::full(verify_envelope(path, opts, stream, progress)?),
                }
            }
        };
        Ok(Verified {
            report,
            dir: self.folder(),
            _staging: None,
        })
    }
}

/// Does the regular file `path` start as an archive: gzip or zstd magic, or a POSIX tar
/// header (`ustar` at offset 257)? A file that is not regular (a device, a FIFO) is not
/// read and is no archive.
pub(crate) fn starts_as_archive(path: &Path) -> Result<bool> {
    use crate::fs::{open_regular, Links, Opened};
    use std::io::Read as _;
    // Looked at before opening and again on the descriptor (`open_regular`): opening a FIFO
    // would wait for a writer.
    let f = match open_regular(path, Links::Follow).at(path)? {
        Opened::File(f, _) => f,
        Opened::NotRegular => return Ok(false),
        Opened::Missing => return Err(Error::NotFound(path.to_path_buf())),
    };
    let mut head = Vec::with_capacity(262);
    f.take(262).read_to_end(&mut head).at(path)?;
    Ok(crate::codec::Compression::from_magic(&head).is_some()
        || head.get(257..262) == Some(b"ustar"))
}

/// Is `path` named as an archive (`mirror verify` tells an archive from an envelope by name)?
pub(crate) fn is_archive_name(path: &Path) -> bool {
    crate::codec::Compression::from_name(path).is_some()
        || path.extension().is_some_and(|e| e == "tar")
}

/// What a verification leaves on disk, and which content files the caller hashes itself.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a, H = HashAll> {
    files: Files<'a>,
    hashing: H,
}

#[derive(Debug, Clone, Copy)]
enum Files<'a> {
    /// Nothing written.
    Nowhere,
    /// Staged beside the destination, then renamed to it.
    Into(&'a Path),
    /// Staged in a fresh folder `.stella-LABEL-*` in this folder, removed with the result.
    StagedIn(&'a Path, &'static str),
}

impl<'a> Output<'a, HashAll> {
    /// Nothing on disk (`mirror verify`): an archive is verified from its stream.
    pub fn verify_only() -> Self {
        Output {
            files: Files::Nowhere,
            hashing: HashAll,
        }
    }

    /// An archive's files end up in `dest` (`unpack`): written into a staging folder beside
    /// it as they stream, and renamed to `dest` only once the bundle verified. `dest` must not
    /// exist or be an empty folder when the rename comes (the caller checks it first, before
    /// a byte is read, to fail early).
    pub fn moved_to(dest: &'a Path) -> Self {
        Output {
            files: Files::Into(dest),
            hashing: HashAll,
        }
    }

    /// An archive's files are written into a fresh folder `.stella-LABEL-*` created
    /// in `parent` (created if missing), found at [`Verified::dir`] and removed when the
    /// [`Verified`] is dropped (`apply` reads the thin bundle's files from there, `load`
    /// pushes from there).
    pub fn staged_in(parent: &'a Path, label: &'static str) -> Self {
        Output {
            files: Files::StagedIn(parent, label),
            hashing: HashAll,
        }
    }

    /// The same output, except that the content files `defer(folder, signed manifest)` names
    /// are only checked for presence and size when the bundle is a folder (or its own
    /// envelope) whose metadata is below the streaming threshold: the caller promises to hash
    /// them before using them, and gets a [`Report`] that says whether it must. An archive
    /// hashes every file as it streams, a streamed folder never holds the signed list, a
    /// detached envelope is not the folder's own: those are fully hashed.
    pub fn deferring<F>(self, defer: F) -> Output<'a, Defer<F>>
    where
        F: Fn(&Path, &Manifest) -> HashSet<String>,
    {
        Output {
            files: self.files,
            hashing: Defer(defer),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::HashAll {}
    impl<F> Sealed for super::Defer<F> {}
}

/// Which content files the verification hashes: all ([`HashAll`], a [`VerifiedBundle`]) or all
/// but those a [`Defer`] names ([`Report`]).
pub trait Hashing: sealed::Sealed {
    /// The report the verification returns.
    type Report;
    /// A report whose every file was hashed.
    fn full(bundle: VerifiedBundle) -> Self::Report;
    /// Verify the folder `dir` leaving some files to the caller, or `None` when this mode
    /// defers nothing there (the caller then hashes everything).
    fn deferring(
        &self,
        dir: &Path,
        opts: &Options<'_>,
        limits: &crate::streamed::Limits,
        progress: &dyn Progress,
    ) -> Option<Result<Self::Report>>;
}

/// Every content file hashed.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashAll;

impl Hashing for HashAll {
    type Report = VerifiedBundle;

    fn full(bundle: VerifiedBundle) -> VerifiedBundle {
        bundle
    }

    fn deferring(
        &self,
        _: &Path,
        _: &Options<'_>,
        _: &crate::streamed::Limits,
        _: &dyn Progress,
    ) -> Option<Result<VerifiedBundle>> {
        None
    }
}

/// The files a folder's `F(folder, signed manifest)` names are left to the caller
/// ([`Output::deferring`]).
#[derive(Debug, Clone, Copy)]
pub struct Defer<F>(F);

impl<F: Fn(&Path, &Manifest) -> HashSet<String>> Hashing for Defer<F> {
    type Report = Report;

    fn full(bundle: VerifiedBundle) -> Report {
        Report::Full(bundle)
    }

    fn deferring(
        &self,
        dir: &Path,
        opts: &Options<'_>,
        limits: &crate::streamed::Limits,
        progress: &dyn Progress,
    ) -> Option<Result<Report>> {
        // A big folder (metadata above the in-memory threshold) is verified streamed and
        // hashed whole: its signed file list is never held, so nothing can be deferred.
        if crate::streamed::wants_stream(dir, limits) {
            return None;
        }
        Some(
            verify::verify_dir_deferring(dir, opts, |m| (self.0)(dir, m), progress)
                .map(Report::PartlyHashed),
        )
    }
}

/// A report from an [`Output::deferring`] verification: full, or with files the caller must
/// still hash (a distinct type it turns into a full report once it has).
#[derive(Debug, Clone)]
pub enum Report {
    Full(VerifiedBundle),
    PartlyHashed(PartlyHashedBundle),
}

impl Report {
    /// The verified metadata (signature, header, checksum files, freshness all passed).
    pub fn meta(&self) -> &VerifiedMetadata {
        match self {
            Report::Full(r) => &r.meta,
            Report::PartlyHashed(p) => p.meta(),
        }
    }
}

/// A verified bundle, and where its files are.
pub struct Verified<R> {
    /// The report: a [`VerifiedBundle`], or a [`Report`] for [`Output::deferring`].
    pub report: R,
    dir: Option<PathBuf>,
    /// The staging folder of [`Output::staged_in`], removed with this value.
    _staging: Option<Staging>,
}

impl<R> Verified<R> {
    /// The folder holding the verified files: the bundle folder (or an envelope's), or an
    /// archive's destination or staging folder; `None` for an archive verified with
    /// [`Output::verify_only`] (read as a stream, nothing on disk).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl<R: std::fmt::Debug> std::fmt::Debug for Verified<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("report", &self.report)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The archive arm: read `path` as a stream, writing its files where `files` says.
fn read(
    path: &Path,
    files: Files<'_>,
    limits: &Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(VerifiedBundle, Option<PathBuf>, Option<Staging>)> {
    let staging = match files {
        Files::Nowhere => {
            let (_, report) = read_archive(path, None, *limits, opts, progress)?;
            return Ok((report, None, None));
        }
        Files::Into(dest) => Staging::beside(dest, "unpack")?,
        // (`beside` a name in `parent`: the staging folder is created in `parent`.)
        Files::StagedIn(parent, label) => Staging::beside(&parent.join(label), label)?,
    };
    let (obs, report) = read_archive(path, Some(&staging.path), *limits, opts, progress)?;
    set_script_modes(&staging.path, &obs, &report)?;
    match files {
        Files::Into(dest) => {
            // The result is a folder like any other, whatever the umask. (A staging folder
            // that stays in place keeps the mode it was created with, as `load`'s and
            // `apply`'s temporary folders did.)
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&staging.path, std::fs::Permissions::from_mode(0o755))
                .at(&staging.path)?;
            staging.commit(dest)?;
            Ok((report, Some(dest.to_path_buf()), None))
        }
        _ => Ok((report, Some(staging.path.clone()), Some(staging))),
    }
}

/// Make the `scripts/*.sh` an archive delivered executable.
fn set_script_modes(
    dir: &Path,
    obs: &crate::archive::Observed,
    report: &VerifiedBundle,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let set = |p: &str| -> Result<()> {
        let script = crate::path::file_mode(p) == 0o755;
        if script && !(obs.index.is_some() && report.from_base.contains(p)) {
            let abs = BundlePath::new(p)
                .map_err(|e| Error::content(Field::file(p), e))?
                .under(dir);
            std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o755)).at(&abs)?;
        }
        Ok(())
    };
    for p in obs.files.keys() {
        set(p)?;
    }
    // A big bundle's files are in the signed index (those a thin one lacks were not carried).
    if let Some(ix) = &obs.index {
        let mut files = ix.cursor();
        while let Some(e) = files.next_entry() {
            set(e.path)?;
        }
    }
    Ok(())
}

/// The folder of a file (`.` for a bare file name).
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Is `path` a folder's own `manifest.dsse` (not a detached envelope beside it)?
pub(crate) fn is_own_envelope(path: &Path) -> bool {
    path.file_name() == Some(std::ffi::OsStr::new(names::ENVELOPE))
}

fn verify_envelope(
    path: &Path,
    opts: &Options<'_>,
    limits: &crate::streamed::Limits,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let dir = folder_of(path);
    let own = is_own_envelope(path);
    if own && crate::streamed::wants_stream(&dir, limits) {
        // The folder's own envelope, too large for memory: the folder, streamed.
        return verify::verify_dir_streamed(&dir, opts, limits, progress);
    }
    let mut meta = verify::read_dir_metadata(&dir)?;
    if !own {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        meta.insert(names::ENVELOPE.into(), bytes);
    }
    let vm = CheckedBundle::from_metadata(&meta)?.verify(opts)?;
    drop(meta);
    let content = verify::check_content_of(&dir, &vm.manifest, progress)?;
    Ok(VerifiedBundle::new(vm, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_names_the_folder_its_files_are_read_from() {
        let dir = Path::new("some/bundle");
        assert_eq!(Source::Folder(dir).folder(), Some(dir.to_path_buf()));
        let own = Path::new("some/bundle/manifest.dsse");
        assert_eq!(Source::Envelope(own).folder(), Some(dir.to_path_buf()));
        assert!(is_own_envelope(own));
        let detached = Path::new("release.dsse");
        assert_eq!(
            Source::Envelope(detached).folder(),
            Some(PathBuf::from("."))
        );
        assert!(!is_own_envelope(detached));
        assert_eq!(Source::Archive(Path::new("b.tar.zst")).folder(), None);
    }

    #[test]
    fn archives_are_told_by_name() {
        for yes in ["b.tar", "b.tar.gz", "b.tgz", "b.tar.zst", "dir/x.tar.zst"] {
            assert!(is_archive_name(Path::new(yes)), "{yes}");
        }
        for no in ["manifest.dsse", "release.dsse", "b.zip", "tar", "b.gz.txt"] {
            assert!(!is_archive_name(Path::new(no)), "{no}");
        }
    }
}
