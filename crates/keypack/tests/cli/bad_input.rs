//! Bad input: each case is a clear error naming the file (and field), a non-zero exit, and no
//! output file left behind.

use std::os::unix::fs::symlink;
use std::process::Command;

use crate::common::*;

/// Runs `keypack pack -H HOST [extra] -o OUT` against a broken copy of the standard repository
/// and checks the failure: exit status, the words expected in stderr, an empty output folder.
fn expect_failure(
    name: &str,
    break_it: impl FnOnce(&Repo),
    args: &[&str],
    expected: &[&str],
) -> String {
    let repo = standard_repo();
    break_it(&repo);
    let out = repo.out_dir(name);
    let target = out.join("keys.tar.gz");
    let mut full = args.to_vec();
    full.extend_from_slice(&["-o", target.to_str().unwrap()]);
    let result = repo.run("pack", &full);
    let err = stderr(&result);
    assert!(!result.status.success(), "{name}: succeeded\n{err}");
    assert!(err.starts_with("error: "), "{name}: {err}");
    for word in expected {
        assert!(err.contains(word), "{name}: {word:?} not in:\n{err}");
    }
    assert!(!err.contains("PRIVATE KEY"), "{name}: leaked\n{err}");
    assert!(listing(&out).is_empty(), "{name}: left {:?}", listing(&out));
    err
}

#[test]
fn malformed_yaml_names_the_file() {
    if !have_sops("malformed_yaml_names_the_file") {
        return;
    }
    expect_failure(
        "yaml",
        |r| {
            r.write(
                "hosts/web1.yaml",
                b"ssh_host_ed25519_key: [unclosed\nsops:\n",
            )
        },
        &["-H", "web1"],
        &["parsing ", "hosts/web1.yaml", "malformed"],
    );
}

#[test]
fn malformed_json_names_the_file() {
    if !have_sops("malformed_json_names_the_file") {
        return;
    }
    expect_failure(
        "json",
        |r| r.write("users/alice.json", b"{\"id_ed25519\": "),
        &["-H", "web1", "-U", "alice"],
        &["parsing ", "users/alice.json", "malformed"],
    );
}

#[test]
fn truncated_age_armor_names_the_file() {
    if !have_sops("truncated_age_armor_names_the_file") {
        return;
    }
    expect_failure(
        "armor",
        |r| {
            let key = ssh_keygen(&r.scratch(), "carol");
            let enc = sops_encrypt(key.private.as_bytes(), "binary", "json", &r.scratch());
            // A plain age file, cut in the middle of its armor.
            let text = String::from_utf8(enc).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let armor = v["sops"]["age"][0]["enc"].as_str().unwrap();
            r.write(
                "users/carol/id_ed25519.age",
                &armor.as_bytes()[..armor.len() / 2],
            );
        },
        &["-H", "web1", "-U", "carol"],
        &["users/carol/id_ed25519.age"],
    );
}

#[test]
fn wrong_identity_lists_recipients() {
    if !have_sops("wrong_identity_lists_recipients") {
        return;
    }
    let repo = standard_repo();
    let other = age::x25519::Identity::generate();
    let other_file = repo.scratch().join("other.txt");
    {
        use secrecy::ExposeSecret;
        std::fs::write(
            &other_file,
            format!("{}\n", other.to_string().expose_secret()),
        )
        .unwrap();
    }
    let out = repo.out_dir("wrong-identity");
    let target = out.join("keys.tar.gz");
    let root = repo.root();
    let result = repo.keypack(&[
        "pack",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
        "-i",
        other_file.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    let err = stderr(&result);
    assert!(!result.status.success());
    assert!(err.contains("hosts/web1.yaml"), "{err}");
    assert!(err.contains("no identity matches"), "{err}");
    assert!(err.contains(RECIPIENT), "{err}");
    assert!(err.contains(&other.to_public().to_string()), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(listing(&out).is_empty());
}

#[test]
fn unknown_host_lists_where_keypack_looked() {
    if !have_sops("unknown_host_lists_where_keypack_looked") {
        return;
    }
    expect_failure(
        "unknown",
        |_| {},
        &["-H", "nope"],
        &[
            "unknown host nope",
            "hosts/nope.yaml",
            "hosts/nope/",
            "hint: ",
        ],
    );
    expect_failure(
        "unknown-user",
        |_| {},
        &["-H", "web1", "-U", "zoe"],
        &["unknown user zoe", "users/zoe.json"],
    );
}

#[test]
fn traversal_names_are_refused_before_any_path_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("keys.tar.gz");
    for args in [
        ["-H", "../x", "-U", "alice"],
        ["-H", "web1", "-U", "../../etc"],
        ["-H", "web1", "-U", "a/b"],
        ["-H", "", "-U", "alice"],
        ["-H", "web1", "-U", ".ssh"],
    ] {
        let out = Command::new(KEYPACK)
            .arg("pack")
            .args(args)
            .args(["--keys-repo", "/nonexistent", "-o"])
            .arg(&target)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
        assert!(!target.exists());
    }
}

#[test]
fn symlink_out_of_the_repository_is_refused() {
    if !have_sops("symlink_out_of_the_repository_is_refused") {
        return;
    }
    expect_failure(
        "symlink",
        |r| {
            let doc = r.root().join("hosts/web1.yaml");
            let outside = r.tmp.path().join("outside.yaml");
            std::fs::rename(&doc, &outside).unwrap();
            symlink(&outside, &doc).unwrap();
        },
        &["-H", "web1"],
        &[
            "hosts/web1.yaml",
            "leads outside the keys repository",
            "hint: ",
        ],
    );
}

#[test]
fn mismatched_public_keys_are_refused() {
    if !have_sops("mismatched_public_keys_are_refused") {
        return;
    }
    // A .pub file beside a per-key file.
    expect_failure(
        "pub-file",
        |r| r.write("users/bob/id_ed25519.pub", r.alice.public.as_bytes()),
        &["-H", "web1", "-U", "bob"],
        &[
            "users/bob/id_ed25519.pub",
            "users/bob/.ssh/id_ed25519.pub: stored public key does not match",
            "hint: ",
        ],
    );
    // A `<field>_pub` field of a document.
    expect_failure(
        "pub-field",
        |r| {
            r.encrypt_doc(
                "hosts/web1.yaml",
                &[
                    ("ssh_host_ed25519_key", &r.host.private),
                    ("ssh_host_ed25519_key_pub", &r.alice.public),
                ],
            )
        },
        &["-H", "web1"],
        &[
            "hosts/web1.yaml",
            "ssh_host_ed25519_key_pub",
            "does not match",
        ],
    );
}

#[test]
fn tampered_file_fails_its_mac() {
    if !have_sops("tampered_file_fails_its_mac") {
        return;
    }
    expect_failure(
        "mac",
        |r| {
            let path = r.root().join("users/alice.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let i = text.find("\"lastmodified\": \"").unwrap() + 17;
            let mut bytes = text.into_bytes();
            bytes[i + 3] = if bytes[i + 3] == b'1' { b'2' } else { b'1' };
            std::fs::write(&path, bytes).unwrap();
        },
        &["-H", "web1", "-U", "alice"],
        &["decrypting ", "users/alice.json", "MAC mismatch"],
    );
}

#[test]
fn missing_field_and_non_key_values_name_the_field() {
    if !have_sops("missing_field_and_non_key_values_name_the_field") {
        return;
    }
    expect_failure(
        "missing-field",
        |r| r.encrypt_doc("hosts/web1.yaml", &[("ssh_host_rsa_key", &r.host.private)]),
        &["-H", "web1"],
        &["hosts/web1.yaml", "has no field ssh_host_ed25519_key"],
    );
    expect_failure(
        "not-a-key",
        |r| r.encrypt_doc("users/alice.json", &[("id_ed25519", "hello")]),
        &["-H", "web1", "-U", "alice"],
        &[
            "users/alice.json field id_ed25519",
            "not an OpenSSH private key",
        ],
    );
}

/// sops leaves a value matching `--unencrypted-regex` in plaintext and does not authenticate its
/// name, so a plaintext private key in a sops file is refused rather than packed.
#[test]
fn unencrypted_private_key_in_a_sops_file_is_refused() {
    if !have_sops("unencrypted_private_key_in_a_sops_file_is_refused") {
        return;
    }
    expect_failure(
        "plaintext-key",
        |r| {
            let plain = json_doc(&[("ssh_host_ed25519_key", &r.host.private), ("note", "x")]);
            let input = r.scratch().join("plaintext-key.json");
            std::fs::create_dir_all(r.scratch()).unwrap();
            std::fs::write(&input, plain).unwrap();
            let out = Command::new("sops")
                .env("SOPS_DISABLE_VERSION_CHECK", "1")
                .args([
                    "encrypt",
                    "--age",
                    RECIPIENT,
                    "--unencrypted-regex",
                    "^ssh_host",
                ])
                .args(["--input-type", "json", "--output-type", "yaml"])
                .arg(&input)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                text.contains("OPENSSH PRIVATE KEY"),
                "sops kept the value in plaintext"
            );
            r.write("hosts/web1.yaml", text.as_bytes());
        },
        &["-H", "web1"],
        &[
            "hosts/web1.yaml",
            "field ssh_host_ed25519_key",
            "stored unencrypted",
        ],
    );
}

#[test]
fn two_candidates_name_both_paths() {
    if !have_sops("two_candidates_name_both_paths") {
        return;
    }
    expect_failure(
        "ambiguous",
        |r| r.write("users/alice/id_ed25519", b"x"),
        &["-H", "web1", "-U", "alice"],
        &[
            "users/alice.json",
            "users/alice/id_ed25519",
            "two candidates",
        ],
    );
}

#[test]
fn verify_lists_every_failing_key() {
    if !have_sops("verify_lists_every_failing_key") {
        return;
    }
    let repo = standard_repo();
    repo.write("users/bob/id_ed25519.pub", repo.alice.public.as_bytes());
    repo.encrypt_doc("users/alice.json", &[("id_ed25519", "hello")]);
    let result = repo.run("verify", &["-H", "web1", "-U", "alice", "-U", "bob"]);
    let err = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: users/alice/.ssh/id_ed25519: "),
        "{err}"
    );
    assert!(err.contains("error: users/bob/.ssh/id_ed25519: "), "{err}");
    assert!(err.contains("2 of 4 key(s) failed verification"), "{err}");
    // The good keys are still listed.
    let text = stdout(&result);
    assert!(
        text.contains("etc/ssh/ssh_host_ed25519_key  SHA256:"),
        "{text}"
    );
}

#[test]
fn missing_identity_and_missing_repository_say_where_to_look() {
    if !have_sops("missing_identity_and_missing_repository_say_where_to_look") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    let out = repo.keypack(&[
        "verify",
        "-H",
        "web1",
        "--keys-repo",
        root.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("no age identity file found"), "{err}");
    assert!(err.contains("hint: "), "{err}");

    let out = repo.keypack(&["verify", "-H", "web1", "-i", AGE_KEY]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("no keys repository given"), "{err}");
    assert!(err.contains("KEYPACK_KEYS_REPO"), "{err}");
}

#[test]
fn output_mistakes_are_caught_before_decrypting() {
    if !have_sops("output_mistakes_are_caught_before_decrypting") {
        return;
    }
    let repo = standard_repo();
    // Missing folder: never created silently.
    let missing = repo.tmp.path().join("no/such/folder/keys.tar.gz");
    let out = repo.run("pack", &["-H", "web1", "-o", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!repo.tmp.path().join("no").exists());
    // Inside the keys repository: plaintext keys must not land next to the encrypted ones.
    let inside = repo.root().join("keys.tar.gz");
    let out = repo.run("pack", &["-H", "web1", "-o", inside.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("inside the keys repository"),
        "{}",
        stderr(&out)
    );
    assert!(!inside.exists());
    // A folder.
    let out = repo.run(
        "pack",
        &["-H", "web1", "-f", "-o", repo.scratch().to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is a folder"), "{}", stderr(&out));
}

#[test]
fn stdout_terminal_is_refused() {
    const TEST: &str = "stdout_terminal_is_refused";
    if !std::path::Path::new("/usr/bin/script").exists() {
        return skip(
            TEST,
            "util-linux `script` (to get a terminal) is not installed",
        );
    }
    // `script` runs the command on a new pseudo-terminal.
    let out = Command::new("/usr/bin/script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "{KEYPACK} pack -H web1 --keys-repo /nonexistent -o -"
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("refusing to write the bundle (private keys) to a terminal"),
        "{text}"
    );
}

/// The wording of the most common errors, pinned (style.md §5.4): a change shows up here.
#[test]
fn error_wording_is_pinned() {
    if !have_sops("error_wording_is_pinned") {
        return;
    }
    let repo = standard_repo();
    let root = std::fs::canonicalize(repo.root()).unwrap();
    let out = repo.out_dir("wording");
    let target = out.join("keys.tar.gz");
    let normalize = |o: &std::process::Output| {
        stderr(o)
            .replace(root.to_str().unwrap(), "$REPO")
            .replace(out.to_str().unwrap(), "$OUT")
    };

    let r = repo.run("pack", &["-H", "nope", "-o", target.to_str().unwrap()]);
    assert_eq!(
        normalize(&r),
        "error: finding the keys of host nope in $REPO: unknown host nope: none of \
         $REPO/hosts/nope.yaml, $REPO/hosts/nope.yml, $REPO/hosts/nope.json, \
         $REPO/hosts/nope.env, $REPO/hosts/nope/ exists\n\
         hint: check the spelling, and that --keys-repo points at the right repository \
         (and keypack.toml at its folders)\n"
    );

    std::fs::write(&target, b"old").unwrap();
    let r = repo.run("pack", &["-H", "web1", "-o", target.to_str().unwrap()]);
    assert_eq!(
        normalize(&r),
        "error: $OUT/keys.tar.gz already exists\n\
         hint: use -f to replace it, or choose another -o\n"
    );

    let r = repo.keypack(&["verify", "-H", "web1", "-i", AGE_KEY]);
    assert_eq!(
        normalize(&r),
        "error: no keys repository given\n\
         hint: pass --keys-repo DIR, set KEYPACK_KEYS_REPO, or put `keys_repo = \"DIR\"` in \
         ~/.config/keypack/config.toml\n"
    );
}

/// Keys never go where other users can list them: `pack -o` into a 0755 folder is refused
/// before anything is decrypted.
#[test]
fn output_folder_others_can_list_is_refused() {
    if !have_sops("output_folder_others_can_list_is_refused") {
        return;
    }
    let repo = standard_repo();
    let open = repo.out_dir("listable");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let target = open.join("keys.tar.gz");
    let out = repo.run("pack", &["-H", "web1", "-o", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("can be listed by other users"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
    assert!(listing(&open).is_empty(), "left {:?}", listing(&open));
}

/// Review finding 9: `build -o` into the keys repository is refused for every medium (as `pack`
/// refuses it), and so is a state folder inside it; nothing is written.
#[test]
fn build_into_the_keys_repository_is_refused_for_every_medium() {
    const TEST: &str = "build_into_the_keys_repository_is_refused_for_every_medium";
    if !have_sops(TEST) {
        return;
    }
    let repo = standard_repo();
    let plugins = repo.keypack(&["plugins"]);
    let media: Vec<String> = stdout(&plugins)
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(media.len() >= 2, "{}", stdout(&plugins));
    let before = listing(&repo.root());
    let inside = repo.root().join("hosts/web1.img");
    for medium in &media {
        let out = repo.run(
            "build",
            &[
                "-H",
                "web1",
                "--media",
                medium,
                "-o",
                inside.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "{medium}");
        let err = stderr(&out);
        assert!(
            err.contains("inside the keys repository"),
            "{medium}: {err}"
        );

        let out = repo
            .command(&[
                "build",
                "--keys-repo",
                repo.root().to_str().unwrap(),
                "-i",
                AGE_KEY,
                "-H",
                "web1",
                "--media",
                medium,
            ])
            .env("KEYPACK_STATE_DIR", repo.root().join("state"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{medium}");
        let err = stderr(&out);
        assert!(
            err.contains("inside the keys repository"),
            "{medium}: {err}"
        );
    }
    let after: Vec<String> = listing(&repo.root())
        .into_iter()
        .filter(|p| !p.starts_with("state"))
        .collect();
    assert_eq!(after, before, "a refused build wrote into the repository");
}

/// Review finding 10: a bare `""` added to an encrypted document keeps its MAC valid (sops
/// hashes an empty value as nothing). keypack names the empty field and the file.
#[test]
fn an_empty_value_is_named_with_its_field_and_file() {
    const TEST: &str = "an_empty_value_is_named_with_its_field_and_file";
    if !have_sops(TEST) {
        return;
    }
    let repo = standard_repo();
    repo.encrypt_doc(
        "hosts/web2.yaml",
        &[("ssh_host_ed25519_key", &repo.host.private)],
    );
    let path = repo.root().join("hosts/web2.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("sops:\n", "deploy_key_ed25519: \"\"\nsops:\n", 1);
    std::fs::write(&path, text).unwrap();
    for (verb, extra) in [("verify", &[][..]), ("pack", &["-o", "-"][..])] {
        let mut args = vec!["-H", "web2"];
        args.extend_from_slice(extra);
        let out = repo.run(verb, &args);
        assert!(!out.status.success(), "{verb}");
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains("hosts/web2.yaml: field deploy_key_ed25519 is empty (\"\")"),
            "{verb}: {said}"
        );
        assert!(!said.contains("MAC"), "{verb}: {said}");
    }
}
