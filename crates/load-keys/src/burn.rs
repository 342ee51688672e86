//! Burn after boot: when the injected bundle carries the mark `keypack/burn-after-boot`
//! (`keypack build --burn-after-boot`), remove that bundle from the Ventoy disk it came from,
//! once its keys are installed. The disk work is `keypack-burn`'s; this module finds the mark,
//! decides whether to burn, and prints what happened on the console.
//!
//! Does not burn when installing the keys had a problem: the bundle on the stick may then be
//! the only copy of a key that did not land. Test-only knob: `keypack_burn.stop_after=STEP` on
//! the kernel command line stops the burn after that step (see `keypack_burn::STEPS`), as a
//! power cut would; the end-to-end interruption test uses it.

use std::os::fd::AsFd;
use std::path::Path;

use keypack_layout::BURN_MARK_PATH;

use crate::{error, fsx, info, warn};

/// Prefix of the burn's console lines.
pub const PREFIX: &str = "keypack: burn after boot:";
/// The kernel command-line parameter of the test-only stop knob.
pub const STOP_PARAM: &str = "keypack_burn.stop_after=";

/// Where the burn looks (the real paths in stage 1; temporary ones in tests).
#[derive(Debug, Clone)]
pub struct Places<'a> {
    /// `/sys/block`.
    pub sys_block: &'a Path,
    /// `/dev`.
    pub dev: &'a Path,
    /// `/proc/cmdline`.
    pub cmdline: &'a Path,
}

impl Places<'static> {
    /// The places of a real stage 1.
    pub fn stage1() -> Self {
        Places {
            sys_block: Path::new("/sys/block"),
            dev: Path::new("/dev"),
            cmdline: Path::new("/proc/cmdline"),
        }
    }
}

/// What [`after_install_at`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The bundle has no mark (built without `--burn-after-boot`).
    NoMark,
    /// The mark could not be read or is not a token.
    BadMark,
    /// Keys were not all installed, so the bundle stays on the stick.
    Kept,
    /// No disk holds an archive with this mark.
    Nothing,
    /// Burned on this many disks.
    Burned(usize),
    /// The burn failed (or was stopped by the test knob) on this many disks.
    Failed(usize),
}

impl Outcome {
    /// Problems to add to stage 1's count.
    pub fn problems(self) -> usize {
        match self {
            Outcome::BadMark => 1,
            Outcome::Failed(n) => n,
            _ => 0,
        }
    }
}

/// Runs after the keys were installed from `source`; `problems` is how many files failed.
/// Returns the number of new problems (a bad mark, a burn that failed on a disk).
pub fn after_install(source: &Path, problems: usize) -> usize {
    after_install_at(source, problems, &Places::stage1()).problems()
}

/// [`after_install`] with explicit places.
pub fn after_install_at(source: &Path, problems: usize, places: &Places<'_>) -> Outcome {
    let token = match read_mark(source) {
        Ok(Some(t)) => t,
        Ok(None) => return Outcome::NoMark,
        Err(e) => {
            error(&format!("{PREFIX} cannot read the mark: {e}"));
            return Outcome::BadMark;
        }
    };
    if !keypack_burn::mark::valid_token(&token) {
        error(&format!(
            "{PREFIX} the mark /{BURN_MARK_PATH} is not a keypack token; nothing burned"
        ));
        return Outcome::BadMark;
    }
    info(&format!(
        "{PREFIX} this bundle asks to be removed from its Ventoy disk (mark {token})"
    ));
    if problems > 0 {
        warn(&format!(
            "{PREFIX} not burning: {problems} key file(s) were not installed, so the bundle on the stick stays"
        ));
        return Outcome::Kept;
    }
    let cmdline = std::fs::read_to_string(places.cmdline).unwrap_or_default();
    let stop = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(STOP_PARAM))
        .map(str::to_owned);
    if let Some(step) = &stop {
        warn(&format!("{PREFIX} test knob: stopping after step {step}"));
    }
    let (burned, failed) = keypack_burn::burn_machine(
        &token,
        places.sys_block,
        places.dev,
        keypack_burn::Stop(stop.as_deref()),
        &mut |line| info(line),
    );
    if failed > 0 {
        error(&format!(
            "{PREFIX} the burn failed on {failed} disk(s); see the lines above"
        ));
        return Outcome::Failed(failed);
    }
    if burned.is_empty() {
        info(&format!(
            "{PREFIX} nothing to burn: no Ventoy disk on this machine holds this bundle"
        ));
        Outcome::Nothing
    } else {
        let disks: Vec<&str> = burned.iter().map(|b| b.disk.as_str()).collect();
        info(&format!(
            "{PREFIX} done on {}; the stick boots on without keys (refresh it with `keypack media update`)",
            disks.join(", ")
        ));
        Outcome::Burned(burned.len())
    }
}

/// The mark's token from `source/keypack/burn-after-boot`, trimmed; `None` without a mark.
fn read_mark(source: &Path) -> Result<Option<String>, fsx::FsError> {
    let root = fsx::open_root(source)?;
    let shown = fsx::shown(source, "keypack");
    let Some(dir) = fsx::open_dir(root.as_fd(), "keypack", &shown)? else {
        return Ok(None);
    };
    let name = BURN_MARK_PATH.rsplit('/').next().unwrap_or(BURN_MARK_PATH);
    let Some(bytes) = fsx::read_key_file(dir.as_fd(), name, &fsx::shown(source, BURN_MARK_PATH))?
    else {
        return Ok(None);
    };
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fx {
        _tmp: tempfile::TempDir,
        src: std::path::PathBuf,
        sys: std::path::PathBuf,
        dev: std::path::PathBuf,
        cmdline: std::path::PathBuf,
    }

    fn fx(mark: Option<&str>) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let (src, sys, dev) = (
            tmp.path().join("src"),
            tmp.path().join("sys"),
            tmp.path().join("dev"),
        );
        for d in [&src, &sys, &dev] {
            std::fs::create_dir(d).unwrap();
        }
        if let Some(m) = mark {
            std::fs::create_dir(src.join("keypack")).unwrap();
            std::fs::write(src.join(BURN_MARK_PATH), m).unwrap();
        }
        let cmdline = tmp.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyS0\n").unwrap();
        Fx {
            _tmp: tmp,
            src,
            sys,
            dev,
            cmdline,
        }
    }

    fn places(f: &Fx) -> Places<'_> {
        Places {
            sys_block: &f.sys,
            dev: &f.dev,
            cmdline: &f.cmdline,
        }
    }

    /// A disk under `sys/` whose node under `dev/` is a plain file of `bytes`.
    fn disk(f: &Fx, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        std::fs::create_dir(f.sys.join(name)).unwrap();
        std::fs::write(f.sys.join(name).join("size"), "8192\n").unwrap();
        std::fs::write(f.sys.join(name).join("ro"), "0\n").unwrap();
        let node = f.dev.join(name);
        std::fs::write(&node, bytes).unwrap();
        node
    }

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn no_mark_no_burn() {
        let f = fx(None);
        let node = disk(&f, "vdz", &[0xAA; 4096]);
        assert_eq!(after_install_at(&f.src, 0, &places(&f)), Outcome::NoMark);
        assert_eq!(std::fs::read(node).unwrap(), [0xAA; 4096]);
    }

    #[test]
    fn a_mark_that_is_not_a_token_is_a_problem_and_burns_nothing() {
        let f = fx(Some("../../etc/passwd\n"));
        let node = disk(&f, "vdz", &[0xAA; 4096]);
        assert_eq!(after_install_at(&f.src, 0, &places(&f)), Outcome::BadMark);
        assert_eq!(std::fs::read(node).unwrap(), [0xAA; 4096]);
    }

    #[test]
    fn nothing_to_burn_without_a_ventoy_disk() {
        let f = fx(Some(&format!("{TOKEN}\n")));
        let node = disk(&f, "vdz", &[0xAA; 4096]);
        disk(&f, "ram0", &[0; 512]);
        assert_eq!(after_install_at(&f.src, 0, &places(&f)), Outcome::Nothing);
        assert_eq!(std::fs::read(node).unwrap(), [0xAA; 4096]);
    }

    #[test]
    fn keys_not_all_installed_means_no_burn() {
        let f = fx(Some(&format!("{TOKEN}\n")));
        assert_eq!(after_install_at(&f.src, 2, &places(&f)), Outcome::Kept);
        assert_eq!(after_install_at(&f.src, 0, &places(&f)), Outcome::Nothing);
    }

    #[test]
    fn a_symlinked_mark_is_refused() {
        let f = fx(None);
        std::fs::create_dir(f.src.join("keypack")).unwrap();
        std::fs::write(f.src.join("elsewhere"), TOKEN).unwrap();
        std::os::unix::fs::symlink(f.src.join("elsewhere"), f.src.join(BURN_MARK_PATH)).unwrap();
        assert_eq!(after_install_at(&f.src, 0, &places(&f)), Outcome::BadMark);
    }
}
