//! `BLKRRPART`: ask the kernel to re-read the partition table it just got.
//!
//! The one module with `unsafe`: rustix has no safe wrapper for this ioctl.

use std::fs::File;

/// What the kernel said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reread {
    /// The new partitions are known.
    Done,
    /// The device does not scan partitions (a loop device without `-P`): EINVAL.
    NotSupported,
}

const BLKRRPART: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 95);

/// Issues `BLKRRPART` on the open device.
pub fn reread(dev: &File) -> std::io::Result<Reread> {
    // SAFETY: BLKRRPART (`_IO(0x12, 95)`) takes no argument and touches no user memory; the fd
    // is a valid open block device borrowed for the call.
    #[allow(unsafe_code)]
    let r = unsafe { rustix::ioctl::ioctl(dev, rustix::ioctl::NoArg::<BLKRRPART>::new()) };
    match r {
        Ok(()) => Ok(Reread::Done),
        Err(rustix::io::Errno::INVAL) => Ok(Reread::NotSupported),
        Err(e) => Err(e.into()),
    }
}
