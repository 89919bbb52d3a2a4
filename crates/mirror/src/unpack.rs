//! `unpack`: an archive streamed into a staging folder, verified, then moved into place.

use std::path::Path;

use crate::archive::Limits;
use crate::error::Result;
use crate::fs::check_output_free;
use crate::hash::Progress;
use crate::source::{Output, Source};
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
    let source = Source::for_unpack(archive)?;
    let verified = source.verify(opts, &limits, Output::moved_to(dest), progress)?;
    Ok(verified.report)
}
