//! `keypack build` with the Ventoy medium, end to end on the binary: a real (throwaway) keys
//! repository, synthetic Ventoy release files, a fake ISO. Also `rebuild`, the keys-only
//! in-place path, `inspect IMAGE`, `media update --image`, and SIGKILL at random points.

#[path = "cli/common.rs"]
#[allow(dead_code)]
mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn prereqs(test: &str) -> bool {
    if !have_sops(test) {
        return false;
    }
    for t in ["xz", "mkfs.vfat", "mmd", "mcopy", "mtype"] {
        if !have(t) {
            skip(
                test,
                &format!("{t} is not installed (xz-utils, dosfstools, mtools)"),
            );
            return false;
        }
    }
    true
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Ventoy version of the synthetic release folders unless a test asks for another: the
/// current release.
const VENTOY_VERSION: &str = "1.1.18";

/// A synthetic Ventoy release folder `ventoy-{version}` (the Linux tarball's layout) made with
/// xz, mkfs.vfat and mtools only: `ventoy/version` holds `version` and the disk image's
/// `grub/grub.cfg` sets `VENTOY_VERSION` to `grub_version` (the same in a real release).
fn ventoy_dir(root: &Path, version: &str, grub_version: &str) -> PathBuf {
    let dir = root.join(format!("ventoy-{version}"));
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::create_dir_all(dir.join("ventoy")).unwrap();
    let mut boot = vec![0u8; 512];
    boot[..3].copy_from_slice(&[0xEB, 0x63, 0x90]);
    boot[0x190..0x1A0].copy_from_slice(&[
        0x56, 0x54, 0x00, 0x47, 0x65, 0x00, 0x48, 0x44, 0x00, 0x52, 0x64, 0x00, 0x20, 0x45, 0x72,
        0x0D,
    ]);
    boot[0x1FE] = 0x55;
    boot[0x1FF] = 0xAA;
    std::fs::write(dir.join("boot/boot.img"), &boot).unwrap();
    std::fs::write(dir.join("boot/core.img"), vec![0u8; 2047 * 512]).unwrap();
    sh(Command::new("xz")
        .args(["-1", "-T1"])
        .arg(dir.join("boot/core.img")));
    let efi = dir.join("ventoy/ventoy.disk.img");
    std::fs::File::create(&efi)
        .unwrap()
        .set_len(65536 * 512)
        .unwrap();
    sh(Command::new("mkfs.vfat")
        .args(["-F", "16", "-s", "1", "-n", "VTOYEFI", "--invariant"])
        .arg(&efi));
    let i = efi.to_str().unwrap();
    for d in ["ventoy", "grub"] {
        sh(Command::new("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", i, &format!("::/{d}")]));
    }
    let src = root.join("cfg");
    std::fs::write(&src, format!("set VENTOY_VERSION=\"{grub_version}\"\n")).unwrap();
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", i])
        .arg(&src)
        .arg("::/grub/grub.cfg"));
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", i])
        .arg(&src)
        .arg("::/ventoy/ventoy.cpio"));
    sh(Command::new("xz").args(["-1", "-T1"]).arg(&efi));
    std::fs::write(dir.join("ventoy/version"), format!("{version}\n")).unwrap();
    dir
}

fn fake_iso(path: &Path, len: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x1234_5678;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

struct Setup {
    repo: Repo,
    vdir: PathBuf,
    iso: PathBuf,
    state: PathBuf,
}

impl Setup {
    fn new(iso_len: usize) -> Setup {
        Setup::with_version(iso_len, VENTOY_VERSION)
    }

    fn with_version(iso_len: usize, version: &str) -> Setup {
        let repo = standard_repo();
        let vdir = ventoy_dir(&repo.scratch(), version, version);
        let iso = repo.scratch().join("keypack-nixos.iso");
        fake_iso(&iso, iso_len);
        let state = repo.tmp.path().join("state");
        Setup {
            repo,
            vdir,
            iso,
            state,
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
            "--iso",
            self.iso.to_str().unwrap(),
            "--ventoy-dir",
            self.vdir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut c = self.repo.command(&args);
        c.env("KEYPACK_STATE_DIR", &self.state);
        c
    }

    fn run(&self, verb: &str, extra: &[&str]) -> std::process::Output {
        let out = self.cmd(verb, extra).output().unwrap();
        assert!(out.status.success(), "keypack {verb}: {}", stderr(&out));
        out
    }

    fn image(&self) -> PathBuf {
        self.state.join("web1/ventoy.img")
    }
}

fn mtype(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i",
            &format!("{}@@1M", img.display()),
            &format!("::{path}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Fails if `err` (stderr of a run whose stderr was a pipe) holds anything a progress bar draws:
/// a carriage return, an escape sequence, a byte unit after a number or an ETA. (Units are
/// matched with the space the bar puts before them: a temp path may hold `zB/s` or `MiB`.)
fn assert_no_progress(what: &str, err: &[u8]) {
    let text = String::from_utf8_lossy(err);
    for bar in ["\r", "\x1b", "ETA ", " MiB", " KiB", " B/s", "[=", "=>"] {
        assert!(
            !text.contains(bar),
            "{what}: {bar:?} on stderr that is not a terminal: {text:?}"
        );
    }
}

/// Runs `cmd` (its program, arguments, environment and folder) under `script -qec`, i.e. on a
/// pseudo-terminal, with `TERM=xterm`; returns the exit status and what the terminal showed.
fn under_pty(cmd: &Command) -> (std::process::ExitStatus, String) {
    fn quote(s: &std::ffi::OsStr) -> String {
        format!("'{}'", s.to_str().unwrap().replace('\'', "'\\''"))
    }
    let mut line = quote(cmd.get_program());
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut pty = Command::new("script");
    pty.args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => pty.env(k, v),
            None => pty.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        pty.current_dir(dir);
    }
    let out = pty.output().expect("run script");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// On a terminal (`script`'s pseudo-terminal) `keypack build` shows a bar for the ISO copy:
/// the ISO's name, bytes in MiB, throughput and ETA; no key file name is on it. With stderr a
/// pipe (the other tests) nothing of it is printed.
#[test]
fn build_on_a_terminal_shows_a_progress_bar_for_the_iso_copy() {
    let test = "build_on_a_terminal_shows_a_progress_bar_for_the_iso_copy";
    if !prereqs(test) {
        return;
    }
    if !have("script") {
        skip(test, "script is not installed (util-linux)");
        return;
    }
    let s = Setup::new(24 << 20);
    let (status, shown) = under_pty(&s.cmd("build", &["-U", "alice", "--seed", "1"]));
    assert!(status.success(), "keypack build on a terminal: {shown}");
    for want in ["copying keypack-nixos.iso [", "/24.00 MiB", "B/s", "ETA"] {
        assert!(
            shown.contains(want),
            "{want:?} not on the terminal: {shown:?}"
        );
    }
    // The bar's lines (between carriage returns, newlines and escapes) name no key file.
    let bar_lines: Vec<&str> = shown
        .split(['\r', '\n', '\x1b'])
        .filter(|l| l.contains("ETA"))
        .collect();
    assert!(!bar_lines.is_empty());
    for l in &bar_lines {
        assert!(l.contains("copying keypack-nixos.iso"), "{l:?}");
        for secret in [
            "ssh_host",
            "id_ed25519",
            "deploy_key",
            "keys.tar.gz",
            "alice",
        ] {
            assert!(!l.contains(secret), "{secret} on the bar: {l:?}");
        }
    }
    // Erased when done (`\r` and erase-line): `built …` starts at the line's beginning.
    assert!(shown.contains("\r\x1b[2Kbuilt "), "{shown:?}");
    // The exFAT data partition's copy, and `media update --image`'s, show the same bar.
    let (status, shown) = under_pty(&s.cmd("rebuild", &["-U", "alice", "--seed", "1", "--exfat"]));
    assert!(
        status.success(),
        "keypack rebuild --exfat on a terminal: {shown}"
    );
    assert!(shown.contains("copying keypack-nixos.iso ["), "{shown:?}");
    assert!(shown.contains("/24.00 MiB"), "{shown:?}");
    let img = s.image();
    s.run("rebuild", &["-U", "alice", "--seed", "1"]);
    let root = s.repo.root();
    let update = s.repo.command(&[
        "media",
        "update",
        "--image",
        img.to_str().unwrap(),
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
        "-i",
        AGE_KEY,
        "--iso",
        s.iso.to_str().unwrap(),
    ]);
    let (status, shown) = under_pty(&update);
    assert!(
        status.success(),
        "keypack media update on a terminal: {shown}"
    );
    assert!(shown.contains("copying keypack-nixos.iso ["), "{shown:?}");
    let mut update = update;
    let out = update.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_progress("keypack media update", &out.stderr);
    // A full build again (`rebuild`: no keys-only shortcut) with stderr a pipe: no bar.
    let out = s
        .cmd("rebuild", &["-U", "alice", "--seed", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_progress("keypack build", &out.stderr);
}

#[test]
fn build_writes_image_and_boot_json_and_inspect_shows_fingerprints() {
    if !prereqs("build_writes_image_and_boot_json_and_inspect_shows_fingerprints") {
        return;
    }
    let s = Setup::new(2 << 20);
    let out = s.run("build", &["-U", "alice", "--seed", "1"]);
    assert_no_progress("keypack build", &out.stderr);
    let img = s.image();
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(s.state.join("web1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // boot.json for the runner.
    let desc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state.join("web1/boot.json")).unwrap()).unwrap();
    assert_eq!(desc["medium"], "ventoy");
    assert_eq!(desc["host"], "web1");
    assert_eq!(desc["boot"]["kind"], "disk");
    assert_eq!(desc["boot"]["image"], img.to_str().unwrap());
    let host_pub: Vec<&str> = s.repo.host.public.split_whitespace().take(2).collect();
    assert!(
        desc["host_public_key"]
            .as_str()
            .unwrap()
            .starts_with(&host_pub.join(" "))
    );
    // The ISO is byte-identical on the image; the bundle equals `keypack pack`'s.
    assert!(mtype(&img, "/keypack-nixos.iso") == std::fs::read(&s.iso).unwrap());
    let packed = s
        .repo
        .run("pack", &["-H", "web1", "-U", "alice", "-o", "-"]);
    assert!(packed.status.success());
    assert!(
        mtype(&img, "/keys.tar.gz") == packed.stdout,
        "bundle on the image differs from keypack pack"
    );
    // inspect IMAGE: layout, version, injection, fingerprints; no key material.
    let out = s.repo.keypack(&["inspect", img.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("Ventoy disk, Mbr"), "{text}");
    assert!(text.contains("start       2048"), "{text}");
    assert!(
        text.contains(&format!("Ventoy version: {VENTOY_VERSION}")),
        "{text}"
    );
    assert!(
        text.contains("injection: /keypack-nixos.iso <- /keys.tar.gz"),
        "{text}"
    );
    assert!(text.contains("etc/ssh/ssh_host_ed25519_key"), "{text}");
    assert!(text.contains("users/alice/.ssh/id_ed25519"), "{text}");
    assert!(
        text.contains(&fingerprint(&s.repo.host.public, &s.repo.scratch())),
        "{text}"
    );
    assert!(text.contains("problems: none"), "{text}");
    for secret in [&s.repo.host.private, &s.repo.alice.private] {
        let body: String = secret.lines().nth(1).unwrap().to_string();
        assert!(!text.contains(&body), "inspect printed key material");
    }
    // plugins lists the medium.
    let out = s.repo.keypack(&["plugins"]);
    assert!(stdout(&out).contains("ventoy") && stdout(&out).contains("Ventoy disk image"));
    assert!(stdout(&out).contains("runners") && stdout(&out).contains("qemu"));
}

/// The previous release, 1.1.17 (the current one, 1.1.18, is the default of every other test):
/// a `ventoy-1.1.17/` folder builds, `inspect` reports 1.1.17, and the image carries that
/// folder's disk image.
#[test]
fn build_and_inspect_with_ventoy_1_1_17() {
    let test = "build_and_inspect_with_ventoy_1_1_17";
    if !prereqs(test) {
        return;
    }
    let s = Setup::with_version(1 << 20, "1.1.17");
    assert!(s.vdir.ends_with("ventoy-1.1.17"));
    s.run("build", &["--seed", "2"]);
    let img = s.image();
    let out = s.repo.keypack(&["inspect", img.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("Ventoy version: 1.1.17"), "{text}");
    assert!(text.contains("problems: none"), "{text}");
}

/// `keypack build` refuses a release folder that mixes two releases (ventoy/version 1.1.18,
/// disk image 1.1.17), naming both, and one older than 1.0.16; neither leaves an image.
#[test]
fn build_refuses_a_mixed_or_too_old_release_folder() {
    let test = "build_refuses_a_mixed_or_too_old_release_folder";
    if !prereqs(test) {
        return;
    }
    let mut s = Setup::new(1 << 16);
    for (version, grub, wanted) in [
        (
            "1.1.18",
            "1.1.17",
            &["1.1.17", "1.1.18", "two Ventoy releases"][..],
        ),
        (
            "1.0.15",
            "1.0.15",
            &["Ventoy 1.0.15 is older than 1.0.16", "injection"][..],
        ),
    ] {
        s.vdir = ventoy_dir(&s.repo.scratch().join(format!("bad-{grub}")), version, grub);
        let out = s.cmd("build", &[]).output().unwrap();
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "{version}/{grub} was accepted: {err}"
        );
        for w in wanted {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
        assert!(!s.image().exists(), "an image after a refused build");
    }
}

#[test]
fn keys_only_rebuild_switches_the_bundle_in_place_and_rebuild_does_not() {
    if !prereqs("keys_only_rebuild_switches_the_bundle_in_place_and_rebuild_does_not") {
        return;
    }
    let s = Setup::new(4 << 20);
    s.run("build", &["--seed", "3"]);
    let ino1 = std::fs::metadata(s.image()).unwrap().ino();
    s.run("build", &["-U", "alice", "-U", "bob", "--seed", "3"]);
    let ino2 = std::fs::metadata(s.image()).unwrap().ino();
    assert_eq!(ino1, ino2, "keys-only build must update the image in place");
    let packed = s.repo.run(
        "pack",
        &["-H", "web1", "-U", "alice", "-U", "bob", "-o", "-"],
    );
    assert!(mtype(&s.image(), "/keys.tar.gz") == packed.stdout);
    assert!(mtype(&s.image(), "/keypack-nixos.iso") == std::fs::read(&s.iso).unwrap());
    let out = s.repo.keypack(&["inspect", s.image().to_str().unwrap()]);
    assert!(
        out.status.success() && stdout(&out).contains("users/bob/.ssh/id_ed25519"),
        "{}",
        stdout(&out)
    );
    // fsck.fat finds the switched filesystem clean.
    if have("fsck.fat") {
        let part = s.repo.scratch().join("p1");
        let img = std::fs::read(s.image()).unwrap();
        let start = u32::from_le_bytes(img[0x1C6..0x1CA].try_into().unwrap()) as usize * 512;
        let len = u32::from_le_bytes(img[0x1CA..0x1CE].try_into().unwrap()) as usize * 512;
        std::fs::write(&part, &img[start..start + len]).unwrap();
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // rebuild ignores the cache: a new file.
    s.run("rebuild", &["-U", "alice", "-U", "bob", "--seed", "3"]);
    assert_ne!(std::fs::metadata(s.image()).unwrap().ino(), ino2);
}

/// Runs `keypack ARGS`, SIGKILLs it after `delay`, and waits.
fn kill_after(mut cmd: Command, delay: Duration) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
fn killed_builds_leave_the_old_image_or_the_new_one() {
    if !prereqs("killed_builds_leave_the_old_image_or_the_new_one") {
        return;
    }
    let s = Setup::new(24 << 20);
    s.run("build", &["--seed", "5"]);
    let old = std::fs::read(s.image()).unwrap();
    // The expected new image, built elsewhere with the same inputs.
    let reference = s.repo.tmp.path().join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    std::fs::set_permissions(&reference, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ref_img = reference.join("new.img");
    s.run(
        "rebuild",
        &[
            "-U",
            "alice",
            "--seed",
            "5",
            "-o",
            ref_img.to_str().unwrap(),
        ],
    );
    let new = std::fs::read(&ref_img).unwrap();
    assert_ne!(old, new);
    // Timings spread over the whole run; a pseudo-random order.
    let t = std::time::Instant::now();
    s.run("rebuild", &["--seed", "5"]);
    let full = t.elapsed().as_millis() as u64;
    let mut x = std::process::id() as u64 | 1;
    let mut outcomes = (0, 0);
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(x % (full + 50));
        // Start from the old image each time.
        s.run("rebuild", &["--seed", "5"]);
        kill_after(s.cmd("rebuild", &["-U", "alice", "--seed", "5"]), delay);
        let now = std::fs::read(s.image()).expect("the image must still exist");
        if now == old {
            outcomes.0 += 1;
        } else if now == new {
            outcomes.1 += 1;
        } else {
            panic!("after SIGKILL at {delay:?} the image is neither the old nor the new one");
        }
    }
    eprintln!(
        "killed full builds: {} left the old image, {} the new one",
        outcomes.0, outcomes.1
    );

    // Keys-only rebuilds killed at random points: the bundle is the old or the new one.
    s.run("rebuild", &["--seed", "5"]);
    let old_bundle = mtype(&s.image(), "/keys.tar.gz");
    let new_bundle = s
        .repo
        .run("pack", &["-H", "web1", "-U", "alice", "-o", "-"])
        .stdout;
    for i in 0..6 {
        kill_after(
            s.cmd("build", &["-U", "alice", "--seed", "5"]),
            Duration::from_millis(i * 15),
        );
        let b = mtype(&s.image(), "/keys.tar.gz");
        assert!(
            b == old_bundle || b == new_bundle,
            "mixed bundle after a killed keys-only build"
        );
        // Back to the old bundle for the next round (a keys-only build too).
        s.run("build", &["--seed", "5"]);
    }
}

#[test]
fn media_update_image_merges_json_and_refuses_a_non_ventoy_disk() {
    if !prereqs("media_update_image_merges_json_and_refuses_a_non_ventoy_disk") {
        return;
    }
    let s = Setup::new(1 << 20);
    s.run("build", &["--seed", "2", "--menu-timeout", "7"]);
    let img = s.image();
    // Put a user's ventoy.json on the image.
    let user = br#"{"theme":{"file":"/t.txt"},"menu_alias":[{"image":"/a.iso","alias":"A"}],"control":[{"VTOY_MENU_TIMEOUT":"10"}],"injection":[{"image":"/other.iso","archive":"/o.tar.gz"}],"injection_uefi":[]}"#;
    let src = s.repo.scratch().join("user.json");
    std::fs::write(&src, user).unwrap();
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-i", &format!("{}@@1M", img.display())])
        .arg(&src)
        .arg("::/ventoy/ventoy.json"));
    let before = std::fs::read(&img).unwrap();
    let new_iso = s.repo.scratch().join("new.iso");
    fake_iso(&new_iso, 3 << 20);
    let root = s.repo.root();
    let out = s
        .repo
        .command(&[
            "media",
            "update",
            "--image",
            img.to_str().unwrap(),
            "-H",
            "web1",
            "-U",
            "bob",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "--iso",
            new_iso.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("injection_uefi"),
        "warns about per-mode keys: {}",
        stderr(&out)
    );
    let after = std::fs::read(&img).unwrap();
    // Nothing below LBA 2048 or in partition 2 changed.
    assert!(before[..2048 * 512] == after[..2048 * 512]);
    let p2 = u32::from_le_bytes(after[0x1D6..0x1DA].try_into().unwrap()) as usize * 512;
    assert!(before[p2..] == after[p2..]);
    let json: serde_json::Value =
        serde_json::from_slice(&mtype(&img, "/ventoy/ventoy.json")).unwrap();
    assert_eq!(json["theme"]["file"], "/t.txt");
    assert_eq!(json["menu_alias"][0]["alias"], "A");
    let inj = json["injection"].as_array().unwrap();
    assert!(inj.iter().any(|e| e["image"] == "/other.iso"));
    assert!(
        inj.iter()
            .any(|e| e["image"] == "/new.iso" && e["archive"] == "/keys.tar.gz")
    );
    assert!(
        json["control"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["VTOY_MENU_TIMEOUT"] == "10")
    );
    assert!(mtype(&img, "/new.iso") == std::fs::read(&new_iso).unwrap());
    let packed = s.repo.run("pack", &["-H", "web1", "-U", "bob", "-o", "-"]);
    assert!(mtype(&img, "/keys.tar.gz") == packed.stdout);

    // A file that is not a Ventoy disk is refused before anything is decrypted.
    let plain = s.repo.scratch().join("plain.img");
    std::fs::write(&plain, vec![0u8; 40 << 20]).unwrap();
    // `media update --image` refuses a folder others can list before looking at the disk.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.repo.scratch(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let update_plain = || {
        s.repo
            .command(&[
                "media",
                "update",
                "--image",
                plain.to_str().unwrap(),
                "-H",
                "web1",
                "--keys-repo",
                root.to_str().unwrap(),
                "-i",
                AGE_KEY,
                "--iso",
                new_iso.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = update_plain();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("can be listed by other users"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(s.repo.scratch(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = update_plain();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a Ventoy disk"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read(&plain).unwrap().iter().all(|&b| b == 0));
    // A plain folder is not a mounted Ventoy data partition.
    let dir = s.repo.scratch();
    let out = s
        .repo
        .command(&[
            "media",
            "update",
            "--mount",
            dir.to_str().unwrap(),
            "-H",
            "web1",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "--iso",
            new_iso.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a Ventoy disk"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn path_copy_and_build_take_the_iso_from_nix_build() {
    if !prereqs("path_copy_and_build_take_the_iso_from_nix_build") {
        return;
    }
    let s = Setup::new(1 << 20);
    // A stand-in `nix` that "builds" a store path holding iso/<name>.iso and logs its argv.
    let store = s.repo.tmp.path().join("store/abc-nixos-iso");
    std::fs::create_dir_all(store.join("iso")).unwrap();
    let iso = store.join("iso/nixos-keypack.iso");
    std::fs::copy(&s.iso, &iso).unwrap();
    let bin = s.repo.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = s.repo.tmp.path().join("nix.log");
    let nix = bin.join("nix");
    std::fs::write(
        &nix,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'nix (Nix) 2.24.9'; exit 0; }}\necho \"$@\" >> {}\necho {}\n",
            log.display(),
            store.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&nix, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = s
        .repo
        .command(&["path", "--flake", ".#myiso"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), iso.to_str().unwrap());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("build .#myiso --print-out-paths")
    );

    let dest = s.repo.out_dir("copy");
    let out = s
        .repo
        .command(&["copy", dest.to_str().unwrap()])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_progress("keypack copy", &out.stderr);
    assert!(std::fs::read(dest.join("nixos-keypack.iso")).unwrap() == std::fs::read(&iso).unwrap());
    // On a terminal: a bar with the ISO's name and its size.
    if have("script") {
        let pty_dest = s.repo.out_dir("copy-pty");
        let mut cmd = s.repo.command(&["copy", pty_dest.to_str().unwrap()]);
        cmd.env("PATH", &path);
        let (status, shown) = under_pty(&cmd);
        assert!(status.success(), "keypack copy on a terminal: {shown}");
        for want in ["copying nixos-keypack.iso [", "/1.00 MiB", "ETA"] {
            assert!(
                shown.contains(want),
                "{want:?} not on the terminal: {shown:?}"
            );
        }
        assert!(
            std::fs::read(pty_dest.join("nixos-keypack.iso")).unwrap()
                == std::fs::read(&iso).unwrap()
        );
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("build .#iso --print-out-paths")
    );
    let again = s
        .repo
        .command(&["copy", dest.to_str().unwrap()])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(!again.status.success() && stderr(&again).contains("already exists"));

    // build without --iso: the ISO from `nix build`, named as in the store.
    let root = s.repo.root();
    let out = s
        .repo
        .command(&[
            "build",
            "-H",
            "web1",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "--ventoy-dir",
            s.vdir.to_str().unwrap(),
        ])
        .env("PATH", &path)
        .env("KEYPACK_STATE_DIR", &s.state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mtype(&s.image(), "/nixos-keypack.iso") == std::fs::read(&iso).unwrap());
}

/// A loop device over an image file, with its partitions, and what is mounted from it;
/// unmounted and detached on drop (also when an assertion fails).
struct Loop {
    dev: String,
    mounted: Option<PathBuf>,
}

impl Loop {
    /// `losetup -f --show -P`; adds the partition devices with `partx -a` when the kernel's
    /// own scan did not (seen on this kind of VM).
    fn attach(img: &Path) -> Result<Loop, String> {
        let out = Command::new("losetup")
            .args(["-f", "--show", "-P"])
            .arg(img)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup -f failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let l = Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mounted: None,
        };
        for i in 0..50 {
            if Path::new(&l.part(1)).exists() && Path::new(&l.part(2)).exists() {
                return Ok(l);
            }
            if i == 5 {
                let _ = Command::new("partx").args(["-a", &l.dev]).output();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no partition devices for {}", l.dev))
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    fn mount(&mut self, n: u32, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        sh(Command::new("mount").arg(self.part(n)).arg(dir));
        self.mounted = Some(dir.to_path_buf());
    }

    fn umount(&mut self) {
        if let Some(dir) = self.mounted.take() {
            sh(Command::new("umount").arg(&dir));
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(dir) = self.mounted.take() {
            let ok = Command::new("umount")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&dir).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// `debugfs -R "cat PATH"` on an unmounted ext4 device (read-only).
fn debugfs_cat(dev: &str, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}"), dev])
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs cat {path}");
    out.stdout
}

#[test]
fn media_update_mount_replaces_iso_and_bundle_on_a_mounted_stick() {
    let test = "media_update_mount_replaces_iso_and_bundle_on_a_mounted_stick";
    if !prereqs(test) {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        skip(test, "needs root for losetup and mount");
        return;
    }
    for t in [
        "losetup",
        "partx",
        "mount",
        "umount",
        "mkfs.ext4",
        "debugfs",
        "e2fsck",
    ] {
        if !have(t) {
            skip(
                test,
                &format!("{t} is not installed (util-linux, mount, e2fsprogs)"),
            );
            return;
        }
    }
    let fs_list = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs_list.split_whitespace().any(|f| f == "ext4") {
        skip(test, "the kernel cannot mount ext4");
        return;
    }
    let s = Setup::new(1 << 20);
    s.run("build", &["--seed", "4"]);
    let img = s.image();
    let mut lo = match Loop::attach(&img) {
        Ok(l) => l,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    // The kernel here has no vfat driver (and there is no FUSE FAT driver), so the data
    // partition becomes ext4 — which Ventoy also accepts and `--mount` must handle like any
    // filesystem the OS mounted. Partition 1 is reformatted in place; LBA 0–2047 and
    // partition 2 stay as keypack wrote them.
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "Ventoy"])
        .arg(lo.part(1)));
    let mnt = s.repo.tmp.path().join("mnt");
    lo.mount(1, &mnt);
    // A stick that already has our files (stale) and a user's ventoy.json.
    std::fs::write(mnt.join("new.iso"), b"old iso, shorter than the new one").unwrap();
    std::fs::write(mnt.join("keys.tar.gz"), b"old bundle").unwrap();
    std::fs::write(mnt.join("other.iso"), b"the user's own ISO").unwrap();
    std::fs::create_dir_all(mnt.join("ventoy")).unwrap();
    let user = br#"{"theme":{"file":"/t.txt"},"menu_alias":[{"image":"/other.iso","alias":"O"}],"control":[{"VTOY_MENU_TIMEOUT":"10"}],"injection":[{"image":"/other.iso","archive":"/o.tar.gz"},{"image":"/new.iso","archive":"/stale.tar.gz"}]}"#;
    std::fs::write(mnt.join("ventoy/ventoy.json"), user).unwrap();
    lo.umount();
    let raw = std::fs::read(&img).unwrap();
    let p2 = u32::from_le_bytes(raw[0x1D6..0x1DA].try_into().unwrap()) as usize * 512;
    let head_before = raw[..2048 * 512].to_vec();
    let p2_before = raw[p2..].to_vec();
    drop(raw);

    lo.mount(1, &mnt);
    let new_iso = s.repo.scratch().join("new.iso");
    fake_iso(&new_iso, 3 << 20);
    let root = s.repo.root();
    let out = s
        .repo
        .command(&[
            "media",
            "update",
            "--mount",
            mnt.to_str().unwrap(),
            "-H",
            "web1",
            "-U",
            "bob",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "--iso",
            new_iso.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Root can read the disk: the MBR signature was checked too, not only sysfs.
    assert!(!stderr(&out).contains("could not read"), "{}", stderr(&out));
    assert!(stderr(&out).contains("updated"), "{}", stderr(&out));
    lo.umount();

    // From outside, on the unmounted partition.
    let p1 = lo.part(1);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", &p1])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let ls = Command::new("debugfs")
        .args(["-R", "ls -l /", &p1])
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(!ls.contains(".keypack-tmp"), "temp files left: {ls}");
    assert!(debugfs_cat(&p1, "/new.iso") == std::fs::read(&new_iso).unwrap());
    let packed = s.repo.run("pack", &["-H", "web1", "-U", "bob", "-o", "-"]);
    assert!(debugfs_cat(&p1, "/keys.tar.gz") == packed.stdout);
    assert_eq!(debugfs_cat(&p1, "/other.iso"), b"the user's own ISO");
    let json: serde_json::Value =
        serde_json::from_slice(&debugfs_cat(&p1, "/ventoy/ventoy.json")).unwrap();
    assert_eq!(json["theme"]["file"], "/t.txt");
    assert_eq!(json["menu_alias"][0]["alias"], "O");
    let inj = json["injection"].as_array().unwrap();
    assert!(
        inj.iter()
            .any(|e| e["image"] == "/other.iso" && e["archive"] == "/o.tar.gz")
    );
    let ours: Vec<_> = inj.iter().filter(|e| e["image"] == "/new.iso").collect();
    assert_eq!(ours.len(), 1, "{json}");
    assert_eq!(ours[0]["archive"], "/keys.tar.gz");
    assert!(
        json["control"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["VTOY_MENU_TIMEOUT"] == "10"),
        "{json}"
    );
    drop(lo);

    // Nothing below LBA 2048 or in partition 2 changed, and the image still passes the
    // layout checks.
    let raw = std::fs::read(&img).unwrap();
    assert!(raw[..2048 * 512] == head_before[..], "LBA 0-2047 changed");
    assert!(raw[p2..] == p2_before[..], "partition 2 changed");
    let out = s.repo.keypack(&["inspect", img.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("Ventoy disk, Mbr"),
        "{}",
        stdout(&out)
    );
}

/// `--seal passphrase` with the Ventoy medium: the bundle on the data partition holds the
/// `.pub` files and `keypack/sealed.age` only (read back with mtools), `inspect IMAGE` says
/// "sealed (age, scrypt)" with the public fingerprints, `run --dry-run` finds the blob on the
/// image, and `run` with a wrong passphrase is refused before any QEMU starts.
#[test]
fn sealed_build_puts_only_the_pub_files_and_the_blob_on_the_stick() {
    let test = "sealed_build_puts_only_the_pub_files_and_the_blob_on_the_stick";
    if !prereqs(test) {
        return;
    }
    const PASS: &str = "ventoy sealing passphrase";
    let s = Setup::new(2 << 20);
    let mut build = s.cmd("build", &["-U", "alice", "--seal", "passphrase"]);
    let answers = s.repo.scratch().join("answers");
    std::fs::write(&answers, format!("{PASS}\n{PASS}\n")).unwrap();
    build
        .env("KEYPACK_PIN_FD", "0")
        .stdin(std::fs::File::open(&answers).unwrap());
    let out = build.output().unwrap();
    assert!(out.status.success(), "sealed build: {}", stderr(&out));
    let img = s.image();
    let bundle = mtype(&img, "/keys.tar.gz");
    let bundle_file = s.repo.scratch().join("bundle.tar.gz");
    std::fs::write(&bundle_file, &bundle).unwrap();
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&bundle_file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(list.stdout).unwrap(),
        "etc/ssh/ssh_host_ed25519_key.pub\nkeypack/sealed.age\nroot/.ssh/deploy_key_ed25519.pub\nusers/alice/.ssh/id_ed25519.pub\n"
    );
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bundle[..]), &mut plain).unwrap();
    for secret in [
        &s.repo.host.private,
        &s.repo.deploy.private,
        &s.repo.alice.private,
    ] {
        for line in secret.lines() {
            assert!(
                memchr::memmem::find(&plain, line.as_bytes()).is_none(),
                "a private key line on the stick: {line}"
            );
        }
    }
    let out = s.repo.keypack(&["inspect", img.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("sealed (age, scrypt)"), "{text}");
    assert!(
        text.contains(&fingerprint(&s.repo.host.public, &s.repo.scratch())),
        "{text}"
    );
    // run: --dry-run finds the blob on the image; a wrong passphrase starts nothing.
    let mut dry = s
        .repo
        .command(&["run", "-H", "web1", "--dry-run", "--accel", "tcg"]);
    dry.env("KEYPACK_STATE_DIR", &s.state);
    let out = dry.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this build is sealed"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&answers, "not it\n").unwrap();
    let mut run = s
        .repo
        .command(&["run", "-H", "web1", "--accel", "tcg", "--port", "auto"]);
    run.env("KEYPACK_STATE_DIR", &s.state)
        .env("KEYPACK_PIN_FD", "0")
        .stdin(std::fs::File::open(&answers).unwrap());
    let out = run.output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("wrong passphrase") && err.contains("no VM was started"),
        "{err}"
    );
    assert!(!s.state.join("web1/qemu.pid").exists());
    assert!(!s.state.join("web1/run.json").exists());
}

/// `media update --image --seal passphrase` replaces an unsealed bundle on an existing stick
/// with a sealed one (two different entries first: refused, the image unchanged).
#[test]
fn media_update_seals_the_bundle_on_an_existing_image() {
    if !prereqs("media_update_seals_the_bundle_on_an_existing_image") {
        return;
    }
    const PASS: &str = "media update sealing passphrase";
    let s = Setup::new(1 << 20);
    s.run("build", &["--seed", "2"]);
    let img = s.image();
    let root = s.repo.root();
    let update = |answers: &str| {
        let file = s.repo.scratch().join("answers");
        std::fs::write(&file, answers).unwrap();
        s.repo
            .command(&[
                "media",
                "update",
                "--image",
                img.to_str().unwrap(),
                "-H",
                "web1",
                "--keys-repo",
                root.to_str().unwrap(),
                "-i",
                AGE_KEY,
                "--iso",
                s.iso.to_str().unwrap(),
                "--seal",
                "passphrase",
            ])
            .env("KEYPACK_PIN_FD", "0")
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap()
    };
    let before = std::fs::read(&img).unwrap();
    let out = update(&format!("{PASS}\nsomething else\n"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("do not match"), "{}", stderr(&out));
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a mismatch changed the image"
    );
    let out = update(&format!("{PASS}\n{PASS}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let bundle = mtype(&img, "/keys.tar.gz");
    let entries = keypack_bundle::read_archive(&bundle).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"keypack/sealed.age"), "{paths:?}");
    assert!(
        !paths.contains(&"etc/ssh/ssh_host_ed25519_key"),
        "{paths:?}"
    );
    let blob = keypack_bundle::sealed_blob_in_archive(&bundle)
        .unwrap()
        .unwrap();
    keypack_bundle::check_passphrase(&blob, secrecy::SecretString::from(PASS.to_owned()))
        .expect("the passphrase opens the blob on the stick");
}
