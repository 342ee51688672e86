//! Checks the keys a bundle is about to carry against the keys repository's `keypack.pins`
//! (`keypack-pins`): a pinned role must carry exactly its pinned key, a retired key is refused
//! anywhere (a rolled-back repository), and an unpinned role is a warning, or an error with
//! `--require-pins` / `require_pins = true` in `keypack.toml`.
//!
//! Why here and not in the bundle crate: pins are a property of the repository (which file a
//! key came from, what the operator reviewed), the bundle knows only roles and bytes. One key
//! in two roles is already refused by `BundleBuilder` (with `--allow-shared-key` as the way
//! through), so the pins' own shared-key finding is not repeated.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keypack_layout::{HostName, KeyRole};
use keypack_pins::{BundleKey, CheckOptions, Finding, Pins, PublicKey, Role};

/// One key ready to be packed: its role, the repository file (relative) and its public key
/// (an OpenSSH line).
pub struct Candidate<'a> {
    pub role: &'a KeyRole,
    pub source: &'a Path,
    pub public_line: &'a str,
}

/// The pins' role name for a bundle role of `host`.
pub fn pin_role(host: &HostName, role: &KeyRole) -> Result<Role> {
    let role = match role {
        KeyRole::Host => Role::host_key(host.as_str()),
        KeyRole::Deploy => Role::deploy_key(host.as_str()),
        KeyRole::User(u) => Role::user_key(u.as_str()),
    };
    role.context("naming a pinned role")
}

/// Checks `candidates` against `<root>/keypack.pins`. Prints warnings (unpinned roles) on
/// stderr and returns the errors, each with the bundle role it is about.
pub fn check(
    root: &Path,
    host: &HostName,
    candidates: &[Candidate<'_>],
    require_pins: bool,
) -> Result<Vec<(KeyRole, String)>> {
    let pins = Pins::load(root)
        .with_context(|| format!("reading {}", root.join(keypack_pins::PINS_FILE).display()))?;
    let mut keys = Vec::with_capacity(candidates.len());
    let mut roles = Vec::with_capacity(candidates.len());
    for c in candidates {
        let key = PublicKey::parse_openssh(c.public_line)
            .with_context(|| format!("{}: the derived public key", c.source.display()))?;
        let role = pin_role(host, c.role)?;
        roles.push((role.clone(), c.role.clone()));
        keys.push(BundleKey {
            role,
            source: PathBuf::from(c.source),
            key,
        });
    }
    let report = keypack_pins::check(&pins, &keys, CheckOptions { require_pins });
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let bundle_role = |r: &Role| {
        roles
            .iter()
            .find(|(pin, _)| pin == r)
            .map(|(_, role)| role.clone())
    };
    let mut errors = Vec::new();
    for finding in report.errors {
        let role = match &finding {
            Finding::Mismatch { role, .. }
            | Finding::Retired { role, .. }
            | Finding::Unpinned { role, .. } => role,
            // BundleBuilder refuses these (or was told to allow them).
            Finding::Shared { .. } => continue,
        };
        if let Some(bundle_role) = bundle_role(role) {
            errors.push((bundle_role, finding.to_string()));
        }
    }
    Ok(errors)
}
