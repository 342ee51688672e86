//! The registered plugins. Adding a medium is one line in [`MEDIA`].
#![allow(dead_code)] // until `build` uses it

use keypack_plugin::Medium;

/// Every media plugin, the default first.
pub static MEDIA: &[&dyn Medium] = &[
    &keypack_media_initrd::Initrd,
];

/// Adds every plugin's flags to a `build`-like command.
pub fn augment_build_args(mut cmd: clap::Command) -> clap::Command {
    for medium in MEDIA {
        cmd = medium.augment_args(cmd);
    }
    cmd
}

/// Finds a medium by name.
pub fn find(name: &str) -> Option<&'static dyn Medium> {
    MEDIA.iter().copied().find(|m| m.name() == name)
}
