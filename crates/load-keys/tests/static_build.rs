//! The initrd build of `load-keys`: static glibc (the musl target is not installed here), built
//! exactly as documented for the QEMU guest and the ISO, then run inside an empty chroot — no
//! libc, no loader, nothing but the binary and the injected files, like a bare busybox initrd.
//!
//! ```text
//! RUSTFLAGS='-C target-feature=+crt-static' \
//!   cargo build -p load-keys --profile release-small --target x86_64-unknown-linux-gnu
//! # → $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release-small/load-keys
//! ```
//!
//! A plain `cargo build -p load-keys --profile release-small` links glibc dynamically (a
//! per-package `crt-static` is not possible in stable cargo, and a workspace-wide one would make
//! every binary static); it runs in an initrd only together with its libraries.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: required but cannot run: {why}");
    }
    // Written past libtest's capture (which swallows eprintln! of passing tests), so the
    // marker reaches scripts/test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "KEYPACK-SKIPPED: {test}: {why}
"
        )
        .as_bytes(),
    );
}

/// `true` if the ELF file has a PT_INTERP program header (needs a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn static_build_runs_in_an_empty_root() {
    const NAME: &str = "static_build_runs_in_an_empty_root";
    if !cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) {
        return skip(NAME, "documented for x86_64-unknown-linux-gnu only");
    }
    if rustix::process::geteuid().as_raw() != 0 {
        return skip(NAME, "needs root for chroot");
    }
    // <target>/debug/deps/static_build-… → <target>/load-keys-static
    let exe = std::env::current_exe().expect("current_exe");
    let target_root: PathBuf = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let target_dir = target_root.join("load-keys-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "load-keys",
            "--profile",
            "release-small",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "static build failed");
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release-small/load-keys");
    let elf = fs::read(&bin).expect("static binary");
    assert!(
        !has_interpreter(&elf),
        "{} needs a dynamic loader",
        bin.display()
    );
    assert!(
        elf.len() < 4 * 1024 * 1024,
        "{} is {} bytes",
        bin.display(),
        elf.len()
    );
    eprintln!("static load-keys: {} ({} bytes)", bin.display(), elf.len());

    // An empty root: the binary, the injected files, an empty target, /run. Nothing else.
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    fs::copy(&bin, root.join("load-keys")).unwrap();
    fs::set_permissions(root.join("load-keys"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(root.join("users/alice/.ssh")).unwrap();
    fs::create_dir_all(root.join("sysroot")).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    // Real keys: load-keys checks that the private key is an OpenSSH ed25519 key and the .pub
    // its public key.
    for (rel, comment) in [
        ("etc/ssh/ssh_host_ed25519_key", "host"),
        ("users/alice/.ssh/id_ed25519", "alice"),
    ] {
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(root.join(rel))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            return skip(NAME, "no ssh-keygen");
        }
    }
    fs::remove_file(root.join("users/alice/.ssh/id_ed25519.pub")).unwrap();
    let host_private = fs::read(root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let alice_private = fs::read(root.join("users/alice/.ssh/id_ed25519")).unwrap();
    let out = Command::new("chroot")
        .arg(root)
        .args(["/load-keys", "/", "/sysroot"])
        .output()
        .expect("run chroot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(
        "=== Stage 1: Loading SSH keys (keypack) ===\nFound injected keys, copying to target...\n"
    ));
    assert!(stdout.ends_with("=== Stage 1: Key loading complete ===\n"));
    let key = root.join("sysroot/etc/ssh/ssh_host_ed25519_key");
    assert_eq!(fs::read(&key).unwrap(), host_private);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::read(root.join("run/keypack/users/alice/id_ed25519")).unwrap(),
        alice_private
    );
}
