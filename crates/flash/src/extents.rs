//! What of an image has to reach the device: its data extents (`SEEK_DATA`/`SEEK_HOLE`), plus
//! explicit zeros for every hole that must read as zero on a used stick.
//!
//! The rule for holes: a hole may be skipped only inside a FAT12/16/32 partition's **free
//! clusters** (cluster entry 0 in the first FAT), where stale bytes from the stick's past are
//! never read. Everything else — the first MiB (MBR, GPT, boot code gap), boot sectors,
//! reserved sectors, FATs, the FAT16 root folder, every allocated cluster (folders, and holes
//! inside a sparse ISO), whatever lies outside partitions (the GPT backup) — is written, as
//! zeros where the image has a hole. Why this and not "boot region + FATs only": a folder
//! cluster or an ISO block that is a hole in the image would otherwise keep stale bytes, and
//! the ISO's loop-mounted file system would read them.
//!
//! The same rule for an exFAT partition (an ISO over 4 GiB, or `--exfat`): a hole is skipped
//! only inside clusters its allocation bitmap marks free ([`free_exfat_clusters`]); the boot
//! region, the FAT, the bitmap, the up-case table, every folder and every allocated cluster
//! are written. Does not parse TexFAT (two FATs and two bitmaps), which is then written whole.
//! Does not trust anything it cannot parse: unknown means "write it".

use std::fs::File;
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

/// A byte range `[start, end)`.
pub type Range = (u64, u64);

/// What a region of the device gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The image's bytes.
    Data,
    /// Zeros (a hole of the image that must read as zero).
    Zero,
}

/// One region to write, in device offsets (the same as image offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Data or zeros.
    pub kind: Kind,
}

/// The image's data extents, from `SEEK_DATA`/`SEEK_HOLE`. A file system without them
/// (EINVAL, ENOTSUP) reports the whole file as data, which is correct, only slower.
pub fn data_extents(file: &File, len: u64) -> std::io::Result<Vec<Range>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data past `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) if pos == 0 => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(e) => return Err(e.into()),
        };
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Partitions from the MBR, or from the GPT behind a protective MBR: byte ranges. Empty when
/// there is no table (then the whole image is written).
pub fn partitions(file: &File, len: u64) -> std::io::Result<Vec<Range>> {
    let mut mbr = [0u8; 512];
    if len < 512 {
        return Ok(Vec::new());
    }
    file.read_exact_at(&mut mbr, 0)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(Vec::new());
    }
    let u32at =
        |b: &[u8], o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let u64at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let mut out = Vec::new();
    if mbr[0x1BE + 4] == 0xEE {
        let mut h = [0u8; 512];
        file.read_exact_at(&mut h, 512)?;
        if &h[..8] != b"EFI PART" {
            return Ok(Vec::new());
        }
        let lba = u64at(&h, 72);
        let n = u32at(&h, 80) as usize;
        let size = u32at(&h, 84) as usize;
        if !(128..=4096).contains(&size) || n > 1024 {
            return Ok(Vec::new());
        }
        let mut a = vec![0u8; n * size];
        file.read_exact_at(&mut a, lba.saturating_mul(512))?;
        for e in a.chunks(size) {
            if e[..16].iter().all(|&b| b == 0) {
                continue;
            }
            let (first, last) = (u64at(e, 32), u64at(e, 40));
            if last >= first {
                out.push((first * 512, (last + 1) * 512));
            }
        }
    } else {
        for i in 0..4 {
            let e = &mbr[0x1BE + 16 * i..0x1BE + 16 * (i + 1)];
            let (start, sectors) = (u32at(e, 8), u32at(e, 12));
            if e[4] != 0 && sectors > 0 {
                out.push((start * 512, (start + sectors) * 512));
            }
        }
    }
    // A partition past the image's end is not ours to plan: clip it.
    Ok(out
        .into_iter()
        .map(|(s, e)| (s.min(len), e.min(len)))
        .filter(|(s, e)| s < e)
        .collect())
}

/// Largest FAT read (a FAT32 FAT for a 2 TiB volume of 32 KiB clusters is 256 MiB).
const MAX_FAT: u64 = 256 << 20;

/// Free clusters of the FAT12/16/32 file system in `part`, merged into byte ranges; empty when
/// it is not FAT (or FAT12, too small to matter).
pub fn free_clusters(file: &File, part: Range) -> std::io::Result<Vec<Range>> {
    let (off, end) = part;
    if end - off < 512 {
        return Ok(Vec::new());
    }
    let mut s = [0u8; 512];
    file.read_exact_at(&mut s, off)?;
    let u16at = |o: usize| u64::from(u16::from_le_bytes([s[o], s[o + 1]]));
    let u32at = |o: usize| u64::from(u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]));
    let bps = u16at(11);
    let spc = u64::from(s[13]);
    let reserved = u16at(14);
    let fats = u64::from(s[16]);
    let root_entries = u16at(17);
    let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
    let fat_sectors = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
    if s[510..512] != [0x55, 0xAA]
        || !matches!(bps, 512 | 1024 | 2048 | 4096)
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || !(1..=2).contains(&fats)
        || fat_sectors == 0
        || total * bps > end - off
    {
        return Ok(Vec::new());
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + fats * fat_sectors + root_sectors;
    if data_start >= total {
        return Ok(Vec::new());
    }
    let clusters = (total - data_start) / spc;
    let width: u64 = if clusters < 4085 {
        return Ok(Vec::new());
    } else if clusters < 65525 {
        2
    } else {
        4
    };
    let fat_len = fat_sectors * bps;
    if fat_len > MAX_FAT || (clusters + 2) * width > fat_len {
        return Ok(Vec::new());
    }
    let mut fat = vec![0u8; fat_len as usize];
    file.read_exact_at(&mut fat, off + reserved * bps)?;
    let cluster_len = spc * bps;
    let base = off + data_start * bps;
    let mut out: Vec<Range> = Vec::new();
    for c in 2..clusters + 2 {
        let i = (c * width) as usize;
        let entry = if width == 2 {
            u32::from(u16::from_le_bytes([fat[i], fat[i + 1]]))
        } else {
            u32::from_le_bytes([fat[i], fat[i + 1], fat[i + 2], fat[i + 3]]) & 0x0FFF_FFFF
        };
        if entry != 0 {
            continue;
        }
        let start = base + (c - 2) * cluster_len;
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 += cluster_len,
            _ => out.push((start, start + cluster_len)),
        }
    }
    Ok(out)
}

/// Largest exFAT allocation bitmap read (one bit per cluster: 2^32 clusters).
const MAX_BITMAP: u64 = 512 << 20;

/// Free clusters of the exFAT file system in `part` (clusters whose bit in the allocation
/// bitmap is 0), merged into byte ranges; empty when it is not exFAT, has two FATs (TexFAT),
/// or anything on the way to the bitmap does not check out.
pub fn free_exfat_clusters(file: &File, part: Range) -> std::io::Result<Vec<Range>> {
    let (off, end) = part;
    if end - off < 512 {
        return Ok(Vec::new());
    }
    let mut s = [0u8; 512];
    file.read_exact_at(&mut s, off)?;
    let u32at =
        |b: &[u8], o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let u64at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    if &s[3..11] != b"EXFAT   " || s[510..512] != [0x55, 0xAA] || !(9..=12).contains(&s[108]) {
        return Ok(Vec::new());
    }
    let sector = 1u64 << s[108];
    // BytesPerSectorShift + SectorsPerClusterShift is at most 25 (32 MiB clusters).
    if u32::from(s[108]) + u32::from(s[109]) > 25 || s[110] != 1 {
        return Ok(Vec::new());
    }
    let cluster_len = sector << s[109];
    let volume = u64at(&s, 72).saturating_mul(sector);
    let fat_at = u32at(&s, 80) * sector;
    let fat_len = u32at(&s, 84) * sector;
    let heap_at = u32at(&s, 88) * sector;
    let clusters = u32at(&s, 92);
    let root = u32at(&s, 96);
    let heap_end = heap_at.saturating_add(clusters.saturating_mul(cluster_len));
    if volume > end - off
        || heap_end > volume
        || fat_at.saturating_add(fat_len) > heap_at
        || (clusters + 2) * 4 > fat_len
        || !(2..clusters + 2).contains(&root)
    {
        return Ok(Vec::new());
    }
    // A cluster chain through the FAT (a FAT entry per cluster; reads one entry at a time:
    // the chains followed here, the root folder's and the bitmap's, are a few clusters long).
    let next = |c: u64| -> std::io::Result<Option<u64>> {
        let mut e = [0u8; 4];
        file.read_exact_at(&mut e, off + fat_at + c * 4)?;
        let n = u64::from(u32::from_le_bytes(e));
        Ok((2..clusters + 2).contains(&n).then_some(n))
    };
    let cluster_at = |c: u64| off + heap_at + (c - 2) * cluster_len;
    // The allocation bitmap's entry (type 0x81) in the root folder (its first 64 clusters).
    let mut bitmap = None;
    let mut c = Some(root);
    'root: for _ in 0..64 {
        let Some(cl) = c else { break };
        let mut buf = vec![0u8; cluster_len as usize];
        file.read_exact_at(&mut buf, cluster_at(cl))?;
        for e in buf.chunks_exact(32) {
            match e[0] {
                0x00 => break 'root,
                0x81 => {
                    bitmap = Some((u32at(e, 20), u64at(e, 24)));
                    break 'root;
                }
                _ => {}
            }
        }
        c = next(cl)?;
    }
    let Some((first, len)) = bitmap else {
        return Ok(Vec::new());
    };
    if len < clusters.div_ceil(8) || len > MAX_BITMAP || !(2..clusters + 2).contains(&first) {
        return Ok(Vec::new());
    }
    // Read the bitmap along its chain (a bitmap written contiguously has its FAT chain too:
    // the exFAT spec requires it for the bitmap, which has no NoFatChain flag).
    let mut bits = vec![0u8; len as usize];
    let mut c = Some(first);
    for piece in bits.chunks_mut(cluster_len as usize) {
        let Some(cl) = c else {
            return Ok(Vec::new());
        };
        file.read_exact_at(piece, cluster_at(cl))?;
        c = next(cl)?;
    }
    let mut out: Vec<Range> = Vec::new();
    for i in 0..clusters {
        if bits[(i / 8) as usize] & (1 << (i % 8)) != 0 {
            continue;
        }
        let start = cluster_at(i + 2);
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 += cluster_len,
            _ => out.push((start, start + cluster_len)),
        }
    }
    Ok(out)
}

/// `a` minus `b`, both sorted and non-overlapping.
pub fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > s {
                out.push((s, b[k].0));
            }
            s = s.max(b[k].1);
            k += 1;
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// The plan for `file` (`len` bytes): data extents as [`Kind::Data`], and every hole outside
/// free FAT or exFAT clusters as [`Kind::Zero`], in offset order.
pub fn plan(file: &File, len: u64) -> std::io::Result<Vec<Region>> {
    let data = data_extents(file, len)?;
    let mut free = Vec::new();
    for part in partitions(file, len)? {
        free.extend(free_clusters(file, part)?);
        free.extend(free_exfat_clusters(file, part)?);
    }
    free.sort_unstable();
    let holes = subtract(&[(0, len)], &data);
    let zeros = subtract(&holes, &free);
    let mut out: Vec<Region> = data
        .iter()
        .map(|&(start, end)| Region {
            start,
            end,
            kind: Kind::Data,
        })
        .chain(zeros.iter().map(|&(start, end)| Region {
            start,
            end,
            kind: Kind::Zero,
        }))
        .collect();
    out.sort_by_key(|r| r.start);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A new, empty file at `path`, open for reading and writing.
    pub(crate) fn scratch(path: &std::path::Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn subtract_cuts_ranges() {
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (30, 40)]),
            [(0, 10), (20, 30), (40, 100)]
        );
        assert_eq!(
            subtract(&[(0, 10), (20, 30)], &[(5, 25)]),
            [(0, 5), (25, 30)]
        );
        assert_eq!(subtract(&[(0, 10)], &[]), [(0, 10)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), Vec::<Range>::new());
    }

    #[test]
    fn extents_of_a_sparse_file() {
        let t = tempfile::tempdir().unwrap();
        let f = scratch(&t.path().join("img"));
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        let ext = data_extents(&f, 16 << 20).unwrap();
        let total: u64 = ext.iter().map(|(s, e)| e - s).sum();
        assert!(total < 1 << 20, "{ext:?}");
        assert!(
            ext.iter()
                .any(|&(s, e)| s <= 1 << 20 && e >= (1 << 20) + 4096)
        );
    }

    /// An MBR disk with one FAT16 partition at sector 2048 (1 reserved sector, two 32-sector
    /// FATs, a 512-entry root folder, 8000 one-sector clusters) where only cluster 2 is in use;
    /// everything but the MBR, the boot sector and the FAT's first bytes is a hole.
    fn fat16_disk(f: &File) -> (u64, u64) {
        let part = 2048 * 512;
        let total = 1 + 64 + 32 + 8000u64;
        f.set_len(part + total * 512).unwrap();
        let mut mbr = [0u8; 512];
        mbr[0x1BE + 4] = 0x0E;
        mbr[0x1BE + 8..0x1BE + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[0x1BE + 12..0x1BE + 16].copy_from_slice(&(total as u32).to_le_bytes());
        mbr[510..].copy_from_slice(&[0x55, 0xAA]);
        f.write_all_at(&mbr, 0).unwrap();
        let mut bs = [0u8; 512];
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 1;
        bs[14..16].copy_from_slice(&1u16.to_le_bytes());
        bs[16] = 2;
        bs[17..19].copy_from_slice(&512u16.to_le_bytes());
        bs[19..21].copy_from_slice(&(total as u16).to_le_bytes());
        bs[22..24].copy_from_slice(&32u16.to_le_bytes());
        bs[510..].copy_from_slice(&[0x55, 0xAA]);
        f.write_all_at(&bs, part).unwrap();
        // Entries 0 and 1 reserved, cluster 2 end-of-chain, the rest free.
        f.write_all_at(&[0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], part + 512)
            .unwrap();
        let cluster2 = part + 97 * 512;
        (cluster2, part + total * 512)
    }

    #[test]
    fn holes_are_zeroed_except_in_free_clusters() {
        let t = tempfile::tempdir().unwrap();
        let f = scratch(&t.path().join("img"));
        let (cluster2, end) = fat16_disk(&f);
        let p = plan(&f, end).unwrap();
        // Regions are disjoint: [a, b) is covered when their overlaps with it add up to b - a.
        let covers = |a: u64, b: u64| {
            p.iter()
                .map(|r| r.end.min(b).saturating_sub(r.start.max(a)))
                .sum::<u64>()
                == b - a
        };
        // The first MiB, the FATs, the root folder and the used cluster (all holes) get zeros.
        assert!(covers(512, 1 << 20), "{p:?}");
        assert!(covers(cluster2 - 32 * 512, cluster2 + 512), "{p:?}");
        // No free cluster (3 and later) is written.
        assert!(
            p.iter().all(|r| r.end <= cluster2 + 512 || r.start >= end),
            "{p:?}"
        );
        assert!(
            p.iter()
                .filter(|r| r.kind == Kind::Data)
                .all(|r| r.end <= (1 << 20) + 4096)
        );
    }

    #[test]
    fn no_table_means_everything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let f = scratch(&t.path().join("img"));
        f.set_len(4 << 20).unwrap();
        let p = plan(&f, 4 << 20).unwrap();
        let covered: u64 = p.iter().map(|r| r.end - r.start).sum();
        assert_eq!(covered, 4 << 20);
    }
}
