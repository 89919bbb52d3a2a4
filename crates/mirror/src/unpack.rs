//! `unpack`: an archive streamed into a staging folder, verified, then moved into place.

use std::path::Path;

use crate::archive::{read_archive, Limits};
use crate::error::{Error, Field, IoContext as _, Result};
use crate::fs::{check_output_free, Staging};
use crate::hash::Progress;
use crate::path::BundlePath;
use crate::verify::{Options, VerifiedBundle};

/// Unpack `archive` into `dest`: every entry is checked as it streams into a staging folder
/// beside `dest`, the staged bundle is verified, and only then renamed to `dest`. On any
/// failure the staging folder is removed and `dest` is untouched.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<VerifiedBundle> {
    check_output_free(dest)?;
    if !archive.is_file() {
        return Err(Error::NotFound(archive.to_path_buf()));
    }
    let staging = Staging::beside(dest, "unpack")?;
    let (obs, report) = read_archive(archive, Some(&staging.path), limits, opts, progress)?;
    use std::os::unix::fs::PermissionsExt as _;
    // A big bundle's files are in the signed index (those a thin one lacks were not carried).
    let indexed = obs
        .index
        .iter()
        .flat_map(|ix| (0..ix.len()).filter_map(move |i| ix.get(i).map(|e| e.path)));
    for p in obs.files.keys().map(String::as_str).chain(indexed) {
        let script = p.starts_with("scripts/") && p.ends_with(".sh");
        if script && !(obs.index.is_some() && report.from_base.iter().any(|b| b == p)) {
            let abs = BundlePath::new(p)
                .map_err(|e| Error::content(Field::file(p), e))?
                .under(&staging.path);
            std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o755)).at(&abs)?;
        }
    }
    std::fs::set_permissions(&staging.path, std::fs::Permissions::from_mode(0o755))
        .at(&staging.path)?;
    staging.commit(dest)?;
    Ok(report)
}
