//! `keypack pin` and `keypack recipients`: the public side of a host's identity.
//!
//! `pin` decrypts the selection (as `verify` does), and records each key's public half in
//! `keypack.pins` at the repository's root, so every later `pack`, `verify` and `build` checks
//! that it packs exactly these keys. A role already pinned to another key is refused: that is
//! either a swapped secret or a rotation done by hand, and only `--replace` (which moves the old
//! key to the retired list, so it can never come back) says which.
//!
//! `recipients` prints a host's age recipient from its pinned public key, exactly as sops-nix
//! derives it from `/etc/ssh/ssh_host_ed25519_key` (`ssh-to-age`), without decrypting anything.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use keypack_layout::{HostName, KeyRole};
use keypack_pins::{Pins, PublicKey};

use crate::cmd::KeyArgs;
use crate::keys;

/// Flags of `keypack pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Replace a role's pin that names another key, moving the old key to the retired list
    /// (after a rotation made by hand; check the new fingerprint first)
    #[arg(long)]
    pub replace: bool,
}

/// `keypack pin`.
pub fn pin(args: PinArgs) -> Result<ExitCode> {
    let sel = args.keys.selection();
    let (root, reports) = keys::public_keys(&sel)?;
    let mut pins = Pins::load(&root).context("reading keypack.pins")?;
    let mut changed = false;
    for report in &reports {
        let role = crate::pinning::pin_role(&sel.host, &report.role)?;
        let key = PublicKey::parse_openssh(&report.public_line)
            .with_context(|| format!("{}: the derived public key", report.source.display()))?;
        match pins.pin_for(&role) {
            Some(pinned) if *pinned == key => {
                println!("unchanged  {role}  {}", key.fingerprint());
                continue;
            }
            Some(pinned) if !args.replace => bail!(
                "{role} is pinned to {}, but {} holds {}: a swapped key, or a rotation made by \
                 hand (then pass --replace to pin the new key and retire the old one)",
                pinned.fingerprint(),
                report.source.display(),
                key.fingerprint()
            ),
            _ => {}
        }
        let retired = pins
            .set(role.clone(), key)
            .with_context(|| format!("pinning {role} ({})", report.source.display()))?;
        changed = true;
        match retired {
            Some(old) => println!(
                "pinned     {role}  {}  (retired {})",
                key.fingerprint(),
                old.fingerprint()
            ),
            None => println!("pinned     {role}  {}", key.fingerprint()),
        }
    }
    if changed {
        pins.save(&root).context("writing keypack.pins")?;
        eprintln!(
            "wrote {}; review and commit it",
            root.join(keypack_pins::PINS_FILE).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags of `keypack recipients`.
#[derive(Debug, clap::Args)]
pub struct RecipientsArgs {
    /// Host whose age recipient to print (from its pinned host key)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: HostName,
    /// The keys repository [default: $KEYPACK_KEYS_REPO, then `keys_repo` in
    /// ~/.config/keypack/config.toml]
    #[arg(long, value_name = "DIR")]
    pub keys_repo: Option<std::path::PathBuf>,
}

/// `keypack recipients`.
pub fn recipients(args: RecipientsArgs) -> Result<ExitCode> {
    let root = keys::resolve_keys_repo(args.keys_repo.as_deref())?;
    let pins = Pins::load(&root).context("reading keypack.pins")?;
    let role = crate::pinning::pin_role(&args.host, &KeyRole::Host)?;
    let Some(key) = pins.pin_for(&role) else {
        bail!(
            "{} has no pin for {role}; run `keypack pin -H {}` (it decrypts the host key once \
             and records its public half)",
            root.join(keypack_pins::PINS_FILE).display(),
            args.host
        );
    };
    let recipient = key
        .age_recipient()
        .with_context(|| format!("converting the pinned key of {role} to an age recipient"))?;
    println!("{recipient}");
    Ok(ExitCode::SUCCESS)
}
