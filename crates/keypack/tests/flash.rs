//! `keypack flash` end to end on loop devices (root only): a real build of the synthetic
//! Ventoy image written over a device full of stale random bytes, checked from outside
//! (`fsck.fat`, `mtype`, byte comparison, `keypack inspect` of the device); each refusal
//! leaves the device's SHA-256 unchanged; the write is sparse.
//!
//! The partition and mountinfo checks are also unit-tested in `crates/flash` over a fake
//! sysfs and fake mountinfo text (a loop device has no partition nodes here).

#[path = "assurance_support/mod.rs"]
mod support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use support::common::stdout;
use support::*;

/// A loop device this test attached; detached on drop (never one it did not create).
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount this test made; unmounted on drop (before its loop device is detached).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn prereqs(test: &str) -> bool {
    if !ventoy_prereqs(test) {
        return false;
    }
    if !is_root() {
        skip(test, "needs root for loop devices");
        return false;
    }
    for t in ["losetup", "fsck.fat", "mtype"] {
        if !have(t) {
            skip(
                test,
                &format!("{t} is not installed (util-linux, dosfstools, mtools)"),
            );
            return false;
        }
    }
    // Loop devices may be missing (a container without /dev/loop-control).
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().set_len(1 << 20).unwrap();
    if let Err(why) = Loop::attach(probe.path()) {
        skip(test, &format!("cannot attach a loop device: {why}"));
        return false;
    }
    true
}

struct Setup {
    repo: Repo,
    vdir: PathBuf,
    iso: PathBuf,
    state: PathBuf,
}

impl Setup {
    /// A keys repository, the synthetic Ventoy folder, a 4 MiB ISO and a built image.
    fn built() -> Setup {
        Setup::built_with(&[])
    }

    /// [`Setup::built`] with more `keypack build` flags.
    fn built_with(extra: &[&str]) -> Setup {
        let repo = standard_repo();
        let vdir = ventoy_dir(&repo.scratch());
        let iso = repo.scratch().join("keypack-nixos.iso");
        // 2 MiB of noise, a 1 MiB hole, 1 MiB of noise: where the build's copy keeps holes
        // (copy_file_range on btrfs, XFS) the image has a hole inside the ISO's clusters,
        // which must read as zero on the stick; elsewhere the zeros are data.
        fake_iso(&iso, 2 << 20);
        let tail = std::fs::read(&iso).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&iso)
            .unwrap()
            .write_all_at(&tail[..1 << 20], 3 << 20)
            .unwrap();
        let state = repo.tmp.path().join("state");
        let s = Setup {
            repo,
            vdir,
            iso,
            state,
        };
        s.build("alice", extra);
        s
    }

    /// `keypack build` of web1 for `user` (the second run for the same ISO is the keys-only
    /// rebuild of the image in place).
    fn build(&self, user: &str, extra: &[&str]) {
        let root = self.repo.root();
        let out = self
            .cmd(&[
                "build",
                "-H",
                "web1",
                "-U",
                user,
                "--keys-repo",
                root.to_str().unwrap(),
                "-i",
                AGE_KEY,
                "--iso",
                self.iso.to_str().unwrap(),
                "--ventoy-dir",
                self.vdir.to_str().unwrap(),
                "--seed",
                "1",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "keypack build: {}", stderr(&out));
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.repo.command(args);
        c.env("KEYPACK_STATE_DIR", &self.state);
        c
    }

    fn image(&self) -> PathBuf {
        self.state.join("web1/ventoy.img")
    }

    /// Where the ISO starts in `img` (its first 4 KiB, found on a 512-byte boundary).
    fn iso_offset(&self, img: &[u8]) -> u64 {
        let iso = std::fs::read(&self.iso).unwrap();
        (0..img.len() - 4096)
            .step_by(512)
            .find(|&o| img[o..o + 4096] == iso[..4096])
            .expect("the ISO's first block is in the image") as u64
    }

    /// `keypack inspect` of `path` (the image or a stick), which must succeed: its stdout.
    fn inspect(&self, path: &str) -> String {
        let out = self.cmd(&["inspect", path]).output().unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "inspect {path}: {text}{}",
            stderr(&out)
        );
        text
    }

    fn flash(&self, dev: &str, extra: &[&str]) -> Output {
        let mut args = vec!["flash", "-H", "web1", dev];
        args.extend_from_slice(extra);
        self.cmd(&args).output().unwrap()
    }

    /// A file of `len` random bytes (stale data of a used stick).
    fn stale(&self, name: &str, len: u64) -> PathBuf {
        let path = self.repo.tmp.path().join(name);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len;
        let mut buf = vec![0u8; 1 << 20];
        let f = std::fs::File::create(&path).unwrap();
        let mut at = 0u64;
        while at < len {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = (len - at).min(buf.len() as u64) as usize;
            f.write_all_at(&buf[..n], at).unwrap();
            at += n as u64;
        }
        path
    }
}

/// Flips the bits `mask` of the byte at `at` of `dev`, synced.
fn flip(dev: &str, at: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
    f.sync_all().unwrap();
}

fn sha(path: &str) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

/// The `N` of `wrote N bytes` on stderr.
fn written(err: &str) -> u64 {
    let rest = err
        .split("wrote ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary: {err}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn le(b: &[u8], o: usize, n: usize) -> u64 {
    b[o..o + n]
        .iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// (start, sectors) of MBR partitions 1 and 2.
fn partitions(img: &[u8]) -> [(u64, u64); 2] {
    let e = |i: usize| {
        (
            le(img, 0x1BE + 16 * i + 8, 4),
            le(img, 0x1BE + 16 * i + 12, 4),
        )
    };
    [e(0), e(1)]
}

/// Bytes of a FAT volume's boot sectors, FATs and root folder: the FAT16 root folder area,
/// or FAT32's first cluster (where a fresh volume keeps its root folder).
fn fat_meta(img: &[u8], off: usize) -> usize {
    let b = &img[off..off + 512];
    let bps = le(b, 11, 2);
    let fat = if le(b, 22, 2) != 0 {
        le(b, 22, 2)
    } else {
        le(b, 36, 4)
    };
    let root = match le(b, 17, 2) {
        0 => le(b, 13, 1),
        entries => (entries * 32).div_ceil(bps),
    };
    ((le(b, 14, 2) + le(b, 16, 1) * fat + root) * bps) as usize
}

fn fsck(dev: &str, part: (u64, u64), scratch: &Path, name: &str) {
    fsck_with("fsck.fat", dev, part, scratch, name)
}

/// Copies partition `(start, sectors)` of `dev` to `scratch/name` and runs `checker -n` on it.
fn fsck_with(checker: &str, dev: &str, (start, sectors): (u64, u64), scratch: &Path, name: &str) {
    let part = scratch.join(name);
    let f = std::fs::File::create(&part).unwrap();
    let src = std::fs::File::open(dev).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (off, len) = (start * 512, sectors * 512);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off + at).unwrap();
        f.write_all_at(&buf[..n], at).unwrap();
        at += n as u64;
    }
    let out = Command::new(checker).arg("-n").arg(&part).output().unwrap();
    assert!(
        out.status.success(),
        "{checker} -n {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flash_writes_the_image_over_stale_bytes_and_the_stick_checks_clean() {
    let test = "flash_writes_the_image_over_stale_bytes_and_the_stick_checks_clean";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built();
    let img = std::fs::read(s.image()).unwrap();
    let backing = s.stale("stick", img.len() as u64 + (1 << 20));
    let lo = Loop::attach(&backing).unwrap();
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes"]);
    let err = stderr(&out);
    assert!(out.status.success(), "keypack flash: {err}");
    assert!(
        err.contains("transport virtual") && err.contains("partitions: none"),
        "{err}"
    );
    // Not a terminal and no --json: no progress at all (no bar, no lines).
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(!err.contains("writing") && !err.contains('\r'), "{err}");
    assert!(err.contains("did not re-read the partition table"), "{err}");
    let dev = std::fs::read(&lo.0).unwrap();
    // Wherever the image holds data, the device holds the same.
    for (i, (a, b)) in img.chunks(4096).zip(dev.chunks(4096)).enumerate() {
        if a.iter().any(|&x| x != 0) {
            assert!(a == b, "block {i} differs from the image");
        }
    }
    // Must read as zero (as in the image): the first MiB, and both file systems' boot
    // sectors, FATs and root folder.
    let [data, efi] = partitions(&img);
    let mut must = vec![(0usize, 2048 * 512)];
    for (start, _) in [data, efi] {
        let off = (start * 512) as usize;
        must.push((off, off + fat_meta(&img, off)));
    }
    for (a, b) in must {
        assert!(
            img[a..b] == dev[a..b],
            "bytes {a}..{b} differ from the image"
        );
    }
    // Past the image: untouched.
    assert!(dev[img.len()..].iter().any(|&x| x != 0));
    let scratch = s.repo.scratch();
    fsck(&lo.0, data, &scratch, "data.part");
    fsck(&lo.0, efi, &scratch, "efi.part");
    // The ISO reads back whole through an independent FAT reader.
    let iso = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &format!("{}@@1M", lo.0), "::/keypack-nixos.iso"])
        .output()
        .unwrap();
    assert!(iso.status.success(), "mtype: {}", stderr(&iso));
    assert!(
        iso.stdout == std::fs::read(&s.iso).unwrap(),
        "the ISO on the stick differs"
    );
    // keypack inspect reads the stick itself.
    let text = s.inspect(&lo.0);
    assert!(text.contains("etc/ssh/ssh_host_ed25519_key"), "{text}");
    assert!(text.contains("users/alice/.ssh/id_ed25519"), "{text}");
}

/// An image with an exFAT data partition (`--exfat`), flashed over stale random bytes: the
/// free clusters of its allocation bitmap are skipped (stale bytes stay there), everything
/// else is the image's, the stick verifies, `fsck.exfat -n` finds both file systems clean and
/// the ISO reads back whole.
#[test]
fn flash_skips_free_exfat_clusters_and_the_stick_checks_clean() {
    let test = "flash_skips_free_exfat_clusters_and_the_stick_checks_clean";
    if !prereqs(test) {
        return;
    }
    if !have("fsck.exfat") {
        skip(test, "fsck.exfat is not installed (exfatprogs)");
        return;
    }
    let s = Setup::built_with(&["--exfat"]);
    let img = std::fs::read(s.image()).unwrap();
    let len = img.len() as u64;
    // The ISO's zero MiB (2–3 MiB) as a hole of the image, as a copy that keeps holes (btrfs,
    // XFS) leaves it: allocated clusters, so the stick must get zeros there, not stale bytes.
    let at = s.iso_offset(&img);
    assert!(
        img[(at + (2 << 20)) as usize..(at + (3 << 20)) as usize]
            .iter()
            .all(|&b| b == 0)
    );
    rustix::fs::fallocate(
        std::fs::OpenOptions::new()
            .write(true)
            .open(s.image())
            .unwrap(),
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        at + (2 << 20),
        1 << 20,
    )
    .unwrap();
    assert_eq!(std::fs::read(s.image()).unwrap(), img);
    let [data, efi] = partitions(&img);
    assert_eq!(img[0x1BE + 4], 0x07, "partition 1 is not exFAT");
    let backing = s.stale("stick", len);
    let lo = Loop::attach(&backing).unwrap();
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes"]);
    let err = stderr(&out);
    assert!(out.status.success(), "keypack flash: {err}");
    let n = written(&err);
    let dev = std::fs::read(&lo.0).unwrap();
    // The data partition is mostly free space (32 MiB of slack): it was not written.
    let (d0, d1) = ((data.0 * 512) as usize, ((data.0 + data.1) * 512) as usize);
    let stale = dev[d0..d1]
        .chunks(4096)
        .zip(img[d0..d1].chunks(4096))
        .filter(|(a, b)| a != b)
        .count() as u64
        * 4096;
    assert!(stale >= 16 << 20, "only {stale} stale bytes left: {err}");
    assert!(n + stale <= len, "wrote {n}, {stale} stale, image {len}");
    // Wherever the image holds data, the device holds the same.
    for (i, (a, b)) in img.chunks(4096).zip(dev.chunks(4096)).enumerate() {
        if a.iter().any(|&x| x != 0) {
            assert!(a == b, "block {i} differs from the image");
        }
    }
    // The ISO (contiguous on exFAT) reads back whole, its hole as zeros.
    let iso = std::fs::read(&s.iso).unwrap();
    let at = s.iso_offset(&img) as usize;
    assert!(
        dev[at..at + iso.len()] == iso[..],
        "the ISO on the stick differs"
    );
    let scratch = s.repo.scratch();
    fsck_with("fsck.exfat", &lo.0, data, &scratch, "data.part");
    fsck(&lo.0, efi, &scratch, "efi.part");
    let text = s.inspect(&lo.0);
    assert!(text.contains("etc/ssh/ssh_host_ed25519_key"), "{text}");
    let out = s.flash(&lo.0, &["--allow-fixed", "--verify-only"]);
    assert!(out.status.success(), "--verify-only: {}", stderr(&out));
}

/// `--json`'s stdout: the progress lines (each with `phase`) and the summary (the last line).
fn json_out(out: &Output) -> (Vec<serde_json::Value>, serde_json::Value) {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let summary = docs.pop().expect("no JSON on stdout");
    assert!(summary.get("phase").is_none(), "{summary}");
    for d in &docs {
        let (done, total) = (d["bytes_done"].as_u64(), d["bytes_total"].as_u64());
        assert!(
            d["phase"].is_string() && d["bytes_per_second"].is_u64(),
            "{d}"
        );
        assert!(done.unwrap() <= total.unwrap(), "{d}");
    }
    (docs, summary)
}

/// The phases of progress lines, in order, each once.
fn phases(lines: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let p = l["phase"].as_str().unwrap().to_owned();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// The last progress line of `phase`.
fn last_of<'a>(lines: &'a [serde_json::Value], phase: &str) -> &'a serde_json::Value {
    lines.iter().rev().find(|l| l["phase"] == phase).unwrap()
}

#[test]
fn flash_writes_far_less_than_the_image_holds() {
    let test = "flash_writes_far_less_than_the_image_holds";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built();
    let len = std::fs::metadata(s.image()).unwrap().len();
    assert!(len >= 64 << 20, "the image is {len} bytes");
    let backing = s.stale("stick", len);
    let lo = Loop::attach(&backing).unwrap();
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes", "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "keypack flash: {err}");
    let n = written(&err);
    let (progress, doc) = json_out(&out);
    // Progress as JSON lines: the write phase (counting every byte written), then the fsync.
    assert_eq!(phases(&progress), ["write", "sync"], "{progress:?}");
    let w = last_of(&progress, "write");
    assert_eq!(w["bytes_done"], n, "{w}");
    assert_eq!(w["bytes_total"], n, "{w}");
    assert_eq!(progress[0]["bytes_done"], 0, "{progress:?}");
    assert_eq!(doc["written_bytes"], n, "{doc}");
    assert_eq!(doc["image_bytes"], len, "{doc}");
    assert_eq!(doc["partition_table_reread"], false, "{doc}");
    assert_eq!(
        doc["data_bytes"].as_u64().unwrap() + doc["zero_bytes"].as_u64().unwrap(),
        n
    );
    // A 2 MiB ISO, a few KiB of bundle, metadata: a small fraction of the image.
    assert!(n < len / 8, "wrote {n} of {len} bytes: {err}");
    assert!(n > 3 << 20, "wrote {n} bytes: less than the ISO's data");
}

#[test]
fn flash_refuses_and_leaves_the_device_unchanged() {
    let test = "flash_refuses_and_leaves_the_device_unchanged";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built();
    let len = std::fs::metadata(s.image()).unwrap().len();
    let backing = s.stale("stick", len + (1 << 20));
    let lo = Loop::attach(&backing).unwrap();
    let before = sha(&lo.0);
    let refused = |dev: &str, extra: &[&str], want: &str| {
        let out = s.flash(dev, extra);
        let err = stderr(&out);
        assert!(!out.status.success(), "flash {extra:?} succeeded: {err}");
        assert!(
            err.contains(want),
            "flash {extra:?}: want {want:?} in: {err}"
        );
        assert!(!err.contains("wrote "), "{err}");
    };
    // A loop device is neither removable nor on USB.
    refused(
        &lo.0,
        &["--yes"],
        "is a fixed disk: not removable and not on USB",
    );
    refused(&lo.0, &["--yes"], "hint: check `lsblk`");
    // No terminal (stdin is /dev/null) and no --yes.
    refused(
        &lo.0,
        &["--allow-fixed"],
        "without confirmation: no terminal to ask on",
    );
    // Not a block device.
    refused(
        backing.to_str().unwrap(),
        &["--allow-fixed", "--yes"],
        "is not a block device",
    );
    assert_eq!(sha(&lo.0), before, "a refusal changed the device");
    drop(lo);

    let small = s.stale("small", len - (1 << 20));
    let lo = Loop::attach(&small).unwrap();
    let before = sha(&lo.0);
    refused(
        &lo.0,
        &["--allow-fixed", "--yes"],
        &format!("less than the image's {len}"),
    );
    assert_eq!(
        sha(&lo.0),
        before,
        "the too-small refusal changed the device"
    );
    drop(lo);

    // Mounted: an ext4 (or vfat) file system on a loop device, mounted when this machine
    // allows it (a container may not); read-only, so the file system itself writes nothing.
    let Some((mkfs, fstype)) = [("mkfs.ext4", "ext4"), ("mkfs.vfat", "vfat")]
        .into_iter()
        .find(|(t, _)| have(t))
    else {
        return;
    };
    let vol = s.stale("mounted", len + (1 << 20));
    let lo = Loop::attach(&vol).unwrap();
    let mut mk = Command::new(mkfs);
    if fstype == "ext4" {
        mk.args(["-q", "-F"]);
    }
    let mk = mk.arg(&lo.0).output().unwrap();
    assert!(mk.status.success(), "{mkfs}: {}", stderr(&mk));
    let point = s.repo.tmp.path().join("mnt");
    std::fs::create_dir_all(&point).unwrap();
    let m = Command::new("mount")
        .args(["-o", "ro", "-t", fstype, &lo.0])
        .arg(&point)
        .output()
        .unwrap();
    if !m.status.success() {
        eprintln!(
            "KEYPACK-NOTE: {test}: cannot mount here ({}): mounted check only in unit tests",
            stderr(&m).trim()
        );
        return;
    }
    let mounted = Mount(point.clone());
    let before = sha(&lo.0);
    refused(
        &lo.0,
        &["--allow-fixed", "--yes"],
        &format!("is mounted on {}", point.display()),
    );
    assert_eq!(sha(&lo.0), before, "the mounted refusal changed the device");
    drop(mounted);
    drop(lo);
}

/// A GPT image: the backup header and entries at the image's end, outside every partition,
/// reach the stick (the stale bytes there would otherwise be a corrupt backup GPT).
#[test]
fn flash_writes_a_gpt_image_with_its_backup_table() {
    let test = "flash_writes_a_gpt_image_with_its_backup_table";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built_with(&["--gpt"]);
    let img = std::fs::read(s.image()).unwrap();
    assert_eq!(img[0x1BE + 4], 0xEE, "not a GPT image");
    let backing = s.stale("stick", img.len() as u64 + (1 << 20));
    let lo = Loop::attach(&backing).unwrap();
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes"]);
    assert!(out.status.success(), "keypack flash: {}", stderr(&out));
    let dev = std::fs::read(&lo.0).unwrap();
    let tail = img.len() - 33 * 512;
    assert!(img[tail..] == dev[tail..img.len()], "backup GPT differs");
    assert!(img[..1 << 20] == dev[..1 << 20], "first MiB differs");
    let text = s.inspect(&lo.0);
    assert!(text.contains("Ventoy disk, Gpt"), "{text}");
    if have("sfdisk") {
        // sfdisk checks both GPT copies (of the image's size: give it the image region).
        let part = s.repo.scratch().join("gpt.img");
        std::fs::write(&part, &dev[..img.len()]).unwrap();
        let out = Command::new("sfdisk")
            .args(["--verify"])
            .arg(&part)
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            out.status.success() && !text.contains("corrupt"),
            "sfdisk --verify: {text}"
        );
    }
}

/// On a terminal the user must type the device's name: anything else writes nothing.
#[test]
fn flash_on_a_terminal_asks_for_the_device_name() {
    let test = "flash_on_a_terminal_asks_for_the_device_name";
    if !prereqs(test) {
        return;
    }
    if !have("script") {
        skip(test, "script is not installed (util-linux)");
        return;
    }
    let s = Setup::built();
    let len = std::fs::metadata(s.image()).unwrap().len();
    let backing = s.stale("stick", len);
    let lo = Loop::attach(&backing).unwrap();
    let before = sha(&lo.0);
    let on_pty = |answer: &str, term: &str| {
        let cmd = s.cmd(&["flash", "-H", "web1", &lo.0, "--allow-fixed"]);
        let mut line = String::from(KEYPACK);
        for a in cmd.get_args() {
            line.push(' ');
            line.push_str(a.to_str().unwrap());
        }
        let mut pty = Command::new("script");
        pty.args(["-qec", &line, "/dev/null"]).env("TERM", term);
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                pty.env(k, v);
            }
        }
        let mut child = pty
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Answer once the question is up; script passes the line to the terminal.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let shown = on_pty("sdz\n", "dumb");
    assert!(shown.contains("type its name (loop"), "{shown}");
    assert!(shown.contains("not confirmed"), "{shown}");
    assert_eq!(sha(&lo.0), before, "a declined flash changed the device");
    let name = lo.0.trim_start_matches("/dev/").to_owned();
    let shown = on_pty(&format!("{name}\n"), "dumb");
    assert!(shown.contains("wrote "), "{shown}");
    assert!(sha(&lo.0) != before, "a confirmed flash wrote nothing");
    // On a terminal that can draw, the bar shows the phase, the device and the byte counts.
    let shown = on_pty(&format!("{name}\n"), "xterm");
    assert!(shown.contains("wrote "), "{shown}");
    assert!(
        shown.contains(&format!("writing {name}")) && shown.contains("MiB"),
        "no progress bar: {shown:?}"
    );
}

/// The `(start, end)` of `bytes A..B` in a differs message.
fn region_of(err: &str) -> (u64, u64) {
    let rest = err
        .split("in bytes ")
        .nth(1)
        .unwrap_or_else(|| panic!("no region: {err}"));
    let r = rest.split(' ').next().unwrap();
    let (a, b) = r.split_once("..").unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// `--verify-only` after a flash passes; one byte flipped inside the ISO's data fails naming
/// the region holding it; the device's SHA-256 is unchanged by either run.
#[test]
fn flash_verify_only_passes_after_a_flash_and_names_a_flipped_region() {
    let test = "flash_verify_only_passes_after_a_flash_and_names_a_flipped_region";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built();
    let img = std::fs::read(s.image()).unwrap();
    let backing = s.stale("stick", img.len() as u64 + (1 << 20));
    let lo = Loop::attach(&backing).unwrap();
    // Before any flash: stale bytes differ.
    let before = sha(&lo.0);
    let out = s.flash(&lo.0, &["--allow-fixed", "--verify-only"]);
    assert!(!out.status.success(), "verify of stale bytes passed");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(sha(&lo.0), before, "--verify-only changed the device");
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes"]);
    assert!(out.status.success(), "keypack flash: {}", stderr(&out));
    let flashed = sha(&lo.0);
    let out = s.flash(
        &lo.0,
        &["--allow-fixed", "--verify-only", "--json", "--yes"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "--verify-only after a flash: {err}");
    assert!(
        err.contains("verified ") && !err.contains("wrote "),
        "{err}"
    );
    let (progress, doc) = json_out(&out);
    assert_eq!(phases(&progress), ["verify"], "{progress:?}");
    assert_eq!(
        last_of(&progress, "verify")["bytes_done"],
        doc["compared_bytes"],
        "{progress:?}"
    );
    assert_eq!(doc["equal"], true, "{doc}");
    assert!(doc["regions_verified"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(sha(&lo.0), flashed, "--verify-only changed the device");

    // One byte inside the ISO (a data region of the image).
    let at = s.iso_offset(&img) + 100;
    flip(&lo.0, at, 0x01);
    let flipped = sha(&lo.0);
    let out = s.flash(&lo.0, &["--allow-fixed", "--verify-only"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("differs from the image in bytes"), "{err}");
    assert!(err.contains("hint: the stick holds another build"), "{err}");
    let (start, end) = region_of(&err);
    assert!(
        start <= at && at < end,
        "byte {at} is not in {start}..{end}: {err}"
    );
    assert_eq!(sha(&lo.0), flipped, "--verify-only changed the device");
}

/// Bytes written to a loop device so far (sysfs `stat`, field 7: sectors written).
fn bytes_written(dev: &str) -> u64 {
    let name = dev.trim_start_matches("/dev/");
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    let sectors: u64 = stat.split_whitespace().nth(6).unwrap().parse().unwrap();
    sectors * 512
}

/// `--keys-only`: a stick flashed with a build gets only the new bundle after a keys-only
/// rebuild (alice replaced by bob): `keypack inspect` of the stick shows the image's new
/// entries, alice's key is nowhere on the device, a few hundred KiB at most are written. A
/// stick whose ISO differs is refused and left unchanged.
#[test]
fn flash_keys_only_switches_the_new_bundle_onto_a_stick_of_the_same_build() {
    let test = "flash_keys_only_switches_the_new_bundle_onto_a_stick_of_the_same_build";
    if !prereqs(test) {
        return;
    }
    let s = Setup::built();
    let len = std::fs::metadata(s.image()).unwrap().len();
    let backing = s.stale("stick", len + (1 << 20));
    let lo = Loop::attach(&backing).unwrap();
    // The counters of a loop device outlive its attachments: differences only.
    let start = bytes_written(&lo.0);
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes"]);
    assert!(out.status.success(), "keypack flash: {}", stderr(&out));
    let first = bytes_written(&lo.0);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.image()).unwrap());
    s.build("bob", &[]);
    assert_eq!(
        ino,
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.image()).unwrap()),
        "the rebuild was not keys-only"
    );
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes", "--keys-only", "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "flash --keys-only: {err}");
    let (_, doc) = json_out(&out);
    assert_eq!(doc["same_files"][0], "/keypack-nixos.iso", "{doc}");
    let wrote = bytes_written(&lo.0) - first;
    assert!(
        wrote < 512 << 10,
        "--keys-only wrote {wrote} bytes (the full flash wrote {}): {err}",
        first - start
    );
    eprintln!(
        "KEYPACK-NOTE: {test}: --keys-only wrote {wrote} bytes, the full flash {}",
        first - start
    );
    let on_stick = s.inspect(&lo.0);
    assert!(on_stick.contains("users/bob/.ssh/id_ed25519"), "{on_stick}");
    assert!(!on_stick.contains("users/alice/"), "{on_stick}");
    // The entries and fingerprints are the image's (lines naming the file itself aside).
    let entries = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("SHA256:"))
            .map(str::to_owned)
            .collect()
    };
    let want = entries(&s.inspect(s.image().to_str().unwrap()));
    assert!(!want.is_empty(), "no fingerprints shown");
    assert_eq!(entries(&on_stick), want);
    let dev = std::fs::read(&lo.0).unwrap();
    let alice = Secrets::from_pems(&[("alice", s.repo.alice.private.as_str())]);
    assert_eq!(
        alice.find_deep(&dev),
        None,
        "alice's key is still on the stick"
    );

    // Another ISO on the stick (one byte of it changed): refused, nothing written.
    let at = s.iso_offset(&std::fs::read(s.image()).unwrap()) + 7;
    flip(&lo.0, at, 0x80);
    let before = sha(&lo.0);
    let out = s.flash(&lo.0, &["--allow-fixed", "--yes", "--keys-only"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "--keys-only onto another ISO: {err}");
    assert!(
        err.contains("does not hold the same build as the image: its /keypack-nixos.iso differs"),
        "{err}"
    );
    assert!(err.contains("flash it without --keys-only"), "{err}");
    assert_eq!(
        sha(&lo.0),
        before,
        "a refused --keys-only changed the device"
    );
}
