//! End-to-end support for keypack: the Debian-based test guest and helpers to run the
//! workspace's binaries. The tests themselves are in `tests/tests/*.rs`.
//!
//! Position: outside the product. It builds a tiny Linux guest from Debian packages (kernel from
//! `linux-image-amd64`'s dependency, unpacked with `dpkg -x`, never installed; busybox-static;
//! dropbear with the libraries `ldd` lists; the project's `load-keys`), which boots under QEMU
//! with the keys initrd appended, runs `load-keys / /newroot`, and serves SSH with the injected
//! host key.
//!
//! Does not install anything into the system, and never needs root. What it cannot find (no
//! network for `apt-get download`, no busybox) is reported so the test can skip with the
//! `KEYPACK-SKIPPED` marker.
#![forbid(unsafe_code)]

pub mod env;
pub mod guest;
pub mod iso;
pub mod repo;
pub mod tools;
