//! The harness every end-to-end test shares: a private temp folder with keypack's state folder,
//! the keys repository and the age identity in it; `keypack` run there with the transcript
//! printed; the prerequisite checks with the `KEYPACK-SKIPPED` convention; and a `Drop` that
//! kills the VM a failed assertion left behind. What differs between tests (extra environment,
//! which tools they need) is a parameter.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::guest;
use crate::tools::{have, signal_pid, skip};

/// The host every test builds for.
pub const HOST: &str = "web1";

/// The tools every boot of the test guest needs (building it, a sops repository, QEMU, SSH).
pub const GUEST_TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "sops",
    "ssh",
    "ssh-keygen",
    "cpio",
    "dpkg",
    "dropbear",
    "busybox",
    "gzip",
];

/// Whether [`GUEST_TOOLS`] and `extra` are all installed; prints the skip marker for the first
/// missing one otherwise.
pub fn prerequisites(test: &str, extra: &[&str]) -> bool {
    tools_present(test, GUEST_TOOLS.iter().chain(extra))
}

/// Whether every tool in `tools` is installed; prints the skip marker for the first missing one.
pub fn tools_present<'a>(test: &str, tools: impl IntoIterator<Item = &'a &'a str>) -> bool {
    for tool in tools {
        if !have(tool) {
            skip(test, &format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

/// The test guest's Debian kernel, or the skip marker.
pub fn guest_kernel(test: &str) -> Option<guest::Kernel> {
    match guest::kernel() {
        Ok(k) => Some(k),
        Err(e) => {
            skip(test, &format!("no Debian kernel for the test guest: {e:#}"));
            None
        }
    }
}

/// The type and base64 fields of an OpenSSH public key line (the comment dropped).
pub fn key_data(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The live (not zombie) processes with `pidfile` as one argument: the VMs keypack started for
/// one state folder, and none of the other tests' running beside it.
pub fn qemu_pids(pidfile: &Path) -> Vec<u32> {
    let needle = pidfile.as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            !is_zombie(*pid)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .split(|b| *b == 0)
                    .any(|a| a == needle.as_slice())
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'))
}

/// `run -H HOST` under TCG on a free port with 512 MiB and one CPU, then `extra`.
pub fn tcg_run<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "run", "-H", HOST, "--accel", "tcg", "--port", "auto", "--memory", "512", "--cpus", "1",
    ];
    a.extend_from_slice(extra);
    a
}

/// `ssh -H HOST -i CLIENT -- -o BatchMode=yes REMOTE…`: keypack's ssh with the client key.
pub fn ssh_args<'a>(client: &'a str, remote: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["ssh", "-H", HOST, "-i", client, "--", "-o", "BatchMode=yes"];
    a.extend_from_slice(remote);
    a
}

/// The guest's command printing the host public key it serves.
pub const CAT_HOST_KEY: &[&str] = &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"];

/// The workspace's keypack (dev profile), built if needed.
pub fn keypack_bin() -> PathBuf {
    crate::tools::cargo_bin("keypack", "keypack", "dev").expect("build keypack")
}

/// The guest's load-keys (release-small, as shipped), built if needed.
pub fn load_keys_bin() -> PathBuf {
    crate::tools::cargo_bin("load-keys", "load-keys", "release-small").expect("build load-keys")
}

/// One test's folder and the keypack binary run in it.
pub struct Env {
    keypack: PathBuf,
    dir: tempfile::TempDir,
    vars: Vec<(String, OsString)>,
    /// VMs started by hand (not through keypack), killed on drop as well.
    spawned: RefCell<Vec<u32>>,
}

impl Env {
    /// A fresh private folder (0700) with an empty private state folder in it.
    pub fn new(keypack: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self {
            keypack,
            dir,
            vars: Vec::new(),
            spawned: RefCell::default(),
        }
    }

    /// Sets `key` in every keypack this environment runs.
    pub fn with_var(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.vars.push((key.to_owned(), value.into()));
        self
    }

    /// Puts `dir` in front of PATH for every keypack this environment runs.
    pub fn with_path_first(self, dir: &Path) -> Self {
        let mut path = vec![dir.to_path_buf()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        self.with_var("PATH", std::env::join_paths(path).unwrap())
    }

    /// The test's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `p` in the test's folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// keypack's state folder for [`HOST`].
    pub fn host_state(&self) -> PathBuf {
        self.path("state").join(HOST)
    }

    /// The VM's serial console log so far (empty if none).
    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.host_state().join("serial.log")).unwrap_or_default()
    }

    /// `keypack ARGS` in this environment (state folder, keys repo, age key), not started.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.keypack);
        cmd.args(args.iter().map(AsRef::as_ref))
            .env("KEYPACK_STATE_DIR", self.path("state"))
            .env("KEYPACK_KEYS_REPO", self.path("repo"))
            .env("SOPS_AGE_KEY_FILE", self.path("age.txt"))
            .env_remove("KEYPACK_IDENTITY")
            .env_remove("KEYPACK_MEDIA");
        for (key, value) in &self.vars {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `keypack ARGS` and prints the transcript.
    pub fn kp<S: AsRef<str>>(&self, args: &[S]) -> Output {
        let out = self.command(args).output().expect("run keypack");
        transcript(args, &out);
        out
    }

    /// Runs `keypack ARGS` with `input` on its stdin and prints the transcript.
    pub fn kp_with_input<S: AsRef<str>>(&self, args: &[S], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keypack");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        transcript(args, &out);
        out
    }

    /// `keypack ARGS`, which must succeed; its stdout.
    pub fn ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.kp(args);
        assert!(
            out.status.success(),
            "keypack {:?} failed: {}\nserial log:\n{}",
            strs(args),
            String::from_utf8_lossy(&out.stderr),
            self.serial()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `keypack ARGS`, which must fail; its stderr.
    pub fn fails<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.kp(args);
        assert!(
            !out.status.success(),
            "keypack {:?} should have failed",
            strs(args)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `keypack status -H HOST --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "-H", HOST, "--json"])).expect("status JSON")
    }

    /// The pid in the state folder's `qemu.pid`.
    pub fn qemu_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.host_state().join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills QEMU (SIGKILL: a power cut, no flush by the guest), waits until it is gone, and
    /// lets `keypack status` clear the stale pidfile and record.
    pub fn power_cut(&self) {
        if let Some(pid) = self.qemu_pid() {
            let _ = signal_pid(pid, rustix::process::Signal::KILL);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                if is_zombie(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.kp(&["status", "-H", HOST]);
    }

    /// Kills `pid` (a VM started outside keypack) when the environment is dropped.
    pub fn kill_on_drop(&self, pid: u32) {
        self.spawned.borrow_mut().push(pid);
    }

    /// The sops keys repository for [`HOST`] and `users` (see [`crate::repo`]).
    pub fn keys_repo(&self, users: &[&str]) -> crate::repo::Repo {
        crate::repo::make_repo(self.dir(), HOST, users).expect("sops keys repository")
    }

    /// The test guest's base initrd (`base.cpio.gz`) with `load_keys`, letting in the client
    /// key it makes at `client`; returns (client key, base initrd).
    pub fn guest_initrd(&self, load_keys: &Path, kernel: &guest::Kernel) -> (PathBuf, PathBuf) {
        let client = self.path("client");
        let client_pub =
            crate::repo::keygen(&client, "keypack-e2e-client").expect("ssh-keygen of the client");
        let base = self.path("base.cpio.gz");
        guest::base_initrd(&base, load_keys, &client_pub, kernel).expect("base initrd");
        (client, base)
    }
}

impl Drop for Env {
    /// A failed assertion must not leave a VM running.
    fn drop(&mut self) {
        let pids = qemu_pids(&self.host_state().join("qemu.pid"));
        for pid in pids
            .into_iter()
            .chain(self.spawned.borrow().iter().copied())
        {
            let _ = signal_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

fn strs<S: AsRef<str>>(args: &[S]) -> Vec<&str> {
    args.iter().map(AsRef::as_ref).collect()
}

fn transcript<S: AsRef<str>>(args: &[S], out: &Output) {
    eprintln!(
        "$ keypack {}\n{}{}",
        strs(args).join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
