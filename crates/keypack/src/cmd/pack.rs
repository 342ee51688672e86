//! `keypack pack`: decrypt a host's (and users') keys and write the bundle, `keys.tar.gz`.
//!
//! Output rules (coreos-installer's): `-o FILE` is written 0600 under a temp name in FILE's own
//! folder and renamed into place only once complete, so a failure leaves no file (or the old
//! one, with `-f`); `-o -` streams to standard output and refuses a terminal. The output is
//! checked before anything is decrypted, so a mistake costs no YubiKey touch.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use keypack_plugin::output::PendingFile;

use crate::cmd::{CliError, KeyArgs};
use crate::keys;

/// Flags of `keypack pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Where to write the bundle (mode 0600); `-` writes to standard output, which must not be
    /// a terminal
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Replace OUT if it exists (atomically: the old file stays if packing fails)
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub seal: super::seal::SealArgs,
    #[command(flatten)]
    pub burn: crate::cmd::burn::BurnArgs,
}

/// Where the bundle goes.
enum Output {
    Stdout,
    File(PathBuf),
}

/// `keypack pack`.
pub fn pack(args: PackArgs) -> Result<ExitCode> {
    let output = check_output(&args.output, args.force)?;
    let mut selection = args.keys.selection();
    args.burn.apply(&mut selection, None)?;
    if let Output::File(path) = &output {
        refuse_inside_repo(path, &selection)?;
        keypack_plugin::output::check_private_output_folder(path)
            .with_context(|| format!("-o {}", path.display()))?;
    }
    let passphrase = args.seal.ask(selection.host.as_str())?;
    let bundle = keys::pack_bundle_sealed(&selection, passphrase)?;
    let keys = bundle
        .manifest()
        .entries
        .iter()
        .filter(|e| !e.public)
        .count();
    match &output {
        Output::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bundle.expose_archive())
                .and_then(|()| out.flush())
                .context("writing the bundle to standard output")?;
        }
        Output::File(path) => {
            let mut pending = PendingFile::create(path)
                .with_context(|| format!("creating a temp file beside {}", path.display()))?;
            pending
                .file()
                .write_all(bundle.expose_archive())
                .with_context(|| format!("writing {}", pending.temp_path().display()))?;
            pending
                .commit()
                .with_context(|| format!("renaming the bundle into place at {}", path.display()))?;
            eprintln!(
                "packed {keys} key(s) of host {} into {} ({} bytes, mode 0600){}",
                selection.host,
                path.display(),
                bundle.archive_len(),
                if bundle.manifest().sealed.is_some() {
                    ", sealed (age, scrypt)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_output(path: &Path, force: bool) -> Result<Output> {
    if path.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            return Err(CliError::StdoutIsTerminal.into());
        }
        return Ok(Output::Stdout);
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Err(CliError::OutputFolderMissing {
            path: path.to_path_buf(),
            folder,
        }
        .into());
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(CliError::OutputIsFolder {
            path: path.to_path_buf(),
        }
        .into()),
        Ok(_) if !force => Err(CliError::OutputExists {
            path: path.to_path_buf(),
        }
        .into()),
        _ => Ok(Output::File(path.to_path_buf())),
    }
}

/// Plaintext keys must never land in the (usually git-tracked) keys repository.
pub(super) fn refuse_inside_repo(path: &Path, selection: &keys::KeySelection) -> Result<()> {
    let Ok(repo) = keys::resolve_keys_repo(selection.keys_repo.as_deref()) else {
        return Ok(()); // the pack itself reports the missing repository
    };
    let (Ok(repo), Some(folder)) = (
        std::fs::canonicalize(&repo),
        path.parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .and_then(|p| std::fs::canonicalize(p).ok()),
    ) else {
        return Ok(());
    };
    if folder.starts_with(&repo) {
        return Err(CliError::OutputInRepo {
            path: path.to_path_buf(),
            repo,
        }
        .into());
    }
    Ok(())
}
