//! End to end, with a real guest under QEMU (TCG): a sops keys repo → `keypack build --media
//! initrd` → `keypack run --wait-ssh` → `keypack ssh` with the host key pinned → `status`,
//! `log` → a VM killed behind keypack's back → `stop`; then a guest serving another host key,
//! which `keypack` must refuse. Plus the fault paths that need no boot.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keypack_e2e::env::{self, CAT_HOST_KEY, Env, HOST, key_data, qemu_pids, ssh_args, tcg_run};
use keypack_e2e::tools::{have, skip};

const CANARY: &str = "AGE-SECRET-KEY-1KEYPACKE2ECANARYMUSTNOTREACHQEMU";

/// The shared environment with a secret-looking variable that must not reach QEMU.
fn new_env(keypack: PathBuf) -> Env {
    Env::new(keypack).with_var("SOPS_AGE_KEY", CANARY)
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn keygen(path: &Path, comment: &str) -> String {
    keypack_e2e::repo::keygen(path, comment).expect("ssh-keygen")
}

fn fingerprint(pub_file: &Path) -> String {
    let out = sh(Command::new("ssh-keygen").arg("-lf").arg(pub_file));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// `keypack build --media initrd` from the sops repository, with the test guest.
fn build(env: &Env, kernel: &Path, base: &Path, append: &str) {
    let (k, b) = (kernel.display().to_string(), base.display().to_string());
    env.ok(&[
        "build", "-H", HOST, "-U", "alice", "--media", "initrd", "--kernel", &k, "--initrd", &b,
        "--append", append,
    ]);
    let cpio = env.host_state().join("keys.cpio.gz");
    assert_eq!(
        std::fs::metadata(&cpio).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// What gives the bundle's keys away in a file: windows of `keys.cpio.gz` (a copy of it, as
/// older versions left in `initrd.img`) and the base64 lines of every private key inside it.
fn key_needles(cpio_gz: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = std::fs::read(cpio_gz).unwrap();
    assert!(gz.len() > 256, "{} is too small", cpio_gz.display());
    let mut needles: Vec<(String, Vec<u8>)> = [gz.len() / 2, gz.len() - 64]
        .iter()
        .map(|&off| {
            (
                format!("keys.cpio.gz bytes {off}..{}", off + 64),
                gz[off..off + 64].to_vec(),
            )
        })
        .collect();
    let cpio = Command::new("gzip")
        .arg("-dc")
        .arg(cpio_gz)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cpio.stdout);
    let mut in_key = false;
    for line in text.lines() {
        if line.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            in_key = true;
        } else if line.contains("-----END OPENSSH PRIVATE KEY-----") {
            in_key = false;
        } else if in_key && line.len() >= 60 {
            needles.push((
                "a private key's base64 line".into(),
                line.as_bytes().to_vec(),
            ));
        }
    }
    assert!(
        needles.len() > 4,
        "no private key lines found in {}",
        cpio_gz.display()
    );
    needles
}

/// Regular files under `dir` (recursively) other than `allowed` that hold a needle.
fn files_with_keys(dir: &Path, needles: &[(String, Vec<u8>)], allowed: &[PathBuf]) -> Vec<String> {
    let mut hits = Vec::new();
    for (path, bytes) in tree(dir) {
        if allowed.contains(&path) {
            continue;
        }
        for (what, n) in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                hits.push(format!("{} holds {what}", path.display()));
            }
        }
    }
    hits
}

/// Every regular file under `dir` (recursively; sockets and symlinks skipped) with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// The listening sockets on `port`, as `/proc/net/tcp{,6}` local addresses.
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" && cols[1].ends_with(&format!(":{port:04X}")) {
                out.push(cols[1].to_owned());
            }
        }
    }
    out
}

fn prerequisites(test: &str) -> bool {
    env::prerequisites(test, &["ssh-keyscan", "dropbearconvert", "tar"])
}

/// `run` of the disk image `image` under TCG on a free port, then `extra`.
fn image_run<'a>(image: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "run", "-H", HOST, "--image", image, "--accel", "tcg", "--port", "auto",
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn boot_build_run_ssh_status_log_kill_stop_and_refuse_a_foreign_host_key() {
    const T: &str = "boot_build_run_ssh_status_log_kill_stop_and_refuse_a_foreign_host_key";
    if !prerequisites(T) {
        return;
    }
    let Some(kernel) = env::guest_kernel(T) else {
        return;
    };
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    let env = new_env(keypack);
    let host_pub = env.keys_repo(&["alice"]).host_public_key;
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    let c = client.display().to_string();
    let started = Instant::now();

    build(&env, &kernel.vmlinuz, &base, "console=ttyS0");
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.host_state().join("boot.json")).unwrap())
            .unwrap();
    assert_eq!(
        key_data(boot["host_public_key"].as_str().unwrap()),
        key_data(&host_pub)
    );

    // What an older version left: the joined initrd, a copy of the keys. The next run wipes it.
    let cpio = env.host_state().join("keys.cpio.gz");
    let needles = key_needles(&cpio);
    std::fs::copy(&cpio, env.host_state().join("initrd.img")).unwrap();

    // run --wait-ssh returns once SSH answers with the pinned key.
    let args = tcg_run(&["--wait-ssh", "--timeout", "180"]);
    let out = env.kp(&args);
    assert!(
        out.status.success(),
        "run --wait-ssh failed; serial log:\n{}",
        std::fs::read_to_string(env.host_state().join("serial.log")).unwrap_or_default()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SSH answers with the pinned host key"),
        "{err}"
    );
    eprintln!("first SSH answer after {:?}", started.elapsed());

    let st = env.status();
    assert_eq!(st["running"], true);
    assert!(
        !env.host_state().join("initrd.img").exists(),
        "an old joined initrd (a copy of the keys) is wiped by run"
    );
    // While the VM runs, no file in the state folder but the medium's own artifact holds the
    // keys: the initrds were joined in memory (QEMU read -initrd /dev/fd/0, or SSH would not
    // answer with the packed key).
    let hits = files_with_keys(&env.path("state"), &needles, std::slice::from_ref(&cpio));
    assert!(hits.is_empty(), "{hits:?}");
    let pid = st["pid"].as_u64().unwrap() as u32;
    let record = std::fs::read_to_string(env.host_state().join("run.json")).unwrap();
    assert!(record.contains("\"/dev/fd/0\""), "{record}");
    // QEMU dropped the memfd (fd 0 is /dev/null after -daemonize): the keys live in guest
    // memory only.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(!fds.iter().any(|l| l.contains("keypack-initrd")), "{fds:?}");
    let port = st["forwards"][0]["port"].as_u64().unwrap() as u16;
    assert_eq!(st["forwards"][0]["address"], "127.0.0.1");
    assert_eq!(st["forwards"][0]["guest_port"], 22);
    assert_eq!(
        st["host_key_fingerprint"],
        fingerprint(&env.path("host.pub"))
    );
    // The forward listens on the loopback address only (0100007F = 127.0.0.1).
    let l = listeners(port);
    assert!(
        !l.is_empty() && l.iter().all(|a| a.starts_with("0100007F:")),
        "{l:?}"
    );
    // Nothing secret on QEMU's command line or in its environment.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(CANARY),
        "secret env reached QEMU"
    );
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .into_owned();
    assert!(!cmdline.contains("PRIVATE KEY") && !cmdline.contains("AGE-SECRET"));
    assert!(
        cmdline.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:22")),
        "{cmdline}"
    );

    // ssh with the pinned key: the guest serves what load-keys installed from the bundle.
    let served = env.ok(&ssh_args(&c, CAT_HOST_KEY));
    assert_eq!(key_data(&served), key_data(&host_pub));
    let modes = env.ok(&ssh_args(
        &c,
        &["stat -c %a /newroot/etc/ssh/ssh_host_ed25519_key /run/keypack/users/alice/id_ed25519"],
    ));
    assert_eq!(
        modes.split_whitespace().collect::<Vec<_>>(),
        ["600", "600"],
        "{modes}"
    );
    // User networking (the default): the guest reaches a service on the host's loopback
    // through 10.0.2.2. `--net isolated` (the restart below) must cut that off.
    // The service closes each connection at once, so nc (which waits for the peer) ends.
    let loopback_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = loopback_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in loopback_service.incoming() {
            drop(conn);
        }
    });
    let probe = format!(
        "timeout 15 nc -w 5 10.0.2.2 {service_port} </dev/null && echo reached || echo blocked"
    );
    let reach = env.ok(&[
        "ssh",
        "-H",
        HOST,
        "-i",
        &c,
        "--",
        "-o",
        "BatchMode=yes",
        &probe,
    ]);
    assert_eq!(reach.trim(), "reached", "{reach}");
    let known = std::fs::read_to_string(env.host_state().join("known_hosts")).unwrap();
    assert_eq!(
        key_data(known.trim().split_once(' ').unwrap().1),
        key_data(&host_pub)
    );
    assert!(known.starts_with("keypack-web1 "));
    let cfg = env.ok(&["ssh", "-H", HOST, "--print-config"]);
    assert!(
        cfg.contains(&format!("Port {port}")) && cfg.contains("StrictHostKeyChecking yes"),
        "{cfg}"
    );

    // The serial console shows load-keys' stage-1 lines.
    let log = env.ok(&["log", "-H", HOST]);
    assert!(
        log.contains("=== Stage 1: Loading SSH keys (keypack) ==="),
        "{log}"
    );
    assert!(
        log.contains("Found injected keys, copying to target..."),
        "{log}"
    );
    assert!(
        log.contains("=== Stage 1: Key loading complete ==="),
        "{log}"
    );

    // A second run does not start a second VM.
    let err = env.fails(&args);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert_eq!(qemu_pids(&env.host_state().join("qemu.pid")), vec![pid]);

    // QEMU killed behind keypack's back: status tells the truth, run recovers.
    keypack_e2e::tools::signal_pid(pid, rustix::process::Signal::KILL).expect("kill -9 QEMU");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemu_pids(&env.host_state().join("qemu.pid")).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = env.status();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale_cleaned"], true, "{st}");
    assert!(!env.host_state().join("qemu.pid").exists());
    // (This run boots through UEFI: OVMF found through QEMU's firmware descriptors.)
    let have_ovmf = Path::new("/usr/share/qemu/firmware").is_dir();
    if !have_ovmf {
        skip(
            &format!("{T} (UEFI part)"),
            "no QEMU firmware descriptors (package ovmf)",
        );
    }
    let mut uefi = args.clone();
    if have_ovmf {
        uefi.push("--uefi");
    }
    let out = env.kp(&uefi);
    assert!(out.status.success(), "run after a crash failed");
    let st = env.status();
    assert_eq!(st["running"], true);
    if have_ovmf {
        assert!(st["firmware"].as_str().unwrap().ends_with(".fd"), "{st}");
        let log = env.ok(&["log", "-H", HOST]);
        assert!(log.contains("efi: EFI v"), "UEFI boot expected");
    }
    let mode = std::fs::metadata(env.host_state().join("serial.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    env.ok(&ssh_args(&c, &["true"]));

    // restart with --net isolated: a new VM, SSH answers again through the forward, and the
    // guest no longer reaches the host's loopback.
    let old_pid = st["pid"].as_u64().unwrap();
    let mut restart = args.clone();
    restart[0] = "restart";
    restart.extend(["--net", "isolated"]);
    let out = env.kp(&restart);
    assert!(out.status.success(), "restart failed");
    let st = env.status();
    assert_eq!(st["running"], true);
    assert_ne!(st["pid"].as_u64().unwrap(), old_pid);
    let record = std::fs::read_to_string(env.host_state().join("run.json")).unwrap();
    assert!(
        record.contains("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"),
        "{record}"
    );
    let reach = env.ok(&[
        "ssh",
        "-H",
        HOST,
        "-i",
        &c,
        "--",
        "-o",
        "BatchMode=yes",
        &probe,
    ]);
    assert_eq!(reach.trim(), "blocked", "{reach}");

    // stop: ACPI power-down (the guest's acpid powers off), then status says stopped; a
    // `log -f` running meanwhile sees the power-off and ends with the VM.
    let follower = env
        .command(&["log", "-H", HOST, "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = env.kp(&["stop", "-H", HOST, "--timeout", "30"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped web1 (powered off)"),
        "the guest should power off on the ACPI button"
    );
    let followed = follower.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert!(followed.contains("=== Stage 1: Key loading complete ==="));
    assert!(
        followed.contains("keypack-e2e: power button, powering off"),
        "{followed}"
    );
    let st = env.status();
    assert_eq!(st["running"], false);
    assert!(qemu_pids(&env.host_state().join("qemu.pid")).is_empty());
    let out = env.kp(&["stop", "-H", HOST]);
    assert!(out.status.success(), "stop of a stopped VM is a no-op");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running; nothing to stop"));
    let text = env.ok(&["status", "-H", HOST]);
    assert!(text.contains("web1: stopped"), "{text}");

    // A guest serving another host key: --wait-ssh and ssh refuse it, naming both fingerprints.
    build(
        &env,
        &kernel.vmlinuz,
        &base,
        "console=ttyS0 keypack_e2e.other_key",
    );
    let err = env.fails(&args);
    let pinned = fingerprint(&env.path("host.pub"));
    assert!(err.contains("does not match the packed one"), "{err}");
    assert!(err.contains(&format!("expected {pinned}")), "{err}");
    let err = env.fails(&ssh_args(&c, &["true"]));
    assert!(
        err.contains("does not match") && err.contains(&pinned),
        "{err}"
    );
    let got = err
        .split("got ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(got.starts_with("SHA256:") && got != pinned, "{err}");
    env.ok(&["stop", "-H", HOST, "--timeout", "30"]);
    eprintln!("whole boot test: {:?}", started.elapsed());
}

/// Faults that need no boot: missing kernel, missing firmware, port in use, no build.
#[test]
fn run_faults_are_clear_errors() {
    const T: &str = "run_faults_are_clear_errors";
    if !have("qemu-system-x86_64") {
        return skip(T, "qemu-system-x86_64 is not installed");
    }
    let keypack = env::keypack_bin();
    let env = new_env(keypack);

    let err = env.fails(&["run", "-H", HOST, "--accel", "tcg"]);
    assert!(
        err.contains("no build found") && err.contains("boot.json"),
        "{err}"
    );
    let out = env.kp(&["stop", "-H", HOST]);
    assert!(out.status.success());
    assert_eq!(env.status()["running"], false);
    let err = env.fails(&["log", "-H", HOST]);
    assert!(err.contains("no console log for web1"), "{err}");
    let err = env.fails(&["ssh", "-H", HOST]);
    assert!(err.contains("not running"), "{err}");

    // A build whose kernel has gone.
    let state = env.host_state();
    std::fs::create_dir_all(&state).unwrap();
    let kernel = env.path("vmlinuz");
    let initrd = env.path("initrd.img");
    std::fs::write(&kernel, b"k").unwrap();
    std::fs::write(&initrd, b"i").unwrap();
    let desc = keypack_plugin::BootDescription {
        version: keypack_plugin::BOOT_DESCRIPTION_VERSION,
        medium: "initrd".into(),
        host: HOST.into(),
        boot: keypack_plugin::Boot::Kernel {
            kernel: kernel.clone(),
            initrds: vec![initrd.clone()],
            cmdline: "console=ttyS0".into(),
            cdrom: None,
        },
        firmware: keypack_plugin::Firmware::Any,
        host_public_key: String::new(),
    };
    keypack_plugin::runner::write_boot_description(&state, &desc).unwrap();

    // Port in use: named, with its owner (this test process).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let err = env.fails(&["run", "-H", HOST, "--accel", "tcg", "--port", &port]);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(listener);

    std::fs::remove_file(&kernel).unwrap();
    let err = env.fails(&["run", "-H", HOST, "--accel", "tcg", "--port", "auto"]);
    assert!(
        err.contains(&format!("kernel {} is missing", kernel.display())),
        "{err}"
    );

    // Missing firmware: a named file, and none found at all.
    let disk = env.path("disk.img");
    std::fs::write(&disk, vec![0u8; 512]).unwrap();
    let d = disk.display().to_string();
    let err = env.fails(&image_run(&d, &["--firmware", "/nonexistent/OVMF_CODE.fd"]));
    assert!(
        err.contains("firmware /nonexistent/OVMF_CODE.fd is missing"),
        "{err}"
    );
    let out = env
        .command(&image_run(&d, &[]))
        .env("KEYPACK_FIRMWARE_DIRS", env.path("no-firmware-here"))
        .env_remove("OVMF_CODE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if !Path::new("/run/libvirt/nix-ovmf/OVMF_CODE.fd").exists() {
        assert!(err.contains("no UEFI firmware found"), "{err}");
        assert!(
            err.contains("--firmware FILE") && err.contains("--bios"),
            "{err}"
        );
    }
    // UEFI for a disk image: firmware from QEMU's descriptors, a private copy of the variable
    // store; --bios drops it. --dry-run prints the command line and starts nothing.
    if Path::new("/usr/share/qemu/firmware").is_dir() {
        let line = env.ok(&image_run(&d, &["--dry-run"]));
        assert!(
            line.contains("if=pflash,format=raw,unit=0,readonly=on,file=/"),
            "{line}"
        );
        let vars = state.join("OVMF_VARS.fd");
        assert!(
            line.contains(&format!("unit=1,file={}", vars.display())),
            "{line}"
        );
        assert!(!vars.exists(), "--dry-run wrote the variable store");
        assert!(
            line.contains(&format!("file={d},format=raw,if=virtio")),
            "{line}"
        );
        assert!(line.contains("hostfwd=tcp:127.0.0.1:"), "{line}");
        assert!(!line.contains("-daemonize"));
        assert_eq!(env.status()["running"], false);
        let line = env.ok(&image_run(&d, &["--bios", "--dry-run"]));
        assert!(
            !line.contains("pflash") && !line.contains("-bios"),
            "{line}"
        );
    }
    // Two runs at once start one VM (a blank disk under SeaBIOS keeps QEMU up); the guest
    // ignores the ACPI button, so stop falls back to QMP quit after --timeout.
    let spawn = || {
        env.command(&image_run(&d, &["--bios", "--memory", "64"]))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(
        [a.status.success(), b.status.success()]
            .iter()
            .filter(|ok| **ok)
            .count(),
        1,
        "exactly one of two concurrent runs starts the VM"
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(String::from_utf8_lossy(&loser.stderr).contains("already running"));
    assert_eq!(qemu_pids(&state.join("qemu.pid")).len(), 1);
    let out = env.kp(&["stop", "-H", HOST, "--timeout", "1"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("QEMU quit"),
        "quit after the timeout"
    );
    assert!(qemu_pids(&state.join("qemu.pid")).is_empty());

    let help = env.ok(&["run", "--help"]);
    assert!(help.contains("[default: 2222]"), "{help}");
    // A taken port 0 is not a port.
    let err = env.fails(&["run", "-H", HOST, "--port", "0"]);
    assert!(err.contains("not a port"), "{err}");
}

/// `run --dry-run` of an initrd build writes nothing: no joined initrd (it would hold the keys),
/// no file at all in the state folder; the printed line names `/dev/fd/0` and says why. An
/// older version's `initrd.img` is wiped by the next `status`. Needs no boot.
#[test]
fn run_dry_run_of_an_initrd_build_writes_nothing() {
    const T: &str = "run_dry_run_of_an_initrd_build_writes_nothing";
    for tool in ["sops", "ssh-keygen", "gzip"] {
        if !have(tool) {
            return skip(T, &format!("{tool} is not installed"));
        }
    }
    let keypack = env::keypack_bin();
    let env = new_env(keypack);
    env.keys_repo(&["alice"]);
    let (kernel, base) = (env.path("vmlinuz"), env.path("base-initrd.img"));
    std::fs::write(&kernel, b"not a kernel: --dry-run boots nothing").unwrap();
    std::fs::write(&base, b"070701 not an initrd either").unwrap();
    build(&env, &kernel, &base, "console=ttyS0");
    let cpio = env.host_state().join("keys.cpio.gz");
    let needles = key_needles(&cpio);
    let before = tree(&env.path("state"));

    let out = env.kp(&[
        "run",
        "-H",
        HOST,
        "--accel",
        "tcg",
        "--port",
        "auto",
        "--dry-run",
    ]);
    assert!(out.status.success());
    let (line, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        line.contains(&format!("-kernel {} -initrd /dev/fd/0 ", kernel.display())),
        "{line}"
    );
    assert!(
        err.contains("sealed memfd") && err.contains("--dry-run joins nothing"),
        "{err}"
    );
    assert!(!env.host_state().join("initrd.img").exists());
    assert_eq!(
        tree(&env.path("state")),
        before,
        "--dry-run changed the state folder"
    );
    let hits = files_with_keys(&env.path("state"), &needles, std::slice::from_ref(&cpio));
    assert!(hits.is_empty(), "{hits:?}");

    // What an older version's run or dry run left behind is wiped by the next command that
    // takes the lock.
    let old = env.host_state().join("initrd.img");
    std::fs::copy(&cpio, &old).unwrap();
    assert!(!files_with_keys(&env.path("state"), &needles, std::slice::from_ref(&cpio)).is_empty());
    assert_eq!(env.status()["running"], false);
    assert!(!old.exists(), "status left the old joined initrd");
    let hits = files_with_keys(&env.path("state"), &needles, std::slice::from_ref(&cpio));
    assert!(hits.is_empty(), "{hits:?}");
}

/// `--accel auto` probes KVM with the run's CPU model (`-cpu host`): a QEMU that fails that
/// model (as a host does with `failed to set MSR 0x10a`) means TCG and a one-line notice, not a
/// run that dies at once. The fake QEMU fails only KVM with `-cpu host`; needs no boot.
#[test]
fn accel_auto_falls_back_to_tcg_when_kvm_fails_the_run_cpu_model() {
    const T: &str = "accel_auto_falls_back_to_tcg_when_kvm_fails_the_run_cpu_model";
    let Some(real) = keypack_plugin::child::find_program(Path::new("qemu-system-x86_64")) else {
        return skip(T, "qemu-system-x86_64 is not installed");
    };
    let keypack = env::keypack_bin();
    let env = new_env(keypack);
    let fake = env.path("qemu-msr");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n  *accel=kvm*\" -cpu host \"*) echo 'qemu: error: failed to set MSR 0x10a to 0x0' >&2; exit 1 ;;\nesac\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = env.path("disk.img");
    std::fs::write(&disk, vec![0u8; 512]).unwrap();
    let d = disk.display().to_string();
    let out = env
        .command(&[
            "run",
            "-H",
            HOST,
            "--image",
            &d,
            "--bios",
            "--accel",
            "auto",
            "--port",
            "auto",
            "--dry-run",
        ])
        .env("KEYPACK_QEMU", &fake)
        .output()
        .unwrap();
    let (line, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(line.contains("-machine q35,accel=tcg -cpu max"), "{line}");
    let notices: Vec<&str> = err.lines().filter(|l| l.starts_with("note: KVM")).collect();
    assert_eq!(notices.len(), 1, "{err}");
    assert!(notices[0].contains("running with TCG"), "{err}");
    // Where /dev/kvm opens, the probe reached QEMU and the notice says what QEMU said.
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        assert!(notices[0].contains("failed to set MSR 0x10a"), "{err}");
    }
}

/// `--port auto` picks a free port, but another VM starting at the same moment can bind it
/// before QEMU does (seen in CI: "127.0.0.1:N is already in use by pid … (qemu-system-x86)").
/// A QEMU whose first start fails on the host forward stands in for that race: with `auto`
/// keypack picks again and the VM runs; with a fixed port it is the error it was.
#[test]
fn port_auto_picks_again_when_the_port_is_taken_before_qemu_binds_it() {
    const T: &str = "port_auto_picks_again_when_the_port_is_taken_before_qemu_binds_it";
    let Some(real) = keypack_plugin::child::find_program(Path::new("qemu-system-x86_64")) else {
        return skip(T, "qemu-system-x86_64 is not installed");
    };
    let env = new_env(env::keypack_bin());
    let fake = env.path("qemu-race");
    let once = env.path("raced");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh
case \" $* \" in\n  *\" -daemonize \"*) if [ ! -e {once} ]; then : > {once}; echo 'qemu-system-x86_64: -netdev user,id=net0: could not set up host forwarding rule' >&2; exit 1; fi ;;\nesac\nexec {real} \"$@\"\n",
            once = once.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = env.path("disk.img");
    std::fs::write(&disk, vec![0u8; 512]).unwrap();
    let d = disk.display().to_string();
    let run = |port: &str| {
        let out = env
            .command(&[
                "run", "-H", HOST, "--image", &d, "--bios", "--accel", "tcg", "--memory", "256",
                "--port", port,
            ])
            .env("KEYPACK_QEMU", &fake)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run("auto");
    if let Some(pid) = env.qemu_pid() {
        env.kill_on_drop(pid);
    }
    assert!(ok, "{err}");
    assert!(
        err.contains("was taken while QEMU started; trying another"),
        "{err}"
    );
    assert!(err.contains("started web1"), "{err}");
    env.ok(&["stop", "-H", HOST, "--timeout", "1"]);

    std::fs::remove_file(&once).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let (ok, err) = run(&free);
    assert!(!ok && err.contains("already in use"), "{err}");
    assert!(!err.contains("trying another"), "{err}");
}

/// `--wait-ssh` that times out leaves evidence: a PNG of the guest's screen in the state
/// folder, named in the error with QEMU's view of the guest, and the console's last lines,
/// escaped. A blank disk under SeaBIOS stays up and never serves SSH; no kernel needed.
#[test]
fn wait_ssh_timeout_saves_a_screenshot_and_shows_the_console() {
    const T: &str = "wait_ssh_timeout_saves_a_screenshot_and_shows_the_console";
    for tool in ["qemu-system-x86_64", "ssh-keygen"] {
        if !have(tool) {
            return skip(T, &format!("{tool} is not installed"));
        }
    }
    let keypack = env::keypack_bin();
    let env = new_env(keypack);
    let state = env.host_state();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A pinned key (--wait-ssh needs one), from a "last build" the --image run keeps.
    let disk = env.path("disk.img");
    std::fs::write(&disk, vec![0u8; 512]).unwrap();
    let desc = keypack_plugin::BootDescription {
        version: keypack_plugin::BOOT_DESCRIPTION_VERSION,
        medium: "image".into(),
        host: HOST.into(),
        boot: keypack_plugin::Boot::Disk {
            image: disk.clone(),
        },
        firmware: keypack_plugin::Firmware::Bios,
        host_public_key: keygen(&env.path("pinned"), "pinned"),
    };
    keypack_plugin::runner::write_boot_description(&state, &desc).unwrap();
    let d = disk.display().to_string();
    let run = env
        .command(&image_run(
            &d,
            &["--bios", "--memory", "64", "--wait-ssh", "--timeout", "6"],
        ))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What a hostile guest could print: a terminal title escape among its lines (SeaBIOS with
    // a blank disk writes nothing to the serial port, so these are the log's only lines).
    std::thread::sleep(Duration::from_secs(2));
    std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("serial.log"))
        .unwrap()
        .write_all(b"stage 1 stalled here\n\x1b]0;owned\x07title\n")
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(!out.status.success(), "{err}");
    let shot = state.join("screenshot.png");
    assert!(err.contains("no SSH answer on 127.0.0.1:"), "{err}");
    assert!(
        err.contains(&format!("screenshot of its screen: {}", shot.display())),
        "{err}"
    );
    assert!(err.contains("QEMU reports the guest running"), "{err}");
    let png = std::fs::read(&shot).expect("screenshot.png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(
        std::fs::metadata(&shot).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(err.contains("last lines of the serial console"), "{err}");
    assert!(err.contains("  stage 1 stalled here\n"), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("  \\u{1b}]0;owned\\u{7}title\n"), "{err}");
    env.ok(&["stop", "-H", HOST, "--timeout", "1"]);
}
