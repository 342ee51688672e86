//! Roles and ed25519 public keys as they appear in the pins file.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

const KEY_TYPE: &str = "ssh-ed25519";

/// Why a role string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// Not one of the three role shapes keypack knows.
    #[error(
        "bad role {0:?}: expected hosts/H/ssh_host_ed25519_key, hosts/H/deploy_key_ed25519 or users/U/id_ed25519"
    )]
    Shape(String),
    /// The host or user name has characters that do not belong in a path
    /// component (it becomes one on the media).
    #[error("bad role {0:?}: the name may use only A-Z a-z 0-9 . _ - and must not start with '.'")]
    Name(String),
}

/// A role: which secret a key belongs to, e.g. `hosts/web1/ssh_host_ed25519_key`.
///
/// Validated on construction so the pins file can never hold a role keypack
/// would not pack (a typo would otherwise silently pin nothing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

impl Role {
    /// Parse and validate a role string.
    pub fn parse(s: &str) -> Result<Role, RoleError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_shape = matches!(
            parts.as_slice(),
            ["hosts", _, "ssh_host_ed25519_key" | "deploy_key_ed25519"]
                | ["users", _, "id_ed25519"]
        );
        if !ok_shape {
            return Err(RoleError::Shape(s.to_owned()));
        }
        let name = parts[1];
        let good = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !good {
            return Err(RoleError::Name(s.to_owned()));
        }
        Ok(Role(s.to_owned()))
    }

    /// `hosts/H/ssh_host_ed25519_key` for host `H`.
    pub fn host_key(host: &str) -> Result<Role, RoleError> {
        Role::parse(&format!("hosts/{host}/ssh_host_ed25519_key"))
    }

    /// `hosts/H/deploy_key_ed25519` for host `H`.
    pub fn deploy_key(host: &str) -> Result<Role, RoleError> {
        Role::parse(&format!("hosts/{host}/deploy_key_ed25519"))
    }

    /// `users/U/id_ed25519` for user `U`.
    pub fn user_key(user: &str) -> Result<Role, RoleError> {
        Role::parse(&format!("users/{user}/id_ed25519"))
    }

    /// The role as written in the pins file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an OpenSSH public key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Only ed25519 keys are pinned (keypack generates nothing else).
    #[error("not an ssh-ed25519 key (key type {0:?})")]
    NotEd25519(String),
    /// The base64 part does not decode.
    #[error("bad base64 in public key")]
    BadBase64,
    /// The base64 decodes, but not to an ssh-ed25519 wire blob.
    #[error("public key blob is not a well-formed ssh-ed25519 key")]
    BadBlob,
    /// Missing fields, or (with [`PublicKey::parse_openssh_strict`]) extra ones.
    #[error("expected \"ssh-ed25519 AAAA...\"")]
    Malformed,
}

/// An ed25519 public key (the 32 raw bytes).
///
/// Ordered by bytes so sets of keys render in a stable order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Wrap raw ed25519 public key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parse `ssh-ed25519 AAAA… [comment]` as found in a `.pub` file; the
    /// comment is ignored (it is not part of the identity).
    pub fn parse_openssh(s: &str) -> Result<PublicKey, KeyError> {
        let mut it = s.split_whitespace();
        let (Some(kind), Some(b64)) = (it.next(), it.next()) else {
            return Err(KeyError::Malformed);
        };
        Self::from_fields(kind, b64)
    }

    /// Parse `ssh-ed25519 AAAA…` with no comment, as the pins file has it.
    pub fn parse_openssh_strict(s: &str) -> Result<PublicKey, KeyError> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        match fields.as_slice() {
            [kind, b64] => Self::from_fields(kind, b64),
            [kind, ..] if *kind != KEY_TYPE => Err(KeyError::NotEd25519((*kind).to_owned())),
            _ => Err(KeyError::Malformed),
        }
    }

    pub(crate) fn from_fields(kind: &str, b64: &str) -> Result<PublicKey, KeyError> {
        if kind != KEY_TYPE {
            return Err(KeyError::NotEd25519(kind.to_owned()));
        }
        let blob = STANDARD.decode(b64).map_err(|_| KeyError::BadBase64)?;
        Self::from_wire_blob(&blob)
    }

    /// Parse the SSH wire blob: string "ssh-ed25519", string key(32).
    pub fn from_wire_blob(blob: &[u8]) -> Result<PublicKey, KeyError> {
        let (kind, rest) = read_string(blob).ok_or(KeyError::BadBlob)?;
        if kind != KEY_TYPE.as_bytes() {
            return Err(KeyError::NotEd25519(
                String::from_utf8_lossy(kind).into_owned(),
            ));
        }
        let (key, rest) = read_string(rest).ok_or(KeyError::BadBlob)?;
        if !rest.is_empty() {
            return Err(KeyError::BadBlob);
        }
        let key: [u8; 32] = key.try_into().map_err(|_| KeyError::BadBlob)?;
        Ok(PublicKey(key))
    }

    /// The SSH wire blob (what the fingerprint is computed over).
    pub fn wire_blob(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + KEY_TYPE.len() + 4 + 32);
        v.extend_from_slice(&(KEY_TYPE.len() as u32).to_be_bytes());
        v.extend_from_slice(KEY_TYPE.as_bytes());
        v.extend_from_slice(&32u32.to_be_bytes());
        v.extend_from_slice(&self.0);
        v
    }

    /// `ssh-ed25519 AAAA…` with no comment.
    pub fn to_openssh(&self) -> String {
        format!("{KEY_TYPE} {}", STANDARD.encode(self.wire_blob()))
    }

    /// The OpenSSH fingerprint, `SHA256:` + unpadded base64 of the SHA-256
    /// of the wire blob — what `ssh-keygen -lf` and ssh's host key prompt
    /// show, so an operator can compare it by eye.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.wire_blob());
        format!("SHA256:{}", STANDARD_NO_PAD.encode(digest))
    }

    /// This key's `ssh-to-age` recipient; see [`crate::age_recipient`].
    pub fn age_recipient(&self) -> Result<String, crate::RecipientError> {
        crate::age_recipient(&self.0)
    }
}

fn read_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let rest = b.get(4..)?;
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}
