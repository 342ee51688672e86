//! Test ISOs that follow the keyed-ISO convention (`plugins/iso/README.md`): isolinux as the
//! BIOS El Torito image and GRUB (`grub-mkstandalone`, reading `/boot/grub/grub.cfg`) as the
//! UEFI one, put together by `xorriso -as mkisofs`, both loading `/keypack/keys.img` as the
//! last initrd after the test guest's own initrd.
//!
//! Why not `grub-mkrescue`: it makes GRUB's EFI image the first El Torito entry and appends
//! further `-b` images after it, and BIOS firmware (SeaBIOS) only boots the first ("initial")
//! entry, so its isolinux entry was never used (tried: "could not read the boot disk").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The volume label of the test ISOs.
pub const LABEL: &str = "keypack-e2e-iso";
/// GRUB's x86_64 EFI platform folder (package grub-efi-amd64-bin).
pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// isolinux's boot image (package isolinux).
pub const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
/// isolinux's core module (package syslinux-common).
pub const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

/// What is missing to make a convention ISO, if anything.
pub fn missing_tools() -> Option<String> {
    for tool in [
        "grub-mkstandalone",
        "xorriso",
        "mformat",
        "mmd",
        "mcopy",
        "truncate",
    ] {
        if !crate::tools::have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    for path in [GRUB_EFI_DIR, ISOLINUX_BIN, LDLINUX_C32] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (scripts/bootstrap installs it)"));
        }
    }
    None
}

/// GRUB's configuration (UEFI): one entry, the area as its last initrd.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "set timeout=0\nset default=0\nmenuentry 'keypack e2e' {{\n  linux /boot/bzImage {cmdline}\n  initrd /boot/initrd /keypack/keys.img\n}}\n"
    )
}

/// isolinux's configuration (BIOS): one entry, the area as its last initrd.
pub fn isolinux_cfg(cmdline: &str) -> String {
    format!(
        "DEFAULT boot\nPROMPT 0\nTIMEOUT 1\nLABEL boot\n  KERNEL /boot/bzImage\n  APPEND {cmdline} initrd=/boot/initrd,/keypack/keys.img\n"
    )
}

/// GRUB's built-in configuration in the standalone EFI binary: find the ISO by its area and
/// read the ISO's own `/boot/grub/grub.cfg`. The prefix stays on the built-in memdisk, where
/// the modules are (the ISO has none).
const GRUB_EMBEDDED_CFG: &str = "search --no-floppy --set=root --file /keypack/keys.img\nconfigfile ($root)/boot/grub/grub.cfg\n";

/// Makes `dir/NAME` from the guest's kernel and initrd with a zero-filled area of `area_len`
/// bytes, and returns its path. Laid out as nixpkgs' ISO is: isolinux as the first El Torito
/// entry (BIOS firmware boots only the first, "initial" entry), then a FAT image holding GRUB
/// (`grub-mkstandalone`, `EFI/BOOT/BOOTX64.EFI`) as the UEFI entry, written by xorriso.
pub fn make_convention_iso(
    dir: &Path,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    area_len: usize,
) -> Result<PathBuf> {
    let tree = dir.join(format!("{name}-tree"));
    let cmdline = format!("init=/init root=LABEL={LABEL} console=ttyS0");
    let files: [(&str, Vec<u8>); 6] = [
        ("boot/bzImage", std::fs::read(kernel)?),
        ("boot/initrd", std::fs::read(initrd)?),
        ("keypack/keys.img", vec![0u8; area_len]),
        ("boot/grub/grub.cfg", grub_cfg(&cmdline).into_bytes()),
        ("isolinux/isolinux.cfg", isolinux_cfg(&cmdline).into_bytes()),
        ("isolinux/isolinux.bin", std::fs::read(ISOLINUX_BIN)?),
    ];
    write_tree(&tree, files)?;
    let work = dir.join(format!("{name}-efi"));
    std::fs::create_dir_all(&work)?;
    let embedded = work.join("embedded.cfg");
    std::fs::write(&embedded, GRUB_EMBEDDED_CFG)?;
    let efi_bin = work.join("BOOTX64.EFI");
    let efi_img = tree.join("boot/efi.img");
    let efi_img_s = efi_img.display().to_string();
    let efi_bin_s = efi_bin.display().to_string();
    let graft = format!("boot/grub/grub.cfg={}", embedded.display());
    run_steps([vec![
        "grub-mkstandalone",
        "-O",
        "x86_64-efi",
        "-d",
        GRUB_EFI_DIR,
        "--locales=",
        "--fonts=",
        "--themes=",
        "--install-modules=normal linux search search_fs_file iso9660 configfile echo test part_msdos part_gpt fat gzio",
        "-o",
        &efi_bin_s,
        &graft,
    ]])?;
    fat_efi_image(&efi_img_s, "4M", "BOOT", &[(&efi_bin_s, "BOOTX64.EFI")])?;
    let iso = dir.join(name);
    mkisofs(&iso, &tree, LABEL, false)?;
    Ok(iso)
}

/// `(offset, length)` of `/keypack/keys.img` in `iso` as xorriso reports it (`report_lba`).
pub fn xorriso_area(iso: &Path) -> Result<(u64, u64)> {
    let out = Command::new("xorriso")
        .args(["-indev"])
        .arg(iso)
        .args(["-find", "/keypack/keys.img", "-exec", "report_lba"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "File data lba:  0 ,     1234 ,      512 ,    1048576 , '/keypack/keys.img'"
    let line = text
        .lines()
        .find(|l| l.contains("keys.img") && l.contains("lba"))
        .with_context(|| format!("no report_lba line for the area: {text}"))?;
    let fields: Vec<u64> = line
        .split(':')
        .nth(1)
        .unwrap_or("")
        .split(',')
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    match fields.as_slice() {
        [_, lba, _, len, ..] => Ok((lba * 2048, *len)),
        _ => bail!("cannot read {line:?}"),
    }
}

/// The area's bytes as `xorriso -osirrox` extracts them.
pub fn xorriso_extract_area(iso: &Path, to: &Path) -> Result<Vec<u8>> {
    let _ = std::fs::remove_file(to);
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/keypack/keys.img"])
        .arg(to)
        .output()?;
    if !out.status.success() {
        bail!("xorriso -extract: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(std::fs::read(to)?)
}

/// GRUB's modules for a NixOS-style EFI image (nixpkgs' `efiDir` builds its `bootx64.efi` with
/// `grub-mkimage -p /EFI/boot` and these modules, among others).
const NIXOS_GRUB_MODULES: &[&str] = &[
    "fat",
    "iso9660",
    "part_gpt",
    "part_msdos",
    "normal",
    "boot",
    "linux",
    "configfile",
    "loopback",
    "chain",
    "halt",
    "ls",
    "search",
    "search_label",
    "search_fs_uuid",
    "search_fs_file",
    "echo",
    "test",
    "gzio",
];

/// Makes `dir/NAME` laid out as nixpkgs' iso-image module lays out its ISO, with the guest's
/// kernel and initrd and **no** keys area: `/EFI/boot/grub.cfg` and the same file inside the
/// El Torito FAT image `/boot/efi.img` (where GRUB, built with `grub-mkimage -p /EFI/boot`,
/// reads it, then finds the ISO by the marker `/EFI/nixos-installer-image`), and
/// `/isolinux/isolinux.cfg` with an `INITRD` line and, in a second entry, an `initrd=`
/// argument; isolinux is the first El Torito entry, with a hybrid MBR. `nix/iso-keys.sh` adds
/// the area to it.
pub fn make_nixos_layout_iso(
    dir: &Path,
    name: &str,
    kernel: &Path,
    initrd: &Path,
) -> Result<PathBuf> {
    let tree = dir.join(format!("{name}-tree"));
    let cmdline = format!("init=/init root=LABEL={LABEL} console=ttyS0");
    let grub = format!(
        "set timeout=0\nset default=0\nsearch --set=root --file /EFI/nixos-installer-image\n\
menuentry 'NixOS Installer' --class installer {{\n  linux /boot/bzImage ${{isoboot}} {cmdline}\n  initrd /boot/initrd\n}}\n\
submenu 'HiDPI' {{\n  menuentry 'NixOS (nomodeset)' {{\n    linux /boot/bzImage {cmdline} nomodeset\n    initrd /boot/initrd\n  }}\n}}\n"
    );
    let isolinux = format!(
        "SERIAL 0 115200\nTIMEOUT 1\nPROMPT 0\nDEFAULT boot\nLABEL boot\nLINUX /boot/bzImage\nAPPEND {cmdline}\nINITRD /boot/initrd\n\
LABEL boot-nomodeset\nLINUX /boot/bzImage\nAPPEND {cmdline} nomodeset initrd=/boot/initrd\n"
    );
    let files: [(&str, Vec<u8>); 6] = [
        ("boot/bzImage", std::fs::read(kernel)?),
        ("boot/initrd", std::fs::read(initrd)?),
        ("EFI/nixos-installer-image", Vec::new()),
        ("EFI/boot/grub.cfg", grub.into_bytes()),
        ("isolinux/isolinux.cfg", isolinux.into_bytes()),
        ("isolinux/isolinux.bin", std::fs::read(ISOLINUX_BIN)?),
    ];
    write_tree(&tree, files)?;
    let work = dir.join(format!("{name}-efi"));
    std::fs::create_dir_all(&work)?;
    let efi_bin = work.join("bootx64.efi").display().to_string();
    let efi_img = tree.join("boot/efi.img").display().to_string();
    let grub_cfg = tree.join("EFI/boot/grub.cfg").display().to_string();
    let mut mkimage = vec![
        "grub-mkimage",
        "-d",
        GRUB_EFI_DIR,
        "-o",
        &efi_bin,
        "-p",
        "/EFI/boot",
        "-O",
        "x86_64-efi",
    ];
    mkimage.extend(NIXOS_GRUB_MODULES);
    run_steps([mkimage])?;
    fat_efi_image(
        &efi_img,
        "4M",
        "boot",
        &[(&efi_bin, "bootx64.efi"), (&grub_cfg, "grub.cfg")],
    )?;
    let iso = dir.join(name);
    mkisofs(&iso, &tree, LABEL, true)?;
    Ok(iso)
}

/// Writes `files` under `tree` and isolinux's core module beside `isolinux/isolinux.cfg`.
pub fn write_tree<'a>(
    tree: &Path,
    files: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
) -> Result<()> {
    for (p, bytes) in files {
        let to = tree.join(p);
        std::fs::create_dir_all(to.parent().expect("parent"))?;
        std::fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
    }
    std::fs::copy(LDLINUX_C32, tree.join("isolinux/ldlinux.c32"))?;
    Ok(())
}

/// Runs each command line in turn (mtools without its drive-geometry check), failing on the
/// first that fails.
pub fn run_steps<'a>(steps: impl IntoIterator<Item = Vec<&'a str>>) -> Result<()> {
    for step in steps {
        let out = Command::new(step[0])
            .args(&step[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .with_context(|| format!("running {}", step[0]))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                step[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// The El Torito EFI image `img` (FAT, `size` for `truncate -s`) holding each `(source, name)`
/// as `/EFI/<dir>/<name>`, made with mtools.
pub fn fat_efi_image(img: &str, size: &str, dir: &str, files: &[(&str, &str)]) -> Result<()> {
    let efi_dir = format!("::/EFI/{dir}");
    let targets: Vec<String> = files
        .iter()
        .map(|(_, name)| format!("{efi_dir}/{name}"))
        .collect();
    let mut steps = vec![
        vec!["truncate", "-s", size, img],
        vec!["mformat", "-i", img, "-v", "EFIBOOT", "::"],
        vec!["mmd", "-i", img, "::/EFI", &efi_dir],
    ];
    for ((source, _), target) in files.iter().zip(&targets) {
        steps.push(vec!["mcopy", "-i", img, source, target]);
    }
    run_steps(steps)
}

/// `xorriso -as mkisofs` of `tree` into `iso`, laid out as nixpkgs' ISO: isolinux as the first
/// El Torito entry, `boot/efi.img` as the UEFI one; `hybrid` adds the isohybrid MBR and GPT.
pub fn mkisofs(iso: &Path, tree: &Path, label: &str, hybrid: bool) -> Result<()> {
    let mut args = vec![
        "-as",
        "mkisofs",
        "-quiet",
        "-R",
        "-J",
        "-V",
        label,
        "-b",
        "isolinux/isolinux.bin",
        "-c",
        "isolinux/boot.cat",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
    ];
    if hybrid {
        args.extend(["-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin"]);
    }
    args.extend(["-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot"]);
    if hybrid {
        args.push("-isohybrid-gpt-basdat");
    }
    args.push("-o");
    let out = Command::new("xorriso")
        .args(args)
        .arg(iso)
        .arg(tree)
        .output()
        .context("running xorriso")?;
    if !out.status.success() {
        bail!("xorriso failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
