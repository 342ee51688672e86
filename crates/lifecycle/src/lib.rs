//! New and rotated SSH identities in a nix-keys repository: `keypack host new|rotate` and
//! `keypack user new|rotate`.
//!
//! **Where it sits.** Beside the key path, not on it: it *writes* the repository that
//! `keypack-repo` later reads. In: an [`Entity`] (a host with or without a deploy key, or a
//! user), the repository's `.sops.yaml` text and the existing sops files; out: freshly generated
//! [`NewKey`]s (plaintext only in [`SecretSlice`]s), the recipients a document must be encrypted
//! to ([`SopsConfig::recipients_for`]), the sops files that list a host's old age recipient
//! ([`scan_sops_files`]) and an ordered list of [`Write`]s that [`apply`] puts on disk.
//!
//! **What it does not do.** No decryption and no identity handling (the CLI unwraps data keys
//! with `keypack-identity`, one batch, one PIN); no `git` operations; no editing of `.sops.yaml`
//! beyond an exact string replacement of one recipient ([`replace_recipient`]), so comments,
//! anchors and layout stay as the user wrote them; keys are ed25519 only; plain age files are
//! never rewrapped (an X25519 stanza does not name its recipient, so there is no way to tell
//! which ones a host can open).
//!
//! **Reference.** sops 3.11's creation rules (`config/config.go`: the first rule whose
//! `path_regex` matches the path relative to the folder of `.sops.yaml`, an unanchored RE2
//! search, a rule without `path_regex` matching everything; `age` a comma-separated string or a
//! list; `key_groups[].age`), `shared/notes/decisions.md` "Host identities and pins (2026-12)"
//! (key comments, the pins file, ssh-to-age).
//!
//! **Why these choices.**
//! - Keys come from the OS RNG through `ssh-key` and are serialised straight into a zeroizing
//!   string; the plaintext never reaches a temp file, argv or the environment.
//! - The comment is `HOST`, `deploy@HOST` or `USER`, never a date or the operator's machine: the
//!   comment ends up in `authorized_keys` and `known_hosts` files and should say whose key it
//!   is, nothing about who made it.
//! - Every file goes through [`keypack_plugin::output::PendingFile`] (an unnamed or temp-named
//!   file in the target's folder, fsync, rename, fsync of the folder), then is made 0644: the
//!   files hold ciphertext or public data only. The order of writes is chosen so a crash never
//!   loses the only copy of a working key (see [`Write`] and `keypack host rotate`).
//! - More than one key group in a creation rule is refused: keypack writes one flat `age` list,
//!   which would turn "all groups needed" (sops' Shamir split) into "any recipient suffices".
#![forbid(unsafe_code)]

mod keygen;
mod scan;
mod sops_config;
mod write;

use std::path::PathBuf;

pub use keygen::{NewKey, generate, public_of};
pub use scan::{SopsFileInfo, scan_sops_files};
pub use sops_config::{
    SOPS_CONFIG, SopsConfig, replace_recipient, replaced_recipients, sops_nix_snippet,
};
pub use write::{Write, apply};

use keypack_layout::{HostName, KeyRole, UserName};
use keypack_pins::Role;

/// Why a lifecycle step failed. Variants name files, rules and roles, never a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The OS RNG or the key encoder failed while making a key.
    #[error("generating the {role} key: {reason}")]
    KeyGeneration {
        /// The role being generated (`hosts/web1/ssh_host_ed25519_key`).
        role: String,
        /// What failed (no key material).
        reason: String,
    },
    /// `.sops.yaml` is not YAML, or not shaped like a sops configuration.
    #[error("{file}: {message}")]
    SopsConfig {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No creation rule of `.sops.yaml` matches the path (or there is no `.sops.yaml`).
    #[error(
        "no creation rule in {file} matches {path}, so keypack does not know whom to encrypt it for"
    )]
    NoCreationRule {
        /// The configuration file (it may not exist).
        file: PathBuf,
        /// The repository-relative path of the document.
        path: String,
    },
    /// The matching rule has no age recipients (PGP/KMS only, or an empty list).
    #[error("{file}: creation rule #{rule} (the first to match {path}) lists no age recipients")]
    NoAgeRecipients {
        /// The configuration file.
        file: PathBuf,
        /// 1-based index of the rule.
        rule: usize,
        /// The repository-relative path.
        path: String,
    },
    /// The matching rule splits the key into several groups (Shamir).
    #[error(
        "{file}: creation rule #{rule} (the first to match {path}) has {groups} key groups; keypack writes one"
    )]
    KeyGroups {
        /// The configuration file.
        file: PathBuf,
        /// 1-based index of the rule.
        rule: usize,
        /// The repository-relative path.
        path: String,
        /// How many groups.
        groups: usize,
    },
    /// A name that is not a valid role (cannot happen for validated names).
    #[error("{0}")]
    Role(#[from] keypack_pins::RoleError),
    /// Reading or writing a repository file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl LifecycleError {
    /// A "what to do" line, printed by the CLI as `hint: …`.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            LifecycleError::NoCreationRule { .. } => Some(
                "add a creation rule for it to .sops.yaml (path_regex plus your age recipients), or pass --age RECIPIENT",
            ),
            LifecycleError::NoAgeRecipients { .. } => Some(
                "list your age recipients in that rule (`age:` or `key_groups: [{age: [...]}]`), or pass --age RECIPIENT",
            ),
            LifecycleError::KeyGroups { .. } => {
                Some("pass --age RECIPIENT for each recipient keypack should encrypt to")
            }
            _ => None,
        }
    }
}

/// Whose keys: a host (host key, and a deploy key when it has one) or a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// A host; `deploy` says whether it has (or gets) a deploy key.
    Host {
        /// The host.
        name: HostName,
        /// With a deploy key.
        deploy: bool,
    },
    /// A user.
    User {
        /// The user.
        name: UserName,
    },
}

/// One key an entity has: its bundle role, the pins role, the document field and the comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Role in the bundle (gives the path on the media).
    pub role: KeyRole,
    /// Role in `keypack.pins`.
    pub pin_role: Role,
    /// Field of the sops document (`ssh_host_ed25519_key`, …); the public key is `<field>_pub`.
    pub field: &'static str,
    /// The OpenSSH comment of a new key.
    pub comment: String,
}

impl Entity {
    /// The name (host or user).
    pub fn name(&self) -> &str {
        match self {
            Entity::Host { name, .. } => name.as_str(),
            Entity::User { name } => name.as_str(),
        }
    }

    /// `host` or `user`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Host { .. } => "host",
            Entity::User { .. } => "user",
        }
    }

    /// The keys of this entity, in document order.
    pub fn slots(&self) -> Result<Vec<KeySlot>, LifecycleError> {
        Ok(match self {
            Entity::Host { name, deploy } => {
                let mut v = vec![KeySlot {
                    role: KeyRole::Host,
                    pin_role: Role::host_key(name.as_str())?,
                    field: keypack_layout::HOST_KEY_NAME,
                    comment: name.to_string(),
                }];
                if *deploy {
                    v.push(KeySlot {
                        role: KeyRole::Deploy,
                        pin_role: Role::deploy_key(name.as_str())?,
                        field: keypack_layout::DEPLOY_KEY_NAME,
                        comment: format!("deploy@{name}"),
                    });
                }
                v
            }
            Entity::User { name } => vec![KeySlot {
                role: KeyRole::User(name.clone()),
                pin_role: Role::user_key(name.as_str())?,
                field: keypack_layout::USER_KEY_NAME,
                comment: name.to_string(),
            }],
        })
    }
}

/// The `(field, private)` and `(field_pub, public line)` lists [`keypack_sops::encrypt_document`]
/// takes, for generated keys (public fields are `<field>_pub`).
#[allow(clippy::type_complexity)]
pub fn document_fields(
    keys: &[NewKey],
) -> (
    Vec<(&'static str, secrecy::SecretSlice<u8>)>,
    Vec<(String, String)>,
) {
    let private = keys
        .iter()
        .map(|k| (k.slot.field, k.private_copy()))
        .collect();
    let public = keys
        .iter()
        .map(|k| (format!("{}_pub", k.slot.field), k.public_line.clone()))
        .collect();
    (private, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_name_roles_fields_and_comments() {
        let host = Entity::Host {
            name: HostName::new("web3").unwrap(),
            deploy: true,
        };
        let s = host.slots().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].pin_role.as_str(), "hosts/web3/ssh_host_ed25519_key");
        assert_eq!(s[0].comment, "web3");
        assert_eq!(s[1].field, "deploy_key_ed25519");
        assert_eq!(s[1].comment, "deploy@web3");
        let user = Entity::User {
            name: UserName::new("carol").unwrap(),
        };
        let s = user.slots().unwrap();
        assert_eq!(s[0].pin_role.as_str(), "users/carol/id_ed25519");
        assert_eq!(s[0].comment, "carol");
    }
}
