//! Test-only software model of an age-plugin-yubikey identity: the `piv-p256` stanza crypto,
//! stubs, recipients and identity files, byte-compatible with age-plugin-yubikey 0.5.1.
//!
//! Where it sits: used by the mock `age-plugin-yubikey` binary of this crate (to unwrap)
//! and by keypack's tests (to encrypt to a YubiKey recipient without a YubiKey, through
//! [`PivRecipient`], an `age::Recipient`).
//!
//! Does not: touch PC/SC, keep any secret outside the test's own temp dir, or ship in
//! keypack. The key is a software P-256 key written by the test (never committed).
//!
//! Reference: age-plugin-yubikey 0.5.1 `src/format.rs` (`RecipientLine::wrap_file_key`),
//! `src/key.rs` (`Stub::to_bytes`, `unwrap_file_key`), `src/p256.rs` (recipient encoding):
//! tag = SHA-256(compressed pk)[0..4]; key = HKDF-SHA256(salt = epk33 ‖ pk33,
//! info = "piv-p256", ikm = ECDH x); body = ChaCha20-Poly1305(key, zero nonce, file key).

#![forbid(unsafe_code)]

use std::collections::HashSet;

use age_core::format::{FileKey, Stanza};
use age_core::primitives::{aead_decrypt, aead_encrypt, hkdf};
use age_core::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::{Digest, Sha256};

/// Stanza tag of age-plugin-yubikey.
pub const STANZA_TAG: &str = "piv-p256";
const LABEL: &[u8] = b"piv-p256";

/// A software "card": one P-256 key in one retired slot of a YubiKey with a serial.
pub struct SoftCard {
    secret: p256::SecretKey,
    /// The serial number.
    pub serial: u32,
    /// The slot byte (0x82 = retired slot 1).
    pub slot: u8,
}

impl SoftCard {
    /// A new random key.
    pub fn generate(serial: u32, slot: u8) -> SoftCard {
        SoftCard {
            secret: p256::SecretKey::random(&mut rand_core::OsRng),
            serial,
            slot,
        }
    }

    /// From a 32-byte big-endian scalar in hex.
    pub fn from_hex(hex: &str, serial: u32, slot: u8) -> Option<SoftCard> {
        let bytes = decode_hex(hex.trim())?;
        let secret = p256::SecretKey::from_slice(&bytes).ok()?;
        Some(SoftCard {
            secret,
            serial,
            slot,
        })
    }

    /// The scalar as hex (test fixtures only).
    pub fn secret_hex(&self) -> String {
        self.secret
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The compressed SEC-1 public key.
    pub fn public_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(self.secret.public_key().to_encoded_point(true).as_bytes());
        out
    }

    /// The recipient for encryption.
    pub fn recipient(&self) -> PivRecipient {
        PivRecipient {
            pk: self.secret.public_key(),
        }
    }

    /// `SHA-256(compressed pk)[0..4]`.
    pub fn tag(&self) -> [u8; 4] {
        tag_of(&self.public_compressed())
    }

    /// `AGE-PLUGIN-YUBIKEY-1…` for this key.
    pub fn stub(&self) -> String {
        let mut bytes = Vec::with_capacity(9);
        bytes.extend_from_slice(&self.serial.to_le_bytes());
        bytes.push(self.slot);
        bytes.extend_from_slice(&self.tag());
        bech32::encode::<bech32::Bech32>(
            bech32::Hrp::parse_unchecked("age-plugin-yubikey-"),
            &bytes,
        )
        .expect("valid hrp")
        .to_uppercase()
    }

    /// `age1yubikey1…` for this key.
    pub fn recipient_string(&self) -> String {
        self.recipient().to_string()
    }

    /// An identity file as `age-plugin-yubikey --identity` prints it.
    pub fn identity_file(&self, pin_policy: &str, touch_policy: &str) -> String {
        format!(
            "#       Serial: {}, Slot: {}\n#         Name: keypack-test\n#      Created: Wed, 25 Nov 2026 17:22:21 +0000\n#   PIN policy: {pin_policy}\n# Touch policy: {touch_policy}\n#    Recipient: {}\n{}\n",
            self.serial,
            self.slot.wrapping_sub(0x81),
            self.recipient_string(),
            self.stub()
        )
    }

    /// Unwrap a `piv-p256` stanza: `None` if it is not for this key, `Some(Err)` if it is
    /// and fails to decrypt.
    pub fn unwrap(&self, stanza: &Stanza) -> Option<Result<FileKey, ()>> {
        if stanza.tag != STANZA_TAG || stanza.args.len() != 2 {
            return None;
        }
        let tag = STANDARD_NO_PAD.decode(&stanza.args[0]).ok()?;
        if tag != self.tag() {
            return None;
        }
        Some(self.unwrap_matching(stanza))
    }

    fn unwrap_matching(&self, stanza: &Stanza) -> Result<FileKey, ()> {
        let epk_bytes = STANDARD_NO_PAD.decode(&stanza.args[1]).map_err(|_| ())?;
        if epk_bytes.len() != 33 || stanza.body.len() != 32 {
            return Err(());
        }
        let epk = p256::PublicKey::from_sec1_bytes(&epk_bytes).map_err(|_| ())?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), epk.as_affine());
        let mut salt = Vec::with_capacity(66);
        salt.extend_from_slice(&epk_bytes);
        salt.extend_from_slice(&self.public_compressed());
        let key = hkdf(&salt, LABEL, shared.raw_secret_bytes().as_slice());
        let plain = aead_decrypt(&key, 16, &stanza.body).map_err(|_| ())?;
        FileKey::try_init_with_mut(|k| {
            k.copy_from_slice(&plain);
            Ok(())
        })
    }
}

/// An `age1yubikey1…` recipient, usable with `age::Encryptor::with_recipients`.
pub struct PivRecipient {
    pk: p256::PublicKey,
}

impl PivRecipient {
    /// Parse `age1yubikey1…`.
    pub fn parse(s: &str) -> Option<PivRecipient> {
        let (hrp, data) = bech32::decode(s).ok()?;
        if hrp.as_str() != "age1yubikey" {
            return None;
        }
        Some(PivRecipient {
            pk: p256::PublicKey::from_sec1_bytes(&data).ok()?,
        })
    }

    /// From the 33-byte compressed point (the bech32 payload of `age1yubikey1…`).
    pub fn from_compressed(bytes: &[u8]) -> Option<PivRecipient> {
        if bytes.len() != 33 {
            return None;
        }
        Some(PivRecipient {
            pk: p256::PublicKey::from_sec1_bytes(bytes).ok()?,
        })
    }

    fn compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(self.pk.to_encoded_point(true).as_bytes());
        out
    }
}

impl std::fmt::Display for PivRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = bech32::encode::<bech32::Bech32>(
            bech32::Hrp::parse_unchecked("age1yubikey"),
            &self.compressed(),
        )
        .map_err(|_| std::fmt::Error)?;
        f.write_str(&s)
    }
}

impl age::Recipient for PivRecipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let esk = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
        let epk = esk.public_key().to_encoded_point(true);
        let shared = esk.diffie_hellman(&self.pk);
        let pk = self.compressed();
        let mut salt = Vec::with_capacity(66);
        salt.extend_from_slice(epk.as_bytes());
        salt.extend_from_slice(&pk);
        let key = hkdf(&salt, LABEL, shared.raw_secret_bytes().as_slice());
        let body = aead_encrypt(&key, file_key.expose_secret());
        Ok((
            vec![Stanza {
                tag: STANZA_TAG.to_owned(),
                args: vec![
                    STANDARD_NO_PAD.encode(tag_of(&pk)),
                    STANDARD_NO_PAD.encode(epk.as_bytes()),
                ],
                body,
            }],
            HashSet::new(),
        ))
    }
}

fn tag_of(pk: &[u8; 33]) -> [u8; 4] {
    let h = Sha256::digest(pk);
    [h[0], h[1], h[2], h[3]]
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decode `AGE-PLUGIN-YUBIKEY-1…` into (serial, slot, tag).
pub fn decode_stub(s: &str) -> Option<(u32, u8, [u8; 4])> {
    let (hrp, d) = bech32::decode(s).ok()?;
    if !hrp.as_str().eq_ignore_ascii_case("age-plugin-yubikey-") || d.len() != 9 {
        return None;
    }
    Some((
        u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
        d[4],
        [d[5], d[6], d[7], d[8]],
    ))
}

/// Helpers for tests that install the mock binary in a private folder.
pub mod harness {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::SoftCard;

    /// The built mock binary (`target/<profile>/age-plugin-yubikey`), building it when a
    /// `cargo test -p …` run did not.
    pub fn mock_binary() -> PathBuf {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_owned();
        let bin = profile_dir.join("age-plugin-yubikey");
        if !bin.exists() {
            let target_dir = profile_dir.parent().expect("target dir");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-p",
                    "keypack-test-age-plugin-yubikey",
                    "--bin",
                    "age-plugin-yubikey",
                ])
                .env("CARGO_TARGET_DIR", target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for the mock plugin");
            assert!(
                status.success(),
                "building the mock age-plugin-yubikey failed"
            );
        }
        bin
    }

    /// A private folder holding the mock plugin, its configuration and its log.
    pub struct MockPlugin {
        dir: tempfile::TempDir,
        /// The software card the mock serves.
        pub card: SoftCard,
        /// The expected PIN.
        pub pin: String,
    }

    impl MockPlugin {
        /// Install the mock with a fresh card and script.
        pub fn new(script: &str) -> MockPlugin {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::copy(mock_binary(), dir.path().join("age-plugin-yubikey"))
                .expect("copy mock plugin");
            let m = MockPlugin {
                dir,
                card: SoftCard::generate(12345678, 0x82),
                pin: "123456".to_owned(),
            };
            m.set_script(script);
            m
        }

        /// Change the script (rewrites the configuration).
        pub fn set_script(&self, script: &str) {
            let conf = format!(
                "key={}\nserial={}\nslot={}\npin={}\nscript={script}\nlog={}\n",
                self.card.secret_hex(),
                self.card.serial,
                self.card.slot,
                self.pin,
                self.log_path().display()
            );
            std::fs::write(self.dir.path().join("mock-yubikey.conf"), conf).expect("write conf");
        }

        /// The folder to put first on `PATH`.
        pub fn bin_dir(&self) -> &Path {
            self.dir.path()
        }

        /// The mock's event log.
        pub fn log_path(&self) -> PathBuf {
            self.dir.path().join("mock.log")
        }

        /// Lines of the log.
        pub fn log(&self) -> Vec<String> {
            std::fs::read_to_string(self.log_path())
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        /// How many log lines equal `event` or start with `event `.
        pub fn count(&self, event: &str) -> usize {
            self.log()
                .iter()
                .filter(|l| *l == event || l.starts_with(&format!("{event} ")))
                .count()
        }

        /// An identity file for the card, written into the folder.
        pub fn identity_file(&self) -> PathBuf {
            let p = self.dir.path().join("yubikey-identity.txt");
            std::fs::write(
                &p,
                self.card.identity_file(
                    "Once   (A PIN is required once per session, if set)",
                    "Always (A physical touch is required for every decryption)",
                ),
            )
            .expect("write identity");
            p
        }

        /// Encrypt `plain` to the card (armored age file).
        pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
            encrypt_to(&[&self.card.recipient() as &dyn age::Recipient], plain)
        }
    }

    /// Encrypt to recipients as an armored age file.
    pub fn encrypt_to(recipients: &[&dyn age::Recipient], plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let enc = age::Encryptor::with_recipients(recipients.iter().copied()).expect("recipients");
        let mut out = Vec::new();
        let w = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
            .expect("armor");
        let mut s = enc.wrap_output(w).expect("wrap");
        s.write_all(plain).expect("write");
        s.finish().and_then(|w| w.finish()).expect("finish");
        out
    }
}
