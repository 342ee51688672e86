//! The keyed ISO medium against ISOs made with `xorriso -as mkisofs` (the independent writer)
//! holding a zero-filled `/keypack/keys.img`: the area is found where xorriso put it, the
//! area's bytes read back with `xorriso -osirrox` (the independent reader) equal the keys cpio,
//! every other byte equals the input, size errors name the option, keys-only rebuilds and
//! `reset` write in place, and the plugin conformance check passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use keypack_media_iso::{
    AreaState, BuildMode, BuildOptions, CdFirmware, IsoMedium, IsoMediumError, area, build,
    inspect, reset,
};
use keypack_plugin::testing::{self, Check, sealed_bundle, sealed_bundle_with_users};
use keypack_plugin::{Boot, Firmware};

mod common;
use common::{have_xorriso, make_iso, private_dir, skip};

/// `/keypack/keys.img` as xorriso reads it.
fn xorriso_area(iso: &Path, dir: &Path) -> Vec<u8> {
    let to = dir.join("extracted-keys.img");
    let _ = std::fs::remove_file(&to);
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/keypack/keys.img"])
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso -extract: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&to).unwrap()
}

fn opts<'a>(iso: &'a Path, output: &'a Path, state: Option<&'a Path>) -> BuildOptions<'a> {
    BuildOptions {
        iso,
        output,
        state_dir: state,
        ignore_cache: false,
        firmware: CdFirmware::Any,
    }
}

/// Bytes of `a` and `b` outside `[off, off+len)` are equal (and the files are equally long).
fn same_outside(a: &[u8], b: &[u8], off: u64, len: u64) -> bool {
    let (off, end) = (off as usize, (off + len) as usize);
    a.len() == b.len() && a[..off] == b[..off] && a[end..] == b[end..]
}

#[test]
fn the_area_holds_the_cpio_and_nothing_else_changes() {
    const T: &str = "the_area_holds_the_cpio_and_nothing_else_changes";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let dir = private_dir();
    let iso = make_iso(dir.path(), Some(1 << 20));
    let found = area::locate(&iso).unwrap();
    assert_eq!(found.len, 1 << 20);
    assert_eq!(found.offset % 2048, 0);
    let input = std::fs::read(&iso).unwrap();
    assert!(
        input[found.offset as usize..][..found.len as usize]
            .iter()
            .all(|&b| b == 0)
    );
    // The area is exactly the file xorriso knows: mark it in a copy and extract it.
    let mut marked = input.clone();
    marked[found.offset as usize] = 0xAA;
    marked[(found.offset + found.len - 1) as usize] = 0xBB;
    let marked_iso = dir.path().join("marked.iso");
    std::fs::write(&marked_iso, &marked).unwrap();
    let back = xorriso_area(&marked_iso, dir.path());
    assert_eq!(
        (back[0], back[back.len() - 1], back.len()),
        (0xAA, 0xBB, 1 << 20)
    );

    let bundle = sealed_bundle_with_users(&["alice"]);
    let output = dir.path().join("web1.iso");
    let (desc, mode) = build(&bundle, "web1", &opts(&iso, &output, None)).unwrap();
    assert_eq!(mode, BuildMode::Full);
    assert_eq!(
        desc.boot,
        Boot::Cdrom {
            image: output.clone()
        }
    );
    assert_eq!(desc.firmware, Firmware::Any);
    assert_eq!(
        std::fs::metadata(&output).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let gz = keypack_media_initrd::keys_cpio_gz(&bundle).unwrap();
    let written = std::fs::read(&output).unwrap();
    assert!(
        same_outside(&written, &input, found.offset, found.len),
        "bytes outside the area changed"
    );
    let area_bytes = xorriso_area(&output, dir.path());
    assert_eq!(
        &area_bytes[..gz.len()],
        &gz[..],
        "xorriso reads the cpio from the area"
    );
    assert!(
        area_bytes[gz.len()..].iter().all(|&b| b == 0),
        "zero padding"
    );
    // The gzip stream is what the kernel gets: gunzip it independently and list it with cpio.
    let raw = {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&area_bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw
    };
    assert_eq!(
        &raw[..],
        &keypack_media_initrd::keys_cpio(&bundle).unwrap()[..]
    );

    let report = inspect::inspect(&output).unwrap();
    let AreaState::Keys { used, entries } = &report.state else {
        panic!("{:?}", report.state)
    };
    assert_eq!(*used, gz.len() as u64);
    assert_eq!(entries[0].path, "etc");
    for m in bundle.manifest().entries.iter() {
        let e = entries.iter().find(|e| e.path == m.path).unwrap();
        assert_eq!(e.size, m.size);
        assert_eq!(e.mode & 0o7777, m.mode);
        if m.public {
            assert_eq!(e.fingerprint.as_deref(), Some(m.fingerprint.as_str()));
        } else {
            assert_eq!(e.fingerprint, None, "nothing is read out of a private key");
        }
    }
    assert_eq!(inspect::inspect(&iso).unwrap().state, AreaState::Empty);
}

#[test]
fn a_missing_area_a_bad_size_and_too_many_keys_are_clear_errors() {
    const T: &str = "a_missing_area_a_bad_size_and_too_many_keys_are_clear_errors";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bundle = sealed_bundle_with_users(&names);
    let cases: [(Option<usize>, &str); 4] = [
        (
            None,
            "has no keys area /keypack/keys.img: build the ISO with keypack.keysArea.enable = true",
        ),
        (Some(3000), "is 3000 bytes, not a non-zero multiple of 2048"),
        (Some(0), "is 0 bytes, not a non-zero multiple of 2048"),
        (
            Some(2048),
            "holds 2048: rebuild the ISO with a larger keypack.keysArea.sizeKiB",
        ),
    ];
    for (size, expected) in cases {
        let dir = private_dir();
        let iso = make_iso(dir.path(), size);
        let output = dir.path().join("web1.iso");
        let err = build(&bundle, "web1", &opts(&iso, &output, None)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{size:?}: {text}");
        if size == Some(2048) {
            assert!(matches!(err, IsoMediumError::TooLarge { room: 2048, .. }));
        }
        assert!(!output.exists(), "{size:?}: nothing is written on an error");
    }
}

#[test]
fn a_keys_only_rebuild_rewrites_the_area_in_place() {
    const T: &str = "a_keys_only_rebuild_rewrites_the_area_in_place";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let dir = private_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let iso = make_iso(dir.path(), Some(64 << 10));
    let input = std::fs::read(&iso).unwrap();
    let found = area::locate(&iso).unwrap();
    let output = dir.path().join("web1.iso");

    // A large bundle first (more than one 4 KiB piece), so the smaller second one must cover
    // (zero) its tail.
    let names: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = sealed_bundle_with_users(&names);
    assert!(keypack_media_initrd::keys_cpio_gz(&big).unwrap().len() > 4096);
    let (_, mode) = build(&big, "web1", &opts(&iso, &output, Some(&state))).unwrap();
    assert_eq!(mode, BuildMode::Full);
    let ino = std::fs::metadata(&output).unwrap().ino();
    // A reader left the file world-readable: keys go in only after it is 0600 again.
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();

    let small = sealed_bundle();
    let (_, mode) = build(&small, "web1", &opts(&iso, &output, Some(&state))).unwrap();
    assert_eq!(mode, BuildMode::KeysOnly);
    let meta = std::fs::metadata(&output).unwrap();
    assert_eq!(meta.ino(), ino, "the same file, written in place");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let written = std::fs::read(&output).unwrap();
    assert!(same_outside(&written, &input, found.offset, found.len));
    let gz = keypack_media_initrd::keys_cpio_gz(&small).unwrap();
    let area_bytes = xorriso_area(&output, dir.path());
    assert_eq!(&area_bytes[..gz.len()], &gz[..]);
    assert!(
        area_bytes[gz.len()..].iter().all(|&b| b == 0),
        "the old, longer cpio is gone"
    );

    // A changed ISO, or --ignore-cache (`keypack rebuild`), copies it whole again.
    let mut o = opts(&iso, &output, Some(&state));
    o.ignore_cache = true;
    let (_, mode) = build(&small, "web1", &o).unwrap();
    assert_eq!(mode, BuildMode::Full);
    let (_, mode) = build(&small, "web1", &opts(&iso, &output, Some(&state))).unwrap();
    assert_eq!(mode, BuildMode::KeysOnly);
    std::fs::write(&iso, &input).unwrap(); // same bytes, but a new mtime
    let (_, mode) = build(&small, "web1", &opts(&iso, &output, Some(&state))).unwrap();
    assert_eq!(mode, BuildMode::Full);
    // An output someone else changed is never patched: it is rebuilt.
    std::fs::write(&output, &input).unwrap();
    let (_, mode) = build(&small, "web1", &opts(&iso, &output, Some(&state))).unwrap();
    assert_eq!(mode, BuildMode::Full);
    assert_eq!(&xorriso_area(&output, dir.path())[..gz.len()], &gz[..]);
}

#[test]
fn reset_zeroes_the_area_and_nothing_else() {
    const T: &str = "reset_zeroes_the_area_and_nothing_else";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let dir = private_dir();
    let iso = make_iso(dir.path(), Some(1 << 20));
    let input = std::fs::read(&iso).unwrap();
    let output = dir.path().join("web1.iso");
    build(&sealed_bundle(), "web1", &opts(&iso, &output, None)).unwrap();
    assert!(matches!(
        inspect::inspect(&output).unwrap().state,
        AreaState::Keys { .. }
    ));
    let (found, used) = reset(&output).unwrap();
    assert!(used > 0 && used < 4096, "{used}");
    assert_eq!(found, area::locate(&iso).unwrap());
    assert!(
        std::fs::read(&output).unwrap() == input,
        "reset gives back the input ISO"
    );
    assert_eq!(inspect::inspect(&output).unwrap().state, AreaState::Empty);
    assert_eq!(reset(&output).unwrap().1, 0);

    // Damage (a torn write) is reported, not taken for keys.
    let mut bytes = input.clone();
    bytes[found.offset as usize..][..4].copy_from_slice(&[0x1f, 0x8b, 8, 1]);
    std::fs::write(&output, &bytes).unwrap();
    assert!(matches!(
        inspect::inspect(&output).unwrap().state,
        AreaState::Damaged { used: 4, .. }
    ));
}

#[test]
fn the_medium_passes_the_plugin_conformance_check() {
    const T: &str = "the_medium_passes_the_plugin_conformance_check";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let dir = private_dir();
    let iso = make_iso(dir.path(), Some(1 << 20));
    let desc = testing::check_medium_with(
        &IsoMedium,
        &Check {
            args: vec!["--iso-firmware".into(), "uefi".into()],
            iso: Some(&iso),
        },
    );
    assert_eq!(desc.firmware, Firmware::Uefi);
    let Boot::Cdrom { image } = &desc.boot else {
        panic!("{:?}", desc.boot)
    };
    assert!(image.ends_with("testhost.iso"), "{}", image.display());
}

/// An area stored as two extents (a multi-extent file: the first record has flag bit 7 "more
/// extents follow") is refused: keypack writes one byte range, and the boot loaders would read
/// the two pieces as one file. xorriso only splits files of 4 GiB or more, so the directory
/// record is split by hand in a real xorriso ISO.
#[test]
fn an_area_in_two_extents_is_refused() {
    const T: &str = "an_area_in_two_extents_is_refused";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let dir = private_dir();
    let iso = make_iso(dir.path(), Some(64 << 10));
    let before = area::locate(&iso).unwrap();
    let mut bytes = std::fs::read(&iso).unwrap();
    let name = b"KEYS.IMG;1";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("the primary directory record of keys.img");
    let start = at - 33;
    assert_eq!(bytes[start + 32] as usize, name.len());
    let rec_len = bytes[start] as usize;
    let rec = bytes[start..start + rec_len].to_vec();
    assert!(
        bytes[start + rec_len..start + 2 * rec_len]
            .iter()
            .all(|&b| b == 0),
        "room for a second record after it"
    );
    let half = (before.len / 2) as u32;
    let put = |r: &mut [u8], extent: u32, len: u32, flags: u8| {
        r[2..6].copy_from_slice(&extent.to_le_bytes());
        r[6..10].copy_from_slice(&extent.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
    };
    let first_sector = (before.offset / 2048) as u32;
    let (mut first, mut second) = (rec.clone(), rec);
    put(&mut first, first_sector, half, 0x80);
    put(&mut second, first_sector + half / 2048, half, 0);
    bytes[start..start + rec_len].copy_from_slice(&first);
    bytes[start + rec_len..start + 2 * rec_len].copy_from_slice(&second);
    let split = dir.path().join("split.iso");
    std::fs::write(&split, &bytes).unwrap();
    let err = area::locate(&split).unwrap_err();
    assert!(
        err.to_string()
            .contains("it is stored in 2 extents, not one"),
        "{err}"
    );
    let output = dir.path().join("web1.iso");
    assert!(build(&sealed_bundle(), "web1", &opts(&split, &output, None)).is_err());
    assert!(!output.exists());
}
