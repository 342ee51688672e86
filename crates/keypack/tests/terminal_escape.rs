//! What keypack prints from an archive or a guest's console reaches the operator's terminal
//! escaped: a crafted file name or console line cannot move the cursor, retitle the window or
//! hide a line (review finding 6). `keypack log --raw` is the explicit way to get the bytes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const HOSTILE: &[u8] = b"\x1b]0;owned\x07\x1b[2Jclear\x9b";

fn keypack() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keypack"));
    cmd.env_remove("KEYPACK_KEYS_REPO");
    cmd
}

fn has_control_bytes(out: &[u8]) -> bool {
    out.iter()
        .any(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f)
        || String::from_utf8_lossy(out)
            .chars()
            .any(|c| ('\u{80}'..='\u{9f}').contains(&c))
}

#[test]
fn log_escapes_the_guests_control_characters_unless_raw() {
    let state = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let host = state.path().join("web1");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut log = b"Booting\r\nload-keys: ok\n".to_vec();
    log.extend_from_slice(HOSTILE);
    log.extend_from_slice("ü\n".as_bytes());
    std::fs::write(host.join("serial.log"), &log).unwrap();

    let out = keypack()
        .args(["log", "-H", "web1"])
        .env("KEYPACK_STATE_DIR", state.path())
        .output()
        .expect("keypack runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).expect("escaped output is UTF-8");
    assert!(
        !has_control_bytes(&out.stdout),
        "raw control bytes: {text:?}"
    );
    assert!(text.starts_with("Booting\nload-keys: ok\n"), "{text:?}");
    assert!(text.contains("\\u{1b}]0;owned\\u{7}"), "{text:?}");
    assert!(text.contains("\\x9b"), "{text:?}");
    assert!(text.contains("ü"), "{text:?}");

    let raw = keypack()
        .args(["log", "-H", "web1", "--raw"])
        .env("KEYPACK_STATE_DIR", state.path())
        .output()
        .expect("keypack runs");
    assert!(raw.status.success());
    assert_eq!(raw.stdout, log, "--raw prints the bytes as they are");
}

#[test]
fn inspect_escapes_crafted_names_in_an_archive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.tar.gz");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_ustar();
    let name = b"etc/ssh/\x1b[2Jx\x07";
    header.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_size(3);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, &b"abc"[..]).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();

    let out = keypack()
        .arg("inspect")
        .arg(&path)
        .output()
        .expect("keypack runs");
    let mut all = out.stdout.clone();
    all.extend_from_slice(&out.stderr);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("\\u{1b}[2Jx\\u{7}"), "{text}");
    assert!(!has_control_bytes(&all), "raw control bytes: {text:?}");
}

/// Error messages quote paths and names the operator did not choose (a file in an image, a
/// child's stderr): the error printer escapes them too.
#[test]
fn error_messages_are_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = String::from_utf8_lossy(b"img\x1b]0;owned\x07\x1b[2J.img").into_owned();
    let out = keypack()
        .args(["inspect"])
        .arg(dir.path().join(name))
        .output()
        .expect("keypack runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("error: "), "{text:?}");
    assert!(
        !has_control_bytes(&out.stderr),
        "raw control bytes: {text:?}"
    );
    assert!(text.contains("img\\u{1b}]0;owned"), "{text:?}");
}
