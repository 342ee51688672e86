//! `keypack build`/`path` without `--iso` run `nix build`: an old Nix or a failing build is a
//! sentence naming what keypack tried, where, and the two ways out (issue: a newcomer's first
//! hour). Driven with fake `nix` scripts on PATH.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn fake_nix(root: &Path, version: &str, build: &str) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("nix");
    let marker = root.join("built");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo '{version}'; exit 0; }}\n\
             echo \"$@\" > '{}'\n{build}\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn keypack(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keypack"))
        .args(args)
        .current_dir(root)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", root.join("bin").display()),
        )
        .env("HOME", root)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn an_old_nix_is_named_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    fake_nix(dir.path(), "nix (Nix) 2.8.0", "exit 0");
    let out = keypack(dir.path(), &["path"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is Nix 2.8.0, too old"), "{err}");
    assert!(err.contains("Nix >= 2.18"), "{err}");
    assert!(
        err.contains("--iso FILE") && err.contains("--flake REF"),
        "{err}"
    );
    assert!(!err.contains("unrecognised flag"), "{err}");
    assert!(!dir.path().join("built").exists(), "nix build ran anyway");
}

#[test]
fn a_failing_nix_build_says_what_was_tried_where_and_the_ways_out() {
    let dir = tempfile::tempdir().unwrap();
    fake_nix(
        dir.path(),
        "nix (Nix) 2.24.9",
        "echo \"error: path '$PWD' is not a flake\" >&2; exit 1",
    );
    let out = keypack(dir.path(), &["path"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let folder = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        err.contains(&format!(
            "running `nix build .#iso` in {}",
            folder.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("is not a flake"),
        "nix's own message is shown: {err}"
    );
    assert!(
        err.contains(&format!("`nix build .#iso` in {} failed", folder.display())),
        "{err}"
    );
    assert!(
        err.contains("--iso FILE") && err.contains("--flake REF"),
        "{err}"
    );
    let args = std::fs::read_to_string(dir.path().join("built")).unwrap();
    assert!(
        args.contains("build .#iso --print-out-paths --no-link"),
        "{args}"
    );

    // No nix at all: the same ways out.
    std::fs::remove_file(dir.path().join("bin/nix")).unwrap();
    let out = keypack(dir.path(), &["path"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--iso FILE") && err.contains("--flake REF"),
        "{err}"
    );
}
