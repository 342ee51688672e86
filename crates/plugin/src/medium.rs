use std::path::Path;

use keypack_bundle::SealedBundle;
use keypack_layout::HostName;

use crate::{BootDescription, PluginError};

/// What every media plugin gets besides the bundle and its own flags.
#[non_exhaustive]
pub struct BuildInputs<'a> {
    /// The host being built.
    pub host: &'a HostName,
    /// The ISO to put on the medium, when the user gave one or `nix build` produced one.
    pub iso: Option<&'a Path>,
    /// Where the artifact goes (a file path the CLI chose: `-o`, or the host's state folder).
    /// Plugins write it with [`crate::output::write_private_file`] or the same temp-and-rename
    /// rule, so a failed build leaves the previous artifact intact.
    pub output: &'a Path,
    /// The host's state folder (0700), for caches a plugin keeps between builds.
    pub state_dir: &'a Path,
    /// Seed for identifiers that are random by default (disk GUIDs), for reproducible output.
    pub seed: Option<u64>,
    /// `keypack rebuild`: ignore every cache and write the artifact from scratch.
    pub ignore_cache: bool,
    /// The parsed command line of `keypack build`, from which a plugin reads its own flags.
    pub matches: &'a clap::ArgMatches,
}

impl<'a> BuildInputs<'a> {
    /// Builds the inputs; the CLI is the only caller outside tests.
    pub fn new(
        host: &'a HostName,
        output: &'a Path,
        state_dir: &'a Path,
        matches: &'a clap::ArgMatches,
    ) -> Self {
        Self {
            host,
            iso: None,
            output,
            state_dir,
            seed: None,
            ignore_cache: false,
            matches,
        }
    }

    /// Sets the ISO.
    pub fn with_iso(mut self, iso: Option<&'a Path>) -> Self {
        self.iso = iso;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `ignore_cache`.
    pub fn with_ignore_cache(mut self, ignore: bool) -> Self {
        self.ignore_cache = ignore;
        self
    }
}

/// A boot-media plugin.
pub trait Medium: Sync {
    /// The value of `--media` that selects it, and the prefix of its errors.
    fn name(&self) -> &'static str;
    /// One line for `keypack plugins`.
    fn about(&self) -> &'static str;
    /// Adds the plugin's own flags to `keypack build` (usually `YourArgs::augment_args(cmd)`).
    fn augment_args(&self, cmd: clap::Command) -> clap::Command;
    /// The default file name of the artifact in the host's state folder (`disk.img`, …).
    fn default_artifact_name(&self) -> &'static str;
    /// The artifact's file name in `host`'s state folder; [`Medium::default_artifact_name`]
    /// unless the medium names it after the host (`web1.iso`).
    fn artifact_name(&self, host: &HostName) -> String {
        let _ = host;
        self.default_artifact_name().to_owned()
    }
    /// Whether the medium needs [`BuildInputs::iso`]; when `false`, `keypack build` does not
    /// run `nix build` for one.
    fn needs_iso(&self) -> bool {
        true
    }
    /// Builds the medium.
    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError>;
}
