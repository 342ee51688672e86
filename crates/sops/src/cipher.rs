//! The sops value cipher: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM with a 32-byte
//! nonce and the field path (`a:b:`) as associated data — exactly what sops' `aes/cipher.go` does.
//!
//! Decryption is in place in a zeroizing buffer sized once (no reallocation), with a detached tag:
//! aes-gcm checks the tag before it produces any plaintext.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::error::{SopsError, malformed};
use crate::tree::ValueType;

type SopsAead = AesGcm<Aes256, U32>;

/// A sops data key: exactly 32 bytes, wiped on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// Takes a copy of `bytes`, which must be exactly 32 bytes long ([`SopsError::BadDataKey`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<DataKey, SopsError> {
        if bytes.len() != 32 {
            return Err(SopsError::BadDataKey { len: bytes.len() });
        }
        // Copied straight into the zeroizing array: no intermediate stack copy of the key.
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        Ok(DataKey(key))
    }

    /// A fresh random data key from the operating system's RNG (`getrandom`), as sops'
    /// `GenerateDataKey` does (32 bytes, AES-256).
    pub(crate) fn generate() -> Result<DataKey, SopsError> {
        let mut key = Zeroizing::new([0u8; 32]);
        fill_random(&mut key[..])?;
        Ok(DataKey(key))
    }

    /// The raw key bytes (for wrapping it to age recipients).
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The AES-256-GCM instance (key schedule built once per file, not per value).
    pub(crate) fn cipher(&self) -> SopsCipher {
        let k: &[u8; 32] = &self.0;
        SopsCipher(SopsAead::new(k.into()))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// The parsed fields of one `ENC[...]` envelope (ciphertext: not secret).
pub(crate) struct EncValue {
    pub data: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub kind: EncType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncType {
    Value(ValueType),
    Comment,
}

pub(crate) fn is_enc(s: &str) -> bool {
    s.starts_with("ENC[AES256_GCM,")
}

/// Parses `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`. `path` is only used in error messages.
pub(crate) fn parse_enc(s: &str, path: &str) -> Result<EncValue, SopsError> {
    let bad = |what: &str| malformed(format!("value at `{path}`: {what}"));
    let inner = s
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| bad("not an ENC[AES256_GCM,...] value"))?;
    let mut parts = inner.split(',');
    let mut field = |name: &str| -> Result<&str, SopsError> {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .and_then(|p| p.strip_prefix(':'))
            .ok_or_else(|| bad(&format!("missing `{name}` in ENC value")))
    };
    let data = field("data")?;
    let iv = field("iv")?;
    let tag = field("tag")?;
    let ty = field("type")?;
    if parts.next().is_some() {
        return Err(bad("trailing fields in ENC value"));
    }
    let b64 = |name: &str, v: &str| {
        B64.decode(v)
            .map_err(|_| bad(&format!("`{name}` is not base64")))
    };
    let kind = match ty {
        "str" => EncType::Value(ValueType::Str),
        "int" => EncType::Value(ValueType::Int),
        "float" => EncType::Value(ValueType::Float),
        "bool" => EncType::Value(ValueType::Bool),
        "time" => EncType::Value(ValueType::Time),
        "bytes" => EncType::Value(ValueType::Bytes),
        "comment" => EncType::Comment,
        _ => return Err(bad("unknown value type")),
    };
    let v = EncValue {
        data: b64("data", data)?,
        iv: b64("iv", iv)?,
        tag: b64("tag", tag)?,
        kind,
    };
    if v.iv.len() != 32 {
        return Err(bad("iv is not 32 bytes"));
    }
    if v.tag.len() != 16 {
        return Err(bad("tag is not 16 bytes"));
    }
    Ok(v)
}

/// Fills `buf` from the operating system's RNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), SopsError> {
    getrandom::getrandom(buf).map_err(|e| SopsError::Rng {
        reason: e.to_string(),
    })
}

/// AES-256-GCM keyed with a data key (a distinct type so it cannot be printed or cloned).
pub(crate) struct SopsCipher(SopsAead);

/// Decrypts `v` with `aad`; the plaintext lands in a buffer of exactly the ciphertext's size.
/// A tag failure yields `None` (the caller names the path).
pub(crate) fn open(cipher: &SopsCipher, v: &EncValue, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(v.data.len()));
    buf.extend_from_slice(&v.data);
    let nonce = Nonce::<U32>::from_slice(&v.iv);
    let tag = Tag::<aes_gcm::aead::consts::U16>::from_slice(&v.tag);
    match cipher
        .0
        .decrypt_in_place_detached(nonce, aad, buf.as_mut_slice(), tag)
    {
        Ok(()) => Some(buf),
        Err(_) => None,
    }
}

/// Encrypts `plain` with a fresh random 32-byte IV and `aad` into sops' envelope
/// `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` (sops' `aes.Cipher.Encrypt`). An empty plaintext
/// is stored as the empty string, unencrypted, exactly as sops does (`isEmpty`).
/// The working buffer holds plaintext, is sized once and wiped; the result is ciphertext only.
pub(crate) fn seal(
    cipher: &SopsCipher,
    plain: &[u8],
    aad: &[u8],
    kind: &str,
) -> Result<String, SopsError> {
    if plain.is_empty() {
        return Ok(String::new());
    }
    let mut iv = [0u8; 32];
    fill_random(&mut iv)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(plain.len()));
    buf.extend_from_slice(plain);
    let tag = cipher
        .0
        .encrypt_in_place_detached(Nonce::<U32>::from_slice(&iv), aad, buf.as_mut_slice())
        .map_err(|_| malformed("AES-GCM encryption failed (value too long)"))?;
    // `buf` now holds ciphertext.
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        B64.encode(buf.as_slice()),
        B64.encode(iv),
        B64.encode(tag)
    ))
}
