//! Test-only scriptable mock of `age-plugin-yubikey` (installed by tests as a binary of
//! that name, first on `PATH`).
//!
//! It speaks the real identity-v1 protocol through `age-plugin` 0.7, accepts real
//! `AGE-PLUGIN-YUBIKEY-1…` stubs and unwraps real `piv-p256` stanzas with a software P-256
//! key (see the crate's lib). Behaviour is scripted so keypack's UX paths can be tested
//! without a card. It never prints key material.
//!
//! Configuration: a `key=value` file, `mock-yubikey.conf` beside the binary, or the file
//! named by `KEYPACK_MOCK_YK_CONF`. Keys: `key` (hex scalar), `serial`, `slot` (byte,
//! decimal), `pin`, `script`, `log`. `KEYPACK_MOCK_YK_SCRIPT` and `KEYPACK_MOCK_YK_LOG`
//! override `script` and `log`.
//!
//! Scripts: `ok`, `pin` (PIN once per session), `pin-always` (PIN per session and one
//! unwrap per session, like a card with PIN policy "always"), `wrong-pin` (every PIN is
//! wrong), `absent-then-inserted`, `absent` / `absent-skip` (the card never appears),
//! `slow` (11 s), `crash` (exits mid-protocol), `garbage` (prints a malformed line).
//!
//! The log gets one line per event: `session`, `pin-request`, `pin-ok`, `pin-wrong`,
//! `confirm`, `unwrap <file>`, `crash`, `garbage`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use age_plugin::{Callbacks, PluginHandler, identity, recipient, run_state_machine};
use keypack_test_age_plugin_yubikey::{PivRecipient, SoftCard};

const FOOTER: &str = "\n\n[ Did this not do what you expected? Could an error be more useful? ]\n[ Tell us: https://str4d.xyz/age-plugin-yubikey/report             ]";

struct Config {
    values: HashMap<String, String>,
    dir: PathBuf,
}

impl Config {
    fn load() -> Config {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|p| p.to_owned()))
            .unwrap_or_default();
        let path = std::env::var_os("KEYPACK_MOCK_YK_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| exe_dir.join("mock-yubikey.conf"));
        let dir = path.parent().map(|p| p.to_owned()).unwrap_or(exe_dir);
        let mut values = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    values.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        for (env, key) in [
            ("KEYPACK_MOCK_YK_SCRIPT", "script"),
            ("KEYPACK_MOCK_YK_LOG", "log"),
        ] {
            if let Ok(v) = std::env::var(env) {
                values.insert(key.to_owned(), v);
            }
        }
        Config { values, dir }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(String::as_str)
    }

    fn card(&self) -> Option<SoftCard> {
        let serial = self
            .get("serial")
            .and_then(|s| s.parse().ok())
            .unwrap_or(12345678);
        let slot = self
            .get("slot")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x82);
        SoftCard::from_hex(self.get("key")?, serial, slot)
    }

    fn script(&self) -> String {
        self.get("script").unwrap_or("ok").to_owned()
    }

    fn log(&self, line: &str) {
        if let Some(p) = self.get("log")
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    fn tries_path(&self) -> PathBuf {
        self.dir.join("mock-yubikey.tries")
    }

    fn tries(&self) -> u32 {
        std::fs::read_to_string(self.tries_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(3)
    }

    fn set_tries(&self, n: u32) {
        let _ = std::fs::write(self.tries_path(), n.to_string());
    }
}

struct Handler;

impl PluginHandler for Handler {
    type RecipientV1 = MockRecipient;
    type IdentityV1 = MockIdentity;

    fn recipient_v1(self) -> io::Result<MockRecipient> {
        Ok(MockRecipient {
            recipients: Vec::new(),
        })
    }

    fn identity_v1(self) -> io::Result<MockIdentity> {
        Ok(MockIdentity {
            config: Config::load(),
            stubs: Vec::new(),
        })
    }
}

/// Encryption needs no card (as in the real plugin): `sops --age age1yubikey1…` works.
struct MockRecipient {
    recipients: Vec<PivRecipient>,
}

impl recipient::RecipientPluginV1 for MockRecipient {
    fn add_recipient(
        &mut self,
        index: usize,
        _plugin_name: &str,
        bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        match PivRecipient::from_compressed(bytes) {
            Some(r) => {
                self.recipients.push(r);
                Ok(())
            }
            None => Err(recipient::Error::Recipient {
                index,
                message: "Invalid recipient".to_owned(),
            }),
        }
    }

    fn add_identity(
        &mut self,
        index: usize,
        _plugin_name: &str,
        _bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        Err(recipient::Error::Identity {
            index,
            message: "mock: identities are not supported for encryption".to_owned(),
        })
    }

    fn labels(&mut self) -> HashSet<String> {
        HashSet::new()
    }

    fn wrap_file_keys(
        &mut self,
        file_keys: Vec<FileKey>,
        _callbacks: impl Callbacks<recipient::Error>,
    ) -> io::Result<Result<Vec<Vec<Stanza>>, Vec<recipient::Error>>> {
        use age::Recipient as _;
        let mut out = Vec::with_capacity(file_keys.len());
        for key in &file_keys {
            let mut stanzas = Vec::new();
            for r in &self.recipients {
                match r.wrap_file_key(key) {
                    Ok((s, _)) => stanzas.extend(s),
                    Err(_) => {
                        return Ok(Err(vec![recipient::Error::Internal {
                            message: "wrap failed".to_owned(),
                        }]));
                    }
                }
            }
            out.push(stanzas);
        }
        Ok(Ok(out))
    }
}

struct MockIdentity {
    config: Config,
    /// (identity index, serial, slot, tag)
    stubs: Vec<(usize, u32, u8, [u8; 4])>,
}

fn isolate(s: impl std::fmt::Display) -> String {
    format!("\u{2068}{s}\u{2069}")
}

impl identity::IdentityPluginV1 for MockIdentity {
    fn add_identity(
        &mut self,
        index: usize,
        plugin_name: &str,
        bytes: &[u8],
    ) -> Result<(), identity::Error> {
        if plugin_name != "yubikey" || bytes.len() != 9 {
            return Err(identity::Error::Identity {
                index,
                message: "Invalid YubiKey stub".to_owned(),
            });
        }
        self.stubs.push((
            index,
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            bytes[4],
            [bytes[5], bytes[6], bytes[7], bytes[8]],
        ));
        Ok(())
    }

    fn unwrap_file_keys(
        &mut self,
        files: Vec<Vec<Stanza>>,
        mut callbacks: impl Callbacks<identity::Error>,
    ) -> io::Result<HashMap<usize, Result<FileKey, Vec<identity::Error>>>> {
        let cfg = &self.config;
        cfg.log("session");
        let script = cfg.script();
        let mut out = HashMap::new();
        let Some(card) = cfg.card() else {
            callbacks
                .error(identity::Error::Internal {
                    message: "mock: no card configured".to_owned(),
                })?
                .ok();
            return Ok(out);
        };
        let Some(&(index, serial, _, _)) = self.stubs.iter().find(|(_, serial, slot, tag)| {
            *serial == card.serial && *slot == card.slot && *tag == card.tag()
        }) else {
            return Ok(out);
        };
        // Candidate stanzas per file.
        let candidates: Vec<(usize, &Stanza)> = files
            .iter()
            .enumerate()
            .filter_map(|(i, stanzas)| {
                stanzas
                    .iter()
                    .find(|s| card.unwrap(s).is_some())
                    .map(|s| (i, s))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(out);
        }
        let serial_s = isolate(serial);
        match script.as_str() {
            "garbage" => {
                cfg.log("garbage");
                let mut o = io::stdout();
                o.write_all(b"this is not an age plugin stanza\n")?;
                o.flush()?;
                std::process::exit(0);
            }
            "crash" => {
                callbacks.message("mock: about to crash")?.ok();
                cfg.log("crash");
                std::process::exit(101);
            }
            "slow" => std::thread::sleep(std::time::Duration::from_secs(11)),
            "absent" | "absent-skip" | "absent-then-inserted" => {
                let mut msg = format!("Please insert YubiKey with serial {serial_s}");
                loop {
                    cfg.log("confirm");
                    match callbacks.confirm(
                        &msg,
                        "YubiKey is plugged in",
                        Some("Skip this YubiKey"),
                    )? {
                        Ok(true) if script == "absent-then-inserted" => break,
                        Ok(true) => {
                            msg = format!(
                                "Could not open YubiKey. Please insert YubiKey with serial {serial_s}"
                            );
                        }
                        Ok(false) => return Ok(out),
                        Err(_) => {
                            callbacks
                                .error(identity::Error::Identity {
                                    index,
                                    message: format!(
                                        "Could not open YubiKey with serial {serial_s}"
                                    ),
                                })?
                                .ok();
                            return Ok(out);
                        }
                    }
                }
            }
            _ => {}
        }
        let needs_pin = matches!(script.as_str(), "pin" | "pin-always" | "wrong-pin");
        if needs_pin {
            let expected = if script == "wrong-pin" {
                None
            } else {
                cfg.get("pin").map(str::to_owned)
            };
            let mut prefix = String::new();
            let pin = loop {
                cfg.log("pin-request");
                match callbacks.request_secret(&format!(
                    "{prefix}Enter PIN for YubiKey with serial {serial_s}"
                ))? {
                    Ok(pin) => {
                        let len = pin.expose_secret().len();
                        if len < 6 {
                            prefix = "PIN was too short. ".to_owned();
                        } else if len > 8 {
                            prefix = "PIN was too long. ".to_owned();
                        } else {
                            break pin;
                        }
                    }
                    Err(_) => {
                        callbacks
                            .error(identity::Error::Identity {
                                index,
                                message: format!(
                                    "A PIN is required for YubiKey with serial {serial_s}"
                                ),
                            })?
                            .ok();
                        return Ok(out);
                    }
                }
            };
            let tries = cfg.tries();
            if tries == 0 {
                callbacks
                    .error(identity::Error::Identity {
                        index,
                        message: format!("PIN locked{FOOTER}"),
                    })?
                    .ok();
                return Ok(out);
            }
            if expected.as_deref() != Some(pin.expose_secret()) {
                cfg.log("pin-wrong");
                let left = tries - 1;
                cfg.set_tries(left);
                let message = if left == 0 {
                    format!("PIN locked{FOOTER}")
                } else {
                    let word = if left == 1 { "try" } else { "tries" };
                    format!(
                        "Invalid PIN ({} {word} remaining before it is blocked){FOOTER}",
                        isolate(left)
                    )
                };
                callbacks
                    .error(identity::Error::Identity { index, message })?
                    .ok();
                return Ok(out);
            }
            cfg.set_tries(3);
            cfg.log("pin-ok");
        }
        for (n, (file, stanza)) in candidates.into_iter().enumerate() {
            if script == "pin-always" && n > 0 {
                callbacks
                    .error(identity::Error::Stanza {
                        file_index: file,
                        stanza_index: 0,
                        message: "Failed to decrypt YubiKey stanza".to_owned(),
                    })?
                    .ok();
                continue;
            }
            match card.unwrap(stanza) {
                Some(Ok(key)) => {
                    cfg.log(&format!("unwrap {file}"));
                    out.insert(file, Ok(key));
                }
                _ => {
                    out.insert(
                        file,
                        Err(vec![identity::Error::Stanza {
                            file_index: file,
                            stanza_index: 0,
                            message: "Failed to decrypt YubiKey stanza".to_owned(),
                        }]),
                    );
                }
            }
        }
        Ok(out)
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(sm) = args.iter().find_map(|a| a.strip_prefix("--age-plugin=")) {
        return run_state_machine(sm, Handler);
    }
    let cfg = Config::load();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("age-plugin-yubikey 0.5.1 (keypack test mock)");
            Ok(())
        }
        Some("--identity") => match cfg.card() {
            Some(card) => {
                print!(
                    "{}",
                    card.identity_file(
                        "Never (A PIN is NOT required to decrypt)",
                        "Never  (A physical touch is NOT required to decrypt)"
                    )
                );
                Ok(())
            }
            None => Err(io::Error::other("mock: no card configured")),
        },
        Some("--list") | Some("--list-all") => {
            if let Some(card) = cfg.card() {
                println!(
                    "#       Serial: {}, Slot: {}\n{}",
                    card.serial,
                    card.slot.wrapping_sub(0x81),
                    card.recipient_string()
                );
            }
            Ok(())
        }
        _ => {
            eprintln!("age-plugin-yubikey (keypack test mock): use --age-plugin=identity-v1");
            std::process::exit(2);
        }
    }
}
