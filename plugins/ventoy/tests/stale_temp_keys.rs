//! A bundle under the temp name `/.keypack-tmp-keys`: `media update --image` killed while it
//! writes a new bundle leaves one there, and an older keypack's `fatfs` write could leave one
//! whose FAT chain was never written. The next complete update must leave none of that
//! bundle's bytes anywhere in the image: not in the file, not in clusters it freed.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;
use keypack_media_ventoy::{fat, inspect, update_image};

fn mtools(img: &Path, args: &[&str]) -> (bool, String) {
    let spec = format!("{}@@1M", img.display());
    run(Command::new(args[0])
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &spec])
        .args(&args[1..]))
}

/// After a complete update with `final_bundle`: no byte run of `gone` on the image, the bundle
/// in place, no temp file, no lost clusters, `fsck.fat -n` clean.
fn assert_clean(img: &Path, tmp: &Path, tag: &str, gone: &[u8], final_bundle: &[u8]) {
    let bytes = fs::read(img).unwrap();
    assert!(
        !contains(&bytes, gone),
        "{tag}: the earlier run's bundle is still on the image"
    );
    assert!(
        mtype(img, "/keys.tar.gz") == final_bundle,
        "{tag}: the new bundle is not in place"
    );
    let info = inspect(img).expect("inspect");
    assert!(
        !info
            .files
            .iter()
            .any(|f| f.path.eq_ignore_ascii_case("/.keypack-tmp-keys")),
        "{tag}: the temp file is left: {:?}",
        info.files
    );
    assert_eq!(
        info.lost.map(|l| l.clusters),
        Some(0),
        "{tag}: lost clusters"
    );
    let (ok, report) = fsck_p1(img, tmp, tag);
    assert!(
        ok && !report.contains("unused clusters"),
        "{tag}: fsck.fat: {report}"
    );
}

/// Child-process half of `killed_while_writing_the_temp_bundle_then_updated`.
#[test]
#[ignore = "run by killed_while_writing_the_temp_bundle_then_updated in a child process"]
fn helper_temp_update() {
    let img = std::env::var("KEYPACK_TEST_IMG").expect("set by the parent test");
    let iso = std::env::var("KEYPACK_TEST_ISO").expect("set by the parent test");
    let bundle = fs::read(std::env::var("KEYPACK_TEST_BUNDLE").expect("set by the parent test"))
        .expect("bundle file");
    update_image(
        Path::new(&img),
        Path::new(&iso),
        "k.iso",
        &bundle,
        &update_settings("k.iso"),
    )
    .expect("update");
}

/// A stick without `keys.tar.gz` (the user deleted it): `media update --image` writes the
/// bundle under the temp name first. Killed at each step of that write, then a complete update
/// with a different bundle: the killed run's bundle is nowhere in the image.
#[test]
fn killed_while_writing_the_temp_bundle_then_updated() {
    let test = "killed_while_writing_the_temp_bundle_then_updated";
    if !have_tools(test, &["mtype", "mdel", "fsck.fat"]) {
        return;
    }
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 16 << 10);
    let base = tmp.path().join("base.img");
    build_seeded(&bundle_with(&marker("BASE"), 100), &iso, &base, 9);
    let (ok, out) = mtools(&base, &["mdel", "::/keys.tar.gz"]);
    assert!(ok, "mdel: {out}");
    let killed_marker = marker("KILLED");
    // Larger than the final bundle and the ISO together, so that a later write landing in the
    // same clusters cannot hide a missing wipe.
    let killed = bundle_with(&killed_marker, 3000);
    let killed_path = tmp.path().join("killed.bin");
    fs::write(&killed_path, &killed).unwrap();
    for step in ["chain", "data", "entry", "tmp-keys"] {
        let img = tmp.path().join(format!("{step}.img"));
        fs::copy(&base, &img).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "helper_temp_update", "--nocapture"])
            .env("KEYPACK_TEST_IMG", &img)
            .env("KEYPACK_TEST_ISO", &iso)
            .env("KEYPACK_TEST_BUNDLE", &killed_path)
            .env("KEYPACK_VENTOY_CRASH_AFTER", step)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{step}: the helper must abort");
        // The killed run got its bundle onto the image (from "data" on): what makes the final
        // assertion able to fail.
        if step != "chain" {
            assert!(
                contains(&fs::read(&img).unwrap(), &killed_marker),
                "{step}: the killed run wrote no bundle"
            );
        }
        if step == "tmp-keys" {
            assert!(
                mtype(&img, "/.keypack-tmp-keys") == killed,
                "{step}: temp file"
            );
        }
        let final_bundle = bundle_with(&marker("FINAL"), 20);
        update_image(
            &img,
            &iso,
            "k.iso",
            &final_bundle,
            &update_settings("k.iso"),
        )
        .expect("complete update");
        assert_clean(&img, tmp.path(), step, &killed_marker, &final_bundle);
    }
}

/// A stale `/.keypack-tmp-keys` beside an existing `keys.tar.gz`, left by an older keypack
/// killed inside `fatfs`: its directory entry has the size and first cluster, but the FAT has
/// only the first cluster (the rest of the chain was never written). The update zeroes the
/// whole file, including the clusters its FAT chain no longer names.
#[test]
fn stale_temp_bundle_with_a_broken_chain_is_zeroed() {
    let test = "stale_temp_bundle_with_a_broken_chain_is_zeroed";
    if !have_tools(test, &["mtype", "mcopy", "fsck.fat"]) {
        return;
    }
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 16 << 10);
    let img = tmp.path().join("stale.img");
    build_seeded(&bundle_with(&marker("BASE"), 100), &iso, &img, 9);
    let stale_marker = marker("STALE");
    let stale = bundle_with(&stale_marker, 3000);
    let stale_path = tmp.path().join("stale.bin");
    fs::write(&stale_path, &stale).unwrap();
    let (ok, out) = mtools(
        &img,
        &[
            "mcopy",
            stale_path.to_str().unwrap(),
            "::/.keypack-tmp-keys",
        ],
    );
    assert!(ok, "mcopy: {out}");
    // Cut the chain after its first cluster: mark the rest free, as if the FAT write never
    // happened.
    let v = verify(&fs::read(&img).unwrap(), fixture()).unwrap();
    let off = v.p1.0 * 512;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let bpb = fat::Bpb::read(&f, off).unwrap().expect("FAT32");
    let fat_at =
        |n: u64, c: u32| off + (bpb.reserved + n * bpb.fat_sectors) * bpb.bps + 4 * u64::from(c);
    let get = |c: u32| {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, fat_at(0, c)).unwrap();
        u32::from_le_bytes(b) & 0x0FFF_FFFF
    };
    let set = |c: u32, v: u32| {
        for n in 0..bpb.fats {
            f.write_all_at(&v.to_le_bytes(), fat_at(n, c)).unwrap();
        }
    };
    let bytes = fs::read(&img).unwrap();
    let at = bytes
        .windows(stale.len())
        .position(|w| w == stale.as_slice())
        .expect("mcopy wrote the file contiguously") as u64;
    let first = ((at - off - bpb.meta_len()) / bpb.cluster) as u32 + 2;
    let mut chain = vec![first];
    while get(*chain.last().unwrap()) < 0x0FFF_FFF8 {
        chain.push(get(*chain.last().unwrap()));
    }
    assert!(chain.len() > 10, "the stale bundle spans many clusters");
    set(first, 0x0FFF_FFFF);
    for &c in &chain[1..] {
        set(c, 0);
    }
    f.sync_all().unwrap();
    let final_bundle = bundle_with(&marker("FINAL"), 20);
    update_image(
        &img,
        &iso,
        "k.iso",
        &final_bundle,
        &update_settings("k.iso"),
    )
    .expect("update");
    assert_clean(
        &img,
        tmp.path(),
        "broken-chain",
        &stale_marker,
        &final_bundle,
    );
}

/// `media update --mount`: the bundle a rename replaces, and a stale temp bundle, are zeroed
/// in place before their blocks are freed. Seen through a second hard link to each, which
/// keeps the inode (and so its blocks) alive after the update unlinked it.
#[test]
fn mount_update_zeroes_the_replaced_and_the_stale_bundle() {
    let tmp = private_tmp();
    let stick = tmp.path().join("stick");
    fs::create_dir(&stick).unwrap();
    let iso = fake_iso(tmp.path(), "k.iso", 16 << 10);
    let old_marker = marker("OLD");
    let stale_marker = marker("STALE");
    let old = bundle_with(&old_marker, 50);
    let stale = bundle_with(&stale_marker, 50);
    fs::write(stick.join("keys.tar.gz"), &old).unwrap();
    fs::write(stick.join(".keypack-tmp-keys.tar.gz"), &stale).unwrap();
    let links = tmp.path().join("links");
    fs::create_dir(&links).unwrap();
    fs::hard_link(stick.join("keys.tar.gz"), links.join("old")).unwrap();
    fs::hard_link(stick.join(".keypack-tmp-keys.tar.gz"), links.join("stale")).unwrap();
    let new = bundle_with(&marker("NEW"), 50);
    keypack_media_ventoy::update_dir(&stick, &iso, "k.iso", &new, &update_settings("k.iso"))
        .expect("update");
    assert_eq!(fs::read(stick.join("keys.tar.gz")).unwrap(), new);
    assert!(!stick.join(".keypack-tmp-keys.tar.gz").exists());
    for (name, len) in [("old", old.len()), ("stale", stale.len())] {
        let bytes = fs::read(links.join(name)).unwrap();
        assert_eq!(bytes.len(), len, "{name}: zeroed in place, not truncated");
        assert!(
            bytes.iter().all(|&b| b == 0),
            "{name}: the bundle is still there"
        );
    }
}
