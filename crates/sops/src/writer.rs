//! The encrypting half, for exactly the files keypack writes: a flat top-level map of string
//! values (host and user documents) and the binary envelope (`{"data": …}`), both in the form
//! real sops writes them, so that `sops decrypt`, `sops set`, `sops edit` and `sops updatekeys`
//! accept the output and a later `sops` rewrite changes nothing but what the user changed.
//!
//! **What is written** (sops 3.11 `EncryptTree` + stores, see `shared/notes/sops-format.md`):
//! - a fresh 32-byte data key from the OS RNG, one fresh 32-byte IV per value, AES-256-GCM with
//!   associated data `name:` (the value's path joined by `:` plus a trailing `:`), every value
//!   `type:str`; an empty value is a bare `""`, as sops writes it;
//! - the MAC: SHA-512 over the plaintexts in file order, as 128 uppercase hex digits, encrypted
//!   with associated data `lastmodified`;
//! - `lastmodified` in RFC 3339, UTC, whole seconds (Go's `time.Now().UTC()` formatted with
//!   `time.RFC3339`);
//! - `sops.age`: per recipient, an independent armored age file holding the 32 raw key bytes;
//! - `unencrypted_suffix: _unencrypted` (sops' default rule, written explicitly as sops does;
//!   omitted for the binary envelope, whose rules sops ignores), no `mac_only_encrypted`;
//! - `version: 3.11.0` — [`SOPS_VERSION`]: the release keypack's conformance tests and
//!   committed vectors use, so the files read like the ones that release writes.
//!
//! **Every field is encrypted, public keys included.** The repository layout allows a
//! `<field>_pub` public key inside a host/user document. sops' default rule would encrypt it
//! anyway (the suffix is `_unencrypted`, not `_pub`); keeping it readable would need an
//! `unencrypted_regex: _pub$` in the metadata, which then also governs every value the user adds
//! later with `sops edit`/`sops set`. Encrypting everything is what sops itself does, keeps the
//! metadata at sops' defaults, makes the public key's *value* and *name* authenticated (the
//! name is the AES-GCM associated data), and keypack's reader takes `<field>_pub` from the
//! decrypted tree either way. The readable record of public keys is `keypack.pins`.
//!
//! **Secret hygiene.** Plaintexts are only read from the caller's [`SecretSlice`]s and copied
//! into wiped, exactly sized buffers; the data key lives in a [`DataKey`]; nothing touches the
//! file system. The output holds ciphertext only. Before returning, the output is parsed and
//! decrypted again with the data key and the MAC checked, so a file that this crate (and so,
//! by the conformance tests, sops) could not read back is never returned.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use age::armor::{ArmoredWriter, Format as ArmorFormat};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::cipher::{DataKey, SopsCipher, seal};
use crate::error::SopsError;
use crate::metadata::AgeEntry;
use crate::{Format, SopsFile};

/// The `version` written into the metadata.
pub const SOPS_VERSION: &str = "3.11.0";

/// One recipient of a sops file: the string written as `sops.age[].recipient` and the
/// [`age::Recipient`] that wraps the data key for it.
pub struct SopsRecipient {
    recipient: String,
    inner: Box<dyn age::Recipient + Send>,
}

impl std::fmt::Debug for SopsRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SopsRecipient")
            .field(&self.recipient)
            .finish()
    }
}

impl SopsRecipient {
    /// Parses a recipient as sops does: `age1…` (X25519) natively, `age1<plugin>1…` (for
    /// example `age1yubikey1…`) through the plugin binary `age-plugin-<plugin>` on `PATH`, with
    /// no user interaction ([`age::NoCallbacks`]).
    pub fn parse(recipient: &str) -> Result<SopsRecipient, SopsError> {
        Self::parse_with_callbacks(recipient, age::NoCallbacks)
    }

    /// Like [`parse`](Self::parse), with the callbacks a plugin may use to talk to the user.
    pub fn parse_with_callbacks<C: age::Callbacks>(
        recipient: &str,
        callbacks: C,
    ) -> Result<SopsRecipient, SopsError> {
        let bad = |reason: String| SopsError::BadRecipient {
            recipient: shown(recipient),
            reason,
        };
        if let Ok(r) = recipient.parse::<age::x25519::Recipient>() {
            return Self::custom(recipient, Box::new(r));
        }
        if let Ok(r) = recipient.parse::<age::plugin::Recipient>() {
            let plugin = r.plugin().to_owned();
            let p = age::plugin::RecipientPluginV1::new(&plugin, &[r], &[], callbacks)
                .map_err(|e| bad(e.to_string()))?;
            return Self::custom(recipient, Box::new(p));
        }
        Err(bad(
            "not an age X25519 (age1…) or plugin (age1<name>1…) recipient".to_owned(),
        ))
    }

    /// A recipient with its own [`age::Recipient`] implementation (a hardware stanza made in
    /// process, a test double). `recipient` is what the file lists; it must be a single
    /// Bech32-like word (letters and digits), as every age recipient is.
    pub fn custom(
        recipient: &str,
        inner: Box<dyn age::Recipient + Send>,
    ) -> Result<SopsRecipient, SopsError> {
        if recipient.is_empty() || !recipient.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SopsError::BadRecipient {
                recipient: shown(recipient),
                reason: "a recipient is one word of ASCII letters and digits".to_owned(),
            });
        }
        Ok(SopsRecipient {
            recipient: recipient.to_owned(),
            inner,
        })
    }

    /// The recipient string, as listed in `sops.age[].recipient`.
    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    /// Wraps the data key into a fresh armored age file for this recipient alone (sops:
    /// `age.Encrypt(armor.NewWriter(…), recipient)` of the 32 raw bytes).
    pub(crate) fn wrap(&self, key: &DataKey) -> Result<AgeEntry, SopsError> {
        let fail = |reason: String| SopsError::BadRecipient {
            recipient: self.recipient.clone(),
            reason,
        };
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&*self.inner as &dyn age::Recipient))
                .map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::with_capacity(512);
        let io = |e: std::io::Error| fail(e.to_string());
        let armor = ArmoredWriter::wrap_output(&mut out, ArmorFormat::AsciiArmor).map_err(io)?;
        let mut w = enc.wrap_output(armor).map_err(io)?;
        w.write_all(key.expose()).map_err(io)?;
        w.finish().and_then(|a| a.finish()).map_err(io)?;
        let enc = String::from_utf8(out).map_err(|_| fail("armor is not text".to_owned()))?;
        if !enc.ends_with('\n') {
            return Err(fail("armor does not end with a newline".to_owned()));
        }
        Ok(AgeEntry {
            recipient: self.recipient.clone(),
            enc,
        })
    }
}

/// A recipient string as it may appear in an error: a public `age1…` word as is; anything
/// else (for example an `AGE-SECRET-KEY-1…` pasted by mistake) only by its length.
fn shown(recipient: &str) -> String {
    let public = recipient.len() <= 1024
        && recipient.starts_with("age1")
        && recipient.bytes().all(|b| b.is_ascii_alphanumeric());
    if public {
        recipient.to_owned()
    } else if recipient
        .get(..14)
        .is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY"))
    {
        "<an age secret key, not a recipient: not shown>".to_owned()
    } else {
        format!("<{} characters, not shown>", recipient.chars().count())
    }
}

/// Wraps `key` for every recipient, in order (at least one is required).
pub(crate) fn wrap_all(
    key: &DataKey,
    recipients: &[SopsRecipient],
) -> Result<Vec<AgeEntry>, SopsError> {
    if recipients.is_empty() {
        return Err(invalid("no recipients given"));
    }
    let mut seen = std::collections::HashSet::new();
    for r in recipients {
        if !seen.insert(r.recipient.as_str()) {
            return Err(invalid(format!("recipient `{}` given twice", r.recipient)));
        }
    }
    recipients.iter().map(|r| r.wrap(key)).collect()
}

fn invalid(what: impl Into<String>) -> SopsError {
    SopsError::InvalidInput { what: what.into() }
}

/// `t` as sops writes `lastmodified`: RFC 3339, UTC, whole seconds (`2026-11-25T17:18:57Z`).
pub fn sops_timestamp(t: SystemTime) -> Result<String, SopsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("timestamp before 1970"))?
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if y > 9999 {
        return Err(invalid("timestamp after year 9999"));
    }
    Ok(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Field names keypack writes: `[A-Za-z_][A-Za-z0-9_.-]*`, and none that sops would read
/// differently: `sops` / `sops_*` (metadata; dotenv flattens metadata into `sops_` keys),
/// `*_unencrypted` (sops' default rule would expect a plain value), YAML 1.1 booleans/null
/// (yaml.v3 would not see a string key).
fn check_name(name: &str) -> Result<(), SopsError> {
    let shown = || name.escape_debug().to_string();
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(invalid(format!(
            "field name `{}` is not of the form [A-Za-z_][A-Za-z0-9_.-]*",
            shown()
        )));
    }
    let lower = name.to_ascii_lowercase();
    if lower == "sops" || lower.starts_with("sops_") {
        return Err(invalid(format!(
            "field name `{name}` is reserved for sops metadata"
        )));
    }
    if name.ends_with("_unencrypted") {
        return Err(invalid(format!(
            "field name `{name}` ends with sops' `_unencrypted` suffix"
        )));
    }
    if matches!(
        lower.as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return Err(invalid(format!(
            "field name `{name}` is not a string key in YAML"
        )));
    }
    Ok(())
}

/// `(name, ENC[…] or "")` in file order.
pub(crate) type EncValues<'a> = Vec<(&'a str, String)>;

/// What a store emitter needs: the encrypted values in order and the metadata.
pub(crate) struct Encrypted<'a> {
    pub values: EncValues<'a>,
    pub age: Vec<AgeEntry>,
    pub lastmodified: String,
    pub mac: String,
    /// Whether to write `unencrypted_suffix: _unencrypted` (not for the binary envelope).
    pub rule: bool,
}

/// Encrypts `(name, plaintext)` pairs under `key` and computes the MAC, as sops' `EncryptTree`.
fn encrypt_values<'a>(
    key: &DataKey,
    values: &[(&'a str, &[u8])],
    lastmodified: &str,
) -> Result<(EncValues<'a>, String), SopsError> {
    let cipher: SopsCipher = key.cipher();
    let mut hash = Sha512::new();
    let mut out = Vec::with_capacity(values.len());
    let mut aad = String::new();
    for (name, plain) in values {
        aad.clear();
        aad.push_str(name);
        aad.push(':');
        out.push((*name, seal(&cipher, plain, aad.as_bytes(), "str")?));
        hash.update(plain);
    }
    let digest = hash.finalize();
    let mut hex = Zeroizing::new([0u8; 128]);
    for (i, b) in digest.iter().enumerate() {
        const H: &[u8; 16] = b"0123456789ABCDEF";
        hex[2 * i] = H[(b >> 4) as usize];
        hex[2 * i + 1] = H[(b & 15) as usize];
    }
    let mac = seal(&cipher, &hex[..], lastmodified.as_bytes(), "str")?;
    Ok((out, mac))
}

/// The `sops.age` list in sops' YAML layout, `indent` spaces deep for the `age:` key (sops: 4).
pub(crate) fn yaml_age_block(age: &[AgeEntry], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = format!("{pad}age:\n");
    for e in age {
        s.push_str(&format!("{pad}    - recipient: {}\n", e.recipient));
        s.push_str(&format!("{pad}      enc: |\n"));
        for line in e.enc.lines() {
            s.push_str(&format!("{pad}        {line}\n"));
        }
    }
    s
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The `"age": [...]` member in sops' JSON layout (tabs): every line starts with `ind` (sops:
/// two tabs), nested lines add tabs; no trailing comma or newline.
pub(crate) fn json_age_member(age: &[AgeEntry], ind: &str) -> String {
    let mut s = format!("{ind}\"age\": [\n");
    for (i, e) in age.iter().enumerate() {
        s.push_str(&format!("{ind}\t{{\n"));
        s.push_str(&format!(
            "{ind}\t\t\"recipient\": {},\n",
            json_str(&e.recipient)
        ));
        s.push_str(&format!("{ind}\t\t\"enc\": {}\n", json_str(&e.enc)));
        s.push_str(&format!(
            "{ind}\t}}{}\n",
            if i + 1 < age.len() { "," } else { "" }
        ));
    }
    s.push_str(&format!("{ind}]"));
    s
}

/// The flattened `sops_age__list_N__map_*` lines of sops' dotenv store.
pub(crate) fn dotenv_age_lines(age: &[AgeEntry]) -> String {
    let mut s = String::new();
    for (i, e) in age.iter().enumerate() {
        s.push_str(&format!(
            "sops_age__list_{i}__map_enc={}\n",
            e.enc.replace('\n', "\\n")
        ));
        s.push_str(&format!(
            "sops_age__list_{i}__map_recipient={}\n",
            e.recipient
        ));
    }
    s
}

pub(crate) fn emit(e: &Encrypted<'_>, format: Format) -> Result<Vec<u8>, SopsError> {
    let mut s = String::new();
    match format {
        Format::Yaml => {
            for (k, v) in &e.values {
                if v.is_empty() {
                    s.push_str(&format!("{k}: \"\"\n"));
                } else {
                    s.push_str(&format!("{k}: {v}\n"));
                }
            }
            s.push_str("sops:\n");
            s.push_str(&yaml_age_block(&e.age, 4));
            s.push_str(&format!("    lastmodified: \"{}\"\n", e.lastmodified));
            s.push_str(&format!("    mac: {}\n", e.mac));
            if e.rule {
                s.push_str("    unencrypted_suffix: _unencrypted\n");
            }
            s.push_str(&format!("    version: {SOPS_VERSION}\n"));
        }
        Format::Json => {
            s.push_str("{\n");
            for (k, v) in &e.values {
                s.push_str(&format!("\t{}: {},\n", json_str(k), json_str(v)));
            }
            s.push_str("\t\"sops\": {\n");
            s.push_str(&json_age_member(&e.age, "\t\t"));
            s.push_str(",\n");
            s.push_str(&format!(
                "\t\t\"lastmodified\": {},\n",
                json_str(&e.lastmodified)
            ));
            s.push_str(&format!("\t\t\"mac\": {},\n", json_str(&e.mac)));
            if e.rule {
                s.push_str("\t\t\"unencrypted_suffix\": \"_unencrypted\",\n");
            }
            s.push_str(&format!("\t\t\"version\": {}\n", json_str(SOPS_VERSION)));
            s.push_str("\t}\n}\n");
        }
        Format::Dotenv => {
            for (k, v) in &e.values {
                s.push_str(&format!("{k}={v}\n"));
            }
            s.push_str(&dotenv_age_lines(&e.age));
            s.push_str(&format!("sops_lastmodified={}\n", e.lastmodified));
            s.push_str(&format!("sops_mac={}\n", e.mac));
            if e.rule {
                s.push_str("sops_unencrypted_suffix=_unencrypted\n");
            }
            s.push_str(&format!("sops_version={SOPS_VERSION}\n"));
        }
        Format::Ini | Format::Binary => {
            return Err(invalid(format!(
                "keypack writes documents as YAML, JSON or dotenv, not {format:?}"
            )));
        }
    }
    Ok(s.into_bytes())
}

/// Parses `out` back, decrypts it with `key` (MAC included) and checks every value.
fn self_check(
    out: &[u8],
    parse_as: Format,
    key: &DataKey,
    values: &[(&str, &[u8])],
) -> Result<(), SopsError> {
    let internal = |what: &str| invalid(format!("internal self-check failed: {what}"));
    let file = SopsFile::parse(out, parse_as)?;
    let dec = file.decrypt(key)?;
    let doc = dec
        .documents()
        .first()
        .ok_or_else(|| internal("no document"))?;
    let crate::Value::Map(items) = doc else {
        return Err(internal("not a map"));
    };
    if items.len() != values.len() {
        return Err(internal("field count"));
    }
    for ((k, v), (name, plain)) in items.iter().zip(values) {
        let same = k == name
            && v.as_scalar()
                .is_some_and(|s| s.kind() == crate::ValueType::Str && s.expose() == *plain);
        if !same {
            return Err(internal(&format!("field `{name}`")));
        }
    }
    Ok(())
}

fn encrypt_inner(
    values: &[(&str, &[u8])],
    out_format: Format,
    parse_as: Format,
    rule: bool,
    recipients: &[SopsRecipient],
    now: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, SopsError> {
    let lastmodified = sops_timestamp(now)?;
    let key = DataKey::generate()?;
    let age = wrap_all(&key, recipients)?;
    let (enc_values, mac) = encrypt_values(&key, values, &lastmodified)?;
    let e = Encrypted {
        values: enc_values,
        age,
        lastmodified,
        mac,
        rule,
    };
    let out = Zeroizing::new(emit(&e, out_format)?);
    self_check(&out, parse_as, &key, values)?;
    Ok(out)
}

/// Encrypts a host or user document: a flat map of string values, every one encrypted (see the
/// module docs for why public keys are encrypted too), written as sops writes it.
///
/// - `fields` come first, in order, then `public_fields` (public keys, `<field>_pub`), in order.
/// - `format`: [`Format::Yaml`], [`Format::Json`] or [`Format::Dotenv`].
/// - `recipients`: every one gets its own `sops.age` entry, in order.
/// - `now`: becomes `lastmodified` (whole seconds, UTC).
///
/// Errors: [`SopsError::InvalidInput`] for an empty recipient list (or one listed twice), a
/// duplicate or unusable field name (names are `[A-Za-z_][A-Za-z0-9_.-]*`, not `sops`/`sops_*`
/// (metadata), not `*_unencrypted` (sops would expect a plain value), not a YAML boolean/null
/// word) or an unsupported `format`;
/// [`SopsError::BadRecipient`] if a recipient (plugin) cannot wrap the key;
/// [`SopsError::Rng`] if the OS RNG fails. The output holds no plaintext.
pub fn encrypt_document(
    fields: &[(&str, SecretSlice<u8>)],
    public_fields: &[(&str, &str)],
    format: Format,
    recipients: &[SopsRecipient],
    now: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, SopsError> {
    if !matches!(format, Format::Yaml | Format::Json | Format::Dotenv) {
        return Err(invalid(format!(
            "keypack writes documents as YAML, JSON or dotenv, not {format:?}"
        )));
    }
    let mut values: Vec<(&str, &[u8])> = Vec::with_capacity(fields.len() + public_fields.len());
    for (name, v) in fields {
        values.push((name, v.expose_secret()));
    }
    for (name, v) in public_fields {
        values.push((name, v.as_bytes()));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &values {
        check_name(name)?;
        if !seen.insert(*name) {
            return Err(invalid(format!("field `{name}` given twice")));
        }
    }
    encrypt_inner(&values, format, format, true, recipients, now)
}

/// Encrypts raw bytes into sops' binary envelope (`sops encrypt` of a file sops does not
/// recognise): the single value `data` (associated data `data:`), no encryption rule in the
/// metadata. `envelope` is [`Format::Json`] (what sops writes by default) or [`Format::Yaml`];
/// read it back with [`Format::Binary`] (sops: `--input-type binary` or by file name).
pub fn encrypt_binary(
    data: &SecretSlice<u8>,
    envelope: Format,
    recipients: &[SopsRecipient],
    now: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, SopsError> {
    if !matches!(envelope, Format::Json | Format::Yaml) {
        return Err(invalid(format!(
            "the binary envelope is JSON or YAML, not {envelope:?}"
        )));
    }
    let values = [("data", data.expose_secret())];
    encrypt_inner(&values, envelope, Format::Binary, false, recipients, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_as_sops_writes_them() {
        let at = |s: u64| sops_timestamp(UNIX_EPOCH + Duration::from_secs(s)).expect("ts");
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_713_537), "2026-11-26T17:18:57Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        // Fractions are dropped, as Go's RFC3339 layout does.
        assert_eq!(
            sops_timestamp(UNIX_EPOCH + Duration::from_millis(1_500)).expect("ts"),
            "1970-01-01T00:00:01Z"
        );
        assert!(sops_timestamp(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }

    #[test]
    fn names_sops_would_misread_are_refused() {
        for ok in ["ssh_host_ed25519_key", "id_ed25519_pub", "_x", "a.b-c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sops",
            "SOPS_mac",
            "a_unencrypted",
            "true",
            "No",
            "1abc",
            "a b",
            "a:b",
            "a=b",
            "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
