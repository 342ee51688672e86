//! Spawning helper programs (ssh, ssh-keyscan, nix, QEMU, age plugins) safely.
//!
//! * Every child gets a cleared environment plus one allow-list ([`BASE_ENV`] and whatever the
//!   caller adds): a variable holding a secret (`SOPS_AGE_KEY`, a token, …) never reaches it.
//! * A program is only ever found over *absolute* `PATH` entries: an empty, `.` or relative
//!   entry would run `./ssh` from the working directory. The `PATH` handed to a child keeps
//!   only absolute entries too.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What every child receives (when set).
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
];

/// Extra variables `ssh` needs: the agent socket, and the terminal type for the session.
pub const SSH_ENV: &[&str] = &["SSH_AUTH_SOCK", "TERM"];

/// Extra variables pinentry needs to reach the display or terminal.
pub const PINENTRY_ENV: &[&str] = &[
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "GPG_TTY",
    "TERM",
];

/// Extra variables the age plugin (`age-plugin-yubikey`) needs to reach pcscd.
pub const PCSC_ENV: &[&str] = &["PCSCLITE_CSOCK_NAME", "PCSCLITE_NO_BLOCKING"];

/// Every variable any child may receive: [`BASE_ENV`] and the per-tool lists.
pub fn union_env() -> impl Iterator<Item = &'static str> {
    BASE_ENV
        .iter()
        .chain(SSH_ENV)
        .chain(PINENTRY_ENV)
        .chain(PCSC_ENV)
        .copied()
}

/// `path` with only its absolute entries.
pub fn absolute_path_var(path: &OsStr) -> OsString {
    std::env::join_paths(std::env::split_paths(path).filter(|d| d.is_absolute()))
        .unwrap_or_default()
}

/// A command for `program` with a cleared environment: [`BASE_ENV`] plus `extra`, copied from
/// ours when set; `PATH` keeps only its absolute entries.
pub fn command(program: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for &var in BASE_ENV.iter().chain(extra) {
        if let Some(v) = std::env::var_os(var) {
            if var == "PATH" {
                cmd.env(var, absolute_path_var(&v));
            } else {
                cmd.env(var, v);
            }
        }
    }
    cmd
}

/// [`command`] for `name` resolved by [`find_program`]. When it is not found the command runs
/// the empty path, so spawning fails with `NotFound` instead of trying the working directory.
pub fn command_for(name: impl AsRef<Path>, extra: &[&str]) -> Command {
    command(&find_program(name).unwrap_or_default(), extra)
}

/// `name` resolved over the absolute entries of `$PATH` only. A name containing `/` is taken
/// as a path and must be absolute. `None` when not found (or not an executable file).
pub fn find_program(name: impl AsRef<Path>) -> Option<PathBuf> {
    find_program_in(name.as_ref(), std::env::var_os("PATH").as_deref())
}

/// [`find_program`] over `path` instead of `$PATH`.
pub fn find_program_in(name: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.as_os_str().as_encoded_bytes().contains(&b'/') {
        return (name.is_absolute() && is_executable(name)).then(|| name.to_owned());
    }
    std::env::split_paths(path?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `ErrorKind::NotFound` for a program that [`find_program`] could not find.
pub fn not_found(name: impl AsRef<Path>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "{} not found on an absolute PATH entry",
            name.as_ref().display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn relative_entries_and_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let abs = dir.path().as_os_str().to_owned();
        assert_eq!(
            find_program_in(Path::new("tool"), Some(&abs)),
            Some(tool.clone())
        );
        assert_eq!(
            find_program_in(Path::new("tool"), Some(OsStr::new(":."))),
            None
        );
        assert_eq!(find_program_in(Path::new("./tool"), Some(&abs)), None);
        assert_eq!(find_program_in(&tool, None), Some(tool.clone()));
        assert_eq!(
            absolute_path_var(OsStr::new(":.:/usr/bin:rel:/bin")),
            OsString::from("/usr/bin:/bin")
        );
    }

    #[test]
    fn command_clears_the_environment() {
        let cmd = command(Path::new("/bin/true"), &["SSH_AUTH_SOCK"]);
        let names: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for k in &names {
            let k = k.to_str().unwrap();
            assert!(BASE_ENV.contains(&k) || k == "SSH_AUTH_SOCK", "{k}");
        }
    }
}
