//! The Ventoy release files keypack needs, found and checked before anything is written.
//!
//! Supports: a Ventoy release folder (`ventoy-X.Y.Z/` from the Linux tarball) or
//! `…/share/ventoy` of the nixpkgs `ventoy` package: `boot/boot.img`, `boot/core.img.xz`,
//! `ventoy/ventoy.disk.img.xz`, `ventoy/version`.
//! Does not support: rebuilding the blobs from source, or checking them against pinned
//! hashes (no hash table is shipped yet; their structure is checked instead), Ventoy older
//! than [`MIN_VERSION`] (no injection plugin), or a folder whose files come from two releases
//! (`ventoy/version` must match the `VENTOY_VERSION` in the disk image's `grub/grub.cfg`).
//! Reference: `ventoy.md` §2.4 and §2.6, Ventoy `INSTALL/ventoy_pack.sh`.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::VentoyError;
use crate::layout::{CORE_LEN, EFI_LEN, MBR_SIG_HEAD, MBR_SIG_MID};

/// The oldest Ventoy keypack accepts: the injection plugin, which puts the bundle into the
/// ISO's initramfs, first shipped in 1.0.16 (`ventoy.md` §1.1, §2.6). An older Ventoy boots the
/// ISO without the keys, silently.
pub const MIN_VERSION: &str = "1.0.16";

/// The release whose shim is signed under Ventoy's new Secure Boot CA: a stick moved from an
/// older Ventoy to this one or later needs `ENROLL_THIS_KEY_IN_MOKMANAGER.cer` enrolled again.
pub const NEW_CA_VERSION: &str = "1.1.14";

/// A Ventoy version (`1.1.18`) as numbers, for comparing; `None` unless it is 1–4 dot-separated
/// decimal numbers (Ventoy's own are always three).
pub fn parse_version(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v
        .split('.')
        .map(|p| {
            if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect();
    parts.filter(|p| (1..=4).contains(&p.len()))
}

/// Whether `v` is older than `than` (both as [`parse_version`] reads them; `false` when either
/// does not parse).
pub fn older_than(v: &str, than: &str) -> bool {
    match (parse_version(v), parse_version(than)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// Why keypack refuses Ventoy `version`, if it does: older than [`MIN_VERSION`].
pub fn too_old(version: &str) -> Option<String> {
    older_than(version, MIN_VERSION).then(|| {
        format!(
            "Ventoy {version} is older than {MIN_VERSION}, the first release with the injection \
             plugin keypack relies on (an older Ventoy boots the ISO without the keys); use \
             Ventoy {MIN_VERSION} or later"
        )
    })
}

/// The checked release files.
#[derive(Debug, Clone)]
pub struct Blobs {
    /// The release folder.
    pub dir: PathBuf,
    /// `boot/boot.img`, 512 bytes.
    pub boot_img: Vec<u8>,
    /// `boot/core.img.xz`.
    pub core_xz: PathBuf,
    /// `ventoy/ventoy.disk.img.xz`.
    pub efi_xz: PathBuf,
    /// Contents of `ventoy/version`, trimmed.
    pub version: String,
}

/// Folders tried when `--ventoy-dir` is not given.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let ventoy = dir.join("ventoy");
            if let Ok(real) = std::fs::canonicalize(&ventoy)
                && let Some(prefix) = real.parent().and_then(Path::parent)
            {
                dirs.push(prefix.join("share/ventoy"));
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".nix-profile/share/ventoy"));
    }
    dirs.push(PathBuf::from("/run/current-system/sw/share/ventoy"));
    dirs.push(PathBuf::from("/usr/share/ventoy"));
    dirs
}

impl Blobs {
    /// Finds the release folder (`explicit`, else [`default_dirs`]) and checks its files.
    pub fn find(explicit: Option<&Path>) -> Result<Blobs, VentoyError> {
        match explicit {
            Some(dir) => Blobs::load(dir),
            None => {
                for dir in default_dirs() {
                    if dir.join("boot/boot.img").is_file() {
                        return Blobs::load(&dir);
                    }
                }
                Err(VentoyError::NoVentoyDir)
            }
        }
    }

    /// Loads and checks the files of `dir`: boot.img's signature bytes, the uncompressed sizes
    /// recorded in the xz indexes (without decompressing), the version. The images are
    /// decompressed (streamed) only when written, and checked again then.
    pub fn load(dir: &Path) -> Result<Blobs, VentoyError> {
        if !dir.is_dir() {
            return Err(VentoyError::Blob {
                path: dir.to_path_buf(),
                problem: "not a folder".into(),
            });
        }
        let boot_path = dir.join("boot/boot.img");
        let boot_img =
            std::fs::read(&boot_path).map_err(|e| VentoyError::io("reading", &boot_path, e))?;
        check_boot_img(&boot_path, &boot_img)?;
        let core_xz = dir.join("boot/core.img.xz");
        let n = xz_len(&core_xz)?;
        if n != CORE_LEN {
            return Err(VentoyError::Blob {
                path: core_xz,
                problem: format!(
                    "decompresses to {n} bytes, expected {CORE_LEN} (2047 sectors for LBA 1–2047)"
                ),
            });
        }
        let efi_xz = dir.join("ventoy/ventoy.disk.img.xz");
        let n = xz_len(&efi_xz)?;
        if n != EFI_LEN {
            return Err(VentoyError::Blob {
                path: efi_xz,
                problem: format!(
                    "decompresses to {n} bytes, expected {EFI_LEN} (the 65536-sector VTOYEFI partition)"
                ),
            });
        }
        let version_path = dir.join("ventoy/version");
        let version = std::fs::read_to_string(&version_path)
            .map_err(|e| VentoyError::io("reading", &version_path, e))?
            .trim()
            .to_string();
        // Also keeps whatever the file holds out of messages: only digits and dots pass.
        if parse_version(&version).is_none() {
            return Err(VentoyError::Blob {
                path: version_path,
                problem: "does not hold a version like 1.1.18".into(),
            });
        }
        if let Some(problem) = too_old(&version) {
            return Err(VentoyError::Blob {
                path: version_path,
                problem,
            });
        }
        Ok(Blobs {
            dir: dir.to_path_buf(),
            boot_img,
            core_xz,
            efi_xz,
            version,
        })
    }

    /// Streams the decompressed core image into `out` (and checks its length again). It is
    /// smaller than the decoder's window ([`crate::unxz::WINDOW`]), so nothing is read back.
    pub fn write_core(&self, out: &mut dyn Write) -> Result<(), VentoyError> {
        const _: () = assert!(CORE_LEN <= crate::unxz::WINDOW as u64);
        let never = |_: u64, _: &mut [u8]| Err(io::Error::other("core.img read back"));
        xz_into(&self.core_xz, CORE_LEN, out, &never)
    }

    /// Streams the decompressed VTOYEFI partition into `out` (and checks its length again);
    /// `back(pos, buf)` reads bytes `out` has received, from `pos` on (the image file: the
    /// decoder's dictionary beyond its window, [`crate::unxz`]).
    pub fn write_efi(
        &self,
        out: &mut dyn Write,
        back: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<(), VentoyError> {
        xz_into(&self.efi_xz, EFI_LEN, out, back)
    }

    /// Checks that the disk image's `grub/grub.cfg` (`grub`: its `VENTOY_VERSION`, read by the
    /// build from the partition it has just written) names the version in `ventoy/version`: a
    /// folder with files of two releases (a half-copied upgrade) is refused, naming both.
    pub fn check_grub_version(&self, grub: Option<&str>) -> Result<(), VentoyError> {
        let bad = |problem: String| VentoyError::Blob {
            path: self.efi_xz.clone(),
            problem,
        };
        match grub {
            Some(g) if g == self.version => Ok(()),
            Some(g) => Err(bad(format!(
                "its grub/grub.cfg sets VENTOY_VERSION=\"{g}\", but {} says {}: the folder mixes \
                 files of two Ventoy releases ({g} and {}); unpack one release again, or point \
                 --ventoy-dir at …/share/ventoy of the nixpkgs ventoy package",
                self.dir.join("ventoy/version").display(),
                self.version,
                self.version
            ))),
            None => Err(bad(format!(
                "its grub/grub.cfg sets no VENTOY_VERSION, so it cannot be matched with \
                 ventoy/version ({}); not a Ventoy release image",
                self.version
            ))),
        }
    }
}

fn check_boot_img(path: &Path, img: &[u8]) -> Result<(), VentoyError> {
    let bad = |problem: String| VentoyError::Blob {
        path: path.to_path_buf(),
        problem,
    };
    if img.len() != 512 {
        return Err(bad(format!("is {} bytes, expected 512", img.len())));
    }
    if img[..MBR_SIG_HEAD.len()] != MBR_SIG_HEAD {
        return Err(bad(
            "bytes 0x000–0x02F are not EB 63 90 followed by zeros (not Ventoy's GRUB boot.img)"
                .into(),
        ));
    }
    if img[0x190..0x1A0] != MBR_SIG_MID {
        return Err(bad(
            "bytes 0x190–0x19F lack Ventoy's signature (not Ventoy's GRUB boot.img)".into(),
        ));
    }
    Ok(())
}

fn xz_into(
    path: &Path,
    expected: u64,
    out: &mut dyn Write,
    back: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
) -> Result<(), VentoyError> {
    let file = File::open(path).map_err(|e| VentoyError::io("reading", path, e))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    // Write errors come back through the decoder: tell them apart from damaged input.
    let failed_write = std::cell::Cell::new(None);
    let mut sink = Sink {
        out,
        failed: &failed_write,
    };
    let total = crate::unxz::decompress(&mut input, &mut sink, back, expected);
    if let Some(e) = failed_write.take() {
        return Err(VentoyError::io("writing the image for", path, e));
    }
    match total {
        Ok(n) if n == expected => Ok(()),
        Ok(_) => Err(VentoyError::Blob {
            path: path.to_path_buf(),
            problem: format!("decompresses to a size other than the {expected} bytes it must have"),
        }),
        Err(e) => Err(VentoyError::Blob {
            path: path.to_path_buf(),
            problem: format!("cannot be decompressed as xz: {e}"),
        }),
    }
}

/// A writer that remembers its first error.
struct Sink<'a> {
    out: &'a mut dyn Write,
    failed: &'a std::cell::Cell<Option<io::Error>>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).inspect_err(|e| {
            self.failed
                .set(Some(io::Error::new(e.kind(), e.to_string())));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The uncompressed size recorded in the xz index (no decompression).
fn xz_len(path: &Path) -> Result<u64, VentoyError> {
    let file = File::open(path).map_err(|e| VentoyError::io("reading", path, e))?;
    lzma_rust2::xz_uncompressed_size(file).map_err(|e| VentoyError::Blob {
        path: path.to_path_buf(),
        problem: format!("is not an xz file: {e}"),
    })
}

/// Reads the `VENTOY_VERSION` set in a `grub.cfg`.
pub fn grub_cfg_version(cfg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(cfg);
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("set VENTOY_VERSION=")?;
        Some(rest.trim_matches('"').to_string())
    })
}
