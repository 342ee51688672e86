//! Sealing (`--seal passphrase`): the private keys' tar inside one age file with an scrypt
//! passphrase recipient, stored in the bundle as [`SEALED_BLOB_PATH`] beside the plaintext
//! `.pub` files.
//!
//! The tar inside is what the unsealed bundle holds for the private keys: ustar, file entries
//! only, sorted paths, uid/gid 0, mode 0600, a fixed mtime — uncompressed (a key does not
//! compress, and the target then needs no gzip reader).
//!
//! Why age with scrypt and one fixed work factor ([`DEFAULT_SCRYPT_WORK_FACTOR`]): age is the
//! format the keys repository already uses and has a reviewed Rust implementation on both
//! sides; the work factor is fixed (not measured on the building machine, as `age -p` does) so
//! SECURITY.md can state it and the target, a slower machine or a TCG VM, knows what to expect.

use std::io::{Read, Write};

use keypack_layout::SEALED_BLOB_PATH;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use zeroize::Zeroizing;

use crate::BundleError;
use crate::build::ManifestEntry;

/// scrypt work factor (log2 N, r = 8, p = 1) of a sealed bundle: 2^18 needs 256 MiB of memory
/// and about a second on a current x86-64 core per guess.
pub const DEFAULT_SCRYPT_WORK_FACTOR: u8 = 18;

/// Largest work factor [`unseal`] and [`check_passphrase`] accept (what `load-keys` accepts
/// too): a blob asking for more would take minutes and gigabytes before failing.
pub const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

/// What `inspect` prints for a sealed bundle.
pub const SEAL_KIND: &str = "age, scrypt";

/// How a sealed bundle was sealed. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealInfo {
    /// `age, scrypt`.
    pub kind: &'static str,
    /// The scrypt work factor (log2 N) stated in the blob's header.
    pub work_factor: u8,
    /// Where the blob is in the archive ([`SEALED_BLOB_PATH`]).
    pub path: &'static str,
}

/// Why a sealed blob could not be opened. Never holds the passphrase or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The passphrase does not open the blob.
    #[error("wrong passphrase for the sealed keys ({SEALED_BLOB_PATH})")]
    WrongPassphrase,
    /// The blob is not an age file with exactly one scrypt stanza.
    #[error("{SEALED_BLOB_PATH} is not a passphrase-sealed age file")]
    NotSealed,
    /// The blob asks for more scrypt work than allowed.
    #[error(
        "{SEALED_BLOB_PATH} asks for scrypt work factor {0}, more than {MAX_SCRYPT_WORK_FACTOR}"
    )]
    WorkFactor(u8),
    /// The blob is damaged (header or payload fails authentication, or is truncated).
    #[error("{SEALED_BLOB_PATH} is damaged: {0}")]
    Corrupt(String),
}

/// The private keys' tar, in a buffer allocated once at its final size.
pub(crate) fn private_tar(
    files: &[(ManifestEntry, SecretSlice<u8>)],
    mtime: u64,
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let len: usize = files
        .iter()
        .map(|(e, _)| 512 + (e.size as usize).div_ceil(512) * 512)
        .sum::<usize>()
        + 1024;
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    {
        let mut tar = tar::Builder::new(&mut *out);
        tar.mode(tar::HeaderMode::Deterministic);
        for (meta, content) in files {
            let mut header = crate::build::file_header(meta.size, meta.mode, mtime)?;
            tar.append_data(&mut header, &meta.path, content.expose_secret())
                .map_err(BundleError::Archive)?;
        }
        tar.finish().map_err(BundleError::Archive)?;
    }
    debug_assert!(out.len() <= len, "private tar outgrew its pre-sized buffer");
    Ok(out)
}

/// Encrypts `plaintext` to `passphrase` with scrypt work factor `log_n`.
pub(crate) fn encrypt(
    plaintext: &[u8],
    passphrase: SecretString,
    log_n: u8,
) -> Result<Box<[u8]>, BundleError> {
    let mut recipient = age::scrypt::Recipient::new(passphrase);
    recipient.set_work_factor(log_n);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|_| BundleError::Seal)?;
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(BundleError::Archive)?;
    writer.write_all(plaintext).map_err(BundleError::Archive)?;
    writer.finish().map_err(BundleError::Archive)?;
    Ok(out.into_boxed_slice())
}

/// The scrypt work factor stated in a sealed blob's header, if it is one (`-> scrypt SALT N`).
pub fn blob_work_factor(blob: &[u8]) -> Option<u8> {
    let head = blob.get(..blob.len().min(512))?;
    let text = std::str::from_utf8(head.split(|b| *b == b'\n').nth(1)?).ok()?;
    let mut words = text.split(' ');
    if blob.starts_with(b"age-encryption.org/v1\n")
        && words.next() == Some("->")
        && words.next() == Some("scrypt")
    {
        words.nth(1)?.parse().ok()
    } else {
        None
    }
}

/// What a sealed blob says about itself.
pub fn seal_info(blob: &[u8]) -> Option<SealInfo> {
    blob_work_factor(blob).map(|work_factor| SealInfo {
        kind: SEAL_KIND,
        work_factor,
        path: SEALED_BLOB_PATH,
    })
}

fn decryptor(
    blob: &[u8],
    passphrase: SecretString,
) -> Result<age::stream::StreamReader<&[u8]>, UnsealError> {
    let log_n = blob_work_factor(blob).ok_or(UnsealError::NotSealed)?;
    if log_n > MAX_SCRYPT_WORK_FACTOR {
        return Err(UnsealError::WorkFactor(log_n));
    }
    let decryptor = age::Decryptor::new(blob).map_err(|e| UnsealError::Corrupt(e.to_string()))?;
    if !decryptor.is_scrypt() {
        return Err(UnsealError::NotSealed);
    }
    let mut identity = age::scrypt::Identity::new(passphrase);
    identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                UnsealError::WrongPassphrase
            }
            other => UnsealError::Corrupt(other.to_string()),
        })
}

/// Checks that `passphrase` opens `blob` without decrypting the payload (`keypack run` checks
/// the passphrase before it boots; it never needs the keys themselves). The header's MAC is
/// checked, so a damaged header is an error too.
pub fn check_passphrase(blob: &[u8], passphrase: SecretString) -> Result<(), UnsealError> {
    decryptor(blob, passphrase).map(drop)
}

/// Decrypts a sealed blob into a buffer allocated once (the plaintext is never longer than the
/// ciphertext), zeroized when dropped. The whole payload is authenticated before it is returned.
pub fn unseal(blob: &[u8], passphrase: SecretString) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    let reader = decryptor(blob, passphrase)?;
    let mut out = Zeroizing::new(Vec::with_capacity(blob.len()));
    read_bounded(reader, &mut out, blob.len())?;
    Ok(out)
}

/// Reads to the end into `out` without ever growing it past `cap` (growth would copy the
/// plaintext and free the old block unwiped).
fn read_bounded(mut r: impl Read, out: &mut Vec<u8>, cap: usize) -> Result<(), UnsealError> {
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(()),
            Ok(n) if out.len() + n <= cap => out.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(UnsealError::Corrupt("payload longer than the file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnsealError::Corrupt(e.to_string())),
        }
    }
}
