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

/// Runs after the keys were installed from `source`; `problems` is how many files failed.
/// Returns the number of new problems (a burn that failed on a disk).
pub fn after_install(source: &Path, problems: usize) -> usize {
    after_install_at(source, problems, &Places::stage1())
}

/// [`after_install`] with explicit places.
pub fn after_install_at(source: &Path, problems: usize, places: &Places<'_>) -> usize {
    let token = match read_mark(source) {
        Ok(Some(t)) => t,
        Ok(None) => return 0,
        Err(e) => {
            error(&format!("{PREFIX} cannot read the mark: {e}"));
            return 1;
        }
    };
    if !keypack_burn::mark::valid_token(&token) {
        error(&format!(
            "{PREFIX} the mark /{BURN_MARK_PATH} is not a keypack token; nothing burned"
        ));
        return 1;
    }
    info(&format!(
        "{PREFIX} this bundle asks to be removed from its Ventoy disk (mark {token})"
    ));
    if problems > 0 {
        warn(&format!(
            "{PREFIX} not burning: {problems} key file(s) were not installed, so the bundle on the stick stays"
        ));
        return 0;
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
        return failed;
    }
    if burned.is_empty() {
        info(&format!(
            "{PREFIX} nothing to burn: no Ventoy disk on this machine holds this bundle"
        ));
    } else {
        let disks: Vec<&str> = burned.iter().map(|b| b.disk.as_str()).collect();
        info(&format!(
            "{PREFIX} done on {}; the stick boots on without keys (refresh it with `keypack media update`)",
            disks.join(", ")
        ));
    }
    0
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
