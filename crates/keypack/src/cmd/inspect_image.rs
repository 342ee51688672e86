//! `keypack inspect IMAGE` for disk images: partition layout, Ventoy version, files on the data
//! partition, injection entries, and each injected bundle's entries and fingerprints.
//!
//! Never prints key material: bundles are read into zeroized buffers and only their manifests
//! (paths, modes, owners, sizes, fingerprints) are shown. Opens the image read-only.
//!
//! The image is untrusted: every string that comes from it (file names, `ventoy.json` keys and
//! values, the Ventoy version, bundle entry names, problems naming any of these) goes through
//! [`field`] before it reaches the terminal, so a crafted name cannot drive it.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use keypack_bundle::read_archive;

use crate::cmd::escape::field;

/// Inspects a disk image written by `keypack build`. Called by `keypack inspect` for any file
/// that does not start with the gzip magic. Exits 1 when something looks wrong.
pub fn inspect_image(path: &Path, json: bool) -> Result<ExitCode> {
    let info = keypack_media_ventoy::inspect(path).with_context(|| {
        format!(
            "{}: neither a keys.tar.gz nor a Ventoy disk",
            path.display()
        )
    })?;
    // Text goes to a buffer: with --json only the document is printed.
    let mut out = Vec::new();
    let f = &info.found;
    let mut bundles = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    writeln!(
        out,
        "{}: Ventoy disk, {:?} partition table, {} bytes",
        field(&path.display().to_string()),
        f.style,
        f.disk_len
    )?;
    writeln!(
        out,
        "  partition 1 (data):    start {:>10}  sectors {:>10}",
        f.data.start, f.data.sectors
    )?;
    writeln!(
        out,
        "  partition 2 (VTOYEFI): start {:>10}  sectors {:>10}",
        f.efi.start, f.efi.sectors
    )?;
    writeln!(
        out,
        "Ventoy version: {}",
        info.version
            .as_deref()
            .map_or("unknown (no VENTOY_VERSION in grub/grub.cfg)".into(), field)
    )?;
    match &info.data_fs {
        Ok(kind) => writeln!(out, "data filesystem: {}", field(kind))?,
        Err(why) => writeln!(out, "data filesystem: {}", field(why))?,
    }
    if !info.files.is_empty() {
        writeln!(out, "files on the data partition:")?;
        for file in &info.files {
            if file.dir {
                writeln!(out, "  {:>12}  {}/", "-", field(&file.path))?;
            } else {
                writeln!(out, "  {:>12}  {}", file.size, field(&file.path))?;
            }
        }
    }
    match &info.json {
        None => writeln!(out, "ventoy.json: none")?,
        Some(Err(e)) => {
            writeln!(out, "ventoy.json: does not parse: {}", field(e))?;
            problems.push("ventoy.json does not parse".into());
        }
        Some(Ok(_)) => {
            writeln!(out, "injection entries:")?;
            if info.injection.is_empty() {
                writeln!(out, "  none")?;
                problems.push(
                    "ventoy.json has no injection entry, so no keys are injected (after \
                     --burn-after-boot burned the stick: `keypack media update` puts a bundle \
                     back)"
                        .into(),
                );
            }
            for (key, image, archive) in &info.injection {
                let (key, image_text, archive_text) = (field(key), field(image), field(archive));
                writeln!(out, "  {key}: {image_text} <- {archive_text}")?;
                // Looked up by the reader in the directories, not in the (capped) listing.
                let missing = |p: &String| info.missing.contains(p);
                if !image.contains('*') && missing(image) {
                    problems.push(format!("{key}: {image_text} is not on the data partition"));
                }
                if missing(archive) {
                    problems.push(format!(
                        "{key}: {archive_text} is not on the data partition"
                    ));
                }
            }
        }
    }
    for (name, bytes) in &info.archives {
        let name = field(name);
        match read_archive(bytes) {
            Ok(entries) => {
                let mark = keypack_bundle::burn_mark(bytes).ok().flatten();
                bundles.push(serde_json::json!({
                    "path": name,
                    "entries": entries.iter().map(crate::cmd::inspect::entry_json).collect::<Vec<_>>(),
                    "burn_after_boot": mark.is_some(),
                    "error": null,
                }));
                writeln!(out, "{name}: {} entries", entries.len())?;
                writeln!(out, "  {}", crate::cmd::inspect::burn_line(mark.as_deref()))?;
                for e in &entries {
                    writeln!(
                        out,
                        "  {} {:o}  {}:{}  {:>5}  {}  {}",
                        e.kind,
                        e.mode,
                        e.uid,
                        e.gid,
                        e.size,
                        field(&e.path),
                        e.fingerprint.as_deref().map_or("-".into(), field)
                    )?;
                    problems.extend(
                        e.problems
                            .iter()
                            .map(|p| format!("{name}: {}: {}", field(&e.path), field(p))),
                    );
                }
                if let Some(line) = crate::cmd::inspect::sealed_line(&entries) {
                    writeln!(out, "  {line}")?;
                }
            }
            Err(e) => {
                writeln!(
                    out,
                    "{name}: not a readable keys.tar.gz: {}",
                    field(&e.to_string())
                )?;
                problems.push(format!("{name} is not a readable keys.tar.gz"));
                bundles.push(serde_json::json!({
                    "path": name,
                    "entries": [],
                    "error": field(&e.to_string()),
                }));
            }
        }
    }
    // Problems from the reader name files of the image.
    problems.extend(info.problems.iter().map(|p| field(p)));
    if json {
        let doc = image_json(path, &info, bundles, &problems);
        drop(info);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(crate::cmd::inspect::exit_for(&problems));
    }
    drop(info);
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

/// The `--json` document of a Ventoy image (fields in the README). Every string from the image
/// is escaped with [`field`]: serde_json leaves DEL and C1 controls raw.
fn image_json(
    path: &Path,
    info: &keypack_media_ventoy::ImageInfo,
    bundles: Vec<serde_json::Value>,
    problems: &[String],
) -> serde_json::Value {
    let f = &info.found;
    let part = |p: &keypack_media_ventoy::layout::Part| serde_json::json!({ "start": p.start, "sectors": p.sectors });
    let (data_fs, data_fs_error) = match &info.data_fs {
        Ok(kind) => (Some(field(kind)), None),
        Err(why) => (None, Some(field(why))),
    };
    let (ventoy_json, ventoy_json_error) = match &info.json {
        None => ("none", None),
        Some(Ok(_)) => ("ok", None),
        Some(Err(e)) => ("error", Some(field(e))),
    };
    serde_json::json!({
        "file": field(&path.display().to_string()),
        "kind": "ventoy",
        "partition_table": format!("{:?}", f.style),
        "disk_bytes": f.disk_len,
        "data_partition": part(&f.data),
        "efi_partition": part(&f.efi),
        "ventoy_version": info.version.as_deref().map(field),
        "data_filesystem": data_fs,
        "data_filesystem_error": data_fs_error,
        "files": info.files.iter().map(|l| serde_json::json!({
            "path": field(&l.path),
            "size": l.size,
            "dir": l.dir,
        })).collect::<Vec<_>>(),
        "ventoy_json": ventoy_json,
        "ventoy_json_error": ventoy_json_error,
        "injection": info.injection.iter().map(|(key, image, archive)| serde_json::json!({
            "key": field(key),
            "image": field(image),
            "archive": field(archive),
        })).collect::<Vec<_>>(),
        "bundles": bundles,
        "problems": problems,
        "ok": problems.is_empty(),
    })
}
