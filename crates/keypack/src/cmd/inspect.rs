use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

/// `keypack inspect`.
pub fn inspect(_args: InspectArgs) -> Result<ExitCode> {
    bail!("keypack inspect is not implemented yet")
}
