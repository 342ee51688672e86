//! Claims "no plaintext outside the final artifact" and "key files are 0600 in private
//! folders whatever the umask" (SECURITY.md, issue 7), on the real `keypack` binary.
//!
//! Each test runs keypack with umask 000 and HOME, every XDG_*_HOME, XDG_RUNTIME_DIR, TMPDIR
//! and KEYPACK_STATE_DIR inside one fresh temp tree, then reads every file of that tree (and
//! every file changed meanwhile in /tmp, /var/tmp, /dev/shm) and searches it for the test keys:
//! PEM lines, the ed25519 seed raw, as hex and as base64, also inside every gzip stream. Only
//! the artifact may hold them, and it must (the positive control that shows the scanner sees
//! keys through gzip, FAT and cpio).

mod assurance_support;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use assurance_support::*;

struct Case {
    repo: Repo,
    env: Isolated,
    secrets: Secrets,
    started: SystemTime,
}

impl Case {
    fn new() -> Case {
        let repo = standard_repo();
        let env = Isolated::new(repo.tmp.path().join("env"));
        let secrets = Secrets::from_pems(&repo_keys(&repo));
        Case {
            repo,
            env,
            secrets,
            started: SystemTime::now(),
        }
    }

    fn keypack(&self, verb: &str, extra: &[&str]) -> std::process::Output {
        let root = self.repo.root();
        let mut args = vec![
            verb,
            "-H",
            "web1",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
        ];
        args.extend_from_slice(extra);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let out = self
            .env
            .keypack_private_tmp(&args, &path, true)
            .output()
            .expect("keypack runs");
        assert!(out.status.success(), "keypack {verb}: {}", stderr(&out));
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if verb != "pack" || what != "stdout" {
                assert_eq!(
                    self.secrets.find_deep(bytes),
                    None,
                    "keypack {verb} printed a key on {what}"
                );
            }
        }
        out
    }

    /// The core assertion: under the whole temp tree, exactly `artifacts` hold key bytes, and
    /// each of them does; nothing new in the machine's temp folders does.
    fn assert_only(&self, artifacts: &[PathBuf]) {
        let hits = files_with_secrets(self.repo.tmp.path(), &self.secrets);
        let paths: Vec<&Path> = hits.iter().map(|(p, _)| p.as_path()).collect();
        for (p, what) in &hits {
            assert!(
                artifacts.iter().any(|a| a == p),
                "{} holds key bytes ({what}) but is not the artifact",
                p.display()
            );
        }
        for a in artifacts {
            assert!(
                paths.contains(&a.as_path()),
                "positive control: the scanner finds no key in the artifact {}",
                a.display()
            );
        }
        if private_tmp() {
            // keypack ran in a private mount namespace; what it left in /tmp, /var/tmp and
            // /dev/shm was copied into the tree, so the scan above saw all of it.
            assert!(
                self.env.world().join("tmp").is_dir(),
                "the namespaced run left no copy of its /tmp (the wrapper did not run)"
            );
        } else {
            let world =
                world_temp_files_with_secrets(self.started, self.repo.tmp.path(), &self.secrets);
            assert!(
                world.is_empty(),
                "key bytes in the machine's temp folders: {world:?}"
            );
        }
        let n = assert_key_files_private(&hits);
        assert_eq!(n, artifacts.len());
    }

    /// Every folder keypack created under the state folder is 0700 despite umask 000.
    fn assert_state_dirs_private(&self) {
        let mut stack = vec![self.env.state()];
        while let Some(d) = stack.pop() {
            assert_eq!(
                mode(&d),
                0o700,
                "state folder {} is {:04o}",
                d.display(),
                mode(&d)
            );
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    assert_eq!(
                        mode(&e.path()) & 0o077,
                        0,
                        "state file {} is {:04o}",
                        e.path().display(),
                        mode(&e.path())
                    );
                }
            }
        }
    }
}

/// `keypack pack -o FILE` and `-o -`: only FILE (0600) holds key bytes.
#[test]
fn assurance_pack_leaves_keys_only_in_the_artifact() {
    let test = "assurance_pack_leaves_keys_only_in_the_artifact";
    if !have_sops(test) {
        return;
    }
    let c = Case::new();
    let out = c.env.out().join("keys.tar.gz");
    c.keypack(
        "pack",
        &["-U", "alice", "-U", "bob", "-o", out.to_str().unwrap()],
    );
    // To stdout: the bytes go to the pipe only (checked by the tree scan below).
    let piped = c.keypack("pack", &["-U", "alice", "-o", "-"]);
    assert!(
        c.secrets.find_deep(&piped.stdout).is_some(),
        "pack -o - holds the keys"
    );
    // With -f over the existing file.
    c.keypack("pack", &["-U", "bob", "-f", "-o", out.to_str().unwrap()]);
    c.assert_only(&[out]);
}

/// `keypack build` (Ventoy, default state folder), then a keys-only in-place rebuild and a
/// full `rebuild`: only the image holds key bytes; boot.json and the cache record do not.
#[test]
fn assurance_build_ventoy_leaves_keys_only_in_the_image() {
    let test = "assurance_build_ventoy_leaves_keys_only_in_the_image";
    if !ventoy_prereqs(test) {
        return;
    }
    let c = Case::new();
    let vdir = ventoy_dir(&c.repo.scratch());
    let iso = c.repo.scratch().join("keypack-nixos.iso");
    fake_iso(&iso, 1 << 20);
    let v = [
        "--iso",
        iso.to_str().unwrap(),
        "--ventoy-dir",
        vdir.to_str().unwrap(),
        "--seed",
        "7",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        v.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let a = with(&["-U", "alice"]);
    c.keypack("build", &a.iter().map(String::as_str).collect::<Vec<_>>());
    let img = c.env.state().join("web1/ventoy.img");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&img).unwrap());
    // Keys-only: bob instead of alice, switched in place.
    let b = with(&["-U", "bob"]);
    c.keypack("build", &b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&img).unwrap()),
        ino
    );
    c.assert_only(std::slice::from_ref(&img));
    // A full rebuild to an explicit -o in a private folder.
    let other = c.env.out().join("stick.img");
    let r = with(&["-U", "alice", "-o", other.to_str().unwrap()]);
    c.keypack("rebuild", &r.iter().map(String::as_str).collect::<Vec<_>>());
    c.assert_only(&[img, other]);
    c.assert_state_dirs_private();
}

/// `keypack build --media initrd`: only keys.cpio.gz holds key bytes.
#[test]
fn assurance_build_initrd_leaves_keys_only_in_the_cpio() {
    let test = "assurance_build_initrd_leaves_keys_only_in_the_cpio";
    if !have_sops(test) {
        return;
    }
    if !has_medium("initrd") {
        skip(
            test,
            "this keypack binary has no initrd medium registered (crates/keypack/src/media.rs)",
        );
        return;
    }
    let c = Case::new();
    let (k, i) = fake_kernel_and_initrd(&c.repo.scratch());
    c.keypack(
        "build",
        &[
            "--media",
            "initrd",
            "-U",
            "alice",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
        ],
    );
    let art = c.env.state().join("web1/keys.cpio.gz");
    c.assert_only(std::slice::from_ref(&art));
    c.assert_state_dirs_private();
}

/// `keypack build -o` into a folder other users can list is refused by the Ventoy medium
/// before it writes anything, so a world-listable folder never receives a key file. (The check
/// runs after decryption; `pack -o` makes no such check: see SECURITY.md.)
#[test]
fn assurance_build_refuses_a_world_listable_output_folder() {
    let test = "assurance_build_refuses_a_world_listable_output_folder";
    if !ventoy_prereqs(test) {
        return;
    }
    let c = Case::new();
    let vdir = ventoy_dir(&c.repo.scratch());
    let iso = c.repo.scratch().join("keypack-nixos.iso");
    fake_iso(&iso, 64 << 10);
    let open = c.repo.tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = open.join("x.img");
    let root = c.repo.root();
    let args = [
        "build",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
        "-i",
        AGE_KEY,
        "--iso",
        iso.to_str().unwrap(),
        "--ventoy-dir",
        vdir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let res = c
        .env
        .keypack_private_tmp(&args, &path, true)
        .output()
        .unwrap();
    assert!(!res.status.success(), "a 0755 output folder was accepted");
    assert!(stderr(&res).contains("other users"), "{}", stderr(&res));
    assert!(
        std::fs::read_dir(&open).unwrap().next().is_none(),
        "something was written"
    );
}

/// A key taken out of the bundle by a keys-only rebuild must not stay readable on the image:
/// `fat::switch_file` overwrites the old bundle's clusters before freeing them.
#[test]
fn assurance_keys_only_rebuild_leaves_no_removed_key_on_the_image() {
    let test = "assurance_keys_only_rebuild_leaves_no_removed_key_on_the_image";
    if !ventoy_prereqs(test) {
        return;
    }
    let c = Case::new();
    let vdir = ventoy_dir(&c.repo.scratch());
    let iso = c.repo.scratch().join("keypack-nixos.iso");
    fake_iso(&iso, 64 << 10);
    let v = [
        "--iso",
        iso.to_str().unwrap(),
        "--ventoy-dir",
        vdir.to_str().unwrap(),
        "--seed",
        "7",
    ];
    let mut a = v.to_vec();
    a.extend(["-U", "alice"]);
    c.keypack("build", &a);
    let mut b = v.to_vec();
    b.extend(["-U", "bob"]);
    c.keypack("build", &b);
    let img = std::fs::read(c.env.state().join("web1/ventoy.img")).unwrap();
    let alice = Secrets::from_pems(&[("alice", c.repo.alice.private.as_str())]);
    assert_eq!(
        alice.find_deep(&img),
        None,
        "alice's key is still on the image after her removal"
    );
}

/// `keypack host new web3 --deploy-key`, `keypack user new carol` and `keypack host rotate
/// web1` (issue: "never a plaintext temp file"): each runs isolated (umask 000, private /tmp,
/// /var/tmp and /dev/shm as root). The keys they generated are learned afterwards from the
/// written documents by the real `sops` (stdout, a pipe), with web1's old keys, the rewrapped
/// file's secret value and every other test key. Then no file under the test's folder (the
/// repository, HOME, XDG folders, TMPDIR, state folder, and the copy of what the run left in
/// the private temp folders) holds any of them, and neither does any run's stdout or stderr:
/// the repository's sops files are ciphertext only. A planted plaintext copy in the private
/// /tmp's copy is found (positive control).
#[test]
fn assurance_host_new_and_rotate_leave_keys_only_as_ciphertext() {
    let test = "assurance_host_new_and_rotate_leave_keys_only_as_ciphertext";
    if !have_sops(test) {
        return;
    }
    let c = Case::new();
    let root = c.repo.root();
    let old = age_recipient_of(&c.repo.host.public);
    let admin = common::RECIPIENT;
    c.repo.write(
        ".sops.yaml",
        format!(
            "keys:\n  - &admin {admin}\n  - &host_web1 {old}\ncreation_rules:\n  - path_regex: ^(hosts|users)/.*\n    key_groups:\n      - age:\n          - *admin\n  - path_regex: secrets/web1/.*\n    key_groups:\n      - age:\n          - *admin\n          - *host_web1\n"
        )
        .as_bytes(),
    );
    let db_secret = "db-password-7b1c0e5a9f3d2468e0";
    let db = sops_encrypt_yaml_to(
        &format!("password: {db_secret}\n"),
        &format!("{admin},{old}"),
        &c.repo.scratch(),
        None,
    );
    c.repo.write("secrets/web1/db.yaml", &db);
    let db_before = std::fs::read(root.join("secrets/web1/db.yaml")).unwrap();

    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut outputs = Vec::new();
    for verb in [
        ["host", "new", "web3", "--deploy-key"],
        ["user", "new", "carol", "--json"],
        ["host", "rotate", "web1", "--json"],
    ] {
        let mut args = vec![
            verb[0],
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
        ];
        args.extend_from_slice(&verb[1..]);
        let out = c
            .env
            .keypack_private_tmp(&args, &path, true)
            .output()
            .expect("keypack runs");
        assert!(out.status.success(), "keypack {verb:?}: {}", stderr(&out));
        outputs.push((verb.join(" "), out));
    }
    assert_ne!(
        std::fs::read(root.join("secrets/web1/db.yaml")).unwrap(),
        db_before,
        "host rotate rewrapped secrets/web1/db.yaml"
    );

    // The new keys, learned now, from the ciphertext keypack wrote.
    let web3 = root.join("hosts/web3.yaml");
    let web1 = root.join("hosts/web1.yaml");
    let new_keys = [
        (
            "web3 host",
            sops_field_as(&web3, "ssh_host_ed25519_key", AGE_KEY),
        ),
        (
            "web3 deploy",
            sops_field_as(&web3, "deploy_key_ed25519", AGE_KEY),
        ),
        (
            "carol",
            sops_field_as(&root.join("users/carol.yaml"), "id_ed25519", AGE_KEY),
        ),
        (
            "web1 new host",
            sops_field_as(&web1, "ssh_host_ed25519_key", AGE_KEY),
        ),
        (
            "web1 new deploy",
            sops_field_as(&web1, "deploy_key_ed25519", AGE_KEY),
        ),
    ];
    assert_ne!(
        new_keys[3].1, c.repo.host.private,
        "web1's host key was replaced"
    );
    assert_ne!(
        new_keys[4].1, c.repo.deploy.private,
        "web1's deploy key was replaced"
    );
    let mut pems: Vec<(&str, &str)> = new_keys.iter().map(|(n, p)| (*n, p.as_str())).collect();
    pems.extend(repo_keys(&c.repo));
    let mut secrets = Secrets::from_pems(&pems);
    secrets.push("db.yaml's password".into(), db_secret.as_bytes().to_vec());

    for (verb, out) in &outputs {
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert_eq!(
                secrets.find_deep(bytes),
                None,
                "keypack {verb} printed a key on {what}"
            );
        }
    }
    if private_tmp() {
        assert!(
            c.env.world().join("tmp").is_dir(),
            "the namespaced run left no copy of its /tmp (the wrapper did not run)"
        );
    } else {
        let world = world_temp_files_with_secrets(c.started, c.repo.tmp.path(), &secrets);
        assert!(
            world.is_empty(),
            "key bytes in the machine's temp folders: {world:?}"
        );
    }
    let hits = files_with_secrets(c.repo.tmp.path(), &secrets);
    assert!(
        hits.is_empty(),
        "plaintext key bytes left in files: {hits:?}"
    );

    // Positive control: a plaintext copy of a new key where a child would leave it (the copy
    // of the private /tmp, or the tree's TMPDIR when not root) is found.
    let planted_dir = if private_tmp() {
        c.env.world().join("tmp")
    } else {
        c.env.root.join("tmp")
    };
    let planted = planted_dir.join("planted-key");
    std::fs::write(&planted, &new_keys[3].1).unwrap();
    let hits = files_with_secrets(c.repo.tmp.path(), &secrets);
    assert_eq!(
        hits.iter().map(|(p, _)| p.as_path()).collect::<Vec<_>>(),
        [planted.as_path()],
        "positive control: the scanner finds the planted key"
    );
    std::fs::remove_file(&planted).unwrap();
}

/// `--seal passphrase` (issue 14): a sealed initrd build leaves **no** file with key bytes, the
/// artifact included (it holds only the `.pub` files and the age blob), and no file anywhere in
/// the tree or the machine's temp folders holds the passphrase, asked twice on
/// `KEYPACK_PIN_FD`. Positive control: the same scanner finds the keys in an unsealed build.
#[test]
fn assurance_sealed_build_leaves_no_key_and_no_passphrase_in_any_file() {
    let test = "assurance_sealed_build_leaves_no_key_and_no_passphrase_in_any_file";
    if !have_sops(test) {
        return;
    }
    const PASSPHRASE: &str = "residue-scan sealing passphrase 2026";
    let c = Case::new();
    let (k, i) = fake_kernel_and_initrd(&c.repo.scratch());
    let root = c.repo.root();
    let answers = c.repo.scratch().join("answers");
    std::fs::write(&answers, format!("{PASSPHRASE}\n{PASSPHRASE}\n")).unwrap();
    let args = [
        "build",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
        "-i",
        AGE_KEY,
        "--media",
        "initrd",
        "-U",
        "alice",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        i.to_str().unwrap(),
        "--seal",
        "passphrase",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let out = c
        .env
        .keypack_private_tmp(&args, &path, true)
        .env("KEYPACK_PIN_FD", "0")
        .stdin(std::fs::File::open(&answers).unwrap())
        .output()
        .expect("keypack runs");
    assert!(out.status.success(), "sealed build: {}", stderr(&out));
    std::fs::remove_file(&answers).unwrap();
    let art = c.env.state().join("web1/keys.cpio.gz");
    assert!(art.is_file());
    let hits = files_with_secrets(c.repo.tmp.path(), &c.secrets);
    assert!(
        hits.is_empty(),
        "key bytes in a sealed build's files: {hits:?}"
    );
    if !private_tmp() {
        let world = world_temp_files_with_secrets(c.started, c.repo.tmp.path(), &c.secrets);
        assert!(
            world.is_empty(),
            "key bytes in the machine's temp folders: {world:?}"
        );
    }
    for file in files_under(c.repo.tmp.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            memchr::memmem::find(&bytes, PASSPHRASE.as_bytes()).is_none(),
            "{} holds the passphrase",
            file.display()
        );
    }
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            memchr::memmem::find(bytes, PASSPHRASE.as_bytes()).is_none(),
            "the passphrase on {what}"
        );
        assert_eq!(c.secrets.find_deep(bytes), None, "a key on {what}");
    }
    c.assert_state_dirs_private();
    // Positive control: an unsealed build of the same keys is seen by the scanner.
    c.keypack(
        "build",
        &[
            "--media",
            "initrd",
            "-U",
            "alice",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
        ],
    );
    c.assert_only(std::slice::from_ref(&art));
}
