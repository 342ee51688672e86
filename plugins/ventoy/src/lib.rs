//! Media plugin `ventoy`: a bootable Ventoy disk image holding the NixOS ISO, `keys.tar.gz` and
//! `ventoy/ventoy.json`, so that Ventoy unpacks the keys into the ISO's initramfs at boot.
//!
//! Where it sits: `bundle → **ventoy** → BootDescription (a disk image) → runner`. It gets the
//! sealed bundle and the ISO from the CLI and writes one file.
//! What it does: assembles the disk in a plain file as an ordinary user (no root, loop device
//! or mount): MBR (or GPT), Ventoy's boot code and core image, a FAT32 data partition at LBA
//! 2048 written with the `fatfs` crate (fixed clock and volume id, so a seed gives the same
//! bytes), and the VTOYEFI partition right after it. Keys-only rebuilds switch the bundle in
//! place (see [`fat::switch_file`]); `update_*` put a new ISO and bundle on an existing stick.
//! What it does not: decrypt anything, download Ventoy (the release folder comes from the
//! user or the nixpkgs `ventoy` package), change exFAT volumes in place (an ISO of 4 GiB or more
//! gets an exFAT data partition from [`exfat`], rebuilt in full every time), or boot the image.
//! Why a plain file and own layout code: Ventoy2Disk.sh needs root and a block device, and its
//! GRUB checks only five layout facts (`ventoy.md` §2.3), which [`layout`] writes and checks.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
pub mod blobs;
mod error;
pub mod exfat;
pub mod fat;
pub use keypack_burn::json;
pub mod layout;
pub mod partio;
pub mod progress;
mod unxz;
mod update;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use keypack_plugin::output::FileId;
use keypack_plugin::output::PendingFile;
use keypack_plugin::{
    BOOT_DESCRIPTION_VERSION, Boot, BootDescription, BuildInputs, Firmware, Medium, PluginError,
    SealedBundle,
};
use serde::{Deserialize, Serialize};

pub use args::VentoyArgs;
pub use blobs::Blobs;
pub use error::VentoyError;
pub use layout::{Found, Layout, Style};
pub use update::{
    ImageInfo, MountCheck, check_mount, inspect, update_dir, update_image, update_mount,
};

/// Path of the bundle on the data partition.
pub const ARCHIVE_PATH: &str = "/keys.tar.gz";
/// Path of Ventoy's configuration on the data partition.
pub const JSON_PATH: &str = "/ventoy/ventoy.json";
/// Largest file FAT32 can hold.
pub const FAT32_MAX_FILE: u64 = 0xFFFF_FFFF;
const NAME: &str = "ventoy";
/// Smallest data partition: FAT32 needs 65525 clusters (with 512-byte clusters, 32 MiB).
const MIN_DATA: u64 = 64 << 20;
const CACHE_FILE: &str = "ventoy-cache.json";

/// The Ventoy medium.
pub struct Ventoy;

impl Medium for Ventoy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "Ventoy disk image: the ISO plus keys.tar.gz, injected into its initramfs at boot (default)"
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        VentoyArgs::augment_args(cmd)
    }

    fn default_artifact_name(&self) -> &'static str {
        "ventoy.img"
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        let args = VentoyArgs::from_arg_matches(inputs.matches)
            .map_err(|e| PluginError::new(NAME, e.to_string()))?;
        let iso = inputs.iso.ok_or(VentoyError::NoIso).map_err(err)?;
        let opts = BuildOptions {
            args: &args,
            iso,
            output: inputs.output,
            state_dir: Some(inputs.state_dir),
            seed: inputs.seed,
            ignore_cache: inputs.ignore_cache,
        };
        // Audit point (SECURITY.md): the bundle bytes go onto the data partition, nowhere else.
        build_image(bundle.expose_archive(), &opts).map_err(err)?;
        Ok(BootDescription {
            version: BOOT_DESCRIPTION_VERSION,
            medium: NAME.into(),
            host: inputs.host.as_str().into(),
            boot: Boot::Disk {
                image: inputs.output.to_path_buf(),
            },
            firmware: Firmware::Uefi,
            host_public_key: bundle
                .manifest()
                .host_public_key()
                .unwrap_or_default()
                .to_string(),
        })
    }
}

fn err(e: VentoyError) -> PluginError {
    PluginError::new(NAME, e)
}

/// Everything [`build_image`] needs besides the bundle.
pub struct BuildOptions<'a> {
    /// The medium's flags.
    pub args: &'a VentoyArgs,
    /// The ISO.
    pub iso: &'a Path,
    /// The image to write.
    pub output: &'a Path,
    /// Where the keys-only-rebuild record lives (`None`: always a full build).
    pub state_dir: Option<&'a Path>,
    /// Seed for the disk identifiers.
    pub seed: Option<u64>,
    /// Ignore the record and build from scratch.
    pub ignore_cache: bool,
}

/// How [`build_image`] produced the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// A new image, written to a temp name and renamed.
    Full,
    /// The existing image, with the bundle (and ventoy.json if needed) switched in place.
    KeysOnly,
}

/// The ISO name on the data partition, checked.
pub fn iso_name(args: &VentoyArgs, iso: &Path) -> Result<String, VentoyError> {
    let (flag, name) = match &args.iso_name {
        Some(n) => ("--iso-name", n.clone()),
        None => (
            "--iso",
            iso.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    };
    let bad = |problem: &'static str| VentoyError::BadName {
        flag,
        value: name.clone(),
        problem,
    };
    if name.is_empty() || name.len() > 200 {
        return Err(bad("must be 1–200 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    {
        return Err(bad(
            "use only letters, digits and . _ - + (Ventoy matches the name byte for byte)",
        ));
    }
    if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".iso") {
        return Err(bad("must end in .iso and not start with a dot"));
    }
    Ok(name)
}

/// The JSON settings for these flags.
pub fn settings(args: &VentoyArgs, iso_name: &str) -> json::Settings {
    json::Settings {
        iso: format!("/{iso_name}"),
        archive: ARCHIVE_PATH.into(),
        menu_timeout: args.menu_timeout,
        default_image: !args.no_default_image,
        text_menu: args.text_menu,
    }
}

/// What the last full build of an image used; a keys-only rebuild needs all of it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    output: PathBuf,
    image: FileId,
    iso: FileId,
    layout_key: String,
}

fn layout_key(args: &VentoyArgs, blobs: &Blobs, name: &str) -> String {
    format!(
        "gpt={} exfat={} size={:?} name={name} ventoy={} {}",
        args.gpt,
        args.exfat,
        args.image_size,
        blobs.dir.display(),
        blobs.version
    )
}

fn read_record(state_dir: &Path) -> Option<Record> {
    let bytes = std::fs::read(state_dir.join(CACHE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_record(state_dir: &Path, rec: &Record) {
    if let Ok(bytes) = serde_json::to_vec_pretty(rec) {
        let _ = keypack_plugin::output::write_private_file(&state_dir.join(CACHE_FILE), &bytes);
    }
}

/// Refuses an output folder that others can list, and the Nix store.
pub fn check_output_dir(output: &Path) -> Result<(), VentoyError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let real =
        std::fs::canonicalize(&parent).map_err(|e| VentoyError::io("opening", &parent, e))?;
    if real.starts_with("/nix/store") {
        return Err(VentoyError::BadFlag {
            flag: "-o",
            problem: format!(
                "{} is in the Nix store, which every user can read",
                real.display()
            ),
        });
    }
    let mode = std::fs::metadata(&real)
        .map_err(|e| VentoyError::io("opening", &real, e))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 || mode & 0o1000 != 0 {
        return Err(VentoyError::BadFlag {
            flag: "-o",
            problem: format!(
                "{} can be listed by other users (mode {:04o}); the image holds private keys: use a private folder (chmod 700) or the default state folder",
                real.display(),
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// 64 bytes for [`layout::Ids`]: SplitMix64 of the seed, or the OS's randomness.
pub fn id_bytes(seed: Option<u64>) -> Result<[u8; 64], VentoyError> {
    let mut out = [0u8; 64];
    match seed {
        Some(seed) => {
            let mut x = seed;
            for chunk in out.chunks_exact_mut(8) {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes());
            }
        }
        None => {
            File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut out))
                .map_err(|e| VentoyError::io("reading", "/dev/urandom", e))?;
        }
    }
    Ok(out)
}

/// Writes at increasing offsets of a fresh (sparse, all-zero) file, dropping whatever lies
/// past `end` and skipping 4 KiB blocks that are all zero: they read as zero already, and not
/// writing them leaves less for the final fsync (the VTOYEFI image is mostly empty).
struct At<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const BLOCK: u64 = 4096;
        let room = self.end.saturating_sub(self.pos) as usize;
        let data = &buf[..room.min(buf.len())];
        // Pieces cut at 4 KiB boundaries of the file; runs of non-zero pieces are one write.
        let mut i = 0usize;
        let mut run: Option<usize> = None;
        while i < data.len() {
            let at = self.pos + i as u64;
            let piece = ((BLOCK - at % BLOCK) as usize).min(data.len() - i);
            let zero = data[i..i + piece].iter().all(|&b| b == 0);
            match (zero, run) {
                (false, None) => run = Some(i),
                (true, Some(r)) => {
                    self.file.write_all_at(&data[r..i], self.pos + r as u64)?;
                    run = None;
                }
                _ => {}
            }
            i += piece;
        }
        if let Some(r) = run {
            self.file.write_all_at(&data[r..], self.pos + r as u64)?;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds (or, when allowed, updates in place) the Ventoy image at `opts.output`.
pub fn build_image(archive: &[u8], opts: &BuildOptions<'_>) -> Result<BuildMode, VentoyError> {
    let args = opts.args;
    let name = iso_name(args, opts.iso)?;
    let iso_meta =
        std::fs::metadata(opts.iso).map_err(|e| VentoyError::io("reading", opts.iso, e))?;
    if !iso_meta.is_file() {
        return Err(VentoyError::Iso {
            path: opts.iso.to_path_buf(),
            problem: "is not a regular file".into(),
        });
    }
    check_output_dir(opts.output)?;
    let blobs = Blobs::find(args.ventoy_dir.as_deref())?;
    let settings = settings(args, &name);
    let json_bytes = settings.fresh();
    let key = layout_key(args, &blobs, &name);

    if !opts.ignore_cache
        && let Some(state) = opts.state_dir
        && let Some(rec) = read_record(state)
        && rec.output == opts.output
        && Some(&rec.image) == FileId::of(opts.output).as_ref()
        && Some(&rec.iso) == FileId::of(opts.iso).as_ref()
        && rec.layout_key == key
        && keys_only(opts.output, archive, &json_bytes)?
    {
        if let Some(image) = FileId::of(opts.output) {
            write_record(state, &Record { image, ..rec });
        }
        return Ok(BuildMode::KeysOnly);
    }

    full_build(archive, opts, &blobs, &name, &json_bytes)?;
    if let Some(state) = opts.state_dir
        && let (Some(image), Some(iso)) = (FileId::of(opts.output), FileId::of(opts.iso))
    {
        write_record(
            state,
            &Record {
                output: opts.output.to_path_buf(),
                image,
                iso,
                layout_key: key,
            },
        );
    }
    Ok(BuildMode::Full)
}

/// Shrinks the data partition by whole clusters (at most 1024) until the ISO's first byte lands
/// on a 4 KiB boundary of the disk, so `copy_file_range` copies whole pages (and can share
/// blocks on btrfs or XFS). Leaves the layout as it is when no such size is near.
fn align_iso(layout: Layout, content: u64) -> Result<Layout, VentoyError> {
    let cs = u64::from(fat::cluster_size_for(layout.data_len()));
    if !cs.is_multiple_of(4096) {
        return Ok(layout);
    }
    let step = cs / layout::SECTOR;
    for k in 0..1024u64 {
        let data_sectors = layout.data_sectors - k * step;
        let len = data_sectors * layout::SECTOR;
        if len < content + fat::overhead_for(len, fat::cluster_size_for(len)) {
            break;
        }
        if u64::from(fat::cluster_size_for(len)) != cs {
            break;
        }
        let off = fat::first_file_offset(len)
            .map_err(|e| VentoyError::io("planning", "the data partition", e))?;
        if (layout.data_offset() + off).is_multiple_of(4096) {
            let mut l = layout;
            l.data_sectors = data_sectors;
            l.efi_start = l.data_start + data_sectors;
            if l.style == Style::Mbr
                && k > 0
                && l.total_sectors == layout.efi_start + layout.efi_sectors
            {
                // No reserve at the end unless the user sized the disk.
                l.total_sectors = l.efi_start + l.efi_sectors;
            } else if l.style == Style::Gpt
                && k > 0
                && l.total_sectors
                    == layout.efi_start + layout.efi_sectors + 1 + layout::GPT_ENTRY_SECTORS
            {
                l.total_sectors = l.efi_start + l.efi_sectors + 1 + layout::GPT_ENTRY_SECTORS;
            }
            return Ok(l);
        }
    }
    Ok(layout)
}

/// The in-place path: returns `false` (caller does a full build) when the image does not look
/// like ours.
fn keys_only(output: &Path, archive: &[u8], json_bytes: &[u8]) -> Result<bool, VentoyError> {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(output) else {
        return Ok(false);
    };
    let Ok(found) = layout::check_disk(&file, output) else {
        return Ok(false);
    };
    // Keys go into this inode: make it private first (through the fd, not the path).
    make_private(&file, output)?;
    let off = found.data.start * layout::SECTOR;
    // ventoy.json first: it names the archive path, which does not change.
    if fat::switch_file(&file, output, off, JSON_PATH, json_bytes)?.is_none() {
        return Ok(false);
    }
    Ok(fat::switch_file(&file, output, off, ARCHIVE_PATH, archive)?.is_some())
}

/// Before keys go into an existing regular file: mode 0600 through the open fd (fchmod), so
/// an image that was 0644 is not left readable by other users. Block devices are left alone.
pub fn make_private(file: &File, path: &Path) -> Result<(), VentoyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = file
        .metadata()
        .map_err(|e| VentoyError::io("reading", path, e))?;
    if meta.is_file() && meta.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| VentoyError::io("setting the mode of", path, e))?;
    }
    Ok(())
}

fn full_build(
    archive: &[u8],
    opts: &BuildOptions<'_>,
    blobs: &Blobs,
    name: &str,
    json_bytes: &[u8],
) -> Result<(), VentoyError> {
    let out = opts.output;
    let style = if opts.args.gpt {
        Style::Gpt
    } else {
        Style::Mbr
    };
    let iso_len = std::fs::metadata(opts.iso)
        .map_err(|e| VentoyError::io("reading", opts.iso, e))?
        .len();
    let content = iso_len + archive.len() as u64 + json_bytes.len() as u64;
    let want = (content + 32 * 1024 * 1024).max(MIN_DATA);
    let cs = fat::cluster_size_for(want);
    let want = want + fat::overhead_for(want, cs);
    let layout = match opts.args.image_size {
        Some(size) => {
            let l = Layout::for_disk(style, size).ok_or_else(|| VentoyError::BadFlag {
                flag: "--image-size",
                problem: "smaller than Ventoy's own 33 MiB".into(),
            })?;
            // FAT32 needs at least 65525 clusters: below 64 MiB the volume would be FAT16.
            if l.data_len() < MIN_DATA
                || l.data_len()
                    < content
                        + fat::overhead_for(l.data_len(), fat::cluster_size_for(l.data_len()))
                        + (1 << 20)
            {
                return Err(VentoyError::BadFlag {
                    flag: "--image-size",
                    problem: format!(
                        "too small for the ISO and the bundle: need at least {} MiB",
                        (want + (layout::DATA_START + layout::EFI_SECTORS) * 512) >> 20
                    ),
                });
            }
            l
        }
        None => Layout::for_data(style, want),
    };
    let exfat = opts.args.exfat || iso_len > FAT32_MAX_FILE;
    let mut layout = if exfat {
        layout
    } else {
        align_iso(layout, content)?
    };
    if exfat {
        layout.data_type = 0x07;
    }
    if layout.total_sectors > u64::from(u32::MAX) && style == Style::Mbr {
        return Err(VentoyError::BadFlag {
            flag: "--image-size",
            problem: "MBR disks are limited to 2 TiB; use --gpt".into(),
        });
    }
    let ids = layout::Ids::from_bytes(&id_bytes(opts.seed)?);

    let mut pending = PendingFile::create(out).map_err(|e| VentoyError::io("creating", out, e))?;
    let tmp = pending.temp_path().to_path_buf();
    let wr = |e| VentoyError::io("writing", &tmp, e);
    let file = pending.file();
    file.set_len(layout.total_len()).map_err(wr)?;
    file.write_all_at(&layout::mbr_sector(&layout, &blobs.boot_img, &ids), 0)
        .map_err(wr)?;
    match style {
        Style::Mbr => {
            blobs.write_core(&mut At {
                file,
                pos: 512,
                end: layout::DATA_START * 512,
            })?;
        }
        Style::Gpt => {
            let start = 34 * 512;
            blobs.write_core(&mut At {
                file,
                pos: start,
                end: start + layout::GPT_CORE_SECTORS * 512,
            })?;
            // Where GRUB's diskboot finds the rest of core.img (ventoy_fill_gpt).
            file.write_all_at(&[0x23], 17908).map_err(wr)?;
            let entries = layout::gpt_entries(&layout, &ids);
            let last = layout.total_sectors - 1;
            file.write_all_at(&layout::gpt_header(&layout, &ids, &entries, true), 512)
                .map_err(wr)?;
            file.write_all_at(&entries, 1024).map_err(wr)?;
            file.write_all_at(&entries, (last - layout::GPT_ENTRY_SECTORS) * 512)
                .map_err(wr)?;
            file.write_all_at(
                &layout::gpt_header(&layout, &ids, &entries, false),
                last * 512,
            )
            .map_err(wr)?;
        }
    }
    // Partition 2 (xz decoding: CPU) is written by a second thread while this one fills the
    // data partition (the ISO copy: the kernel and the disk), then checked: Ventoy's layout
    // checks, and its grub.cfg's VENTOY_VERSION against `ventoy/version` (a folder mixing two
    // releases is refused here, at no extra decoding). Its error wins over the data
    // partition's, and either leaves no file (the PendingFile is dropped).
    let file: &File = file;
    let efi_off = layout.efi_offset();
    std::thread::scope(|scope| {
        let efi = scope.spawn(|| {
            // The decoder's dictionary past its 1 MiB window is the partition written so far
            // (At writes through at once; the zero blocks it skips read as zero in this fresh
            // file), so memory stays flat for any release's dictionary size.
            blobs.write_efi(
                &mut At {
                    file,
                    pos: efi_off,
                    end: efi_off + layout::EFI_LEN,
                },
                &|pos, buf| file.read_exact_at(buf, efi_off + pos),
            )?;
            let grub = fat::check_efi(file, &tmp, efi_off, layout::EFI_LEN).map_err(|e| {
                VentoyError::Blob {
                    path: blobs.efi_xz.clone(),
                    problem: format!("is not a usable VTOYEFI partition: {e}"),
                }
            })?;
            blobs.check_grub_version(grub.as_deref())
        });
        let data = write_data_partition(
            archive, opts, name, json_bytes, file, &tmp, &layout, &ids, exfat, iso_len,
        );
        efi.join().map_err(|_| {
            VentoyError::io(
                "writing",
                &tmp,
                std::io::Error::other("the VTOYEFI writer thread panicked"),
            )
        })??;
        data
    })?;
    // Replacing an image frees the old one's blocks inside rename(2) (0.5–0.8 s for 1 GiB on
    // ext4 with `discard`; `cp` over an existing file pays the same in open(O_TRUNC)). Handing
    // that to a detached process was measured and dropped: it leaves a hidden copy of the old
    // image (old keys) beside the new one for a moment after the command returns.
    pending
        .commit()
        .map_err(|e| VentoyError::io("renaming the image to", out, e))
}

/// Partition 1: FAT32 (or exFAT) with the ISO, `ventoy.json` and the bundle.
#[allow(clippy::too_many_arguments)]
fn write_data_partition(
    archive: &[u8],
    opts: &BuildOptions<'_>,
    name: &str,
    json_bytes: &[u8],
    file: &File,
    tmp: &Path,
    layout: &Layout,
    ids: &layout::Ids,
    exfat: bool,
    iso_len: u64,
) -> Result<(), VentoyError> {
    // Only the ISO's name (checked by `iso_name`: letters, digits, `._-+`) is shown.
    let bar = progress::Progress::bytes(name, iso_len);
    if exfat {
        let iso = File::open(opts.iso).map_err(|e| VentoyError::io("reading", opts.iso, e))?;
        exfat::write_volume(
            file,
            tmp,
            layout.data_offset(),
            layout.data_len(),
            layout.data_start,
            ids.volume_id,
            &[
                (&format!("/{name}"), exfat::Content::File(&iso, iso_len)),
                (JSON_PATH, exfat::Content::Bytes(json_bytes)),
                (ARCHIVE_PATH, exfat::Content::Bytes(archive)),
            ],
            &bar,
        )?;
        bar.finish();
        let now = iso
            .metadata()
            .map_err(|e| VentoyError::io("reading", opts.iso, e))?
            .len();
        if now != iso_len {
            return Err(VentoyError::Iso {
                path: opts.iso.to_path_buf(),
                problem: "changed size while being copied".into(),
            });
        }
    } else {
        fat::format_data(
            file,
            tmp,
            layout.data_offset(),
            layout.data_len(),
            ids.volume_id,
        )?;
        {
            let fs = fat::DataFs::open(file, tmp, layout.data_offset(), layout.data_len())?;
            let iso = File::open(opts.iso).map_err(|e| VentoyError::io("reading", opts.iso, e))?;
            fs.write_copy(&format!("/{name}"), &iso, iso_len, &bar)?;
            bar.finish();
            let now = iso
                .metadata()
                .map_err(|e| VentoyError::io("reading", opts.iso, e))?
                .len();
            if now != iso_len {
                return Err(VentoyError::Iso {
                    path: opts.iso.to_path_buf(),
                    problem: "changed size while being copied".into(),
                });
            }
            fs.mkdir_p("/ventoy")?;
            fs.write_bytes(JSON_PATH, json_bytes)?;
            fs.write_bytes(ARCHIVE_PATH, archive)?;
            fs.finish()?;
        }
        fat::fix_dot_entries(file, tmp, layout.data_offset(), "/ventoy")?;
    }
    Ok(())
}
