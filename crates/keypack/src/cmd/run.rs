//! The VM verbs: `run`, `stop`, `restart`, `status`, `log`, `ssh`. Glue between the CLI, the
//! host's state folder (`state.rs`), the last build's `boot.json` and the runner that does the
//! work: the built-in QEMU runner (`keypack-runner-qemu`), or an external runner program with
//! `--runner NAME` (`run_external.rs`, whose record every verb here consults first).
//!
//! Does not build media (`keypack build` writes `boot.json`) and never handles key bytes: the
//! runner gets paths (and a sealed build's checked passphrase, for the guest), and `ssh` pins
//! the packed *public* host key.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use keypack_layout::HostName;
use keypack_plugin::runner::read_boot_description;
use keypack_plugin::{BOOT_DESCRIPTION_VERSION, Boot, BootDescription, Firmware};
use keypack_runner_qemu::{
    Accel, FirmwareChoice, Net, Options, PortChoice, RunRecord, Status, StopOutcome, Uefi, Vm,
    hostkey,
};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::cmd::run_external;
use crate::state;

fn parse_host(s: &str) -> Result<HostName, String> {
    HostName::new(s).map_err(|e| e.to_string())
}

/// Flags naming a host (and, for `stop`, how long to wait).
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// The host whose VM this is.
    #[arg(short = 'H', long, value_parser = parse_host)]
    pub host: HostName,
    /// Seconds to wait for the guest to power off after the ACPI power button before QEMU is
    /// told to quit.
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub timeout: u64,
}

/// Accelerator choice.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM when /dev/kvm works (bounded probe), TCG otherwise.
    Auto,
    /// KVM, or an error.
    Kvm,
    /// Software emulation (slow, always available).
    Tcg,
}

/// Guest network choice.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NetArg {
    /// QEMU user networking with outbound access (an installer needs it); the guest can also
    /// reach the host's loopback services through 10.0.2.2.
    User,
    /// restrict=on: the guest reaches neither the host nor the outside; the SSH forward stays.
    Isolated,
}

/// Flags of `keypack run` and `keypack restart`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The host whose last build to boot.
    #[arg(short = 'H', long, value_parser = parse_host)]
    pub host: HostName,
    /// Boot this raw disk image instead of the last build.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// UEFI firmware code (or a unified OVMF.fd) instead of the one found through QEMU's
    /// firmware descriptors.
    #[arg(long, value_name = "FILE", conflicts_with = "bios")]
    pub firmware: Option<PathBuf>,
    /// Variable store template for --firmware (copied into the state folder once).
    #[arg(long, value_name = "FILE", requires = "firmware")]
    pub firmware_vars: Option<PathBuf>,
    /// Legacy BIOS boot (SeaBIOS) instead of UEFI.
    #[arg(long)]
    pub bios: bool,
    /// Boot with UEFI firmware (found through QEMU's firmware descriptors) even when the build
    /// does not need it (a direct kernel boot).
    #[arg(long, conflicts_with_all = ["bios", "firmware"])]
    pub uefi: bool,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Host port forwarded to the guest's SSH, on 127.0.0.1 only: a number or `auto` (any free
    /// port, picked again if another VM takes it before this one binds it).
    #[arg(long, value_name = "N|auto", default_value = "2222")]
    pub port: PortChoice,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Guest network. `user` (the default) gives the guest outbound access, which an installer
    /// needs, but also lets it reach services listening on the host's loopback through
    /// 10.0.2.2. `isolated` (QEMU `restrict=on`) cuts the guest off from the host and the
    /// outside; only the SSH forward from 127.0.0.1 comes in.
    #[arg(long, value_enum, value_name = "user|isolated", default_value = "user")]
    pub net: NetArg,
    /// Return only once SSH answers with the pinned host key.
    #[arg(long)]
    pub wait_ssh: bool,
    /// Seconds --wait-ssh waits (and `restart` waits for the old VM to power off).
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// Print the QEMU command line instead of starting it.
    #[arg(long)]
    pub dry_run: bool,
    /// The runner that boots it: the built-in `qemu`, or an external runner program
    /// `keypack-runner-NAME` (`keypack plugins` lists them). An external runner takes no QEMU
    /// options (--firmware, --accel, --dry-run).
    #[arg(long, value_name = "NAME", default_value = keypack_runner_qemu::NAME)]
    pub runner: String,
    /// Attach this raw disk image read-write as a further virtio disk after the boot medium
    /// (repeatable). It must be a regular file you own and not the boot medium; the guest may
    /// change it (e.g. a Ventoy image that `--burn-after-boot` burns)
    #[arg(long, value_name = "FILE")]
    pub extra_disk: Vec<PathBuf>,
}

/// Flags of `keypack status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The host.
    #[arg(short = 'H', long, value_parser = parse_host)]
    pub host: HostName,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `keypack log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The host.
    #[arg(short = 'H', long, value_parser = parse_host)]
    pub host: HostName,
    /// Keep printing what the console writes until the VM stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the console's bytes as they are. Without it, control characters (escape
    /// sequences from the guest) are shown escaped, so a guest cannot drive your terminal.
    #[arg(long)]
    pub raw: bool,
}

/// Flags of `keypack ssh`.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// The host.
    #[arg(short = 'H', long, value_parser = parse_host)]
    pub host: HostName,
    /// Remote user.
    #[arg(long, short = 'u', default_value = "root")]
    pub user: String,
    /// Identity file for ssh (-i), with IdentitiesOnly.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print a ~/.ssh/config block for the VM instead of connecting.
    #[arg(long)]
    pub print_config: bool,
    /// Arguments for ssh after the destination (a remote command, or more options).
    #[arg(last = true, value_name = "SSH_ARGS")]
    pub args: Vec<String>,
}

fn vm_for(host: &HostName) -> Result<(Vm, PathBuf)> {
    let dir = state::host_dir(host)?;
    Ok((Vm::new(host.as_str(), &dir), dir))
}

fn description(args: &RunArgs, dir: &std::path::Path) -> Result<BootDescription> {
    let last = read_boot_description(dir);
    let Some(image) = &args.image else {
        let desc = last?;
        if desc.host != args.host.as_str() {
            bail!(
                "{}: the boot description is for host {}, not {}",
                dir.join(keypack_plugin::runner::BOOT_DESCRIPTION_FILE)
                    .display(),
                desc.host,
                args.host
            );
        }
        return Ok(if args.uefi {
            BootDescription {
                firmware: Firmware::Uefi,
                ..desc
            }
        } else {
            desc
        });
    };
    let image =
        std::path::absolute(image).with_context(|| format!("disk image {}", image.display()))?;
    Ok(BootDescription {
        version: BOOT_DESCRIPTION_VERSION,
        medium: "image".into(),
        host: args.host.as_str().to_owned(),
        boot: Boot::Disk { image },
        firmware: if args.bios {
            Firmware::Bios
        } else {
            Firmware::Uefi
        },
        // The last build's key stays pinned when booting an image by hand.
        host_public_key: last.map(|d| d.host_public_key).unwrap_or_default(),
    })
}

fn options(args: &RunArgs) -> Options {
    Options {
        qemu: keypack_runner_qemu::vm::default_qemu(),
        accel: match args.accel {
            AccelArg::Auto => Accel::Auto,
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        },
        firmware: if args.bios {
            FirmwareChoice::Bios
        } else if let Some(code) = &args.firmware {
            FirmwareChoice::File(Uefi {
                code: code.clone(),
                vars: args.firmware_vars.clone(),
            })
        } else {
            FirmwareChoice::Auto
        },
        port: args.port,
        memory_mib: args.memory,
        cpus: args.cpus,
        net: match args.net {
            NetArg::User => Net::User,
            NetArg::Isolated => Net::Isolated,
        },
        extra_disks: args
            .extra_disk
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect(),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `keypack run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let (vm, dir) = vm_for(&args.host)?;
    let desc = description(&args, &dir)?;
    if !crate::media::is_built_in_runner(&args.runner) {
        return run_external(&args, &vm, &dir, desc);
    }
    if !args.dry_run
        && let Some(r) = run_external::running(&dir)?
    {
        bail!(already_runs(&args.host, r.pid, &r.runner));
    }
    let opts = options(&args);
    if args.dry_run {
        // Writes nothing: neither the joined initrd (it holds the keys) nor the variable store.
        let prepared = vm.prepare(&desc, &opts)?;
        if let Some(notice) = &prepared.notice {
            eprintln!("note: {notice}");
        }
        let mut line = shell_quote(&opts.qemu.display().to_string());
        for a in &prepared.args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        println!("{line}");
        if prepared.joined_initrd {
            eprintln!(
                "note: -initrd {} is the initrds joined with the keys, which `keypack run` hands QEMU in memory as its stdin (a sealed memfd, never a file); --dry-run joins nothing",
                keypack_runner_qemu::vm::JOINED_INITRD
            );
        }
        if super::seal::sealed_blob_of(&desc)?.is_some() {
            eprintln!(
                "note: this build is sealed; `keypack run` asks for the passphrase, checks it, and adds -fw_cfg {} (a sealed memfd as QEMU's stdout)",
                keypack_runner_qemu::vm::PASSPHRASE_FW_CFG
            );
        }
        if let Some(template) = &prepared.vars_template {
            eprintln!(
                "note: {} does not exist yet; `keypack run` copies it from {} (--dry-run writes nothing)",
                vm.vars().display(),
                template.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let passphrase = sealed_passphrase(&args.host, &desc)?;
    let secret = passphrase.as_ref().map(|p| p.expose_secret().as_bytes());
    let started = with_port_retries(args.port, "QEMU", || {
        vm.start_with_passphrase(&desc, &opts, secret)
            .map_err(|e| Failed {
                taken: match &e {
                    keypack_runner_qemu::QemuError::PortInUse { port, .. } => Some(*port),
                    _ => None,
                },
                error: e.into(),
            })
    })?;
    drop(passphrase);
    if let Some(notice) = &started.notice {
        eprintln!("note: {notice}");
    }
    let record = started.record;
    eprintln!(
        "started {} (pid {}, {}, ssh on 127.0.0.1:{}); console: {}",
        args.host,
        record.pid,
        record.accel,
        record.ssh_port,
        vm.serial_log().display()
    );
    if args.wait_ssh {
        if record.host_public_key.is_empty() {
            bail!("--wait-ssh needs a pinned host key: build the host first (`keypack build`)");
        }
        let waited = vm
            .wait_ssh(&record, Duration::from_secs(args.timeout))
            .inspect_err(|e| {
                if let keypack_runner_qemu::QemuError::SshTimeout { log, .. } = e {
                    print_console_tail(log);
                }
            })?;
        eprintln!(
            "SSH answers with the pinned host key {} after {:.1} s",
            record.host_key_fingerprint,
            waited.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `--port auto` picks again when the port it picked is taken before the machine
/// binds it.
const AUTO_PORT_TRIES: u32 = 5;

/// A failed start; `taken` names the SSH port when it was taken before the machine bound it.
struct Failed {
    error: anyhow::Error,
    taken: Option<u16>,
}

/// Runs `start` again when it lost its SSH port to another machine starting at the same
/// moment: `--port auto` picked a port that was free then, and any other free one will do. A
/// fixed port is the user's choice, and its failure is the error.
fn with_port_retries<T>(
    port: PortChoice,
    who: &str,
    mut start: impl FnMut() -> Result<T, Failed>,
) -> Result<T> {
    let mut tries = 0;
    loop {
        match start() {
            Ok(v) => return Ok(v),
            Err(Failed {
                taken: Some(taken), ..
            }) if matches!(port, PortChoice::Auto) && tries < AUTO_PORT_TRIES => {
                tries += 1;
                eprintln!("note: port {taken} was taken while {who} started; trying another");
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// A sealed build's passphrase, asked once and checked against the medium's own sealed blob
/// before anything starts (a typo is caught here, not at the guest's console); `None` for an
/// unsealed build.
fn sealed_passphrase(
    host: &HostName,
    desc: &BootDescription,
) -> Result<Option<secrecy::SecretString>> {
    super::seal::sealed_blob_of(desc)?
        .map(|blob| check_run_passphrase(host, &blob))
        .transpose()
}

/// The refusal to start a second machine for `host`.
fn already_runs(host: &HostName, pid: u32, runner: &str) -> String {
    format!("{host} already runs (pid {pid}, runner {runner}); `keypack stop -H {host}` first")
}

/// `keypack run --runner NAME` with an external runner.
fn run_external(
    args: &RunArgs,
    vm: &Vm,
    dir: &std::path::Path,
    desc: BootDescription,
) -> Result<ExitCode> {
    let qemu_only = [
        (args.firmware.is_some(), "--firmware"),
        (!matches!(args.accel, AccelArg::Auto), "--accel"),
        (args.dry_run, "--dry-run"),
    ];
    if let Some((_, flag)) = qemu_only.iter().find(|(given, _)| *given) {
        bail!(
            "{flag} is an option of the built-in QEMU runner; runner {} takes none",
            args.runner
        );
    }
    let program = crate::media::external_runner(&args.runner)?;
    if let Status::Running { pid, .. } = vm.status()? {
        bail!(already_runs(&args.host, pid, keypack_runner_qemu::NAME));
    }
    if let Some(r) = run_external::running(dir)? {
        bail!(already_runs(&args.host, r.pid, &r.runner));
    }
    let desc = if args.bios {
        BootDescription {
            firmware: Firmware::Bios,
            ..desc
        }
    } else {
        desc
    };
    let passphrase = sealed_passphrase(&args.host, &desc)?;
    let secret = passphrase.as_ref().map(|p| p.expose_secret().as_bytes());
    let who = format!("runner {}", args.runner);
    let record = with_port_retries(args.port, &who, || {
        let ssh_port = keypack_runner_qemu::ports::pick(args.port).map_err(|e| Failed {
            error: e.into(),
            taken: None,
        })?;
        let start = run_external::Start {
            host: &args.host,
            dir,
            runner: (&args.runner, &program),
            desc: &desc,
            ssh_port,
            memory_mib: args.memory,
            cpus: args.cpus,
            network: match args.net {
                NetArg::User => keypack_plugin::external::protocol::Network::User,
                NetArg::Isolated => keypack_plugin::external::protocol::Network::Isolated,
            },
            extra_disks: options(args).extra_disks,
        };
        // The runner's error does not say why; the port being busy now does.
        run_external::start(&start, secret).map_err(|error| Failed {
            error,
            taken: keypack_runner_qemu::ports::pick(PortChoice::Fixed(ssh_port))
                .is_err()
                .then_some(ssh_port),
        })
    })?;
    drop(passphrase);
    eprintln!(
        "started {} (pid {}, runner {} [external: {}], ssh on 127.0.0.1:{}){}",
        args.host,
        record.pid,
        record.runner,
        program.display(),
        record.ssh_port,
        record
            .console
            .as_ref()
            .map(|c| format!("; console: {}", c.display()))
            .unwrap_or_default()
    );
    if args.wait_ssh {
        if record.host_public_key.is_empty() {
            bail!("--wait-ssh needs a pinned host key: build the host first (`keypack build`)");
        }
        let waited = run_external::wait_ssh(&record, Duration::from_secs(args.timeout))?;
        eprintln!(
            "SSH answers with the pinned host key {} after {:.1} s",
            record.host_key_fingerprint,
            waited.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks for a sealed build's passphrase once and checks it against `blob` (no VM yet).
fn check_run_passphrase(host: &HostName, blob: &[u8]) -> Result<secrecy::SecretString> {
    let what = format!("sealed keys of host {host}");
    let passphrase = keypack_identity::passphrase(&what)
        .context("this build is sealed (--seal passphrase); no VM was started")?;
    // The check consumes its copy (age's scrypt identity owns the passphrase it is given).
    let copy = secrecy::SecretString::from(String::from(passphrase.expose_secret()));
    keypack_bundle::check_passphrase(blob, copy).map_err(|e| match e {
        keypack_bundle::UnsealError::WrongPassphrase => anyhow::anyhow!(
            "wrong passphrase: it does not open the sealed keys of this build; no VM was started"
        ),
        other => anyhow::Error::new(other).context("checking the passphrase; no VM was started"),
    })?;
    Ok(passphrase)
}

/// How many lines of the serial console a `--wait-ssh` timeout shows.
const TAIL_LINES: usize = 20;

/// Prints the last lines of the serial console on stderr, escaped: the guest wrote them, and a
/// control sequence must not drive the terminal.
fn print_console_tail(log: &std::path::Path) {
    let Ok(bytes) = std::fs::read(log) else {
        return;
    };
    let mut esc = crate::cmd::escape::StreamEscaper::default();
    let text = esc.feed(&bytes) + &esc.finish();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        eprintln!("the serial console ({}) is empty", log.display());
        return;
    }
    eprintln!("last lines of the serial console ({}):", log.display());
    for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
        eprintln!("  {l}");
    }
}

fn stop_vm(vm: &Vm, host: &HostName, timeout: u64) -> Result<()> {
    match vm.stop(Duration::from_secs(timeout))? {
        StopOutcome::NotRunning { stale_cleaned } => eprintln!(
            "the VM of {host} is not running; nothing to stop{}",
            if stale_cleaned {
                " (removed stale state of a VM that died)"
            } else {
                ""
            }
        ),
        StopOutcome::PoweredOff => eprintln!("stopped {host} (powered off)"),
        StopOutcome::Quit => eprintln!(
            "stopped {host} (the guest ignored the ACPI power button for {timeout} s; QEMU quit)"
        ),
        StopOutcome::Killed => eprintln!("stopped {host} (QEMU did not quit; killed)"),
    }
    Ok(())
}

/// Stops what runs for `host`: a machine an external runner started (through that runner),
/// else the built-in QEMU runner's VM.
fn stop_machine(vm: &Vm, dir: &std::path::Path, host: &HostName, timeout: u64) -> Result<()> {
    use keypack_plugin::external::protocol::StopOutcome as Ext;
    let Some((runner, outcome)) = run_external::stop(dir, host, timeout)? else {
        return stop_vm(vm, host, timeout);
    };
    let how = match outcome {
        Ext::NotRunning => "it was not running; record removed",
        Ext::PoweredOff => "powered off",
        Ext::Quit => "the guest ignored the power-off request; the machine quit",
        Ext::Killed => "killed",
    };
    eprintln!("stopped {host} ({how}; runner {runner})");
    Ok(())
}

/// `keypack stop`.
pub fn stop(args: HostArgs) -> Result<ExitCode> {
    let (vm, dir) = vm_for(&args.host)?;
    stop_machine(&vm, &dir, &args.host, args.timeout)?;
    Ok(ExitCode::SUCCESS)
}

/// `keypack restart`.
pub fn restart(args: RunArgs) -> Result<ExitCode> {
    if !args.dry_run {
        let (vm, dir) = vm_for(&args.host)?;
        stop_machine(&vm, &dir, &args.host, 30)?;
    }
    run(args)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn status_json(
    host: &HostName,
    vm: &Vm,
    status: &Status,
    pinned: Option<String>,
) -> serde_json::Value {
    match status {
        Status::Running { pid, record } => {
            let mut v = json!({
                "host": host.as_str(),
                "running": true,
                "state": "running",
                "pid": pid,
                "runner": keypack_runner_qemu::NAME,
                "serial_log": vm.serial_log(),
                "qmp_socket": vm.qmp_socket(),
            });
            if let Some(r) = record {
                let r: &RunRecord = r;
                v["started_unix"] = json!(r.started_unix);
                v["uptime_seconds"] = json!(now().saturating_sub(r.started_unix));
                v["accel"] = json!(r.accel);
                v["firmware"] = json!(r.firmware);
                v["medium"] = json!(r.medium);
                v["boot"] = json!(r.boot);
                v["ssh"] = json!(format!("{}:{}", r.ssh_address, r.ssh_port));
                v["forwards"] = json!([{
                    "proto": "tcp",
                    "address": r.ssh_address,
                    "port": r.ssh_port,
                    "guest_port": 22,
                }]);
                v["host_key_fingerprint"] = json!(r.host_key_fingerprint);
            }
            v
        }
        Status::Stopped { stale_cleaned } => json!({
            "host": host.as_str(),
            "running": false,
            "state": "stopped",
            "stale_cleaned": stale_cleaned,
            "host_key_fingerprint": pinned,
        }),
    }
}

/// `keypack status` of a machine an external runner started.
fn status_external(args: &StatusArgs, r: &run_external::ExternalRun) -> Result<ExitCode> {
    let up = now().saturating_sub(r.started_unix);
    if args.json {
        let v = json!({
            "host": args.host.as_str(),
            "running": true,
            "state": "running",
            "pid": r.pid,
            "runner": r.runner,
            "runner_path": r.program,
            "serial_log": r.console,
            "started_unix": r.started_unix,
            "uptime_seconds": up,
            "medium": r.medium,
            "ssh": format!("127.0.0.1:{}", r.ssh_port),
            "forwards": [{
                "proto": "tcp",
                "address": "127.0.0.1",
                "port": r.ssh_port,
                "guest_port": 22,
            }],
            "host_key_fingerprint": r.host_key_fingerprint,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: running (pid {}, runner {} [external: {}])",
        args.host,
        r.pid,
        r.runner,
        r.program.display()
    );
    println!("  uptime:   {}m{:02}s", up / 60, up % 60);
    println!("  ssh:      127.0.0.1:{} -> guest :22", r.ssh_port);
    println!("  host key: {} (pinned)", r.host_key_fingerprint);
    if let Some(c) = &r.console {
        println!("  console:  {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `keypack status`.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let (vm, dir) = vm_for(&args.host)?;
    if let Some(r) = run_external::running(&dir)? {
        return status_external(&args, &r);
    }
    let status = vm.status()?;
    let pinned = read_boot_description(&dir)
        .ok()
        .and_then(|d| hostkey::fingerprint(&d.host_public_key).ok());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&args.host, &vm, &status, pinned))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match &status {
        Status::Running { pid, record } => {
            println!("{}: running (pid {pid})", args.host);
            if let Some(r) = record {
                let up = now().saturating_sub(r.started_unix);
                println!("  uptime:   {}m{:02}s", up / 60, up % 60);
                println!("  accel:    {}", r.accel);
                println!("  firmware: {}", r.firmware);
                println!("  ssh:      127.0.0.1:{} -> guest :22", r.ssh_port);
                match &r.boot {
                    Boot::Disk { image } => println!("  image:    {}", image.display()),
                    Boot::Cdrom { image } => {
                        println!("  cdrom:    {} (booted, read-only)", image.display())
                    }
                    Boot::Kernel {
                        kernel,
                        initrds,
                        cdrom,
                        ..
                    } => {
                        println!("  kernel:   {}", kernel.display());
                        for i in initrds {
                            println!("  initrd:   {}", i.display());
                        }
                        if let Some(iso) = cdrom {
                            println!("  cdrom:    {} (read-only)", iso.display());
                        }
                    }
                }
                println!("  host key: {} (pinned)", r.host_key_fingerprint);
            }
            println!("  console:  {}", vm.serial_log().display());
        }
        Status::Stopped { stale_cleaned } => {
            println!(
                "{}: stopped{}",
                args.host,
                if *stale_cleaned {
                    " (the VM had died; stale pidfile and socket removed)"
                } else {
                    ""
                }
            );
            if let Some(fp) = pinned {
                println!("  host key: {fp} (pinned, from the last build)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keypack log`.
pub fn log(args: LogArgs) -> Result<ExitCode> {
    let (vm, dir) = vm_for(&args.host)?;
    // A machine an external runner started has its console where the runner said.
    let external = run_external::load(&dir)?.filter(|r| r.console.is_some());
    let path = external
        .as_ref()
        .and_then(|r| r.console.clone())
        .unwrap_or_else(|| vm.serial_log());
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "no console log for {} yet ({}); start the VM with `keypack run -H {}`",
            args.host,
            path.display(),
            args.host
        )
    })?;
    let mut out = std::io::stdout().lock();
    let mut printer = LogPrinter::new(args.raw);
    let mut pos = printer.copy_rest(&mut file, &mut out)?;
    if !args.follow {
        return printer.finish(&mut out).map(|()| ExitCode::SUCCESS);
    }
    out.flush()?;
    loop {
        let running = match &external {
            Some(r) => run_external::is_running(r),
            None => matches!(vm.status()?, Status::Running { .. }),
        };
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // A new run truncated the log: start over.
            file = std::fs::File::open(&path)?;
            pos = 0;
        }
        file.seek(SeekFrom::Start(pos))?;
        pos += printer.copy_rest(&mut file, &mut out)?;
        if !running {
            return printer.finish(&mut out).map(|()| ExitCode::SUCCESS);
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies a console log to the terminal, escaped unless `--raw`.
struct LogPrinter {
    raw: bool,
    escaper: crate::cmd::escape::StreamEscaper,
    buf: Vec<u8>,
}

impl LogPrinter {
    fn new(raw: bool) -> LogPrinter {
        LogPrinter {
            raw,
            escaper: Default::default(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Prints what `file` holds from its position to its end; returns how many bytes.
    fn copy_rest(&mut self, file: &mut std::fs::File, out: &mut impl Write) -> Result<u64> {
        let mut copied = 0u64;
        loop {
            let n = file.read(&mut self.buf)?;
            if n == 0 {
                return Ok(copied);
            }
            if self.raw {
                out.write_all(&self.buf[..n])?;
            } else {
                out.write_all(self.escaper.feed(&self.buf[..n]).as_bytes())?;
            }
            copied += n as u64;
        }
    }

    /// Prints an incomplete character left at the end, and flushes.
    fn finish(&mut self, out: &mut impl Write) -> Result<()> {
        if !self.raw {
            out.write_all(self.escaper.finish().as_bytes())?;
        }
        out.flush()?;
        Ok(())
    }
}

/// The SSH port and pinned host key of what runs for the host.
fn ssh_target(vm: &Vm, dir: &std::path::Path, host: &HostName) -> Result<(u16, String)> {
    if let Some(r) = run_external::running(dir)? {
        return Ok((r.ssh_port, r.host_public_key));
    }
    let record = match vm.status()? {
        Status::Running {
            record: Some(r), ..
        } => *r,
        Status::Running { record: None, .. } => {
            bail!(
                "{}: missing; stop and run the VM again",
                vm.record_path().display()
            )
        }
        Status::Stopped { .. } => {
            return Err(keypack_runner_qemu::QemuError::NotRunning {
                host: host.as_str().to_owned(),
            }
            .into());
        }
    };
    Ok((record.ssh_port, record.host_public_key))
}

/// `keypack ssh`.
pub fn ssh(args: SshArgs) -> Result<ExitCode> {
    let (vm, dir) = vm_for(&args.host)?;
    let (ssh_port, host_public_key) = ssh_target(&vm, &dir, &args.host)?;
    if host_public_key.is_empty() {
        bail!(
            "no pinned host key for {} (booted with --image and no build); refusing an unverified SSH connection",
            args.host
        );
    }
    let known_hosts = vm.known_hosts();
    hostkey::write_known_hosts(&known_hosts, args.host.as_str(), &host_public_key)?;
    let alias = hostkey::alias(args.host.as_str());
    if args.print_config {
        println!("Host {alias}");
        println!("  HostName 127.0.0.1");
        println!("  Port {}", ssh_port);
        println!("  User {}", args.user);
        println!("  HostKeyAlias {alias}");
        println!("  UserKnownHostsFile {}", known_hosts.display());
        println!("  StrictHostKeyChecking yes");
        println!("  CheckHostIP no");
        if let Some(id) = &args.identity {
            println!("  IdentityFile {}", std::path::absolute(id)?.display());
            println!("  IdentitiesOnly yes");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Ask the VM which key it serves first, so a mismatch names both fingerprints (ssh's own
    // refusal below stays as the second line of defence).
    if let Some(served) = hostkey::scan(ssh_port, Duration::from_secs(10))? {
        hostkey::check(&host_public_key, &served)?;
    }
    // Absolute PATH entries only (never `./ssh`), and a scrubbed environment: the agent
    // socket and TERM for the session, nothing else of ours (keypack_plugin::child).
    let ssh = keypack_plugin::child::find_program("ssh")
        .ok_or_else(|| keypack_plugin::child::not_found("ssh"))
        .context("running ssh (Debian: apt-get install openssh-client)")?;
    let mut cmd = keypack_plugin::child::command(&ssh, keypack_plugin::child::SSH_ENV);
    cmd.arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", &format!("HostKeyAlias={alias}")])
        .args(["-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no"])
        .args(["-p", &ssh_port.to_string()]);
    if let Some(id) = &args.identity {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    cmd.arg(format!("{}@127.0.0.1", args.user)).args(&args.args);
    let status = cmd
        .status()
        .context("running ssh (Debian: apt-get install openssh-client)")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::from(255),
    })
}
