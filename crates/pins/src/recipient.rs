//! The `ssh-to-age` conversion of an ed25519 public key.
//!
//! sops-nix decrypts with an age identity derived from the host's
//! `/etc/ssh/ssh_host_ed25519_key`, so the recipient a secret is encrypted
//! for must be the same key on the Montgomery curve: u = (1+y)/(1-y) mod
//! 2^255-19, little-endian, bech32 with HRP `age`. This is what `ssh-to-age`
//! and libsodium's `crypto_sign_ed25519_pk_to_curve25519` compute.

use bech32::{Bech32, Hrp};
use curve25519_dalek::edwards::CompressedEdwardsY;

/// Why a key has no age recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    /// The 32 bytes are not a point on the curve; no secret key can match
    /// them, so encrypting to any recipient "derived" from them would lose
    /// the data.
    #[error("ed25519 public key is not a valid curve point")]
    NotAPoint,
    /// bech32 encoding failed (cannot happen for 32 bytes; kept an error
    /// rather than a panic).
    #[error("bech32 encoding failed: {0}")]
    Bech32(String),
}

/// The `age1…` recipient (lowercase) for an ed25519 public key.
pub fn age_recipient(ed25519_public_key: &[u8; 32]) -> Result<String, RecipientError> {
    let point = CompressedEdwardsY(*ed25519_public_key)
        .decompress()
        .ok_or(RecipientError::NotAPoint)?;
    let u = point.to_montgomery().to_bytes();
    let hrp = Hrp::parse("age").map_err(|e| RecipientError::Bech32(e.to_string()))?;
    bech32::encode::<Bech32>(hrp, &u).map_err(|e| RecipientError::Bech32(e.to_string()))
}
