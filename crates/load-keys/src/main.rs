//! `load-keys` command line. See the library docs for what each mode does.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use load_keys::stage1::Stage1;
use load_keys::stage2::Stage2;

const USAGE: &str = "\
usage: load-keys [--stage-dir DIR] [--ask-password PATH] [--fw-cfg FILE] <source_dir> [target_root]
       load-keys --install-users [--stage-dir DIR] [--root DIR] [--passwd FILE]

Stage 1 (initrd): copies the injected host key (etc/ssh/) and deploy key (root/.ssh/) from
<source_dir> (normally /) into [target_root] (default: /sysroot if it exists, else /mnt-root),
and stages users' keys (users/<u>/.ssh/) under --stage-dir (default /run/keypack).
A sealed bundle (keypack/sealed.age) is opened with a passphrase from QEMU's firmware config
(--fw-cfg, default /sys/firmware/qemu_fw_cfg/by_name/opt/io.keypack.passphrase/raw) when that
file exists, else from --ask-password (the absolute path of systemd-ask-password, under systemd
stage 1), else from /dev/console; three tries, then it boots on without keys.
When the bundle carries the mark keypack/burn-after-boot (keypack --burn-after-boot) and every
key was installed, it then removes that bundle from the Ventoy disk it came from (see
keypack-burn).

Stage 2 (--install-users): installs the staged users' keys into ~<u>/.ssh/, looking users up in
--passwd (default <root>/etc/passwd) and resolving homes under --root (default /).

Exit status: 0 on success or when nothing was injected, 1 if any file was refused or not
written, 2 on a usage error.";

const DEFAULT_STAGE_DIR: &str = "/run/keypack";

enum Mode {
    Stage1(Stage1),
    Stage2(Stage2),
    Help,
    Version,
}

fn parse(args: Vec<OsString>) -> Result<Mode, String> {
    let mut install_users = false;
    let mut stage_dir: Option<PathBuf> = None;
    let mut root: Option<PathBuf> = None;
    let mut passwd: Option<PathBuf> = None;
    let mut passphrase = load_keys::sealed::PassphraseConfig::default();
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut iter = args.into_iter();
    let mut only_positional = false;
    while let Some(arg) = iter.next() {
        let text = arg.to_str().unwrap_or("");
        if only_positional || !text.starts_with('-') || text == "-" {
            positional.push(PathBuf::from(arg));
            continue;
        }
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(PathBuf::from(v))),
            None => (text.to_owned(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            match inline.clone().or_else(|| iter.next().map(PathBuf::from)) {
                Some(v) if !v.as_os_str().is_empty() => Ok(v),
                _ => Err(format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--" => only_positional = true,
            "-h" | "--help" => return Ok(Mode::Help),
            "-V" | "--version" => return Ok(Mode::Version),
            "--install-users" => install_users = true,
            "--stage-dir" => stage_dir = Some(value("--stage-dir")?),
            "--root" => root = Some(value("--root")?),
            "--passwd" => passwd = Some(value("--passwd")?),
            "--ask-password" => {
                let path = value("--ask-password")?;
                if !path.is_absolute() {
                    return Err("--ask-password needs an absolute path".into());
                }
                passphrase.ask_password = Some(path);
            }
            "--fw-cfg" => passphrase.fw_cfg = value("--fw-cfg")?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let stage_dir = stage_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STAGE_DIR));
    if install_users {
        if !positional.is_empty() {
            return Err("--install-users takes no positional arguments".into());
        }
        let root = root.unwrap_or_else(|| PathBuf::from("/"));
        let passwd = passwd.unwrap_or_else(|| root.join("etc/passwd"));
        return Ok(Mode::Stage2(Stage2 {
            stage_dir,
            root,
            passwd,
        }));
    }
    if root.is_some() || passwd.is_some() {
        return Err("--root and --passwd only apply to --install-users".into());
    }
    let mut positional = positional.into_iter();
    let source = positional.next().ok_or("missing <source_dir>")?;
    let target = positional.next().unwrap_or_else(default_target);
    if positional.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(Mode::Stage1(Stage1 {
        source,
        target,
        stage_dir,
        passphrase,
    }))
}

/// systemd stage 1 mounts the target at /sysroot, the scripted stage 1 at /mnt-root.
fn default_target() -> PathBuf {
    if Path::new("/sysroot").is_dir() {
        PathBuf::from("/sysroot")
    } else {
        PathBuf::from("/mnt-root")
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let problems = match parse(args) {
        Ok(Mode::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Mode::Version) => {
            println!("load-keys {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Mode::Stage1(stage1)) => stage1.run(),
        Ok(Mode::Stage2(stage2)) => stage2.run(),
        Err(e) => {
            eprintln!("load-keys: error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("load-keys: {problems} problem(s); see the lines above");
        ExitCode::FAILURE
    }
}
