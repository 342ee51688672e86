//! Finding UEFI firmware: QEMU's firmware descriptors (`docs/interop/firmware.json`), then the
//! paths Nix's OVMF uses.
//!
//! Supports: `flash`-mapped descriptors for x86_64 with an executable and an NVRAM template;
//! the search path `$KEYPACK_FIRMWARE_DIRS` (`:`-separated, replaces the default), else
//! `$XDG_CONFIG_HOME/qemu/firmware`, `/etc/qemu/firmware`, `<qemu prefix>/share/qemu/firmware`,
//! `/usr/share/qemu/firmware`. Does not support: `memory`/`kernel` mappings, non-raw formats,
//! Secure Boot with enrolled keys (descriptors with `enrolled-keys` or `requires-smm` are
//! skipped: Ventoy and test kernels boot with Secure Boot off).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::QemuError;

/// UEFI firmware: the code and the template of its variable store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Uefi {
    /// Read-only code (`OVMF_CODE*.fd`), or a unified image when `vars` is `None`.
    pub code: PathBuf,
    /// Variable store template, copied into the state folder before the first boot.
    pub vars: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "interface-types", default)]
    interface_types: Vec<String>,
    mapping: Mapping,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct Mapping {
    device: String,
    executable: Option<FileRef>,
    #[serde(rename = "nvram-template")]
    nvram_template: Option<FileRef>,
}

#[derive(Deserialize)]
struct FileRef {
    filename: PathBuf,
    #[serde(default = "raw")]
    format: String,
}

fn raw() -> String {
    "raw".into()
}

#[derive(Deserialize)]
struct Target {
    architecture: String,
}

/// The folders searched for descriptors, in priority order.
pub fn descriptor_dirs(qemu: &Path) -> Vec<PathBuf> {
    if let Some(dirs) = std::env::var_os("KEYPACK_FIRMWARE_DIRS") {
        return std::env::split_paths(&dirs).collect();
    }
    let mut dirs = Vec::new();
    if let Some(cfg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(cfg).join("qemu/firmware"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/qemu/firmware"));
    }
    dirs.push("/etc/qemu/firmware".into());
    if let Ok(real) = std::fs::canonicalize(qemu)
        && let Some(prefix) = real.parent().and_then(Path::parent)
    {
        dirs.push(prefix.join("share/qemu/firmware"));
    }
    dirs.push("/usr/share/qemu/firmware".into());
    dirs.dedup();
    dirs
}

/// Finds UEFI firmware for x86_64 without Secure Boot enforcement.
pub fn find_uefi(qemu: &Path) -> Result<Uefi, QemuError> {
    let dirs = descriptor_dirs(qemu);
    // Descriptors are applied by file name across folders (earlier folders override), then
    // sorted by name, as QEMU's own interop document describes.
    let mut files: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for dir in dirs.iter().rev() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                files.insert(entry.file_name(), path);
            }
        }
    }
    for path in files.values() {
        if let Some(fw) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok())
            .and_then(usable)
        {
            return Ok(fw);
        }
    }
    // Nix: NixOS's libvirt module links OVMF here; `OVMF_CODE`/`OVMF_VARS` from a dev shell.
    if let (Some(code), vars) = (
        std::env::var_os("OVMF_CODE").map(PathBuf::from),
        std::env::var_os("OVMF_VARS").map(PathBuf::from),
    ) && code.is_file()
    {
        return Ok(Uefi { code, vars });
    }
    let nix = Path::new("/run/libvirt/nix-ovmf");
    if nix.join("OVMF_CODE.fd").is_file() {
        return Ok(Uefi {
            code: nix.join("OVMF_CODE.fd"),
            vars: Some(nix.join("OVMF_VARS.fd")).filter(|p| p.is_file()),
        });
    }
    Err(QemuError::NoFirmware {
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })
}

fn usable(d: Descriptor) -> Option<Uefi> {
    if !d.interface_types.iter().any(|t| t == "uefi")
        || d.mapping.device != "flash"
        || !d.targets.iter().any(|t| t.architecture == "x86_64")
        || d.features
            .iter()
            .any(|f| f == "enrolled-keys" || f == "requires-smm" || f == "secure-boot")
    {
        return None;
    }
    let code = d.mapping.executable.filter(|f| f.format == "raw")?;
    let vars = d.mapping.nvram_template.filter(|f| f.format == "raw");
    if !code.filename.is_file() {
        return None;
    }
    Some(Uefi {
        code: code.filename,
        vars: vars.map(|v| v.filename).filter(|p| p.is_file()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_secure_boot_and_picks_a_plain_flash_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("CODE.fd");
        let vars = dir.path().join("VARS.fd");
        std::fs::write(&code, b"c").unwrap();
        std::fs::write(&vars, b"v").unwrap();
        let desc = |features: &str| {
            format!(
                r#"{{"interface-types":["uefi"],"mapping":{{"device":"flash","executable":{{"filename":"{}","format":"raw"}},"nvram-template":{{"filename":"{}","format":"raw"}}}},"targets":[{{"architecture":"x86_64","machines":["pc-q35-*"]}}],"features":[{features}]}}"#,
                code.display(),
                vars.display()
            )
        };
        std::fs::write(
            dir.path().join("40-sb.json"),
            desc(r#""secure-boot","enrolled-keys","requires-smm""#),
        )
        .unwrap();
        std::fs::write(dir.path().join("60-plain.json"), desc(r#""acpi-s3""#)).unwrap();
        let d: Descriptor =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("40-sb.json")).unwrap())
                .unwrap();
        assert!(usable(d).is_none());
        let d: Descriptor = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("60-plain.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            usable(d),
            Some(Uefi {
                code,
                vars: Some(vars)
            })
        );
    }
}
