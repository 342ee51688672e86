//! Writing the area: a full build copies the ISO (a reflink where the file system shares
//! blocks, else `copy_file_range`, else reads and writes) into a 0600 temp file, fills the
//! area and renames the copy into place; a keys-only rebuild and `media reset` overwrite the
//! area of an existing keyed ISO in place.
//!
//! Does not touch a byte outside the area, in either mode (the tests compare every other byte
//! with the input). Why in place is safe enough: the ISO's structure is never written, only the
//! area; the file is made 0600 before keys go in, the new cpio and zeros cover every non-zero
//! byte the old one had, and the write is fsynced before the build reports success. An
//! interruption during that one write can leave a torn area (part old, part new gzip), which
//! the kernel's unpacker rejects as a damaged archive and `keypack inspect` reports as damaged;
//! the next build then sees the changed file and rebuilds it whole.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use keypack_plugin::output::PendingFile;

use crate::IsoMediumError;
use crate::area::Area;

/// Bytes per `copy_file_range` call.
const COPY_CHUNK: u64 = 4 << 20;

/// Writes `output` (0600, temp name, fsync, rename): a copy of `iso` whose `area` holds
/// `content` followed by zeros.
pub fn full(iso: &Path, area: Area, content: &[u8], output: &Path) -> Result<(), IsoMediumError> {
    let src = File::open(iso).map_err(|e| IsoMediumError::io("reading", iso, e))?;
    let len = src
        .metadata()
        .map_err(|e| IsoMediumError::io("reading", iso, e))?
        .len();
    let mut pending =
        PendingFile::create(output).map_err(|e| IsoMediumError::io("creating", output, e))?;
    let temp = pending.temp_path().to_path_buf();
    let werr = |e| IsoMediumError::io("writing", &temp, e);
    clone_or_copy(&src, pending.file(), len).map_err(werr)?;
    write_area(pending.file(), area, content, area.len).map_err(werr)?;
    pending
        .commit()
        .map_err(|e| IsoMediumError::io("writing", output, e))
}

/// Overwrites the area of the existing keyed ISO `path` in place with `content` and zeros:
/// makes the file 0600 first, covers every non-zero byte of the old area, fdatasyncs. Returns
/// how many bytes of the old area were in use.
pub fn in_place(path: &Path, area: Area, content: &[u8]) -> Result<u64, IsoMediumError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| IsoMediumError::io("opening", path, e))?;
    let err = |e| IsoMediumError::io("writing", path, e);
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let used = used_len(&file, area).map_err(err)?;
    let cover = (content.len() as u64).max(used);
    write_area(&file, area, content, cover).map_err(err)?;
    // Data only: the size and the blocks do not change, so fdatasync makes the area durable.
    file.sync_data().map_err(err)?;
    Ok(used)
}

/// Zeroes the area of `path` in place (`keypack media reset`); returns how many bytes were in use.
pub fn reset(path: &Path, area: Area) -> Result<u64, IsoMediumError> {
    in_place(path, area, &[])
}

/// Length of the area's prefix that holds non-zero bytes (0 for an empty area).
pub fn used_len(file: &File, area: Area) -> io::Result<u64> {
    let bytes = read_area(file, area)?;
    Ok(bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1))
}

/// The area's bytes, in a buffer that is zeroized when dropped (it may hold keys).
pub fn read_area(file: &File, area: Area) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; area.len as usize]);
    file.read_exact_at(&mut buf, area.offset)?;
    Ok(buf)
}

/// Writes `content` then zeros up to `cover` bytes (rounded up to whole 4 KiB pieces, within
/// the area) at the area's offset, in one buffer.
fn write_area(file: &File, area: Area, content: &[u8], cover: u64) -> io::Result<()> {
    let cover = cover
        .max(content.len() as u64)
        .next_multiple_of(4096)
        .min(area.len);
    if cover == 0 {
        return Ok(());
    }
    let mut buf = zeroize::Zeroizing::new(vec![0u8; cover as usize]);
    buf[..content.len()].copy_from_slice(content);
    file.write_all_at(&buf, area.offset)
}

/// Makes `dst` a copy of the first `len` bytes of `src`: a reflink (`FICLONE`, btrfs/XFS) when
/// the file system can, else `copy_file_range` (in-kernel, no user-space buffer), else reads
/// and writes.
fn clone_or_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let (mut src_off, mut dst_off) = (0u64, 0u64);
    let mut kicked = 0u64; // [0, kicked) was handed to writeback
    while src_off < len {
        let n = (len - src_off).min(COPY_CHUNK) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut src_off), dst, Some(&mut dst_off), n) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the ISO ended early",
                ));
            }
            Ok(_) => {
                // Write behind: hand what is copied to writeback now, so the final fsync has
                // little left (as the Ventoy medium does; `cp` + `sync` pays it all at the end).
                if dst_off - kicked >= COPY_CHUNK {
                    write_behind(dst, kicked, dst_off - kicked);
                    kicked = dst_off;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) => return copy_plain(src, dst, src_off, len),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Starts writeback of `[off, off+len)` without waiting, and drops pages of that range that
/// are already clean (`POSIX_FADV_DONTNEED`). Advisory: errors are ignored.
fn write_behind(file: &File, off: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, off, Some(len), rustix::fs::Advice::DontNeed);
    }
}

fn copy_plain(src: &File, dst: &File, mut off: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], off)?;
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
