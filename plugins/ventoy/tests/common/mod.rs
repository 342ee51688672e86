//! Shared test code: synthetic Ventoy release files, an independent layout verifier, Debian
//! tools as a second opinion, and the skip helper.
#![allow(dead_code, clippy::needless_range_loop)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const CORE_LEN: usize = 2047 * 512;
pub const EFI_LEN: usize = 65536 * 512;
pub const SIG_MID: [u8; 16] = [
    0x56, 0x54, 0x00, 0x47, 0x65, 0x00, 0x48, 0x44, 0x00, 0x52, 0x64, 0x00, 0x20, 0x45, 0x72, 0x0D,
];

/// Prints the skip marker, or panics under KEYPACK_REQUIRE_ALL=1.
pub fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: prerequisite missing: {why}");
    }
    // Written past libtest's capture (which swallows eprintln! of passing tests), so the
    // marker reaches scripts/test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "KEYPACK-SKIPPED: {test}: {why}
"
        )
        .as_bytes(),
    );
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tools the Debian cross-checks need; returns false (after printing the skip marker) when
/// one is missing.
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !have(t) {
            skip(test, &format!("{t} is not installed"));
            return false;
        }
    }
    true
}

pub fn boot_img() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 0xEB;
    b[1] = 0x63;
    b[2] = 0x90;
    // Recognisable "boot code" after the BPB area.
    for (i, x) in b[0x5A..0x180].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(7).wrapping_add(1);
    }
    b[0x190..0x1A0].copy_from_slice(&SIG_MID);
    b[0x1FE] = 0x55;
    b[0x1FF] = 0xAA;
    b
}

/// core.img: every sector holds its own number, so misplacement shows.
pub fn core_img() -> Vec<u8> {
    let mut c = vec![0u8; CORE_LEN];
    for (i, s) in c.chunks_mut(512).enumerate() {
        s[..4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        s[4..12].copy_from_slice(b"COREIMG!");
    }
    c
}

/// The Ventoy version the synthetic release folders carry unless a test asks for another:
/// the current release.
pub const VERSION: &str = "1.1.18";

/// The files of the synthetic VTOYEFI image, `grub/grub.cfg` setting `VENTOY_VERSION` to
/// `version`.
fn efi_files(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ventoy/ventoy.cpio", b"070701fake cpio".to_vec()),
        (
            "grub/grub.cfg",
            format!("set VENTOY_VERSION=\"{version}\"\n").into_bytes(),
        ),
        ("grub/localboot.cfg", b"# localboot\n".to_vec()),
        ("tool/mount.exfat-fuse_aarch64", b"\x7fELF".to_vec()),
        ("EFI/BOOT/BOOTX64.EFI", b"MZ fake".to_vec()),
    ]
}

/// [`efi_img_for`] with [`VERSION`].
pub fn efi_img() -> Vec<u8> {
    efi_img_for(VERSION)
}

/// A 32 MiB FAT16 VTOYEFI image with the files Ventoy's checks look for (its grub.cfg sets
/// `VENTOY_VERSION="{version}"`), made like Ventoy makes it (`mkfs.vfat -F 16 -s 1 -n
/// VTOYEFI`, then mtools), or with `fatfs` when dosfstools is missing (whose folders
/// `fsck.fat` then complains about).
pub fn efi_img_for(version: &str) -> Vec<u8> {
    if have("mkfs.vfat") && have("mcopy") && have("mmd") {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("efi.img");
        fs::File::create(&img)
            .unwrap()
            .set_len(EFI_LEN as u64)
            .unwrap();
        let (ok, text) = run(Command::new("mkfs.vfat")
            .args([
                "-F",
                "16",
                "-s",
                "1",
                "-n",
                "VTOYEFI",
                "-i",
                "12345678",
                "--invariant",
            ])
            .arg(&img));
        assert!(ok, "mkfs.vfat: {text}");
        let i = img.display().to_string();
        for d in ["ventoy", "grub", "tool", "EFI", "EFI/BOOT"] {
            let (ok, text) = run(Command::new("mmd").env("MTOOLS_SKIP_CHECK", "1").args([
                "-i",
                &i,
                &format!("::/{d}"),
            ]));
            assert!(ok, "mmd: {text}");
        }
        for (path, content) in efi_files(version) {
            let src = t.path().join("src");
            fs::write(&src, content).unwrap();
            let (ok, text) = run(Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .env("SOURCE_DATE_EPOCH", "0")
                .args(["-i", &i])
                .arg(&src)
                .arg(format!("::/{path}")));
            assert!(ok, "mcopy: {text}");
        }
        return fs::read(&img).unwrap();
    }
    let mut img = std::io::Cursor::new(vec![0u8; EFI_LEN]);
    let mut label = [b' '; 11];
    label[..7].copy_from_slice(b"VTOYEFI");
    fatfs::format_volume(
        &mut img,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat16)
            .bytes_per_cluster(512)
            .volume_label(label)
            .volume_id(0x1234_5678),
    )
    .expect("format VTOYEFI");
    img.seek(SeekFrom::Start(0)).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new()).expect("mount");
        {
            let root = fs.root_dir();
            for d in ["ventoy", "grub", "tool", "EFI", "EFI/BOOT"] {
                root.create_dir(d).unwrap();
            }
            for (path, content) in efi_files(version) {
                let mut f = root.create_file(path).unwrap();
                f.write_all(&content).unwrap();
            }
        }
        fs.unmount().unwrap();
    }
    img.into_inner()
}

fn xz(data: &[u8]) -> Vec<u8> {
    if have("xz") {
        let mut child = Command::new("xz")
            .args(["-c", "-1", "-T1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("xz");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let t = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        t.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    } else {
        let mut w =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }
}

pub struct Fixture {
    pub dir: PathBuf,
    pub boot: Vec<u8>,
    pub core: Vec<u8>,
    pub efi: Vec<u8>,
}

/// Writes a synthetic Ventoy release folder of [`VERSION`] (once per test process).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // One folder per test binary under cargo's scratch space, rewritten on every run (so
        // runs do not accumulate folders in /tmp).
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ventoy-fixture-{name}"));
        release_dir(&dir, VERSION, VERSION)
    })
}

/// Writes a synthetic Ventoy release folder at `dir` (replacing it) laid out like
/// `ventoy-X.Y.Z/` of the Linux tarball: `ventoy/version` holds `version`, and the disk
/// image's `grub/grub.cfg` sets `VENTOY_VERSION` to `grub_version` (the same for a real
/// release; different for a folder that mixes two releases).
pub fn release_dir(dir: &Path, version: &str, grub_version: &str) -> Fixture {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("boot")).unwrap();
    fs::create_dir_all(dir.join("ventoy")).unwrap();
    let (boot, core, efi) = (boot_img(), core_img(), efi_img_for(grub_version));
    fs::write(dir.join("boot/boot.img"), &boot).unwrap();
    fs::write(dir.join("boot/core.img.xz"), xz(&core)).unwrap();
    fs::write(dir.join("ventoy/ventoy.disk.img.xz"), xz(&efi)).unwrap();
    fs::write(dir.join("ventoy/version"), format!("{version}\n")).unwrap();
    Fixture {
        dir: dir.to_path_buf(),
        boot,
        core,
        efi,
    }
}

/// A private temp folder.
pub fn private_tmp() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o700)).unwrap();
    t
}

/// A fake ISO of random bytes.
pub fn fake_iso(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let mut f = fs::File::create(&p).unwrap();
    let mut rnd = fs::File::open("/dev/urandom").unwrap();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len());
        rnd.read_exact(&mut buf[..n]).unwrap();
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    p
}

#[derive(Debug)]
pub struct Verified {
    pub gpt: bool,
    pub p1: (u64, u64),
    pub p2: (u64, u64),
}

fn le32(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Independent re-implementation of `ventoy_check_official_device` plus the structural checks
/// from ventoy.md §5.1. Written from the notes, sharing no code with the plugin.
pub fn verify(img: &[u8], fx: &Fixture) -> Result<Verified, String> {
    if !img.len().is_multiple_of(512) {
        return Err("image length is not a multiple of 512".into());
    }
    let mbr = &img[..512];
    if mbr[510..512] != [0x55, 0xAA] {
        return Err("no 55AA".into());
    }
    // Check 5: the Ventoy signature.
    if mbr[0] != 0xEB || mbr[1] != 0x63 || mbr[2] != 0x90 || mbr[3..0x30].iter().any(|&b| b != 0) {
        return Err("check 5: head".into());
    }
    if mbr[0x190..0x1A0] != SIG_MID {
        return Err("check 5: mid".into());
    }
    let gpt = mbr[0x1BE + 4] == 0xEE;
    // Boot code equals boot.img[0..440) except the GUID (and byte 92 in GPT style).
    for i in 0..440 {
        if (0x180..0x190).contains(&i) || (gpt && i == 92) {
            continue;
        }
        if mbr[i] != fx.boot[i] {
            return Err(format!("boot code differs at byte {i:#x}"));
        }
    }
    let (p1, p2) = if gpt {
        if mbr[92] != 0x22 {
            return Err("GPT: byte 92 is not 0x22".into());
        }
        let hdr = &img[512..1024];
        if &hdr[..8] != b"EFI PART" {
            return Err("no GPT header".into());
        }
        let mut h = hdr[..92].to_vec();
        h[16..20].fill(0);
        if crc32fast::hash(&h) as u64 != le32(hdr, 16) {
            return Err("GPT header CRC".into());
        }
        let ent = &img[1024..1024 + 128 * 128];
        if crc32fast::hash(ent) as u64 != le32(hdr, 88) {
            return Err("GPT entries CRC".into());
        }
        let last = (img.len() / 512 - 1) as u64;
        if le64(hdr, 32) != last {
            return Err("GPT backup LBA is not the last sector".into());
        }
        let bh = &img[(last * 512) as usize..(last * 512 + 512) as usize];
        if &bh[..8] != b"EFI PART" || le64(bh, 24) != last || le64(bh, 32) != 1 {
            return Err("bad backup GPT header".into());
        }
        let mut b = bh[..92].to_vec();
        b[16..20].fill(0);
        if crc32fast::hash(&b) as u64 != le32(bh, 16) {
            return Err("backup GPT header CRC".into());
        }
        let be = le64(bh, 72) as usize * 512;
        if img[be..be + 128 * 128] != *ent {
            return Err("backup GPT entries differ".into());
        }
        // core.img at LBA 34, with the blocklist byte patched.
        let mut want = fx.core[..2014 * 512].to_vec();
        want[17908 - 34 * 512] = 0x23;
        if img[34 * 512..2048 * 512] != want[..] {
            return Err("core.img not at LBA 34".into());
        }
        let e = |i: usize| {
            (
                le64(ent, i * 128 + 32),
                le64(ent, i * 128 + 40) - le64(ent, i * 128 + 32) + 1,
            )
        };
        (e(0), e(1))
    } else {
        if img[512..2048 * 512] != fx.core[..] {
            return Err("core.img not at LBA 1".into());
        }
        let e = |i: usize| {
            (
                le32(mbr, 0x1BE + 16 * i + 8),
                le32(mbr, 0x1BE + 16 * i + 12),
            )
        };
        (e(0), e(1))
    };
    // Check 2.
    if p1.0 != 2048 {
        return Err(format!("check 2: partition 1 at {}", p1.0));
    }
    // Check 3.
    if p2.1 != 65536 || p2.0 != p1.0 + p1.1 {
        return Err(format!("check 3: partition 2 {p2:?}"));
    }
    if p2.0 % 8 != 0 {
        return Err("partition 2 not 4K aligned".into());
    }
    let p2b = &img[(p2.0 * 512) as usize..((p2.0 + p2.1) * 512) as usize];
    // Partition 2 is the VTOYEFI image byte for byte.
    if p2b != &fx.efi[..] {
        return Err("partition 2 differs from ventoy.disk.img".into());
    }
    // Check 4 (label in the FAT16 BPB) and check 1 (FAT).
    if &p2b[0x2B..0x2B + 7] != b"VTOYEFI" || &p2b[0x36..0x3B] != b"FAT16" {
        return Err("check 4: label".into());
    }
    Ok(Verified { gpt, p1, p2 })
}

pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Copies `[start, start+len)` sectors of `img` into `to`.
pub fn carve(img: &Path, start: u64, len: u64, to: &Path) {
    let mut f = fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(start * 512)).unwrap();
    let mut out = fs::File::create(to).unwrap();
    std::io::copy(&mut f.take(len * 512), &mut out).unwrap();
}

/// Reads a file from the data partition with mtools.
pub fn mtype(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i",
            &format!("{}@@1M", img.display()),
            &format!("::{path}"),
        ])
        .output()
        .expect("mtype");
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Build arguments for the synthetic release of [`fixture`], with a 3 s menu timeout.
pub fn ventoy_args() -> keypack_media_ventoy::VentoyArgs {
    keypack_media_ventoy::VentoyArgs {
        ventoy_dir: Some(fixture().dir.clone()),
        menu_timeout: 3,
        ..Default::default()
    }
}

/// Builds an image of `archive` and `iso` at `out` with [`ventoy_args`] and `seed`.
pub fn build_seeded(archive: &[u8], iso: &Path, out: &Path, seed: u64) {
    let a = ventoy_args();
    keypack_media_ventoy::build_image(
        archive,
        &keypack_media_ventoy::BuildOptions {
            args: &a,
            iso,
            output: out,
            state_dir: None,
            seed: Some(seed),
            ignore_cache: false,
        },
    )
    .expect("build");
}

/// `ventoy.json` settings for the ISO `/{iso}` and the bundle `/keys.tar.gz`.
pub fn update_settings(iso: &str) -> keypack_media_ventoy::json::Settings {
    keypack_media_ventoy::json::Settings {
        iso: format!("/{iso}"),
        archive: "/keys.tar.gz".into(),
        menu_timeout: 3,
        default_image: true,
        text_menu: false,
    }
}

/// A marker no other test or tool writes: the test's pid and the time.
pub fn marker(tag: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("KEYPACK-{tag}-KEY-{}-{nanos:x}", std::process::id()).into_bytes()
}

/// A bundle-like gzip (stored, so the key text is on the image byte for byte) holding a fake
/// OpenSSH private key with `marker` in every line; `lines` sets how many clusters it spans.
pub fn bundle_with(marker: &[u8], lines: usize) -> Vec<u8> {
    let mut text = b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec();
    for i in 0..lines {
        text.extend_from_slice(marker);
        text.extend_from_slice(format!("-{i:06}\n").as_bytes());
    }
    text.extend_from_slice(b"-----END OPENSSH PRIVATE KEY-----\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&text).unwrap();
    gz.finish().unwrap()
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `fsck.fat -n` on partition 1 of `img` (carved into `tmp`): (clean, report).
pub fn fsck_p1(img: &Path, tmp: &Path, tag: &str) -> (bool, String) {
    let v = verify(&fs::read(img).unwrap(), fixture()).unwrap();
    let part = tmp.join(format!("{tag}.p1"));
    carve(img, v.p1.0, v.p1.1, &part);
    let out = run(Command::new("fsck.fat").arg("-n").arg(&part));
    let _ = fs::remove_file(&part);
    out
}
