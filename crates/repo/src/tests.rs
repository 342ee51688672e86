use std::os::unix::fs::symlink;

use super::*;

const SOPS_JSON: &[u8] =
    b"{\n\t\"data\": \"ENC[AES256_GCM,data:xx,iv:yy,tag:zz,type:str]\",\n\t\"sops\": {}\n}\n";
const SOPS_YAML: &[u8] = b"data: ENC[AES256_GCM,data:xx,iv:yy,tag:zz,type:str]\nsops:\n  age: []\n";
const AGE_ARMOR: &[u8] =
    b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("hosts")).unwrap();
    fs::create_dir_all(dir.path().join("users")).unwrap();
    dir
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn host(name: &str) -> HostName {
    HostName::new(name).unwrap()
}

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

#[test]
fn host_document_gives_host_and_optional_deploy_key() {
    let dir = repo();
    write(dir.path(), "hosts/web1.yaml", SOPS_YAML);
    let repo = KeysRepo::open(dir.path()).unwrap();
    let sources = repo.resolve(&host("web1"), &[]).unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].role, KeyRole::Host);
    assert!(sources[0].required);
    assert_eq!(
        sources[0].extract,
        Extract::DocumentField {
            format: DocumentFormat::Yaml,
            field: "ssh_host_ed25519_key"
        }
    );
    assert_eq!(
        sources[0].public,
        Some(PublicSource::Field("ssh_host_ed25519_key_pub".into()))
    );
    assert_eq!(sources[1].role, KeyRole::Deploy);
    assert!(!sources[1].required);
    assert!(sources[0].path.ends_with("hosts/web1.yaml"));
    assert!(sources[0].path.is_absolute());
}

#[test]
fn every_document_extension_is_recognised() {
    for (ext, format) in [
        ("yaml", DocumentFormat::Yaml),
        ("yml", DocumentFormat::Yaml),
        ("json", DocumentFormat::Json),
        ("env", DocumentFormat::Dotenv),
    ] {
        let dir = repo();
        write(dir.path(), &format!("users/alice.{ext}"), b"x");
        let repo = KeysRepo::open(dir.path()).unwrap();
        let source = repo.resolve_user(&user("alice")).unwrap();
        assert_eq!(
            source.extract,
            Extract::DocumentField {
                format,
                field: "id_ed25519"
            },
            "{ext}"
        );
    }
}

#[test]
fn host_folder_detects_age_and_sops_by_content() {
    let dir = repo();
    write(dir.path(), "hosts/web1/ssh_host_ed25519_key", SOPS_JSON);
    write(
        dir.path(),
        "hosts/web1/ssh_host_ed25519_key.pub",
        b"ssh-ed25519 AAAA x\n",
    );
    write(dir.path(), "hosts/web1/deploy_key_ed25519.age", AGE_ARMOR);
    write(dir.path(), "hosts/web1/README.md", b"notes");
    let repo = KeysRepo::open(dir.path()).unwrap();
    let sources = repo.resolve_host(&host("web1")).unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(
        sources[0].extract,
        Extract::BinaryEnvelope {
            format: DocumentFormat::Json
        }
    );
    match &sources[0].public {
        Some(PublicSource::File(p)) => assert!(p.ends_with("ssh_host_ed25519_key.pub")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(sources[1].role, KeyRole::Deploy);
    assert_eq!(sources[1].extract, Extract::AgeFile);
    assert_eq!(sources[1].public, None);
}

#[test]
fn envelope_format_comes_from_extension_then_content() {
    let dir = repo();
    write(dir.path(), "users/a/id_ed25519.enc.yaml", SOPS_JSON);
    write(dir.path(), "users/b/id_ed25519", SOPS_YAML);
    write(
        dir.path(),
        "users/c/id_ed25519.bin",
        b"data=ENC[x]\nsops_version=3.11.0\n",
    );
    let repo = KeysRepo::open(dir.path()).unwrap();
    let format = |u: &str| match repo.resolve_user(&user(u)).unwrap().extract {
        Extract::BinaryEnvelope { format } => format,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(format("a"), DocumentFormat::Yaml);
    assert_eq!(format("b"), DocumentFormat::Yaml);
    assert_eq!(format("c"), DocumentFormat::Dotenv);
}

#[test]
fn folder_without_deploy_key_gives_host_key_only() {
    let dir = repo();
    write(dir.path(), "hosts/db/ssh_host_ed25519_key.json", SOPS_JSON);
    let repo = KeysRepo::open(dir.path()).unwrap();
    let sources = repo.resolve_host(&host("db")).unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].role, KeyRole::Host);
}

#[test]
fn two_documents_are_ambiguous_and_both_named() {
    let dir = repo();
    write(dir.path(), "hosts/web1.yaml", SOPS_YAML);
    write(dir.path(), "hosts/web1.json", SOPS_JSON);
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RepoError::Ambiguous { .. }), "{err:?}");
    assert!(
        text.contains("web1.yaml") && text.contains("web1.json"),
        "{text}"
    );
}

#[test]
fn document_and_folder_are_ambiguous() {
    let dir = repo();
    write(dir.path(), "hosts/web1.yaml", SOPS_YAML);
    write(dir.path(), "hosts/web1/deploy_key_ed25519", SOPS_JSON);
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hosts/web1.yaml") && text.contains("web1/deploy_key_ed25519"),
        "{text}"
    );
    assert!(err.hint().is_some());
}

#[test]
fn two_extensions_in_a_folder_are_ambiguous() {
    let dir = repo();
    write(dir.path(), "users/alice/id_ed25519", AGE_ARMOR);
    write(dir.path(), "users/alice/id_ed25519.yaml", SOPS_YAML);
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_user(&user("alice"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("alice/id_ed25519 and ") && text.contains("alice/id_ed25519.yaml"),
        "{text}"
    );
}

#[test]
fn unknown_host_and_user_list_where_keypack_looked() {
    let dir = repo();
    let repo = KeysRepo::open(dir.path()).unwrap();
    let err = repo.resolve_host(&host("nope")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("unknown host nope"), "{text}");
    assert!(
        text.contains("hosts/nope.yaml") && text.contains("hosts/nope/"),
        "{text}"
    );
    let err = repo.resolve(&host("nope"), &[]).unwrap_err();
    assert!(matches!(err, RepoError::UnknownHost { .. }));
    let err = repo.resolve_user(&user("bob")).unwrap_err();
    assert!(err.to_string().starts_with("unknown user bob"), "{err}");
}

#[test]
fn ini_document_is_refused_with_a_reason() {
    let dir = repo();
    write(dir.path(), "hosts/web1.ini", b"[x]\n");
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    assert!(
        matches!(err, RepoError::UnsupportedDocument { .. }),
        "{err:?}"
    );
}

#[test]
fn folder_missing_the_required_key() {
    let dir = repo();
    write(dir.path(), "hosts/web1/deploy_key_ed25519", SOPS_JSON);
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no file named ssh_host_ed25519_key (with or without an extension)",
            dir.path().join("hosts/web1").display()
        )
    );
}

#[test]
fn orphan_and_encrypted_public_keys_are_refused() {
    let dir = repo();
    write(dir.path(), "hosts/web1/ssh_host_ed25519_key", SOPS_JSON);
    write(
        dir.path(),
        "hosts/web1/deploy_key_ed25519.pub",
        b"ssh-ed25519 AAAA\n",
    );
    let repo_ = KeysRepo::open(dir.path()).unwrap();
    let err = repo_.resolve_host(&host("web1")).unwrap_err();
    assert!(matches!(err, RepoError::OrphanPublicKey { .. }), "{err:?}");

    write(dir.path(), "users/u/id_ed25519", SOPS_JSON);
    write(dir.path(), "users/u/id_ed25519.pub.yaml", SOPS_YAML);
    let err = repo_.resolve_user(&user("u")).unwrap_err();
    assert!(
        matches!(err, RepoError::EncryptedPublicKey { .. }),
        "{err:?}"
    );
}

#[test]
fn symlink_leaving_the_repository_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("web1.yaml"), SOPS_YAML).unwrap();
    let dir = repo();
    symlink(
        outside.path().join("web1.yaml"),
        dir.path().join("hosts/web1.yaml"),
    )
    .unwrap();
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    assert!(matches!(err, RepoError::OutsideRepo { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("leads outside the keys repository")
    );

    // The same for a per-key file and for a whole folder.
    let dir = repo();
    fs::create_dir(dir.path().join("users/alice")).unwrap();
    symlink(
        outside.path().join("web1.yaml"),
        dir.path().join("users/alice/id_ed25519"),
    )
    .unwrap();
    symlink(outside.path(), dir.path().join("users/bob")).unwrap();
    let repo = KeysRepo::open(dir.path()).unwrap();
    for u in ["alice", "bob"] {
        let err = repo.resolve_user(&user(u)).unwrap_err();
        assert!(matches!(err, RepoError::OutsideRepo { .. }), "{u}: {err:?}");
    }
}

#[test]
fn hosts_folder_symlinked_outside_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("web1.yaml"), SOPS_YAML).unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path(), dir.path().join("hosts")).unwrap();
    let err = KeysRepo::open(dir.path())
        .unwrap()
        .resolve_host(&host("web1"))
        .unwrap_err();
    assert!(matches!(err, RepoError::OutsideRepo { .. }), "{err:?}");
}

#[test]
fn symlink_inside_the_repository_is_followed() {
    let dir = repo();
    write(dir.path(), "shared/alice.yaml", SOPS_YAML);
    symlink("../shared/alice.yaml", dir.path().join("users/alice.yaml")).unwrap();
    let repo = KeysRepo::open(dir.path()).unwrap();
    let source = repo.resolve_user(&user("alice")).unwrap();
    assert!(source.path.ends_with("shared/alice.yaml"));
    assert_eq!(repo.read_file(&source.path).unwrap(), SOPS_YAML);
}

#[test]
fn read_file_refuses_symlinked_components() {
    let dir = repo();
    write(dir.path(), "real/id_ed25519", SOPS_JSON);
    symlink("real", dir.path().join("link")).unwrap();
    symlink("real/id_ed25519", dir.path().join("filelink")).unwrap();
    let repo = KeysRepo::open(dir.path()).unwrap();
    for path in [
        repo.root().join("link/id_ed25519"),
        repo.root().join("filelink"),
    ] {
        let err = repo.read_file(&path).unwrap_err();
        assert!(
            matches!(err, RepoError::SymlinkComponent { .. }),
            "{}: {err:?}",
            path.display()
        );
    }
    let err = repo.read_file(Path::new("/etc/passwd")).unwrap_err();
    assert!(matches!(err, RepoError::OutsideRepo { .. }));
    assert_eq!(
        repo.read_file(&repo.root().join("real/id_ed25519"))
            .unwrap(),
        SOPS_JSON
    );
}

#[test]
fn read_file_refuses_oversized_files() {
    let dir = repo();
    write(
        dir.path(),
        "big",
        &vec![b'x'; MAX_REPO_FILE_SIZE as usize + 1],
    );
    let repo = KeysRepo::open(dir.path()).unwrap();
    let err = repo.read_file(&repo.root().join("big")).unwrap_err();
    assert!(matches!(err, RepoError::TooLarge { .. }), "{err:?}");
}

#[test]
fn keypack_toml_moves_the_folders() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        CONFIG_FILE,
        b"hosts = \"machines\"\nusers = \"people/ssh\"\n",
    );
    write(dir.path(), "machines/web1.json", SOPS_JSON);
    write(dir.path(), "people/ssh/alice/id_ed25519", AGE_ARMOR);
    let repo = KeysRepo::open(dir.path()).unwrap();
    let sources = repo.resolve(&host("web1"), &[user("alice")]).unwrap();
    assert_eq!(sources.len(), 3);
    assert!(sources[0].path.ends_with("machines/web1.json"));
    assert!(sources[2].path.ends_with("people/ssh/alice/id_ed25519"));
    assert_eq!(sources[2].extract, Extract::AgeFile);
}

#[test]
fn keypack_toml_partial_keeps_defaults() {
    let dir = repo();
    write(dir.path(), CONFIG_FILE, b"users = \"people\"\n");
    let repo = KeysRepo::open(dir.path()).unwrap();
    assert_eq!(repo.config().hosts, PathBuf::from("hosts"));
    assert_eq!(repo.config().users, PathBuf::from("people"));
}

#[test]
fn keypack_toml_refuses_escapes_and_unknown_keys() {
    for bad in [
        "hosts = \"../elsewhere\"\n",
        "hosts = \"/etc\"\n",
        "users = \"\"\n",
        "host = \"machines\"\n",
        "hosts = [\n",
    ] {
        let dir = repo();
        write(dir.path(), CONFIG_FILE, bad.as_bytes());
        let err = KeysRepo::open(dir.path()).unwrap_err();
        assert!(matches!(err, RepoError::Config { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains("keypack.toml"), "{err}");
    }
}

#[test]
fn missing_root_is_not_a_folder() {
    let err = KeysRepo::open(Path::new("/nonexistent/keys")).unwrap_err();
    assert!(matches!(err, RepoError::NotAFolder { .. }));
    assert!(err.hint().unwrap().contains("--keys-repo"));
}

#[test]
fn age_detection() {
    assert!(looks_like_age(AGE_ARMOR));
    assert!(looks_like_age(b"\n  -----BEGIN AGE ENCRYPTED FILE-----\n"));
    assert!(looks_like_age(b"age-encryption.org/v1\n-> X25519 abc\n"));
    assert!(!looks_like_age(SOPS_JSON));
    assert!(!looks_like_age(b""));
}

/// Review finding 1: a symlink that hands one entity's key file to another (host↔user,
/// user↔user, host↔host) is refused, whatever the link points at (document, per-key file,
/// folder). Links within one entity, and to a shared folder outside `hosts/` and `users/`,
/// are still followed.
#[test]
fn symlink_crossing_from_one_entity_to_another_is_refused() {
    let dir = repo();
    write(dir.path(), "hosts/app1/deploy_key_ed25519.yaml", SOPS_YAML);
    write(dir.path(), "hosts/gw1/ssh_host_ed25519_key.age", AGE_ARMOR);
    write(dir.path(), "users/alice.yaml", SOPS_YAML);
    write(dir.path(), "hosts/db1.yaml", SOPS_YAML);
    fs::create_dir_all(dir.path().join("users/grace")).unwrap();
    fs::create_dir_all(dir.path().join("users/heidi")).unwrap();
    symlink(
        "../../hosts/app1/deploy_key_ed25519.yaml",
        dir.path().join("users/grace/id_ed25519"),
    )
    .unwrap();
    symlink(
        "../../hosts/gw1/ssh_host_ed25519_key.age",
        dir.path().join("users/heidi/id_ed25519.age"),
    )
    .unwrap();
    symlink("alice.yaml", dir.path().join("users/bob.yml")).unwrap();
    symlink("alice", dir.path().join("users/carol")).unwrap();
    fs::create_dir_all(dir.path().join("users/alice")).unwrap();
    symlink("db1.yaml", dir.path().join("hosts/db2.yaml")).unwrap();
    let repo = KeysRepo::open(dir.path()).unwrap();
    for (u, owner) in [
        ("grace", "host app1"),
        ("heidi", "host gw1"),
        ("bob", "user alice"),
        ("carol", "user alice"),
    ] {
        let err = repo.resolve_user(&user(u)).unwrap_err();
        let RepoError::CrossEntityLink { owner: found, .. } = &err else {
            panic!("{u}: {err:?}")
        };
        assert_eq!(found, owner, "{u}");
        assert!(
            err.to_string().ends_with(&format!("belongs to {owner}")),
            "{err}"
        );
        assert!(err.hint().is_some());
    }
    let err = repo.resolve_host(&host("db2")).unwrap_err();
    assert!(
        matches!(&err, RepoError::CrossEntityLink { owner, .. } if owner == "host db1"),
        "{err:?}"
    );

    // Within one entity, and into a shared folder, links are followed.
    write(dir.path(), "hosts/web1/old/2025.yaml", SOPS_YAML);
    symlink(
        "old/2025.yaml",
        dir.path().join("hosts/web1/ssh_host_ed25519_key"),
    )
    .unwrap();
    let web1 = repo.resolve_host(&host("web1")).unwrap();
    assert!(web1[0].path.ends_with("hosts/web1/old/2025.yaml"));
    write(dir.path(), "shared/dave.yaml", SOPS_YAML);
    symlink("../shared/dave.yaml", dir.path().join("users/dave.yaml")).unwrap();
    assert!(repo.resolve_user(&user("dave")).is_ok());
}
