//! One module per verb; each handler is named after its command path.

pub mod build;
pub mod doctor;
pub mod inspect;
pub mod inspect_image;
pub mod iso;
pub mod media;
pub mod pack;
pub mod run;
pub mod verify;

use std::process::ExitCode;

use anyhow::Result;
use clap::FromArgMatches;

use crate::cli::{Cli, Command};

/// Runs the verb the user chose.
pub fn dispatch(matches: &clap::ArgMatches) -> Result<ExitCode> {
    let cli = Cli::from_arg_matches(matches)?;
    let sub = matches.subcommand().map(|(_, m)| m);
    match cli.command {
        Command::Pack(args) => pack::pack(args),
        Command::Verify(args) => verify::verify(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Build(args) => build::build(args, sub.expect("build has matches"), false),
        Command::Rebuild(args) => build::build(args, sub.expect("rebuild has matches"), true),
        Command::Plugins => build::plugins(),
        Command::Path(args) => iso::path(args),
        Command::Copy(args) => iso::copy(args),
        Command::Media(cmd) => media::media(cmd),
        Command::Run(args) => run::run(args),
        Command::Stop(args) => run::stop(args),
        Command::Restart(args) => run::restart(args),
        Command::Status(args) => run::status(args),
        Command::Log(args) => run::log(args),
        Command::Ssh(args) => run::ssh(args),
    }
}

/// A "what to do" line for an error in the chain, printed as `hint: …`.
pub fn hint_for(_err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    None
}
