//! `keypack plugins check NAME`: the conformance run of an external medium against a
//! throwaway bundle, one named check at a time, so a plugin author sees what failed.
//!
//! Checks: handshake, describe, two builds with one seed (byte-identical artifacts), artifacts
//! 0600, a valid boot description, no key bytes in any other file under the output and state
//! folders, and none on the plugin's argv or in its environment (read from
//! `/proc/PID/cmdline` and `/proc/PID/environ` while it runs), whose variable names must all be
//! on the allow-list of [`crate::child`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keypack_bundle::SealedBundle;

use super::ExternalMedium;
use super::session::Session;
use crate::{BootDescription, BuildInputs, HostName, Medium};

/// One check's outcome: `Ok(detail)` or `Err(why)`.
pub type Outcome = Result<String, String>;

/// What [`run`] needs besides the bundle.
pub struct CheckInputs<'a> {
    /// The program.
    pub path: &'a Path,
    /// Its `NAME`.
    pub name: &'a str,
    /// The medium's own flags, as on the command line (`--kernel FILE`).
    pub args: &'a [String],
    /// An ISO to hand over.
    pub iso: Option<&'a Path>,
    /// An empty private folder for the builds.
    pub dir: &'a Path,
}

/// Runs every check, calling `report` after each; `true` when all passed.
pub fn run(
    bundle: &SealedBundle,
    input: &CheckInputs<'_>,
    report: &mut dyn FnMut(&str, &Outcome),
) -> bool {
    let mut ok = true;
    let mut note = |name: &str, o: Outcome| {
        ok &= o.is_ok();
        report(name, &o);
        o.is_ok()
    };
    let hello = Session::start(input.path, input.name, Path::new("/"), None)
        .and_then(|s| {
            let v = s.version;
            s.finish().map(|_| v)
        })
        .map(|v| format!("protocol version {v}"))
        .map_err(|e| crate::error_chain(&e));
    if !note("handshake", hello) {
        return false;
    }
    let medium = match ExternalMedium::describe(input.path, input.name) {
        Ok(m) => {
            let flags: Vec<String> = m.flags().map(|f| format!("--{}", f.name)).collect();
            note(
                "describe",
                Ok(format!(
                    "`{}`, artifact {}, flags [{}]",
                    m.name(),
                    m.default_artifact_name(),
                    flags.join(", ")
                )),
            );
            m
        }
        Err(e) => {
            note("describe", Err(crate::error_chain(&e)));
            return false;
        }
    };
    let matches = match medium
        .augment_args(clap::Command::new("build").no_binary_name(true))
        .try_get_matches_from(input.args)
    {
        Ok(m) => m,
        Err(e) => {
            note("flags", Err(e.to_string().trim().to_owned()));
            return false;
        }
    };
    let secrets = secret_needles(bundle);
    let host = HostName::new("testhost").expect("valid host name");
    let mut probe = Ok(String::from("not observed"));
    let mut builds = Vec::new();
    for run in ["a", "b"] {
        let out_dir = input.dir.join(run).join("out");
        let state_dir = input.dir.join(run).join("state");
        for d in [&out_dir, &state_dir] {
            if let Err(e) = crate::output::ensure_private_dir(d) {
                note("build", Err(format!("{}: {e}", d.display())));
                return false;
            }
        }
        let output = out_dir.join(medium.default_artifact_name());
        let inputs = BuildInputs::new(&host, &output, &state_dir, &matches)
            .with_iso(input.iso)
            .with_seed(Some(42));
        let mut on_start = |pid: u32| {
            if probe.is_ok() {
                probe = process_is_clean(pid, &secrets);
            }
        };
        match medium.run_build(bundle, &inputs, &mut on_start) {
            Ok(desc) => builds.push(desc),
            Err(e) => {
                note(&format!("build {run}"), Err(crate::error_chain(&e)));
                return false;
            }
        }
    }
    note(
        "build twice with seed 42",
        Ok(String::from("both answered")),
    );
    note("no key bytes on argv or in the environment", probe);
    let (first, second) = (&builds[0], &builds[1]);
    note(
        "boot description valid",
        valid_description(first, input.name, bundle),
    );
    let paths_a = first.files();
    let paths_b = second.files();
    note("artifacts byte-identical", identical(&paths_a, &paths_b));
    note(
        "artifacts 0600",
        private_modes(paths_a.iter().chain(&paths_b), input.dir),
    );
    let listed: Vec<PathBuf> = paths_a.iter().chain(&paths_b).cloned().collect();
    note(
        "no key bytes outside the listed artifacts",
        no_stray_keys(input.dir, &listed, &secrets),
    );
    ok
}

/// What gives a private key away: each private file whole, each of its base64 lines, the
/// archive.
fn secret_needles(bundle: &SealedBundle) -> Vec<Vec<u8>> {
    let mut out = vec![bundle.expose_archive().to_vec()];
    for (e, c) in bundle.expose_files() {
        if e.public {
            continue;
        }
        out.push(c.to_vec());
        for line in c.split(|b| *b == b'\n') {
            if line.len() >= 40 && !line.starts_with(b"-----") {
                out.push(line.to_vec());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The running plugin's argv and environment hold no key bytes, and its variables are all
/// on the allow-list.
pub fn process_is_clean(pid: u32, secrets: &[Vec<u8>]) -> Outcome {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| format!("/proc/{pid}/cmdline: {e}"))?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("/proc/{pid}/environ: {e}"))?;
    for s in secrets {
        if contains(&cmdline, s) {
            return Err("key bytes on the plugin's command line".into());
        }
        if contains(&environ, s) {
            return Err("key bytes in the plugin's environment".into());
        }
    }
    let entries: Vec<&[u8]> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .collect();
    // Nothing of keypack's own environment beyond the allow-list reaches the plugin. (An
    // interpreter's wrapper may add variables of its own, such as pyenv's shims: not ours.)
    for (k, v) in std::env::vars_os() {
        if crate::child::BASE_ENV.iter().any(|a| k == *a) {
            continue;
        }
        let mut ours = k.as_encoded_bytes().to_vec();
        ours.push(b'=');
        ours.extend_from_slice(v.as_encoded_bytes());
        if entries.contains(&ours.as_slice()) {
            return Err(format!(
                "keypack's variable {} reached the plugin (not on the allow-list)",
                k.to_string_lossy()
            ));
        }
    }
    let names: Vec<String> = entries
        .iter()
        .map(|v| {
            let n = v.split(|b| *b == b'=').next().unwrap_or_default();
            String::from_utf8_lossy(n).into_owned()
        })
        .collect();
    Ok(format!(
        "pid {pid}: {} argv bytes, variables [{}]",
        cmdline.len(),
        names.join(", ")
    ))
}

fn valid_description(d: &BootDescription, name: &str, bundle: &SealedBundle) -> Outcome {
    if d.version != crate::BOOT_DESCRIPTION_VERSION {
        return Err(format!(
            "version {}, expected {}",
            d.version,
            crate::BOOT_DESCRIPTION_VERSION
        ));
    }
    if d.medium != name {
        return Err(format!("medium is `{}`, expected `{name}`", d.medium));
    }
    if d.host != "testhost" {
        return Err(format!("host is `{}`, expected `testhost`", d.host));
    }
    if Some(d.host_public_key.as_str()) != bundle.manifest().host_public_key() {
        return Err("host_public_key is not the bundle's host public key".into());
    }
    let paths = d.files();
    if paths.is_empty() {
        return Err("lists no file".into());
    }
    for p in &paths {
        if !p.is_absolute() {
            return Err(format!("{} is not an absolute path", p.display()));
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("{} is not a regular file", p.display())),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    Ok(format!(
        "{} file(s), {:?} firmware",
        paths.len(),
        d.firmware
    ))
}

fn identical(a: &[PathBuf], b: &[PathBuf]) -> Outcome {
    if a.len() != b.len() {
        return Err(format!("{} files, then {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        let bx = std::fs::read(x).map_err(|e| format!("{}: {e}", x.display()))?;
        let by = std::fs::read(y).map_err(|e| format!("{}: {e}", y.display()))?;
        if bx != by {
            return Err(format!("{} and {} differ", x.display(), y.display()));
        }
    }
    Ok(format!("{} file(s) compared", a.len()))
}

/// Files the plugin made (under `dir`) are 0600; inputs it only points at (a `--kernel`) are
/// the user's.
fn private_modes<'a>(paths: impl Iterator<Item = &'a PathBuf>, dir: &Path) -> Outcome {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mut n = 0;
    for p in paths {
        let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if !canon.starts_with(&dir) {
            continue;
        }
        let mode = std::fs::metadata(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode != 0o600 {
            return Err(format!("{} has mode {mode:04o}", p.display()));
        }
        n += 1;
    }
    if n == 0 {
        return Err("the description lists no file the plugin wrote".into());
    }
    Ok(format!("{n} file(s)"))
}

fn no_stray_keys(dir: &Path, listed: &[PathBuf], secrets: &[Vec<u8>]) -> Outcome {
    let listed: Vec<PathBuf> = listed
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut todo = vec![dir.to_owned()];
    let mut scanned = 0;
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(p);
                continue;
            }
            if !t.is_file() {
                continue;
            }
            let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if listed.contains(&canon) {
                continue;
            }
            scanned += 1;
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if secrets.iter().any(|s| contains(&bytes, s)) {
                return Err(format!(
                    "{} holds key bytes but is not listed in the boot description",
                    p.display()
                ));
            }
        }
    }
    Ok(format!("{scanned} other file(s) scanned"))
}
