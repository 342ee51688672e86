//! End to end through an external medium (issue 15): `keypack-media-initrd-ext` (the initrd
//! medium built a second time, as a program served by `keypack_plugin::external::serve`) on
//! PATH → `keypack plugins check initrd-ext` → `keypack build --media initrd-ext` from a sops
//! keys repo → `keypack run --wait-ssh` of the real test guest under QEMU (TCG) → `keypack
//! ssh` with the packed host key pinned serves that key. The helpers follow `boot.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use keypack_e2e::guest;
use keypack_e2e::tools::{cargo_bin, have, skip};

const HOST: &str = "web1";
const CANARY: &str = "AGE-SECRET-KEY-1KEYPACKE2ECANARYMUSTNOTREACHAPLUGIN";

struct Env {
    keypack: PathBuf,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn host_state(&self) -> PathBuf {
        self.path("state").join(HOST)
    }
    fn kp(&self, args: &[&str]) -> Output {
        let mut path = vec![self.bin.clone()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let out = Command::new(&self.keypack)
            .args(args)
            .env("PATH", std::env::join_paths(path).unwrap())
            .env("KEYPACK_STATE_DIR", self.path("state"))
            .env("KEYPACK_KEYS_REPO", self.path("repo"))
            .env("SOPS_AGE_KEY_FILE", self.path("age.txt"))
            // A secret-looking variable in keypack's environment must not reach the plugin.
            .env("SOPS_AGE_KEY", CANARY)
            .env_remove("KEYPACK_IDENTITY")
            .output()
            .expect("run keypack");
        eprintln!(
            "$ keypack {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kp(args);
        assert!(
            out.status.success(),
            "keypack {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Env {
    /// A failed assertion must not leave a VM running.
    fn drop(&mut self) {
        let _ = self.kp(&["stop", "-H", HOST, "--timeout", "10"]);
    }
}

fn key_data(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn prerequisites(test: &str) -> bool {
    for tool in [
        "qemu-system-x86_64",
        "sops",
        "ssh",
        "ssh-keyscan",
        "ssh-keygen",
        "cpio",
        "dpkg",
        "dropbear",
        "dropbearconvert",
        "busybox",
        "gzip",
    ] {
        if !have(tool) {
            skip(test, &format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

#[test]
fn boot_through_the_external_initrd_medium_and_ssh_with_the_pinned_key() {
    const T: &str = "boot_through_the_external_initrd_medium_and_ssh_with_the_pinned_key";
    if !prerequisites(T) {
        return;
    }
    let kernel = match guest::kernel() {
        Ok(k) => k,
        Err(e) => return skip(T, &format!("no Debian kernel for the test guest: {e:#}")),
    };
    let keypack = cargo_bin("keypack", "keypack", "dev").expect("build keypack");
    let load_keys = cargo_bin("load-keys", "load-keys", "release-small").expect("build load-keys");
    let plugin = cargo_bin("keypack-media-initrd", "keypack-media-initrd-ext", "dev")
        .expect("build keypack-media-initrd-ext");
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    let state = dir.path().join("state");
    for d in [&bin, &state] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // Dropped onto PATH: that is all it takes to add a medium.
    std::fs::copy(&plugin, bin.join("keypack-media-initrd-ext")).unwrap();
    let env = Env { keypack, bin, dir };
    let host_pub = keypack_e2e::repo::make_repo(env.dir.path(), HOST, &["alice"])
        .expect("sops keys repository")
        .host_public_key;
    let client = env.path("client");
    let client_pub = keypack_e2e::repo::keygen(&client, "keypack-e2e-client").expect("ssh-keygen");
    let base = env.path("base.cpio.gz");
    guest::base_initrd(&base, &load_keys, &client_pub, &kernel).expect("base initrd");
    let (k, b) = (
        kernel.vmlinuz.display().to_string(),
        base.display().to_string(),
    );

    let listing = env.ok(&["plugins"]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("initrd-ext") && l.contains("[external: ")),
        "{listing}"
    );
    let check = env.ok(&[
        "plugins",
        "check",
        "initrd-ext",
        "--",
        "--kernel",
        &k,
        "--initrd",
        &b,
    ]);
    assert!(check.contains("initrd-ext: every check passed"), "{check}");

    env.ok(&[
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "initrd-ext",
        "--kernel",
        &k,
        "--initrd",
        &b,
        "--append",
        "console=ttyS0",
    ]);
    let cpio = env.host_state().join("keys.cpio.gz");
    assert_eq!(
        std::fs::metadata(&cpio).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.host_state().join("boot.json")).unwrap())
            .unwrap();
    assert_eq!(boot["medium"], "initrd-ext");
    assert_eq!(boot["boot"]["initrds"][1], cpio.display().to_string());
    assert_eq!(
        key_data(boot["host_public_key"].as_str().unwrap()),
        key_data(&host_pub)
    );

    let out = env.kp(&[
        "run",
        "-H",
        HOST,
        "--accel",
        "tcg",
        "--port",
        "auto",
        "--memory",
        "512",
        "--cpus",
        "1",
        "--wait-ssh",
        "--timeout",
        "300",
    ]);
    assert!(
        out.status.success(),
        "run --wait-ssh failed; serial log:\n{}",
        std::fs::read_to_string(env.host_state().join("serial.log")).unwrap_or_default()
    );
    let c = client.display().to_string();
    let served = env.ok(&[
        "ssh",
        "-H",
        HOST,
        "-i",
        &c,
        "--",
        "-o",
        "BatchMode=yes",
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);
    assert_eq!(key_data(&served), key_data(&host_pub));
    env.ok(&["stop", "-H", HOST, "--timeout", "30"]);
}
