//! `keypack inspect HOST.iso` for keyed ISOs: where the keys area is and what it holds (empty,
//! keys with their entries and the public keys' fingerprints, sealed, damaged). Never prints
//! key bytes: private entries are shown by size only. Opens the ISO read-only.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use keypack_media_iso::{AREA_PATH, AreaState};

use crate::cmd::escape::field;

/// Inspects a keyed ISO. Exits 1 when the area is damaged.
pub fn inspect_iso(path: &Path, json: bool) -> Result<ExitCode> {
    let report = keypack_media_iso::inspect::inspect(path)
        .with_context(|| format!("inspecting {}", path.display()))?;
    let a = report.area;
    let mut out = Vec::new();
    writeln!(out, "{}: keyed ISO", field(&path.display().to_string()))?;
    writeln!(
        out,
        "  area {AREA_PATH}: offset {} ({} sectors of 2048), {} bytes",
        a.offset,
        a.offset / 2048,
        a.len
    )?;
    let mut problems: Vec<String> = Vec::new();
    let (state, used, entries) = match &report.state {
        AreaState::Empty => {
            writeln!(out, "  state: empty (boots without keys)")?;
            ("empty", 0, Vec::new())
        }
        AreaState::Keys { used, entries } | AreaState::Sealed { used, entries } => {
            let sealed = matches!(report.state, AreaState::Sealed { .. });
            let what = if sealed {
                "sealed (age, scrypt)"
            } else {
                "keys"
            };
            writeln!(
                out,
                "  state: {what} ({used} bytes used, {} entries)",
                entries.len()
            )?;
            let mut list = Vec::new();
            for e in entries {
                let kind = if e.mode & 0o170000 == 0o040000 {
                    'd'
                } else {
                    '-'
                };
                writeln!(
                    out,
                    "  {kind} {:04o} {}:{} {:>6}  {}{}",
                    e.mode & 0o7777,
                    e.uid,
                    e.gid,
                    e.size,
                    field(&e.path),
                    e.fingerprint
                        .as_deref()
                        .map(|f| format!("  {f}"))
                        .unwrap_or_default()
                )?;
                list.push(serde_json::json!({
                    "type": kind.to_string(),
                    "mode": format!("{:04o}", e.mode & 0o7777),
                    "uid": e.uid,
                    "gid": e.gid,
                    "size": e.size,
                    "path": field(&e.path),
                    "fingerprint": e.fingerprint,
                }));
            }
            (if sealed { "sealed" } else { "keys" }, *used, list)
        }
        AreaState::Damaged { used, why } => {
            writeln!(out, "  state: damaged ({used} bytes used): {}", field(why))?;
            problems.push(format!("the area is damaged: {why}"));
            ("damaged", *used, Vec::new())
        }
    };
    if json {
        let doc = serde_json::json!({
            "file": field(&path.display().to_string()),
            "kind": "keyed-iso",
            "area": { "path": AREA_PATH, "offset": a.offset, "bytes": a.len },
            "state": state,
            "used": used,
            "entries": entries,
            "problems": problems.iter().map(|p| field(p)).collect::<Vec<_>>(),
            "ok": problems.is_empty(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        std::io::stdout().write_all(&out)?;
    }
    Ok(crate::cmd::inspect::exit_for(&problems))
}
