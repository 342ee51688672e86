//! `keypack media update`: put a new ISO and bundle on an existing Ventoy stick (mounted) or
//! image, merging `ventoy.json`.
//!
//! The target is checked (read-only) before anything is decrypted, so a wrong disk costs no
//! YubiKey touch. Never writes below LBA 2048 or to partition 2: `--image` changes only files
//! on the FAT32 data partition, `--mount` only files in the mounted folder.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use keypack_media_ventoy::{self as ventoy, VentoyArgs};

use crate::cmd::KeyArgs;
use crate::cmd::iso::IsoSource;
use crate::keys;

/// `keypack media …` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum MediaCommand {
    /// Put a new ISO and bundle on an existing Ventoy stick or image.
    Update(Box<MediaUpdateArgs>),
    /// Zero the keys area of a keyed ISO (`keypack build --media iso`), in place.
    Reset(MediaResetArgs),
}

/// Flags of `keypack media reset`.
#[derive(Debug, clap::Args)]
pub struct MediaResetArgs {
    /// A keyed ISO written by `keypack build --media iso`
    #[arg(value_name = "ISO")]
    pub iso: PathBuf,
}

/// Flags of `keypack media update`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["mount", "image"])))]
pub struct MediaUpdateArgs {
    /// The mounted data partition of a Ventoy stick (e.g. after `udisksctl mount -b /dev/sdb1`)
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// A Ventoy disk image (or a block device you may write) with a FAT32 data partition
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub source: IsoSource,
    /// Seconds Ventoy's menu waits (VTOY_MENU_TIMEOUT; an existing value is kept)
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub menu_timeout: u32,
    /// Draw Ventoy's menu on the text console (theme.display_mode = CLI)
    #[arg(long)]
    pub text_menu: bool,
    /// Do not make our ISO Ventoy's default image
    #[arg(long)]
    pub no_default_image: bool,
    /// Name of the ISO on the stick (default: the ISO's own file name)
    #[arg(long, value_name = "NAME")]
    pub iso_name: Option<String>,
    #[command(flatten)]
    pub seal: super::seal::SealArgs,
    #[command(flatten)]
    pub burn: crate::cmd::burn::BurnArgs,
}

/// `keypack media …`.
pub fn media(cmd: MediaCommand) -> Result<ExitCode> {
    match cmd {
        MediaCommand::Update(args) => update(*args),
        MediaCommand::Reset(args) => reset(args),
    }
}

/// `keypack media reset ISO`: the area's bytes in use are overwritten with zeros and fsynced;
/// the ISO then boots without keys. Nothing else of the file changes.
fn reset(args: MediaResetArgs) -> Result<ExitCode> {
    let (area, used) = keypack_media_iso::reset(&args.iso)
        .with_context(|| format!("resetting {}", args.iso.display()))?;
    eprintln!(
        "reset {}: {} of the area's {} bytes (at offset {}) zeroed; it boots without keys now",
        args.iso.display(),
        used,
        area.len,
        area.offset
    );
    Ok(ExitCode::SUCCESS)
}

fn update(args: MediaUpdateArgs) -> Result<ExitCode> {
    let vargs = VentoyArgs {
        menu_timeout: args.menu_timeout,
        text_menu: args.text_menu,
        no_default_image: args.no_default_image,
        iso_name: args.iso_name.clone(),
        ..Default::default()
    };
    // Check the target before decrypting anything.
    if let Some(dir) = &args.mount {
        let check = ventoy::check_mount(dir)?;
        if !check.mbr_checked {
            eprintln!(
                "warning: could not read {} to check Ventoy's MBR signature (no permission); partitions and label were checked through sysfs",
                check.disk.display()
            );
        }
    }
    if let Some(image) = &args.image {
        // A regular image file gets keys: same private-folder rule as `pack -o`/`build -o`
        // (block devices are exempt).
        let is_file = std::fs::metadata(image)
            .with_context(|| format!("--image {}", image.display()))?
            .is_file();
        if is_file {
            keypack_plugin::output::check_private_output_folder(image)
                .with_context(|| format!("--image {}", image.display()))?;
        }
        ventoy::inspect(image)?;
    }
    let iso = args.source.resolve()?;
    let name = ventoy::iso_name(&vargs, &iso)?;
    let settings = ventoy::settings(&vargs, &name);
    let mut selection = args.keys.selection();
    args.burn.apply(&mut selection, None)?;
    let passphrase = args.seal.ask(args.keys.host.as_str())?;
    let bundle = keys::pack_bundle_sealed(&selection, passphrase)?;
    // Audit point (SECURITY.md): the bundle goes onto the stick's data partition only.
    let archive = bundle.expose_archive();
    let warnings = match (&args.mount, &args.image) {
        (Some(dir), _) => ventoy::update_dir(dir, &iso, &name, archive, &settings)?,
        (_, Some(image)) => ventoy::update_image(image, &iso, &name, archive, &settings)?,
        _ => unreachable!("clap requires --mount or --image"),
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let target = args
        .mount
        .as_ref()
        .or(args.image.as_ref())
        .context("no target")?;
    eprintln!(
        "updated {}: /{name}, /keys.tar.gz, /ventoy/ventoy.json",
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}
