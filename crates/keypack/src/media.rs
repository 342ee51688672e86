//! The registered media plugins. Adding a medium is one line in [`MEDIA`] (see the "Adding a
//! boot medium" section of `keypack-plugin`).
//!
//! Does not parse flags or build anything itself: `cmd/build.rs` picks a medium from here by
//! `--media` and hands it the bundle.

use keypack_plugin::Medium;
use keypack_plugin::runner::Runner;

/// Every media plugin, the default first.
pub static MEDIA: &[&dyn Medium] = &[
    &keypack_media_ventoy::Ventoy,
    &keypack_media_initrd::Initrd,
    &keypack_media_iso::IsoMedium,
];

/// Every runner plugin (listed by `keypack plugins`; `run` uses the first).
pub static RUNNERS: &[&dyn Runner] = &[&keypack_runner_qemu::Qemu];

/// The medium used without `--media`.
pub const DEFAULT_MEDIUM: &str = "ventoy";

/// Adds every plugin's flags to a `build`-like command.
pub fn augment_build_args(mut cmd: clap::Command) -> clap::Command {
    // A derived `Args` struct's doc comment becomes the command's about text: keep the verb's.
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    for medium in MEDIA {
        cmd = medium.augment_args(cmd);
    }
    cmd = match about {
        Some(a) => cmd.about(a),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(a) => cmd.long_about(a),
        None => cmd.long_about(None::<&str>),
    }
}

/// Finds a medium by name.
pub fn find(name: &str) -> Option<&'static dyn Medium> {
    MEDIA.iter().copied().find(|m| m.name() == name)
}

/// The names, for error messages.
pub fn names() -> Vec<&'static str> {
    MEDIA.iter().map(|m| m.name()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_default_is_registered() {
        let names = super::names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(super::find(super::DEFAULT_MEDIUM).is_some());
    }

    #[test]
    fn plugin_flags_keep_the_verbs_help() {
        let cmd = crate::cli::command();
        let build = cmd.find_subcommand("build").unwrap();
        let about = build.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.starts_with("Build boot media"), "{about}");
    }
}
