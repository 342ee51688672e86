//! `VentoyError`: every variant names the file (and the field or check) it is about, never key
//! bytes. Turned into a `PluginError` at the `Medium` boundary.

use std::path::PathBuf;

/// What went wrong while building, checking or updating a Ventoy disk.
#[derive(Debug, thiserror::Error)]
pub enum VentoyError {
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What keypack was doing (`reading`, `writing the image`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No Ventoy release folder was given or found.
    #[error(
        "no Ventoy release folder found: pass --ventoy-dir DIR (a ventoy-X.Y.Z folder or …/share/ventoy of the nixpkgs ventoy package) or set KEYPACK_VENTOY_DIR"
    )]
    NoVentoyDir,
    /// A file of the Ventoy release folder is missing or malformed.
    #[error("Ventoy release file {}: {problem}", path.display())]
    Blob {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The medium needs an ISO and none was given.
    #[error("the ventoy medium needs an ISO: pass --iso FILE or --flake REF")]
    NoIso,
    /// The ISO does not fit the data filesystem.
    #[error("{}: {problem}", path.display())]
    Iso {
        /// The ISO.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A name given on the command line cannot be used on the data partition.
    #[error("{flag} {value:?}: {problem}")]
    BadName {
        /// The flag.
        flag: &'static str,
        /// The value (a file name, never a secret).
        value: String,
        /// Why it was refused.
        problem: &'static str,
    },
    /// A flag value is out of range.
    #[error("{flag}: {problem}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The disk fails one of the layout checks Ventoy's GRUB makes.
    #[error("{} is not a Ventoy disk: {check}: {problem}", path.display())]
    NotVentoy {
        /// The image or device.
        path: PathBuf,
        /// Which check failed (`check 2 (partition 1 start)`, …).
        check: &'static str,
        /// Details.
        problem: String,
    },
    /// The data filesystem is not one keypack can change.
    #[error("{}: data partition: {problem}", path.display())]
    DataFs {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The FAT filesystem library failed.
    #[error("{} ({what}): {source}", path.display())]
    Fat {
        /// The image.
        path: PathBuf,
        /// What keypack was doing.
        what: String,
        /// The library's error.
        #[source]
        source: std::io::Error,
    },
    /// A file on the image is larger than keypack reads (a crafted `ventoy.json` must not make
    /// it allocate what the image asks for).
    #[error("{}: {name} is too large ({size} bytes, at most {max} are read), not read", path.display())]
    TooLarge {
        /// The image.
        path: PathBuf,
        /// The file on the image.
        name: String,
        /// Its size from the directory entry.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The stick's Ventoy is older than keypack supports (see `blobs::MIN_VERSION`).
    #[error("{}: {problem}; update the stick's Ventoy first (Ventoy2Disk.sh -u keeps partition 1)", path.display())]
    OldVentoy {
        /// The image or device.
        path: PathBuf,
        /// Which version it has and why that is refused.
        problem: String,
    },
    /// `ventoy.json` cannot be used.
    #[error("{}: ventoy/ventoy.json: {problem}", path.display())]
    Json {
        /// The image or mount point.
        path: PathBuf,
        /// What is wrong (the JSON path of the field, never a value of a secret).
        problem: String,
    },
}

impl VentoyError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn fat(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Self::Fat {
            path: path.into(),
            what: what.into(),
            source,
        }
    }
}
