//! Errors of the burn.

use std::io;

/// Why a burn did not complete. Fields name the device and the file, never bundle bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BurnError {
    /// A read, write or sync of the disk failed.
    #[error("{what} {disk}: {source}")]
    Io {
        /// `reading`, `writing`, `syncing`, `opening`.
        what: &'static str,
        /// The device or image.
        disk: String,
        /// The OS error.
        source: io::Error,
    },
    /// The data partition's file system is not what it claims to be.
    #[error("{disk}: data partition: {problem}")]
    Fs {
        /// The device or image.
        disk: String,
        /// What is wrong.
        problem: String,
    },
    /// `ventoy/ventoy.json` could not be edited.
    #[error("{disk}: /ventoy/ventoy.json {problem}")]
    Json {
        /// The device or image.
        disk: String,
        /// What is wrong.
        problem: String,
    },
    /// The test-only stop knob (`keypack_burn.stop_after=STEP`) stopped the burn after a step.
    #[error("stopped after step {step} (test knob keypack_burn.stop_after)")]
    Stopped {
        /// The step that was the last one done.
        step: &'static str,
    },
}

impl BurnError {
    pub(crate) fn io(what: &'static str, disk: &str, source: io::Error) -> Self {
        BurnError::Io {
            what,
            disk: disk.to_string(),
            source,
        }
    }

    pub(crate) fn fs(disk: &str, problem: impl Into<String>) -> Self {
        BurnError::Fs {
            disk: disk.to_string(),
            problem: problem.into(),
        }
    }
}
