//! Stage 2 (`--install-users`): install the keys stage 1 staged under `/run/keypack/users/<u>/`
//! into each user's `~/.ssh/`, by name, once the booted system has its users.
//!
//! Users are looked up in `/etc/passwd` (a file, not NSS: the binary is static and runs before
//! anything else could answer). An unknown user is skipped with a warning. The home folder is
//! walked from `/` one component at a time without following symlinks, must be owned by the
//! user, and `~/.ssh` (user-controlled) is opened `O_NOFOLLOW`; files are written to a temp name
//! and renamed, so a symlink or hard link the user planted is replaced, never written through.
//! Does **not** create home folders: the system's user management owns them.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use keypack_layout::{PRIVATE_DIR_MODE, USER_KEY_NAME, classify, validate_name};

use crate::fsx::{self, Existing, FsError, Owner};
use crate::{error, info, warn};

/// First console line of stage 2.
pub const HEADER: &str = "=== Stage 2: Installing staged user SSH keys ===";
/// Last console line of stage 2.
pub const FOOTER: &str = "=== Stage 2: User key installation complete ===";

/// Largest passwd file read.
const MAX_PASSWD_SIZE: u64 = 8 * 1024 * 1024;

/// Where stage 2 reads and writes.
#[derive(Debug, Clone)]
pub struct Stage2 {
    /// The stage folder (`/run/keypack`).
    pub stage_dir: PathBuf,
    /// The root the homes are resolved under (`/`; a temp folder in tests).
    pub root: PathBuf,
    /// The passwd file (`<root>/etc/passwd` by default).
    pub passwd: PathBuf,
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// Home folder.
    pub home: String,
}

/// Parses passwd text; malformed lines and NIS `+`/`-` lines are ignored.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

impl Stage2 {
    /// Runs stage 2 and returns the number of problems (unknown users are warnings, not problems).
    pub fn run(&self) -> usize {
        info(HEADER);
        let problems = self.install_all();
        info(FOOTER);
        problems
    }

    fn install_all(&self) -> usize {
        let stage_shown = self.stage_dir.display().to_string();
        let stage = match fsx::open_root(&self.stage_dir) {
            Ok(fd) => fd,
            Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                info(&format!(
                    "No staged user keys (expected: {stage_shown}/users/<user>/)"
                ));
                return 0;
            }
            Err(e) => {
                error(&format!("cannot open the stage folder: {e}"));
                return 1;
            }
        };
        let users_shown = fsx::shown(&self.stage_dir, "users");
        let users = match fsx::open_dir(stage.as_fd(), "users", &users_shown) {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                info(&format!(
                    "No staged user keys (expected: {users_shown}/<user>/)"
                ));
                return 0;
            }
            Err(e) => {
                error(&format!("cannot open the stage folder: {e}"));
                return 1;
            }
        };
        let names = match fsx::list_dir(users.as_fd(), &users_shown) {
            Ok(names) => names,
            Err(e) => {
                error(&e.to_string());
                return 1;
            }
        };
        if names.is_empty() {
            info(&format!(
                "No staged user keys (expected: {users_shown}/<user>/)"
            ));
            return 0;
        }
        let passwd = match self.read_passwd() {
            Ok(entries) => entries,
            Err(e) => {
                error(&format!("cannot read the user database: {e}"));
                return names.len();
            }
        };
        let root = match fsx::open_root(&self.root) {
            Ok(fd) => fd,
            Err(e) => {
                error(&format!("cannot open the root folder: {e}"));
                return names.len();
            }
        };
        let mut problems = 0;
        for raw in names {
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            let valid = std::str::from_utf8(&raw)
                .ok()
                .filter(|n| validate_name(n).is_ok());
            let Some(name) = valid else {
                error(&format!(
                    "refusing staged folder {lossy:?}: not a valid user name"
                ));
                problems += 1;
                continue;
            };
            let Some(entry) = passwd.iter().find(|e| e.name == name) else {
                warn(&format!(
                    "skipping staged keys for user {name}: no such user in {}",
                    self.passwd.display()
                ));
                continue;
            };
            match self.install_user(&root, &users, entry) {
                Ok(installed) if installed.is_empty() => {
                    warn(&format!("no key files staged for user {name}"));
                }
                Ok(installed) => {
                    for line in installed {
                        info(&line);
                    }
                }
                Err(e) => {
                    error(&format!("keys for user {name} not installed: {e}"));
                    problems += 1;
                }
            }
        }
        problems
    }

    fn read_passwd(&self) -> Result<Vec<PasswdEntry>, FsError> {
        let shown = self.passwd.display().to_string();
        let file = std::fs::File::open(&self.passwd).map_err(|source| FsError::Io {
            path: shown.clone(),
            op: "open",
            source,
        })?;
        let mut text = String::new();
        file.take(MAX_PASSWD_SIZE)
            .read_to_string(&mut text)
            .map_err(|source| FsError::Io {
                path: shown,
                op: "read",
                source,
            })?;
        Ok(parse_passwd(&text))
    }

    /// Installs one user's staged files; returns the console lines for what was installed.
    fn install_user(
        &self,
        root: &OwnedFd,
        users: &OwnedFd,
        entry: &PasswdEntry,
    ) -> Result<Vec<String>, FsError> {
        let name = entry.name.as_str();
        let staged_shown = fsx::shown(&self.stage_dir, &format!("users/{name}"));
        let Some(staged) = fsx::open_dir(users.as_fd(), name, &staged_shown)? else {
            return Ok(Vec::new());
        };
        let home_shown = fsx::shown(&self.root, entry.home.trim_start_matches('/'));
        let home = open_home(root, &self.root, &entry.home)?;
        let st = rustix::fs::fstat(&home).map_err(|e| FsError::Io {
            path: home_shown.clone(),
            op: "stat",
            source: e.into(),
        })?;
        if st.st_uid != entry.uid {
            return Err(FsError::UnsafeDirectory {
                path: home_shown,
                uid: st.st_uid,
                mode: st.st_mode & 0o7777,
            });
        }
        let owner = Owner {
            uid: entry.uid,
            gid: entry.gid,
        };
        let ssh_shown = format!("{home_shown}/.ssh");
        let ssh = fsx::ensure_dir(
            home.as_fd(),
            ".ssh",
            &ssh_shown,
            PRIVATE_DIR_MODE,
            owner,
            Existing::Force,
        )?;
        let mut lines = Vec::new();
        for file_name in [USER_KEY_NAME.to_owned(), format!("{USER_KEY_NAME}.pub")] {
            // Same gate as stage 1: only what the layout knows.
            let Some(known) = classify(&format!("users/{name}/.ssh/{file_name}")) else {
                continue;
            };
            let src_shown = format!("{staged_shown}/{file_name}");
            let Some(data) = fsx::read_key_file(staged.as_fd(), &file_name, &src_shown)? else {
                continue;
            };
            let dst_shown = format!("{ssh_shown}/{file_name}");
            fsx::write_file(
                ssh.as_fd(),
                &file_name,
                &dst_shown,
                &data,
                known.mode(),
                owner,
            )?;
            lines.push(format!(
                "  installed {dst_shown} (mode {:04o}, owner {name} {}:{})",
                known.mode(),
                entry.uid,
                entry.gid
            ));
        }
        Ok(lines)
    }
}

/// Opens a home folder under `root`, one component at a time, refusing symlinks, `..` and
/// relative homes.
fn open_home(root: &OwnedFd, base: &Path, home: &str) -> Result<OwnedFd, FsError> {
    let shown = fsx::shown(base, home.trim_start_matches('/'));
    let path = Path::new(home);
    if !path.is_absolute() {
        return Err(FsError::NotDirectory { path: shown });
    }
    let mut current: Option<OwnedFd> = None;
    let mut walked = String::new();
    for component in path.components() {
        let part = match component {
            Component::RootDir => continue,
            Component::Normal(part) => part.to_str().ok_or_else(|| FsError::NotDirectory {
                path: shown.clone(),
            })?,
            _ => return Err(FsError::NotDirectory { path: shown }),
        };
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        let at = current.as_ref().unwrap_or(root).as_fd();
        let step_shown = fsx::shown(base, &walked);
        match fsx::open_dir(at, part, &step_shown)? {
            Some(fd) => current = Some(fd),
            None => {
                return Err(FsError::Io {
                    path: step_shown,
                    op: "open home",
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
        }
    }
    current.ok_or(FsError::NotDirectory { path: shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_parse_and_junk_is_skipped() {
        let text = "root:x:0:0:root:/root:/bin/sh\n\
                    alice:x:1000:100::/home/alice:/bin/bash\n\
                    +nis::::::\n\
                    broken:x:notanumber:1::/x:/bin/sh\n\
                    short:x:1\n";
        let entries = parse_passwd(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, "alice");
        assert_eq!(entries[1].uid, 1000);
        assert_eq!(entries[1].gid, 100);
        assert_eq!(entries[1].home, "/home/alice");
    }
}
