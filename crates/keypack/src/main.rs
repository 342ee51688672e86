//! `keypack`: decrypts a machine's SSH keys from a sops/age keys repository (with a YubiKey),
//! packs them into an in-memory `keys.tar.gz`, hands it to a boot-media plugin and boots the
//! result in QEMU.
//!
//! The CLI is glue: it joins `keypack-repo` (which files), `keypack-sops` and
//! `keypack-identity` (decrypt), `keypack-bundle` (the sealed archive) and the plugins. Each
//! verb lives in `cmd/<verb>.rs` as a function named after its command path.
//!
//! `unsafe` is denied everywhere but in `hardening` (prctl, rlimit, mlock, the zero-on-free
//! allocator), whose every block explains itself.
#![deny(unsafe_code)]

mod cli;
mod cmd;
mod hardening;
mod keys;
mod media;
mod state;

/// Every freed heap block is zeroed first: covers copies that library code makes of secrets.
#[global_allocator]
static ALLOCATOR: hardening::ZeroizingAlloc = hardening::ZeroizingAlloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    hardening::harden_process();
    hardening::close_pin_fd_on_exec(std::env::var(keypack_identity::PIN_FD_ENV).ok().as_deref());
    let matches = cli::command().get_matches();
    match cmd::dispatch(&matches) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints `error: …` with the whole cause chain, then any hint, the way rage and coreos do.
fn report(err: &anyhow::Error) -> ExitCode {
    // A closed pipe (`keypack inspect … | head`) is not an error worth a message.
    if let Some(io) = err.root_cause().downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::from(1);
    }
    eprintln!("error: {err:#}");
    for cause in err.chain() {
        if let Some(hint) = cmd::hint_for(cause) {
            eprintln!("hint: {hint}");
            break;
        }
    }
    ExitCode::from(1)
}
