use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack run` and `keypack restart`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Flags naming a host.
#[derive(Debug, clap::Args)]
pub struct HostArgs {}

/// Flags of `keypack status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Flags of `keypack log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {}

/// Flags of `keypack ssh`.
#[derive(Debug, clap::Args)]
pub struct SshArgs {}

/// `keypack run`.
pub fn run(_args: RunArgs) -> Result<ExitCode> {
    bail!("keypack run is not implemented yet")
}

/// `keypack stop`.
pub fn stop(_args: HostArgs) -> Result<ExitCode> {
    bail!("keypack stop is not implemented yet")
}

/// `keypack restart`.
pub fn restart(_args: RunArgs) -> Result<ExitCode> {
    bail!("keypack restart is not implemented yet")
}

/// `keypack status`.
pub fn status(_args: StatusArgs) -> Result<ExitCode> {
    bail!("keypack status is not implemented yet")
}

/// `keypack log`.
pub fn log(_args: LogArgs) -> Result<ExitCode> {
    bail!("keypack log is not implemented yet")
}

/// `keypack ssh`.
pub fn ssh(_args: SshArgs) -> Result<ExitCode> {
    bail!("keypack ssh is not implemented yet")
}
