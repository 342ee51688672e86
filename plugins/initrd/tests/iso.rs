//! `--iso`: test ISOs made with `xorriso -as mkisofs` in NixOS's shape (a fake kernel and
//! initrd under /boot, /EFI/BOOT/grub.cfg and /isolinux/isolinux.cfg as iso-image.nix writes
//! them); the extracted files are compared with what `xorriso -osirrox on -extract` (an
//! independent reader) gets out of the same ISO.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keypack_media_initrd::{InitrdArgs, InitrdError, build_with_iso};
use keypack_plugin::{Boot, BootDescription};

fn skip(test: &str, why: &str) {
    if std::env::var_os("KEYPACK_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: prerequisite missing: {why}");
    }
    // Written to the stderr handle directly: libtest's capture only swallows `eprintln!`.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "KEYPACK-SKIPPED: {test}: {why}");
}

fn have_xorriso() -> bool {
    Command::new("xorriso")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const TOPLEVEL: &str =
    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-nixos-25.05.20250101.abcdef";
const CMDLINE: &str = "init=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-nixos-25.05.20250101.abcdef/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail console=ttyS0,115200n8";

fn grub_cfg() -> String {
    format!(
        r#"set textmode=false
set timeout=10

clear
echo ""
echo "Loading graphical boot menu..."
echo ""

hiddenentry 'Text mode' --hotkey 't' {{
  loadfont ($root)/EFI/BOOT/unicode.pf2
  set textmode=true
  terminal_output console
}}

# If the parameter iso_path is set, append the findiso parameter to the kernel
# line. We need this to allow the nixos iso to be booted from grub directly.
if [ ${{iso_path}} ] ; then
  set isoboot="findiso=${{iso_path}}"
fi

#
# Menu entries
#

menuentry 'NixOS 25.05.20250101.abcdef Installer ' --class installer {{
  # Fallback to UEFI console for boot, efifb sometimes has difficulties.
  terminal_output console

  linux /boot/bzImage ${{isoboot}} init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail console=ttyS0,115200n8
  initrd /boot/initrd
}}
menuentry 'NixOS 25.05.20250101.abcdef Installer (nomodeset)' --class nomodeset {{
  terminal_output console
  linux /boot/bzImage ${{isoboot}} init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail nomodeset
  initrd /boot/initrd
}}
menuentry 'NixOS 25.05.20250101.abcdef Installer (copytoram)' --class copytoram {{
  terminal_output console
  linux /boot/bzImage ${{isoboot}} init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail copytoram
  initrd /boot/initrd
}}
submenu "HiDPI, Quirks and Accessibility" --class hidpi --class submenu {{
  menuentry 'NixOS (serial console=ttyS0,115200n8)' --class serial {{
    linux /boot/bzImage ${{isoboot}} init={TOPLEVEL}/init console=ttyS0,115200n8
    initrd /boot/initrd
  }}
}}
"#
    )
}

fn isolinux_cfg(default: &str) -> String {
    format!(
        "SERIAL 0 115200
TIMEOUT 100
UI vesamenu.c32
MENU BACKGROUND /isolinux/background.png

DEFAULT {default}

LABEL boot
MENU LABEL NixOS 25.05.20250101.abcdef Installer
LINUX /boot/bzImage
APPEND init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail console=ttyS0,115200n8
INITRD /boot/initrd

# A variant to boot with 'nomodeset'
LABEL boot-nomodeset
MENU LABEL NixOS 25.05.20250101.abcdef Installer (nomodeset)
LINUX /boot/bzImage
APPEND init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail nomodeset
INITRD /boot/initrd

# A variant to boot with 'copytoram'
LABEL boot-copytoram
MENU LABEL NixOS 25.05.20250101.abcdef Installer (copytoram)
LINUX /boot/bzImage
APPEND init={TOPLEVEL}/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail copytoram
INITRD /boot/initrd
"
    )
}

/// Deterministic bytes that are not a multiple of the sector size.
fn fake(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Writes `files` (path → bytes) under `dir/tree` and makes `dir/name` with xorriso and
/// `flags` (`-R`, `-J`, …).
fn make_iso(dir: &Path, name: &str, files: &[(&str, Vec<u8>)], flags: &[&str]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    for (path, bytes) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let iso = dir.join(name);
    let out = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "nixos-minimal-25.05-x86_64",
        ])
        .args(flags)
        .arg("-o")
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// The file at `path` in `iso`, as xorriso reads it.
fn xorriso_extract(iso: &Path, path: &str, to: &Path) -> Vec<u8> {
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", path])
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso -extract {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(to).unwrap()
}

fn nixos_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("boot/bzImage", fake(300_001, 1)),
        ("boot/initrd", fake(2_500_003, 2)),
        ("EFI/BOOT/grub.cfg", grub_cfg().into_bytes()),
        ("isolinux/isolinux.cfg", isolinux_cfg("boot").into_bytes()),
        // A large-ish unrelated file so the boot files are not at the start of the image.
        ("nix-store.squashfs", fake(70_000, 3)),
    ]
}

fn iso_args(append: Option<&str>) -> InitrdArgs {
    InitrdArgs {
        kernel: None,
        initrd: None,
        append: append.map(str::to_owned),
    }
}

struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
    out: PathBuf,
}

fn dirs() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    keypack_plugin::output::ensure_private_dir(&state).unwrap();
    Built {
        dir: dir.path().to_path_buf(),
        out: state.join("keys.cpio.gz"),
        state,
        _dir: dir,
    }
}

fn kernel_boot(desc: &BootDescription) -> (&PathBuf, &Vec<PathBuf>, &String, &Option<PathBuf>) {
    match &desc.boot {
        Boot::Kernel {
            kernel,
            initrds,
            cmdline,
            cdrom,
        } => (kernel, initrds, cmdline, cdrom),
        other => panic!("not a kernel boot: {other:?}"),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn iso_boot_extracts_the_default_entry_byte_identical() {
    let test = "iso_boot_extracts_the_default_entry_byte_identical";
    if !have_xorriso() {
        return skip(
            test,
            "xorriso not installed (scripts/bootstrap installs it)",
        );
    }
    let b = dirs();
    let files = nixos_files();
    let iso = make_iso(&b.dir, "nixos.iso", &files, &["-R", "-J"]);
    let bundle = keypack_plugin::testing::sealed_bundle();
    let desc = build_with_iso(
        &bundle,
        &iso_args(None),
        Some(&iso),
        &b.state,
        "web1",
        &b.out,
    )
    .unwrap();
    let (kernel, initrds, cmdline, cdrom) = kernel_boot(&desc);

    // The default GRUB entry's command line, ${isoboot} dropped, not a variant's.
    assert_eq!(cmdline, CMDLINE);
    // The keys cpio comes after the ISO's initrd; the ISO itself is attached.
    assert_eq!(initrds.len(), 2, "{initrds:?}");
    assert_eq!(initrds[0], b.state.join("iso-initrd"));
    assert_eq!(initrds[1], b.out);
    assert_eq!(kernel, &b.state.join("iso-kernel"));
    assert_eq!(cdrom.as_ref(), Some(&std::fs::canonicalize(&iso).unwrap()));

    // Byte-identical to what xorriso reads, and to what went in.
    let theirs = b.dir.join("xorriso");
    std::fs::create_dir(&theirs).unwrap();
    let k = xorriso_extract(&iso, "/boot/bzImage", &theirs.join("k"));
    let i = xorriso_extract(&iso, "/boot/initrd", &theirs.join("i"));
    assert!(std::fs::read(kernel).unwrap() == k, "kernel differs");
    assert!(std::fs::read(&initrds[0]).unwrap() == i, "initrd differs");
    assert!(
        k == files[0].1 && i == files[1].1,
        "xorriso agrees with the input"
    );
    for p in [kernel, &initrds[0], &initrds[1]] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // Nothing else left in the state folder (no temp files).
    let mut names: Vec<String> = std::fs::read_dir(&b.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["iso-initrd", "iso-kernel", "keys.cpio.gz"]);

    // --append adds to the ISO's command line.
    let desc = build_with_iso(
        &bundle,
        &iso_args(Some("keypack.debug=1")),
        Some(&iso),
        &b.state,
        "web1",
        &b.out,
    )
    .unwrap();
    assert_eq!(kernel_boot(&desc).2, &format!("{CMDLINE} keypack.debug=1"));
}

#[test]
fn isolinux_only_and_joliet_or_plain_names_work_too() {
    let test = "isolinux_only_and_joliet_or_plain_names_work_too";
    if !have_xorriso() {
        return skip(
            test,
            "xorriso not installed (scripts/bootstrap installs it)",
        );
    }
    let files = vec![
        ("boot/bzImage", fake(4097, 4)),
        ("boot/initrd", fake(2048 * 3, 5)),
        (
            "isolinux/isolinux.cfg",
            isolinux_cfg("boot-copytoram").into_bytes(),
        ),
    ];
    // Joliet names only (no Rock Ridge), then plain ISO 9660 names only (BZIMAGE.;1).
    for (name, flags) in [("joliet.iso", &["-J"][..]), ("plain.iso", &[][..])] {
        let b = dirs();
        let iso = make_iso(&b.dir, name, &files, flags);
        let bundle = keypack_plugin::testing::sealed_bundle();
        let desc = build_with_iso(
            &bundle,
            &iso_args(None),
            Some(&iso),
            &b.state,
            "web1",
            &b.out,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (kernel, initrds, cmdline, _) = kernel_boot(&desc);
        // DEFAULT names the copytoram label here, so that one is taken.
        assert!(cmdline.ends_with(" copytoram"), "{name}: {cmdline}");
        assert!(!cmdline.contains("nomodeset"), "{name}: {cmdline}");
        assert_eq!(std::fs::read(kernel).unwrap(), files[0].1, "{name}");
        assert_eq!(std::fs::read(&initrds[0]).unwrap(), files[1].1, "{name}");
    }
    // NixOS writes /EFI/boot/grub.cfg (lower case): found with Rock Ridge, without isolinux.
    let b = dirs();
    let lower = vec![
        ("boot/bzImage", fake(3000, 11)),
        ("boot/initrd", fake(3000, 12)),
        ("EFI/boot/grub.cfg", grub_cfg().into_bytes()),
    ];
    let iso = make_iso(&b.dir, "efi-lower.iso", &lower, &["-R"]);
    let bundle = keypack_plugin::testing::sealed_bundle();
    let desc = build_with_iso(
        &bundle,
        &iso_args(None),
        Some(&iso),
        &b.state,
        "web1",
        &b.out,
    )
    .unwrap();
    assert_eq!(kernel_boot(&desc).2, CMDLINE);
    assert_eq!(std::fs::read(kernel_boot(&desc).0).unwrap(), lower[0].1);

    // Names that ISO 9660 level 1 mangles (8.3, one dot) are found through Joliet alone.
    let b = dirs();
    let long = vec![
        ("boot/vmlinuz-6.12.0-amd64", fake(5000, 9)),
        ("boot/initrd.img-6.12.0-amd64", fake(7000, 10)),
        (
            "isolinux/isolinux.cfg",
            b"default linux\nlabel linux\n  kernel /boot/vmlinuz-6.12.0-amd64\n  append initrd=/boot/initrd.img-6.12.0-amd64 quiet\n"
                .to_vec(),
        ),
    ];
    let iso = make_iso(&b.dir, "joliet-long.iso", &long, &["-J"]);
    let bundle = keypack_plugin::testing::sealed_bundle();
    let desc = build_with_iso(
        &bundle,
        &iso_args(None),
        Some(&iso),
        &b.state,
        "web1",
        &b.out,
    )
    .unwrap();
    let (kernel, initrds, cmdline, _) = kernel_boot(&desc);
    assert_eq!(cmdline, "quiet");
    assert_eq!(std::fs::read(kernel).unwrap(), long[0].1);
    assert_eq!(std::fs::read(&initrds[0]).unwrap(), long[1].1);
}

fn assert_nothing_written(b: &Built) {
    let left: Vec<_> = std::fs::read_dir(&b.state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn bad_isos_give_clear_errors_and_leave_no_files() {
    let test = "bad_isos_give_clear_errors_and_leave_no_files";
    if !have_xorriso() {
        return skip(
            test,
            "xorriso not installed (scripts/bootstrap installs it)",
        );
    }
    let bundle = keypack_plugin::testing::sealed_bundle();
    let run = |b: &Built, iso: &Path| {
        let err = build_with_iso(
            &bundle,
            &iso_args(None),
            Some(iso),
            &b.state,
            "web1",
            &b.out,
        )
        .unwrap_err();
        assert_nothing_written(b);
        err
    };

    // No boot loader configuration at all.
    let b = dirs();
    let iso = make_iso(
        &b.dir,
        "noconfig.iso",
        &[("boot/bzImage", fake(10, 6))],
        &["-R", "-J"],
    );
    let err = run(&b, &iso);
    assert!(matches!(err, InitrdError::NoBootConfig { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no usable boot loader configuration")
            && msg.contains("/EFI/BOOT/grub.cfg")
            && msg.contains("/isolinux/isolinux.cfg"),
        "{msg}"
    );

    // The configuration names an initrd that is not there.
    let b = dirs();
    let iso = make_iso(
        &b.dir,
        "noinitrd.iso",
        &[
            ("boot/bzImage", fake(10, 7)),
            ("EFI/BOOT/grub.cfg", grub_cfg().into_bytes()),
        ],
        &["-R", "-J"],
    );
    let err = run(&b, &iso);
    assert_eq!(
        err.to_string(),
        format!(
            "/EFI/BOOT/grub.cfg in {} names the initrd /boot/initrd, which is not in the ISO",
            std::fs::canonicalize(&iso).unwrap().display()
        )
    );

    // A configuration without a kernel line.
    let b = dirs();
    let iso = make_iso(
        &b.dir,
        "nolinux.iso",
        &[(
            "EFI/BOOT/grub.cfg",
            b"menuentry 'UEFI shell' {\n  chainloader /shell.efi\n}\n".to_vec(),
        )],
        &["-R"],
    );
    let msg = run(&b, &iso).to_string();
    assert!(
        msg.contains("/EFI/BOOT/grub.cfg: menu entry 'UEFI shell' has no linux line"),
        "{msg}"
    );

    // Not an ISO at all.
    let b = dirs();
    let not_iso = b.dir.join("disk.img");
    std::fs::write(&not_iso, fake(64 * 1024, 8)).unwrap();
    let msg = run(&b, &not_iso).to_string();
    assert!(
        msg.contains("disk.img is not an ISO 9660 image (no CD001"),
        "{msg}"
    );
    let tiny = b.dir.join("tiny.iso");
    std::fs::write(&tiny, b"CD001").unwrap();
    let msg = run(&b, &tiny).to_string();
    assert!(
        msg.contains("is not an ISO 9660 image (too small)"),
        "{msg}"
    );

    // A truncated ISO: the initrd's extent ends past the end of the file.
    let b = dirs();
    let files = nixos_files();
    let iso = make_iso(&b.dir, "truncated.iso", &files, &["-R", "-J"]);
    let full = std::fs::read(&iso).unwrap();
    let initrd = &files[1].1;
    let at = full
        .windows(64)
        .position(|w| w == &initrd[..64])
        .expect("initrd in the image");
    std::fs::write(&iso, &full[..at + 1000]).unwrap();
    let msg = run(&b, &iso).to_string();
    assert!(
        msg.contains("is damaged: a file extent") && msg.contains("ends past the end of the image"),
        "{msg}"
    );

    // A missing ISO file.
    let b = dirs();
    let msg = run(&b, &b.dir.join("nope.iso")).to_string();
    assert!(msg.contains("nope.iso"), "{msg}");
}

#[test]
fn kernel_and_iso_are_mutually_exclusive() {
    let b = dirs();
    let bundle = keypack_plugin::testing::sealed_bundle();
    let k = b.dir.join("vmlinuz");
    std::fs::write(&k, b"k").unwrap();
    let both = InitrdArgs {
        kernel: Some(k.clone()),
        initrd: None,
        append: None,
    };
    let err = build_with_iso(&bundle, &both, Some(&k), &b.state, "web1", &b.out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--media initrd takes the kernel and initrd either from --kernel/--initrd or from --iso, not both"
    );
    let err = build_with_iso(&bundle, &iso_args(None), None, &b.state, "web1", &b.out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--media initrd needs --kernel FILE and --initrd FILE, or --iso FILE"
    );
    assert_nothing_written(&b);
}

#[test]
fn iso_passes_the_plugin_conformance_check() {
    let test = "iso_passes_the_plugin_conformance_check";
    if !have_xorriso() {
        return skip(
            test,
            "xorriso not installed (scripts/bootstrap installs it)",
        );
    }
    use keypack_plugin::testing::{Check, check_medium_with};
    let dir = tempfile::tempdir().unwrap();
    let iso = make_iso(dir.path(), "nixos.iso", &nixos_files(), &["-R", "-J"]);
    let check = Check {
        args: vec![],
        iso: Some(&iso),
    };
    let desc = check_medium_with(&keypack_media_initrd::Initrd, &check);
    let (kernel, initrds, cmdline, cdrom) = kernel_boot(&desc);
    assert_eq!(cmdline, CMDLINE);
    assert!(kernel.ends_with("state/iso-kernel"), "{}", kernel.display());
    assert_eq!(initrds.len(), 2);
    assert!(cdrom.is_some());
}

#[test]
fn damaged_isos_are_errors_never_panics_and_leave_no_files() {
    let test = "damaged_isos_are_errors_never_panics_and_leave_no_files";
    if !have_xorriso() {
        return skip(
            test,
            "xorriso not installed (scripts/bootstrap installs it)",
        );
    }
    let b = dirs();
    let files = vec![
        ("boot/bzImage", fake(5000, 13)),
        ("boot/initrd", fake(9000, 14)),
        ("EFI/boot/grub.cfg", grub_cfg().into_bytes()),
        ("isolinux/isolinux.cfg", isolinux_cfg("boot").into_bytes()),
    ];
    let iso = make_iso(&b.dir, "good.iso", &files, &["-R", "-J"]);
    let good = std::fs::read(&iso).unwrap();
    // Volume descriptors, path tables, directories and Rock Ridge areas live here.
    // Only their non-zero bytes are mutated, so every round hits a structure.
    let targets: Vec<usize> = (16 * 2048..good.len().min(48 * 2048))
        .filter(|&i| good[i] != 0)
        .collect();
    let noise = fake(100 * 80, 15);
    let bundle = keypack_plugin::testing::sealed_bundle();
    let (mut ok, mut failed) = (0, 0);
    for round in 0..100 {
        let mut bad = good.clone();
        for k in 0..24 {
            let r = &noise[(round * 80 + 3 * k)..(round * 80 + 3 * k + 3)];
            let at = targets[(usize::from(r[0]) << 8 | usize::from(r[1])) % targets.len()];
            bad[at] = r[2];
        }
        let path = b.dir.join("bad.iso");
        std::fs::write(&path, &bad).unwrap();
        let state = b.dir.join(format!("state-{round}"));
        keypack_plugin::output::ensure_private_dir(&state).unwrap();
        let out = state.join("keys.cpio.gz");
        match build_with_iso(&bundle, &iso_args(None), Some(&path), &state, "web1", &out) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                assert!(!e.to_string().is_empty());
                let left: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
                assert!(left.is_empty(), "round {round}: {e}: files left");
            }
        }
    }
    eprintln!("damaged ISOs: {ok} still built, {failed} refused");
    assert!(failed > 0, "the mutations reached the structures read");
}
