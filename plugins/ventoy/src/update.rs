//! Reading and updating existing Ventoy disks: `keypack inspect IMAGE` and
//! `keypack media update --image FILE | --mount DIR`.
//!
//! Supports: images and devices that pass Ventoy's layout checks, with a FAT32 data partition
//! for `--image`; any data filesystem the OS mounted for `--mount`.
//! Does not support: writing anything below LBA 2048 or to partition 2 (never done), exFAT data
//! partitions inside image files.
//! Reference: `ventoy.md` §2.6 (the update path) and §1.1 (merging `ventoy.json`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::fat::{self, Bounded, DataFs, Listed, ReadFs};
use crate::layout::{self, Found, SECTOR};
use crate::{ARCHIVE_PATH, JSON_PATH, VentoyError, json};

/// What `inspect` found on a Ventoy image. Holds archive bytes (secret) only in
/// `archives`, zeroized on drop.
pub struct ImageInfo {
    /// Partition layout.
    pub found: Found,
    /// `VENTOY_VERSION` from partition 2's `grub/grub.cfg`.
    pub version: Option<String>,
    /// FAT type of the data partition, or why it could not be read.
    pub data_fs: Result<String, String>,
    /// Files on the data partition.
    pub files: Vec<Listed>,
    /// Parsed `ventoy.json`, or why it failed.
    pub json: Option<Result<serde_json::Value, String>>,
    /// Injection entries: (key, image, archive).
    pub injection: Vec<(String, String, String)>,
    /// Archives named by injection entries that exist: (path, bytes).
    pub archives: Vec<(String, Zeroizing<Vec<u8>>)>,
    /// Paths named by injection entries (images without a `*`, archives) that are not on the
    /// data partition, found by directory lookup (not from `files`, which is capped).
    pub missing: Vec<String>,
    /// Lost clusters of a FAT32 data partition (allocated, reachable from no file): `None`
    /// when the data partition is not FAT32 or could not be checked.
    pub lost: Option<fat::LostClusters>,
    /// What looks wrong on the data partition, one sentence each (lost clusters, which may
    /// still hold a removed key; a file too large to read); the caller adds these to its own
    /// list of problems. Names in them come from the image: escape before printing.
    pub problems: Vec<String>,
}

/// Reads one file of the data partition of at most the given size, if present.
type FileReader<'a> = dyn Fn(&str, u64) -> Result<Bounded, VentoyError> + 'a;
/// Whether a file or folder exists on the data partition (a directory lookup).
type Exists<'a> = dyn Fn(&str) -> bool + 'a;

/// Where `media update --image` writes a new bundle before renaming it to `keys.tar.gz`.
const TMP_KEYS: &str = "/.keypack-tmp-keys";

/// Largest `ventoy.json` read: Ventoy's own are a few KiB; a crafted one must not make keypack
/// allocate what the image asks for.
const MAX_JSON: u64 = 4 << 20;

/// Largest bundle read by `inspect` (a bundle of a host and a hundred users is a few tens of
/// KiB), and the most read for all bundles together.
const MAX_ARCHIVE: u64 = 16 << 20;
const MAX_ARCHIVES_TOTAL: u64 = 64 << 20;

/// Reads a Ventoy image without changing it.
pub fn inspect(path: &Path) -> Result<ImageInfo, VentoyError> {
    let file = File::open(path).map_err(|e| VentoyError::io("opening", path, e))?;
    let found = layout::check_disk(&file, path)?;
    let version = fat::check_efi(
        &file,
        path,
        found.efi.start * SECTOR,
        found.efi.sectors * SECTOR,
    )?;
    let mut info = ImageInfo {
        found: found.clone(),
        version,
        data_fs: Err(String::new()),
        files: Vec::new(),
        json: None,
        injection: Vec::new(),
        archives: Vec::new(),
        missing: Vec::new(),
        lost: None,
        problems: Vec::new(),
    };
    let data_off = found.data.start * SECTOR;
    let data_len = found.data.sectors * SECTOR;
    // Lost clusters: what an interrupted keys-only switch leaves behind, possibly the previous
    // bundle; `media update --image` zeroes and frees them.
    match fat::lost_clusters(&file, path, data_off) {
        Ok(Some(lost)) => {
            if lost.clusters > 0 {
                info.problems.push(format!(
                    "data partition: {} lost clusters ({} bytes) are marked used but belong to no \
                     file; they may hold a removed key (`keypack media update --image` zeroes \
                     and frees them)",
                    lost.clusters, lost.bytes
                ));
            }
            info.lost = Some(lost);
        }
        Ok(None) => {}
        Err(e) => info.problems.push(format!(
            "data partition: could not check for lost clusters: {e}"
        )),
    }
    let fs;
    let xfs;
    let reader: Box<FileReader<'_>>;
    let exists: Box<Exists<'_>>;
    if let Ok(f) = ReadFs::open(&file, path, data_off, data_len, "the data partition") {
        fs = f;
        info.data_fs = Ok(format!("{:?}", fs.fat_type()));
        info.files = fs.list(10_000);
        reader = Box::new(|p: &str, max: u64| fs.read(p, max));
        exists = Box::new(|p: &str| fs.exists(p));
    } else if let Some(x) = crate::exfat::ExfatRead::open(&file, data_off, data_len) {
        xfs = x;
        info.data_fs = Ok("exFAT".into());
        info.files = xfs.list(10_000);
        reader = Box::new(|p: &str, max: u64| Ok(xfs.read_bounded(p, max)));
        exists = Box::new(|p: &str| xfs.exists(p));
    } else {
        info.data_fs = Err("neither FAT nor exFAT (NTFS, ext4, …: mount it and look there)".into());
        return Ok(info);
    }
    let too_large = |name: &str, size: u64| format!("{name} is too large ({size} bytes), not read");
    match reader(JSON_PATH, MAX_JSON)? {
        Bounded::Missing => {}
        Bounded::TooLarge(size) => info.problems.push(too_large(JSON_PATH, size)),
        Bounded::Bytes(bytes) => {
            let parsed = json::parse(&bytes);
            if let Ok(v) = &parsed {
                info.injection = json::injection_entries(v);
            }
            info.json = Some(parsed);
        }
    }
    let mut checked: Vec<&str> = Vec::new();
    for (_, image, archive) in &info.injection {
        for p in [image.as_str(), archive.as_str()] {
            if (p != image || !image.contains('*')) && !checked.contains(&p) {
                checked.push(p);
                // Ventoy resolves only absolute paths from the data partition's root.
                if !p.starts_with('/') || !exists(p) {
                    info.missing.push(p.to_string());
                }
            }
        }
    }
    let mut seen = Vec::new();
    let mut budget = MAX_ARCHIVES_TOTAL;
    for (_, _, archive) in &info.injection {
        if !archive.starts_with('/') || seen.contains(archive) || info.missing.contains(archive) {
            continue;
        }
        seen.push(archive.clone());
        if budget == 0 {
            info.problems.push(format!(
                "{archive}: not read (the bundles before it filled the {MAX_ARCHIVES_TOTAL} \
                 bytes inspect reads)"
            ));
            continue;
        }
        match reader(archive, MAX_ARCHIVE.min(budget))? {
            Bounded::Missing => {}
            Bounded::TooLarge(size) => info.problems.push(too_large(archive, size)),
            Bounded::Bytes(bytes) => {
                budget -= bytes.len() as u64;
                info.archives.push((archive.clone(), bytes));
            }
        }
    }
    Ok(info)
}

/// Puts the ISO, the bundle and the merged `ventoy.json` on the FAT32 data partition of a
/// Ventoy image (or a block device opened as a file). Returns warnings for the user.
pub fn update_image(
    image: &Path,
    iso: &Path,
    iso_name: &str,
    archive: &[u8],
    settings: &json::Settings,
) -> Result<Vec<String>, VentoyError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| VentoyError::io("opening", image, e))?;
    let found = layout::check_disk(&file, image)?;
    let version = fat::check_efi(
        &file,
        image,
        found.efi.start * SECTOR,
        found.efi.sectors * SECTOR,
    )?;
    refuse_old(image, version.as_deref())?;
    crate::make_private(&file, image)?;
    let off = found.data.start * SECTOR;
    let len = found.data.sectors * SECTOR;
    let mut warnings = Vec::new();
    // A run killed while writing the bundle leaves it under the temp name; `fatfs` would free
    // its clusters with the bundle still in them when it removes the file below. Zeroed first.
    fat::wipe_file(&file, image, off, TMP_KEYS)?;
    let (json_bytes, archive_exists, json_exists) = {
        let fs = DataFs::open(&file, image, off, len)?;
        let existing = fs.read(JSON_PATH, MAX_JSON)?;
        let json_bytes = match &existing {
            Some(bytes) => {
                let (b, w) = settings.merge(bytes).map_err(|problem| VentoyError::Json {
                    path: image.to_path_buf(),
                    problem,
                })?;
                warnings.extend(w);
                b
            }
            None => settings.fresh(),
        };
        fs.remove(TMP_KEYS)?;
        // The ISO: temp name, then the switch of names.
        let tmp_iso = "/.keypack-tmp-iso";
        fs.remove(tmp_iso)?;
        let src = File::open(iso).map_err(|e| VentoyError::io("reading", iso, e))?;
        let iso_len = src
            .metadata()
            .map_err(|e| VentoyError::io("reading", iso, e))?
            .len();
        if iso_len > crate::FAT32_MAX_FILE {
            return Err(VentoyError::Iso {
                path: iso.to_path_buf(),
                problem: "is 4 GiB or larger, which FAT32 cannot hold".into(),
            });
        }
        let bar = crate::progress::Progress::bytes(iso_name, iso_len);
        fs.write_copy(tmp_iso, &src, iso_len, &bar)?;
        bar.finish();
        fs.remove(&format!("/{iso_name}"))?;
        fs.rename(tmp_iso, &format!("/{iso_name}"))?;
        let archive_exists = fs.file_exists(ARCHIVE_PATH);
        if !archive_exists {
            // An empty file under the temp name; the bundle goes into it through the switch
            // below, never through `fatfs` (which writes data before the FAT, so a crash could
            // leave the bundle in clusters marked free).
            fs.write_bytes(TMP_KEYS, b"")?;
        }
        fs.finish()?;
        (json_bytes, archive_exists, existing.is_some())
    };
    file.sync_all()
        .map_err(|e| VentoyError::io("syncing", image, e))?;
    if !archive_exists || !json_exists {
        if !archive_exists {
            if fat::switch_file(&file, image, off, TMP_KEYS, archive)?.is_none() {
                return Err(VentoyError::DataFs {
                    path: image.to_path_buf(),
                    problem: format!("{TMP_KEYS} vanished while being written"),
                });
            }
            fat::crash_point("tmp-keys");
        }
        let fs = DataFs::open(&file, image, off, len)?;
        if !archive_exists {
            fs.rename(TMP_KEYS, ARCHIVE_PATH)?;
        }
        let had_dir = fs.dir_exists("/ventoy");
        if !json_exists {
            fs.mkdir_p("/ventoy")?;
            fs.write_bytes("/ventoy/.keypack-tmp-json", &json_bytes)?;
            fs.rename("/ventoy/.keypack-tmp-json", JSON_PATH)?;
        }
        fs.finish()?;
        if !had_dir {
            fat::fix_dot_entries(&file, image, off, "/ventoy")?;
        }
        file.sync_all()
            .map_err(|e| VentoyError::io("syncing", image, e))?;
    }
    // Existing files: the crash-consistent switch.
    if archive_exists {
        fat::switch_file(&file, image, off, ARCHIVE_PATH, archive)?;
    }
    if json_exists {
        fat::switch_file(&file, image, off, JSON_PATH, &json_bytes)?;
    }
    // No separate wipe of lost clusters: every run switches at least one file (the bundle,
    // under its own name or the temp name), and each switch zeroes and frees them first.
    Ok(warnings)
}

/// What [`check_mount`] could establish about the disk behind a mount point.
#[derive(Debug, Clone)]
pub struct MountCheck {
    /// The partition device (`/dev/sdb1`).
    pub partition: PathBuf,
    /// The whole disk (`/dev/sdb`).
    pub disk: PathBuf,
    /// Whether the MBR signature (check 5) could be read and matched; `false` means it was not
    /// readable (no permission), not that it failed.
    pub mbr_checked: bool,
}

/// Refuses a stick whose partition 2 says (in `grub/grub.cfg`) it is older than
/// [`crate::blobs::MIN_VERSION`] (`ventoy.md` §2.6). A stick without a readable version passes:
/// the layout checks have already found Ventoy's partitions.
fn refuse_old(path: &Path, version: Option<&str>) -> Result<(), VentoyError> {
    match version.and_then(crate::blobs::too_old) {
        Some(problem) => Err(VentoyError::OldVentoy {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

fn sys_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Checks that `dir` is the mounted data partition of a Ventoy disk, from sysfs (no root
/// needed): partition 1 at sector 2048, partition 2 right after it with 65536 sectors and the
/// label `VTOYEFI`; and the MBR signature when the disk device is readable.
pub fn check_mount(dir: &Path) -> Result<MountCheck, VentoyError> {
    let not = |check: &'static str, problem: String| VentoyError::NotVentoy {
        path: dir.to_path_buf(),
        check,
        problem,
    };
    let meta = std::fs::metadata(dir).map_err(|e| VentoyError::io("opening", dir, e))?;
    if !meta.is_dir() {
        return Err(not("mount point", "is not a folder".into()));
    }
    let parent =
        std::fs::metadata(dir.join("..")).map_err(|e| VentoyError::io("opening", dir, e))?;
    if parent.dev() == meta.dev() && parent.ino() != meta.ino() {
        return Err(not(
            "mount point",
            "is not the root of a mounted filesystem (pass the folder the stick is mounted on)"
                .into(),
        ));
    }
    let dev = meta.dev();
    let (major, minor) = (rustix_major(dev), rustix_minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let part_dir = std::fs::canonicalize(&sys).map_err(|_| {
        not(
            "device",
            format!("the filesystem is not on a block device ({major}:{minor})"),
        )
    })?;
    if sys_u64(&part_dir.join("partition")) != Some(1) {
        return Err(not(
            "check 2 (partition 1)",
            "the filesystem is not on partition 1 of a disk".into(),
        ));
    }
    let start = sys_u64(&part_dir.join("start")).unwrap_or(0);
    let size = sys_u64(&part_dir.join("size")).unwrap_or(0);
    if start != layout::DATA_START {
        return Err(not(
            "check 2 (partition 1 start)",
            format!("partition 1 starts at sector {start}, not 2048"),
        ));
    }
    let disk_dir = part_dir
        .parent()
        .ok_or_else(|| not("device", "no parent disk in sysfs".into()))?
        .to_path_buf();
    let mut p2 = None;
    if let Ok(entries) = std::fs::read_dir(&disk_dir) {
        for e in entries.flatten() {
            if sys_u64(&e.path().join("partition")) == Some(2) {
                p2 = Some(e.path());
            }
        }
    }
    let p2 = p2.ok_or_else(|| {
        not(
            "check 3 (partition 2)",
            "the disk has no partition 2".into(),
        )
    })?;
    let p2_start = sys_u64(&p2.join("start")).unwrap_or(0);
    let p2_size = sys_u64(&p2.join("size")).unwrap_or(0);
    if p2_size != layout::EFI_SECTORS || p2_start != start + size {
        return Err(not(
            "check 3 (partition 2)",
            format!(
                "partition 2 is {p2_size} sectors at {p2_start}, not 65536 right after partition 1"
            ),
        ));
    }
    let p2_name = p2
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Check 4: read partition 2's FAT label (and check 1's ventoy.cpio) from its device when we
    // may (root, or the disk group); otherwise trust udev's /dev/disk/by-label. The device is
    // the better source: udev is absent in containers and minimal systems, and by-label names
    // only one of several VTOYEFI partitions.
    let p2_dev = PathBuf::from("/dev").join(&p2_name);
    match File::open(&p2_dev) {
        Ok(f) => {
            let version = fat::check_efi(&f, &p2_dev, 0, p2_size * SECTOR)?;
            refuse_old(&p2_dev, version.as_deref())?;
        }
        Err(_) => {
            let label_ok = std::fs::canonicalize("/dev/disk/by-label/VTOYEFI")
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                == Some(p2_name);
            if !label_ok {
                return Err(not(
                    "check 4 (VTOYEFI label)",
                    format!(
                        "partition 2 is not labelled VTOYEFI (per /dev/disk/by-label; {} is not readable)",
                        p2_dev.display()
                    ),
                ));
            }
        }
    }
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let disk = PathBuf::from("/dev").join(name(&disk_dir));
    let partition = PathBuf::from("/dev").join(name(&part_dir));
    let mbr_checked = match File::open(&disk) {
        Ok(f) => {
            layout::check_disk(&f, &disk)?;
            true
        }
        Err(_) => false,
    };
    Ok(MountCheck {
        partition,
        disk,
        mbr_checked,
    })
}

fn rustix_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xFFFF_F000) | ((dev >> 8) & 0xFFF)
}
fn rustix_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xFFFF_FF00) | (dev & 0xFF)
}

/// [`check_mount`], then [`update_dir`].
pub fn update_mount(
    dir: &Path,
    iso: &Path,
    iso_name: &str,
    archive: &[u8],
    settings: &json::Settings,
) -> Result<(MountCheck, Vec<String>), VentoyError> {
    let check = check_mount(dir)?;
    let warnings = update_dir(dir, iso, iso_name, archive, settings)?;
    Ok((check, warnings))
}

fn sync_dir(dir: &Path) -> Result<(), VentoyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VentoyError::io("syncing", dir, e))
}

/// Overwrites the whole of `f` with zeros, in place, and syncs.
///
/// Why: unlinking a file, or renaming another over it, frees its blocks with their bytes in
/// them; for a bundle that is a key that may have been removed since. On FAT and on ext4 or XFS
/// without data journalling an overwrite goes to the same blocks; a copy-on-write filesystem
/// (btrfs) writes new ones and keeps the old until reused, which this cannot help.
fn zero_file(f: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    f.sync_all()
}

/// Opens an existing regular file at `p` for zeroing, without following a symlink (a link
/// placed on the stick must not make keypack zero a file elsewhere).
fn open_to_zero(p: &Path) -> Option<File> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(p)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// Writes `name` in `dir` through a temp name and a rename. With `secret` (the bundle), a stale
/// temp file and the file the rename replaces are zeroed first (see [`zero_file`]).
fn write_via_temp(
    dir: &Path,
    name: &str,
    secret: bool,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), VentoyError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".keypack-tmp-{name}"));
    if secret && let Some(f) = open_to_zero(&tmp) {
        zero_file(&f).map_err(|e| VentoyError::io("zeroing", &tmp, e))?;
    }
    let _ = std::fs::remove_file(&tmp);
    // The old bundle, held open across the rename: zeroed after it (through this descriptor,
    // which keeps the replaced file's blocks until it is closed), so a crash in between leaves
    // the old bundle or the new one in place, never a zeroed one.
    let old = if secret { open_to_zero(&target) } else { None };
    let res = (|| {
        // 0600 where the filesystem has modes (an ext4 or XFS data partition); FAT has none.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(VentoyError::io("writing", target, e));
    }
    sync_dir(dir)?;
    if let Some(old) = old {
        zero_file(&old).map_err(|e| VentoyError::io("zeroing the replaced", &target, e))?;
    }
    Ok(())
}

/// Reads `p` if it is at most `max` bytes; a larger file is an `InvalidData` error, found from
/// its size before anything is read.
fn read_capped(p: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(p)?;
    let size = f.metadata()?.len();
    if size > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("too large ({size} bytes, at most {max} are read), not read"),
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes the ISO, the bundle and the merged `ventoy.json` into the root of a mounted data
/// partition, each through a temp name and a rename. Does not check that it is a Ventoy disk
/// (see [`check_mount`]).
pub fn update_dir(
    dir: &Path,
    iso: &Path,
    iso_name: &str,
    archive: &[u8],
    settings: &json::Settings,
) -> Result<Vec<String>, VentoyError> {
    let json_path = dir.join("ventoy/ventoy.json");
    let mut warnings = Vec::new();
    let json_bytes = match read_capped(&json_path, MAX_JSON) {
        Ok(bytes) => {
            let (b, w) = settings
                .merge(&bytes)
                .map_err(|problem| VentoyError::Json {
                    path: dir.to_path_buf(),
                    problem,
                })?;
            warnings.extend(w);
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => settings.fresh(),
        Err(e) => return Err(VentoyError::io("reading", json_path, e)),
    };
    write_via_temp(dir, iso_name, false, |f| {
        let src = File::open(iso)?;
        let len = src.metadata()?.len();
        let bar = crate::progress::Progress::bytes(iso_name, len);
        crate::partio::copy_range(&src, 0, f, 0, len, &bar)?;
        bar.finish();
        Ok(())
    })?;
    write_via_temp(dir, "keys.tar.gz", true, |f| f.write_all(archive))?;
    let vdir = dir.join("ventoy");
    std::fs::create_dir_all(&vdir).map_err(|e| VentoyError::io("creating", &vdir, e))?;
    write_via_temp(&vdir, "ventoy.json", false, |f| f.write_all(&json_bytes))?;
    Ok(warnings)
}
