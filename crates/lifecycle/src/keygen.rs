//! Fresh ed25519 keys from the OS RNG, serialised as OpenSSH private keys in memory.

use keypack_pins::PublicKey;
use secrecy::{ExposeSecret, SecretSlice};
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::{KeySlot, LifecycleError};

/// A generated key. The private key (an OpenSSH `-----BEGIN OPENSSH PRIVATE KEY-----` text,
/// unencrypted, as sops stores it) lives only in a zeroizing [`SecretSlice`]; `Debug` shows the
/// role and fingerprint.
pub struct NewKey {
    /// Which key this is.
    pub slot: KeySlot,
    private: SecretSlice<u8>,
    /// The public key.
    pub public: PublicKey,
    /// `ssh-ed25519 AAAA… COMMENT`, as the `.pub` file and `<field>_pub` hold it.
    pub public_line: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("role", &self.slot.pin_role.as_str())
            .field("fingerprint", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl NewKey {
    /// The private key text.
    pub fn private(&self) -> &SecretSlice<u8> {
        &self.private
    }

    /// A second zeroizing copy of the private key text (exactly sized).
    pub fn private_copy(&self) -> SecretSlice<u8> {
        let bytes = self.private.expose_secret();
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        SecretSlice::from(v)
    }

    /// The SHA256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }
}

/// Generates the key of `slot`: ed25519 from the OS RNG, comment `slot.comment`.
pub fn generate(slot: &KeySlot) -> Result<NewKey, LifecycleError> {
    let fail = |reason: String| LifecycleError::KeyGeneration {
        role: slot.pin_role.to_string(),
        reason,
    };
    let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| fail(e.to_string()))?;
    key.set_comment(slot.comment.as_str());
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let mut v = Vec::with_capacity(pem.len());
    v.extend_from_slice(pem.as_bytes());
    drop(pem);
    let private = SecretSlice::from(v);
    let raw = key
        .public_key()
        .key_data()
        .ed25519()
        .ok_or_else(|| fail("not an ed25519 key".to_owned()))?
        .0;
    let public = PublicKey::from_bytes(raw);
    let public_line = format!("{} {}", public.to_openssh(), slot.comment);
    Ok(NewKey {
        slot: slot.clone(),
        private,
        public,
        public_line,
    })
}

/// The public key of an OpenSSH ed25519 private key (an existing key being rotated). Errors
/// say what kind of key it is not, never its bytes.
pub fn public_of(private: &SecretSlice<u8>) -> Result<PublicKey, String> {
    let key = PrivateKey::from_openssh(private.expose_secret())
        .map_err(|_| "not an OpenSSH private key".to_owned())?;
    let raw = key
        .public_key()
        .key_data()
        .ed25519()
        .ok_or_else(|| "not an ed25519 key".to_owned())?
        .0;
    Ok(PublicKey::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entity;
    use keypack_layout::HostName;

    #[test]
    fn keys_are_fresh_openssh_ed25519_with_the_host_as_comment() {
        let slots = Entity::Host {
            name: HostName::new("web3").unwrap(),
            deploy: true,
        }
        .slots()
        .unwrap();
        let a = generate(&slots[0]).unwrap();
        let b = generate(&slots[1]).unwrap();
        assert_ne!(a.public, b.public);
        let text = std::str::from_utf8(a.private().expose_secret()).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let parsed = PrivateKey::from_openssh(text).unwrap();
        assert_eq!(parsed.comment(), "web3");
        assert!(!parsed.is_encrypted());
        let raw = parsed.public_key().key_data().ed25519().unwrap().0;
        assert_eq!(PublicKey::from_bytes(raw), a.public);
        assert!(a.public_line.ends_with(" web3"));
        assert!(b.public_line.ends_with(" deploy@web3"));
        assert_eq!(
            PublicKey::parse_openssh(&a.public_line)
                .unwrap()
                .fingerprint(),
            a.fingerprint()
        );
        assert!(!format!("{a:?}").contains("PRIVATE"));
        assert_eq!(public_of(a.private()).unwrap(), a.public);
        assert!(public_of(&SecretSlice::from(b"not a key".to_vec())).is_err());
    }
}
