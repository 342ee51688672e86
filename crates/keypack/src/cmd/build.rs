use std::process::ExitCode;

use anyhow::{Result, bail};

/// Flags of `keypack build` shared by every medium (each medium adds its own).
#[derive(Debug, clap::Args)]
pub struct BuildArgs {}

/// `keypack build` and `keypack rebuild` (`ignore_cache`).
pub fn build(
    _args: BuildArgs,
    _matches: &clap::ArgMatches,
    _ignore_cache: bool,
) -> Result<ExitCode> {
    bail!("keypack build is not implemented yet")
}

/// `keypack plugins`.
pub fn plugins() -> Result<ExitCode> {
    bail!("keypack plugins is not implemented yet")
}
