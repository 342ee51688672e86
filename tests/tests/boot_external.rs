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

/// (package, program) of the external plugins built from this workspace.
const MEDIUM: (&str, &str) = ("keypack-media-initrd", "keypack-media-initrd-ext");
const RUNNER: (&str, &str) = ("keypack-runner-qemu", "keypack-runner-qemu-ext");

/// `build` of alice and the host through the external initrd medium, kernel `k`, base initrd
/// `b`, then `extra`.
fn build_args<'a>(k: &'a str, b: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "initrd-ext",
        "--kernel",
        k,
        "--initrd",
        b,
        "--append",
        "console=ttyS0",
    ];
    a.extend_from_slice(extra);
    a
}

/// An environment whose PATH starts with a private folder holding `programs`, built if
/// needed.
fn with_programs(programs: &[(&str, &str)]) -> Env {
    let env = Env::new(env::keypack_bin());
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (package, program) in programs {
        let built = cargo_bin(package, program, "dev").expect("build the plugin program");
        std::fs::copy(&built, bin.join(program)).unwrap();
    }
    env.with_path_first(&bin)
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
    let load_keys = env::load_keys_bin();
    // Dropped onto PATH: that is all it takes to add a medium.
    let env = with_programs(&[MEDIUM])
        // A secret-looking variable in keypack's environment must not reach the plugin.
        .with_var("SOPS_AGE_KEY", CANARY);
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

    env.ok(&build_args(&k, &b, &[]));
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

const PASS: &str = "external runner e2e passphrase";

/// A sealed build through the external medium, booted by an external runner
/// (`keypack-runner-qemu-ext`, the QEMU runner served by `serve_runner`): the passphrase is
/// checked by `keypack run` and reaches the runner only as a sealed memfd, the runner hands it
/// to the guest through fw_cfg, load-keys unseals, and `status`, `ssh`, `log` and `stop` all
/// go through the runner's record.
#[test]
fn a_sealed_build_boots_through_an_external_runner_with_status_ssh_log_and_stop() {
    const T: &str = "a_sealed_build_boots_through_an_external_runner_with_status_ssh_log_and_stop";
    if !prerequisites(T) {
        return;
    }
    let Some(kernel) = env::guest_kernel(T) else {
        return;
    };
    let load_keys = env::load_keys_bin();
    let env = with_programs(&[MEDIUM, RUNNER]).with_var("KEYPACK_PIN_FD", "0");
    let host_pub = env.keys_repo(&["alice"]).host_public_key;
    let (client, base) = env.guest_initrd(&load_keys, &kernel);
    let (k, b) = (
        kernel.vmlinuz.display().to_string(),
        base.display().to_string(),
    );
    let with_input = |args: &[&str], input: &str| {
        let out = env.kp_with_input(args, input);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains(PASS), "the passphrase was printed");
        (out.status.success(), err)
    };

    let listing = env.ok(&["plugins"]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("qemu-ext") && l.contains("[external: ")),
        "{listing}"
    );
    let (ok, err) = with_input(
        &build_args(&k, &b, &["--seal", "passphrase"]),
        &format!("{PASS}\n{PASS}\n"),
    );
    assert!(ok, "sealed build through the external medium: {err}");

    // QEMU's own options are refused for an external runner, an unknown runner is named.
    let err = env.fails(&["run", "-H", HOST, "--runner", "qemu-ext", "--accel", "tcg"]);
    assert!(
        err.contains("--accel is an option of the built-in QEMU runner"),
        "{err}"
    );
    let err = env.fails(&["run", "-H", HOST, "--runner", "nosuch"]);
    assert!(
        err.contains("no runner `nosuch`") && err.contains("qemu-ext"),
        "{err}"
    );
    // A wrong passphrase: refused before the runner is even started.
    let run = [
        "run",
        "-H",
        HOST,
        "--runner",
        "qemu-ext",
        "--port",
        "auto",
        "--memory",
        "512",
        "--cpus",
        "1",
        "--wait-ssh",
        "--timeout",
        "400",
    ];
    let (ok, err) = with_input(&run, "not it\n");
    assert!(!ok && err.contains("wrong passphrase"), "{err}");
    assert!(!env.host_state().join("runner.json").exists());

    let (ok, err) = with_input(&run, &format!("{PASS}\n"));
    let runner_dir = env.host_state().join("runner-qemu-ext");
    let console = runner_dir.join("serial.log");
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    if let Some(pid) = std::fs::read_to_string(runner_dir.join("qemu.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        env.kill_on_drop(pid);
    }
    assert!(
        ok,
        "run --runner qemu-ext --wait-ssh: {err}\nconsole:\n{log}"
    );
    assert!(err.contains("runner qemu-ext [external: "), "{err}");
    assert!(
        log.contains("Found sealed keys (/keypack/sealed.age)"),
        "{log}"
    );
    assert!(log.contains("Unsealed 2 private key file(s)"), "{log}");

    let status = env.status();
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["runner"], "qemu-ext", "{status}");
    let c = client.display().to_string();
    let served = env.ok(&ssh_args(&c, CAT_HOST_KEY));
    assert_eq!(key_data(&served), key_data(&host_pub));
    let shown = env.ok(&["log", "-H", HOST]);
    assert!(shown.contains("Unsealed 2 private key file(s)"), "{shown}");
    // One machine per host: the built-in runner will not start a second.
    let err = env.fails(&["run", "-H", HOST, "--accel", "tcg", "--port", "auto"]);
    assert!(
        err.contains("already runs") && err.contains("qemu-ext"),
        "{err}"
    );

    let out = env.kp(&["stop", "-H", HOST, "--timeout", "30"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("runner qemu-ext"),
        "{err}"
    );
    assert!(!env.host_state().join("runner.json").exists());
    assert_eq!(env.status()["running"], false);
}
