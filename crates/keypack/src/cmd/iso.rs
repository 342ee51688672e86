use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack path`.
#[derive(Debug, clap::Args)]
pub struct PathArgs {}

/// Flags of `keypack copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {}

/// `keypack path`.
pub fn path(_args: PathArgs) -> Result<ExitCode> {
    bail!("keypack path is not implemented yet")
}

/// `keypack copy`.
pub fn copy(_args: CopyArgs) -> Result<ExitCode> {
    bail!("keypack copy is not implemented yet")
}
