//! Reading age headers and payloads with a file key obtained elsewhere.
//!
//! The `age` crate hides a file's stanzas behind `Decryptor`. To batch YubiKey unwraps,
//! keypack first runs the decryptor with a [`Collector`] identity that records the stanzas
//! and declines, sends every file's stanzas to the plugin in one session, and then runs the
//! decryptor again with a [`KnownKey`] identity that hands back the file key the plugin
//! returned. The header MAC and the payload are still verified by `age`.

use std::cell::RefCell;
use std::io::Read;
use std::iter;

use age::armor::ArmoredReader;
use age_core::format::{FileKey, Stanza};
use secrecy::SecretSlice;
use zeroize::Zeroizing;

use crate::IdentityError;

/// An owned copy of a stanza (age's `Stanza` is not `Clone`).
#[derive(Debug)]
pub(crate) struct OwnedStanza {
    pub(crate) tag: String,
    pub(crate) args: Vec<String>,
    pub(crate) body: Vec<u8>,
}

impl OwnedStanza {
    pub(crate) fn to_stanza(&self) -> Stanza {
        Stanza {
            tag: self.tag.clone(),
            args: self.args.clone(),
            body: self.body.clone(),
        }
    }

    /// For "the file is encrypted to …" messages.
    pub(crate) fn describe(&self) -> String {
        match self.tag.as_str() {
            "X25519" => "an X25519 recipient (age1…)".to_owned(),
            "piv-p256" => {
                use base64::Engine;
                let tag = self
                    .args
                    .first()
                    .and_then(|t| {
                        base64::engine::general_purpose::STANDARD_NO_PAD
                            .decode(t)
                            .ok()
                    })
                    .map(|t| t.iter().map(|b| format!("{b:02x}")).collect::<String>())
                    .unwrap_or_else(|| "?".to_owned());
                format!("a YubiKey recipient (age1yubikey1…, piv-p256 tag {tag})")
            }
            "scrypt" => "a passphrase".to_owned(),
            other => format!("a {other} recipient"),
        }
    }
}

struct Collector(RefCell<Vec<OwnedStanza>>);

impl age::Identity for Collector {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.0.borrow_mut().push(OwnedStanza {
            tag: stanza.tag.clone(),
            args: stanza.args.clone(),
            body: stanza.body.clone(),
        });
        None
    }
}

/// An identity that answers with a file key already known.
pub(crate) struct KnownKey(pub(crate) Zeroizing<[u8; 16]>);

impl age::Identity for KnownKey {
    fn unwrap_stanza(&self, _stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        Some(Ok(FileKey::init_with_mut(|k| {
            k.copy_from_slice(&self.0[..])
        })))
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        stanzas.first().and_then(|s| self.unwrap_stanza(s))
    }
}

fn open(
    bytes: &[u8],
) -> Result<age::Decryptor<ArmoredReader<std::io::BufReader<&[u8]>>>, age::DecryptError> {
    age::Decryptor::new_buffered(ArmoredReader::new(bytes))
}

/// The stanzas of an age file's header.
pub(crate) fn stanzas(label: &str, bytes: &[u8]) -> Result<Vec<OwnedStanza>, IdentityError> {
    let malformed = || IdentityError::Malformed {
        file: label.to_owned(),
    };
    let decryptor = open(bytes).map_err(|_| malformed())?;
    let collector = Collector(RefCell::new(Vec::new()));
    match decryptor.decrypt(iter::once(&collector as &dyn age::Identity)) {
        Err(age::DecryptError::NoMatchingKeys) => Ok(collector.0.into_inner()),
        Ok(_) => Err(malformed()),
        Err(_) => Err(malformed()),
    }
}

/// Decrypt the payload with identities that are expected to match.
///
/// `Ok(None)` when none of them matched.
pub(crate) fn decrypt_with(
    label: &str,
    bytes: &[u8],
    identities: &[&dyn age::Identity],
) -> Result<Option<SecretSlice<u8>>, IdentityError> {
    let failed = || IdentityError::DecryptFailed {
        file: label.to_owned(),
    };
    let decryptor = open(bytes).map_err(|_| IdentityError::Malformed {
        file: label.to_owned(),
    })?;
    let mut reader = match decryptor.decrypt(identities.iter().copied()) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
        Err(_) => return Err(failed()),
    };
    // The payload is shorter than the file, so this buffer never grows (no stray copies).
    let mut buf = Zeroizing::new(Vec::with_capacity(bytes.len() + 64));
    reader.read_to_end(&mut buf).map_err(|_| failed())?;
    let mut exact = vec![0u8; buf.len()].into_boxed_slice();
    exact.copy_from_slice(&buf);
    Ok(Some(SecretSlice::from(exact)))
}
