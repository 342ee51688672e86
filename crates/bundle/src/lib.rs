//! The bundle: decrypted keys → a sealed, deterministic, in-memory `keys.tar.gz`.
//!
//! Position on the data path: `keys repo → decrypt → **bundle** → media plugin`. Input is a set
//! of OpenSSH ed25519 private keys as `secrecy` types, one per [`KeyRole`]; output is a
//! [`SealedBundle`]: the archive bytes and a [`Manifest`] of entries and fingerprints, neither of
//! which can be changed after sealing.
//!
//! Does **not** read or write files, decrypt anything or know about sops: the CLI joins the
//! decryptor and this crate.
//!
//! Archive rules (see `decisions.md`): file entries only (busybox tar, run as root by Ventoy,
//! would chmod/chown an existing folder to a folder entry's mode), uid/gid 0, ustar headers,
//! sorted paths, a fixed mtime, gzip with mtime 0 — so identical inputs give identical bytes.
//!
//! Sealing (`--seal passphrase`, [`BundleBuilder::seal_with_passphrase`]): the private keys'
//! tar goes into one age file (scrypt, [`DEFAULT_SCRYPT_WORK_FACTOR`]) at
//! `keypack/sealed.age`; the archive then holds it and the `.pub` files, never a private key in
//! plaintext ([`SealedBundle::expose_files`] gives the `.pub` files, [`SealedBundle::extra_files`]
//! the blob). A sealed archive is not reproducible: each seal draws a fresh salt and file key.
#![forbid(unsafe_code)]

mod build;
mod error;
mod read;
mod reopen;
mod seal;

pub use build::{BundleBuilder, ExtraEntry, Manifest, ManifestEntry, SealedBundle};
pub use error::BundleError;
pub use keypack_layout::KeyRole;
pub use read::{ArchiveEntry, archive_problems, burn_mark, read_archive, sealed_blob_in_archive};
pub use reopen::{MAX_ARCHIVE_SIZE, reopen_archive};
pub use seal::{
    DEFAULT_SCRYPT_WORK_FACTOR, MAX_SCRYPT_WORK_FACTOR, SEAL_KIND, SealInfo, UnsealError,
    blob_work_factor, check_passphrase, seal_info, unseal,
};
