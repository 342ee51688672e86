//! Tamper corpus, generated in code from the good vectors: every change an attacker with write
//! access to the keys repository could make is rejected with the exact error variant, and no
//! error's Display/Debug carries a secret (plaintext values, the data key).

mod common;

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use keypack_sops::{Format, SopsError, SopsFile, decrypt_age_file, decrypt_with};
use regex::Regex;

/// Good vectors and the field paths of their `ENC[...]` values, in file order.
const CASES: &[(&str, Format, &[&str])] = &[
    (
        "mixed.enc.yaml",
        Format::Yaml,
        &[
            "host_key",
            "port",
            "ratio",
            "enabled",
            "when",
            "users:0",
            "users:1",
            "users:2",
            "nested:deep:value",
        ],
    ),
    (
        "numbers.enc.json",
        Format::Json,
        &["host_key", "port", "big", "ratio", "ok", "list:0", "list:1"],
    ),
    ("dotenv.enc.env", Format::Dotenv, &["A", "B", "C"]),
    ("ini.enc.ini", Format::Ini, &["sec:key"]),
    ("blob.enc.json", Format::Binary, &["data"]),
    ("text.enc.yaml", Format::Binary, &["data"]),
    (
        "plugin-recipient.enc.yaml",
        Format::Yaml,
        &["host_key", "port", "ratio", "enabled", "users:0", "users:1"],
    ),
];

fn enc_re() -> Regex {
    Regex::new(r"ENC\[AES256_GCM,data:([^,]*),iv:([^,]*),tag:([^,]*),type:([a-z]+)\]")
        .expect("regex")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Value,
    Comment,
    Mac,
}

/// Every ENC occurrence: (byte range of the match, role).
fn enc_spans(text: &str) -> Vec<(std::ops::Range<usize>, Role)> {
    enc_re()
        .find_iter(text)
        .map(|m| {
            let line_start = text[..m.start()].rfind('\n').map_or(0, |i| i + 1);
            let before = &text[line_start..m.start()];
            let role = if before.ends_with('#') {
                Role::Comment
            } else if before.contains("mac") {
                Role::Mac
            } else {
                Role::Value
            };
            (m.range(), role)
        })
        .collect()
}

/// Flips one bit of byte 0 of base64 field `field` (1 data, 2 iv, 3 tag) in the ENC at `range`.
fn flip(text: &str, range: &std::ops::Range<usize>, field: usize) -> String {
    let enc = &text[range.clone()];
    let caps = enc_re().captures(enc).expect("enc");
    let g = caps.get(field).expect("field");
    let mut raw = B64.decode(g.as_str()).expect("base64");
    raw[0] ^= 0x01;
    let new_enc = format!(
        "{}{}{}",
        &enc[..g.start()],
        B64.encode(&raw),
        &enc[g.end()..]
    );
    format!("{}{}{}", &text[..range.start], new_enc, &text[range.end..])
}

fn swap(text: &str, a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> String {
    assert!(a.end <= b.start);
    format!(
        "{}{}{}{}{}",
        &text[..a.start],
        &text[b.clone()],
        &text[a.end..b.start],
        &text[a.clone()],
        &text[b.end..]
    )
}

fn value_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    enc_spans(text)
        .into_iter()
        .filter(|(_, r)| *r == Role::Value)
        .map(|(s, _)| s)
        .collect()
}

fn mac_span(text: &str) -> std::ops::Range<usize> {
    let macs: Vec<_> = enc_spans(text)
        .into_iter()
        .filter(|(_, r)| *r == Role::Mac)
        .collect();
    assert_eq!(macs.len(), 1);
    macs[0].0.clone()
}

/// Plaintext fragments that must never appear in an error, plus the data key in hex and base64.
fn secrets(name: &str, text: &str) -> Vec<String> {
    let mut s: Vec<String> = match name {
        "mixed.enc.yaml" => vec![
            "OPENSSH PRIVATE",
            "alice",
            "bob",
            "disabled@example.com",
            "2024-01-02",
        ],
        "numbers.enc.json" => vec!["BEGIN X", "9007199254740992"],
        "dotenv.enc.env" => vec!["hello world", "multi", " comment"],
        "blob.enc.json" => vec![],
        "text.enc.yaml" => vec!["ssh-ed25519 AAAA"],
        "plugin-recipient.enc.yaml" => vec!["OPENSSH PRIVATE", "alice", "bob"],
        _ => vec![],
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    if name == "blob.enc.json" {
        let blob = read_vector("blob.bin");
        s.push(B64.encode(&blob)[..16].to_owned());
        s.push(hex(&blob[..8]));
    }
    // The data key itself, unwrapped independently with the age crate.
    let format = CASES.iter().find(|c| c.0 == name).expect("case").1;
    let file = SopsFile::parse(text.as_bytes(), format).expect("parse good file");
    let id = vector_identity();
    for e in file.age_entries() {
        let Ok(d) = age::Decryptor::new(age::armor::ArmoredReader::new(e.enc.as_bytes())) else {
            continue;
        };
        let Ok(mut r) = d.decrypt(std::iter::once(&id as &dyn age::Identity)) else {
            continue;
        };
        let mut key = Vec::new();
        r.read_to_end(&mut key).expect("read key");
        assert_eq!(key.len(), 32);
        s.push(hex(&key));
        s.push(hex(&key).to_uppercase());
        s.push(B64.encode(&key)[..20].to_owned());
        s.push(format!("{:?}", &key[..4]).trim_end_matches(']').to_owned());
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn assert_clean(err: &SopsError, secrets: &[String], ctx: &str) {
    let shown = format!("{err} || {err:?}");
    for s in secrets {
        assert!(
            !shown.contains(s.as_str()),
            "{ctx}: error text leaks a secret fragment: {shown}"
        );
    }
}

fn run(text: &str, format: Format) -> Result<keypack_sops::Decrypted, SopsError> {
    let id = vector_identity();
    decrypt_with(text.as_bytes(), format, &[&id])
}

#[test]
fn good_vectors_decrypt_before_tampering() {
    for (name, format, paths) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        run(&text, *format).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            value_spans(&text).len(),
            paths.len(),
            "{name}: ENC values found"
        );
    }
}

#[test]
fn flipped_byte_in_data_iv_or_tag_of_each_value_is_value_auth_at_its_path() {
    let mut n = 0;
    for (name, format, paths) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let secrets = secrets(name, &text);
        for (span, path) in value_spans(&text).iter().zip(paths.iter()) {
            for (field, fname) in [(1, "data"), (2, "iv"), (3, "tag")] {
                let bad = flip(&text, span, field);
                let err = run(&bad, *format).expect_err("tampered value accepted");
                let ctx = format!("{name} {path} {fname}");
                match &err {
                    SopsError::ValueAuth { path: p } => assert_eq!(p, path, "{ctx}"),
                    other => panic!("{ctx}: expected ValueAuth, got {other:?}"),
                }
                assert_clean(&err, &secrets, &ctx);
                n += 1;
            }
        }
    }
    assert_eq!(n, 3 * 28, "every value of every vector, three fields each");
}

#[test]
fn flipped_byte_in_the_mac_is_mac_mismatch() {
    for (name, format, _) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let secrets = secrets(name, &text);
        for field in 1..=3 {
            let err = run(&flip(&text, &mac_span(&text), field), *format).expect_err("accepted");
            assert!(
                matches!(err, SopsError::MacMismatch),
                "{name} field {field}: {err:?}"
            );
            assert_clean(&err, &secrets, name);
        }
    }
}

#[test]
fn top_level_comments_are_not_authenticated_as_in_sops() {
    // sops leaves `#ENC[...]` comments out of the MAC and ignores their decryption failure;
    // keypack never returns comments, so a tampered comment changes nothing.
    for (name, format) in [
        ("mixed.enc.yaml", Format::Yaml),
        ("dotenv.enc.env", Format::Dotenv),
    ] {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let comment = enc_spans(&text)
            .into_iter()
            .find(|(_, r)| *r == Role::Comment)
            .expect("comment")
            .0;
        run(&flip(&text, &comment, 1), format).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn swapped_list_items_are_mac_mismatch() {
    for (name, format, paths, a, b) in [
        (
            "mixed.enc.yaml",
            Format::Yaml,
            CASES[0].2,
            "users:1",
            "users:2",
        ),
        (
            "numbers.enc.json",
            Format::Json,
            CASES[1].2,
            "list:0",
            "list:1",
        ),
        (
            "plugin-recipient.enc.yaml",
            Format::Yaml,
            CASES[6].2,
            "users:0",
            "users:1",
        ),
    ] {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let spans = value_spans(&text);
        let ia = paths.iter().position(|p| *p == a).expect("a");
        let ib = paths.iter().position(|p| *p == b).expect("b");
        let err = run(&swap(&text, &spans[ia], &spans[ib]), format).expect_err("accepted");
        assert!(matches!(err, SopsError::MacMismatch), "{name}: {err:?}");
        assert_clean(&err, &secrets(name, &text), name);
    }
}

#[test]
fn values_swapped_between_keys_are_value_auth() {
    for (name, format, paths, a, b) in [
        ("mixed.enc.yaml", Format::Yaml, CASES[0].2, "port", "ratio"),
        (
            "mixed.enc.yaml",
            Format::Yaml,
            CASES[0].2,
            "host_key",
            "nested:deep:value",
        ),
        (
            "numbers.enc.json",
            Format::Json,
            CASES[1].2,
            "host_key",
            "port",
        ),
        ("dotenv.enc.env", Format::Dotenv, CASES[2].2, "A", "B"),
    ] {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let spans = value_spans(&text);
        let ia = paths.iter().position(|p| *p == a).expect("a");
        let ib = paths.iter().position(|p| *p == b).expect("b");
        let err = run(&swap(&text, &spans[ia], &spans[ib]), format).expect_err("accepted");
        match &err {
            SopsError::ValueAuth { path } => assert_eq!(path, a, "{name}"),
            other => panic!("{name}: expected ValueAuth, got {other:?}"),
        }
        assert_clean(&err, &secrets(name, &text), name);
    }
}

#[test]
fn edited_lastmodified_is_mac_mismatch() {
    let re = Regex::new(r"(lastmodified\W+)2026-").expect("re");
    for (name, format, _) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        assert!(re.is_match(&text), "{name}");
        let bad = re.replace(&text, "${1}2025-").into_owned();
        let err = run(&bad, *format).expect_err("accepted");
        assert!(matches!(err, SopsError::MacMismatch), "{name}: {err:?}");
    }
}

#[test]
fn dropped_or_empty_mac_is_missing_mac() {
    for (name, format, _) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let dropped: String = text
            .split_inclusive('\n')
            .filter(|l| !(l.contains("mac") && l.contains("ENC[")))
            .collect();
        assert_ne!(dropped, text);
        let err = run(&dropped, *format).expect_err("accepted");
        assert!(
            matches!(err, SopsError::MissingMac),
            "{name} dropped: {err:?}"
        );

        let span = mac_span(&text);
        // YAML: `mac: ""`; JSON: the ENC sits inside quotes already; dotenv/INI: `mac=`.
        let blank = if name.ends_with(".yaml") { "\"\"" } else { "" };
        let empty = format!("{}{blank}{}", &text[..span.start], &text[span.end..]);
        let err = run(&empty, *format).expect_err("accepted");
        assert!(
            matches!(err, SopsError::MissingMac),
            "{name} empty: {err:?}"
        );
    }
}

#[test]
fn plaintext_where_ciphertext_is_required_is_not_encrypted() {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let spans = value_spans(&text);
    for (i, replacement, path) in [
        (1, "22", "port"),
        (0, "\"hello\"", "host_key"),
        (6, "alice", "users:1"),
    ] {
        let bad = format!(
            "{}{}{}",
            &text[..spans[i].start],
            replacement,
            &text[spans[i].end..]
        );
        match run(&bad, Format::Yaml) {
            Err(SopsError::NotEncrypted { path: p }) => assert_eq!(p, path),
            other => panic!("{path}: expected NotEncrypted, got {other:?}"),
        }
    }
}

#[test]
fn added_removed_or_changed_plain_values_are_mac_mismatch() {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let cases = [
        text.replace("public_unencrypted: visible", "public_unencrypted: changed"),
        text.replace("nothing: null\n", "nothing: null\nextra_unencrypted: x\n"),
        text.replace(
            "    unencrypted_suffix: _unencrypted\n",
            "    unencrypted_suffix: _unencrypted\n    mac_only_encrypted: true\n",
        ),
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert_ne!(*bad, text, "case {i} did not apply");
        let err = run(bad, Format::Yaml).expect_err("accepted");
        assert!(matches!(err, SopsError::MacMismatch), "case {i}: {err:?}");
    }
    // Removing an encrypted key (line) changes the MAC input too.
    let spans = value_spans(&text);
    let line_start = text[..spans[4].start].rfind('\n').expect("nl") + 1;
    let line_end = spans[4].end + 1;
    let err = run(
        &format!("{}{}", &text[..line_start], &text[line_end..]),
        Format::Yaml,
    )
    .expect_err("accepted");
    assert!(
        matches!(err, SopsError::MacMismatch),
        "removed key: {err:?}"
    );
}

/// Armored age file of `payload` to the vector recipient (plus armor, indented for YAML).
fn age_armored(payload: &[u8]) -> String {
    let recipient = vector_identity().to_public();
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .expect("encryptor");
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .expect("armor");
    let mut w = enc.wrap_output(armor).expect("wrap");
    w.write_all(payload).expect("write");
    w.finish().and_then(|a| a.finish()).expect("finish");
    String::from_utf8(out).expect("armor utf8")
}

fn indent(s: &str, n: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

/// A small sops YAML whose metadata is given; values come from mixed.enc.yaml (the MAC will not
/// be reached in the data-key cases).
fn synthetic(age_block: &str) -> String {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let port = value_spans(&text)[1].clone();
    let mac = mac_span(&text);
    format!(
        "port: {}\nsops:\n{age_block}    lastmodified: \"2026-11-25T17:18:57Z\"\n    mac: {}\n    unencrypted_suffix: _unencrypted\n    version: 3.11.0\n",
        &text[port], &text[mac]
    )
}

#[test]
fn data_key_of_wrong_length_is_bad_data_key() {
    let r = vector_identity().to_public().to_string();
    for len in [16usize, 31, 33, 0] {
        let block = format!(
            "    age:\n        - recipient: {r}\n          enc: |\n{}",
            indent(&age_armored(&vec![7u8; len]), 12)
        );
        let err = run(&synthetic(&block), Format::Yaml).expect_err("accepted");
        assert!(
            matches!(err, SopsError::BadDataKey { len: l } if l == len),
            "{len}: {err:?}"
        );
    }
    assert!(matches!(
        keypack_sops::DataKey::from_bytes(&[0; 31]),
        Err(SopsError::BadDataKey { len: 31 })
    ));
    assert!(keypack_sops::DataKey::from_bytes(&[0; 32]).is_ok());
}

#[test]
fn two_key_groups_are_unsupported_one_key_group_works() {
    let r = vector_identity().to_public().to_string();
    let entry = |payload: &[u8]| {
        format!(
            "            - recipient: {r}\n              enc: |\n{}",
            indent(&age_armored(payload), 16)
        )
    };
    let two = format!(
        "    key_groups:\n        - age:\n{}        - age:\n{}    shamir_threshold: 2\n",
        entry(&[1; 33]),
        entry(&[2; 33])
    );
    let err = run(&synthetic(&two), Format::Yaml).expect_err("accepted");
    assert!(
        matches!(err, SopsError::UnsupportedKeyGroups { groups: 2 }),
        "{err:?}"
    );

    // The real file rewritten into a single `key_groups` entry still decrypts and verifies.
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    let mut out = String::new();
    let mut in_age = false;
    for line in text.split_inclusive('\n') {
        if line == "    age:\n" {
            out.push_str("    key_groups:\n        - age:\n");
            in_age = true;
            continue;
        }
        if in_age && line.starts_with("    lastmodified") {
            in_age = false;
        }
        if in_age {
            out.push_str("    ");
        }
        out.push_str(line);
    }
    run(&out, Format::Yaml).unwrap_or_else(|e| panic!("single key group: {e}"));
}

#[test]
fn truncated_age_armor_is_an_age_error() {
    let text = String::from_utf8(read_vector("mixed.enc.yaml")).expect("utf8");
    // Drop the last base64 line of the first (matching) entry's armor.
    let first_end = text
        .find("            -----END AGE ENCRYPTED FILE-----")
        .expect("armor end");
    let prev_line = text[..first_end - 1].rfind('\n').expect("nl") + 1;
    let bad = format!("{}{}", &text[..prev_line], &text[first_end..]);
    let err = run(&bad, Format::Yaml).expect_err("accepted");
    assert!(
        matches!(err, SopsError::Age { ref entry, .. } if entry.starts_with("sops.age[0]")),
        "{err:?}"
    );
    assert_clean(&err, &secrets("mixed.enc.yaml", &text), "truncated armor");

    // Plain age files: armored and binary, whole and truncated.
    let id = vector_identity();
    let payload = b"-----BEGIN OPENSSH PRIVATE KEY-----\nplain age\n";
    let armored = age_armored(payload);
    let got = decrypt_age_file(armored.as_bytes(), &[&id]).expect("armored");
    assert_eq!(secrecy::ExposeSecret::expose_secret(&got), payload);
    let cut = &armored.as_bytes()[..armored.len() - 60];
    assert!(matches!(
        decrypt_age_file(cut, &[&id]),
        Err(SopsError::Age { .. })
    ));
}

#[test]
fn plain_age_files_binary_and_armored() {
    let id = vector_identity();
    let recipient = id.to_public();
    let payload: Vec<u8> = (0u8..=255).cycle().take(5000).collect();
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .expect("encryptor");
    let mut binary = Vec::new();
    let mut w = enc.wrap_output(&mut binary).expect("wrap");
    w.write_all(&payload).expect("write");
    w.finish().expect("finish");
    assert!(keypack_sops::looks_like_age(&binary));
    let got = decrypt_age_file(&binary, &[&id]).expect("binary age");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&got),
        payload.as_slice()
    );
    let other = age::x25519::Identity::generate();
    assert!(matches!(
        decrypt_age_file(&binary, &[&other]),
        Err(SopsError::NoMatchingIdentity { .. })
    ));
    assert!(matches!(
        decrypt_age_file(&binary[..binary.len() - 10], &[&id]),
        Err(SopsError::Age { .. })
    ));
    assert!(matches!(
        decrypt_age_file(b"not an age file", &[&id]),
        Err(SopsError::Age { .. })
    ));
}

/// Every tampered variant of a good file (label, text): flips, swaps, metadata edits.
fn corpus(text: &str, paths: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let spans = value_spans(text);
    for (span, path) in spans.iter().zip(paths) {
        for field in 1..=3 {
            out.push((
                format!("flip {path} field {field}"),
                flip(text, span, field),
            ));
        }
        out.push((
            format!("plaintext at {path}"),
            format!(
                "{}{}{}",
                &text[..span.start],
                "alice-plaintext",
                &text[span.end..]
            ),
        ));
    }
    // Moving a list *comment* element is not detectable, in sops either: comments are
    // authenticated by their path only and left out of the MAC. Such swaps are skipped.
    let is_comment = |i: usize| text[spans[i].clone()].ends_with("type:comment]");
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            if is_comment(i) || is_comment(j) {
                continue;
            }
            out.push((
                format!("swap {} {}", paths[i], paths[j]),
                swap(text, &spans[i], &spans[j]),
            ));
        }
    }
    for field in 1..=3 {
        out.push((
            format!("flip mac field {field}"),
            flip(text, &mac_span(text), field),
        ));
    }
    out.push((
        "lastmodified".into(),
        text.replacen("2026-11-25T", "2025-11-25T", 1),
    ));
    let dropped: String = text
        .split_inclusive('\n')
        .filter(|l| !(l.contains("mac") && l.contains("ENC[")))
        .collect();
    out.push(("dropped mac".into(), dropped));
    out
}

#[test]
fn no_tamper_error_shows_a_secret_in_display_or_debug() {
    let mut n = 0;
    for (name, format, paths) in CASES {
        let text = String::from_utf8(read_vector(name)).expect("utf8");
        let secrets = secrets(name, &text);
        assert!(!secrets.is_empty());
        for (label, bad) in corpus(&text, paths) {
            let swapped_equal_values = label.starts_with("swap") && bad == text;
            match run(&bad, *format) {
                Err(e) => assert_clean(&e, &secrets, &format!("{name}: {label}")),
                // Swapping two identical ciphertexts cannot happen (random IVs): still check.
                Ok(_) => assert!(
                    swapped_equal_values,
                    "{name}: {label}: tampered file accepted"
                ),
            }
            n += 1;
        }
    }
    assert!(n > 200, "{n} tampered files");
}

#[test]
fn random_mutations_never_panic_and_never_yield_other_plaintext() {
    // A cheap, deterministic stand-in for fuzzing: single-byte edits and truncations of every
    // vector must give a typed error — never a panic — or, when the edit hit bytes sops does not
    // authenticate (comments, recipient strings, `version`, formatting, the *names* of
    // unencrypted keys), exactly the original decrypted values at the original paths.
    let id = vector_identity();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 7;
        x ^= x >> 9;
        x
    };
    let mut total_accepted = 0;
    for (name, format, _) in CASES {
        let good = read_vector(name);
        let reference = authenticated(&decrypt_with(&good, *format, &[&id]).expect("good"));
        let mut accepted = 0;
        for _ in 0..150 {
            let mut bad = good.clone();
            let pos = (next() as usize) % bad.len();
            match next() % 3 {
                0 => bad[pos] ^= 1 << (next() % 8),
                1 => bad.truncate(pos),
                _ => bad[pos] = b"\n \t:#-\"'[]{}=,"[(next() % 14) as usize],
            }
            if let Ok(d) = decrypt_with(&bad, *format, &[&id]) {
                assert!(
                    authenticated(&d) == reference,
                    "{name}: mutation at {pos} changed a decrypted value"
                );
                accepted += 1;
            }
        }
        // Most single-byte edits must be rejected.
        assert!(
            accepted < 75,
            "{name}: {accepted} of 150 mutations accepted"
        );
        total_accepted += accepted;
    }
    eprintln!("random mutations accepted (unauthenticated bytes hit): {total_accepted}");
}

/// The decrypted (encrypted-in-file) values with their paths; plain values are left out.
fn authenticated(d: &keypack_sops::Decrypted) -> Vec<(String, Vec<u8>)> {
    fn walk(v: &keypack_sops::Value, path: String, out: &mut Vec<(String, Vec<u8>)>) {
        match v {
            keypack_sops::Value::Map(m) => m
                .iter()
                .for_each(|(k, v)| walk(v, format!("{path}:{k}"), out)),
            keypack_sops::Value::List(l) => l
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, format!("{path}:{i}"), out)),
            keypack_sops::Value::Scalar(s) if s.kind() != keypack_sops::ValueType::Plain => {
                out.push((path, s.expose().to_vec()))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, doc) in d.documents().iter().enumerate() {
        walk(doc, i.to_string(), &mut out);
    }
    out
}
