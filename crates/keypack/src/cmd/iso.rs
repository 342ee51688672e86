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

/// Runs `nix build REF --print-out-paths --no-link` and finds the ISO in its output.
pub fn nix_iso(flake: &str) -> Result<PathBuf> {
    // Absolute PATH entries only (never `./nix`), and a scrubbed environment.
    let nix = keypack_plugin::child::find_program("nix")
        .ok_or_else(|| keypack_plugin::child::not_found("nix"))
        .context("running nix build (is Nix installed? or pass --iso FILE)")?;
    let out = keypack_plugin::child::command(&nix, &[])
        .args(["build", flake, "--print-out-paths", "--no-link"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running nix build (is Nix installed? or pass --iso FILE)")?;
    if !out.status.success() {
        bail!("nix build {flake} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        bail!("nix build {flake} printed no output path");
    };
    find_iso(Path::new(first.trim()))
        .with_context(|| format!("nix build {flake} built {}", first.trim()))
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
    let mut src = std::fs::File::open(iso).with_context(|| format!("reading {}", iso.display()))?;
    std::io::copy(&mut src, pending.file())
        .with_context(|| format!("copying to {}", pending.temp_path().display()))?;
    pending
        .file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    pending
        .commit()
        .with_context(|| format!("renaming to {}", target.display()))?;
    eprintln!("copied {} to {}", iso.display(), target.display());
    Ok(target)
}
