use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the [`BootDescription`] format; bumped on incompatible changes.
pub const BOOT_DESCRIPTION_VERSION: u32 = 1;

/// What a media plugin built and how to boot it. Plain data: paths, never key bytes, so it can
/// be stored as JSON in the host's state folder and read by any runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootDescription {
    /// Format version, [`BOOT_DESCRIPTION_VERSION`].
    pub version: u32,
    /// Name of the medium that produced it (`ventoy`, `initrd`, …).
    pub medium: String,
    /// The host the keys belong to.
    pub host: String,
    /// What to boot.
    pub boot: Boot,
    /// Firmware the boot needs.
    pub firmware: Firmware,
    /// The packed host public key (`ssh-ed25519 AAAA…`), pinned by `keypack ssh`.
    pub host_public_key: String,
}

/// The bootable artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Boot {
    /// A whole-disk image (raw), attached as the first disk.
    Disk {
        /// Path of the image.
        image: PathBuf,
    },
    /// Direct kernel boot: kernel, initrds in order (later ones win), command line.
    Kernel {
        /// Path of the kernel.
        kernel: PathBuf,
        /// Initrds, concatenated in this order.
        initrds: Vec<PathBuf>,
        /// Kernel command line.
        cmdline: String,
        /// An ISO to attach read-only as a CD-ROM, so a kernel taken from an ISO (`keypack
        /// build --media initrd --iso`) finds its root file system by label. Absent in
        /// descriptions written before this field existed, which stay readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cdrom: Option<PathBuf>,
    },
    /// A bootable ISO (El Torito: UEFI and/or BIOS), attached read-only as a CD-ROM and booted
    /// from (the keyed ISO). Added after version 1 shipped: older descriptions never hold it,
    /// so they stay readable unchanged.
    Cdrom {
        /// Path of the ISO.
        image: PathBuf,
    },
}

impl BootDescription {
    /// Every file the description names as a build's artifact (the image, or the kernel and
    /// the initrds; not a `cdrom` input the kernel boot merely attaches), in order.
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.boot {
            Boot::Disk { image } | Boot::Cdrom { image } => vec![image.clone()],
            Boot::Kernel {
                kernel, initrds, ..
            } => std::iter::once(kernel.clone())
                .chain(initrds.iter().cloned())
                .collect(),
        }
    }
}

/// Firmware a boot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// UEFI (OVMF under QEMU).
    Uefi,
    /// Legacy BIOS (SeaBIOS under QEMU).
    Bios,
    /// Either works (direct kernel boot).
    Any,
}
