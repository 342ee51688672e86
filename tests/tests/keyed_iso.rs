//! End to end through the keyed ISO (issue #16): the test guest's kernel and base initrd on an
//! ISO laid out as nixpkgs' (isolinux for BIOS, GRUB for UEFI, put together by xorriso), both loading the
//! zero-filled `/keypack/keys.img` as their last initrd → `keypack build --media iso` →
//! `keypack run --wait-ssh` boots it as a CD-ROM under OVMF and under SeaBIOS → `load-keys`
//! installs the keys and pinned `keypack ssh` gets the packed host key. The area read back with
//! `xorriso -osirrox` is the gzip cpio (gunzipped and listed by GNU cpio), every other byte is
//! the input's; a keys-only rebuild writes in place; `keypack media reset` gives back the input
//! ISO byte for byte, which then boots without keys and says so.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keypack_e2e::env::{self, CAT_HOST_KEY, Env, HOST, key_data, ssh_args, tcg_run};
use keypack_e2e::iso;
use keypack_e2e::tools::{have, skip};

/// The keyed-ISO boots' setup: the tools, the guest, a keys repository without users, and the
/// guest's base initrd. `None` when a prerequisite is missing (the skip marker printed).
struct Booted {
    env: Env,
    kernel: keypack_e2e::guest::Kernel,
    host_pub: String,
    client: PathBuf,
    base: PathBuf,
}

fn boot_setup(test: &str, extra_tools: &[&str]) -> Option<Booted> {
    let mut extra = vec!["ssh-keyscan", "dropbearconvert"];
    extra.extend_from_slice(extra_tools);
    if !env::prerequisites(test, &extra) {
        return None;
    }
    if let Some(why) = iso::missing_tools() {
        skip(test, &why);
        return None;
    }
    let kernel = env::guest_kernel(test)?;
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    let env = Env::new(keypack);
    let host_pub = env.keys_repo(&[]).host_public_key;
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    Some(Booted {
        env,
        kernel,
        host_pub,
        client,
        base,
    })
}

/// `keypack build --media iso --iso ISO`, which must succeed.
fn build_iso(env: &Env, iso: &Path) {
    env.ok(&[
        "build",
        "-H",
        HOST,
        "--media",
        "iso",
        "--iso",
        &iso.display().to_string(),
    ]);
}

fn run(env: &Env, firmware: &str, wait_ssh: bool) {
    let mut args = tcg_run(&[firmware, "--timeout", "420"]);
    if wait_ssh {
        args.push("--wait-ssh");
    }
    env.ok(&args);
}

/// Boots with `firmware`, checks the served host key is the packed one, stops.
fn boot_and_check(env: &Env, firmware: &str, client: &Path, host_pub: &str, iso: &Path) {
    run(env, firmware, true);
    let pid = env.status()["pid"].as_u64().unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(
        cmdline.contains(&format!(
            "file={},format=raw,if=ide,media=cdrom,readonly=on -boot order=d",
            iso.display()
        )),
        "booted as a read-only CD-ROM: {cmdline}"
    );
    assert!(
        !cmdline.contains("-kernel"),
        "no direct kernel boot: {cmdline}"
    );
    assert_eq!(
        cmdline.contains("pflash"),
        firmware == "--uefi",
        "{firmware}: {cmdline}"
    );
    let c = client.display().to_string();
    let served = env.ok(&ssh_args(&c, CAT_HOST_KEY));
    assert_eq!(key_data(&served), key_data(host_pub), "{firmware}");
    let log = env.ok(&["log", "-H", HOST]);
    assert!(log.contains("Found injected keys"), "{firmware}: {log}");
    env.ok(&["stop", "-H", HOST]);
    std::fs::remove_file(env.host_state().join("serial.log")).unwrap();
}

/// Bytes of `a` and `b` outside `[off, off+len)` are equal (and the files equally long).
fn same_outside(a: &[u8], b: &[u8], off: u64, len: u64) -> bool {
    let (off, end) = (off as usize, (off + len) as usize);
    a.len() == b.len() && a[..off] == b[..off] && a[end..] == b[end..]
}

/// `gzip -dc | cpio -it` of the area's bytes (independent readers); trailing zeros make gzip
/// warn ("trailing garbage ignored", exit 2), which is what the kernel skips as well.
fn cpio_listing(area: &[u8], dir: &Path) -> Vec<String> {
    let file = dir.join("area.bin");
    std::fs::write(&file, area).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc < \"$1\" 2>/dev/null | cpio -it --quiet")
        .arg("sh")
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn keyed_iso_boots_as_a_cdrom_under_uefi_and_bios() {
    const T: &str = "keyed_iso_boots_as_a_cdrom_under_uefi_and_bios";
    let Some(Booted {
        env,
        kernel,
        host_pub,
        client,
        base,
    }) = boot_setup(T, &[])
    else {
        return;
    };
    let input = iso::make_convention_iso(env.dir(), "guest.iso", &kernel.vmlinuz, &base, 1 << 20)
        .expect("convention ISO");
    let input_bytes = std::fs::read(&input).unwrap();
    let (offset, len) = iso::xorriso_area(&input).unwrap();
    assert_eq!(len, 1 << 20);

    // Build: HOST.iso in the state folder, 0600, booted as a CD-ROM.
    build_iso(&env, &input);
    let keyed = env.host_state().join(format!("{HOST}.iso"));
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.host_state().join("boot.json")).unwrap())
            .unwrap();
    assert_eq!(boot["medium"], "iso");
    assert_eq!(boot["boot"]["kind"], "cdrom");
    assert_eq!(boot["boot"]["image"], keyed.display().to_string());
    assert_eq!(boot["firmware"], "any");
    let meta = std::fs::metadata(&keyed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

    // The area holds the gzip cpio (parents first), zero-padded; nothing else changed.
    let keyed_bytes = std::fs::read(&keyed).unwrap();
    assert_eq!(iso::xorriso_area(&keyed).unwrap(), (offset, len));
    assert!(
        same_outside(&keyed_bytes, &input_bytes, offset, len),
        "bytes outside the area changed"
    );
    let area = iso::xorriso_extract_area(&keyed, &env.path("area.img")).unwrap();
    assert_eq!(&area[..], &keyed_bytes[offset as usize..][..len as usize]);
    assert_eq!(
        &area[..2],
        &[0x1f, 0x8b],
        "a gzip stream at the area's start"
    );
    assert!(
        area[area.len() - 4096..].iter().all(|&b| b == 0),
        "zero padding"
    );
    assert_eq!(
        cpio_listing(&area, env.dir()),
        [
            "etc",
            "etc/ssh",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub"
        ],
    );

    // Key bytes are in the area and nowhere else in the state folder (boot.json, iso-cache.json).
    let pem = sops_decrypted_host_key(&env);
    let secret_lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!secret_lines.is_empty());
    let raw = gunzip(&area);
    assert!(
        secret_lines.iter().all(|l| contains(&raw, l.as_bytes())),
        "positive control: the area's cpio holds the key"
    );
    for entry in std::fs::read_dir(env.host_state()).unwrap().flatten() {
        if entry.path() == keyed || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        for l in &secret_lines {
            assert!(
                !contains(&bytes, l.as_bytes()),
                "{} holds key bytes",
                entry.path().display()
            );
        }
    }

    // inspect: the area, its state, the host key's fingerprint; never key bytes.
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", &keyed.display().to_string()]))
            .unwrap();
    assert_eq!(doc["kind"], "keyed-iso");
    assert_eq!(doc["state"], "keys");
    assert_eq!(doc["area"]["offset"], offset);
    assert_eq!(doc["area"]["bytes"], len);
    let fp = {
        let pubfile = env.path("host.pub");
        std::fs::write(&pubfile, &host_pub).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&pubfile)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let pub_entry = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "etc/ssh/ssh_host_ed25519_key.pub")
        .unwrap();
    assert_eq!(pub_entry["fingerprint"], fp);
    let text = env.ok(&["inspect", &keyed.display().to_string()]);
    assert!(text.contains("state: keys") && text.contains(&fp), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let json_text = env.ok(&["inspect", "--json", &keyed.display().to_string()]);
    for l in &secret_lines {
        assert!(
            !text.contains(l) && !json_text.contains(l),
            "inspect printed key bytes"
        );
    }
    let input_doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", &input.display().to_string()]))
            .unwrap();
    assert_eq!(input_doc["state"], "empty");

    boot_and_check(&env, "--uefi", &client, &host_pub, &keyed);
    boot_and_check(&env, "--bios", &client, &host_pub, &keyed);

    // Same ISO, build again: only the area is rewritten, in the same file.
    build_iso(&env, &input);
    assert_eq!(
        std::fs::metadata(&keyed).unwrap().ino(),
        meta.ino(),
        "written in place"
    );
    assert!(same_outside(
        &std::fs::read(&keyed).unwrap(),
        &input_bytes,
        offset,
        len
    ));

    // Reset: the input ISO, byte for byte; it boots without keys and says so.
    env.ok(&["media", "reset", &keyed.display().to_string()]);
    assert!(
        std::fs::read(&keyed).unwrap() == input_bytes,
        "reset gives back the input ISO"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", &keyed.display().to_string()]))
            .unwrap();
    assert_eq!(doc["state"], "empty");
    run(&env, "--bios", false);
    let start = Instant::now();
    while !env.serial().contains("No injected keys found") {
        assert!(
            start.elapsed() < Duration::from_secs(420),
            "the unfilled ISO never said it has no keys:\n{}",
            env.serial()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = env.serial();
    assert!(!log.contains("Found injected keys"), "{log}");
    env.ok(&["stop", "-H", HOST]);
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A NixOS-shaped ISO as nixpkgs' iso-image module lays it out: GRUB's configuration at
/// /EFI/boot/grub.cfg and again inside the El Torito FAT image /boot/efi.img, isolinux's at
/// /isolinux/isolinux.cfg with an `INITRD` line and an `initrd=` argument, hybrid MBR + GPT.
fn nixos_shaped_iso(dir: &Path) -> PathBuf {
    let tree = dir.join("nixos-tree");
    let grub = "set timeout=10\n\
menuentry 'NixOS Installer ' --class installer {\n  terminal_output console\n  linux /boot/bzImage ${isoboot} init=/nix/store/x/init root=LABEL=nixos\n  initrd /boot/initrd\n}\n\
submenu \"HiDPI\" --class hidpi {\n  menuentry 'NixOS (serial)' --class serial {\n    linux /boot/bzImage ${isoboot} console=ttyS0\n    initrd /boot/initrd\n  }\n}\n";
    let isolinux = "SERIAL 0 115200\nDEFAULT boot\nLABEL boot\nLINUX /boot/bzImage\nAPPEND init=/nix/store/x/init root=LABEL=nixos\nINITRD /boot/initrd\n\
LABEL boot-serial\nLINUX /boot/bzImage\nAPPEND init=/nix/store/x/init console=ttyS0 initrd=/boot/initrd\n";
    let files = [
        ("EFI/boot/grub.cfg", grub.as_bytes().to_vec()),
        ("isolinux/isolinux.cfg", isolinux.as_bytes().to_vec()),
        ("boot/bzImage", b"kernel".to_vec()),
        ("boot/initrd", b"initrd".to_vec()),
        (
            "isolinux/isolinux.bin",
            std::fs::read(iso::ISOLINUX_BIN).unwrap(),
        ),
    ];
    iso::write_tree(&tree, files).unwrap();
    let efi_s = tree.join("boot/efi.img").display().to_string();
    let grub_s = tree.join("EFI/boot/grub.cfg").display().to_string();
    iso::fat_efi_image(&efi_s, "2M", "boot", &[(&grub_s, "grub.cfg")]).unwrap();
    let out_iso = dir.join("nixos.iso");
    iso::mkisofs(&out_iso, &tree, "nixos-shaped", true).unwrap();
    out_iso
}

fn el_torito(iso: &Path) -> Vec<String> {
    let out = Command::new("xorriso")
        .arg("-indev")
        .arg(iso)
        .args(["-report_el_torito", "plain"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("El Torito boot img") || l.starts_with("El Torito img path"))
        .map(|l| {
            // Drop the LBA column (the images move when the ISO is rewritten).
            let mut cols: Vec<&str> = l.split_whitespace().collect();
            if l.starts_with("El Torito boot img") {
                cols.pop();
            }
            cols.join(" ")
        })
        .collect()
}

/// nix/iso-keys.sh, the script the flake's ISO derivation runs (Nix ≥ 2.18 cannot run here, so
/// the derivation itself is not built in CI; its script is), on a NixOS-shaped ISO: the area is
/// added, contiguous and zero; every initrd of all three configurations loads it last; the
/// El Torito entries and the hybrid MBR survive; `keypack`'s own area finder accepts it.
#[test]
fn nix_iso_keys_adds_the_area_to_every_boot_entry() {
    const T: &str = "nix_iso_keys_adds_the_area_to_every_boot_entry";
    if let Some(why) = iso::missing_tools() {
        return skip(T, &why);
    }
    for tool in [
        "mcopy", "mformat", "mmd", "mtype", "truncate", "bash", "sed",
    ] {
        if !have(tool) {
            return skip(T, &format!("{tool} is not installed"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = nixos_shaped_iso(dir.path());
    let output = dir.path().join("keyed-nixos.iso");
    let script = repo_root().join("nix/iso-keys.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&input)
        .arg("1024")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iso-keys.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (offset, len) = iso::xorriso_area(&output).unwrap();
    assert_eq!(len, 1 << 20);
    let area = iso::xorriso_extract_area(&output, &dir.path().join("a.img")).unwrap();
    assert!(area.iter().all(|&b| b == 0));
    let bytes = std::fs::read(&output).unwrap();
    assert!(
        bytes[offset as usize..][..len as usize]
            .iter()
            .all(|&b| b == 0),
        "one extent at the reported LBA"
    );
    assert_eq!(
        el_torito(&output),
        el_torito(&input),
        "El Torito entries replayed"
    );
    assert_eq!(&bytes[510..512], &[0x55, 0xaa], "the hybrid MBR survives");

    let extract = |path: &str| -> String {
        let to = dir.path().join("x");
        let _ = std::fs::remove_file(&to);
        let out = Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(&output)
            .args(["-extract", path])
            .arg(&to)
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}");
        std::fs::read_to_string(&to).unwrap_or_default()
    };
    let efi_img = dir.path().join("efi.img");
    let _ = extract("/boot/efi.img");
    std::fs::rename(dir.path().join("x"), &efi_img).unwrap();
    let inner = Command::new("mtype")
        .arg("-i")
        .arg(&efi_img)
        .arg("::/EFI/boot/grub.cfg")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let inner = String::from_utf8_lossy(&inner.stdout).into_owned();
    for (name, cfg) in [
        ("/EFI/boot/grub.cfg", extract("/EFI/boot/grub.cfg")),
        ("efi.img grub.cfg", inner),
    ] {
        let initrds: Vec<&str> = cfg
            .lines()
            .filter(|l| l.trim_start().starts_with("initrd "))
            .collect();
        let linuxes = cfg
            .lines()
            .filter(|l| l.trim_start().starts_with("linux "))
            .count();
        assert_eq!(initrds.len(), 2, "{name}: {cfg}");
        assert_eq!(
            initrds.len(),
            linuxes,
            "{name}: every entry has an initrd line"
        );
        for l in initrds {
            assert_eq!(l.trim(), "initrd /boot/initrd /keypack/keys.img", "{name}");
        }
    }
    let isolinux = extract("/isolinux/isolinux.cfg");
    assert!(
        isolinux.contains("\nINITRD /boot/initrd,/keypack/keys.img\n"),
        "{isolinux}"
    );
    assert!(
        isolinux.contains(" initrd=/boot/initrd,/keypack/keys.img\n"),
        "{isolinux}"
    );
    assert_eq!(
        isolinux.matches("/keypack/keys.img").count(),
        2,
        "{isolinux}"
    );

    // keypack accepts it as a keyed ISO (empty area).
    let keypack = env::keypack_bin();
    let out = Command::new(&keypack)
        .args(["inspect", "--json"])
        .arg(&output)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state"], "empty", "{doc}");
    assert_eq!(doc["area"]["offset"], offset);

    // The script refuses sizes that are not whole sectors, and an ISO without configurations.
    for (args, expected) in [
        (
            vec![input.display().to_string(), "3".into()],
            "positive multiple of 2 KiB",
        ),
        (
            vec![output.display().to_string(), "0".into()],
            "positive multiple of 2 KiB",
        ),
    ] {
        let out = Command::new("bash")
            .arg(&script)
            .args(&args)
            .arg(dir.path().join("bad.iso"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?}"
        );
    }
}

/// The module, the flake and the plugin agree on names: the option the medium's errors name
/// exists with its documented default, the flake's `packages.iso` is the ISO with the area,
/// and nix/default.nix imports the module.
#[test]
fn nix_module_flake_and_plugin_agree_on_the_area() {
    let module = std::fs::read_to_string(repo_root().join("nix/iso-keys.nix")).unwrap();
    let squashed: String = module.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(squashed.contains(
        "options.keypack.keysArea={enable=lib.mkOption{type=lib.types.bool;default=true;"
    ));
    assert!(squashed.contains("sizeKiB=lib.mkOption{type=lib.types.ints.positive;default=1024;"));
    assert!(squashed.contains("system.build.keypackIso=ifcfg.enablethen"));
    assert!(squashed.contains("${./iso-keys.sh}"));
    let flake: String = std::fs::read_to_string(repo_root().join("flake.nix"))
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(flake.contains("iso=(isoFor(systemOfpkgs)).config.system.build.keypackIso;"));
    let default = std::fs::read_to_string(repo_root().join("nix/default.nix")).unwrap();
    assert!(default.contains("./iso-keys.nix"));
    let errors = std::fs::read_to_string(repo_root().join("plugins/iso/src/error.rs")).unwrap();
    assert!(
        errors.contains("\"keypack.keysArea.enable\"")
            && errors.contains("\"keypack.keysArea.sizeKiB\"")
    );
}

/// Evaluates `nix/iso-keys.nix` with Debian's `nix-instantiate` (2.8: too old for nixpkgs, so
/// `lib`, `pkgs.runCommand` and the ISO are stubbed) and runs the builder script it produces on a
/// NixOS-shaped ISO: on by default with 1 MiB, the assertion refuses odd sizes, off gives back
/// nixpkgs' ISO untouched, and the derivation's own script writes an ISO keypack accepts.
#[test]
fn nix_module_evaluates_and_its_builder_writes_a_keyed_iso() {
    const T: &str = "nix_module_evaluates_and_its_builder_writes_a_keyed_iso";
    let Some(nix) = keypack_e2e::tools::which("nix-instantiate") else {
        return skip(
            T,
            "nix-instantiate is not installed (apt-get install nix-bin)",
        );
    };
    if let Some(why) = iso::missing_tools() {
        return skip(T, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("stub.nix");
    std::fs::write(&stub, STUB_NIX).unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("iso")).unwrap();
    let shaped = nixos_shaped_iso(dir.path());
    std::fs::rename(&shaped, plain.join("iso/nixos.iso")).unwrap();
    let module = repo_root().join("nix/iso-keys.nix").canonicalize().unwrap();
    let eval = |enable: bool, size: u32| -> serde_json::Value {
        let expr = format!(
            "import {} {} {enable} {size} \"{}\"",
            stub.display(),
            module.display(),
            plain.display()
        );
        let out = Command::new(&nix)
            .args([
                "--eval",
                "--strict",
                "--json",
                "--readonly-mode",
                "-E",
                &expr,
            ])
            .env("NIX_STATE_DIR", dir.path().join("nix-state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{expr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let on = eval(true, 1024);
    assert_eq!(on["options"]["enable"]["default"], true);
    assert_eq!(on["options"]["sizeKiB"]["default"], 1024);
    assert_eq!(on["assertions"], serde_json::json!([true]));
    assert_eq!(
        eval(true, 3)["assertions"],
        serde_json::json!([false]),
        "odd sizes are refused"
    );
    assert_eq!(
        eval(false, 1024)["iso"],
        plain.display().to_string(),
        "off: nixpkgs' ISO as is"
    );
    let script = on["iso"]["script"].as_str().unwrap();
    assert_eq!(
        on["iso"]["attrs"]["nativeBuildInputs"],
        serde_json::json!(["xorriso", "mtools"])
    );
    // The store path of iso-keys.sh is computed, not created, in read-only mode: run the
    // repository's copy in its place.
    let store_script = script
        .split_whitespace()
        .find(|w| w.ends_with("-iso-keys.sh"))
        .expect("the builder runs iso-keys.sh");
    let script = script.replace(
        store_script,
        &repo_root().join("nix/iso-keys.sh").display().to_string(),
    );
    let out_dir = dir.path().join("out");
    let run = Command::new("bash")
        .arg("-euc")
        .arg(&script)
        .env("out", &out_dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "builder: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let keyed = out_dir.join("iso/nixos.iso");
    let keypack = env::keypack_bin();
    let out = Command::new(&keypack)
        .args(["inspect", "--json"])
        .arg(&keyed)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state"], "empty", "{doc}");
    assert_eq!(doc["area"]["bytes"], 1 << 20);
}

/// A stand-in for the parts of nixpkgs `nix/iso-keys.nix` uses.
const STUB_NIX: &str = r#"module: enable: sizeKiB: plainIso:
let
  lib = {
    mkOption = o: o;
    types = { bool = "bool"; ints.positive = "positive"; };
    mod = a: b: a - (a / b) * b;
  };
  pkgs = {
    xorriso = "xorriso";
    mtools = "mtools";
    runCommand = name: attrs: script: { inherit name attrs script; };
  };
  config = {
    keypack.keysArea = { inherit enable sizeKiB; };
    system.build.isoImage = plainIso;
  };
  m = import module { inherit config lib pkgs; };
in
{
  options = m.options.keypack.keysArea;
  assertions = map (a: a.assertion) m.config.assertions;
  iso = m.config.system.build.keypackIso;
}
"#;

/// The whole NixOS path, with the guest's kernel: an ISO laid out as nixpkgs' (GRUB reading its
/// configuration from the El Torito FAT image, isolinux first) without an area →
/// `nix/iso-keys.sh` (what the flake's ISO derivation runs) → `keypack build --media iso` →
/// boots under OVMF and under SeaBIOS, and the packed host key is served both times. Proves
/// the rewritten GRUB (inside efi.img) and isolinux entries really load the area.
#[test]
fn the_nix_rewritten_nixos_layout_boots_with_keys_under_uefi_and_bios() {
    const T: &str = "the_nix_rewritten_nixos_layout_boots_with_keys_under_uefi_and_bios";
    let Some(Booted {
        env,
        kernel,
        host_pub,
        client,
        base,
    }) = boot_setup(T, &["grub-mkimage"])
    else {
        return;
    };
    let plain = iso::make_nixos_layout_iso(env.dir(), "nixos.iso", &kernel.vmlinuz, &base)
        .expect("NixOS-layout ISO");
    let no_area = env.kp(&[
        "build",
        "-H",
        HOST,
        "--media",
        "iso",
        "--iso",
        &plain.display().to_string(),
    ]);
    assert!(!no_area.status.success());
    assert!(
        String::from_utf8_lossy(&no_area.stderr).contains("keypack.keysArea.enable = true"),
        "the error names the option"
    );
    let with_area = env.path("nixos-keys.iso");
    let out = Command::new("bash")
        .arg(repo_root().join("nix/iso-keys.sh"))
        .arg(&plain)
        .arg("1024")
        .arg(&with_area)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iso-keys.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    build_iso(&env, &with_area);
    let keyed = env.host_state().join(format!("{HOST}.iso"));
    boot_and_check(&env, "--uefi", &client, &host_pub, &keyed);
    boot_and_check(&env, "--bios", &client, &host_pub, &keyed);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first gzip member of `bytes`, decompressed by `gzip -dc` (trailing zeros ignored).
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out.stdout
}

/// The host's private key as the real `sops` decrypts it from the test repository.
fn sops_decrypted_host_key(env: &Env) -> String {
    let out = Command::new("sops")
        .args(["--decrypt", "--extract", "[\"ssh_host_ed25519_key\"]"])
        .arg(env.path(&format!("repo/hosts/{HOST}.yaml")))
        .env("SOPS_AGE_KEY_FILE", env.path("age.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sops: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
