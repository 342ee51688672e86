//! `keypack-runner-qemu-ext`: the QEMU runner built a second time, as an external runner
//! program (`keypack_plugin::external::serve_runner`). Same `Vm` code as the built-in runner,
//! run out of process: the proof that a runner can be a program on `PATH`, and what the
//! end-to-end boot through an external runner (`tests/tests/boot_external.rs`) uses.
//!
//! Put it on `PATH` (or in `plugin_dir`) and boot with `keypack run --runner qemu-ext`. It
//! takes no flags of its own: QEMU, accelerator and firmware are found as the built-in
//! runner's defaults find them.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use keypack_plugin::external::protocol::{
    Network, StartRequest, StartedReply, StopOutcome, StopRequest,
};
use keypack_plugin::runner::RunnerService;
use keypack_runner_qemu::{Net, Options, PortChoice, Vm};

struct QemuExt;

impl RunnerService for QemuExt {
    fn name(&self) -> &str {
        "qemu-ext"
    }

    fn about(&self) -> &str {
        "the QEMU runner, out of process (keypack-runner-qemu-ext)"
    }

    fn start(&self, req: &StartRequest, passphrase: Option<&[u8]>) -> Result<StartedReply, String> {
        let opts = Options {
            port: PortChoice::Fixed(req.ssh_port),
            memory_mib: req.memory_mib,
            cpus: req.cpus,
            net: match req.network {
                Network::User => Net::User,
                Network::Isolated => Net::Isolated,
            },
            extra_disks: req.extra_disks.clone(),
            ..Options::default()
        };
        let vm = Vm::new(&req.host, &req.state_dir);
        let started = vm
            .start_with_passphrase(&req.boot, &opts, passphrase)
            .map_err(|e| keypack_plugin::error_chain(&e))?;
        Ok(StartedReply {
            pid: started.record.pid,
            console: Some(vm.serial_log()),
            notice: started.notice,
        })
    }

    fn stop(&self, req: &StopRequest) -> Result<StopOutcome, String> {
        let vm = Vm::new(&req.host, &req.state_dir);
        Ok(
            match vm
                .stop(Duration::from_secs(req.timeout_secs))
                .map_err(|e| keypack_plugin::error_chain(&e))?
            {
                keypack_runner_qemu::StopOutcome::NotRunning { .. } => StopOutcome::NotRunning,
                keypack_runner_qemu::StopOutcome::PoweredOff => StopOutcome::PoweredOff,
                keypack_runner_qemu::StopOutcome::Quit => StopOutcome::Quit,
                keypack_runner_qemu::StopOutcome::Killed => StopOutcome::Killed,
            },
        )
    }
}

fn main() -> ExitCode {
    keypack_plugin::external::serve_runner(&QemuExt)
}
