//! `keypack flash`'s library: writes a disk image (the host's last Ventoy build) onto a
//! whole block device, a USB stick, and checks what it wrote.
//!
//! Where it sits: after `keypack build` on the data path; image file in, [`Report`] out. The
//! CLI (`crates/keypack/src/cmd/flash.rs`) picks the image, shows the device and asks for
//! confirmation; this crate holds one module per job:
//! - [`device`]: what the device is, from sysfs (through a root folder, for tests);
//! - [`safety`]: the refusals (partition, mounted, swap, held, fixed, too small);
//! - [`extents`]: what to write (data extents, and zeros where a hole must read as zero);
//! - `keys_only`: [`flash_keys_only`], the bundle switched onto a stick of the same build;
//! - [`write`]: large aligned `O_DIRECT` writes, each piece read back (`O_DIRECT`) and
//!   compared byte for byte on a second thread, one fsync (a buffered fallback);
//!   [`write::compare`] for [`verify_only`] (`--verify-only`: the same regions compared byte for
//!   byte, nothing written).
//!
//! Does **not**: write a regular file (use `cp --sparse`), choose the device for the user,
//! update a stick's ISO in place (`keypack media update`), or parse TexFAT (written whole).
//!
//! Why an exclusive open ([`open_exclusive`]): for a block device `O_EXCL` fails with EBUSY
//! while it or a partition is mounted, and stops an automounter from mounting it during the
//! write. Why sparse: a build is mostly empty FAT clusters; writing only what the image holds
//! (plus the zeros the layout needs, [`extents`]) makes a 1 GiB stick take seconds.
#![deny(unsafe_code)]

pub mod device;
mod error;
pub mod extents;
mod keys_only;
mod rrpart;
pub mod safety;
pub mod write;

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use error::FlashError;
pub use keys_only::KeysOnly;
pub use rrpart::Reread;
pub use write::{Phase, Written};

/// Outcome of a flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Length of the image.
    pub image_len: u64,
    /// What was written (and verified).
    pub written: Written,
    /// Whether the kernel re-read the partition table.
    pub reread: Reread,
}

/// Opens the whole device read-write with `O_EXCL`; EBUSY becomes [`FlashError::Busy`].
pub fn open_exclusive(device: &Path) -> Result<File, FlashError> {
    File::options()
        .read(true)
        .write(true)
        .custom_flags(
            rustix::fs::OFlags::EXCL.bits() as i32 | rustix::fs::OFlags::CLOEXEC.bits() as i32,
        )
        .open(device)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                FlashError::Busy {
                    device: device.to_path_buf(),
                }
            } else {
                FlashError::io("opening", device, e)
            }
        })
}

/// The size of an open device (or file), by seeking to its end.
pub fn len_of(file: &File, path: &Path) -> Result<u64, FlashError> {
    rustix::fs::seek(file, rustix::fs::SeekFrom::End(0))
        .map_err(|e| FlashError::io("reading the size of", path, e.into()))
}

/// A disk image opened once for [`flash`], [`verify_only`] or [`flash_keys_only`]: its file,
/// length and plan ([`extents::plan`], which reads the partition table and the FATs), so
/// neither the progress bar's length nor the write reads them again.
pub struct Image {
    path: PathBuf,
    file: File,
    len: u64,
    plan: Vec<extents::Region>,
}

impl Image {
    /// Opens `path` and plans its write.
    pub fn open(path: &Path) -> Result<Image, FlashError> {
        let file = File::open(path).map_err(|e| FlashError::io("opening", path, e))?;
        let reading = |e| FlashError::io("reading", path, e);
        let len = file.metadata().map_err(reading)?.len();
        let plan = extents::plan(&file, len).map_err(reading)?;
        Ok(Image {
            path: path.to_path_buf(),
            file,
            len,
            plan,
        })
    }

    /// Length of the image in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Bytes [`flash`] will write (for a progress bar's length).
    pub fn planned_bytes(&self) -> u64 {
        self.plan.iter().map(|r| r.end - r.start).sum()
    }
}

/// Writes `image` onto `device`, which the caller has already checked ([`safety::check`]) and
/// confirmed with the user as device number `checked`: exclusive open, the open device is
/// still `checked` and large enough, the plan of [`extents::plan`], write, fsync, verify,
/// `BLKRRPART`.
pub fn flash(
    image: &Image,
    device: &Path,
    checked: device::DevNum,
    progress: write::OnProgress<'_>,
) -> Result<Report, FlashError> {
    let dev = open_checked(device, checked, image.len, true)?;
    let written = write::write_and_verify(
        &image.file,
        &image.path,
        &dev,
        device,
        &image.plan,
        progress,
    )?;
    let reread = rrpart::reread(&dev)
        .map_err(|e| FlashError::io("re-reading the partition table of", device, e))?;
    Ok(Report {
        image_len: image.len,
        written,
        reread,
    })
}

/// Opens `device` (read-only, or read-write with `O_EXCL`) and checks it is still the device
/// `checked` and holds at least `image_len` bytes.
fn open_checked(
    device: &Path,
    checked: device::DevNum,
    image_len: u64,
    write: bool,
) -> Result<File, FlashError> {
    let dev = if write {
        open_exclusive(device)?
    } else {
        File::open(device).map_err(|e| FlashError::io("opening", device, e))?
    };
    // The checks and the user's answer were about `checked`: the path must still open it
    // (fstat of the open fd, so no later swap of the path matters).
    let meta = dev
        .metadata()
        .map_err(|e| FlashError::io("reading", device, e))?;
    let now = device::DevNum {
        major: rustix::fs::major(meta.rdev()),
        minor: rustix::fs::minor(meta.rdev()),
    };
    if !meta.file_type().is_block_device() || now != checked {
        return Err(FlashError::Changed {
            device: device.to_path_buf(),
            checked: checked.to_string(),
            now: now.to_string(),
        });
    }
    // sysfs said it is large enough; the open device has the last word.
    let device_len = len_of(&dev, device)?;
    if device_len < image_len {
        return Err(FlashError::TooSmall {
            device: device.to_path_buf(),
            device_len,
            image_len,
        });
    }
    Ok(dev)
}

/// Outcome of [`verify_only`]: the device holds what a flash of the image would write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Length of the image.
    pub image_len: u64,
    /// Regions compared (those [`flash`] would write).
    pub regions: usize,
    /// Bytes compared.
    pub bytes: u64,
}

/// Checks, without writing, that `device` (already checked, [`safety::check`], as device
/// number `checked`) holds what [`flash`] would write for `image`: the same plan
/// ([`extents::plan`]), compared region by region, byte for byte ([`write::compare`]). The first
/// differing region is [`FlashError::VerifyMismatch`]. Opened read-only: nothing is written.
pub fn verify_only(
    image: &Image,
    device: &Path,
    checked: device::DevNum,
    progress: write::OnProgress<'_>,
) -> Result<Verified, FlashError> {
    let dev = open_checked(device, checked, image.len, false)?;
    let regions = write::compare(
        &image.file,
        &image.path,
        &dev,
        device,
        &image.plan,
        progress,
    )
    .map_err(|e| match e {
        FlashError::VerifyMismatch { device, start, end } => {
            FlashError::Differs { device, start, end }
        }
        e => e,
    })?;
    Ok(Verified {
        image_len: image.len,
        regions,
        bytes: image.planned_bytes(),
    })
}

/// `--keys-only`: `device` (already checked and confirmed as device number `checked`) must hold
/// the same build as `image` (partitions, partition 2, the ISO); then only the image's bundle
/// and `ventoy.json` are switched onto it, crash-consistent (see `keys_only.rs`). Exclusive
/// open, as for [`flash`]; nothing is written before the same-build check passes.
pub fn flash_keys_only(
    image: &Image,
    device: &Path,
    checked: device::DevNum,
) -> Result<KeysOnly, FlashError> {
    let dev = open_checked(device, checked, image.len, true)?;
    keys_only::keys_only(&image.file, &image.path, &image.plan, &dev, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path must still open the device that was checked: anything else (here a regular
    /// file standing where the device was) is refused before a byte is written.
    #[test]
    fn a_path_that_no_longer_opens_the_checked_device_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("image");
        std::fs::write(&image, vec![1u8; 8192]).unwrap();
        let target = t.path().join("sdb");
        std::fs::write(&target, vec![0xAAu8; 16384]).unwrap();
        let checked = device::DevNum {
            major: 8,
            minor: 16,
        };
        let image = Image::open(&image).unwrap();
        let err = flash(&image, &target, checked, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FlashError::Changed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("no longer the device that was checked (8:16")
        );
        assert_eq!(std::fs::read(&target).unwrap(), vec![0xAAu8; 16384]);
        let err = verify_only(&image, &target, checked, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FlashError::Changed { .. }), "{err}");
    }
}
