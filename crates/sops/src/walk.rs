//! The decrypt walk: sops' `Tree.Decrypt` — visit every leaf in file order, decrypt what the rule
//! says is encrypted (associated data = keys joined by `:` plus a trailing `:`), feed the MAC hash
//! with each non-comment value, then compare with the stored MAC in constant time. The decrypted
//! tree is only returned after the MAC matched; on any error it is dropped (and wiped).

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::cipher::{DataKey, EncType, SopsCipher, is_enc, open, parse_enc};
use crate::error::{SopsError, malformed};
use crate::metadata::Metadata;
use crate::tree::{Node, Scalar, Value, ValueType, secret_copy};

/// SHA-256("sops"): prefix of the MAC input when `mac_only_encrypted` is set.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

struct Walk<'a> {
    cipher: SopsCipher,
    meta: &'a Metadata,
    hash: Sha512,
    /// Keys only: the rule input and the associated data.
    keys: Vec<&'a str>,
    /// Keys and list positions: for error messages (`users:1`).
    display: Vec<String>,
    doc: usize,
}

impl<'a> Walk<'a> {
    fn path(&self) -> String {
        let p = self.display.join(":");
        if self.doc > 0 {
            format!("[document {}] {p}", self.doc + 1)
        } else {
            p
        }
    }

    fn node(&mut self, node: &'a Node) -> Result<Option<Value>, SopsError> {
        Ok(Some(match node {
            Node::Map(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (k, v) in items {
                    self.keys.push(k);
                    self.display.push(k.clone());
                    let r = self.node(v)?;
                    self.keys.pop();
                    self.display.pop();
                    if let Some(r) = r {
                        out.push((k.clone(), r));
                    }
                }
                Value::Map(out)
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    self.display.push(i.to_string());
                    let r = self.node(v)?;
                    self.display.pop();
                    if let Some(r) = r {
                        out.push(r);
                    }
                }
                Value::List(out)
            }
            Node::Null => Value::Null,
            Node::Str(s) => return self.leaf_str(s),
            Node::Plain { mac, text, .. } => {
                if self.meta.rule.encrypted(&self.keys) {
                    return Err(SopsError::NotEncrypted { path: self.path() });
                }
                if !self.meta.mac_only_encrypted {
                    self.hash.update(mac.as_bytes());
                }
                Value::Scalar(Scalar::new(ValueType::Plain, secret_copy(text.as_bytes())))
            }
        }))
    }

    fn leaf_str(&mut self, s: &str) -> Result<Option<Value>, SopsError> {
        let encrypted = self.meta.rule.encrypted(&self.keys);
        if !encrypted {
            if !self.meta.mac_only_encrypted {
                self.hash.update(s.as_bytes());
            }
            return Ok(Some(Value::Scalar(Scalar::new(
                ValueType::Plain,
                secret_copy(s.as_bytes()),
            ))));
        }
        if s.is_empty() {
            // sops writes "" bare; it hashes as nothing.
            return Ok(Some(Value::Scalar(Scalar::new(
                ValueType::Str,
                secret_copy(b""),
            ))));
        }
        if !is_enc(s) {
            return Err(SopsError::NotEncrypted { path: self.path() });
        }
        let path = self.path();
        let enc = parse_enc(s, &path)?;
        let mut aad = self.keys.join(":");
        aad.push(':');
        let plain = open(&self.cipher, &enc, aad.as_bytes())
            .ok_or(SopsError::ValueAuth { path: path.clone() })?;
        let kind = match enc.kind {
            // A comment element of a list: authenticated, not hashed, dropped from the output.
            EncType::Comment => return Ok(None),
            EncType::Value(k) => k,
        };
        self.hash.update(plain.as_slice());
        let bad = |t: &str| malformed(format!("value at `{path}` is not a valid {t}"));
        let out: Zeroizing<Vec<u8>> = match kind {
            ValueType::Int => {
                let ok = std::str::from_utf8(&plain)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_some();
                if !ok {
                    return Err(bad("int"));
                }
                plain
            }
            ValueType::Float => {
                let ok = std::str::from_utf8(&plain)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some();
                if !ok {
                    return Err(bad("float"));
                }
                plain
            }
            ValueType::Bool => {
                let b: &[u8] = match plain.as_slice() {
                    b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True" => b"true",
                    b"0" | b"f" | b"F" | b"false" | b"FALSE" | b"False" => b"false",
                    _ => return Err(bad("bool")),
                };
                Zeroizing::new(b.to_vec())
            }
            _ => plain,
        };
        Ok(Some(Value::Scalar(Scalar::new(kind, secret_copy(&out)))))
    }
}

/// Decrypts all documents and checks the MAC; returns the documents only if it matched.
pub(crate) fn decrypt(
    docs: &[Node],
    meta: &Metadata,
    key: &DataKey,
) -> Result<Vec<Value>, SopsError> {
    let mac_enc = meta.mac.as_deref().ok_or(SopsError::MissingMac)?;
    // The stored MAC first: a wrong `lastmodified` or MAC fails before any value is touched.
    let mac_enc = parse_enc(mac_enc, "sops:mac").map_err(|_| SopsError::MacMismatch)?;
    let cipher = key.cipher();
    // sops uses `LastModified.Format(time.RFC3339)` as associated data: the raw text for every
    // file sops writes; the normalized form for hand-edited ones (fraction dropped, `Z` for UTC).
    let stored = open(&cipher, &mac_enc, meta.lastmodified.as_bytes())
        .or_else(|| {
            let n = rfc3339_seconds(&meta.lastmodified)?;
            open(&cipher, &mac_enc, n.as_bytes())
        })
        .ok_or(SopsError::MacMismatch)?;

    let mut w = Walk {
        cipher,
        meta,
        hash: Sha512::new(),
        keys: Vec::new(),
        display: Vec::new(),
        doc: 0,
    };
    if meta.mac_only_encrypted {
        w.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        w.doc = i;
        if let Some(v) = w.node(d)? {
            out.push(v);
        }
    }
    let digest = w.hash.finalize();
    let mut hex = [0u8; 128];
    for (i, b) in digest.iter().enumerate() {
        const H: &[u8; 16] = b"0123456789ABCDEF";
        hex[2 * i] = H[(b >> 4) as usize];
        hex[2 * i + 1] = H[(b & 15) as usize];
    }
    if bool::from(stored.as_slice().ct_eq(&hex[..])) {
        Ok(out)
    } else {
        Err(SopsError::MacMismatch)
    }
}

/// Go's `time.Parse(RFC3339)` then `Format(RFC3339)`, if that differs from the input.
fn rfc3339_seconds(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    if b.len() < 20 || !raw.is_ascii() || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let (main, rest) = raw.split_at(19);
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let zone = match rest {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => z,
        _ => return None,
    };
    let out = format!("{}T{}{zone}", &main[..10], &main[11..]);
    (out != raw).then_some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lastmodified_normalization() {
        use super::rfc3339_seconds as n;
        assert_eq!(n("2026-11-25T17:18:57Z"), None);
        assert_eq!(
            n("2026-11-25T17:18:57.123Z").as_deref(),
            Some("2026-11-25T17:18:57Z")
        );
        assert_eq!(
            n("2026-11-25t17:18:57+00:00").as_deref(),
            Some("2026-11-25T17:18:57Z")
        );
        assert_eq!(
            n("2026-11-25T17:18:57.5+02:00").as_deref(),
            Some("2026-11-25T17:18:57+02:00")
        );
        assert_eq!(n("garbage"), None);
        assert_eq!(n("2026-11-25T17:18:5é7Z"), None);
    }

    use sha2::Sha256;

    use super::*;

    #[test]
    fn mac_only_encrypted_prefix_is_sha256_of_sops() {
        assert_eq!(Sha256::digest(b"sops").as_slice(), &MAC_ONLY_ENCRYPTED_INIT);
    }
}
