//! Where keypack keeps per-host state: `$KEYPACK_STATE_DIR/<host>/` or
//! `$XDG_STATE_HOME/keypack/<host>/` (default `~/.local/state/keypack/<host>/`), mode 0700.
//! Images, boot descriptions, QEMU sockets, pidfiles and logs live there, never in a shared
//! `/tmp` and never in the Nix store.
#![allow(dead_code)] // until `build` and `run` use it

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use keypack_layout::HostName;

/// The root state folder (not created).
pub fn state_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEYPACK_STATE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("keypack"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/keypack")),
        None => bail!("cannot find a state folder: set KEYPACK_STATE_DIR or HOME"),
    }
}

/// The host's state folder, created 0700 and checked to be private.
pub fn host_dir(host: &HostName) -> Result<PathBuf> {
    let root = state_root()?;
    keypack_plugin::output::ensure_private_dir(&root)
        .with_context(|| format!("preparing state folder {}", root.display()))?;
    let dir = root.join(host.as_str());
    keypack_plugin::output::ensure_private_dir(&dir)
        .with_context(|| format!("preparing state folder {}", dir.display()))?;
    Ok(dir)
}
