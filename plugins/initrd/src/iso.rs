//! A small read-only ISO 9660 reader: find a file by path and stream its bytes.
//!
//! Where it sits: used by `--iso` to pull the kernel, the initrd and the boot loader
//! configuration out of a (NixOS) ISO; nothing else in keypack reads ISOs.
//! What it reads: the primary volume descriptor and, when present, the Joliet supplementary
//! one; directory records with Rock Ridge `NM` names (including `CE` continuation areas), plain
//! ISO 9660 names (`BZIMAGE.;1`, matched without the version) and Joliet
//! UCS-2 names; multi-extent files. Files are streamed ([`IsoImage::copy_to`]); the image is
//! never loaded whole.
//! What it does not: follow Rock Ridge symlinks (a symlink is reported as such), read El Torito
//! boot images, zisofs-compressed files, UDF, or multi-session images beyond the last session's
//! descriptors at sector 16.
//!
//! Why our own instead of a crate: of the maintained-looking crates, `cdfs` 0.2 depends
//! unconditionally on `fuser`, `simple_logger`, `clap` and `libc` for its FUSE binary (a lot of
//! code for a 2 KiB-record format), `iso9660` 0.1 calls itself incomplete, and `hadris-iso` is
//! only at a 3.0 release candidate over a stack of six crates. What `--iso` needs (look up two
//! or three paths, copy their extents) is ~300 lines here, bounds-checked against the file's
//! size, and tested against `xorriso` as the independent writer and reader.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes per ISO 9660 logical sector.
pub const SECTOR: u64 = 2048;
/// Directories larger than this are refused (a crafted ISO cannot make us allocate much).
const MAX_DIR_LEN: u32 = 16 << 20;
/// Volume descriptors read at most before giving up on a terminator.
const MAX_DESCRIPTORS: u64 = 64;
/// Rock Ridge continuation areas followed per record at most.
const MAX_CONTINUATIONS: usize = 16;

/// What can go wrong reading an ISO. Variants name the ISO and the path inside it.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// Opening or reading the image failed.
    #[error("reading {iso}")]
    Io {
        /// The ISO.
        iso: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Not an ISO 9660 image.
    #[error("{iso} is not an ISO 9660 image ({why})")]
    NotIso {
        /// The file.
        iso: PathBuf,
        /// What was missing.
        why: &'static str,
    },
    /// A structure points outside the image or is malformed.
    #[error("{iso} is damaged: {why}")]
    Corrupt {
        /// The ISO.
        iso: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The path names something that is not a regular file.
    #[error("{path} in {iso} is {what}, not a regular file")]
    NotAFile {
        /// The ISO.
        iso: PathBuf,
        /// The path inside it.
        path: String,
        /// `a folder`, `a symbolic link`.
        what: &'static str,
    },
}

/// A file (or folder) found in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `(first sector, length in bytes)` of each extent, in order.
    extents: Vec<(u32, u32)>,
    dir: bool,
    symlink: bool,
}

impl Entry {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.extents.iter().map(|&(_, l)| u64::from(l)).sum()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(first sector, length in bytes)` of each extent, in order (for media that write into
    /// a file's extent in place, like the keyed ISO's area).
    pub fn extents(&self) -> &[(u32, u32)] {
        &self.extents
    }

    /// Whether it is a folder.
    pub fn is_dir(&self) -> bool {
        self.dir
    }
}

/// One directory record, decoded.
struct Record {
    extent: u32,
    len: u32,
    flags: u8,
    /// ISO 9660 name (d-characters, version stripped) or Joliet name.
    name: String,
    /// Rock Ridge `NM` name, when present.
    rr_name: Option<String>,
    rr_symlink: bool,
}

/// An open ISO image.
pub struct IsoImage {
    file: File,
    path: PathBuf,
    size: u64,
    /// Root directory records: primary volume descriptor, Joliet (if any).
    roots: Vec<(Entry, bool)>,
}

impl IsoImage {
    /// Opens `path` and reads its volume descriptors.
    pub fn open(path: &Path) -> Result<Self, IsoError> {
        let io_err = |source| IsoError::Io {
            iso: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let mut img = IsoImage {
            file,
            path: path.to_path_buf(),
            size,
            roots: Vec::new(),
        };
        let not_iso = |why| IsoError::NotIso {
            iso: path.to_path_buf(),
            why,
        };
        if size < 17 * SECTOR {
            return Err(not_iso("too small"));
        }
        let mut primary = None;
        let mut joliet = None;
        for i in 0..MAX_DESCRIPTORS {
            let at = (16 + i) * SECTOR;
            if at + SECTOR > size {
                break;
            }
            let mut vd = [0u8; SECTOR as usize];
            img.read_at(at, &mut vd)?;
            if &vd[1..6] != b"CD001" {
                if i == 0 {
                    return Err(not_iso("no CD001 volume descriptor at sector 16"));
                }
                break;
            }
            let root = parse_root(&vd[156..190]);
            match vd[0] {
                1 if primary.is_none() => primary = root,
                2 if matches!(&vd[88..91], b"%/@" | b"%/C" | b"%/E") && joliet.is_none() => {
                    joliet = root
                }
                255 => break,
                _ => {}
            }
        }
        let primary = primary.ok_or_else(|| not_iso("no primary volume descriptor"))?;
        img.roots.push((primary, false));
        if let Some(j) = joliet {
            img.roots.push((j, true));
        }
        Ok(img)
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up an absolute path (`/boot/bzImage`): an exact Rock Ridge name wins, else any
    /// Rock Ridge, plain ISO 9660 or Joliet name that matches ignoring ASCII case. `Ok(None)` when it does not exist.
    pub fn find(&mut self, path: &str) -> Result<Option<Entry>, IsoError> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for i in 0..self.roots.len() {
            let (root, joliet) = self.roots[i].clone();
            if let Some(found) = self.find_in(root, joliet, &parts)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn find_in(
        &mut self,
        mut dir: Entry,
        joliet: bool,
        parts: &[&str],
    ) -> Result<Option<Entry>, IsoError> {
        for (i, part) in parts.iter().enumerate() {
            if !dir.dir {
                return Ok(None);
            }
            let records = self.read_dir(&dir, joliet)?;
            // An exact Rock Ridge name first; then any name ignoring case (NixOS writes
            // `/EFI/boot/grub.cfg`, others `/EFI/BOOT/grub.cfg`).
            let pick = |exact: bool| -> Option<Entry> {
                let mut extents = Vec::new();
                let mut found: Option<&Record> = None;
                for r in &records {
                    let hit = if exact {
                        r.rr_name.as_deref() == Some(*part)
                    } else {
                        r.rr_name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(part))
                            || r.name.eq_ignore_ascii_case(part)
                    };
                    if hit {
                        extents.push((r.extent, r.len));
                        found = Some(r);
                        // Bit 7: more extents of this file follow.
                        if r.flags & 0x80 == 0 {
                            break;
                        }
                    } else if found.is_some() {
                        break;
                    }
                }
                found.map(|r| Entry {
                    extents,
                    dir: r.flags & 0x02 != 0,
                    symlink: r.rr_symlink,
                })
            };
            let Some(next) = pick(true).or_else(|| pick(false)) else {
                return Ok(None);
            };
            if next.symlink {
                return Err(IsoError::NotAFile {
                    iso: self.path.clone(),
                    path: format!("/{}", parts[..=i].join("/")),
                    what: "a symbolic link",
                });
            }
            dir = next;
        }
        Ok(Some(dir))
    }

    /// Finds `path` and checks it is a regular file.
    pub fn find_file(&mut self, path: &str) -> Result<Option<Entry>, IsoError> {
        match self.find(path)? {
            Some(e) if e.dir => Err(IsoError::NotAFile {
                iso: self.path.clone(),
                path: path.to_owned(),
                what: "a folder",
            }),
            other => Ok(other),
        }
    }

    /// Reads a small file whole (boot loader configurations), refusing one over `limit` bytes.
    pub fn read_small(&mut self, entry: &Entry, limit: u64) -> Result<Vec<u8>, IsoError> {
        if entry.len() > limit {
            return Err(self.corrupt(format!(
                "a configuration file of {} bytes (at most {limit} read)",
                entry.len()
            )));
        }
        let mut out = Vec::with_capacity(entry.len() as usize);
        self.copy_to(entry, &mut out)?;
        Ok(out)
    }

    /// Streams the file's bytes into `out`; returns the number of bytes copied.
    pub fn copy_to(&mut self, entry: &Entry, out: &mut dyn Write) -> Result<u64, IsoError> {
        self.check_extents(entry)?;
        let mut total = 0;
        for &(sector, len) in &entry.extents {
            self.file
                .seek(SeekFrom::Start(u64::from(sector) * SECTOR))
                .map_err(|source| self.io(source))?;
            let n = io::copy(&mut (&self.file).take(u64::from(len)), out).map_err(|source| {
                IsoError::Io {
                    iso: self.path.clone(),
                    source,
                }
            })?;
            if n != u64::from(len) {
                return Err(self.corrupt("a file extent ends past the end of the image".into()));
            }
            total += n;
        }
        Ok(total)
    }

    /// Checks every extent lies inside the image, so a bad ISO fails before anything is written.
    pub fn check_extents(&self, entry: &Entry) -> Result<(), IsoError> {
        for &(sector, len) in &entry.extents {
            if u64::from(sector) * SECTOR + u64::from(len) > self.size {
                return Err(self.corrupt(format!(
                    "a file extent (sector {sector}, {len} bytes) ends past the end of the image ({} bytes)",
                    self.size
                )));
            }
        }
        Ok(())
    }

    fn read_dir(&mut self, dir: &Entry, joliet: bool) -> Result<Vec<Record>, IsoError> {
        let Some(&(sector, len)) = dir.extents.first() else {
            return Ok(Vec::new());
        };
        if len > MAX_DIR_LEN {
            return Err(self.corrupt(format!("a directory of {len} bytes")));
        }
        self.check_extents(dir)?;
        let mut buf = vec![0u8; len as usize];
        self.read_at(u64::from(sector) * SECTOR, &mut buf)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            let rec_len = buf[pos] as usize;
            if rec_len == 0 {
                // Records never cross a sector boundary: skip the padding.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if rec_len < 34 || pos + rec_len > buf.len() {
                return Err(self.corrupt("a directory record runs past its directory".into()));
            }
            let rec = &buf[pos..pos + rec_len];
            pos += rec_len;
            let name_len = rec[32] as usize;
            if 33 + name_len > rec.len() {
                return Err(self.corrupt("a directory record's name runs past it".into()));
            }
            let raw = &rec[33..33 + name_len];
            if raw == [0] || raw == [1] {
                continue; // `.` and `..`
            }
            let name = if joliet {
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                strip_version(&String::from_utf16_lossy(&units)).to_owned()
            } else {
                let s = String::from_utf8_lossy(raw);
                let s = strip_version(&s);
                s.strip_suffix('.').unwrap_or(s).to_owned()
            };
            // System use area: after the name, padded to an even offset.
            let su_start = 33 + name_len + (1 - name_len % 2);
            let (rr_name, rr_symlink) = if joliet || su_start >= rec.len() {
                (None, false)
            } else {
                self.rock_ridge(&rec[su_start..])?
            };
            records.push(Record {
                extent: u32::from_le_bytes([rec[2], rec[3], rec[4], rec[5]]),
                len: u32::from_le_bytes([rec[10], rec[11], rec[12], rec[13]]),
                flags: rec[25],
                name,
                rr_name,
                rr_symlink,
            });
        }
        Ok(records)
    }

    /// Walks SUSP entries for `NM` (name, possibly in pieces) and `SL` (symlink), following
    /// `CE` continuation areas.
    fn rock_ridge(&mut self, area: &[u8]) -> Result<(Option<String>, bool), IsoError> {
        let mut name: Option<Vec<u8>> = None;
        let mut symlink = false;
        let mut pending: Vec<u8> = area.to_vec();
        for _ in 0..=MAX_CONTINUATIONS {
            let mut next = None;
            let mut pos = 0usize;
            while pos + 4 <= pending.len() {
                let sig = [pending[pos], pending[pos + 1]];
                let len = pending[pos + 2] as usize;
                if len < 4 || pos + len > pending.len() {
                    break;
                }
                let body = &pending[pos + 4..pos + len];
                match &sig {
                    // Flags: 0x02 current dir, 0x04 parent: not names we look up.
                    b"NM" if !body.is_empty() && body[0] & 0x06 == 0 => {
                        name.get_or_insert_with(Vec::new)
                            .extend_from_slice(&body[1..]);
                    }
                    b"SL" => symlink = true,
                    b"CE" if body.len() >= 24 => {
                        let le = |o: usize| {
                            u32::from_le_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]])
                        };
                        next = Some((le(0), le(8), le(16)));
                    }
                    b"ST" => break,
                    _ => {}
                }
                pos += len;
            }
            let Some((block, offset, len)) = next else {
                break;
            };
            let at = u64::from(block) * SECTOR + u64::from(offset);
            if len > SECTOR as u32 || at + u64::from(len) > self.size {
                return Err(self.corrupt("a Rock Ridge continuation area is out of range".into()));
            }
            pending = vec![0u8; len as usize];
            self.read_at(at, &mut pending)?;
        }
        Ok((
            name.map(|n| String::from_utf8_lossy(&n).into_owned()),
            symlink,
        ))
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<(), IsoError> {
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|source| IsoError::Io {
                iso: self.path.clone(),
                source,
            })
    }

    fn io(&self, source: io::Error) -> IsoError {
        IsoError::Io {
            iso: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, why: String) -> IsoError {
        IsoError::Corrupt {
            iso: self.path.clone(),
            why,
        }
    }
}

fn parse_root(rec: &[u8]) -> Option<Entry> {
    if rec.len() < 34 || rec[0] < 34 {
        return None;
    }
    Some(Entry {
        extents: vec![(
            u32::from_le_bytes([rec[2], rec[3], rec[4], rec[5]]),
            u32::from_le_bytes([rec[10], rec[11], rec[12], rec[13]]),
        )],
        dir: true,
        symlink: false,
    })
}

fn strip_version(name: &str) -> &str {
    match name.rfind(';') {
        Some(i) => &name[..i],
        None => name,
    }
}
