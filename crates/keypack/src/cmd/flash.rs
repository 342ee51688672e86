//! `keypack flash -H HOST DEVICE`: writes the host's last build (its Ventoy disk image) onto a
//! USB stick, after the checks of `keypack-flash` and the user typing the device's name.
//!
//! Order matters: every refusal (not a whole disk, mounted, swap, held, fixed without
//! `--allow-fixed`, too small, no terminal without `--yes`) comes before the device is opened
//! for writing, so a refused flash writes nothing. The image comes from `--image` or from the
//! host's `boot.json` (`keypack build` writes it), never from a guess.
//!
//! Does not build: run `keypack build -H HOST` first. Never prints key bytes: the image's name
//! and the device's sysfs strings only (escaped, a stick's model string is not trusted).
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use keypack_flash::device::{DevNum, DeviceInfo};
use keypack_flash::{FlashError, Image, Phase, Reread, safety};
use keypack_layout::HostName;
use keypack_plugin::Boot;
use keypack_plugin::progress::Progress;

use crate::cmd::escape::field;
use crate::state;

/// Flags of `keypack flash`.
#[derive(Debug, clap::Args)]
pub struct FlashArgs {
    /// Host whose last build to write
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: HostName,
    /// The whole block device of the stick (`/dev/sdb`, never a partition such as `/dev/sdb1`)
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,
    /// Do not ask for the device's name before writing (needed without a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Also write to a fixed disk (neither removable nor on USB: an internal disk, a loop device)
    #[arg(long)]
    pub allow_fixed: bool,
    /// The disk image to write [default: the last build's, from the host's boot.json]
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Write nothing: check that the device holds what a flash would write (the same regions,
    /// compared byte for byte); exit 1 naming the first differing region. Asks nothing (`--yes`
    /// is accepted and changes nothing)
    #[arg(long, conflicts_with = "keys_only")]
    pub verify_only: bool,
    /// Only switch the image's bundle (and ventoy.json) onto a stick that already holds the
    /// same build's ISO, crash-consistent, as a keys-only rebuild does; refused otherwise
    #[arg(long)]
    pub keys_only: bool,
    /// Progress as JSON lines on stdout instead of a bar, one object per line: `phase`
    /// (`write`, `sync`, `verify`), `bytes_done` (from 0 in each phase), `bytes_total`,
    /// `bytes_per_second` (the phase's average so far); at most two lines a second, and one at
    /// each phase's end. Then, as the last line, one JSON document: `device`, `image`, `image_bytes`,
    /// `written_bytes`, `data_bytes`, `zero_bytes`, `regions_verified`, `partition_table_reread`
    /// (with --verify-only: `device`, `image`, `image_bytes`, `equal`, `regions_verified`,
    /// `compared_bytes`; with --keys-only: `device`, `image`, `keys_only`, `bundle_bytes`,
    /// `json_bytes`, `same_files`)
    #[arg(long)]
    pub json: bool,
}

/// The image to write: `--image`, or the disk of the last build's boot description.
fn image_of(args: &FlashArgs) -> Result<PathBuf> {
    if let Some(image) = &args.image {
        return Ok(image.clone());
    }
    let dir = state::state_root()?.join(args.host.as_str());
    let desc = keypack_plugin::runner::read_boot_description(&dir)?;
    if desc.host != args.host.as_str() {
        bail!(
            "{}: the boot description is for host {}, not {}",
            dir.join(keypack_plugin::runner::BOOT_DESCRIPTION_FILE)
                .display(),
            desc.host,
            args.host
        );
    }
    match desc.boot {
        Boot::Disk { image } => Ok(image),
        Boot::Cdrom { image } => bail!(
            "the last build of {} is a keyed ISO ({}); pass it as --image to write it to a stick",
            args.host,
            image.display()
        ),
        Boot::Kernel { .. } => bail!(
            "the last build of {} ({} medium) is a kernel and initrds, not a disk image; build a \
             Ventoy image (`keypack build -H {} --media ventoy`) or pass --image",
            args.host,
            desc.medium,
            args.host
        ),
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

fn describe(device: &Path, info: &DeviceInfo) -> String {
    let or_none = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            field(s)
        }
    };
    let mut s = format!(
        "{} ({}, {}): {}\n  vendor {}, model {}, serial {}\n  transport {}, {}\n",
        device.display(),
        field(&info.name),
        info.dev,
        bytes(info.size),
        or_none(&info.vendor),
        or_none(&info.model),
        or_none(&info.serial),
        info.transport,
        if info.removable {
            "removable"
        } else {
            "not removable"
        },
    );
    if info.partitions.is_empty() {
        s.push_str("  partitions: none\n");
    }
    for p in &info.partitions {
        s.push_str(&format!(
            "  partition {} ({}): {}\n",
            field(&p.name),
            p.dev,
            bytes(p.size)
        ));
    }
    s
}

/// Asks the user to type the device's name (kernel name or the path given).
fn confirm(device: &Path, info: &DeviceInfo, what: &str) -> Result<(), FlashError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(FlashError::NoTerminal {
            device: device.to_path_buf(),
        });
    }
    eprint!(
        "{what} {}; type its name ({}) to write: ",
        device.display(),
        field(&info.name)
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        // A failed read of the answer is a "no".
        .map_err(|_| FlashError::Declined {
            device: device.to_path_buf(),
        })?;
    let typed = line.trim();
    if typed == info.name || Path::new(typed) == device {
        Ok(())
    } else {
        Err(FlashError::Declined {
            device: device.to_path_buf(),
        })
    }
}

/// `keypack flash --verify-only`: the same checks as a flash (a mounted stick is refused too:
/// its file system may change blocks while they are compared), no confirmation (nothing is
/// written; the device is opened read-only).
fn verify_only(
    args: &FlashArgs,
    info: &DeviceInfo,
    image: &Path,
    img: &Image,
    dev: DevNum,
) -> Result<ExitCode> {
    let device = &args.device;
    let steps = Steps::new(args, info, img);
    let v = keypack_flash::verify_only(img, device, dev, &|phase, n| steps.step(phase, n))?;
    steps.progress.finish();
    eprintln!(
        "verified {}: it holds the {}-byte image {} ({} regions, {} bytes compared)",
        device.display(),
        v.image_len,
        image.display(),
        v.regions,
        v.bytes
    );
    if args.json {
        let doc = serde_json::json!({
            "device": device,
            "image": image,
            "image_bytes": v.image_len,
            "equal": true,
            "regions_verified": v.regions,
            "compared_bytes": v.bytes,
        });
        println!("{doc}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `keypack flash --keys-only`, after the same checks and confirmation as a flash.
fn keys_only(args: &FlashArgs, image: &Path, img: &Image, dev: DevNum) -> Result<ExitCode> {
    let device = &args.device;
    let k = keypack_flash::flash_keys_only(img, device, dev)?;
    eprintln!(
        "switched the bundle ({} bytes) and ventoy.json ({} bytes) of {} onto {}; unchanged (same \
         build): {}",
        k.bundle_bytes,
        k.json_bytes,
        image.display(),
        device.display(),
        k.same_files
            .iter()
            .map(|f| field(f))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.json {
        let doc = serde_json::json!({
            "device": device,
            "image": image,
            "keys_only": true,
            "bundle_bytes": k.bundle_bytes,
            "json_bytes": k.json_bytes,
            "same_files": k.same_files,
        });
        println!("{doc}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress of a flash, fed by `keypack_flash`'s `(phase, bytes)` callback: JSON lines
/// with `--json`, else a bar on a terminal (labelled with the device's escaped kernel name),
/// else nothing.
struct Steps {
    progress: Progress,
    current: std::cell::Cell<Option<Phase>>,
    planned: u64,
}

impl Steps {
    fn new(args: &FlashArgs, info: &DeviceInfo, img: &Image) -> Steps {
        let progress = if args.json {
            Progress::json_lines()
        } else {
            Progress::bar(&field(&info.name))
        };
        Steps {
            progress,
            current: std::cell::Cell::new(None),
            planned: img.planned_bytes(),
        }
    }

    fn step(&self, phase: Phase, n: u64) {
        if self.current.get() != Some(phase) {
            self.current.set(Some(phase));
            let total = match phase {
                Phase::Sync => 0,
                Phase::Write | Phase::Verify => self.planned,
            };
            self.progress.phase(phase.as_str(), total);
        }
        self.progress.inc(n);
    }
}

/// `keypack flash`.
pub fn flash(args: FlashArgs) -> Result<ExitCode> {
    let image = image_of(&args)?;
    // Opened and planned once: the progress bar's length and the write share the plan.
    let img = Image::open(&image)?;
    let device = &args.device;
    let dev = DevNum::of(device)?;
    let info = keypack_flash::device::read(Path::new("/sys"), dev)?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // No /proc/swaps: no swap support in the kernel, so nothing is swap.
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let policy = safety::Policy {
        allow_fixed: args.allow_fixed,
        image_len: img.size(),
    };
    safety::check(device, &info, &mountinfo, &swaps, policy)?;
    eprint!("{}", describe(device, &info));
    if args.verify_only {
        return verify_only(&args, &info, &image, &img, dev);
    }
    if args.keys_only {
        if !args.yes {
            confirm(device, &info, "the keys bundle will be replaced on")?;
        }
        return keys_only(&args, &image, &img, dev);
    }
    if !args.yes {
        confirm(device, &info, "everything will be lost on")?;
    }
    let steps = Steps::new(&args, &info, &img);
    let report = keypack_flash::flash(&img, device, dev, &|phase, n| steps.step(phase, n))?;
    steps.progress.finish();
    let w = report.written;
    eprintln!(
        "wrote {} bytes ({} data, {} zeros) of the {}-byte image {} to {}; verified {} regions",
        w.total(),
        w.data_bytes,
        w.zero_bytes,
        report.image_len,
        image.display(),
        device.display(),
        w.regions
    );
    if args.json {
        let doc = serde_json::json!({
            "device": device,
            "image": image,
            "image_bytes": report.image_len,
            "written_bytes": w.total(),
            "data_bytes": w.data_bytes,
            "zero_bytes": w.zero_bytes,
            "regions_verified": w.regions,
            "partition_table_reread": report.reread == Reread::Done,
        });
        println!("{doc}");
    }
    match report.reread {
        Reread::Done => eprintln!("the kernel re-read the partition table"),
        Reread::NotSupported => eprintln!(
            "the kernel did not re-read the partition table (EINVAL: a device without partition \
             scanning, such as a loop device without -P)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
