//! `keypack run --runner NAME` with an external runner program (`keypack-runner-NAME`):
//! starting the machine through it, recording what runs (`runner.json` in the host's state
//! folder) so that `status`, `ssh`, `log` and `stop` find it, and waiting for SSH with the
//! pinned host key, as for the built-in QEMU runner.
//!
//! Does not boot anything itself: the runner does, in its own folder `runner-NAME` of the
//! state folder. It gets the boot description (paths) and, for a sealed build, the passphrase
//! keypack checked, as an inherited sealed memfd; nothing else secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use keypack_layout::HostName;
use keypack_plugin::BootDescription;
use keypack_plugin::external::protocol::{Network, StartRequest, StopOutcome, StopRequest};
use keypack_runner_qemu::hostkey;
use serde::{Deserialize, Serialize};

/// File in the host's state folder naming the machine an external runner started.
pub const RECORD_FILE: &str = "runner.json";

/// What an external runner started. Holds no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalRun {
    /// `NAME` of `keypack-runner-NAME`.
    pub runner: String,
    /// The program (asked again for `stop`).
    pub program: PathBuf,
    /// The runner's folder.
    pub runner_dir: PathBuf,
    /// The machine's process, as the runner named it.
    pub pid: u32,
    /// Start time, seconds since the epoch.
    pub started_unix: u64,
    /// Port on 127.0.0.1 that reaches the guest's SSH.
    pub ssh_port: u16,
    /// The medium that built what runs.
    pub medium: String,
    /// The pinned host public key.
    pub host_public_key: String,
    /// Its fingerprint.
    pub host_key_fingerprint: String,
    /// The console log, when the runner keeps one.
    pub console: Option<PathBuf>,
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join(RECORD_FILE)
}

/// Whether the recorded machine still runs.
pub fn is_running(r: &ExternalRun) -> bool {
    alive(r.pid)
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The record, whether or not its machine still runs.
pub fn load(dir: &Path) -> Result<Option<ExternalRun>> {
    let path = record_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

/// The machine an external runner started, if it still runs. A record whose machine is gone
/// is removed.
pub fn running(dir: &Path) -> Result<Option<ExternalRun>> {
    match load(dir)? {
        Some(r) if alive(r.pid) => Ok(Some(r)),
        Some(_) => {
            let _ = std::fs::remove_file(record_path(dir));
            Ok(None)
        }
        None => Ok(None),
    }
}

/// What `keypack run` asks of an external runner.
pub struct Start<'a> {
    /// The host.
    pub host: &'a HostName,
    /// Its state folder.
    pub dir: &'a Path,
    /// The runner's name and program.
    pub runner: (&'a str, &'a Path),
    /// What to boot.
    pub desc: &'a BootDescription,
    /// The SSH port (already picked).
    pub ssh_port: u16,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Guest network.
    pub network: Network,
    /// Disks attached read-write.
    pub extra_disks: Vec<PathBuf>,
}

/// Starts the machine through the runner and records it.
pub fn start(s: &Start<'_>, passphrase: Option<&[u8]>) -> Result<ExternalRun> {
    let (name, program) = s.runner;
    let runner_dir = s.dir.join(format!("runner-{name}"));
    keypack_plugin::output::ensure_private_dir(&runner_dir)
        .with_context(|| format!("{}", runner_dir.display()))?;
    let req = StartRequest {
        host: s.host.as_str().to_owned(),
        boot: s.desc.clone(),
        state_dir: runner_dir.clone(),
        ssh_port: s.ssh_port,
        memory_mib: s.memory_mib,
        cpus: s.cpus,
        network: s.network,
        extra_disks: s.extra_disks.clone(),
        passphrase_fd: None,
        passphrase_len: 0,
    };
    let started = keypack_plugin::external::start_runner(program, name, req, passphrase)
        .with_context(|| format!("runner {name}"))?;
    if let Some(notice) = &started.notice {
        eprintln!(
            "note: {name}: {}",
            keypack_plugin::external::session::printable(notice)
        );
    }
    if !alive(started.pid) {
        bail!(
            "runner {name} answered `started` with pid {}, which does not run",
            started.pid
        );
    }
    let fingerprint = if s.desc.host_public_key.is_empty() {
        String::new()
    } else {
        hostkey::fingerprint(&s.desc.host_public_key)?
    };
    let record = ExternalRun {
        runner: name.to_owned(),
        program: program.to_owned(),
        runner_dir,
        pid: started.pid,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        ssh_port: s.ssh_port,
        medium: s.desc.medium.clone(),
        host_public_key: s.desc.host_public_key.clone(),
        host_key_fingerprint: fingerprint,
        console: started.console,
    };
    keypack_plugin::output::write_private_file(
        &record_path(s.dir),
        &serde_json::to_vec_pretty(&record)?,
    )
    .with_context(|| format!("{}", record_path(s.dir).display()))?;
    Ok(record)
}

/// Waits until SSH on the recorded port answers with the pinned key; returns the time waited.
pub fn wait_ssh(r: &ExternalRun, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if !alive(r.pid) {
            bail!(
                "the machine of runner {} (pid {}) exited before SSH answered{}",
                r.runner,
                r.pid,
                r.console
                    .as_ref()
                    .map(|c| format!("; console: {}", c.display()))
                    .unwrap_or_default()
            );
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!(
                "SSH on 127.0.0.1:{} did not answer within {} s (runner {})",
                r.ssh_port,
                timeout.as_secs(),
                r.runner
            );
        }
        if hostkey::banner(r.ssh_port, left.min(Duration::from_secs(1)))
            && let Some(served) = hostkey::scan(r.ssh_port, left.min(Duration::from_secs(15)))?
        {
            hostkey::check(&r.host_public_key, &served)?;
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the recorded machine through its runner and removes the record; `None` when there
/// was no record.
pub fn stop(dir: &Path, host: &HostName, timeout: u64) -> Result<Option<(String, StopOutcome)>> {
    let Some(r) = load(dir)? else {
        return Ok(None);
    };
    let outcome = if alive(r.pid) {
        keypack_plugin::external::stop_runner(
            &r.program,
            &r.runner,
            StopRequest {
                host: host.as_str().to_owned(),
                state_dir: r.runner_dir.clone(),
                pid: r.pid,
                timeout_secs: timeout,
            },
        )
        .with_context(|| format!("runner {}", r.runner))?
    } else {
        StopOutcome::NotRunning
    };
    if alive(r.pid) {
        bail!(
            "runner {} answered `stopped` but pid {} still runs; {} kept",
            r.runner,
            r.pid,
            record_path(dir).display()
        );
    }
    std::fs::remove_file(record_path(dir))
        .with_context(|| format!("{}", record_path(dir).display()))?;
    Ok(Some((r.runner, outcome)))
}
