//! `keypack inspect IMAGE` for disk images. Owned by the Ventoy work.
//!
//! Placeholder written by the foundation work so `keypack inspect` can call it; the Ventoy work
//! replaces the body (keep the signature: `cmd::inspect` calls it for any file that is not gzip).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

/// Inspects a disk image written by `keypack build`. Called by `keypack inspect` for any file
/// that does not start with the gzip magic.
pub fn inspect_image(path: &Path) -> Result<ExitCode> {
    bail!(
        "{}: not a keys.tar.gz (no gzip header), and inspecting disk images is not implemented yet",
        path.display()
    )
}
