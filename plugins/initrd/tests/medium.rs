//! Builds the initrd medium from a bundle of throwaway keys and reads the result back with
//! GNU `cpio` (an independent reader): names, order, modes, owners, contents, determinism.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use keypack_bundle::{BundleBuilder, KeyRole, SealedBundle};
use keypack_layout::UserName;
use keypack_media_initrd::{InitrdArgs, InitrdError, build, keys_cpio};
use keypack_plugin::Boot;
use secrecy::SecretSlice;

fn skip(test: &str, why: &str) {
    if std::env::var_os("KEYPACK_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: prerequisite missing: {why}");
    }
    // Written to the stderr handle directly: libtest's capture only swallows `eprintln!`.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "KEYPACK-SKIPPED: {test}: {why}");
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn throwaway_key() -> SecretSlice<u8> {
    let key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .expect("generate key");
    let pem = key.to_openssh(ssh_key::LineEnding::LF).expect("encode key");
    SecretSlice::from(pem.as_bytes().to_vec())
}

fn bundle() -> SealedBundle {
    let mut b = BundleBuilder::new();
    b.add_key(KeyRole::Host, throwaway_key(), None).unwrap();
    b.add_key(KeyRole::Deploy, throwaway_key(), None).unwrap();
    b.add_key(
        KeyRole::User(UserName::new("alice").unwrap()),
        throwaway_key(),
        None,
    )
    .unwrap();
    b.seal(0).unwrap()
}

fn args(dir: &Path) -> InitrdArgs {
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("base.cpio.gz"), b"base").unwrap();
    InitrdArgs {
        kernel: Some(dir.join("vmlinuz")),
        initrd: Some(dir.join("base.cpio.gz")),
        append: Some("console=ttyS0 quiet".into()),
    }
}

const EXPECTED: &[(&str, &str)] = &[
    ("etc", "drwxr-xr-x"),
    ("etc/ssh", "drwxr-xr-x"),
    ("etc/ssh/ssh_host_ed25519_key", "-rw-------"),
    ("etc/ssh/ssh_host_ed25519_key.pub", "-rw-r--r--"),
    ("root", "drwx------"),
    ("root/.ssh", "drwx------"),
    ("root/.ssh/deploy_key_ed25519", "-rw-------"),
    ("root/.ssh/deploy_key_ed25519.pub", "-rw-r--r--"),
    ("users", "drwx------"),
    ("users/alice", "drwx------"),
    ("users/alice/.ssh", "drwx------"),
    ("users/alice/.ssh/id_ed25519", "-rw-------"),
    ("users/alice/.ssh/id_ed25519.pub", "-rw-r--r--"),
];

#[test]
fn cpio_lists_parents_first_with_conventional_modes() {
    if !have("cpio") {
        return skip(
            "cpio_lists_parents_first_with_conventional_modes",
            "cpio not installed",
        );
    }
    let bundle = bundle();
    let raw = keys_cpio(&bundle).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.cpio");
    std::fs::write(&file, &*raw).unwrap();
    let out = Command::new("cpio")
        .args(["-t", "-v", "--quiet", "-F"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), EXPECTED.len(), "{listing}");
    for (line, (path, mode)) in lines.iter().zip(EXPECTED) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], *mode, "{line}");
        assert_eq!((cols[2], cols[3]), ("root", "root"), "{line}");
        assert_eq!(cols.last().unwrap(), path, "{line}");
    }
    // Nothing that would change the root of the initramfs.
    assert!(!lines.iter().any(|l| l.ends_with(" .") || l.ends_with(" /")));
}

#[test]
fn cpio_extracts_the_bundle_files_byte_for_byte() {
    if !have("cpio") {
        return skip(
            "cpio_extracts_the_bundle_files_byte_for_byte",
            "cpio not installed",
        );
    }
    let bundle = bundle();
    let dir = tempfile::tempdir().unwrap();
    let desc = build(
        &bundle,
        &args(dir.path()),
        "web1",
        &dir.path().join("keys.cpio.gz"),
    )
    .unwrap();
    let Boot::Kernel { initrds, .. } = &desc.boot else {
        panic!("not a kernel boot")
    };
    let gz = std::fs::read(&initrds[1]).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc | cpio -i -d --quiet --no-absolute-filenames")
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    assert!(child.wait().unwrap().success());
    let mut seen = 0;
    for (entry, contents) in bundle.expose_files() {
        let path = root.join(&entry.path);
        assert_eq!(std::fs::read(&path).unwrap(), contents, "{}", entry.path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, entry.mode, "{}", entry.path);
        seen += 1;
    }
    assert_eq!(seen, 6);
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("users/alice/.ssh"), 0o700);
    assert_eq!(mode("etc/ssh"), 0o755);
}

#[test]
fn build_writes_a_private_deterministic_artifact_and_describes_the_boot() {
    let bundle = bundle();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys.cpio.gz");
    let desc = build(&bundle, &args(dir.path()), "web1", &out).unwrap();
    let first = std::fs::read(&out).unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(&first[..2], &[0x1f, 0x8b], "gzip magic");
    build(&bundle, &args(dir.path()), "web1", &out).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "same bundle, same bytes"
    );

    assert_eq!(desc.medium, "initrd");
    assert_eq!(desc.host, "web1");
    assert_eq!(
        desc.host_public_key,
        bundle.manifest().host_public_key().unwrap()
    );
    let Boot::Kernel {
        kernel,
        initrds,
        cmdline,
        cdrom,
    } = &desc.boot
    else {
        panic!("not a kernel boot")
    };
    assert!(kernel.is_absolute() && kernel.ends_with("vmlinuz"));
    assert_eq!(initrds.len(), 2);
    assert!(initrds[0].ends_with("base.cpio.gz"), "base initrd first");
    assert_eq!(
        initrds[1],
        std::fs::canonicalize(&out).unwrap(),
        "keys last"
    );
    assert_eq!(cmdline, "console=ttyS0 quiet");
    assert_eq!(*cdrom, None, "no ISO to attach");
    // The description holds paths, never key bytes.
    let json = serde_json::to_string(&desc).unwrap();
    assert!(!json.contains("PRIVATE KEY"));
}

#[test]
fn missing_kernel_or_initrd_is_a_clear_error() {
    let bundle = bundle();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys.cpio.gz");
    let mut a = args(dir.path());
    a.kernel = Some(dir.path().join("nope/bzImage"));
    let err = build(&bundle, &a, "web1", &out).unwrap_err();
    assert!(matches!(err, InitrdError::Input { what: "kernel", .. }));
    assert!(err.to_string().contains("nope/bzImage"), "{err}");
    assert!(!out.exists(), "nothing written on error");
    a.kernel = None;
    let err = build(&bundle, &a, "web1", &out).unwrap_err();
    assert_eq!(err.to_string(), "--media initrd needs --kernel FILE");
    let mut a = args(dir.path());
    a.initrd = Some(dir.path().to_path_buf());
    let err = build(&bundle, &a, "web1", &out).unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("not a regular file"), "{err}: {cause}");
}

#[test]
fn passes_the_plugin_conformance_check() {
    use keypack_plugin::testing::{Check, check_medium_with};
    let dir = tempfile::tempdir().unwrap();
    for name in ["vmlinuz", "base.cpio.gz"] {
        let path = dir.path().join(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let check = Check {
        args: vec![
            "--kernel".into(),
            dir.path().join("vmlinuz").display().to_string(),
            "--initrd".into(),
            dir.path().join("base.cpio.gz").display().to_string(),
        ],
        iso: None,
    };
    let desc = check_medium_with(&keypack_media_initrd::Initrd, &check);
    let Boot::Kernel { cmdline, .. } = &desc.boot else {
        panic!("not a kernel boot")
    };
    assert_eq!(cmdline, keypack_media_initrd::DEFAULT_CMDLINE);
}

const SEALED_EXPECTED: &[(&str, &str)] = &[
    ("etc", "drwxr-xr-x"),
    ("etc/ssh", "drwxr-xr-x"),
    ("etc/ssh/ssh_host_ed25519_key.pub", "-rw-r--r--"),
    ("keypack", "drwx------"),
    ("keypack/sealed.age", "-rw-------"),
    ("root", "drwx------"),
    ("root/.ssh", "drwx------"),
    ("root/.ssh/deploy_key_ed25519.pub", "-rw-r--r--"),
    ("users", "drwx------"),
    ("users/alice", "drwx------"),
    ("users/alice/.ssh", "drwx------"),
    ("users/alice/.ssh/id_ed25519.pub", "-rw-r--r--"),
];

/// A sealed bundle (`--seal passphrase`): the cpio carries what the archive carries — the
/// `.pub` files and `keypack/sealed.age` (parent 0700) — and no private file; GNU cpio reads it,
/// and `sealed_blob_in_initrd` finds the same blob `keypack run` checks the passphrase against.
#[test]
fn a_sealed_bundle_gives_a_cpio_of_the_pub_files_and_the_blob() {
    if !have("cpio") {
        return skip(
            "a_sealed_bundle_gives_a_cpio_of_the_pub_files_and_the_blob",
            "cpio not installed",
        );
    }
    let mut b = BundleBuilder::new();
    b.add_key(KeyRole::Host, throwaway_key(), None).unwrap();
    b.add_key(KeyRole::Deploy, throwaway_key(), None).unwrap();
    b.add_key(
        KeyRole::User(UserName::new("alice").unwrap()),
        throwaway_key(),
        None,
    )
    .unwrap();
    b.seal_with_passphrase_work_factor(secrecy::SecretString::from("pw".to_owned()), 10);
    let sealed = b.seal(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys.cpio.gz");
    build(&sealed, &args(dir.path()), "web1", &out).unwrap();
    let listing = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | cpio -t -v --quiet")
        .arg("sh")
        .arg(&out)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), SEALED_EXPECTED.len(), "{listing}");
    for (line, (path, mode)) in lines.iter().zip(SEALED_EXPECTED) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], *mode, "{line}");
        assert_eq!((cols[2], cols[3]), ("root", "root"), "{line}");
        assert_eq!(cols.last().unwrap(), path, "{line}");
    }
    let (_, blob) = sealed.extra_files().next().unwrap();
    let found = keypack_media_initrd::sealed_blob_in_initrd(&out)
        .unwrap()
        .expect("the blob in the cpio");
    assert_eq!(found, blob);
    // The base initrd (not a cpio of ours) and an unsealed medium have none.
    assert!(
        keypack_media_initrd::sealed_blob_in_initrd(&dir.path().join("base.cpio.gz"))
            .unwrap()
            .is_none()
    );
    let plain = dir.path().join("plain.cpio.gz");
    build(&bundle(), &args(dir.path()), "web1", &plain).unwrap();
    assert!(
        keypack_media_initrd::sealed_blob_in_initrd(&plain)
            .unwrap()
            .is_none()
    );
}
