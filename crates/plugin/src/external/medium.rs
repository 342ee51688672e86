//! An external medium seen from keypack: a [`Medium`] whose `build` runs the program.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction};
use keypack_bundle::SealedBundle;

use super::ExternalError;
use super::protocol::{
    BuildRequest, Description, FlagSetting, FlagSpec, FlagValue, ManifestItem, PluginKind, Request,
    Response,
};
use super::session::{BUILD_TIMEOUT, QUICK_TIMEOUT, Session, timeout};
use crate::{BootDescription, BuildInputs, Medium, PluginError};

/// A medium program, described.
pub struct ExternalMedium {
    path: PathBuf,
    name: &'static str,
    about: &'static str,
    artifact: &'static str,
    /// `{host}.iso`-style name, when the medium names its artifact after the host.
    artifact_pattern: Option<String>,
    heading: &'static str,
    needs_iso: bool,
    flags: Vec<(FlagSpec, &'static str, &'static str)>,
}

/// `Medium` hands out `&'static str`: the strings of the few plugins a run describes are
/// leaked once, for the life of the process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl ExternalMedium {
    /// Starts `path`, says hello, asks `describe`, says bye. `expected_name` is the `NAME` of
    /// its file name, which the description must repeat.
    pub fn describe(path: &Path, expected_name: &str) -> Result<Self, ExternalError> {
        let desc = describe(path, expected_name)?;
        Ok(Self::from_description(path, desc))
    }

    fn from_description(path: &Path, mut desc: Description) -> Self {
        // What a program describes reaches the terminal (`plugins`, `build --help`) and clap:
        // control characters are escaped, and a flag clap could not take (a bad or repeated
        // name) is dropped with a warning rather than left to panic the command line.
        let clean = super::session::printable;
        desc.about = clean(&desc.about);
        desc.heading = desc.heading.as_deref().map(clean);
        desc.default_artifact_name = Path::new(&desc.default_artifact_name)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut seen = Vec::new();
        desc.flags.retain_mut(|f| {
            let ok = super::discover::valid_name(&f.name) && !seen.contains(&f.name);
            if !ok {
                eprintln!(
                    "warning: {}: flag {:?} is not a valid, unique flag name; ignored",
                    path.display(),
                    clean(&f.name)
                );
            }
            seen.push(f.name.clone());
            f.help = clean(&f.help);
            f.value_name = f.value_name.as_deref().map(clean);
            ok
        });
        let heading = desc
            .heading
            .clone()
            .unwrap_or_else(|| format!("{} medium (--media {})", desc.name, desc.name));
        let artifact = if desc.default_artifact_name.is_empty() {
            format!("{}.img", desc.name)
        } else {
            desc.default_artifact_name.clone()
        };
        // A pattern must stay a plain file name once filled in.
        let artifact_pattern = desc
            .artifact_name
            .filter(|p| p.contains("{host}") && !p.contains('/') && !p.contains('\0'));
        Self {
            path: path.to_owned(),
            artifact_pattern,
            name: leak(desc.name),
            about: leak(desc.about),
            artifact: leak(artifact),
            heading: leak(heading),
            needs_iso: desc.needs_iso,
            flags: desc
                .flags
                .into_iter()
                .map(|f| {
                    let n = leak(f.name.clone());
                    let h = leak(f.help.clone());
                    (f, n, h)
                })
                .collect(),
        }
    }

    /// The program.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its flags.
    pub fn flags(&self) -> impl Iterator<Item = &FlagSpec> {
        self.flags.iter().map(|(f, _, _)| f)
    }

    /// Drops the flags named in `reserved` (keypack's own `build` flags), returning their names.
    pub fn drop_flags(&mut self, reserved: &[&str]) -> Vec<String> {
        let (keep, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flags)
            .into_iter()
            .partition(|(f, _, _)| !reserved.contains(&f.name.as_str()));
        self.flags = keep;
        dropped.into_iter().map(|(f, _, _)| f.name).collect()
    }

    /// The `build` request for `inputs` (flag values read from `inputs.matches` by name).
    pub fn build_request(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
        bundle_fd: i32,
    ) -> Result<BuildRequest, String> {
        let mut flags = BTreeMap::new();
        for (spec, id, _) in &self.flags {
            if let Some(v) = flag_setting(inputs.matches, id, spec.value)? {
                flags.insert(spec.name.clone(), v);
            }
        }
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(BuildRequest {
            host: inputs.host.as_str().to_owned(),
            iso: inputs.iso.map(abs).transpose()?,
            output: abs(inputs.output)?,
            state_dir: abs(inputs.state_dir)?,
            seed: inputs.seed,
            ignore_cache: inputs.ignore_cache,
            flags,
            bundle_fd,
            bundle_len: bundle.archive_len() as u64,
            manifest: bundle
                .manifest()
                .entries
                .iter()
                .map(ManifestItem::from)
                .collect(),
        })
    }

    /// Runs one build: a fresh process, hello, `build`, bye. `on_start` sees the running
    /// process (the conformance check reads its argv and environment there).
    pub fn run_build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
        on_start: &mut dyn FnMut(u32),
    ) -> Result<BootDescription, ExternalError> {
        let fd = sealed_bundle_fd(bundle.expose_archive())?;
        let req = self
            .build_request(bundle, inputs, std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|why| ExternalError::Plugin {
                plugin: self.name.to_owned(),
                message: why,
                hint: None,
            })?;
        let cwd = req.state_dir.clone();
        let mut s = Session::start(&self.path, self.name, &cwd, Some(&fd))?;
        // Only the child holds the bundle now (besides `bundle` itself in keypack).
        drop(fd);
        on_start(s.pid());
        let resp = s.request(&Request::Build(Box::new(req)), timeout(BUILD_TIMEOUT))?;
        let Response::Built { boot } = resp else {
            return Err(s.unexpected("build", &resp));
        };
        s.finish()?;
        Ok(boot)
    }
}

fn describe(path: &Path, expected_name: &str) -> Result<Description, ExternalError> {
    describe_program(path, expected_name, PluginKind::Media)
}

/// Starts `path`, says hello, asks `describe`, says bye; the answer must name `expected_name`
/// and `kind`. For runners this is all keypack does with them yet (`keypack plugins`).
pub fn describe_program(
    path: &Path,
    expected_name: &str,
    kind: PluginKind,
) -> Result<Description, ExternalError> {
    let mut s = Session::start(path, expected_name, Path::new("/"), None)?;
    let resp = s.request(&Request::Describe, timeout(QUICK_TIMEOUT))?;
    let Response::Description(desc) = resp else {
        return Err(s.unexpected("describe", &resp));
    };
    s.finish()?;
    if desc.kind != kind || desc.name != expected_name {
        return Err(ExternalError::Garbage {
            program: path.to_owned(),
            why: format!(
                "describes itself as {:?} `{}`, expected {kind:?} `{expected_name}`",
                desc.kind, desc.name
            ),
        });
    }
    Ok(desc)
}

fn flag_setting(
    m: &clap::ArgMatches,
    id: &str,
    value: FlagValue,
) -> Result<Option<FlagSetting>, String> {
    // A flag shared with another medium has that medium's type: read raw values, which work
    // whatever the type.
    if value == FlagValue::Switch {
        return Ok(match m.try_get_one::<bool>(id) {
            Ok(Some(true)) => Some(FlagSetting::Switch(true)),
            _ => None,
        });
    }
    let Ok(Some(mut raw)) = m.try_get_raw(id) else {
        return Ok(None);
    };
    let Some(v) = raw.next() else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok_or_else(|| format!("--{id}: not valid UTF-8"))?
        .to_owned();
    Ok(Some(FlagSetting::Value(if value == FlagValue::Path {
        std::path::absolute(&s)
            .map_err(|e| format!("--{id} {s}: {e}"))?
            .display()
            .to_string()
    } else {
        s
    })))
}

impl Medium for ExternalMedium {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn augment_args(&self, mut cmd: clap::Command) -> clap::Command {
        for (spec, id, help) in &self.flags {
            // A flag another medium already defines (`--kernel`) is shared: its value is
            // passed on, and its help stays where it is.
            if cmd
                .get_arguments()
                .any(|a| a.get_id().as_str() == *id || a.get_long() == Some(id))
            {
                continue;
            }
            let mut arg = Arg::new(*id)
                .long(*id)
                .help(*help)
                .help_heading(self.heading);
            arg = match spec.value {
                FlagValue::Switch => arg.action(ArgAction::SetTrue),
                FlagValue::Integer => arg.value_parser(clap::value_parser!(u64)),
                FlagValue::Path => arg.value_parser(clap::value_parser!(PathBuf)),
                FlagValue::String => arg.allow_hyphen_values(true),
            };
            if let Some(v) = &spec.value_name {
                arg = arg.value_name(leak(v.clone()));
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn default_artifact_name(&self) -> &'static str {
        self.artifact
    }

    fn artifact_name(&self, host: &crate::HostName) -> String {
        match &self.artifact_pattern {
            Some(p) => p.replace("{host}", host.as_str()),
            None => self.artifact.to_owned(),
        }
    }

    fn needs_iso(&self) -> bool {
        self.needs_iso
    }

    fn build(
        &self,
        bundle: &SealedBundle,
        inputs: &BuildInputs<'_>,
    ) -> Result<BootDescription, PluginError> {
        self.run_build(bundle, inputs, &mut |_| {})
            .map_err(|e| PluginError::new(self.name, e))
    }
}

/// The archive in a memfd sealed against writes, growth, shrinking and new seals, reopened
/// read-only: the fd handed to a plugin can neither change the bundle nor be made writable.
/// Close-on-exec; [`Session::start`] lets only the plugin inherit it.
pub fn sealed_bundle_fd(archive: &[u8]) -> Result<OwnedFd, ExternalError> {
    sealed_memfd("keypack-bundle", archive)
}

/// `bytes` in a memfd named `name`, sealed and reopened read-only as for the bundle (a sealed
/// build's passphrase for a runner goes the same way).
pub(crate) fn sealed_memfd(name: &str, bytes: &[u8]) -> Result<OwnedFd, ExternalError> {
    use rustix::fs::{MemfdFlags, OFlags, SealFlags};
    let err = |e: rustix::io::Errno| ExternalError::Memfd(e.into());
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(err)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(ExternalError::Memfd)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(err)?;
    // A new, read-only open file description of the same memory; the writable one is closed
    // with `file`.
    let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    let ro = rustix::fs::open(
        proc.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(err)?;
    Ok(ro)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn a_description_cannot_break_the_command_line_the_terminal_or_the_output_folder() {
        let flag = |name: &str| FlagSpec {
            name: name.into(),
            value: FlagValue::String,
            help: "h\x1b[31m".into(),
            value_name: None,
        };
        let desc = Description {
            kind: PluginKind::Media,
            name: "x".into(),
            about: "about\x1b]0;title\x07".into(),
            needs_iso: false,
            default_artifact_name: "../../etc/passwd".into(),
            artifact_name: Some("../{host}.iso".into()),
            heading: None,
            flags: vec![
                flag("good"),
                flag("good"),
                flag("Bad Name"),
                flag("x=y"),
                flag(""),
            ],
        };
        let m = ExternalMedium::from_description(Path::new("/p"), desc);
        assert!(!m.about().contains('\x1b'), "{}", m.about());
        assert_eq!(m.default_artifact_name(), "passwd");
        let web1 = crate::HostName::new("web1").unwrap();
        assert_eq!(
            m.artifact_name(&web1),
            "passwd",
            "a pattern with a / is ignored"
        );
        let names: Vec<&str> = m.flags().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert!(!m.flags().any(|f| f.help.contains('\x1b')));
        // clap accepts what is left.
        m.augment_args(clap::Command::new("build")).debug_assert();
    }

    #[test]
    fn the_bundle_fd_is_sealed_read_only_and_close_on_exec() {
        use rustix::fs::SealFlags;
        let fd = sealed_bundle_fd(b"archive bytes").unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        let all = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        assert!(seals.contains(all), "{seals:?}");
        let flags = rustix::fs::fcntl_getfl(&fd).unwrap();
        assert_eq!(
            flags & rustix::fs::OFlags::ACCMODE,
            rustix::fs::OFlags::RDONLY
        );
        assert!(
            rustix::io::fcntl_getfd(&fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
        let mut f = std::fs::File::from(fd);
        assert!(f.write_all(b"x").is_err(), "read-only");
        let mut back = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"archive bytes");
        // Reopened writable through /proc, the seals still refuse a write.
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
        let mut w = std::fs::OpenOptions::new().write(true).open(proc).unwrap();
        assert!(w.write_all(b"x").is_err(), "sealed against writes");
    }
}
