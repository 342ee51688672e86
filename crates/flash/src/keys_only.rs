//! `keypack flash --keys-only`: a stick that already holds the same build's ISO gets only the
//! new bundle (and `ventoy.json`), through the crash-consistent switch of a keys-only image
//! rebuild (`keypack_media_ventoy::fat::switch_file`: new clusters chained, written, one
//! directory-entry write, the old clusters zeroed and freed).
//!
//! "The same build" is checked read-only before anything is written: the stick passes
//! Ventoy's layout checks with the image's partitions (same style, starts and sizes), its
//! partition 2 (VTOYEFI) holds what a flash writes there (the regions of the flash plan), and every file of the image's data
//! partition other than the bundle and `ventoy.json` (the ISO) is on the stick with the same
//! length and SHA-256. Anything else is [`FlashError::NotSameBuild`]: flash without
//! `--keys-only`.
//!
//! Does not: write the ISO, touch anything below the data partition or partition 2, remove
//! files the user added to the stick. exFAT data partitions are refused (no switch there).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use keypack_media_ventoy::fat::{self, ReadFs};
use keypack_media_ventoy::layout::{self, Found, SECTOR};
use keypack_media_ventoy::partio::PartIo;
use keypack_media_ventoy::{ARCHIVE_PATH, JSON_PATH, VentoyError};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::extents::Region;
use crate::{FlashError, write};

/// Largest bundle / `ventoy.json` taken from the image (as `inspect` reads them).
const MAX_ARCHIVE: u64 = 16 << 20;
const MAX_JSON: u64 = 4 << 20;

/// Outcome of [`keys_only`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysOnly {
    /// Bytes of the new bundle put on the stick.
    pub bundle_bytes: u64,
    /// Bytes of the `ventoy.json` put on the stick.
    pub json_bytes: u64,
    /// The files found equal on image and stick (the ISO), by path.
    pub same_files: Vec<String>,
}

fn ventoy(e: VentoyError) -> FlashError {
    FlashError::Ventoy(Box::new(e))
}

fn not_same(device: &Path, why: String) -> FlashError {
    FlashError::NotSameBuild {
        device: device.to_path_buf(),
        why,
    }
}

/// SHA-256 and length of a file of the FAT volume at `[off, off+len)` of `file`, streamed.
fn file_sha(
    file: &File,
    path: &Path,
    found: &Found,
    name: &str,
) -> Result<Option<(u64, Vec<u8>)>, FlashError> {
    let io = PartIo::read_only(file, found.data.start * SECTOR, found.data.sectors * SECTOR);
    let fs = fatfs::FileSystem::new(io, fat::fs_options())
        .map_err(|e| FlashError::io("reading the data partition of", path, e))?;
    let mut f = match fs.root_dir().open_file(name.trim_start_matches('/')) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FlashError::io("reading", path, e)),
    };
    let size = f
        .seek(SeekFrom::End(0))
        .and_then(|n| f.seek(SeekFrom::Start(0)).map(|_| n))
        .map_err(|e| FlashError::io("reading", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| FlashError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some((size, h.finalize().to_vec())))
}

/// The data partition of `file` (laid out as `found`), mounted read-only.
fn data_fs<'f>(file: &'f File, path: &'f Path, found: &Found) -> Result<ReadFs<'f>, FlashError> {
    ReadFs::open(
        file,
        path,
        found.data.start * SECTOR,
        found.data.sectors * SECTOR,
        "the data partition",
    )
    .map_err(ventoy)
}

/// Reads `name` (at most `max` bytes) from the data partition `fs` of `path`.
fn read_small(
    fs: &ReadFs<'_>,
    path: &Path,
    name: &str,
    max: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, FlashError> {
    match fs.read(name, max).map_err(ventoy)? {
        fat::Bounded::Bytes(b) => Ok(Some(b)),
        fat::Bounded::Missing => Ok(None),
        fat::Bounded::TooLarge(size) => Err(FlashError::io(
            "reading",
            path,
            std::io::Error::other(format!("{name} is {size} bytes, more than {max}")),
        )),
    }
}

/// Checks that `dev` holds the build of `image`, whose flash plan is `plan` (see the module
/// documentation); returns the image's layout and the files found equal.
fn same_build(
    img: &File,
    image: &Path,
    plan: &[Region],
    dev: &File,
    device: &Path,
) -> Result<(Found, Vec<String>), FlashError> {
    let fi = layout::check_disk(img, image).map_err(ventoy)?;
    let fd = layout::check_disk(dev, device)
        .map_err(|e| not_same(device, format!("it is not a Ventoy stick ({e})")))?;
    if fi.style != fd.style || fi.data != fd.data || fi.efi != fd.efi {
        return Err(not_same(
            device,
            "its partitions differ from the image's".into(),
        ));
    }
    // Partition 2 as a flash writes it: the plan's regions inside it (its free clusters are
    // not written, and may hold anything).
    let (efi_at, efi_end) = (
        fi.efi.start * SECTOR,
        (fi.efi.start + fi.efi.sectors) * SECTOR,
    );
    let efi: Vec<Region> = plan
        .iter()
        .filter(|r| r.end > efi_at && r.start < efi_end)
        .map(|r| Region {
            start: r.start.max(efi_at),
            end: r.end.min(efi_end),
            kind: r.kind,
        })
        .collect();
    match write::compare(img, image, dev, device, &efi, &|_, _| {}) {
        Ok(_) => {}
        Err(FlashError::VerifyMismatch { .. }) => {
            return Err(not_same(
                device,
                "its partition 2 (VTOYEFI) differs from the image's".into(),
            ));
        }
        Err(e) => return Err(e),
    }
    let listed = data_fs(img, image, &fi)?.list(10_000);
    let mut same = Vec::new();
    for l in listed.iter().filter(|l| !l.dir) {
        if l.path == ARCHIVE_PATH || l.path == JSON_PATH {
            continue;
        }
        let want = file_sha(img, image, &fi, &l.path)?;
        let got = file_sha(dev, device, &fd, &l.path)?;
        match got {
            None => return Err(not_same(device, format!("it has no {}", l.path))),
            Some(g) if Some(&g) != want.as_ref() => {
                return Err(not_same(
                    device,
                    format!("its {} differs from the image's", l.path),
                ));
            }
            Some(_) => same.push(l.path.clone()),
        }
    }
    if same.is_empty() {
        return Err(not_same(device, "the image holds no ISO to compare".into()));
    }
    Ok((fi, same))
}

/// Puts the bundle and `ventoy.json` of `image` onto `dev` (opened read-write, exclusive,
/// checked by the caller), after [`same_build`]; fsync, then reads both back past the page
/// cache.
pub(crate) fn keys_only(
    img: &File,
    image: &Path,
    plan: &[Region],
    dev: &File,
    device: &Path,
) -> Result<KeysOnly, FlashError> {
    let (found, same_files) = same_build(img, image, plan, dev, device)?;
    let missing = |name: &str| not_same(device, format!("the image has no {name}"));
    let fs = data_fs(img, image, &found)?;
    let archive =
        read_small(&fs, image, ARCHIVE_PATH, MAX_ARCHIVE)?.ok_or_else(|| missing(ARCHIVE_PATH))?;
    let json = read_small(&fs, image, JSON_PATH, MAX_JSON)?.ok_or_else(|| missing(JSON_PATH))?;
    drop(fs);
    let off = found.data.start * SECTOR;
    // As the keys-only rebuild does: ventoy.json first (it names the archive path, which
    // does not change), then the bundle. `None`: the file is missing on the stick, or its
    // data partition is not FAT32.
    for (name, bytes) in [(JSON_PATH, &json), (ARCHIVE_PATH, &archive)] {
        if fat::switch_file(dev, device, off, name, bytes)
            .map_err(ventoy)?
            .is_none()
        {
            return Err(not_same(
                device,
                format!("it has no {name} on a FAT32 data partition"),
            ));
        }
    }
    dev.sync_all()
        .map_err(|e| FlashError::io("flushing", device, e))?;
    rustix::fs::fadvise(dev, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| FlashError::io("dropping the cache of", device, e.into()))?;
    // Mounted after the switch and the cache drop: what the stick now holds.
    let back_fs = data_fs(dev, device, &found)?;
    for (name, bytes, max) in [
        (ARCHIVE_PATH, &archive, MAX_ARCHIVE),
        (JSON_PATH, &json, MAX_JSON),
    ] {
        let back = read_small(&back_fs, device, name, max)?;
        if back.as_deref().map(|b| &b[..]) != Some(&bytes[..]) {
            return Err(FlashError::io(
                "verifying",
                device,
                std::io::Error::other(format!("{name} reads back different from the image's")),
            ));
        }
    }
    Ok(KeysOnly {
        bundle_bytes: archive.len() as u64,
        json_bytes: json.len() as u64,
        same_files,
    })
}
