//! Plugins out of process: a medium (or runner) as a program `keypack-media-NAME` on `PATH`,
//! speaking the line-delimited JSON protocol of `PROTOCOL.md`.
//!
//! Position on the data path: `bundle → **sealed memfd** → plugin process → boot description`.
//! keypack side: [`discover`] finds the programs, [`ExternalMedium::describe`] asks one for its
//! name and flags, and the [`ExternalMedium`] it returns is a [`crate::Medium`] like a compiled-in
//! one, so `keypack build` does not tell them apart. Plugin side: [`serve`] runs any
//! `impl Medium` as such a program.
//!
//! The boundary (see `SECURITY.md`): a plugin gets the archive only as an inherited read-only
//! memfd sealed against writes, growth, shrinking and new seals ([`sealed_bundle_fd`]), never
//! as a path, an argument or an environment variable; its environment is the allow-list of
//! [`crate::child`]; it is found over absolute `PATH` entries and `plugin_dir` only.

pub mod conformance;
mod discover;
mod medium;
pub mod protocol;
mod runner;
mod serve;
pub mod session;

use std::path::PathBuf;

pub use discover::{Found, MEDIA_PREFIX, RUNNER_PREFIX, discover};
pub use medium::{ExternalMedium, describe_program, sealed_bundle_fd};
pub use runner::{start_runner, stop_runner};
pub use serve::{serve, serve_runner};

/// Why talking to an external plugin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExternalError {
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to it failed.
    #[error("talking to {program}")]
    Io {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited (or closed its stdout) before answering.
    #[error("{program} exited before answering{}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Died {
        /// The program.
        program: PathBuf,
        /// How it ended, when known.
        status: Option<std::process::ExitStatus>,
    },
    /// It did not answer in time (and was killed).
    #[error(
        "{program} did not answer within {secs} s (killed; KEYPACK_PLUGIN_TIMEOUT sets the limit)"
    )]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The limit.
        secs: u64,
    },
    /// It sent something that is not the protocol.
    #[error("{program} broke the plugin protocol: {why}")]
    Garbage {
        /// The program.
        program: PathBuf,
        /// What it sent.
        why: String,
    },
    /// It speaks none of keypack's protocol versions.
    #[error("{program} chose protocol version {chosen}; keypack speaks {offered:?}")]
    Version {
        /// The program.
        program: PathBuf,
        /// What keypack offered.
        offered: Vec<u32>,
        /// What it chose.
        chosen: u32,
    },
    /// It answered with an error of its own (shown after the plugin's name, which
    /// [`crate::PluginError`] prints).
    #[error("{message}")]
    Plugin {
        /// Its name.
        plugin: String,
        /// Its message.
        message: String,
        /// Its hint.
        hint: Option<String>,
    },
    /// Making the sealed memfd failed.
    #[error("sealing the bundle into a memfd")]
    Memfd(#[source] std::io::Error),
}

impl ExternalError {
    /// The plugin's own hint, when it sent one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Plugin { hint, .. } => hint.as_deref(),
            Self::Timeout { .. } => {
                Some("a plugin that needs longer: set KEYPACK_PLUGIN_TIMEOUT=SECONDS")
            }
            _ => None,
        }
    }
}
