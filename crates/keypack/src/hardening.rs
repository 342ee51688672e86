//! Process hardening: the one module of keypack allowed `unsafe`.
//!
//! Position: runs first in `main`, before anything is decrypted, and is called again by the key
//! pipeline to lock the sealed bundle in memory. In: nothing; out: a process that
//! - cannot be ptrace-attached by other processes of the same user nor dump core
//!   (`PR_SET_DUMPABLE=0`, `RLIMIT_CORE=0`),
//! - keeps the bundle buffer out of swap (`mlock`, where `RLIMIT_MEMLOCK` allows; a warning, not
//!   an abort, otherwise: an unprivileged user often has a 64 KiB or 8 MiB limit),
//! - overwrites every heap block with zeros before returning it to the system allocator
//!   ([`ZeroizingAlloc`]), which covers the copies that `flate2`, `tar`, the YAML parser and
//!   `Vec` growth make and free without zeroizing.
//!
//! Does **not**: protect against root or the kernel, zero the stack or registers, lock memory
//! other than the bundle buffer, or stop a debugger started *before* keypack (dumpable only
//! blocks attaching later). `SECURITY.md` lists these limits.
//!
//! Why our own 20-line allocator rather than the `zeroizing-alloc` crate: the code is short
//! enough to audit here, and it zeroes with `memset` plus a compiler barrier instead of
//! per-byte volatile writes, so large media buffers do not pay a byte loop.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{DumpableBehavior, Resource, Rlimit};

/// Makes the process non-dumpable and disables core files. Failures are warnings: keypack must
/// still run in containers that forbid `prctl`.
pub fn harden_process() {
    if let Err(e) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        eprintln!("warning: could not make the process non-dumpable (PR_SET_DUMPABLE): {e}");
    }
    let no_core = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = rustix::process::setrlimit(Resource::Core, no_core) {
        eprintln!("warning: could not disable core dumps (RLIMIT_CORE): {e}");
    }
}

/// Marks the descriptor named by `KEYPACK_PIN_FD` (tests and automation only) close-on-exec,
/// so the PIN source is never inherited by the plugin, QEMU or ssh. `value` is the variable's
/// value; descriptors 0–2 and anything that is not a number are left alone.
pub fn close_pin_fd_on_exec(value: Option<&str>) {
    let Some(fd) = value.and_then(|v| v.trim().parse::<i32>().ok()) else {
        return;
    };
    if fd < 3 {
        return;
    }
    // SAFETY: the borrow lives only for the two fcntl calls below, which read and set the
    // descriptor's flags and never close or read it; on a descriptor that is not open the
    // kernel answers EBADF, which we ignore.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Ok(flags) = rustix::io::fcntl_getfd(borrowed) {
        let _ = rustix::io::fcntl_setfd(borrowed, flags | rustix::io::FdFlags::CLOEXEC);
    }
}

static MLOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// Locks the pages of `bytes` in RAM so they are never written to swap. When
/// `RLIMIT_MEMLOCK` is too small, prints one warning and goes on. The pages stay locked until
/// the buffer is freed (its block is zeroed by [`ZeroizingAlloc`] either way).
///
/// Called once, on the sealed bundle, so it is also where [`secrets_live_test_hook`] runs.
pub fn lock_memory(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    secrets_live_test_hook();
    // SAFETY: `mlock` only changes the paging attributes of the pages covering
    // [ptr, ptr+len); it neither reads nor writes them, and the range is a live borrow, so the
    // pages are mapped. The kernel rounds the range out to page boundaries itself.
    let result = unsafe { rustix::mm::mlock(bytes.as_ptr() as *mut _, bytes.len()) };
    if let Err(e) = result
        && !MLOCK_WARNED.swap(true, Ordering::Relaxed)
    {
        let limit = rustix::process::getrlimit(Resource::Memlock)
            .current
            .map_or("unlimited".to_owned(), |l| format!("{l} bytes"));
        eprintln!(
            "warning: could not lock the bundle in memory ({e}; RLIMIT_MEMLOCK is {limit}): \
             it could be written to swap"
        );
    }
}

/// Environment variable of the test hook (see [`secrets_live_test_hook`]).
pub const TEST_HOOK_ENV: &str = "KEYPACK_TEST_HOOK";

/// Test hook for `crates/keypack/tests/assurance_process.rs`: with `KEYPACK_TEST_HOOK=status`
/// or `=pause`, prints one line to stderr while the bundle is live (right after sealing):
/// `KEYPACK-TEST-HOOK secrets-live pid=… dumpable=… core=SOFT/HARD tracer=…`; with `pause` it
/// then waits for one line (or EOF) on standard input, so a test can try to ptrace-attach.
///
/// It prints no secret, changes no protection and reads only the process's own flags, so it
/// cannot weaken a production run; a hostile environment could at most make keypack wait.
pub fn secrets_live_test_hook() {
    let Some(mode) = std::env::var_os(TEST_HOOK_ENV) else {
        return;
    };
    if mode != "status" && mode != "pause" {
        return;
    }
    let dumpable = match rustix::process::dumpable_behavior() {
        Ok(DumpableBehavior::NotDumpable) => "0",
        Ok(DumpableBehavior::Dumpable) => "1",
        Ok(_) => "2",
        Err(_) => "?",
    };
    let core = rustix::process::getrlimit(Resource::Core);
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
    let tracer = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".to_owned());
    eprintln!(
        "KEYPACK-TEST-HOOK secrets-live pid={} dumpable={dumpable} core={}/{} tracer={tracer}",
        std::process::id(),
        show(core.current),
        show(core.maximum),
    );
    if mode == "pause" {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// A global allocator that zeroes every block before freeing it. Installed in `main.rs`.
pub struct ZeroizingAlloc;

/// Overwrites `len` bytes at `ptr` with zeros in a way the optimiser may not drop.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn zero_block(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is writable.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    // SAFETY: an empty asm block; it takes the pointer as an input and, without `nomem`, is
    // assumed to read the memory behind it, so the stores above cannot be removed as dead
    // stores before `free`.
    unsafe { std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags)) };
}

// SAFETY: every method forwards to `System` with the caller's layout, after zeroing in
// `dealloc`. `realloc` is not overridden: the default allocates a new block, copies, and calls
// `dealloc` on the old one, so the old block is zeroed too (System's in-place `realloc` would
// leave the old contents behind when it moves the block).
unsafe impl GlobalAlloc for ZeroizingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::alloc`, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::alloc_zeroed`, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by us with `layout`, so it is valid for `layout.size()`
        // bytes until it is freed just below.
        unsafe {
            zero_block(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pin_fd_becomes_close_on_exec() {
        let (read, _write) = rustix::pipe::pipe().unwrap();
        use std::os::fd::AsRawFd;
        rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::empty()).unwrap();
        let raw = read.as_raw_fd().to_string();
        super::close_pin_fd_on_exec(Some(&raw));
        let flags = rustix::io::fcntl_getfd(&read).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        // Not a number, or a standard stream: left alone, no panic.
        super::close_pin_fd_on_exec(Some("stdin"));
        super::close_pin_fd_on_exec(Some("1"));
        super::close_pin_fd_on_exec(None);
    }

    use super::*;

    #[test]
    fn zero_block_zeroes() {
        let mut buf = vec![0xA5u8; 4099];
        // SAFETY: `buf` is a live, writable buffer of that length.
        unsafe { zero_block(buf.as_mut_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn allocator_round_trips_through_realloc() {
        let a = ZeroizingAlloc;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: standard GlobalAlloc use: allocate, write within bounds, realloc, free.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, 64);
            let q = a.realloc(p, layout, 4096);
            assert!(!q.is_null());
            assert_eq!(*q.add(63), 7, "realloc keeps the contents");
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
    }

    #[test]
    fn process_is_not_dumpable_and_has_no_core_limit() {
        harden_process();
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            DumpableBehavior::NotDumpable
        );
        let core = rustix::process::getrlimit(Resource::Core);
        assert_eq!(core.current, Some(0));
        assert_eq!(core.maximum, Some(0));
        // mlock of a small buffer either works or warns; it never panics or aborts.
        lock_memory(&[1u8; 100]);
        lock_memory(&[]);
    }
}
