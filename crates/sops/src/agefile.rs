//! age unwrapping: the data key from a sops `enc` entry, and whole plain `.age` files (armored or
//! binary). Any [`age::Identity`] works — X25519 keys, plugin identities (YubiKey), custom ones —
//! which is the one abstraction the identity crate builds on.

use std::io::Read;

use age::armor::ArmoredReader;
use secrecy::SecretSlice;
use zeroize::Zeroizing;

use crate::error::SopsError;
use crate::tree::secret_copy;

pub(crate) enum Outcome {
    Plain(Zeroizing<Vec<u8>>),
    NoMatch,
    Failed(String),
}

/// Decrypts one age file (armor detected automatically) into a buffer pre-sized to `cap`.
pub(crate) fn decrypt(bytes: &[u8], ids: &[&dyn age::Identity], cap: usize) -> Outcome {
    let dec = match age::Decryptor::new(ArmoredReader::new(bytes)) {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut reader = match dec.decrypt(ids.iter().copied()) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Outcome::NoMatch,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    match reader.read_to_end(&mut out) {
        Ok(_) => Outcome::Plain(out),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Decrypts a plain age file (armored or binary) with any of `ids`. The plaintext is returned in
/// an exactly sized zeroizing box; the working buffer is pre-sized to the input's length (an age
/// payload is never longer than its file) and wiped.
pub fn decrypt_age_file(
    bytes: &[u8],
    ids: &[&dyn age::Identity],
) -> Result<SecretSlice<u8>, SopsError> {
    match decrypt(bytes, ids, bytes.len() + 64) {
        Outcome::Plain(p) => Ok(secret_copy(&p)),
        Outcome::NoMatch => Err(SopsError::NoMatchingIdentity {
            recipients: Vec::new(),
        }),
        Outcome::Failed(reason) => Err(SopsError::Age {
            entry: "age file".into(),
            reason,
        }),
    }
}
