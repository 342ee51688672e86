//! Media plugin `initrd`: the keys as an extra gzip newc cpio, appended after a base initrd.
//!
//! Position on the data path: `SealedBundle → **initrd medium** → keys.cpio.gz + boot
//! description (kernel, base initrd, keys cpio, command line) → runner`. This is how netboot
//! (iPXE, pixiecore), kexec and direct kernel boot in QEMU carry keys: the kernel unpacks every
//! concatenated initramfs in order, so the keys appear in the initramfs root at the bundle's
//! paths (`/etc/ssh/ssh_host_ed25519_key`, …) where `load-keys` picks them up.
//!
//! Layout, per `decisions.md`: the kernel's unpacker does not create missing parents (a file
//! whose parent is missing is dropped) and a directory entry does chmod/chown an existing
//! directory, so the cpio carries one directory entry per parent with the conventional mode
//! (`etc`, `etc/ssh` 0755; `root`, `root/.ssh`, `users`, `users/<u>`, `users/<u>/.ssh` 0700),
//! never an entry for the root itself, then the files (0600 private, 0644 public), all uid/gid
//! 0, sorted so parents precede children, mtime 0 and inode numbers 1…n: the same bundle gives
//! the same bytes.
//!
//! With `--iso FILE` instead of `--kernel`/`--initrd`, the kernel, initrd(s) and command line
//! come from the ISO's default boot entry ([`bootcfg`], read with the small ISO 9660 reader in
//! [`iso`]); they are extracted into the host's state folder ([`from_iso`]) and the ISO itself is
//! attached to the boot as a read-only CD-ROM, so a NixOS stage 1 finds `root=LABEL=…`.
//!
//! Does **not** copy a `--kernel` or `--initrd` given as files (the description points at them
//! by absolute path), or rely on archive modes at boot (`load-keys` sets modes itself).
//!
//! Why a plugin of its own: it is the smallest complete [`Medium`] and the model for new ones
//! (see `keypack_plugin`'s "Adding a boot medium").
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
pub mod bootcfg;
pub mod cpio;
mod error;
pub mod from_iso;
pub mod iso;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use flate2::{Compression, GzBuilder};
use keypack_plugin::{
    BOOT_DESCRIPTION_VERSION, Boot, BootDescription, BuildInputs, Firmware, Medium, PluginError,
    SealedBundle,
};
use zeroize::Zeroizing;

pub use args::InitrdArgs;
pub use error::InitrdError;

/// The plugin's name, the value of `--media`.
pub const NAME: &str = "initrd";
/// Default artifact file name in the host's state folder.
pub const ARTIFACT_NAME: &str = "keys.cpio.gz";
/// Kernel command line when `--append` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// The initrd medium.
pub struct Initrd;

impl Medium for Initrd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "extra gzip cpio initrd with the keys, for direct kernel boot, netboot and kexec"
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        InitrdArgs::augment_args(cmd)
    }

    fn default_artifact_name(&self) -> &'static str {
        ARTIFACT_NAME
    }

    fn needs_iso(&self) -> bool {
        false
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        let args =
            InitrdArgs::from_arg_matches(inputs.matches).map_err(|e| PluginError::new(NAME, e))?;
        build_with_iso(
            bundle,
            &args,
            inputs.iso,
            inputs.state_dir,
            inputs.host.as_str(),
            inputs.output,
        )
        .map_err(|e| PluginError::new(NAME, e))
    }
}

/// Builds the medium from `--kernel`/`--initrd` flags: writes `output` (0600, temp name and
/// rename) and returns the boot description.
pub fn build(
    bundle: &SealedBundle,
    args: &InitrdArgs,
    host: &str,
    output: &Path,
) -> Result<BootDescription, InitrdError> {
    build_with_iso(bundle, args, None, Path::new("."), host, output)
}

/// Builds the medium from `--kernel`/`--initrd`, or from `iso` (`--iso`): then the kernel and
/// initrds of the ISO's default boot entry are extracted into `state_dir`, the command line is
/// the entry's (with `--append` added after it), and the ISO is attached as a CD-ROM. Nothing
/// is written unless the whole build succeeds.
pub fn build_with_iso(
    bundle: &SealedBundle,
    args: &InitrdArgs,
    iso: Option<&Path>,
    state_dir: &Path,
    host: &str,
    output: &Path,
) -> Result<BootDescription, InitrdError> {
    let files_given = args.kernel.is_some() || args.initrd.is_some();
    let mut from_iso = match (iso, files_given) {
        (Some(_), true) => return Err(InitrdError::KernelAndIso),
        (None, false) => return Err(InitrdError::NoBootSource),
        (Some(iso), false) => Some(from_iso::locate(iso)?),
        (None, true) => None,
    };
    let files = match &from_iso {
        None => Some((
            input_file(args.kernel.as_deref(), "--kernel", "kernel")?,
            input_file(args.initrd.as_deref(), "--initrd", "base initrd")?,
        )),
        Some(_) => None,
    };
    let host_public_key = bundle
        .manifest()
        .host_public_key()
        .ok_or(InitrdError::NoHostKey)?
        .to_owned();
    let gz = keys_cpio_gz(bundle)?;
    // The ISO's files go to temp names first; they are renamed into place only after the keys
    // cpio is written, so a failure leaves no new file behind.
    let extracted = match &mut from_iso {
        Some(b) => Some(b.extract(state_dir)?),
        None => None,
    };
    keypack_plugin::output::write_private_file(output, &gz).map_err(|source| {
        InitrdError::Write {
            path: output.to_path_buf(),
            source,
        }
    })?;
    let output = std::path::absolute(output).map_err(|source| InitrdError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    let boot = match (files, extracted, from_iso) {
        (Some((kernel, base)), _, _) => Boot::Kernel {
            kernel,
            initrds: vec![base, output],
            cmdline: args
                .append
                .clone()
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned()),
            cdrom: None,
        },
        (None, Some(ex), Some(iso_boot)) => {
            let kernel = ex.kernel.clone();
            let mut initrds = ex.initrds.clone();
            ex.commit()?;
            initrds.push(output);
            let mut cmdline = iso_boot.entry.cmdline;
            if let Some(extra) = args.append.as_deref().filter(|a| !a.trim().is_empty()) {
                if !cmdline.is_empty() {
                    cmdline.push(' ');
                }
                cmdline.push_str(extra.trim());
            }
            Boot::Kernel {
                kernel,
                initrds,
                cmdline,
                cdrom: Some(iso_boot.iso),
            }
        }
        _ => unreachable!("either files or an ISO was resolved above"),
    };
    Ok(BootDescription {
        version: BOOT_DESCRIPTION_VERSION,
        medium: NAME.to_owned(),
        host: host.to_owned(),
        boot,
        firmware: Firmware::Any,
        host_public_key,
    })
}

fn input_file(
    path: Option<&Path>,
    flag: &'static str,
    what: &'static str,
) -> Result<PathBuf, InitrdError> {
    let path = path.ok_or(InitrdError::MissingFlag { flag })?;
    let err = |source| InitrdError::Input {
        what,
        path: path.to_path_buf(),
        source,
    };
    let abs = std::fs::canonicalize(path).map_err(err)?;
    let meta = std::fs::metadata(&abs).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(abs)
}

/// The uncompressed newc cpio of the bundle: parent directories, then files, sorted.
pub fn keys_cpio(bundle: &SealedBundle) -> Result<Zeroizing<Vec<u8>>, InitrdError> {
    // path → (mode with type bits, contents); a BTreeMap sorts parents before children because a
    // parent's path is a prefix of its children's.
    let mut entries: BTreeMap<String, (u32, &[u8])> = BTreeMap::new();
    for (entry, contents) in bundle.expose_files() {
        let known = keypack_layout::classify(&entry.path);
        if known.as_ref().map(|k| (&k.role, k.public)) != Some((&entry.role, entry.public)) {
            return Err(InitrdError::UnknownPath {
                path: entry.path.clone(),
            });
        }
        for (dir, mode) in entry.role.parent_dirs() {
            entries.entry(dir).or_insert((cpio::S_IFDIR | mode, &[]));
        }
        entries.insert(
            entry.path.clone(),
            (cpio::S_IFREG | (entry.mode & 0o7777), contents),
        );
    }
    // The burn mark (`--burn-after-boot`) travels in the cpio too, so `load-keys` asks for the
    // burn whichever medium the bundle came on (and says there was nothing to burn).
    if let Some(mark) = bundle.burn_mark() {
        entries.insert(
            "keypack".into(),
            (cpio::S_IFDIR | keypack_layout::MARK_DIR_MODE, &[]),
        );
        entries.insert(
            keypack_layout::BURN_MARK_PATH.into(),
            (
                cpio::S_IFREG | keypack_layout::BURN_MARK_MODE,
                mark.as_bytes(),
            ),
        );
    }
    let records: Vec<cpio::Record<'_>> = entries
        .iter()
        .map(|(path, (mode, data))| cpio::Record {
            path,
            mode: *mode,
            data,
        })
        .collect();
    let mut out = Zeroizing::new(Vec::with_capacity(cpio::archive_len(&records)));
    cpio::write_archive(&mut out, &records, 0);
    Ok(out)
}

/// The gzip-compressed cpio, as written to the artifact. Deterministic: no file name, mtime 0.
pub fn keys_cpio_gz(bundle: &SealedBundle) -> Result<Zeroizing<Vec<u8>>, InitrdError> {
    let raw = keys_cpio(bundle)?;
    // Deflate never expands by more than ~0.1% + a few bytes per block; pre-size generously so
    // the buffer holding key bytes never grows (and leaves a copy behind).
    let capacity = raw.len() + raw.len() / 8 + 1024;
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(&mut *out, Compression::best());
    gz.write_all(&raw).map_err(InitrdError::Compress)?;
    gz.finish().map_err(InitrdError::Compress)?;
    Ok(out)
}
