//! Sealed media end to end, with the real test guest under QEMU (TCG): `keypack build --media
//! initrd --seal passphrase` (passphrase asked twice, `KEYPACK_PIN_FD`) → the medium's bytes
//! hold no private-key material in any encoding but the `.pub` lines → `keypack run` refuses a
//! wrong passphrase before any QEMU starts → `keypack run --wait-ssh` hands the right one over
//! QEMU's firmware config → `keypack ssh` with the pinned key; then the guest booted by hand
//! with a wrong firmware-config passphrase installs no key, says so, and boots on.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keypack_e2e::env::{self, Env, HOST};

const PASS: &str = "sealed e2e passphrase, long enough";
const NOT_UNSEALED: &str =
    "the sealed keys were NOT unsealed: no key installed; booting on without keys";

/// `keypack ARGS` with `answers` on stdin, read through `KEYPACK_PIN_FD=0`; the passphrase
/// must not be printed.
fn kp(env: &Env, args: &[&str], answers: &str) -> Output {
    let out = env.kp_with_input(args, answers);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(PASS), "the passphrase was printed");
    out
}

fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The private keys' files of an unsealed bundle (`keypack pack`), by path.
fn private_keys(bundle: &Path) -> Vec<(String, String)> {
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(bundle)
        .output()
        .unwrap();
    let mut keys = Vec::new();
    for path in String::from_utf8(list.stdout).unwrap().lines() {
        if path.ends_with(".pub") {
            continue;
        }
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(bundle)
            .arg(path)
            .output()
            .unwrap();
        keys.push((path.to_owned(), String::from_utf8(out.stdout).unwrap()));
    }
    assert!(keys.len() >= 2, "{keys:?}");
    keys
}

/// Every encoding of a private key worth scanning for: the raw 32-byte seed, its hex (lower and
/// upper), the OpenSSH base64 lines, the whole base64 body, the PEM armour line.
fn needles(key: &str) -> Vec<(String, Vec<u8>)> {
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = base64_decode(&body);
    // openssh-key-v1 (PROTOCOL.key): the private section holds the public key, then the 64-byte
    // ed25519 secret (seed || public key): the seed is the 32 bytes before the public key's
    // last copy.
    let at = |needle: &[u8]| blob.windows(32).rposition(|w| w == needle);
    // magic, cipher "none", kdf "none", kdf options "", key count, public key length, then
    // the public key blob: "ssh-ed25519" and the 32-byte key.
    let public_blob_end = 15 + 8 + 8 + 4 + 4 + 4 + 15 + 36;
    assert_eq!(
        &blob[public_blob_end - 36..public_blob_end - 32],
        &[0, 0, 0, 32]
    );
    let public = &blob[public_blob_end - 32..public_blob_end];
    let last = at(public).expect("the public key inside the private section");
    let seed = blob[last - 32..last].to_vec();
    assert_ne!(seed.as_slice(), public);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let mut n: Vec<(String, Vec<u8>)> = vec![
        ("raw seed".into(), seed.clone()),
        ("hex seed".into(), hex.clone().into_bytes()),
        ("HEX seed".into(), hex.to_uppercase().into_bytes()),
        ("PEM line".into(), b"PRIVATE KEY".to_vec()),
        ("base64 body".into(), body.as_bytes()[..48].to_vec()),
    ];
    for l in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
    {
        n.push(("base64 line".into(), l.as_bytes().to_vec()));
    }
    n
}

fn base64_decode(text: &str) -> Vec<u8> {
    let table = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(table) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// QEMUs whose command line names a file under `dir` (other tests' VMs run beside this one).
fn qemu_running(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .collect()
}

#[test]
fn sealed_initrd_build_run_ssh_wrong_passphrases_and_no_key_material_on_the_medium() {
    const T: &str =
        "sealed_initrd_build_run_ssh_wrong_passphrases_and_no_key_material_on_the_medium";
    if !env::prerequisites(T, &[]) {
        return;
    }
    let Some(kernel) = env::guest_kernel(T) else {
        return;
    };
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    // Keys (the unsealed comparison bundle) go into private folders only: `Env` makes them 0700.
    let env = Env::new(keypack).with_var("KEYPACK_PIN_FD", "0");
    let repo = env.keys_repo(&["alice"]);
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    let (k, b) = (
        kernel.vmlinuz.display().to_string(),
        base.display().to_string(),
    );
    let build = [
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "initrd",
        "--kernel",
        &k,
        "--initrd",
        &b,
        "--append",
        "console=ttyS0",
        "--seal",
        "passphrase",
    ];
    let cpio = env.host_state().join("keys.cpio.gz");

    // Two different entries: refused, nothing written.
    let out = kp(&env, &build, &format!("{PASS}\n{PASS}x\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not match"));
    assert!(!cpio.exists(), "a mismatch writes nothing");

    let started = Instant::now();
    let out = kp(&env, &build, &format!("{PASS}\n{PASS}\n"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed:"));
    eprintln!("sealed build took {:?}", started.elapsed());

    // The medium: the blob and the .pub lines, no private key material in any encoding.
    let unsealed = env.path("plain.tar.gz");
    let out = kp(
        &env,
        &[
            "pack",
            "-H",
            HOST,
            "-U",
            "alice",
            "-o",
            &unsealed.display().to_string(),
        ],
        "",
    );
    assert!(out.status.success());
    let raw_gz = std::fs::read(&cpio).unwrap();
    let raw = gunzip(&cpio);
    assert!(contains(&raw, b"keypack/sealed.age"));
    assert!(contains(&raw, b"age-encryption.org/v1\n-> scrypt "));
    let host_pub_data = repo.host_public_key.split_whitespace().nth(1).unwrap();
    assert!(
        contains(&raw, host_pub_data.as_bytes()),
        "the .pub line is in plaintext"
    );
    for (path, key) in private_keys(&unsealed) {
        for (what, n) in needles(&key) {
            assert!(!contains(&raw, &n), "{path}: {what} in the medium's cpio");
            assert!(
                !contains(&raw_gz, &n),
                "{path}: {what} in the medium's bytes"
            );
        }
    }
    // inspect of the medium's bundle is not possible (a cpio); the state's boot.json names it.
    let boot = std::fs::read_to_string(env.host_state().join("boot.json")).unwrap();
    assert!(boot.contains("keys.cpio.gz"));

    // A wrong passphrase given to run: refused before any QEMU starts.
    let run = [
        "run", "-H", HOST, "--accel", "tcg", "--port", "auto", "--memory", "768", "--cpus", "1",
    ];
    let out = kp(&env, &run, "not the passphrase\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong passphrase") && err.contains("no VM was started"),
        "{err}"
    );
    assert!(qemu_running(env.dir()).is_empty(), "a QEMU was started");
    assert!(!env.host_state().join("qemu.pid").exists());
    assert!(!env.host_state().join("run.json").exists());

    // The right one: through fw_cfg to load-keys, SSH answers with the pinned key.
    let mut wait = run.to_vec();
    wait.extend(["--wait-ssh", "--timeout", "400"]);
    let out = kp(&env, &wait, &format!("{PASS}\n"));
    let log = std::fs::read_to_string(env.host_state().join("serial.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "run --wait-ssh failed; serial log:\n{log}"
    );
    let vm_pids = qemu_running(env.dir());
    for pid in &vm_pids {
        env.kill_on_drop(*pid);
    }
    assert!(
        log.contains("Found sealed keys (/keypack/sealed.age)"),
        "{log}"
    );
    assert!(log.contains("QEMU's firmware config"), "{log}");
    // The repository's host key and alice's (it has no deploy key).
    assert!(log.contains("Unsealed 2 private key file(s)"), "{log}");
    // Nothing secret on QEMU's command line; the passphrase came from its stdout memfd.
    for pid in &vm_pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!contains(&cmdline, PASS.as_bytes()));
        assert!(contains(
            &cmdline,
            b"name=opt/io.keypack.passphrase,file=/dev/fd/1"
        ));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(!contains(&environ, PASS.as_bytes()));
    }
    let c = client.display().to_string();
    let served = kp(
        &env,
        &[
            "ssh",
            "-H",
            HOST,
            "-i",
            &c,
            "--",
            "-o",
            "BatchMode=yes",
            "cat",
            "/etc/ssh/ssh_host_ed25519_key.pub; stat -c %a /newroot/etc/ssh/ssh_host_ed25519_key",
        ],
        "",
    );
    assert!(served.status.success());
    let served = String::from_utf8(served.stdout).unwrap();
    assert!(served.contains(host_pub_data), "{served}");
    assert!(served.trim_end().ends_with("600"), "{served}");
    let out = kp(&env, &["stop", "-H", HOST], "");
    assert!(out.status.success());

    // A wrong passphrase reaching the guest (QEMU given a wrong fw_cfg value by hand): no key
    // installed, the console says so, and the guest's /init goes on to start dropbear.
    let joined = env.path("joined-initrd");
    let mut bytes = std::fs::read(&base).unwrap();
    while !bytes.len().is_multiple_of(4) {
        bytes.push(0);
    }
    bytes.extend_from_slice(&raw_gz);
    std::fs::write(&joined, bytes).unwrap();
    let serial = env.path("wrong.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-name",
            "keypack-web1",
            "-machine",
            "q35,accel=tcg",
            "-m",
            "768",
            "-smp",
            "1",
        ])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&joined)
        .args(["-append", "console=ttyS0 panic=-1"])
        .args([
            "-fw_cfg",
            "name=opt/io.keypack.passphrase,string=wrong passphrase",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-nic", "none"])
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu");
    env.kill_on_drop(qemu.id());
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut log = String::new();
    while Instant::now() < deadline {
        log = std::fs::read_to_string(&serial).unwrap_or_default();
        if log.contains("keypack-e2e: starting dropbear") {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(
        log.contains("keypack-e2e: starting dropbear"),
        "the guest did not boot on:\n{log}"
    );
    assert!(log.contains(NOT_UNSEALED), "{log}");
    assert!(
        log.contains("wrong passphrase for the sealed keys"),
        "{log}"
    );
    assert!(
        log.contains("keypack-e2e: load-keys exited with 1"),
        "{log}"
    );
    assert!(
        log.contains("keypack-e2e: no usable injected host key"),
        "{log}"
    );
    assert!(
        !log.contains("  copied /etc/ssh/ssh_host_ed25519_key "),
        "{log}"
    );
}
