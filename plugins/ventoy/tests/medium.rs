//! The Ventoy medium built from synthetic release files, checked by an independent verifier and
//! by Debian tools (sfdisk, mtools, fsck.fat).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use keypack_media_ventoy::{BuildMode, BuildOptions, Ventoy, VentoyArgs, build_image};
use keypack_plugin::testing::{Check, check_medium_with};

fn args(gpt: bool) -> VentoyArgs {
    VentoyArgs {
        ventoy_dir: Some(fixture().dir.clone()),
        gpt,
        menu_timeout: 3,
        ..Default::default()
    }
}

fn build(
    archive: &[u8],
    iso: &Path,
    out: &Path,
    a: &VentoyArgs,
    seed: Option<u64>,
    state: Option<&Path>,
) -> BuildMode {
    build_image(
        archive,
        &BuildOptions {
            args: a,
            iso,
            output: out,
            state_dir: state,
            seed,
            ignore_cache: false,
        },
    )
    .expect("build")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

fn check_image_with_tools(test: &str, img: &Path, iso: &Path, archive: &[u8], gpt: bool) {
    let bytes = fs::read(img).unwrap();
    let v = verify(&bytes, fixture()).unwrap_or_else(|e| panic!("verifier: {e}"));
    assert_eq!(v.gpt, gpt);
    if !have_tools(test, &["sfdisk", "mdir", "mtype", "fsck.fat"]) {
        return;
    }
    // sfdisk agrees on the table.
    let (ok, text) = run(Command::new("sfdisk").arg("-d").arg(img));
    assert!(ok, "sfdisk -d: {text}");
    assert!(
        text.contains(&format!("start=        2048, size={:>12}", v.p1.1))
            || text.contains("start=2048")
            || text.contains("start=        2048"),
        "sfdisk: {text}"
    );
    assert!(
        text.contains(&format!("start={:>12}, size=       65536", v.p2.0)),
        "sfdisk partition 2: {text}"
    );
    if gpt {
        assert!(text.contains("label: gpt"), "{text}");
    } else {
        assert!(
            text.contains("label: dos") && text.contains("type=c, bootable"),
            "{text}"
        );
    }
    // mtools reads the data partition.
    let (ok, listing) = run(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &format!("{}@@1M", img.display()),
        "::/",
    ]));
    assert!(ok, "mdir: {listing}");
    let iso_name = iso.file_name().unwrap().to_str().unwrap();
    assert!(
        listing.contains(iso_name) && listing.contains("keys.tar.gz"),
        "{listing}"
    );
    // ISO and bundle are byte-identical to the inputs.
    assert!(
        mtype(img, &format!("/{iso_name}")) == fs::read(iso).unwrap(),
        "ISO differs"
    );
    assert!(mtype(img, "/keys.tar.gz") == archive, "bundle differs");
    // ventoy.json parses and every path it names exists.
    let json: serde_json::Value =
        serde_json::from_slice(&mtype(img, "/ventoy/ventoy.json")).unwrap();
    let mut named = Vec::new();
    for e in json["injection"].as_array().unwrap() {
        named.push(e["image"].as_str().unwrap().to_string());
        named.push(e["archive"].as_str().unwrap().to_string());
    }
    for c in json["control"].as_array().unwrap() {
        if let Some(p) = c.get("VTOY_DEFAULT_IMAGE") {
            named.push(p.as_str().unwrap().to_string());
        }
    }
    assert!(named.len() >= 3);
    for p in &named {
        assert!(p.starts_with('/'));
        let (ok, t) = run(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").args([
            "-i",
            &format!("{}@@1M", img.display()),
            &format!("::{p}"),
        ]));
        assert!(ok, "{p} named in ventoy.json is missing: {t}");
    }
    // fsck.fat on both carved partitions.
    let tmp = private_tmp();
    for (name, (start, len)) in [("p1", v.p1), ("p2", v.p2)] {
        let part = tmp.path().join(name);
        carve(img, start, len, &part);
        let (ok, t) = run(Command::new("fsck.fat").arg("-n").arg(&part));
        assert!(ok, "fsck.fat -n {name}: {t}");
        if name == "p1" {
            assert!(t.contains("FAT32") || !t.contains("FAT16"), "{t}");
        }
    }
}

#[test]
fn mbr_image_passes_verifier_and_debian_tools() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "keypack-nixos.iso", 3 << 20);
    let archive = random_bytes(3000);
    let out = tmp.path().join("ventoy.img");
    assert_eq!(
        build(&archive, &iso, &out, &args(false), None, None),
        BuildMode::Full
    );
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    check_image_with_tools(
        "mbr_image_passes_verifier_and_debian_tools",
        &out,
        &iso,
        &archive,
        false,
    );
}

#[test]
fn gpt_image_passes_verifier_and_debian_tools() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "nixos.iso", 2 << 20);
    let archive = random_bytes(5000);
    let out = tmp.path().join("ventoy.img");
    build(&archive, &iso, &out, &args(true), Some(7), None);
    check_image_with_tools(
        "gpt_image_passes_verifier_and_debian_tools",
        &out,
        &iso,
        &archive,
        true,
    );
    let info = keypack_media_ventoy::inspect(&out).unwrap();
    assert_eq!(info.found.style, keypack_media_ventoy::Style::Gpt);
    assert_eq!(info.found.data.start, 2048);
    assert_eq!(info.injection.len(), 1);
    assert!(
        info.archives
            .iter()
            .any(|(p, b)| p == "/keys.tar.gz" && b.as_slice() == archive.as_slice())
    );
    if have("sgdisk") {
        let (ok, t) = run(Command::new("sgdisk").arg("-v").arg(&out));
        assert!(ok && t.contains("No problems found"), "sgdisk -v: {t}");
    }
}

#[test]
fn same_seed_gives_same_bytes_and_no_seed_gives_unique_ids() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let archive = random_bytes(2000);
    let a = tmp.path().join("a.img");
    let b = tmp.path().join("b.img");
    let c = tmp.path().join("c.img");
    let d = tmp.path().join("d.img");
    build(&archive, &iso, &a, &args(false), Some(9), None);
    build(&archive, &iso, &b, &args(false), Some(9), None);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "same seed, different bytes"
    );
    build(&archive, &iso, &c, &args(false), None, None);
    build(&archive, &iso, &d, &args(false), None, None);
    let (c, d) = (fs::read(&c).unwrap(), fs::read(&d).unwrap());
    assert_ne!(
        c[0x180..0x190],
        d[0x180..0x190],
        "disk GUID must be unique per image"
    );
    assert_ne!(
        c[0x1B8..0x1BC],
        d[0x1B8..0x1BC],
        "disk signature must be unique per image"
    );
}

#[test]
fn json_flags_are_written() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let out = tmp.path().join("v.img");
    let mut a = args(false);
    a.menu_timeout = 9;
    a.text_menu = true;
    a.iso_name = Some("renamed.iso".into());
    build(b"x", &iso, &out, &a, Some(1), None);
    let info = keypack_media_ventoy::inspect(&out).unwrap();
    let json = info.json.unwrap().unwrap();
    assert_eq!(json["theme"]["display_mode"], "CLI");
    assert_eq!(json["control"][1]["VTOY_MENU_TIMEOUT"], "9");
    assert_eq!(json["control"][0]["VTOY_DEFAULT_IMAGE"], "/renamed.iso");
    assert_eq!(json["injection"][0]["image"], "/renamed.iso");
    assert!(
        info.files
            .iter()
            .any(|f| f.path == "/renamed.iso" && f.size == 1 << 20)
    );
    assert_eq!(info.version.as_deref(), Some(VERSION));
}

/// Release folders of the last two Ventoy releases, laid out like `ventoy-X.Y.Z/` of the
/// Linux tarball: each builds, its partition 2 is byte-identical to its own disk image, and
/// `inspect` reports its version.
#[test]
fn releases_1_1_17_and_1_1_18_build_and_inspect_reports_their_version() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    for version in ["1.1.17", "1.1.18"] {
        let fx = release_dir(
            &tmp.path().join(format!("ventoy-{version}")),
            version,
            version,
        );
        let blobs = keypack_media_ventoy::Blobs::load(&fx.dir).unwrap();
        assert_eq!(blobs.version, version);
        let out = tmp.path().join(format!("v-{version}.img"));
        let a = VentoyArgs {
            ventoy_dir: Some(fx.dir.clone()),
            ..args(false)
        };
        build(b"x", &iso, &out, &a, Some(3), None);
        verify(&fs::read(&out).unwrap(), &fx).unwrap_or_else(|e| panic!("{version}: {e}"));
        let info = keypack_media_ventoy::inspect(&out).unwrap();
        assert_eq!(info.version.as_deref(), Some(version));
    }
}

fn build_err(dir: &Path, tmp: &Path) -> String {
    let iso = fake_iso(tmp, "k.iso", 1 << 16);
    let out = tmp.join("refused.img");
    let a = VentoyArgs {
        ventoy_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    let e = build_image(
        b"x",
        &BuildOptions {
            args: &a,
            iso: &iso,
            output: &out,
            state_dir: None,
            seed: None,
            ignore_cache: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(!out.exists(), "no image after a refused build: {e}");
    e
}

/// A folder whose `ventoy/version` (1.1.18) and disk image (grub.cfg: 1.1.17) come from two
/// releases, as a half-copied upgrade leaves it, is refused, naming both versions; so is a
/// disk image whose grub.cfg sets no version.
#[test]
fn a_release_folder_mixing_two_versions_is_refused() {
    let tmp = private_tmp();
    let fx = release_dir(&tmp.path().join("mixed"), "1.1.18", "1.1.17");
    let e = build_err(&fx.dir, tmp.path());
    assert!(
        e.contains("1.1.17") && e.contains("1.1.18") && e.contains("two Ventoy releases"),
        "{e}"
    );
    assert!(e.contains("ventoy.disk.img.xz"), "{e}");
    // The other way round.
    let fx = release_dir(&tmp.path().join("mixed2"), "1.1.17", "1.1.18");
    let e = build_err(&fx.dir, tmp.path());
    assert!(e.contains("1.1.17") && e.contains("1.1.18"), "{e}");
    // Same version: builds.
    let fx = release_dir(&tmp.path().join("same"), "1.1.17", "1.1.17");
    let out = tmp.path().join("ok.img");
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let a = VentoyArgs {
        ventoy_dir: Some(fx.dir.clone()),
        ..args(false)
    };
    build(b"x", &iso, &out, &a, Some(1), None);
}

/// Ventoy before 1.0.16 has no injection plugin (`ventoy.md` §1.1, §2.6): its release folder
/// is refused with the version and the reason; 1.0.16 itself and a later 1.0.x pass the version
/// check (numeric comparison, not text: 1.0.100 > 1.0.16).
#[test]
fn ventoy_older_than_1_0_16_is_refused() {
    let tmp = private_tmp();
    for old in ["1.0.15", "1.0.9", "0.9.99"] {
        let fx = release_dir(&tmp.path().join(format!("v{old}")), old, old);
        let e = build_err(&fx.dir, tmp.path());
        assert!(
            e.contains(&format!("Ventoy {old} is older than 1.0.16")) && e.contains("injection"),
            "{old}: {e}"
        );
        let e = keypack_media_ventoy::Blobs::load(&fx.dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ventoy/version"), "{e}");
    }
    for ok in ["1.0.16", "1.0.100", "1.1.18"] {
        let fx = release_dir(&tmp.path().join(format!("v{ok}")), ok, ok);
        keypack_media_ventoy::Blobs::load(&fx.dir).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    use keypack_media_ventoy::blobs::{older_than, parse_version};
    assert!(older_than("1.0.15", "1.0.16"));
    assert!(!older_than("1.0.100", "1.0.16"));
    assert!(older_than("1.1.13", "1.1.14"));
    assert!(!older_than("1.1.14", "1.1.14"));
    assert_eq!(parse_version("1.1.18"), Some(vec![1, 1, 18]));
    assert_eq!(parse_version("1.1.x"), None);
    assert_eq!(parse_version("1..1"), None);
}

#[test]
fn conformance_check_passes() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "keypack.iso", 1 << 20);
    let desc = check_medium_with(
        &Ventoy,
        &Check {
            args: vec!["--ventoy-dir".into(), fixture().dir.display().to_string()],
            iso: Some(&iso),
        },
    );
    assert_eq!(desc.firmware, keypack_plugin::Firmware::Uefi);
}

fn copy_fixture_without(file: &str) -> tempfile::TempDir {
    let t = private_tmp();
    for sub in ["boot", "ventoy"] {
        fs::create_dir_all(t.path().join(sub)).unwrap();
    }
    for f in [
        "boot/boot.img",
        "boot/core.img.xz",
        "ventoy/ventoy.disk.img.xz",
        "ventoy/version",
    ] {
        if f != file {
            fs::copy(fixture().dir.join(f), t.path().join(f)).unwrap();
        }
    }
    t
}

#[test]
fn bad_release_files_are_refused_with_clear_errors() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let out = tmp.path().join("v.img");
    let try_dir = |dir: PathBuf| {
        let a = VentoyArgs {
            ventoy_dir: Some(dir),
            ..Default::default()
        };
        build_image(
            b"x",
            &BuildOptions {
                args: &a,
                iso: &iso,
                output: &out,
                state_dir: None,
                seed: None,
                ignore_cache: false,
            },
        )
        .unwrap_err()
        .to_string()
    };
    let t = copy_fixture_without("boot/boot.img");
    let mut bad = boot_img();
    bad[0x195] ^= 0xFF;
    fs::write(t.path().join("boot/boot.img"), &bad).unwrap();
    let e = try_dir(t.path().to_path_buf());
    assert!(e.contains("boot.img") && e.contains("0x190"), "{e}");

    let t = copy_fixture_without("boot/core.img.xz");
    fs::write(t.path().join("boot/core.img.xz"), b"not xz").unwrap();
    let e = try_dir(t.path().to_path_buf());
    assert!(e.contains("core.img.xz") && e.contains("xz"), "{e}");

    let t = copy_fixture_without("ventoy/ventoy.disk.img.xz");
    let e = try_dir(t.path().to_path_buf());
    assert!(e.contains("ventoy.disk.img.xz"), "{e}");

    let t = copy_fixture_without("ventoy/version");
    let e = try_dir(t.path().to_path_buf());
    assert!(e.contains("version"), "{e}");
    assert!(!out.exists(), "no image after a failed build");
}

#[test]
fn world_readable_output_folder_is_refused() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 16);
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let a = args(false);
    let e = build_image(
        b"x",
        &BuildOptions {
            args: &a,
            iso: &iso,
            output: &open.join("v.img"),
            state_dir: None,
            seed: None,
            ignore_cache: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("other users"), "{e}");
}

#[test]
fn iso_starts_on_a_4k_boundary_when_clusters_allow() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let tmp = private_tmp();
    // A sparse 400 MiB "ISO" (4 KiB clusters) with a marker at its start.
    let iso = tmp.path().join("big.iso");
    let mut f = fs::File::create(&iso).unwrap();
    f.write_all(b"ISO-START-MARKER-0123456789").unwrap();
    f.set_len(400 << 20).unwrap();
    drop(f);
    let out = tmp.path().join("v.img");
    build(b"bundle", &iso, &out, &args(false), Some(1), None);
    let mut img = fs::File::open(&out).unwrap();
    let mut found = None;
    let mut buf = vec![0u8; 27];
    // The ISO is the first file: search the first 64 MiB of the data partition.
    for off in (1 << 20..(65 << 20)).step_by(512) {
        img.seek(SeekFrom::Start(off)).unwrap();
        img.read_exact(&mut buf).unwrap();
        if buf == b"ISO-START-MARKER-0123456789" {
            found = Some(off);
            break;
        }
    }
    let off = found.expect("ISO marker not found");
    assert_eq!(off % 4096, 0, "ISO starts at {off}, not 4 KiB aligned");
    let v = verify(&fs::read(&out).unwrap(), fixture()).unwrap();
    assert_eq!(v.p2.0 % 8, 0);
}

#[test]
fn keys_only_needs_the_same_iso_flags_and_untouched_image() {
    let tmp = private_tmp();
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let iso = fake_iso(tmp.path(), "k.iso", 1 << 20);
    let out = tmp.path().join("v.img");
    let a = args(false);
    assert_eq!(
        build(b"one", &iso, &out, &a, Some(1), Some(&state)),
        BuildMode::Full
    );
    let first = fs::read(&out).unwrap();
    // Same bundle: in place, and not a byte changes.
    assert_eq!(
        build(b"one", &iso, &out, &a, Some(1), Some(&state)),
        BuildMode::KeysOnly
    );
    assert!(fs::read(&out).unwrap() == first);
    // New bundle: in place; then the JSON flags change: still in place, JSON switched.
    assert_eq!(
        build(b"two", &iso, &out, &a, Some(1), Some(&state)),
        BuildMode::KeysOnly
    );
    let mut b = a.clone();
    b.menu_timeout = 11;
    assert_eq!(
        build(b"two", &iso, &out, &b, Some(1), Some(&state)),
        BuildMode::KeysOnly
    );
    let info = keypack_media_ventoy::inspect(&out).unwrap();
    assert_eq!(
        info.json.unwrap().unwrap()["control"][1]["VTOY_MENU_TIMEOUT"],
        "11"
    );
    assert!(info.archives[0].1.as_slice() == b"two");
    // A layout flag changes: full build.
    let mut g = b.clone();
    g.gpt = true;
    assert_eq!(
        build(b"two", &iso, &out, &g, Some(1), Some(&state)),
        BuildMode::Full
    );
    // The ISO changes: full build.
    fake_iso(tmp.path(), "k.iso", 1 << 20);
    assert_eq!(
        build(b"two", &iso, &out, &g, Some(1), Some(&state)),
        BuildMode::Full
    );
    // The image was changed by someone else: full build.
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(&out).unwrap();
        f.write_all(&[0u8; 512]).unwrap();
    }
    assert_eq!(
        build(b"two", &iso, &out, &g, Some(1), Some(&state)),
        BuildMode::Full
    );
}

#[test]
fn image_size_fills_a_stick_and_refuses_too_small() {
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "k.iso", 4 << 20);
    for gpt in [false, true] {
        let out = tmp.path().join(format!("sized-{gpt}.img"));
        let mut a = args(gpt);
        a.image_size = Some(256 << 20);
        build(b"x", &iso, &out, &a, Some(2), None);
        assert_eq!(fs::metadata(&out).unwrap().len(), 256 << 20);
        let v = verify(&fs::read(&out).unwrap(), fixture()).unwrap();
        assert!(v.p2.0 + v.p2.1 <= (256 << 20) / 512);
    }
    let mut a = args(false);
    a.image_size = Some(40 << 20);
    let out = tmp.path().join("small.img");
    let e = build_image(
        b"x",
        &BuildOptions {
            args: &a,
            iso: &iso,
            output: &out,
            state_dir: None,
            seed: None,
            ignore_cache: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--image-size"), "{e}");
    assert_eq!(keypack_media_ventoy::args::parse_size("8G"), Ok(8 << 30));
    assert!(keypack_media_ventoy::args::parse_size("8Q").is_err());
}

/// Independent exFAT reader for the test: finds `name` in the folder at `dir_cluster` and
/// returns (first cluster, length, is folder).
fn exfat_find(p: &[u8], dir_cluster: u32, name: &str) -> Option<(u32, u64, bool)> {
    let le32 = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    let heap = le32(88) as usize * 512;
    let cs = 512usize << p[109];
    let d = &p[heap + (dir_cluster as usize - 2) * cs..][..cs];
    let mut i = 0;
    while i + 32 <= d.len() && d[i] != 0 {
        if d[i] == 0x85 {
            let n = d[i + 1] as usize;
            let s = &d[i + 32..i + 64];
            let len = s[3] as usize;
            let mut units = Vec::new();
            for k in 0..n - 1 {
                let e = &d[i + 64 + 32 * k..i + 96 + 32 * k];
                for j in 0..15 {
                    units.push(u16::from_le_bytes([e[2 + 2 * j], e[3 + 2 * j]]));
                }
            }
            units.truncate(len);
            if String::from_utf16_lossy(&units) == name {
                let first = u32::from_le_bytes(s[20..24].try_into().unwrap());
                let size = u64::from_le_bytes(s[24..32].try_into().unwrap());
                let dir = u16::from_le_bytes([d[i + 4], d[i + 5]]) & 0x10 != 0;
                return Some((first, size, dir));
            }
            i += 32 * (n + 1);
        } else {
            i += 32;
        }
    }
    None
}

fn exfat_read(p: &[u8], first: u32, len: u64) -> Vec<u8> {
    let heap = u32::from_le_bytes(p[88..92].try_into().unwrap()) as usize * 512;
    let cs = 512usize << p[109];
    let at = heap + (first as usize - 2) * cs;
    p[at..at + len as usize].to_vec()
}

#[test]
fn exfat_data_partition_passes_fsck_exfat_and_holds_the_files() {
    let test = "exfat_data_partition_passes_fsck_exfat_and_holds_the_files";
    let tmp = private_tmp();
    let iso = fake_iso(tmp.path(), "keypack-nixos.iso", 3 << 20);
    let archive = random_bytes(4000);
    let out = tmp.path().join("x.img");
    let mut a = args(false);
    a.exfat = true;
    build(&archive, &iso, &out, &a, Some(3), None);
    let img = fs::read(&out).unwrap();
    let v = verify(&img, fixture()).unwrap();
    assert_eq!(img[0x1BE + 4], 0x07, "MBR type of an exFAT partition");
    let p = &img[(v.p1.0 * 512) as usize..((v.p1.0 + v.p1.1) * 512) as usize];
    assert_eq!(&p[3..11], b"EXFAT   ");
    let root = u32::from_le_bytes(p[96..100].try_into().unwrap());
    let (c, n, dir) = exfat_find(p, root, "keypack-nixos.iso").expect("ISO entry");
    assert!(!dir && exfat_read(p, c, n) == fs::read(&iso).unwrap());
    let (c, n, _) = exfat_find(p, root, "keys.tar.gz").expect("bundle entry");
    assert!(exfat_read(p, c, n) == archive);
    let (vc, _, dir) = exfat_find(p, root, "ventoy").expect("ventoy folder");
    assert!(dir);
    let (c, n, _) = exfat_find(p, vc, "ventoy.json").expect("ventoy.json");
    let json: serde_json::Value = serde_json::from_slice(&exfat_read(p, c, n)).unwrap();
    assert_eq!(json["injection"][0]["image"], "/keypack-nixos.iso");
    // inspect reads it back: files, injection entry, the bundle.
    let info = keypack_media_ventoy::inspect(&out).unwrap();
    assert_eq!(info.data_fs.as_deref(), Ok("exFAT"));
    assert!(
        info.files
            .iter()
            .any(|f| f.path == "/keypack-nixos.iso" && f.size == 3 << 20)
    );
    assert!(info.files.iter().any(|f| f.path == "/ventoy" && f.dir));
    assert!(info.files.iter().any(|f| f.path == "/ventoy/ventoy.json"));
    assert_eq!(info.injection.len(), 1);
    assert!(
        info.archives
            .iter()
            .any(|(p, b)| p == "/keys.tar.gz" && b.as_slice() == archive.as_slice())
    );
    // Same seed, same bytes.
    let out2 = tmp.path().join("y.img");
    build(&archive, &iso, &out2, &a, Some(3), None);
    assert!(fs::read(&out2).unwrap() == img);
    if !have_tools(test, &["fsck.exfat", "dump.exfat"]) {
        return;
    }
    let part = tmp.path().join("p1");
    carve(&out, v.p1.0, v.p1.1, &part);
    let (ok, t) = run(Command::new("fsck.exfat").arg("-n").arg(&part));
    assert!(ok, "fsck.exfat -n: {t}");
    eprintln!("fsck.exfat: {t}");
    let (ok, t) = run(Command::new("dump.exfat").arg(&part));
    assert!(ok && t.contains("Ventoy"), "dump.exfat: {t}");
    // The reader also takes a volume made by mkfs.exfat (empty but for its metadata).
    if have("mkfs.exfat") {
        let (ok, t) = run(Command::new("mkfs.exfat").args(["-n", "Ventoy"]).arg(&part));
        assert!(ok, "mkfs.exfat: {t}");
        let mut img = fs::read(&out).unwrap();
        let p1 = fs::read(&part).unwrap();
        img[(v.p1.0 * 512) as usize..((v.p1.0 + v.p1.1) * 512) as usize].copy_from_slice(&p1);
        fs::write(&out, &img).unwrap();
        let info = keypack_media_ventoy::inspect(&out).unwrap();
        assert_eq!(info.data_fs.as_deref(), Ok("exFAT"));
        assert!(
            info.files.is_empty() && info.json.is_none(),
            "{:?}",
            info.files
        );
    }
}
