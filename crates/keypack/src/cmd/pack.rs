use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {}

/// `keypack pack`.
pub fn pack(_args: PackArgs) -> Result<ExitCode> {
    bail!("keypack pack is not implemented yet")
}
