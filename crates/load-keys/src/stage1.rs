//! Stage 1: copy the injected keys from the initramfs (`source`, normally `/`) into the target
//! root (`/sysroot` or `/mnt-root`), and stage users' keys under `/run/keypack/users/<u>/`.
//!
//! Only the files [`keypack_layout::classify`] knows are read; each is read once into memory
//! (bounded), and written with an explicit mode and owner root. User keys are **not** written into
//! the target's homes: in stage 1 the target has no `/etc/passwd` and no homes yet, so they are
//! staged on `/run` (which survives switch-root in both stage-1 flavours) and installed by name in
//! stage 2 (`--install-users`).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use keypack_layout::{
    KeyRole, KnownFile, MAX_KEY_FILE_SIZE, MAX_SEALED_BLOB_SIZE, PRIVATE_DIR_MODE,
    SEALED_BLOB_PATH, USER_KEY_NAME, classify, validate_name,
};
use zeroize::Zeroizing;

use crate::fsx::{self, Existing, FsError, Owner};
use crate::keycheck;
use crate::sealed::{self, PassphraseConfig, PassphraseSource};
use crate::{error, info, warn};

/// The seed's first console line.
pub const HEADER: &str = "=== Stage 1: Loading SSH keys (keypack) ===";
/// Printed when at least one injected key file is present.
pub const FOUND: &str = "Found injected keys, copying to target...";
/// Printed when nothing was injected (a normal boot without keys from a Ventoy stick or an
/// extra initrd).
pub const NOT_FOUND: &str = "No injected keys found (expected: /etc/ssh/ssh_host_ed25519_key)";
/// The seed's last console line.
pub const FOOTER: &str = "=== Stage 1: Key loading complete ===";

/// Upper bound on staged users, so a hostile archive cannot make stage 1 spin.
pub const MAX_USERS: usize = 256;

/// Where stage 1 reads and writes.
#[derive(Debug, Clone)]
pub struct Stage1 {
    /// The initramfs root holding the injected files (`/`).
    pub source: PathBuf,
    /// The target root (`/sysroot`, `/mnt-root`).
    pub target: PathBuf,
    /// Where users' keys are staged (`/run/keypack`).
    pub stage_dir: PathBuf,
    /// Where the passphrase of a sealed bundle comes from.
    pub passphrase: PassphraseConfig,
}

/// One injected (or unsealed) file, read and classified.
pub struct Injected {
    path: String,
    file: KnownFile,
    data: Zeroizing<Vec<u8>>,
}

impl Stage1 {
    /// Runs stage 1 and returns the number of problems (0 = success, including "nothing injected").
    pub fn run(&self) -> usize {
        let mut source = self.passphrase.source();
        self.run_with(&mut *source)
    }

    /// [`Self::run`] with the passphrase of a sealed bundle asked from `passphrase`.
    pub fn run_with(&self, passphrase: &mut dyn PassphraseSource) -> usize {
        info(HEADER);
        let (mut injected, mut problems) = match self.scan() {
            Ok(found) => found,
            Err(e) => {
                error(&format!("cannot open the source directory: {e}"));
                info(FOOTER);
                return 1;
            }
        };
        match self.unseal(passphrase) {
            Ok(None) => {}
            Ok(Some(files)) => problems += add_unsealed(&mut injected, files),
            Err(problem) => {
                error(&problem);
                info(sealed::NOT_UNSEALED);
                info(FOOTER);
                return problems + 1;
            }
        }
        problems += check_contents(&mut injected);
        if injected.is_empty() && problems == 0 {
            info(NOT_FOUND);
            info(FOOTER);
            return 0;
        }
        problems += self.install(&injected);
        // Only after every key is in place: a bundle that did not install stays on the stick.
        problems += crate::burn::after_install(&self.source, problems);
        info(FOOTER);
        problems
    }

    /// The sealed bundle's private files, when the source holds `keypack/sealed.age`:
    /// `Ok(None)` without one, `Err` (the console line) when it could not be opened.
    fn unseal(
        &self,
        passphrase: &mut dyn PassphraseSource,
    ) -> Result<Option<Vec<sealed::TarFile>>, String> {
        let root = fsx::open_root(&self.source).map_err(|e| e.to_string())?;
        let blob = read_rel(&root, &self.source, SEALED_BLOB_PATH, MAX_SEALED_BLOB_SIZE)
            .map_err(|e| format!("refusing the sealed keys: {e}"))?;
        let Some(blob) = blob else {
            return Ok(None);
        };
        info(&format!(
            "Found sealed keys (/{SEALED_BLOB_PATH}); asking for the passphrase ({})",
            passphrase.name()
        ));
        let tar = sealed::unseal(&blob, passphrase).map_err(|e| e.to_string())?;
        let files = sealed::parse_tar(&tar).map_err(|e| e.to_string())?;
        info(&format!("Unsealed {} private key file(s)", files.len()));
        Ok(Some(files))
    }

    /// Writes the checked files: host and deploy keys into the target, users' keys into the
    /// stage folder. Returns the number of problems. (The caller prints the footer.)
    pub fn install(&self, injected: &[Injected]) -> usize {
        let mut problems = 0;
        info(FOUND);
        let host_private = KeyRole::Host.private_path();
        if !injected.iter().any(|i| i.path == host_private) {
            warn(&format!(
                "no host key injected (expected: /{host_private}); sshd will generate a new one and sops-nix cannot decrypt"
            ));
        }
        problems += self.copy_root_keys(injected);
        problems += self.stage_user_keys(injected);
        problems
    }

    /// Reads every known file from the source (contents not checked yet). Returns the files and
    /// the number refused.
    fn scan(&self) -> Result<(Vec<Injected>, usize), FsError> {
        let root = fsx::open_root(&self.source)?;
        let mut injected = Vec::new();
        let mut refused = 0;
        let mut paths = Vec::new();
        for role in [KeyRole::Host, KeyRole::Deploy] {
            paths.push(role.private_path());
            paths.push(role.public_path());
        }
        match self.user_paths(&root) {
            Ok((user_paths, bad)) => {
                paths.extend(user_paths);
                refused += bad;
            }
            Err(e) => {
                error(&format!("refusing injected user keys: {e}"));
                refused += 1;
            }
        }
        for path in paths {
            // The gate: only paths the layout knows are ever read.
            let Some(file) = classify(&path) else {
                continue;
            };
            match read_rel(&root, &self.source, &path, MAX_KEY_FILE_SIZE) {
                Ok(Some(data)) => injected.push(Injected { path, file, data }),
                Ok(None) => {}
                Err(e) => {
                    error(&format!("refusing injected file: {e}"));
                    refused += 1;
                }
            }
        }
        Ok((injected, refused))
    }

    /// Candidate paths of users' keys: one pair per valid name in `source/users/`.
    fn user_paths(&self, root: &OwnedFd) -> Result<(Vec<String>, usize), FsError> {
        let shown = fsx::shown(&self.source, "users");
        let Some(users) = fsx::open_dir(root.as_fd(), "users", &shown)? else {
            return Ok((Vec::new(), 0));
        };
        let mut paths = Vec::new();
        let mut refused = 0;
        for raw in fsx::list_dir(users.as_fd(), &shown)? {
            let lossy = String::from_utf8_lossy(&raw);
            let reason = match std::str::from_utf8(&raw) {
                Err(_) => Some("name is not UTF-8".to_owned()),
                Ok(name) => validate_name(name).err().map(|e| e.to_string()),
            };
            if let Some(reason) = reason {
                error(&format!(
                    "refusing injected user folder users/{lossy:?}: {reason}"
                ));
                refused += 1;
                continue;
            }
            if paths.len() / 2 >= MAX_USERS {
                error(&format!(
                    "refusing injected user folder users/{lossy:?}: more than {MAX_USERS} users"
                ));
                refused += 1;
                continue;
            }
            let base = format!("users/{lossy}/.ssh/{USER_KEY_NAME}");
            paths.push(base.clone());
            paths.push(format!("{base}.pub"));
        }
        Ok((paths, refused))
    }

    /// Host and deploy keys → `target/etc/ssh`, `target/root/.ssh`.
    fn copy_root_keys(&self, injected: &[Injected]) -> usize {
        let wanted: Vec<&Injected> = injected
            .iter()
            .filter(|i| matches!(i.file.role, KeyRole::Host | KeyRole::Deploy))
            .collect();
        if wanted.is_empty() {
            return 0;
        }
        let target = match fsx::open_root(&self.target) {
            Ok(fd) => fd,
            Err(e) => {
                error(&format!(
                    "cannot open the target root, {} key file(s) not copied: {e}",
                    wanted.len()
                ));
                return wanted.len();
            }
        };
        let mut problems = 0;
        for item in wanted {
            let dirs: Vec<(String, u32, Existing)> = item
                .file
                .role
                .parent_dirs()
                .into_iter()
                .map(|(dir, mode)| {
                    let existing = if mode == PRIVATE_DIR_MODE {
                        Existing::Force
                    } else {
                        Existing::RequireSafe
                    };
                    (dir, mode, existing)
                })
                .collect();
            let shown_file = fsx::shown(&self.target, &item.path);
            match write_under(&target, &self.target, &dirs, &item.path, item) {
                Ok(()) => info(&format!(
                    "  copied /{} -> {shown_file} (mode {:04o}, owner root)",
                    item.path,
                    item.file.mode()
                )),
                Err(e) => {
                    error(&format!("not copied /{}: {e}", item.path));
                    problems += 1;
                }
            }
        }
        problems
    }

    /// User keys → `stage_dir/users/<u>/`.
    fn stage_user_keys(&self, injected: &[Injected]) -> usize {
        let wanted: Vec<&Injected> = injected
            .iter()
            .filter(|i| matches!(i.file.role, KeyRole::User(_)))
            .collect();
        if wanted.is_empty() {
            return 0;
        }
        let stage = match open_stage_dir(&self.stage_dir) {
            Ok(fd) => fd,
            Err(e) => {
                error(&format!(
                    "cannot prepare the stage folder, {} user key file(s) not staged: {e}",
                    wanted.len()
                ));
                return wanted.len();
            }
        };
        let mut problems = 0;
        for item in wanted {
            let KeyRole::User(user) = &item.file.role else {
                continue;
            };
            let dirs = vec![
                ("users".to_owned(), PRIVATE_DIR_MODE, Existing::Force),
                (format!("users/{user}"), PRIVATE_DIR_MODE, Existing::Force),
            ];
            let name = if item.file.public {
                format!("{USER_KEY_NAME}.pub")
            } else {
                USER_KEY_NAME.to_owned()
            };
            let rel = format!("users/{user}/{name}");
            let shown_file = fsx::shown(&self.stage_dir, &rel);
            match write_under(&stage, &self.stage_dir, &dirs, &rel, item) {
                Ok(()) => info(&format!(
                    "  staged /{} -> {shown_file} (mode {:04o}) for user {user}",
                    item.path,
                    item.file.mode()
                )),
                Err(e) => {
                    error(&format!("not staged /{}: {e}", item.path));
                    problems += 1;
                }
            }
        }
        problems
    }
}

/// Adds the unsealed private files to the injected ones. Only private key paths the layout
/// knows are taken; a plaintext private key beside the sealed blob is dropped (the sealed one
/// wins). Returns the number of files refused.
fn add_unsealed(injected: &mut Vec<Injected>, files: Vec<sealed::TarFile>) -> usize {
    let mut refused = 0;
    for f in files {
        let shown: String = f.path.escape_debug().collect();
        match classify(&f.path) {
            Some(file) if !file.public => {
                if let Some(i) = injected.iter().position(|i| i.path == f.path) {
                    error(&format!(
                        "refusing injected /{shown}: a plaintext private key beside the sealed one"
                    ));
                    injected.remove(i);
                    refused += 1;
                }
                injected.push(Injected {
                    path: f.path,
                    file,
                    data: f.data,
                });
            }
            _ => {
                error(&format!(
                    "refusing sealed file {shown:?}: not a private key path of the layout"
                ));
                refused += 1;
            }
        }
    }
    refused
}

/// Drops every key whose private file is not an OpenSSH ed25519 private key or whose `.pub` is
/// not its public key (both files of the key are dropped). Returns the number of files dropped.
fn check_contents(injected: &mut Vec<Injected>) -> usize {
    let mut bad: Vec<String> = Vec::new();
    for item in injected.iter().filter(|i| !i.file.public) {
        let pub_path = format!("{}.pub", item.path);
        let public = injected.iter().find(|i| i.path == pub_path);
        if let Err(e) = keycheck::check_pair(Some(&item.data), public.map(|p| &p.data[..])) {
            error(&format!(
                "refusing injected key /{} (and its .pub): {e}",
                item.path
            ));
            bad.push(item.path.clone());
            bad.push(pub_path);
        }
    }
    for item in injected.iter().filter(|i| i.file.public) {
        let private = item.path.strip_suffix(".pub").unwrap_or(&item.path);
        if injected.iter().any(|i| i.path == private) {
            continue;
        }
        if let Err(e) = keycheck::check_pair(None, Some(&item.data)) {
            error(&format!("refusing injected file /{}: {e}", item.path));
            bad.push(item.path.clone());
        }
    }
    let before = injected.len();
    injected.retain(|i| !bad.contains(&i.path));
    before - injected.len()
}

/// Opens (creating it 0700 root if needed) the stage folder. Its parent (`/run`) is resolved by
/// the kernel; the folder itself must not be a symlink.
pub fn open_stage_dir(stage_dir: &Path) -> Result<OwnedFd, FsError> {
    let shown = stage_dir.display().to_string();
    let (Some(parent), Some(name)) = (stage_dir.parent(), stage_dir.file_name()) else {
        return Err(FsError::NotDirectory { path: shown });
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent_fd = fsx::open_root(parent)?;
    let name = name.to_str().ok_or_else(|| FsError::NotDirectory {
        path: shown.clone(),
    })?;
    fsx::ensure_dir(
        parent_fd.as_fd(),
        name,
        &shown,
        PRIVATE_DIR_MODE,
        Owner::ROOT,
        Existing::Force,
    )
}

/// Reads `root/rel` walking one component at a time without following symlinks.
fn read_rel(
    root: &OwnedFd,
    base: &Path,
    rel: &str,
    limit: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, FsError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    let mut current: Option<OwnedFd> = None;
    let mut walked = String::new();
    for dir in dirs {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(dir);
        let at = current.as_ref().unwrap_or(root).as_fd();
        match fsx::open_dir(at, dir, &fsx::shown(base, &walked))? {
            Some(fd) => current = Some(fd),
            None => return Ok(None),
        }
    }
    let at = current.as_ref().unwrap_or(root).as_fd();
    fsx::read_file_bounded(at, file, &fsx::shown(base, rel), limit)
}

/// Creates `dirs` (each a path relative to `root`, outermost first) and writes the file `rel`.
fn write_under(
    root: &OwnedFd,
    base: &Path,
    dirs: &[(String, u32, Existing)],
    rel: &str,
    item: &Injected,
) -> Result<(), FsError> {
    let mut current: Option<OwnedFd> = None;
    for (dir, mode, existing) in dirs {
        let name = dir.rsplit('/').next().unwrap_or(dir);
        let at = current.as_ref().unwrap_or(root).as_fd();
        current = Some(fsx::ensure_dir(
            at,
            name,
            &fsx::shown(base, dir),
            *mode,
            Owner::ROOT,
            *existing,
        )?);
    }
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let at = current.as_ref().unwrap_or(root).as_fd();
    fsx::write_file(
        at,
        name,
        &fsx::shown(base, rel),
        &item.data,
        item.file.mode(),
        Owner::ROOT,
    )
}
