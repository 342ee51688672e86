//! `keypack.pins`: every `verify`, `pack` and `build` checks the keys it packs against the
//! reviewed public keys; `keypack pin` records them and `keypack recipients` derives a host's
//! age recipient from its pin (review finding 1's lasting fix: swaps and rollbacks refused).

use crate::common::*;

fn pins_text(repo: &Repo) -> String {
    std::fs::read_to_string(repo.root().join("keypack.pins")).unwrap_or_default()
}

#[test]
fn pins_are_recorded_and_swapped_or_rolled_back_keys_are_refused() {
    if !have_sops("pins_are_recorded_and_swapped_or_rolled_back_keys_are_refused") {
        return;
    }
    let repo = standard_repo();
    let who = ["-H", "web1", "-U", "alice"];

    // No pins yet: a warning per role, naming `keypack pin`; --require-pins makes it an error.
    let out = repo.run("verify", &who);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("warning: ").count(), 3, "{err}");
    assert!(err.contains("keypack pin"), "{err}");
    let mut strict = who.to_vec();
    strict.push("--require-pins");
    let out = repo.run("verify", &strict);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no pin in keypack.pins"),
        "{}",
        stderr(&out)
    );

    // Pin: three roles, public keys only, in the documented line format.
    let out = repo.run("pin", &who);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = pins_text(&repo);
    for (role, key) in [
        ("hosts/web1/ssh_host_ed25519_key", &repo.host),
        ("hosts/web1/deploy_key_ed25519", &repo.deploy),
        ("users/alice/id_ed25519", &repo.alice),
    ] {
        let data = key.public.split_whitespace().nth(1).unwrap();
        assert!(
            text.contains(&format!("{role} ssh-ed25519 {data}\n")),
            "{text}"
        );
    }
    assert!(!text.contains("PRIVATE"), "{text}");
    let out = repo.run("verify", &strict);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // Pinning again changes nothing.
    let out = repo.run("pin", &who);
    assert!(out.status.success() && stdout(&out).contains("unchanged"));
    assert_eq!(pins_text(&repo), text);

    // A swapped key (a valid sops file with another key) is refused with both fingerprints.
    let old_alice = std::fs::read(repo.root().join("users/alice.json")).unwrap();
    let scratch = repo.scratch();
    let mallory = ssh_keygen(&scratch, "mallory");
    repo.encrypt_doc("users/alice.json", &[("id_ed25519", &mallory.private)]);
    let out_dir = repo.out_dir("pins");
    let bundle = out_dir.join("keys.tar.gz");
    for verb in ["verify", "pack"] {
        let mut args = who.to_vec();
        if verb == "pack" {
            args.extend_from_slice(&["-o", bundle.to_str().unwrap()]);
        }
        let out = repo.run(verb, &args);
        assert!(!out.status.success(), "{verb} accepted a swapped key");
        let err = stderr(&out);
        assert!(
            err.contains("does not match the pinned key"),
            "{verb}: {err}"
        );
        assert!(
            err.contains(&fingerprint(&mallory.public, &scratch)),
            "{err}"
        );
        assert!(
            err.contains(&fingerprint(&repo.alice.public, &scratch)),
            "{err}"
        );
    }
    assert!(!bundle.exists());
    // `pin` does not paper over it; `--replace` is the deliberate rotation.
    let out = repo.run("pin", &who);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
    let out = repo.run("pin", &["-H", "web1", "-U", "alice", "--replace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pins_text(&repo).contains("retired users/alice/id_ed25519 ssh-ed25519"));

    // Rollback: the old file restored from git carries a retired key.
    std::fs::write(repo.root().join("users/alice.json"), &old_alice).unwrap();
    let out = repo.run("verify", &who);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was retired from users/alice/id_ed25519"),
        "{}",
        stderr(&out)
    );

    // require_pins in keypack.toml: bob has no pin.
    repo.write("keypack.toml", b"require_pins = true\n");
    let out = repo.run("verify", &["-H", "web1", "-U", "bob"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("users/bob/id_ed25519"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recipients_prints_the_host_age_recipient_from_its_pin() {
    if !have_sops("recipients_prints_the_host_age_recipient_from_its_pin") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    let args = [
        "recipients",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
    ];
    let out = repo.keypack(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("keypack pin -H web1"),
        "{}",
        stderr(&out)
    );
    assert!(repo.run("pin", &["-H", "web1"]).status.success());
    let out = repo.keypack(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = keypack_pins::PublicKey::parse_openssh(&repo.host.public)
        .unwrap()
        .age_recipient()
        .unwrap();
    assert_eq!(stdout(&out).trim(), expected);
    let deploy = keypack_pins::PublicKey::parse_openssh(&repo.deploy.public)
        .unwrap()
        .age_recipient()
        .unwrap();
    assert_ne!(
        expected, deploy,
        "the host key's recipient, not the deploy key's"
    );
}
