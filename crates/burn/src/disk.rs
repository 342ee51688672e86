//! Recognising a Ventoy disk and its data partition, read-only.
//!
//! Supports: MBR and GPT disks with 512-byte sectors as Ventoy2Disk.sh and keypack write them
//! (`ventoy.md` §2): partition 1 at LBA 2048, partition 2 right after it, 65536 sectors long,
//! with a FAT boot sector labelled `VTOYEFI`.
//! Does not support: 4K-native disks (Ventoy refuses them too). Never writes.
//! Why not the ventoy crate's `layout::check_disk`: it also checks the MBR boot code against
//! the release blobs, which the target does not have, and it lives in the plugin crate that
//! `load-keys` must not link. The bundle's mark, not the layout, decides what is burned.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Sector size.
pub const SECTOR: u64 = 512;
const EFI_SECTORS: u64 = 65536;

/// A Ventoy disk's data partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPartition {
    /// Partition table style: `MBR` or `GPT`.
    pub style: &'static str,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// The data partition of `disk` if it has Ventoy's layout; `None` for any other disk (or one
/// that cannot be read).
pub fn ventoy_data_partition(disk: &File) -> Option<DataPartition> {
    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0).ok()?;
    if mbr[510..512] != [0x55, 0xAA] {
        return None;
    }
    let entry = |i: usize| &mbr[0x1BE + 16 * i..0x1CE + 16 * i];
    let (style, p1, p2) = if entry(0)[4] == 0xEE {
        let mut hdr = [0u8; 512];
        disk.read_exact_at(&mut hdr, SECTOR).ok()?;
        if &hdr[0..8] != b"EFI PART" {
            return None;
        }
        let entries_lba = le64(&hdr, 72);
        let entry_size = le32(&hdr, 84);
        if !(128..=4096).contains(&entry_size) {
            return None;
        }
        let mut two = vec![0u8; 2 * entry_size as usize];
        disk.read_exact_at(&mut two, entries_lba.checked_mul(SECTOR)?)
            .ok()?;
        let range = |e: &[u8]| {
            let (first, last) = (le64(e, 32), le64(e, 40));
            (last >= first).then(|| (first, last - first + 1))
        };
        (
            "GPT",
            range(&two[..entry_size as usize])?,
            range(&two[entry_size as usize..])?,
        )
    } else {
        let range = |e: &[u8]| (le32(e, 8), le32(e, 12));
        ("MBR", range(entry(0)), range(entry(1)))
    };
    if p1.0 != 2048 || p1.1 == 0 || p2.0 != p1.0 + p1.1 || p2.1 != EFI_SECTORS {
        return None;
    }
    let mut boot = [0u8; 512];
    disk.read_exact_at(&mut boot, p2.0 * SECTOR).ok()?;
    // FAT12/16 keep the label at 43, FAT32 at 71 (VTOYEFI is FAT16).
    let labelled = boot[43..54].starts_with(b"VTOYEFI") || boot[71..82].starts_with(b"VTOYEFI");
    if boot[510..512] != [0x55, 0xAA] || !labelled {
        return None;
    }
    Some(DataPartition {
        style,
        start: p1.0 * SECTOR,
        len: p1.1 * SECTOR,
    })
}
