//! A byte range of a disk (the data partition), read and written with positioned I/O.
//!
//! Why not the ventoy crate's `PartIo`: that one is a `Read + Write + Seek` adapter with a
//! write-behind metadata cache for `fatfs`; the burn writes a handful of sectors in a fixed
//! order with a sync after each step, which positioned writes say directly.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::BurnError;

/// `[off, off + len)` of `file`.
pub(crate) struct Part<'f> {
    file: &'f File,
    off: u64,
    len: u64,
    pub(crate) shown: &'f str,
}

impl<'f> Part<'f> {
    pub(crate) fn new(file: &'f File, off: u64, len: u64, shown: &'f str) -> Self {
        Part {
            file,
            off,
            len,
            shown,
        }
    }

    fn check(&self, at: u64, n: usize) -> Result<(), BurnError> {
        match at.checked_add(n as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(BurnError::fs(
                self.shown,
                format!(
                    "offset {at} (+{n}) lies beyond the partition's {} bytes",
                    self.len
                ),
            )),
        }
    }

    pub(crate) fn rd(&self, at: u64, buf: &mut [u8]) -> Result<(), BurnError> {
        self.check(at, buf.len())?;
        self.file
            .read_exact_at(buf, self.off + at)
            .map_err(|e| BurnError::io("reading", self.shown, e))
    }

    pub(crate) fn wr(&self, at: u64, buf: &[u8]) -> Result<(), BurnError> {
        self.check(at, buf.len())?;
        self.file
            .write_all_at(buf, self.off + at)
            .map_err(|e| BurnError::io("writing", self.shown, e))
    }

    /// Makes every write so far durable (on a block device: flushes the device's cache).
    pub(crate) fn sync(&self) -> Result<(), BurnError> {
        self.file
            .sync_all()
            .map_err(|e| BurnError::io("syncing", self.shown, e))
    }

    /// Writes zeros over `[at, at + len)`, 1 MiB per write.
    pub(crate) fn zero(&self, at: u64, len: u64) -> Result<(), BurnError> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.wr(at + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// The test-only stop knob: the step after which the burn stops, as if the power went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop<'a>(pub Option<&'a str>);

impl Stop<'_> {
    /// `Err(Stopped)` when the knob names `step` (every write before it is synced).
    pub(crate) fn after(&self, step: &'static str) -> Result<(), BurnError> {
        if self.0 == Some(step) {
            Err(BurnError::Stopped { step })
        } else {
            Ok(())
        }
    }
}
