use std::path::PathBuf;

/// What can go wrong building the initrd medium. Variants name paths, never contents.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A required flag was not given.
    #[error("--media initrd needs {flag} FILE")]
    MissingFlag {
        /// The flag (`--kernel`, `--initrd`).
        flag: &'static str,
    },
    /// The kernel or base initrd is missing or not a file.
    #[error("{what} {path}")]
    Input {
        /// `kernel` or `base initrd`.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// A bundle entry has a path the layout does not allow.
    #[error("bundle entry {path} is not a known key path")]
    UnknownPath {
        /// The entry's path.
        path: String,
    },
    /// Writing the cpio failed.
    #[error("writing {path}")]
    Write {
        /// The artifact path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Compressing failed.
    #[error("compressing the keys cpio: {0}")]
    Compress(#[source] std::io::Error),
    /// The bundle has no host key (a sealed bundle always has one).
    #[error("the bundle has no host public key")]
    NoHostKey,
    /// Neither `--kernel`/`--initrd` nor `--iso` was given.
    #[error("--media initrd needs --kernel FILE and --initrd FILE, or --iso FILE")]
    NoBootSource,
    /// Both `--kernel`/`--initrd` and `--iso` were given.
    #[error(
        "--media initrd takes the kernel and initrd either from --kernel/--initrd or from --iso, not both"
    )]
    KernelAndIso,
    /// Reading the ISO failed.
    #[error(transparent)]
    Iso(#[from] crate::iso::IsoError),
    /// No boot loader configuration in the ISO gave a bootable entry.
    #[error("{iso} has no usable boot loader configuration ({tried})")]
    NoBootConfig {
        /// The ISO.
        iso: PathBuf,
        /// Each configuration looked at and why it was not used.
        tried: String,
    },
    /// The boot configuration names a file the ISO does not hold.
    #[error("{config} in {iso} names the {what} {path}, which is not in the ISO")]
    MissingInIso {
        /// The ISO.
        iso: PathBuf,
        /// The configuration file inside the ISO.
        config: String,
        /// `kernel` or `initrd`.
        what: &'static str,
        /// The path it names.
        path: String,
    },
}
