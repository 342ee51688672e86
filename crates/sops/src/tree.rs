//! The two trees: [`Node`] is what a store parser produces from the encrypted file (ciphertext and
//! plain values, not secret), [`Value`] is what decryption produces (secret leaves).
//!
//! Both keep mapping order: the sops MAC is computed in walk order, so order is part of the data.

use secrecy::{ExposeSecret, SecretSlice};

/// A node of the parsed, still encrypted file. Mapping keys keep file order.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    /// A string scalar: either `ENC[...]`, a bare `""`, or a plain string of an unencrypted field.
    Str(String),
    /// A non-string plain scalar (int, float, bool, timestamp) of an unencrypted field.
    /// `mac` is its Go (`sops.ToBytes`) rendering, `text` its text in the file.
    Plain {
        #[allow(dead_code)] // the YAML/JSON type, kept for diagnostics
        kind: ValueType,
        mac: String,
        text: String,
    },
    Null,
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The type sops recorded for a value (`type:` in `ENC[...]`), or [`ValueType::Plain`] for a
/// value that was stored unencrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// `type:str` (may hold non-UTF-8 bytes: binary store).
    Str,
    /// `type:int`.
    Int,
    /// `type:float` (also integers from JSON, sops ≤ 3.13.1).
    Float,
    /// `type:bool`; exposed as `true`/`false`.
    Bool,
    /// `type:time` (RFC 3339 text).
    Time,
    /// `type:bytes`.
    Bytes,
    /// A value that was not encrypted (`*_unencrypted` and the other rules); its text as in the file.
    Plain,
}

/// One decrypted scalar. The bytes are wiped on drop and never printed.
pub struct Scalar {
    kind: ValueType,
    bytes: SecretSlice<u8>,
}

impl Scalar {
    pub(crate) fn new(kind: ValueType, bytes: SecretSlice<u8>) -> Self {
        Scalar { kind, bytes }
    }
    /// The sops type of the value.
    pub fn kind(&self) -> ValueType {
        self.kind
    }
    /// The value's bytes (for `bool`: `true`/`false`; otherwise the plaintext exactly as encrypted).
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
    /// A fresh, exactly sized copy of the bytes in a zeroizing box.
    pub fn to_secret(&self) -> SecretSlice<u8> {
        secret_copy(self.bytes.expose_secret())
    }
}

impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Scalar({:?}, [REDACTED {} bytes])",
            self.kind,
            self.expose().len()
        )
    }
}

/// A node of the decrypted tree. Comment elements are dropped; `null` stays `Null`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Value {
    /// A mapping, in file order.
    Map(Vec<(String, Value)>),
    /// A list (sops comment elements removed).
    List(Vec<Value>),
    /// A scalar.
    Scalar(Scalar),
    /// `null`.
    Null,
}

impl Value {
    /// The value under `key` if this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// Copy bytes into an exactly sized zeroizing box (no spare capacity, so no reallocation leaves
/// an unwiped copy behind).
pub(crate) fn secret_copy(bytes: &[u8]) -> SecretSlice<u8> {
    let mut v = Vec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    debug_assert_eq!(v.capacity(), v.len());
    SecretSlice::from(v)
}
