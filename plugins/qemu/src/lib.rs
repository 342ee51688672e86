//! Runner plugin `qemu`: boots a [`keypack_plugin::BootDescription`] in QEMU, daemonized, and
//! manages it: status, stop, serial log, SSH with the packed host key pinned.
//!
//! Position on the data path: `media plugin → boot description (boot.json) → **QEMU runner**
//! → a VM`. It reads the description (paths and the host public key), not the medium that
//! produced it. Keys reach the guest only inside the media files; when a kernel boot has several
//! initrds (the base and `keys.cpio.gz`), the runner joins them into a sealed memfd QEMU reads
//! as its stdin, so the keys never land in a second file.
//!
//! Does **not** parse the CLI (the `keypack` crate maps its flags to [`Options`]), build media,
//! or decrypt anything. QEMU gets a scrubbed environment ([`vm::qemu_command`]) and a command
//! line of paths only.
//!
//! Why a plugin crate: runners are swappable like media (a libvirt or cloud runner could read
//! the same `boot.json`); this one is the reference.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod firmware;
pub mod hostkey;
pub mod ports;
pub mod qmp;
pub mod vm;

pub use error::QemuError;
pub use firmware::Uefi;
pub use ports::PortChoice;
pub use vm::{
    Accel, FirmwareChoice, Net, Options, Prepared, RunRecord, Started, Status, StopOutcome, Vm,
};

/// The runner's name.
pub const NAME: &str = "qemu";

/// The QEMU runner.
pub struct Qemu;

impl keypack_plugin::runner::Runner for Qemu {
    fn name(&self) -> &'static str {
        NAME
    }
    fn about(&self) -> &'static str {
        "boots the last build in QEMU (daemonized, QMP, serial log, SSH on 127.0.0.1)"
    }
}
