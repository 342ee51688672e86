//! T1: `keypack pack` with the mock `age-plugin-yubikey` first on `PATH` (real identity-v1
//! protocol, real piv-p256 crypto, scripted card). Every run's stdout and stderr are
//! scanned for the test keys (raw, hex, base64); every failure must leave no output file.

mod yubikey_support;

use std::process::Output;

use keypack_test_age_plugin_yubikey::harness::MockPlugin;
use yubikey_support::{Repo, assert_no_secret, have_sops};

struct Case {
    mock: MockPlugin,
    repo: Repo,
    identity: std::path::PathBuf,
}

fn case(test: &str, script: &str) -> Option<Case> {
    if !have_sops(test) {
        return None;
    }
    let mock = MockPlugin::new(script);
    let repo = Repo::new(&mock.card.recipient_string(), mock.bin_dir());
    let identity = mock.identity_file();
    Some(Case {
        mock,
        repo,
        identity,
    })
}

impl Case {
    fn pack(&self, answers: Option<&str>) -> Output {
        let out = self.repo.pack(&self.identity, self.mock.bin_dir(), answers);
        let mut secrets = self.repo.secrets();
        let card = self.mock.card.secret_hex();
        secrets.push(
            (0..card.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&card[i..i + 2], 16).unwrap())
                .collect(),
        );
        assert_no_secret("stdout", &out.stdout, &secrets);
        assert_no_secret("stderr", &out.stderr, &secrets);
        out
    }

    fn assert_failed_without_output(&self, out: &Output) -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- keypack stderr ---\n{err}");
        assert!(!out.status.success(), "expected failure:\n{err}");
        assert!(
            !self.repo.out().exists(),
            "a failed pack left an output file"
        );
        let dir: Vec<_> = std::fs::read_dir(self.repo.out().parent().unwrap())
            .unwrap()
            .collect();
        assert!(dir.is_empty(), "temp files left behind");
        assert!(
            !err.contains('\u{2068}') && !err.contains('\u{2069}'),
            "{err}"
        );
        assert!(!err.contains("Did this not do what you expected"), "{err}");
        err
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn yubikey_pack_host_and_two_users_one_session_one_pin() {
    let Some(c) = case("yubikey_pack_host_and_two_users_one_session_one_pin", "pin") else {
        return;
    };
    let out = c.pack(Some("123456\n"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(c.repo.out().exists());
    assert_eq!(c.mock.count("session"), 1, "log {:?}", c.mock.log());
    assert_eq!(c.mock.count("pin-request"), 1);
    assert_eq!(c.mock.count("unwrap"), 3);
    assert!(err.contains("3 YubiKey operation"), "{err}");
    // The operation count is printed before the first unwrap's PIN prompt would be.
    let bundle = std::fs::read(c.repo.out()).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bundle.as_slice()));
    let mut found = std::collections::BTreeMap::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        found.insert(path, s);
    }
    assert_eq!(found["etc/ssh/ssh_host_ed25519_key"], c.repo.host.private);
    assert_eq!(found["root/.ssh/deploy_key_ed25519"], c.repo.deploy.private);
    assert_eq!(found["users/alice/.ssh/id_ed25519"], c.repo.alice.private);
    assert_eq!(found["users/bob/.ssh/id_ed25519"], c.repo.bob.private);
}

#[test]
fn yubikey_pack_pin_policy_always_asks_once_per_build() {
    let Some(c) = case(
        "yubikey_pack_pin_policy_always_asks_once_per_build",
        "pin-always",
    ) else {
        return;
    };
    let out = c.pack(Some("123456\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        c.mock.count("pin-ok"),
        3,
        "the kept PIN is re-served per session"
    );
    assert_eq!(c.mock.count("unwrap"), 3);
}

#[test]
fn yubikey_pack_wrong_pin_says_tries_left_and_writes_nothing() {
    let Some(c) = case(
        "yubikey_pack_wrong_pin_says_tries_left_and_writes_nothing",
        "pin",
    ) else {
        return;
    };
    let out = c.pack(Some("654321\n"));
    let err = c.assert_failed_without_output(&out);
    assert!(
        err.contains("wrong PIN for YubiKey 12345678 (2 tries left"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn yubikey_pack_pin_blocked_after_three_asks() {
    let Some(c) = case("yubikey_pack_pin_blocked_after_three_asks", "wrong-pin") else {
        return;
    };
    let out = c.pack(Some("111111\n222222\n333333\n444444\n"));
    let err = c.assert_failed_without_output(&out);
    assert_eq!(c.mock.count("pin-request"), 3);
    assert!(err.contains("PIN of YubiKey 12345678 is blocked"), "{err}");
}

#[test]
fn yubikey_pack_without_terminal_or_pinentry_fails_fast() {
    let Some(c) = case(
        "yubikey_pack_without_terminal_or_pinentry_fails_fast",
        "pin",
    ) else {
        return;
    };
    let t = std::time::Instant::now();
    let out = c.pack(None);
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    let err = c.assert_failed_without_output(&out);
    assert!(
        err.contains("a PIN is required for YubiKey 12345678"),
        "{err}"
    );
    assert!(err.contains("pinentry"), "hint names pinentry: {err}");
}

#[test]
fn yubikey_pack_plugin_missing_says_install() {
    let Some(c) = case("yubikey_pack_plugin_missing_says_install", "ok") else {
        return;
    };
    std::fs::remove_file(c.mock.bin_dir().join("age-plugin-yubikey")).unwrap();
    // Also hide any real plugin that a developer machine has on PATH.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(yubikey_support::KEYPACK);
    let out = cmd
        .args([
            "pack",
            "-H",
            "web1",
            "-U",
            "alice",
            "-U",
            "bob",
            "--keys-repo",
        ])
        .arg(c.repo.root())
        .arg("--identity")
        .arg(&c.identity)
        .arg("-o")
        .arg(c.repo.out())
        .env_clear()
        .env("PATH", empty.path())
        .env("HOME", c.repo.tmp.path().join("home"))
        .env("KEYPACK_NO_PROMPT", "1")
        .output()
        .unwrap();
    let err = c.assert_failed_without_output(&out);
    assert!(
        err.contains("age-plugin-yubikey was not found on PATH"),
        "{err}"
    );
    assert!(err.contains("install age-plugin-yubikey"), "{err}");
}

#[test]
fn yubikey_pack_absent_then_inserted() {
    let Some(c) = case("yubikey_pack_absent_then_inserted", "absent-then-inserted") else {
        return;
    };
    let out = c.pack(Some("yes\n"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Please insert YubiKey with serial 12345678"),
        "{err}"
    );
    assert!(!err.contains('\u{2068}'));
    // The operation count comes before the card is first needed.
    let count_at = err.find("3 YubiKey operation").expect("count printed");
    assert!(count_at < err.find("Please insert").unwrap(), "{err}");
    assert_eq!(c.mock.count("confirm"), 1);
}

#[test]
fn yubikey_pack_absent_and_skipped_lists_recipients() {
    let Some(c) = case(
        "yubikey_pack_absent_and_skipped_lists_recipients",
        "absent-skip",
    ) else {
        return;
    };
    let out = c.pack(Some("skip\n"));
    let err = c.assert_failed_without_output(&out);
    assert!(err.contains("no identity matches"), "{err}");
    assert!(err.contains("YubiKey recipient"), "{err}");
    assert!(
        err.contains(&c.mock.card.recipient_string()),
        "lists the held recipient: {err}"
    );
}

#[test]
fn yubikey_pack_absent_confirm_answered_at_most_twice() {
    let Some(c) = case(
        "yubikey_pack_absent_confirm_answered_at_most_twice",
        "absent",
    ) else {
        return;
    };
    let out = c.pack(Some("yes\nyes\nyes\nyes\nyes\n"));
    let err = c.assert_failed_without_output(&out);
    assert_eq!(c.mock.count("confirm"), 3, "two answers, then a refusal");
    assert!(err.contains("YubiKey 12345678 is not present"), "{err}");
}

#[test]
fn yubikey_pack_plugin_crash_and_garbage_fail_cleanly() {
    for script in ["crash", "garbage"] {
        let Some(c) = case("yubikey_pack_plugin_crash_and_garbage_fail_cleanly", script) else {
            return;
        };
        let out = c.pack(None);
        let err = c.assert_failed_without_output(&out);
        assert!(err.contains("age-plugin-yubikey failed"), "{script}: {err}");
    }
}

#[test]
fn yubikey_pack_slow_plugin_shows_touch_message() {
    let Some(c) = case("yubikey_pack_slow_plugin_shows_touch_message", "slow") else {
        return;
    };
    let out = c.pack(None);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Touch your YubiKey (serial 12345678) if it is blinking"),
        "{err}"
    );
    assert!(!err.contains("Waiting for age-plugin-yubikey"), "{err}");
}

#[test]
fn yubikey_doctor_reports_plugin_and_which_files_the_identity_opens() {
    let Some(c) = case(
        "yubikey_doctor_reports_plugin_and_which_files_the_identity_opens",
        "ok",
    ) else {
        return;
    };
    let out = c.repo.doctor(&c.identity, Some(c.mock.bin_dir()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    assert!(
        text.contains("ok    age-plugin-yubikey 0.5.1 (keypack test mock)"),
        "{text}"
    );
    for f in ["hosts/web1.yaml", "users/alice.json", "users/bob.yaml"] {
        assert!(
            text.contains(&format!(
                "ok    {f}: your identity can open it (via {})",
                c.mock.card.recipient_string()
            )),
            "{f}: {text}"
        );
    }
    assert_eq!(c.mock.count("session"), 0, "doctor never unwraps");

    // An identity that is not among the recipients: FAIL with both lists and a fix.
    let other = age::x25519::Identity::generate();
    let other_file = c.repo.tmp.path().join("other.txt");
    std::fs::write(
        &other_file,
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&other.to_string())
        ),
    )
    .unwrap();
    let out = c.repo.doctor(&other_file, Some(c.mock.bin_dir()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  hosts/web1.yaml: none of your identities is among its recipients"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "file recipients: {}",
            c.mock.card.recipient_string()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("you hold: {}", other.to_public())),
        "{text}"
    );
    assert!(text.contains("fix: re-encrypt"), "{text}");
    assert!(!text.contains(age::secrecy::ExposeSecret::expose_secret(
        &other.to_string()
    )));
}

#[test]
fn yubikey_doctor_without_plugin_says_how_to_install() {
    let Some(c) = case("yubikey_doctor_without_plugin_says_how_to_install", "ok") else {
        return;
    };
    let out = c.repo.doctor(&c.identity, None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  age-plugin-yubikey is not on PATH"),
        "{text}"
    );
    assert!(
        text.contains("fix: cargo install age-plugin-yubikey --locked"),
        "{text}"
    );
}

#[test]
fn yubikey_leak_scanner_catches_raw_hex_and_base64() {
    use base64::Engine;
    let secret: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
    let forms: Vec<Vec<u8>> = vec![
        [b"prefix ".as_slice(), &secret, b" suffix"].concat(),
        format!("x {hex} y").into_bytes(),
        format!("x {} y", hex.to_uppercase()).into_bytes(),
        format!("x {b64} y").into_bytes(),
    ];
    for haystack in forms {
        let caught = std::panic::catch_unwind(|| {
            assert_no_secret("probe", &haystack, std::slice::from_ref(&secret))
        });
        assert!(caught.is_err(), "the scanner missed a form of the secret");
    }
    assert_no_secret("clean", b"nothing to see here", &[secret]);
}

#[test]
fn yubikey_sops_age_key_value_in_env_is_never_used() {
    let Some(c) = case("yubikey_sops_age_key_value_in_env_is_never_used", "ok") else {
        return;
    };
    let x = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&x.to_string()).to_owned();
    let out = std::process::Command::new(yubikey_support::KEYPACK)
        .args(["pack", "-H", "web1", "--keys-repo"])
        .arg(c.repo.root())
        .arg("-o")
        .arg(c.repo.out())
        .env_clear()
        .env("PATH", yubikey_support::path_with(c.mock.bin_dir()))
        .env("HOME", c.repo.tmp.path().join("home"))
        .env("SOPS_AGE_KEY", &secret)
        .output()
        .unwrap();
    let err = c.assert_failed_without_output(&out);
    assert!(err.contains("no age identity file found"), "{err}");
    assert!(!err.contains(&secret) && !String::from_utf8_lossy(&out.stdout).contains(&secret));
}

/// A stand-in pinentry (Assuan) that answers GETPIN with `pin` and logs each GETPIN.
fn fake_pinentry(dir: &std::path::Path, pin: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("pinentry.log");
    let path = dir.join("fake-pinentry");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho 'OK Pleased to meet you'\nwhile read -r cmd rest; do\n  case \"$cmd\" in\n    GETPIN) echo getpin >> '{}'; echo 'D {pin}'; echo OK;;\n    BYE) echo OK; exit 0;;\n    *) echo OK;;\n  esac\ndone\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn yubikey_pack_asks_the_pin_through_pinentry_once() {
    let Some(c) = case(
        "yubikey_pack_asks_the_pin_through_pinentry_once",
        "pin-always",
    ) else {
        return;
    };
    let pinentry = fake_pinentry(c.repo.tmp.path(), "123456");
    let out = std::process::Command::new(yubikey_support::KEYPACK)
        .args([
            "pack",
            "-H",
            "web1",
            "-U",
            "alice",
            "-U",
            "bob",
            "--keys-repo",
        ])
        .arg(c.repo.root())
        .arg("--identity")
        .arg(&c.identity)
        .arg("-o")
        .arg(c.repo.out())
        .env_clear()
        .env("PATH", yubikey_support::path_with(c.mock.bin_dir()))
        .env("HOME", c.repo.tmp.path().join("home"))
        .env("PINENTRY_PROGRAM", &pinentry)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let asked = std::fs::read_to_string(c.repo.tmp.path().join("pinentry.log")).unwrap();
    assert_eq!(asked.lines().count(), 1, "one PIN entry for the build");
    assert_eq!(c.mock.count("pin-ok"), 3);
}

#[test]
fn yubikey_pack_without_tty_or_pinentry_fails_fast_naturally() {
    let Some(c) = case(
        "yubikey_pack_without_tty_or_pinentry_fails_fast_naturally",
        "pin",
    ) else {
        return;
    };
    let Ok(setsid) = which_setsid() else {
        yubikey_support::skip(
            "yubikey_pack_without_tty_or_pinentry_fails_fast_naturally",
            "setsid (util-linux) is not installed",
        );
        return;
    };
    // setsid: no controlling terminal; PATH: only the mock (no pinentry); no PIN fd.
    let t = std::time::Instant::now();
    let out = std::process::Command::new(setsid)
        .arg("-w")
        .arg(yubikey_support::KEYPACK)
        .args(["pack", "-H", "web1", "--keys-repo"])
        .arg(c.repo.root())
        .arg("--identity")
        .arg(&c.identity)
        .arg("-o")
        .arg(c.repo.out())
        .env_clear()
        .env("PATH", c.mock.bin_dir())
        .env("HOME", c.repo.tmp.path().join("home"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    let err = c.assert_failed_without_output(&out);
    assert!(
        err.contains("a PIN is required for YubiKey 12345678"),
        "{err}"
    );
}

fn which_setsid() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/setsid", "/bin/setsid"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or(())
}
