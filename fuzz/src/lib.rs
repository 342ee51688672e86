//! Bodies of keypack's fuzz targets (issue 7, SECURITY.md "Fuzzing").
//!
//! Where it sits: each `fuzz_targets/<name>.rs` is one line calling the function of the same
//! name here; `crates/keypack/tests/assurance_fuzz_regressions.rs` includes this file too and
//! replays every input kept under `fuzz/regressions/<name>/` on each `cargo test`.
//! What it does: feeds untrusted bytes to the parsers that read them in production: the sops
//! stores and the decrypt walk (with the fixed throwaway test identity), the nix-keys resolver
//! (on a tree generated from the input), the `ventoy.json` merge, the MBR/GPT + FAT readers
//! behind `keypack inspect IMAGE`, and the tar reader behind `keypack inspect BUNDLE`.
//! What it does not: fuzz `load-keys`, which has no archive parser (the kernel or Ventoy's
//! busybox tar unpacks; load-keys only walks the resulting files), or the age/YubiKey plugin
//! protocol (the `age` crate's).
//! Why a shared file: a crash found by the fuzzer becomes a regression test by copying its
//! input into `fuzz/regressions/<target>/`, with no new code.

use std::io::Write;
use std::path::Path;

/// The sops store chosen by the first byte, and the rest of the input.
fn split_format(data: &[u8]) -> Option<(keypack_sops::Format, &[u8])> {
    use keypack_sops::Format;
    let (&b, rest) = data.split_first()?;
    let f = match b % 5 {
        0 => Format::Yaml,
        1 => Format::Json,
        2 => Format::Dotenv,
        3 => Format::Ini,
        _ => Format::Binary,
    };
    Some((f, rest))
}

/// First byte: store (0 YAML, 1 JSON, 2 dotenv, 3 INI, 4 binary, modulo 5); rest: the file.
pub fn sops_parse(data: &[u8]) {
    let Some((format, bytes)) = split_format(data) else {
        return;
    };
    let _ = keypack_sops::looks_like_sops(bytes);
    let _ = keypack_sops::looks_like_age(bytes);
    if let Ok(file) = keypack_sops::SopsFile::parse(bytes, format) {
        for e in file.age_entries() {
            let _ = (e.recipient.len(), e.enc.len());
        }
    }
}

/// The throwaway X25519 identity every sops test vector is encrypted to (public material of
/// the test suite, not a secret of anyone).
const IDENTITY: &str = include_str!("../../crates/keypack/tests/fixtures/age-key.txt");

fn identity() -> age::x25519::Identity {
    let line = IDENTITY
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("identity line");
    line.parse().expect("identity parses")
}

/// Same input as [`sops_parse`]; parses, unwraps the data key with the fixed identity, checks
/// the MAC and walks the tree decrypting every value.
pub fn sops_decrypt(data: &[u8]) {
    let Some((format, bytes)) = split_format(data) else {
        return;
    };
    let id = identity();
    if let Ok(dec) = keypack_sops::decrypt_with(bytes, format, &[&id as &dyn age::Identity]) {
        for f in [
            "ssh_host_ed25519_key",
            "deploy_key_ed25519",
            "id_ed25519",
            "data",
        ] {
            let _ = dec.field(f);
        }
        let _ = dec.binary_data();
    }
}

/// Input: records separated by NUL, each `PATH \x01 CONTENT`; `CONTENT` starting with
/// `@link:` makes a symlink to the rest. Paths keep `[A-Za-z0-9._/-]`, no `..`, at most 4
/// levels, at most 24 records. The tree is resolved for host `web1` and users `alice`, `bob`
/// (and each alone), and every resolved file is read through the repository.
pub fn repo_resolve(data: &[u8]) {
    let Ok(tmp) = tempfile::Builder::new().prefix("keypack-fuzz-").tempdir_in(
        if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        },
    ) else {
        return;
    };
    let root = tmp.path().join("keys");
    let _ = std::fs::create_dir(&root);
    for rec in data.split(|b| *b == 0).take(24) {
        let mut parts = rec.splitn(2, |b| *b == 1);
        let raw = parts.next().unwrap_or_default();
        let content = parts.next().unwrap_or_default();
        let path: String = raw
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_alphanumeric() || "._/-".contains(*c))
            .collect();
        let path = path.trim_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            continue;
        }
        if path.split('/').count() > 4 {
            continue;
        }
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Some(target) = content.strip_prefix(b"@link:") {
            let target = String::from_utf8_lossy(target).into_owned();
            let _ = std::os::unix::fs::symlink(target, &full);
        } else if let Ok(mut f) = std::fs::File::create(&full) {
            let _ = f.write_all(content);
        }
    }
    let Ok(repo) = keypack_repo::KeysRepo::open(&root) else {
        return;
    };
    let host = keypack_layout::HostName::new("web1").expect("valid");
    let alice = keypack_layout::UserName::new("alice").expect("valid");
    let bob = keypack_layout::UserName::new("bob").expect("valid");
    for users in [vec![], vec![alice.clone()], vec![alice, bob]] {
        if let Ok(sources) = repo.resolve(&host, &users) {
            for s in sources {
                assert!(
                    s.path.starts_with(repo.root()),
                    "resolved {} outside the repository",
                    s.path.display()
                );
                let _ = repo.read_file(&s.path);
            }
        }
    }
}

/// Input: an existing `ventoy.json` (first byte also picks the flags). A successful merge must
/// give JSON that parses and holds our injection entry, and merging that again must keep it.
pub fn ventoy_json(data: &[u8]) {
    use keypack_media_ventoy::json;
    let flags = data.first().copied().unwrap_or(0);
    let settings = json::Settings {
        iso: "/keypack-nixos.iso".into(),
        archive: "/keys.tar.gz".into(),
        menu_timeout: u32::from(flags >> 2),
        default_image: flags & 1 == 1,
        text_menu: flags & 2 == 2,
    };
    if let Ok(v) = json::parse(data) {
        let _ = json::injection_entries(&v);
    }
    let ours = |bytes: &[u8]| {
        let v = json::parse(bytes).expect("merge output parses");
        json::injection_entries(&v)
            .iter()
            .any(|(_, image, archive)| image == "/keypack-nixos.iso" && archive == "/keys.tar.gz")
    };
    if let Ok((out, _warnings)) = settings.merge(data) {
        assert!(ours(&out), "merge lost our injection entry");
        let (again, _) = settings.merge(&out).expect("merging a merged file");
        assert!(ours(&again), "second merge lost our injection entry");
    }
}

/// Largest sparse disk [`ventoy_inspect`] makes.
pub const INSPECT_DISK_MAX: u64 = 256 << 20;

/// Input: a little-endian `u32` disk size in sectors (capped at 256 MiB), then records of a
/// little-endian `u32` sector number and 512 bytes, written into a sparse file of that size
/// (sector numbers modulo it); then `keypack inspect IMAGE`'s reader runs on it (MBR/GPT layout
/// check, VTOYEFI and data FAT readers, ventoy.json, the bundle's tar reader).
pub fn ventoy_inspect(data: &[u8]) {
    use std::os::unix::fs::FileExt;
    if data.len() < 4 {
        return;
    }
    let sectors = u64::from(u32::from_le_bytes(data[..4].try_into().expect("4 bytes")))
        .clamp(1, INSPECT_DISK_MAX / 512);
    let Ok(tmp) = tempfile::Builder::new()
        .prefix("keypack-fuzz-")
        .tempfile_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
    else {
        return;
    };
    let file = tmp.as_file();
    if file.set_len(sectors * 512).is_err() {
        return;
    }
    for rec in data[4..].chunks(516) {
        if rec.len() < 5 {
            break;
        }
        let n = u64::from(u32::from_le_bytes(rec[..4].try_into().expect("4 bytes"))) % sectors;
        let room = ((sectors - n) * 512) as usize;
        let body = &rec[4..];
        let _ = file.write_all_at(&body[..body.len().min(room)], n * 512);
    }
    if let Ok(info) = keypack_media_ventoy::inspect(tmp.path()) {
        for (_, bytes) in &info.archives {
            if let Ok(entries) = keypack_bundle::read_archive(bytes) {
                let _ = keypack_bundle::archive_problems(&entries);
            }
        }
    }
}

/// Input: a `keys.tar.gz` as `keypack inspect BUNDLE` reads it.
pub fn bundle_read(data: &[u8]) {
    if let Ok(entries) = keypack_bundle::read_archive(data) {
        let _ = keypack_bundle::archive_problems(&entries);
        for e in &entries {
            assert!(
                !e.path.contains('\n'),
                "an entry path with a raw newline reached the listing"
            );
        }
    }
}
