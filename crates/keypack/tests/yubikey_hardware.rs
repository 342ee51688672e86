//! T3: a real YubiKey, for a human at the keyboard. Ignored by default; run with
//!
//! ```text
//! YUBIKEY_SERIAL=12345678 YUBIKEY_SLOT=1 cargo test -p keypack --test yubikey_hardware -- --ignored --nocapture
//! ```
//!
//! The slot must already hold an age-plugin-yubikey key (`age-plugin-yubikey --generate`),
//! `age-plugin-yubikey` and `sops` must be on `PATH`, and pcscd must run. keypack asks for
//! the PIN through pinentry or the terminal and the key may blink for a touch. The repository
//! is throwaway: fresh SSH keys encrypted to the slot's recipient.

mod yubikey_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use yubikey_support::{KEYPACK, Repo, have_sops, skip};

fn hardware(test: &str) -> Option<(String, String, PathBuf)> {
    let (Ok(serial), Ok(slot)) = (
        std::env::var("YUBIKEY_SERIAL"),
        std::env::var("YUBIKEY_SLOT"),
    ) else {
        skip(
            test,
            "set YUBIKEY_SERIAL and YUBIKEY_SLOT to run against a real YubiKey",
        );
        return None;
    };
    let plugin = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("age-plugin-yubikey").is_file()));
    let Some(plugin_dir) = plugin else {
        skip(test, "age-plugin-yubikey is not on PATH");
        return None;
    };
    Some((serial, slot, plugin_dir))
}

fn identity_file(dir: &Path, plugin_dir: &Path, serial: &str, slot: &str) -> (PathBuf, String) {
    let out = Command::new(plugin_dir.join("age-plugin-yubikey"))
        .args(["--identity", "--serial", serial, "--slot", slot])
        .output()
        .expect("age-plugin-yubikey --identity");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("Recipient:")
                .map(|r| r.trim().to_owned())
        })
        .expect("recipient comment");
    let path = dir.join("yubikey-identity.txt");
    std::fs::write(&path, text).unwrap();
    (path, recipient)
}

#[test]
#[ignore = "needs a real YubiKey (YUBIKEY_SERIAL, YUBIKEY_SLOT) and a human for PIN/touch"]
fn hardware_pack_host_and_two_users_with_one_pin_entry() {
    let test = "hardware_pack_host_and_two_users_with_one_pin_entry";
    let Some((serial, slot, plugin_dir)) = hardware(test) else {
        return;
    };
    if !have_sops(test) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let (identity, recipient) = identity_file(scratch.path(), &plugin_dir, &serial, &slot);
    let repo = Repo::new(&recipient, &plugin_dir);
    eprintln!("keypack will ask for the PIN of YubiKey {serial} once; touch it if it blinks.");
    let status = Command::new(KEYPACK)
        .args([
            "pack",
            "-H",
            "web1",
            "-U",
            "alice",
            "-U",
            "bob",
            "--keys-repo",
        ])
        .arg(repo.root())
        .arg("--identity")
        .arg(&identity)
        .arg("-o")
        .arg(repo.out())
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("keypack runs");
    assert!(status.success());
    assert!(repo.out().exists());
}

#[test]
#[ignore = "needs a real YubiKey (YUBIKEY_SERIAL, YUBIKEY_SLOT)"]
fn hardware_doctor_sees_the_yubikey_and_its_slot() {
    let test = "hardware_doctor_sees_the_yubikey_and_its_slot";
    let Some((serial, slot, plugin_dir)) = hardware(test) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (identity, recipient) = identity_file(scratch.path(), &plugin_dir, &serial, &slot);
    let out = Command::new(KEYPACK)
        .arg("doctor")
        .arg("--identity")
        .arg(&identity)
        .output()
        .expect("keypack doctor runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("ok    YubiKey serial {serial}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("slot {slot}: {recipient}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("the identity's YubiKey {serial} is plugged in")),
        "{text}"
    );
}
