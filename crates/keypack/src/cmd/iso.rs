//! Where the ISO comes from: `--iso FILE`, or `nix build REF --print-out-paths` (default
//! `.#iso`). `keypack path` prints that ISO's path; `keypack copy DEST` copies it out of the
//! store.
//!
//! Does not build anything itself: `nix` does, and its output goes to the terminal.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use keypack_plugin::output::PendingFile;

/// Default flake output of the NixOS ISO.
pub const DEFAULT_FLAKE: &str = ".#iso";

/// `--iso FILE | --flake REF`.
#[derive(Debug, Clone, clap::Args)]
pub struct IsoSource {
    /// The ISO to put on the medium [default: build it with `nix build` from --flake]
    #[arg(long, value_name = "FILE", conflicts_with = "flake")]
    pub iso: Option<PathBuf>,
    /// Flake output that builds the NixOS ISO
    #[arg(long, value_name = "REF", env = "KEYPACK_FLAKE")]
    pub flake: Option<String>,
}

/// `--flake REF` only.
#[derive(Debug, Clone, clap::Args)]
pub struct FlakeArg {
    /// Flake output that builds the NixOS ISO
    #[arg(long, value_name = "REF", env = "KEYPACK_FLAKE", default_value = DEFAULT_FLAKE)]
    pub flake: String,
}

impl IsoSource {
    /// The ISO file: `--iso`, or the one `nix build` produces.
    pub fn resolve(&self) -> Result<PathBuf> {
        match &self.iso {
            Some(p) => {
                if !p.is_file() {
                    bail!("--iso {}: no such file", p.display());
                }
                Ok(p.clone())
            }
            None => nix_iso(self.flake.as_deref().unwrap_or(DEFAULT_FLAKE)),
        }
    }
}

/// The oldest Nix keypack runs: Debian 12's Nix 2.8 rejects `--print-out-paths`, and 2.18 is
/// the oldest release the flake is checked with. Checked first, so an old Nix gets a sentence
/// instead of its own `unrecognised flag`.
pub const MIN_NIX: (u32, u32) = (2, 18);

/// Runs `nix build REF --print-out-paths --no-link` and finds the ISO in its output.
pub fn nix_iso(flake: &str) -> Result<PathBuf> {
    let ways_out = "pass --iso FILE (an ISO you built), or --flake REF (a flake output that \
                    builds one, e.g. github:you/nix-config#iso)";
    // Absolute PATH entries only (never `./nix`), and a scrubbed environment.
    let nix = keypack_plugin::child::find_program("nix")
        .ok_or_else(|| keypack_plugin::child::not_found("nix"))
        .with_context(|| {
            format!("no --iso given, so keypack needs `nix build {flake}`; {ways_out}")
        })?;
    let version = nix_version(&nix)?;
    if (version.0, version.1) < MIN_NIX {
        bail!(
            "{} is Nix {}.{}.{}, too old for `nix build {flake} --print-out-paths` (keypack \
             needs Nix >= {}.{}); {ways_out}",
            nix.display(),
            version.0,
            version.1,
            version.2,
            MIN_NIX.0,
            MIN_NIX.1
        );
    }
    // A relative flake reference (`.#iso`) is resolved against the working directory: say which.
    let folder = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the current folder".into());
    eprintln!("no --iso given: running `nix build {flake}` in {folder} (nix's progress follows)");
    let out = keypack_plugin::child::command(&nix, &[])
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["build", flake, "--print-out-paths", "--no-link"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", nix.display()))?;
    if !out.status.success() {
        bail!(
            "`nix build {flake}` in {folder} failed ({}; its messages are above); {ways_out}",
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        bail!("nix build {flake} printed no output path");
    };
    find_iso(Path::new(first.trim()))
        .with_context(|| format!("nix build {flake} built {}", first.trim()))
}

/// `nix --version` as (major, minor, patch): the last word of `nix (Nix) 2.24.9`.
fn nix_version(nix: &Path) -> Result<(u32, u32, u32)> {
    let out = keypack_plugin::child::command(nix, &[])
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", nix.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_nix_version(&text).with_context(|| {
        format!(
            "{} --version printed {:?}, not a Nix version",
            nix.display(),
            super::escape::field(text.trim())
        )
    })
}

fn parse_nix_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().last()?;
    let mut parts = word.split(['.', '-', '+', 'p']).map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// The ISO at `path`: the file itself, or the only `*.iso` in `path/iso/` or `path/`.
pub fn find_iso(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for dir in [path.join("iso"), path.to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut isos: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "iso") && p.is_file())
            .collect();
        isos.sort();
        match isos.len() {
            0 => continue,
            1 => return Ok(isos.remove(0)),
            _ => bail!("more than one .iso in {}", dir.display()),
        }
    }
    bail!("no .iso file in it (looked in iso/ and the top folder)")
}

/// Flags of `keypack path`.
#[derive(Debug, clap::Args)]
pub struct PathArgs {
    #[command(flatten)]
    pub flake: FlakeArg,
}

/// Flags of `keypack copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Where to copy the ISO (a file, or a folder to copy it into under its own name)
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub flake: FlakeArg,
    /// Replace DEST if it exists
    #[arg(short, long)]
    pub force: bool,
}

/// `keypack path`.
pub fn path(args: PathArgs) -> Result<ExitCode> {
    let iso = nix_iso(&args.flake.flake)?;
    println!("{}", iso.display());
    Ok(ExitCode::SUCCESS)
}

/// `keypack copy`.
pub fn copy(args: CopyArgs) -> Result<ExitCode> {
    let iso = nix_iso(&args.flake.flake)?;
    copy_iso(&iso, &args.dest, args.force)?;
    Ok(ExitCode::SUCCESS)
}

/// Copies `iso` to `dest` (a file or a folder) via a temp name; the copy is 0644 (an ISO holds
/// no keys).
pub fn copy_iso(iso: &Path, dest: &Path, force: bool) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let target = if dest.is_dir() {
        dest.join(iso.file_name().context("the ISO path has no file name")?)
    } else {
        dest.to_path_buf()
    };
    if target.exists() && !force {
        bail!(
            "{} already exists (pass -f to replace it)",
            target.display()
        );
    }
    let mut pending =
        PendingFile::create(&target).with_context(|| format!("creating {}", target.display()))?;
    let src = std::fs::File::open(iso).with_context(|| format!("reading {}", iso.display()))?;
    let len = src
        .metadata()
        .with_context(|| format!("reading {}", iso.display()))?
        .len();
    // A bar on a terminal (bytes, throughput, ETA), advanced per 4 MiB chunk; the label is the
    // ISO's own file name, escaped (it comes from the store path or the user).
    let label = iso
        .file_name()
        .map(|n| super::escape::field(&n.to_string_lossy()))
        .unwrap_or_default();
    let bar = keypack_media_ventoy::progress::Progress::bytes(&label, len);
    keypack_media_ventoy::partio::copy_range(&src, 0, pending.file(), 0, len, &bar)
        .with_context(|| format!("copying to {}", pending.temp_path().display()))?;
    bar.finish();
    pending
        .file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    pending
        .commit()
        .with_context(|| format!("renaming to {}", target.display()))?;
    eprintln!("copied {} to {}", iso.display(), target.display());
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::parse_nix_version;

    #[test]
    fn nix_versions_parse() {
        assert_eq!(parse_nix_version("nix (Nix) 2.8.0\n"), Some((2, 8, 0)));
        assert_eq!(parse_nix_version("nix (Nix) 2.24.9"), Some((2, 24, 9)));
        assert_eq!(
            parse_nix_version("nix (Nix) 2.26.0pre20241201_abc"),
            Some((2, 26, 0))
        );
        assert_eq!(
            parse_nix_version("nix (Determinate Nix 3.1.0) 2.28.1"),
            Some((2, 28, 1))
        );
        assert_eq!(parse_nix_version("nix 2.19"), Some((2, 19, 0)));
        assert_eq!(parse_nix_version("garbage"), None);
        assert_eq!(parse_nix_version(""), None);
    }
}
