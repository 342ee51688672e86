//! `keypack`: decrypts a machine's SSH keys from a sops/age keys repository (with a YubiKey),
//! packs them into an in-memory `keys.tar.gz`, hands it to a boot-media plugin and boots the
//! result in QEMU.
//!
//! The CLI is glue: it joins `keypack-repo` (which files), `keypack-sops` and
//! `keypack-identity` (decrypt), `keypack-bundle` (the sealed archive) and the plugins. Each
//! verb lives in `cmd/<verb>.rs` as a function named after its command path.
//!
//! `unsafe` is denied everywhere but in `hardening` (prctl, rlimit, mlock, the zero-on-free
//! allocator), whose every block explains itself, and [`scrub_environment`] below.
#![deny(unsafe_code)]

mod cli;
mod cmd;
mod hardening;
mod keys;
mod media;
mod pinning;
mod state;

/// Every freed heap block is zeroed first: covers copies that library code makes of secrets.
#[global_allocator]
static ALLOCATOR: hardening::ZeroizingAlloc = hardening::ZeroizingAlloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    scrub_environment();
    quiet_broken_pipe();
    hardening::harden_process();
    hardening::close_pin_fd_on_exec(std::env::var(keypack_identity::PIN_FD_ENV).ok().as_deref());
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = cli::command_for(&args).get_matches_from(args);
    match cmd::dispatch(&matches) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Variables keypack itself reads (besides `KEYPACK_*` and the children's allow-list).
const OWN_ENV: &[&str] = &[
    "SOPS_AGE_KEY_FILE",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "PINENTRY_PROGRAM",
    "SOURCE_DATE_EPOCH",
    "AGEDEBUG",
    "OVMF_CODE",
    "OVMF_VARS",
    "CI",
    "NO_COLOR",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
];

/// Whether keypack keeps `name` in its own environment.
fn keep_var(name: &str) -> bool {
    name.starts_with("KEYPACK_")
        || name.starts_with("LC_")
        || OWN_ENV.contains(&name)
        || keypack_plugin::child::union_env().any(|v| v == name)
}

/// Removes from keypack's own environment every variable that neither keypack nor any child
/// needs (`SOPS_AGE_KEY`, tokens, …). The children we spawn get a cleared environment
/// (`keypack_plugin::child`), but the age crate spawns `age-plugin-yubikey` and the pinentry
/// crate spawns pinentry with our environment: this is the only way to scrub theirs.
#[allow(unsafe_code)]
fn scrub_environment() {
    let drop: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| !k.to_str().is_some_and(keep_var))
        .collect();
    for k in drop {
        // SAFETY: called first thing in main(), before any thread exists (no library has
        // started one yet), so no other thread can read the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`keypack status --json | head -c1`)
/// panics with "failed printing to stdout: Broken pipe". Exit quietly instead, as a
/// SIGPIPE-killed tool would, with every other panic still reported by the default hook.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Prints `error: …` with the whole cause chain, then any hint, the way rage and coreos do.
fn report(err: &anyhow::Error) -> ExitCode {
    // A closed pipe (`keypack inspect … | head`) is not an error worth a message.
    if let Some(io) = err.root_cause().downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    // Error text quotes names from images, archives, repositories and children's stderr: a
    // crafted name must not reach the terminal as an escape sequence.
    let text = cmd::escape::StreamEscaper::default().feed(format!("{err:#}").as_bytes());
    eprintln!("error: {text}");
    for cause in err.chain() {
        if let Some(hint) = cmd::hint_for(cause) {
            eprintln!("hint: {hint}");
            break;
        }
    }
    ExitCode::from(1)
}
