//! Finding the keys area of an ISO: the file [`AREA_PATH`], looked up with the initrd
//! medium's ISO 9660 reader, which must be one contiguous extent whose size is a non-zero
//! multiple of 2 KiB, inside the image.
//!
//! Does not create or move the area: the ISO's build does that (`nix/iso-keys.nix`), and this
//! medium only ever writes inside it. Why one extent: the boot loaders read the file by its
//! directory record, and keypack writes it in place; with one extent "the area" is one byte
//! range, and nothing else of the ISO can change.

use std::path::Path;

use keypack_media_initrd::iso::{IsoImage, SECTOR};

use crate::IsoMediumError;

/// Where the keys area lives in the ISO (the convention every boot entry follows).
pub const AREA_PATH: &str = "/keypack/keys.img";

/// The area's byte range in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Area {
    /// Offset of its first byte in the image.
    pub offset: u64,
    /// Its length in bytes (a multiple of 2048).
    pub len: u64,
}

/// Finds the area of the ISO at `path` and checks it follows the convention.
pub fn locate(path: &Path) -> Result<Area, IsoMediumError> {
    let mut iso = IsoImage::open(path)?;
    let entry = iso
        .find_file(AREA_PATH)?
        .ok_or_else(|| IsoMediumError::NoArea {
            iso: path.to_path_buf(),
        })?;
    iso.check_extents(&entry)?;
    let bad = |why: String| IsoMediumError::BadArea {
        iso: path.to_path_buf(),
        why,
    };
    let &[(sector, len)] = entry.extents() else {
        return Err(bad(format!(
            "it is stored in {} extents, not one",
            entry.extents().len()
        )));
    };
    let len = u64::from(len);
    if len == 0 || !len.is_multiple_of(SECTOR) {
        return Err(bad(format!(
            "it is {len} bytes, not a non-zero multiple of {SECTOR}"
        )));
    }
    let offset = u64::from(sector) * SECTOR;
    // The volume descriptors and the system area (sectors 0–17) are never ours to write.
    if offset < 18 * SECTOR {
        return Err(bad(format!(
            "it starts at sector {sector}, inside the volume descriptors"
        )));
    }
    Ok(Area { offset, len })
}
