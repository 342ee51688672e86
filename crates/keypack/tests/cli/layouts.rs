//! Every way the nix-keys layout may hold a key, decrypted end to end.

use std::io::Write;

use crate::common::*;

/// Encrypts `plain` to [`RECIPIENT`] as a plain age file (armored or binary).
fn age_encrypt(plain: &[u8], armored: bool) -> Vec<u8> {
    let recipient: age::x25519::Recipient = RECIPIENT.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut out = Vec::new();
    let format = if armored {
        age::armor::Format::AsciiArmor
    } else {
        age::armor::Format::Binary
    };
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, format).unwrap();
    let mut writer = encryptor.wrap_output(armor).unwrap();
    writer.write_all(plain).unwrap();
    writer.finish().unwrap().finish().unwrap();
    out
}

#[test]
fn folders_age_files_envelopes_and_every_document_format() {
    if !have_sops("folders_age_files_envelopes_and_every_document_format") {
        return;
    }
    let repo = standard_repo();
    let scratch = repo.scratch();
    let host = ssh_keygen(&scratch, "root@db");
    let deploy = ssh_keygen(&scratch, "deploy@db");
    let carol = ssh_keygen(&scratch, "carol");
    let dave = ssh_keygen(&scratch, "dave");
    let erin = ssh_keygen(&scratch, "erin");
    let frank = ssh_keygen(&scratch, "frank");
    repo.write(
        "hosts/db/ssh_host_ed25519_key.age",
        &age_encrypt(host.private.as_bytes(), true),
    );
    repo.write("hosts/db/ssh_host_ed25519_key.pub", host.public.as_bytes());
    repo.encrypt_binary("hosts/db/deploy_key_ed25519.yaml", &deploy.private, "yaml");
    repo.encrypt_doc("users/carol.env", &[("id_ed25519", &carol.private)]);
    repo.encrypt_doc(
        "users/dave.yml",
        &[
            ("id_ed25519", &dave.private),
            ("id_ed25519_pub", &dave.public),
        ],
    );
    repo.write(
        "users/erin/id_ed25519",
        &age_encrypt(erin.private.as_bytes(), false),
    );
    repo.encrypt_binary("users/frank/id_ed25519.bin", &frank.private, "dotenv");

    let result = repo.run(
        "verify",
        &[
            "-H", "db", "-U", "carol", "-U", "dave", "-U", "erin", "-U", "frank",
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let text = stdout(&result);
    let expect = [
        (
            "etc/ssh/ssh_host_ed25519_key",
            &host,
            "hosts/db/ssh_host_ed25519_key.age",
        ),
        (
            "root/.ssh/deploy_key_ed25519",
            &deploy,
            "hosts/db/deploy_key_ed25519.yaml",
        ),
        ("users/carol/.ssh/id_ed25519", &carol, "users/carol.env"),
        ("users/dave/.ssh/id_ed25519", &dave, "users/dave.yml"),
        ("users/erin/.ssh/id_ed25519", &erin, "users/erin/id_ed25519"),
        (
            "users/frank/.ssh/id_ed25519",
            &frank,
            "users/frank/id_ed25519.bin",
        ),
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expect.len(), "{text}");
    for (line, (path, key, source)) in lines.iter().zip(expect) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], path, "{line}");
        assert_eq!(fields[1], fingerprint(&key.public, &scratch), "{line}");
        assert!(fields[2].ends_with(source), "{line}");
    }
}

#[test]
fn keypack_toml_moves_the_folders() {
    if !have_sops("keypack_toml_moves_the_folders") {
        return;
    }
    let repo = standard_repo();
    let root = repo.root();
    std::fs::rename(root.join("hosts"), root.join("machines")).unwrap();
    let before = repo.run("verify", &["-H", "web1"]);
    assert!(!before.status.success());
    assert!(
        stderr(&before).contains("unknown host web1"),
        "{}",
        stderr(&before)
    );
    repo.write("keypack.toml", b"hosts = \"machines\"\n");
    let after = repo.run("verify", &["-H", "web1", "-U", "alice"]);
    assert!(after.status.success(), "{}", stderr(&after));
    assert_eq!(stdout(&after).lines().count(), 3);
}

#[test]
fn host_without_deploy_key_packs_host_key_only() {
    if !have_sops("host_without_deploy_key_packs_host_key_only") {
        return;
    }
    let repo = standard_repo();
    let key = ssh_keygen(&repo.scratch(), "root@solo");
    repo.encrypt_doc("hosts/solo.json", &[("ssh_host_ed25519_key", &key.private)]);
    let out = repo.run("pack", &["-H", "solo", "-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(out.stdout.as_slice()));
    let paths: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub"
        ]
    );
}
