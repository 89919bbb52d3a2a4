//! Shared set-up: the crate's own fixture ([`stella_mirror::testing::SignedBundle`]) plus the
//! one call every test makes.

use std::path::Path;

use stella_mirror::{ArchiveLimits, Error, NoProgress, Output, Progress, Source, VerifyOptions};

pub(crate) use stella_mirror::testing::SignedBundle as Signed;

pub(crate) fn verify_dir(s: &Signed, dir: &Path) -> Result<stella_mirror::VerifiedBundle, Error> {
    stella_mirror::verify_dir(dir, &s.opts(), &NoProgress)
}

/// [`Source::verify`] as `mirror verify` calls it: default limits, nothing on disk.
pub(crate) fn verify(
    source: Source<'_>,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<stella_mirror::VerifiedBundle, Error> {
    source
        .verify(
            opts,
            &ArchiveLimits::default(),
            Output::verify_only(),
            progress,
        )
        .map(|v| v.report)
}

/// `n` small advisory files under `src/feeds/osv/NN/` (16 folders), the shape of an OSV feed.
pub(crate) fn write_feed(src: &Path, n: usize) {
    for i in 0..n {
        let d = src.join(format!("feeds/osv/{:02}", i % 16));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join(format!("OSV-{i:07}.json")),
            format!("{{\"id\":{i}}}"),
        )
        .expect("write");
    }
}
