//! `keypack inspect FILE`: what a bundle holds — entries, modes, owners, sizes, fingerprints and
//! problems — never a key byte. A file that is not gzip is handed to the disk-image inspector
//! (`cmd::inspect_image`). Exits 1 when the bundle has problems, so scripts can check it.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use keypack_bundle::{archive_problems, read_archive};
use zeroize::Zeroizing;

/// Largest bundle read (a bundle of a host and a hundred users is a few tens of KiB).
const MAX_BUNDLE_SIZE: u64 = 16 * 1024 * 1024;

/// Flags of `keypack inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A keys.tar.gz written by `keypack pack`, or a disk image or keyed ISO written by
    /// `keypack build`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON document on stdout instead of text (fields in the README); strings from
    /// the file are escaped as in the text output
    #[arg(long)]
    pub json: bool,
}

/// `keypack inspect`.
pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let path = &args.file;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n =
        read_up_to(&mut file, &mut magic).with_context(|| format!("reading {}", path.display()))?;
    if n < 2 || magic != [0x1f, 0x8b] {
        drop(file);
        if keypack_media_iso::is_iso9660(path) {
            return crate::cmd::inspect_iso::inspect_iso(path, args.json);
        }
        return crate::cmd::inspect_image::inspect_image(path, args.json);
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_BUNDLE_SIZE {
        anyhow::bail!(
            "{}: {len} bytes is far larger than any keys.tar.gz (at most {MAX_BUNDLE_SIZE})",
            path.display()
        );
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(len as usize));
    bytes.extend_from_slice(&magic);
    file.take(MAX_BUNDLE_SIZE)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let entries = read_archive(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let mark = keypack_bundle::burn_mark(&bytes).ok().flatten();
    drop(bytes);

    // Text goes to a buffer: with --json only the document is printed.
    let mut out = Vec::new();
    writeln!(
        out,
        "{}: keys.tar.gz, {} entries",
        path.display(),
        entries.len()
    )?;
    // Names come from the archive: escaped, so a crafted name cannot drive the terminal.
    let names: Vec<String> = entries
        .iter()
        .map(|e| crate::cmd::escape::field(&e.path))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut problems = Vec::new();
    for (e, name) in entries.iter().zip(&names) {
        writeln!(
            out,
            "{}{}  {}:{}  {:>5}  {:width$}  {}",
            e.kind,
            mode_string(e.mode),
            e.uid,
            e.gid,
            e.size,
            name,
            e.fingerprint.as_deref().unwrap_or("-"),
        )?;
        problems.extend(
            e.problems
                .iter()
                .map(|p| crate::cmd::escape::field(&format!("{name}: {p}"))),
        );
    }
    if let Some(line) = sealed_line(&entries) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{}", burn_line(mark.as_deref()))?;
    problems.extend(archive_problems(&entries));
    problems.sort();
    problems.dedup();
    if args.json {
        let doc = serde_json::json!({
            "file": crate::cmd::escape::field(&path.display().to_string()),
            "kind": "keys.tar.gz",
            "sealed": entries.iter().find_map(|e| e.sealed.as_ref()).map(|s| serde_json::json!({
                "kind": s.kind,
                "path": s.path,
                "scrypt_work_factor": s.work_factor,
            })),
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
            "burn_after_boot": mark.is_some(),
            "problems": problems,
            "ok": problems.is_empty(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit_for(&problems));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    let mut out = stdout;
    if problems.is_empty() {
        writeln!(out, "problems: none")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "problems:")?;
    for p in &problems {
        writeln!(out, "  {p}")?;
    }
    out.flush()?;
    Ok(ExitCode::from(1))
}

/// The line `inspect` prints for a sealed bundle (`--seal passphrase`), shared with the image
/// inspector.
pub fn sealed_line(entries: &[keypack_bundle::ArchiveEntry]) -> Option<String> {
    let s = entries.iter().find_map(|e| e.sealed.as_ref())?;
    Some(format!(
        "sealed ({}): the private keys are in {}, scrypt work factor 2^{}; the .pub fingerprints above are readable",
        s.kind, s.path, s.work_factor
    ))
}

/// The `--burn-after-boot` line of `inspect` (the token is escaped: it comes from the file).
pub fn burn_line(mark: Option<&str>) -> String {
    match mark {
        Some(token) => format!(
            "burn after boot: yes (mark {}): load-keys removes this bundle from the Ventoy stick after the first boot",
            crate::cmd::escape::field(token)
        ),
        None => "burn after boot: no".to_string(),
    }
}

/// `inspect`'s exit status: 1 when something looks wrong, so scripts can check it.
pub fn exit_for(problems: &[String]) -> ExitCode {
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One archive entry as JSON (`type`, `mode`, `uid`, `gid`, `size`, `path`, `fingerprint`,
/// `problems`), strings escaped: the archive is untrusted. Shared with the image inspector.
pub fn entry_json(e: &keypack_bundle::ArchiveEntry) -> serde_json::Value {
    use crate::cmd::escape::field;
    serde_json::json!({
        "type": e.kind.to_string(),
        "mode": format!("{:04o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "path": field(&e.path),
        "fingerprint": e.fingerprint.as_deref().map(field),
        "problems": e.problems.iter().map(|p| field(p)).collect::<Vec<_>>(),
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `rw-r--r--` style permission bits (the file type letter is printed separately).
fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn mode_strings() {
        assert_eq!(super::mode_string(0o600), "rw-------");
        assert_eq!(super::mode_string(0o644), "rw-r--r--");
        assert_eq!(super::mode_string(0o755), "rwxr-xr-x");
    }
}
