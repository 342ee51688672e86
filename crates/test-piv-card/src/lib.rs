//! Test harness around the PIV card emulator: a private `pcscd` with a vsmartcard-vpcd
//! reader in listen mode (loopback), keys and certificates made by `openssl` at test time,
//! and cards that can be unplugged and plugged back in.
//!
//! Where it sits: used by keypack's T2 tests (real `age-plugin-yubikey` 0.5.1 against the
//! emulator in `src/main.rs`). Nothing here ships in keypack.
//!
//! Does not: share pcscd with anything. There is one pcscd per machine (its socket is
//! fixed at `/run/pcscd/pcscd.comm`), so [`Pcscd::start`] refuses to run when another one
//! answers, and every T2 test takes [`Pcscd::start`]'s process-wide lock. The daemon and
//! the cards are killed on drop, so nothing is left running.
//!
//! Why a fixed vpcd port (0x9CBB = 40123) rather than Debian's 35963: the test's reader
//! config is private, so a developer's own vpcd setup is not disturbed.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// vpcd listen port used by the tests.
pub const VPCD_PORT: u16 = 0x9CBB;
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";

static LOCK: Mutex<()> = Mutex::new(());

/// Why T2 cannot run here (for a KEYPACK-SKIPPED line), or `None` when it can.
pub fn missing_prerequisites() -> Option<String> {
    if which("pcscd").is_none() && !Path::new("/usr/sbin/pcscd").exists() {
        return Some("pcscd is not installed (apt-get install pcscd)".into());
    }
    if !Path::new(VPCD_DRIVER).exists() {
        return Some(format!(
            "{VPCD_DRIVER} missing (apt-get install vsmartcard-vpcd)"
        ));
    }
    if which("openssl").is_none() {
        return Some("openssl is not installed".into());
    }
    if real_plugin().is_none() {
        return Some(
            "the real age-plugin-yubikey is not installed (cargo install age-plugin-yubikey --locked --root ~/.cache/keypack-tools)".into(),
        );
    }
    if !is_root() {
        return Some("starting pcscd needs root".into());
    }
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// The folder holding the real `age-plugin-yubikey`: `KEYPACK_TOOLS_BIN`, else the
/// bootstrap cache (`$KEYPACK_TOOLS/bin`, `$XDG_CACHE_HOME/keypack-tools/bin`,
/// `~/.cache/keypack-tools/bin`), else `PATH` (when it is not a keypack mock).
pub fn real_plugin() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("KEYPACK_TOOLS_BIN") {
        dirs.push(PathBuf::from(d));
    }
    // scripts/bootstrap: ${KEYPACK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/keypack-tools}/bin
    if let Some(d) = std::env::var_os("KEYPACK_TOOLS") {
        dirs.push(PathBuf::from(d).join("bin"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        dirs.push(PathBuf::from(d).join("keypack-tools/bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/keypack-tools/bin"));
    }
    dirs.push(PathBuf::from("/root/.cache/keypack-tools/bin"));
    for d in dirs {
        let p = d.join("age-plugin-yubikey");
        if p.is_file() {
            return Some(d);
        }
    }
    let p = which("age-plugin-yubikey")?;
    let out = Command::new(&p).arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    (v.starts_with("age-plugin-yubikey") && !v.contains("mock"))
        .then(|| p.parent().map(Path::to_owned))?
}

/// The built emulator binary, building it when a `cargo test -p …` run did not.
pub fn emulator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned();
    let bin = profile_dir.join("keypack-test-piv-card");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "keypack-test-piv-card",
                "--bin",
                "keypack-test-piv-card",
            ])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target dir"),
            )
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the PIV emulator");
        assert!(status.success(), "building keypack-test-piv-card failed");
    }
    bin
}

/// A private pcscd with one vpcd reader; killed on drop.
pub struct Pcscd {
    child: Child,
    dir: tempfile::TempDir,
    _guard: MutexGuard<'static, ()>,
}

impl Pcscd {
    /// Start pcscd (call [`missing_prerequisites`] first).
    pub fn start() -> Result<Pcscd, String> {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        reap_stale_test_pcscd();
        if Path::new(PCSCD_SOCKET).exists() && pcscd_answers() {
            return Err(format!(
                "another pcscd is running ({PCSCD_SOCKET}); stop it to run the emulator tests"
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let conf = dir.path().join("reader.conf.d");
        std::fs::create_dir(&conf).map_err(|e| e.to_string())?;
        std::fs::write(
            conf.join("keypack-vpcd"),
            format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x{VPCD_PORT:04X}\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x{VPCD_PORT:04X}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("pcscd.log")).map_err(|e| e.to_string())?;
        let pcscd = which("pcscd").unwrap_or_else(|| PathBuf::from("/usr/sbin/pcscd"));
        let child = Command::new(pcscd)
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start pcscd: {e}"))?;
        let _ = std::fs::write(pid_file(), child.id().to_string());
        let mut me = Pcscd {
            child,
            dir,
            _guard: guard,
        };
        // Wait for the vpcd port to listen.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", VPCD_PORT)).is_ok() {
                // That probe looked like a card to vpcd; give it a moment to settle.
                std::thread::sleep(Duration::from_millis(500));
                break;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!("pcscd exited: {status}; log: {}", me.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "vpcd did not listen on {VPCD_PORT}; log: {}",
                    me.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    /// pcscd's own log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }

    /// A folder for keys, certificates and state of this run.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Beside pcscd's own socket folder in `/run` (root-only), not in the shared temp folder, where
/// another user could plant a symlink for this root-run harness to write through. Writing it is
/// best effort: without root there is no test pcscd to record.
fn pid_file() -> PathBuf {
    PathBuf::from("/run/keypack-test-pcscd.pid")
}

/// A test run that was killed (SIGKILL, timeout) cannot drop its [`Pcscd`]; the next run
/// stops that daemon — only if the recorded pid is still a pcscd started with a
/// `keypack-vpcd` test config (never a system pcscd).
fn reap_stale_test_pcscd() {
    let Ok(pid) = std::fs::read_to_string(pid_file()) else {
        return;
    };
    let pid = pid.trim();
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let ours = cmdline.contains("pcscd")
        && cmdline.contains("reader.conf.d")
        && std::fs::read_dir(
            cmdline
                .split(' ')
                .find(|a| a.ends_with("reader.conf.d"))
                .unwrap_or("/nonexistent"),
        )
        .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() == "keypack-vpcd")))
        .unwrap_or(true);
    if ours {
        if let Some(pid) = pid
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_file(pid_file());
}

fn pcscd_answers() -> bool {
    std::os::unix::net::UnixStream::connect(PCSCD_SOCKET).is_ok()
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(pid_file());
    }
}

/// PIN policy written into the certificate's YubiKey policy extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinPolicy {
    /// `0x02`: once per session (the card keeps it verified).
    Once,
    /// `0x03`: for every decryption.
    Always,
}

/// A key + certificate made by openssl, and the card settings.
pub struct CardSpec {
    /// Serial number.
    pub serial: u32,
    /// PIN.
    pub pin: String,
    /// PIN policy.
    pub policy: PinPolicy,
    key: PathBuf,
    cert: PathBuf,
    tries: PathBuf,
}

impl CardSpec {
    /// Make a fresh P-256 key and an age-plugin-yubikey style certificate in `dir`.
    pub fn generate(dir: &Path, serial: u32, policy: PinPolicy) -> Result<CardSpec, String> {
        let cnf = dir.join(format!("ossl-{serial}.cnf"));
        let policy_der = match policy {
            PinPolicy::Once => "0201",
            PinPolicy::Always => "0301",
        };
        // Minimal config: no default v3_ca (its critical basicConstraints makes 0.5.1 skip
        // the slot).
        std::fs::write(
            &cnf,
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n[dn]\nO = age-plugin-yubikey\nOU = 0.5.1\nCN = keypack-test\n[ext]\n1.3.6.1.4.1.41482.3.8 = DER:{policy_der}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let key = dir.join(format!("card-{serial}.key.pem"));
        let cert = dir.join(format!("card-{serial}.cert.der"));
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key))?;
        run(Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-days", "3650", "-outform", "DER", "-key",
            ])
            .arg(&key)
            .arg("-config")
            .arg(&cnf)
            .arg("-out")
            .arg(&cert))?;
        Ok(CardSpec {
            serial,
            pin: "123456".into(),
            policy,
            key,
            cert,
            tries: dir.join(format!("card-{serial}.tries")),
        })
    }

    /// The private key file (PEM), for tests that scan output for key bytes.
    pub fn key_path(&self) -> &Path {
        &self.key
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A running emulated card; unplugged (killed) on drop.
pub struct Card {
    child: Option<Child>,
    args: Vec<std::ffi::OsString>,
}

impl Card {
    /// Plug in a card. `extra` are emulator flags such as `--exit-after-ops 1`.
    pub fn plug(spec: &CardSpec, extra: &[&str]) -> Result<Card, String> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            VPCD_PORT.to_string().into(),
            "--key".into(),
            spec.key.clone().into(),
            "--cert".into(),
            spec.cert.clone().into(),
            "--serial".into(),
            spec.serial.to_string().into(),
            "--pin".into(),
            spec.pin.clone().into(),
            "--tries-file".into(),
            spec.tries.clone().into(),
        ];
        if spec.policy == PinPolicy::Always {
            args.push("--pin-always".into());
        }
        args.extend(extra.iter().map(Into::into));
        let mut card = Card { child: None, args };
        card.replug()?;
        Ok(card)
    }

    /// Plug the card (back) in and wait until pcscd sees it.
    pub fn replug(&mut self) -> Result<(), String> {
        self.unplug();
        let child = Command::new(emulator_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the emulator: {e}"))?;
        self.child = Some(child);
        // pcscd polls vpcd for card presence; give it time to power the card on.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }

    /// Remove the card.
    pub fn unplug(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the emulator process has exited by itself (`--exit-after-ops`).
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Ask the real plugin for the identity file of this card (slot 1).
    pub fn identity_file(&self, spec: &CardSpec, out: &Path) -> Result<(), String> {
        let plugin = real_plugin()
            .ok_or("no real plugin")?
            .join("age-plugin-yubikey");
        let o = Command::new(plugin)
            .args([
                "--identity",
                "--serial",
                &spec.serial.to_string(),
                "--slot",
                "1",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        std::fs::write(out, &o.stdout).map_err(|e| e.to_string())
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        self.unplug();
    }
}
