//! Shared helpers of the `assurance_*` tests (issue 7, `SECURITY.md` "How to verify"): an
//! isolated environment (HOME, XDG folders, TMPDIR, state folder inside one temp tree), the
//! key-byte scanner (raw, hex and base64 forms of every test key, searched also inside every
//! gzip stream a file holds), and the synthetic Ventoy release folder of `build_ventoy.rs`.
//!
//! Does not decide what a test asserts: each `assurance_*.rs` file states its claim.

#![allow(dead_code, unused_imports)]

#[path = "../cli/common.rs"]
pub mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memchr::memmem::Finder;

pub use common::{AGE_KEY, KEYPACK, Repo, have_sops, skip, standard_repo, stderr};

/// `true` when `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `sops` plus the tools the synthetic Ventoy folder needs; prints the skip marker otherwise.
pub fn ventoy_prereqs(test: &str) -> bool {
    if !have_sops(test) {
        return false;
    }
    for t in ["xz", "mkfs.vfat", "mmd", "mcopy", "ssh-keygen"] {
        if !have(t) {
            skip(
                test,
                &format!("{t} is not installed (xz-utils, dosfstools, mtools, openssh-client)"),
            );
            return false;
        }
    }
    true
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether keypack can run in a private mount namespace with fresh `/tmp`, `/var/tmp` and
/// `/dev/shm` (root, and `unshare --mount --propagation private` works: it does not inside a
/// chroot, whose `/` is no mount point). Otherwise the tests scan the machine's temp folders
/// for files changed during the test instead, and say so once, loudly.
pub fn private_tmp() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        if !is_root() {
            return false;
        }
        let works = Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            eprintln!(
                "KEYPACK-NOTE: no private mount namespace here (a chroot?): the temp-folder scans \
                 fall back to files changed during the test"
            );
        }
        works
    })
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Ventoy version of the synthetic release folders: the current release.
pub const VENTOY_VERSION: &str = "1.1.18";

/// [`ventoy_dir_version`] of [`VENTOY_VERSION`].
pub fn ventoy_dir(root: &Path) -> PathBuf {
    ventoy_dir_version(root, VENTOY_VERSION)
}

/// A synthetic Ventoy release folder `ventoy-{version}` (laid out like the Linux tarball's)
/// made with xz, mkfs.vfat and mtools only (the same recipe as `build_ventoy.rs` and
/// `plugins/ventoy/tests`); `ventoy/version` and the disk image's `grub/grub.cfg` both carry
/// `version`.
pub fn ventoy_dir_version(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("ventoy-{version}"));
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::create_dir_all(dir.join("ventoy")).unwrap();
    let mut boot = vec![0u8; 512];
    boot[..3].copy_from_slice(&[0xEB, 0x63, 0x90]);
    boot[0x190..0x1A0].copy_from_slice(&[
        0x56, 0x54, 0x00, 0x47, 0x65, 0x00, 0x48, 0x44, 0x00, 0x52, 0x64, 0x00, 0x20, 0x45, 0x72,
        0x0D,
    ]);
    boot[0x1FE] = 0x55;
    boot[0x1FF] = 0xAA;
    std::fs::write(dir.join("boot/boot.img"), &boot).unwrap();
    std::fs::write(dir.join("boot/core.img"), vec![0u8; 2047 * 512]).unwrap();
    sh(Command::new("xz")
        .args(["-1", "-T1"])
        .arg(dir.join("boot/core.img")));
    let efi = dir.join("ventoy/ventoy.disk.img");
    std::fs::File::create(&efi)
        .unwrap()
        .set_len(65536 * 512)
        .unwrap();
    sh(Command::new("mkfs.vfat")
        .args(["-F", "16", "-s", "1", "-n", "VTOYEFI", "--invariant"])
        .arg(&efi));
    let i = efi.to_str().unwrap();
    for d in ["ventoy", "grub"] {
        sh(Command::new("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", i, &format!("::/{d}")]));
    }
    let src = root.join("cfg");
    std::fs::write(&src, format!("set VENTOY_VERSION=\"{version}\"\n")).unwrap();
    for dst in ["::/grub/grub.cfg", "::/ventoy/ventoy.cpio"] {
        sh(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", i])
            .arg(&src)
            .arg(dst));
    }
    std::fs::remove_file(&src).unwrap();
    sh(Command::new("xz").args(["-1", "-T1"]).arg(&efi));
    std::fs::write(dir.join("ventoy/version"), format!("{version}\n")).unwrap();
    dir
}

/// `len` bytes of xorshift noise (a fake ISO; no gzip stream on purpose is not guaranteed, the
/// scanner tolerates false gzip headers).
pub fn fake_iso(path: &Path, len: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x1234_5678;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// One searchable form of a secret.
pub struct Needle {
    pub label: String,
    pub bytes: Vec<u8>,
}

/// Every form of the test keys a leak could take.
#[derive(Default)]
pub struct Secrets {
    pub needles: Vec<Needle>,
}

/// The 32-byte ed25519 seed of an unencrypted OpenSSH private key (PEM text), and its offset
/// in the decoded key blob.
pub fn ed25519_seed(pem: &str) -> (Vec<u8>, usize) {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = STANDARD.decode(b64.trim()).expect("PEM body is base64");
    struct R<'a>(&'a [u8], usize);
    impl<'a> R<'a> {
        fn u32(&mut self) -> u32 {
            let v = u32::from_be_bytes(self.0[self.1..self.1 + 4].try_into().unwrap());
            self.1 += 4;
            v
        }
        fn string(&mut self) -> &'a [u8] {
            let n = self.u32() as usize;
            let s = &self.0[self.1..self.1 + n];
            self.1 += n;
            s
        }
    }
    let magic = b"openssh-key-v1\0";
    assert!(blob.starts_with(magic));
    let mut r = R(&blob, magic.len());
    r.string(); // cipher
    r.string(); // kdf
    r.string(); // kdf options
    assert_eq!(r.u32(), 1, "one key");
    r.string(); // public key
    let private_len = r.u32() as usize;
    let private_start = r.1;
    let mut p = R(&blob[..private_start + private_len], private_start);
    p.u32();
    p.u32();
    assert_eq!(p.string(), b"ssh-ed25519");
    p.string(); // public
    let n = p.u32() as usize;
    assert_eq!(n, 64);
    let at = p.1;
    (blob[at..at + 32].to_vec(), at)
}

impl Secrets {
    /// The forms of the given OpenSSH private keys (name, PEM): the base64 body lines of the
    /// PEM that are unique to the key (line 1, with the check integers, and every line that
    /// encodes seed bytes; line 0 is the same for every ed25519 key and the last lines hold the
    /// public key, comment and padding), and the ed25519 seed raw, as hex (both cases) and as
    /// base64 at each of the three alignments.
    pub fn from_pems(keys: &[(&str, &str)]) -> Secrets {
        let mut s = Secrets::default();
        for (name, pem) in keys {
            let (seed, at) = ed25519_seed(pem);
            let (first, last) = (at * 4 / 3, (at + 32) * 4 / 3 + 1);
            let mut char_pos = 0;
            for (i, line) in pem.lines().filter(|l| !l.starts_with("-----")).enumerate() {
                let range = char_pos..char_pos + line.len();
                char_pos += line.len();
                let holds_seed = range.start <= last && first < range.end;
                if (i == 1 || holds_seed) && line.len() >= 24 {
                    s.push(format!("{name}: PEM line {i}"), line.as_bytes().to_vec());
                }
            }
            s.add_bytes(&format!("{name}: ed25519 seed"), &seed);
        }
        s
    }

    /// Adds `bytes` raw, as hex and as base64 at three alignments.
    pub fn add_bytes(&mut self, label: &str, bytes: &[u8]) {
        self.push(format!("{label} (raw)"), bytes.to_vec());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.push(format!("{label} (hex)"), hex.clone().into_bytes());
        self.push(format!("{label} (HEX)"), hex.to_uppercase().into_bytes());
        for off in 0..3 {
            let part = &bytes[off..];
            let part = &part[..part.len() - part.len() % 3];
            self.push(
                format!("{label} (base64+{off})"),
                STANDARD.encode(part).into_bytes(),
            );
        }
    }

    /// Adds one literal needle (a PIN, a marker).
    pub fn push(&mut self, label: String, bytes: Vec<u8>) {
        assert!(
            bytes.len() >= 16,
            "needle {label} is too short to be meaningful"
        );
        self.needles.push(Needle { label, bytes });
    }

    /// The label of the first needle found in `hay`, searched as is.
    ///
    /// Fast enough in a debug build for 100 MiB images: all-zero 4 KiB blocks are skipped, and
    /// only 8-byte-aligned words are looked up in a table of every needle's eight 8-byte
    /// windows (every needle is at least 16 bytes, so any occurrence covers an aligned word).
    pub fn find_raw(&self, hay: &[u8]) -> Option<&str> {
        use std::collections::HashMap;
        let mut table: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
        for (ni, n) in self.needles.iter().enumerate() {
            for shift in 0..8.min(n.bytes.len() - 7) {
                let w = u64::from_le_bytes(n.bytes[shift..shift + 8].try_into().unwrap());
                table.entry(w).or_default().push((ni, shift));
            }
        }
        const BLOCK: usize = 4096;
        for (bi, block) in hay.chunks(BLOCK).enumerate() {
            let words = block.chunks_exact(8);
            let zero = block.len() == BLOCK && block.chunks_exact(8).all(|w| w == [0u8; 8]);
            if zero {
                continue;
            }
            for (wi, w) in words.enumerate() {
                let word = u64::from_le_bytes(w.try_into().unwrap());
                let Some(cands) = table.get(&word) else {
                    continue;
                };
                let at = bi * BLOCK + wi * 8;
                for &(ni, shift) in cands {
                    let n = &self.needles[ni].bytes;
                    if let Some(start) = at.checked_sub(shift)
                        && hay.get(start..start + n.len()) == Some(n.as_slice())
                    {
                        return Some(self.needles[ni].label.as_str());
                    }
                }
            }
        }
        None
    }

    /// Like [`Secrets::find_raw`], and also inside every gzip stream that starts anywhere in
    /// `hay` (a `keys.tar.gz` on a FAT image, a `keys.cpio.gz`): returns where it was found.
    pub fn find_deep(&self, hay: &[u8]) -> Option<String> {
        if let Some(l) = self.find_raw(hay) {
            return Some(l.to_owned());
        }
        for at in Finder::new(&[0x1f, 0x8b, 0x08]).find_iter(hay) {
            let inner = inflate_prefix(&hay[at..], 64 << 20);
            if inner.is_empty() {
                continue;
            }
            if let Some(l) = self.find_raw(&inner) {
                return Some(format!("{l}, in the gzip stream at offset {at}"));
            }
        }
        None
    }
}

/// Inflates as much of a gzip stream as decodes (up to `cap` bytes), ignoring a bad tail.
pub fn inflate_prefix(bytes: &[u8], cap: usize) -> Vec<u8> {
    let mut dec = flate2::read::GzDecoder::new(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < cap {
        match dec.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Every regular file under `root` (not following symlinks).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Every file under `root` holding a secret: (path, what was found).
pub fn files_with_secrets(root: &Path, secrets: &Secrets) -> Vec<(PathBuf, String)> {
    files_under(root)
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            secrets.find_deep(&bytes).map(|l| (p, l))
        })
        .collect()
}

/// Files in the machine-wide temp folders (`/tmp`, `/var/tmp`, `/dev/shm`) modified since
/// `since`, outside `exclude`, that hold a secret: catches a child or library that ignores
/// `TMPDIR`. Bounded: depth 6, files up to 256 MiB.
pub fn world_temp_files_with_secrets(
    since: SystemTime,
    exclude: &Path,
    secrets: &Secrets,
) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    let mut stack: Vec<(PathBuf, u32)> = ["/tmp", "/var/tmp", "/dev/shm"]
        .iter()
        .map(|p| (PathBuf::from(p), 0))
        .collect();
    while let Some((dir, depth)) = stack.pop() {
        if dir.starts_with(exclude) || depth > 6 {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push((e.path(), depth + 1));
            } else if meta.is_file()
                && meta.len() <= 256 << 20
                && meta.modified().is_ok_and(|m| m >= since)
                && !e.path().starts_with(exclude)
                && let Ok(bytes) = std::fs::read(e.path())
                && let Some(l) = secrets.find_deep(&bytes)
            {
                hits.push((e.path(), l));
            }
        }
    }
    hits
}

/// The isolated environment of one keypack run: every folder a process could write to by
/// convention lives under `root`.
pub struct Isolated {
    pub root: PathBuf,
}

impl Isolated {
    pub const DIRS: [&'static str; 8] = [
        "home", "config", "cache", "state", "data", "runtime", "tmp", "out",
    ];

    pub fn new(root: PathBuf) -> Isolated {
        for d in Self::DIRS {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("runtime"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::set_permissions(root.join("out"), std::fs::Permissions::from_mode(0o700)).unwrap();
        Isolated { root }
    }

    /// `KEYPACK_STATE_DIR` (not created: keypack must create it 0700 itself).
    pub fn state(&self) -> PathBuf {
        self.root.join("kpstate")
    }

    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Where a namespaced run leaves a copy of what it wrote to `/tmp`, `/var/tmp` and
    /// `/dev/shm` (see [`Isolated::keypack`]).
    pub fn world(&self) -> PathBuf {
        self.root.join("world")
    }

    /// [`Isolated::keypack`], and as root in a private mount namespace: keypack runs in a private mount namespace whose `/tmp`, `/var/tmp` and
    /// `/dev/shm` are fresh, empty tmpfs mounts (the test tree, which lives under `/tmp`, is
    /// bound back into place). When keypack exits, everything written there is copied into
    /// [`Isolated::world`], so the tree scan sees every file a child or library put into the
    /// machine-wide temp folders, whatever its mtime or size, and nothing else on the machine
    /// is read. Every path keypack is given must then lie in the test tree or outside the
    /// temp folders.
    pub fn keypack_private_tmp(
        &self,
        args: &[&str],
        path: &std::ffi::OsStr,
        umask0: bool,
    ) -> Command {
        if private_tmp() {
            return self.keypack_namespaced(args, path, umask0);
        }
        self.keypack(args, path, umask0)
    }

    fn keypack_namespaced(&self, args: &[&str], path: &std::ffi::OsStr, umask0: bool) -> Command {
        // The top folder under /tmp that holds the test tree (tempfile's folder).
        let tree = match self.root.strip_prefix("/tmp") {
            Ok(rest) => rest
                .components()
                .next()
                .map(|c| Path::new("/tmp").join(c))
                .expect("a folder below /tmp"),
            Err(_) => self.root.clone(),
        };
        std::fs::create_dir_all(self.world()).unwrap();
        const SCRIPT: &str = r#"set -eu
tree="$1"; world="$2"; umask0="$3"; shift 3
kp_path="$PATH"; PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o mode=0700 keypack-test-handle /mnt
mkdir /mnt/tree
mount --bind "$tree" /mnt/tree
for d in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o mode=1777 keypack-test-world "$d"; done
mkdir -p "$tree"
mount --bind /mnt/tree "$tree"
rc=0
if [ "$umask0" = 1 ]; then (umask 000; PATH="$kp_path"; exec "$@") || rc=$?; else (PATH="$kp_path"; exec "$@") || rc=$?; fi
for d in tmp var/tmp dev/shm; do
  mkdir -p "$world/$d"
  for f in "/$d"/* "/$d"/.[!.]* "/$d"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    [ "$f" = "$tree" ] && continue
    cp -a "$f" "$world/$d/"
  done
done
exit "$rc"
"#;
        let inner = self.keypack(args, path, false);
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "sh",
        ])
        .arg(&tree)
        .arg(self.world())
        .arg(if umask0 { "1" } else { "0" })
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .current_dir(&self.root)
        .stdin(std::process::Stdio::null());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// `keypack ARGS` (through `sh -c 'umask 000; exec …'` when `umask0`) with a clean
    /// environment pointing every conventional folder into the tree, `PATH` = `path`.
    pub fn keypack(&self, args: &[&str], path: &std::ffi::OsStr, umask0: bool) -> Command {
        let mut cmd = if umask0 {
            let mut c = Command::new("sh");
            c.args(["-c", "umask 000; exec \"$0\" \"$@\"", KEYPACK]);
            c
        } else {
            Command::new(KEYPACK)
        };
        let r = &self.root;
        cmd.args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", r.join("home"))
            .env("XDG_CONFIG_HOME", r.join("config"))
            .env("XDG_CACHE_HOME", r.join("cache"))
            .env("XDG_STATE_HOME", r.join("state"))
            .env("XDG_DATA_HOME", r.join("data"))
            .env("XDG_RUNTIME_DIR", r.join("runtime"))
            .env("TMPDIR", r.join("tmp"))
            .env("KEYPACK_STATE_DIR", self.state())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .current_dir(r)
            .stdin(std::process::Stdio::null());
        cmd
    }
}

/// The test keys of a [`Repo`] as (name, PEM).
pub fn repo_keys(repo: &Repo) -> Vec<(&'static str, &str)> {
    vec![
        ("host", repo.host.private.as_str()),
        ("deploy", repo.deploy.private.as_str()),
        ("alice", repo.alice.private.as_str()),
        ("bob", repo.bob.private.as_str()),
    ]
}

/// Whether the `keypack` binary offers `--media NAME`.
pub fn has_medium(name: &str) -> bool {
    let out = Command::new(KEYPACK)
        .arg("plugins")
        .output()
        .expect("keypack plugins");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Mode bits of a path (no symlink following).
pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Asserts that every file of `hits` (the files holding a secret) is 0600 and sits in a folder
/// others cannot list or enter; returns how many there were.
pub fn assert_key_files_private(hits: &[(PathBuf, String)]) -> usize {
    for (p, what) in hits {
        assert_eq!(
            mode(p),
            0o600,
            "{} holds key bytes ({what}) with mode {:04o}",
            p.display(),
            mode(p)
        );
        let parent = p.parent().unwrap();
        assert_eq!(
            mode(parent) & 0o007,
            0,
            "{} holds key bytes and its folder {} is world-accessible ({:04o})",
            p.display(),
            parent.display(),
            mode(parent)
        );
    }
    hits.len()
}

/// Writes a fake kernel and base initrd for the initrd medium. The base is not named
/// `initrd.img`: that name is the joined initrd (keys included) older runners left in a state
/// folder, which the runner now wipes, and a scan must not confuse the two.
pub fn fake_kernel_and_initrd(dir: &Path) -> (PathBuf, PathBuf) {
    let k = dir.join("vmlinuz");
    let i = dir.join("base-initrd.img");
    std::fs::write(&k, b"not a kernel, only a file the initrd medium points at").unwrap();
    std::fs::write(&i, b"070701 not an initrd either").unwrap();
    (k, i)
}

/// `sops decrypt --extract '["FIELD"]' FILE` with the identity file `identity`, read from the
/// real `sops`'s stdout (a pipe into the test; no file): how the lifecycle assurance tests
/// learn the keys keypack generated, after the run.
pub fn sops_field_as(file: &Path, field: &str, identity: &str) -> String {
    let out = Command::new("sops")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", identity)
        .args(["decrypt", "--extract", &format!("[\"{field}\"]")])
        .arg(file)
        .output()
        .expect("sops runs");
    assert!(
        out.status.success(),
        "sops decrypt {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The age recipient sops-nix derives from an OpenSSH ed25519 public key line.
pub fn age_recipient_of(public: &str) -> String {
    keypack_pins::PublicKey::parse_openssh(public)
        .unwrap()
        .age_recipient()
        .unwrap()
}

/// A YAML sops file of `plain` (YAML) encrypted by the real `sops` to `recipients` (comma
/// separated), with `plugin_dir` first on PATH when it is given (a plugin recipient).
pub fn sops_encrypt_yaml_to(
    plain: &str,
    recipients: &str,
    scratch: &Path,
    plugin_dir: Option<&Path>,
) -> Vec<u8> {
    let input = scratch.join(format!("plain-{}.yaml", std::process::id()));
    std::fs::write(&input, plain).unwrap();
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(d) = plugin_dir {
        let mut parts = vec![d.to_path_buf()];
        parts.extend(std::env::split_paths(&path));
        path = std::env::join_paths(parts).unwrap();
    }
    let out = Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("PATH", path)
        .args(["encrypt", "--age", recipients])
        .args(["--input-type", "yaml", "--output-type", "yaml"])
        .arg(&input)
        .output()
        .expect("sops runs");
    std::fs::remove_file(&input).unwrap();
    assert!(
        out.status.success(),
        "sops encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
