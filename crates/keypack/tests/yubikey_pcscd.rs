//! T2: `keypack pack` with the real age-plugin-yubikey 0.5.1 against the workspace's PIV
//! card emulator behind Debian's pcscd + vsmartcard-vpcd (listen mode, loopback). The
//! harness starts a private pcscd per test (serialized; one pcscd per machine) and kills it
//! and the card afterwards. Skipped with KEYPACK-SKIPPED when pcscd, vpcd, openssl, sops or
//! the real plugin is missing, unless KEYPACK_REQUIRE_ALL=1.

mod yubikey_support;

use std::path::PathBuf;
use std::process::Output;

use keypack_test_piv_card::{Card, CardSpec, Pcscd, PinPolicy, missing_prerequisites, real_plugin};
use yubikey_support::{Repo, assert_no_secret, have_sops, skip, ssh_secret_forms};

struct Rig {
    pcscd: Pcscd,
    spec: CardSpec,
    card: Card,
    identity: PathBuf,
    plugin_dir: PathBuf,
    repo: Repo,
}

fn rig(test: &str, policy: PinPolicy, extra: &[&str]) -> Option<Rig> {
    if let Some(why) = missing_prerequisites() {
        skip(test, &why);
        return None;
    }
    if !have_sops(test) {
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
    let recipient = std::fs::read_to_string(&identity)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("Recipient:")
                .map(|r| r.trim().to_owned())
        })
        .expect("recipient comment");
    let plugin_dir = real_plugin().expect("real plugin");
    // The real plugin encrypts without a card (recipient-v1), so real sops writes the files.
    let repo = Repo::new(&recipient, &plugin_dir);
    Some(Rig {
        pcscd,
        spec,
        card,
        identity,
        plugin_dir,
        repo,
    })
}

impl Rig {
    fn pack(&self, answers: Option<&str>) -> Output {
        let out = self.repo.pack(&self.identity, &self.plugin_dir, answers);
        let mut secrets = self.repo.secrets();
        secrets.extend(ssh_secret_forms(
            &std::fs::read_to_string(self.spec.key_path()).unwrap(),
        ));
        assert_no_secret("stdout", &out.stdout, &secrets);
        assert_no_secret("stderr", &out.stderr, &secrets);
        eprintln!(
            "--- keypack stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn assert_ok(&self, out: &Output) {
        assert!(
            out.status.success(),
            "{}\npcscd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.pcscd.log()
        );
        assert!(self.repo.out().exists());
    }

    fn assert_failed_without_output(&self, out: &Output) -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "expected failure:\n{err}");
        assert!(
            !self.repo.out().exists(),
            "a failed pack left an output file"
        );
        assert!(
            std::fs::read_dir(self.repo.out().parent().unwrap())
                .unwrap()
                .next()
                .is_none(),
            "temp files left behind"
        );
        assert!(
            !err.contains('\u{2068}') && !err.contains("Did this not do"),
            "{err}"
        );
        err
    }
}

#[test]
fn yubikey_pcscd_pin_always_host_and_two_users_single_pin_entry() {
    let Some(r) = rig(
        "yubikey_pcscd_pin_always_host_and_two_users_single_pin_entry",
        PinPolicy::Always,
        &[],
    ) else {
        return;
    };
    // One PIN line: any second ask would hit end of input and fail the build.
    let out = r.pack(Some("123456\n"));
    r.assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 YubiKey operation"));
}

#[test]
fn yubikey_pcscd_pin_once_second_build_needs_no_pin() {
    let Some(r) = rig(
        "yubikey_pcscd_pin_once_second_build_needs_no_pin",
        PinPolicy::Once,
        &[],
    ) else {
        return;
    };
    r.assert_ok(&r.pack(Some("123456\n")));
    std::fs::remove_file(r.repo.out()).unwrap();
    // The card keeps the PIN verified until unplugged: no way to ask, still works.
    r.assert_ok(&r.pack(None));
}

#[test]
fn yubikey_pcscd_wrong_pin_writes_nothing() {
    let Some(r) = rig(
        "yubikey_pcscd_wrong_pin_writes_nothing",
        PinPolicy::Always,
        &[],
    ) else {
        return;
    };
    let err = r.assert_failed_without_output(&r.pack(Some("654321\n")));
    assert!(
        err.contains("wrong PIN for YubiKey 12345678 (2 tries left"),
        "{err}"
    );
    // The right PIN afterwards works (and resets the card's counter).
    r.assert_ok(&r.pack(Some("123456\n")));
}

#[test]
fn yubikey_pcscd_unplug_mid_build_writes_nothing() {
    let Some(mut r) = rig(
        "yubikey_pcscd_unplug_mid_build_writes_nothing",
        PinPolicy::Always,
        &["--exit-after-ops", "1"],
    ) else {
        return;
    };
    let t = std::time::Instant::now();
    let err = r.assert_failed_without_output(&r.pack(Some("123456\n")));
    assert!(t.elapsed() < std::time::Duration::from_secs(90));
    assert!(
        r.card.has_exited(),
        "the card was unplugged after one operation"
    );
    assert!(err.contains("YubiKey 12345678 is not present"), "{err}");
}

#[test]
fn yubikey_pcscd_replug_mid_build_completes_with_one_pin_entry() {
    let Some(mut r) = rig(
        "yubikey_pcscd_replug_mid_build_completes_with_one_pin_entry",
        PinPolicy::Always,
        &["--exit-after-ops", "1"],
    ) else {
        return;
    };
    let spec = &r.spec;
    let card = &mut r.card;
    let (repo, identity, plugin_dir) = (&r.repo, &r.identity, &r.plugin_dir);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !card.has_exited() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Card::plug(spec, &[]).expect("replug")
        });
        // The PIN once; then "plugged in (after 3 s)" for the plugin's insert prompts. A
        // second PIN ask would read "wait:3" as the PIN and fail.
        let out = repo.pack(identity, plugin_dir, Some("123456\nwait:3\nwait:3\n"));
        let replugged = watcher.join().expect("watcher");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(repo.out().exists());
        drop(replugged);
    });
}

#[test]
fn yubikey_pcscd_doctor_lists_the_card_and_its_age_slot() {
    let Some(r) = rig(
        "yubikey_pcscd_doctor_lists_the_card_and_its_age_slot",
        PinPolicy::Once,
        &[],
    ) else {
        return;
    };
    // Verify the PIN once (policy "once": the card keeps it until unplugged or reset)...
    r.assert_ok(&r.pack(Some("123456\n")));
    std::fs::remove_file(r.repo.out()).unwrap();
    let out = r.repo.doctor(&r.identity, Some(&r.plugin_dir));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    // ...and doctor must not have reset the card: a build with no way to ask still works.
    r.assert_ok(&r.pack(None));
    let recipient = std::fs::read_to_string(&r.identity)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("Recipient:")
                .map(|s| s.trim().to_owned())
        })
        .unwrap();
    assert!(text.contains("ok    age-plugin-yubikey 0.5.1"), "{text}");
    assert!(text.contains("ok    pcscd is reachable"), "{text}");
    assert!(
        text.contains("ok    YubiKey serial 12345678 (firmware 5.4.3)"),
        "{text}"
    );
    assert!(text.contains(&format!("slot 1: {recipient}")), "{text}");
    assert!(
        text.contains("ok    the identity's YubiKey 12345678 is plugged in (slot 1)"),
        "{text}"
    );
    assert!(
        text.contains("ok    hosts/web1.yaml: your identity can open it"),
        "{text}"
    );
}
