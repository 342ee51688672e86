//! `keypack pack`, `verify` and `inspect` on good repositories.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn pack_to(repo: &Repo, out: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "-H",
        "web1",
        "-U",
        "alice",
        "-U",
        "bob",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let result = repo.run("pack", &args);
    assert!(result.status.success(), "{}", stderr(&result));
    std::fs::read(out).unwrap()
}

#[test]
fn pack_twice_gives_identical_bytes() {
    if !have_sops("pack_twice_gives_identical_bytes") {
        return;
    }
    let repo = standard_repo();
    let out = repo.out_dir("twice");
    let a = pack_to(&repo, &out.join("a.tar.gz"), &[]);
    let b = pack_to(&repo, &out.join("b.tar.gz"), &[]);
    assert_eq!(a, b);
    // Users in another order give the same bundle: the archive is sorted.
    let result = repo.run(
        "pack",
        &[
            "-H", "web1", "-U", "bob", "-U", "alice", "-U", "bob", "-o", "-",
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(result.stdout, a);
}

#[test]
fn pack_to_stdout_equals_pack_to_file() {
    if !have_sops("pack_to_stdout_equals_pack_to_file") {
        return;
    }
    let repo = standard_repo();
    let out = repo.out_dir("stdout");
    let file = pack_to(&repo, &out.join("keys.tar.gz"), &[]);
    let result = repo.run(
        "pack",
        &["-H", "web1", "-U", "alice", "-U", "bob", "-o", "-"],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(result.stdout, file);
    assert_eq!(listing(&out), ["keys.tar.gz"], "no temp file left");
}

#[test]
fn pack_writes_0600_and_replaces_only_with_force() {
    if !have_sops("pack_writes_0600_and_replaces_only_with_force") {
        return;
    }
    let repo = standard_repo();
    let out = repo.out_dir("force");
    let target = out.join("keys.tar.gz");
    let first = pack_to(&repo, &target, &[]);
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o600);

    let again = repo.run("pack", &["-H", "web1", "-o", target.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("hint: use -f"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        first,
        "untouched without -f"
    );

    // With -f, the host-only bundle replaces it atomically, still 0600.
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = repo.run(
        "pack",
        &["-H", "web1", "-f", "-o", target.to_str().unwrap()],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(&target).unwrap(), first);
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(listing(&out), ["keys.tar.gz"]);
}

#[test]
fn pack_honours_source_date_epoch() {
    if !have_sops("pack_honours_source_date_epoch") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    let out = repo
        .command(&[
            "pack",
            "-H",
            "web1",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "-o",
            "-",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(out.stdout.as_slice()));
    for entry in tar.entries().unwrap() {
        assert_eq!(entry.unwrap().header().mtime().unwrap(), 1_700_000_000);
    }
}

/// Ventoy unpacks the bundle with busybox tar as root over the initramfs root: the files must
/// come out with the layout's modes and root owners, and nothing else may change.
#[test]
fn packed_bundle_unpacks_with_busybox_tar_as_root() {
    const TEST: &str = "packed_bundle_unpacks_with_busybox_tar_as_root";
    if !have_sops(TEST) {
        return;
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        return skip(TEST, "busybox (Debian busybox-static) is not installed");
    };
    if !rustix::process::geteuid().is_root() {
        return skip(TEST, "needs root (Ventoy's busybox tar runs as root)");
    }
    let repo = standard_repo();
    let out = repo.out_dir("busybox");
    let archive = out.join("keys.tar.gz");
    pack_to(&repo, &archive, &[]);
    let root = repo.tmp.path().join("initramfs-root");
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
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o711);

    let mut found = Vec::new();
    walk(&root, &root, &mut found);
    found.sort();
    let expected = [
        ("etc/ssh/ssh_host_ed25519_key", 0o600),
        ("etc/ssh/ssh_host_ed25519_key.pub", 0o644),
        ("root/.ssh/deploy_key_ed25519", 0o600),
        ("root/.ssh/deploy_key_ed25519.pub", 0o644),
        ("users/alice/.ssh/id_ed25519", 0o600),
        ("users/alice/.ssh/id_ed25519.pub", 0o644),
        ("users/bob/.ssh/id_ed25519", 0o600),
        ("users/bob/.ssh/id_ed25519.pub", 0o644),
    ];
    let got: Vec<(&str, u32)> = found.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
    assert_eq!(got, expected);
    assert!(
        found.iter().all(|(_, _, owner)| *owner == (0, 0)),
        "{found:?}"
    );
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("etc/ssh/ssh_host_ed25519_key"), repo.host.private);
    assert_eq!(
        read("etc/ssh/ssh_host_ed25519_key.pub").trim(),
        repo.host.public.trim()
    );
    assert_eq!(read("users/bob/.ssh/id_ed25519"), repo.bob.private);
    assert_eq!(
        fingerprint(&read("root/.ssh/deploy_key_ed25519.pub"), &repo.scratch()),
        fingerprint(&repo.deploy.public, &repo.scratch())
    );
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, (u32, u32))>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = path.symlink_metadata().unwrap();
        if meta.is_dir() {
            walk(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, meta.mode() & 0o7777, (meta.uid(), meta.gid())));
        }
    }
}

#[test]
fn verify_prints_path_and_fingerprint_per_key_and_writes_nothing() {
    if !have_sops("verify_prints_path_and_fingerprint_per_key_and_writes_nothing") {
        return;
    }
    let repo = standard_repo();
    let before = listing(repo.tmp.path());
    let result = repo.run("verify", &["-H", "web1", "-U", "alice", "-U", "bob"]);
    assert!(result.status.success(), "{}", stderr(&result));
    let text = stdout(&result);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let scratch = repo.scratch();
    for (line, (path, key)) in lines.iter().zip([
        ("etc/ssh/ssh_host_ed25519_key", &repo.host),
        ("root/.ssh/deploy_key_ed25519", &repo.deploy),
        ("users/alice/.ssh/id_ed25519", &repo.alice),
        ("users/bob/.ssh/id_ed25519", &repo.bob),
    ]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], path);
        assert_eq!(fields[1], fingerprint(&key.public, &scratch), "{line}");
    }
    assert!(!text.contains("PRIVATE KEY") && !stderr(&result).contains("PRIVATE KEY"));
    assert_eq!(listing(repo.tmp.path()), before, "verify wrote something");
}

#[test]
fn inspect_lists_entries_modes_owners_and_fingerprints() {
    if !have_sops("inspect_lists_entries_modes_owners_and_fingerprints") {
        return;
    }
    let repo = standard_repo();
    let out = repo.out_dir("inspect");
    let archive = out.join("keys.tar.gz");
    pack_to(&repo, &archive, &[]);
    let result = repo.keypack(&["inspect", archive.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    let text = stdout(&result);
    let host_fp = fingerprint(&repo.host.public, &repo.scratch());
    assert!(text.contains("8 entries"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("-rw-------  0:0")
            && l.contains("etc/ssh/ssh_host_ed25519_key ")
            && l.ends_with(&host_fp)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("-rw-r--r--  0:0")
                && l.contains("users/alice/.ssh/id_ed25519.pub")),
        "{text}"
    );
    assert!(text.contains("problems: none"), "{text}");
    assert!(!text.contains("PRIVATE KEY"));
}

#[test]
fn inspect_reports_problems_of_a_hand_made_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_path("etc/").unwrap();
        h.set_cksum();
        tar.append(&h, std::io::empty()).unwrap();
        tar.finish().unwrap();
    }
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let out = Command::new(KEYPACK)
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("path is not part of the keypack layout"),
        "out={text:?} err={:?}",
        stderr(&out)
    );
    assert!(
        text.lines().any(|l| l.starts_with("drwxrwxrwx  0:0")),
        "{text}"
    );
    assert!(
        text.contains("etc/ssh/ssh_host_ed25519_key: missing"),
        "{text}"
    );
}

#[test]
fn inspect_hands_non_gzip_files_to_the_image_inspector() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notes.txt");
    std::fs::write(&path, "hello").unwrap();
    let out = Command::new(KEYPACK)
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!stdout(&out).contains("keys.tar.gz,"), "{}", stdout(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}

#[test]
fn keys_repo_comes_from_flag_then_env_then_config() {
    if !have_sops("keys_repo_comes_from_flag_then_env_then_config") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    let root = root.to_str().unwrap();
    let verify = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        (out.status.success(), stderr(&out))
    };
    // Config file only.
    let config = repo.tmp.path().join("home/.config/keypack/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, format!("keys_repo = {root:?}\n")).unwrap();
    let (ok, err) = verify(&mut repo.command(&["verify", "-H", "web1", "-i", AGE_KEY]));
    assert!(ok, "{err}");
    // The environment wins over the config file.
    let (ok, err) = verify(
        repo.command(&["verify", "-H", "web1", "-i", AGE_KEY])
            .env("KEYPACK_KEYS_REPO", "/nonexistent/env-repo"),
    );
    assert!(!ok && err.contains("/nonexistent/env-repo"), "{err}");
    // The flag wins over both.
    let (ok, err) = verify(
        repo.command(&["verify", "-H", "web1", "-i", AGE_KEY, "--keys-repo", root])
            .env("KEYPACK_KEYS_REPO", "/nonexistent/env-repo"),
    );
    assert!(ok, "{err}");
    // A relative keys_repo is relative to the config file.
    std::fs::write(&config, "keys_repo = \"../../../keys\"\n").unwrap();
    let (ok, err) = verify(&mut repo.command(&["verify", "-H", "web1", "-i", AGE_KEY]));
    assert!(ok, "{err}");
}

#[test]
fn identity_comes_from_keypack_identity_or_sops_age_key_file() {
    if !have_sops("identity_comes_from_keypack_identity_or_sops_age_key_file") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    for var in ["KEYPACK_IDENTITY", "SOPS_AGE_KEY_FILE"] {
        let out = repo
            .command(&[
                "verify",
                "-H",
                "web1",
                "--keys-repo",
                root.to_str().unwrap(),
            ])
            .env(var, AGE_KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{var}: {}", stderr(&out));
    }
    // sops' default place.
    let default = repo.tmp.path().join("home/.config/sops/age/keys.txt");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::copy(AGE_KEY, &default).unwrap();
    let out = repo.keypack(&[
        "verify",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn every_flag_has_help() {
    for verb in ["pack", "verify", "inspect"] {
        let out = Command::new(KEYPACK)
            .args([verb, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = stdout(&out);
        let flags: &[&str] = match verb {
            "pack" => &[
                "--host",
                "--user",
                "--keys-repo",
                "--identity",
                "--output",
                "--force",
            ],
            "verify" => &["--host", "--user", "--keys-repo", "--identity"],
            _ => &["<FILE>"],
        };
        for flag in flags {
            let line = text
                .lines()
                .find(|l| l.contains(flag))
                .unwrap_or_else(|| panic!("{verb}: {flag} missing"));
            assert!(
                line.trim().len() > flag.len() + 12,
                "{verb}: {flag} has no help: {line}"
            );
        }
    }
}

/// Review finding 1: a repository file copied to another role decrypts with a valid MAC in
/// its new place (sops authenticates the field path and the content, not the file's place).
/// One key in two roles of a bundle is refused by `verify`, `pack` and `build`, and
/// `--allow-shared-key` is the deliberate way through.
#[test]
fn one_key_in_two_roles_is_refused_unless_allowed() {
    if !have_sops("one_key_in_two_roles_is_refused_unless_allowed") {
        return;
    }
    let repo = standard_repo();
    // alice's document copied as carol's; the host key re-encrypted as heidi's per-key file.
    let alice = std::fs::read(repo.root().join("users/alice.json")).unwrap();
    repo.write("users/carol.json", &alice);
    repo.encrypt_binary("users/heidi/id_ed25519", &repo.host.private, "yaml");
    let out = repo.out_dir("shared");
    let bundle = out.join("keys.tar.gz");
    let bundle = bundle.to_str().unwrap();
    for (users, first, second) in [
        (
            ["-U", "alice", "-U", "carol"],
            "users/carol/.ssh/id_ed25519",
            "users/alice/.ssh/id_ed25519",
        ),
        (
            ["-U", "heidi", "-U", "alice"],
            "users/heidi/.ssh/id_ed25519",
            "etc/ssh/ssh_host_ed25519_key",
        ),
    ] {
        let mut args = vec!["-H", "web1"];
        args.extend_from_slice(&users);
        let verify = repo.run("verify", &args);
        assert!(!verify.status.success(), "{}", stdout(&verify));
        let said = format!("{}{}", stdout(&verify), stderr(&verify));
        assert!(
            said.contains(&format!("{first} is the same key as {second}")),
            "{said}"
        );
        let mut pack_args = args.clone();
        pack_args.extend_from_slice(&["-o", bundle]);
        let pack = repo.run("pack", &pack_args);
        assert!(!pack.status.success());
        let err = stderr(&pack);
        assert!(err.contains("is the same key as"), "{err}");
        assert!(
            err.contains("hint: ") && err.contains("--allow-shared-key"),
            "{err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        assert!(
            !out.join("keys.tar.gz").exists(),
            "a refused pack wrote a bundle"
        );

        pack_args.extend_from_slice(&["--allow-shared-key", "-f"]);
        let allowed = repo.run("pack", &pack_args);
        assert!(allowed.status.success(), "{}", stderr(&allowed));
        std::fs::remove_file(out.join("keys.tar.gz")).unwrap();
        args.push("--allow-shared-key");
        let verify = repo.run("verify", &args);
        assert!(verify.status.success(), "{}", stderr(&verify));
    }
}

/// `pack --burn-after-boot` (issue #14): the bundle carries a mark of 32 hex digits, a new one
/// on every pack (two bundles never share it), which `inspect` shows; busybox-style tar sees
/// it as one more plaintext file; without the flag the bundle is unchanged.
#[test]
fn pack_burn_after_boot_marks_each_bundle_uniquely() {
    if !have_sops("pack_burn_after_boot_marks_each_bundle_uniquely") {
        return;
    }
    let repo = standard_repo();
    let out = repo.out_dir("burn");
    let plain = pack_to(&repo, &out.join("plain.tar.gz"), &[]);
    let a_path = out.join("a.tar.gz");
    let a = pack_to(&repo, &a_path, &["--burn-after-boot"]);
    let b = pack_to(&repo, &out.join("b.tar.gz"), &["--burn-after-boot"]);
    assert_ne!(a, b, "two marked bundles share a mark");
    assert_ne!(a, plain);
    assert_eq!(
        pack_to(&repo, &out.join("plain2.tar.gz"), &[]),
        plain,
        "the flag leaks into unmarked packs"
    );
    let mark = Command::new("tar")
        .arg("-xzOf")
        .arg(&a_path)
        .arg("keypack/burn-after-boot")
        .output()
        .unwrap();
    assert!(mark.status.success());
    let token = String::from_utf8(mark.stdout).unwrap();
    let token = token.trim();
    assert!(
        token.len() == 32 && token.bytes().all(|c| c.is_ascii_hexdigit()),
        "{token:?}"
    );
    let result = repo.keypack(&["inspect", a_path.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(
        stdout(&result).contains(&format!("burn after boot: yes (mark {token})")),
        "{}",
        stdout(&result)
    );
    let result = repo.keypack(&["inspect", out.join("plain.tar.gz").to_str().unwrap()]);
    assert!(stdout(&result).contains("burn after boot: no"));
}
