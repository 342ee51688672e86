//! Finds the sops files of a repository that list a given age recipient (what a host
//! rotation must rewrap), reading metadata only.

use std::path::{Path, PathBuf};

use keypack_sops::{Format, SopsFile};

use crate::LifecycleError;

/// Largest file looked at (keypack-repo's limit for repository files).
const MAX_SIZE: u64 = 4 * 1024 * 1024;

/// A sops file found by [`scan_sops_files`]: its path, store, bytes and the parsed file.
#[derive(Debug)]
pub struct SopsFileInfo {
    /// Path relative to the repository root.
    pub rel: PathBuf,
    /// The store (by extension, else by content).
    pub format: Format,
    /// The file as read (ciphertext).
    pub bytes: Vec<u8>,
    /// `bytes`, parsed (its `recipients()` list the recipient looked for).
    pub file: SopsFile,
}

/// Every sops file under `root` whose metadata lists `recipient`, sorted by path. Skips
/// folders whose names start with `.` (`.git`, …), symlinks, files larger than 4 MiB and files
/// that do not look like sops files; a file that looks like sops but does not parse is skipped
/// too (keypack does not rewrite what it cannot read; `sops updatekeys` can).
pub fn scan_sops_files(root: &Path, recipient: &str) -> Result<Vec<SopsFileInfo>, LifecycleError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| LifecycleError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| LifecycleError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            let ty = entry.file_type().map_err(|source| LifecycleError::Io {
                path: path.clone(),
                source,
            })?;
            if ty.is_dir() {
                if !name.to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
                continue;
            }
            if !ty.is_file() {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size > MAX_SIZE {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| LifecycleError::Io {
                path: path.clone(),
                source,
            })?;
            if !keypack_sops::looks_like_sops(&bytes) {
                continue;
            }
            // By extension as sops does (a `.json` binary envelope rewraps as JSON just the
            // same); a file without a known extension by content.
            let format = Format::from_path(&path).unwrap_or_else(|| Format::sniff(&bytes));
            let Ok(file) = SopsFile::parse(&bytes, format) else {
                continue;
            };
            if file.recipients().iter().any(|r| r == recipient) {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push(SopsFileInfo {
                    rel,
                    format,
                    bytes,
                    file,
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}
