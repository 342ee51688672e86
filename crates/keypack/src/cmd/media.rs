use std::process::ExitCode;

use anyhow::{Result, bail};

/// `keypack media …` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum MediaCommand {
    /// Put a new ISO and bundle on an existing Ventoy stick or image.
    Update(MediaUpdateArgs),
}

/// Flags of `keypack media update`.
#[derive(Debug, clap::Args)]
pub struct MediaUpdateArgs {}

/// `keypack media …`.
pub fn media(cmd: MediaCommand) -> Result<ExitCode> {
    match cmd {
        MediaCommand::Update(_) => bail!("keypack media update is not implemented yet"),
    }
}
