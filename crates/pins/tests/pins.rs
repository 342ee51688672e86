//! Pins file, bundle check and ssh-to-age conversion tests.

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr as _;

use ed25519_dalek::SigningKey;
use keypack_pins::{
    BundleKey, CheckOptions, Finding, LineError, Pins, PinsError, PublicKey, Role, SetError,
    age_recipient, check,
};
use sha2::{Digest as _, Sha512};

fn key(seed: u8) -> PublicKey {
    let sk = SigningKey::from_bytes(&[seed; 32]);
    PublicKey::from_bytes(sk.verifying_key().to_bytes())
}

fn role(s: &str) -> Role {
    Role::parse(s).expect("test role")
}

fn sample() -> Pins {
    let mut p = Pins::default();
    p.set(role("hosts/web1/ssh_host_ed25519_key"), key(1))
        .expect("set");
    p.set(role("users/alice/id_ed25519"), key(2)).expect("set");
    p.set(role("hosts/web1/deploy_key_ed25519"), key(3))
        .expect("set");
    // rotate: key(1) becomes retired
    p.set(role("hosts/web1/ssh_host_ed25519_key"), key(4))
        .expect("rotate");
    p
}

fn line_error(text: &str) -> (usize, LineError) {
    match Pins::parse(text) {
        Err(PinsError::Line { line, error, .. }) => (line, error),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn round_trip_render_parse() {
    let p = sample();
    let text = p.render();
    let back = Pins::parse(&text).expect("parse rendered");
    assert_eq!(back, p);
    assert_eq!(back.render(), text, "render is stable");
    // sorted pins, then retired
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(lines[0].starts_with("hosts/web1/deploy_key_ed25519 ssh-ed25519 AAAA"));
    assert!(lines[1].starts_with("hosts/web1/ssh_host_ed25519_key ssh-ed25519 AAAA"));
    assert!(lines[2].starts_with("users/alice/id_ed25519 "));
    assert!(lines[3].starts_with("retired hosts/web1/ssh_host_ed25519_key "));
    assert_eq!(lines.len(), 4);
    assert_eq!(
        back.pin_for(&role("hosts/web1/ssh_host_ed25519_key")),
        Some(&key(4))
    );
    assert_eq!(
        back.is_retired(&key(1)),
        Some(&role("hosts/web1/ssh_host_ed25519_key"))
    );
    assert_eq!(back.is_retired(&key(4)), None);
}

#[test]
fn header_comment_kept_other_comments_dropped() {
    let k = key(1).to_openssh();
    let text = format!("# my header\n# second\n\nusers/bob/id_ed25519 {k}\n# dropped\n");
    let p = Pins::parse(&text).expect("parse");
    let out = p.render();
    assert!(out.starts_with("# my header\n# second\n\nusers/bob/id_ed25519 "));
    assert!(!out.contains("dropped"));
    assert_eq!(Pins::parse(&out).expect("reparse"), p);
}

#[test]
fn unsorted_input_is_sorted_on_render() {
    let text = format!(
        "users/zed/id_ed25519 {}\nhosts/a/ssh_host_ed25519_key {}\n",
        key(1).to_openssh(),
        key(2).to_openssh()
    );
    let out = Pins::parse(&text).expect("parse").render();
    assert!(out.starts_with("hosts/a/"));
}

#[test]
fn bad_lines_name_line_numbers() {
    let good = key(1).to_openssh();
    let (line, e) = line_error(&format!("# c\n\nhosts/x/id_rsa {good}\n"));
    assert_eq!(line, 3);
    assert!(matches!(e, LineError::Role(_)), "{e:?}");

    let (line, e) = line_error(&format!(
        "users/a/id_ed25519 {good}\nusers/b/id_ed25519 ssh-rsa AAAAB3NzaC1yc2E=\n"
    ));
    assert_eq!(line, 2);
    assert!(
        matches!(e, LineError::Key(keypack_pins::KeyError::NotEd25519(_))),
        "{e:?}"
    );

    let (line, e) = line_error("users/a/id_ed25519 ssh-ed25519 not*base64\n");
    assert_eq!(line, 1);
    assert_eq!(e, LineError::Key(keypack_pins::KeyError::BadBase64));

    let (line, e) = line_error("users/a/id_ed25519 ssh-ed25519 AAAA\n");
    assert_eq!(line, 1);
    assert_eq!(e, LineError::Key(keypack_pins::KeyError::BadBlob));

    let (line, e) = line_error(&format!(
        "users/a/id_ed25519 {good}\n\nusers/a/id_ed25519 {}\n",
        key(2).to_openssh()
    ));
    assert_eq!(line, 3);
    assert!(
        matches!(e, LineError::DuplicateRole { first_line: 1, .. }),
        "{e:?}"
    );

    let (line, e) = line_error(&format!("users/a/id_ed25519 {good} alice@laptop\n"));
    assert_eq!(line, 1);
    assert_eq!(e, LineError::Malformed);

    let (line, e) = line_error(&format!("users/../id_ed25519 {good}\n"));
    assert_eq!(line, 1);
    assert!(
        matches!(e, LineError::Role(keypack_pins::RoleError::Name(_))),
        "{e:?}"
    );

    let msg = Pins::parse("users/a/id_ed25519 ssh-ed25519 AAAA\n")
        .expect_err("bad")
        .to_string();
    assert!(msg.starts_with("keypack.pins:1: "), "{msg}");
}

#[test]
fn pinned_and_retired_same_key_is_rejected() {
    let k = key(1).to_openssh();
    let (line, e) = line_error(&format!(
        "users/a/id_ed25519 {k}\nretired users/b/id_ed25519 {k}\n"
    ));
    assert_eq!(line, 1);
    assert!(matches!(e, LineError::PinnedAndRetired { .. }), "{e:?}");
}

#[test]
fn set_refuses_retired_and_shared_keys() {
    let mut p = sample();
    let err = p
        .set(role("users/bob/id_ed25519"), key(1))
        .expect_err("retired");
    assert!(matches!(err, SetError::Retired { .. }));
    let err = p
        .set(role("users/bob/id_ed25519"), key(2))
        .expect_err("in use");
    assert!(matches!(err, SetError::InUse { .. }));
    assert_eq!(
        p.set(role("users/alice/id_ed25519"), key(2)),
        Ok(None),
        "same key is a no-op"
    );
}

#[test]
fn load_missing_is_empty_and_save_load_round_trip() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = Pins::load(dir.path()).expect("missing file");
    assert_eq!(empty, Pins::default());
    assert_eq!(empty.pins().count(), 0);
    let p = sample();
    p.save(dir.path()).expect("save");
    p.save(dir.path()).expect("save over");
    assert_eq!(Pins::load(dir.path()).expect("load"), p);
    let path = dir.path().join("keypack.pins");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("keypack.pins")],
        "no temp file left"
    );
    std::fs::write(&path, "users/a/id_ed25519 ssh-ed25519 AAAA\n").expect("write");
    let msg = Pins::load(dir.path()).expect_err("bad").to_string();
    assert!(msg.contains(&format!("{}:1:", path.display())), "{msg}");
}

fn bk(r: &str, src: &str, k: PublicKey) -> BundleKey {
    BundleKey {
        role: role(r),
        source: PathBuf::from(src),
        key: k,
    }
}

#[test]
fn check_clean_bundle() {
    let p = sample();
    let keys = [
        bk(
            "hosts/web1/ssh_host_ed25519_key",
            "hosts/web1/ssh_host_ed25519_key.sops",
            key(4),
        ),
        bk(
            "users/alice/id_ed25519",
            "users/alice/id_ed25519.sops",
            key(2),
        ),
    ];
    let r = check(&p, &keys, CheckOptions { require_pins: true });
    assert!(r.is_ok() && r.warnings.is_empty(), "{r:?}");
}

#[test]
fn check_mismatch_names_role_file_and_fingerprints() {
    let p = sample();
    let keys = [bk(
        "users/alice/id_ed25519",
        "users/alice/id_ed25519.sops",
        key(9),
    )];
    let r = check(&p, &keys, CheckOptions::default());
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let msg = r.errors[0].to_string();
    assert!(matches!(r.errors[0], Finding::Mismatch { .. }));
    assert!(
        msg.contains("users/alice/id_ed25519 (users/alice/id_ed25519.sops)"),
        "{msg}"
    );
    assert!(
        msg.contains(&key(9).fingerprint()) && msg.contains(&key(2).fingerprint()),
        "{msg}"
    );
}

#[test]
fn check_retired_key_is_rollback() {
    let p = sample();
    // retired from the host key, presented under any role
    for r in ["hosts/web1/ssh_host_ed25519_key", "users/eve/id_ed25519"] {
        let rep = check(&p, &[bk(r, "f.sops", key(1))], CheckOptions::default());
        assert_eq!(rep.errors.len(), 1, "{rep:?}");
        assert!(
            matches!(&rep.errors[0], Finding::Retired { retired_from, .. } if retired_from.as_str() == "hosts/web1/ssh_host_ed25519_key")
        );
        assert!(rep.errors[0].to_string().contains("rolled back"));
    }
}

#[test]
fn check_shared_key_in_two_roles() {
    let p = Pins::default();
    let keys = [
        bk("users/a/id_ed25519", "a.sops", key(5)),
        bk("users/b/id_ed25519", "b.sops", key(5)),
    ];
    let r = check(&p, &keys, CheckOptions::default());
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let msg = r.errors[0].to_string();
    assert!(
        msg.contains("users/a/id_ed25519 (a.sops)") && msg.contains("users/b/id_ed25519 (b.sops)"),
        "{msg}"
    );
}

#[test]
fn check_missing_pin_warns_or_errors() {
    let p = sample();
    let keys = [bk(
        "hosts/db/ssh_host_ed25519_key",
        "hosts/db/k.sops",
        key(7),
    )];
    let r = check(&p, &keys, CheckOptions::default());
    assert!(r.is_ok());
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].to_string().contains("keypack pin"),
        "{}",
        r.warnings[0]
    );
    let r = check(&p, &keys, CheckOptions { require_pins: true });
    assert_eq!(r.errors.len(), 1);
    assert!(matches!(r.errors[0], Finding::Unpinned { .. }));
    assert!(r.warnings.is_empty());
}

/// ssh-to-age's secret side: SHA-512 of the seed, first 32 bytes (age
/// clamps when it uses the scalar), bech32 `AGE-SECRET-KEY-` uppercase.
fn age_identity_from_seed(seed: &[u8; 32]) -> age::x25519::Identity {
    let h = Sha512::digest(seed);
    let hrp = bech32::Hrp::parse("age-secret-key-").expect("hrp");
    let s = bech32::encode::<bech32::Bech32>(hrp, &h[..32])
        .expect("bech32")
        .to_uppercase();
    age::x25519::Identity::from_str(&s).expect("identity")
}

#[test]
fn age_recipient_decrypts_with_ssh_to_age_identity() {
    for i in 0u8..8 {
        let mut seed = [0u8; 32];
        getrandom_seed(&mut seed, i);
        let pk = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let recipient = age_recipient(&pk).expect("recipient");
        assert!(
            recipient.starts_with("age1") && recipient == recipient.to_lowercase(),
            "{recipient}"
        );
        let r = age::x25519::Recipient::from_str(&recipient).expect("age parses it");
        let identity = age_identity_from_seed(&seed);
        assert_eq!(
            identity.to_public().to_string(),
            recipient,
            "both directions agree"
        );
        let ct = age::encrypt(&r, b"sops data key").expect("encrypt");
        assert_eq!(
            age::decrypt(&identity, &ct).expect("decrypt"),
            b"sops data key"
        );
    }
}

/// Varied seeds without a new RNG dependency: the clock, the index, the pid.
fn getrandom_seed(seed: &mut [u8; 32], i: u8) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = Sha512::digest(format!("{t}-{i}-{}", std::process::id()));
    seed.copy_from_slice(&h[..32]);
}

#[test]
fn age_recipient_rejects_non_point() {
    // y = 2 is not on the curve (found by trying small y; decompress fails).
    let mut bad = [0u8; 32];
    bad[0] = 2;
    assert_eq!(
        age_recipient(&bad),
        Err(keypack_pins::RecipientError::NotAPoint)
    );
}

#[test]
fn age_recipient_matches_pynacl() {
    // libsodium (through PyNaCl) is the independent implementation of the Edwards → Montgomery
    // map. scripts/bootstrap installs PyNaCl into its virtual environment and links that
    // environment's python as `keypack-test-python`.
    let python = ["keypack-test-python", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import nacl.bindings"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        skip(
            "age_recipient_matches_pynacl",
            "no python with PyNaCl (scripts/bootstrap installs it as keypack-test-python)",
        );
        return;
    };
    for i in 0..8u8 {
        let seed = [i.wrapping_mul(37).wrapping_add(7); 32];
        let pk = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let hex: String = pk.iter().map(|b| format!("{b:02x}")).collect();
        let out = Command::new(python)
            .args([
                "-c",
                "import sys,nacl.bindings as b; print(b.crypto_sign_ed25519_pk_to_curve25519(bytes.fromhex(sys.argv[1])).hex())",
                &hex,
            ])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let u = String::from_utf8(out.stdout).expect("utf8");
        let u: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&u.trim()[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        let expect = bech32::encode::<bech32::Bech32>(bech32::Hrp::parse("age").expect("hrp"), &u)
            .expect("bech32");
        assert_eq!(age_recipient(&pk).expect("recipient"), expect);
    }
}

/// Prints the skip marker `scripts/test` looks for, or fails where everything must run.
fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {why} (KEYPACK_REQUIRE_ALL=1)");
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("KEYPACK-SKIPPED: {test}: {why}\n").as_bytes(),
    );
}

#[test]
fn fingerprint_matches_ssh_keygen() {
    let Ok(o) = Command::new("ssh-keygen").arg("-?").output() else {
        skip("fingerprint_matches_ssh_keygen", "ssh-keygen not found");
        return;
    };
    drop(o);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("k.pub");
    std::fs::write(&f, format!("{} test\n", key(3).to_openssh())).expect("write");
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&key(3).fingerprint()),
        "{text} vs {}",
        key(3).fingerprint()
    );
}
