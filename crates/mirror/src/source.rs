//! One verification entry point behind the three forms a bundle arrives in: a folder, a
//! detached envelope beside (or in) its folder, or an archive read as a stream.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::Progress;
use crate::names;
use crate::verify::{self, Options, VerifiedBundle};

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

/// Verify a bundle from any source: the same rules ([`verify::verify_metadata`], then every
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let own = path.file_name() == Some(std::ffi::OsStr::new(names::ENVELOPE));
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
    let vm = verify::verify_metadata(&meta, opts)?;
    let observed = verify::hash_dir_content(&dir, &vm.manifest, &Default::default(), progress)?;
    let content = verify::check_files(&vm.manifest, &observed)?;
    Ok(VerifiedBundle::new(vm, content))
}
