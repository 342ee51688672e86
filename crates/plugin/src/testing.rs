//! Test helpers for plugin crates (feature `testing`), in the spirit of ripgrep's `testutil.rs`.
//!
//! Where it sits: only in `[dev-dependencies]` of plugin crates (`keypack-plugin = { …,
//! features = ["testing"] }`); never compiled into the `keypack` binary.
//! What it does: makes a [`SealedBundle`] from a throwaway ed25519 key, and checks a medium
//! against the seam's contract with [`check_medium`].
//! What it does not: touch real keys, run a boot (that is the runner's job), or know any
//! particular medium.
//! Why: every medium must pass the same conformance check, so the contract lives here once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keypack_bundle::{BundleBuilder, SealedBundle};
use keypack_layout::{HostName, KeyRole, UserName};
use secrecy::SecretSlice;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::{BootDescription, BuildInputs, Medium};

/// A fresh OpenSSH ed25519 private key (random; for tests only).
pub fn throwaway_key() -> SecretSlice<u8> {
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .expect("generating an ed25519 key");
    let text = key
        .to_openssh(LineEnding::LF)
        .expect("encoding an ed25519 key");
    SecretSlice::from(text.as_bytes().to_vec())
}

/// A sealed bundle with a throwaway host key, a deploy key and one key per user in `users`.
pub fn sealed_bundle_with_users(users: &[&str]) -> SealedBundle {
    let mut builder = BundleBuilder::new();
    builder
        .add_key(KeyRole::Host, throwaway_key(), None)
        .expect("host key");
    builder
        .add_key(KeyRole::Deploy, throwaway_key(), None)
        .expect("deploy key");
    for user in users {
        let name = UserName::new(user).expect("valid user name");
        builder
            .add_key(KeyRole::User(name), throwaway_key(), None)
            .expect("user key");
    }
    builder.seal(0).expect("sealing the bundle")
}

/// A sealed bundle with a throwaway host key only.
pub fn sealed_bundle() -> SealedBundle {
    sealed_bundle_with_users(&[])
}

/// The host name every helper here uses.
pub fn test_host() -> HostName {
    HostName::new("testhost").expect("valid host name")
}

/// Parses `args` (without a program name) as the flags the medium adds to `keypack build`.
pub fn medium_matches(medium: &dyn Medium, args: &[&str]) -> clap::ArgMatches {
    let cmd = medium.augment_args(clap::Command::new("build").no_binary_name(true));
    cmd.try_get_matches_from(args)
        .unwrap_or_else(|e| panic!("{}: flags {args:?} rejected: {e}", medium.name()))
}

/// Options for [`check_medium_with`].
#[derive(Default)]
pub struct Check<'a> {
    /// The medium's own flags (`--ventoy-dir …`).
    pub args: Vec<String>,
    /// The ISO to hand over, if the medium needs one.
    pub iso: Option<&'a Path>,
}

/// Builds `medium` into `dir/out/` (created 0700) and returns the description.
pub fn build_into(
    medium: &dyn Medium,
    bundle: &SealedBundle,
    dir: &Path,
    check: &Check<'_>,
    seed: Option<u64>,
) -> BootDescription {
    let out_dir = dir.join("out");
    let state_dir = dir.join("state");
    for d in [&out_dir, &state_dir] {
        crate::output::ensure_private_dir(d).expect("private test folder");
    }
    let host = test_host();
    let output = out_dir.join(medium.artifact_name(&host));
    let args: Vec<&str> = check.args.iter().map(String::as_str).collect();
    let matches = medium_matches(medium, &args);
    let inputs = BuildInputs::new(&host, &output, &state_dir, &matches)
        .with_iso(check.iso)
        .with_seed(seed);
    medium
        .build(bundle, &inputs)
        .unwrap_or_else(|e| panic!("building {}: {e}", medium.name()))
}

/// [`check_medium_with`] without flags or ISO.
pub fn check_medium(medium: &dyn Medium) -> BootDescription {
    check_medium_with(medium, &Check::default())
}

/// The conformance check every medium runs from its tests. Panics with a clear message on the
/// first violation, and returns the first build's description for further checks.
///
/// Checks: the description names this medium and host, carries the bundle's host public key
/// and the current format version; every path in it exists and is a regular file with mode
/// 0600; no file the build left outside those paths holds key bytes; and two builds with the
/// same inputs and seed give byte-identical files.
pub fn check_medium_with(medium: &dyn Medium, check: &Check<'_>) -> BootDescription {
    let bundle = sealed_bundle_with_users(&["alice"]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let first = build_into(medium, &bundle, &tmp.path().join("a"), check, Some(42));
    let second = build_into(medium, &bundle, &tmp.path().join("b"), check, Some(42));

    assert_eq!(
        first.version,
        crate::BOOT_DESCRIPTION_VERSION,
        "description version"
    );
    assert_eq!(first.medium, medium.name(), "description names the medium");
    assert_eq!(
        first.host,
        test_host().as_str(),
        "description names the host"
    );
    assert_eq!(
        Some(first.host_public_key.as_str()),
        bundle.manifest().host_public_key(),
        "description carries the bundle's host public key"
    );
    let json = serde_json::to_string(&first).expect("description serialises");
    let back: BootDescription = serde_json::from_str(&json).expect("description parses back");
    assert_eq!(back, first, "description round-trips through JSON");

    let paths_a = first.files();
    let paths_b = second.files();
    assert_eq!(paths_a.len(), paths_b.len(), "same number of artifacts");
    assert!(
        !paths_a.is_empty(),
        "the description lists at least one file"
    );
    for (a, b) in paths_a.iter().zip(&paths_b) {
        let meta = fs::symlink_metadata(a)
            .unwrap_or_else(|e| panic!("{} named in the description: {e}", a.display()));
        assert!(meta.is_file(), "{} is a regular file", a.display());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o600,
            "{} has mode 0600",
            a.display()
        );
        let bytes_a = fs::read(a).expect("read artifact");
        let bytes_b = fs::read(b).expect("read artifact");
        assert!(
            bytes_a == bytes_b,
            "{} and {} differ: same inputs and seed must give the same bytes",
            a.display(),
            b.display()
        );
    }

    // No key bytes outside the listed artifacts.
    let secrets: Vec<Vec<u8>> = bundle
        .expose_files()
        .filter(|(e, _)| !e.public)
        .map(|(_, c)| c.to_vec())
        .chain(std::iter::once(bundle.expose_archive().to_vec()))
        .collect();
    let mut all = Vec::new();
    walk(tmp.path(), &mut all);
    for file in all {
        if paths_a.contains(&file) || paths_b.contains(&file) {
            continue;
        }
        let bytes = fs::read(&file).unwrap_or_default();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret),
                "{} holds key bytes but is not listed in the boot description",
                file.display()
            );
        }
    }
    first
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
