//! `IdentitySet` against the mock `age-plugin-yubikey` (real protocol, real piv-p256
//! crypto, scripted card behaviour). Each test installs the mock in its own folder and
//! points the set's plugin path there, so tests run in parallel and never touch `PATH`.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use age::secrecy::ExposeSecret;
use keypack_identity::{AgeFile, IdentityError, IdentitySet};
use keypack_test_age_plugin_yubikey::harness::{MockPlugin, encrypt_to};

fn set_for(mock: &MockPlugin, answers: Option<&str>) -> IdentitySet {
    let mut set = IdentitySet::from_file(&mock.identity_file()).expect("identity file");
    set.set_plugin_path(mock.bin_dir().as_os_str().to_owned());
    match answers {
        Some(a) => set.set_answers(Box::new(Cursor::new(a.as_bytes().to_vec()))),
        None => set.set_no_prompt(),
    }
    set
}

fn capture(set: &mut IdentitySet) -> Arc<Mutex<Vec<String>>> {
    let msgs = Arc::new(Mutex::new(Vec::new()));
    let m = msgs.clone();
    set.set_message_sink(Arc::new(move |s: &str| {
        m.lock().unwrap().push(s.to_owned())
    }));
    msgs
}

struct Build {
    host: Vec<u8>,
    alice: Vec<u8>,
    bob: Vec<u8>,
}

fn build(mock: &MockPlugin) -> Build {
    Build {
        host: mock.encrypt(b"host data key 0123456789abcdef!!"),
        alice: mock.encrypt(b"alice data key"),
        bob: mock.encrypt(b"bob data key"),
    }
}

fn files(b: &Build) -> Vec<AgeFile<'_>> {
    vec![
        AgeFile {
            label: "hosts/h.yaml".into(),
            alternatives: vec![&b.host],
        },
        AgeFile {
            label: "users/alice.yaml".into(),
            alternatives: vec![&b.alice],
        },
        AgeFile {
            label: "users/bob.yaml".into(),
            alternatives: vec![&b.bob],
        },
    ]
}

fn assert_all_ok(out: &[Result<secrecy::SecretSlice<u8>, IdentityError>]) {
    assert_eq!(
        out[0].as_ref().expect("host").expose_secret(),
        b"host data key 0123456789abcdef!!"
    );
    assert_eq!(
        out[1].as_ref().expect("alice").expose_secret(),
        b"alice data key"
    );
    assert_eq!(
        out[2].as_ref().expect("bob").expose_secret(),
        b"bob data key"
    );
}

#[test]
fn host_and_two_users_in_one_session() {
    let mock = MockPlugin::new("ok");
    let set = set_for(&mock, None);
    let b = build(&mock);
    assert_eq!(set.plugin_operations(&files(&b)), 3);
    let out = set.decrypt_batch(&files(&b));
    assert_all_ok(&out);
    assert_eq!(mock.count("session"), 1, "log: {:?}", mock.log());
    assert_eq!(mock.count("unwrap"), 3);
}

#[test]
fn one_pin_entry_for_the_build_and_reserved_later() {
    let mock = MockPlugin::new("pin");
    // Exactly one answer: any second ask would hit end of input and fail.
    let set = set_for(&mock, Some("123456\n"));
    let b = build(&mock);
    assert_all_ok(&set.decrypt_batch(&files(&b)));
    assert_eq!(mock.count("session"), 1);
    assert_eq!(mock.count("pin-request"), 1);
    // A later batch of the same build: the card asks again, the kept PIN is re-served.
    let again = set.decrypt_batch(&files(&b)[..1]);
    assert!(again[0].is_ok());
    assert_eq!(mock.count("session"), 2);
    assert_eq!(mock.count("pin-ok"), 2);
}

#[test]
fn pin_policy_always_reserves_the_kept_pin_per_session() {
    let mock = MockPlugin::new("pin-always");
    let set = set_for(&mock, Some("123456\n"));
    let b = build(&mock);
    assert_all_ok(&set.decrypt_batch(&files(&b)));
    assert_eq!(mock.count("session"), 3, "one unwrap per PIN verification");
    assert_eq!(mock.count("unwrap"), 3);
    assert_eq!(mock.count("pin-ok"), 3);
}

#[test]
fn short_pin_is_asked_again_then_right_pin_works() {
    let mock = MockPlugin::new("pin");
    let set = set_for(&mock, Some("12\n123456\n"));
    let b = build(&mock);
    assert_all_ok(&set.decrypt_batch(&files(&b)));
    assert_eq!(mock.count("pin-request"), 2);
}

#[test]
fn wrong_pin_reports_tries_left_and_has_no_marks_or_footer() {
    let mock = MockPlugin::new("pin");
    let set = set_for(&mock, Some("000000\n"));
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    for r in &out {
        match r {
            Err(
                e @ IdentityError::WrongPin {
                    tries_left, serial, ..
                },
            ) => {
                assert_eq!(*tries_left, Some(2));
                assert_eq!(*serial, Some(12345678));
                let text = e.to_string();
                assert!(!text.contains('\u{2068}') && !text.contains('\u{2069}'));
                assert!(!text.contains("Did this not do"));
                assert!(e.hint().is_some());
            }
            other => panic!("expected WrongPin, got {:?}", other.as_ref().err()),
        }
    }
}

#[test]
fn at_most_three_pin_asks_then_blocked() {
    let mock = MockPlugin::new("wrong-pin");
    let set = set_for(&mock, Some("000000\n000001\n000002\n000003\n000004\n"));
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    assert_eq!(mock.count("pin-request"), 3, "log: {:?}", mock.log());
    assert!(
        matches!(&out[0], Err(IdentityError::PinBlocked { .. })),
        "{:?}",
        out[0].as_ref().err()
    );
}

#[test]
fn no_way_to_ask_is_a_clear_error_not_a_hang() {
    let mock = MockPlugin::new("pin");
    let set = set_for(&mock, None);
    let b = build(&mock);
    let t = std::time::Instant::now();
    let out = set.decrypt_batch(&files(&b));
    assert!(t.elapsed() < std::time::Duration::from_secs(8));
    assert!(matches!(
        &out[0],
        Err(IdentityError::PinRequired {
            serial: Some(12345678),
            ..
        })
    ));
    assert!(out[0].as_ref().err().and_then(|e| e.hint()).is_some());
}

#[test]
fn absent_then_inserted_is_confirmed_once() {
    let mock = MockPlugin::new("absent-then-inserted");
    let mut set = set_for(&mock, Some("yes\n"));
    let msgs = capture(&mut set);
    let b = build(&mock);
    assert_all_ok(&set.decrypt_batch(&files(&b)));
    assert_eq!(mock.count("confirm"), 1);
    let msgs = msgs.lock().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m == "Please insert YubiKey with serial 12345678"),
        "{msgs:?}"
    );
}

#[test]
fn absent_and_skipped_is_no_matching_identity() {
    let mock = MockPlugin::new("absent-skip");
    let set = set_for(&mock, Some("skip\n"));
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    match &out[0] {
        Err(IdentityError::NoMatchingIdentity {
            recipients, held, ..
        }) => {
            assert!(recipients.iter().any(|r| {
                r.contains(
                    &mock
                        .card
                        .tag()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                )
            }));
            assert_eq!(held, &vec![mock.card.recipient_string()]);
        }
        other => panic!("{:?}", other.as_ref().err()),
    }
}

#[test]
fn confirm_is_answered_at_most_twice() {
    let mock = MockPlugin::new("absent");
    let set = set_for(&mock, Some("yes\nyes\nyes\nyes\n"));
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    assert_eq!(mock.count("confirm"), 3, "two answered, the third refused");
    assert!(matches!(
        &out[0],
        Err(IdentityError::YubiKeyAbsent {
            serial: Some(12345678),
            ..
        })
    ));
}

#[test]
fn absent_without_a_way_to_answer_is_yubikey_absent() {
    let mock = MockPlugin::new("absent");
    let set = set_for(&mock, None);
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    assert!(
        matches!(&out[2], Err(IdentityError::YubiKeyAbsent { file, .. }) if file == "users/bob.yaml")
    );
}

#[test]
fn crash_and_garbage_are_plugin_failures() {
    for script in ["crash", "garbage"] {
        let mock = MockPlugin::new(script);
        let set = set_for(&mock, None);
        let b = build(&mock);
        let out = set.decrypt_batch(&files(&b));
        assert!(
            matches!(&out[1], Err(IdentityError::PluginFailed { binary, .. }) if binary == "age-plugin-yubikey"),
            "{script}: {:?}",
            out[1].as_ref().err()
        );
    }
}

#[test]
fn missing_plugin_says_install_it() {
    let mock = MockPlugin::new("ok");
    let mut set = set_for(&mock, None);
    let empty = tempfile::tempdir().unwrap();
    set.set_plugin_path(empty.path().as_os_str().to_owned());
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    let e = out[0].as_ref().expect_err("error");
    assert!(
        matches!(e, IdentityError::PluginMissing { binary, .. } if binary == "age-plugin-yubikey")
    );
    assert!(e.hint().unwrap().contains("install age-plugin-yubikey"));
}

#[test]
fn x25519_alternative_needs_no_plugin() {
    let mock = MockPlugin::new("ok");
    let x = age::x25519::Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let idf = dir.path().join("both.txt");
    std::fs::write(
        &idf,
        format!(
            "{}{}\n",
            std::fs::read_to_string(mock.identity_file()).unwrap(),
            x.to_string().expose_secret()
        ),
    )
    .unwrap();
    let mut set = IdentitySet::from_file(&idf).unwrap();
    set.set_plugin_path(mock.bin_dir().as_os_str().to_owned());
    set.set_no_prompt();
    let yk_only = mock.encrypt(b"k");
    let both = encrypt_to(
        &[
            &mock.card.recipient() as &dyn age::Recipient,
            &x.to_public(),
        ],
        b"k",
    );
    let f = vec![AgeFile {
        label: "f".into(),
        alternatives: vec![&yk_only, &both],
    }];
    assert_eq!(set.plugin_operations(&f), 0);
    assert_eq!(
        set.decrypt_batch(&f)[0].as_ref().unwrap().expose_secret(),
        b"k"
    );
    assert_eq!(mock.count("session"), 0);
}

#[test]
fn other_yubikeys_stanzas_are_not_sent() {
    let mock = MockPlugin::new("ok");
    let other = keypack_test_age_plugin_yubikey::SoftCard::generate(999, 0x83);
    let set = set_for(&mock, None);
    let foreign = encrypt_to(&[&other.recipient() as &dyn age::Recipient], b"x");
    let f = vec![AgeFile {
        label: "f".into(),
        alternatives: vec![&foreign],
    }];
    assert_eq!(set.plugin_operations(&f), 0);
    assert!(matches!(
        &set.decrypt_batch(&f)[0],
        Err(IdentityError::NoMatchingIdentity { .. })
    ));
    assert_eq!(mock.count("session"), 0);
}

#[test]
fn slow_plugin_shows_the_touch_message() {
    let mock = MockPlugin::new("slow");
    let mut set = set_for(&mock, None);
    let msgs = capture(&mut set);
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b)[..1]);
    assert!(out[0].is_ok());
    let msgs = msgs.lock().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m == "Touch your YubiKey (serial 12345678) if it is blinking"),
        "{msgs:?}"
    );
}

#[test]
fn recipient_from_point_matches_the_card_and_can_decrypt_needs_no_plugin() {
    let mock = MockPlugin::new("ok");
    let (recipient, tag) =
        keypack_identity::yubikey_recipient_from_point(&mock.card.public_compressed()).unwrap();
    assert_eq!(recipient, mock.card.recipient_string());
    assert_eq!(tag, mock.card.tag());
    let set = set_for(&mock, None);
    let enc = mock.encrypt(b"x");
    let other = keypack_test_age_plugin_yubikey::SoftCard::generate(1, 0x82);
    let foreign = encrypt_to(&[&other.recipient() as &dyn age::Recipient], b"x");
    assert!(set.can_decrypt(&AgeFile {
        label: "a".into(),
        alternatives: vec![&enc]
    }));
    assert!(!set.can_decrypt(&AgeFile {
        label: "b".into(),
        alternatives: vec![&foreign]
    }));
    assert_eq!(mock.count("session"), 0);
}

#[test]
fn relative_path_entries_are_not_searched() {
    let mock = MockPlugin::new("ok");
    let mut set = set_for(&mock, None);
    // A relative entry naming the mock's folder must not be used.
    let rel = pathdiff(mock.bin_dir());
    set.set_plugin_path(rel);
    let b = build(&mock);
    let out = set.decrypt_batch(&files(&b));
    assert!(matches!(&out[0], Err(IdentityError::PluginMissing { .. })));
}

fn pathdiff(dir: &std::path::Path) -> std::ffi::OsString {
    // "../../../tmp/xyz" relative to "/" is still relative as a PATH entry.
    let mut s = std::ffi::OsString::from(".");
    s.push(dir.as_os_str());
    s
}
