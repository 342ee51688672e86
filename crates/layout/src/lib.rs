//! The bundle layout: which files a keypack bundle may hold, where, and with what modes.
//!
//! Sits at the centre of the data path: the bundle writer (`keypack-bundle`), the initrd medium
//! and the stage-1 `load-keys` binary all take paths, modes and name rules from here, so the
//! writer and the reader agree by construction.
//!
//! Does **not** read or write files, and has no dependencies, so that `load-keys` stays small.
//!
//! Layout (the seed's, which the ISO's `load-keys` expects):
//! - `etc/ssh/ssh_host_ed25519_key` (0600) and `.pub` (0644)
//! - `root/.ssh/deploy_key_ed25519` (0600) and `.pub` (0644), when present
//! - `users/<u>/.ssh/id_ed25519` (0600) and `.pub` (0644), one pair per user
//!
//! Why names are validated here rather than at each use: a host or user name becomes a path
//! component on the operator's machine (the keys repository) and on the target (`users/<u>`),
//! so one rule, checked once when the name is parsed, closes traversal on both sides.
#![forbid(unsafe_code)]

use std::fmt;

/// Mode of every private key file in the bundle and on the target.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of every public key file in the bundle and on the target.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of `.ssh` folders and of the user staging folders.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of `etc` and `etc/ssh`.
pub const PUBLIC_DIR_MODE: u32 = 0o755;

/// Field and file name of the host key in a keys repository and in the bundle.
pub const HOST_KEY_NAME: &str = "ssh_host_ed25519_key";
/// Field and file name of the deploy key (root's key for pulling private repositories).
pub const DEPLOY_KEY_NAME: &str = "deploy_key_ed25519";
/// Field and file name of a user's key.
pub const USER_KEY_NAME: &str = "id_ed25519";

/// Largest file `load-keys` and the bundle reader accept: an OpenSSH ed25519 private key is
/// about 400 bytes, so anything near this bound is not a key.
pub const MAX_KEY_FILE_SIZE: u64 = 16 * 1024;

/// Path, inside a bundle sealed with `--seal passphrase`, of the one age file (scrypt recipient)
/// that holds the private keys' tar; the `.pub` files stay beside it in plaintext.
pub const SEALED_BLOB_PATH: &str = "keypack/sealed.age";
/// Mode of the sealed blob (and of the `keypack` folder, 0700, in the initrd medium's cpio).
pub const SEALED_BLOB_MODE: u32 = 0o600;
/// Largest sealed blob `load-keys` and the bundle reader accept: 256 users' keys and their tar
/// headers are well under this.
pub const MAX_SEALED_BLOB_SIZE: u64 = 1024 * 1024;
/// The burn mark (`--burn-after-boot`): a plaintext marker file in the bundle whose content
/// (32 hex digits and a newline) names this exact bundle. `load-keys` finds it in the initramfs
/// and burns the Ventoy bundle that carries the same token (`keypack-burn`).
pub const BURN_MARK_PATH: &str = "keypack/burn-after-boot";
/// Mode of the burn mark (it is not secret).
pub const BURN_MARK_MODE: u32 = 0o644;

/// Whether `token` is a burn mark token as keypack writes it (32 lowercase hex digits): checked
/// by the bundle builder before it writes one and by `load-keys` before it acts on one.
pub fn is_burn_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a host or user name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong,
    /// The name is `.` or `..`.
    DotName,
    /// The name holds a character outside `[A-Za-z0-9._-]` (a `/`, a control character, …).
    BadCharacter,
    /// The name starts with `-` or `.`, which tools would read as an option or a hidden file.
    BadStart,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "name is empty",
            NameError::TooLong => "name is longer than 64 characters",
            NameError::DotName => "name is `.` or `..`",
            NameError::BadCharacter => "name may hold only letters, digits, `.`, `_` and `-`",
            NameError::BadStart => "name may not start with `-` or `.`",
        })
    }
}

impl std::error::Error for NameError {}

/// Longest host or user name accepted (Linux user names are at most 32; host labels 63).
pub const MAX_NAME_LEN: usize = 64;

/// Checks a host or user name: `[A-Za-z0-9_][A-Za-z0-9._-]*`, at most 64 bytes.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadCharacter);
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err(NameError::BadStart);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: &str) -> Result<Self, NameError> {
                validate_name(name)?;
                Ok(Self(name.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A validated host name (`-H`).
    HostName
);
name_type!(
    /// A validated user name (`-U`).
    UserName
);

/// Which key a bundle entry holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyRole {
    /// The machine's SSH host key.
    Host,
    /// root's deploy key.
    Deploy,
    /// A user's key.
    User(UserName),
}

impl KeyRole {
    /// The field (and file) name this key has in a keys repository.
    pub fn field_name(&self) -> &'static str {
        match self {
            KeyRole::Host => HOST_KEY_NAME,
            KeyRole::Deploy => DEPLOY_KEY_NAME,
            KeyRole::User(_) => USER_KEY_NAME,
        }
    }

    /// Path of the private key inside the bundle, without a leading `/`.
    pub fn private_path(&self) -> String {
        match self {
            KeyRole::Host => format!("etc/ssh/{HOST_KEY_NAME}"),
            KeyRole::Deploy => format!("root/.ssh/{DEPLOY_KEY_NAME}"),
            KeyRole::User(u) => format!("users/{u}/.ssh/{USER_KEY_NAME}"),
        }
    }

    /// Path of the public key inside the bundle.
    pub fn public_path(&self) -> String {
        format!("{}.pub", self.private_path())
    }

    /// Parent folders of this key's files, outermost first, with the owner-root modes the
    /// initrd medium gives them (see `decisions.md`: the kernel unpacker needs every parent).
    pub fn parent_dirs(&self) -> Vec<(String, u32)> {
        match self {
            KeyRole::Host => vec![
                ("etc".into(), PUBLIC_DIR_MODE),
                ("etc/ssh".into(), PUBLIC_DIR_MODE),
            ],
            KeyRole::Deploy => vec![
                ("root".into(), PRIVATE_DIR_MODE),
                ("root/.ssh".into(), PRIVATE_DIR_MODE),
            ],
            KeyRole::User(u) => vec![
                ("users".into(), PRIVATE_DIR_MODE),
                (format!("users/{u}"), PRIVATE_DIR_MODE),
                (format!("users/{u}/.ssh"), PRIVATE_DIR_MODE),
            ],
        }
    }
}

/// One file the layout allows, as recognised from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFile {
    /// Whose key it is.
    pub role: KeyRole,
    /// `true` for the `.pub` half.
    pub public: bool,
}

impl KnownFile {
    /// The mode this file must have.
    pub fn mode(&self) -> u32 {
        if self.public {
            PUBLIC_MODE
        } else {
            PRIVATE_MODE
        }
    }
}

/// Recognises a bundle path (`etc/ssh/ssh_host_ed25519_key`, `users/alice/.ssh/id_ed25519.pub`,
/// …). Anything else, including `./`-prefixed, absolute or `..` paths, is `None`.
pub fn classify(path: &str) -> Option<KnownFile> {
    let (base, public) = match path.strip_suffix(".pub") {
        Some(base) => (base, true),
        None => (path, false),
    };
    let role = match base.split('/').collect::<Vec<_>>().as_slice() {
        ["etc", "ssh", HOST_KEY_NAME] => KeyRole::Host,
        ["root", ".ssh", DEPLOY_KEY_NAME] => KeyRole::Deploy,
        ["users", user, ".ssh", USER_KEY_NAME] => KeyRole::User(UserName::new(user).ok()?),
        _ => return None,
    };
    Some(KnownFile { role, public })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_traversal_and_controls() {
        for bad in [
            "", ".", "..", "a/b", "../x", "-rf", ".hidden", "a\nb", "a b", "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
        for good in ["web-1", "alice", "db.example", "a_b", "0"] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn paths_round_trip_through_classify() {
        let alice = KeyRole::User(UserName::new("alice").unwrap());
        for role in [KeyRole::Host, KeyRole::Deploy, alice] {
            let private = classify(&role.private_path()).unwrap();
            assert_eq!(private.role, role);
            assert_eq!(private.mode(), PRIVATE_MODE);
            let public = classify(&role.public_path()).unwrap();
            assert!(public.public);
            assert_eq!(public.mode(), PUBLIC_MODE);
        }
    }

    #[test]
    fn classify_refuses_unknown_and_tricky_paths() {
        for bad in [
            "./etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_rsa_key",
            "users/../.ssh/id_ed25519",
            "users/a/b/.ssh/id_ed25519",
            "etc/ssh/",
            "etc",
        ] {
            assert!(classify(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parents_come_before_children() {
        let role = KeyRole::User(UserName::new("bob").unwrap());
        let dirs = role.parent_dirs();
        assert_eq!(dirs.first().unwrap().0, "users");
        assert_eq!(dirs.last().unwrap().0, "users/bob/.ssh");
        assert!(dirs.iter().all(|(_, m)| *m == PRIVATE_DIR_MODE));
        assert!(role.private_path().starts_with(&dirs.last().unwrap().0));
    }
}
