//! Reading a `keys.tar.gz` back, for `keypack inspect`: entries, modes, owners and
//! fingerprints, never key bytes.
//!
//! Supports: gzip-compressed ustar/GNU tar as written by [`crate::BundleBuilder`] or by hand.
//! Does not support: other compressions, sparse files. Any entry that the layout does not know,
//! or that is a link or a folder, is reported rather than skipped, so a reviewer sees it.

use std::collections::BTreeMap;
use std::io::Read;

use flate2::read::GzDecoder;
use keypack_layout::{
    KnownFile, MAX_KEY_FILE_SIZE, MAX_SEALED_BLOB_SIZE, SEALED_BLOB_MODE, SEALED_BLOB_PATH,
    classify,
};
use ssh_key::{HashAlg, PublicKey};
use zeroize::Zeroizing;

use crate::BundleError;
use crate::build::derive_public;
use crate::seal::{SealInfo, seal_info};

/// One entry of an archive as read back. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Path as stored, with control characters escaped.
    pub path: String,
    /// `tar` entry type as a letter: `-` file, `d` folder, `l` symlink, `h` hard link, `?` other.
    pub kind: char,
    /// Mode bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the layout makes of the path, if anything.
    pub known: Option<KnownFile>,
    /// SHA256 fingerprint of the key in the entry, when it is a readable key.
    pub fingerprint: Option<String>,
    /// Problems found: unknown path, wrong mode, owner not root, not a regular file.
    pub problems: Vec<String>,
    /// For the sealed blob ([`SEALED_BLOB_PATH`]): how it is sealed, as its header says.
    pub sealed: Option<SealInfo>,
}

/// Reads every entry of a `keys.tar.gz`.
pub fn read_archive(bytes: &[u8]) -> Result<Vec<ArchiveEntry>, BundleError> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(BundleError::Archive)? {
        let mut entry = entry.map_err(BundleError::Archive)?;
        let header = entry.header();
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path: String = raw_path.escape_debug().collect();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => '-',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => '?',
        };
        let mode = header.mode().map_err(BundleError::Archive)?;
        let uid = header.uid().map_err(BundleError::Archive)?;
        let gid = header.gid().map_err(BundleError::Archive)?;
        let size = header.size().map_err(BundleError::Archive)?;
        let known = classify(&raw_path);
        let mut problems = Vec::new();
        let mut fingerprint = None;
        let mut sealed = None;
        let is_mark = raw_path == keypack_layout::BURN_MARK_PATH;
        match (&known, kind) {
            (None, '-') if raw_path == SEALED_BLOB_PATH => {
                if mode & 0o7777 != SEALED_BLOB_MODE {
                    problems.push(format!(
                        "mode {:04o}, expected {SEALED_BLOB_MODE:04o}",
                        mode
                    ));
                }
                if size > MAX_SEALED_BLOB_SIZE {
                    problems.push("larger than any sealed blob".into());
                } else {
                    // Ciphertext: not secret, but read bounded all the same.
                    let mut content = Vec::with_capacity(size as usize);
                    (&mut entry)
                        .take(MAX_SEALED_BLOB_SIZE)
                        .read_to_end(&mut content)
                        .map_err(BundleError::Archive)?;
                    sealed = seal_info(&content);
                    if sealed.is_none() {
                        problems.push("not a passphrase-sealed age file".into());
                    }
                }
            }
            // The burn mark (`--burn-after-boot`): plaintext, not a key.
            (None, '-') if is_mark => {
                if mode & 0o7777 != keypack_layout::BURN_MARK_MODE {
                    problems.push(format!(
                        "mode {:04o}, expected {:04o}",
                        mode,
                        keypack_layout::BURN_MARK_MODE
                    ));
                }
            }
            (None, _) => problems.push("path is not part of the keypack layout".into()),
            (Some(_), k) if k != '-' => problems.push("not a regular file".into()),
            (Some(file), _) => {
                if mode & 0o7777 != file.mode() {
                    problems.push(format!("mode {:04o}, expected {:04o}", mode, file.mode()));
                }
                if size > MAX_KEY_FILE_SIZE {
                    problems.push("larger than any key file".into());
                } else {
                    let mut content = Zeroizing::new(Vec::with_capacity(size as usize));
                    (&mut entry)
                        .take(MAX_KEY_FILE_SIZE)
                        .read_to_end(&mut content)
                        .map_err(BundleError::Archive)?;
                    fingerprint = fingerprint_of(file, &raw_path, &content);
                    if fingerprint.is_none() {
                        problems.push("content is not an ed25519 key".into());
                    }
                }
            }
        }
        if uid != 0 || gid != 0 {
            problems.push(format!("owner {uid}:{gid}, expected 0:0"));
        }
        out.push(ArchiveEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            size,
            known,
            fingerprint,
            problems,
            sealed,
        });
    }
    Ok(out)
}

/// The burn mark's token, when the archive carries `keypack/burn-after-boot`
/// (`--burn-after-boot`); never reads more of a key entry than its header.
pub fn burn_mark(bytes: &[u8]) -> Result<Option<String>, BundleError> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    for entry in archive.entries().map_err(BundleError::Archive)? {
        let entry = entry.map_err(BundleError::Archive)?;
        if *entry.path_bytes() != *keypack_layout::BURN_MARK_PATH.as_bytes() {
            continue;
        }
        let mut text = String::new();
        entry
            .take(64)
            .read_to_string(&mut text)
            .map_err(BundleError::Archive)?;
        return Ok(Some(text.trim().escape_debug().collect()));
    }
    Ok(None)
}

fn fingerprint_of(file: &KnownFile, path: &str, content: &[u8]) -> Option<String> {
    if file.public {
        let text = std::str::from_utf8(content).ok()?;
        let key = PublicKey::from_openssh(text.trim()).ok()?;
        Some(key.fingerprint(HashAlg::Sha256).to_string())
    } else {
        derive_public(path, content).ok().map(|(_, fp)| fp)
    }
}

/// Problems of the archive as a whole, beyond each entry's own: a path stored twice (tar
/// extracts the last copy, so the first is not what lands), a `.pub` that belongs to another key
/// than its private half, a key without its other half, and a missing host key.
pub fn archive_problems(entries: &[ArchiveEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for entry in entries {
        *seen.entry(entry.path.as_str()).or_insert(0usize) += 1;
    }
    for (path, count) in &seen {
        if *count > 1 {
            problems.push(format!("{path}: stored {count} times"));
        }
    }
    // Pair each known private key with its public half by role.
    let mut pairs: BTreeMap<String, (Option<&ArchiveEntry>, Option<&ArchiveEntry>)> =
        BTreeMap::new();
    for entry in entries {
        if let Some(known) = &entry.known {
            let slot = pairs.entry(known.role.private_path()).or_default();
            if known.public {
                slot.1 = Some(entry);
            } else {
                slot.0 = Some(entry);
            }
        }
    }
    for (private_path, pair) in &pairs {
        match pair {
            (Some(private), Some(public)) => {
                if let (Some(a), Some(b)) = (&private.fingerprint, &public.fingerprint)
                    && a != b
                {
                    problems.push(format!(
                        "{}: public key {b} does not match the private key {a}",
                        public.path
                    ));
                }
            }
            (Some(_), None) => problems.push(format!("{private_path}.pub: missing")),
            (None, Some(_)) => {
                problems.push(format!("{private_path}: missing (only the .pub is stored)"))
            }
            (None, None) => {}
        }
    }
    // In a sealed bundle the private keys are inside the blob: a `.pub` alone is expected.
    let is_sealed = entries.iter().any(|e| e.sealed.is_some());
    if is_sealed {
        problems.retain(|p| !p.ends_with(": missing (only the .pub is stored)"));
        for entry in entries
            .iter()
            .filter(|e| e.known.as_ref().is_some_and(|k| !k.public))
        {
            problems.push(format!(
                "{}: a private key in plaintext beside the sealed blob",
                entry.path
            ));
        }
    }
    let host = keypack_layout::KeyRole::Host.private_path();
    if !pairs.contains_key(&host) {
        problems.push(format!("{host}: missing (a bundle needs a host key)"));
    }
    problems
}

/// The sealed blob ([`SEALED_BLOB_PATH`]) of a `keys.tar.gz`, or `None` for an unsealed one.
/// `keypack run` checks the passphrase against it before it boots. Ciphertext only: reading
/// stops at the first private key path (an unsealed bundle), before its contents.
pub fn sealed_blob_in_archive(bytes: &[u8]) -> Result<Option<Vec<u8>>, BundleError> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    for entry in archive.entries().map_err(BundleError::Archive)? {
        let mut entry = entry.map_err(BundleError::Archive)?;
        let path = entry.path_bytes();
        // A private key in plaintext: an unsealed bundle. Stop before its contents are read.
        if std::str::from_utf8(&path)
            .ok()
            .and_then(classify)
            .is_some_and(|known| !known.public)
        {
            return Ok(None);
        }
        if &*path != SEALED_BLOB_PATH.as_bytes() {
            continue;
        }
        drop(path);
        let size = entry.header().size().map_err(BundleError::Archive)?;
        if size > MAX_SEALED_BLOB_SIZE {
            return Err(BundleError::UnexpectedEntry {
                path: SEALED_BLOB_PATH.into(),
                reason: "larger than any sealed blob",
            });
        }
        let mut blob = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(MAX_SEALED_BLOB_SIZE)
            .read_to_end(&mut blob)
            .map_err(BundleError::Archive)?;
        return Ok(Some(blob));
    }
    Ok(None)
}
