//! Checking the keys a build is about to pack against the pins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::key::{PublicKey, Role};
use crate::pins::Pins;

/// One key a build is about to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleKey {
    /// The role it will be packed as.
    pub role: Role,
    /// The file in the keys repository it came from (named in findings so
    /// the operator knows which file to look at).
    pub source: PathBuf,
    /// Its public key.
    pub key: PublicKey,
}

/// How strict [`check`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// A role without a pin is an error instead of a warning. For
    /// repositories that have pinned everything: a new, unpinned key then
    /// needs an explicit `keypack pin`.
    pub require_pins: bool,
}

/// One problem [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The role is pinned to a different key: the secret was swapped.
    Mismatch {
        /// The role.
        role: Role,
        /// The source file.
        source: PathBuf,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the key found.
        found: String,
    },
    /// The key was retired: the keys repository (or this file) was rolled back.
    Retired {
        /// The role it is being packed as.
        role: Role,
        /// The source file.
        source: PathBuf,
        /// The role it was retired from.
        retired_from: Role,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// The same key is packed for two or more roles.
    Shared {
        /// Its fingerprint.
        fingerprint: String,
        /// Every (role, source) using it.
        uses: Vec<(Role, PathBuf)>,
    },
    /// The role has no pin.
    Unpinned {
        /// The role.
        role: Role,
        /// The source file.
        source: PathBuf,
        /// Its fingerprint.
        fingerprint: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Mismatch {
                role,
                source,
                pinned,
                found,
            } => write!(
                f,
                "{role} ({}): key {found} does not match the pinned key {pinned}",
                source.display()
            ),
            Finding::Retired {
                role,
                source,
                retired_from,
                fingerprint,
            } => write!(
                f,
                "{role} ({}): key {fingerprint} was retired from {retired_from}; the keys repository may have been rolled back",
                source.display()
            ),
            Finding::Shared { fingerprint, uses } => {
                write!(f, "key {fingerprint} is used by more than one role:")?;
                for (i, (role, source)) in uses.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{role} ({})", source.display())?;
                }
                Ok(())
            }
            Finding::Unpinned {
                role,
                source,
                fingerprint,
            } => write!(
                f,
                "{role} ({}): no pin in keypack.pins for key {fingerprint}; record it with `keypack pin` after checking the fingerprint (`keypack verify`)",
                source.display()
            ),
        }
    }
}

/// What [`check`] found. A build must stop if `errors` is not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Findings that must stop the build.
    pub errors: Vec<Finding>,
    /// Findings to show but not stop for.
    pub warnings: Vec<Finding>,
}

impl CheckReport {
    /// True when there are no errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Check the keys a build is about to pack.
///
/// Errors: a pinned role whose key differs; a key listed as retired for any
/// role (rollback); one key in two roles. Unpinned roles are warnings, or
/// errors with [`CheckOptions::require_pins`]. A retired key is reported as
/// retired rather than also as a mismatch, since that is the likelier cause.
pub fn check(pins: &Pins, keys: &[BundleKey], options: CheckOptions) -> CheckReport {
    let mut report = CheckReport::default();
    let mut by_key: BTreeMap<PublicKey, Vec<(Role, PathBuf)>> = BTreeMap::new();
    for k in keys {
        by_key
            .entry(k.key)
            .or_default()
            .push((k.role.clone(), k.source.clone()));
        if let Some(retired_from) = pins.is_retired(&k.key) {
            report.errors.push(Finding::Retired {
                role: k.role.clone(),
                source: k.source.clone(),
                retired_from: retired_from.clone(),
                fingerprint: k.key.fingerprint(),
            });
            continue;
        }
        match pins.pin_for(&k.role) {
            Some(pinned) if *pinned == k.key => {}
            Some(pinned) => report.errors.push(Finding::Mismatch {
                role: k.role.clone(),
                source: k.source.clone(),
                pinned: pinned.fingerprint(),
                found: k.key.fingerprint(),
            }),
            None => {
                let finding = Finding::Unpinned {
                    role: k.role.clone(),
                    source: k.source.clone(),
                    fingerprint: k.key.fingerprint(),
                };
                if options.require_pins {
                    report.errors.push(finding);
                } else {
                    report.warnings.push(finding);
                }
            }
        }
    }
    for (key, mut uses) in by_key {
        uses.sort();
        uses.dedup_by(|a, b| a.0 == b.0);
        if uses.len() > 1 {
            report.errors.push(Finding::Shared {
                fingerprint: key.fingerprint(),
                uses,
            });
        }
    }
    report
}
