//! A minimal exFAT writer for the data partition, used when the ISO is 4 GiB or larger (or with
//! `--exfat`): formats the volume and writes the ISO, `keys.tar.gz` and `ventoy/ventoy.json` in
//! one pass, each file contiguous with a FAT chain.
//!
//! Supports: writing a fresh volume (512-byte sectors, one FAT, 32 KiB or 128 KiB clusters),
//! files in the root and one level of folders, names of up to 255 UTF-16 units.
//! Does not support: reading or changing an existing exFAT volume (keys-only rebuilds and
//! `media update --image` fall back to a full build or refuse; update exFAT sticks through
//! `--mount`), TexFAT, a full Unicode up-case table (the table maps ASCII a–z to A–Z and every
//! other unit to itself, which the spec allows and Linux and GRUB read).
//! Reference: Microsoft "exFAT file system specification" (2019): §3 boot region, §4 FAT, §6
//! directory structure, §7 directory entries; checksums per §3.4, §7.4.2, §7.6.4.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::VentoyError;

const SECTOR: u64 = 512;
/// 1980-01-01 00:00:00 in the DOS format exFAT timestamps use.
const FIXED_TIME: u32 = 0x0021_0000;

/// One file to put on the volume.
pub enum Content<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// `len` bytes of an open file, copied by the kernel.
    File(&'a File, u64),
}

impl Content<'_> {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::File(_, n) => *n,
        }
    }
}

/// Cluster size for a volume of `bytes` (what mkfs.exfat and Ventoy use).
pub fn cluster_size_for(bytes: u64) -> u64 {
    if bytes > 32 << 30 {
        128 << 10
    } else {
        32 << 10
    }
}

fn boot_checksum(sectors: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for (i, &b) in sectors.iter().enumerate() {
        if i == 106 || i == 107 || i == 112 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    sum
}

fn table_checksum(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |s, &b| s.rotate_right(1).wrapping_add(u32::from(b)))
}

fn upcase(u: u16) -> u16 {
    if (u16::from(b'a')..=u16::from(b'z')).contains(&u) {
        u - 32
    } else {
        u
    }
}

fn name_hash(name: &[u16]) -> u16 {
    let mut h: u16 = 0;
    for &c in name {
        let c = upcase(c);
        for b in [(c & 0xFF) as u8, (c >> 8) as u8] {
            h = h.rotate_right(1).wrapping_add(u16::from(b));
        }
    }
    h
}

fn set_checksum(entries: &[u8]) -> u16 {
    let mut s: u16 = 0;
    for (i, &b) in entries.iter().enumerate() {
        if i == 2 || i == 3 {
            continue;
        }
        s = s.rotate_right(1).wrapping_add(u16::from(b));
    }
    s
}

/// The entry set of a file or folder.
fn entry_set(name: &str, dir: bool, first_cluster: u32, len: u64) -> Vec<u8> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let name_entries = units.len().div_ceil(15);
    let mut set = vec![0u8; 32 * (2 + name_entries)];
    {
        let f = &mut set[0..32];
        f[0] = 0x85;
        f[1] = (1 + name_entries) as u8;
        f[4..6].copy_from_slice(&(if dir { 0x10u16 } else { 0x20u16 }).to_le_bytes());
        for o in [8, 12, 16] {
            f[o..o + 4].copy_from_slice(&FIXED_TIME.to_le_bytes());
        }
    }
    {
        let s = &mut set[32..64];
        s[0] = 0xC0;
        s[1] = 0x01; // AllocationPossible, FAT chain valid
        s[3] = units.len() as u8;
        s[4..6].copy_from_slice(&name_hash(&units).to_le_bytes());
        s[8..16].copy_from_slice(&len.to_le_bytes());
        s[20..24].copy_from_slice(&first_cluster.to_le_bytes());
        s[24..32].copy_from_slice(&len.to_le_bytes());
    }
    for (i, chunk) in units.chunks(15).enumerate() {
        let e = &mut set[64 + 32 * i..96 + 32 * i];
        e[0] = 0xC1;
        for (k, u) in chunk.iter().enumerate() {
            e[2 + 2 * k..4 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
    }
    let sum = set_checksum(&set);
    set[2..4].copy_from_slice(&sum.to_le_bytes());
    set
}

/// Formats `[off, off+len)` of `file` as exFAT labelled `Ventoy` and writes `files` (absolute
/// paths, at most one folder level; the first file is placed first, contiguous and cluster
/// aligned). Everything is deterministic given `serial`. `progress` advances per chunk of a
/// file's copy.
#[allow(clippy::too_many_arguments)]
pub fn write_volume(
    file: &File,
    path: &Path,
    off: u64,
    len: u64,
    partition_start_sector: u64,
    serial: u32,
    files: &[(&str, Content<'_>)],
    progress: &crate::progress::Progress,
) -> Result<(), VentoyError> {
    let wr = |at: u64, bytes: &[u8]| {
        file.write_all_at(bytes, off + at)
            .map_err(|e| VentoyError::io("writing", path, e))
    };
    let bad = |problem: String| VentoyError::DataFs {
        path: path.to_path_buf(),
        problem,
    };
    let cs = cluster_size_for(len);
    let spc = cs / SECTOR;
    let volume_sectors = len / SECTOR;
    let fat_offset: u64 = 128;
    // FAT sized for the most clusters the volume could have.
    let max_clusters = volume_sectors / spc;
    let fat_len = ((max_clusters + 2) * 4)
        .div_ceil(SECTOR)
        .next_multiple_of(8);
    let heap_offset = (fat_offset + fat_len).next_multiple_of(spc);
    let cluster_count = (volume_sectors.saturating_sub(heap_offset)) / spc;
    if cluster_count < 16 {
        return Err(bad("too small for exFAT".into()));
    }
    let cluster_at = |c: u64| (heap_offset + (c - 2) * spc) * SECTOR;

    // Plan the clusters: bitmap, up-case table, root, then folders and files in order.
    let bitmap_len = cluster_count.div_ceil(8);
    let mut upcase_table = Vec::with_capacity(256);
    for u in 0u16..128 {
        upcase_table.extend_from_slice(&upcase(u).to_le_bytes());
    }
    let mut next: u64 = 2;
    let mut alloc = |bytes: u64| -> (u64, u64) {
        let n = bytes.div_ceil(cs).max(1);
        let first = next;
        next += n;
        (first, n)
    };
    let bitmap = alloc(bitmap_len);
    let up = alloc(upcase_table.len() as u64);
    let root = alloc(cs);
    // Folders (one level) and files.
    let mut folders: Vec<(String, (u64, u64))> = Vec::new();
    let mut placed: Vec<(String, String, (u64, u64), u64)> = Vec::new(); // (folder, name, run, len)
    for (p, content) in files {
        let p = p.trim_start_matches('/');
        let (folder, name) = match p.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), p.to_string()),
        };
        if folder.contains('/') {
            return Err(bad(format!("{p}: only one folder level is supported")));
        }
        if !folder.is_empty() && !folders.iter().any(|(f, _)| *f == folder) {
            folders.push((folder.clone(), alloc(cs)));
        }
        placed.push((folder, name, alloc(content.len()), content.len()));
    }
    if next - 2 > cluster_count {
        return Err(bad(format!(
            "the files need {} clusters, the volume has {cluster_count}",
            next - 2
        )));
    }
    let used = next - 2;

    // Boot region (main and backup).
    let mut boot = vec![0u8; 12 * SECTOR as usize];
    {
        let b = &mut boot[..512];
        b[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
        b[3..11].copy_from_slice(b"EXFAT   ");
        b[64..72].copy_from_slice(&partition_start_sector.to_le_bytes());
        b[72..80].copy_from_slice(&volume_sectors.to_le_bytes());
        b[80..84].copy_from_slice(&(fat_offset as u32).to_le_bytes());
        b[84..88].copy_from_slice(&(fat_len as u32).to_le_bytes());
        b[88..92].copy_from_slice(&(heap_offset as u32).to_le_bytes());
        b[92..96].copy_from_slice(&(cluster_count as u32).to_le_bytes());
        b[96..100].copy_from_slice(&(root.0 as u32).to_le_bytes());
        b[100..104].copy_from_slice(&serial.to_le_bytes());
        b[104..106].copy_from_slice(&0x0100u16.to_le_bytes());
        b[108] = 9;
        b[109] = spc.trailing_zeros() as u8;
        b[110] = 1;
        b[111] = 0x80;
        b[112] = (used * 100 / cluster_count) as u8;
        b[510] = 0x55;
        b[511] = 0xAA;
    }
    for s in 1..=8 {
        let at = s * 512;
        boot[at + 510] = 0x55;
        boot[at + 511] = 0xAA;
    }
    let sum = boot_checksum(&boot[..11 * 512]);
    for k in 0..128 {
        boot[11 * 512 + 4 * k..11 * 512 + 4 * k + 4].copy_from_slice(&sum.to_le_bytes());
    }
    // Zero the region up to the heap first (stale bytes from an earlier use of the file).
    wr(0, &vec![0u8; (fat_offset * SECTOR) as usize])?;
    wr(0, &boot)?;
    wr(12 * SECTOR, &boot)?;

    // FAT: media entries, then one chain per run.
    let mut fat = vec![0u8; (fat_len * SECTOR) as usize];
    fat[0..4].copy_from_slice(&0xFFFF_FFF8u32.to_le_bytes());
    fat[4..8].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    let mut runs = vec![bitmap, up, root];
    runs.extend(folders.iter().map(|(_, r)| *r));
    runs.extend(placed.iter().map(|(_, _, r, _)| *r));
    for (first, n) in &runs {
        for c in *first..first + n {
            let v = if c + 1 < first + n {
                (c + 1) as u32
            } else {
                0xFFFF_FFFF
            };
            fat[(c * 4) as usize..(c * 4 + 4) as usize].copy_from_slice(&v.to_le_bytes());
        }
    }
    wr(fat_offset * SECTOR, &fat)?;
    drop(fat);

    // Allocation bitmap: clusters 2..next in use.
    let mut bits = vec![0u8; bitmap_len as usize];
    for i in 0..used {
        bits[(i / 8) as usize] |= 1 << (i % 8);
    }
    wr(cluster_at(bitmap.0), &bits)?;
    drop(bits);
    wr(cluster_at(up.0), &upcase_table)?;

    // Root folder: label, bitmap, up-case table, then folders and root files.
    let mut root_dir = Vec::new();
    let label: Vec<u16> = "Ventoy".encode_utf16().collect();
    let mut e = [0u8; 32];
    e[0] = 0x83;
    e[1] = label.len() as u8;
    for (k, u) in label.iter().enumerate() {
        e[2 + 2 * k..4 + 2 * k].copy_from_slice(&u.to_le_bytes());
    }
    root_dir.extend_from_slice(&e);
    let mut e = [0u8; 32];
    e[0] = 0x81;
    e[20..24].copy_from_slice(&(bitmap.0 as u32).to_le_bytes());
    e[24..32].copy_from_slice(&bitmap_len.to_le_bytes());
    root_dir.extend_from_slice(&e);
    let mut e = [0u8; 32];
    e[0] = 0x82;
    e[4..8].copy_from_slice(&table_checksum(&upcase_table).to_le_bytes());
    e[20..24].copy_from_slice(&(up.0 as u32).to_le_bytes());
    e[24..32].copy_from_slice(&(upcase_table.len() as u64).to_le_bytes());
    root_dir.extend_from_slice(&e);
    for (name, (first, _)) in &folders {
        root_dir.extend_from_slice(&entry_set(name, true, *first as u32, cs));
    }
    let mut sub: Vec<Vec<u8>> = vec![Vec::new(); folders.len()];
    for (folder, name, (first, _), n) in &placed {
        let set = entry_set(name, false, *first as u32, *n);
        match folders.iter().position(|(f, _)| f == folder) {
            Some(i) => sub[i].extend_from_slice(&set),
            None => root_dir.extend_from_slice(&set),
        }
    }
    if root_dir.len() as u64 > cs || sub.iter().any(|s| s.len() as u64 > cs) {
        return Err(bad("too many directory entries for one cluster".into()));
    }
    root_dir.resize(cs as usize, 0);
    wr(cluster_at(root.0), &root_dir)?;
    for (i, (_, (first, _))) in folders.iter().enumerate() {
        let mut d = std::mem::take(&mut sub[i]);
        d.resize(cs as usize, 0);
        wr(cluster_at(*first), &d)?;
    }

    // File contents; the tail of each last cluster is zeroed.
    for ((_, content), (_, name, (first, n), flen)) in files.iter().zip(&placed) {
        let at = cluster_at(*first);
        match content {
            Content::Bytes(b) => {
                let mut buf = Zeroizing::new(vec![0u8; (n * cs) as usize]);
                buf[..b.len()].copy_from_slice(b);
                wr(at, &buf)?;
            }
            Content::File(src, len) => {
                crate::partio::copy_range(src, 0, file, off + at, *len, progress)
                    .map_err(|e| VentoyError::fat(path, format!("copying {name}"), e))?;
                let tail = n * cs - flen;
                if tail > 0 {
                    wr(at + flen, &vec![0u8; tail as usize])?;
                }
            }
        }
    }
    Ok(())
}

/// Read-only view of an exFAT volume, for `keypack inspect`: lists files and reads small ones.
pub struct ExfatRead<'f> {
    file: &'f File,
    off: u64,
    len: u64,
    sector_shift: u8,
    cluster_shift: u8,
    fat_offset: u64,
    heap_offset: u64,
    cluster_count: u32,
    root: u32,
}

/// A directory entry as read back.
struct Found {
    name: String,
    dir: bool,
    first: u32,
    size: u64,
    contiguous: bool,
}

/// Largest folder read (bytes), against crafted chains.
const MAX_DIR: u64 = 8 << 20;

impl<'f> ExfatRead<'f> {
    /// Opens `[off, off+len)` of `file` if it holds an exFAT boot sector.
    pub fn open(file: &'f File, off: u64, len: u64) -> Option<Self> {
        let mut b = [0u8; 512];
        file.read_exact_at(&mut b, off).ok()?;
        if &b[3..11] != b"EXFAT   " || b[510..512] != [0x55, 0xAA] {
            return None;
        }
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let sector_shift = b[108];
        let cluster_shift = b[109];
        if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
            return None;
        }
        Some(Self {
            file,
            off,
            len,
            sector_shift,
            cluster_shift,
            fat_offset: u64::from(u32at(80)) << sector_shift,
            heap_offset: u64::from(u32at(88)) << sector_shift,
            cluster_count: u32at(92),
            root: u32at(96),
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << (self.sector_shift + self.cluster_shift)
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c - 2 < self.cluster_count
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> Option<()> {
        if at.checked_add(buf.len() as u64)? > self.len {
            return None;
        }
        self.file.read_exact_at(buf, self.off + at).ok()
    }

    fn next_cluster(&self, c: u32) -> Option<u32> {
        let mut e = [0u8; 4];
        self.read_at(self.fat_offset + u64::from(c) * 4, &mut e)?;
        let n = u32::from_le_bytes(e);
        self.valid(n).then_some(n)
    }

    /// Reads `size` bytes from `first` (at most `max`).
    fn read_data(
        &self,
        first: u32,
        size: u64,
        contiguous: bool,
        max: u64,
    ) -> Option<Zeroizing<Vec<u8>>> {
        if size > max || (size > 0 && !self.valid(first)) {
            return None;
        }
        let cs = self.cluster_size();
        let mut out = Zeroizing::new(vec![0u8; size as usize]);
        let mut c = first;
        let mut done = 0u64;
        while done < size {
            let n = cs.min(size - done) as usize;
            self.read_at(
                self.heap_offset + u64::from(c - 2) * cs,
                &mut out[done as usize..done as usize + n],
            )?;
            done += n as u64;
            if done < size {
                c = if contiguous {
                    c + 1
                } else {
                    self.next_cluster(c)?
                };
                if !self.valid(c) {
                    return None;
                }
            }
        }
        Some(out)
    }

    fn read_dir(&self, first: u32, size: Option<u64>, contiguous: bool) -> Vec<Found> {
        let data = match size {
            Some(s) => self.read_data(first, s, contiguous, MAX_DIR),
            None => {
                // The root folder: follow the FAT.
                let mut out = Zeroizing::new(Vec::new());
                let mut c = first;
                let cs = self.cluster_size();
                while self.valid(c) && (out.len() as u64) < MAX_DIR {
                    let mut buf = vec![0u8; cs as usize];
                    if self
                        .read_at(self.heap_offset + u64::from(c - 2) * cs, &mut buf)
                        .is_none()
                    {
                        break;
                    }
                    out.extend_from_slice(&buf);
                    match self.next_cluster(c) {
                        Some(n) => c = n,
                        None => break,
                    }
                }
                Some(out)
            }
        };
        let Some(d) = data else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut i = 0;
        while i + 64 <= d.len() && d[i] != 0 {
            if d[i] != 0x85 {
                i += 32;
                continue;
            }
            let n = d[i + 1] as usize;
            let s = &d[i + 32..i + 64];
            if s[0] != 0xC0 || n < 2 || i + 32 * (n + 1) > d.len() {
                i += 32;
                continue;
            }
            let name_len = s[3] as usize;
            let mut units = Vec::new();
            for k in 0..n - 1 {
                let e = &d[i + 64 + 32 * k..i + 96 + 32 * k];
                for j in 0..15 {
                    units.push(u16::from_le_bytes([e[2 + 2 * j], e[3 + 2 * j]]));
                }
            }
            units.truncate(name_len);
            found.push(Found {
                name: String::from_utf16_lossy(&units).escape_debug().collect(),
                dir: u16::from_le_bytes([d[i + 4], d[i + 5]]) & 0x10 != 0,
                first: u32::from_le_bytes([s[20], s[21], s[22], s[23]]),
                size: u64::from_le_bytes([s[24], s[25], s[26], s[27], s[28], s[29], s[30], s[31]]),
                contiguous: s[1] & 0x02 != 0,
            });
            i += 32 * (n + 1);
        }
        found
    }

    /// Every file and folder, depth first, up to `limit` entries.
    pub fn list(&self, limit: usize) -> Vec<crate::fat::Listed> {
        let mut out = Vec::new();
        self.walk(self.root, None, false, "", &mut out, limit, 0);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        first: u32,
        size: Option<u64>,
        contiguous: bool,
        prefix: &str,
        out: &mut Vec<crate::fat::Listed>,
        limit: usize,
        depth: usize,
    ) {
        for f in self.read_dir(first, size, contiguous) {
            if out.len() >= limit {
                return;
            }
            let path = format!("{prefix}/{}", f.name);
            out.push(crate::fat::Listed {
                path: path.clone(),
                size: if f.dir { 0 } else { f.size },
                dir: f.dir,
            });
            if f.dir && depth < 8 {
                self.walk(
                    f.first,
                    Some(f.size),
                    f.contiguous,
                    &path,
                    out,
                    limit,
                    depth + 1,
                );
            }
        }
    }

    /// The entry at `path` (ASCII case-insensitive), if present: a directory lookup, no file
    /// data is read.
    fn find(&self, path: &str) -> Option<Found> {
        let mut first = self.root;
        let mut size = None;
        let mut contiguous = false;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let f = self
                .read_dir(first, size, contiguous)
                .into_iter()
                .find(|f| f.name.eq_ignore_ascii_case(part))?;
            if i + 1 == parts.len() {
                return Some(f);
            }
            if !f.dir {
                return None;
            }
            first = f.first;
            size = Some(f.size);
            contiguous = f.contiguous;
        }
        None
    }

    /// Whether a file or folder exists at `path`.
    pub fn exists(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    /// Reads the file at `path` if it is at most `max` bytes; its size comes from the
    /// directory entry, so a larger one is refused before anything is allocated.
    pub fn read_bounded(&self, path: &str, max: u64) -> crate::fat::Bounded {
        use crate::fat::Bounded;
        match self.find(path) {
            None => Bounded::Missing,
            Some(f) if f.dir => Bounded::Missing,
            Some(f) if f.size > max => Bounded::TooLarge(f.size),
            // Unreadable (a chain off the volume): reported as missing, as before.
            Some(f) => self
                .read_data(f.first, f.size, f.contiguous, max)
                .map_or(Bounded::Missing, Bounded::Bytes),
        }
    }
}
