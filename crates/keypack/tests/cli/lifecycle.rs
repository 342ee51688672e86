//! `keypack host new|rotate` and `keypack user new`: keys made by keypack, read back by the
//! real `sops` and `ssh-keygen`; `.sops.yaml` creation rules; a rotation that rewraps exactly
//! the files listing the host's old age recipient and changes nothing else.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keypack_pins::PublicKey;

use crate::common::*;

/// The real `sops` with an empty environment but `PATH` (no version check, no identity).
fn sops() -> Command {
    let mut cmd = Command::new("sops");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SOPS_DISABLE_VERSION_CHECK", "1");
    cmd
}

/// Runs `cmd`, asserting it succeeds (its stderr in the message); its stdout.
fn sops_stdout(cmd: &mut Command, what: &Path) -> Vec<u8> {
    let out = cmd.output().expect("sops runs");
    assert!(
        out.status.success(),
        "sops {}: {}",
        what.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `sops decrypt --extract '["FIELD"]' FILE` with the fixture identity.
fn sops_field(file: &Path, field: &str) -> String {
    let mut cmd = sops();
    cmd.env("SOPS_AGE_KEY_FILE", AGE_KEY)
        .args(["decrypt", "--extract", &format!("[\"{field}\"]")])
        .arg(file);
    String::from_utf8(sops_stdout(&mut cmd, file)).unwrap()
}

/// `sops decrypt FILE` (whole document) with the fixture identity.
fn sops_decrypt(file: &Path) -> String {
    let mut cmd = sops();
    cmd.env("SOPS_AGE_KEY_FILE", AGE_KEY)
        .arg("decrypt")
        .arg(file);
    String::from_utf8(sops_stdout(&mut cmd, file)).unwrap()
}

/// The public half of an OpenSSH private key, by `ssh-keygen -y` reading a pipe (no file).
fn ssh_public_of(private: &str) -> String {
    let mut child = Command::new("ssh-keygen")
        .args(["-y", "-f", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), private.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The age identity sops-nix derives from an OpenSSH ed25519 private key (Mic92/ssh-to-age
/// `convert.go`): the first 32 bytes of SHA-512(seed), Bech32 `AGE-SECRET-KEY-`, upper case.
/// Written from the OpenSSH format here, independent of keypack's code.
fn ssh_to_age_identity(private: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    fn take<'a>(r: &mut &'a [u8]) -> &'a [u8] {
        let n = u32::from_be_bytes(r[..4].try_into().unwrap()) as usize;
        let (s, rest) = r[4..].split_at(n);
        *r = rest;
        s
    }
    let magic = b"openssh-key-v1\0";
    assert_eq!(&raw[..magic.len()], magic);
    let mut r = &raw[magic.len()..];
    assert_eq!(take(&mut r), b"none", "unencrypted");
    take(&mut r); // kdf name
    take(&mut r); // kdf options
    r = &r[4..]; // number of keys
    take(&mut r); // public key
    let mut p = take(&mut r);
    p = &p[8..]; // check ints
    assert_eq!(take(&mut p), b"ssh-ed25519");
    take(&mut p); // public key
    let sk = take(&mut p); // seed || public
    assert_eq!(sk.len(), 64);
    let digest = sha2::Sha512::digest(&sk[..32]);
    let hrp = bech32::Hrp::parse("age-secret-key-").unwrap();
    bech32::encode::<bech32::Bech32>(hrp, &digest[..32])
        .unwrap()
        .to_uppercase()
}

/// `sops decrypt FILE` with an identity given in the environment; `None` when it fails.
fn sops_decrypt_as(file: &Path, identity: &str) -> Option<String> {
    let out = sops()
        .env("HOME", "/nonexistent")
        .env("SOPS_AGE_KEY", identity)
        .arg("decrypt")
        .arg(file)
        .output()
        .expect("sops runs");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// `repo.run(verb, extra)`, asserting it succeeds (its stderr in the message).
fn run_ok(repo: &Repo, verb: &str, extra: &[&str]) -> std::process::Output {
    let out = repo.run(verb, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// The standard repository, when the real `sops` is there (else the test is skipped).
fn sops_repo(test: &str) -> Option<Repo> {
    have_sops(test).then(standard_repo)
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// Every file under `dir`, relative, with its bytes: a snapshot to compare.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    b"<dir>".to_vec(),
                ));
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

/// The base64 body lines of an OpenSSH private key (what a leak search looks for).
fn key_body_lines(private: &str) -> Vec<String> {
    private
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_owned)
        .collect()
}

fn value_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
        .trim()
}

fn pins_text(repo: &Repo) -> String {
    std::fs::read_to_string(repo.root().join("keypack.pins")).unwrap_or_default()
}

fn hosts_rule() -> String {
    format!(
        "# who may read what\ncreation_rules:\n  - path_regex: ^hosts/.*\n    age: {RECIPIENT}\n  - path_regex: ^users/.*\n    key_groups:\n      - age:\n          - {RECIPIENT}\n"
    )
}

#[test]
fn host_new_makes_keys_sops_reads_and_build_packs_with_pins() {
    let Some(repo) = sops_repo("host_new_makes_keys_sops_reads_and_build_packs_with_pins") else {
        return;
    };
    let root = repo.root();

    // No creation rule for hosts/ (and no --age): refused, naming .sops.yaml and the path.
    repo.write(
        ".sops.yaml",
        format!("creation_rules:\n  - path_regex: ^secrets/.*\n    age: {RECIPIENT}\n").as_bytes(),
    );
    let before = tree(&root);
    let out = repo.run("host", &["new", "web3"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(".sops.yaml") && err.contains("hosts/web3.yaml") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(tree(&root), before, "a refused `host new` writes nothing");

    repo.write(".sops.yaml", hosts_rule().as_bytes());
    // --dry-run: nothing written, the plan printed.
    let before = tree(&root);
    let out = run_ok(&repo, "host", &["new", "web3", "--deploy-key", "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("would write hosts/web3.yaml") && text.contains(RECIPIENT),
        "{text}"
    );
    assert!(text.contains("would write keypack.pins"), "{text}");
    assert_eq!(tree(&root), before, "--dry-run writes nothing");

    // The real thing.
    let out = run_ok(&repo, "host", &["new", "web3", "--deploy-key"]);
    let text = stdout(&out);
    let doc = root.join("hosts/web3.yaml");

    // No plaintext anywhere under the test's folder (the repository's files are ciphertext).
    let host_private = sops_field(&doc, "ssh_host_ed25519_key");
    let deploy_private = sops_field(&doc, "deploy_key_ed25519");
    for private in [&host_private, &deploy_private] {
        for line in key_body_lines(private) {
            let hits = files_containing(repo.tmp.path(), line.as_bytes());
            assert!(hits.is_empty(), "private key bytes in {hits:?}");
        }
    }

    // Real sops and ssh-keygen read the keys back; the stored public halves match.
    for (private, field, comment, bundle_path) in [
        (
            &host_private,
            "ssh_host_ed25519_key",
            "web3",
            "etc/ssh/ssh_host_ed25519_key",
        ),
        (
            &deploy_private,
            "deploy_key_ed25519",
            "deploy@web3",
            "root/.ssh/deploy_key_ed25519",
        ),
    ] {
        assert!(
            private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            "{field}"
        );
        let public = ssh_public_of(private);
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(public.ends_with(&format!(" {comment}")), "{public}");
        let stored = sops_field(&doc, &format!("{field}_pub"));
        assert_eq!(stored.trim(), public, "{field}_pub");
        let fp = fingerprint(&public, &repo.scratch());
        let line = text
            .lines()
            .find(|l| l.starts_with(bundle_path))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(&fp), "{line} vs {fp}");
        // Pinned.
        let role = format!("hosts/web3/{field}");
        let data = public.split_whitespace().nth(1).unwrap();
        assert!(
            pins_text(&repo).contains(&format!("{role} ssh-ed25519 {data}\n")),
            "{}",
            pins_text(&repo)
        );
    }
    let host_public = ssh_public_of(&host_private);
    let expected_recipient = PublicKey::parse_openssh(&host_public)
        .unwrap()
        .age_recipient()
        .unwrap();
    assert_eq!(value_after(&text, "age recipient:"), expected_recipient);
    let data = host_public.split_whitespace().nth(1).unwrap();
    assert_eq!(
        value_after(&text, "known_hosts:"),
        format!("web3 ssh-ed25519 {data}")
    );
    // The .sops.yaml lines to add: the anchored recipient and a rule for secrets/web3/.
    assert!(
        text.contains(&format!("- &host_web3 {expected_recipient}")),
        "{text}"
    );
    assert!(text.contains("path_regex: secrets/web3/"), "{text}");
    // The document is readable only by the rule's recipients; files are 0644 ciphertext.
    let doc_text = std::fs::read_to_string(&doc).unwrap();
    assert!(doc_text.contains(&format!("recipient: {RECIPIENT}")));
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&doc).unwrap().permissions())
            & 0o777,
        0o644
    );

    // keypack builds it with no pin warning.
    let state = repo.tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let k = repo.scratch().join("vmlinuz");
    let i = repo.scratch().join("base-initrd.img");
    std::fs::write(&k, b"not a kernel").unwrap();
    std::fs::write(&i, b"070701 not an initrd").unwrap();
    let out = repo
        .command(&[
            "build",
            "-H",
            "web3",
            "--keys-repo",
            root.to_str().unwrap(),
            "-i",
            AGE_KEY,
            "--require-pins",
            "--media",
            "initrd",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
        ])
        .env("KEYPACK_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // Again: refused, pointing at rotate; nothing changes.
    let before = tree(&root);
    let out = repo.run("host", &["new", "web3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("host rotate web3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&root), before);
    // web1 (made by sops, not keypack) exists too.
    let out = repo.run("host", &["new", "web1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rotate"), "{}", stderr(&out));
}

#[test]
fn host_new_json_and_age_override() {
    let Some(repo) = sops_repo("host_new_json_and_age_override") else {
        return;
    };
    // No .sops.yaml at all: --age decides.
    let out = run_ok(
        &repo,
        "host",
        &["new", "web4", "--json", "--age", RECIPIENT],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["host"], "web4");
    assert_eq!(
        doc["files"],
        serde_json::json!(["hosts/web4.yaml", "keypack.pins"])
    );
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "no deploy key without --deploy-key");
    assert_eq!(keys[0]["path"], "etc/ssh/ssh_host_ed25519_key");
    let public = keys[0]["public_key"].as_str().unwrap();
    let key = PublicKey::parse_openssh(public).unwrap();
    assert_eq!(keys[0]["fingerprint"], key.fingerprint());
    assert_eq!(doc["age_recipient"], key.age_recipient().unwrap());
    assert_eq!(doc["known_hosts"], format!("web4 {}", key.to_openssh()));
    let private = sops_field(&repo.root().join("hosts/web4.yaml"), "ssh_host_ed25519_key");
    assert_eq!(
        PublicKey::parse_openssh(&ssh_public_of(&private)).unwrap(),
        key
    );
    // Without rule or --age: the error names .sops.yaml.
    let out = repo.run("host", &["new", "web5", "--json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(".sops.yaml"), "{}", stderr(&out));
    // A dry run in JSON: the files it would write, no keys shown, nothing written.
    let before = tree(&repo.root());
    let out = run_ok(
        &repo,
        "host",
        &["new", "web5", "--json", "--dry-run", "--age", RECIPIENT],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(
        doc["files"],
        serde_json::json!(["hosts/web5.yaml", "keypack.pins"])
    );
    assert!(doc["keys"][0]["public_key"].is_null());
    assert_eq!(tree(&repo.root()), before);
}

#[test]
fn user_new_makes_a_key_sops_reads_and_pins_it() {
    let Some(repo) = sops_repo("user_new_makes_a_key_sops_reads_and_pins_it") else {
        return;
    };
    repo.write(".sops.yaml", hosts_rule().as_bytes());
    let before = tree(&repo.root());
    let out = run_ok(&repo, "user", &["new", "carol", "--dry-run"]);
    assert!(stdout(&out).contains("would write users/carol.yaml"));
    assert_eq!(tree(&repo.root()), before);

    let out = run_ok(&repo, "user", &["new", "carol", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["user"], "carol");
    assert!(doc.get("age_recipient").is_none(), "{doc}");
    assert_eq!(doc["keys"][0]["path"], "users/carol/.ssh/id_ed25519");
    let file = repo.root().join("users/carol.yaml");
    let private = sops_field(&file, "id_ed25519");
    for line in key_body_lines(&private) {
        let hits = files_containing(repo.tmp.path(), line.as_bytes());
        assert!(hits.is_empty(), "private key bytes in {hits:?}");
    }
    let public = ssh_public_of(&private);
    assert!(public.ends_with(" carol"), "{public}");
    assert_eq!(sops_field(&file, "id_ed25519_pub").trim(), public);
    assert_eq!(doc["keys"][0]["public_key"], public);
    assert_eq!(
        doc["keys"][0]["fingerprint"],
        fingerprint(&public, &repo.scratch())
    );
    let data = public.split_whitespace().nth(1).unwrap();
    assert!(pins_text(&repo).contains(&format!("users/carol/id_ed25519 ssh-ed25519 {data}\n")));
    // verify packs it, pinned.
    run_ok(&repo, "verify", &["-H", "web1", "-U", "carol", "--json"]);
    // Existing users are refused (alice: a JSON document; bob: a per-key folder).
    for u in ["carol", "alice", "bob"] {
        let out = repo.run("user", &["new", u]);
        assert!(!out.status.success(), "{u}");
        assert!(stderr(&out).contains("user rotate"), "{}", stderr(&out));
    }
}

/// Encrypts YAML with the real sops for `recipients` (comma-separated), outside the repo so no
/// `.sops.yaml` applies.
fn sops_encrypt_yaml(plain: &str, recipients: &str, scratch: &Path) -> Vec<u8> {
    let input = scratch.join("plain-input.yaml");
    std::fs::write(&input, plain).unwrap();
    let mut cmd = sops();
    cmd.current_dir(scratch)
        .args(["encrypt", "--age", recipients])
        .args(["--input-type", "yaml", "--output-type", "yaml"])
        .arg(&input);
    let out = sops_stdout(&mut cmd, &input);
    std::fs::remove_file(&input).unwrap();
    out
}

/// The lines of a sops YAML file outside its `sops.age` list (values, MAC, lastmodified, …).
fn non_age_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_age = false;
    for l in text.lines() {
        if l == "    age:" {
            in_age = true;
            continue;
        }
        if in_age && (l.starts_with("        ") || l.starts_with("      - ")) {
            continue;
        }
        in_age = false;
        out.push(l.to_owned());
    }
    out
}

#[test]
fn host_rotate_replaces_the_recipient_and_rewraps_only_its_files() {
    let Some(repo) = sops_repo("host_rotate_replaces_the_recipient_and_rewraps_only_its_files")
    else {
        return;
    };
    let root = repo.root();
    let old_key = PublicKey::parse_openssh(&repo.host.public).unwrap();
    let old = old_key.age_recipient().unwrap();
    let sops_yaml = format!(
        "# admins and hosts\nkeys:\n  - &admin_test {RECIPIENT}\n  - &host_web1 {old} # web1 (ssh-to-age)\ncreation_rules:\n  # the keys themselves: admins only\n  - path_regex: ^(hosts|users)/.*\n    key_groups:\n      - age:\n          - *admin_test\n  - path_regex: secrets/web1/.*\n    key_groups:\n      - age:\n          - *admin_test\n          - *host_web1\n  - path_regex: secrets/.*\n    age: {RECIPIENT}\n"
    );
    repo.write(".sops.yaml", sops_yaml.as_bytes());
    let both = format!("{RECIPIENT},{old}");
    let db = sops_encrypt_yaml("password: hunter2\nport: 5432\n", &both, &repo.scratch());
    repo.write("secrets/web1/db.yaml", &db);
    let other = sops_encrypt_yaml("token: abc\n", RECIPIENT, &repo.scratch());
    repo.write("secrets/other.yaml", &other);
    // The helper derives what sops-nix derives: before the rotation, the old host key opens it.
    let db_path = root.join("secrets/web1/db.yaml");
    let as_old = sops_decrypt_as(&db_path, &ssh_to_age_identity(&repo.host.private));
    assert!(as_old.is_some_and(|p| p.contains("hunter2")));
    let users_before = tree(&root.join("users"));
    let web1_old_bytes = std::fs::read(root.join("hosts/web1.yaml")).unwrap();

    // A dry run writes nothing but names what it would rewrap.
    let before = tree(&root);
    let out = run_ok(&repo, "host", &["rotate", "web1", "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("would write secrets/web1/db.yaml  (rewrapped)"),
        "{text}"
    );
    assert!(!text.contains("other.yaml"), "{text}");
    assert_eq!(tree(&root), before, "--dry-run writes nothing");

    let out = run_ok(&repo, "host", &["rotate", "web1", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["host"], "web1");
    assert_eq!(doc["old_age_recipient"], old);
    assert_eq!(
        doc["rewrapped"],
        serde_json::json!(["secrets/web1/db.yaml"])
    );
    let new = doc["age_recipient"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        doc["files"],
        serde_json::json!([
            "hosts/web1.yaml",
            "secrets/web1/db.yaml",
            ".sops.yaml",
            "keypack.pins"
        ])
    );

    // .sops.yaml: exactly the lines holding the old recipient changed, only by that string.
    let after = std::fs::read_to_string(root.join(".sops.yaml")).unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (sops_yaml.lines().collect(), after.lines().collect());
    assert_eq!(a.len(), b.len());
    let mut changed = 0;
    for (x, y) in a.iter().zip(&b) {
        if x.contains(&old) {
            assert_eq!(*y, x.replace(&old, &new));
            changed += 1;
        } else {
            assert_eq!(x, y);
        }
    }
    assert_eq!(changed, 1, "{after}");
    assert!(after.contains("# web1 (ssh-to-age)") && after.contains("# admins and hosts"));

    // Untouched: the file that never listed web1, the users.
    assert_eq!(
        std::fs::read(root.join("secrets/other.yaml")).unwrap(),
        other
    );
    assert_eq!(tree(&root.join("users")), users_before);

    // db.yaml: the new recipient instead of the old; values, MAC and lastmodified unchanged;
    // the real sops still decrypts it with the operator's key.
    let db_after = std::fs::read_to_string(root.join("secrets/web1/db.yaml")).unwrap();
    let db_before = String::from_utf8(db.clone()).unwrap();
    assert!(
        db_after.contains(&format!("recipient: {new}")),
        "{db_after}"
    );
    assert!(db_after.contains(&format!("recipient: {RECIPIENT}")));
    assert!(!db_after.contains(&old), "{db_after}");
    assert_eq!(non_age_lines(&db_after), non_age_lines(&db_before));
    assert!(db_after.contains("lastmodified:") && db_after.contains("mac: ENC["));
    let plain = sops_decrypt(&root.join("secrets/web1/db.yaml"));
    assert!(plain.contains("password: hunter2"), "{plain}");

    // The new host key (read back by sops) is what the new recipient was derived from.
    let web1 = root.join("hosts/web1.yaml");
    let host_private = sops_field(&web1, "ssh_host_ed25519_key");
    let host_public = ssh_public_of(&host_private);
    assert!(host_public.ends_with(" web1"), "{host_public}");
    let new_key = PublicKey::parse_openssh(&host_public).unwrap();
    assert_eq!(new_key.age_recipient().unwrap(), new);
    // The host, as sops-nix will run on it: the identity derived from the new host key opens
    // db.yaml; the one derived from the old key no longer does.
    let as_new = sops_decrypt_as(&db_path, &ssh_to_age_identity(&host_private));
    assert!(as_new.is_some_and(|p| p.contains("hunter2")));
    assert!(sops_decrypt_as(&db_path, &ssh_to_age_identity(&repo.host.private)).is_none());
    assert_ne!(new_key, old_key);
    let deploy_public = ssh_public_of(&sops_field(&web1, "deploy_key_ed25519"));
    assert!(deploy_public.ends_with(" deploy@web1"), "{deploy_public}");
    assert_eq!(
        sops_field(&web1, "ssh_host_ed25519_key_pub").trim(),
        host_public
    );
    // The host document goes to its creation rule's recipients (admins only).
    let web1_text = std::fs::read_to_string(&web1).unwrap();
    assert!(web1_text.contains(&format!("recipient: {RECIPIENT}")));
    assert!(!web1_text.contains(&new));

    // Pins: new keys pinned, old ones retired.
    let pins = pins_text(&repo);
    let data = |p: &str| p.split_whitespace().nth(1).unwrap().to_owned();
    assert!(pins.contains(&format!(
        "hosts/web1/ssh_host_ed25519_key ssh-ed25519 {}\n",
        data(&host_public)
    )));
    assert!(pins.contains(&format!(
        "hosts/web1/deploy_key_ed25519 ssh-ed25519 {}\n",
        data(&deploy_public)
    )));
    for (role, oldk) in [
        ("ssh_host_ed25519_key", &repo.host.public),
        ("deploy_key_ed25519", &repo.deploy.public),
    ] {
        let line = format!("retired hosts/web1/{role} ssh-ed25519 {}\n", data(oldk));
        assert!(pins.contains(&line), "{pins}");
    }
    run_ok(&repo, "verify", &["-H", "web1", "--require-pins"]);

    // Rolling back the host document is refused: the old key is retired.
    let web1_new = std::fs::read(&web1).unwrap();
    std::fs::write(&web1, &web1_old_bytes).unwrap();
    let out = repo.run("verify", &["-H", "web1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("retired"), "{}", stderr(&out));
    std::fs::write(&web1, web1_new).unwrap();

    // A second rotation uses the pins (one batch) and rewraps db.yaml again.
    let out = run_ok(&repo, "host", &["rotate", "web1", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["old_age_recipient"], new);
    assert_eq!(
        doc["rewrapped"],
        serde_json::json!(["secrets/web1/db.yaml"])
    );
    assert!(sops_decrypt(&root.join("secrets/web1/db.yaml")).contains("hunter2"));
}

#[test]
fn user_rotate_replaces_and_retires_the_key() {
    let Some(repo) = sops_repo("user_rotate_replaces_and_retires_the_key") else {
        return;
    };
    repo.write(".sops.yaml", hosts_rule().as_bytes());
    let hosts_before = tree(&repo.root().join("hosts"));
    run_ok(&repo, "user", &["rotate", "alice"]);
    // alice was a JSON document: it stays JSON.
    let file = repo.root().join("users/alice.json");
    let public = ssh_public_of(&sops_field(&file, "id_ed25519"));
    assert!(public.ends_with(" alice"), "{public}");
    let pins = pins_text(&repo);
    let old = repo.alice.public.split_whitespace().nth(1).unwrap();
    assert!(
        pins.contains(&format!(
            "retired users/alice/id_ed25519 ssh-ed25519 {old}\n"
        )),
        "{pins}"
    );
    assert_eq!(tree(&repo.root().join("hosts")), hosts_before);
    // bob keeps his key in per-key files: refused with a way out.
    let out = repo.run("user", &["rotate", "bob"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("per-key files"), "{}", stderr(&out));
    // An unknown user: points at `new`.
    let out = repo.run("user", &["rotate", "zoe"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("user new zoe"), "{}", stderr(&out));
}

#[test]
fn host_rotate_writes_nothing_when_a_file_for_the_host_cannot_be_rewrapped() {
    let Some(repo) =
        sops_repo("host_rotate_writes_nothing_when_a_file_for_the_host_cannot_be_rewrapped")
    else {
        return;
    };
    let root = repo.root();
    let old = PublicKey::parse_openssh(&repo.host.public)
        .unwrap()
        .age_recipient()
        .unwrap();
    repo.write(
        ".sops.yaml",
        format!("keys:\n  - &web1 {old}\ncreation_rules:\n  - path_regex: ^hosts/\n    age: {RECIPIENT}\n").as_bytes(),
    );
    // Encrypted for the host alone: the operator cannot unwrap its data key.
    let only_host = sops_encrypt_yaml("x: y\n", &old, &repo.scratch());
    repo.write("secrets/web1/only-host.yaml", &only_host);
    let both = sops_encrypt_yaml("x: y\n", &format!("{RECIPIENT},{old}"), &repo.scratch());
    repo.write("secrets/web1/both.yaml", &both);
    let before = tree(&root);
    let out = repo.run("host", &["rotate", "web1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("secrets/web1/only-host.yaml"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        tree(&root),
        before,
        "nothing written before everything is ready"
    );
}

#[test]
fn host_new_follows_keypack_toml_folders_and_their_creation_rules() {
    let Some(repo) = sops_repo("host_new_follows_keypack_toml_folders_and_their_creation_rules")
    else {
        return;
    };
    let root = repo.root();
    std::fs::rename(root.join("hosts"), root.join("machines")).unwrap();
    repo.write("keypack.toml", b"hosts = \"machines\"\n");
    repo.write(
        ".sops.yaml",
        format!("creation_rules:\n  - path_regex: ^machines/[^/]+\\.yaml$\n    age: {RECIPIENT}\n")
            .as_bytes(),
    );
    run_ok(&repo, "host", &["new", "web9"]);
    assert!(root.join("machines/web9.yaml").is_file());
    assert!(!root.join("hosts").exists());
    run_ok(&repo, "verify", &["-H", "web9", "--require-pins"]);
    // web1 lives in machines/ now and is still found as existing.
    let out = repo.run("host", &["new", "web1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("machines/web1.yaml"),
        "{}",
        stderr(&out)
    );
}
