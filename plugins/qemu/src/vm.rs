//! One host's VM: its files in the host's state folder, start, status, stop, wait for SSH.
//!
//! Files (all in the state folder, 0700): `qemu.pid` (QEMU's `-pidfile`), `qmp.sock` (QMP),
//! `serial.log` (the serial console), `run.lock` (serializes start and stop), `run.json` (what was started: pid, port, boot, pinned
//! key fingerprint, the QEMU arguments), `OVMF_VARS.fd` (the VM's UEFI variable store),
//! `known_hosts` (written by `ssh`), `screenshot.png` (0600: the guest's screen when
//! [`Vm::wait_ssh`] timed out; removed by the next start).
//!
//! Several initrds (the base and the medium's `keys.cpio.gz`) are joined in memory, never on
//! disk: a sealed memfd QEMU gets as its stdin and reads as [`JOINED_INITRD`] (see
//! [`Vm::start`]). The file older versions joined them into, `initrd.img`, holds keys and is
//! wiped wherever keypack finds it ([`Vm::status`], [`Vm::start`], [`Vm::stop`]).
//!
//! A VM counts as running when the pid in `qemu.pid` is alive, not a zombie, and its command
//! line names this pidfile (a recycled pid is not mistaken for QEMU). Anything else is stale
//! state, removed by [`Vm::status`].

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keypack_plugin::{Boot, BootDescription, Firmware};
use serde::{Deserialize, Serialize};

use crate::firmware::{self, Uefi};
use crate::ports::{self, PortChoice};
use crate::qmp::Qmp;
use crate::{QemuError, hostkey};

/// The `-initrd` path of joined initrds: QEMU's stdin, which [`Vm::start`] makes a sealed
/// memfd. Linux opens `/dev/fd/0` as the memfd itself (not a pipe), so QEMU reads it like a file.
pub const JOINED_INITRD: &str = "/dev/fd/0";

/// The `-fw_cfg` value that hands a sealed build's passphrase to the guest, where `load-keys`
/// reads `/sys/firmware/qemu_fw_cfg/by_name/opt/io.keypack.passphrase/raw`. `/dev/fd/1` is
/// QEMU's stdout, which [`Vm::start_with_passphrase`] makes a sealed memfd holding the
/// passphrase (QEMU prints nothing there, and reopening it gives the memfd's contents).
pub const PASSPHRASE_FW_CFG: &str = "name=opt/io.keypack.passphrase,file=/dev/fd/1";

/// What [`Vm::prepare`] decided. Nothing is written yet: [`Vm::start`] writes what it needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// QEMU's arguments (no `-daemonize`).
    pub args: Vec<String>,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// `bios`, or the UEFI code file.
    pub firmware: String,
    /// The SSH forward port.
    pub port: u16,
    /// `-initrd` is [`JOINED_INITRD`]: the initrds are joined in memory at start.
    pub joined_initrd: bool,
    /// The UEFI variable store template [`Vm::start`] copies into the state folder (it does
    /// not exist there yet).
    pub vars_template: Option<PathBuf>,
    /// One line for the user, e.g. why `--accel auto` fell back to TCG.
    pub notice: Option<String>,
}

/// What [`Vm::start`] started.
#[derive(Debug, Clone)]
pub struct Started {
    /// The record written to `run.json`.
    pub record: RunRecord,
    /// One line for the user (see [`Prepared::notice`]).
    pub notice: Option<String>,
}

/// The CPU model for an accelerator. The KVM probe uses the same one: a host whose CPU model
/// KVM cannot run (`failed to set MSR 0x10a`) must fail the probe, not the run.
fn cpu_model(accel: &str) -> &'static str {
    if accel == "kvm" { "host" } else { "max" }
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when `/dev/kvm` works (bounded probe), TCG otherwise.
    #[default]
    Auto,
    /// KVM or an error.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The guest's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Net {
    /// QEMU user networking with outbound access: the default, because an installer (or any
    /// guest fetching packages) needs the network. The guest can also reach services listening
    /// on the host's loopback, through 10.0.2.2.
    #[default]
    User,
    /// User networking with `restrict=on`: the guest reaches neither the host nor beyond; only
    /// the SSH forward from 127.0.0.1 comes in.
    Isolated,
}

/// Which firmware boots the VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FirmwareChoice {
    /// What the boot description asks for; UEFI found through the firmware descriptors.
    #[default]
    Auto,
    /// This UEFI firmware (code, and optionally a variable store template).
    File(Uefi),
    /// Legacy BIOS (SeaBIOS).
    Bios,
}

/// How to start the VM.
#[derive(Debug, Clone)]
pub struct Options {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// Firmware.
    pub firmware: FirmwareChoice,
    /// SSH forward port on 127.0.0.1.
    pub port: PortChoice,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The guest's network.
    pub net: Net,
    /// Raw disks attached read-write after the boot medium (`--extra-disk`), as virtio disks.
    pub extra_disks: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            qemu: default_qemu(),
            accel: Accel::Auto,
            firmware: FirmwareChoice::Auto,
            port: PortChoice::Fixed(2222),
            memory_mib: 2048,
            cpus: 2,
            net: Net::User,
            extra_disks: Vec::new(),
        }
    }
}

/// `$KEYPACK_QEMU` or `qemu-system-x86_64`, resolved over absolute `PATH` entries only (never
/// the working directory); the bare name when not found (spawning it then fails).
pub fn default_qemu() -> PathBuf {
    let name = std::env::var_os("KEYPACK_QEMU")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "qemu-system-x86_64".into());
    keypack_plugin::child::find_program(&name).unwrap_or(name)
}

/// What `keypack run` started, stored as `run.json`. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The host.
    pub host: String,
    /// QEMU's pid.
    pub pid: u32,
    /// Start time, seconds since the epoch.
    pub started_unix: u64,
    /// Address the SSH forward listens on (always `127.0.0.1`).
    pub ssh_address: String,
    /// Host port forwarded to the guest's port 22.
    pub ssh_port: u16,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// `bios`, or the UEFI code file.
    pub firmware: String,
    /// The medium that built what runs.
    pub medium: String,
    /// What runs.
    pub boot: Boot,
    /// The pinned host public key (may be empty with `--image` and no build).
    pub host_public_key: String,
    /// Its fingerprint (empty when unknown).
    pub host_key_fingerprint: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// QEMU's arguments (paths only, never key bytes).
    pub args: Vec<String>,
}

/// Whether the VM runs.
#[derive(Debug, Clone)]
pub enum Status {
    /// Running.
    Running {
        /// QEMU's pid.
        pid: u32,
        /// What was started (absent if `run.json` was lost).
        record: Option<Box<RunRecord>>,
    },
    /// Not running.
    Stopped {
        /// A pidfile or socket of a dead VM was found and removed.
        stale_cleaned: bool,
    },
}

/// How [`Vm::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing ran.
    NotRunning {
        /// Stale state was removed.
        stale_cleaned: bool,
    },
    /// The guest powered off after the ACPI power button.
    PoweredOff,
    /// The guest ignored the power button; QEMU was told to quit.
    Quit,
    /// QEMU did not quit; it was killed.
    Killed,
}

/// A host's VM.
pub struct Vm {
    host: String,
    dir: PathBuf,
}

impl Vm {
    /// The VM of `host`, with its files in `dir` (the host's state folder, already 0700).
    pub fn new(host: &str, dir: &Path) -> Self {
        Self {
            host: host.to_owned(),
            dir: dir.to_path_buf(),
        }
    }

    /// `qemu.pid`.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// `qmp.sock`.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// `serial.log`.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// `run.json`.
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("run.json")
    }
    /// `screenshot.png`: the guest's screen when `--wait-ssh` timed out.
    pub fn screenshot(&self) -> PathBuf {
        self.dir.join("screenshot.png")
    }
    /// `known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// Where keypack before the memfd joined the initrds (a copy of the keys).
    pub fn legacy_initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    /// `OVMF_VARS.fd`.
    pub fn vars(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }

    /// The stored run record, if any.
    pub fn record(&self) -> Result<Option<RunRecord>, QemuError> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| QemuError::BadState {
                        path,
                        why: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(QemuError::state(&path)(e)),
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the VM runs; removes a stale pidfile, socket and record.
    pub fn status(&self) -> Result<Status, QemuError> {
        if let Some(running) = self.running() {
            return Ok(running);
        }
        // Clean up only under the lock, so a VM that `run` is starting right now (socket made,
        // pidfile not yet written) is not mistaken for stale state.
        let _lock = self.lock()?;
        self.status_locked()
    }

    fn running(&self) -> Option<Status> {
        let pid = self.pid()?;
        is_our_qemu(pid, &self.pidfile()).then(|| Status::Running {
            pid,
            record: self.record().ok().flatten().map(Box::new),
        })
    }

    /// [`Vm::status`] for callers that hold the lock.
    fn status_locked(&self) -> Result<Status, QemuError> {
        // Every start, stop and status of a stopped VM passes here, so a key copy an older
        // version left behind does not outlive the next command.
        self.wipe_legacy_initrd()?;
        if let Some(running) = self.running() {
            return Ok(running);
        }
        let mut cleaned = false;
        for path in [self.pidfile(), self.qmp_socket(), self.record_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => cleaned = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(QemuError::state(&path)(e)),
            }
        }
        Ok(Status::Stopped {
            stale_cleaned: cleaned,
        })
    }

    /// The QEMU arguments for `desc` (no `-daemonize`; pure except for reading no files).
    pub fn qemu_args(
        &self,
        desc: &BootDescription,
        accel: &str,
        firmware: Option<&Uefi>,
        port: u16,
        opts: &Options,
    ) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let path = |p: &Path| p.display().to_string();
        push(&["-name", &format!("keypack-{}", self.host)]);
        push(&["-machine", &format!("q35,accel={accel}")]);
        push(&["-cpu", cpu_model(accel)]);
        push(&[
            "-smp",
            &opts.cpus.to_string(),
            "-m",
            &opts.memory_mib.to_string(),
        ]);
        push(&["-display", "none", "-monitor", "none", "-parallel", "none"]);
        push(&[
            "-chardev",
            &format!("file,id=serial0,path={}", opt_path(&self.serial_log())),
            "-serial",
            "chardev:serial0",
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", opt_path(&self.qmp_socket())),
        ]);
        push(&["-pidfile", &path(&self.pidfile())]);
        // The SSH forward listens on the loopback address only, never on all interfaces.
        // `restrict=on` cuts the guest off but keeps explicit forwards (QEMU's documentation).
        let restrict = match opts.net {
            Net::User => "",
            Net::Isolated => "restrict=on,",
        };
        push(&[
            "-netdev",
            &format!("user,id=net0,{restrict}hostfwd=tcp:127.0.0.1:{port}-:22"),
            "-device",
            "virtio-net-pci,netdev=net0",
            "-device",
            "virtio-rng-pci",
        ]);
        if let Some(fw) = firmware {
            match &fw.vars {
                Some(_) => push(&[
                    "-drive",
                    &format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        opt_path(&fw.code)
                    ),
                    "-drive",
                    &format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        opt_path(&self.vars())
                    ),
                ]),
                None => push(&["-bios", &path(&fw.code)]),
            }
        }
        match &desc.boot {
            Boot::Disk { image } => push(&[
                "-drive",
                &format!("file={},format=raw,if=virtio", opt_path(image)),
            ]),
            // The only boot device, so SeaBIOS and OVMF both boot it (El Torito BIOS or UEFI
            // image); read-only, as a real CD.
            Boot::Cdrom { image } => push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=ide,media=cdrom,readonly=on",
                    opt_path(image)
                ),
                "-boot",
                "order=d",
            ]),
            Boot::Kernel {
                kernel,
                initrds,
                cmdline,
                cdrom,
            } => {
                push(&["-kernel", &path(kernel)]);
                match initrds.as_slice() {
                    [] => {}
                    [one] => push(&["-initrd", &path(one)]),
                    _ => push(&["-initrd", JOINED_INITRD]),
                }
                push(&["-append", cmdline]);
                // The ISO the kernel came from, read-only, so its stage 1 finds
                // `root=LABEL=…` (QEMU's -drive syntax doubles a comma inside a value).
                if let Some(iso) = cdrom {
                    push(&[
                        "-drive",
                        &format!(
                            "file={},format=raw,if=ide,media=cdrom,readonly=on",
                            opt_path(iso)
                        ),
                    ]);
                }
            }
        }
        // `--extra-disk`: after the boot disk, so the boot disk keeps its name (vda).
        for disk in &opts.extra_disks {
            push(&[
                "-drive",
                &format!("file={},format=raw,if=virtio", opt_path(disk)),
            ]);
        }
        a
    }

    /// Checks files, firmware, accelerator and port and returns the QEMU arguments without
    /// starting QEMU or writing anything (`--dry-run` and [`Vm::start`]).
    pub fn prepare(&self, desc: &BootDescription, opts: &Options) -> Result<Prepared, QemuError> {
        let socket = self.qmp_socket();
        let len = socket.as_os_str().len();
        if len > 107 {
            return Err(QemuError::SocketPathTooLong { path: socket, len });
        }
        match &desc.boot {
            Boot::Disk { image } => need_file("disk image", image)?,
            Boot::Cdrom { image } => need_file("cdrom ISO", image)?,
            Boot::Kernel {
                kernel,
                initrds,
                cdrom,
                ..
            } => {
                need_file("kernel", kernel)?;
                for i in initrds {
                    need_file("initrd", i)?;
                }
                if let Some(iso) = cdrom {
                    need_file("cdrom ISO", iso)?;
                }
            }
        }
        for disk in &opts.extra_disks {
            check_extra_disk(disk, desc)?;
        }
        let firmware = match (&opts.firmware, desc.firmware) {
            (FirmwareChoice::Bios, _) => None,
            (FirmwareChoice::File(fw), _) => {
                need_file("firmware", &fw.code)?;
                if let Some(v) = &fw.vars {
                    need_file("firmware variable store", v)?;
                }
                Some(fw.clone())
            }
            (FirmwareChoice::Auto, Firmware::Uefi) => Some(firmware::find_uefi(&opts.qemu)?),
            (FirmwareChoice::Auto, Firmware::Bios | Firmware::Any) => None,
        };
        let mut notice = None;
        let accel = match opts.accel {
            Accel::Tcg => "tcg".to_owned(),
            Accel::Kvm => {
                probe_kvm(&opts.qemu).map_err(|why| QemuError::KvmUnavailable { why })?;
                "kvm".to_owned()
            }
            Accel::Auto => match probe_kvm(&opts.qemu) {
                Ok(()) => "kvm".to_owned(),
                Err(why) => {
                    notice = Some(tcg_fallback_notice(&why));
                    "tcg".to_owned()
                }
            },
        };
        let port = ports::pick(opts.port)?;
        let fw_name = match &firmware {
            None => "bios".to_owned(),
            Some(fw) => fw.code.display().to_string(),
        };
        let args = self.qemu_args(desc, &accel, firmware.as_ref(), port, opts);
        let vars_template = match &firmware {
            Some(Uefi {
                vars: Some(template),
                ..
            }) if !self.vars().exists() => Some(template.clone()),
            _ => None,
        };
        let joined_initrd = matches!(&desc.boot, Boot::Kernel { initrds, .. } if initrds.len() > 1);
        Ok(Prepared {
            args,
            accel,
            firmware: fw_name,
            port,
            joined_initrd,
            vars_template,
            notice,
        })
    }

    /// Wipes `initrd.img` of an older version: zeros over its blocks, then unlink. (On a
    /// copy-on-write or log-structured file system the old blocks may survive the zeros; the
    /// unlink is what is certain.) A symlink there is removed, never followed.
    fn wipe_legacy_initrd(&self) -> Result<(), QemuError> {
        let path = self.legacy_initrd();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(QemuError::state(&path)(e)),
        };
        if meta.is_file() {
            let zero = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)?;
                let zeros = vec![0u8; 64 << 10];
                let mut left = f.metadata()?.len();
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    f.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
                f.sync_all()
            };
            zero().map_err(QemuError::state(&path))?;
        }
        std::fs::remove_file(&path).map_err(QemuError::state(&path))
    }

    /// Serializes `start` and `stop` of this host's VM between keypack processes: two `run`s
    /// at once must not both see "stopped" and start two VMs. The lock goes with the returned
    /// file (and is never inherited by QEMU: Rust opens files close-on-exec).
    fn lock(&self) -> Result<std::fs::File, QemuError> {
        let path = self.dir.join("run.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(QemuError::state(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| QemuError::state(&path)(e.into()))?;
        Ok(file)
    }

    /// Starts the VM daemonized and records it in `run.json`.
    pub fn start(&self, desc: &BootDescription, opts: &Options) -> Result<Started, QemuError> {
        self.start_with_passphrase(desc, opts, None)
    }

    /// [`Vm::start`] for a sealed build: `passphrase` reaches the guest through QEMU's
    /// firmware config ([`PASSPHRASE_FW_CFG`]) from a sealed memfd — never a file on disk,
    /// argv or the environment. The runner sees the passphrase and nothing else secret.
    pub fn start_with_passphrase(
        &self,
        desc: &BootDescription,
        opts: &Options,
        passphrase: Option<&[u8]>,
    ) -> Result<Started, QemuError> {
        let _lock = self.lock()?;
        if let Status::Running { pid, record } = self.status_locked()? {
            return Err(QemuError::AlreadyRunning {
                host: self.host.clone(),
                pid,
                port: record.map(|r| r.ssh_port).unwrap_or(0),
            });
        }
        let Prepared {
            mut args,
            accel,
            firmware,
            port,
            joined_initrd,
            vars_template,
            notice,
        } = self.prepare(desc, opts)?;
        let stdout = match passphrase {
            Some(p) => {
                args.extend(["-fw_cfg".into(), PASSPHRASE_FW_CFG.into()]);
                Stdio::from(sealed_memfd("keypack-passphrase", p)?)
            }
            None => Stdio::null(),
        };
        args.push("-daemonize".into());
        // A screenshot of an earlier run's timeout would pass for this run's.
        let _ = std::fs::remove_file(self.screenshot());
        if let Some(template) = &vars_template {
            let bytes = std::fs::read(template).map_err(QemuError::state(template))?;
            keypack_plugin::output::write_private_file(&self.vars(), &bytes)
                .map_err(QemuError::state(&self.vars()))?;
        }
        let stdin = match &desc.boot {
            Boot::Kernel { initrds, .. } if joined_initrd => Stdio::from(join_initrds(initrds)?),
            _ => Stdio::null(),
        };
        // The console log may show what the guest prints about its keys: create it 0600 so
        // QEMU (which opens it with the umask's mode) truncates a private file.
        let log = self.serial_log();
        create_private_empty(&log).map_err(QemuError::state(&log))?;
        // The joined initrd goes in as stdin: std dup2()s it onto fd 0 in the child only, so
        // our memfd stays close-on-exec and no other child (or thread's child) inherits it, and
        // no unsafe `pre_exec` is needed. QEMU with `-daemonize` uses no stdio, loads the
        // initrd at machine init (before its parent returns), then points fd 0 at /dev/null:
        // the memfd is gone with the last reference, ours, dropped with this Command.
        let out = qemu_command(&opts.qemu)
            .args(&args)
            .stdin(stdin)
            .stdout(stdout)
            .output()
            .map_err(|source| QemuError::Spawn {
                qemu: opts.qemu.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if stderr.contains("host forwarding") {
                return Err(QemuError::PortInUse {
                    port,
                    owner: ports::owner(port),
                });
            }
            return Err(QemuError::QemuFailed {
                status: out.status.to_string(),
                stderr,
            });
        }
        let pid = self.pid().ok_or_else(|| QemuError::BadState {
            path: self.pidfile(),
            why: "QEMU started but wrote no pid".into(),
        })?;
        let fingerprint = if desc.host_public_key.is_empty() {
            String::new()
        } else {
            hostkey::fingerprint(&desc.host_public_key)?
        };
        args.pop(); // -daemonize: the record shows the VM's arguments
        let record = RunRecord {
            host: self.host.clone(),
            pid,
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ssh_address: "127.0.0.1".into(),
            ssh_port: port,
            accel,
            firmware,
            medium: desc.medium.clone(),
            boot: desc.boot.clone(),
            host_public_key: desc.host_public_key.clone(),
            host_key_fingerprint: fingerprint,
            qemu: opts.qemu.clone(),
            args,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| QemuError::BadState {
            path: self.record_path(),
            why: e.to_string(),
        })?;
        keypack_plugin::output::write_private_file(&self.record_path(), &json)
            .map_err(QemuError::state(&self.record_path()))?;
        Ok(Started { record, notice })
    }

    /// ACPI power-down over QMP; after `timeout`, `quit`; then SIGKILL. Cleans the state.
    pub fn stop(&self, timeout: Duration) -> Result<StopOutcome, QemuError> {
        let _lock = self.lock()?;
        let pid = match self.status_locked()? {
            Status::Stopped { stale_cleaned } => {
                return Ok(StopOutcome::NotRunning { stale_cleaned });
            }
            Status::Running { pid, .. } => pid,
        };
        let pidfile = self.pidfile();
        let gone = |t: Duration| wait_until(t, || !is_our_qemu(pid, &pidfile));
        let mut outcome = StopOutcome::Killed;
        if let Ok(mut qmp) = Qmp::connect(&self.qmp_socket(), Duration::from_secs(5)) {
            let _ = qmp.execute("system_powerdown", None);
            if gone(timeout) {
                outcome = StopOutcome::PoweredOff;
            } else {
                let _ = qmp.execute("quit", None);
                if gone(Duration::from_secs(10)) {
                    outcome = StopOutcome::Quit;
                }
            }
        }
        if outcome == StopOutcome::Killed && !gone(Duration::ZERO) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            gone(Duration::from_secs(5));
        }
        self.status_locked()?;
        Ok(outcome)
    }

    /// Waits until SSH on the forward answers with the pinned key; returns the time waited.
    /// A different key is refused at once with both fingerprints.
    pub fn wait_ssh(&self, record: &RunRecord, timeout: Duration) -> Result<Duration, QemuError> {
        let start = Instant::now();
        loop {
            if !is_our_qemu(record.pid, &self.pidfile()) {
                return Err(QemuError::VmExited {
                    log: self.serial_log(),
                });
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                let (screenshot, guest) = self.timeout_evidence();
                return Err(QemuError::SshTimeout {
                    port: record.ssh_port,
                    secs: timeout.as_secs(),
                    guest,
                    screenshot,
                    log: self.serial_log(),
                });
            }
            // Poll the banner with a short timeout, then ask for the key with a generous one.
            if hostkey::banner(record.ssh_port, left.min(Duration::from_secs(1)))
                && let Some(served) =
                    hostkey::scan(record.ssh_port, left.min(Duration::from_secs(15)))?
            {
                hostkey::check(&record.host_public_key, &served)?;
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `initrds` joined into a sealed memfd, each archive starting 4-byte aligned (the kernel
/// skips the zero padding between them). The keys stay in memory: no file, no disk block.
/// Sealed against writes, growing, shrinking and new seals, so what QEMU reads is what was
/// joined here.
fn join_initrds(initrds: &[PathBuf]) -> Result<OwnedFd, QemuError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let memfd_err = |e: std::io::Error| QemuError::Memfd { source: e };
    let fd = rustix::fs::memfd_create(
        "keypack-initrd",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| memfd_err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    // The key bytes pass through this buffer only, zeroed when dropped (on error too);
    // `std::io::copy` could fall back to a stack buffer it leaves as it was.
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 64 << 10]);
    let mut written = 0u64;
    for part in initrds {
        let mut f = std::fs::File::open(part).map_err(QemuError::state(part))?;
        let pad = ((4 - written % 4) % 4) as usize;
        file.write_all(&[0u8; 3][..pad]).map_err(memfd_err)?;
        written += pad as u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(QemuError::state(part)(e)),
            };
            file.write_all(&buf[..n]).map_err(memfd_err)?;
            written += n as u64;
        }
    }
    file.rewind().map_err(memfd_err)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| memfd_err(e.into()))?;
    Ok(file.into())
}

/// A sealed memfd holding `bytes` (the passphrase for [`PASSPHRASE_FW_CFG`]). Like the joined
/// initrd: in memory only, sealed so what QEMU reads is what was written, close-on-exec here
/// and handed to QEMU alone as one of its standard descriptors.
fn sealed_memfd(name: &str, bytes: &[u8]) -> Result<OwnedFd, QemuError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let memfd_err = |e: std::io::Error| QemuError::Memfd { source: e };
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| memfd_err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(memfd_err)?;
    file.rewind().map_err(memfd_err)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| memfd_err(e.into()))?;
    Ok(file.into())
}

impl Vm {
    /// What can be told about a guest that never answered SSH: a screenshot of its screen
    /// (QMP `screendump`, PNG) and its run state (QMP `query-status`). Best effort: a failure
    /// leaves either out rather than hiding the timeout.
    fn timeout_evidence(&self) -> (Option<PathBuf>, Option<String>) {
        let Ok(mut qmp) = Qmp::connect(&self.qmp_socket(), Duration::from_secs(5)) else {
            return (None, None);
        };
        let guest = qmp
            .execute("query-status", None)
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_owned))
            // A QAPI enum (`running`, `paused`, `guest-panicked`, …): keep it to those letters.
            .map(|s| {
                s.chars()
                    .filter(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect()
            });
        // QEMU runs in `/` (-daemonize) and opens the file itself: an absolute path, created
        // 0600 first (the screen may show what the console showed) for QEMU to truncate.
        let shot = std::path::absolute(self.screenshot()).unwrap_or_else(|_| self.screenshot());
        let dumped = create_private_empty(&shot).is_ok()
            && qmp
                .execute(
                    "screendump",
                    Some(serde_json::json!({
                        "filename": shot.display().to_string(),
                        "format": "png",
                    })),
                )
                .is_ok()
            && std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0);
        if !dumped {
            let _ = std::fs::remove_file(&shot);
        }
        (dumped.then_some(shot), guest)
    }
}

/// Creates `path` empty and 0600 (an existing file truncated, its mode reset) for QEMU to
/// open and write: QEMU creates files with the umask's mode.
fn create_private_empty(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// A path as a value inside a QEMU option string (`-drive file=…`, `-chardev …,path=…`,
/// `-qmp unix:…`): QEMU splits those at `,`, so a literal comma is doubled. Without this a
/// path such as `x.img,snapshot=on` would inject options.
pub fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// `--extra-disk FILE`: a regular file the user owns (so `keypack run` never becomes a way to
/// write a block device or someone else's file through QEMU), and not a file of the boot
/// medium (two writers of one image corrupt it).
fn check_extra_disk(path: &Path, desc: &BootDescription) -> Result<(), QemuError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| QemuError::ExtraDisk {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a block device or folder is refused)".into(),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "owned by uid {}, not by you (uid {me})",
            meta.uid()
        )));
    }
    let boot: Vec<&Path> = match &desc.boot {
        Boot::Disk { image } | Boot::Cdrom { image } => vec![image.as_path()],
        Boot::Kernel {
            kernel,
            initrds,
            cdrom,
            ..
        } => std::iter::once(kernel.as_path())
            .chain(initrds.iter().map(PathBuf::as_path))
            .chain(cdrom.as_deref())
            .collect(),
    };
    for b in boot {
        if let Ok(m) = std::fs::metadata(b)
            && m.dev() == meta.dev()
            && m.ino() == meta.ino()
        {
            return Err(refuse(format!("is the boot medium's {}", b.display())));
        }
    }
    Ok(())
}

fn need_file(what: &'static str, path: &Path) -> Result<(), QemuError> {
    let hint = if what.starts_with("firmware") {
        "pass an existing --firmware FILE, or drop it to use QEMU's firmware descriptors"
    } else {
        "run `keypack build` again, or pass --image"
    };
    let err = |source| QemuError::MissingFile {
        what,
        path: path.to_path_buf(),
        hint,
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a folder, not a file",
        )));
    }
    Ok(())
}

/// A QEMU command with a scrubbed environment: only what QEMU needs, so no variable holding
/// a secret (`SOPS_AGE_KEY`, …) ever reaches it. `qemu` is resolved over absolute `PATH`
/// entries only: a relative or `.` entry never runs `./qemu-system-x86_64`.
pub fn qemu_command(qemu: &Path) -> Command {
    keypack_plugin::child::command_for(qemu, &[])
}

/// Whether `pid` is a live (non-zombie) QEMU started with this pidfile.
pub fn is_our_qemu(pid: u32, pidfile: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // State is the first field after the parenthesised command name.
    if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
        && matches!(rest.trim_start().chars().next(), Some('Z' | 'X' | 'x'))
    {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let needle = pidfile.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == needle)
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one line `--accel auto` prints when it falls back to TCG.
fn tcg_fallback_notice(why: &str) -> String {
    // QEMU's stderr may span lines (an assertion, then "Aborted"): keep it to one.
    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("KVM is not usable ({why}); running with TCG (slower); --accel tcg skips the probe")
}

/// The KVM probe's QEMU arguments: the run's machine and CPU model (`-cpu host`), no devices.
fn probe_args() -> [&'static str; 10] {
    [
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        cpu_model("kvm"),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-qmp",
        "stdio",
    ]
}

/// Probes KVM: `/dev/kvm` opens read-write, and a QEMU with `accel=kvm` and the run's CPU model
/// answers QMP within 10 s (a nested KVM can hang instead of failing; the probe is killed then).
/// QEMU loads the vCPU registers (MSRs included) before it serves QMP, so a CPU model KVM
/// cannot run fails here.
pub fn probe_kvm(qemu: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let mut child = qemu_command(qemu)
        .args(probe_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", qemu.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(
            b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-kvm\"}\n{\"execute\":\"quit\"}\n",
        );
    }
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err("a KVM probe did not answer within 10 s (nested KVM?)".into());
    }
    let out = reader.join().unwrap_or_default();
    if out.contains("\"enabled\": true") {
        Ok(())
    } else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Err(format!("QEMU could not use KVM: {}", err.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(boot: Boot) -> BootDescription {
        BootDescription {
            version: keypack_plugin::BOOT_DESCRIPTION_VERSION,
            medium: "initrd".into(),
            host: "web1".into(),
            boot,
            firmware: Firmware::Any,
            host_public_key: String::new(),
        }
    }

    #[test]
    fn kernel_boot_arguments_hold_paths_and_a_loopback_forward() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Kernel {
            kernel: "/k/bzImage".into(),
            initrds: vec!["/k/base.img".into(), "/state/web1/keys.cpio.gz".into()],
            cmdline: "console=ttyS0 quiet".into(),
            cdrom: None,
        });
        let args = vm.qemu_args(&d, "tcg", None, 2222, &Options::default());
        let line = args.join(" ");
        assert!(
            line.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"),
            "{line}"
        );
        assert!(
            !line.contains("0.0.0.0") && !line.contains("hostfwd=tcp::"),
            "{line}"
        );
        assert!(
            line.contains("-kernel /k/bzImage -initrd /dev/fd/0 -append"),
            "{line}"
        );
        assert!(!line.contains("initrd.img"), "{line}");
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(
            args[append + 1],
            "console=ttyS0 quiet",
            "one argument, not split"
        );
        assert!(line.contains("-pidfile /state/web1/qemu.pid"));
        assert!(line.contains("-qmp unix:/state/web1/qmp.sock,server=on,wait=off"));
        assert!(line.contains("-machine q35,accel=tcg -cpu max"));
        assert!(!line.contains("pflash") && !line.contains("-daemonize"));
    }

    #[test]
    fn isolated_networking_restricts_the_guest_and_keeps_the_ssh_forward() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Disk {
            image: "/d.img".into(),
        });
        let netdev = |net| {
            let opts = Options {
                net,
                ..Options::default()
            };
            let args = vm.qemu_args(&d, "tcg", None, 2222, &opts);
            let i = args.iter().position(|a| a == "-netdev").unwrap();
            args[i + 1].clone()
        };
        assert_eq!(
            netdev(Net::Isolated),
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"
        );
        assert_eq!(
            netdev(Net::User),
            "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"
        );
        assert_eq!(Options::default().net, Net::User);
    }

    #[test]
    fn kernel_boot_from_an_iso_attaches_it_read_only() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let mut d = desc(Boot::Kernel {
            kernel: "/state/web1/iso-kernel".into(),
            initrds: vec!["/state/web1/iso-initrd".into()],
            cmdline: "init=/nix/store/x/init root=LABEL=nixos-x".into(),
            cdrom: Some("/isos/nixos,minimal.iso".into()),
        });
        let args = vm.qemu_args(&d, "tcg", None, 2222, &Options::default());
        let drives: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            drives,
            ["file=/isos/nixos,,minimal.iso,format=raw,if=ide,media=cdrom,readonly=on"],
            "{args:?}"
        );
        // Without an ISO, no drive at all.
        if let Boot::Kernel { cdrom, .. } = &mut d.boot {
            *cdrom = None;
        }
        let args = vm.qemu_args(&d, "tcg", None, 2222, &Options::default());
        assert!(
            !args.iter().any(|a| a == "-drive" || a == "-cdrom"),
            "{args:?}"
        );
        // A description written before the field existed still parses.
        let old = r#"{"kind":"kernel","kernel":"/k","initrds":[],"cmdline":""}"#;
        let boot: Boot = serde_json::from_str(old).unwrap();
        assert!(matches!(boot, Boot::Kernel { cdrom: None, .. }));
    }

    #[test]
    fn cdrom_boot_attaches_the_iso_read_only_and_boots_it_under_bios_or_uefi() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Cdrom {
            image: "/state/web1/web1,x.iso".into(),
        });
        let bios = vm.qemu_args(&d, "tcg", None, 2222, &Options::default());
        let joined = bios.join(" ");
        assert!(
            joined.contains(
                "-drive file=/state/web1/web1,,x.iso,format=raw,if=ide,media=cdrom,readonly=on -boot order=d"
            ),
            "{joined}"
        );
        assert!(
            !joined.contains("-kernel") && !joined.contains("pflash"),
            "{joined}"
        );
        let fw = Uefi {
            code: "/fw/OVMF_CODE.fd".into(),
            vars: Some("/fw/OVMF_VARS.fd".into()),
        };
        let uefi = vm
            .qemu_args(&d, "tcg", Some(&fw), 2222, &Options::default())
            .join(" ");
        assert!(
            uefi.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE.fd"),
            "{uefi}"
        );
        assert!(
            uefi.contains("media=cdrom,readonly=on -boot order=d"),
            "{uefi}"
        );
        // Descriptions of the other kinds, written before this one existed, still parse, and
        // the new kind round-trips.
        let disk: Boot = serde_json::from_str(r#"{"kind":"disk","image":"/d.img"}"#).unwrap();
        assert!(matches!(disk, Boot::Disk { .. }));
        let json = serde_json::to_string(&d.boot).unwrap();
        assert_eq!(json, r#"{"kind":"cdrom","image":"/state/web1/web1,x.iso"}"#);
        assert_eq!(serde_json::from_str::<Boot>(&json).unwrap(), d.boot);
    }

    #[test]
    fn disk_boot_with_uefi_uses_a_private_variable_store() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Disk {
            image: "/state/web1/disk.img".into(),
        });
        let fw = Uefi {
            code: "/fw/CODE.fd".into(),
            vars: Some("/fw/VARS.fd".into()),
        };
        let line = vm
            .qemu_args(&d, "kvm", Some(&fw), 2200, &Options::default())
            .join(" ");
        assert!(line.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(line.contains("if=pflash,format=raw,unit=1,file=/state/web1/OVMF_VARS.fd"));
        assert!(
            !line.contains("/fw/VARS.fd"),
            "the template is never written to"
        );
        assert!(line.contains("-drive file=/state/web1/disk.img,format=raw,if=virtio"));
        assert!(line.contains("-cpu host"));
        let unified = Uefi {
            code: "/fw/OVMF.fd".into(),
            vars: None,
        };
        let line = vm
            .qemu_args(&d, "tcg", Some(&unified), 2200, &Options::default())
            .join(" ");
        assert!(line.contains("-bios /fw/OVMF.fd") && !line.contains("pflash"));
    }

    #[test]
    fn commas_in_option_paths_are_doubled() {
        assert_eq!(
            opt_path(Path::new("x.img,snapshot=on")),
            "x.img,,snapshot=on"
        );
        assert_eq!(opt_path(Path::new("/plain/x.img")), "/plain/x.img");
        let vm = Vm::new("web1", Path::new("/st,ate/web1"));
        let d = desc(Boot::Disk {
            image: "/i/x.img,snapshot=on".into(),
        });
        let fw = Uefi {
            code: "/fw/CO,DE.fd".into(),
            vars: Some("/fw/VARS.fd".into()),
        };
        let line = vm
            .qemu_args(&d, "tcg", Some(&fw), 2222, &Options::default())
            .join(" ");
        assert!(line.contains("-drive file=/i/x.img,,snapshot=on,format=raw,if=virtio"));
        assert!(line.contains("path=/st,,ate/web1/serial.log"), "{line}");
        assert!(line.contains("-qmp unix:/st,,ate/web1/"), "{line}");
        assert!(line.contains("readonly=on,file=/fw/CO,,DE.fd"));
        assert!(line.contains("unit=1,file=/st,,ate/web1/OVMF_VARS.fd"));
    }

    #[test]
    fn a_pid_that_is_not_our_qemu_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let vm = Vm::new("web1", dir.path());
        // Our own pid is alive, but its command line does not name the pidfile.
        std::fs::write(vm.pidfile(), std::process::id().to_string()).unwrap();
        std::fs::write(vm.qmp_socket(), b"").unwrap();
        assert!(!is_our_qemu(std::process::id(), &vm.pidfile()));
        match vm.status().unwrap() {
            Status::Stopped { stale_cleaned } => assert!(stale_cleaned),
            Status::Running { .. } => panic!("a recycled pid counted as running"),
        }
        assert!(!vm.pidfile().exists() && !vm.qmp_socket().exists());
        assert_eq!(
            vm.stop(Duration::from_secs(1)).unwrap(),
            StopOutcome::NotRunning {
                stale_cleaned: false
            }
        );
    }

    #[test]
    fn joined_initrds_are_a_sealed_aligned_memfd() {
        use rustix::fs::SealFlags;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"12345").unwrap();
        std::fs::write(&b, b"keys").unwrap();
        let fd = join_initrds(&[a, b]).unwrap();
        // QEMU opens the path, not the descriptor: read it the same way.
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        assert_eq!(std::fs::read(&path).unwrap(), b"12345\0\0\0keys");
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        let all = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        assert!(seals.contains(all), "{seals:?}");
        assert!(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(b"x")
                .is_err()
        );
        // Close-on-exec on our side: only the child's fd 0 (a dup2) reaches QEMU.
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        // Nothing was written next to the parts.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn prepare_writes_nothing_and_status_wipes_an_old_joined_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let vm = Vm::new("web1", dir.path());
        let (k, a, b) = (
            dir.path().join("k"),
            dir.path().join("a"),
            dir.path().join("b"),
        );
        for p in [&k, &a, &b] {
            std::fs::write(p, b"x").unwrap();
        }
        let template = dir.path().join("VARS.template");
        std::fs::write(&template, b"vars").unwrap();
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let d = desc(Boot::Kernel {
            kernel: k,
            initrds: vec![a, b],
            cmdline: String::new(),
            cdrom: None,
        });
        let opts = Options {
            accel: Accel::Tcg,
            port: PortChoice::Auto,
            firmware: FirmwareChoice::File(Uefi {
                code: template.clone(),
                vars: Some(template.clone()),
            }),
            ..Options::default()
        };
        let p = vm.prepare(&d, &opts).unwrap();
        assert!(p.joined_initrd && p.vars_template == Some(template));
        assert!(
            p.args
                .windows(2)
                .any(|w| w[0] == "-initrd" && w[1] == JOINED_INITRD)
        );
        let after: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(before, after, "prepare wrote a file");

        // An old version's joined initrd: zeroed (through a second link, the blocks are the
        // same) and unlinked.
        std::fs::write(vm.legacy_initrd(), b"old keys").unwrap();
        let witness = dir.path().join("witness");
        std::fs::hard_link(vm.legacy_initrd(), &witness).unwrap();
        assert!(matches!(vm.status().unwrap(), Status::Stopped { .. }));
        assert!(!vm.legacy_initrd().exists());
        assert_eq!(std::fs::read(&witness).unwrap(), [0u8; 8]);
        // A symlink there is removed, its target untouched.
        std::os::unix::fs::symlink(&witness, vm.legacy_initrd()).unwrap();
        std::fs::write(&witness, b"target").unwrap();
        vm.stop(Duration::from_secs(1)).unwrap();
        assert!(std::fs::symlink_metadata(vm.legacy_initrd()).is_err());
        assert_eq!(std::fs::read(&witness).unwrap(), b"target");
    }

    #[test]
    fn the_kvm_probe_uses_the_cpu_model_of_the_run() {
        let probe = probe_args().join(" ");
        assert!(
            probe.contains("-machine q35,accel=kvm -cpu host"),
            "{probe}"
        );
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Disk {
            image: "/d.img".into(),
        });
        let run = vm
            .qemu_args(&d, "kvm", None, 2222, &Options::default())
            .join(" ");
        assert!(run.contains("-machine q35,accel=kvm -cpu host "), "{run}");
        // A probe that fails (here: a QEMU that is not there) means TCG and one line saying why.
        let missing = Path::new("/nonexistent/qemu-system-x86_64");
        let why = probe_kvm(missing).unwrap_err();
        let notice = tcg_fallback_notice(&format!("{why}\nAborted"));
        assert!(!notice.contains('\n'), "{notice}");
        assert!(notice.contains("running with TCG") && notice.ends_with("skips the probe"));
        let p = vm_with_tmp(|vm| {
            let d = desc(Boot::Disk {
                image: "/dev/null".into(),
            });
            let opts = Options {
                qemu: missing.into(),
                port: PortChoice::Auto,
                firmware: FirmwareChoice::Bios,
                ..Options::default()
            };
            vm.prepare(&d, &opts).unwrap()
        });
        assert_eq!(p.accel, "tcg");
        assert!(p.notice.unwrap().starts_with("KVM is not usable ("));
    }

    fn vm_with_tmp<T>(f: impl FnOnce(&Vm) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        f(&Vm::new("web1", dir.path()))
    }

    #[test]
    fn the_qemu_environment_is_scrubbed() {
        let cmd = qemu_command(Path::new("qemu-system-x86_64"));
        let vars: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| v.map(|_| k.to_string_lossy().into_owned()))
            .collect();
        for v in &vars {
            assert!(
                [
                    "PATH",
                    "HOME",
                    "LANG",
                    "LC_ALL",
                    "TMPDIR",
                    "XDG_RUNTIME_DIR"
                ]
                .contains(&v.as_str()),
                "{v} passed to QEMU"
            );
        }
    }

    #[test]
    fn extra_disks_follow_the_boot_disk_read_write() {
        let vm = Vm::new("web1", Path::new("/state/web1"));
        let d = desc(Boot::Kernel {
            kernel: "/k/bzImage".into(),
            initrds: vec!["/k/initrd".into()],
            cmdline: "console=ttyS0".into(),
            cdrom: None,
        });
        let opts = Options {
            extra_disks: vec!["/i/ventoy.img".into()],
            ..Options::default()
        };
        let args = vm.qemu_args(&d, "tcg", None, 2222, &opts);
        let drives: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| &w[1])
            .collect();
        assert_eq!(drives, ["file=/i/ventoy.img,format=raw,if=virtio"]);
        let d = desc(Boot::Disk {
            image: "/i/boot.img".into(),
        });
        let args = vm.qemu_args(&d, "tcg", None, 2222, &opts);
        let drives: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            drives,
            [
                "file=/i/boot.img,format=raw,if=virtio",
                "file=/i/ventoy.img,format=raw,if=virtio"
            ],
            "the boot disk stays first (vda)"
        );
    }

    #[test]
    fn extra_disk_must_be_an_own_regular_file_and_not_the_boot_medium() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.img");
        let extra = dir.path().join("extra.img");
        std::fs::write(&boot, b"boot").unwrap();
        std::fs::write(&extra, b"extra").unwrap();
        let d = desc(Boot::Disk {
            image: boot.clone(),
        });
        check_extra_disk(&extra, &d).expect("an own regular file is accepted");
        let why = |p: &Path| match check_extra_disk(p, &d) {
            Err(QemuError::ExtraDisk { why, .. }) => why,
            other => panic!("{p:?}: {other:?}"),
        };
        assert!(why(Path::new("/dev/null")).contains("not a regular file"));
        assert!(why(dir.path()).contains("not a regular file"));
        assert!(why(&boot).contains("is the boot medium"));
        let link = dir.path().join("link.img");
        std::fs::hard_link(&boot, &link).unwrap();
        assert!(
            why(&link).contains("is the boot medium"),
            "same inode, other name"
        );
        assert!(why(&dir.path().join("missing.img")).contains("No such file"));
        if rustix::process::geteuid().is_root() {
            let theirs = dir.path().join("theirs.img");
            std::fs::write(&theirs, b"x").unwrap();
            rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(4242)), None).unwrap();
            assert!(why(&theirs).contains("owned by uid 4242"));
        }
    }
}
