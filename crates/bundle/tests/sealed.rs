//! Sealed bundles (`--seal passphrase`): the archive holds the `.pub` files and one age file
//! (scrypt) with the private keys' tar; nothing of a private key is in plaintext; the right
//! passphrase gives back exactly the unsealed bundle's private files; a wrong one, a damaged
//! blob or no blob are told apart.

use std::io::Read;

use keypack_bundle::{
    BundleBuilder, KeyRole, SealedBundle, UnsealError, archive_problems, check_passphrase,
    read_archive, unseal,
};
use keypack_layout::{SEALED_BLOB_PATH, UserName};
use secrecy::{SecretSlice, SecretString};

const HOST: &str = include_str!("fixtures/host");
const HOST_PUB: &str = include_str!("fixtures/host.pub");
const DEPLOY: &str = include_str!("fixtures/deploy");
const ALICE: &str = include_str!("fixtures/alice");

/// Small enough to keep the tests fast; the product uses DEFAULT_SCRYPT_WORK_FACTOR.
const TEST_LOG_N: u8 = 10;
const PASSPHRASE: &str = "correct horse battery staple";

fn secret(text: &str) -> SecretSlice<u8> {
    SecretSlice::from(text.as_bytes().to_vec())
}

fn pass(p: &str) -> SecretString {
    SecretString::from(p.to_owned())
}

fn builder() -> BundleBuilder {
    let mut b = BundleBuilder::new();
    b.add_key(
        KeyRole::User(UserName::new("alice").unwrap()),
        secret(ALICE),
        None,
    )
    .unwrap();
    b.add_key(KeyRole::Deploy, secret(DEPLOY), None).unwrap();
    b.add_key(KeyRole::Host, secret(HOST), Some(HOST_PUB))
        .unwrap();
    b
}

fn sealed() -> SealedBundle {
    let mut b = builder();
    b.seal_with_passphrase_work_factor(pass(PASSPHRASE), TEST_LOG_N);
    b.seal(0).unwrap()
}

/// (path, mode, contents) of every entry of an uncompressed tar.
fn tar_files(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for e in tar::Archive::new(bytes).entries().unwrap() {
        let mut e = e.unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        assert_eq!(e.header().uid().unwrap(), 0);
        let path = e.path().unwrap().display().to_string();
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((path, mode, data));
    }
    out
}

fn blob_of(bundle: &SealedBundle) -> Vec<u8> {
    let gz = flate2::read::GzDecoder::new(bundle.expose_archive());
    let mut a = tar::Archive::new(gz);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(SEALED_BLOB_PATH) {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("no {SEALED_BLOB_PATH} in the archive");
}

#[test]
fn archive_holds_the_pub_files_and_the_blob_only() {
    let bundle = sealed();
    let entries = read_archive(bundle.expose_archive()).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/ssh/ssh_host_ed25519_key.pub",
            SEALED_BLOB_PATH,
            "root/.ssh/deploy_key_ed25519.pub",
            "users/alice/.ssh/id_ed25519.pub",
        ]
    );
    let blob = entries.iter().find(|e| e.path == SEALED_BLOB_PATH).unwrap();
    let info = blob
        .sealed
        .as_ref()
        .expect("the reader recognises the blob");
    assert_eq!(info.kind, "age, scrypt");
    assert_eq!(info.work_factor, TEST_LOG_N);
    assert_eq!(blob.mode & 0o7777, 0o600);
    assert!(
        archive_problems(&entries).is_empty(),
        "{:?}",
        archive_problems(&entries)
    );
    // The manifest still lists every key, the private ones marked as sealed.
    let m = bundle.manifest();
    assert_eq!(m.entries.len(), 6);
    assert!(m.entries.iter().all(|e| e.sealed != e.public));
    assert_eq!(m.sealed.as_ref().unwrap().work_factor, TEST_LOG_N);
    assert_eq!(m.extra.len(), 1);
    // Media building their own container see only plaintext-safe files.
    assert!(bundle.expose_files().all(|(e, _)| e.public));
    assert_eq!(bundle.extra_files().count(), 1);
}

#[test]
fn no_private_key_material_in_the_archive_in_any_encoding() {
    let bundle = sealed();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bundle.expose_archive())
        .read_to_end(&mut plain)
        .unwrap();
    for (name, key) in [("host", HOST), ("deploy", DEPLOY), ("alice", ALICE)] {
        let parsed = ssh_key::PrivateKey::from_openssh(key).unwrap();
        let seed = parsed.key_data().ed25519().unwrap().private.to_bytes();
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let mut needles: Vec<Vec<u8>> = vec![seed.to_vec(), hex.into_bytes()];
        needles.extend(
            key.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(|l| l.as_bytes().to_vec()),
        );
        needles.push(b"PRIVATE KEY".to_vec());
        for n in &needles {
            assert!(
                !plain.windows(n.len()).any(|w| w == n.as_slice()),
                "{name}: private key material in the sealed archive"
            );
        }
    }
    // The public lines are there, in plaintext.
    let host_pub = HOST_PUB.split_whitespace().nth(1).unwrap().as_bytes();
    assert!(plain.windows(host_pub.len()).any(|w| w == host_pub));
}

#[test]
fn the_right_passphrase_gives_back_the_unsealed_private_files() {
    let bundle = sealed();
    let tar = unseal(&blob_of(&bundle), pass(PASSPHRASE)).unwrap();
    let files = tar_files(&tar);
    // The same private files, bytes and modes, that the unsealed bundle holds.
    let unsealed = builder().seal(0).unwrap();
    let expected: Vec<(String, u32, Vec<u8>)> = unsealed
        .expose_files()
        .filter(|(e, _)| !e.public)
        .map(|(e, c)| (e.path.clone(), e.mode, c.to_vec()))
        .collect();
    assert_eq!(files, expected);
    assert!(check_passphrase(&blob_of(&bundle), pass(PASSPHRASE)).is_ok());
}

#[test]
fn a_wrong_passphrase_is_told_apart_from_a_damaged_blob() {
    let bundle = sealed();
    let blob = blob_of(&bundle);
    assert!(matches!(
        unseal(&blob, pass("correct horse battery stapler")),
        Err(UnsealError::WrongPassphrase)
    ));
    assert!(matches!(
        check_passphrase(&blob, pass("")),
        Err(UnsealError::WrongPassphrase)
    ));
    // A flipped payload byte: the passphrase is right, the payload fails authentication.
    let mut bad = blob.clone();
    let last = bad.len() - 5;
    bad[last] ^= 1;
    assert!(matches!(
        unseal(&bad, pass(PASSPHRASE)),
        Err(UnsealError::Corrupt(_))
    ));
    // Truncated.
    assert!(unseal(&blob[..blob.len() - 20], pass(PASSPHRASE)).is_err());
    // Not a blob at all.
    assert!(matches!(
        unseal(b"hello", pass(PASSPHRASE)),
        Err(UnsealError::NotSealed)
    ));
    // An error never carries the passphrase.
    let e = unseal(&blob, pass("hunter2-secret")).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("hunter2"));
}

#[test]
fn an_unsealed_bundle_has_no_blob_and_a_sealed_one_differs_per_seal() {
    let plain = builder().seal(0).unwrap();
    assert!(plain.manifest().sealed.is_none());
    assert_eq!(plain.extra_files().count(), 0);
    // Each seal has a fresh salt and file key: no two sealed archives are alike.
    assert_ne!(sealed().expose_archive(), sealed().expose_archive());
}

#[test]
fn the_default_work_factor_is_the_one_security_md_states() {
    assert_eq!(keypack_bundle::DEFAULT_SCRYPT_WORK_FACTOR, 18);
    let security =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../SECURITY.md")).unwrap();
    assert!(
        security.contains("scrypt work factor 2^18"),
        "SECURITY.md states the work factor"
    );
}

#[test]
fn the_blob_is_found_in_a_sealed_archive_and_not_in_an_unsealed_one() {
    let bundle = sealed();
    let found = keypack_bundle::sealed_blob_in_archive(bundle.expose_archive())
        .unwrap()
        .expect("the blob");
    assert_eq!(found, blob_of(&bundle));
    let plain = builder().seal(0).unwrap();
    assert!(
        keypack_bundle::sealed_blob_in_archive(plain.expose_archive())
            .unwrap()
            .is_none()
    );
}
