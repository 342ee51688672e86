//! In-place FAT32 edits: read a file, replace one crash-consistently, wipe and delete one,
//! wipe lost clusters.
//!
//! Supports: FAT32 as keypack writes it (`fatfs`, 512-byte sectors) and as `mkfs.fat` does;
//! long and short names (ASCII case-insensitive lookup); every FAT copy is updated.
//! Does not support: FAT12/16 (Ventoy's data partition is never one), creating files or
//! folders, growing a folder.
//! Reference: Microsoft "FAT32 File System Specification" 1.03 (boot sector, FSInfo, directory
//! entries, long names); the crash-consistent order of `plugins/ventoy/src/fat.rs`
//! `switch_file`, which this follows step for step.
//! Why own code rather than the ventoy crate's `fat::Raw`: that type is private to a module
//! built around `fatfs` and the plugin's error type; `load-keys` links this crate and must
//! not pull `fatfs`, clap or the plugin crates.

use zeroize::Zeroizing;

use crate::part::{Part, Stop};
use crate::{BurnError, Removed};

/// A FAT32 entry value at or above this ends a chain (0x0FFFFFF7 is a bad cluster).
const CHAIN_END: u32 = 0x0FFF_FFF7;
const BAD_CLUSTER: u32 = 0x0FFF_FFF7;
/// Largest FAT read (entries): a 2 TiB volume with 32 KiB clusters.
const MAX_FAT: usize = 64 << 20;

pub(crate) struct Fat32<'f> {
    part: Part<'f>,
    bps: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
    root: u32,
    clusters: u32,
    fsinfo: u64,
    cluster: u64,
    data: u64,
    fat: Vec<u32>,
}

/// A directory entry found by [`Fat32::lookup`].
struct Entry {
    /// Partition offsets of its long-name slots, then of the short entry (last).
    slots: Vec<u64>,
    first: u32,
    size: u32,
    dir: bool,
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl<'f> Fat32<'f> {
    /// The FAT32 volume on `part`, or `None` when the boot sector is not FAT32's.
    pub(crate) fn open(part: Part<'f>) -> Result<Option<Self>, BurnError> {
        let mut b = [0u8; 512];
        part.rd(0, &mut b)?;
        let bps = le16(&b, 11);
        let spc = u64::from(b[13]);
        let reserved = le16(&b, 14);
        let fats = u64::from(b[16]);
        let root_entries = le16(&b, 17);
        let fat16_size = le16(&b, 22);
        let total16 = le16(&b, 19);
        let total32 = u64::from(le32(&b, 32));
        let fat_sectors = u64::from(le32(&b, 36));
        let is_fat32 = b[510..512] == [0x55, 0xAA]
            && matches!(bps, 512 | 1024 | 2048 | 4096)
            && spc.is_power_of_two()
            && spc <= 128
            && reserved > 0
            && (1..=4).contains(&fats)
            && root_entries == 0
            && fat16_size == 0
            && fat_sectors > 0
            && total16 == 0;
        if !is_fat32 {
            return Ok(None);
        }
        let data_sector = reserved + fats * fat_sectors;
        let clusters = total32.saturating_sub(data_sector) / spc;
        let entries = (fat_sectors * bps / 4) as usize;
        let n = (clusters as usize + 2).min(entries);
        if n > MAX_FAT || clusters > u64::from(u32::MAX) {
            return Err(BurnError::fs(
                part.shown,
                format!("the FAT claims {n} clusters"),
            ));
        }
        let mut raw = vec![0u8; n * 4];
        part.rd(reserved * bps, &mut raw)?;
        let fat = raw
            .chunks_exact(4)
            .map(|c| le32(c, 0) & 0x0FFF_FFFF)
            .collect();
        Ok(Some(Fat32 {
            bps,
            reserved,
            fats,
            fat_sectors,
            root: le32(&b, 44),
            clusters: clusters as u32,
            fsinfo: le16(&b, 48),
            cluster: bps * spc,
            data: data_sector * bps,
            fat,
            part,
        }))
    }

    fn in_range(&self, c: u32) -> bool {
        c >= 2 && (c as usize) < self.fat.len()
    }

    fn offset(&self, c: u32) -> u64 {
        self.data + u64::from(c - 2) * self.cluster
    }

    /// The chain from `start`, stopped at a free or end value, a number beyond the FAT, or a
    /// loop (no chain is longer than the FAT).
    fn chain(&self, start: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = start;
        while self.in_range(c) && out.len() < self.fat.len() {
            out.push(c);
            let next = self.fat[c as usize];
            if !(2..CHAIN_END).contains(&next) {
                break;
            }
            c = next;
        }
        out
    }

    fn find(&self, dir: u32, name: &str) -> Result<Option<Entry>, BurnError> {
        let mut lfn: Vec<(u8, [u16; 13])> = Vec::new();
        let mut slots: Vec<u64> = Vec::new();
        let mut buf = vec![0u8; self.cluster as usize];
        for c in self.chain(dir) {
            let base = self.offset(c);
            self.part.rd(base, &mut buf)?;
            for (i, e) in buf.chunks_exact(32).enumerate() {
                let at = base + i as u64 * 32;
                if e[0] == 0 {
                    return Ok(None);
                }
                if e[0] == 0xE5 {
                    lfn.clear();
                    slots.clear();
                    continue;
                }
                if e[11] & 0x3F == 0x0F {
                    if e[0] & 0x40 != 0 {
                        lfn.clear();
                        slots.clear();
                    }
                    let mut part = [0u16; 13];
                    for (k, &o) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                        .iter()
                        .enumerate()
                    {
                        part[k] = u16::from_le_bytes([e[o], e[o + 1]]);
                    }
                    lfn.push((e[0] & 0x1F, part));
                    slots.push(at);
                    continue;
                }
                let long = (!lfn.is_empty()).then(|| {
                    let mut parts = lfn.clone();
                    parts.sort_by_key(|p| p.0);
                    let units: Vec<u16> = parts
                        .iter()
                        .flat_map(|p| p.1)
                        .take_while(|&u| u != 0 && u != 0xFFFF)
                        .collect();
                    String::from_utf16_lossy(&units)
                });
                let mut entry_slots = std::mem::take(&mut slots);
                lfn.clear();
                if e[11] & 0x08 != 0 {
                    continue; // volume label
                }
                let short = short_name(&e[..11]);
                if long
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(name))
                    || short.eq_ignore_ascii_case(name)
                {
                    entry_slots.push(at);
                    let first = (((le16(e, 20) << 16) | le16(e, 26)) as u32) & 0x0FFF_FFFF;
                    return Ok(Some(Entry {
                        slots: entry_slots,
                        first,
                        size: le32(e, 28),
                        dir: e[11] & 0x10 != 0,
                    }));
                }
            }
        }
        Ok(None)
    }

    fn lookup(&self, path: &str) -> Result<Option<Entry>, BurnError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut dir = self.root;
        for (i, part) in parts.iter().enumerate() {
            let Some(e) = self.find(dir, part)? else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok((!e.dir).then_some(e));
            }
            if !e.dir {
                return Ok(None);
            }
            dir = e.first;
        }
        Ok(None)
    }

    /// The file at `path` if it is at most `max` bytes (`None` when missing or larger).
    pub(crate) fn read_file(
        &self,
        path: &str,
        max: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BurnError> {
        let Some(e) = self.lookup(path)? else {
            return Ok(None);
        };
        if u64::from(e.size) > max {
            return Ok(None);
        }
        let size = e.size as usize;
        let mut out = Zeroizing::new(vec![0u8; size]);
        let mut done = 0usize;
        for c in self.chain(e.first) {
            if done >= size {
                break;
            }
            let n = (self.cluster as usize).min(size - done);
            self.part.rd(self.offset(c), &mut out[done..done + n])?;
            done += n;
        }
        if done < size {
            return Err(BurnError::fs(
                self.part.shown,
                format!("{path}: its cluster chain is shorter than its size"),
            ));
        }
        Ok(Some(out))
    }

    /// Writes `updates` (cluster, value) into every FAT copy, keeping the 4 reserved bits.
    fn set_fat(&mut self, updates: &[(u32, u32)]) -> Result<(), BurnError> {
        for fat_no in 0..self.fats {
            let base = (self.reserved + fat_no * self.fat_sectors) * self.bps;
            for &(c, v) in updates {
                let at = base + u64::from(c) * 4;
                let mut old = [0u8; 4];
                self.part.rd(at, &mut old)?;
                let keep = u32::from_le_bytes(old) & 0xF000_0000;
                self.part
                    .wr(at, &((v & 0x0FFF_FFFF) | keep).to_le_bytes())?;
            }
        }
        for &(c, v) in updates {
            self.fat[c as usize] = v;
        }
        Ok(())
    }

    /// FSInfo: the exact free count and the next free cluster, as `fsck.fat` expects them.
    fn write_fsinfo(&self) -> Result<(), BurnError> {
        let limit = (self.clusters as usize + 2).min(self.fat.len());
        let free = self.fat[2..limit].iter().filter(|&&v| v == 0).count() as u32;
        let next = (2..limit)
            .find(|&c| self.fat[c] == 0)
            .unwrap_or(0xFFFF_FFFF) as u32;
        let at = self.fsinfo * self.bps;
        let mut s = [0u8; 512];
        self.part.rd(at, &mut s)?;
        if s[0..4] == *b"RRaA" && s[484..488] == *b"rrAa" {
            s[488..492].copy_from_slice(&free.to_le_bytes());
            s[492..496].copy_from_slice(&next.to_le_bytes());
            self.part.wr(at, &s)?;
        }
        Ok(())
    }

    fn zero_chain(&self, chain: &[u32]) -> Result<(), BurnError> {
        for &c in chain {
            self.part.zero(self.offset(c), self.cluster)?;
        }
        Ok(())
    }

    /// Replaces the content of the existing file `path`: free clusters chained first (still
    /// unreachable), the data written into them, one 32-byte directory-entry write makes them
    /// the file, then the old clusters are zeroed and freed. Steps: `json-chain`,
    /// `json-data`, `json-entry`, `json-wipe`.
    pub(crate) fn replace_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        stop: Stop<'_>,
    ) -> Result<(), BurnError> {
        let Some(e) = self.lookup(path)? else {
            return Err(BurnError::fs(self.part.shown, format!("{path} vanished")));
        };
        let old = self.chain(e.first);
        let need = bytes.len().div_ceil(self.cluster as usize).max(1);
        let limit = (self.clusters as usize + 2).min(self.fat.len());
        let free: Vec<u32> = (2..limit as u32)
            .filter(|&c| self.fat[c as usize] == 0)
            .take(need)
            .collect();
        if free.len() < need {
            return Err(BurnError::fs(
                self.part.shown,
                format!("no room for the new {path}: {need} free clusters needed"),
            ));
        }
        let updates: Vec<(u32, u32)> = free
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, free.get(i + 1).copied().unwrap_or(0x0FFF_FFFF)))
            .collect();
        self.set_fat(&updates)?;
        self.part.sync()?;
        stop.after("json-chain")?;
        let cs = self.cluster as usize;
        let mut buf = vec![0u8; cs];
        for (i, &c) in free.iter().enumerate() {
            let start = (i * cs).min(bytes.len());
            let end = (start + cs).min(bytes.len());
            buf.fill(0);
            buf[..end - start].copy_from_slice(&bytes[start..end]);
            self.part.wr(self.offset(c), &buf)?;
        }
        self.part.sync()?;
        stop.after("json-data")?;
        let short = *e.slots.last().unwrap_or(&0);
        let mut entry = [0u8; 32];
        self.part.rd(short, &mut entry)?;
        entry[20..22].copy_from_slice(&((free[0] >> 16) as u16).to_le_bytes());
        entry[26..28].copy_from_slice(&((free[0] & 0xFFFF) as u16).to_le_bytes());
        entry[28..32].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.part.wr(short, &entry)?;
        self.part.sync()?;
        stop.after("json-entry")?;
        self.zero_chain(&old)?;
        self.part.sync()?;
        stop.after("json-wipe")?;
        let frees: Vec<(u32, u32)> = old.iter().map(|&c| (c, 0)).collect();
        self.set_fat(&frees)?;
        self.write_fsinfo()?;
        self.part.sync()
    }

    /// Zeroes every cluster of `path`, then removes its directory entry (long-name slots
    /// first, so no orphaned long name is left), then frees the clusters. Steps: `zero`,
    /// `unlink`. A stop after `unlink` leaves zeroed clusters allocated and reachable from no
    /// file (lost clusters, which `fsck.fat` and `keypack media update` free); never a file
    /// whose clusters are free.
    pub(crate) fn delete_file(&mut self, path: &str, stop: Stop<'_>) -> Result<Removed, BurnError> {
        let Some(e) = self.lookup(path)? else {
            return Err(BurnError::fs(self.part.shown, format!("{path} vanished")));
        };
        let mut chain = self.chain(e.first);
        chain.retain(|&c| self.fat[c as usize] != BAD_CLUSTER);
        self.zero_chain(&chain)?;
        self.part.sync()?;
        stop.after("zero")?;
        for &slot in &e.slots {
            self.part.wr(slot, &[0xE5])?;
        }
        self.part.sync()?;
        stop.after("unlink")?;
        let frees: Vec<(u32, u32)> = chain.iter().map(|&c| (c, 0)).collect();
        self.set_fat(&frees)?;
        self.write_fsinfo()?;
        self.part.sync()?;
        Ok(Removed {
            bytes: u64::from(e.size),
            clusters: chain.len() as u64,
            cluster_size: self.cluster,
        })
    }
}

impl Fat32<'_> {
    /// Which clusters a file or folder reaches: every folder from the root down, each
    /// entry's chain (long-name slots, deleted entries, the volume label and `.`/`..` are not
    /// files). Index = cluster number.
    fn reachable(&self) -> Result<Vec<bool>, BurnError> {
        let mut seen = vec![false; self.fat.len()];
        let mut dirs = vec![self.root];
        let mut buf = vec![0u8; self.cluster as usize];
        while let Some(dir) = dirs.pop() {
            if !self.in_range(dir) || seen[dir as usize] {
                continue;
            }
            let chain = self.chain(dir);
            for &c in &chain {
                seen[c as usize] = true;
            }
            'folder: for c in chain {
                self.part.rd(self.offset(c), &mut buf)?;
                for e in buf.chunks_exact(32) {
                    if e[0] == 0 {
                        break 'folder;
                    }
                    if e[0] == 0xE5 || e[0] == b'.' || e[11] & 0x3F == 0x0F || e[11] & 0x08 != 0 {
                        continue;
                    }
                    let first = (((le16(e, 20) << 16) | le16(e, 26)) as u32) & 0x0FFF_FFFF;
                    if e[11] & 0x10 != 0 {
                        dirs.push(first);
                    } else {
                        for c in self.chain(first) {
                            seen[c as usize] = true;
                        }
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Zeroes, then frees, every lost cluster: marked used but reached by no file. An
    /// interrupted keys-only switch (`keypack media update --image`, killed between the
    /// directory-entry switch and the wipe) leaves the *previous* bundle there, which a burn
    /// must not leave behind either. Step: `lost`. Returns the clusters wiped.
    pub(crate) fn wipe_lost(&mut self, stop: Stop<'_>) -> Result<u64, BurnError> {
        let seen = self.reachable()?;
        let limit = (self.clusters as usize + 2).min(self.fat.len());
        let lost: Vec<u32> = (2..limit as u32)
            .filter(|&c| {
                let v = self.fat[c as usize];
                v != 0 && v != BAD_CLUSTER && !seen[c as usize]
            })
            .collect();
        if lost.is_empty() {
            return Ok(0);
        }
        self.zero_chain(&lost)?;
        self.part.sync()?;
        stop.after("lost")?;
        let frees: Vec<(u32, u32)> = lost.iter().map(|&c| (c, 0)).collect();
        self.set_fat(&frees)?;
        self.write_fsinfo()?;
        self.part.sync()?;
        Ok(lost.len() as u64)
    }
}

fn short_name(raw: &[u8]) -> String {
    let base = String::from_utf8_lossy(&raw[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&raw[8..11]).trim_end().to_string();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}
