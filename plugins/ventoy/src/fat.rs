//! The FAT side: formatting and filling the data partition with the `fatfs` crate, reading
//! both partitions back, and the crash-consistent in-place file switch used by keys-only
//! rebuilds.
//!
//! Supports: FAT32 data partitions (written by keypack or by Ventoy's Windows installer), the
//! FAT16 VTOYEFI partition (read only).
//! Does not support: exFAT or NTFS data partitions (Ventoy2Disk.sh's default is exFAT: update
//! such a stick through `keypack media update --mount`).
//! Reference: Microsoft "FAT32 File System Specification" 1.03 (BPB, FSInfo, directory
//! entries, long names); `decisions.md` "Keys-only rebuild" for the switch order.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use zeroize::Zeroizing;

use crate::VentoyError;
use crate::partio::PartIo;

/// The fixed clock of every file keypack writes: the DOS epoch, 1980-01-01 00:00:00, so that
/// the same inputs give the same bytes.
#[derive(Debug)]
pub struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// Options every mount uses: fixed clock, no access-date updates.
pub fn fs_options() -> FsOptions {
    FsOptions::new()
        .time_provider(&FIXED_TIME)
        .update_accessed_date(false)
}

/// Cluster size for a FAT32 volume of `bytes`: the largest (up to 32 KiB) that still gives a
/// comfortable FAT32 cluster count (≥ 65525 is what makes a volume FAT32 to every reader).
pub fn cluster_size_for(bytes: u64) -> u32 {
    let mut cs: u32 = 32 * 1024;
    while cs > 512 && bytes / u64::from(cs) < 70_000 {
        cs /= 2;
    }
    cs
}

/// Bytes of FAT and reserved sectors a volume of `bytes` with clusters of `cs` needs, rounded
/// up generously; used to size the partition.
pub fn overhead_for(bytes: u64, cs: u32) -> u64 {
    let clusters = bytes / u64::from(cs) + 2;
    2 * clusters * 4 + 64 * 1024 + 4 * u64::from(cs)
}

/// Formats `[off, off+len)` of `file` as FAT32, label `Ventoy`.
pub fn format_data(
    file: &File,
    path: &Path,
    off: u64,
    len: u64,
    volume_id: u32,
) -> Result<(), VentoyError> {
    let cs = cluster_size_for(len);
    let mut label = [b' '; 11];
    label[..6].copy_from_slice(b"Ventoy");
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_cluster(cs)
        .total_sectors((len / 512) as u32)
        .volume_id(volume_id)
        .volume_label(label);
    let io = PartIo::new(file, off, len);
    fatfs::format_volume(io.clone(), opts)
        .map_err(|e| VentoyError::fat(path, "formatting the data partition", e))?;
    io.flush_all()
        .map_err(|e| VentoyError::io("writing", path, e))
}

/// Parsed FAT32 boot sector: just what the in-place switch and the metadata cache need.
#[derive(Debug, Clone, Copy)]
pub struct Bpb {
    /// Bytes per sector.
    pub bps: u64,
    /// Bytes per cluster.
    pub cluster: u64,
    /// Reserved sectors.
    pub reserved: u64,
    /// Number of FATs.
    pub fats: u64,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// First cluster of the root folder.
    pub root_cluster: u32,
    /// FSInfo sector.
    pub fsinfo: u64,
    /// Data clusters.
    pub clusters: u32,
}

impl Bpb {
    /// Reads the boot sector of the partition at `off`; `None` unless it is FAT32.
    pub fn read(file: &File, off: u64) -> io::Result<Option<Bpb>> {
        let mut s = [0u8; 512];
        file.read_exact_at(&mut s, off)?;
        let u16at = |o: usize| u64::from(u16::from_le_bytes([s[o], s[o + 1]]));
        let u32at = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
        let bps = u16at(11);
        let spc = u64::from(s[13]);
        let reserved = u16at(14);
        let fats = u64::from(s[16]);
        let root_entries = u16at(17);
        let fat16_size = u16at(22);
        let total = if u16at(19) != 0 {
            u16at(19)
        } else {
            u64::from(u32at(32))
        };
        let fat_sectors = u64::from(u32at(36));
        if s[510..512] != [0x55, 0xAA]
            || !matches!(bps, 512 | 1024 | 2048 | 4096)
            || spc == 0
            || !spc.is_power_of_two()
            || fats == 0
            || root_entries != 0
            || fat16_size != 0
            || fat_sectors == 0
        {
            return Ok(None);
        }
        let data_sectors = total.saturating_sub(reserved + fats * fat_sectors);
        let clusters = (data_sectors / spc) as u32;
        if clusters < 65525 {
            return Ok(None);
        }
        Ok(Some(Bpb {
            bps,
            cluster: bps * spc,
            reserved,
            fats,
            fat_sectors,
            root_cluster: u32at(44),
            fsinfo: u16at(48),
            clusters,
        }))
    }

    /// Bytes before the first data cluster (boot sectors and FATs).
    pub fn meta_len(&self) -> u64 {
        (self.reserved + self.fats * self.fat_sectors) * self.bps
    }

    /// Byte offset of cluster `c` inside the partition.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.meta_len() + u64::from(c - 2) * self.cluster
    }
}

/// The data partition mounted with `fatfs`, with the FAT metadata cached in memory.
pub struct DataFs<'f> {
    fs: FileSystem<PartIo<'f>>,
    io: PartIo<'f>,
    path: &'f Path,
}

impl<'f> DataFs<'f> {
    /// Mounts the FAT32 partition at `[off, off+len)` for writing.
    pub fn open(file: &'f File, path: &'f Path, off: u64, len: u64) -> Result<Self, VentoyError> {
        let bpb = Bpb::read(file, off)
            .map_err(|e| VentoyError::io("reading", path, e))?
            .ok_or_else(|| VentoyError::DataFs {
                path: path.to_path_buf(),
                problem: "not FAT32 (an exFAT or NTFS data partition can only be updated through --mount)".into(),
            })?;
        let io = PartIo::new(file, off, len)
            .with_meta_cache(bpb.meta_len())
            .map_err(|e| VentoyError::io("reading", path, e))?;
        let fs = FileSystem::new(io.clone(), fs_options())
            .map_err(|e| VentoyError::fat(path, "mounting the data partition", e))?;
        Ok(Self { fs, io, path })
    }

    fn err(&self, what: String) -> impl FnOnce(io::Error) -> VentoyError + '_ {
        move |e| VentoyError::fat(self.path, what, e)
    }

    /// Creates a folder (and parents) if missing.
    pub fn mkdir_p(&self, dir: &str) -> Result<(), VentoyError> {
        let mut cur = String::new();
        for part in dir.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            let root = self.fs.root_dir();
            match root.open_dir(&cur[1..]) {
                Ok(_) => {}
                Err(_) => {
                    root.create_dir(&cur[1..])
                        .map_err(self.err(format!("creating {cur}")))?;
                }
            }
        }
        Ok(())
    }

    /// Writes `name` (absolute path) from a reader, streaming.
    pub fn write_from(&self, name: &str, src: &mut dyn Read) -> Result<u64, VentoyError> {
        let rel = name.trim_start_matches('/');
        let root = self.fs.root_dir();
        let mut f = root
            .create_file(rel)
            .map_err(self.err(format!("creating {name}")))?;
        f.truncate()
            .map_err(self.err(format!("truncating {name}")))?;
        // May hold bundle bytes.
        let mut buf = Zeroizing::new(vec![0u8; 1 << 20]);
        let mut total = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(VentoyError::fat(
                        self.path,
                        format!("reading the source of {name}"),
                        e,
                    ));
                }
            };
            f.write_all(&buf[..n])
                .map_err(self.err(format!("writing {name}")))?;
            total += n as u64;
        }
        f.flush().map_err(self.err(format!("writing {name}")))?;
        Ok(total)
    }

    /// Writes `name` with the `len` bytes of `src`: `fatfs` allocates the clusters and writes
    /// the directory entry, while the bytes themselves are copied by the kernel
    /// (`copy_file_range`) into the clusters it chose. Never holds the file in memory.
    /// `progress` advances per copied chunk.
    pub fn write_copy(
        &self,
        name: &str,
        src: &File,
        len: u64,
        progress: &crate::progress::Progress,
    ) -> Result<(), VentoyError> {
        let rel = name.trim_start_matches('/');
        let root = self.fs.root_dir();
        let mut f = root
            .create_file(rel)
            .map_err(self.err(format!("creating {name}")))?;
        f.truncate()
            .map_err(self.err(format!("truncating {name}")))?;
        self.io
            .start_shadow()
            .map_err(|e| VentoyError::io("writing", self.path, e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        let res = (|| {
            while left > 0 {
                let n = (left as usize).min(zeros.len());
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            Ok(())
        })();
        let extents = self.io.end_shadow();
        res.map_err(self.err(format!("allocating {name}")))?;
        f.flush().map_err(self.err(format!("writing {name}")))?;
        let mut src_off = 0u64;
        for (at, n) in extents {
            self.io
                .copy_in(src, src_off, at, n, progress)
                .map_err(|e| VentoyError::fat(self.path, format!("copying {name}"), e))?;
            src_off += n;
        }
        if src_off != len {
            return Err(VentoyError::DataFs {
                path: self.path.to_path_buf(),
                problem: format!("{name}: {src_off} of {len} bytes placed"),
            });
        }
        Ok(())
    }

    /// Writes `name` from bytes.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), VentoyError> {
        let mut src = bytes;
        self.write_from(name, &mut src).map(|_| ())
    }

    /// Reads a file of at most `max` bytes, if it exists; a larger one is an error
    /// ([`VentoyError::TooLarge`]), found from its directory entry before anything is read.
    pub fn read(&self, name: &str, max: u64) -> Result<Option<Zeroizing<Vec<u8>>>, VentoyError> {
        match read_file(&self.fs, self.path, name, max)? {
            Bounded::Missing => Ok(None),
            Bounded::Bytes(b) => Ok(Some(b)),
            Bounded::TooLarge(size) => Err(VentoyError::TooLarge {
                path: self.path.to_path_buf(),
                name: name.to_string(),
                size,
                max,
            }),
        }
    }

    /// Whether a file exists (a directory lookup: nothing of the file is read).
    pub fn file_exists(&self, name: &str) -> bool {
        self.fs
            .root_dir()
            .open_file(name.trim_start_matches('/'))
            .is_ok()
    }

    /// Whether a folder exists.
    pub fn dir_exists(&self, dir: &str) -> bool {
        self.fs.root_dir().open_dir(dir.trim_matches('/')).is_ok()
    }

    /// Removes a file if it exists.
    pub fn remove(&self, name: &str) -> Result<(), VentoyError> {
        let rel = name.trim_start_matches('/');
        match self.fs.root_dir().remove(rel) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VentoyError::fat(self.path, format!("removing {name}"), e)),
        }
    }

    /// Renames `from` to `to` (same folder; `to` must not exist).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), VentoyError> {
        let root = self.fs.root_dir();
        root.rename(
            from.trim_start_matches('/'),
            &root,
            to.trim_start_matches('/'),
        )
        .map_err(self.err(format!("renaming {from} to {to}")))
    }

    /// Flushes everything and unmounts (clears the dirty flag, writes FSInfo).
    pub fn finish(self) -> Result<(), VentoyError> {
        let path = self.path;
        self.fs
            .unmount()
            .map_err(|e| VentoyError::fat(path, "unmounting the data partition", e))?;
        self.io
            .flush_all()
            .map_err(|e| VentoyError::io("writing", path, e))
    }
}

/// What a bounded read of a file found.
pub enum Bounded {
    /// No such file.
    Missing,
    /// Larger than the cap (its size from the directory entry); nothing was read.
    TooLarge(u64),
    /// The whole file.
    Bytes(Zeroizing<Vec<u8>>),
}

/// Reads `name` if it is at most `max` bytes. The size comes from the directory entry (a seek
/// to the end reads no data), so a crafted 600 MiB `ventoy.json` costs nothing; the read itself
/// is capped too, in case the chain holds more than the entry says.
fn read_file<T: fatfs::ReadWriteSeek>(
    fs: &FileSystem<T>,
    path: &Path,
    name: &str,
    max: u64,
) -> Result<Bounded, VentoyError> {
    let rel = name.trim_start_matches('/');
    let mut f = match fs.root_dir().open_file(rel) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Bounded::Missing),
        Err(e) => return Err(VentoyError::fat(path, format!("opening {name}"), e)),
    };
    let err = |e| VentoyError::fat(path, format!("reading {name}"), e);
    let size = f.seek(SeekFrom::End(0)).map_err(err)?;
    if size > max {
        return Ok(Bounded::TooLarge(size));
    }
    f.seek(SeekFrom::Start(0)).map_err(err)?;
    let mut out = Zeroizing::new(Vec::with_capacity(size as usize));
    f.take(max).read_to_end(&mut out).map_err(err)?;
    Ok(Bounded::Bytes(out))
}

/// A file found on a FAT partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// Absolute path.
    pub path: String,
    /// Size in bytes (0 for folders).
    pub size: u64,
    /// Folder?
    pub dir: bool,
}

/// Read-only view of a FAT partition (data or VTOYEFI).
pub struct ReadFs<'f> {
    fs: FileSystem<PartIo<'f>>,
    path: &'f Path,
}

impl<'f> ReadFs<'f> {
    /// Mounts `[off, off+len)` read-only.
    pub fn open(
        file: &'f File,
        path: &'f Path,
        off: u64,
        len: u64,
        what: &str,
    ) -> Result<Self, VentoyError> {
        let io = PartIo::read_only(file, off, len);
        let fs = FileSystem::new(io, fs_options())
            .map_err(|e| VentoyError::fat(path, format!("reading {what}"), e))?;
        Ok(Self { fs, path })
    }

    /// The FAT type.
    pub fn fat_type(&self) -> FatType {
        self.fs.fat_type()
    }

    /// The label from the boot sector, trimmed.
    pub fn label(&self) -> String {
        self.fs.volume_label().trim_end().to_string()
    }

    /// Reads a file of at most `max` bytes, if present (see [`Bounded`]).
    pub fn read(&self, name: &str, max: u64) -> Result<Bounded, VentoyError> {
        read_file(&self.fs, self.path, name, max)
    }

    /// Whether a file or folder exists (a directory lookup: nothing of the file is read).
    pub fn exists(&self, name: &str) -> bool {
        let rel = name.trim_start_matches('/');
        let root = self.fs.root_dir();
        root.open_file(rel).is_ok() || root.open_dir(rel).is_ok()
    }

    /// Every file and folder, depth first, up to `limit` entries.
    pub fn list(&self, limit: usize) -> Vec<Listed> {
        let mut out = Vec::new();
        walk(&self.fs.root_dir(), "", &mut out, limit, 0);
        out
    }
}

fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    prefix: &str,
    out: &mut Vec<Listed>,
    limit: usize,
    depth: usize,
) {
    for entry in dir.iter().flatten() {
        if out.len() >= limit {
            return;
        }
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}/{name}");
        if entry.is_dir() {
            out.push(Listed {
                path: path.clone(),
                size: 0,
                dir: true,
            });
            if depth < 8 {
                walk(&entry.to_dir(), &path, out, limit, depth + 1);
            }
        } else {
            out.push(Listed {
                path,
                size: entry.len(),
                dir: false,
            });
        }
    }
}

/// Checks 1 and 4 on partition 2 and returns the Ventoy version from `grub/grub.cfg`.
pub fn check_efi(
    file: &File,
    path: &Path,
    off: u64,
    len: u64,
) -> Result<Option<String>, VentoyError> {
    let not = |check: &'static str, problem: String| VentoyError::NotVentoy {
        path: path.to_path_buf(),
        check,
        problem,
    };
    let fs = ReadFs::open(file, path, off, len, "partition 2").map_err(|_| {
        not(
            "check 1 (partition 2 is FAT)",
            "partition 2 holds no FAT filesystem".into(),
        )
    })?;
    if !fs.label().starts_with("VTOYEFI") {
        return Err(not(
            "check 4 (VTOYEFI label)",
            format!("partition 2 is labelled {:?}, not VTOYEFI", fs.label()),
        ));
    }
    if !fs.exists("/ventoy/ventoy.cpio") {
        return Err(not(
            "check 1 (ventoy/ventoy.cpio)",
            "partition 2 has no ventoy/ventoy.cpio".into(),
        ));
    }
    // Ventoy's grub.cfg is a few hundred KiB; a larger one is not read (no version then).
    match fs.read("/grub/grub.cfg", 4 << 20)? {
        Bounded::Bytes(c) => Ok(crate::blobs::grub_cfg_version(&c)),
        Bounded::Missing | Bounded::TooLarge(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// In-place switch (own code: fatfs cannot replace a file through one directory-entry write).

/// Location of a file's short directory entry.
#[derive(Debug, Clone, Copy)]
struct EntryLoc {
    /// Byte offset of the 32-byte entry inside the partition.
    offset: u64,
    first_cluster: u32,
    size: u32,
}

struct Raw<'f> {
    file: &'f File,
    path: &'f Path,
    off: u64,
    bpb: Bpb,
}

impl<'f> Raw<'f> {
    /// The FAT32 partition at `off`; `Ok(None)` when it is not FAT32.
    fn open(file: &'f File, path: &'f Path, off: u64) -> Result<Option<Self>, VentoyError> {
        let bpb = Bpb::read(file, off).map_err(|e| VentoyError::io("reading", path, e))?;
        Ok(bpb.map(|bpb| Raw {
            file,
            path,
            off,
            bpb,
        }))
    }

    fn rd(&self, at: u64, buf: &mut [u8]) -> Result<(), VentoyError> {
        self.file
            .read_exact_at(buf, self.off + at)
            .map_err(|e| VentoyError::io("reading", self.path, e))
    }
    fn wr(&self, at: u64, buf: &[u8]) -> Result<(), VentoyError> {
        self.file
            .write_all_at(buf, self.off + at)
            .map_err(|e| VentoyError::io("writing", self.path, e))
    }
    fn sync(&self) -> Result<(), VentoyError> {
        self.file
            .sync_data()
            .map_err(|e| VentoyError::io("syncing", self.path, e))
    }

    fn read_fat(&self) -> Result<Vec<u32>, VentoyError> {
        let n = (self.bpb.clusters as usize + 2)
            .min((self.bpb.fat_sectors * self.bpb.bps / 4) as usize);
        // 64 Mi entries is a 2 TiB volume with 32 KiB clusters; refuse anything larger
        // rather than allocate what a crafted boot sector asks for.
        if n > 64 << 20 {
            return Err(VentoyError::DataFs {
                path: self.path.to_path_buf(),
                problem: format!("the FAT claims {n} clusters"),
            });
        }
        let mut raw = vec![0u8; n * 4];
        self.rd(self.bpb.reserved * self.bpb.bps, &mut raw)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x0FFF_FFFF)
            .collect())
    }

    fn set_fat(&self, fat: &[u32], updates: &[(u32, u32)]) -> Result<(), VentoyError> {
        for fat_no in 0..self.bpb.fats {
            let base = (self.bpb.reserved + fat_no * self.bpb.fat_sectors) * self.bpb.bps;
            for &(c, v) in updates {
                let at = base + u64::from(c) * 4;
                let mut old = [0u8; 4];
                self.rd(at, &mut old)?;
                let keep = u32::from_le_bytes(old) & 0xF000_0000;
                self.wr(at, &((v & 0x0FFF_FFFF) | keep).to_le_bytes())?;
            }
        }
        let _ = fat;
        Ok(())
    }

    fn chain(&self, fat: &[u32], start: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = start;
        while (2..0x0FFF_FFF7).contains(&c) && (c as usize) < fat.len() && out.len() <= fat.len() {
            out.push(c);
            c = fat[c as usize];
        }
        out
    }

    /// Finds `name` in the folder starting at `dir_cluster` (long or short name, ASCII case
    /// insensitive).
    fn find(
        &self,
        fat: &[u32],
        dir_cluster: u32,
        name: &str,
    ) -> Result<Option<EntryLoc>, VentoyError> {
        let mut lfn: Vec<(u8, [u16; 13])> = Vec::new();
        let mut buf = vec![0u8; self.bpb.cluster as usize];
        for c in self.chain(fat, dir_cluster) {
            let base = self.bpb.cluster_offset(c);
            self.rd(base, &mut buf)?;
            for (i, e) in buf.chunks_exact(32).enumerate() {
                if e[0] == 0 {
                    return Ok(None);
                }
                if e[0] == 0xE5 {
                    lfn.clear();
                    continue;
                }
                if e[11] & 0x3F == 0x0F {
                    let mut part = [0u16; 13];
                    let idx = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                    for (k, &o) in idx.iter().enumerate() {
                        part[k] = u16::from_le_bytes([e[o], e[o + 1]]);
                    }
                    if e[0] & 0x40 != 0 {
                        lfn.clear();
                    }
                    lfn.push((e[0] & 0x1F, part));
                    continue;
                }
                let long = if lfn.is_empty() {
                    None
                } else {
                    let mut parts = lfn.clone();
                    parts.sort_by_key(|p| p.0);
                    let units: Vec<u16> = parts
                        .iter()
                        .flat_map(|p| p.1)
                        .take_while(|&u| u != 0 && u != 0xFFFF)
                        .collect();
                    Some(String::from_utf16_lossy(&units))
                };
                lfn.clear();
                if e[11] & 0x08 != 0 {
                    continue; // volume label
                }
                let short = short_name(&e[..11]);
                let matches = long
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(name))
                    || short.eq_ignore_ascii_case(name);
                if matches {
                    let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
                    let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
                    return Ok(Some(EntryLoc {
                        offset: base + (i as u64) * 32,
                        first_cluster: (hi << 16) | lo,
                        size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
                    }));
                }
            }
        }
        Ok(None)
    }

    fn lookup(&self, fat: &[u32], path: &str) -> Result<Option<EntryLoc>, VentoyError> {
        let mut dir = self.bpb.root_cluster;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let Some(loc) = self.find(fat, dir, part)? else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok(Some(loc));
            }
            dir = loc.first_cluster;
        }
        Ok(None)
    }

    /// Entries of the FAT that stand for data clusters: the cluster count from the boot
    /// sector, capped by what the FAT holds.
    fn limit(&self, fat: &[u32]) -> usize {
        (self.bpb.clusters as usize + 2).min(fat.len())
    }

    /// Which clusters some directory entry reaches: the root folder's chain, and from every
    /// folder each entry's chain, recursively into subfolders.
    ///
    /// Errs on the side of "reachable", because whatever it misses, [`Raw::wipe_lost`] zeroes:
    /// long-name slots, deleted entries (`0xE5`), the volume label and `.`/`..` are skipped,
    /// but entries after a `0x00` slot still count (Linux's vfat driver reads past it too), and
    /// a folder whose chain runs into clusters already marked (a cross-link) is still read to
    /// its end.
    ///
    /// Bounded by the cluster count from the boot sector: a file's chain stops at a cluster
    /// already marked (a loop or a cross-link), at a free or end value, or at a number beyond
    /// the FAT; a folder's chain stops at a cluster already read as a folder, so no cluster is
    /// read twice. Memory: two flags per cluster plus the chains of folders not read yet,
    /// together at most the cluster count.
    fn reachable(&self, fat: &[u32]) -> Result<Vec<bool>, VentoyError> {
        let limit = self.limit(fat);
        let in_range = |c: u32| c >= 2 && (c as usize) < limit;
        let mut seen = vec![false; limit];
        let mut read = vec![false; limit];
        // Both walks keep the invariant that everything after a marked cluster is marked.
        let mark_file = |seen: &mut [bool], start: u32| {
            let mut c = start;
            while in_range(c) && !seen[c as usize] {
                seen[c as usize] = true;
                c = fat[c as usize];
            }
        };
        let mark_dir = |seen: &mut [bool], read: &mut [bool], start: u32| -> Vec<u32> {
            let mut out = Vec::new();
            let mut c = start;
            while in_range(c) && !read[c as usize] {
                seen[c as usize] = true;
                read[c as usize] = true;
                out.push(c);
                c = fat[c as usize];
            }
            out
        };
        let root = mark_dir(&mut seen, &mut read, self.bpb.root_cluster);
        if root.is_empty() {
            // Everything would look lost: refuse rather than wipe a volume we cannot read.
            return Err(VentoyError::DataFs {
                path: self.path.to_path_buf(),
                problem: format!(
                    "the root folder's cluster {} is outside the FAT",
                    self.bpb.root_cluster
                ),
            });
        }
        let mut dirs = vec![root];
        let mut buf = vec![0u8; self.bpb.cluster as usize];
        while let Some(chain) = dirs.pop() {
            for c in chain {
                self.rd(self.bpb.cluster_offset(c), &mut buf)?;
                for e in buf.chunks_exact(32) {
                    let attr = e[11];
                    if e[0] == 0
                        || e[0] == 0xE5
                        || attr & 0x3F == 0x0F
                        || attr & 0x08 != 0
                        || &e[..11] == b".          "
                        || &e[..11] == b"..         "
                    {
                        continue;
                    }
                    let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
                    let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
                    let first = (hi << 16) | lo;
                    if attr & 0x10 != 0 {
                        let sub = mark_dir(&mut seen, &mut read, first);
                        if !sub.is_empty() {
                            dirs.push(sub);
                        }
                    } else {
                        mark_file(&mut seen, first);
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Lost clusters, in ascending order: marked used in the FAT (neither free nor bad) and
    /// reachable from no directory entry.
    fn lost(&self, fat: &[u32]) -> Result<Vec<u32>, VentoyError> {
        let reachable = self.reachable(fat)?;
        Ok((2..reachable.len())
            .filter(|&c| !reachable[c] && fat[c] != 0 && fat[c] != BAD_CLUSTER)
            .map(|c| c as u32)
            .collect())
    }

    /// Overwrites `clusters` with zeros (no sync): runs of adjacent clusters, up to 1 MiB per
    /// write.
    fn zero_clusters(&self, clusters: &[u32]) -> Result<(), VentoyError> {
        let cs = self.bpb.cluster as usize;
        let per_write = ((1usize << 20) / cs).max(1);
        let zeros = vec![0u8; per_write.min(clusters.len()) * cs];
        let mut rest = clusters;
        while let Some(&first) = rest.first() {
            let n = (1..per_write.min(rest.len()))
                .find(|&i| rest[i] != first + i as u32)
                .unwrap_or(per_write.min(rest.len()));
            self.wr(self.bpb.cluster_offset(first), &zeros[..n * cs])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Zeroes every lost cluster, syncs, then frees them in every FAT copy and syncs again;
    /// returns how many there were and updates `fat`.
    ///
    /// Why: a switch interrupted after its directory-entry write leaves the previous bundle's
    /// clusters allocated and unreachable. No later switch would ever look at them again, so a
    /// key removed from the bundle would stay on the stick for good. Zeroes first: a crash
    /// between the two steps leaves zeroed clusters still lost (found and freed next time);
    /// freeing first could leave the old key in free space, where nothing finds it.
    fn wipe_lost(&self, fat: &mut [u32]) -> Result<u64, VentoyError> {
        let lost = self.lost(fat)?;
        if lost.is_empty() {
            return Ok(0);
        }
        self.zero_clusters(&lost)?;
        self.sync()?;
        let frees: Vec<(u32, u32)> = lost.iter().map(|&c| (c, 0)).collect();
        self.set_fat(fat, &frees)?;
        for &(c, _) in &frees {
            fat[c as usize] = 0;
        }
        self.write_fsinfo(fat)?;
        self.sync()?;
        Ok(lost.len() as u64)
    }

    /// FSInfo: the exact free count and the next free cluster, as `fsck.fat` expects them.
    fn write_fsinfo(&self, fat: &[u32]) -> Result<(), VentoyError> {
        let limit = self.limit(fat);
        let free_count = fat[2..limit].iter().filter(|&&v| v == 0).count() as u32;
        let next_free = (2..limit).find(|&c| fat[c] == 0).unwrap_or(0xFFFF_FFFF) as u32;
        let fsinfo_at = self.bpb.fsinfo * self.bpb.bps;
        let mut fsinfo = [0u8; 512];
        self.rd(fsinfo_at, &mut fsinfo)?;
        if fsinfo[0..4] == *b"RRaA" && fsinfo[484..488] == *b"rrAa" {
            fsinfo[488..492].copy_from_slice(&free_count.to_le_bytes());
            fsinfo[492..496].copy_from_slice(&next_free.to_le_bytes());
            self.wr(fsinfo_at, &fsinfo)?;
        }
        Ok(())
    }
}

/// The FAT32 value of a bad cluster: allocated, but never part of a file.
const BAD_CLUSTER: u32 = 0x0FFF_FFF7;

/// Lost clusters on a FAT32 data partition: allocated in the FAT, reachable from no directory
/// entry (what `fsck.fat` calls "unused clusters").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostClusters {
    /// How many.
    pub clusters: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

/// Counts the lost clusters of the FAT32 partition at `off` without writing; `Ok(None)` when
/// it is not FAT32.
pub fn lost_clusters(
    file: &File,
    path: &Path,
    off: u64,
) -> Result<Option<LostClusters>, VentoyError> {
    let Some(raw) = Raw::open(file, path, off)? else {
        return Ok(None);
    };
    let fat = raw.read_fat()?;
    let clusters = raw.lost(&fat)?.len() as u64;
    Ok(Some(LostClusters {
        clusters,
        bytes: clusters * raw.bpb.cluster,
    }))
}

/// Zeroes and frees the lost clusters of the FAT32 partition at `off` (see [`switch_file`]);
/// returns how many there were, `Ok(None)` when it is not FAT32.
pub fn wipe_lost_clusters(file: &File, path: &Path, off: u64) -> Result<Option<u64>, VentoyError> {
    let Some(raw) = Raw::open(file, path, off)? else {
        return Ok(None);
    };
    let mut fat = raw.read_fat()?;
    raw.wipe_lost(&mut fat).map(Some)
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

/// Zeroes every cluster of the file `name` on the FAT32 partition at `off` and syncs, without
/// freeing them or touching its directory entry; returns how many clusters were zeroed,
/// `Ok(None)` when there is no such file or the partition is not FAT32.
///
/// Why: truncating, removing or overwriting a file through `fatfs` frees its clusters with
/// their bytes intact. For a stale `/.keypack-tmp-keys` (a run killed while writing it) those
/// bytes are a bundle, possibly one whose keys were removed since; zeroed first, freeing them
/// afterwards leaves nothing behind.
///
/// Zeroes the whole FAT chain. An older keypack, killed while `fatfs` wrote the file, could
/// leave a directory entry whose size needs more clusters than its chain has (the data was
/// written, the FAT not yet): then the free clusters after the chain's end are zeroed too,
/// up to that size, which is where `fatfs` allocates next. Zeroing a free cluster loses nothing.
pub fn wipe_file(
    file: &File,
    path: &Path,
    off: u64,
    name: &str,
) -> Result<Option<u64>, VentoyError> {
    let Some(raw) = Raw::open(file, path, off)? else {
        return Ok(None);
    };
    let fat = raw.read_fat()?;
    let Some(loc) = raw.lookup(&fat, name)? else {
        return Ok(None);
    };
    let mut clusters = raw.chain(&fat, loc.first_cluster);
    // A bundle is at most a few MiB; a crafted size must not make this zero the whole disk's
    // free space (harmless, but slow).
    let want = (u64::from(loc.size).min(64 << 20)).div_ceil(raw.bpb.cluster) as usize;
    let limit = raw.limit(&fat);
    if clusters.len() < want {
        let from = clusters
            .last()
            .map_or(loc.first_cluster as usize, |&c| c as usize + 1);
        let extra: Vec<u32> = (from.max(2)..limit)
            .filter(|&c| fat[c] == 0)
            .take(want - clusters.len())
            .map(|c| c as u32)
            .collect();
        clusters.extend(extra);
    }
    // A chain running past the data clusters would point into the next partition.
    clusters.retain(|&c| (c as usize) < limit);
    raw.zero_clusters(&clusters)?;
    raw.sync()?;
    Ok(Some(clusters.len() as u64))
}

/// Outcome of [`switch_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switched {
    /// The file already held these bytes; nothing was written.
    Unchanged,
    /// The new content is in place.
    Replaced,
}

/// Test hook: after which step a keys-only rebuild stops (simulating a crash). Read from the
/// environment variable `KEYPACK_VENTOY_CRASH_AFTER` only in debug builds.
pub(crate) fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("KEYPACK_VENTOY_CRASH_AFTER").is_ok_and(|v| v == step) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

/// Replaces the content of an existing file on the FAT32 partition at `off`, crash-consistent:
/// free clusters are chained first (allocated, unreachable), then written, then one 32-byte
/// directory-entry write makes them the file, then the old clusters are overwritten with zeros and freed. An
/// interruption leaves the old content or the new one; at worst some clusters are lost (marked
/// used, reachable from no file), possibly still holding the previous bundle. Every switch
/// therefore starts by zeroing and freeing all lost clusters (step 0), and `inspect` reports
/// them.
///
/// Returns `Ok(None)` when the file does not exist or the partition is not FAT32.
pub fn switch_file(
    file: &File,
    path: &Path,
    off: u64,
    name: &str,
    bytes: &[u8],
) -> Result<Option<Switched>, VentoyError> {
    let Some(raw) = Raw::open(file, path, off)? else {
        return Ok(None);
    };
    let mut fat = raw.read_fat()?;
    let Some(loc) = raw.lookup(&fat, name)? else {
        return Ok(None);
    };
    // 0. Zero and free lost clusters before anything else, and before the "unchanged" check:
    //    an earlier switch killed between steps 3 and 4 left the bundle before it there,
    //    allocated and reachable from nothing, and this is the only run that will see them.
    raw.wipe_lost(&mut fat)?;
    let mut old_chain = raw.chain(&fat, loc.first_cluster);
    // A crafted chain running past the data clusters would point into the next partition.
    let limit = raw.limit(&fat);
    old_chain.retain(|&c| (c as usize) < limit);
    // Unchanged content: leave the image byte-identical.
    if loc.size as usize == bytes.len() {
        let mut cur = Zeroizing::new(vec![0u8; bytes.len()]);
        let mut done = 0usize;
        for &c in &old_chain {
            if done >= bytes.len() {
                break;
            }
            let n = (raw.bpb.cluster as usize).min(bytes.len() - done);
            raw.rd(raw.bpb.cluster_offset(c), &mut cur[done..done + n])?;
            done += n;
        }
        if done == bytes.len() && cur.as_slice() == bytes {
            return Ok(Some(Switched::Unchanged));
        }
    }
    let need = bytes.len().div_ceil(raw.bpb.cluster as usize).max(1);
    let free: Vec<u32> = (2..fat.len() as u32)
        .filter(|&c| fat[c as usize] == 0)
        .take(need)
        .collect();
    if free.len() < need {
        return Err(VentoyError::DataFs {
            path: path.to_path_buf(),
            problem: format!("no room for {name}: {need} free clusters needed"),
        });
    }
    // 1. Chain free clusters (still unreachable), before any bundle byte goes into them: a
    //    crash after this leaves lost clusters, which step 0 of the next switch zeroes. The
    //    other order could leave the bundle in clusters the FAT calls free, where nothing
    //    would ever look for it.
    let updates: Vec<(u32, u32)> = free
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, free.get(i + 1).copied().unwrap_or(0x0FFF_FFFF)))
        .collect();
    raw.set_fat(&fat, &updates)?;
    raw.sync()?;
    crash_point("chain");
    // 2. Data into the chained clusters.
    let mut cluster_buf = Zeroizing::new(vec![0u8; raw.bpb.cluster as usize]);
    for (i, &c) in free.iter().enumerate() {
        let start = i * raw.bpb.cluster as usize;
        let end = (start + raw.bpb.cluster as usize).min(bytes.len());
        cluster_buf.fill(0);
        cluster_buf[..end - start].copy_from_slice(&bytes[start..end]);
        raw.wr(raw.bpb.cluster_offset(c), &cluster_buf)?;
    }
    raw.sync()?;
    crash_point("data");
    // 3. One directory-entry write makes them the file.
    let mut entry = [0u8; 32];
    raw.rd(loc.offset, &mut entry)?;
    let first = free[0];
    entry[20..22].copy_from_slice(&((first >> 16) as u16).to_le_bytes());
    entry[26..28].copy_from_slice(&((first & 0xFFFF) as u16).to_le_bytes());
    entry[28..32].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    raw.wr(loc.offset, &entry)?;
    raw.sync()?;
    crash_point("entry");
    // 4. Overwrite the old content (it held the previous keys: a key removed from the bundle
    //    must not stay readable in free clusters), then free the old chain. A crash in
    //    between leaves zeroed clusters marked used: lost space, no old keys.
    raw.zero_clusters(&old_chain)?;
    raw.sync()?;
    crash_point("wipe");
    let frees: Vec<(u32, u32)> = old_chain.iter().map(|&c| (c, 0)).collect();
    raw.set_fat(&fat, &frees)?;
    for &(c, v) in updates.iter().chain(&frees) {
        fat[c as usize] = v;
    }
    raw.write_fsinfo(&fat)?;
    raw.sync()?;
    Ok(Some(Switched::Replaced))
}

/// Repairs what `fatfs` 0.3.6 writes into a new folder: it gives the `.` and `..` entries long
/// names, and points `..` of a folder in the root at the root's cluster instead of 0. Both
/// make `fsck.fat` rewrite the folder. Rewrites the folder's first cluster with those long
/// names removed and `..` fixed; run it once, right after the folder was created.
pub fn fix_dot_entries(file: &File, path: &Path, off: u64, dir: &str) -> Result<(), VentoyError> {
    let Some(raw) = Raw::open(file, path, off)? else {
        return Ok(());
    };
    let fat = raw.read_fat()?;
    let Some(loc) = raw.lookup(&fat, dir)? else {
        return Ok(());
    };
    let parent_is_root = dir.trim_matches('/').split('/').count() == 1;
    let at = raw.bpb.cluster_offset(loc.first_cluster);
    let mut buf = vec![0u8; raw.bpb.cluster as usize];
    raw.rd(at, &mut buf)?;
    let entries: Vec<[u8; 32]> = buf
        .chunks_exact(32)
        .take_while(|e| e[0] != 0)
        .map(|e| e.try_into().unwrap_or([0u8; 32]))
        .collect();
    let is_dot = |e: &[u8; 32]| &e[..11] == b".          " || &e[..11] == b"..         ";
    let mut out: Vec<[u8; 32]> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let is_lfn = e[0] != 0xE5 && e[11] & 0x3F == 0x0F;
        if is_lfn {
            // Drop long-name entries that belong to `.` or `..` (the next short entry).
            let owner = entries[i..]
                .iter()
                .find(|x| !(x[0] != 0xE5 && x[11] & 0x3F == 0x0F));
            if owner.is_some_and(is_dot) {
                continue;
            }
        }
        let mut e = *e;
        if &e[..11] == b"..         " && parent_is_root {
            e[20..22].fill(0);
            e[26..28].fill(0);
        }
        out.push(e);
    }
    let mut new = vec![0u8; raw.bpb.cluster as usize];
    for (i, e) in out.iter().enumerate() {
        new[i * 32..i * 32 + 32].copy_from_slice(e);
    }
    if new != buf {
        raw.wr(at, &new)?;
    }
    Ok(())
}

/// A stand-in disk for computing a format's geometry without writing it: keeps the boot
/// sector, reads zeros elsewhere, drops every other write.
struct NullDisk {
    boot: [u8; 512],
    pos: u64,
    len: u64,
}

impl Read for NullDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len();
        for (i, b) in buf.iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if p < 512 { self.boot[p as usize] } else { 0 };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for NullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for (i, b) in buf.iter().enumerate() {
            let p = self.pos + i as u64;
            if p < 512 {
                self.boot[p as usize] = *b;
            }
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Seek for NullDisk {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.pos = match pos {
            io::SeekFrom::Start(p) => p,
            io::SeekFrom::End(d) => self.len.saturating_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

/// Where the first file written after the root folder (the ISO) starts inside a data partition
/// of `len` bytes formatted by [`format_data`]: the metadata length plus one cluster.
pub fn first_file_offset(len: u64) -> io::Result<u64> {
    let cs = cluster_size_for(len);
    let mut label = [b' '; 11];
    label[..6].copy_from_slice(b"Ventoy");
    let mut disk = NullDisk {
        boot: [0; 512],
        pos: 0,
        len,
    };
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_cluster(cs)
        .total_sectors((len / 512) as u32)
        .volume_label(label);
    fatfs::format_volume(&mut disk, opts)?;
    let s = &disk.boot;
    let bps = u64::from(u16::from_le_bytes([s[11], s[12]]));
    let reserved = u64::from(u16::from_le_bytes([s[14], s[15]]));
    let fats = u64::from(s[16]);
    let fat_sectors = u64::from(u32::from_le_bytes([s[36], s[37], s[38], s[39]]));
    Ok((reserved + fats * fat_sectors) * bps + u64::from(cs))
}
