//! Writing the plan onto the device, then reading every written region back.
//!
//! Writes go in pieces of at most [`CHUNK`] bytes that end on `CHUNK` boundaries of the
//! device, so the block layer gets large aligned requests; one fsync at the end (a stick's
//! write cache makes per-piece syncs slow and buys nothing: nothing is trusted until the
//! verify). Each region's SHA-256 is taken from what was sent, and compared to the SHA-256 of
//! what the device returns after its page cache is dropped (`POSIX_FADV_DONTNEED`), so the
//! read-back comes from the stick, not from memory.
//!
//! Does not retry, and does not write past the image's length. The buffers that held image
//! bytes (the bundle's plaintext keys) are zeroized when dropped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::FlashError;
use crate::extents::{Kind, Region};

/// Largest single write (and read-back) request.
pub const CHUNK: u64 = 4 << 20;

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of image data written.
    pub data_bytes: u64,
    /// Bytes of explicit zeros written.
    pub zero_bytes: u64,
    /// Regions written and verified.
    pub regions: usize,
}

impl Written {
    /// All bytes written.
    pub fn total(&self) -> u64 {
        self.data_bytes + self.zero_bytes
    }
}

fn pieces(r: &Region) -> impl Iterator<Item = (u64, usize)> + '_ {
    let mut pos = r.start;
    std::iter::from_fn(move || {
        if pos >= r.end {
            return None;
        }
        let next = ((pos / CHUNK + 1) * CHUNK).min(r.end);
        let piece = (pos, (next - pos) as usize);
        pos = next;
        Some(piece)
    })
}

/// Fills `buf` with what the device gets at `at` for a region of `kind`: the image's bytes,
/// or zeros.
fn source(
    image: &File,
    image_path: &Path,
    kind: Kind,
    buf: &mut [u8],
    at: u64,
) -> Result<(), FlashError> {
    match kind {
        Kind::Data => image
            .read_exact_at(buf, at)
            .map_err(|e| FlashError::io("reading", image_path, e)),
        Kind::Zero => {
            buf.fill(0);
            Ok(())
        }
    }
}

/// Writes `plan` from `image` onto `dev`, fsyncs, verifies; `progress` gets the bytes of
/// each piece written (write phase only).
pub fn write_and_verify(
    image: &File,
    image_path: &Path,
    dev: &File,
    dev_path: &Path,
    plan: &[Region],
    progress: &dyn Fn(u64),
) -> Result<Written, FlashError> {
    // Image bytes (plaintext keys among them): wiped when dropped, on every return path.
    let mut buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    let mut sums = Vec::with_capacity(plan.len());
    let mut done = Written::default();
    for r in plan {
        let mut h = Sha256::new();
        for (at, n) in pieces(r) {
            let b = &mut buf[..n];
            source(image, image_path, r.kind, b, at)?;
            h.update(&*b);
            dev.write_all_at(b, at)
                .map_err(|e| FlashError::io("writing", dev_path, e))?;
            progress(n as u64);
        }
        match r.kind {
            Kind::Data => done.data_bytes += r.end - r.start,
            Kind::Zero => done.zero_bytes += r.end - r.start,
        }
        done.regions += 1;
        sums.push(h.finalize());
    }
    dev.sync_all()
        .map_err(|e| FlashError::io("flushing", dev_path, e))?;
    // Clean pages only: after the fsync every page of the device is clean, so this empties
    // the cache and the reads below go to the stick.
    rustix::fs::fadvise(dev, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| FlashError::io("dropping the cache of", dev_path, e.into()))?;
    for (r, want) in plan.iter().zip(&sums) {
        let mut h = Sha256::new();
        for (at, n) in pieces(r) {
            let b = &mut buf[..n];
            dev.read_exact_at(b, at)
                .map_err(|e| FlashError::io("reading back", dev_path, e))?;
            h.update(&*b);
        }
        if h.finalize() != *want {
            return Err(FlashError::VerifyMismatch {
                device: dev_path.to_path_buf(),
                start: r.start,
                end: r.end,
            });
        }
    }
    Ok(done)
}

/// Compares `dev` with what [`write_and_verify`] would write there for `plan` (image data,
/// or zeros), region by region, byte for byte, reading the device past its page cache; writes
/// nothing. Returns the number of regions compared, or [`FlashError::VerifyMismatch`] naming
/// the first region that differs.
pub fn compare(
    image: &File,
    image_path: &Path,
    dev: &File,
    dev_path: &Path,
    plan: &[Region],
) -> Result<usize, FlashError> {
    // Image (and device) bytes, plaintext keys among them: wiped when dropped.
    let mut want_buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    let mut got_buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    // Cached pages may be stale copies (a device written through another path): read the
    // stick. DONTNEED drops clean pages only, so nothing queued for writing is lost.
    rustix::fs::fadvise(dev, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| FlashError::io("dropping the cache of", dev_path, e.into()))?;
    for r in plan {
        for (at, n) in pieces(r) {
            let w = &mut want_buf[..n];
            source(image, image_path, r.kind, w, at)?;
            let g = &mut got_buf[..n];
            dev.read_exact_at(g, at)
                .map_err(|e| FlashError::io("reading", dev_path, e))?;
            // Both sides are in memory: compare them, no need to hash either.
            if w != g {
                return Err(FlashError::VerifyMismatch {
                    device: dev_path.to_path_buf(),
                    start: r.start,
                    end: r.end,
                });
            }
        }
    }
    Ok(plan.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_on_chunk_boundaries() {
        let r = Region {
            start: CHUNK - 10,
            end: 2 * CHUNK + 5,
            kind: Kind::Data,
        };
        let p: Vec<_> = pieces(&r).collect();
        assert_eq!(
            p,
            [(CHUNK - 10, 10), (CHUNK, CHUNK as usize), (2 * CHUNK, 5)]
        );
    }

    #[test]
    fn compare_finds_the_first_differing_region_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let img_path = t.path().join("img");
        let dev_path = t.path().join("dev");
        let mut img = vec![0u8; 3 << 20];
        img[1 << 20..(1 << 20) + 8192].fill(7);
        std::fs::write(&img_path, &img).unwrap();
        let mut dev = img.clone();
        dev[(2 << 20) + 5] = 0xAA; // outside the plan: not compared
        std::fs::write(&dev_path, &dev).unwrap();
        let plan = [
            Region {
                start: 0,
                end: 4096,
                kind: Kind::Zero,
            },
            Region {
                start: 1 << 20,
                end: (1 << 20) + 8192,
                kind: Kind::Data,
            },
        ];
        let open = |p: &Path| File::open(p).unwrap();
        let n = compare(
            &open(&img_path),
            &img_path,
            &open(&dev_path),
            &dev_path,
            &plan,
        )
        .unwrap();
        assert_eq!(n, 2);
        // One byte flipped in the data region, one in the zero region: the first is named.
        dev[(1 << 20) + 100] ^= 1;
        dev[10] = 1;
        std::fs::write(&dev_path, &dev).unwrap();
        let err = compare(
            &open(&img_path),
            &img_path,
            &open(&dev_path),
            &dev_path,
            &plan,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                FlashError::VerifyMismatch {
                    start: 0,
                    end: 4096,
                    ..
                }
            ),
            "{err}"
        );
        dev[10] = 0;
        std::fs::write(&dev_path, &dev).unwrap();
        let err = compare(
            &open(&img_path),
            &img_path,
            &open(&dev_path),
            &dev_path,
            &plan,
        )
        .unwrap_err();
        assert!(
            matches!(err, FlashError::VerifyMismatch { start, end, .. }
                if start == 1 << 20 && end == (1 << 20) + 8192),
            "{err}"
        );
        assert_eq!(std::fs::read(&dev_path).unwrap(), dev);
    }

    #[test]
    fn writes_data_and_zeros_over_stale_bytes_and_verifies() {
        let t = tempfile::tempdir().unwrap();
        let img_path = t.path().join("img");
        let dev_path = t.path().join("dev");
        let img = crate::extents::tests::scratch(&img_path);
        img.set_len(3 << 20).unwrap();
        img.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        std::fs::write(&dev_path, vec![0xAAu8; 3 << 20]).unwrap();
        let dev = File::options()
            .read(true)
            .write(true)
            .open(&dev_path)
            .unwrap();
        let plan = [
            Region {
                start: 0,
                end: 4096,
                kind: Kind::Zero,
            },
            Region {
                start: 1 << 20,
                end: (1 << 20) + 8192,
                kind: Kind::Data,
            },
        ];
        let seen = std::cell::Cell::new(0);
        let w = write_and_verify(&img, &img_path, &dev, &dev_path, &plan, &|n| {
            seen.set(seen.get() + n)
        })
        .unwrap();
        assert_eq!(
            w,
            Written {
                data_bytes: 8192,
                zero_bytes: 4096,
                regions: 2
            }
        );
        assert_eq!(seen.get(), w.total());
        let got = std::fs::read(&dev_path).unwrap();
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert!(
            got[4096..1 << 20].iter().all(|&b| b == 0xAA),
            "outside the plan: untouched"
        );
        assert!(got[1 << 20..(1 << 20) + 8192].iter().all(|&b| b == 7));
    }
}
