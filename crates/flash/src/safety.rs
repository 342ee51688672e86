//! The checks that run before any write: a whole disk, nothing of it mounted, used as swap or
//! held by device mapper, removable or on USB unless `allow_fixed`, large enough.
//!
//! Pure functions over [`DeviceInfo`] and the text of `/proc/self/mountinfo` and `/proc/swaps`,
//! so each refusal is unit-tested with fake text. Why both major:minor and names: btrfs (and
//! overlay, ZFS) report an anonymous `0:N` in mountinfo's third field, so a disk holding `/` on
//! btrfs is only recognised by the mount source (`/dev/sda2`) after the ` - ` separator.
//! Does not look inside the disk (a stick with no partition table passes).

use std::path::Path;

use crate::FlashError;
use crate::device::{DevNum, DeviceInfo};

/// What the caller allows.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Write to a disk that is neither removable nor on USB.
    pub allow_fixed: bool,
    /// Bytes the image needs.
    pub image_len: u64,
}

/// The disk and its partitions: (kernel name, device number).
fn members(info: &DeviceInfo) -> Vec<(String, DevNum)> {
    std::iter::once((info.name.clone(), info.dev))
        .chain(info.partitions.iter().map(|p| (p.name.clone(), p.dev)))
        .collect()
}

fn same_name(path: &str, name: &str) -> bool {
    // `/dev/sdb1` or `/dev/disk/by-…` resolved by the kernel to the kernel name in mountinfo.
    Path::new(path).file_name().is_some_and(|n| n == name)
}

/// The first mount of the disk or a partition: (kernel name, mount point).
pub fn mounted(info: &DeviceInfo, mountinfo: &str) -> Option<(String, String)> {
    let members = members(info);
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(devnum), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let source = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 2));
        for (name, dev) in &members {
            if DevNum::parse(devnum) == Some(*dev) || source.is_some_and(|s| same_name(s, name)) {
                return Some((name.clone(), unescape(point)));
            }
        }
    }
    None
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The disk or partition used as swap, from `/proc/swaps` (a header line, then one line per
/// swap area, its path first). A swap file on a mounted partition is caught by [`mounted`].
pub fn swap(info: &DeviceInfo, swaps: &str) -> Option<String> {
    let members = members(info);
    for line in swaps.lines().skip(1) {
        let Some(path) = line.split_whitespace().next() else {
            continue;
        };
        let path = unescape(path);
        let rdev = DevNum::of(Path::new(&path)).ok();
        for (name, dev) in &members {
            if same_name(&path, name) || rdev == Some(*dev) {
                return Some(name.clone());
            }
        }
    }
    None
}

/// Every check, in the order a user fixes them; the first failure is returned.
pub fn check(
    device: &Path,
    info: &DeviceInfo,
    mountinfo: &str,
    swaps: &str,
    policy: Policy,
) -> Result<(), FlashError> {
    let device = device.to_path_buf();
    if let Some(parent) = &info.parent_disk {
        return Err(FlashError::Partition {
            device,
            name: info.name.clone(),
            parent: parent.clone(),
        });
    }
    if let Some((what, mount_point)) = mounted(info, mountinfo) {
        return Err(FlashError::Mounted {
            device,
            what,
            mount_point,
        });
    }
    if let Some(what) = swap(info, swaps) {
        return Err(FlashError::Swap { device, what });
    }
    let held = info
        .holders
        .first()
        .map(|h| (info.name.clone(), h.clone()))
        .or_else(|| {
            info.partitions
                .iter()
                .find_map(|p| p.holders.first().map(|h| (p.name.clone(), h.clone())))
        });
    if let Some((what, holder)) = held {
        return Err(FlashError::Held {
            device,
            what,
            holder,
        });
    }
    if !info.removable && !info.usb() && !policy.allow_fixed {
        return Err(FlashError::Fixed {
            device,
            name: info.name.clone(),
        });
    }
    if info.size < policy.image_len {
        return Err(FlashError::TooSmall {
            device,
            device_len: info.size,
            image_len: policy.image_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{self, tests::fake_sys};

    const USB: &str = "pci0000:00/usb1/1-1/host6/target6:0:0/6:0:0:0";
    const POLICY: Policy = Policy {
        allow_fixed: false,
        image_len: 1 << 20,
    };
    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw
25 22 259:1 / /boot rw,relatime shared:5 - vfat /dev/nvme0n1p1 rw
";

    fn usb_stick(t: &Path) -> DeviceInfo {
        let sys = fake_sys(t, USB, "sdb", &["sdb1", "sdb2"], true);
        device::read(
            &sys,
            DevNum {
                major: 8,
                minor: 16,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_free_usb_stick_passes() {
        let t = tempfile::tempdir().unwrap();
        let info = usb_stick(t.path());
        check(
            Path::new("/dev/sdb"),
            &info,
            MOUNTINFO,
            "Filename Type\n",
            POLICY,
        )
        .unwrap();
    }

    #[test]
    fn a_partition_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let sys = fake_sys(t.path(), USB, "sdb", &["sdb1"], true);
        let info = device::read(
            &sys,
            DevNum {
                major: 8,
                minor: 17,
            },
        )
        .unwrap();
        let err = check(Path::new("/dev/sdb1"), &info, "", "", POLICY).unwrap_err();
        assert!(
            matches!(&err, FlashError::Partition { name, parent, .. } if name == "sdb1" && parent == "sdb")
        );
        assert_eq!(
            err.to_string(),
            "/dev/sdb1 is a partition (sdb1) of sdb, not a whole disk"
        );
    }

    #[test]
    fn a_mounted_partition_is_refused_by_device_number() {
        let t = tempfile::tempdir().unwrap();
        let info = usb_stick(t.path());
        let mi = format!(
            "{MOUNTINFO}40 22 8:18 / /media/my\\040stick rw - vfat /dev/disk/by-label/X rw\n"
        );
        let err = check(Path::new("/dev/sdb"), &info, &mi, "", POLICY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/sdb: sdb2 is mounted on /media/my stick"
        );
    }

    #[test]
    fn a_mounted_disk_is_refused_by_source_name_when_the_number_is_anonymous() {
        let t = tempfile::tempdir().unwrap();
        let info = usb_stick(t.path());
        // btrfs: anonymous 0:N in the third field, the real device only as the source.
        let mi = format!("{MOUNTINFO}41 22 0:45 / /mnt rw - btrfs /dev/sdb1 rw\n");
        let err = check(Path::new("/dev/sdb"), &info, &mi, "", POLICY).unwrap_err();
        assert!(
            matches!(&err, FlashError::Mounted { what, mount_point, .. } if what == "sdb1" && mount_point == "/mnt"),
            "{err}"
        );
    }

    #[test]
    fn swap_holders_fixed_and_size_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let info = usb_stick(t.path());
        let dev = Path::new("/dev/sdb");
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1000 0 -2\n";
        assert!(
            matches!(check(dev, &info, "", swaps, POLICY), Err(FlashError::Swap { what, .. }) if what == "sdb2")
        );
        let mut held = info.clone();
        held.partitions[0].holders = vec!["dm-0".into()];
        let err = check(dev, &held, "", "", POLICY).unwrap_err();
        assert_eq!(err.to_string(), "/dev/sdb: sdb1 is in use by dm-0");
        let mut fixed = info.clone();
        fixed.removable = false;
        fixed.transport = "ata";
        assert!(matches!(
            check(dev, &fixed, "", "", POLICY),
            Err(FlashError::Fixed { .. })
        ));
        let allow = Policy {
            allow_fixed: true,
            ..POLICY
        };
        check(dev, &fixed, "", "", allow).unwrap();
        // USB but not flagged removable (many USB SSDs): allowed.
        let mut usb_ssd = info.clone();
        usb_ssd.removable = false;
        check(dev, &usb_ssd, "", "", POLICY).unwrap();
        let big = Policy {
            image_len: info.size + 1,
            ..POLICY
        };
        let err = check(dev, &info, "", "", big).unwrap_err();
        assert!(matches!(err, FlashError::TooSmall { .. }), "{err}");
    }

    #[test]
    fn unescape_reads_mountinfo_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }
}
