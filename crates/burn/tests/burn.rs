//! The burn on keypack-built Ventoy images (FAT32 and exFAT, MBR and GPT), checked from
//! outside: `fsck.fat -n` / `fsck.exfat -n`, mtools, a byte scan of the whole image for the
//! archive and the key text, and `ventoy.json` parsed again.

#[path = "../../../plugins/ventoy/tests/common/mod.rs"]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use keypack_burn::{Stop, burn_disk};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A real `keys.tar.gz` shape: a fake private key whose every line holds `marker` (stored, not
/// compressed, so the key text is on the image byte for byte) and the burn mark.
fn marked_bundle(marker: &[u8], token: &str) -> Vec<u8> {
    let mut key = b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec();
    for i in 0..2000 {
        key.extend_from_slice(marker);
        key.extend_from_slice(format!("-{i:06}\n").as_bytes());
    }
    key.extend_from_slice(b"-----END OPENSSH PRIVATE KEY-----\n");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    for (path, data, mode) in [
        ("etc/ssh/ssh_host_ed25519_key", key.clone(), 0o600),
        (
            "keypack/burn-after-boot",
            format!("{token}\n").into_bytes(),
            0o644,
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, &data[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

struct Case {
    tmp: tempfile::TempDir,
    img: PathBuf,
    iso: PathBuf,
    archive: Vec<u8>,
    marker: Vec<u8>,
}

fn build(tag: &str, exfat: bool, gpt: bool) -> Case {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 3 << 20);
    let marker = marker(tag);
    let archive = marked_bundle(&marker, TOKEN);
    let img = tmp.path().join("v.img");
    let mut a = ventoy_args();
    a.exfat = exfat;
    a.gpt = gpt;
    keypack_media_ventoy::build_image(
        &archive,
        &keypack_media_ventoy::BuildOptions {
            args: &a,
            iso: &iso,
            output: &img,
            state_dir: None,
            seed: Some(7),
            ignore_cache: false,
        },
    )
    .expect("build");
    Case {
        tmp,
        img,
        iso,
        archive,
        marker,
    }
}

fn burn(
    img: &Path,
    token: &str,
    stop: Option<&str>,
) -> (
    Result<Option<keypack_burn::Burned>, keypack_burn::BurnError>,
    Vec<String>,
) {
    let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut lines = Vec::new();
    let r = burn_disk(&f, "v.img", token, Stop(stop), &mut |l| {
        lines.push(l.to_string())
    });
    (r, lines)
}

fn data_part(img: &Path) -> (u64, u64) {
    verify(&fs::read(img).unwrap(), fixture()).unwrap().p1
}

/// fsck of partition 1: (clean, report).
fn fsck(img: &Path, tmp: &Path, exfat: bool, repair: bool) -> (bool, String) {
    let (start, len) = data_part(img);
    let part = tmp.join("p1");
    carve(img, start, len, &part);
    let tool = if exfat { "fsck.exfat" } else { "fsck.fat" };
    let flag = if repair {
        if exfat { "-y" } else { "-a" }
    } else {
        "-n"
    };
    let out = run(Command::new(tool).arg(flag).arg(&part));
    if repair {
        // Write the repaired partition back.
        let bytes = fs::read(&part).unwrap();
        let f = OpenOptions::new().write(true).open(img).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&bytes, start * 512).unwrap();
    }
    let _ = fs::remove_file(&part);
    out
}

fn json_of(img: &Path, exfat: bool) -> serde_json::Value {
    let bytes = if exfat {
        exfat_file(img, "/ventoy/ventoy.json")
    } else {
        mtype(img, "/ventoy/ventoy.json")
    };
    serde_json::from_slice(&bytes).expect("ventoy.json parses")
}

/// A file of an exFAT data partition through the ventoy plugin's reader (a second reader,
/// not the burn's).
fn exfat_file(img: &Path, path: &str) -> Vec<u8> {
    let info = keypack_media_ventoy::inspect(img).expect("inspect");
    assert_eq!(info.data_fs.as_deref(), Ok("exFAT"));
    let _ = path;
    serde_json::to_vec(info.json.expect("ventoy.json").as_ref().expect("parses")).unwrap()
}

fn has(img: &Path, needle: &[u8]) -> bool {
    memchr::memmem::find(&fs::read(img).unwrap(), needle).is_some()
}

fn check_burned(c: &Case, exfat: bool) {
    // No bundle bytes anywhere on the image: neither the archive (any 64 bytes of it) nor the
    // key text.
    let bytes = fs::read(&c.img).unwrap();
    assert!(
        memchr::memmem::find(&bytes, &c.marker).is_none(),
        "key text still on the image"
    );
    for at in (0..c.archive.len().saturating_sub(64)).step_by(4096) {
        assert!(
            memchr::memmem::find(&bytes, &c.archive[at..at + 64]).is_none(),
            "archive bytes at {at} still on the image"
        );
    }
    let (clean, report) = fsck(&c.img, c.tmp.path(), exfat, false);
    assert!(clean, "fsck not clean after the burn: {report}");
    let v = json_of(&c.img, exfat);
    let inj = v["injection"].as_array().expect("injection array");
    assert!(
        inj.is_empty(),
        "keypack's injection entry is still there: {v}"
    );
    assert_eq!(
        v["control"][0]["VTOY_DEFAULT_IMAGE"], "/k.iso",
        "control entries stay"
    );
    // The ISO is untouched.
    let iso = fs::read(&c.iso).unwrap();
    if exfat {
        assert!(memchr::memmem::find(&bytes, &iso).is_some(), "ISO changed");
    } else {
        assert!(mtype(&c.img, "/k.iso") == iso, "ISO changed");
    }
    // The layout (partition 2, MBR/GPT) is untouched.
    verify(&bytes, fixture()).expect("Ventoy layout intact");
}

fn burn_and_check(tag: &str, exfat: bool, gpt: bool) {
    let tool = if exfat { "fsck.exfat" } else { "fsck.fat" };
    if !have_tools(tag, &["mtype", tool]) {
        return;
    }
    let c = build(tag, exfat, gpt);
    assert!(
        has(&c.img, &c.marker),
        "the test bundle is on the image before the burn"
    );
    let (clean, report) = fsck(&c.img, c.tmp.path(), exfat, false);
    assert!(clean, "fsck before: {report}");
    let (r, lines) = burn(&c.img, TOKEN, None);
    let burned = r.expect("burn").expect("found the bundle");
    assert_eq!(burned.archives.len(), 1);
    assert_eq!(burned.archives[0].0, "/keys.tar.gz");
    assert_eq!(burned.entries, 1);
    assert_eq!(burned.fs, if exfat { "exFAT" } else { "FAT32" });
    assert!(
        lines
            .iter()
            .any(|l| l.contains("overwrote /keys.tar.gz with zeros")),
        "{lines:?}"
    );
    check_burned(&c, exfat);
    // A second burn finds nothing.
    let before = fs::read(&c.img).unwrap();
    let (r, _) = burn(&c.img, TOKEN, None);
    assert!(r.expect("second burn").is_none());
    assert!(
        fs::read(&c.img).unwrap() == before,
        "a burn with nothing to do wrote"
    );
}

#[test]
fn burns_fat32_mbr() {
    burn_and_check("burns_fat32_mbr", false, false);
}

#[test]
fn burns_fat32_gpt() {
    burn_and_check("burns_fat32_gpt", false, true);
}

#[test]
fn burns_exfat_mbr() {
    burn_and_check("burns_exfat_mbr", true, false);
}

#[test]
fn burns_exfat_gpt() {
    burn_and_check("burns_exfat_gpt", true, true);
}

#[test]
fn another_mark_is_left_alone() {
    let c = build("another_mark", false, false);
    let before = fs::read(&c.img).unwrap();
    let (r, lines) = burn(&c.img, "ffffffffffffffffffffffffffffffff", None);
    assert!(r.expect("burn").is_none());
    assert!(
        lines.iter().any(|l| l.contains("no bundle with this mark")),
        "{lines:?}"
    );
    assert!(fs::read(&c.img).unwrap() == before, "image changed");
}

#[test]
fn not_a_ventoy_disk_is_left_alone() {
    let tmp = private_tmp();
    let p = tmp.path().join("plain.img");
    let mut f = File::create(&p).unwrap();
    f.write_all(&vec![0u8; 4 << 20]).unwrap();
    let (r, lines) = burn(&p, TOKEN, None);
    assert!(r.expect("burn").is_none());
    assert!(lines.is_empty());
}

/// Stopping after each step (as a power cut after that step's sync would) leaves a file
/// system fsck can repair without loss: no shared or bad clusters, no truncated file, and the
/// bundle either whole (still there) or zero (gone); the ISO intact.
fn interrupted(tag: &str, exfat: bool) {
    let tool = if exfat { "fsck.exfat" } else { "fsck.fat" };
    if !have_tools(tag, &["mtype", tool]) {
        return;
    }
    let base = build(tag, exfat, false);
    // `lost` is reached only when there are lost clusters: its own test below.
    for step in keypack_burn::STEPS.iter().filter(|s| **s != "lost") {
        let img = base.tmp.path().join(format!("{step}.img"));
        fs::copy(&base.img, &img).unwrap();
        let (r, _) = burn(&img, TOKEN, Some(step));
        assert!(
            matches!(r, Err(keypack_burn::BurnError::Stopped { .. })),
            "{step}: {r:?}"
        );
        let bundle_whole = has(&img, &base.marker);
        let json_switched =
            step.starts_with("json-") && *step != "json-chain" && *step != "json-data"
                || !step.starts_with("json-");
        assert_eq!(
            bundle_whole,
            step.starts_with("json-"),
            "{step}: bundle on the image"
        );
        let (_, report) = fsck(&img, base.tmp.path(), exfat, false);
        for line in report.lines() {
            assert!(
                !line.contains("share clusters")
                    && !line.contains("Bad")
                    && !line.contains("truncat")
                    && !line.contains("cross"),
                "{step}: {tool}: {report}"
            );
        }
        if !exfat {
            let iso = fs::read(&base.iso).unwrap();
            assert!(mtype(&img, "/k.iso") == iso, "{step}: ISO changed");
        }
        let v = json_of(&img, exfat);
        let inj = v["injection"].as_array().expect("injection").len();
        assert_eq!(inj == 0, json_switched, "{step}: ventoy.json {v}");
        let (ok, report) = fsck(&img, base.tmp.path(), exfat, true);
        let _ = ok;
        let (ok, again) = fsck(&img, base.tmp.path(), exfat, false);
        assert!(ok, "{step}: not clean after repair: {report}\n{again}");
    }
}

#[test]
fn interrupted_fat32_burn_is_repairable() {
    interrupted("interrupted_fat32", false);
}

#[test]
fn interrupted_exfat_burn_is_repairable() {
    interrupted("interrupted_exfat", true);
}

/// A burned stick is refreshed with `media update --image` (the same call `keypack media
/// update` makes): the bundle and the injection entry are back, fsck clean.
#[test]
fn burned_stick_is_refreshed_by_media_update() {
    if !have_tools("refreshed", &["mtype", "fsck.fat"]) {
        return;
    }
    let c = build("refreshed", false, false);
    let (r, _) = burn(&c.img, TOKEN, None);
    r.expect("burn").expect("burned");
    let fresh = marked_bundle(b"FRESH-KEY-TEXT", "fedcba9876543210fedcba9876543210");
    keypack_media_ventoy::update_image(&c.img, &c.iso, "k.iso", &fresh, &update_settings("k.iso"))
        .expect("media update");
    assert!(mtype(&c.img, "/keys.tar.gz") == fresh);
    let v = json_of(&c.img, false);
    assert_eq!(v["injection"][0]["archive"], "/keys.tar.gz");
    assert_eq!(v["injection"][0]["image"], "/k.iso");
    let (clean, report) = fsck(&c.img, c.tmp.path(), false, false);
    assert!(clean, "{report}");
}

/// Child-process half of `the_burn_also_wipes_the_earlier_bundle_an_interrupted_update_left`:
/// a keys-only `media update --image` that aborts at the step `KEYPACK_VENTOY_CRASH_AFTER`.
#[test]
#[ignore = "run by the_burn_also_wipes_the_earlier_bundle_an_interrupted_update_left"]
fn helper_interrupted_update() {
    let img = std::env::var("KEYPACK_TEST_IMG").expect("set by the parent test");
    let iso = std::env::var("KEYPACK_TEST_ISO").unwrap();
    let bundle = fs::read(std::env::var("KEYPACK_TEST_BUNDLE").unwrap()).unwrap();
    keypack_media_ventoy::update_image(
        Path::new(&img),
        Path::new(&iso),
        "k.iso",
        &bundle,
        &update_settings("k.iso"),
    )
    .unwrap();
}

/// A keys-only update killed between the directory-entry switch and the wipe leaves the
/// earlier bundle in lost clusters (allocated, reached by no file). The burn removes the
/// current bundle and then zeroes and frees those clusters too: afterwards neither bundle's
/// key text is anywhere on the image, and `fsck.fat -n` finds nothing to reclaim. Stopped at
/// `lost` (zeroed, not yet freed), the earlier key is gone already and fsck repairs the rest.
#[test]
fn the_burn_also_wipes_the_earlier_bundle_an_interrupted_update_left() {
    const T: &str = "the_burn_also_wipes_the_earlier_bundle_an_interrupted_update_left";
    if !have_tools(T, &["mtype", "fsck.fat"]) {
        return;
    }
    let c = build("LOSTOLD", false, false);
    let newer_marker = marker("LOSTNEW");
    let newer = marked_bundle(&newer_marker, TOKEN);
    let newer_path = c.tmp.path().join("newer.tar.gz");
    fs::write(&newer_path, &newer).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_interrupted_update",
            "--nocapture",
        ])
        .env("KEYPACK_TEST_IMG", &c.img)
        .env("KEYPACK_TEST_ISO", &c.iso)
        .env("KEYPACK_TEST_BUNDLE", &newer_path)
        .env("KEYPACK_VENTOY_CRASH_AFTER", "entry")
        .output()
        .unwrap()
        .status;
    assert!(
        !status.success(),
        "the update must abort after the entry switch"
    );
    assert!(
        mtype(&c.img, "/keys.tar.gz") == newer,
        "the newer bundle is in place"
    );
    assert!(
        has(&c.img, &c.marker),
        "the earlier bundle is still on the image, unreachable (what makes this test able to fail)"
    );
    let (_, report) = fsck(&c.img, c.tmp.path(), false, false);
    assert!(
        report.contains("Reclaimed"),
        "fsck sees lost clusters: {report}"
    );

    let stopped = c.tmp.path().join("stopped.img");
    fs::copy(&c.img, &stopped).unwrap();

    let (r, lines) = burn(&c.img, TOKEN, None);
    r.expect("burn").expect("found the bundle");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lost cluster") && l.contains("earlier bundle")),
        "{lines:?}"
    );
    for m in [&c.marker, &newer_marker] {
        assert!(
            !has(&c.img, m),
            "key text still on the image after the burn"
        );
    }
    let (clean, report) = fsck(&c.img, c.tmp.path(), false, false);
    assert!(
        clean && !report.contains("Reclaimed"),
        "fsck after the burn: {report}"
    );
    assert!(
        mtype(&c.img, "/k.iso") == fs::read(&c.iso).unwrap(),
        "ISO changed"
    );

    let (r, _) = burn(&stopped, TOKEN, Some("lost"));
    assert!(
        matches!(r, Err(keypack_burn::BurnError::Stopped { .. })),
        "{r:?}"
    );
    assert!(
        !has(&stopped, &c.marker),
        "stopped after zeroing: the earlier key is gone"
    );
    fsck(&stopped, c.tmp.path(), false, true);
    let (clean, report) = fsck(&stopped, c.tmp.path(), false, false);
    assert!(clean, "not clean after repair: {report}");
}
