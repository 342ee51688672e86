//! Reading a keyed ISO's area back for `keypack inspect`: where the area is, and whether it is
//! empty, holds keys (entries, modes, owners, sizes, the public keys' fingerprints) or is
//! damaged. Never returns a key byte: private entries are reported by size only.
//!
//! A sealed bundle (`--seal`: the private keys only inside `keypack/sealed.age`) is reported as
//! sealed, with the same entry list (the blob by size, the `.pub` files with fingerprints).

use std::io::Read;
use std::path::Path;

use flate2::bufread::GzDecoder;
use keypack_media_initrd::cpio;
use zeroize::Zeroizing;

use crate::area::{self, Area};
use crate::{IsoMediumError, write};

/// Largest decompressed cpio read back (a bundle is a few KiB; the area is 1 MiB by default).
const MAX_CPIO: u64 = 64 << 20;

/// What the area holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AreaState {
    /// All zeros: the ISO boots without keys.
    Empty,
    /// A gzip newc cpio with these entries.
    Keys {
        /// Bytes in use (the compressed cpio).
        used: u64,
        /// Its entries, in archive order.
        entries: Vec<AreaEntry>,
    },
    /// A sealed bundle: a gzip newc cpio holding `keypack/sealed.age` (see [`is_sealed`]).
    Sealed {
        /// Bytes in use (the compressed cpio).
        used: u64,
        /// Its entries, in archive order.
        entries: Vec<AreaEntry>,
    },
    /// Non-zero bytes that are not a readable gzip cpio (a torn write, foreign data).
    Damaged {
        /// Bytes in use.
        used: u64,
        /// What is wrong.
        why: String,
    },
}

/// One entry of the area's cpio, without its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaEntry {
    /// Path as stored.
    pub path: String,
    /// Full `st_mode`.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA256 fingerprint, for a readable public key (`*.pub`).
    pub fingerprint: Option<String>,
}

/// The area and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaReport {
    /// Where the area is.
    pub area: Area,
    /// What it holds.
    pub state: AreaState,
}

/// Inspects the keyed ISO at `path` (read-only).
pub fn inspect(path: &Path) -> Result<AreaReport, IsoMediumError> {
    let area = area::locate(path)?;
    let file = std::fs::File::open(path).map_err(|e| IsoMediumError::io("reading", path, e))?;
    let bytes =
        write::read_area(&file, area).map_err(|e| IsoMediumError::io("reading", path, e))?;
    Ok(AreaReport {
        area,
        state: state_of(&bytes),
    })
}

/// Classifies the area's bytes.
pub fn state_of(bytes: &[u8]) -> AreaState {
    let used = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    if used == 0 {
        return AreaState::Empty;
    }
    let damaged = |why: String| AreaState::Damaged { used, why };
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return damaged("does not start with a gzip header".into());
    }
    let mut raw = Zeroizing::new(Vec::new());
    // The bufread decoder consumes exactly one gzip member, so what is left tells its length
    // (its last bytes may be zeros, which the non-zero scan above cannot see).
    let mut rest = bytes;
    if let Err(e) = GzDecoder::new(&mut rest)
        .take(MAX_CPIO)
        .read_to_end(&mut raw)
    {
        return damaged(format!("the gzip stream does not decode ({e})"));
    }
    let used = (bytes.len() - rest.len()) as u64;
    if rest.iter().any(|&b| b != 0) {
        return AreaState::Damaged {
            used,
            why: "non-zero bytes follow the gzip stream".into(),
        };
    }
    let records = match cpio::read_archive(&raw) {
        Ok(r) => r,
        Err(why) => return damaged(format!("the cpio does not parse ({why})")),
    };
    let sealed = is_sealed(&records);
    let entries = records
        .iter()
        .map(|r| AreaEntry {
            path: r.path.escape_debug().collect(),
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size: r.data.len() as u64,
            fingerprint: public_fingerprint(r),
        })
        .collect();
    if sealed {
        AreaState::Sealed { used, entries }
    } else {
        AreaState::Keys { used, entries }
    }
}

/// Whether the cpio holds the sealed blob (`keypack_layout::SEALED_BLOB_PATH`) as a regular file.
pub fn is_sealed(records: &[cpio::ReadRecord<'_>]) -> bool {
    records
        .iter()
        .any(|r| r.mode & 0o170000 == cpio::S_IFREG && r.path == keypack_layout::SEALED_BLOB_PATH)
}

fn public_fingerprint(r: &cpio::ReadRecord<'_>) -> Option<String> {
    if !r.path.ends_with(".pub") || r.mode & 0o170000 != cpio::S_IFREG {
        return None;
    }
    let text = std::str::from_utf8(r.data).ok()?;
    let key = ssh_key::PublicKey::from_openssh(text.trim()).ok()?;
    Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}
