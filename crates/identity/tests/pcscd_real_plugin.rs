//! T2: the real age-plugin-yubikey 0.5.1 against the PIV emulator behind pcscd +
//! vsmartcard-vpcd, driven through `IdentitySet`. Serialized by the harness (one pcscd per
//! machine); skipped with KEYPACK-SKIPPED when the packages are missing, unless
//! KEYPACK_REQUIRE_ALL=1.

use std::io::Cursor;
use std::path::Path;

use age::secrecy::ExposeSecret;
use keypack_identity::{AgeFile, IdentityError, IdentitySet};
use keypack_test_age_plugin_yubikey::PivRecipient;
use keypack_test_age_plugin_yubikey::harness::encrypt_to;
use keypack_test_piv_card::{Card, CardSpec, Pcscd, PinPolicy, missing_prerequisites, real_plugin};

fn skip(test: &str, why: &str) {
    if std::env::var_os("KEYPACK_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: required but cannot run: {why}");
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

struct Rig {
    _pcscd: Pcscd,
    spec: CardSpec,
    card: Card,
    identity: std::path::PathBuf,
    recipient: PivRecipient,
}

fn rig(test: &str, policy: PinPolicy, extra: &[&str]) -> Option<Rig> {
    if let Some(why) = missing_prerequisites() {
        skip(test, &why);
        return None;
    }
    let pcscd = match Pcscd::start() {
        Ok(p) => p,
        Err(e) => {
            skip(test, &e);
            return None;
        }
    };
    let spec = CardSpec::generate(pcscd.dir(), 12345678, policy).expect("openssl key + cert");
    let card = Card::plug(&spec, extra).expect("plug card");
    let identity = pcscd.dir().join("yubikey-identity.txt");
    card.identity_file(&spec, &identity)
        .unwrap_or_else(|e| panic!("age-plugin-yubikey --identity: {e}\npcscd: {}", pcscd.log()));
    let text = std::fs::read_to_string(&identity).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("Recipient:"))
        .and_then(|r| PivRecipient::parse(r.trim()))
        .expect("recipient comment");
    Some(Rig {
        _pcscd: pcscd,
        spec,
        card,
        identity,
        recipient,
    })
}

fn set(identity: &Path, answers: Option<&str>) -> IdentitySet {
    let mut s = IdentitySet::from_file(identity).expect("identity");
    s.set_plugin_path(real_plugin().expect("plugin dir").into_os_string());
    match answers {
        Some(a) => s.set_answers(Box::new(Cursor::new(a.as_bytes().to_vec()))),
        None => s.set_no_prompt(),
    }
    s
}

fn three(r: &PivRecipient) -> Vec<Vec<u8>> {
    ["host key", "alice key", "bob key"]
        .iter()
        .map(|p| encrypt_to(&[r as &dyn age::Recipient], p.as_bytes()))
        .collect()
}

fn files(enc: &[Vec<u8>]) -> Vec<AgeFile<'_>> {
    ["hosts/h.yaml", "users/alice.yaml", "users/bob.yaml"]
        .iter()
        .zip(enc)
        .map(|(l, e)| AgeFile {
            label: (*l).into(),
            alternatives: vec![e],
        })
        .collect()
}

fn plain(r: &Result<secrecy::SecretSlice<u8>, IdentityError>) -> String {
    match r {
        Ok(p) => String::from_utf8_lossy(p.expose_secret()).into_owned(),
        Err(e) => format!("ERR {e}"),
    }
}

#[test]
fn t2_pin_always_host_and_two_users_single_pin_entry() {
    let Some(rig) = rig(
        "t2_pin_always_host_and_two_users_single_pin_entry",
        PinPolicy::Always,
        &[],
    ) else {
        return;
    };
    let enc = three(&rig.recipient);
    // One PIN line only: a second ask would find end of input and fail.
    let s = set(&rig.identity, Some("123456\n"));
    let out = s.decrypt_batch(&files(&enc));
    assert_eq!(
        out.iter().map(plain).collect::<Vec<_>>(),
        vec!["host key", "alice key", "bob key"]
    );
}

#[test]
fn t2_pin_once_is_cached_by_the_card() {
    let Some(rig) = rig("t2_pin_once_is_cached_by_the_card", PinPolicy::Once, &[]) else {
        return;
    };
    let enc = three(&rig.recipient);
    let s = set(&rig.identity, Some("123456\n"));
    let out = s.decrypt_batch(&files(&enc));
    assert_eq!(
        out.iter().map(plain).collect::<Vec<_>>(),
        vec!["host key", "alice key", "bob key"]
    );
    // A new build that cannot ask anything still works: the card kept the PIN verified.
    let s2 = set(&rig.identity, None);
    assert_eq!(plain(&s2.decrypt_batch(&files(&enc)[..1])[0]), "host key");
}

#[test]
fn t2_wrong_pin_reports_tries_left() {
    let Some(rig) = rig("t2_wrong_pin_reports_tries_left", PinPolicy::Always, &[]) else {
        return;
    };
    let enc = three(&rig.recipient);
    let s = set(&rig.identity, Some("654321\n"));
    let out = s.decrypt_batch(&files(&enc));
    match &out[0] {
        Err(
            e @ IdentityError::WrongPin {
                tries_left, serial, ..
            },
        ) => {
            assert_eq!(*tries_left, Some(2), "{e}");
            assert_eq!(*serial, Some(12345678));
            assert!(!e.to_string().contains('\u{2068}'));
        }
        other => panic!("expected WrongPin, got {}", plain(other)),
    }
    // The right PIN resets the counter.
    let s = set(&rig.identity, Some("123456\n"));
    assert_eq!(plain(&s.decrypt_batch(&files(&enc)[..1])[0]), "host key");
}

#[test]
fn t2_unplug_mid_build_fails_cleanly() {
    let Some(mut rig) = rig(
        "t2_unplug_mid_build_fails_cleanly",
        PinPolicy::Always,
        &["--exit-after-ops", "1"],
    ) else {
        return;
    };
    let enc = three(&rig.recipient);
    let s = set(&rig.identity, Some("123456\n"));
    let t = std::time::Instant::now();
    let out = s.decrypt_batch(&files(&enc));
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    assert!(rig.card.has_exited());
    // The plugin walks a session's files in hash-map order, so which file the card served
    // before it fell out varies: exactly one file decrypts (to its own plaintext), and every
    // other one is reported as an absent YubiKey.
    let expected = ["host key", "alice key", "bob key"];
    let mut served = 0;
    for (r, want) in out.iter().zip(expected) {
        match r {
            Ok(_) => {
                assert_eq!(plain(r), want);
                served += 1;
            }
            Err(IdentityError::YubiKeyAbsent { .. }) => {}
            Err(e) => panic!("expected YubiKeyAbsent, got {e}"),
        }
    }
    assert_eq!(
        served, 1,
        "the card served one operation before it fell out"
    );
}

#[test]
fn t2_replug_mid_build_continues_with_the_kept_pin() {
    let Some(mut rig) = rig(
        "t2_replug_mid_build_continues_with_the_kept_pin",
        PinPolicy::Always,
        &["--exit-after-ops", "1"],
    ) else {
        return;
    };
    let enc = three(&rig.recipient);
    // A PIN, then "plugged in (after 3 s)" answers for the plugin's insert prompts.
    let s = set(&rig.identity, Some("123456\nwait:3\nwait:3\n"));
    let spec = &rig.spec;
    std::thread::scope(|scope| {
        let card = &mut rig.card;
        let watcher = scope.spawn(move || {
            // Plug the card back in (without the exit flag) once it "fell out".
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !card.has_exited() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Card::plug(spec, &[]).expect("replug")
        });
        let out = s.decrypt_batch(&files(&enc));
        assert_eq!(
            out.iter().map(plain).collect::<Vec<_>>(),
            vec!["host key", "alice key", "bob key"]
        );
        drop(watcher.join().expect("watcher"));
    });
}
