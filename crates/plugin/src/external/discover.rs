//! Finding external plugins: executables named `keypack-media-NAME` or `keypack-runner-NAME`
//! in the folders keypack is given (the absolute `PATH` entries and `plugin_dir`), never the
//! working directory: a relative folder is skipped like a relative `PATH` entry in
//! [`crate::child`].

use std::path::{Path, PathBuf};

use super::protocol::PluginKind;

/// File name prefix of an external medium.
pub const MEDIA_PREFIX: &str = "keypack-media-";
/// File name prefix of an external runner.
pub const RUNNER_PREFIX: &str = "keypack-runner-";

/// One program found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Media or runner.
    pub kind: PluginKind,
    /// `NAME` of `keypack-media-NAME`.
    pub name: String,
    /// Its absolute path.
    pub path: PathBuf,
    /// Later programs of the same kind and name, hidden by this one (earlier folders win,
    /// as on `PATH`).
    pub shadows: Vec<PathBuf>,
}

/// Every plugin program in `dirs` (in order; the first of a name wins), sorted by kind and name.
pub fn discover<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for dir in dirs.into_iter().filter(|d| d.is_absolute()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<_> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for file in names {
            let (kind, name) = if let Some(n) = file.strip_prefix(MEDIA_PREFIX) {
                (PluginKind::Media, n)
            } else if let Some(n) = file.strip_prefix(RUNNER_PREFIX) {
                (PluginKind::Runner, n)
            } else {
                continue;
            };
            if !valid_name(name) {
                continue;
            }
            let path = dir.join(&file);
            if crate::child::find_program_in(&path, None).is_none() {
                continue; // not an executable regular file
            }
            match found.iter_mut().find(|f| f.kind == kind && f.name == name) {
                Some(f) if f.path != path => f.shadows.push(path),
                Some(_) => {}
                None => found.push(Found {
                    kind,
                    name: name.to_owned(),
                    path,
                    shadows: Vec::new(),
                }),
            }
        }
    }
    found.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    found
}

/// A plugin name: lowercase letters, digits and `-`, starting with a letter (a value of
/// `--media`; also keeps backup files like `keypack-media-x~` out).
pub fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn finds_executables_by_prefix_first_folder_wins_relative_folders_skipped() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = exe(a.path(), "keypack-media-foo", 0o755);
        let second = exe(b.path(), "keypack-media-foo", 0o755);
        exe(a.path(), "keypack-media-notexec", 0o644);
        exe(a.path(), "keypack-media-Bad~", 0o755);
        let runner = exe(b.path(), "keypack-runner-bar", 0o755);
        exe(b.path(), "other-tool", 0o755);
        // A relative folder (the working directory) is never searched.
        let found = discover([a.path(), Path::new("."), b.path()]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].kind, PluginKind::Media);
        assert_eq!(found[0].path, first);
        assert_eq!(found[0].shadows, vec![second]);
        assert_eq!(found[1].kind, PluginKind::Runner);
        assert_eq!(found[1].path, runner);
    }
}
