//! keypack's side of one plugin process: spawn, send a request, read one answer per line.
//!
//! Why threads: a plugin that hangs or floods must not hang keypack, so stdout is read by a
//! thread feeding a channel read with a timeout, and stderr by another that shows each line
//! prefixed with the plugin's name. Lines are bounded ([`MAX_LINE`]). The child is killed when
//! the session is dropped before `bye`, so a failed build leaves no process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use super::ExternalError;
use super::protocol::{MAX_LINE, PROTOCOL_NAME, Request, Response, VERSIONS};

/// Default time a plugin has to answer `hello` and `describe`.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a plugin has to answer `build`.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Overrides both timeouts, in seconds.
pub const TIMEOUT_ENV: &str = "KEYPACK_PLUGIN_TIMEOUT";

/// `default`, or [`TIMEOUT_ENV`] when set to a number of seconds.
pub fn timeout(default: Duration) -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

enum Line {
    Text(String),
    TooLong,
    Eof,
    Failed(std::io::Error),
}

/// A running plugin.
pub struct Session {
    label: String,
    program: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr: Option<std::thread::JoinHandle<()>>,
    /// The version agreed in `hello`.
    pub version: u32,
}

impl Session {
    /// Starts `program` in the folder `cwd` with the allow-listed environment
    /// (`crate::child`) and, when given, `bundle` inherited at its own fd number; then says
    /// hello. `cwd` is the host's state folder for a build (so a stray relative write lands in
    /// a private folder the conformance check scans, never in the user's working directory,
    /// which may be the keys repository) and `/` otherwise.
    pub fn start(
        program: &Path,
        label: &str,
        cwd: &Path,
        bundle: Option<&OwnedFd>,
    ) -> Result<Self, ExternalError> {
        let mut cmd = crate::child::command(program, &[]);
        cmd.current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        limit_fds(&mut cmd, bundle.map(|fd| fd.as_raw_fd()));
        let mut child = cmd.spawn().map_err(|source| ExternalError::Spawn {
            program: program.to_owned(),
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let line = read_line(&mut r);
                let stop = !matches!(line, Line::Text(_));
                if tx.send(line).is_err() || stop {
                    break;
                }
            }
        });
        let prefix = label.to_owned();
        let stderr = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            loop {
                match read_line(&mut r) {
                    Line::Text(t) => eprintln!("{prefix}: {}", printable(&t)),
                    Line::TooLong => eprintln!("{prefix}: (a line longer than 1 MiB, not shown)"),
                    Line::Eof | Line::Failed(_) => break,
                }
            }
        });
        let mut s = Self {
            label: label.to_owned(),
            program: program.to_owned(),
            child,
            stdin,
            lines,
            stderr: Some(stderr),
            version: 0,
        };
        s.hello()?;
        Ok(s)
    }

    /// The plugin's process id (for the conformance check of its argv and environment).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn hello(&mut self) -> Result<(), ExternalError> {
        let req = Request::Hello {
            protocol: PROTOCOL_NAME.to_owned(),
            versions: VERSIONS.to_vec(),
        };
        match self.request(&req, timeout(QUICK_TIMEOUT))? {
            Response::Hello { version } if VERSIONS.contains(&version) => {
                self.version = version;
                Ok(())
            }
            Response::Hello { version } => Err(ExternalError::Version {
                program: self.program.clone(),
                offered: VERSIONS.to_vec(),
                chosen: version,
            }),
            other => Err(self.unexpected("hello", &other)),
        }
    }

    /// Sends `req` and waits up to `limit` for the answer. An `error` answer is returned as
    /// [`ExternalError::Plugin`].
    pub fn request(&mut self, req: &Request, limit: Duration) -> Result<Response, ExternalError> {
        let mut line = serde_json::to_vec(req).expect("requests serialise");
        line.push(b'\n');
        let write = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(&line).and_then(|_| s.flush()));
        if let Some(Err(e)) = write {
            // A closed pipe means the plugin is gone: report how it ended instead.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(ExternalError::Io {
                    program: self.program.clone(),
                    source: e,
                });
            }
        }
        let text = match self.lines.recv_timeout(limit) {
            Ok(Line::Text(t)) => t,
            Ok(Line::TooLong) => {
                let _ = self.child.kill();
                return Err(ExternalError::Garbage {
                    program: self.program.clone(),
                    why: format!("a line longer than {MAX_LINE} bytes"),
                });
            }
            Ok(Line::Failed(source)) => {
                return Err(ExternalError::Io {
                    program: self.program.clone(),
                    source,
                });
            }
            Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait_briefly();
                return Err(ExternalError::Died {
                    program: self.program.clone(),
                    status,
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(ExternalError::Timeout {
                    program: self.program.clone(),
                    secs: limit.as_secs(),
                });
            }
        };
        let resp: Response = serde_json::from_str(&text).map_err(|e| ExternalError::Garbage {
            program: self.program.clone(),
            why: format!("not a protocol message ({e}): {}", preview(&text)),
        })?;
        match resp {
            Response::Error(e) => Err(ExternalError::Plugin {
                plugin: self.label.clone(),
                message: e.message,
                hint: e.hint,
            }),
            other => Ok(other),
        }
    }

    /// An [`ExternalError::Garbage`] for an answer of the wrong type.
    pub fn unexpected(&self, to: &str, got: &Response) -> ExternalError {
        let kind = serde_json::to_value(got)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
            .unwrap_or_default();
        ExternalError::Garbage {
            program: self.program.clone(),
            why: format!("answered `{to}` with `{kind}`"),
        }
    }

    /// Says `bye`, closes stdin and waits for the plugin to exit with status 0.
    pub fn finish(mut self) -> Result<(), ExternalError> {
        let mut line = serde_json::to_vec(&Request::Bye).expect("bye serialises");
        line.push(b'\n');
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(&line);
        }
        let deadline = Instant::now() + timeout(QUICK_TIMEOUT);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if let Some(h) = self.stderr.take() {
                        let _ = h.join();
                    }
                    return if status.success() {
                        Ok(())
                    } else {
                        Err(ExternalError::Died {
                            program: self.program.clone(),
                            status: Some(status),
                        })
                    };
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    return Err(ExternalError::Timeout {
                        program: self.program.clone(),
                        secs: timeout(QUICK_TIMEOUT).as_secs(),
                    });
                }
            }
        }
    }

    fn wait_briefly(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                if let Some(h) = self.stderr.take() {
                    let _ = h.join();
                }
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Gives the child exactly stdin, stdout, stderr and, when given, `fd` (close-on-exec in
/// keypack) at the same number: every other descriptor keypack has, including any it
/// inherited without close-on-exec from its own parent, is closed at exec. Done in the forked
/// child only, between fork and exec, so no other child keypack starts (from any thread) can
/// inherit the bundle.
#[allow(unsafe_code)]
fn limit_fds(cmd: &mut std::process::Command, fd: Option<i32>) {
    use std::os::unix::process::CommandExt;
    // Highest descriptor to mark when close_range(2) is missing (Linux < 5.11); computed here,
    // before fork, because the child may only make async-signal-safe calls.
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(65536)
        .min(65536) as i32;
    // SAFETY: the closure runs in the forked child before exec and only makes the system calls
    // close_range and fcntl(F_SETFD) (async-signal-safe, no allocation, no lock). `fd` is open
    // in the parent for as long as `cmd` is spawned: the caller holds the OwnedFd across
    // `spawn`.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                for n in 3..max {
                    libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if let Some(fd) = fd {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
}

fn read_line(r: &mut impl BufRead) -> Line {
    let mut buf = Vec::new();
    match r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
        Ok(0) => Line::Eof,
        Ok(_) if buf.len() > MAX_LINE => Line::TooLong,
        Ok(_) => {
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            Line::Text(String::from_utf8_lossy(&buf).into_owned())
        }
        Err(e) => Line::Failed(e),
    }
}

/// `s` with control characters escaped, so a plugin's stderr cannot drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() && c != '\t' {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

fn preview(s: &str) -> String {
    let p: String = s.chars().take(80).collect();
    printable(&p)
}
