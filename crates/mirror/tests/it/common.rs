//! Shared set-up: the crate's own fixture ([`stella_mirror::testing::SignedBundle`]) plus the
//! one call every test makes.

use std::path::Path;

use stella_mirror::hash::NoProgress;
use stella_mirror::Error;

pub(crate) use stella_mirror::testing::SignedBundle as Signed;

pub(crate) fn verify_dir(s: &Signed, dir: &Path) -> Result<stella_mirror::verify::Report, Error> {
    stella_mirror::verify::verify_dir(dir, &s.opts(), &NoProgress)
}
