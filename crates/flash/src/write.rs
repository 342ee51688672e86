//! Writing the plan onto the device and reading every written region back.
//!
//! The fast path (a block device that takes `O_DIRECT`, every region aligned to its logical
//! block size): writes of at most [`CHUNK`] bytes, ending on `CHUNK` boundaries, from aligned
//! buffers with `O_DIRECT`, so neither the device's page cache nor a copy into it sits between
//! the image and the stick; a second thread reads each written piece back, also with
//! `O_DIRECT` (from the stick, not from memory), and compares it byte for byte with what was
//! sent, while the next pieces are written; one fsync at the end. Measured with
//! `benches/flash.sh`: the buffered write + fsync + read-back + SHA-256 of both sides this
//! replaces took 2.1x a `dd conv=fsync` of a dense image.
//!
//! The fallback (`O_DIRECT` refused, EINVAL at any point, or an unaligned region): buffered
//! writes, one fsync, the page cache of the device dropped (`POSIX_FADV_DONTNEED`, clean
//! pages only), then [`compare`] reads every region back and compares it with the image.
//!
//! Does not retry, and does not write past the image's length. The buffers that held image
//! bytes (the bundle's plaintext keys) are zeroized when dropped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

use zeroize::Zeroizing;

use crate::FlashError;
use crate::extents::{Kind, Region};

/// Largest single write (and read-back) request.
pub const CHUNK: u64 = 8 << 20;

/// Buffers in flight between the writer and the verifier (each [`CHUNK`] bytes), besides the
/// verifier's own read buffer.
const IN_FLIGHT: usize = 3;

/// Alignment of the `O_DIRECT` buffers (a page: at least any logical block size up to 4 KiB).
const ALIGN: usize = 4096;

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

    fn of(plan: &[Region]) -> Written {
        let mut done = Written::default();
        for r in plan {
            match r.kind {
                Kind::Data => done.data_bytes += r.end - r.start,
                Kind::Zero => done.zero_bytes += r.end - r.start,
            }
            done.regions += 1;
        }
        done
    }
}

/// A step of a flash, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the plan (on the fast path, each piece is also read back and compared right
    /// after it is written).
    Write,
    /// The final fsync (no bytes counted).
    Sync,
    /// Reading back and comparing (the fallback path, and `--verify-only`).
    Verify,
}

impl Phase {
    /// The name progress reports use: `write`, `sync`, `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Sync => "sync",
            Phase::Verify => "verify",
        }
    }
}

/// Progress callback: `(phase, bytes)` — bytes done in `phase` since the last call (0 when a
/// phase starts). Called on the calling thread only.
pub type OnProgress<'a> = &'a dyn Fn(Phase, u64);

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

/// A zeroized buffer whose usable part starts on an [`ALIGN`] boundary (for `O_DIRECT`), made
/// without `unsafe`: a slightly longer `Vec` and an offset into it.
struct Aligned {
    raw: Zeroizing<Vec<u8>>,
    off: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = Zeroizing::new(vec![0u8; len + ALIGN]);
        // `align_offset` may in theory give up (usize::MAX): then the buffer is used unaligned
        // and an O_DIRECT request fails with EINVAL, which selects the buffered path.
        let off = match raw.as_ptr().align_offset(ALIGN) {
            o if o < ALIGN => o,
            _ => 0,
        };
        Aligned { raw, off }
    }

    fn get(&self, n: usize) -> &[u8] {
        &self.raw[self.off..self.off + n]
    }

    fn get_mut(&mut self, n: usize) -> &mut [u8] {
        &mut self.raw[self.off..self.off + n]
    }
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

/// Sets or clears `O_DIRECT` on `dev`; `false` when the kernel refuses it.
fn set_direct(dev: &File, on: bool) -> bool {
    use rustix::fs::OFlags;
    let Ok(flags) = rustix::fs::fcntl_getfl(dev) else {
        return false;
    };
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(dev, flags).is_ok()
        && rustix::fs::fcntl_getfl(dev).is_ok_and(|f| f.contains(OFlags::DIRECT) == on)
}

/// Whether every region starts and ends on a multiple of `dev`'s logical block size (what
/// `O_DIRECT` needs; an unknown size counts as 4096).
fn aligned_plan(dev: &File, plan: &[Region]) -> bool {
    let lbs = u64::from(rustix::fs::ioctl_blksszget(dev).unwrap_or(4096)).max(512);
    plan.iter()
        .all(|r| r.start.is_multiple_of(lbs) && r.end.is_multiple_of(lbs))
}

/// Why the fast path stopped.
enum Direct {
    /// The device refused an `O_DIRECT` request (EINVAL): use the buffered path.
    Refused,
    /// A real failure (an I/O error, a mismatch).
    Failed(FlashError),
}

fn is_einval(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Writes `plan` from `image` onto `dev`, verifies every region byte for byte and fsyncs;
/// `progress` gets the bytes of each piece written (and, on the fallback path, read back).
pub fn write_and_verify(
    image: &File,
    image_path: &Path,
    dev: &File,
    dev_path: &Path,
    plan: &[Region],
    progress: OnProgress<'_>,
) -> Result<Written, FlashError> {
    if aligned_plan(dev, plan) && set_direct(dev, true) {
        let fast = write_direct(image, image_path, dev, dev_path, plan, progress);
        set_direct(dev, false);
        match fast {
            Ok(()) => {
                progress(Phase::Sync, 0);
                dev.sync_all()
                    .map_err(|e| FlashError::io("flushing", dev_path, e))?;
                return Ok(Written::of(plan));
            }
            Err(Direct::Failed(e)) => return Err(e),
            // Start again, buffered: whatever the fast path wrote is written again.
            Err(Direct::Refused) => {}
        }
    }
    write_buffered(image, image_path, dev, dev_path, plan, progress)?;
    Ok(Written::of(plan))
}

/// The fast path: `O_DIRECT` writes on this thread, `O_DIRECT` read-back and compare on a
/// second one, [`IN_FLIGHT`] buffers between them.
fn write_direct(
    image: &File,
    image_path: &Path,
    dev: &File,
    dev_path: &Path,
    plan: &[Region],
    progress: OnProgress<'_>,
) -> Result<(), Direct> {
    // A written piece: its region (for the error), offset, length and the bytes sent.
    type Piece = (usize, u64, usize, Aligned);
    let (to_verify, verify_rx) = mpsc::sync_channel::<Piece>(IN_FLIGHT);
    let (to_writer, free_rx) = mpsc::sync_channel::<Aligned>(IN_FLIGHT);
    std::thread::scope(|scope| {
        let verifier = scope.spawn(move || -> Result<(), Direct> {
            let mut got = Aligned::new(CHUNK as usize);
            for (i, at, n, sent) in verify_rx {
                read_back(dev, dev_path, &plan[i], at, &mut got, sent.get(n))?;
                // The writer may have finished and left: then the buffer is simply dropped.
                let _ = to_writer.send(sent);
            }
            Ok(())
        });
        let mut spare: Vec<Aligned> = (0..IN_FLIGHT)
            .map(|_| Aligned::new(CHUNK as usize))
            .collect();
        let written = (|| -> Result<(), Direct> {
            progress(Phase::Write, 0);
            for (i, r) in plan.iter().enumerate() {
                for (at, n) in pieces(r) {
                    let mut buf = match spare.pop() {
                        Some(b) => b,
                        // The verifier stopped (its error is returned by the join below).
                        None => free_rx.recv().map_err(|_| Direct::Refused)?,
                    };
                    let b = buf.get_mut(n);
                    source(image, image_path, r.kind, b, at).map_err(Direct::Failed)?;
                    match dev.write_all_at(b, at) {
                        Ok(()) => {}
                        Err(e) if is_einval(&e) => return Err(Direct::Refused),
                        Err(e) => {
                            return Err(Direct::Failed(FlashError::io("writing", dev_path, e)));
                        }
                    }
                    progress(Phase::Write, n as u64);
                    if to_verify.send((i, at, n, buf)).is_err() {
                        return Err(Direct::Refused);
                    }
                }
            }
            Ok(())
        })();
        drop(to_verify);
        let verified = verifier.join().unwrap_or_else(|_| {
            Err(Direct::Failed(FlashError::io(
                "reading back",
                dev_path,
                std::io::Error::other("the verifier thread panicked"),
            )))
        });
        // The verifier's error is the cause when both failed (the writer only sees a closed
        // channel).
        match (verified, written) {
            (Err(e), _) => Err(e),
            (Ok(()), w) => w,
        }
    })
}

/// Reads `sent.len()` bytes of `dev` at `at` into `got` and compares them with `sent`, what was
/// written there for `region`.
fn read_back(
    dev: &File,
    dev_path: &Path,
    region: &Region,
    at: u64,
    got: &mut Aligned,
    sent: &[u8],
) -> Result<(), Direct> {
    let g = got.get_mut(sent.len());
    match dev.read_exact_at(g, at) {
        Ok(()) => {}
        Err(e) if is_einval(&e) => return Err(Direct::Refused),
        Err(e) => return Err(Direct::Failed(FlashError::io("reading back", dev_path, e))),
    }
    if *g != *sent {
        return Err(Direct::Failed(FlashError::VerifyMismatch {
            device: dev_path.to_path_buf(),
            start: region.start,
            end: region.end,
        }));
    }
    Ok(())
}

/// The fallback: buffered writes, fsync, cache dropped, [`compare`].
fn write_buffered(
    image: &File,
    image_path: &Path,
    dev: &File,
    dev_path: &Path,
    plan: &[Region],
    progress: OnProgress<'_>,
) -> Result<(), FlashError> {
    // Image bytes (plaintext keys among them): wiped when dropped, on every return path.
    let mut buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    progress(Phase::Write, 0);
    for r in plan {
        for (at, n) in pieces(r) {
            let b = &mut buf[..n];
            source(image, image_path, r.kind, b, at)?;
            dev.write_all_at(b, at)
                .map_err(|e| FlashError::io("writing", dev_path, e))?;
            progress(Phase::Write, n as u64);
        }
    }
    progress(Phase::Sync, 0);
    dev.sync_all()
        .map_err(|e| FlashError::io("flushing", dev_path, e))?;
    // After the fsync every page of the device is clean, so `compare`'s DONTNEED empties the
    // cache and its reads go to the stick.
    compare(image, image_path, dev, dev_path, plan, progress)?;
    Ok(())
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
    progress: OnProgress<'_>,
) -> Result<usize, FlashError> {
    // Image (and device) bytes, plaintext keys among them: wiped when dropped.
    let mut want_buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    let mut got_buf = Zeroizing::new(vec![0u8; CHUNK as usize]);
    // Cached pages may be stale copies (a device written through another path): read the
    // stick. DONTNEED drops clean pages only, so nothing queued for writing is lost.
    rustix::fs::fadvise(dev, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| FlashError::io("dropping the cache of", dev_path, e.into()))?;
    progress(Phase::Verify, 0);
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
            progress(Phase::Verify, n as u64);
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
            &|_, _| {},
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
            &|_, _| {},
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
            &|_, _| {},
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
        let w = write_and_verify(&img, &img_path, &dev, &dev_path, &plan, &|_, n| {
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

    /// A region that is not block-aligned cannot go through `O_DIRECT`: the buffered path
    /// writes and verifies it, and reports the phases write, sync, verify in that order.
    #[test]
    fn an_unaligned_plan_takes_the_buffered_path() {
        let t = tempfile::tempdir().unwrap();
        let img_path = t.path().join("img");
        let dev_path = t.path().join("dev");
        let img = crate::extents::tests::scratch(&img_path);
        img.set_len(1 << 20).unwrap();
        img.write_all_at(&[9u8; 1000], 4096).unwrap();
        std::fs::write(&dev_path, vec![0xAAu8; 1 << 20]).unwrap();
        let dev = File::options()
            .read(true)
            .write(true)
            .open(&dev_path)
            .unwrap();
        let plan = [Region {
            start: 4096,
            end: 5096,
            kind: Kind::Data,
        }];
        assert!(!aligned_plan(&dev, &plan));
        let phases = std::cell::RefCell::new(Vec::new());
        write_and_verify(&img, &img_path, &dev, &dev_path, &plan, &|p, _| {
            let mut v = phases.borrow_mut();
            if v.last() != Some(&p) {
                v.push(p);
            }
        })
        .unwrap();
        assert_eq!(*phases.borrow(), [Phase::Write, Phase::Sync, Phase::Verify]);
        let got = std::fs::read(&dev_path).unwrap();
        assert!(got[4096..5096].iter().all(|&b| b == 9));
        assert!(got[5096..].iter().all(|&b| b == 0xAA));
    }

    /// The fast path's read-back names the region whose bytes on the device differ from what
    /// was sent.
    #[test]
    fn read_back_names_a_region_that_differs() {
        let t = tempfile::tempdir().unwrap();
        let dev_path = t.path().join("dev");
        std::fs::write(&dev_path, vec![5u8; 16384]).unwrap();
        let dev = File::open(&dev_path).unwrap();
        let region = Region {
            start: 4096,
            end: 12288,
            kind: Kind::Data,
        };
        let mut got = Aligned::new(8192);
        let mut sent = vec![5u8; 8192];
        assert!(read_back(&dev, &dev_path, &region, 4096, &mut got, &sent).is_ok());
        sent[8000] = 6;
        let err = read_back(&dev, &dev_path, &region, 4096, &mut got, &sent);
        assert!(
            matches!(
                err,
                Err(Direct::Failed(FlashError::VerifyMismatch {
                    start: 4096,
                    end: 12288,
                    ..
                }))
            ),
            "a differing read-back passed"
        );
    }
}
