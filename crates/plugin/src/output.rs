//! Writing artifacts safely: mode 0600 from creation, a temp name in the target's own folder,
//! fsync, then rename — so a failed or interrupted build leaves the previous file or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of every temp file keypack writes; the next run removes stale ones it finds.
pub const TEMP_PREFIX: &str = ".keypack-tmp-";

/// A file being written under a temp name next to its final path. Dropped without
/// [`PendingFile::commit`], it removes the temp file.
pub struct PendingFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl PendingFile {
    /// Creates `<dir>/.keypack-tmp-<name>-<pid>-<n>` with mode 0600 (whatever the umask).
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = parent_of(target);
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "output has no file name"))?
            .to_string_lossy()
            .into_owned();
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
                    return Ok(Self {
                        file: Some(file),
                        temp,
                        target: target.to_path_buf(),
                    });
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

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// The temp file's path.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// fsyncs the file, renames it over the target, and fsyncs the folder.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.target)?;
        File::open(parent_of(&self.target))?.sync_all()?;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
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
