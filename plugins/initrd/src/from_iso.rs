//! `--iso FILE`: the kernel, initrds and command line of the ISO's default boot entry.
//!
//! Where it sits: called by [`crate::build_with_iso`] before the keys cpio is made. It reads the
//! boot loader configurations in [`bootcfg::CONFIGS`] order and takes the first whose default
//! entry has a kernel; every file that entry names must exist in the ISO before anything is
//! written. The kernel and initrds are then streamed into the host's state folder
//! (`iso-kernel`, `iso-initrd`, `iso-initrd-2`, …; 0600, temp name, committed only once the
//! whole build has succeeded), because QEMU, kexec and netboot servers want plain files.
//!
//! Does not modify the ISO, cache extractions between builds (a NixOS kernel and initrd are
//! copied in well under a second), or check that the kernel is a kernel.

use std::path::{Path, PathBuf};

use keypack_plugin::output::PendingFile;

use crate::InitrdError;
use crate::bootcfg::{self, BootEntry};
use crate::iso::{Entry, IsoImage};

/// Largest boot loader configuration read.
const MAX_CONFIG_LEN: u64 = 1 << 20;
/// File name of the extracted kernel in the state folder.
pub const KERNEL_NAME: &str = "iso-kernel";
/// File name of the first extracted initrd (later ones get `-2`, `-3`, …).
pub const INITRD_NAME: &str = "iso-initrd";

/// The default entry of the ISO, with its files located but not yet copied.
pub struct IsoBoot {
    img: IsoImage,
    /// The absolute path of the ISO.
    pub iso: PathBuf,
    /// The configuration file the entry came from (path inside the ISO).
    pub config: &'static str,
    /// The entry.
    pub entry: BootEntry,
    kernel: Entry,
    initrds: Vec<Entry>,
}

/// Opens `iso`, finds its default boot entry and checks the files it names.
pub fn locate(iso: &Path) -> Result<IsoBoot, InitrdError> {
    let abs = std::fs::canonicalize(iso).map_err(|source| InitrdError::Input {
        what: "ISO",
        path: iso.to_path_buf(),
        source,
    })?;
    let mut img = IsoImage::open(&abs)?;
    let mut tried = Vec::new();
    for &(config, syntax) in bootcfg::CONFIGS {
        let Some(file) = img.find_file(config)? else {
            continue;
        };
        let text = img.read_small(&file, MAX_CONFIG_LEN)?;
        let text = String::from_utf8_lossy(&text);
        let entry = match bootcfg::default_entry(&text, config, syntax) {
            Ok(e) => e,
            Err(why) => {
                tried.push(format!("{config}: {why}"));
                continue;
            }
        };
        let mut need = |what: &'static str, path: &str| -> Result<Entry, InitrdError> {
            let found = img
                .find_file(path)?
                .ok_or_else(|| InitrdError::MissingInIso {
                    iso: abs.clone(),
                    config: config.to_owned(),
                    what,
                    path: path.to_owned(),
                })?;
            img.check_extents(&found)?;
            Ok(found)
        };
        let kernel = need("kernel", &entry.kernel)?;
        let initrds = entry
            .initrds
            .iter()
            .map(|p| need("initrd", p))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(IsoBoot {
            img,
            iso: abs,
            config,
            entry,
            kernel,
            initrds,
        });
    }
    if tried.is_empty() {
        tried.push(format!(
            "none of {} found",
            bootcfg::CONFIGS
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Err(InitrdError::NoBootConfig {
        iso: abs,
        tried: tried.join("; "),
    })
}

/// Extracted files waiting to be committed.
pub struct Extracted {
    /// Final paths of the kernel and the initrds, in order.
    pub kernel: PathBuf,
    /// Final paths of the initrds.
    pub initrds: Vec<PathBuf>,
    pending: Vec<PendingFile>,
}

impl Extracted {
    /// Renames every file into place.
    pub fn commit(self) -> Result<(), InitrdError> {
        for (p, target) in self
            .pending
            .into_iter()
            .zip(std::iter::once(self.kernel).chain(self.initrds))
        {
            p.commit().map_err(|source| InitrdError::Write {
                path: target,
                source,
            })?;
        }
        Ok(())
    }
}

impl IsoBoot {
    /// Streams the kernel and initrds into `dir` under temp names (removed if dropped
    /// uncommitted).
    pub fn extract(&mut self, dir: &Path) -> Result<Extracted, InitrdError> {
        let dir = std::path::absolute(dir).map_err(|source| InitrdError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let kernel = dir.join(KERNEL_NAME);
        let initrds: Vec<PathBuf> = (0..self.initrds.len())
            .map(|i| match i {
                0 => dir.join(INITRD_NAME),
                n => dir.join(format!("{INITRD_NAME}-{}", n + 1)),
            })
            .collect();
        let mut pending = Vec::new();
        let files =
            std::iter::once((&self.kernel, &kernel)).chain(self.initrds.iter().zip(&initrds));
        for (entry, target) in files {
            let write_err = |source| InitrdError::Write {
                path: target.clone(),
                source,
            };
            let mut p = PendingFile::create(target).map_err(write_err)?;
            self.img.copy_to(entry, p.file())?;
            pending.push(p);
        }
        Ok(Extracted {
            kernel,
            initrds,
            pending,
        })
    }
}
