//! Keys-only switch interrupted at each step, `update_dir` (the `--mount` path) merging
//! `ventoy.json`, and `update_image` refusing what is not a Ventoy disk.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use keypack_media_ventoy::{BuildOptions, build_image, fat, update_dir, update_image};

/// Child-process half of `interrupted_switch_leaves_old_or_new_bundle`.
#[test]
#[ignore = "run by interrupted_switch_leaves_old_or_new_bundle in a child process"]
fn helper_switch() {
    let img = std::env::var("KEYPACK_TEST_IMG").expect("set by the parent test");
    let bundle = fs::read(std::env::var("KEYPACK_TEST_BUNDLE").unwrap()).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    fat::switch_file(&f, Path::new(&img), 2048 * 512, "/keys.tar.gz", &bundle).unwrap();
}

#[test]
fn interrupted_switch_leaves_old_or_new_bundle() {
    let test = "interrupted_switch_leaves_old_or_new_bundle";
    if !have_tools(test, &["mtype", "fsck.fat"]) {
        return;
    }
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let old: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..90_000u32).map(|i| (i % 241) as u8).collect();
    let base = tmp.path().join("base.img");
    build_seeded(&old, &iso, &base, 4);
    let new_path = tmp.path().join("new.bin");
    fs::write(&new_path, &new).unwrap();
    for (step, expect_new) in [
        ("chain", false),
        ("entry", true),
        ("wipe", true),
        ("none", true),
    ] {
        let img = tmp.path().join(format!("{step}.img"));
        fs::copy(&base, &img).unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "helper_switch", "--nocapture"])
            .env("KEYPACK_TEST_IMG", &img)
            .env("KEYPACK_TEST_BUNDLE", &new_path)
            .env("KEYPACK_VENTOY_CRASH_AFTER", step)
            .output()
            .unwrap()
            .status;
        assert_eq!(
            status.success(),
            step == "none",
            "{step}: the helper must abort there"
        );
        let got = mtype(&img, "/keys.tar.gz");
        let want = if expect_new { &new } else { &old };
        assert!(
            got == *want,
            "after a crash at {step}: the bundle is neither old nor new"
        );
        // Everything else is intact; at worst clusters are lost, which fsck frees.
        let v = verify(&fs::read(&img).unwrap(), fixture()).unwrap();
        assert!(mtype(&img, "/k.iso") == fs::read(&iso).unwrap());
        let part = tmp.path().join(format!("{step}.p1"));
        carve(&img, v.p1.0, v.p1.1, &part);
        let (_, report) = run(Command::new("fsck.fat").arg("-n").arg(&part));
        for line in report.lines() {
            assert!(
                !line.contains("share clusters")
                    && !line.contains("Bad")
                    && !line.contains("truncat"),
                "{step}: fsck.fat: {report}"
            );
        }
        if step == "none" {
            // A completed switch leaves nothing for fsck to reclaim.
            assert!(!report.contains("unused clusters"), "{report}");
        }
        if step != "chain" {
            // Once the new bundle is in place, the old one is gone from the whole image, or
            // only its wipe is left to do (crash right after the entry switch).
            let bytes = fs::read(&img).unwrap();
            let found = bytes.windows(64).any(|w| w == &old[1000..1064]);
            assert_eq!(
                found,
                step == "entry",
                "{step}: old bundle bytes on the image"
            );
        }
        let (ok, report) = run(Command::new("fsck.fat").arg("-a").arg(&part));
        assert!(
            ok || report.contains("unused clusters"),
            "{step}: fsck.fat -a: {report}"
        );
        let (ok, report) = run(Command::new("fsck.fat").arg("-n").arg(&part));
        assert!(ok, "{step}: not clean after repair: {report}");
    }
}

#[test]
fn update_dir_merges_json_and_copies_via_temp_names() {
    let tmp = private_tmp();
    let stick = tmp.path().join("stick");
    fs::create_dir_all(stick.join("ventoy")).unwrap();
    fs::write(stick.join("other.iso"), b"not ours").unwrap();
    fs::write(
        stick.join("ventoy/ventoy.json"),
        br#"{"menu_alias":[{"image":"/other.iso","alias":"O"}],"injection":[{"image":"/k.iso","archive":"/old.tgz"}],"injection_legacy":[]}"#,
    )
    .unwrap();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let warnings = update_dir(
        &stick,
        &iso,
        "k.iso",
        b"bundle bytes",
        &update_settings("k.iso"),
    )
    .unwrap();
    assert!(warnings.iter().any(|w| w.contains("injection_legacy")));
    assert!(fs::read(stick.join("k.iso")).unwrap() == fs::read(&iso).unwrap());
    assert_eq!(
        fs::read(stick.join("keys.tar.gz")).unwrap(),
        b"bundle bytes"
    );
    assert_eq!(fs::read(stick.join("other.iso")).unwrap(), b"not ours");
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(stick.join("ventoy/ventoy.json")).unwrap()).unwrap();
    assert_eq!(v["menu_alias"][0]["alias"], "O");
    assert_eq!(v["injection"].as_array().unwrap().len(), 1);
    assert_eq!(v["injection"][0]["archive"], "/keys.tar.gz");
    let leftovers: Vec<_> = fs::read_dir(&stick)
        .unwrap()
        .chain(fs::read_dir(stick.join("ventoy")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".keypack-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A ventoy.json that is not JSON is refused, and nothing is copied.
    fs::write(stick.join("ventoy/ventoy.json"), b"{ // no comments\n}").unwrap();
    fs::remove_file(stick.join("keys.tar.gz")).unwrap();
    let e = update_dir(&stick, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ventoy.json"), "{e}");
    assert!(!stick.join("keys.tar.gz").exists());
}

#[test]
fn update_image_refuses_non_ventoy_disks_without_writing() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    // Zeros; then a valid image with partition 1 moved; then one with the signature broken.
    let zeros = tmp.path().join("zeros.img");
    fs::write(&zeros, vec![0u8; 40 << 20]).unwrap();
    let e = update_image(&zeros, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a Ventoy disk"), "{e}");

    let good = tmp.path().join("good.img");
    build_seeded(b"x", &iso, &good, 4);
    let mut bytes = fs::read(&good).unwrap();
    bytes[0x1C6..0x1CA].copy_from_slice(&4096u32.to_le_bytes());
    let moved = tmp.path().join("moved.img");
    fs::write(&moved, &bytes).unwrap();
    let e = update_image(&moved, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("check 2"), "{e}");
    assert!(fs::read(&moved).unwrap() == bytes);

    let mut bytes = fs::read(&good).unwrap();
    bytes[0x195] ^= 0xFF;
    let unsigned = tmp.path().join("unsigned.img");
    fs::write(&unsigned, &bytes).unwrap();
    let e = update_image(&unsigned, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("check 5"), "{e}");

    // Partition 2 without the VTOYEFI label.
    let mut bytes = fs::read(&good).unwrap();
    let p2 = u32::from_le_bytes(bytes[0x1D6..0x1DA].try_into().unwrap()) as usize * 512;
    bytes[p2 + 0x2B..p2 + 0x2B + 7].copy_from_slice(b"NOTVTOY");
    let unlabelled = tmp.path().join("unlabelled.img");
    fs::write(&unlabelled, &bytes).unwrap();
    let e = update_image(&unlabelled, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("check 4"), "{e}");
}

/// A stick whose partition 2 says (grub/grub.cfg) Ventoy 1.0.15 predates the injection plugin:
/// `update_image` refuses it, naming the version, and changes nothing; 1.0.16 is updated.
#[test]
fn update_image_refuses_a_stick_older_than_1_0_16() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let good = tmp.path().join("good.img");
    build_seeded(b"x", &iso, &good, 4);
    let with_version = |v: &str| {
        let mut bytes = fs::read(&good).unwrap();
        let needle = format!("set VENTOY_VERSION=\"{VERSION}\"");
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("grub.cfg on partition 2");
        let new = format!("set VENTOY_VERSION=\"{v}\"");
        assert_eq!(new.len(), needle.len());
        bytes[at..at + new.len()].copy_from_slice(new.as_bytes());
        let p = tmp.path().join(format!("v{v}.img"));
        fs::write(&p, &bytes).unwrap();
        (p, bytes)
    };
    let (old, bytes) = with_version("1.0.15");
    assert_eq!(
        keypack_media_ventoy::inspect(&old)
            .unwrap()
            .version
            .as_deref(),
        Some("1.0.15")
    );
    let e = update_image(&old, &iso, "k.iso", b"x", &update_settings("k.iso"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Ventoy 1.0.15 is older than 1.0.16") && e.contains("injection"),
        "{e}"
    );
    assert!(
        fs::read(&old).unwrap() == bytes,
        "a refused stick is not changed"
    );
    let (ok, _) = with_version("1.0.16");
    update_image(&ok, &iso, "k.iso", b"y", &update_settings("k.iso")).expect("1.0.16 is updated");
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Keys written into an existing 0644 image (same inode) leave it 0600.
#[test]
fn keys_only_rebuild_makes_an_0644_image_private() {
    use std::os::unix::fs::MetadataExt;
    let t = private_tmp();
    let iso = fake_iso(t.path(), "k.iso", 1 << 20);
    let out = t.path().join("disk.img");
    let state = t.path().join("state");
    fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let a = ventoy_args();
    let opts = |_: &Path| BuildOptions {
        args: &a,
        iso: &iso,
        output: &out,
        state_dir: Some(&state),
        seed: Some(4),
        ignore_cache: false,
    };
    build_image(b"first bundle", &opts(&out)).expect("full build");
    chmod(&out, 0o644);
    let ino = fs::metadata(&out).unwrap().ino();
    let mode = build_image(b"second bundle", &opts(&out)).expect("keys-only build");
    assert!(
        matches!(mode, keypack_media_ventoy::BuildMode::KeysOnly),
        "expected a keys-only rebuild"
    );
    assert_eq!(fs::metadata(&out).unwrap().ino(), ino, "same inode");
    assert_eq!(mode_of(&out), 0o600);
}

/// `update_image` into an existing 0644 image leaves it 0600.
#[test]
fn update_image_makes_an_0644_image_private() {
    let t = private_tmp();
    let iso = fake_iso(t.path(), "k.iso", 1 << 20);
    let out = t.path().join("disk.img");
    build_seeded(b"first bundle", &iso, &out, 4);
    chmod(&out, 0o644);
    update_image(
        &out,
        &iso,
        "k.iso",
        b"second bundle",
        &update_settings("k.iso"),
    )
    .expect("update");
    assert_eq!(mode_of(&out), 0o600);
}
