//! Parsing an age identity file into X25519 and plugin identities.
//!
//! Same line rules as `age::IdentityFile` (blank and `#` lines skipped, every other line an
//! `AGE-SECRET-KEY-1…` or `AGE-PLUGIN-NAME-1…`), done here so keypack knows each
//! identity's public side: X25519 recipients are derived, a YubiKey stub is decoded (serial,
//! slot, tag) and its `#    Recipient: age1yubikey1…` comment, as printed by
//! `age-plugin-yubikey --identity`, is kept for messages. Line content never appears in
//! errors, and the text buffer is zeroized.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::IdentityError;

/// Largest identity file accepted.
pub const MAX_IDENTITY_FILE_SIZE: u64 = 1 << 20;

/// A decoded age-plugin-yubikey stub (`src/key.rs` `Stub::to_bytes`: serial LE u32, slot
/// byte, 4-byte tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YubiKeyStub {
    /// The YubiKey's serial number.
    pub serial: u32,
    /// The PIV slot byte (0x82..=0x95 for the retired slots 1..=20).
    pub slot: u8,
    /// SHA-256 of the compressed public key, first four bytes.
    pub tag: [u8; 4],
}

impl YubiKeyStub {
    /// The 1-based retired slot number as age-plugin-yubikey shows it.
    pub fn ui_slot(&self) -> u8 {
        self.slot.wrapping_sub(0x81)
    }

    /// The tag as lowercase hex.
    pub fn tag_hex(&self) -> String {
        self.tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Decode `AGE-PLUGIN-YUBIKEY-1…` into its stub; `None` for other plugins or bad data.
pub fn decode_yubikey_stub(identity: &str) -> Option<YubiKeyStub> {
    let (hrp, data) = bech32::decode(identity).ok()?;
    if !hrp.as_str().eq_ignore_ascii_case("age-plugin-yubikey-") || data.len() != 9 {
        return None;
    }
    Some(YubiKeyStub {
        serial: u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
        slot: data[4],
        tag: [data[5], data[6], data[7], data[8]],
    })
}

/// The `age1yubikey1…` recipient of a P-256 public key given as a SEC-1 point (compressed or
/// uncompressed, as a certificate holds it), with its 4-byte stub tag; `None` if the bytes
/// are not a P-256 point encoding. The point is not validated against the curve.
pub fn yubikey_recipient_from_point(point: &[u8]) -> Option<(String, [u8; 4])> {
    use sha2::Digest;
    let compressed: Vec<u8> = match point {
        [0x04, rest @ ..] if rest.len() == 64 => {
            let (x, y) = rest.split_at(32);
            let mut c = Vec::with_capacity(33);
            c.push(0x02 | (y[31] & 1));
            c.extend_from_slice(x);
            c
        }
        [0x02 | 0x03, rest @ ..] if rest.len() == 32 => point.to_vec(),
        _ => return None,
    };
    let hash = sha2::Sha256::digest(&compressed);
    let recipient =
        bech32::encode::<bech32::Bech32>(bech32::Hrp::parse_unchecked("age1yubikey"), &compressed)
            .ok()?;
    Some((recipient, [hash[0], hash[1], hash[2], hash[3]]))
}

/// The 4-byte stub tag of an `age1yubikey1…` recipient (`None` if it is not one).
pub fn yubikey_recipient_tag(recipient: &str) -> Option<[u8; 4]> {
    let (hrp, data) = bech32::decode(recipient).ok()?;
    if hrp.as_str() != "age1yubikey" {
        return None;
    }
    yubikey_recipient_from_point(&data).map(|(_, tag)| tag)
}

pub(crate) struct PluginIdentity {
    pub(crate) name: String,
    pub(crate) identity: age::plugin::Identity,
    pub(crate) stub: Option<YubiKeyStub>,
    pub(crate) recipient: Option<String>,
}

impl PluginIdentity {
    pub(crate) fn binary(&self) -> String {
        format!("age-plugin-{}", self.name)
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.recipient, &self.stub) {
            (Some(r), Some(s)) => format!(
                "{r} (YubiKey {} slot {}, tag {})",
                s.serial,
                s.ui_slot(),
                s.tag_hex()
            ),
            (None, Some(s)) => format!(
                "YubiKey {} slot {} (piv-p256 tag {})",
                s.serial,
                s.ui_slot(),
                s.tag_hex()
            ),
            (Some(r), None) => r.clone(),
            (None, None) => format!("an identity of {}", self.binary()),
        }
    }
}

pub(crate) struct Parsed {
    pub(crate) x25519: Vec<age::x25519::Identity>,
    pub(crate) plugins: Vec<PluginIdentity>,
}

pub(crate) fn read_identity_file(path: &Path) -> Result<Zeroizing<String>, IdentityError> {
    let read_err = |source| IdentityError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len > MAX_IDENTITY_FILE_SIZE {
        return Err(IdentityError::TooLarge {
            path: path.to_owned(),
        });
    }
    // Pre-sized so that reading never reallocates (no stray copies of key lines).
    let mut buf = Zeroizing::new(Vec::with_capacity(len as usize + 1));
    file.take(MAX_IDENTITY_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_IDENTITY_FILE_SIZE {
        return Err(IdentityError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::str::from_utf8(&buf).map_err(|_| IdentityError::InvalidLine {
        path: path.to_owned(),
        line: 1,
    })?;
    Ok(Zeroizing::new(String::from(text)))
}

pub(crate) fn parse(path: &Path, text: &str) -> Result<Parsed, IdentityError> {
    let mut parsed = Parsed {
        x25519: Vec::new(),
        plugins: Vec::new(),
    };
    let mut pending_recipient: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(r) = comment.strip_prefix("Recipient:") {
                pending_recipient = Some(r.trim().to_owned());
            }
            continue;
        }
        let invalid = || IdentityError::InvalidLine {
            path: path.to_owned(),
            line: n + 1,
        };
        if line.starts_with("AGE-SECRET-KEY-1") {
            let id = age::x25519::Identity::from_str(line).map_err(|_| invalid())?;
            parsed.x25519.push(id);
        } else if line.starts_with("AGE-PLUGIN-") {
            let id = age::plugin::Identity::from_str(line).map_err(|_| invalid())?;
            let name = id.plugin().to_owned();
            let stub = if name == "yubikey" {
                Some(decode_yubikey_stub(line).ok_or_else(invalid)?)
            } else {
                None
            };
            parsed.plugins.push(PluginIdentity {
                name,
                identity: id,
                stub,
                recipient: pending_recipient.take(),
            });
        } else {
            return Err(invalid());
        }
    }
    if parsed.x25519.is_empty() && parsed.plugins.is_empty() {
        return Err(IdentityError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(parsed)
}
