//! `keypack-media-iso-ext`: the keyed-ISO medium built a second time, as an external plugin
//! program (`keypack_plugin::external::serve`). Same code as `--media iso`, run out of
//! process; `plugins/iso/tests/external.rs` checks that it passes `keypack plugins check` and
//! writes the very bytes the compiled-in medium writes, a sealed bundle included.
//!
//! The keyed ISO stays compiled in as well: `keypack inspect HOST.iso` and `keypack media
//! reset` read its area with the same crate, and a user gets it without installing anything.
//! Put this program on `PATH` (or in `plugin_dir`) and build with `keypack build --media
//! iso-ext`; it takes the ISO medium's flags (`--iso-firmware`) and writes `HOST.iso`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use keypack_media_iso::IsoMedium;
use keypack_plugin::{BootDescription, BuildInputs, HostName, Medium, PluginError, SealedBundle};

/// The keyed-ISO medium under another name.
struct IsoExt;

impl Medium for IsoExt {
    fn name(&self) -> &'static str {
        "iso-ext"
    }

    fn about(&self) -> &'static str {
        "the keyed-ISO medium, out of process (keypack-media-iso-ext)"
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        IsoMedium.augment_args(cmd)
    }

    fn default_artifact_name(&self) -> &'static str {
        IsoMedium.default_artifact_name()
    }

    fn artifact_name(&self, host: &HostName) -> String {
        IsoMedium.artifact_name(host)
    }

    fn needs_iso(&self) -> bool {
        IsoMedium.needs_iso()
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        let mut desc = IsoMedium.build(bundle, inputs)?;
        desc.medium = self.name().to_owned();
        Ok(desc)
    }
}

fn main() -> ExitCode {
    keypack_plugin::external::serve(&IsoExt)
}
