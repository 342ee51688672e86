//! `keypack user new|rotate`: make a user's key, or replace it, in the keys repository. The
//! same steps as `keypack host new|rotate` (see `host.rs`), without an age recipient: a user's
//! key is not a sops recipient, so nothing is rewrapped and `.sops.yaml` is not touched.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Result;
use keypack_layout::UserName;
use keypack_lifecycle::Entity;

use crate::cmd::host::{LifecycleArgs, RotateTarget, new_entity, rotate_entity};

/// `keypack user`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub common: LifecycleArgs,
}

/// The `user` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Generate a new user's ed25519 key, encrypt it with sops, pin it
    New(UserNewArgs),
    /// Replace a user's key (the old one is retired in keypack.pins)
    Rotate(UserRotateArgs),
}

/// Flags of `keypack user new`.
#[derive(Debug, clap::Args)]
pub struct UserNewArgs {
    /// The new user
    #[arg(value_name = "USER")]
    pub user: UserName,
    /// Encrypt for these age recipients instead of the ones .sops.yaml's creation rules give
    /// (repeat, or separate with commas)
    #[arg(long = "age", value_name = "RECIPIENT")]
    pub age: Vec<String>,
}

/// Flags of `keypack user rotate`.
#[derive(Debug, clap::Args)]
pub struct UserRotateArgs {
    /// The user whose key to replace
    #[arg(value_name = "USER")]
    pub user: UserName,
    /// Encrypt the new document for these age recipients instead of the ones .sops.yaml's
    /// creation rules give (repeat, or separate with commas)
    #[arg(long = "age", value_name = "RECIPIENT")]
    pub age: Vec<String>,
}

/// `keypack user …`.
pub fn user(args: UserArgs) -> Result<ExitCode> {
    match args.command {
        UserCommand::New(a) => new_entity(Entity::User { name: a.user }, &args.common, &a.age),
        UserCommand::Rotate(a) => rotate_entity(RotateTarget::User(a.user), &args.common, &a.age),
    }
}
