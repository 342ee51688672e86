//! SECURITY.md's table of `expose_secret` call sites stays true: every source file outside the
//! tests that exposes a secret (`.expose_secret()`, `.expose_archive()`, `.expose_files()`) is
//! named in the table, and every file the table names still does. A new call site in a new
//! file fails this test until a reviewer has written down why it is needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const CALLS: &[&str] = &[".expose_secret()", ".expose_archive()", ".expose_files()"];

/// Test-only crates whose whole purpose is handling test secrets.
const TEST_CRATES: &[&str] = &["crates/test-age-plugin-yubikey", "crates/test-piv-card"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Files (relative to the workspace, as `crates/x/src/y.rs`) with an expose call before their
/// `#[cfg(test)]` module, comments not counted.
fn files_with_calls() -> BTreeSet<String> {
    let root = workspace();
    let mut files = Vec::new();
    for top in ["crates", "plugins"] {
        for krate in std::fs::read_dir(root.join(top)).unwrap().flatten() {
            let rel = format!("{top}/{}", krate.file_name().to_string_lossy());
            if TEST_CRATES.contains(&rel.as_str()) {
                continue;
            }
            rust_files(&krate.path().join("src"), &mut files);
        }
    }
    let mut with = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let body = text.split("#[cfg(test)]").next().unwrap_or("");
        let calls = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .any(|l| CALLS.iter().any(|c| l.contains(c)));
        if calls {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            with.insert(rel);
        }
    }
    with
}

/// Files the table names (`| E4 | \`keypack/src/keys.rs\` …`), as workspace paths; E3 is
/// where plaintext is created, not a call, and is left out.
fn files_in_table() -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace().join("SECURITY.md")).unwrap();
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| E") else {
            continue;
        };
        if rest.starts_with("3 |") {
            continue;
        }
        let Some(path) = rest.split('`').nth(1) else {
            continue;
        };
        let path = if path.starts_with("plugins/") {
            path.to_owned()
        } else {
            format!("crates/{path}")
        };
        named.insert(path);
    }
    named
}

#[test]
fn security_md_names_every_file_that_exposes_a_secret() {
    let found = files_with_calls();
    let named = files_in_table();
    assert!(
        found.len() >= 10,
        "the scan found too few call sites: {found:?}"
    );
    let unlisted: Vec<_> = found.difference(&named).collect();
    assert!(
        unlisted.is_empty(),
        "expose calls in files SECURITY.md's table does not name (add a row saying why): {unlisted:?}"
    );
    let stale: Vec<_> = named.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "SECURITY.md's table names files without an expose call (remove or fix the row): {stale:?}"
    );
    for f in &named {
        assert!(workspace().join(f).is_file(), "{f} does not exist");
    }
}
