//! Runs the `load-keys` binary against temp folders as source, target and stage folder, with a
//! sentinel folder `outside/` next to them that every planted symlink points at. After each run
//! `outside/` and the source must be byte-for-byte unchanged, and the console must say what
//! happened. The tests need root (stage 1 sets owner root; stage 2 chowns to users).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_load-keys");
const HEADER: &str = "=== Stage 1: Loading SSH keys (keypack) ===";
const FOUND: &str = "Found injected keys, copying to target...";
const NOT_FOUND: &str = "No injected keys found (expected: /etc/ssh/ssh_host_ed25519_key)";
const FOOTER: &str = "=== Stage 1: Key loading complete ===";
const HOST: &str = "etc/ssh/ssh_host_ed25519_key";
const DEPLOY: &str = "root/.ssh/deploy_key_ed25519";
const MAX: usize = 16 * 1024;

fn skip(test: &str, why: &str) -> bool {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: required but cannot run: {why}");
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
    true
}

fn not_root(test: &str) -> bool {
    rustix::process::geteuid().as_raw() != 0 && skip(test, "needs root (sets owners)")
}

struct Fx {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    tgt: PathBuf,
    run: PathBuf,
    stage: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fx {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    let (src, tgt, run, outside) = (
        base.join("src"),
        base.join("tgt"),
        base.join("run"),
        base.join("outside"),
    );
    for d in [&src, &tgt, &run, &outside] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // What an attacker would like to overwrite or read, shaped like a target.
    fs::create_dir_all(outside.join("etc/ssh")).unwrap();
    fs::create_dir_all(outside.join(".ssh")).unwrap();
    fs::write(outside.join("sentinel"), "sentinel: must never change\n").unwrap();
    fs::write(
        outside.join("etc/ssh").join("ssh_host_ed25519_key"),
        "OUTSIDE SECRET\n",
    )
    .unwrap();
    let stage = run.join("keypack");
    Fx {
        _tmp: tmp,
        src,
        tgt,
        run,
        stage,
        outside,
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The public key blob of the fake key `label` (a well-formed ed25519 blob, derived from it).
fn pub_blob(label: &str) -> Vec<u8> {
    let pk: Vec<u8> = (0..32u8)
        .map(|i| label.as_bytes()[i as usize % label.len()] ^ i)
        .collect();
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-ed25519");
    ssh_string(&mut blob, &pk);
    blob
}

/// A well-formed unencrypted openssh-key-v1 ed25519 private key whose public half is `blob`
/// (the secret half is not real: load-keys checks structure and consistency, not the curve).
fn private_for(blob: &[u8], comment: &str) -> String {
    let pk = &blob[blob.len() - 32..];
    let mut sk = vec![0x5a; 32];
    sk.extend_from_slice(pk);
    let mut private = Vec::new();
    private.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    private.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    ssh_string(&mut private, b"ssh-ed25519");
    ssh_string(&mut private, pk);
    ssh_string(&mut private, &sk);
    ssh_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut raw = b"openssh-key-v1\0".to_vec();
    ssh_string(&mut raw, b"none");
    ssh_string(&mut raw, b"none");
    ssh_string(&mut raw, b"");
    raw.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut raw, blob);
    ssh_string(&mut raw, &private);
    let text = b64(&raw);
    let mut out = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in text.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    out
}

fn key(label: &str, public: bool) -> String {
    if public {
        format!("ssh-ed25519 {} {label}\n", b64(&pub_blob(label)))
    } else {
        private_for(&pub_blob(label), label)
    }
}

fn put(root: &Path, rel: &str, body: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    // A hostile archive's modes: world-writable, to prove they are not kept.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn inject_pair(src: &Path, rel: &str, label: &str) {
    put(src, rel, &key(label, false), 0o666);
    put(src, &format!("{rel}.pub"), &key(label, true), 0o666);
}

fn user_rel(u: &str) -> String {
    format!("users/{u}/.ssh/id_ed25519")
}

/// Everything under `dir`, without following symlinks: path → (kind, mode, uid, contents).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let (kind, body) = if ft.is_symlink() {
            (
                "link",
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", fs::read(&p).unwrap())
        } else {
            ("other", Vec::new())
        };
        out.insert(p, (kind.to_owned(), md.mode(), md.uid(), body));
    }
    out
}

fn stage1(fx: &Fx, extra: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--stage-dir")
        .arg(&fx.stage)
        .arg(&fx.src)
        .arg(&fx.tgt);
    cmd.args(extra);
    cmd.output().expect("run load-keys")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_file(path: &Path, body: &str, mode: u32, uid: u32) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        md.file_type().is_file(),
        "{} not a regular file",
        path.display()
    );
    assert_eq!(md.mode() & 0o7777, mode, "{} mode", path.display());
    assert_eq!(md.uid(), uid, "{} owner", path.display());
    assert_eq!(
        fs::read_to_string(path).unwrap(),
        body,
        "{}",
        path.display()
    );
}

fn assert_dir(path: &Path, mode: u32, uid: u32) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        md.file_type().is_dir(),
        "{} not a directory",
        path.display()
    );
    assert_eq!(md.mode() & 0o7777, mode, "{} mode", path.display());
    assert_eq!(md.uid(), uid, "{} owner", path.display());
}

/// No stray temp files anywhere under `dir`.
fn assert_no_temp_files(dir: &Path) {
    for (p, _) in snapshot(dir) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(".load-keys-"),
            "temp file left: {}",
            p.display()
        );
    }
}

fn write_passwd(fx: &Fx, users: &[(&str, u32, u32)]) -> PathBuf {
    let mut text = String::from("root:x:0:0:root:/root:/bin/sh\n");
    for (u, uid, gid) in users {
        text.push_str(&format!("{u}:x:{uid}:{gid}::/home/{u}:/bin/sh\n"));
        let home = fx.tgt.join("home").join(u);
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(*uid), Some(*gid)).unwrap();
    }
    let passwd = fx.tgt.join("etc/passwd");
    fs::create_dir_all(passwd.parent().unwrap()).unwrap();
    fs::write(&passwd, text).unwrap();
    passwd
}

fn stage2(fx: &Fx) -> Output {
    Command::new(BIN)
        .arg("--install-users")
        .arg("--stage-dir")
        .arg(&fx.stage)
        .arg("--root")
        .arg(&fx.tgt)
        .output()
        .expect("run load-keys --install-users")
}

#[test]
fn happy_path_host_deploy_and_two_users() {
    if not_root("happy_path_host_deploy_and_two_users") {
        return;
    }
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    inject_pair(&fx.src, DEPLOY, "deploy");
    inject_pair(&fx.src, &user_rel("alice"), "alice");
    inject_pair(&fx.src, &user_rel("bob"), "bob");
    inject_pair(&fx.src, &user_rel("carol"), "carol"); // not in passwd: skipped in stage 2
    // Unknown names next to known ones are never copied.
    put(&fx.src, "etc/ssh/ssh_host_rsa_key", "rsa", 0o600);
    put(&fx.src, "users/alice/.ssh/authorized_keys", "x", 0o600);
    let outside = snapshot(&fx.outside);
    let source = snapshot(&fx.src);

    let out = stage1(&fx, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&HEADER));
    assert_eq!(lines.get(1), Some(&FOUND));
    assert_eq!(lines.last(), Some(&FOOTER));
    assert!(
        stdout.contains("copied /etc/ssh/ssh_host_ed25519_key ->"),
        "{stdout}"
    );
    assert!(
        stdout.contains("staged /users/bob/.ssh/id_ed25519 ->"),
        "{stdout}"
    );

    assert_dir(&fx.tgt.join("etc"), 0o755, 0);
    assert_dir(&fx.tgt.join("etc/ssh"), 0o755, 0);
    assert_file(&fx.tgt.join(HOST), &key("host", false), 0o600, 0);
    assert_file(
        &fx.tgt.join(format!("{HOST}.pub")),
        &key("host", true),
        0o644,
        0,
    );
    assert_dir(&fx.tgt.join("root"), 0o700, 0);
    assert_dir(&fx.tgt.join("root/.ssh"), 0o700, 0);
    assert_file(&fx.tgt.join(DEPLOY), &key("deploy", false), 0o600, 0);
    assert_file(
        &fx.tgt.join(format!("{DEPLOY}.pub")),
        &key("deploy", true),
        0o644,
        0,
    );
    assert!(!fx.tgt.join("etc/ssh/ssh_host_rsa_key").exists());
    assert!(
        !fx.tgt.join("users").exists(),
        "user keys must not land in the target"
    );
    assert_dir(&fx.stage, 0o700, 0);
    assert_dir(&fx.stage.join("users"), 0o700, 0);
    for u in ["alice", "bob", "carol"] {
        assert_dir(&fx.stage.join("users").join(u), 0o700, 0);
        let staged = fx.stage.join("users").join(u).join("id_ed25519");
        assert_file(&staged, &key(u, false), 0o600, 0);
        assert_file(&staged.with_extension("pub"), &key(u, true), 0o644, 0);
    }
    assert!(!fx.stage.join("users/alice/authorized_keys").exists());
    assert_no_temp_files(&fx.tgt);
    assert_no_temp_files(&fx.run);

    // Stage 2: alice and bob exist, carol does not.
    write_passwd(&fx, &[("alice", 1000, 100), ("bob", 1001, 101)]);
    let out = stage2(&fx);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("=== Stage 2: Installing staged user SSH keys ===\n"));
    assert!(
        stdout
            .trim_end()
            .ends_with("=== Stage 2: User key installation complete ===")
    );
    assert!(
        stderr.contains("skipping staged keys for user carol: no such user"),
        "{stderr}"
    );
    for (u, uid, gid) in [("alice", 1000, 100), ("bob", 1001, 101)] {
        let ssh = fx.tgt.join("home").join(u).join(".ssh");
        assert_dir(&ssh, 0o700, uid);
        assert_eq!(fs::metadata(&ssh).unwrap().gid(), gid);
        assert_file(&ssh.join("id_ed25519"), &key(u, false), 0o600, uid);
        assert_file(&ssh.join("id_ed25519.pub"), &key(u, true), 0o644, uid);
        assert_eq!(fs::metadata(ssh.join("id_ed25519")).unwrap().gid(), gid);
        assert!(stdout.contains(&format!("installed {}", ssh.join("id_ed25519").display())));
    }
    assert!(!fx.tgt.join("home/carol").exists());
    assert_no_temp_files(&fx.tgt);

    // Running both stages again is harmless and gives the same result.
    assert!(stage1(&fx, &[]).status.success());
    assert!(stage2(&fx).status.success());
    assert_file(&fx.tgt.join(HOST), &key("host", false), 0o600, 0);
    assert_file(
        &fx.tgt.join("home/bob/.ssh/id_ed25519"),
        &key("bob", false),
        0o600,
        1001,
    );
    assert_no_temp_files(&fx.tgt);

    assert_eq!(snapshot(&fx.outside), outside, "outside/ changed");
    assert_eq!(snapshot(&fx.src), source, "source changed");
}

#[test]
fn nothing_injected_prints_the_seed_lines_and_exits_zero() {
    if not_root("nothing_injected_prints_the_seed_lines_and_exits_zero") {
        return;
    }
    let fx = fixture();
    // An ordinary initrd: folders, but none of the known files.
    fs::create_dir_all(fx.src.join("etc/ssh")).unwrap();
    put(&fx.src, "etc/ssh/sshd_config", "x", 0o644);
    let out = stage1(&fx, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, format!("{HEADER}\n{NOT_FOUND}\n{FOOTER}\n"));
    assert_eq!(stderr, "");
    assert_eq!(fs::read_dir(&fx.tgt).unwrap().count(), 0, "target touched");
    assert!(!fx.stage.exists(), "stage folder created for nothing");

    // Stage 2 with nothing staged is quiet and successful too.
    let out = stage2(&fx);
    assert!(out.status.success());
    assert!(text(&out).0.contains("No staged user keys"));
}

#[test]
fn symlinks_planted_in_the_source_are_refused() {
    if not_root("symlinks_planted_in_the_source_are_refused") {
        return;
    }
    // Each case: what to plant in the source (relative path → symlink target in outside/).
    let cases: &[(&str, &str, &str)] = &[
        ("etc", "etc", HOST),
        ("etc/ssh", "etc/ssh", HOST),
        (
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key",
            HOST,
        ),
        ("root/.ssh", ".ssh", DEPLOY),
        ("users/alice", ".", "users/alice"),
        ("users/alice/.ssh", ".ssh", "users/alice"),
    ];
    for (plant, points_to, what) in cases {
        let fx = fixture();
        fs::write(
            fx.outside.join(".ssh/deploy_key_ed25519"),
            "OUTSIDE SECRET\n",
        )
        .unwrap();
        fs::write(fx.outside.join(".ssh/id_ed25519"), "OUTSIDE SECRET\n").unwrap();
        fs::create_dir_all(fx.outside.join(".ssh/.ssh")).unwrap();
        fs::write(fx.outside.join(".ssh/.ssh/id_ed25519"), "OUTSIDE SECRET\n").unwrap();
        // A good key elsewhere still gets through.
        inject_pair(&fx.src, &user_rel("bob"), "bob");
        let link = fx.src.join(plant);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(fx.outside.join(points_to), &link).unwrap();
        let outside = snapshot(&fx.outside);

        let out = stage1(&fx, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{plant}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("is a symbolic link, refusing to follow it")
                && stderr.contains(&format!("src/{plant}")),
            "{plant}: no clear line: {stderr}"
        );
        assert!(stdout.contains(FOOTER), "{plant}");
        for (p, (kind, _, _, body)) in snapshot(&fx.tgt).into_iter().chain(snapshot(&fx.run)) {
            assert!(
                kind != "file" || !String::from_utf8_lossy(&body).contains("OUTSIDE"),
                "{plant}: outside content copied to {} ({what})",
                p.display()
            );
        }
        assert_file(
            &fx.stage.join("users/bob/id_ed25519"),
            &key("bob", false),
            0o600,
            0,
        );
        assert_eq!(snapshot(&fx.outside), outside, "{plant}: outside/ changed");
    }
}

#[test]
fn symlinks_planted_in_the_target_are_never_followed() {
    if not_root("symlinks_planted_in_the_target_are_never_followed") {
        return;
    }
    // Folders that are symlinks: refused with a clear line.
    for (plant, points_to) in [
        ("etc", "etc"),
        ("etc/ssh", "etc/ssh"),
        ("root/.ssh", ".ssh"),
        ("root", "."),
    ] {
        let fx = fixture();
        inject_pair(&fx.src, HOST, "host");
        inject_pair(&fx.src, DEPLOY, "deploy");
        let link = fx.tgt.join(plant);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(fx.outside.join(points_to), &link).unwrap();
        let outside = snapshot(&fx.outside);
        let out = stage1(&fx, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{plant}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("tgt/{plant}: is a symbolic link")),
            "{plant}: no clear line: {stderr}"
        );
        assert_eq!(snapshot(&fx.outside), outside, "{plant}: outside/ changed");
    }

    // The key file itself (and its temp name) as symlinks: replaced, never written through.
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    fs::create_dir_all(fx.tgt.join("etc/ssh")).unwrap();
    symlink(fx.outside.join("sentinel"), fx.tgt.join(HOST)).unwrap();
    symlink(
        fx.outside.join("sentinel"),
        fx.tgt.join(format!("{HOST}.pub")),
    )
    .unwrap();
    let outside = snapshot(&fx.outside);
    let out = stage1(&fx, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_file(&fx.tgt.join(HOST), &key("host", false), 0o600, 0);
    assert_file(
        &fx.tgt.join(format!("{HOST}.pub")),
        &key("host", true),
        0o644,
        0,
    );
    assert_eq!(
        snapshot(&fx.outside),
        outside,
        "key symlink: outside/ changed"
    );

    // The stage folder as a symlink.
    let fx = fixture();
    inject_pair(&fx.src, &user_rel("alice"), "alice");
    symlink(&fx.outside, &fx.stage).unwrap();
    let outside = snapshot(&fx.outside);
    let out = stage1(&fx, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("run/keypack: is a symbolic link"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&fx.outside),
        outside,
        "stage symlink: outside/ changed"
    );

    // A group-writable etc/ssh not owned by root is not written into.
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    fs::create_dir_all(fx.tgt.join("etc/ssh")).unwrap();
    std::os::unix::fs::chown(fx.tgt.join("etc/ssh"), Some(1000), Some(1000)).unwrap();
    let out = stage1(&fx, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("unsafe ownership or mode"),
        "{:?}",
        text(&out)
    );
    assert!(!fx.tgt.join(HOST).exists());
}

#[test]
fn bad_user_folder_names_are_refused() {
    if not_root("bad_user_folder_names_are_refused") {
        return;
    }
    let fx = fixture();
    inject_pair(&fx.src, &user_rel("good"), "good");
    let long = "a".repeat(65);
    let bad = [
        "..evil",
        "...",
        ".hidden",
        "-rf",
        "a b",
        "back\\slash",
        "new\nline",
        "~root",
        "%2e%2e",
        long.as_str(),
    ];
    for name in bad {
        inject_pair(&fx.src, &user_rel(name), "bad");
    }
    let outside = snapshot(&fx.outside);
    let out = stage1(&fx, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for name in bad {
        assert!(
            stderr.contains(&format!("refusing injected user folder users/{name:?}")),
            "no line for {name:?}: {stderr}"
        );
    }
    let staged: Vec<String> = fs::read_dir(fx.stage.join("users"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(staged, ["good"]);
    assert!(!fx.run.join("users").exists() && !fx.tgt.join("users").exists());
    assert_eq!(snapshot(&fx.outside), outside);

    // Stage 2 applies the same rule to whatever is in the stage folder.
    fs::create_dir_all(fx.stage.join("users/..evil")).unwrap();
    write_passwd(&fx, &[("good", 1000, 100)]);
    let out = stage2(&fx);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("refusing staged folder \"..evil\""),
        "{stderr}"
    );
    assert!(fx.tgt.join("home/good/.ssh/id_ed25519").is_file());
}

#[test]
fn oversized_and_special_files_are_refused() {
    if not_root("oversized_and_special_files_are_refused") {
        return;
    }
    let fx = fixture();
    put(&fx.src, HOST, &"A".repeat(MAX + 1), 0o600);
    put(&fx.src, &format!("{HOST}.pub"), &key("host", true), 0o644);
    put(&fx.src, DEPLOY, &"B".repeat(MAX), 0o600); // at the limit: read, then refused as no key
    fs::create_dir_all(fx.src.join("users/alice/.ssh")).unwrap();
    let fifo = fx.src.join(user_rel("alice"));
    let made = Command::new("mkfifo").arg(&fifo).status();
    fs::create_dir_all(fx.src.join("users/bob/.ssh/id_ed25519")).unwrap(); // a folder, not a file
    let out = stage1(&fx, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{HOST}: {} bytes, larger than the 16384-byte limit",
            MAX + 1
        )),
        "{stderr}"
    );
    assert!(!fx.tgt.join(HOST).exists(), "oversized key copied");
    assert_file(
        &fx.tgt.join(format!("{HOST}.pub")),
        &key("host", true),
        0o644,
        0,
    );
    assert!(
        !stderr.contains(&format!("{DEPLOY}: {MAX} bytes")),
        "a file at the limit is read: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "refusing injected key /{DEPLOY} (and its .pub): not an unencrypted OpenSSH ed25519 private key"
        )),
        "{stderr}"
    );
    assert!(!fx.tgt.join(DEPLOY).exists(), "garbage deploy key copied");
    if made.map(|s| s.success()).unwrap_or(false) {
        assert!(
            stderr.contains("users/alice/.ssh/id_ed25519: is not a regular file"),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("users/bob/.ssh/id_ed25519: is not a regular file"),
        "{stderr}"
    );
    assert!(!fx.stage.join("users/alice/id_ed25519").exists());
}

#[test]
fn unwritable_targets_fail_loudly_without_writing_elsewhere() {
    if not_root("unwritable_targets_fail_loudly_without_writing_elsewhere") {
        return;
    }
    // 1. The target root is a regular file.
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    let file_target = fx.run.join("not-a-dir");
    fs::write(&file_target, "x").unwrap();
    let out = Command::new(BIN)
        .arg("--stage-dir")
        .arg(&fx.stage)
        .arg(&fx.src)
        .arg(&file_target)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot open the target root"), "{stderr}");
    assert!(stderr.contains("not-a-dir: is not a directory"), "{stderr}");
    assert!(stdout.ends_with(&format!("{FOOTER}\n")));

    // 2. Parents that cannot be created because files sit in their place (root bypasses
    //    permission bits, so this is the failure every environment can produce).
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    inject_pair(&fx.src, DEPLOY, "deploy");
    fs::write(fx.tgt.join("etc"), "file").unwrap();
    fs::create_dir(fx.tgt.join("root")).unwrap();
    fs::write(fx.tgt.join("root/.ssh"), "file").unwrap();
    let out = stage1(&fx, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("tgt/etc: is not a directory"), "{stderr}");
    assert!(
        stderr.contains("tgt/root/.ssh: is not a directory"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(fx.tgt.join("etc")).unwrap(), "file");
}

/// A genuinely read-only file system (EROFS), which stops root too: a read-only tmpfs mounted
/// directly (needs CAP_SYS_ADMIN) or inside `unshare --user --map-root-user --mount`.
#[test]
fn read_only_target_file_system() {
    const NAME: &str = "read_only_target_file_system";
    if not_root(NAME) {
        return;
    }
    let fx = fixture();
    inject_pair(&fx.src, HOST, "host");
    let ro = fx.run.join("ro");
    fs::create_dir(&ro).unwrap();
    let outside = snapshot(&fx.outside);
    let direct = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "keypack-ro"])
        .arg(&ro)
        .output();
    let out = if direct.map(|o| o.status.success()).unwrap_or(false) {
        let out = Command::new(BIN)
            .arg("--stage-dir")
            .arg(&fx.stage)
            .arg(&fx.src)
            .arg(&ro)
            .output()
            .unwrap();
        let _ = Command::new("umount").arg(&ro).status();
        out
    } else {
        let script = r#"mount -t tmpfs -o ro,size=64k keypack-ro "$1" && exec "$2" --stage-dir "$3" "$4" "$1""#;
        let out = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&ro)
            .arg(BIN)
            .arg(&fx.stage)
            .arg(&fx.src)
            .output();
        match out {
            Ok(o) if String::from_utf8_lossy(&o.stdout).contains(HEADER) => o,
            _ => {
                skip(
                    NAME,
                    "cannot mount a read-only tmpfs (no CAP_SYS_ADMIN, no user namespaces)",
                );
                return;
            }
        }
    };
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(
        stderr.contains("not copied /etc/ssh/ssh_host_ed25519_key"),
        "{stderr}"
    );
    assert!(stdout.ends_with(&format!("{FOOTER}\n")));
    assert_eq!(
        fs::read_dir(&ro).unwrap().count(),
        0,
        "the mount point itself was written"
    );
    assert_eq!(snapshot(&fx.outside), outside);
}

#[test]
fn stage2_never_follows_symlinks_in_homes() {
    if not_root("stage2_never_follows_symlinks_in_homes") {
        return;
    }
    let fx = fixture();
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        inject_pair(&fx.src, &user_rel(u), u);
    }
    assert!(stage1(&fx, &[]).status.success());
    write_passwd(
        &fx,
        &[
            ("alice", 1000, 100),
            ("bob", 1001, 100),
            ("carol", 1002, 100),
            ("dave", 1003, 100),
            ("erin", 1004, 100),
        ],
    );
    let home = fx.tgt.join("home");
    // alice: ~/.ssh is a symlink to a folder outside.
    symlink(fx.outside.join(".ssh"), home.join("alice/.ssh")).unwrap();
    // bob: the home folder itself is a symlink.
    fs::remove_dir(home.join("bob")).unwrap();
    symlink(&fx.outside, home.join("bob")).unwrap();
    // carol: the key file is a symlink and the public key a hard link to files outside.
    fs::create_dir(home.join("carol/.ssh")).unwrap();
    symlink(
        fx.outside.join("sentinel"),
        home.join("carol/.ssh/id_ed25519"),
    )
    .unwrap();
    fs::hard_link(
        fx.outside.join("etc/ssh/ssh_host_ed25519_key"),
        home.join("carol/.ssh/id_ed25519.pub"),
    )
    .unwrap();
    // dave: his home belongs to someone else.
    std::os::unix::fs::chown(home.join("dave"), Some(0), Some(0)).unwrap();
    // erin: ~/.ssh exists root-owned and 0755: taken over with the right owner and mode.
    fs::create_dir(home.join("erin/.ssh")).unwrap();
    let outside = snapshot(&fx.outside);

    let out = stage2(&fx);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("home/alice/.ssh: is a symbolic link"),
        "{stderr}"
    );
    assert!(stderr.contains("home/bob: is a symbolic link"), "{stderr}");
    assert!(
        stderr.contains("keys for user dave not installed"),
        "{stderr}"
    );
    assert_file(
        &home.join("carol/.ssh/id_ed25519"),
        &key("carol", false),
        0o600,
        1002,
    );
    assert_file(
        &home.join("carol/.ssh/id_ed25519.pub"),
        &key("carol", true),
        0o644,
        1002,
    );
    assert_dir(&home.join("erin/.ssh"), 0o700, 1004);
    assert_file(
        &home.join("erin/.ssh/id_ed25519"),
        &key("erin", false),
        0o600,
        1004,
    );
    assert!(!home.join("dave/.ssh").exists());
    assert_eq!(snapshot(&fx.outside), outside, "outside/ changed");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["--bogus"],
        vec!["a", "b", "c"],
        vec!["--install-users", "extra"],
        vec!["--root", "/x", "src"],
        vec!["--stage-dir"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out).1.contains("usage: load-keys"), "{args:?}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
}
