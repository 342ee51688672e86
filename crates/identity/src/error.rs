//! Errors of identity discovery and decryption.
//!
//! Every variant names a file (the caller's label or a path), a plugin or a YubiKey serial,
//! never a secret. Plugin text is cleaned ([`crate::ui::clean_plugin_text`]) before it is
//! stored, so the Unicode isolation marks and age-plugin-yubikey's feedback footer never
//! reach the user.

use std::path::PathBuf;

/// Why an identity could not be loaded or a file could not be decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No identity file was given and none of the default places holds one.
    #[error("no age identity file found (looked in: {})", display_paths(looked_in))]
    NotFound {
        /// The places that were tried, in order.
        looked_in: Vec<PathBuf>,
    },
    /// The identity file could not be read.
    #[error("cannot read identity file {}", path.display())]
    Read {
        /// The identity file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The identity file is larger than any sensible identity file.
    #[error("identity file {} is too large", path.display())]
    TooLarge {
        /// The identity file.
        path: PathBuf,
    },
    /// A line of the identity file is neither a comment, an X25519 key nor a plugin identity.
    #[error("identity file {} line {line} is not an age identity", path.display())]
    InvalidLine {
        /// The identity file.
        path: PathBuf,
        /// 1-based line number (the content is never shown).
        line: usize,
    },
    /// The identity file holds no identity at all.
    #[error("identity file {} holds no age identity", path.display())]
    Empty {
        /// The identity file.
        path: PathBuf,
    },
    /// The plugin binary (`age-plugin-NAME`) is not on `PATH`.
    #[error("{file}: {binary} was not found on PATH")]
    PluginMissing {
        /// The file that needed it.
        file: String,
        /// The binary name, e.g. `age-plugin-yubikey`.
        binary: String,
    },
    /// The YubiKey named by the identity is not plugged in (or pcscd is not running).
    #[error("{file}: YubiKey{} is not present: {message}", serial_suffix(*serial))]
    YubiKeyAbsent {
        /// The file that needed it.
        file: String,
        /// The YubiKey's serial, from the identity stub.
        serial: Option<u32>,
        /// The plugin's own words (cleaned).
        message: String,
    },
    /// The PIN was wrong.
    #[error("{file}: wrong PIN for YubiKey{}{}", serial_suffix(*serial), tries_suffix(*tries_left))]
    WrongPin {
        /// The file that needed it.
        file: String,
        /// The YubiKey's serial.
        serial: Option<u32>,
        /// Tries left before the PIN is blocked, when the card said so.
        tries_left: Option<u32>,
    },
    /// The PIN is blocked (no tries left).
    #[error("{file}: the PIN of YubiKey{} is blocked", serial_suffix(*serial))]
    PinBlocked {
        /// The file that needed it.
        file: String,
        /// The YubiKey's serial.
        serial: Option<u32>,
    },
    /// The card needs a PIN and none could be obtained (no terminal, no pinentry, cancelled,
    /// or too many asks).
    #[error("{file}: a PIN is required for YubiKey{} and none was entered", serial_suffix(*serial))]
    PinRequired {
        /// The file that needed it.
        file: String,
        /// The YubiKey's serial.
        serial: Option<u32>,
    },
    /// None of the identities held can decrypt the file.
    #[error(
        "{file}: no identity matches; the file is encrypted to: {}; you hold: {}",
        list_or_none(recipients),
        list_or_none(held)
    )]
    NoMatchingIdentity {
        /// The file.
        file: String,
        /// What the file's stanzas say about their recipients (X25519, piv-p256 tags, …).
        recipients: Vec<String>,
        /// The recipients of the identities held.
        held: Vec<String>,
    },
    /// The plugin reported an error that has no more specific variant.
    #[error("{file}: {binary}: {message}")]
    Plugin {
        /// The file.
        file: String,
        /// The plugin binary.
        binary: String,
        /// The plugin's message (cleaned).
        message: String,
    },
    /// The plugin died or broke the protocol.
    #[error("{file}: {binary} failed: {reason}")]
    PluginFailed {
        /// The file.
        file: String,
        /// The plugin binary.
        binary: String,
        /// What went wrong (an I/O error description, never protocol content).
        reason: String,
    },
    /// The data is not an age file (or its header is corrupt).
    #[error("{file}: not a valid age file")]
    Malformed {
        /// The file.
        file: String,
    },
    /// The file key was found but the header MAC or the payload did not authenticate.
    #[error("{file}: decryption failed (corrupt or tampered age file)")]
    DecryptFailed {
        /// The file.
        file: String,
    },
}

impl IdentityError {
    /// What the user can do about it, one line, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            Self::NotFound { .. } => {
                "pass --identity FILE, or set KEYPACK_IDENTITY / SOPS_AGE_KEY_FILE to the path of an age identity file"
            }
            Self::InvalidLine { .. } | Self::Empty { .. } => {
                "an identity file holds AGE-SECRET-KEY-1… or AGE-PLUGIN-…-1… lines; `age-plugin-yubikey --identity` prints one for a YubiKey"
            }
            Self::PluginMissing { .. } => {
                "install age-plugin-yubikey (`cargo install age-plugin-yubikey --locked`) and put it on PATH; `keypack doctor` checks this"
            }
            Self::YubiKeyAbsent { .. } => {
                "plug in the YubiKey named in the identity file and make sure pcscd is running (`keypack doctor`)"
            }
            Self::WrongPin { .. } => {
                "run the command again with the right PIN; the PIN is blocked after too many failures"
            }
            Self::PinBlocked { .. } => {
                "unblock the PIN with the PUK (`ykman piv access unblock-pin`), then retry"
            }
            Self::PinRequired { .. } => {
                "run keypack from a terminal, or install a pinentry program (PINENTRY_PROGRAM) so the PIN can be asked"
            }
            Self::NoMatchingIdentity { .. } => {
                "use an identity file whose recipient is among the file's recipients (`keypack doctor -H HOST` compares them)"
            }
            Self::PluginFailed { .. } => {
                "set AGEDEBUG=plugin to see the plugin's own output (it may print secrets; never in CI)"
            }
            Self::Malformed { .. } | Self::DecryptFailed { .. } => {
                "the encrypted file is damaged; restore it from the keys repository's history"
            }
            Self::Read { .. } | Self::TooLarge { .. } | Self::Plugin { .. } => return None,
        })
    }

    /// Whether this error is a YubiKey PIN failure that a new session may fix.
    pub(crate) fn is_wrong_pin(&self) -> bool {
        matches!(self, Self::WrongPin { tries_left, .. } if *tries_left != Some(0))
    }

    /// Relabel an error that was produced for one file and applies to another.
    pub(crate) fn for_file(&self, label: &str) -> IdentityError {
        let file = label.to_owned();
        match self {
            Self::PluginMissing { binary, .. } => Self::PluginMissing {
                file,
                binary: binary.clone(),
            },
            Self::YubiKeyAbsent {
                serial, message, ..
            } => Self::YubiKeyAbsent {
                file,
                serial: *serial,
                message: message.clone(),
            },
            Self::WrongPin {
                serial, tries_left, ..
            } => Self::WrongPin {
                file,
                serial: *serial,
                tries_left: *tries_left,
            },
            Self::PinBlocked { serial, .. } => Self::PinBlocked {
                file,
                serial: *serial,
            },
            Self::PinRequired { serial, .. } => Self::PinRequired {
                file,
                serial: *serial,
            },
            Self::NoMatchingIdentity {
                recipients, held, ..
            } => Self::NoMatchingIdentity {
                file,
                recipients: recipients.clone(),
                held: held.clone(),
            },
            Self::Plugin {
                binary, message, ..
            } => Self::Plugin {
                file,
                binary: binary.clone(),
                message: message.clone(),
            },
            Self::PluginFailed { binary, reason, .. } => Self::PluginFailed {
                file,
                binary: binary.clone(),
                reason: reason.clone(),
            },
            Self::Malformed { .. } => Self::Malformed { file },
            Self::DecryptFailed { .. } => Self::DecryptFailed { file },
            Self::NotFound { looked_in } => Self::NotFound {
                looked_in: looked_in.clone(),
            },
            Self::Read { path, source } => Self::Read {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::TooLarge { path } => Self::TooLarge { path: path.clone() },
            Self::InvalidLine { path, line } => Self::InvalidLine {
                path: path.clone(),
                line: *line,
            },
            Self::Empty { path } => Self::Empty { path: path.clone() },
        }
    }

    /// Rank used to pick the most useful error when several apply to one file.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::PinBlocked { .. } => 9,
            Self::WrongPin { .. } => 8,
            Self::PinRequired { .. } => 7,
            Self::PluginMissing { .. } => 6,
            Self::YubiKeyAbsent { .. } => 5,
            Self::DecryptFailed { .. } => 4,
            Self::Plugin { .. } => 3,
            Self::PluginFailed { .. } => 2,
            Self::Malformed { .. } => 1,
            _ => 0,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn serial_suffix(serial: Option<u32>) -> String {
    serial.map(|s| format!(" {s}")).unwrap_or_default()
}

fn tries_suffix(tries: Option<u32>) -> String {
    match tries {
        Some(1) => " (1 try left before it is blocked)".to_owned(),
        Some(n) => format!(" ({n} tries left before it is blocked)"),
        None => String::new(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}
