//! The burn mark inside a `keys.tar.gz`: gunzip, walk the ustar headers, read the one entry
//! `keypack/burn-after-boot`.
//!
//! Supports: gzip-compressed ustar/GNU tar (what `keypack-bundle` writes; `./` prefixes are
//! accepted). Does not support: PAX headers, other compressions (an archive keypack did not
//! write carries no mark, and then is never burned).
//! Why streamed: the archive holds private keys; nothing but the 512-byte header and the
//! mark's content is kept, in buffers wiped on drop (flate2's own window is not wiped; the
//! same bytes are in the initramfs page cache anyway).

use std::io::Read;

use flate2::read::GzDecoder;
use keypack_layout::BURN_MARK_PATH;
use zeroize::Zeroizing;

/// Most tar bytes read looking for the mark (a bundle is a few KiB to a few MiB).
const MAX_TAR: u64 = 64 << 20;

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// The mark token carried by the gzip tar `archive`, if any (trimmed, at most 64 bytes).
pub fn archive_token(archive: &[u8]) -> Option<String> {
    let mut tar = GzDecoder::new(archive).take(MAX_TAR);
    let mut header = Zeroizing::new([0u8; 512]);
    let mut skip = Zeroizing::new([0u8; 4096]);
    loop {
        tar.read_exact(&mut header[..]).ok()?;
        if header.iter().all(|&b| b == 0) {
            return None;
        }
        let mut name = cstr(&header[0..100]).to_vec();
        if &header[257..262] == b"ustar" {
            let prefix = cstr(&header[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let size = octal(&header[124..136])?;
        let padded = size.div_ceil(512) * 512;
        let name = name.strip_prefix(b"./").unwrap_or(&name);
        if name == BURN_MARK_PATH.as_bytes() && matches!(header[156], b'0' | 0) && size <= 64 {
            let mut content = vec![0u8; padded as usize];
            tar.read_exact(&mut content).ok()?;
            let text = String::from_utf8(content[..size as usize].to_vec()).ok()?;
            let token = text.trim().to_string();
            return (!token.is_empty()).then_some(token);
        }
        let mut left = padded;
        while left > 0 {
            let n = left.min(skip.len() as u64) as usize;
            tar.read_exact(&mut skip[..n]).ok()?;
            left -= n as u64;
        }
    }
}

/// Whether `token` looks like one keypack writes (32 lowercase hex digits).
pub use keypack_layout::is_burn_token as valid_token;
