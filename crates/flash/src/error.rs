//! [`FlashError`]: every refusal and failure of `keypack flash`, each naming the device.

use std::path::PathBuf;

/// Why a flash was refused or failed. Every refusal variant is returned before the first
/// write: the device is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlashError {
    /// An I/O error on the image, the device or a system file.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", …).
        action: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a block device (a regular file, a folder, a character device).
    #[error("{device} is not a block device")]
    NotBlockDevice {
        /// The path given.
        device: PathBuf,
    },
    /// The path is a partition, not a whole disk.
    #[error("{device} is a partition ({name}) of {parent}, not a whole disk")]
    Partition {
        /// The path given.
        device: PathBuf,
        /// Its kernel name.
        name: String,
        /// The whole disk's kernel name.
        parent: String,
    },
    /// The device or one of its partitions is mounted.
    #[error("{device}: {what} is mounted on {mount_point}")]
    Mounted {
        /// The path given.
        device: PathBuf,
        /// The disk or the partition (kernel name).
        what: String,
        /// Where (from /proc/self/mountinfo).
        mount_point: String,
    },
    /// The device or one of its partitions is used as swap.
    #[error("{device}: {what} is in use as swap")]
    Swap {
        /// The path given.
        device: PathBuf,
        /// The disk or the partition (kernel name).
        what: String,
    },
    /// Something is stacked on the device (device mapper, LVM, RAID, a LUKS mapping).
    #[error("{device}: {what} is in use by {holder}")]
    Held {
        /// The path given.
        device: PathBuf,
        /// The disk or the partition (kernel name).
        what: String,
        /// The holder's kernel name (`dm-0`, `md0`).
        holder: String,
    },
    /// A fixed disk: not removable and not on USB.
    #[error("{device} ({name}) is a fixed disk: not removable and not on USB")]
    Fixed {
        /// The path given.
        device: PathBuf,
        /// Its kernel name.
        name: String,
    },
    /// The device is smaller than the image.
    #[error("{device} holds {device_len} bytes, less than the image's {image_len}")]
    TooSmall {
        /// The path given.
        device: PathBuf,
        /// Device size in bytes.
        device_len: u64,
        /// Image size in bytes.
        image_len: u64,
    },
    /// The exclusive open failed: the kernel or another program holds the device.
    #[error("{device} is busy (mounted, or opened exclusively by another program)")]
    Busy {
        /// The path given.
        device: PathBuf,
    },
    /// The path names another device than the one checked (a stick pulled and another
    /// plugged in, a `/dev/disk/by-…` link that moved) between the checks and the open.
    #[error("{device} is no longer the device that was checked ({checked}, now {now})")]
    Changed {
        /// The path given.
        device: PathBuf,
        /// The device number checked.
        checked: String,
        /// The device number opened.
        now: String,
    },
    /// No terminal to ask on, and no `--yes`.
    #[error("refusing to overwrite {device} without confirmation: no terminal to ask on")]
    NoTerminal {
        /// The path given.
        device: PathBuf,
    },
    /// The user did not type the device's name.
    #[error("not confirmed: {device} left unchanged")]
    Declined {
        /// The path given.
        device: PathBuf,
    },
    /// What was read back differs from what was written.
    #[error("verification failed: {device} differs from the image in bytes {start}..{end}")]
    VerifyMismatch {
        /// The path given.
        device: PathBuf,
        /// First byte of the region.
        start: u64,
        /// End of the region (exclusive).
        end: u64,
    },
    /// `--verify-only`: the device does not hold what a flash of the image would write.
    #[error("{device} differs from the image in bytes {start}..{end} (a region a flash writes)")]
    Differs {
        /// The path given.
        device: PathBuf,
        /// First byte of the first differing region.
        start: u64,
        /// End of that region (exclusive).
        end: u64,
    },
    /// `--keys-only`: the stick does not hold the same build's ISO (or is not a Ventoy stick).
    #[error("{device} does not hold the same build as the image: {why}")]
    NotSameBuild {
        /// The path given.
        device: PathBuf,
        /// What differs.
        why: String,
    },
    /// Reading the image's Ventoy layout, or switching a file on the stick, failed.
    #[error(transparent)]
    Ventoy(Box<keypack_media_ventoy::VentoyError>),
}

impl FlashError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        FlashError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            FlashError::Partition { .. } => "name the whole disk (/dev/sdb, not /dev/sdb1)",
            FlashError::Mounted { .. } | FlashError::Busy { .. } => {
                "unmount it first (`umount /dev/sdX1`), or check you named the right device"
            }
            FlashError::Swap { .. } => "`swapoff` it first, or check you named the right device",
            FlashError::Held { .. } => {
                "close what is stacked on it (dmsetup, cryptsetup close, vgchange -an), or check you named the right device"
            }
            FlashError::Fixed { .. } => {
                "check `lsblk` that this is the stick; pass --allow-fixed to write to a fixed disk anyway"
            }
            FlashError::TooSmall { .. } => "use a larger stick",
            FlashError::Changed { .. } => {
                "run it again: the device is checked and shown again before anything is written"
            }
            FlashError::NoTerminal { .. } => "run it on a terminal, or pass --yes",
            FlashError::VerifyMismatch { .. } => {
                "the stick may be failing or fake (less capacity than it reports): try another"
            }
            FlashError::Differs { .. } => {
                "the stick holds another build (or was changed): flash it again, without --verify-only"
            }
            FlashError::NotSameBuild { .. } => {
                "--keys-only needs a stick flashed from this build's ISO: flash it without --keys-only"
            }
            _ => return None,
        })
    }
}
