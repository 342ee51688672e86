//! Bundle tests: determinism, the exact archive layout, key checks, and reading archives back.
//! Keys are throwaway fixtures made by `fixtures/gen.sh`.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use keypack_bundle::{
    BundleBuilder, BundleError, KeyRole, SealedBundle, archive_problems, read_archive,
};
use keypack_layout::UserName;
use secrecy::SecretSlice;

const HOST: &str = include_str!("fixtures/host");
const HOST_PUB: &str = include_str!("fixtures/host.pub");
const DEPLOY: &str = include_str!("fixtures/deploy");
const ALICE: &str = include_str!("fixtures/alice");
const ALICE_PUB: &str = include_str!("fixtures/alice.pub");
const ECDSA: &str = include_str!("fixtures/ecdsa");
const ENCRYPTED: &str = include_str!("fixtures/encrypted");

fn secret(text: &str) -> SecretSlice<u8> {
    SecretSlice::from(text.as_bytes().to_vec())
}

fn alice() -> KeyRole {
    KeyRole::User(UserName::new("alice").unwrap())
}

fn full_bundle(mtime: u64) -> SealedBundle {
    let mut b = BundleBuilder::new();
    b.add_key(alice(), secret(ALICE), Some(ALICE_PUB)).unwrap();
    b.add_key(KeyRole::Deploy, secret(DEPLOY), None).unwrap();
    b.add_key(KeyRole::Host, secret(HOST), Some(HOST_PUB))
        .unwrap();
    b.seal(mtime).unwrap()
}

fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {why} (KEYPACK_REQUIRE_ALL=1)");
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

#[test]
fn sealing_twice_gives_identical_bytes() {
    let a = full_bundle(0);
    let b = full_bundle(0);
    assert_eq!(a.expose_archive(), b.expose_archive());
    assert_eq!(a.manifest(), b.manifest());
    // The mtime is part of the archive: a different SOURCE_DATE_EPOCH gives different bytes.
    let c = full_bundle(1_700_000_000);
    assert_ne!(a.expose_archive(), c.expose_archive());
}

#[test]
fn gzip_header_has_no_timestamp_or_name() {
    let bundle = full_bundle(0);
    let bytes = bundle.expose_archive();
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(bytes[3], 0, "no FNAME/FEXTRA/FCOMMENT flags");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
    assert_eq!(bytes[9], 255, "OS is 'unknown'");
    assert_eq!(bundle.archive_len(), bytes.len());
}

#[test]
fn archive_holds_exactly_the_layout_sorted_with_root_owners() {
    let bundle = full_bundle(1234);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bundle.expose_archive()));
    let mut seen = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert!(h.as_ustar().is_some(), "ustar header");
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username().unwrap(), Some("root"));
        assert_eq!(h.mtime().unwrap(), 1234);
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        seen.push((path, h.mode().unwrap(), content));
    }
    let paths: Vec<_> = seen.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
    assert_eq!(
        paths,
        [
            ("etc/ssh/ssh_host_ed25519_key", 0o600),
            ("etc/ssh/ssh_host_ed25519_key.pub", 0o644),
            ("root/.ssh/deploy_key_ed25519", 0o600),
            ("root/.ssh/deploy_key_ed25519.pub", 0o644),
            ("users/alice/.ssh/id_ed25519", 0o600),
            ("users/alice/.ssh/id_ed25519.pub", 0o644),
        ]
    );
    assert_eq!(seen[0].2, HOST, "private key bytes are packed as given");
    assert_eq!(seen[1].2, HOST_PUB, "derived .pub equals ssh-keygen's");
    assert_eq!(seen[5].2, ALICE_PUB);
}

#[test]
fn manifest_matches_the_archive_and_has_fingerprints() {
    let bundle = full_bundle(0);
    let manifest = bundle.manifest();
    assert_eq!(manifest.entries.len(), 6);
    assert_eq!(manifest.host_public_key().unwrap(), HOST_PUB.trim());
    let read = read_archive(bundle.expose_archive()).unwrap();
    assert_eq!(read.len(), 6);
    for (m, r) in manifest.entries.iter().zip(&read) {
        assert_eq!(m.path, r.path);
        assert_eq!(m.mode, r.mode);
        assert_eq!(m.size, r.size);
        assert_eq!(Some(&m.fingerprint), r.fingerprint.as_ref());
        assert!(m.fingerprint.starts_with("SHA256:"));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
    assert!(archive_problems(&read).is_empty());
    let files: Vec<_> = bundle.expose_files().map(|(e, _)| e.path.clone()).collect();
    let paths: Vec<_> = manifest.entries.iter().map(|e| e.path.clone()).collect();
    assert_eq!(files, paths);
}

#[test]
fn bad_keys_are_refused_with_their_bundle_path() {
    let mut b = BundleBuilder::new();
    let err = b.add_key(KeyRole::Host, secret(ECDSA), None).unwrap_err();
    assert!(matches!(err, BundleError::WrongKeyType { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("etc/ssh/ssh_host_ed25519_key: key type is ecdsa"),
        "{err}"
    );
    let err = b
        .add_key(KeyRole::Deploy, secret(ENCRYPTED), None)
        .unwrap_err();
    assert!(matches!(err, BundleError::EncryptedKey { .. }), "{err:?}");
    let err = b.add_key(alice(), secret("hello\n"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "users/alice/.ssh/id_ed25519: not an OpenSSH private key"
    );
    let err = b
        .add_key(alice(), secret(ALICE), Some("not a key"))
        .unwrap_err();
    assert!(matches!(err, BundleError::BadPublicKey { .. }), "{err:?}");
}

#[test]
fn mismatched_stored_public_key_names_both_fingerprints() {
    let mut b = BundleBuilder::new();
    let err = b
        .add_key(KeyRole::Host, secret(HOST), Some(ALICE_PUB))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BundleError::PublicKeyMismatch { .. }));
    assert!(
        text.starts_with("etc/ssh/ssh_host_ed25519_key.pub: stored public key does not match"),
        "{text}"
    );
    assert_eq!(text.matches("SHA256:").count(), 2, "{text}");
    // A stored key with another comment or trailing whitespace is still the same key.
    let other_comment = HOST_PUB.replace("host@test", "renamed");
    b.add_key(
        KeyRole::Host,
        secret(HOST),
        Some(&format!("  {other_comment}\n\n")),
    )
    .unwrap();
}

#[test]
fn duplicate_and_missing_host_key() {
    let mut b = BundleBuilder::new();
    b.add_key(alice(), secret(ALICE), None).unwrap();
    let err = b.add_key(alice(), secret(ALICE), None).unwrap_err();
    assert!(matches!(err, BundleError::Duplicate { .. }));
    let Err(err) = b.seal(0) else {
        panic!("sealed without a host key")
    };
    assert!(matches!(err, BundleError::MissingHostKey { .. }));
}

/// Builds a gzip tar by hand, with whatever entries a hostile or broken bundle might hold.
fn hand_tar(entries: &[(&str, tar::EntryType, u32, u64, &[u8])]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (path, kind, mode, uid, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/shadow").unwrap();
            }
            // set_path refuses `..`; write the raw name for traversal cases.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn read_archive_reports_every_kind_of_problem() {
    let r = tar::EntryType::Regular;
    let bytes = hand_tar(&[
        ("etc/", tar::EntryType::Directory, 0o777, 0, b""),
        ("etc/ssh/ssh_host_ed25519_key", r, 0o644, 0, HOST.as_bytes()),
        (
            "etc/ssh/ssh_host_ed25519_key.pub",
            r,
            0o644,
            1000,
            ALICE_PUB.as_bytes(),
        ),
        ("../evil", r, 0o600, 0, b"x"),
        (
            "root/.ssh/deploy_key_ed25519",
            tar::EntryType::Symlink,
            0o600,
            0,
            b"",
        ),
        ("users/alice/.ssh/id_ed25519", r, 0o600, 0, b"not a key"),
        ("users/alice/.ssh/id_ed25519", r, 0o600, 0, ALICE.as_bytes()),
    ]);
    let entries = read_archive(&bytes).unwrap();
    let problems = |i: usize| entries[i].problems.join("; ");
    assert_eq!(entries[0].kind, 'd');
    assert!(
        problems(0).contains("not part of the keypack layout"),
        "{}",
        problems(0)
    );
    assert!(
        problems(1).contains("mode 0644, expected 0600"),
        "{}",
        problems(1)
    );
    assert!(problems(2).contains("owner 1000:0"), "{}", problems(2));
    assert!(problems(3).contains("not part of the keypack layout"));
    assert!(problems(4).contains("not a regular file"));
    assert!(problems(5).contains("not an ed25519 key"));
    assert!(problems(6).is_empty(), "{}", problems(6));

    let whole = archive_problems(&entries).join("\n");
    assert!(
        whole.contains("users/alice/.ssh/id_ed25519: stored 2 times"),
        "{whole}"
    );
    assert!(
        whole.contains("etc/ssh/ssh_host_ed25519_key.pub: public key SHA256:"),
        "{whole}"
    );
    assert!(
        whole.contains("users/alice/.ssh/id_ed25519.pub: missing"),
        "{whole}"
    );
}

#[test]
fn read_archive_refuses_non_gzip_and_flags_a_missing_host_key() {
    assert!(matches!(
        read_archive(b"hello"),
        Err(BundleError::Archive(_))
    ));
    let bytes = hand_tar(&[(
        "users/alice/.ssh/id_ed25519.pub",
        tar::EntryType::Regular,
        0o644,
        0,
        ALICE_PUB.as_bytes(),
    )]);
    let entries = read_archive(&bytes).unwrap();
    let whole = archive_problems(&entries).join("\n");
    assert!(
        whole.contains("etc/ssh/ssh_host_ed25519_key: missing"),
        "{whole}"
    );
    assert!(
        whole.contains("users/alice/.ssh/id_ed25519: missing (only the .pub"),
        "{whole}"
    );
}

/// Ventoy unpacks the bundle with busybox tar, as root, over the initramfs root. The unpack must
/// give the layout's modes and owners and change nothing else (no folder entries: the root's
/// own mode stays as it was).
#[test]
fn busybox_tar_unpacks_it_as_root_without_touching_the_root() {
    const TEST: &str = "busybox_tar_unpacks_it_as_root_without_touching_the_root";
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(busybox) = busybox else {
        return skip(TEST, "busybox (busybox-static) is not installed");
    };
    if !rustix::process::geteuid().is_root() {
        return skip(TEST, "needs root, as Ventoy's busybox tar runs");
    }
    let bundle = full_bundle(0);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("keys.tar.gz");
    std::fs::File::create(&archive)
        .unwrap()
        .write_all(bundle.expose_archive())
        .unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let status = Command::new(busybox)
        .args(["tar", "-xzf"])
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(&root).unwrap().mode() & 0o7777,
        0o711,
        "the unpack changed the root's mode"
    );
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let expected: Vec<(String, u32)> = bundle
        .manifest()
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.mode))
        .collect();
    let got: Vec<(String, u32)> = files.iter().map(|(p, m, _)| (p.clone(), *m)).collect();
    assert_eq!(got, expected, "exactly the bundle's files, with its modes");
    assert!(files.iter().all(|(_, _, owner)| *owner == (0, 0)));
    let host = std::fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    assert_eq!(host, HOST);
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, (u32, u32))>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.is_dir() {
            walk(root, &entry.path(), out);
        } else {
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, meta.mode() & 0o7777, (meta.uid(), meta.gid())));
        }
    }
}

/// Finding: a copied repository file hands one role's key to another with a valid sops MAC.
/// The bundle refuses one key pair in two roles unless the caller allows it.
#[test]
fn one_key_in_two_roles_is_refused_unless_allowed() {
    let bob = KeyRole::User(UserName::new("bob").unwrap());
    let mut b = BundleBuilder::new();
    b.add_key(KeyRole::Host, secret(HOST), None).unwrap();
    b.add_key(alice(), secret(ALICE), None).unwrap();
    let err = b.add_key(KeyRole::Deploy, secret(HOST), None).unwrap_err();
    let BundleError::SharedKey { path, other, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, "root/.ssh/deploy_key_ed25519");
    assert_eq!(other, "etc/ssh/ssh_host_ed25519_key");
    let err = b.add_key(bob.clone(), secret(ALICE), None).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "users/bob/.ssh/id_ed25519 is the same key as users/alice/.ssh/id_ed25519"
        ),
        "{err}"
    );
    let sealed = b.seal(0).unwrap();
    assert_eq!(sealed.manifest().entries.len(), 4, "refused keys stay out");

    let mut b = BundleBuilder::new();
    b.allow_shared_keys(true);
    b.add_key(KeyRole::Host, secret(HOST), None).unwrap();
    b.add_key(KeyRole::Deploy, secret(HOST), None).unwrap();
    b.add_key(bob, secret(HOST), None).unwrap();
    assert_eq!(b.seal(0).unwrap().manifest().entries.len(), 6);
}

/// `--burn-after-boot` (issue #14): the mark is one plaintext file entry, in path order, that
/// `burn_mark` and busybox-style readers see, with no problem reported; without the flag the
/// archive is what it always was.
#[test]
fn burn_mark_is_a_plaintext_entry_in_order() {
    let token = "00112233445566778899aabbccddeeff";
    let mut b = BundleBuilder::new();
    b.add_key(KeyRole::Deploy, secret(DEPLOY), None).unwrap();
    b.add_key(KeyRole::Host, secret(HOST), Some(HOST_PUB))
        .unwrap();
    b.burn_after_boot(token).unwrap();
    let bundle = b.seal(0).unwrap();
    assert_eq!(bundle.burn_mark(), Some(format!("{token}\n").as_str()));
    let entries = read_archive(bundle.expose_archive()).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "keypack/burn-after-boot",
            "root/.ssh/deploy_key_ed25519",
            "root/.ssh/deploy_key_ed25519.pub",
        ]
    );
    let mark = &entries[2];
    assert_eq!(
        (mark.kind, mark.mode, mark.uid, mark.gid),
        ('-', 0o644, 0, 0)
    );
    assert!(mark.problems.is_empty(), "{:?}", mark.problems);
    assert!(archive_problems(&entries).is_empty());
    assert_eq!(
        keypack_bundle::burn_mark(bundle.expose_archive()).unwrap(),
        Some(token.to_string())
    );
    assert_eq!(
        keypack_bundle::burn_mark(full_bundle(0).expose_archive()).unwrap(),
        None
    );
    for bad in [
        "",
        "0011",
        "00112233445566778899AABBCCDDEEFF",
        "../../../../etc/passwd",
    ] {
        assert!(
            matches!(
                BundleBuilder::new().burn_after_boot(bad),
                Err(BundleError::BadBurnToken)
            ),
            "{bad:?}"
        );
    }
}
