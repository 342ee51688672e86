//! What a block device is, read from sysfs: name, size, model, vendor, serial, transport,
//! removable flag, partitions and holders.
//!
//! Reads sysfs through a root folder parameter (`/sys` in use, a fake tree in tests), so every
//! check built on it can be unit-tested without a disk. Does not open the device.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::FlashError;

/// A block device number, `major:minor` as /proc/self/mountinfo and /sys/dev/block write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl DevNum {
    /// Parses `8:16` (a sysfs `dev` file, a mountinfo field).
    pub fn parse(s: &str) -> Option<DevNum> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNum {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    /// The device number of the block device at `path`; [`FlashError::NotBlockDevice`] for
    /// anything else.
    pub fn of(path: &Path) -> Result<DevNum, FlashError> {
        let meta = std::fs::metadata(path).map_err(|e| FlashError::io("reading", path, e))?;
        if !meta.file_type().is_block_device() {
            return Err(FlashError::NotBlockDevice {
                device: path.to_path_buf(),
            });
        }
        let rdev = meta.rdev();
        Ok(DevNum {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        })
    }
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Kernel name (`sdb1`).
    pub name: String,
    /// Its device number.
    pub dev: DevNum,
    /// Size in bytes.
    pub size: u64,
    /// Kernel names of what is stacked on it (`/sys/.../holders`).
    pub holders: Vec<String>,
}

/// A block device as sysfs describes it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Kernel name (`sdb`, `loop3`, `sdb1`).
    pub name: String,
    /// Its device number.
    pub dev: DevNum,
    /// The whole disk's kernel name when this is a partition.
    pub parent_disk: Option<String>,
    /// sysfs `removable`.
    pub removable: bool,
    /// Size in bytes (sysfs `size` is in 512-byte sectors whatever the logical block size).
    pub size: u64,
    /// `device/vendor`, `device/model`, `device/serial` (or `serial`), trimmed; empty when
    /// sysfs has none (loop devices).
    pub vendor: String,
    /// See `vendor`.
    pub model: String,
    /// See `vendor`.
    pub serial: String,
    /// `usb`, `nvme`, `ata`, `mmc`, `virtual` (loop, ram, dm) or `other`: guessed from the sysfs path.
    pub transport: &'static str,
    /// Its partitions, in name order.
    pub partitions: Vec<Partition>,
    /// What is stacked on the disk itself.
    pub holders: Vec<String>,
}

impl DeviceInfo {
    /// The device sits below a USB controller in sysfs (its transport is `usb`).
    pub fn usb(&self) -> bool {
        self.transport == "usb"
    }
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn sectors(path: &Path) -> u64 {
    read_trim(path)
        .parse::<u64>()
        .unwrap_or(0)
        .saturating_mul(512)
}

fn holders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("holders"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn transport(real: &str) -> &'static str {
    if real.contains("/usb") {
        "usb"
    } else if real.contains("/nvme") {
        "nvme"
    } else if real.contains("/mmc") {
        "mmc"
    } else if real.contains("/ata") {
        "ata"
    } else if real.contains("/virtual/") {
        "virtual"
    } else {
        "other"
    }
}

/// Reads `SYS/dev/block/MAJ:MIN` (a symlink into `SYS/devices/…`) for device `dev`.
pub fn read(sys: &Path, dev: DevNum) -> Result<DeviceInfo, FlashError> {
    let link = sys.join("dev/block").join(dev.to_string());
    // The real path tells what bus the device is on (`…/usb1/…`) and, for a partition, the
    // disk (its parent folder).
    let real: PathBuf =
        std::fs::canonicalize(&link).map_err(|e| FlashError::io("reading", &link, e))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_partition = real.join("partition").exists();
    let parent_disk = if is_partition {
        real.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    } else {
        None
    };
    let real_str = real.to_string_lossy();
    // A partition's `device/` and `removable` are its disk's.
    let disk_dir = if is_partition {
        real.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| real.clone())
    } else {
        real.clone()
    };
    let mut serial = read_trim(&disk_dir.join("device/serial"));
    if serial.is_empty() {
        serial = read_trim(&disk_dir.join("serial"));
    }
    let mut partitions = Vec::new();
    if !is_partition && let Ok(rd) = std::fs::read_dir(&real) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            let Some(pdev) = DevNum::parse(&read_trim(&p.join("dev"))) else {
                continue;
            };
            partitions.push(Partition {
                name: e.file_name().to_string_lossy().into_owned(),
                dev: pdev,
                size: sectors(&p.join("size")),
                holders: holders(&p),
            });
        }
    }
    partitions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(DeviceInfo {
        name,
        dev,
        parent_disk,
        removable: read_trim(&disk_dir.join("removable")) == "1",
        size: sectors(&real.join("size")),
        vendor: read_trim(&disk_dir.join("device/vendor")),
        model: read_trim(&disk_dir.join("device/model")),
        serial,
        transport: transport(&real_str),
        partitions,
        holders: holders(&real),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake sysfs: `sys/devices/<bus>/block/<disk>` with `dev`, `size`, `removable`, a
    /// `device/` folder and partitions, linked from `sys/dev/block/MAJ:MIN`.
    pub fn fake_sys(
        root: &Path,
        bus: &str,
        disk: &str,
        parts: &[&str],
        removable: bool,
    ) -> PathBuf {
        let sys = root.join("sys");
        let ddir = sys.join("devices").join(bus).join("block").join(disk);
        std::fs::create_dir_all(ddir.join("device")).unwrap();
        std::fs::create_dir_all(ddir.join("holders")).unwrap();
        std::fs::write(ddir.join("dev"), "8:16\n").unwrap();
        std::fs::write(ddir.join("size"), "2048000\n").unwrap();
        std::fs::write(
            ddir.join("removable"),
            if removable { "1\n" } else { "0\n" },
        )
        .unwrap();
        std::fs::write(ddir.join("device/vendor"), "SanDisk \n").unwrap();
        std::fs::write(ddir.join("device/model"), "Cruzer Blade    \n").unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&ddir, sys.join("dev/block/8:16")).unwrap();
        for (i, p) in parts.iter().enumerate() {
            let pdir = ddir.join(p);
            std::fs::create_dir_all(pdir.join("holders")).unwrap();
            std::fs::write(pdir.join("partition"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(pdir.join("dev"), format!("8:{}\n", 17 + i)).unwrap();
            std::fs::write(pdir.join("size"), "1000\n").unwrap();
            std::os::unix::fs::symlink(&pdir, sys.join(format!("dev/block/8:{}", 17 + i))).unwrap();
        }
        sys
    }

    #[test]
    fn reads_a_usb_disk_and_its_partitions() {
        let t = tempfile::tempdir().unwrap();
        let sys = fake_sys(
            t.path(),
            "pci0000:00/usb1/1-1/host6/target6:0:0/6:0:0:0",
            "sdb",
            &["sdb1", "sdb2"],
            true,
        );
        let info = read(
            &sys,
            DevNum {
                major: 8,
                minor: 16,
            },
        )
        .unwrap();
        assert_eq!(info.name, "sdb");
        assert_eq!(info.parent_disk, None);
        assert!(info.removable && info.usb());
        assert_eq!(info.transport, "usb");
        assert_eq!(info.size, 2048000 * 512);
        assert_eq!(
            (info.vendor.as_str(), info.model.as_str()),
            ("SanDisk", "Cruzer Blade")
        );
        let names: Vec<&str> = info.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sdb1", "sdb2"]);
        assert_eq!(
            info.partitions[1].dev,
            DevNum {
                major: 8,
                minor: 18
            }
        );
    }

    #[test]
    fn a_partition_names_its_disk() {
        let t = tempfile::tempdir().unwrap();
        let sys = fake_sys(
            t.path(),
            "pci0000:00/ata1/host0/target0:0:0/0:0:0:0",
            "sda",
            &["sda1"],
            false,
        );
        let info = read(
            &sys,
            DevNum {
                major: 8,
                minor: 17,
            },
        )
        .unwrap();
        assert_eq!(info.name, "sda1");
        assert_eq!(info.parent_disk.as_deref(), Some("sda"));
        assert_eq!(info.transport, "ata");
        assert!(!info.removable && !info.usb());
    }

    #[test]
    fn devnum_parses_mountinfo_fields() {
        assert_eq!(
            DevNum::parse("259:3"),
            Some(DevNum {
                major: 259,
                minor: 3
            })
        );
        assert_eq!(DevNum::parse("x"), None);
        assert_eq!(DevNum { major: 7, minor: 2 }.to_string(), "7:2");
    }
}
