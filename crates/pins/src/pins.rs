//! Reading, editing and writing `keypack.pins`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::key::{KeyError, PublicKey, Role, RoleError};

/// The pins file's name at the keys repository root.
pub const PINS_FILE: &str = "keypack.pins";

/// The header written into a new pins file. It says who writes the file and
/// that other comments are not kept, so nobody loses notes by surprise.
const DEFAULT_HEADER: &[&str] = &[
    "# keypack.pins: the expected SSH public key of each role, and retired keys.",
    "# Written by keypack (host new/rotate, user new/rotate, pin). Only the comment",
    "# lines at the top of this file are kept when keypack rewrites it.",
];

/// What is wrong with one line of a pins file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The role field is not a known role shape.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The key field is not a usable ssh-ed25519 public key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Wrong number of fields (a trailing key comment counts as one).
    #[error(
        "expected \"ROLE ssh-ed25519 AAAA...\" or \"retired ROLE ssh-ed25519 AAAA...\" (no key comment)"
    )]
    Malformed,
    /// A role pinned twice: which one wins would be a guess.
    #[error("duplicate role {role} (first pinned on line {first_line})")]
    DuplicateRole {
        /// The role.
        role: Role,
        /// Where it was first pinned.
        first_line: usize,
    },
    /// The same retired line twice.
    #[error("duplicate retired entry for {0}")]
    DuplicateRetired(Role),
    /// A key that is both pinned and retired: the file contradicts itself.
    #[error("key {fingerprint} is both pinned (line {pinned_line}) and retired")]
    PinnedAndRetired {
        /// The key's fingerprint.
        fingerprint: String,
        /// The line that pins it.
        pinned_line: usize,
    },
}

/// Errors loading or saving a pins file.
#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    /// A bad line; `file` and `line` (1-based) say where.
    #[error("{}:{line}: {error}", file.display())]
    Line {
        /// The file (or the name given to [`Pins::parse_named`]).
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        error: LineError,
    },
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not UTF-8.
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// Why [`Pins::set`] refused a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The key was retired: pinning it again would bless a rollback.
    #[error("key {fingerprint} was retired from {retired_role}; refusing to pin it again")]
    Retired {
        /// The key's fingerprint.
        fingerprint: String,
        /// The role it was retired from.
        retired_role: Role,
    },
    /// The key is already pinned for another role; one key per role.
    #[error("key {fingerprint} is already pinned for {other_role}")]
    InUse {
        /// The key's fingerprint.
        fingerprint: String,
        /// The role that has it.
        other_role: Role,
    },
}

/// The parsed pins file.
///
/// Equality compares the header comment, pins and retired keys, so
/// `Pins::parse(&p.render()) == Ok(p)` is the round-trip property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// Comment lines at the top of the file (each starting with `#`). Kept
    /// on rewrite; comments further down are dropped (documented in the
    /// default header).
    header: Vec<String>,
    pinned: BTreeMap<Role, PublicKey>,
    /// (role it was retired from, key)
    retired: BTreeSet<(Role, PublicKey)>,
}

impl Default for Pins {
    /// Empty pins with the default header comment.
    fn default() -> Pins {
        Pins {
            header: DEFAULT_HEADER.iter().map(|s| (*s).to_owned()).collect(),
            pinned: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }
}

impl Pins {
    /// Load `<repo_root>/keypack.pins`. A missing file is empty pins: a
    /// repository that never pinned anything still builds (with warnings
    /// from [`crate::check`], or errors with `require_pins`).
    pub fn load(repo_root: &Path) -> Result<Pins, PinsError> {
        let path = repo_root.join(PINS_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| PinsError::NotUtf8 { path: path.clone() })?;
                Pins::parse_named(&text, &path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Pins::default()),
            Err(source) => Err(PinsError::Io { path, source }),
        }
    }

    /// Parse pins text; errors name the file as `keypack.pins`.
    pub fn parse(text: &str) -> Result<Pins, PinsError> {
        Pins::parse_named(text, Path::new(PINS_FILE))
    }

    /// Parse pins text; errors name `file`. Lines may come in any order
    /// (a hand edit need not re-sort); [`Pins::render`] sorts.
    pub fn parse_named(text: &str, file: &Path) -> Result<Pins, PinsError> {
        let mut pins = Pins {
            header: Vec::new(),
            pinned: BTreeMap::new(),
            retired: BTreeSet::new(),
        };
        let mut pinned_line: BTreeMap<Role, usize> = BTreeMap::new();
        let mut seen_entry = false;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let err = |error: LineError| PinsError::Line {
                file: file.to_owned(),
                line: line_no,
                error,
            };
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') {
                if !seen_entry {
                    pins.header.push(line.to_owned());
                }
                continue;
            }
            seen_entry = true;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (retired, role, kind, b64) = match fields.as_slice() {
                ["retired", role, kind, b64] => (true, *role, *kind, *b64),
                [role, kind, b64] => (false, *role, *kind, *b64),
                _ => return Err(err(LineError::Malformed)),
            };
            let role = Role::parse(role).map_err(|e| err(e.into()))?;
            let key = PublicKey::from_fields(kind, b64).map_err(|e| err(e.into()))?;
            if retired {
                if !pins.retired.insert((role.clone(), key)) {
                    return Err(err(LineError::DuplicateRetired(role)));
                }
            } else {
                if let Some(first_line) = pinned_line.get(&role) {
                    return Err(err(LineError::DuplicateRole {
                        role,
                        first_line: *first_line,
                    }));
                }
                pinned_line.insert(role.clone(), line_no);
                pins.pinned.insert(role, key);
            }
        }
        // A key both pinned and retired; reported at the retired line would
        // need a second map, so name the pinning line instead.
        for (role, key) in &pins.pinned {
            if pins.retired.iter().any(|(_, k)| k == key) {
                let line = pinned_line.get(role).copied().unwrap_or(0);
                return Err(PinsError::Line {
                    file: file.to_owned(),
                    line,
                    error: LineError::PinnedAndRetired {
                        fingerprint: key.fingerprint(),
                        pinned_line: line,
                    },
                });
            }
        }
        Ok(pins)
    }

    /// The pinned key of `role`, if any.
    pub fn pin_for(&self, role: &Role) -> Option<&PublicKey> {
        self.pinned.get(role)
    }

    /// If `key` was retired, the role it was retired from.
    pub fn is_retired(&self, key: &PublicKey) -> Option<&Role> {
        self.retired.iter().find(|(_, k)| k == key).map(|(r, _)| r)
    }

    /// Every pin, sorted by role.
    pub fn pins(&self) -> impl Iterator<Item = (&Role, &PublicKey)> {
        self.pinned.iter()
    }

    /// Every retired key with the role it was retired from, sorted.
    pub fn retired(&self) -> impl Iterator<Item = (&Role, &PublicKey)> {
        self.retired.iter().map(|(r, k)| (r, k))
    }

    /// Pin `key` for `role`. A different key previously pinned for the role
    /// moves to the retired list, so a later build that finds the old key
    /// again (a rollback of the keys repository) fails. Setting the key a
    /// role already has is a no-op. Returns the key it retired, if any.
    ///
    /// Refuses a retired key (that would undo the rollback protection) and a
    /// key pinned for another role (one key must not unlock two roles).
    pub fn set(&mut self, role: Role, key: PublicKey) -> Result<Option<PublicKey>, SetError> {
        if let Some(retired_role) = self.is_retired(&key) {
            return Err(SetError::Retired {
                fingerprint: key.fingerprint(),
                retired_role: retired_role.clone(),
            });
        }
        if let Some((other, _)) = self.pinned.iter().find(|(r, k)| **k == key && **r != role) {
            return Err(SetError::InUse {
                fingerprint: key.fingerprint(),
                other_role: other.clone(),
            });
        }
        match self.pinned.insert(role.clone(), key) {
            Some(old) if old != key => {
                self.retired.insert((role, old));
                Ok(Some(old))
            }
            _ => Ok(None),
        }
    }

    /// The file text: header comments, a blank line, pins sorted by role,
    /// a blank line, retired keys sorted by role. Stable: rendering the
    /// same pins always gives the same bytes, so diffs show only real changes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            out.push_str(line);
            out.push('\n');
        }
        let has_entries = !self.pinned.is_empty() || !self.retired.is_empty();
        if !self.header.is_empty() && has_entries {
            out.push('\n');
        }
        for (role, key) in &self.pinned {
            out.push_str(&format!("{role} {}\n", key.to_openssh()));
        }
        if !self.pinned.is_empty() && !self.retired.is_empty() {
            out.push('\n');
        }
        for (role, key) in &self.retired {
            out.push_str(&format!("retired {role} {}\n", key.to_openssh()));
        }
        out
    }

    /// Write `<repo_root>/keypack.pins` atomically: a temporary name in the
    /// same folder (so the rename cannot cross file systems), fsync, rename
    /// over the old file, fsync the folder. A crash leaves either the old or
    /// the new file, never half of one. Mode 0644: it holds public keys only.
    pub fn save(&self, repo_root: &Path) -> Result<(), PinsError> {
        let path = repo_root.join(PINS_FILE);
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |source| PinsError::Io { path: p, source }
        };
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = repo_root.join(format!(".{PINS_FILE}.tmp.{}.{nonce}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            // The umask may have narrowed the mode; the file is public anyway.
            f.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_err(&tmp))?;
            f.write_all(self.render().as_bytes())
                .map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            drop(f);
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            fs::File::open(repo_root)
                .and_then(|d| d.sync_all())
                .map_err(io_err(repo_root))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}
