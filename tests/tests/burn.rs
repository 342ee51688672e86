//! End to end, `--burn-after-boot` (issue #14, part 2), real boots under TCG: a sops keys repo
//! → `keypack build --media ventoy --seed 42 --burn-after-boot` (the stick) and `keypack build
//! --media initrd --seed 42 --burn-after-boot` (the same bundle, same mark) → `keypack run
//! --extra-disk STICK` boots the test guest directly with the keys initrd and the stick as
//! `/dev/vda` → `load-keys` installs the keys and burns the bundle on the stick. Then, on the
//! host, from outside: no bundle bytes and no private-key line anywhere on the image, `fsck -n`
//! clean, `ventoy.json` parses without keypack's injection entry (control entries kept), the
//! ISO and the Ventoy layout byte-identical, and `keypack media update --image` refreshes the
//! burned stick. The interruption test stops the burn after several steps (the test-only
//! kernel parameter `keypack_burn.stop_after=STEP`) and kills QEMU there, like a power cut.

#[path = "../../plugins/ventoy/tests/common/mod.rs"]
#[allow(unused_imports)]
mod ventoy_fixture;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keypack_e2e::env::{self, Env, HOST, tcg_run};
use keypack_e2e::guest;

fn prerequisites(test: &str) -> bool {
    env::prerequisites(
        test,
        &["dropbearconvert", "mtype", "fsck.fat", "fsck.exfat"],
    )
}

/// Everything one test needs: the repo, the guest, the stick and the keys initrd.
struct Setup {
    env: Env,
    kernel: guest::Kernel,
    base: PathBuf,
    iso: PathBuf,
    stick: PathBuf,
    /// The stick before any boot.
    pristine: PathBuf,
    /// Windows of the bundle as it lies on the stick, and every private-key base64 line.
    needles: Vec<(String, Vec<u8>)>,
    exfat: bool,
}

fn setup(test: &str, exfat: bool) -> Option<Setup> {
    if !prerequisites(test) {
        return None;
    }
    let kernel = env::guest_kernel(test)?;
    let keypack = env::keypack_bin();
    let load_keys = env::load_keys_bin();
    let env = Env::new(keypack);
    env.keys_repo(&["alice"]);
    let (_client, base) = env.guest_initrd(&load_keys, &kernel);
    let iso = ventoy_fixture::fake_iso(env.dir(), "k.iso", 2 << 20);
    let stick = env.path("stick.img");
    let fixture = ventoy_fixture::fixture().dir.display().to_string();
    let (i, s) = (iso.display().to_string(), stick.display().to_string());
    let mut args = vec![
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "ventoy",
        "--iso",
        &i,
        "--ventoy-dir",
        &fixture,
        "-o",
        &s,
        "--seed",
        "42",
        "--burn-after-boot",
    ];
    if exfat {
        args.push("--exfat");
    }
    env.ok(&args);
    build_initrd(&env, &kernel, &base, "console=ttyS0");

    // The same bundle on both media: the stick's archive and the cpio carry one mark.
    let info = keypack_media_ventoy::inspect(&stick).expect("inspect the stick");
    let (_, archive) = info
        .archives
        .iter()
        .find(|(p, _)| p == "/keys.tar.gz")
        .expect("the stick holds /keys.tar.gz");
    let stick_mark = keypack_bundle_mark(archive);
    let cpio_mark = String::from_utf8(
        Command::new("sh")
            .arg("-c")
            .arg("gzip -dc \"$1\" | cpio --quiet -i --to-stdout keypack/burn-after-boot")
            .arg("sh")
            .arg(env.host_state().join("keys.cpio.gz"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(stick_mark.trim(), cpio_mark.trim(), "one bundle, one mark");
    assert_eq!(cpio_mark.trim().len(), 32);
    let inspect = env.ok(&["inspect", &s]);
    assert!(
        inspect.contains(&format!("burn after boot: yes (mark {})", cpio_mark.trim())),
        "{inspect}"
    );

    let mut needles: Vec<(String, Vec<u8>)> = (0..archive.len().saturating_sub(64))
        .step_by(256)
        .map(|at| {
            (
                format!("keys.tar.gz bytes {at}.."),
                archive[at..at + 64].to_vec(),
            )
        })
        .collect();
    needles.extend(private_key_lines(&env.host_state().join("keys.cpio.gz")));
    let image = std::fs::read(&stick).unwrap();
    for (what, n) in &needles[..1] {
        assert!(
            memchr::memmem::find(&image, n).is_some(),
            "{what} not on the stick before the boot"
        );
    }
    let pristine = env.path("pristine.img");
    std::fs::copy(&stick, &pristine).unwrap();
    Some(Setup {
        env,
        kernel,
        base,
        iso,
        stick,
        pristine,
        needles,
        exfat,
    })
}

/// The mark's token inside a `keys.tar.gz`, read with busybox-compatible tools (GNU tar).
fn keypack_bundle_mark(archive: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.tar.gz");
    std::fs::write(&p, archive).unwrap();
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&p)
        .arg("keypack/burn-after-boot")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The base64 lines of every private key in the keys cpio.
fn private_key_lines(cpio_gz: &Path) -> Vec<(String, Vec<u8>)> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(cpio_gz)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    let mut in_key = false;
    for line in text.lines() {
        if line.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            in_key = true;
        } else if line.contains("-----END OPENSSH PRIVATE KEY-----") {
            in_key = false;
        } else if in_key && line.len() >= 60 {
            lines.push((
                "a private key's base64 line".into(),
                line.as_bytes().to_vec(),
            ));
        }
    }
    assert!(lines.len() >= 4, "no private key lines in the cpio");
    lines
}

fn build_initrd(env: &Env, kernel: &guest::Kernel, base: &Path, append: &str) {
    let (k, b) = (
        kernel.vmlinuz.display().to_string(),
        base.display().to_string(),
    );
    env.ok(&[
        "build",
        "-H",
        HOST,
        "-U",
        "alice",
        "--media",
        "initrd",
        "--kernel",
        &k,
        "--initrd",
        &b,
        "--append",
        append,
        "--seed",
        "42",
        "--burn-after-boot",
    ]);
}

fn run_args<'a>(stick: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = tcg_run(&["--extra-disk", stick]);
    a.extend_from_slice(extra);
    a
}

/// Sectors of partition 1 (start, count), read from the MBR or GPT independently of keypack.
fn data_partition(img: &Path) -> (u64, u64) {
    let f = std::fs::File::open(img).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).unwrap();
    let le32 = |b: &[u8], o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if mbr[0x1BE + 4] == 0xEE {
        let mut e = [0u8; 128];
        f.read_exact_at(&mut e, 2 * 512).unwrap();
        (le64(&e, 32), le64(&e, 40) - le64(&e, 32) + 1)
    } else {
        (le32(&mbr, 0x1BE + 8), le32(&mbr, 0x1BE + 12))
    }
}

/// `fsck.fat`/`fsck.exfat` on a copy of partition 1: (clean, report). With `repair`, the
/// repaired partition is written back.
fn fsck(img: &Path, exfat: bool, repair: bool) -> (bool, String) {
    let (start, len) = data_partition(img);
    let part = img.with_extension("p1");
    ventoy_fixture::carve(img, start, len, &part);
    let tool = if exfat { "fsck.exfat" } else { "fsck.fat" };
    let flag = match (repair, exfat) {
        (false, _) => "-n",
        (true, true) => "-y",
        (true, false) => "-a",
    };
    let out = ventoy_fixture::run(Command::new(tool).arg(flag).arg(&part));
    if repair {
        let bytes = std::fs::read(&part).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        f.write_all_at(&bytes, start * 512).unwrap();
    }
    let _ = std::fs::remove_file(&part);
    out
}

/// `ventoy.json` of the stick, parsed (mtools for FAT32; the ventoy plugin's reader for exFAT,
/// which mtools cannot read).
fn ventoy_json(img: &Path, exfat: bool) -> serde_json::Value {
    if exfat {
        let info = keypack_media_ventoy::inspect(img).expect("inspect");
        info.json
            .expect("ventoy.json present")
            .expect("ventoy.json parses")
    } else {
        serde_json::from_slice(&ventoy_fixture::mtype(img, "/ventoy/ventoy.json"))
            .expect("ventoy.json parses")
    }
}

fn iso_intact(s: &Setup, img: &Path) {
    let iso = std::fs::read(&s.iso).unwrap();
    if s.exfat {
        let image = std::fs::read(img).unwrap();
        assert!(
            memchr::memmem::find(&image, &iso).is_some(),
            "the ISO changed"
        );
    } else {
        assert!(
            ventoy_fixture::mtype(img, "/k.iso") == iso,
            "the ISO changed"
        );
    }
}

fn wait_for(env: &Env, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let log = env.serial();
        if log.contains(what) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} on the console after {secs} s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn burn_after_boot(test: &str, exfat: bool) {
    let Some(s) = setup(test, exfat) else {
        return;
    };
    let env = &s.env;
    let stick = s.stick.display().to_string();
    let out = env.kp(&run_args(&stick, &["--wait-ssh", "--timeout", "300"]));
    assert!(
        out.status.success(),
        "run --wait-ssh failed; serial log:\n{}",
        env.serial()
    );
    let log = wait_for(env, "=== Stage 1: Key loading complete ===", 60);
    env.ok(&["stop", "-H", HOST, "--timeout", "60"]);
    let stage1: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("=== Stage 1: Loading SSH keys"))
        .take_while(|l| !l.contains("keypack-e2e: load-keys exited"))
        .collect();
    eprintln!("console:\n{}", stage1.join("\n"));
    assert!(
        log.contains("keypack: burn after boot: done on /dev/vda"),
        "{log}"
    );
    assert!(
        log.contains("/dev/vda: overwrote /keys.tar.gz with zeros"),
        "{log}"
    );

    // From outside: no bundle byte, no key line anywhere on the image.
    let image = std::fs::read(&s.stick).unwrap();
    for (what, n) in &s.needles {
        assert!(
            memchr::memmem::find(&image, n).is_none(),
            "{what} is still on the stick after the burn"
        );
    }
    let (clean, report) = fsck(&s.stick, exfat, false);
    assert!(clean, "fsck not clean after the burn: {report}");
    let json = ventoy_json(&s.stick, exfat);
    let injection = json["injection"].as_array().expect("injection is an array");
    assert!(
        injection.iter().all(|e| e["archive"] != "/keys.tar.gz"),
        "keypack's injection entry is still in ventoy.json: {json}"
    );
    let control = json["control"].as_array().expect("control entries stay");
    assert!(
        control.iter().any(|e| e["VTOY_DEFAULT_IMAGE"] == "/k.iso"),
        "{json}"
    );
    iso_intact(&s, &s.stick);
    ventoy_fixture::verify(&image, ventoy_fixture::fixture()).expect("the Ventoy layout is intact");
    // `inspect` exits 1 (no keys to inject) and says why.
    let out = env.kp(&["inspect", &stick]);
    let inspect = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(!inspect.contains("burn after boot: yes"), "{inspect}");
    assert!(
        inspect.contains("after --burn-after-boot burned the stick"),
        "{inspect}"
    );

    // A second boot with the same keys initrd: nothing left to burn, the stick unchanged.
    let before = std::fs::read(&s.stick).unwrap();
    env.ok(&run_args(&stick, &["--wait-ssh", "--timeout", "300"]));
    let log = wait_for(env, "=== Stage 1: Key loading complete ===", 60);
    env.ok(&["stop", "-H", HOST, "--timeout", "60"]);
    let second: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("burn after boot") || l.starts_with("  /dev/vda:"))
        .collect();
    eprintln!("second boot:\n{}", second.join("\n"));
    assert!(
        log.contains("keypack: burn after boot: nothing to burn"),
        "{log}"
    );
    assert!(
        std::fs::read(&s.stick).unwrap() == before,
        "a burn with nothing to do wrote"
    );

    if !exfat {
        // The burned stick is refreshed with `media update --image`.
        let i = s.iso.display().to_string();
        env.ok(&[
            "media",
            "update",
            "--image",
            &stick,
            "-H",
            HOST,
            "-U",
            "alice",
            "--iso",
            &i,
            "--burn-after-boot",
        ]);
        let inspect = env.ok(&["inspect", &stick]);
        assert!(inspect.contains("burn after boot: yes"), "{inspect}");
        let json = ventoy_json(&s.stick, false);
        assert!(
            json["injection"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["archive"] == "/keys.tar.gz" && e["image"] == "/k.iso"),
            "{json}"
        );
        let (clean, report) = fsck(&s.stick, false, false);
        assert!(clean, "fsck after the refresh: {report}");
    }
    let _ = (&s.kernel, &s.base, &s.pristine);
}

#[test]
fn burn_after_boot_fat32() {
    burn_after_boot("burn_after_boot_fat32", false);
}

#[test]
fn burn_after_boot_exfat() {
    burn_after_boot("burn_after_boot_exfat", true);
}

/// A power cut during the burn (QEMU killed right after a step was synced) leaves a file
/// system that fsck repairs without loss, with the old bundle or none: never a mix, never a
/// broken ISO.
fn interrupted(test: &str, exfat: bool, steps: &[&str]) {
    let Some(s) = setup(test, exfat) else {
        return;
    };
    let env = &s.env;
    for step in steps {
        let img = env.path(&format!("{step}.img"));
        std::fs::copy(&s.pristine, &img).unwrap();
        build_initrd(
            env,
            &s.kernel,
            &s.base,
            &format!("console=ttyS0 keypack_burn.stop_after={step}"),
        );
        let i = img.display().to_string();
        env.ok(&run_args(&i, &[]));
        let log = wait_for(env, &format!("stopped after step {step}"), 300);
        env.power_cut();
        assert!(!log.contains("burn after boot: done"), "{step}: {log}");

        let image = std::fs::read(&img).unwrap();
        let whole = memchr::memmem::find(&image, &s.needles[0].1).is_some();
        assert_eq!(
            whole,
            step.starts_with("json-"),
            "{step}: bundle on the image"
        );
        if !whole {
            for (what, n) in &s.needles {
                assert!(
                    memchr::memmem::find(&image, n).is_none(),
                    "{step}: {what} left"
                );
            }
        }
        let (_, report) = fsck(&img, exfat, false);
        for line in report.lines() {
            let l = line.to_lowercase();
            assert!(
                !l.contains("share clusters")
                    && !l.contains("bad cluster")
                    && !l.contains("truncat")
                    && !l.contains("cross"),
                "{step}: fsck: {report}"
            );
        }
        iso_intact(&s, &img);
        let json = ventoy_json(&img, exfat);
        let ours = json["injection"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["archive"] == "/keys.tar.gz");
        assert_eq!(
            ours,
            *step == "json-chain" || *step == "json-data",
            "{step}: ventoy.json {json}"
        );
        let _ = fsck(&img, exfat, true);
        let (clean, again) = fsck(&img, exfat, false);
        assert!(clean, "{step}: not clean after repair: {again}");
    }
}

#[test]
fn interrupted_burn_fat32() {
    interrupted(
        "interrupted_burn_fat32",
        false,
        &["json-data", "json-entry", "zero", "unlink"],
    );
}

#[test]
fn interrupted_burn_exfat() {
    interrupted("interrupted_burn_exfat", true, &["json-entry", "zero"]);
}
