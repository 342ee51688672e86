//! End to end through an ISO: the test guest's kernel and base initrd are put on an ISO made
//! with `xorriso -as mkisofs`, with a NixOS-shaped `/EFI/BOOT/grub.cfg` and
//! `/isolinux/isolinux.cfg` → `keypack build --media initrd --iso` → `keypack run --wait-ssh`
//! (TCG) → `keypack ssh` serves the packed host key → `stop`. The configurations' variant entry
//! would make the guest serve a foreign key, so a wrong entry choice fails the pinned check.

use std::path::{Path, PathBuf};
use std::process::Command;

use keypack_e2e::env::{self, CAT_HOST_KEY, Env, HOST, key_data, ssh_args, tcg_run};

fn grub_cfg() -> &'static str {
    r#"set textmode=false
set timeout=10
if [ ${iso_path} ] ; then
  set isoboot="findiso=${iso_path}"
fi
menuentry 'NixOS 25.05 Installer ' --class installer {
  terminal_output console
  linux /boot/bzImage ${isoboot} init=/init root=LABEL=keypack-e2e-iso console=ttyS0
  initrd /boot/initrd
}
menuentry 'NixOS 25.05 Installer (nomodeset)' --class nomodeset {
  linux /boot/bzImage ${isoboot} root=LABEL=keypack-e2e-iso console=ttyS0 nomodeset keypack_e2e.other_key
  initrd /boot/initrd
}
"#
}

fn isolinux_cfg() -> &'static str {
    "DEFAULT boot
LABEL boot-nomodeset
LINUX /boot/bzImage
APPEND root=LABEL=keypack-e2e-iso console=ttyS0 keypack_e2e.other_key
INITRD /boot/initrd
LABEL boot
LINUX /boot/bzImage
APPEND init=/init root=LABEL=keypack-e2e-iso console=ttyS0
INITRD /boot/initrd
"
}

fn make_iso(dir: &Path, kernel: &Path, initrd: &Path) -> PathBuf {
    let tree = dir.join("iso-tree");
    for (p, from) in [("boot/bzImage", kernel), ("boot/initrd", initrd)] {
        std::fs::create_dir_all(tree.join(p).parent().unwrap()).unwrap();
        std::fs::copy(from, tree.join(p)).unwrap();
    }
    for (p, text) in [
        ("EFI/BOOT/grub.cfg", grub_cfg()),
        ("isolinux/isolinux.cfg", isolinux_cfg()),
    ] {
        std::fs::create_dir_all(tree.join(p).parent().unwrap()).unwrap();
        std::fs::write(tree.join(p), text).unwrap();
    }
    let iso = dir.join("guest.iso");
    let out = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "keypack-e2e-iso",
            "-o",
        ])
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

#[test]
fn boot_from_an_iso_build_run_ssh_stop() {
    const T: &str = "boot_from_an_iso_build_run_ssh_stop";
    if !env::prerequisites(T, &["ssh-keyscan", "dropbearconvert", "xorriso"]) {
        return;
    }
    let Some(kernel) = env::guest_kernel(T) else {
        return;
    };
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    let env = Env::new(keypack);
    let host_pub = env.keys_repo(&[]).host_public_key;
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    let iso = make_iso(env.dir(), &kernel.vmlinuz, &base);
    let iso_s = iso.display().to_string();

    env.ok(&["build", "-H", HOST, "--media", "initrd", "--iso", &iso_s]);
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.host_state().join("boot.json")).unwrap())
            .unwrap();
    let b = &boot["boot"];
    assert_eq!(
        b["cmdline"], "init=/init root=LABEL=keypack-e2e-iso console=ttyS0",
        "the default GRUB entry's command line"
    );
    assert_eq!(
        b["cdrom"],
        std::fs::canonicalize(&iso).unwrap().display().to_string()
    );
    let initrds = b["initrds"].as_array().unwrap();
    assert_eq!(initrds.len(), 2);
    assert!(initrds[1].as_str().unwrap().ends_with("keys.cpio.gz"));
    assert!(
        std::fs::read(b["kernel"].as_str().unwrap()).unwrap()
            == std::fs::read(&kernel.vmlinuz).unwrap(),
        "extracted kernel is the guest's"
    );
    assert!(
        std::fs::read(initrds[0].as_str().unwrap()).unwrap() == std::fs::read(&base).unwrap(),
        "extracted initrd is the guest's"
    );

    env.ok(&tcg_run(&["--wait-ssh", "--timeout", "180"]));
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "-H", HOST, "--json"])).unwrap();
    assert_eq!(st["running"], true);
    let text = env.ok(&["status", "-H", HOST]);
    assert!(
        text.contains(&format!("cdrom:    {}", b["cdrom"].as_str().unwrap())),
        "{text}"
    );
    let pid = st["pid"].as_u64().unwrap();
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        cmdline.contains(&format!(
            "file={},format=raw,if=ide,media=cdrom,readonly=on",
            std::fs::canonicalize(&iso).unwrap().display()
        )),
        "the ISO is attached read-only: {cmdline:?}"
    );

    let c = client.display().to_string();
    let served = env.ok(&ssh_args(&c, CAT_HOST_KEY));
    assert_eq!(key_data(&served), key_data(&host_pub));
    let log = env.ok(&["log", "-H", HOST]);
    assert!(log.contains("=== Stage 1"), "{log}");
    env.ok(&["stop", "-H", HOST]);
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "-H", HOST, "--json"])).unwrap();
    assert_eq!(st["running"], false);
}
