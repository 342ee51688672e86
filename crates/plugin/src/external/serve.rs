//! The plugin side: [`serve`] runs an `impl Medium` as a `keypack-media-NAME` program, and
//! [`serve_runner`] an `impl RunnerService` as a `keypack-runner-NAME` program.
//!
//! The same medium code runs compiled in or out of process: `describe` is derived from
//! [`Medium::augment_args`] (each long flag with its value type and help), and `build` gets
//! its `ArgMatches` by parsing the flag values keypack sent as `--name=value` against that
//! same clap command, and its `&SealedBundle` by reopening the archive of the inherited fd
//! ([`keypack_bundle::reopen_archive`], which refuses anything keypack did not seal; a sealed
//! bundle with the manifest's `sealed` entries).

use std::any::TypeId;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::ValueParser;
use zeroize::Zeroizing;

use super::protocol::{
    BuildRequest, Description, ErrorReply, FlagSetting, FlagSpec, FlagValue, MAX_LINE, PluginKind,
    Request, Response, VERSIONS,
};
use crate::runner::RunnerService;
use crate::{BuildInputs, HostName, Medium};

/// Serves `medium` on stdin/stdout until `bye` or end of input. Returns the exit status for
/// `main`. Nothing else may write to stdout; diagnostics go to stderr, which keypack shows
/// prefixed with the plugin's name.
pub fn serve(medium: &dyn Medium) -> ExitCode {
    serve_loop(&MediumHandler(medium))
}

/// Serves `runner` on stdin/stdout as a `keypack-runner-NAME` program (`start`, `stop`), the
/// way [`serve`] serves a medium.
pub fn serve_runner(runner: &dyn RunnerService) -> ExitCode {
    serve_loop(&RunnerHandler(runner))
}

/// What a served program answers after the handshake.
trait Handler {
    fn describe(&self) -> Description;
    /// `build`, `start` or `stop`.
    fn handle(&self, req: Request) -> Response;
}

struct MediumHandler<'a>(&'a dyn Medium);

impl Handler for MediumHandler<'_> {
    fn describe(&self) -> Description {
        describe(self.0)
    }
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Build(req) => match build(self.0, &req) {
                Ok(boot) => Response::Built { boot },
                Err(message) => error(message, None),
            },
            _ => error("a medium answers `build`, not this request".into(), None),
        }
    }
}

struct RunnerHandler<'a>(&'a dyn RunnerService);

impl Handler for RunnerHandler<'_> {
    fn describe(&self) -> Description {
        Description {
            kind: PluginKind::Runner,
            name: self.0.name().to_owned(),
            about: self.0.about().to_owned(),
            needs_iso: false,
            default_artifact_name: String::new(),
            artifact_name: None,
            heading: None,
            flags: Vec::new(),
        }
    }
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Start(req) => {
                let passphrase = match req.passphrase_fd {
                    Some(fd) => match read_fd(fd, req.passphrase_len, MAX_PASSPHRASE_LEN) {
                        Ok(p) => Some(p),
                        Err(message) => return error(message, None),
                    },
                    None => None,
                };
                match self.0.start(&req, passphrase.as_deref().map(|p| &p[..])) {
                    Ok(started) => Response::Started(started),
                    Err(message) => error(message, None),
                }
            }
            Request::Stop(req) => match self.0.stop(&req) {
                Ok(outcome) => Response::Stopped { outcome },
                Err(message) => error(message, None),
            },
            _ => error(
                "a runner answers `start` and `stop`, not this request".into(),
                None,
            ),
        }
    }
}

/// Longest passphrase a runner reads from its fd.
const MAX_PASSPHRASE_LEN: u64 = 4096;

fn serve_loop(handler: &dyn Handler) -> ExitCode {
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let mut out = std::io::stdout().lock();
    loop {
        let mut line = Vec::new();
        match (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) if line.len() > MAX_LINE => {
                eprintln!("request longer than {MAX_LINE} bytes");
                return ExitCode::FAILURE;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("reading a request: {e}");
                return ExitCode::FAILURE;
            }
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = send(&mut out, &error(format!("not a request: {e}"), None));
                continue;
            }
        };
        let resp = match req {
            Request::Hello { versions, .. } => {
                match VERSIONS.iter().rev().find(|v| versions.contains(v)) {
                    Some(&version) => Response::Hello { version },
                    None => {
                        let _ = send(
                            &mut out,
                            &error(
                                format!(
                                    "no common protocol version (this plugin speaks {VERSIONS:?})"
                                ),
                                None,
                            ),
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            Request::Describe => Response::Description(handler.describe()),
            Request::Bye => return ExitCode::SUCCESS,
            other => handler.handle(other),
        };
        if send(&mut out, &resp).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

fn send(out: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

fn error(message: String, hint: Option<String>) -> Response {
    Response::Error(ErrorReply { message, hint })
}

fn flag_command(medium: &dyn Medium) -> clap::Command {
    medium.augment_args(
        clap::Command::new(medium.name())
            .no_binary_name(true)
            .disable_help_flag(true),
    )
}

/// The [`Description`] of `medium`, its flags read off its clap arguments.
pub fn describe(medium: &dyn Medium) -> Description {
    let cmd = flag_command(medium);
    let mut heading = None;
    let flags = cmd
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if heading.is_none() {
                heading = a.get_help_heading().map(String::from);
            }
            Some(FlagSpec {
                name: long.to_owned(),
                value: value_type(a),
                help: a.get_help().map(|h| h.to_string()).unwrap_or_default(),
                value_name: a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string()),
            })
        })
        .collect();
    // A medium naming its artifact after the host: the name for a probe host, turned into a
    // pattern keypack fills in for the real one.
    const PROBE: &str = "keypackhostprobe";
    let artifact_name = HostName::new(PROBE)
        .ok()
        .map(|h| medium.artifact_name(&h))
        .filter(|n| n.contains(PROBE))
        .map(|n| n.replace(PROBE, "{host}"));
    Description {
        kind: PluginKind::Media,
        name: medium.name().to_owned(),
        about: medium.about().to_owned(),
        needs_iso: medium.needs_iso(),
        default_artifact_name: medium.default_artifact_name().to_owned(),
        artifact_name,
        heading,
        flags,
    }
}

fn value_type(a: &clap::Arg) -> FlagValue {
    if !a.get_action().takes_values() {
        return FlagValue::Switch;
    }
    let parser: &ValueParser = a.get_value_parser();
    let id = parser.type_id();
    if id == TypeId::of::<PathBuf>() {
        FlagValue::Path
    } else if [
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<u8>(),
        TypeId::of::<usize>(),
    ]
    .iter()
    .any(|t| id == *t)
    {
        FlagValue::Integer
    } else {
        FlagValue::String
    }
}

fn build(medium: &dyn Medium, req: &BuildRequest) -> Result<crate::BootDescription, String> {
    let argv: Vec<String> = req
        .flags
        .iter()
        .filter_map(|(name, v)| match v {
            FlagSetting::Switch(true) => Some(format!("--{name}")),
            FlagSetting::Switch(false) => None,
            FlagSetting::Value(v) => Some(format!("--{name}={v}")),
        })
        .collect();
    let matches = flag_command(medium)
        .try_get_matches_from(&argv)
        .map_err(|e| e.to_string().trim().to_owned())?;
    // A sealed bundle's private keys are inside its blob: their entries come from the
    // manifest, and reopen_archive matches each with its `.pub` file in the archive.
    let sealed_keys = req
        .manifest
        .iter()
        .filter(|m| m.sealed)
        .map(|m| {
            m.to_entry()
                .ok_or_else(|| format!("the manifest: {}: unknown role", m.path))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let archive = read_bundle(req.bundle_fd, req.bundle_len)?;
    let bundle = keypack_bundle::reopen_archive(&archive, &sealed_keys)
        .map_err(|e| format!("the bundle: {e}"))?;
    drop(archive);
    let host = HostName::new(&req.host).map_err(|e| format!("host {:?}: {e}", req.host))?;
    let inputs = BuildInputs::new(&host, &req.output, &req.state_dir, &matches)
        .with_iso(req.iso.as_deref())
        .with_seed(req.seed)
        .with_ignore_cache(req.ignore_cache);
    medium
        .build(&bundle, &inputs)
        .map_err(|e| crate::error_chain(&e))
}

/// The archive from the inherited fd.
fn read_bundle(fd: i32, len: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    read_fd(fd, len, keypack_bundle::MAX_ARCHIVE_SIZE as u64)
}

/// Exactly `len` (at most `max`) bytes of the inherited fd `fd`, opened through
/// `/proc/self/fd` (no unsafe fd adoption), into memory that is wiped when dropped.
fn read_fd(fd: i32, len: u64, max: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    if fd < 0 || len > max {
        return Err(format!("fd {fd} / length {len} out of range"));
    }
    let mut f = std::fs::File::open(format!("/proc/self/fd/{fd}"))
        .map_err(|e| format!("opening fd {fd}: {e}"))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(len as usize));
    (&mut f)
        .take(len)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading fd {fd}: {e}"))?;
    if buf.len() as u64 != len {
        return Err(format!("fd {fd} holds {} bytes, not {len}", buf.len()));
    }
    Ok(buf)
}
