use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

/// `keypack verify`.
pub fn verify(_args: VerifyArgs) -> Result<ExitCode> {
    bail!("keypack verify is not implemented yet")
}
