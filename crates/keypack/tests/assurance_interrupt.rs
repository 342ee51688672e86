//! Claims "an interrupted or failed write leaves the old artifact or none, and no stray key
//! file survives the next run" and "a full disk gives a clear error and no partial artifact"
//! (SECURITY.md).
//!
//! - SIGKILL: 50 points (xorshift, fixed seed) spread over a full `keypack rebuild` (Ventoy)
//!   and `keypack pack -f`, alternating two key sets, so each kill races a different step. After
//!   each kill the target is byte-identical to one of the two complete artifacts; anything else
//!   in the folder is a `.keypack-tmp-*` file, 0600. After the loop one normal build must remove
//!   every leftover of the state folder, and then only the artifacts hold key bytes.
//! - Disk full (root: a 6 MiB tmpfs mounted for the test): `build` and `pack` fail with
//!   "No space left on device", leave no file, and an existing artifact is untouched.

mod assurance_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use assurance_support::*;

struct Setup {
    repo: Repo,
    env: Isolated,
    vdir: PathBuf,
    iso: PathBuf,
    secrets: Secrets,
}

impl Setup {
    fn new(iso_len: usize) -> Setup {
        let repo = standard_repo();
        let env = Isolated::new(repo.tmp.path().join("env"));
        let vdir = ventoy_dir(&repo.scratch());
        let iso = repo.scratch().join("keypack-nixos.iso");
        fake_iso(&iso, iso_len);
        let secrets = Secrets::from_pems(&repo_keys(&repo));
        Setup {
            repo,
            env,
            vdir,
            iso,
            secrets,
        }
    }

    fn cmd(&self, verb: &str, extra: &[&str]) -> Command {
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
        if verb != "pack" {
            args.extend_from_slice(&[
                "--iso",
                self.iso.to_str().unwrap(),
                "--ventoy-dir",
                self.vdir.to_str().unwrap(),
                "--seed",
                "9",
            ]);
        }
        args.extend_from_slice(extra);
        let path = std::env::var_os("PATH").unwrap_or_default();
        self.env.keypack(&args, &path, false)
    }

    fn ok(&self, verb: &str, extra: &[&str]) -> Output {
        let out = self.cmd(verb, extra).output().unwrap();
        assert!(out.status.success(), "keypack {verb}: {}", stderr(&out));
        out
    }
}

/// Runs `cmd`, SIGKILLs it after `delay` (if still running), waits.
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    !finished
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Files in `dir` other than `expected`: each must be a keypack temp file, 0600. Returns how
/// many of them hold key bytes.
fn check_leftovers(dir: &Path, expected: &[&str], secrets: &Secrets) -> (usize, usize) {
    let mut n = 0;
    let mut with_keys = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if expected.contains(&name.as_str()) {
            continue;
        }
        assert!(
            name.starts_with(".keypack-tmp-"),
            "unexpected file {name} in {}",
            dir.display()
        );
        assert_eq!(mode(&e.path()), 0o600, "leftover {name} is not 0600");
        n += 1;
        if secrets
            .find_deep(&std::fs::read(e.path()).unwrap())
            .is_some()
        {
            with_keys += 1;
        }
    }
    (n, with_keys)
}

#[test]
fn assurance_sigkill_at_50_points_leaves_old_or_new_artifact() {
    let test = "assurance_sigkill_at_50_points_leaves_old_or_new_artifact";
    if !ventoy_prereqs(test) {
        return;
    }
    let s = Setup::new(256 << 10);
    let host = s.env.state().join("web1");
    let img = host.join("ventoy.img");
    // The two complete images and bundles the kills race between.
    s.ok("rebuild", &["-U", "bob"]);
    let new = std::fs::read(&img).unwrap();
    let t = Instant::now();
    s.ok("rebuild", &["-U", "alice"]);
    let full_build = t.elapsed();
    let old = std::fs::read(&img).unwrap();
    assert_ne!(old, new);
    let out = s.env.out().join("keys.tar.gz");
    let o = out.to_str().unwrap();
    s.ok("pack", &["-U", "bob", "-o", o]);
    let new_pack = std::fs::read(&out).unwrap();
    let t = Instant::now();
    s.ok("pack", &["-U", "alice", "-f", "-o", o]);
    let full_pack = t.elapsed();
    let old_pack = std::fs::read(&out).unwrap();

    let mut rng = Rng(0x5eed_1234_abcd_0007);
    let (mut killed, mut leftovers, mut leftovers_with_keys) = (0, 0, 0);
    let (mut saw_old, mut saw_new) = (0, 0);
    for i in 0..50 {
        let users = if i % 2 == 0 { "bob" } else { "alice" };
        if i % 5 >= 3 {
            // pack -f -o FILE
            let us = full_pack.as_micros() as u64;
            let delay = Duration::from_micros(rng.next() % (us + us / 5 + 1));
            killed += kill_after(s.cmd("pack", &["-U", users, "-f", "-o", o]), delay) as usize;
            let now = std::fs::read(&out).expect("the bundle must still exist");
            assert!(
                now == old_pack || now == new_pack,
                "kill #{i} at {delay:?}: a mixed bundle"
            );
            let (n, k) = check_leftovers(&s.env.out(), &["keys.tar.gz"], &s.secrets);
            leftovers += n;
            leftovers_with_keys += k;
        } else {
            let us = full_build.as_micros() as u64;
            let delay = Duration::from_micros(rng.next() % (us + us / 5 + 1));
            killed += kill_after(s.cmd("rebuild", &["-U", users]), delay) as usize;
            let now = std::fs::read(&img).expect("the image must still exist");
            if now == old {
                saw_old += 1;
            } else if now == new {
                saw_new += 1;
            } else {
                panic!("kill #{i} at {delay:?}: the image is neither the old nor the new one");
            }
            let (n, k) = check_leftovers(
                &host,
                &["ventoy.img", "boot.json", "ventoy-cache.json"],
                &s.secrets,
            );
            leftovers += n;
            leftovers_with_keys += k;
        }
    }
    eprintln!(
        "{killed}/50 runs killed mid-way (full build {full_build:?}, pack {full_pack:?}); images: \
         {saw_old} old, {saw_new} new; {leftovers} temp files seen after kills, \
         {leftovers_with_keys} of them with key bytes"
    );
    assert!(
        killed >= 20,
        "too few runs were actually interrupted: {killed}"
    );
    // The next normal build removes every leftover in the state folder.
    s.ok("build", &["-U", "alice"]);
    let (n, _) = check_leftovers(
        &host,
        &["ventoy.img", "boot.json", "ventoy-cache.json"],
        &s.secrets,
    );
    assert_eq!(
        n, 0,
        "a build left stale temp files of killed runs in the state folder"
    );
    // Apart from pack's folder (SECURITY.md: `pack -o` does not clean its folder), only the
    // two artifacts hold key bytes.
    let hits = files_with_secrets(s.repo.tmp.path(), &s.secrets);
    for (p, what) in &hits {
        assert!(
            *p == img || *p == out || p.parent() == Some(&s.env.out()),
            "{} holds key bytes ({what}) after the clean-up run",
            p.display()
        );
    }
}

/// Unmounts on drop.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn assurance_disk_full_fails_cleanly_without_partial_artifact() {
    let test = "assurance_disk_full_fails_cleanly_without_partial_artifact";
    if !ventoy_prereqs(test) {
        return;
    }
    if !is_root() {
        skip(test, "mounting a small tmpfs needs root");
        return;
    }
    let s = Setup::new(8 << 20);
    let small = s.repo.tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=6m,mode=0700",
            "keypack-assurance",
        ])
        .arg(&small)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        skip(
            test,
            "mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)",
        );
        return;
    }
    let _mount = Mount(small.clone());

    // The 8 MiB ISO alone does not fit: the write fails part-way (the image is sparse).
    let img = small.join("stick.img");
    let out = s
        .cmd("build", &["-U", "alice", "-o", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a build onto a 6 MiB disk succeeded");
    assert!(
        stderr(&out).contains("No space left on device"),
        "unclear error: {}",
        stderr(&out)
    );
    assert_eq!(
        listing(&small),
        Vec::<String>::new(),
        "a partial artifact or temp file was left"
    );

    // pack -f over an existing bundle on a disk that is then filled up: the old file stays.
    let bundle = small.join("keys.tar.gz");
    s.ok("pack", &["-U", "alice", "-o", bundle.to_str().unwrap()]);
    let old = std::fs::read(&bundle).unwrap();
    let filler = small.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let out = s
        .cmd(
            "pack",
            &[
                "-U",
                "alice",
                "-U",
                "bob",
                "-f",
                "-o",
                bundle.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "pack onto a full disk succeeded");
    assert!(
        stderr(&out).contains("No space left on device"),
        "unclear error: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        old,
        "the old bundle changed"
    );
    assert_eq!(
        listing(&small),
        ["filler", "keys.tar.gz"],
        "a temp file was left"
    );
    // Nothing secret anywhere else in the tree.
    let hits = files_with_secrets(s.repo.tmp.path(), &s.secrets);
    let paths: Vec<&Path> = hits.iter().map(|(p, _)| p.as_path()).collect();
    assert_eq!(paths, [bundle.as_path()], "{hits:?}");
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
