//! Media plugin `iso`: the keyed ISO. A copy of a NixOS ISO whose keys area, the zero-filled
//! file `/keypack/keys.img` that every boot entry loads as its last initrd, holds the keys as
//! the gzip newc cpio the initrd medium makes.
//!
//! Position on the data path: `SealedBundle → **iso medium** → HOST.iso + boot description
//! (a CD-ROM boot) → runner`. For machines where nothing can inject an archive at boot: a BMC's
//! virtual media, a cloud provider's custom-ISO slot, a stick written with `dd`. The idea is
//! coreos-installer's embed area (`iso ignition embed`): the ISO is built once with room for
//! the keys, and keypack fills that room in a copy, without rebuilding or re-mastering it.
//!
//! The convention (also in this crate's README and in `nix/iso-keys.nix`, which makes the
//! flake's ISO follow it): [`area::AREA_PATH`] is one contiguous extent, 1 MiB by default, a
//! multiple of 2 KiB, zero-filled in the ISO as built; GRUB (UEFI) loads it with `initrd …
//! /keypack/keys.img` and isolinux (BIOS) with `initrd=…,/keypack/keys.img`. The kernel's
//! initramfs unpacker skips zeros between and after archives, so an unfilled ISO boots as
//! before, without keys, and a filled one unpacks the keys last (they win).
//!
//! Does **not** change the ISO's structure, boot loaders or any byte outside the area; does not
//! build the ISO (`nix build`, or `--iso FILE`); does not parse boot loader configurations.
//!
//! Why the area is located by parsing ISO 9660 (the initrd medium's reader, [`area`]) rather
//! than by a magic string: the directory record is what the boot loaders use too, so the range
//! written is exactly the file they load.
//!
//! Builds are in-process now; everything the medium does is behind [`IsoMedium::build`] with
//! plain inputs, so it ports unchanged to the out-of-process plugin protocol.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod area;
mod args;
mod error;
pub mod inspect;
pub mod write;

use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use keypack_plugin::output::FileId;
use keypack_plugin::{
    BOOT_DESCRIPTION_VERSION, Boot, BootDescription, BuildInputs, Firmware, HostName, Medium,
    PluginError, SealedBundle,
};
use serde::{Deserialize, Serialize};

pub use area::{AREA_PATH, Area};
pub use args::{CdFirmware, IsoArgs};
pub use error::{ENABLE_OPTION, IsoMediumError, SIZE_OPTION};
pub use inspect::{AreaEntry, AreaReport, AreaState};

/// The plugin's name, the value of `--media`.
pub const NAME: &str = "iso";
/// What the last full build used, in the host's state folder.
const CACHE_FILE: &str = "iso-cache.json";

/// The keyed ISO medium.
pub struct IsoMedium;

impl Medium for IsoMedium {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "a copy of the ISO with the keys in its area /keypack/keys.img, for virtual media, cloud ISOs and dd"
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        IsoArgs::augment_args(cmd)
    }

    fn default_artifact_name(&self) -> &'static str {
        "keyed.iso"
    }

    fn artifact_name(&self, host: &HostName) -> String {
        format!("{host}.iso")
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        let args =
            IsoArgs::from_arg_matches(inputs.matches).map_err(|e| PluginError::new(NAME, e))?;
        let iso = inputs
            .iso
            .ok_or(IsoMediumError::NoIso)
            .map_err(|e| PluginError::new(NAME, e))?;
        let opts = BuildOptions {
            iso,
            output: inputs.output,
            state_dir: Some(inputs.state_dir),
            ignore_cache: inputs.ignore_cache,
            firmware: args.iso_firmware,
        };
        build(bundle, inputs.host.as_str(), &opts)
            .map(|(desc, _)| desc)
            .map_err(|e| PluginError::new(NAME, e))
    }
}

/// Inputs of [`build`].
pub struct BuildOptions<'a> {
    /// The ISO to copy (with an empty or filled area).
    pub iso: &'a Path,
    /// The keyed ISO to write.
    pub output: &'a Path,
    /// Where the record of the last full build lives (enables keys-only rebuilds).
    pub state_dir: Option<&'a Path>,
    /// Always copy the whole ISO.
    pub ignore_cache: bool,
    /// Firmware the description asks for.
    pub firmware: CdFirmware,
}

/// How a build wrote the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// A fresh copy of the ISO, renamed into place.
    Full,
    /// Only the area of the existing output was rewritten.
    KeysOnly,
}

/// What the last full build wrote; a keys-only rebuild needs all of it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    output: PathBuf,
    output_id: FileId,
    iso: PathBuf,
    iso_id: FileId,
    area: Area,
}

fn read_record(state_dir: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(state_dir.join(CACHE_FILE)).ok()?).ok()
}

/// Writes the record (no secret in it) under a temp name and renames it, without fsync: a
/// record lost in a crash only costs the next build a full copy, and a stale one never matches
/// (every write of the output changes its mtime), so it need not be durable, and two fsyncs
/// would be most of a keys-only rebuild's time.
fn write_record(state_dir: &Path, rec: &Record) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(bytes) = serde_json::to_vec_pretty(rec) else {
        return;
    };
    let temp = state_dir.join(format!(
        "{}{CACHE_FILE}-{}",
        keypack_plugin::output::TEMP_PREFIX,
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&temp, state_dir.join(CACHE_FILE)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// Builds the keyed ISO at `opts.output`: in place when the last full build's record shows
/// neither the ISO nor the output changed since, else as a fresh copy. Checks the area and the
/// size before writing anything.
pub fn build(
    bundle: &SealedBundle,
    host: &str,
    opts: &BuildOptions<'_>,
) -> Result<(BootDescription, BuildMode), IsoMediumError> {
    let host_public_key = bundle
        .manifest()
        .host_public_key()
        .ok_or(IsoMediumError::NoHostKey)?
        .to_owned();
    let iso =
        std::path::absolute(opts.iso).map_err(|e| IsoMediumError::io("reading", opts.iso, e))?;
    let output = std::path::absolute(opts.output)
        .map_err(|e| IsoMediumError::io("writing", opts.output, e))?;
    let area = area::locate(&iso)?;
    let gz = keypack_media_initrd::keys_cpio_gz(bundle).map_err(IsoMediumError::Cpio)?;
    if gz.len() as u64 > area.len {
        return Err(IsoMediumError::TooLarge {
            iso,
            needed: gz.len() as u64,
            room: area.len,
        });
    }
    let iso_id = FileId::of(&iso);
    let cached = (!opts.ignore_cache)
        .then(|| opts.state_dir.and_then(read_record))
        .flatten()
        .filter(|rec| {
            rec.output == output
                && rec.iso == iso
                && Some(&rec.iso_id) == iso_id.as_ref()
                && Some(&rec.output_id) == FileId::of(&output).as_ref()
                && rec.area == area
                && area::locate(&output).ok() == Some(area)
        });
    let mode = match cached {
        Some(_) => {
            write::in_place(&output, area, &gz)?;
            BuildMode::KeysOnly
        }
        None => {
            write::full(&iso, area, &gz, &output)?;
            BuildMode::Full
        }
    };
    if let (Some(state), Some(output_id), Some(iso_id)) =
        (opts.state_dir, FileId::of(&output), iso_id)
    {
        write_record(
            state,
            &Record {
                output: output.clone(),
                output_id,
                iso,
                iso_id,
                area,
            },
        );
    }
    let firmware = match opts.firmware {
        CdFirmware::Any => Firmware::Any,
        CdFirmware::Uefi => Firmware::Uefi,
        CdFirmware::Bios => Firmware::Bios,
    };
    Ok((
        BootDescription {
            version: BOOT_DESCRIPTION_VERSION,
            medium: NAME.to_owned(),
            host: host.to_owned(),
            boot: Boot::Cdrom { image: output },
            firmware,
            host_public_key,
        },
        mode,
    ))
}

/// Zeroes the area of the keyed ISO at `path` in place (`keypack media reset`); returns the
/// area and how many bytes had been in use.
pub fn reset(path: &Path) -> Result<(Area, u64), IsoMediumError> {
    let area = area::locate(path)?;
    let used = write::reset(path, area)?;
    Ok((area, used))
}

/// Whether `path` looks like an ISO 9660 image (`CD001` at sector 16), for `keypack inspect`.
pub fn is_iso9660(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 16 * 2048 + 1))
        .is_ok()
        && &magic == b"CD001"
}

/// The sealed blob (`keypack/sealed.age`) in the area of the keyed ISO at `path`, or `None` for
/// an unsealed or empty area. `keypack run` checks the passphrase against it before it boots.
pub fn sealed_blob(path: &Path) -> Result<Option<Vec<u8>>, IsoMediumError> {
    let area = area::locate(path)?;
    let file = std::fs::File::open(path).map_err(|e| IsoMediumError::io("reading", path, e))?;
    let bytes =
        write::read_area(&file, area).map_err(|e| IsoMediumError::io("reading", path, e))?;
    keypack_media_initrd::sealed_blob_in_cpio(&bytes[..])
        .map_err(|e| IsoMediumError::io("reading the area of", path, e))
}
