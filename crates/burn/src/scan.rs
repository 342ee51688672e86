//! Finding the machine's disks: `/sys/block/<name>` → `/dev/<name>`.
//!
//! Skips RAM disks, optical drives, floppies, device-mapper and md devices (none can be the
//! stick's raw disk) and disks the kernel marks read-only. Partitions are not listed: the
//! layout is read from the whole disk.

use std::path::{Path, PathBuf};

/// A whole disk to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name (`vda`, `sdb`).
    pub name: String,
    /// Its device node.
    pub node: PathBuf,
    /// Why it is skipped, if it is.
    pub skipped: Option<&'static str>,
}

const NOT_DISKS: [&str; 6] = ["ram", "zram", "sr", "fd", "dm-", "md"];

/// Every disk under `sys_block`, sorted by name, with its node under `dev`.
pub fn candidates(sys_block: &Path, dev: &Path) -> Vec<Candidate> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if NOT_DISKS.iter().any(|p| name.starts_with(p)) || name.contains('/') {
            continue;
        }
        let ro = std::fs::read_to_string(e.path().join("ro")).is_ok_and(|s| s.trim() == "1");
        let size = std::fs::read_to_string(e.path().join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let node = dev.join(&name);
        let skipped = if size == 0 {
            Some("empty")
        } else if ro {
            Some("read-only")
        } else if !node.exists() {
            Some("no device node")
        } else {
            None
        };
        out.push(Candidate {
            name,
            node,
            skipped,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
