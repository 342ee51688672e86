//! Putting the planned files on disk, each atomically.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keypack_plugin::output::PendingFile;

use crate::LifecycleError;

/// One file to write: a path relative to the repository root and its complete new content
/// (ciphertext or public data only: sops files, `.sops.yaml`, `keypack.pins`).
///
/// A plan is a `Vec<Write>` in the order [`apply`] must follow. For `rotate` that order is:
/// the entity's new document first (the only copy of the new keys goes to disk before anything
/// depends on it), then the rewrapped sops files, then `.sops.yaml`, then `keypack.pins` last.
/// A crash after the document leaves the old pins, so every build refuses the half-rotated
/// repository loudly (pin mismatch) instead of packing a key nobody recorded; the old document
/// is in git. Pins are never updated before the keys they name exist on disk, and the old key
/// is never retired before its replacement is stored.
#[derive(Debug)]
pub struct Write {
    /// Relative to the repository root.
    pub rel: PathBuf,
    /// The new content.
    pub bytes: Vec<u8>,
}

/// Writes every file in order: a temp file in the target's folder (unnamed where the file
/// system allows), mode 0644, fsync, rename over the target, fsync of the folder. Missing
/// parent folders are created (0755). Stops at the first failure; earlier files stay written
/// (each one complete).
pub fn apply(root: &Path, writes: &[Write]) -> Result<Vec<PathBuf>, LifecycleError> {
    let mut done = Vec::with_capacity(writes.len());
    for w in writes {
        let target = root.join(&w.rel);
        let io = |source: std::io::Error| LifecycleError::Io {
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut pending = PendingFile::create(&target).map_err(io)?;
        pending.file().write_all(&w.bytes).map_err(io)?;
        // Public data or ciphertext only: readable like any other repository file.
        pending
            .file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        pending.commit().map_err(io)?;
        done.push(w.rel.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_written_whole_0644_and_replace_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"old").unwrap();
        let writes = vec![
            Write {
                rel: "a".into(),
                bytes: b"new".to_vec(),
            },
            Write {
                rel: "hosts/b.yaml".into(),
                bytes: b"b".to_vec(),
            },
        ];
        let done = apply(dir.path(), &writes).unwrap();
        assert_eq!(done, [PathBuf::from("a"), PathBuf::from("hosts/b.yaml")]);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"new");
        let meta = std::fs::metadata(dir.path().join("hosts/b.yaml")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temp file left behind");
    }
}
