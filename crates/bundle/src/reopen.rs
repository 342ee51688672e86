//! Turning a `keys.tar.gz` received over the plugin protocol back into the
//! [`crate::SealedBundle`] it was made from, for an out-of-process media plugin written in Rust
//! (`keypack_plugin::external::serve`), which needs the same `&SealedBundle` a compiled-in
//! medium gets.
//!
//! Either way the archive is written again from what was read and must come out
//! byte-identical, so a plugin builds from exactly what keypack sealed: anything else in the
//! archive, another layout or another order is refused.
//! - A plain bundle: the private keys are read, checked and sealed again ([`BundleBuilder`]).
//! - A sealed bundle (`--seal passphrase`): the private keys are inside `keypack/sealed.age`
//!   and stay there (no passphrase here). The `.pub` files, the blob and the marks are taken as
//!   they are; the sealed private entries come from the manifest keypack sends beside the fd,
//!   each matched with its `.pub` file in the archive.

use std::io::Read;

use flate2::read::GzDecoder;
use keypack_layout::{
    BURN_MARK_MODE, BURN_MARK_PATH, MAX_KEY_FILE_SIZE, MAX_SEALED_BLOB_SIZE, PUBLIC_MODE,
    SEALED_BLOB_MODE, SEALED_BLOB_PATH, classify,
};
use secrecy::SecretSlice;
use ssh_key::{HashAlg, PublicKey};
use zeroize::Zeroizing;

use crate::build::write_archive;
use crate::{BundleBuilder, BundleError, ExtraEntry, Manifest, ManifestEntry, SealedBundle};

/// Largest archive [`reopen_archive`] reads back (a bundle holds a few small keys).
pub const MAX_ARCHIVE_SIZE: usize = 4 << 20;

/// The [`SealedBundle`] that `bytes` is. `sealed_keys` are the manifest's entries of the
/// private keys inside the sealed blob (`sealed: true`); for a plain bundle it is empty.
pub fn reopen_archive(
    bytes: &[u8],
    sealed_keys: &[ManifestEntry],
) -> Result<SealedBundle, BundleError> {
    if bytes.len() > MAX_ARCHIVE_SIZE {
        return Err(refused("", "archive is larger than any bundle"));
    }
    // The manifest says which it is; the archive must agree (each path refuses the other's
    // files), so it is read once.
    if sealed_keys.is_empty() {
        reopen_plain(bytes)
    } else {
        reopen_sealed(bytes, sealed_keys)
    }
}

/// Calls `each` with the path and the entry of every file of the archive (anything but a
/// regular file is refused); returns the mtime of the last one (keypack gives all one mtime).
fn each_file<'a>(
    bytes: &'a [u8],
    mut each: impl for<'e> FnMut(
        String,
        &mut tar::Entry<'e, GzDecoder<&'a [u8]>>,
    ) -> Result<(), BundleError>,
) -> Result<u64, BundleError> {
    let mut mtime = 0;
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    for entry in archive.entries().map_err(BundleError::Archive)? {
        let mut entry = entry.map_err(BundleError::Archive)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refused(&raw_path, "not a regular file"));
        }
        mtime = entry.header().mtime().map_err(BundleError::Archive)?;
        each(raw_path, &mut entry)?;
    }
    Ok(mtime)
}

fn refused(path: &str, reason: &'static str) -> BundleError {
    BundleError::UnexpectedEntry {
        path: path.escape_debug().collect(),
        reason,
    }
}

fn not_the_same() -> BundleError {
    refused(
        "",
        "archive is not one keypack sealed (it does not seal to the same bytes)",
    )
}

fn reopen_plain(bytes: &[u8]) -> Result<SealedBundle, BundleError> {
    let mut builder = BundleBuilder::new();
    // keypack already decided whether shared keys are allowed; the archive is its result.
    builder.allow_shared_keys(true);
    let mtime = each_file(bytes, |raw_path, entry| {
        if raw_path == SEALED_BLOB_PATH {
            return Err(refused(
                &raw_path,
                "a sealed bundle, but the manifest lists no sealed key",
            ));
        }
        if raw_path == BURN_MARK_PATH {
            // The builder writes the mark again from its token; the round trip checks the rest.
            let mut mark = String::new();
            entry
                .take(64)
                .read_to_string(&mut mark)
                .map_err(|_| refused(&raw_path, "not a burn mark"))?;
            builder.burn_after_boot(mark.trim_end_matches('\n'))?;
            return Ok(());
        }
        let known = classify(&raw_path).ok_or_else(|| refused(&raw_path, "not a bundle path"))?;
        if known.public {
            // Derived again from the private key by the builder; the round trip checks it.
            return Ok(());
        }
        let size = entry.header().size().map_err(BundleError::Archive)?;
        if size > MAX_KEY_FILE_SIZE {
            return Err(refused(&raw_path, "larger than any key"));
        }
        let mut contents = Zeroizing::new(Vec::with_capacity(size as usize));
        entry
            .take(size)
            .read_to_end(&mut contents)
            .map_err(BundleError::Archive)?;
        builder.add_key(known.role, SecretSlice::from(contents.to_vec()), None)?;
        Ok(())
    })?;
    let sealed = builder.seal(mtime)?;
    if sealed.expose_archive() != bytes {
        return Err(not_the_same());
    }
    Ok(sealed)
}

fn reopen_sealed(bytes: &[u8], sealed_keys: &[ManifestEntry]) -> Result<SealedBundle, BundleError> {
    let mut public_files: Vec<(ManifestEntry, SecretSlice<u8>)> = Vec::new();
    let mut extra: Vec<(ExtraEntry, Box<[u8]>)> = Vec::new();
    let mtime = each_file(bytes, |raw_path, entry| {
        let size = entry.header().size().map_err(BundleError::Archive)?;
        let (mode, limit) = match raw_path.as_str() {
            SEALED_BLOB_PATH => (SEALED_BLOB_MODE, MAX_SEALED_BLOB_SIZE),
            BURN_MARK_PATH => (BURN_MARK_MODE, 64),
            _ => {
                let known =
                    classify(&raw_path).ok_or_else(|| refused(&raw_path, "not a bundle path"))?;
                if !known.public {
                    // Never read: a sealed bundle must not carry a private key in plaintext.
                    return Err(refused(
                        &raw_path,
                        "a private key in plaintext beside the sealed blob",
                    ));
                }
                let mut text = String::new();
                entry
                    .take(MAX_KEY_FILE_SIZE)
                    .read_to_string(&mut text)
                    .map_err(|_| refused(&raw_path, "not a public key"))?;
                let line = text.strip_suffix('\n').unwrap_or(&text).to_owned();
                let fingerprint = PublicKey::from_openssh(&line)
                    .map_err(|_| refused(&raw_path, "not a public key"))?
                    .fingerprint(HashAlg::Sha256)
                    .to_string();
                let entry = ManifestEntry {
                    path: raw_path,
                    role: known.role,
                    public: true,
                    mode: PUBLIC_MODE,
                    uid: 0,
                    gid: 0,
                    size: text.len() as u64,
                    fingerprint,
                    public_key: line,
                    sealed: false,
                };
                public_files.push((entry, SecretSlice::from(text.into_bytes())));
                return Ok(());
            }
        };
        if size > limit {
            return Err(refused(&raw_path, "larger than keypack writes it"));
        }
        let mut contents = Vec::with_capacity(size as usize);
        entry
            .take(limit)
            .read_to_end(&mut contents)
            .map_err(BundleError::Archive)?;
        extra.push((
            ExtraEntry {
                path: raw_path,
                mode,
                size,
            },
            contents.into_boxed_slice(),
        ));
        Ok(())
    })?;
    // Each sealed key: a private entry of the manifest whose `.pub` half is in the archive with
    // the same public key; and every `.pub` in the archive has its sealed half.
    let mut entries: Vec<ManifestEntry> = Vec::new();
    for key in sealed_keys {
        let matches_pub = public_files.iter().any(|(p, _)| {
            p.role == key.role && p.public_key == key.public_key && p.fingerprint == key.fingerprint
        });
        if key.public || !key.sealed || key.path != key.role.private_path() || !matches_pub {
            return Err(refused(
                &key.path,
                "a sealed key of the manifest without its .pub file in the archive",
            ));
        }
        entries.push(key.clone());
    }
    if public_files
        .iter()
        .any(|(p, _)| !entries.iter().any(|k| k.role == p.role))
    {
        return Err(refused(
            "",
            "a .pub file in the archive without its sealed key in the manifest",
        ));
    }
    let blob = extra
        .iter()
        .find(|(e, _)| e.path == SEALED_BLOB_PATH)
        .map(|(_, c)| &c[..])
        .unwrap_or_default();
    let sealed = crate::seal_info(blob);
    if sealed.is_none() {
        return Err(refused(SEALED_BLOB_PATH, "not an age scrypt blob"));
    }
    let archive = write_archive(&public_files, &extra, mtime)?;
    if secrecy::ExposeSecret::expose_secret(&archive) != bytes {
        return Err(not_the_same());
    }
    entries.extend(public_files.iter().map(|(e, _)| e.clone()));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        entries,
        extra: extra.iter().map(|(e, _)| e.clone()).collect(),
        sealed,
    };
    Ok(SealedBundle::from_parts(
        archive,
        manifest,
        public_files,
        extra,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_archive_unseals_to_the_same_bundle_and_a_changed_one_is_refused() {
        let key = ssh_key::PrivateKey::random(
            &mut ssh_key::rand_core::OsRng,
            ssh_key::Algorithm::Ed25519,
        )
        .unwrap();
        let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        let host_only = || {
            let mut b = crate::BundleBuilder::new();
            b.add_key(
                keypack_layout::KeyRole::Host,
                secrecy::SecretSlice::from(text.as_bytes().to_vec()),
                None,
            )
            .unwrap();
            b
        };
        let b = host_only();
        let sealed = b.seal(1234).unwrap();
        let back = reopen_archive(sealed.expose_archive(), &[]).unwrap();
        assert_eq!(back.manifest(), sealed.manifest());
        assert_eq!(back.expose_archive(), sealed.expose_archive());
        let mut bad = sealed.expose_archive().to_vec();
        let n = bad.len();
        bad[n - 12] ^= 1;
        assert!(reopen_archive(&bad, &[]).is_err());

        // The burn mark travels through the round trip; a sealed bundle is refused by name.
        let mut b = host_only();
        b.burn_after_boot("0123456789abcdef0123456789abcdef")
            .unwrap();
        let marked = b.seal(1234).unwrap();
        let back = reopen_archive(marked.expose_archive(), &[]).unwrap();
        assert_eq!(back.expose_archive(), marked.expose_archive());
        assert_eq!(back.burn_mark(), marked.burn_mark());

        // A sealed bundle reopens with its manifest's sealed entries, to the same manifest;
        // without them, or with a key that is not the one sealed, it is refused.
        let mut b = host_only();
        b.burn_after_boot("0123456789abcdef0123456789abcdef")
            .unwrap();
        b.seal_with_passphrase_work_factor(secrecy::SecretString::from("pass phrase"), 2);
        let sealed = b.seal(1234).unwrap();
        let keys: Vec<ManifestEntry> = sealed
            .manifest()
            .entries
            .iter()
            .filter(|e| e.sealed)
            .cloned()
            .collect();
        assert_eq!(keys.len(), 1);
        let back = reopen_archive(sealed.expose_archive(), &keys).unwrap();
        assert_eq!(back.manifest(), sealed.manifest());
        assert_eq!(back.expose_archive(), sealed.expose_archive());
        assert_eq!(back.burn_mark(), sealed.burn_mark());
        let files = |b: &SealedBundle| -> Vec<(String, Vec<u8>)> {
            b.expose_files()
                .map(|(e, c)| (e.path.clone(), c.to_vec()))
                .chain(b.extra_files().map(|(e, c)| (e.path.clone(), c.to_vec())))
                .collect()
        };
        assert_eq!(files(&back), files(&sealed));
        assert!(reopen_archive(sealed.expose_archive(), &[]).is_err());
        let other = ssh_key::PrivateKey::random(
            &mut ssh_key::rand_core::OsRng,
            ssh_key::Algorithm::Ed25519,
        )
        .unwrap();
        let mut wrong = keys.clone();
        wrong[0].public_key = other.public_key().to_openssh().unwrap();
        assert!(reopen_archive(sealed.expose_archive(), &wrong).is_err());
        let mut bad = sealed.expose_archive().to_vec();
        let n = bad.len();
        bad[n - 12] ^= 1;
        assert!(reopen_archive(&bad, &keys).is_err());
        // Sealed entries for a plain archive: refused too.
        assert!(reopen_archive(marked.expose_archive(), &keys).is_err());
    }
}
