//! keypack's side of an external runner (`keypack-runner-NAME`): one process for `start`,
//! one for `stop`, each hello → request → bye. The machine outlives the runner process; the
//! runner names its pid, and keypack records it (`keypack status`, `ssh`, `stop`).
//!
//! A sealed build's passphrase is the only secret a runner gets, as an inherited read-only
//! sealed memfd (never a path, an argument or a variable), like the bundle for a medium.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::ExternalError;
use super::medium::sealed_memfd;
use super::protocol::{Request, Response, StartRequest, StartedReply, StopOutcome, StopRequest};
use super::session::{BUILD_TIMEOUT, Session, timeout};

/// Starts a machine through `program`: `req` as given, with `passphrase` (a sealed build's)
/// in a sealed memfd whose number and length are filled in here.
pub fn start_runner(
    program: &Path,
    name: &str,
    mut req: StartRequest,
    passphrase: Option<&[u8]>,
) -> Result<StartedReply, ExternalError> {
    let fd = passphrase
        .map(|p| sealed_memfd("keypack-passphrase", p))
        .transpose()?;
    req.passphrase_fd = fd.as_ref().map(|f| f.as_raw_fd());
    req.passphrase_len = passphrase.map_or(0, |p| p.len() as u64);
    let cwd = req.state_dir.clone();
    let mut s = Session::start(program, name, &cwd, fd.as_ref())?;
    // Only the runner holds the passphrase's memfd now.
    drop(fd);
    let resp = s.request(&Request::Start(Box::new(req)), timeout(BUILD_TIMEOUT))?;
    let Response::Started(started) = resp else {
        return Err(s.unexpected("start", &resp));
    };
    s.finish()?;
    Ok(started)
}

/// Stops the machine of `req` through `program`; waits the guest's power-off time plus a
/// minute for the answer.
pub fn stop_runner(
    program: &Path,
    name: &str,
    req: StopRequest,
) -> Result<StopOutcome, ExternalError> {
    let limit = timeout(Duration::from_secs(req.timeout_secs.saturating_add(60)));
    let cwd = req.state_dir.clone();
    let mut s = Session::start(program, name, &cwd, None)?;
    let resp = s.request(&Request::Stop(req), limit)?;
    let Response::Stopped { outcome } = resp else {
        return Err(s.unexpected("stop", &resp));
    };
    s.finish()?;
    Ok(outcome)
}
