//! Helpers: the skip convention, finding tools, building the workspace's binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Prints the skip marker, or panics when `KEYPACK_REQUIRE_ALL=1` (CI).
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("KEYPACK_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: prerequisite missing (KEYPACK_REQUIRE_ALL=1): {why}");
    }
    // Written to the stderr handle directly: libtest's capture only swallows `eprintln!`.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "KEYPACK-SKIPPED: {test}: {why}");
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    which(tool).is_some()
}

/// The full path of `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The cargo target folder this test binary was built in (`…/target`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-binary or target/<profile>/binary
    let mut dir = exe.parent().expect("exe folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds `bin` of `package` with `profile` (`dev`, `release-small`) and returns its path.
/// `KEYPACK_BIN_<NAME>` (upper case, `-` → `_`) overrides.
pub fn cargo_bin(package: &str, bin: &str, profile: &str) -> Result<PathBuf> {
    let var = format!("KEYPACK_BIN_{}", bin.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir();
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(&target)
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!(
            "cargo build -p {package} --bin {bin} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target.join(dir).join(bin))
}

/// Sends `signal` to `pid` directly (no `kill` program: minimal systems have none).
pub fn signal_pid(pid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("not a pid"))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}
