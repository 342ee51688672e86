//! Sealed bundles on the target: a source laid out as the initrd medium's cpio of a sealed
//! bundle (the `.pub` files and `keypack/sealed.age`, made by `keypack-bundle` itself) →
//! `load-keys` with the passphrase from the firmware-config file (`--fw-cfg`), or from given
//! answers through the library (three tries). Wrong passphrase, three wrong tries, a corrupted
//! blob: nothing is installed, the console says so, and the exit status is 1 (the boot goes on).
//! Needs root (stage 1 sets owner root).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keypack_bundle::{BundleBuilder, KeyRole};
use keypack_layout::{SEALED_BLOB_PATH, UserName};
use load_keys::sealed::{Answers, NOT_UNSEALED, Passphrase, PassphraseConfig};
use load_keys::stage1::Stage1;
use secrecy::{SecretSlice, SecretString};
use zeroize::Zeroizing;

const BIN: &str = env!("CARGO_BIN_EXE_load-keys");
const HOST: &str = include_str!("../../bundle/tests/fixtures/host");
const DEPLOY: &str = include_str!("../../bundle/tests/fixtures/deploy");
const ALICE: &str = include_str!("../../bundle/tests/fixtures/alice");
const PASS: &str = "a long sealing passphrase";

fn not_root(test: &str) -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return false;
    }
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: needs root");
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("KEYPACK-SKIPPED: {test}: needs root (sets owners)\n").as_bytes(),
    );
    true
}

struct Fx {
    tmp: tempfile::TempDir,
    src: PathBuf,
    tgt: PathBuf,
    stage: PathBuf,
}

/// A source folder holding a sealed bundle's plaintext files, as the initrd medium's cpio
/// unpacks them.
fn sealed_source() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let (src, tgt) = (tmp.path().join("src"), tmp.path().join("tgt"));
    let stage = tmp.path().join("run/keypack");
    for d in [&src, &tgt, &tmp.path().join("run")] {
        fs::create_dir_all(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut b = BundleBuilder::new();
    let key = |t: &str| SecretSlice::from(t.as_bytes().to_vec());
    b.add_key(KeyRole::Host, key(HOST), None).unwrap();
    b.add_key(KeyRole::Deploy, key(DEPLOY), None).unwrap();
    b.add_key(
        KeyRole::User(UserName::new("alice").unwrap()),
        key(ALICE),
        None,
    )
    .unwrap();
    b.seal_with_passphrase_work_factor(SecretString::from(PASS.to_owned()), 10);
    let bundle = b.seal(0).unwrap();
    let files = bundle
        .expose_files()
        .map(|(e, c)| (e.path.clone(), c.to_vec()))
        .chain(
            bundle
                .extra_files()
                .map(|(e, c)| (e.path.clone(), c.to_vec())),
        );
    for (path, data) in files {
        let p = src.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    assert!(src.join(SEALED_BLOB_PATH).is_file());
    assert!(!src.join("etc/ssh/ssh_host_ed25519_key").exists());
    Fx {
        tmp,
        src,
        tgt,
        stage,
    }
}

impl Fx {
    fn fw_cfg(&self, content: &str) -> PathBuf {
        let p = self.tmp.path().join("fw_cfg_raw");
        fs::write(&p, content).unwrap();
        p
    }
    fn run_bin(&self, fw_cfg: &Path) -> Output {
        let out = Command::new(BIN)
            .arg("--stage-dir")
            .arg(&self.stage)
            .arg("--fw-cfg")
            .arg(fw_cfg)
            .arg(&self.src)
            .arg(&self.tgt)
            .env_clear()
            .output()
            .unwrap();
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn stage1(&self) -> Stage1 {
        Stage1 {
            source: self.src.clone(),
            target: self.tgt.clone(),
            stage_dir: self.stage.clone(),
            passphrase: PassphraseConfig::default(),
        }
    }
    fn installed_nothing(&self) {
        assert!(!self.tgt.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!self.tgt.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(!self.tgt.join("root/.ssh/deploy_key_ed25519").exists());
        assert!(!self.stage.join("users").exists());
    }
    fn installed_everything(&self) {
        let host = self.tgt.join("etc/ssh/ssh_host_ed25519_key");
        assert_eq!(fs::read_to_string(&host).unwrap(), HOST);
        let meta = fs::metadata(&host).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), 0);
        let pubm = fs::metadata(self.tgt.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
        assert_eq!(pubm.mode() & 0o7777, 0o644);
        assert_eq!(
            fs::read_to_string(self.tgt.join("root/.ssh/deploy_key_ed25519")).unwrap(),
            DEPLOY
        );
        assert_eq!(
            fs::read_to_string(self.stage.join("users/alice/id_ed25519")).unwrap(),
            ALICE
        );
    }
}

fn answers(list: &[&str]) -> Answers {
    Answers(
        list.iter()
            .map(|a| Passphrase::from(Zeroizing::new(a.as_bytes().to_vec())))
            .collect(),
    )
}

#[test]
fn the_fw_cfg_passphrase_unseals_and_installs_every_key() {
    if not_root("the_fw_cfg_passphrase_unseals_and_installs_every_key") {
        return;
    }
    let fx = sealed_source();
    let out = fx.run_bin(&fx.fw_cfg(&format!("{PASS}\n")));
    assert!(out.status.success());
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("Found sealed keys (/keypack/sealed.age)"),
        "{console}"
    );
    assert!(
        console.contains("Unsealed 3 private key file(s)"),
        "{console}"
    );
    fx.installed_everything();
    // Nothing printed gives the passphrase away.
    let all = format!("{console}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(PASS));
}

#[test]
fn a_wrong_fw_cfg_passphrase_installs_nothing_and_says_so() {
    if not_root("a_wrong_fw_cfg_passphrase_installs_nothing_and_says_so") {
        return;
    }
    let fx = sealed_source();
    let out = fx.run_bin(&fx.fw_cfg("not the passphrase"));
    assert_eq!(out.status.code(), Some(1));
    let console = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(console.contains(NOT_UNSEALED), "{console}");
    assert!(errors.contains("wrong passphrase"), "{errors}");
    // The firmware config gives one answer: one try only.
    assert!(errors.contains("try 1 of 1"), "{errors}");
    fx.installed_nothing();
}

#[test]
fn three_wrong_tries_then_it_boots_on_without_keys() {
    if not_root("three_wrong_tries_then_it_boots_on_without_keys") {
        return;
    }
    let fx = sealed_source();
    let mut source = answers(&["wrong 1", "wrong 2", "wrong 3", PASS]);
    let problems = fx.stage1().run_with(&mut source);
    assert_eq!(problems, 1);
    assert_eq!(source.0.len(), 1, "exactly three tries were made");
    fx.installed_nothing();
}

#[test]
fn the_right_passphrase_on_the_third_try_installs() {
    if not_root("the_right_passphrase_on_the_third_try_installs") {
        return;
    }
    let fx = sealed_source();
    let mut source = answers(&["wrong 1", "wrong 2", PASS]);
    assert_eq!(fx.stage1().run_with(&mut source), 0);
    fx.installed_everything();
}

#[test]
fn no_answer_stops_asking_and_installs_nothing() {
    if not_root("no_answer_stops_asking_and_installs_nothing") {
        return;
    }
    let fx = sealed_source();
    assert_eq!(fx.stage1().run_with(&mut answers(&[])), 1);
    fx.installed_nothing();
}

#[test]
fn a_corrupted_blob_installs_nothing_and_is_not_retried() {
    if not_root("a_corrupted_blob_installs_nothing_and_is_not_retried") {
        return;
    }
    let fx = sealed_source();
    let blob = fx.src.join(SEALED_BLOB_PATH);
    let mut bytes = fs::read(&blob).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x40;
    fs::write(&blob, bytes).unwrap();
    let mut source = answers(&[PASS, PASS, PASS]);
    assert_eq!(fx.stage1().run_with(&mut source), 1);
    assert_eq!(
        source.0.len(),
        2,
        "a damaged payload is not a wrong passphrase"
    );
    fx.installed_nothing();
    // Not an age file at all: refused before any passphrase is asked.
    fs::write(&blob, b"garbage").unwrap();
    let mut source = answers(&[PASS]);
    assert_eq!(fx.stage1().run_with(&mut source), 1);
    assert_eq!(source.0.len(), 1);
    fx.installed_nothing();
}

#[test]
fn without_a_blob_nothing_is_asked_and_the_pub_files_alone_are_refused() {
    if not_root("without_a_blob_nothing_is_asked_and_the_pub_files_alone_are_refused") {
        return;
    }
    let fx = sealed_source();
    fs::remove_file(fx.src.join(SEALED_BLOB_PATH)).unwrap();
    let mut source = answers(&[PASS]);
    fx.stage1().run_with(&mut source);
    assert_eq!(
        source.0.len(),
        1,
        "no passphrase asked without a sealed blob"
    );
    assert!(!fx.tgt.join("etc/ssh/ssh_host_ed25519_key").exists());
}

#[test]
fn a_symlinked_blob_is_refused() {
    if not_root("a_symlinked_blob_is_refused") {
        return;
    }
    let fx = sealed_source();
    let blob = fx.src.join(SEALED_BLOB_PATH);
    let moved = fx.tmp.path().join("elsewhere.age");
    fs::rename(&blob, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &blob).unwrap();
    let mut source = answers(&[PASS]);
    assert_eq!(fx.stage1().run_with(&mut source), 1);
    assert_eq!(source.0.len(), 1, "no passphrase asked for a symlink");
    fx.installed_nothing();
}

/// Under systemd stage 1 the passphrase comes from `systemd-ask-password` (`--ask-password`,
/// absolute path): a stand-in script records how it was run and answers wrong, wrong, right.
/// It is asked three times with a timeout and an id, with an empty environment, and the third
/// answer installs the keys.
#[test]
fn systemd_ask_password_is_asked_until_the_third_answer() {
    if not_root("systemd_ask_password_is_asked_until_the_third_answer") {
        return;
    }
    let fx = sealed_source();
    let dir = fx.tmp.path().join("ask");
    fs::create_dir(&dir).unwrap();
    let script = dir.join("systemd-ask-password");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {d}/count\n\
             printf '%s\\n' \"$@\" > {d}/args.$n; env > {d}/env.$n\n\
             case $n in 3) printf '%s\\n' '{PASS}';; *) echo wrong;; esac\n",
            d = dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .arg("--stage-dir")
        .arg(&fx.stage)
        .arg("--fw-cfg")
        .arg(fx.tmp.path().join("no-fw-cfg"))
        .arg("--ask-password")
        .arg(&script)
        .arg(&fx.src)
        .arg(&fx.tgt)
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{errors}");
    assert_eq!(fs::read_to_string(dir.join("count")).unwrap().trim(), "3");
    assert!(
        errors.contains("try 1 of 3") && errors.contains("try 2 of 3"),
        "{errors}"
    );
    let args = fs::read_to_string(dir.join("args.1")).unwrap();
    assert!(
        args.contains("--timeout=300") && args.contains("--id=keypack:sealed-keys"),
        "{args}"
    );
    let env = fs::read_to_string(dir.join("env.1")).unwrap();
    assert!(
        !env.contains("HOME=") && !env.contains("CARGO"),
        "environment passed on: {env}"
    );
    fx.installed_everything();
    // A relative path is refused as a usage error.
    let out = Command::new(BIN)
        .args(["--ask-password", "systemd-ask-password", "/", "/sysroot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Under the scripted stage 1 or a plain initrd the passphrase is typed on the console: a
/// pseudo-terminal stands in for `/dev/console`. The prompt names the try, the typed passphrase
/// is not echoed back, a wrong answer is asked again, and the right one installs the keys.
#[test]
fn the_console_prompt_asks_without_echo_until_the_right_answer() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::io::{Read, Write};

    if not_root("the_console_prompt_asks_without_echo_until_the_right_answer") {
        return;
    }
    let fx = sealed_source();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    // Non-blocking, so that the deadline below bounds the test even when nothing comes.
    rustix::io::ioctl_fionbio(&master, true).unwrap();
    let console = PathBuf::from(ptsname(&master, Vec::new()).unwrap().into_string().unwrap());
    let mut stage1 = fx.stage1();
    stage1.passphrase = PassphraseConfig {
        fw_cfg: fx.tmp.path().join("no-fw-cfg"),
        ask_password: None,
        console,
    };
    let worker = std::thread::spawn(move || stage1.run());
    let mut master = std::fs::File::from(master);
    let mut seen = String::new();
    // load-keys opens the console for each try: between two, the master reads EIO (no slave
    // open), and EAGAIN while nothing was written, so a failed read is retried until the
    // deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait_for = |master: &mut std::fs::File, want: &str| {
        let mut buf = [0u8; 256];
        while !seen.contains(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {want:?} on the console: {seen:?}"
            );
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    };
    wait_for(&mut master, "try 1 of 3: ");
    master.write_all(b"not the passphrase\n").unwrap();
    wait_for(&mut master, "try 2 of 3: ");
    master.write_all(format!("{PASS}\n").as_bytes()).unwrap();
    let problems = worker.join().unwrap();
    let mut rest = [0u8; 256];
    // Whatever the console printed after the last answer (a newline); the pty may be closed.
    let n = master.read(&mut rest).unwrap_or(0);
    seen.push_str(&String::from_utf8_lossy(&rest[..n]));
    assert_eq!(problems, 0, "{seen}");
    assert!(!seen.contains(PASS), "the passphrase was echoed: {seen:?}");
    assert!(
        !seen.contains("not the passphrase"),
        "a wrong answer was echoed: {seen:?}"
    );
    fx.installed_everything();
}

/// `--seal` with `--burn-after-boot`: when the passphrase is wrong nothing is installed, so the
/// bundle must stay on the stick — the burn is not even looked at (no disk is scanned).
#[test]
fn a_sealed_bundle_that_was_not_unsealed_is_never_burned() {
    if not_root("a_sealed_bundle_that_was_not_unsealed_is_never_burned") {
        return;
    }
    let fx = sealed_source();
    let mark = fx.src.join(keypack_layout::BURN_MARK_PATH);
    fs::write(&mark, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = fx.run_bin(&fx.fw_cfg("not the passphrase"));
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(NOT_UNSEALED), "{all}");
    assert!(!all.contains(load_keys::burn::PREFIX), "{all}");
    fx.installed_nothing();
}
