//! Children get a scrubbed environment, are found over absolute `PATH` entries only, and a
//! closed stdout ends keypack quietly (SECURITY.md: children). Driven through `keypack path`,
//! which runs `nix build` (a fake `nix` script here) and prints the ISO path.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const CANARY: &str = "canary-7f3a9c1e-must-not-leak";
const AGE_KEY: &str = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake `nix` in `bin/` that dumps its environment to `env_out` and "builds" an ISO.
fn fake_nix(root: &Path, env_out: &Path) -> std::path::PathBuf {
    let bin = root.join("bin");
    let out = root.join("out/iso");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("nixos.iso"), b"iso").unwrap();
    script(
        &bin.join("nix"),
        &format!(
            "[ \"$1\" = --version ] && {{ echo 'nix (Nix) 2.24.9'; exit 0; }}\n\
             cat /proc/self/environ > '{}'\necho '{}'",
            env_out.display(),
            root.join("out").display()
        ),
    );
    bin
}

fn keypack(path: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keypack"));
    cmd.args(["path", "--flake", "/nonexistent#iso"])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("HOME", cwd)
        .env("KEYPACK_STATE_DIR", cwd.join("state"))
        .stdin(Stdio::null());
    cmd
}

#[test]
fn children_env_has_no_secret_canary() {
    let dir = tempfile::tempdir().unwrap();
    let env_out = dir.path().join("nix.env");
    let bin = fake_nix(dir.path(), &env_out);
    let out = keypack(&format!("{}:/usr/bin:/bin", bin.display()), dir.path())
        .env("SOPS_AGE_KEY", AGE_KEY)
        .env("SECRET_CANARY", CANARY)
        .env("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let env = std::fs::read(&env_out).expect("the fake nix ran");
    let vars: Vec<String> = env
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{vars:?}");
    for v in &vars {
        assert!(!v.contains(CANARY), "canary reached nix: {v}");
        assert!(!v.contains("AGE-SECRET-KEY"), "age key reached nix: {v}");
        assert!(!v.starts_with("SOPS_AGE_KEY="), "{v}");
        assert!(!v.starts_with("SECRET_CANARY="), "{v}");
        assert!(!v.starts_with("SSH_AUTH_SOCK="), "nix needs no agent: {v}");
    }
}

#[test]
fn children_env_never_runs_a_tool_from_the_working_directory() {
    for path in [
        ":/usr/bin:/bin",
        ".:/usr/bin:/bin",
        "/usr/bin:/bin:",
        "bin:/usr/bin:/bin",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let body = format!("touch '{}'\necho /nonexistent", marker.display());
        script(&dir.path().join("nix"), &body);
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        script(&dir.path().join("bin/nix"), &body);
        let out = keypack(path, dir.path()).output().unwrap();
        assert!(!marker.exists(), "PATH={path:?} ran ./nix: {out:?}");
        assert!(!out.status.success(), "PATH={path:?}: {out:?}");
    }
}

#[test]
fn children_env_closed_stdout_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let env_out = dir.path().join("nix.env");
    let bin = fake_nix(dir.path(), &env_out);
    // A pipe whose read end is closed before keypack writes: its println! gets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = keypack(&format!("{}:/usr/bin:/bin", bin.display()), dir.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(env_out.exists(), "the fake nix ran");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success(), "{out:?}");
}
