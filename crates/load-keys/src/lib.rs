//! `load-keys`: the target side of keypack. In stage 1 it copies the SSH keys injected into the
//! initramfs (by Ventoy, or by an appended cpio) into the booted NixOS system before sops-nix
//! and sshd need them; in stage 2 (`--install-users`) it installs users' keys into their homes.
//!
//! Data path: initramfs `/etc/ssh/ssh_host_ed25519_key(.pub)` → `target/etc/ssh/` (0600/0644,
//! root); `/root/.ssh/deploy_key_ed25519(.pub)` → `target/root/.ssh/` (folder 0700); every
//! `/users/<u>/.ssh/id_ed25519(.pub)` → `/run/keypack/users/<u>/` (0700, root), then in stage 2
//! → `~<u>/.ssh/` owned by the user. Paths, modes and name rules come from `keypack-layout`.
//!
//! A sealed bundle (`keypack build --seal passphrase`) holds the `.pub` files and
//! `keypack/sealed.age`; [`sealed`] asks for the passphrase (QEMU's firmware config,
//! `systemd-ask-password`, or the console; three tries), decrypts the private keys' tar in
//! zeroized memory, and the files take the same install path and checks as injected ones.
//!
//! What it does **not** do: decrypt anything but a sealed bundle's blob; trust anything about the archive — not its modes, owners, file types,
//! sizes, names, link counts or contents (a hard-linked file is refused; a private key must be
//! an unencrypted OpenSSH ed25519 key and its `.pub` the same key, see [`keycheck`]); follow a
//! symlink in the source, the target, the stage folder or a home; create home folders; talk to
//! NSS (users come from `/etc/passwd`).
//!
//! Why a Rust binary rather than the seed's shell snippet: the source is user-supplied and the
//! target root-owned, so every open must be `openat` + `O_NOFOLLOW` relative to a folder fd, and
//! every write a temp name + rename with the mode set on the fd — which `cp`/`install` do not
//! guarantee. It is built statically (see the crate README in the report / `nix/pkgs/load-keys.nix`)
//! so it runs in any initrd: systemd stage 1, the scripted stage 1's extra-utils, or a busybox one.
#![forbid(unsafe_code)]

pub mod burn;
pub mod fsx;
pub mod keycheck;
pub mod sealed;
pub mod stage1;
pub mod stage2;

/// Prints a console line (stdout: the console in both stage-1 flavours and the journal).
pub fn info(line: &str) {
    println!("{line}");
}

/// Prints a warning line to stderr.
pub fn warn(line: &str) {
    eprintln!("load-keys: warning: {line}");
}

/// Prints an error line to stderr.
pub fn error(line: &str) {
    eprintln!("load-keys: error: {line}");
}
