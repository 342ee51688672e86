//! The command line: clap definitions. Each verb's flags are in its `cmd/<verb>.rs`; the media
//! plugins add their own flags to `build` and `rebuild` (see `media.rs`).

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd;

/// Packs a machine's SSH keys from a sops/age keys repository into boot media.
///
/// Typical use, with the YubiKey plugged in:
///   keypack build -H web1 -U alice     # Ventoy disk with the NixOS ISO and the keys
///   keypack run -H web1 --wait-ssh     # boot it in QEMU
///   keypack ssh -H web1                # connect, host key pinned
#[derive(Debug, Parser)]
#[command(name = "keypack", version, about, long_about = None, help_expected = true)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypt a host's keys and write the bundle (keys.tar.gz).
    Pack(cmd::pack::PackArgs),
    /// Decrypt and check everything a build would, write nothing, print fingerprints.
    Verify(cmd::verify::VerifyArgs),
    /// Record the public keys of a host (and users) in keypack.pins, checked by every build.
    Pin(cmd::pin::PinArgs),
    /// Make or rotate a host's keys (sops document, pins, .sops.yaml recipient).
    Host(cmd::host::HostArgs),
    /// Make or rotate a user's key (sops document, pins).
    User(cmd::user::UserArgs),
    /// Print a host's age recipient (for .sops.yaml) from its pinned host key.
    Recipients(cmd::pin::RecipientsArgs),
    /// Show what a bundle or a disk image holds: entries, modes, fingerprints; never secrets.
    Inspect(cmd::inspect::InspectArgs),
    /// Check the YubiKey, age-plugin-yubikey, pcscd and the tools plugins need.
    Doctor(cmd::doctor::DoctorArgs),
    /// Build boot media for a host (a Ventoy disk by default).
    Build(cmd::build::BuildArgs),
    /// Like build, ignoring every cache.
    Rebuild(cmd::build::BuildArgs),
    /// List the media and runner plugins, built-in and on PATH; `check` tests an external one.
    Plugins(cmd::plugins::PluginsArgs),
    /// Print the store path of the NixOS ISO (runs `nix build`).
    Path(cmd::iso::PathArgs),
    /// Copy the NixOS ISO out of the Nix store.
    Copy(cmd::iso::CopyArgs),
    /// Work on existing boot media.
    #[command(subcommand)]
    Media(cmd::media::MediaCommand),
    /// Write a host's last build onto a USB stick (checks the device, sparse write, verify).
    Flash(cmd::flash::FlashArgs),
    /// Boot the last build of a host in QEMU.
    Run(cmd::run::RunArgs),
    /// Stop a host's VM (ACPI power-down, then quit).
    Stop(cmd::run::HostArgs),
    /// Stop and start a host's VM.
    Restart(cmd::run::RunArgs),
    /// Show whether a host's VM runs, its pid, ports and pinned host key.
    Status(cmd::run::StatusArgs),
    /// Show a host's VM serial console log.
    Log(cmd::run::LogArgs),
    /// SSH into a host's VM with the packed host key pinned.
    Ssh(cmd::run::SshArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::shell::CompletionsArgs),
    /// Write man pages for keypack and every verb into a folder.
    Man(cmd::shell::ManArgs),
}

/// The full command, with the media plugins' flags added to `build` and `rebuild`.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("build", crate::media::augment_build_args)
        .mut_subcommand("rebuild", crate::media::augment_build_args)
}

/// [`command`] with the external media's flags too (it starts each `keypack-media-*` program
/// to describe it): for the command lines that parse or show `build`'s flags.
pub fn command_for(args: &[std::ffi::OsString]) -> clap::Command {
    if !crate::media::wants_external(args) {
        return command();
    }
    let with = |c| crate::media::augment_build_args_with(c, true);
    Cli::command()
        .mut_subcommand("build", with)
        .mut_subcommand("rebuild", with)
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_is_consistent() {
        super::command().debug_assert();
    }
}
