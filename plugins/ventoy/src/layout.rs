//! The Ventoy disk layout: partition tables written and read back, and the layout checks that
//! Ventoy's GRUB makes (`ventoy_check_official_device`).
//!
//! Supports: MBR (default) and GPT tables as `Ventoy2Disk.sh` writes them, 512-byte sectors.
//! Does not support: 4K-native disks, the optional reserved space after partition 2, the
//! "secure boot off" variant of VTOYEFI.
//! Reference: `ventoy.md` §2.1–§2.3; Ventoy `LinuxGUI/Ventoy2Disk/Core/ventoy_util.c`
//! (`ventoy_fill_mbr`, `ventoy_fill_gpt`) and `ventoy_cmd.c` (`ventoy_check_official_device`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::VentoyError;

/// Sector size.
pub const SECTOR: u64 = 512;
/// First sector of partition 1 (check 2).
pub const DATA_START: u64 = 2048;
/// Sectors of partition 2 (check 3).
pub const EFI_SECTORS: u64 = 65536;
/// Bytes of the VTOYEFI partition image.
pub const EFI_LEN: u64 = EFI_SECTORS * SECTOR;
/// Bytes of `core.img` (LBA 1–2047).
pub const CORE_LEN: u64 = 2047 * SECTOR;
/// Sectors of core.img that fit between the GPT (LBA 34) and LBA 2048.
pub const GPT_CORE_SECTORS: u64 = 2014;
/// Sectors of a primary or backup GPT entry array.
pub const GPT_ENTRY_SECTORS: u64 = 32;
/// MBR bytes 0x000–0x02F of Ventoy's boot.img (check 5, first half).
pub const MBR_SIG_HEAD: [u8; 0x30] = {
    let mut b = [0u8; 0x30];
    b[0] = 0xEB;
    b[1] = 0x63;
    b[2] = 0x90;
    b
};
/// MBR bytes 0x190–0x19F of Ventoy's boot.img (check 5, second half).
pub const MBR_SIG_MID: [u8; 16] = [
    0x56, 0x54, 0x00, 0x47, 0x65, 0x00, 0x48, 0x44, 0x00, 0x52, 0x64, 0x00, 0x20, 0x45, 0x72, 0x0D,
];
/// GPT type GUID "Microsoft basic data", on-disk byte order.
pub const BASIC_DATA_GUID: [u8; 16] = [
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7,
];

/// Partition-table style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// MBR.
    Mbr,
    /// GPT with a protective MBR.
    Gpt,
}

/// Where everything goes, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// Table style.
    pub style: Style,
    /// Start of partition 1 (2048).
    pub data_start: u64,
    /// Sectors of partition 1.
    pub data_sectors: u64,
    /// Start of partition 2.
    pub efi_start: u64,
    /// Sectors of partition 2 (65536).
    pub efi_sectors: u64,
    /// Sectors of the whole disk (image length / 512).
    pub total_sectors: u64,
    /// MBR type byte of partition 1: `0x0C` (FAT32) or `0x07` (exFAT).
    pub data_type: u8,
}

impl Layout {
    /// A layout with a data partition of at least `data_bytes`, rounded up to 4 KiB so that
    /// partition 2 starts on an 8-sector boundary.
    pub fn for_data(style: Style, data_bytes: u64) -> Layout {
        let data_sectors = data_bytes.div_ceil(SECTOR).next_multiple_of(8);
        let efi_start = DATA_START + data_sectors;
        let tail = match style {
            Style::Mbr => 0,
            Style::Gpt => 1 + GPT_ENTRY_SECTORS,
        };
        Layout {
            style,
            data_start: DATA_START,
            data_sectors,
            efi_start,
            efi_sectors: EFI_SECTORS,
            total_sectors: efi_start + EFI_SECTORS + tail,
            data_type: 0x0C,
        }
    }

    /// A layout filling a disk of `total_bytes`.
    pub fn for_disk(style: Style, total_bytes: u64) -> Option<Layout> {
        let total = total_bytes / SECTOR;
        let tail = match style {
            Style::Mbr => 0,
            Style::Gpt => 1 + GPT_ENTRY_SECTORS,
        };
        let data = total.checked_sub(DATA_START + EFI_SECTORS + tail)? / 8 * 8;
        let mut l = Layout::for_data(style, data * SECTOR);
        l.total_sectors = total;
        Some(l)
    }

    /// Byte offset of partition 1.
    pub fn data_offset(&self) -> u64 {
        self.data_start * SECTOR
    }
    /// Byte length of partition 1.
    pub fn data_len(&self) -> u64 {
        self.data_sectors * SECTOR
    }
    /// Byte offset of partition 2.
    pub fn efi_offset(&self) -> u64 {
        self.efi_start * SECTOR
    }
    /// Byte length of the disk.
    pub fn total_len(&self) -> u64 {
        self.total_sectors * SECTOR
    }
}

/// Identifiers that are random per image unless seeded.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// Ventoy's "disk GUID" at MBR 0x180.
    pub ventoy_guid: [u8; 16],
    /// Disk signature at MBR 0x1B8.
    pub signature: u32,
    /// GPT disk GUID.
    pub gpt_disk: [u8; 16],
    /// GPT unique partition GUIDs.
    pub gpt_parts: [[u8; 16]; 2],
    /// FAT volume id of partition 1.
    pub volume_id: u32,
}

impl Ids {
    /// From 64 bytes of randomness (or seeded pseudo-randomness).
    pub fn from_bytes(b: &[u8; 64]) -> Ids {
        let g = |i: usize| -> [u8; 16] {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[i..i + 16]);
            // RFC 4122 version 4, variant 1.
            x[7] = (x[7] & 0x0F) | 0x40;
            x[8] = (x[8] & 0x3F) | 0x80;
            x
        };
        let mut ventoy_guid = [0u8; 16];
        ventoy_guid.copy_from_slice(&b[0..16]);
        let mut sig = u32::from_le_bytes([b[56], b[57], b[58], b[59]]);
        if sig == 0 {
            sig = 1;
        }
        Ids {
            ventoy_guid,
            signature: sig,
            gpt_disk: g(16),
            gpt_parts: [g(32), g(40)],
            volume_id: u32::from_le_bytes([b[60], b[61], b[62], b[63]]),
        }
    }
}

fn mbr_entry(active: bool, kind: u8, start: u64, len: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = if active { 0x80 } else { 0 };
    // CHS fields: "use LBA" values, as for every disk over 8 GiB.
    e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&(start.min(u32::MAX as u64) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(len.min(u32::MAX as u64) as u32).to_le_bytes());
    e
}

/// Sector 0: boot code from boot.img with the ids, and the MBR or protective-MBR table.
pub fn mbr_sector(layout: &Layout, boot_img: &[u8], ids: &Ids) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..446].copy_from_slice(&boot_img[..446]);
    s[0x180..0x190].copy_from_slice(&ids.ventoy_guid);
    s[0x1B8..0x1BC].copy_from_slice(&ids.signature.to_le_bytes());
    s[0x1BC] = 0;
    s[0x1BD] = 0;
    match layout.style {
        Style::Mbr => {
            // 0x0C: FAT32 with LBA, what Ventoy's Windows installer writes for FAT32; 0x07 for
            // exFAT, as Ventoy2Disk.sh writes.
            s[0x1BE..0x1CE].copy_from_slice(&mbr_entry(
                true,
                layout.data_type,
                layout.data_start,
                layout.data_sectors,
            ));
            s[0x1CE..0x1DE].copy_from_slice(&mbr_entry(
                false,
                0xEF,
                layout.efi_start,
                layout.efi_sectors,
            ));
        }
        Style::Gpt => {
            // GRUB's "kernel sector" field: core.img's diskboot sector is LBA 34.
            s[92] = 0x22;
            let mut e = mbr_entry(false, 0xEE, 1, layout.total_sectors - 1);
            e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
            s[0x1BE..0x1CE].copy_from_slice(&e);
        }
    }
    s[0x1FE] = 0x55;
    s[0x1FF] = 0xAA;
    s
}

fn utf16_name(name: &str) -> [u8; 72] {
    let mut out = [0u8; 72];
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(&u.to_le_bytes());
    }
    out
}

/// The GPT entry array (128 entries of 128 bytes).
pub fn gpt_entries(layout: &Layout, ids: &Ids) -> Vec<u8> {
    let mut a = vec![0u8; (GPT_ENTRY_SECTORS * SECTOR) as usize];
    let parts = [
        (layout.data_start, layout.data_sectors, 0u64, "Ventoy"),
        (
            layout.efi_start,
            layout.efi_sectors,
            0x8000_0000_0000_0000u64,
            "VTOYEFI",
        ),
    ];
    for (i, (start, len, attr, name)) in parts.iter().enumerate() {
        let e = &mut a[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&BASIC_DATA_GUID);
        e[16..32].copy_from_slice(&ids.gpt_parts[i]);
        e[32..40].copy_from_slice(&start.to_le_bytes());
        e[40..48].copy_from_slice(&(start + len - 1).to_le_bytes());
        e[48..56].copy_from_slice(&attr.to_le_bytes());
        e[56..128].copy_from_slice(&utf16_name(name));
    }
    a
}

/// A GPT header sector; `primary` chooses LBA 1 or the last LBA.
pub fn gpt_header(layout: &Layout, ids: &Ids, entries: &[u8], primary: bool) -> [u8; 512] {
    let last = layout.total_sectors - 1;
    let (current, backup, entries_lba) = if primary {
        (1, last, 2)
    } else {
        (last, 1, last - GPT_ENTRY_SECTORS)
    };
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&current.to_le_bytes());
    h[32..40].copy_from_slice(&backup.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(last - 1 - GPT_ENTRY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&ids.gpt_disk);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A partition as read from a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Part {
    /// First sector.
    pub start: u64,
    /// Sectors.
    pub sectors: u64,
    /// MBR type byte (0 for GPT).
    pub mbr_type: u8,
}

/// What [`check_disk`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// Table style.
    pub style: Style,
    /// Partition 1.
    pub data: Part,
    /// Partition 2.
    pub efi: Part,
    /// Length of the image or device in bytes.
    pub disk_len: u64,
}

fn read_at(file: &File, path: &Path, off: u64, len: usize) -> Result<Vec<u8>, VentoyError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, off)
        .map_err(|e| VentoyError::io("reading", path, e))?;
    Ok(buf)
}

/// Reads the partition table and applies Ventoy's checks 2, 3 and 5 (1 and 4 need the FAT
/// reader: see `crate::fat::check_efi`).
pub fn check_disk(file: &File, path: &Path) -> Result<Found, VentoyError> {
    let not = |check: &'static str, problem: String| VentoyError::NotVentoy {
        path: path.to_path_buf(),
        check,
        problem,
    };
    let disk_len = file
        .metadata()
        .map_err(|e| VentoyError::io("reading", path, e))?
        .len();
    let disk_len = if disk_len == 0 {
        // Block devices report 0; seek to the end instead.
        use std::io::Seek;
        let mut f = file;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|e| VentoyError::io("reading", path, e))?
    } else {
        disk_len
    };
    if disk_len < (DATA_START + EFI_SECTORS) * SECTOR {
        return Err(not(
            "size",
            format!("{disk_len} bytes is smaller than any Ventoy disk"),
        ));
    }
    let mbr = read_at(file, path, 0, 512)?;
    if mbr[0x1FE..0x200] != [0x55, 0xAA] {
        return Err(not("partition table", "no 55 AA boot signature".into()));
    }
    if mbr[..0x30] != MBR_SIG_HEAD || mbr[0x190..0x1A0] != MBR_SIG_MID {
        return Err(not(
            "check 5 (Ventoy MBR signature)",
            "bytes 0x000–0x02F or 0x190–0x19F differ from Ventoy's boot code".into(),
        ));
    }
    let entry = |i: usize| {
        let e = &mbr[0x1BE + 16 * i..0x1BE + 16 * (i + 1)];
        Part {
            start: u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64,
            sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64,
            mbr_type: e[4],
        }
    };
    let (style, data, efi) = if entry(0).mbr_type == 0xEE {
        let h = read_at(file, path, SECTOR, 512)?;
        if &h[0..8] != b"EFI PART" {
            return Err(not(
                "partition table",
                "protective MBR but no GPT header at LBA 1".into(),
            ));
        }
        let u64at =
            |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32at =
            |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let mut hc = h[..92].to_vec();
        hc[16..20].fill(0);
        if crc32fast::hash(&hc) != u32at(&h, 16) {
            return Err(not("partition table", "GPT header CRC mismatch".into()));
        }
        let lba = u64at(&h, 72);
        let n = u32at(&h, 80) as usize;
        let size = u32at(&h, 84) as usize;
        if size < 128 || n < 2 || n * size > 1 << 20 {
            return Err(not("partition table", "unusable GPT entry array".into()));
        }
        let a = read_at(file, path, lba * SECTOR, n * size)?;
        if crc32fast::hash(&a) != u32at(&h, 88) {
            return Err(not(
                "partition table",
                "GPT entry array CRC mismatch".into(),
            ));
        }
        let part = |i: usize| {
            let e = &a[i * size..i * size + 128];
            let first = u64at(e, 32);
            let last = u64at(e, 40);
            Part {
                start: first,
                sectors: (last + 1).saturating_sub(first),
                mbr_type: 0,
            }
        };
        (Style::Gpt, part(0), part(1))
    } else {
        (Style::Mbr, entry(0), entry(1))
    };
    if data.start != DATA_START {
        return Err(not(
            "check 2 (partition 1 start)",
            format!("partition 1 starts at sector {}, not 2048", data.start),
        ));
    }
    if efi.sectors != EFI_SECTORS {
        return Err(not(
            "check 3 (partition 2 size)",
            format!("partition 2 has {} sectors, not 65536", efi.sectors),
        ));
    }
    if efi.start != data.start + data.sectors {
        return Err(not(
            "check 3 (partition 2 position)",
            format!(
                "partition 2 starts at {}, not right after partition 1 ({})",
                efi.start,
                data.start + data.sectors
            ),
        ));
    }
    if (efi.start + efi.sectors) * SECTOR > disk_len {
        return Err(not(
            "size",
            "partition 2 ends past the end of the disk".into(),
        ));
    }
    Ok(Found {
        style,
        data,
        efi,
        disk_len,
    })
}
