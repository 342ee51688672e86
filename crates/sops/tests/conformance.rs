//! Conformance: every committed vector (real sops 3.11.0 output, see `vectors/INDEX`) decrypts,
//! MAC-verifies and equals its expected plaintext; plus the per-vector details that broke other
//! implementations (empty string, time, list comments, non-UTF-8 binary, plugin recipients).

mod common;

use std::path::Path;

use common::*;
use keypack_sops::{
    Decrypted, Format, SopsError, SopsFile, Value, ValueType, decrypt_with, looks_like_age,
    looks_like_sops,
};
use secrecy::ExposeSecret;

fn format_of(name: &str) -> Format {
    match name {
        "yaml" => Format::Yaml,
        "json" => Format::Json,
        "dotenv" => Format::Dotenv,
        "ini" => Format::Ini,
        "binary" => Format::Binary,
        _ => panic!("unknown format {name} in INDEX"),
    }
}

fn decrypt_vector(name: &str, format: Format) -> Decrypted {
    let id = vector_identity();
    decrypt_with(&read_vector(name), format, &[&id]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_indexed_vector_decrypts_and_matches_its_expectation() {
    let index = String::from_utf8(read_vector("INDEX")).expect("utf8");
    let mut checked = 0;
    for line in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [file, format, expect] = cols[..] else {
            panic!("bad INDEX line {line}")
        };
        let dec = decrypt_vector(file, format_of(format));
        let (kind, exp_file) = expect.split_once(':').expect("kind:file");
        let exp_bytes = read_vector(exp_file);
        if kind == "bytes" {
            let got = dec
                .binary_data()
                .unwrap_or_else(|| panic!("{file}: no binary payload"));
            assert_eq!(
                got.expose_secret(),
                exp_bytes.as_slice(),
                "{file}: payload differs"
            );
        } else {
            let text = String::from_utf8(exp_bytes).expect("utf8");
            let expected = match kind {
                "yaml" => parse_yaml(&text),
                "json" => parse_json(&text),
                "dotenv" => parse_dotenv(&text),
                "ini" => parse_ini(&text),
                _ => panic!("unknown expectation {kind}"),
            };
            assert_eq!(
                from_decrypted(&dec),
                expected,
                "{file}: decrypted tree differs from {exp_file}"
            );
        }
        checked += 1;
    }
    // Every encrypted file in the folder is listed in INDEX.
    let on_disk = std::fs::read_dir(vectors())
        .expect("vectors dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".enc."))
        .count();
    assert_eq!(checked, on_disk, "INDEX must list every *.enc.* vector");
    assert!(checked >= 8);
}

#[test]
fn shared_vectors_folder_matches_committed_copies() {
    // CI has ../shared beside the checkout; when present, the committed copies must be current.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/sops");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        eprintln!(
            "shared vectors not present at {}; committed copies only",
            shared.display()
        );
        return;
    };
    let id = vector_identity();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).expect("read");
        if name.contains(".enc.") {
            // Every shared encrypted file decrypts, whatever its store.
            let format = if name.ends_with(".env") {
                Format::Dotenv
            } else if name.ends_with(".ini") {
                Format::Ini
            } else {
                Format::sniff(&bytes)
            };
            decrypt_with(&bytes, format, &[&id])
                .unwrap_or_else(|err| panic!("shared {name}: {err}"));
        }
        if name != "README.md" {
            assert_eq!(
                bytes,
                read_vector(&name),
                "committed copy of {name} is stale"
            );
        }
    }
}

#[test]
fn mixed_yaml_types_empty_null_time_and_list_comment() {
    let dec = decrypt_vector("mixed.enc.yaml", Format::Yaml);
    let kind = |k: &str| dec.get(&[k]).and_then(Value::as_scalar).map(|s| s.kind());
    assert_eq!(kind("host_key"), Some(ValueType::Str));
    assert_eq!(kind("port"), Some(ValueType::Int));
    assert_eq!(kind("ratio"), Some(ValueType::Float));
    assert_eq!(kind("enabled"), Some(ValueType::Bool));
    assert_eq!(kind("when"), Some(ValueType::Time));
    assert_eq!(
        dec.field("enabled").expect("enabled").expose_secret(),
        b"true"
    );
    assert_eq!(dec.field("empty").expect("empty").expose_secret(), b"");
    assert!(matches!(dec.get(&["nothing"]), Some(Value::Null)));
    assert!(dec.field("nothing").is_none());
    assert_eq!(
        dec.field("when").expect("when").expose_secret(),
        b"2024-01-02T00:00:00Z"
    );
    // The comment element of `users` is authenticated but dropped.
    let Some(Value::List(users)) = dec.get(&["users"]) else {
        panic!("users")
    };
    assert_eq!(users.len(), 2);
    let public = dec
        .get(&["nested", "public_unencrypted"])
        .and_then(Value::as_scalar)
        .expect("public");
    assert_eq!(public.kind(), ValueType::Plain);
    assert_eq!(public.expose(), b"visible");
    let key = dec.field("host_key").expect("host_key");
    assert!(
        key.expose_secret()
            .starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    );
    assert!(
        dec.binary_data().is_none(),
        "a YAML document is not a binary envelope"
    );
}

#[test]
fn binary_payload_is_byte_exact_and_not_utf8() {
    let dec = decrypt_vector("blob.enc.json", Format::Binary);
    let data = dec.binary_data().expect("payload");
    assert_eq!(data.expose_secret(), read_vector("blob.bin").as_slice());
    assert!(
        std::str::from_utf8(data.expose_secret()).is_err(),
        "vector must exercise non-UTF-8"
    );
    // The same file parsed as plain JSON still exposes the envelope's payload.
    let dec = decrypt_vector("blob.enc.json", Format::Json);
    assert_eq!(
        dec.binary_data().expect("payload").expose_secret(),
        read_vector("blob.bin").as_slice()
    );
}

#[test]
fn plugin_recipient_is_listed_and_never_a_parse_error() {
    let file =
        SopsFile::parse(&read_vector("plugin-recipient.enc.yaml"), Format::Yaml).expect("parses");
    let recipients = file.recipients();
    assert!(recipients[0].starts_with("age1yubikey1"), "{recipients:?}");
    assert_eq!(file.age_entries().len(), 2);
    assert!(
        file.age_entries()[0]
            .enc
            .starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
    );
    // The vector key is the recipient of the entry whose recipient string was replaced.
    let id = vector_identity();
    let key = file.data_key(&[&id]).expect("data key");
    let dec = file.decrypt(&key).expect("decrypts");
    assert_eq!(dec.field("port").expect("port").expose_secret(), b"22");
}

#[test]
fn wrong_identity_lists_all_recipients() {
    let other = age::x25519::Identity::generate();
    for (name, format) in [
        ("plugin-recipient.enc.yaml", Format::Yaml),
        ("ini.enc.ini", Format::Ini),
    ] {
        let bytes = read_vector(name);
        let expected = SopsFile::parse(&bytes, format).expect("parse").recipients();
        match decrypt_with(&bytes, format, &[&other]) {
            Err(SopsError::NoMatchingIdentity { recipients }) => assert_eq!(recipients, expected),
            other => panic!("{name}: expected NoMatchingIdentity, got {other:?}"),
        }
    }
    // No identities at all: same error.
    let err = decrypt_with(&read_vector("mixed.enc.yaml"), Format::Yaml, &[]).unwrap_err();
    assert!(
        matches!(err, SopsError::NoMatchingIdentity { ref recipients } if recipients.len() == 2)
    );
}

#[test]
fn a_second_identity_is_tried_after_a_non_matching_one() {
    let other = age::x25519::Identity::generate();
    let id = vector_identity();
    let dec = decrypt_with(
        &read_vector("numbers.enc.json"),
        Format::Json,
        &[&other, &id],
    )
    .expect("decrypts");
    assert_eq!(dec.field("port").expect("port").expose_secret(), b"22");
    assert_eq!(
        dec.field("big").expect("big").expose_secret(),
        b"9007199254740992"
    );
}

#[test]
fn content_sniffing_and_extensions() {
    assert_eq!(
        Format::from_path(Path::new("hosts/a.yaml")),
        Some(Format::Yaml)
    );
    assert_eq!(
        Format::from_path(Path::new("hosts/a.YML")),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("a.env")), Some(Format::Dotenv));
    assert_eq!(Format::from_path(Path::new("a.ini")), Some(Format::Ini));
    assert_eq!(Format::from_path(Path::new("ssh_host_ed25519_key")), None);
    for (name, f) in [
        ("mixed.enc.yaml", Format::Yaml),
        ("numbers.enc.json", Format::Json),
        ("dotenv.enc.env", Format::Dotenv),
        ("ini.enc.ini", Format::Ini),
        ("blob.enc.json", Format::Binary),
        ("text.enc.yaml", Format::Binary),
    ] {
        let bytes = read_vector(name);
        assert_eq!(Format::sniff(&bytes), f, "{name}");
        assert!(looks_like_sops(&bytes), "{name}");
        assert!(!looks_like_age(&bytes), "{name}");
    }
    for plain in [
        "mixed.yaml",
        "numbers.json",
        "dotenv.env",
        "ini.ini",
        "blob.bin",
    ] {
        assert!(!looks_like_sops(&read_vector(plain)), "{plain}");
    }
    let file = SopsFile::parse(&read_vector("mixed.enc.yaml"), Format::Yaml).expect("parse");
    let enc = &file.age_entries()[0].enc;
    assert!(looks_like_age(enc.as_bytes()));
    assert!(looks_like_age(b"age-encryption.org/v1\n-> X25519 abc\n"));
}

#[test]
fn decrypted_debug_shows_no_values() {
    let dec = decrypt_vector("mixed.enc.yaml", Format::Yaml);
    let dbg = format!("{dec:?} {:?}", dec.documents());
    for secret in ["OPENSSH", "alice", "bob", "abc", "disabled@example.com"] {
        assert!(!dbg.contains(secret), "Debug leaks {secret}: {dbg}");
    }
    assert!(dbg.contains("REDACTED"));
}

#[test]
fn recipients_of_any_kind_are_kept_as_strings() {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let second = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw";
    let id = vector_identity();
    for kind in [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx0SWnMcb0whUKCxBYsM1m4m1dDyrnB3e6b8lVovy0b user@host",
        "age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        "age1se1qgg72x2qfk9wg3wh0qg9u0v7l5dkq4jx69fv80p6wdus3ftg6flwg5dz2dp",
        "not-a-recipient-at-all",
    ] {
        let changed = text.replace(second, kind);
        assert_ne!(changed, text);
        let file = SopsFile::parse(changed.as_bytes(), Format::Yaml)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(file.recipients()[1], kind);
        file.decrypt(&file.data_key(&[&id]).expect("key"))
            .expect("decrypts");
    }
}

#[test]
fn unquoted_lastmodified_is_used_as_raw_text() {
    // rops-written files (and hand edits) leave `lastmodified` unquoted: a YAML timestamp.
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let unquoted = text.replace(
        "lastmodified: \"2026-11-25T17:18:57Z\"",
        "lastmodified: 2026-11-25T17:18:57Z",
    );
    assert_ne!(unquoted, text);
    let id = vector_identity();
    decrypt_with(unquoted.as_bytes(), Format::Yaml, &[&id]).expect("decrypts");
    // sops authenticates `lastmodified` re-formatted as RFC 3339 seconds: a fraction added by
    // hand does not change it, another second does.
    let fraction = text.replace("17:18:57Z\"", "17:18:57.250Z\"");
    assert_ne!(fraction, text);
    decrypt_with(fraction.as_bytes(), Format::Yaml, &[&id]).expect("fraction ignored as in sops");
    let other = text.replace("17:18:57Z\"", "17:18:58Z\"");
    let err =
        decrypt_with(other.as_bytes(), Format::Yaml, &[&id]).expect_err("changed lastmodified");
    assert!(matches!(err, SopsError::MacMismatch), "{err:?}");
}
