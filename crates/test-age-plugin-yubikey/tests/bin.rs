//! The mock binary's admin mode (and, by existing, makes `cargo test --workspace` build the
//! binary that keypack's tests copy).

use std::process::Command;

use keypack_test_age_plugin_yubikey::{SoftCard, decode_stub};

const BIN: &str = env!("CARGO_BIN_EXE_age-plugin-yubikey");

#[test]
fn version_says_it_is_the_mock() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "age-plugin-yubikey 0.5.1 (keypack test mock)"
    );
}

#[test]
fn identity_prints_a_real_stub_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let card = SoftCard::generate(4242, 0x83);
    let conf = dir.path().join("c.conf");
    std::fs::write(
        &conf,
        format!("key={}\nserial=4242\nslot={}\n", card.secret_hex(), 0x83),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--identity")
        .env("KEYPACK_MOCK_YK_CONF", &conf)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&card.recipient_string()));
    let stub = text.lines().last().unwrap();
    assert_eq!(decode_stub(stub), Some((4242, 0x83, card.tag())));
    assert!(!text.contains(&card.secret_hex()));
}

#[test]
fn without_a_state_machine_it_exits_2() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
