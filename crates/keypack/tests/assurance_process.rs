//! Claim "while secrets are live the process is not dumpable, has a core limit of 0, and a
//! process of the same user can neither ptrace-attach nor read its memory" (SECURITY.md).
//!
//! keypack is run with `KEYPACK_TEST_HOOK=pause` (see `hardening::secrets_live_test_hook`):
//! right after the bundle is sealed it prints its own dumpable flag and core limit and waits
//! for a line on stdin. Meanwhile the test looks at `/proc/<pid>/limits` from outside and
//! tries, as the same user, `PTRACE_ATTACH` and opening `/proc/<pid>/mem` and `environ`.
//! A control run against a dumpable process of the same user (`sleep`) must succeed, so a
//! pass cannot come from a system-wide ptrace restriction.
//!
//! As root the "same user" is `nobody` (65534): root itself may trace anything.

mod assurance_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use assurance_support::*;

const NOBODY: u32 = 65534;

/// The uid/gid to run both keypack and the "attacker" as.
fn same_user() -> Option<(u32, u32)> {
    if is_root() {
        Some((NOBODY, NOBODY))
    } else {
        None
    }
}

fn as_user(cmd: &mut Command) -> &mut Command {
    if let Some((u, g)) = same_user() {
        cmd.uid(u).gid(g);
    }
    cmd
}

/// The keypack binary and the test identity where the "same user" can reach them. As root the
/// checkout may sit in root's 0700 home, which `nobody` cannot enter: copy both into a 0755
/// folder of their own (the identity owned by `nobody`, 0600).
struct Reachable {
    _dir: Option<tempfile::TempDir>,
    keypack: std::path::PathBuf,
    identity: std::path::PathBuf,
}

fn reachable() -> Reachable {
    use std::os::unix::fs::PermissionsExt;
    let Some((u, g)) = same_user() else {
        return Reachable {
            _dir: None,
            keypack: KEYPACK.into(),
            identity: AGE_KEY.into(),
        };
    };
    let dir = tempfile::Builder::new()
        .prefix("keypack-same-user")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let keypack = dir.path().join("keypack");
    std::fs::copy(KEYPACK, &keypack).expect("copy keypack");
    std::fs::set_permissions(&keypack, std::fs::Permissions::from_mode(0o755)).unwrap();
    let identity = dir.path().join("age-key.txt");
    std::fs::copy(AGE_KEY, &identity).expect("copy the test identity");
    std::os::unix::fs::chown(&identity, Some(u), Some(g)).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    Reachable {
        _dir: Some(dir),
        keypack,
        identity,
    }
}

/// Starts `keypack pack -o -` with the hook; returns the child, its pid and the hook line.
fn start_paused(repo: &Repo, bin: &Reachable) -> (Child, u32, String) {
    let root = repo.root();
    let mut cmd = Command::new(&bin.keypack);
    cmd.args([
        "pack",
        "-H",
        "web1",
        "-U",
        "alice",
        "--keys-repo",
        root.to_str().unwrap(),
        "-i",
        bin.identity.to_str().unwrap(),
        "-o",
        "-",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", repo.tmp.path().join("home"))
    .current_dir(repo.tmp.path())
    .stdin(Stdio::null());
    cmd.env("KEYPACK_TEST_HOOK", "pause")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = as_user(&mut cmd).spawn().expect("keypack starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "keypack ended before the hook line (no bundle sealed?)"
        );
        if line.starts_with("KEYPACK-TEST-HOOK") {
            break;
        }
    }
    let pid: u32 = field(&line, "pid").parse().unwrap();
    // Keep draining stderr so keypack never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (child, pid, line.trim().to_owned())
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

fn finish(mut child: Child) {
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "keypack failed after the hook");
    assert!(
        !out.stdout.is_empty(),
        "the bundle was written after the hook"
    );
}

/// What a same-user process gets when it tries `probe` on `pid`: `Ok` or the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Attach,
    OpenMem,
    OpenEnviron,
}

fn try_as_same_user(pid: u32, probe: Probe) -> Result<(), i32> {
    let mem = std::ffi::CString::new(format!("/proc/{pid}/mem")).unwrap();
    let environ = std::ffi::CString::new(format!("/proc/{pid}/environ")).unwrap();
    let mut cmd = Command::new("/bin/true");
    as_user(&mut cmd);
    // SAFETY: runs in the forked child after setuid/setgid, before exec; it only makes raw
    // syscalls (ptrace, open) on data prepared before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let r = match probe {
                Probe::Attach => libc::ptrace(
                    libc::PTRACE_ATTACH,
                    pid as libc::pid_t,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                ) as i32,
                Probe::OpenMem => libc::open(mem.as_ptr(), libc::O_RDONLY),
                Probe::OpenEnviron => libc::open(environ.as_ptr(), libc::O_RDONLY),
            };
            if r == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut c) => {
            let _ = c.wait();
            Ok(())
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

/// A repository readable by the "same user" when that is `nobody`.
fn repo_for_same_user() -> Repo {
    let repo = standard_repo();
    if let Some((u, g)) = same_user() {
        let status = Command::new("chown")
            .args(["-R", &format!("{u}:{g}")])
            .arg(repo.tmp.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    repo
}

#[test]
fn assurance_process_not_dumpable_and_core_limit_0_while_secrets_live() {
    let test = "assurance_process_not_dumpable_and_core_limit_0_while_secrets_live";
    if !have_sops(test) {
        return;
    }
    let repo = repo_for_same_user();
    let bin = reachable();
    let (child, pid, line) = start_paused(&repo, &bin);
    eprintln!("{line}");
    assert_eq!(field(&line, "dumpable"), "0", "{line}");
    assert_eq!(field(&line, "core"), "0/0", "{line}");
    assert_eq!(field(&line, "tracer"), "0", "{line}");
    // From outside, while the bundle is live.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let nums: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(nums, ["0", "0"], "{core}");
    finish(child);
}

#[test]
fn assurance_process_same_user_cannot_ptrace_or_read_memory_while_secrets_live() {
    let test = "assurance_process_same_user_cannot_ptrace_or_read_memory_while_secrets_live";
    if !have_sops(test) {
        return;
    }
    // Control: a dumpable process of the same user can be attached and read.
    let mut sleep = Command::new("sleep");
    sleep.arg("30");
    let mut sleeper = as_user(&mut sleep).spawn().unwrap();
    let control_attach = try_as_same_user(sleeper.id(), Probe::Attach);
    let control_mem = try_as_same_user(sleeper.id(), Probe::OpenMem);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if control_attach.is_err() || control_mem.is_err() {
        skip(
            test,
            &format!(
                "this system forbids same-user ptrace even of dumpable processes (attach \
                 {control_attach:?}, /proc/pid/mem {control_mem:?}): the test could not fail"
            ),
        );
        return;
    }

    let repo = repo_for_same_user();
    let bin = reachable();
    let (child, pid, line) = start_paused(&repo, &bin);
    let attach = try_as_same_user(pid, Probe::Attach);
    let mem = try_as_same_user(pid, Probe::OpenMem);
    let environ = try_as_same_user(pid, Probe::OpenEnviron);
    finish(child);
    eprintln!("{line}; attach {attach:?}, mem {mem:?}, environ {environ:?}");
    assert_eq!(
        attach,
        Err(libc::EPERM),
        "same-user PTRACE_ATTACH on keypack"
    );
    assert_eq!(
        mem,
        Err(libc::EACCES),
        "same-user open of /proc/<keypack>/mem"
    );
    assert_eq!(
        environ,
        Err(libc::EACCES),
        "same-user open of /proc/<keypack>/environ"
    );
}
