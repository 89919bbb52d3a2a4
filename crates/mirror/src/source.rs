//! One verification entry point behind the three forms a bundle arrives in: a folder, a
//! detached envelope beside (or in) its folder, or an archive read as a stream.
//!
//! `load` names its input as a [`Source`] too and reads a folder or envelope from
//! [`Source::folder`]; `unpack`, `apply` and `load` run the archive arm's reader
//! ([`crate::archive::read_archive`]) into a staging folder instead of [`verify()`], because
//! they need the files on disk (docs/design.md, "One source").

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::Progress;
use crate::names;
use crate::verify::{self, CheckedBundle, Options, VerifiedBundle};

/// Where a bundle to verify is.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A bundle folder.
    Folder(&'a Path),
    /// An envelope file: the bundle is its folder, and the envelope stands in for the
    /// folder's `manifest.dsse` (a detached signature) unless it is that file.
    Envelope(&'a Path),
    /// A `.tar.gz`/`.tar.zst`/`.tar` archive, verified from its stream without extraction.
    Archive(&'a Path),
}

impl Source<'_> {
    /// The folder the bundle's files are read from: the folder itself, or an envelope's folder
    /// (`.` for a bare file name); `None` for an archive, read as a stream.
    pub fn folder(&self) -> Option<PathBuf> {
        match self {
            Source::Folder(dir) => Some(dir.to_path_buf()),
            Source::Envelope(path) => Some(envelope_folder(path)),
            Source::Archive(_) => None,
        }
    }
}

/// The folder of an envelope file (`.` for a bare file name).
fn envelope_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Is `path` a folder's own `manifest.dsse` (not a detached envelope beside it)?
pub(crate) fn is_own_envelope(path: &Path) -> bool {
    path.file_name() == Some(std::ffi::OsStr::new(names::ENVELOPE))
}

/// Verify a bundle from any source: the same rules ([`CheckedBundle::verify`](crate::CheckedBundle::verify), then every
/// content file) whatever form it came in.
pub fn verify(
    source: Source<'_>,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    match source {
        Source::Folder(dir) => verify::verify_dir(dir, opts, progress),
        Source::Archive(path) => crate::archive::verify_archive(path, opts, progress),
        Source::Envelope(path) => verify_envelope(path, opts, progress),
    }
}

fn verify_envelope(
    path: &Path,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    let dir = envelope_folder(path);
    let own = is_own_envelope(path);
    let limits = crate::streamed::Limits::default();
    if own && crate::streamed::wants_stream(&dir, &limits) {
        // The folder's own envelope, too large for memory: the folder, streamed.
        return verify::verify_dir_streamed(&dir, opts, &limits, progress);
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
    let observed = verify::hash_dir_content(&dir, &vm.manifest, &Default::default(), progress)?;
    let content = verify::check_files(&vm.manifest, &observed)?;
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
}
