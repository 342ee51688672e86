//! Rewrap: give an existing sops file a new set of age recipients without touching anything
//! else — what `sops updatekeys` does for the age key source. Every value, the MAC,
//! `lastmodified`, the other metadata, comments and the layout stay byte-identical; only the
//! `sops.age` list is replaced (each new recipient gets a fresh armored age file wrapping the
//! *same* data key).
//!
//! **How.** The age list is replaced textually (YAML: the `age:` block under each document's
//! top-level `sops:`; JSON: the `"age": [...]` member of the top-level `"sops"` object, found
//! by a string-aware scan; dotenv: the `sops_age__list_*` lines), so no re-serialisation can
//! change a byte elsewhere. The binary store is handled through its JSON or YAML envelope. INI
//! is not supported (keypack never writes it).
//!
//! **Checks.** Before: the file is decrypted with the data key and its MAC verified — a
//! tampered file or a wrong key is refused and never re-encrypted for new recipients. After:
//! the result is parsed again, must list exactly the new recipients, keep `lastmodified` and
//! `mac`, and decrypt (MAC verified) with the same data key. Other key sources (PGP, KMS, …)
//! listed in the file are left as they are; files with `key_groups` are refused.

use crate::error::{SopsError, malformed};
use crate::metadata::AgeEntry;
use crate::writer::{SopsRecipient, dotenv_age_lines, json_age_member, wrap_all, yaml_age_block};
use crate::{DataKey, Format, SopsFile};

fn unsupported(what: impl Into<String>) -> SopsError {
    SopsError::Unsupported { what: what.into() }
}

/// Replaces the `sops.age` list of a sops file by one for `new_recipients`, wrapping the
/// file's data key `key` (already unwrapped, e.g. with [`SopsFile::data_key`] or a YubiKey
/// identity) for each. Everything else stays byte-identical.
///
/// Errors: whatever parsing/decrypting the file gives ([`SopsError::MacMismatch`] for a
/// tampered file or the wrong key, …); [`SopsError::Unsupported`] for `key_groups`, INI or a
/// file without a top-level `sops.age` list; [`SopsError::InvalidInput`] / [`SopsError::BadRecipient`] for the recipients.
pub fn rewrap(
    bytes: &[u8],
    format: Format,
    key: &DataKey,
    new_recipients: &[SopsRecipient],
) -> Result<Vec<u8>, SopsError> {
    let old = SopsFile::parse(bytes, format)?;
    if old.meta.in_key_groups {
        return Err(unsupported(
            "rewrapping a file whose recipients are listed under `key_groups`",
        ));
    }
    // The MAC must verify before the key is handed to anyone new. The plaintext is dropped
    // (and wiped) right away.
    drop(old.decrypt(key)?);
    let age = wrap_all(key, new_recipients)?;
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("file is not UTF-8"))?;
    let envelope_json = bytes.trim_ascii_start().starts_with(b"{");
    let out = match format {
        Format::Yaml => replace_yaml(text, &age)?,
        Format::Json => replace_json(text, &age)?,
        Format::Binary if envelope_json => replace_json(text, &age)?,
        Format::Binary => replace_yaml(text, &age)?,
        Format::Dotenv => replace_dotenv(text, &age)?,
        Format::Ini => return Err(unsupported("rewrapping INI files")),
    };
    let new = SopsFile::parse(out.as_bytes(), format)?;
    let same_meta = new.meta.lastmodified == old.meta.lastmodified
        && new.meta.mac == old.meta.mac
        && new.meta.age == age
        && new.docs.len() == old.docs.len();
    if !same_meta {
        return Err(unsupported(
            "this file's layout (the sops.age list could not be replaced in place)",
        ));
    }
    drop(new.decrypt(key)?);
    Ok(out.into_bytes())
}

/// [`rewrap`], unwrapping the data key with any of `ids` first.
pub fn rewrap_with(
    bytes: &[u8],
    format: Format,
    ids: &[&dyn age::Identity],
    new_recipients: &[SopsRecipient],
) -> Result<Vec<u8>, SopsError> {
    let key = SopsFile::parse(bytes, format)?.data_key(ids)?;
    rewrap(bytes, format, &key, new_recipients)
}

fn content(line: &str) -> &str {
    let l = line.strip_suffix('\n').unwrap_or(line);
    l.strip_suffix('\r').unwrap_or(l)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn blank(line: &str) -> bool {
    content(line).trim().is_empty()
}

/// YAML: in every document, the `age:` key directly under the top-level `sops:` mapping and
/// everything that belongs to it (lines indented deeper, or an indentless `- ` sequence).
fn replace_yaml(text: &str, age: &[AgeEntry]) -> Result<String, SopsError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len() + age.len() * 600);
    let (mut blocks, mut replaced) = (0usize, 0usize);
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        out.push_str(l);
        i += 1;
        if content(l).trim_end() != "sops:" {
            continue;
        }
        blocks += 1;
        let mut child = None;
        let mut done = false;
        while i < lines.len() {
            let l = lines[i];
            let c = content(l);
            if blank(l) || c.trim_start().starts_with('#') {
                out.push_str(l);
                i += 1;
                continue;
            }
            let ind = indent(c);
            if ind == 0 {
                break; // the sops mapping ended
            }
            let ci = *child.get_or_insert(ind);
            if ind == ci && c[ci..].trim_end() == "age:" && !done {
                // Skip the old list: deeper lines, indentless `- ` items, and blank lines
                // between them (not trailing ones).
                let mut j = i + 1;
                let mut end = j;
                while j < lines.len() {
                    let c = content(lines[j]);
                    if blank(lines[j]) {
                        j += 1;
                        continue;
                    }
                    let d = indent(c);
                    if d > ci || (d == ci && (c[ci..].starts_with("- ") || &c[ci..] == "-")) {
                        j += 1;
                        end = j;
                    } else {
                        break;
                    }
                }
                out.push_str(&yaml_age_block(age, ci));
                i = end;
                done = true;
                replaced += 1;
                continue;
            }
            out.push_str(l);
            i += 1;
        }
    }
    if blocks == 0 || replaced != blocks {
        return Err(unsupported(
            "a YAML file whose `sops:` metadata has no block `age:` list",
        ));
    }
    Ok(out)
}

/// A minimal scanner over JSON that `serde_json` already accepted.
struct Scan<'a> {
    b: &'a [u8],
}

impl Scan<'_> {
    fn ws(&self, mut i: usize) -> usize {
        while i < self.b.len() && matches!(self.b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }

    /// `i` at an opening quote; returns the index after the closing quote.
    fn string(&self, mut i: usize) -> Option<usize> {
        i += 1;
        while i < self.b.len() {
            match self.b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// `i` at the start of a value; returns the index after it.
    fn value(&self, mut i: usize) -> Option<usize> {
        match *self.b.get(i)? {
            b'"' => self.string(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                while i < self.b.len() {
                    match self.b[i] {
                        b'"' => {
                            i = self.string(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                None
            }
            _ => {
                while i < self.b.len() && !matches!(self.b[i], b',' | b'}' | b']') {
                    i += 1;
                }
                Some(i)
            }
        }
    }

    /// In the object starting at `obj` (`{`): the member `key` as (key start, value start,
    /// value end).
    fn member(&self, obj: usize, key: &str) -> Option<(usize, usize, usize)> {
        let mut i = obj + 1;
        loop {
            i = self.ws(i);
            if *self.b.get(i)? != b'"' {
                return None; // `}`: not found
            }
            let ks = i;
            let ke = self.string(ks)?;
            let name: String = serde_json::from_slice(&self.b[ks..ke]).ok()?;
            i = self.ws(ke);
            if *self.b.get(i)? != b':' {
                return None;
            }
            let vs = self.ws(i + 1);
            let ve = self.value(vs)?;
            if name == key {
                return Some((ks, vs, ve));
            }
            i = self.ws(ve);
            if *self.b.get(i)? != b',' {
                return None;
            }
            i += 1;
        }
    }
}

/// JSON: the `"age"` member of the top-level `"sops"` object, from its key to the end of its
/// array; the new member is indented like the old key's line.
fn replace_json(text: &str, age: &[AgeEntry]) -> Result<String, SopsError> {
    let none = || unsupported("a JSON file whose `sops` metadata has no `age` list");
    let s = Scan { b: text.as_bytes() };
    let top = s.ws(0);
    if s.b.get(top) != Some(&b'{') {
        return Err(malformed("JSON document is not an object"));
    }
    let (_, sops, _) = s.member(top, "sops").ok_or_else(none)?;
    if s.b.get(sops) != Some(&b'{') {
        return Err(none());
    }
    let (ks, vs, ve) = s.member(sops, "age").ok_or_else(none)?;
    if s.b.get(vs) != Some(&b'[') {
        return Err(none());
    }
    let line_start = text[..ks].rfind('\n').map_or(0, |p| p + 1);
    let ind = &text[line_start..ks];
    let ind = if ind.bytes().all(|c| c == b' ' || c == b'\t') {
        ind
    } else {
        ""
    };
    let member = json_age_member(age, ind);
    let mut out = String::with_capacity(text.len() + member.len());
    out.push_str(&text[..ks]);
    out.push_str(&member[ind.len()..]);
    out.push_str(&text[ve..]);
    Ok(out)
}

/// dotenv: the `sops_age__list_*` lines are replaced where the first of them was.
fn replace_dotenv(text: &str, age: &[AgeEntry]) -> Result<String, SopsError> {
    let mut out = String::with_capacity(text.len() + age.len() * 600);
    let mut done = false;
    for l in text.split_inclusive('\n') {
        if l.starts_with("sops_age__list_") {
            if !done {
                out.push_str(&dotenv_age_lines(age));
                done = true;
            }
            continue;
        }
        out.push_str(l);
    }
    if !done {
        return Err(unsupported(
            "a dotenv file without `sops_age__list_*` metadata",
        ));
    }
    Ok(out)
}
