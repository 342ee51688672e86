//! Runner plugins boot a [`crate::BootDescription`]; see `plugins/qemu` (the reference runner).
//!
//! The contract between `keypack build` and any runner is a file: the build writes the
//! description as JSON to [`BOOT_DESCRIPTION_FILE`] in the host's state folder
//! ([`write_boot_description`]), and `keypack run` reads it back ([`read_boot_description`]).
//! A runner sees paths and the packed host public key, never key bytes.
//!
//! Does not define how a runner is configured (accelerator, firmware, ports): those are the
//! runner's own flags.

use std::path::{Path, PathBuf};

use crate::BootDescription;
use crate::external::protocol::{StartRequest, StartedReply, StopOutcome, StopRequest};

/// File name of the last build's boot description in the host's state folder.
pub const BOOT_DESCRIPTION_FILE: &str = "boot.json";

/// A runner plugin.
pub trait Runner: Sync {
    /// Its name (`qemu`).
    fn name(&self) -> &'static str;
    /// One line for `keypack plugins`.
    fn about(&self) -> &'static str;
}

/// What an out-of-process runner does, served by [`crate::external::serve_runner`] as a
/// `keypack-runner-NAME` program (`keypack run --runner NAME`). Errors are one line for the
/// user.
pub trait RunnerService {
    /// Its name (`NAME` of `keypack-runner-NAME`).
    fn name(&self) -> &str;
    /// One line for `keypack plugins`.
    fn about(&self) -> &str;
    /// Starts the machine and returns once it runs (not once it booted: keypack waits for SSH
    /// itself). `passphrase` is a sealed build's passphrase, for the guest only.
    fn start(&self, req: &StartRequest, passphrase: Option<&[u8]>) -> Result<StartedReply, String>;
    /// Stops the machine `start` started.
    fn stop(&self, req: &StopRequest) -> Result<StopOutcome, String>;
}

/// Reading or writing `boot.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum BootFileError {
    /// No build yet.
    #[error("no build found: cannot read {path} (run `keypack build` first, or pass --image)")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Unreadable or of another version.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Writes `desc` to `<state_dir>/boot.json` (0600, temp name and rename).
pub fn write_boot_description(
    state_dir: &Path,
    desc: &BootDescription,
) -> Result<PathBuf, BootFileError> {
    let path = state_dir.join(BOOT_DESCRIPTION_FILE);
    let json = serde_json::to_vec_pretty(desc).map_err(|e| BootFileError::Invalid {
        path: path.clone(),
        why: e.to_string(),
    })?;
    crate::output::write_private_file(&path, &json).map_err(|e| BootFileError::Invalid {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(path)
}

/// Reads `<state_dir>/boot.json`, checking its version.
pub fn read_boot_description(state_dir: &Path) -> Result<BootDescription, BootFileError> {
    let path = state_dir.join(BOOT_DESCRIPTION_FILE);
    let bytes = std::fs::read(&path).map_err(|source| BootFileError::Missing {
        path: path.clone(),
        source,
    })?;
    let desc: BootDescription =
        serde_json::from_slice(&bytes).map_err(|e| BootFileError::Invalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
    if desc.version != crate::BOOT_DESCRIPTION_VERSION {
        return Err(BootFileError::Invalid {
            path,
            why: format!(
                "boot description version {} (this keypack reads {}); run `keypack build` again",
                desc.version,
                crate::BOOT_DESCRIPTION_VERSION
            ),
        });
    }
    Ok(desc)
}
