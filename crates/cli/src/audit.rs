//! Placeholder: being written.

use anyhow::Result;
use clap::Subcommand;
use stella_keys::DevKeys;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Not available yet.
    Pending,
}

pub(crate) fn run(_cmd: AuditCommand, _dev: DevKeys) -> Result<()> {
    Err(crate::exit::fail(
        crate::exit::USAGE,
        "this command is not available in this build yet",
    ))
}
