//! Lost clusters (security finding #4): `media update --image` killed between the
//! directory-entry switch and the wipe of the old clusters leaves the previous bundle allocated
//! and unreachable. `inspect` must report it, and the next complete update must zero and free
//! it, so that a key removed from the bundle is gone from the whole image.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;
use keypack_media_ventoy::{fat, inspect, update_image};

fn lost_of(img: &Path) -> (u64, Vec<String>) {
    let info = inspect(img).expect("inspect");
    let lost = info.lost.expect("a FAT32 data partition is checked");
    assert_eq!(lost.bytes % 512, 0);
    assert!(lost.clusters == 0 || lost.bytes >= lost.clusters * 512);
    (lost.clusters, info.problems.clone())
}

/// Child-process half of `killed_update_leaves_no_removed_key_after_the_next_update`.
#[test]
#[ignore = "run by killed_update_leaves_no_removed_key_after_the_next_update in a child process"]
fn helper_update() {
    let img = std::env::var("KEYPACK_TEST_IMG").expect("set by the parent test");
    let iso = std::env::var("KEYPACK_TEST_ISO").unwrap();
    let bundle = fs::read(std::env::var("KEYPACK_TEST_BUNDLE").unwrap()).unwrap();
    update_image(
        Path::new(&img),
        Path::new(&iso),
        "k.iso",
        &bundle,
        &update_settings("k.iso"),
    )
    .unwrap();
}

/// `media update --image` replacing a bundle (old key removed), killed at each step of the
/// keys-only switch; then a complete update with the same new bundle (the "unchanged" path of
/// the switch, which writes nothing but the wipe) and one with a third bundle. Afterwards the
/// removed key's marker is nowhere in the image, `inspect` reports no lost clusters and
/// `fsck.fat -n` is clean.
#[test]
fn killed_update_leaves_no_removed_key_after_the_next_update() {
    let test = "killed_update_leaves_no_removed_key_after_the_next_update";
    if !have_tools(test, &["mtype", "fsck.fat"]) {
        return;
    }
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let removed = marker("REMOVED");
    let kept = marker("KEPT");
    let old = bundle_with(&removed, 2000);
    let new = bundle_with(&kept, 1500);
    assert!(!contains(&new, &removed));
    let base = tmp.path().join("base.img");
    build_seeded(&old, &iso, &base, 4);
    assert!(contains(&fs::read(&base).unwrap(), &removed));
    // A fresh image has no lost clusters: the walk reaches every file, including the long
    // names and /ventoy/ventoy.json in a subfolder.
    assert_eq!(lost_of(&base), (0, vec![]), "fresh image");
    let new_path = tmp.path().join("new.bin");
    fs::write(&new_path, &new).unwrap();
    for (step, final_bundle) in [
        // The finding's case first: killed between the entry switch and the wipe.
        ("entry", "same"),
        ("entry", "third"),
        ("chain", "same"),
        ("wipe", "same"),
    ] {
        let tag = format!("{step}-{final_bundle}");
        let img = tmp.path().join(format!("{tag}.img"));
        fs::copy(&base, &img).unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "helper_update", "--nocapture"])
            .env("KEYPACK_TEST_IMG", &img)
            .env("KEYPACK_TEST_ISO", &iso)
            .env("KEYPACK_TEST_BUNDLE", &new_path)
            .env("KEYPACK_VENTOY_CRASH_AFTER", step)
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "{tag}: the helper must abort at {step}");
        // (a) inspect reports the lost clusters, and fsck.fat counts the same ones.
        let (lost, problems) = lost_of(&img);
        assert!(lost > 0, "{tag}: inspect reports no lost clusters");
        assert!(
            problems.iter().any(|p| p.contains("lost clusters")),
            "{tag}: {problems:?}"
        );
        let (_, report) = fsck_p1(&img, tmp.path(), &tag);
        assert!(
            report.contains(&format!("Reclaimed {lost} unused clusters")),
            "{tag}: inspect found {lost} lost clusters, fsck.fat: {report}"
        );
        // (b) Killed right after the entry switch, the removed key is still on the image,
        // unreachable: what makes this test able to fail.
        let bytes = fs::read(&img).unwrap();
        if step == "entry" {
            assert!(
                mtype(&img, "/keys.tar.gz") == new,
                "{tag}: the new bundle is in place"
            );
            assert!(
                contains(&bytes, &removed),
                "{tag}: the old clusters were wiped already"
            );
        }
        // The complete update.
        let final_bytes = if final_bundle == "same" {
            new.clone()
        } else {
            bundle_with(&marker("THIRD"), 1700)
        };
        update_image(&img, &iso, "k.iso", &final_bytes, &update_settings("k.iso"))
            .expect("complete update");
        let bytes = fs::read(&img).unwrap();
        assert!(
            !contains(&bytes, &removed),
            "{tag}: the removed key is still on the image after a complete update"
        );
        if final_bundle == "third" {
            assert!(
                !contains(&bytes, &kept),
                "{tag}: the replaced key is still on the image"
            );
        }
        assert!(mtype(&img, "/keys.tar.gz") == final_bytes, "{tag}: bundle");
        assert!(
            mtype(&img, "/k.iso") == fs::read(&iso).unwrap(),
            "{tag}: iso"
        );
        assert_eq!(
            lost_of(&img),
            (0, vec![]),
            "{tag}: after the complete update"
        );
        let (ok, report) = fsck_p1(&img, tmp.path(), &tag);
        assert!(
            ok && !report.contains("unused clusters"),
            "{tag}: fsck.fat: {report}"
        );
    }
}

/// Hostile and odd FATs: a lost chain that loops, a file whose chain loops back into itself,
/// and a folder entry pointing at the root folder. The scan terminates, counts only the
/// looping lost chain, and the wipe zeroes and frees exactly that.
#[test]
fn lost_cluster_scan_terminates_on_loops_and_wipes_only_lost_clusters() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let secret = marker("LOOPED");
    let bundle = bundle_with(&secret, 2000);
    let img = tmp.path().join("loop.img");
    build_seeded(&bundle, &iso, &img, 4);
    let v = verify(&fs::read(&img).unwrap(), fixture()).unwrap();
    let off = v.p1.0 * 512;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let bpb = fat::Bpb::read(&f, off).unwrap().expect("FAT32");
    let fat_at =
        |n: u64, c: u32| off + (bpb.reserved + n * bpb.fat_sectors) * bpb.bps + 4 * c as u64;
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
    // The bundle's clusters: where its bytes start on the image.
    let bytes = fs::read(&img).unwrap();
    let at = bytes
        .windows(bundle.len())
        .position(|w| w == bundle.as_slice())
        .unwrap() as u64;
    let first = ((at - off - bpb.meta_len()) / bpb.cluster) as u32 + 2;
    let mut chain = vec![first];
    while get(*chain.last().unwrap()) < 0x0FFF_FFF8 {
        chain.push(get(*chain.last().unwrap()));
    }
    assert!(chain.len() >= 2, "the bundle spans several clusters");
    // 1. The bundle's last cluster points back at its first: a loop inside a reachable file.
    set(*chain.last().unwrap(), first);
    // 2. Two free clusters chained into a loop, holding a copy of the secret: lost.
    let free: Vec<u32> = (2..bpb.clusters + 2)
        .filter(|&c| get(c) == 0)
        .take(2)
        .collect();
    set(free[0], free[1]);
    set(free[1], free[0]);
    for &c in &free {
        f.write_all_at(&bundle[..bpb.cluster as usize], off + bpb.cluster_offset(c))
            .unwrap();
    }
    // 3. A folder entry in the root pointing at the root folder itself.
    let root = off + bpb.cluster_offset(bpb.root_cluster);
    let mut dir = vec![0u8; bpb.cluster as usize];
    f.read_exact_at(&mut dir, root).unwrap();
    let slot = dir.chunks_exact(32).position(|e| e[0] == 0).unwrap();
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(b"LOOPDIR    ");
    e[11] = 0x10;
    e[20..22].copy_from_slice(&((bpb.root_cluster >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(bpb.root_cluster as u16).to_le_bytes());
    f.write_all_at(&e, root + slot as u64 * 32).unwrap();
    f.sync_all().unwrap();

    let (lost, problems) = lost_of(&img);
    assert_eq!(lost, 2, "{problems:?}");
    assert_eq!(
        fat::wipe_lost_clusters(&f, &img, off).unwrap(),
        Some(2),
        "wiped"
    );
    assert_eq!(get(free[0]), 0);
    assert_eq!(get(free[1]), 0);
    let bytes = fs::read(&img).unwrap();
    for &c in &free {
        let o = (off + bpb.cluster_offset(c)) as usize;
        assert!(bytes[o..o + bpb.cluster as usize].iter().all(|&b| b == 0));
    }
    // The looping file is reachable: its clusters are untouched.
    assert!(contains(&bytes, &bundle), "a reachable file was wiped");
    assert_eq!(lost_of(&img).0, 0);
}

/// Folders and long names written by another tool (mtools), two levels deep and spanning
/// several clusters: none of it counts as lost, and an update leaves it intact.
#[test]
fn files_in_nested_folders_of_another_writer_are_not_lost() {
    let test = "files_in_nested_folders_of_another_writer_are_not_lost";
    if !have_tools(test, &["mtype", "mmd", "mcopy", "fsck.fat"]) {
        return;
    }
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let img = tmp.path().join("user.img");
    build_seeded(&bundle_with(&marker("USER"), 500), &iso, &img, 4);
    let spec = format!("{}@@1M", img.display());
    let mtools = |args: &[&str]| {
        let (ok, out) = run(Command::new(args[0])
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &spec])
            .args(&args[1..]));
        assert!(ok, "{args:?}: {out}");
    };
    mtools(&["mmd", "::/User Files"]);
    mtools(&["mmd", "::/User Files/Second level folder"]);
    let user = fake_iso(tmp.path(), "a user's rather long file name.bin", 300_000);
    let user_bytes = fs::read(&user).unwrap();
    let mut names = Vec::new();
    // Enough entries with long names to need more than one cluster of folder.
    for i in 0..40 {
        let name = format!("::/User Files/Second level folder/long file name number {i:02}.bin");
        mtools(&["mcopy", user.to_str().unwrap(), &name]);
        names.push(name);
    }
    assert_eq!(lost_of(&img), (0, vec![]), "before the update");
    update_image(
        &img,
        &iso,
        "k.iso",
        b"new bundle",
        &update_settings("k.iso"),
    )
    .expect("update");
    assert_eq!(lost_of(&img), (0, vec![]), "after the update");
    for name in &names {
        assert!(
            mtype(&img, name.trim_start_matches("::")) == user_bytes,
            "{name} changed"
        );
    }
    let (ok, report) = fsck_p1(&img, tmp.path(), "user");
    assert!(ok, "fsck.fat: {report}");
}
