use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// `keypack doctor`.
pub fn doctor(_args: DoctorArgs) -> Result<ExitCode> {
    bail!("keypack doctor is not implemented yet")
}
