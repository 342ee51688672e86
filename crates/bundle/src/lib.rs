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
#![forbid(unsafe_code)]

mod build;
mod error;
mod read;

pub use build::{BundleBuilder, Manifest, ManifestEntry, SealedBundle};
pub use error::BundleError;
pub use keypack_layout::KeyRole;
pub use read::{ArchiveEntry, MAX_ARCHIVE_SIZE, archive_problems, read_archive, unseal_archive};
