//! Errors of the sops layer.
//!
//! Every variant names *where* something failed (the file-internal field path such as `users:1`,
//! the age entry, the metadata key), never a value: these messages end up in logs and terminals,
//! and the values are secrets. AES-GCM and MAC failures are opaque, as in `age`.

use thiserror::Error;

/// Why a sops or age file could not be parsed or decrypted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SopsError {
    /// The file is not well-formed (bad YAML/JSON/dotenv/INI syntax, a bad `ENC[...]` envelope,
    /// bad metadata). `what` describes the problem and its location, never a value.
    #[error("malformed sops file: {what}")]
    Malformed {
        /// What is wrong and where (line/column or field path).
        what: String,
    },
    /// The file has no `sops` metadata: it is not a sops-encrypted file.
    #[error("no sops metadata found (not a sops-encrypted file?)")]
    NotSops,
    /// The metadata has no `mac`, or it is empty. sops files always carry one; a file without
    /// it cannot be authenticated and is refused.
    #[error(
        "the sops metadata has no MAC (missing or empty `mac`): refusing an unauthenticated file"
    )]
    MissingMac,
    /// The MAC did not verify: a value, the order of values, `lastmodified` or the MAC itself was
    /// changed after encryption (or the data key is wrong).
    #[error("MAC mismatch: the file was modified after it was encrypted")]
    MacMismatch,
    /// A value did not authenticate under the data key (AES-GCM tag failure): the value was
    /// changed or moved to another key.
    #[error("value at `{path}` failed authentication (tampered or moved)")]
    ValueAuth {
        /// Field path, keys joined by `:`, list positions as numbers (e.g. `users:1`).
        path: String,
    },
    /// A value that the file's encryption rules say must be encrypted is not an `ENC[...]` string.
    #[error("value at `{path}` should be encrypted but is not")]
    NotEncrypted {
        /// Field path (e.g. `nested:deep:value`).
        path: String,
    },
    /// None of the identities given could unwrap the data key from any `age` entry.
    #[error("no identity matches any age recipient of this file (recipients: {})", recipients.join(", "))]
    NoMatchingIdentity {
        /// The `recipient` strings listed in the file (public keys).
        recipients: Vec<String>,
    },
    /// The file lists no `age` entries (only PGP/KMS/... key sources, which keypack does not use).
    #[error("the file has no age recipients (only age is supported)")]
    NoAgeRecipients,
    /// The file uses several key groups (Shamir secret sharing), which keypack does not support.
    #[error("the file uses {groups} key groups (Shamir); only one key group is supported")]
    UnsupportedKeyGroups {
        /// Number of key groups found.
        groups: usize,
    },
    /// The decrypted data key does not have the 32 bytes AES-256 needs.
    #[error("the data key has {len} bytes, expected 32")]
    BadDataKey {
        /// Length found.
        len: usize,
    },
    /// An age file (a sops `enc` entry or a plain `.age` file) could not be processed for a reason
    /// other than "no matching identity": bad armor, truncated header, plugin failure, ...
    #[error("age decryption of {entry} failed: {reason}")]
    Age {
        /// Which age file: `sops.age[0] (age1…)` or `age file`.
        entry: String,
        /// age's error message (never contains key material).
        reason: String,
    },
    /// The operating system's random number generator failed (no data key or IV could be made).
    #[error("the system random number generator failed: {reason}")]
    Rng {
        /// The OS error.
        reason: String,
    },
    /// A recipient string could not be used for encryption: not an `age1…` X25519 key or an
    /// `age1<plugin>1…` plugin recipient, or its plugin binary is not on PATH.
    #[error("cannot encrypt to recipient `{recipient}`: {reason}")]
    BadRecipient {
        /// The recipient as given (a public key).
        recipient: String,
        /// Why.
        reason: String,
    },
    /// The caller asked for something the writer cannot produce (a field name sops would
    /// misread, a duplicate field, an unsupported output store, no recipients, …).
    #[error("cannot write sops file: {what}")]
    InvalidInput {
        /// What is wrong (names a field, never a value).
        what: String,
    },
    /// A sops feature keypack does not implement (e.g. comment-based encryption rules).
    #[error("unsupported sops feature: {what}")]
    Unsupported {
        /// The feature.
        what: String,
    },
}

impl SopsError {
    /// A "what to do" line for the CLI, printed apart from the error itself.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SopsError::NoMatchingIdentity { .. } => Some(
                "check that the identity file (or YubiKey) belongs to one of the listed recipients",
            ),
            SopsError::MacMismatch | SopsError::ValueAuth { .. } => Some(
                "the file was modified; restore it from version control and re-encrypt with sops",
            ),
            SopsError::MissingMac => Some("re-encrypt the file with `sops encrypt`"),
            SopsError::UnsupportedKeyGroups { .. } => Some(
                "re-encrypt the file with a single key group (`sops updatekeys` after editing .sops.yaml)",
            ),
            SopsError::Age { .. } | SopsError::BadRecipient { .. } => {
                Some("is the age plugin (e.g. age-plugin-yubikey) on PATH?")
            }
            _ => None,
        }
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> SopsError {
    SopsError::Malformed { what: what.into() }
}
