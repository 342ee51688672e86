//! Shared by the keyed-ISO tests: ISOs made with `xorriso -as mkisofs` (the independent
//! writer), private output folders, loud skips.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn skip(test: &str, why: &str) {
    if std::env::var_os("KEYPACK_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: prerequisite missing: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "KEYPACK-SKIPPED: {test}: {why}");
}

pub fn have_xorriso() -> bool {
    Command::new("xorriso")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private folder for outputs (the medium writes keys).
pub fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// An ISO with a filler file before and after the area; `area` is the size of
/// `/keypack/keys.img` (`None`: no area at all).
pub fn make_iso(dir: &Path, area: Option<usize>) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    let filler: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(tree.join("boot/aaa-kernel"), &filler).unwrap();
    std::fs::write(tree.join("boot/zzz-initrd"), &filler[..123_457]).unwrap();
    if let Some(n) = area {
        std::fs::create_dir_all(tree.join("keypack")).unwrap();
        std::fs::write(tree.join("keypack/keys.img"), vec![0u8; n]).unwrap();
    }
    let iso = dir.join("in.iso");
    let out = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "keypack-test",
            "-o",
        ])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}
