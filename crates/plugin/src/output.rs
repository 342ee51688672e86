//! Writing artifacts safely: mode 0600 from creation, an unnamed (or temp-named) file in the
//! target's own folder, fsync, then rename — so a failed or interrupted build leaves the previous
//! file or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Identity of a file as far as "did it change since the last build" goes (device, inode,
/// size, mtime): the media keep it in their state folder to decide on a keys-only rebuild.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    /// The identity of `path` now, or `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// Prefix of every temp file keypack writes; the next run removes stale ones it finds.
pub const TEMP_PREFIX: &str = ".keypack-tmp-";

/// A file being written next to its final path, renamed into place only when complete.
///
/// Where the file system allows it (ext4, xfs, btrfs, tmpfs) the file is created unnamed
/// (`O_TMPFILE`): until [`PendingFile::commit`] gives it a name, it exists in no folder, so a
/// SIGKILL, a crash or a full disk leaves nothing behind — not even a partial file holding keys.
/// Elsewhere (FAT, some network file systems) it is a named `.keypack-tmp-…` file that `Drop`
/// removes and [`remove_stale_temp_files`] cleans up after a killed run.
pub struct PendingFile {
    file: Option<File>,
    /// `None` while the file is unnamed.
    temp: Option<PathBuf>,
    /// What messages call the file being written.
    display: PathBuf,
    target: PathBuf,
}

impl PendingFile {
    /// Creates the file with mode 0600 (whatever the umask) in `target`'s folder.
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = parent_of(target);
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "output has no file name"))?
            .to_string_lossy()
            .into_owned();
        match rustix::fs::openat(
            rustix::fs::CWD,
            &dir,
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                let file = File::from(fd);
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
                return Ok(Self {
                    file: Some(file),
                    temp: None,
                    display: dir.join(format!("(unnamed temp file for {name})")),
                    target: target.to_path_buf(),
                });
            }
            // Not supported by this file system (or kernel): fall back to a named file.
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {}
            Err(e) => return Err(e.into()),
        }
        let (file, temp) = create_named(&dir, &name)?;
        Ok(Self {
            file: Some(file),
            display: temp.clone(),
            temp: Some(temp),
            target: target.to_path_buf(),
        })
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// The temp file's path, for messages (an unnamed file is shown as its folder).
    pub fn temp_path(&self) -> &Path {
        &self.display
    }

    /// fsyncs the file, renames it over the target, and fsyncs the folder. An unnamed file is
    /// first linked to a temp name (a complete file, so the moment between the link and the
    /// rename can leave at most a whole artifact, never a partial one).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()?;
        let dir = parent_of(&self.target);
        let temp = match self.temp.take() {
            Some(temp) => temp,
            None => link_unnamed(&file, &dir, &self.target)?,
        };
        drop(file);
        if let Err(e) = fs::rename(&temp, &self.target) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        File::open(&dir)?.sync_all()?;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.take().is_some()
            && let Some(temp) = &self.temp
        {
            let _ = fs::remove_file(temp);
        }
    }
}

fn create_named(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    for n in 0..1000u32 {
        let temp = dir.join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temp)
        {
            Ok(file) => {
                // The umask can only clear bits, but be explicit: keys are 0600.
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
                return Ok((file, temp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not find a free temp name",
    ))
}

/// Gives an `O_TMPFILE` file a temp name in `dir` (through `/proc/self/fd`, which needs no
/// privilege, else `AT_EMPTY_PATH`).
fn link_unnamed(file: &File, dir: &Path, target: &Path) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    for n in 0..1000u32 {
        let temp = dir.join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
        let linked = rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            rustix::fs::CWD,
            &temp,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )
        .or_else(|_| {
            rustix::fs::linkat(
                file,
                "",
                rustix::fs::CWD,
                &temp,
                rustix::fs::AtFlags::EMPTY_PATH,
            )
        });
        match linked {
            Ok(()) => return Ok(temp),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not find a free temp name",
    ))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `target` through a [`PendingFile`].
pub fn write_private_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut pending = PendingFile::create(target)?;
    pending.file().write_all(bytes)?;
    pending.commit()
}

/// Creates `dir` (and parents) with mode 0700 if missing, and refuses one that is
/// group- or world-accessible or not owned by us.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a folder", dir.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible to other users (mode {:04o}); keys may only be written to a private folder (chmod 700)",
                dir.display(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Refuses a folder for key-holding output that other users can list (`o+r`), that is shared
/// (sticky, like `/tmp`), or that is in the Nix store (readable by every user).
pub fn check_private_output_folder(output: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let folder = parent_of(output);
    let real = fs::canonicalize(&folder)?;
    if real.starts_with("/nix/store") {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is in the Nix store, which every user can read",
                real.display()
            ),
        ));
    }
    let mode = fs::metadata(&real)?.mode();
    if mode & 0o004 != 0 || mode & 0o1000 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} can be listed by other users (mode {:04o}); output holding private keys goes \
                 into a private folder (chmod 700 it, or use the default state folder)",
                real.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Removes `.keypack-tmp-*` files left in `dir` by killed runs (best effort).
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.file_type().map(|t| t.is_file()).unwrap_or(false)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_renames_a_complete_0600_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("keys.tar.gz");
        let mut pending = PendingFile::create(&target).unwrap();
        pending.file().write_all(b"secret bytes").unwrap();
        pending.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"secret bytes");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), ["keys.tar.gz"]);
    }

    /// On ext4/tmpfs the file being written has no name at all, so a process killed before
    /// commit (here: the file is simply never committed and the handle leaked, as a SIGKILL
    /// would) leaves no file in the folder.
    #[test]
    fn an_uncommitted_file_is_never_visible_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("image.img");
        fs::write(&target, b"old").unwrap();
        let mut pending = PendingFile::create(&target).unwrap();
        pending.file().write_all(b"new secret").unwrap();
        let unnamed = pending.temp.is_none();
        let listing = names(dir.path());
        std::mem::forget(pending);
        if unnamed {
            assert_eq!(listing, ["image.img"], "a temp name appeared before commit");
        }
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn dropping_without_commit_leaves_the_old_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        fs::write(&target, b"old").unwrap();
        let mut pending = PendingFile::create(&target).unwrap();
        pending.file().write_all(b"partial").unwrap();
        drop(pending);
        assert_eq!(names(dir.path()), ["out"]);
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn output_folders_others_can_list_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("keys.tar.gz");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        check_private_output_folder(&target).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        check_private_output_folder(&target).unwrap();
        for mode in [0o755, 0o705, 0o1733] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = check_private_output_folder(&target).unwrap_err();
            assert!(err.to_string().contains("chmod 700"), "{mode:o}: {err}");
        }
    }

    #[test]
    fn named_fallback_is_cleaned_on_drop_and_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (file, temp) = create_named(dir.path(), "x").unwrap();
        assert!(
            temp.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        );
        let mode = file.metadata().unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        drop(file);
        remove_stale_temp_files(dir.path());
        assert!(names(dir.path()).is_empty());
    }
}
