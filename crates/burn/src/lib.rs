//! `keypack-burn`: burn after boot. Removes one bundle (`keys.tar.gz`) from a Ventoy disk's
//! data partition in place, after `load-keys` installed its keys.
//!
//! Where it sits: the target side, `load-keys` → **burn** → the raw Ventoy disk. In: the mark
//! token found in the initramfs (`keypack/burn-after-boot`, see
//! [`keypack_layout::BURN_MARK_PATH`]), the machine's disks. Out: console lines, and on the
//! one disk whose data partition holds an archive with the same token, that archive zeroed,
//! freed and unlinked, and its injection entries gone from `ventoy/ventoy.json`.
//!
//! Order (`decisions.md` "Sealed media and burn after boot", and the keys-only switch of
//! `plugins/ventoy/src/update.rs`): first `ventoy.json` is switched to a copy without
//! keypack's injection entry (new data into free clusters, one directory-entry write, old
//! clusters zeroed and freed), so Ventoy boots the stick normally; then the bundle's clusters
//! are overwritten with zeros, its directory entry removed, its clusters freed. Each step is
//! synced before the next. An interruption leaves the old bundle (still named by
//! `ventoy.json`, or no longer) or a zeroed one or none — at worst zeroed clusters that no file
//! reaches, which `fsck` and `keypack media update --image` free — never a broken file system.
//!
//! Does **not**: touch anything outside partition 1 (never below LBA 2048, never VTOYEFI),
//! burn an archive whose mark differs (another stick, another build), go through a mounted
//! file system or Ventoy's `/dev/mapper` device (the raw disk works on every Ventoy version,
//! and nothing mounts partition 1 in stage 1), wipe other copies (flash wear levelling may
//! keep old blocks: see SECURITY.md), or create files.
//!
//! Why its own FAT32/exFAT code: see [`fat32`] and [`exfat`]; `load-keys` is a static binary
//! and links this crate, so it has no clap, `fatfs` or plugin dependency.
#![forbid(unsafe_code)]

mod disk;
mod error;
mod exfat;
mod fat32;
pub mod json;
pub mod mark;
mod part;
pub mod scan;

use std::fs::{File, OpenOptions};
use std::path::Path;

use zeroize::Zeroizing;

pub use disk::{DataPartition, ventoy_data_partition};
pub use error::BurnError;
pub use part::Stop;

/// Path of Ventoy's configuration on the data partition.
pub const JSON_PATH: &str = "/ventoy/ventoy.json";
/// Largest `ventoy.json` read.
const MAX_JSON: u64 = 4 << 20;
/// Largest archive read to look for the mark.
const MAX_ARCHIVE: u64 = 64 << 20;

/// The steps of a burn, in order, as the test-only stop knob names them.
pub const STEPS: &[&str] = &[
    "json-chain",
    "json-data",
    "json-entry",
    "json-wipe",
    "zero",
    "unlink",
    "lost",
];

/// What was removed of one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The file's size.
    pub bytes: u64,
    /// Clusters zeroed and freed.
    pub clusters: u64,
    /// Bytes per cluster.
    pub cluster_size: u64,
}

/// A completed burn on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burned {
    /// The device or image.
    pub disk: String,
    /// `FAT32` or `exFAT`.
    pub fs: &'static str,
    /// Each archive removed, with what was zeroed.
    pub archives: Vec<(String, Removed)>,
    /// Injection entries taken out of `ventoy.json`.
    pub entries: usize,
}

enum Volume<'f> {
    Fat32(fat32::Fat32<'f>),
    Exfat(exfat::Exfat<'f>),
}

impl Volume<'_> {
    fn name(&self) -> &'static str {
        match self {
            Volume::Fat32(_) => "FAT32",
            Volume::Exfat(_) => "exFAT",
        }
    }
    fn read_file(&self, path: &str, max: u64) -> Result<Option<Zeroizing<Vec<u8>>>, BurnError> {
        match self {
            Volume::Fat32(v) => v.read_file(path, max),
            Volume::Exfat(v) => v.read_file(path, max),
        }
    }
    fn replace_file(&mut self, path: &str, bytes: &[u8], stop: Stop<'_>) -> Result<(), BurnError> {
        match self {
            Volume::Fat32(v) => v.replace_file(path, bytes, stop),
            Volume::Exfat(v) => v.replace_file(path, bytes, stop),
        }
    }
    /// Lost clusters wiped. exFAT: none to look for — keypack never switches files on an
    /// exFAT partition in place (`media update --mount` goes through the OS's driver).
    fn wipe_lost(&mut self, stop: Stop<'_>) -> Result<u64, BurnError> {
        match self {
            Volume::Fat32(v) => v.wipe_lost(stop),
            Volume::Exfat(_) => Ok(0),
        }
    }

    fn delete_file(&mut self, path: &str, stop: Stop<'_>) -> Result<Removed, BurnError> {
        match self {
            Volume::Fat32(v) => v.delete_file(path, stop),
            Volume::Exfat(v) => v.delete_file(path, stop),
        }
    }
}

/// Burns the bundle marked `token` on `disk` (opened read-write) if it is a Ventoy disk whose
/// data partition holds it. `Ok(None)`: not a Ventoy disk, or no archive with this mark.
pub fn burn_disk(
    disk: &File,
    shown: &str,
    token: &str,
    stop: Stop<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Burned>, BurnError> {
    let Some(data) = ventoy_data_partition(disk) else {
        return Ok(None);
    };
    let part = || part::Part::new(disk, data.start, data.len, shown);
    let mut vol = if let Some(v) = fat32::Fat32::open(part())? {
        Volume::Fat32(v)
    } else if let Some(v) = exfat::Exfat::open(part())? {
        Volume::Exfat(v)
    } else {
        log(&format!(
            "  {shown}: Ventoy disk ({}), data partition neither FAT32 nor exFAT: skipped",
            data.style
        ));
        return Ok(None);
    };
    let Some(json_bytes) = vol.read_file(JSON_PATH, MAX_JSON)? else {
        log(&format!(
            "  {shown}: Ventoy disk ({}), {} data partition, no {JSON_PATH}: nothing of ours",
            data.style,
            vol.name()
        ));
        return Ok(None);
    };
    let parsed = json::parse(&json_bytes).map_err(|problem| BurnError::Json {
        disk: shown.to_string(),
        problem: format!("is not valid JSON: {problem}"),
    })?;
    let mut ours: Vec<String> = Vec::new();
    let mut looked: Vec<String> = Vec::new();
    for (_, _, archive) in json::injection_entries(&parsed) {
        if !archive.starts_with('/') || looked.iter().any(|a| a.eq_ignore_ascii_case(&archive)) {
            continue;
        }
        looked.push(archive.clone());
        if let Some(bytes) = vol.read_file(&archive, MAX_ARCHIVE)?
            && mark::archive_token(&bytes).as_deref() == Some(token)
        {
            ours.push(archive);
        }
    }
    if ours.is_empty() {
        log(&format!(
            "  {shown}: Ventoy disk ({}), {} data partition, no bundle with this mark",
            data.style,
            vol.name()
        ));
        return Ok(None);
    }
    log(&format!(
        "  {shown}: Ventoy disk ({}), {} data partition: holds this bundle as {}",
        data.style,
        vol.name(),
        ours.join(", ")
    ));
    let (new_json, entries) =
        json::remove_injection(&json_bytes, &ours).map_err(|problem| BurnError::Json {
            disk: shown.to_string(),
            problem,
        })?;
    vol.replace_file(JSON_PATH, &new_json, stop)?;
    log(&format!(
        "  {shown}: took {entries} injection entr{} for it out of {JSON_PATH} (the stick boots on without keys)",
        if entries == 1 { "y" } else { "ies" }
    ));
    let mut archives = Vec::new();
    for archive in ours {
        let removed = vol.delete_file(&archive, stop)?;
        log(&format!(
            "  {shown}: overwrote {archive} with zeros ({} bytes, {} cluster{} of {} bytes), removed its directory entry and freed its clusters",
            removed.bytes,
            removed.clusters,
            if removed.clusters == 1 { "" } else { "s" },
            removed.cluster_size
        ));
        archives.push((archive, removed));
    }
    let lost = vol.wipe_lost(stop)?;
    if lost > 0 {
        log(&format!(
            "  {shown}: overwrote {lost} lost cluster{} with zeros and freed {} (an interrupted keys-only update leaves an earlier bundle there)",
            if lost == 1 { "" } else { "s" },
            if lost == 1 { "it" } else { "them" }
        ));
    }
    Ok(Some(Burned {
        disk: shown.to_string(),
        fs: vol.name(),
        archives,
        entries,
    }))
}

/// Looks at every disk under `sys_block` (nodes under `dev`) and burns the bundle marked
/// `token` wherever it is found. Errors on one disk are logged and the next disk is tried;
/// returns the completed burns and the number of disks that failed.
pub fn burn_machine(
    token: &str,
    sys_block: &Path,
    dev: &Path,
    stop: Stop<'_>,
    log: &mut dyn FnMut(&str),
) -> (Vec<Burned>, usize) {
    let mut burned = Vec::new();
    let mut failed = 0;
    for c in scan::candidates(sys_block, dev) {
        let shown = c.node.display().to_string();
        if c.skipped.is_some() {
            continue;
        }
        // Read-only first: most disks are not Ventoy disks and are never opened for writing.
        let is_ventoy = File::open(&c.node)
            .ok()
            .and_then(|f| ventoy_data_partition(&f))
            .is_some();
        if !is_ventoy {
            continue;
        }
        let result = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&c.node)
            .map_err(|e| BurnError::io("opening", &shown, e))
            .and_then(|f| burn_disk(&f, &shown, token, stop, log));
        match result {
            Ok(Some(b)) => burned.push(b),
            Ok(None) => {}
            Err(e @ BurnError::Stopped { .. }) => {
                log(&format!("  {shown}: {e}"));
                failed += 1;
                break;
            }
            Err(e) => {
                log(&format!("  {shown}: not burned: {e}"));
                failed += 1;
            }
        }
    }
    (burned, failed)
}
