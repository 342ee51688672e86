//! End to end through an external medium (issue 15): `keypack-media-initrd-ext` (the initrd
//! medium built a second time, as a program served by `keypack_plugin::external::serve`) on
//! PATH → `keypack plugins check initrd-ext` → `keypack build --media initrd-ext` from a sops
//! keys repo → `keypack run --wait-ssh` of the real test guest under QEMU (TCG) → `keypack
//! ssh` with the packed host key pinned serves that key. The harness is `keypack_e2e::env`.

use std::os::unix::fs::PermissionsExt;

use keypack_e2e::env::{self, CAT_HOST_KEY, Env, HOST, key_data, ssh_args, tcg_run};
use keypack_e2e::tools::cargo_bin;

const CANARY: &str = "AGE-SECRET-KEY-1KEYPACKE2ECANARYMUSTNOTREACHAPLUGIN";

fn prerequisites(test: &str) -> bool {
    env::prerequisites(test, &["ssh-keyscan", "dropbearconvert"])
}

#[test]
fn boot_through_the_external_initrd_medium_and_ssh_with_the_pinned_key() {
    const T: &str = "boot_through_the_external_initrd_medium_and_ssh_with_the_pinned_key";
    if !prerequisites(T) {
        return;
    }
    let Some(kernel) = env::guest_kernel(T) else {
        return;
    };
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    let plugin = cargo_bin("keypack-media-initrd", "keypack-media-initrd-ext", "dev")
        .expect("build keypack-media-initrd-ext");
    let env = Env::new(keypack);
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Dropped onto PATH: that is all it takes to add a medium.
    std::fs::copy(&plugin, bin.join("keypack-media-initrd-ext")).unwrap();
    // A secret-looking variable in keypack's environment must not reach the plugin.
    let env = env.with_path_first(&bin).with_var("SOPS_AGE_KEY", CANARY);
    let host_pub = env.keys_repo(&["alice"]).host_public_key;
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    let (k, b) = (
        kernel.vmlinuz.display().to_string(),
        base.display().to_string(),
    );

    let listing = env.ok(&["plugins"]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("initrd-ext") && l.contains("[external: ")),
        "{listing}"
    );
    let check = env.ok(&[
        "plugins",
        "check",
        "initrd-ext",
        "--",
        "--kernel",
        &k,
        "--initrd",
        &b,
    ]);
    assert!(check.contains("initrd-ext: every check passed"), "{check}");

    env.ok(&[
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "initrd-ext",
        "--kernel",
        &k,
        "--initrd",
        &b,
        "--append",
        "console=ttyS0",
    ]);
    let cpio = env.host_state().join("keys.cpio.gz");
    assert_eq!(
        std::fs::metadata(&cpio).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.host_state().join("boot.json")).unwrap())
            .unwrap();
    assert_eq!(boot["medium"], "initrd-ext");
    assert_eq!(boot["boot"]["initrds"][1], cpio.display().to_string());
    assert_eq!(
        key_data(boot["host_public_key"].as_str().unwrap()),
        key_data(&host_pub)
    );

    let out = env.kp(&tcg_run(&["--wait-ssh", "--timeout", "300"]));
    assert!(
        out.status.success(),
        "run --wait-ssh failed; serial log:\n{}",
        env.serial()
    );
    let c = client.display().to_string();
    let served = env.ok(&ssh_args(&c, CAT_HOST_KEY));
    assert_eq!(key_data(&served), key_data(&host_pub));
    env.ok(&["stop", "-H", HOST, "--timeout", "30"]);
}
