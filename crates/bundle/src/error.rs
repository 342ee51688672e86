use std::io;

/// Why a bundle could not be built or read.
///
/// Variants name the bundle path, never a key byte.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A private key is not an OpenSSH private key in the PEM-like `openssh-key-v1` format.
    #[error("{path}: not an OpenSSH private key")]
    NotAnOpenSshKey {
        /// Bundle path of the key.
        path: String,
    },
    /// A private key is not ed25519.
    #[error("{path}: key type is {found}, expected ssh-ed25519")]
    WrongKeyType {
        /// Bundle path of the key.
        path: String,
        /// Algorithm found.
        found: String,
    },
    /// A private key is passphrase-protected: the target could not use it unattended.
    #[error("{path}: key is passphrase-protected; a machine key must not be")]
    EncryptedKey {
        /// Bundle path of the key.
        path: String,
    },
    /// A stored public key does not belong to the private key.
    #[error(
        "{path}: stored public key does not match the private key (stored {stored}, derived {derived})"
    )]
    PublicKeyMismatch {
        /// Bundle path of the public key.
        path: String,
        /// Fingerprint of the stored public key.
        stored: String,
        /// Fingerprint derived from the private key.
        derived: String,
    },
    /// A stored public key could not be parsed.
    #[error("{path}: stored public key is not an OpenSSH public key")]
    BadPublicKey {
        /// Bundle path of the public key.
        path: String,
    },
    /// The same key was added twice.
    #[error("{path}: added twice")]
    Duplicate {
        /// Bundle path.
        path: String,
    },
    /// One key pair in two roles (see [`BundleBuilder::allow_shared_keys`]).
    #[error("{path} is the same key as {other} ({fingerprint}): one key may not fill two roles")]
    SharedKey {
        /// Bundle path of the role being added.
        path: String,
        /// Bundle path of the role that already holds this key.
        other: String,
        /// The shared key's SHA256 fingerprint (public).
        fingerprint: String,
    },
    /// The bundle has no host key.
    #[error("bundle has no host key ({path})")]
    MissingHostKey {
        /// Expected bundle path.
        path: String,
    },
    /// An archive being read holds something the layout does not allow.
    #[error("archive entry {path:?}: {reason}")]
    UnexpectedEntry {
        /// Entry path as stored (sanitised for display).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// age refused to set up the passphrase encryption.
    #[error("sealing the private keys failed")]
    Seal,
    /// A burn mark token that is not 32 lowercase hex digits.
    #[error("burn mark token is not 32 lowercase hex digits")]
    BadBurnToken,
    /// The archive is not a gzip-compressed tar, or is corrupt.
    #[error("not a readable keys.tar.gz")]
    Archive(#[source] io::Error),
}
