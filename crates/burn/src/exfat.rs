//! In-place exFAT edits: read a file, replace one crash-consistently, wipe and delete one.
//!
//! Supports: exFAT as keypack's writer (`plugins/ventoy/src/exfat.rs`) and `mkfs.exfat` make
//! it: one FAT, files with a FAT chain or contiguous (`NoFatChain`), folders at any depth,
//! ASCII case-insensitive lookup. New data is always written with a FAT chain.
//! Does not support: TexFAT (two FATs), creating files or folders, growing a folder,
//! `PercentInUse` upkeep (left as it is; readers treat it as a hint).
//! Reference: Microsoft "exFAT file system specification" (2019): §3.1 boot sector, §4 FAT,
//! §7.1 allocation bitmap, §7.4 file entry (SetChecksum §7.4.2), §7.6 stream extension.
//! Why the order: the same as the FAT32 switch (allocate, write, one entry-set write, wipe,
//! free), so an interruption leaves the old file, the new one, or allocated clusters that no
//! file reaches (what `fsck.exfat` reports as a bitmap mismatch), never a file whose clusters
//! are free.

use zeroize::Zeroizing;

use crate::part::{Part, Stop};
use crate::{BurnError, Removed};

/// Largest folder read, against crafted chains.
const MAX_DIR: u64 = 8 << 20;

pub(crate) struct Exfat<'f> {
    part: Part<'f>,
    fat: u64,
    heap: u64,
    count: u32,
    root: u32,
    cluster: u64,
    bitmap: Option<(u32, u64)>,
    /// The allocation bitmap's clusters, and its bytes as read at open (kept in step with
    /// every bit written), so finding free clusters reads the disk once.
    bitmap_chain: Vec<u32>,
    bitmap_bytes: Vec<u8>,
}

/// A file's entry set, as found.
struct Set {
    /// Partition offsets of its entries (file, stream, names).
    slots: Vec<u64>,
    /// Their bytes.
    raw: Vec<[u8; 32]>,
    dir: bool,
    first: u32,
    size: u64,
    contiguous: bool,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn set_checksum(raw: &[[u8; 32]]) -> u16 {
    let mut s: u16 = 0;
    for (i, &b) in raw.iter().flatten().enumerate() {
        if i == 2 || i == 3 {
            continue;
        }
        s = s.rotate_right(1).wrapping_add(u16::from(b));
    }
    s
}

impl<'f> Exfat<'f> {
    /// The exFAT volume on `part`, or `None` when the boot sector is not exFAT's.
    pub(crate) fn open(part: Part<'f>) -> Result<Option<Self>, BurnError> {
        let mut b = [0u8; 512];
        part.rd(0, &mut b)?;
        if &b[3..11] != b"EXFAT   " || b[510..512] != [0x55, 0xAA] {
            return Ok(None);
        }
        let (ss, cs) = (b[108], b[109]);
        if !(9..=12).contains(&ss) || ss + cs > 25 {
            return Err(BurnError::fs(
                part.shown,
                "exFAT sector or cluster size out of range",
            ));
        }
        if b[110] != 1 {
            return Err(BurnError::fs(
                part.shown,
                "exFAT with two FATs (TexFAT) is not supported",
            ));
        }
        let mut v = Exfat {
            fat: u64::from(le32(&b, 80)) << ss,
            heap: u64::from(le32(&b, 88)) << ss,
            count: le32(&b, 92),
            root: le32(&b, 96),
            cluster: 1u64 << (ss + cs),
            bitmap: None,
            bitmap_chain: Vec::new(),
            bitmap_bytes: Vec::new(),
            part,
        };
        // The allocation bitmap's entry (0x81) is in the root folder.
        let root = v.read_chain_bytes(v.root, None, false)?;
        for e in root.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0x81 && e[1] & 1 == 0 {
                v.bitmap = Some((le32(e, 20), le64(e, 24)));
                break;
            }
        }
        let Some((first, len)) = v.bitmap else {
            return Err(BurnError::fs(
                v.part.shown,
                "exFAT root has no allocation bitmap",
            ));
        };
        if len < u64::from(v.count).div_ceil(8) || len > 64 << 20 {
            return Err(BurnError::fs(
                v.part.shown,
                format!("allocation bitmap of {len} bytes for {} clusters", v.count),
            ));
        }
        v.bitmap_chain = v.clusters(first, Some(len), false)?;
        v.bitmap_bytes = v.read_chain_bytes(first, Some(len), false)?.to_vec();
        Ok(Some(v))
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c - 2 < self.count
    }

    fn offset(&self, c: u32) -> u64 {
        self.heap + u64::from(c - 2) * self.cluster
    }

    fn next(&self, c: u32) -> Result<u32, BurnError> {
        let mut e = [0u8; 4];
        self.part.rd(self.fat + u64::from(c) * 4, &mut e)?;
        Ok(u32::from_le_bytes(e))
    }

    /// The clusters of a chain: `n` clusters from `first` (contiguous), or the FAT chain
    /// (bounded by the cluster count).
    fn clusters(
        &self,
        first: u32,
        len: Option<u64>,
        contiguous: bool,
    ) -> Result<Vec<u32>, BurnError> {
        let mut out = Vec::new();
        if !self.valid(first) {
            return Ok(out);
        }
        let want = len.map(|l| l.div_ceil(self.cluster) as usize);
        if contiguous {
            let n = want.unwrap_or(1);
            for i in 0..n as u32 {
                let c = first.checked_add(i).filter(|&c| self.valid(c));
                out.push(c.ok_or_else(|| {
                    BurnError::fs(self.part.shown, "contiguous file runs off the volume")
                })?);
            }
            return Ok(out);
        }
        let mut c = first;
        while self.valid(c) && out.len() <= self.count as usize {
            out.push(c);
            if want.is_some_and(|w| out.len() >= w) {
                break;
            }
            c = self.next(c)?;
        }
        Ok(out)
    }

    fn read_chain_bytes(
        &self,
        first: u32,
        len: Option<u64>,
        contiguous: bool,
    ) -> Result<Zeroizing<Vec<u8>>, BurnError> {
        let clusters = self.clusters(first, len, contiguous)?;
        let total = len.unwrap_or(clusters.len() as u64 * self.cluster);
        if total > MAX_DIR.max(len.unwrap_or(0)) {
            return Err(BurnError::fs(self.part.shown, "folder too large"));
        }
        let mut out = Zeroizing::new(vec![0u8; total as usize]);
        let mut done = 0usize;
        for c in clusters {
            if done >= out.len() {
                break;
            }
            let n = (self.cluster as usize).min(out.len() - done);
            self.part.rd(self.offset(c), &mut out[done..done + n])?;
            done += n;
        }
        if done < out.len() {
            return Err(BurnError::fs(
                self.part.shown,
                "a cluster chain is shorter than its size",
            ));
        }
        Ok(out)
    }

    /// Finds `name` in the folder at `first` (the root when `len` is `None`).
    fn find(
        &self,
        first: u32,
        len: Option<u64>,
        contiguous: bool,
        name: &str,
    ) -> Result<Option<Set>, BurnError> {
        let clusters = self.clusters(first, len, contiguous)?;
        let slot_at = |i: usize| -> u64 {
            let per = (self.cluster / 32) as usize;
            self.offset(clusters[i / per]) + (i % per) as u64 * 32
        };
        let d = self.read_chain_bytes(first, len, contiguous)?;
        let entries: Vec<&[u8]> = d.chunks_exact(32).collect();
        let mut i = 0;
        while i < entries.len() && entries[i][0] != 0 {
            let e = entries[i];
            if e[0] != 0x85 {
                i += 1;
                continue;
            }
            let n = e[1] as usize;
            if n < 2 || i + n >= entries.len() || entries[i + 1][0] != 0xC0 {
                i += 1;
                continue;
            }
            let s = entries[i + 1];
            let name_len = s[3] as usize;
            let mut units = Vec::new();
            for k in 0..n - 1 {
                let ne = entries[i + 2 + k];
                for j in 0..15 {
                    units.push(u16::from_le_bytes([ne[2 + 2 * j], ne[3 + 2 * j]]));
                }
            }
            units.truncate(name_len);
            if String::from_utf16_lossy(&units).eq_ignore_ascii_case(name) {
                let raw: Vec<[u8; 32]> = (i..=i + n)
                    .map(|k| entries[k].try_into().unwrap_or([0u8; 32]))
                    .collect();
                return Ok(Some(Set {
                    slots: (i..=i + n).map(slot_at).collect(),
                    raw,
                    dir: u16::from_le_bytes([e[4], e[5]]) & 0x10 != 0,
                    first: le32(s, 20),
                    size: le64(s, 24),
                    contiguous: s[1] & 0x02 != 0,
                }));
            }
            i += n + 1;
        }
        Ok(None)
    }

    fn lookup(&self, path: &str) -> Result<Option<Set>, BurnError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (mut first, mut len, mut contiguous) = (self.root, None, false);
        for (i, part) in parts.iter().enumerate() {
            let Some(s) = self.find(first, len, contiguous, part)? else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok((!s.dir).then_some(s));
            }
            if !s.dir {
                return Ok(None);
            }
            (first, len, contiguous) = (s.first, Some(s.size), s.contiguous);
        }
        Ok(None)
    }

    /// The file at `path` if it is at most `max` bytes (`None` when missing or larger).
    pub(crate) fn read_file(
        &self,
        path: &str,
        max: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BurnError> {
        match self.lookup(path)? {
            Some(s) if s.size <= max => {
                if s.size == 0 {
                    return Ok(Some(Zeroizing::new(Vec::new())));
                }
                self.read_chain_bytes(s.first, Some(s.size), s.contiguous)
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Byte index in the bitmap, its partition offset, and the bit of cluster `c`.
    fn bitmap_bit(&self, c: u32) -> Result<(usize, u64, u8), BurnError> {
        let idx = u64::from(c - 2);
        let byte = idx / 8;
        let beyond = || BurnError::fs(self.part.shown, "cluster beyond the allocation bitmap");
        if byte >= self.bitmap_bytes.len() as u64 {
            return Err(beyond());
        }
        // The bitmap is contiguous in keypack's and mkfs.exfat's volumes; its chain is
        // followed anyway.
        let cl = *self
            .bitmap_chain
            .get((byte / self.cluster) as usize)
            .ok_or_else(beyond)?;
        Ok((
            byte as usize,
            self.offset(cl) + byte % self.cluster,
            1u8 << (idx % 8),
        ))
    }

    fn allocated(&self, c: u32) -> Result<bool, BurnError> {
        let (i, _, bit) = self.bitmap_bit(c)?;
        Ok(self.bitmap_bytes[i] & bit != 0)
    }

    fn set_bits(&mut self, clusters: &[u32], on: bool) -> Result<(), BurnError> {
        for &c in clusters {
            let (i, at, bit) = self.bitmap_bit(c)?;
            let b = &mut self.bitmap_bytes[i];
            *b = if on { *b | bit } else { *b & !bit };
            let byte = [*b];
            self.part.wr(at, &byte)?;
        }
        Ok(())
    }

    fn set_fat(&self, updates: &[(u32, u32)]) -> Result<(), BurnError> {
        for &(c, v) in updates {
            self.part
                .wr(self.fat + u64::from(c) * 4, &v.to_le_bytes())?;
        }
        Ok(())
    }

    /// Writes an entry set's entries, consecutive slots in one write (an entry set inside one
    /// sector is then one sector write).
    fn write_set(&self, slots: &[u64], raw: &[[u8; 32]]) -> Result<(), BurnError> {
        let mut i = 0;
        while i < slots.len() {
            let mut j = i + 1;
            while j < slots.len() && slots[j] == slots[j - 1] + 32 {
                j += 1;
            }
            let bytes: Vec<u8> = raw[i..j].iter().flatten().copied().collect();
            self.part.wr(slots[i], &bytes)?;
            i = j;
        }
        Ok(())
    }

    fn zero_clusters(&self, clusters: &[u32]) -> Result<(), BurnError> {
        for &c in clusters {
            self.part.zero(self.offset(c), self.cluster)?;
        }
        Ok(())
    }

    /// Replaces the content of the existing file `path` (same steps and names as FAT32's).
    pub(crate) fn replace_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        stop: Stop<'_>,
    ) -> Result<(), BurnError> {
        let Some(mut set) = self.lookup(path)? else {
            return Err(BurnError::fs(self.part.shown, format!("{path} vanished")));
        };
        let old = if set.size == 0 {
            Vec::new()
        } else {
            self.clusters(set.first, Some(set.size), set.contiguous)?
        };
        let need = bytes.len().div_ceil(self.cluster as usize).max(1);
        let mut free = Vec::new();
        let mut c = 2u32;
        while free.len() < need && self.valid(c) {
            if !self.allocated(c)? {
                free.push(c);
            }
            c += 1;
        }
        if free.len() < need {
            return Err(BurnError::fs(
                self.part.shown,
                format!("no room for the new {path}"),
            ));
        }
        // 1. Allocate: FAT chain and bitmap bits (unreachable until the entry set points here).
        let chain: Vec<(u32, u32)> = free
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, free.get(i + 1).copied().unwrap_or(0xFFFF_FFFF)))
            .collect();
        self.set_fat(&chain)?;
        self.set_bits(&free, true)?;
        self.part.sync()?;
        stop.after("json-chain")?;
        // 2. Data.
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
        // 3. One entry-set write: stream extension (first cluster, lengths, FAT chain) and the
        //    set checksum in the file entry.
        {
            let s = &mut set.raw[1];
            s[1] = (s[1] & !0x02) | 0x01;
            s[8..16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            s[20..24].copy_from_slice(&free[0].to_le_bytes());
            s[24..32].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        }
        let sum = set_checksum(&set.raw);
        set.raw[0][2..4].copy_from_slice(&sum.to_le_bytes());
        self.write_set(&set.slots[..2], &set.raw[..2])?;
        self.part.sync()?;
        stop.after("json-entry")?;
        // 4. Wipe the old clusters, then free them.
        self.zero_clusters(&old)?;
        self.part.sync()?;
        stop.after("json-wipe")?;
        self.set_bits(&old, false)?;
        if !set.contiguous {
            let frees: Vec<(u32, u32)> = old.iter().map(|&c| (c, 0)).collect();
            self.set_fat(&frees)?;
        }
        self.part.sync()
    }

    /// Zeroes `path`'s clusters, marks its entry set not in use, then frees the clusters
    /// (bitmap and FAT). Steps: `zero`, `unlink`.
    pub(crate) fn delete_file(&mut self, path: &str, stop: Stop<'_>) -> Result<Removed, BurnError> {
        let Some(mut set) = self.lookup(path)? else {
            return Err(BurnError::fs(self.part.shown, format!("{path} vanished")));
        };
        let clusters = if set.size == 0 {
            Vec::new()
        } else {
            self.clusters(set.first, Some(set.size), set.contiguous)?
        };
        self.zero_clusters(&clusters)?;
        self.part.sync()?;
        stop.after("zero")?;
        for e in &mut set.raw {
            e[0] &= 0x7F;
        }
        self.write_set(&set.slots, &set.raw)?;
        self.part.sync()?;
        stop.after("unlink")?;
        self.set_bits(&clusters, false)?;
        if !set.contiguous {
            let frees: Vec<(u32, u32)> = clusters.iter().map(|&c| (c, 0)).collect();
            self.set_fat(&frees)?;
        }
        self.part.sync()?;
        Ok(Removed {
            bytes: set.size,
            clusters: clusters.len() as u64,
            cluster_size: self.cluster,
        })
    }
}
