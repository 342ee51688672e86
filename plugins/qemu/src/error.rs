use std::path::PathBuf;

/// What can go wrong running a VM. Variants name paths, ports and pids, never key material.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A file the boot needs is missing.
    #[error("{what} {path} is missing or unusable ({hint})")]
    MissingFile {
        /// `kernel`, `initrd`, `disk image`, `firmware`, …
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An `--extra-disk` that may not be attached.
    #[error("--extra-disk {path}: {why}")]
    ExtraDisk {
        /// The path given.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// No UEFI firmware was found.
    #[error(
        "no UEFI firmware found (searched the QEMU firmware descriptors in {searched}); install OVMF (Debian: apt-get install ovmf), pass --firmware FILE, or --bios for a legacy boot"
    )]
    NoFirmware {
        /// The folders searched, `:`-separated.
        searched: String,
    },
    /// The SSH forward port is taken.
    #[error("127.0.0.1:{port} is already in use{}; pass --port N or --port auto", owner.as_ref().map(|o| format!(" by {o}")).unwrap_or_else(|| " (owner not visible; try `ss -ltnp`)".into()))]
    PortInUse {
        /// The port.
        port: u16,
        /// `pid 123 (python3)` when found.
        owner: Option<String>,
    },
    /// The VM already runs.
    #[error(
        "the VM of {host} is already running (pid {pid}, ssh on 127.0.0.1:{port}); `keypack stop -H {host}` first, or `keypack restart`"
    )]
    AlreadyRunning {
        /// The host.
        host: String,
        /// QEMU's pid.
        pid: u32,
        /// The SSH forward port.
        port: u16,
    },
    /// The VM does not run.
    #[error("the VM of {host} is not running; start it with `keypack run -H {host}`")]
    NotRunning {
        /// The host.
        host: String,
    },
    /// KVM was requested but cannot be used.
    #[error("--accel kvm: {why}")]
    KvmUnavailable {
        /// Why.
        why: String,
    },
    /// QEMU could not be started.
    #[error("starting {qemu} (Debian: apt-get install qemu-system-x86)")]
    Spawn {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited with an error before the VM was up.
    #[error("QEMU failed ({status}): {stderr}")]
    QemuFailed {
        /// Exit status.
        status: String,
        /// QEMU's stderr, trimmed.
        stderr: String,
    },
    /// A state file could not be read or written.
    #[error("state file {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A state file is malformed.
    #[error("{path}: {why}")]
    BadState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The QMP conversation failed.
    #[error("QMP on {socket}: {why}")]
    Qmp {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The unix socket path does not fit in `sun_path`.
    #[error(
        "{path} is too long for a unix socket ({len} bytes, at most 107); set KEYPACK_STATE_DIR to a shorter folder"
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The VM answered SSH with another host key.
    #[error(
        "the VM's SSH host key does not match the packed one: expected {expected}, got {got}; refusing to connect"
    )]
    HostKeyMismatch {
        /// Fingerprint of the packed key.
        expected: String,
        /// Fingerprint the VM presented.
        got: String,
    },
    /// The packed host public key is unusable.
    #[error("the pinned host public key is not an OpenSSH public key: {why}")]
    BadHostKey {
        /// Why.
        why: String,
    },
    /// SSH did not answer in time.
    #[error(
        "no SSH answer on 127.0.0.1:{port} after {secs} s{}{}; the console log: {} (`keypack log`)",
        guest.as_ref().map(|g| format!("; QEMU reports the guest {}", guest_state(g))).unwrap_or_default(),
        screenshot.as_ref().map(|p| format!("; screenshot of its screen: {}", p.display())).unwrap_or_default(),
        log.display()
    )]
    SshTimeout {
        /// The port.
        port: u16,
        /// Seconds waited.
        secs: u64,
        /// QEMU's run state of the guest (`running`, `paused`, `guest-panicked`, …), if known.
        guest: Option<String>,
        /// The PNG of the guest's screen, if QEMU could write it.
        screenshot: Option<PathBuf>,
        /// The serial log.
        log: PathBuf,
    },
    /// The VM exited while waiting.
    #[error("the VM exited while waiting for SSH; see `keypack log` ({log})")]
    VmExited {
        /// The serial log.
        log: PathBuf,
    },
    /// The in-memory file for the joined initrds could not be made.
    #[error("joining the initrds in memory (memfd)")]
    Memfd {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tool (ssh-keyscan) is missing.
    #[error("running {tool} (Debian: apt-get install openssh-client)")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// QEMU's run state as words: what the guest is doing.
fn guest_state(status: &str) -> String {
    match status {
        "running" => "running, so it is still booting, or has no sshd or no network".into(),
        "paused" => "paused".into(),
        "guest-panicked" => "panicked".into(),
        "shutdown" => "shut down".into(),
        "internal-error" => "stopped on an internal error".into(),
        other => format!("in state {other}"),
    }
}

impl QemuError {
    pub(crate) fn state(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> QemuError + '_ {
        move |source| QemuError::State {
            path: path.to_path_buf(),
            source,
        }
    }
}
