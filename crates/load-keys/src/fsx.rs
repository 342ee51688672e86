//! File-system primitives that never follow a symlink: every open is `openat` relative to a
//! directory fd with `O_NOFOLLOW`, every write goes to a fresh temp name (`O_CREAT|O_EXCL`) that
//! is renamed over the destination, and every mode and owner is set explicitly on the fd.
//!
//! Does **not** resolve paths with more than one component: callers walk one component at a
//! time, so a symlink anywhere on the way is refused rather than resolved. The paths given on the
//! command line (the source, the target root, the stage folder's parent) are the only ones the
//! kernel resolves for us: they come from the boot configuration, not from the archive.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use keypack_layout::MAX_KEY_FILE_SIZE;
use rustix::fs::{self, AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use rustix::io::Errno;
use zeroize::Zeroizing;

/// Why a file or folder was refused or could not be written. `path` is the path as shown to the
/// operator (source, target or stage side); no variant ever carries file contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The entry is a symlink; load-keys never follows one.
    #[error("{path}: is a symbolic link, refusing to follow it")]
    Symlink {
        /// The entry shown to the operator.
        path: String,
    },
    /// A folder was expected.
    #[error("{path}: is not a directory")]
    NotDirectory {
        /// The entry shown to the operator.
        path: String,
    },
    /// A regular file was expected (not a FIFO, device, socket or folder).
    #[error("{path}: is not a regular file")]
    NotRegular {
        /// The entry shown to the operator.
        path: String,
    },
    /// The file has more than one hard link: its contents may be another file of the medium
    /// (or of the initrd), so it is refused.
    #[error("{path}: has {links} hard links, refusing a hard-linked key file")]
    HardLinked {
        /// The entry shown to the operator.
        path: String,
        /// Its link count.
        links: u64,
    },
    /// The file is larger than any key file can be.
    #[error("{path}: {size} bytes, larger than the {limit}-byte limit for a key file")]
    TooLarge {
        /// The entry shown to the operator.
        path: String,
        /// Its size (or the bytes read so far).
        size: u64,
        /// [`MAX_KEY_FILE_SIZE`].
        limit: u64,
    },
    /// An existing folder is owned by someone else or writable by others.
    #[error(
        "{path}: existing directory has unsafe ownership or mode (uid {uid}, mode {mode:04o}), refusing to write into it"
    )]
    UnsafeDirectory {
        /// The folder shown to the operator.
        path: String,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// A system call failed.
    #[error("{path}: {op} failed: {source}")]
    Io {
        /// The entry shown to the operator.
        path: String,
        /// What was being done ("create directory", "rename", …).
        op: &'static str,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &str, op: &'static str, e: Errno) -> FsError {
    FsError::Io {
        path: path.to_owned(),
        op,
        source: e.into(),
    }
}

/// Owner given to a created file or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
}

impl Owner {
    /// root:root.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// What to do with a folder that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Reset its owner and mode (private folders we own: `.ssh`, `root`, the stage folders).
    Force,
    /// Leave it, but refuse it unless it is owned by root and not writable by group or others
    /// (shared system folders: `etc`, `etc/ssh`).
    RequireSafe,
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Opens a path given on the command line as a folder (this is the one place a symlink is
/// followed: the path comes from the boot configuration, not from the archive).
pub fn open_root(path: &Path) -> Result<OwnedFd, FsError> {
    let shown = path.display().to_string();
    match fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOTDIR) => Err(FsError::NotDirectory { path: shown }),
        Err(e) => Err(io_err(&shown, "open directory", e)),
    }
}

/// Turns a failed `openat` into the most useful error, by looking at the entry without following.
fn explain(dir: BorrowedFd<'_>, name: &str, shown: &str, e: Errno, want_dir: bool) -> FsError {
    match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) == FileType::Symlink => FsError::Symlink {
            path: shown.to_owned(),
        },
        Ok(st) if want_dir && file_type(&st) != FileType::Directory => FsError::NotDirectory {
            path: shown.to_owned(),
        },
        Ok(st) if !want_dir && file_type(&st) != FileType::RegularFile => FsError::NotRegular {
            path: shown.to_owned(),
        },
        _ => io_err(shown, "open", e),
    }
}

/// Opens the folder `name` inside `dir` without following a symlink. `Ok(None)` if it is absent.
pub fn open_dir(dir: BorrowedFd<'_>, name: &str, shown: &str) -> Result<Option<OwnedFd>, FsError> {
    match fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(explain(dir, name, shown, e, true)),
    }
}

/// Opens `dir/name` as a folder, creating it with `mode` and `owner` when absent. An existing
/// folder is handled per `existing`; a symlink or a non-folder is refused.
pub fn ensure_dir(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    mode: u32,
    owner: Owner,
    existing: Existing,
) -> Result<OwnedFd, FsError> {
    let created = match fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => {
            // A read-only file system may report EROFS even when the folder exists.
            return match open_dir(dir, name, shown)? {
                Some(fd) => finish_dir(fd, shown, mode, owner, existing, false),
                None => Err(io_err(shown, "create directory", e)),
            };
        }
    };
    let fd = open_dir(dir, name, shown)?
        .ok_or_else(|| io_err(shown, "open new directory", Errno::NOENT))?;
    finish_dir(fd, shown, mode, owner, existing, created)
}

fn finish_dir(
    fd: OwnedFd,
    shown: &str,
    mode: u32,
    owner: Owner,
    existing: Existing,
    created: bool,
) -> Result<OwnedFd, FsError> {
    let st = fs::fstat(&fd).map_err(|e| io_err(shown, "stat", e))?;
    if created || existing == Existing::Force {
        set_owner_mode(fd.as_fd(), &st, shown, owner, mode)?;
    } else if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(FsError::UnsafeDirectory {
            path: shown.to_owned(),
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
        });
    }
    Ok(fd)
}

fn set_owner_mode(
    fd: BorrowedFd<'_>,
    st: &Stat,
    shown: &str,
    owner: Owner,
    mode: u32,
) -> Result<(), FsError> {
    if st.st_uid != owner.uid || st.st_gid != owner.gid {
        fs::fchown(
            fd,
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
        )
        .map_err(|e| io_err(shown, "chown", e))?;
    }
    fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| io_err(shown, "chmod", e))
}

/// Reads the regular file `dir/name` without following a symlink, refusing anything larger than
/// [`MAX_KEY_FILE_SIZE`]. `Ok(None)` if it is absent. FIFOs and device nodes are refused before
/// they are opened (an `lstat` first, then `fstat` on the opened fd must show the same inode), and
/// so is a file with more than one hard link (`st_nlink != 1`).
pub fn read_key_file(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, FsError> {
    read_file_bounded(dir, name, shown, MAX_KEY_FILE_SIZE)
}

/// [`read_key_file`] with another size bound (the sealed blob, `keypack/sealed.age`).
pub fn read_file_bounded(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    limit: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, FsError> {
    let before = match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err(shown, "stat", e)),
    };
    match file_type(&before) {
        FileType::RegularFile => {}
        FileType::Symlink => {
            return Err(FsError::Symlink {
                path: shown.to_owned(),
            });
        }
        _ => {
            return Err(FsError::NotRegular {
                path: shown.to_owned(),
            });
        }
    }
    if before.st_nlink != 1 {
        return Err(FsError::HardLinked {
            path: shown.to_owned(),
            links: before.st_nlink as u64,
        });
    }
    let too_large = |size: u64| FsError::TooLarge {
        path: shown.to_owned(),
        size,
        limit,
    };
    if before.st_size as u64 > limit {
        return Err(too_large(before.st_size as u64));
    }
    let fd = fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| explain(dir, name, shown, e, false))?;
    let st = fs::fstat(&fd).map_err(|e| io_err(shown, "stat", e))?;
    if file_type(&st) != FileType::RegularFile
        || st.st_ino != before.st_ino
        || st.st_dev != before.st_dev
    {
        return Err(FsError::NotRegular {
            path: shown.to_owned(),
        });
    }
    if st.st_nlink != 1 {
        return Err(FsError::HardLinked {
            path: shown.to_owned(),
            links: st.st_nlink as u64,
        });
    }
    // Pre-sized so reading never reallocates and leaves an unzeroized copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(limit as usize + 1));
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| FsError::Io {
            path: shown.to_owned(),
            op: "read",
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Writes `data` to `dir/name` via a temp name in the same folder (created `O_EXCL|O_NOFOLLOW`,
/// 0600), sets owner and mode on the fd, syncs, then renames it over `name`. A symlink or hard
/// link already at `name` is replaced, never written through.
pub fn write_file(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    data: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<(), FsError> {
    let tmp = format!(".{name}.load-keys-{}.tmp", std::process::id());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let private = Mode::from_raw_mode(0o600);
    let fd = match fs::openat(dir, &tmp, flags, private) {
        Err(Errno::EXIST) => {
            // A leftover of an interrupted run (or something planted): remove the entry itself.
            fs::unlinkat(dir, &tmp, AtFlags::empty())
                .map_err(|e| io_err(shown, "remove stale temp file", e))?;
            fs::openat(dir, &tmp, flags, private)
        }
        other => other,
    }
    .map_err(|e| io_err(shown, "create temp file", e))?;
    let result = (|| {
        let mut file = File::from(fd);
        file.write_all(data).map_err(|source| FsError::Io {
            path: shown.to_owned(),
            op: "write",
            source,
        })?;
        let st = fs::fstat(&file).map_err(|e| io_err(shown, "stat", e))?;
        set_owner_mode(file.as_fd(), &st, shown, owner, mode)?;
        file.sync_all().map_err(|source| FsError::Io {
            path: shown.to_owned(),
            op: "sync",
            source,
        })?;
        fs::renameat(dir, &tmp, dir, name).map_err(|e| io_err(shown, "rename", e))?;
        // Make the rename durable where that means anything (not on tmpfs); best effort.
        let _ = fs::fsync(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

/// Lists the entry names of a folder (without `.` and `..`), sorted, as raw bytes.
pub fn list_dir(dir: BorrowedFd<'_>, shown: &str) -> Result<Vec<Vec<u8>>, FsError> {
    let entries = fs::Dir::read_from(dir).map_err(|e| io_err(shown, "read directory", e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(shown, "read directory", e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// `path` shown relative to `base` (`/` + `etc/ssh` → `/etc/ssh`).
pub fn shown(base: &Path, rel: &str) -> String {
    base.join(rel).display().to_string()
}
