//! Malformed input: each is a clear, typed error (never a panic, never a value in the message).

mod common;

use common::*;
use keypack_sops::{Format, SopsError, SopsFile, decrypt_with};

fn parse_err(bytes: &[u8], format: Format) -> SopsError {
    SopsFile::parse(bytes, format).expect_err("accepted malformed input")
}

#[test]
fn malformed_yaml_is_malformed() {
    for bad in [
        &b"a: [b\n"[..],
        b"a: b\n  c: d\n",
        b"key: \"unterminated\n",
        b"\xff\xfe: x\n",
        b"- a\n- b\n",
        b"just a scalar\n",
        b"a: 1\na: 2\nsops: {}\n",
        b"1: x\nsops: {}\n",
        b"",
    ] {
        let err = parse_err(bad, Format::Yaml);
        assert!(
            matches!(err, SopsError::Malformed { .. }),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let err = parse_err(b"a: [b\n", Format::Yaml);
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert!(matches!(
        parse_err(deep.as_bytes(), Format::Yaml),
        SopsError::Malformed { .. }
    ));
    assert!(matches!(
        parse_err(deep.as_bytes(), Format::Json),
        SopsError::Malformed { .. }
    ));
    let mut nested = String::new();
    for i in 0..300 {
        nested.push_str(&format!("{}k:\n", "  ".repeat(i)));
    }
    assert!(matches!(
        parse_err(nested.as_bytes(), Format::Yaml),
        SopsError::Malformed { .. }
    ));
}

#[test]
fn malformed_json_is_malformed() {
    for bad in [
        &b"{\"a\": "[..],
        b"{\"a\" 1}",
        b"[1, 2]",
        b"\"str\"",
        b"{\"a\": 1,}",
    ] {
        let err = parse_err(bad, Format::Json);
        assert!(
            matches!(err, SopsError::Malformed { .. }),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn malformed_dotenv_and_ini() {
    assert!(matches!(
        parse_err(b"A=1\nnot a pair\n", Format::Dotenv),
        SopsError::Malformed { .. }
    ));
    assert!(matches!(
        parse_err(b"[sec\nkey = v\n", Format::Ini),
        SopsError::Malformed { .. }
    ));
    assert!(matches!(
        parse_err(b"[sec]\nno delimiter\n", Format::Ini),
        SopsError::Malformed { .. }
    ));
    assert!(matches!(
        parse_err(b"A=1\n", Format::Dotenv),
        SopsError::NotSops
    ));
    assert!(matches!(
        parse_err(b"[sec]\nkey = v\n", Format::Ini),
        SopsError::NotSops
    ));
}

#[test]
fn plain_files_are_not_sops() {
    for (name, format) in [
        ("mixed.yaml", Format::Yaml),
        ("numbers.json", Format::Json),
        ("dotenv.env", Format::Dotenv),
    ] {
        assert!(
            matches!(parse_err(&read_vector(name), format), SopsError::NotSops),
            "{name}"
        );
    }
}

#[test]
fn bad_metadata_is_malformed() {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let id = vector_identity();
    let cases = [
        (
            "two rules",
            text.replace(
                "    unencrypted_suffix: _unencrypted\n",
                "    unencrypted_suffix: _unencrypted\n    encrypted_regex: ^x\n",
            ),
        ),
        (
            "bad regex",
            text.replace(
                "    unencrypted_suffix: _unencrypted\n",
                "    encrypted_regex: '(['\n",
            ),
        ),
        (
            "no lastmodified",
            text.replace("    lastmodified: \"2026-11-25T17:18:57Z\"\n", ""),
        ),
        ("bad type", text.replacen("type:int]", "type:quux]", 1)),
        ("bad base64", text.replacen("data:+TE=", "data:+T!E", 1)),
        (
            "short iv",
            text.replacen(
                "iv:Bo9RaSxD3NLJ/P9SAS+yel8WpheRlAPrX+i1HP48YTA=",
                "iv:Bo9RaSxD3NLJ/P9SAS+y",
                1,
            ),
        ),
        (
            "enc missing",
            text.replacen("          enc: |\n", "          enc_: |\n", 1),
        ),
    ];
    for (what, bad) in cases {
        assert_ne!(bad, text, "{what}: replacement did not apply");
        let err = decrypt_with(bad.as_bytes(), Format::Yaml, &[&id]).expect_err(what);
        assert!(
            matches!(err, SopsError::Malformed { .. }),
            "{what}: {err:?}"
        );
    }
    let comment_rule = text.replace(
        "    unencrypted_suffix: _unencrypted\n",
        "    encrypted_comment_regex: sops:enc\n",
    );
    let err = SopsFile::parse(comment_rule.as_bytes(), Format::Yaml).expect_err("comment rule");
    assert!(matches!(err, SopsError::Unsupported { .. }), "{err:?}");
}

#[test]
fn file_without_age_entries() {
    let text = String::from_utf8(read_vector("text.enc.yaml")).expect("utf8");
    let start = text.find("    age:\n").expect("age");
    let end = text.find("    lastmodified").expect("lm");
    let pgp_only = format!("{}    pgp: []\n{}", &text[..start], &text[end..]);
    let id = vector_identity();
    let err = decrypt_with(pgp_only.as_bytes(), Format::Binary, &[&id]).expect_err("no age");
    assert!(matches!(err, SopsError::NoAgeRecipients), "{err:?}");
}

#[test]
fn json_null_metadata_entries_are_ignored() {
    // sops <= 3.9 writes `"kms": null`, `"pgp": null`, ... in JSON metadata.
    let text = String::from_utf8(read_vector("numbers.enc.json")).expect("utf8");
    let with_nulls = text.replace(
        "\t\t\"lastmodified\"",
        "\t\t\"kms\": null,\n\t\t\"gcp_kms\": null,\n\t\t\"azure_kv\": null,\n\t\t\"hc_vault\": null,\n\t\t\"pgp\": null,\n\t\t\"encrypted_suffix\": null,\n\t\t\"lastmodified\"",
    );
    assert_ne!(with_nulls, text);
    let id = vector_identity();
    decrypt_with(with_nulls.as_bytes(), Format::Json, &[&id]).expect("null entries accepted");
}

#[test]
fn binary_envelope_without_data_is_malformed() {
    let text = String::from_utf8(read_vector("text.enc.yaml")).expect("utf8");
    let renamed = text.replacen("data: ENC", "other: ENC", 1);
    assert!(matches!(
        parse_err(renamed.as_bytes(), Format::Binary),
        SopsError::Malformed { .. }
    ));
}

#[test]
fn alias_bombs_are_refused_small_aliases_work() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("sops: {}\n");
    let err = parse_err(bomb.as_bytes(), Format::Yaml);
    assert!(
        matches!(err, SopsError::Malformed { ref what } if what.contains("aliases")),
        "{err:?}"
    );

    // A plain alias is expanded (as yaml.v3 does for sops) and the file is still parsed.
    let small = b"base: &b {k: v}\ncopy: *b\nsops: {lastmodified: x, mac: y}\n";
    let f = SopsFile::parse(small, Format::Yaml).expect("small alias");
    assert_eq!(f.document_count(), 1);
}
