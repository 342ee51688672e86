use std::path::PathBuf;

use crate::area::AREA_PATH;

/// The NixOS option that adds the area to the flake's ISO (see `nix/iso-keys.nix`).
pub const ENABLE_OPTION: &str = "keypack.keysArea.enable";
/// The NixOS option that sets the area's size.
pub const SIZE_OPTION: &str = "keypack.keysArea.sizeKiB";

/// What can go wrong building, resetting or inspecting a keyed ISO. Variants name paths and
/// sizes, never contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsoMediumError {
    /// `--media iso` needs an ISO.
    #[error("--media iso needs an ISO (--iso FILE, or --flake REF to build one)")]
    NoIso,
    /// Reading the ISO 9660 structure failed.
    #[error(transparent)]
    Iso(#[from] keypack_media_initrd::iso::IsoError),
    /// The ISO has no keys area.
    #[error(
        "{iso} has no keys area {AREA_PATH}: build the ISO with {ENABLE_OPTION} = true (the flake's ISO has it by default), or add a zero-filled {AREA_PATH} that every boot entry loads as its last initrd (plugins/iso/README.md)"
    )]
    NoArea {
        /// The ISO.
        iso: PathBuf,
    },
    /// The area is not what the convention asks for.
    #[error("{AREA_PATH} in {iso} cannot be the keys area: {why}")]
    BadArea {
        /// The ISO.
        iso: PathBuf,
        /// What is wrong (several extents, a size that is not a multiple of 2 KiB, …).
        why: String,
    },
    /// The keys do not fit.
    #[error(
        "the keys cpio is {needed} bytes but {AREA_PATH} in {iso} holds {room}: rebuild the ISO with a larger {SIZE_OPTION}"
    )]
    TooLarge {
        /// The ISO.
        iso: PathBuf,
        /// Size of the compressed cpio.
        needed: u64,
        /// Size of the area.
        room: u64,
    },
    /// Making the keys cpio failed.
    #[error("making the keys cpio")]
    Cpio(#[source] keypack_media_initrd::InitrdError),
    /// The bundle has no host key.
    #[error("the bundle has no host public key")]
    NoHostKey,
    /// An I/O operation on a file failed.
    #[error("{what} {path}")]
    Io {
        /// `reading`, `writing`, …
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl IsoMediumError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
