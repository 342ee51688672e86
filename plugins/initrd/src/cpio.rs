//! A writer (and a small reader, for `keypack inspect`) of the "new ASCII" (newc, magic
//! `070701`) cpio format, the only one the Linux initramfs unpacker reads.
//!
//! Supports: directories and regular files, fixed inode numbers, owner, mode and mtime; the
//! `TRAILER!!!` record. Does not support: symlinks, device nodes, hard links, the `070702` CRC
//! variant, file names or sizes beyond 32 bits.
//! Reference: `man 5 cpio` (libarchive), the kernel's `Documentation/driver-api/early-userspace/
//! buffer-format.rst` and `init/initramfs.c`.
//!
//! Why pre-sized: the archive holds private keys. The caller computes [`archive_len`] first and
//! hands a buffer of exactly that capacity, so no growth ever leaves a stale copy in freed heap.

/// One record of the archive.
pub struct Record<'a> {
    /// Path without a leading `/`.
    pub path: &'a str,
    /// Full `st_mode`: file type bits and permissions.
    pub mode: u32,
    /// Contents (empty for directories).
    pub data: &'a [u8],
}

/// `S_IFDIR`.
pub const S_IFDIR: u32 = 0o040000;
/// `S_IFREG`.
pub const S_IFREG: u32 = 0o100000;

const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn record_len(path: &str, data_len: usize) -> usize {
    let head = HEADER_LEN + path.len() + 1;
    head + pad4(head) + data_len + pad4(data_len)
}

/// The exact size in bytes of the archive [`write_archive`] produces for `records`.
pub fn archive_len(records: &[Record<'_>]) -> usize {
    records
        .iter()
        .map(|r| record_len(r.path, r.data.len()))
        .sum::<usize>()
        + record_len(TRAILER, 0)
}

/// Appends the archive to `out`: the records in the order given, inode numbers 1, 2, …,
/// uid/gid 0, the given `mtime`, then the trailer.
pub fn write_archive(out: &mut Vec<u8>, records: &[Record<'_>], mtime: u32) {
    for (i, r) in records.iter().enumerate() {
        let nlink = if r.mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        write_record(out, (i + 1) as u32, r.mode, nlink, mtime, r.path, r.data);
    }
    write_record(out, 0, 0, 1, 0, TRAILER, &[]);
}

fn write_record(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    path: &str,
    data: &[u8],
) {
    let fields: [u32; 13] = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        (path.len() + 1) as u32,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        push_hex8(out, f);
    }
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    let head = HEADER_LEN + path.len() + 1;
    out.extend(std::iter::repeat_n(0u8, pad4(head)));
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, pad4(data.len())));
}

fn push_hex8(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

/// The fields of a newc header that the readers use.
struct Header {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u32,
    name_len: u32,
}

/// Parses one newc header (`070701`, or `070702` with a checksum field the readers ignore).
fn parse_header(head: &[u8]) -> Result<Header, &'static str> {
    if head.len() < HEADER_LEN || (&head[..6] != b"070701" && &head[..6] != b"070702") {
        return Err("no newc magic");
    }
    let field = |i: usize| -> Result<u32, &'static str> {
        std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i])
            .ok()
            .and_then(|text| u32::from_str_radix(text, 16).ok())
            .ok_or("a header field is not hex")
    };
    Ok(Header {
        mode: field(1)?,
        uid: field(2)?,
        gid: field(3)?,
        size: field(6)?,
        name_len: field(11)?,
    })
}

/// One record read back by [`read_archive`]; `data` borrows from the caller's buffer.
pub struct ReadRecord<'a> {
    /// Path as stored (without a leading `/`), lossily decoded.
    pub path: String,
    /// Full `st_mode`.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Contents.
    pub data: &'a [u8],
}

/// Reads the records of one newc archive up to its `TRAILER!!!` (not returned). Errors say
/// what is malformed, never what a record holds.
pub fn read_archive(bytes: &[u8]) -> Result<Vec<ReadRecord<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let head = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| format!("archive ends inside a header at byte {pos}"))?;
        let Header {
            mode,
            uid,
            gid,
            size,
            name_len,
        } = parse_header(head).map_err(|why| format!("{why} at byte {pos}"))?;
        let name_start = pos + HEADER_LEN;
        let name_end = name_start + name_len as usize;
        let name = bytes
            .get(name_start..name_end)
            .ok_or_else(|| format!("a name at byte {name_start} runs past the archive"))?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        let data_start = name_end + pad4(HEADER_LEN + name_len as usize);
        let data_end = data_start + size as usize;
        let data = bytes
            .get(data_start..data_end)
            .ok_or_else(|| format!("data at byte {data_start} runs past the archive"))?;
        let path = String::from_utf8_lossy(name).into_owned();
        if path == TRAILER {
            return Ok(out);
        }
        out.push(ReadRecord {
            path,
            mode,
            uid,
            gid,
            data,
        });
        pos = data_end + pad4(size as usize);
    }
}

/// Finds the regular file `path` in a newc archive read from `r` and returns its contents when
/// it is at most `limit` bytes (`None`: not there, too large, or not a newc archive). Reads
/// record by record, skipping other contents, and stops at the trailer — or at the first
/// private key path of the layout, before its contents (an unsealed medium: `keypack run`, which
/// looks for the sealed blob in the medium's own cpio, never decompresses a key).
pub fn find_file(
    r: &mut dyn std::io::Read,
    path: &str,
    limit: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut pos: u64 = 0;
    loop {
        let mut head = [0u8; HEADER_LEN];
        if r.read_exact(&mut head).is_err() {
            return Ok(None);
        }
        let Ok(Header {
            mode,
            size,
            name_len,
            ..
        }) = parse_header(&head)
        else {
            return Ok(None);
        };
        let (mode, size, name_len) = (u64::from(mode), u64::from(size), u64::from(name_len));
        if name_len == 0 || name_len > 4096 {
            return Ok(None);
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name)?;
        pos += HEADER_LEN as u64 + name_len;
        skip(r, pad4(pos as usize) as u64)?;
        pos += pad4(pos as usize) as u64;
        let name = &name[..name.len() - 1];
        if name == TRAILER.as_bytes() {
            return Ok(None);
        }
        // A private key in plaintext: an unsealed medium. Stop before its contents are read.
        if std::str::from_utf8(name)
            .ok()
            .and_then(keypack_layout::classify)
            .is_some_and(|known| !known.public)
        {
            return Ok(None);
        }
        if name == path.as_bytes() && mode & 0o170000 == u64::from(S_IFREG) && size <= limit {
            let mut data = vec![0u8; size as usize];
            r.read_exact(&mut data)?;
            return Ok(Some(data));
        }
        skip(r, size)?;
        pos += size;
        skip(r, pad4(pos as usize) as u64)?;
        pos += pad4(pos as usize) as u64;
    }
}

fn skip(r: &mut dyn std::io::Read, n: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut std::io::Read::take(&mut *r, n), &mut std::io::sink())?;
    if copied != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_exact_and_aligned() {
        let records = [
            Record {
                path: "etc",
                mode: S_IFDIR | 0o755,
                data: &[],
            },
            Record {
                path: "etc/a",
                mode: S_IFREG | 0o600,
                data: b"hello",
            },
        ];
        let mut out = Vec::new();
        write_archive(&mut out, &records, 0);
        assert_eq!(out.len(), archive_len(&records));
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"07070100000001000041ED"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
        let back = read_archive(&out).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[1].path.as_str(), back[1].mode, back[1].data),
            ("etc/a", S_IFREG | 0o600, &b"hello"[..])
        );
        assert!(read_archive(&out[..out.len() - 8]).is_err());
    }
}
