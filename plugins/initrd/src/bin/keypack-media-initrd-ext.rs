//! `keypack-media-initrd-ext`: the initrd medium built a second time, as an external plugin
//! program (`keypack_plugin::external::serve`). Same code as `--media initrd`, run out of
//! process: the proof that a Rust medium is the same `impl Medium` either way, and what the
//! end-to-end boot through the external path (`tests/tests/boot_external.rs`) uses.
//!
//! Put it on `PATH` (or in `plugin_dir`) and build with `keypack build --media initrd-ext`;
//! it takes the initrd medium's flags (`--kernel`, `--initrd`, `--append`, or `--iso`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use keypack_media_initrd::Initrd;
use keypack_plugin::{BootDescription, BuildInputs, Medium, PluginError, SealedBundle};

/// The initrd medium under another name.
struct InitrdExt;

impl Medium for InitrdExt {
    fn name(&self) -> &'static str {
        "initrd-ext"
    }

    fn about(&self) -> &'static str {
        "the initrd medium, out of process (keypack-media-initrd-ext)"
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        Initrd.augment_args(cmd)
    }

    fn default_artifact_name(&self) -> &'static str {
        Initrd.default_artifact_name()
    }

    fn needs_iso(&self) -> bool {
        Initrd.needs_iso()
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        let mut desc = Initrd.build(bundle, inputs)?;
        desc.medium = self.name().to_owned();
        Ok(desc)
    }
}

fn main() -> ExitCode {
    keypack_plugin::external::serve(&InitrdExt)
}
