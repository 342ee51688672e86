//! Content check of injected key files: the private key must be an unencrypted OpenSSH
//! (`openssh-key-v1`) ed25519 key and its `.pub` the same key. A small hand parser rather than
//! the `ssh-key` crate, to keep the static initrd binary small.
//!
//! Checks: magic `openssh-key-v1\0`, cipher and KDF `none`, exactly one key of type
//! `ssh-ed25519`, both check ints equal, the public key inside the private section equal to the
//! outer public blob and to the second half of the 64-byte secret, padding `1, 2, 3, …`, and the
//! `.pub` line's base64 blob equal to the private file's public blob. Does **not** verify that the
//! secret half derives the public half (that needs ed25519 arithmetic). Decoded secret bytes are
//! held only in [`Zeroizing`] buffers and never printed; errors name no content.

use zeroize::Zeroizing;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";
const ED25519: &[u8] = b"ssh-ed25519";

/// Why a key file's content was refused. Carries no content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The private key is not an unencrypted OpenSSH ed25519 private key.
    #[error("not an unencrypted OpenSSH ed25519 private key ({0})")]
    BadPrivate(&'static str),
    /// The public key is not an `ssh-ed25519` public key line.
    #[error("not an ssh-ed25519 public key ({0})")]
    BadPublic(&'static str),
    /// Both parse, but hold different keys.
    #[error("the .pub file does not hold the public key of the private key")]
    Mismatch,
}

fn b64_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64 (padding optional, ASCII whitespace skipped) into a zeroized buffer.
fn b64_decode(input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(input.len() / 4 * 3 + 3));
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0usize);
    for &c in input {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            pad += 1;
            continue;
        }
        if pad > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(b64_val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero and padding consistent.
    if acc != 0 || pad > 2 || (pad > 0 && (bits == 0 || pad != (bits as usize / 2))) {
        return None;
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }
}

/// Checks a public key blob (`string "ssh-ed25519", string pk[32]`) and returns it whole.
fn check_pub_blob(blob: &[u8]) -> bool {
    let mut r = Reader(blob);
    r.string() == Some(ED25519) && r.string().is_some_and(|pk| pk.len() == 32) && r.0.is_empty()
}

/// Parses the private key file; returns its public key blob.
pub fn parse_private(data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = KeyError::BadPrivate;
    let text = std::str::from_utf8(data).map_err(|_| bad("not text"))?;
    let text = text.trim();
    let body = text
        .strip_prefix(BEGIN)
        .and_then(|t| t.strip_suffix(END))
        .ok_or(bad("no OPENSSH PRIVATE KEY armor"))?;
    let raw = b64_decode(body.as_bytes()).ok_or(bad("bad base64"))?;
    let rest = raw
        .strip_prefix(MAGIC)
        .ok_or(bad("no openssh-key-v1 magic"))?;
    let mut r = Reader(rest);
    if r.string() != Some(b"none") {
        return Err(bad("encrypted"));
    }
    if r.string() != Some(b"none") {
        return Err(bad("encrypted"));
    }
    if !r.string().ok_or(bad("truncated"))?.is_empty() {
        return Err(bad("unexpected KDF options"));
    }
    if r.u32() != Some(1) {
        return Err(bad("not exactly one key"));
    }
    let blob = r.string().ok_or(bad("truncated"))?;
    if !check_pub_blob(blob) {
        return Err(bad("not an ssh-ed25519 key"));
    }
    let private = r.string().ok_or(bad("truncated"))?;
    if !r.0.is_empty() {
        return Err(bad("trailing data"));
    }
    if private.len() % 8 != 0 {
        return Err(bad("bad private section length"));
    }
    let mut p = Reader(private);
    let (c1, c2) = (p.u32(), p.u32());
    if c1.is_none() || c1 != c2 {
        return Err(bad("check ints differ"));
    }
    if p.string() != Some(ED25519) {
        return Err(bad("private section not ssh-ed25519"));
    }
    let pk = p.string().ok_or(bad("truncated"))?;
    let sk = p.string().ok_or(bad("truncated"))?;
    let _comment = p.string().ok_or(bad("truncated"))?;
    let outer_pk = &blob[blob.len() - 32..];
    if pk != outer_pk || sk.len() != 64 || &sk[32..] != outer_pk {
        return Err(bad("inconsistent public key"));
    }
    if p.0.len() >= 8 || !p.0.iter().enumerate().all(|(i, &b)| b as usize == i + 1) {
        return Err(bad("bad padding"));
    }
    Ok(blob.to_vec())
}

/// Parses a `.pub` line (`ssh-ed25519 <base64> [comment]`); returns the public key blob.
pub fn parse_public(data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = KeyError::BadPublic;
    let text = std::str::from_utf8(data).map_err(|_| bad("not text"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or(bad("empty"))?;
    if lines.next().is_some() {
        return Err(bad("more than one line"));
    }
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some("ssh-ed25519") {
        return Err(bad("type is not ssh-ed25519"));
    }
    let blob =
        b64_decode(fields.next().ok_or(bad("no key"))?.as_bytes()).ok_or(bad("bad base64"))?;
    if !check_pub_blob(&blob) {
        return Err(bad("bad key blob"));
    }
    Ok(blob.to_vec())
}

/// Checks a pair; either side may be absent (then only the present side is checked).
pub fn check_pair(private: Option<&[u8]>, public: Option<&[u8]>) -> Result<(), KeyError> {
    let a = private.map(parse_private).transpose()?;
    let b = public.map(parse_public).transpose()?;
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(KeyError::Mismatch),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip_basics() {
        assert_eq!(
            &b64_decode(b"AAAAC3NzaC1lZDI1NTE5").unwrap()[..],
            b"\0\0\0\x0bssh-ed25519"
        );
        assert_eq!(&b64_decode(b"YQ==").unwrap()[..], b"a");
        assert!(b64_decode(b"Y!==").is_none());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_private(b"hello").is_err());
        assert!(parse_public(b"ssh-ed25519 AAAA x").is_err());
        assert!(check_pair(Some(b"x"), None).is_err());
    }
}
