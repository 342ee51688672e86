//! The emulator's argument handling (and, by existing, makes `cargo test --workspace` build
//! the binary that the T2 tests start).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keypack-test-piv-card");

#[test]
fn missing_arguments_fail_without_connecting() {
    let out = Command::new(BIN).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing --port"));
}

#[test]
fn a_non_p256_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    std::fs::write(&key, "not a key").unwrap();
    let out = Command::new(BIN)
        .args(["--port", "1", "--key"])
        .arg(&key)
        .args(["--cert", "/dev/null", "--serial", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a PKCS#8 P-256 key"));
}
