//! X25519 identities through `IdentitySet`: discovery order, batch decrypt, error variants.

use std::io::Write;

use age::secrecy::ExposeSecret;
use keypack_identity::{AgeFile, IdentityError, IdentitySet};

fn encrypt(recipient: &age::x25519::Recipient, plain: &[u8], armor: bool) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .expect("recipients");
    let mut out = Vec::new();
    if armor {
        let w = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
            .expect("armor");
        let mut s = enc.wrap_output(w).expect("wrap");
        s.write_all(plain).expect("write");
        s.finish().and_then(|w| w.finish()).expect("finish");
    } else {
        let mut s = enc.wrap_output(&mut out).expect("wrap");
        s.write_all(plain).expect("write");
        s.finish().expect("finish");
    }
    out
}

fn identity_file(dir: &std::path::Path, id: &age::x25519::Identity) -> std::path::PathBuf {
    let p = dir.join("keys.txt");
    std::fs::write(
        &p,
        format!(
            "# created: test\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    p
}

#[test]
fn decrypts_armored_and_binary_and_reports_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let path = identity_file(dir.path(), &id);
    let set = IdentitySet::from_file(&path).unwrap();
    assert_eq!(set.recipients(), vec![id.to_public().to_string()]);

    let a = encrypt(&id.to_public(), b"first secret", true);
    let b = encrypt(&id.to_public(), b"second", false);
    let c = encrypt(&other.to_public(), b"not for us", true);
    let files = vec![
        AgeFile {
            label: "a".into(),
            alternatives: vec![&a],
        },
        AgeFile {
            label: "b".into(),
            alternatives: vec![&c, &b],
        },
        AgeFile {
            label: "c".into(),
            alternatives: vec![&c],
        },
        AgeFile {
            label: "d".into(),
            alternatives: vec![b"garbage".as_slice()],
        },
    ];
    assert_eq!(set.plugin_operations(&files), 0);
    let out = set.decrypt_batch(&files);
    assert_eq!(out[0].as_ref().unwrap().expose_secret(), b"first secret");
    assert_eq!(out[1].as_ref().unwrap().expose_secret(), b"second");
    match &out[2] {
        Err(IdentityError::NoMatchingIdentity {
            file,
            recipients,
            held,
        }) => {
            assert_eq!(file, "c");
            assert_eq!(recipients.len(), 1);
            assert!(recipients[0].contains("X25519"));
            assert_eq!(held, &vec![id.to_public().to_string()]);
        }
        other => panic!("unexpected {:?}", other.as_ref().err()),
    }
    assert!(matches!(&out[3], Err(IdentityError::Malformed { file }) if file == "d"));
}

#[test]
fn tampered_payload_is_decrypt_failed() {
    let dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let set = IdentitySet::from_file(&identity_file(dir.path(), &id)).unwrap();
    let mut a = encrypt(&id.to_public(), b"payload", false);
    let n = a.len();
    a[n - 1] ^= 1;
    let out = set.decrypt_batch(&[AgeFile {
        label: "t".into(),
        alternatives: vec![&a],
    }]);
    assert!(matches!(&out[0], Err(IdentityError::DecryptFailed { .. })));
}

#[test]
fn invalid_line_names_line_not_content() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.txt");
    std::fs::write(&p, "# comment\n\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let err = IdentitySet::from_file(&p).unwrap_err();
    assert!(matches!(err, IdentityError::InvalidLine { line: 3, .. }));
    assert!(!err.to_string().contains("NOTAKEY"));
    assert!(err.hint().is_some());
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing\n").unwrap();
    assert!(matches!(
        IdentitySet::from_file(&empty),
        Err(IdentityError::Empty { .. })
    ));
}

#[test]
fn explicit_path_wins_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let p = identity_file(dir.path(), &id);
    let (set, used) = IdentitySet::discover(Some(&p)).unwrap();
    assert_eq!(used, p);
    assert_eq!(set.recipients().len(), 1);
}

#[test]
fn yubikey_stub_decodes() {
    // From the note: a stub printed by age-plugin-yubikey for serial 12345678 slot 1.
    let stub = keypack_identity::decode_yubikey_stub("AGE-PLUGIN-YUBIKEY-1FESMCQYZ5ZFKLPQ050C2G");
    let stub = stub.expect("valid stub");
    assert_eq!(stub.serial, 12345678);
    assert_eq!(stub.ui_slot(), 1);
}
