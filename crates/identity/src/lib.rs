//! Age identities for keypack: discovery, X25519 and plugin (YubiKey) identities, batched
//! unwraps, PIN callbacks.
//!
//! Where it sits: between the identity file the operator holds and the encrypted age files
//! of a build (sops data keys, plain `.age` keys). In: an identity file path and
//! [`AgeFile`]s; out: each file's plaintext as a [`SecretSlice<u8>`], or an
//! [`IdentityError`] naming the file.
//!
//! What it does not do: parse sops (that is `keypack-sops`; this crate only sees the age
//! files inside it), encrypt, talk PC/SC itself (the YubiKey is reached only through the
//! `age-plugin-yubikey` binary on `PATH`, as rage and sops do), or read a secret from argv or
//! an environment value (`SOPS_AGE_KEY` is deliberately ignored; only file *paths* come
//! from the environment).
//!
//! Reference: `age` 0.12.1 / `age-core` 0.12.0, C2SP age-plugin (identity-v1),
//! age-plugin-yubikey 0.5.1 (stub format, message texts).
//!
//! Why our own plugin session instead of `age::IdentityFile::into_identities`: the `age`
//! crate starts one plugin process per file, so a host plus two users means three card
//! openings and, with PIN policy "always", three PIN prompts. [`IdentitySet::decrypt_batch`]
//! sends every file's stanzas in one `identity-v1` session (`recipient-stanza N …`), then
//! decrypts each payload with the returned file key through `age` itself (header MAC and
//! STREAM checks unchanged). When the card needs the PIN again in a later session (PIN
//! policy "always" allows one operation per verification, so the plugin fails the second
//! unwrap of a session), the PIN entered once is re-served from zeroized memory
//! ([`secrecy::SecretString`]) for the rest of the build, and dropped on a wrong PIN.
//!
//! PIN sources, in order: `KEYPACK_PIN_FD` (tests and automation only; a descriptor
//! number, never the PIN), pinentry (`PINENTRY_PROGRAM` or `pinentry` on `PATH`), the
//! terminal without echo. With none of them the decrypt fails with
//! [`IdentityError::PinRequired`] instead of hanging.

#![forbid(unsafe_code)]

mod agefile;
mod error;
mod file;
mod prompt;
mod session;
pub mod ui;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{SecretSlice, SecretString};

pub use error::IdentityError;
pub use file::{
    MAX_IDENTITY_FILE_SIZE, YubiKeyStub, decode_yubikey_stub, yubikey_recipient_from_point,
    yubikey_recipient_tag,
};
pub use prompt::{
    NO_PROMPT_ENV, PIN_FD_ENV, PassphraseError, new_passphrase, new_passphrase_with_answers,
    passphrase,
};

use agefile::{KnownKey, OwnedStanza};
use file::PluginIdentity;
use prompt::Prompter;
use session::{SessionCtx, Unit};
use ui::MessageSink;

/// Environment variable naming the identity file (a path, not a key).
pub const IDENTITY_ENV: &str = "KEYPACK_IDENTITY";
/// sops' variable naming the identity file (a path, not a key).
pub const SOPS_AGE_KEY_FILE_ENV: &str = "SOPS_AGE_KEY_FILE";

/// One encrypted age file of a build.
///
/// `alternatives` are complete age files (armored or binary) that all carry the same
/// plaintext; the first one that decrypts wins. A sops file gives one per age recipient;
/// a plain `.age` file gives one.
pub struct AgeFile<'a> {
    /// Names the file in errors (a repo path, `hosts/h.yaml`, …).
    pub label: String,
    /// Equivalent encryptions of the same plaintext.
    pub alternatives: Vec<&'a [u8]>,
}

/// The identities of one identity file, and the PIN state of one build.
pub struct IdentitySet {
    x25519: Vec<age::x25519::Identity>,
    plugins: Vec<PluginIdentity>,
    pin_cache: Mutex<Option<SecretString>>,
    prompter: Prompter,
    plugin_path: Option<OsString>,
    sink: MessageSink,
    touch_after: Duration,
}

impl std::fmt::Debug for IdentitySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySet")
            .field("x25519", &self.x25519.len())
            .field("plugins", &self.plugins.len())
            .finish_non_exhaustive()
    }
}

/// The default identity file sops uses: `$XDG_CONFIG_HOME/sops/age/keys.txt`, else
/// `~/.config/sops/age/keys.txt`.
pub fn default_sops_keys_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("sops/age/keys.txt"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/sops/age/keys.txt"))
}

impl IdentitySet {
    /// Find and load the identity file: `explicit` (`--identity`), then `KEYPACK_IDENTITY`,
    /// `SOPS_AGE_KEY_FILE`, then sops' default `~/.config/sops/age/keys.txt`.
    ///
    /// Returns the set and the path it came from.
    pub fn discover(explicit: Option<&Path>) -> Result<(IdentitySet, PathBuf), IdentityError> {
        if let Some(p) = explicit {
            return Ok((Self::from_file(p)?, p.to_owned()));
        }
        let mut looked_in = Vec::new();
        for var in [IDENTITY_ENV, SOPS_AGE_KEY_FILE_ENV] {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                // A variable that is set names the file to use: an error there is reported,
                // not skipped.
                let p = PathBuf::from(v);
                return Ok((Self::from_file(&p)?, p));
            }
        }
        if let Some(p) = default_sops_keys_path() {
            if p.exists() {
                return Ok((Self::from_file(&p)?, p));
            }
            looked_in.push(p);
        }
        Err(IdentityError::NotFound { looked_in })
    }

    /// Load an identity file.
    pub fn from_file(path: &Path) -> Result<IdentitySet, IdentityError> {
        let text = file::read_identity_file(path)?;
        let parsed = file::parse(path, &text)?;
        Ok(IdentitySet {
            x25519: parsed.x25519,
            plugins: parsed.plugins,
            pin_cache: Mutex::new(None),
            prompter: Prompter::from_env(),
            plugin_path: None,
            sink: ui::stderr_sink(),
            touch_after: Duration::from_secs(10),
        })
    }

    /// Send user messages (plugin messages, "touch your YubiKey") somewhere else than
    /// stderr.
    pub fn set_message_sink(&mut self, sink: MessageSink) {
        self.sink = sink;
    }

    /// Look for plugin binaries in this `PATH`-style list instead of the process's `PATH`.
    pub fn set_plugin_path(&mut self, path: impl Into<OsString>) {
        self.plugin_path = Some(path.into());
    }

    /// Test and automation only: read PINs and confirmations from `answers`, one per line
    /// (what `KEYPACK_PIN_FD` does with a descriptor).
    pub fn set_answers(&mut self, answers: Box<dyn Read + Send>) {
        self.prompter = Prompter::lines(answers);
    }

    /// Never ask anything (a PIN request then fails with [`IdentityError::PinRequired`]).
    pub fn set_no_prompt(&mut self) {
        self.prompter = Prompter::None;
    }

    /// How long a plugin session may stay silent before "Touch your YubiKey" is shown
    /// (default 10 s, as age's own "Waiting for…" message).
    pub fn set_touch_after(&mut self, after: Duration) {
        self.touch_after = after;
    }

    /// Public recipients of the identities held (`age1…`, `age1yubikey1…` when the identity
    /// file says it, else a description of the YubiKey stub).
    pub fn recipients(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .x25519
            .iter()
            .map(|i| i.to_public().to_string())
            .collect();
        out.extend(self.plugins.iter().map(|p| match &p.recipient {
            Some(r) => r.clone(),
            None => p.describe(),
        }));
        out
    }

    /// The YubiKey stubs held (serial, slot, tag), for `keypack doctor` and messages.
    pub fn yubikey_stubs(&self) -> Vec<YubiKeyStub> {
        self.plugins.iter().filter_map(|p| p.stub).collect()
    }

    /// Whether any identity needs a plugin binary.
    pub fn has_plugin_identities(&self) -> bool {
        !self.plugins.is_empty()
    }

    /// How many files of the batch need a plugin (YubiKey) unwrap: each is one card
    /// operation (a touch with touch policy "always").
    pub fn plugin_operations(&self, files: &[AgeFile]) -> usize {
        files
            .iter()
            .filter(|f| {
                let headers: Vec<Vec<OwnedStanza>> = f
                    .alternatives
                    .iter()
                    .filter_map(|a| agefile::stanzas(&f.label, a).ok())
                    .collect();
                if headers.iter().any(|h| self.x25519_matches(h)) {
                    return false;
                }
                headers.iter().any(|h| {
                    self.plugins
                        .iter()
                        .any(|p| h.iter().any(|s| plugin_matches(p, s)))
                })
            })
            .count()
    }

    /// Whether an identity held matches a stanza of the file, judged from the headers alone
    /// (X25519: a real unwrap; YubiKey: the stub's tag; no plugin is started).
    pub fn can_decrypt(&self, file: &AgeFile) -> bool {
        file.alternatives.iter().any(|a| {
            agefile::stanzas(&file.label, a).is_ok_and(|h| {
                self.x25519_matches(&h)
                    || self
                        .plugins
                        .iter()
                        .any(|p| h.iter().any(|s| plugin_matches(p, s)))
            })
        })
    }

    fn x25519_matches(&self, stanzas: &[OwnedStanza]) -> bool {
        let owned: Vec<_> = stanzas.iter().map(OwnedStanza::to_stanza).collect();
        self.x25519
            .iter()
            .any(|id| matches!(age::Identity::unwrap_stanzas(id, &owned), Some(Ok(_))))
    }

    /// Decrypt every file, with as few plugin sessions as possible and at most one PIN
    /// entry for the build (unless the PIN was wrong: at most three asks per call).
    ///
    /// Results are in the order of `files`.
    pub fn decrypt_batch(&self, files: &[AgeFile]) -> Vec<Result<SecretSlice<u8>, IdentityError>> {
        let mut results: Vec<Option<Result<SecretSlice<u8>, IdentityError>>> =
            files.iter().map(|_| None).collect();
        let mut errors: Vec<Option<IdentityError>> = files.iter().map(|_| None).collect();
        let mut headers: Vec<Vec<Option<Vec<OwnedStanza>>>> = Vec::with_capacity(files.len());

        // 1. Headers; X25519 identities need no plugin.
        let x_ids: Vec<&dyn age::Identity> = self
            .x25519
            .iter()
            .map(|i| i as &dyn age::Identity)
            .collect();
        for (i, f) in files.iter().enumerate() {
            let mut hs = Vec::with_capacity(f.alternatives.len());
            for alt in &f.alternatives {
                match agefile::stanzas(&f.label, alt) {
                    Ok(h) => {
                        if results[i].is_none() && self.x25519_matches(&h) {
                            match agefile::decrypt_with(&f.label, alt, &x_ids) {
                                Ok(Some(plain)) => results[i] = Some(Ok(plain)),
                                Ok(None) => {}
                                Err(e) => keep_worst(&mut errors[i], e),
                            }
                        }
                        hs.push(Some(h));
                    }
                    Err(e) => {
                        keep_worst(&mut errors[i], e);
                        hs.push(None);
                    }
                }
            }
            headers.push(hs);
        }

        // 2. Plugin identities, one batch per plugin binary.
        let mut by_plugin: BTreeMap<String, Vec<&PluginIdentity>> = BTreeMap::new();
        for p in &self.plugins {
            by_plugin.entry(p.binary()).or_default().push(p);
        }
        let mut ctx = SessionCtx {
            prompter: &self.prompter,
            pin_cache: &self.pin_cache,
            sink: &self.sink,
            pin_asks: 0,
            confirms: 0,
            touch_after: self.touch_after,
        };
        for (binary, ids) in &by_plugin {
            // (file index, alternative index) of every file this plugin can try.
            let units: Vec<(usize, usize)> = (0..files.len())
                .filter(|&i| results[i].is_none())
                .filter_map(|i| {
                    headers[i]
                        .iter()
                        .position(|h| {
                            h.as_ref().is_some_and(|h| {
                                h.iter().any(|s| ids.iter().any(|p| plugin_matches(p, s)))
                            })
                        })
                        .map(|a| (i, a))
                })
                .collect();
            if units.is_empty() {
                continue;
            }
            // Only absolute PATH entries: the plugin spec forbids finding a plugin in the
            // working directory (an empty or `.` entry).
            let search = self
                .plugin_path
                .clone()
                .or_else(|| std::env::var_os("PATH"))
                .unwrap_or_default();
            let search =
                std::env::join_paths(std::env::split_paths(&search).filter(|d| d.is_absolute()))
                    .unwrap_or_default();
            let found = which::which_in(binary, Some(search), "/");
            let path = match found {
                Ok(p) => p,
                Err(_) => {
                    for &(i, _) in &units {
                        keep_worst(
                            &mut errors[i],
                            IdentityError::PluginMissing {
                                file: files[i].label.clone(),
                                binary: binary.clone(),
                            },
                        );
                    }
                    continue;
                }
            };
            let id_strings: Vec<String> = ids.iter().map(|p| p.identity.to_string()).collect();
            let serials: Vec<u32> = ids
                .iter()
                .filter_map(|p| p.stub.map(|s| s.serial))
                .collect();
            let mut remaining: Vec<usize> = (0..units.len()).collect();
            let mut sessions = 0usize;
            while !remaining.is_empty() && sessions < units.len() + 3 {
                sessions += 1;
                let batch: Vec<Unit<'_>> = remaining
                    .iter()
                    .map(|&u| {
                        let (i, a) = units[u];
                        Unit {
                            label: &files[i].label,
                            stanzas: headers[i][a].as_deref().unwrap_or(&[]),
                        }
                    })
                    .collect();
                let outcome = session::run(&path, binary, &id_strings, &serials, &batch, &mut ctx);
                let mut progress = false;
                let mut wrong_pin = false;
                let mut next = Vec::new();
                for (b, &u) in remaining.iter().enumerate() {
                    let (i, a) = units[u];
                    let label = &files[i].label;
                    if let Some(key) = outcome.keys.get(&b) {
                        let known = KnownKey(key.clone());
                        match agefile::decrypt_with(
                            label,
                            files[i].alternatives[a],
                            &[&known as &dyn age::Identity],
                        ) {
                            Ok(Some(plain)) => {
                                results[i] = Some(Ok(plain));
                                progress = true;
                            }
                            Ok(None) => keep_worst(
                                &mut errors[i],
                                IdentityError::DecryptFailed {
                                    file: label.clone(),
                                },
                            ),
                            Err(e) => keep_worst(&mut errors[i], e),
                        }
                        continue;
                    }
                    for e in outcome.unit_errors.get(&b).into_iter().flatten() {
                        wrong_pin |= e.is_wrong_pin();
                        keep_worst(&mut errors[i], e.for_file(label));
                    }
                    for e in &outcome.global_errors {
                        wrong_pin |= e.is_wrong_pin();
                        keep_worst(&mut errors[i], e.for_file(label));
                    }
                    next.push(u);
                }
                remaining = next;
                if remaining.is_empty() {
                    break;
                }
                let retry = if wrong_pin {
                    ctx.pin_asks < session::MAX_PIN_ASKS
                } else {
                    // PIN policy "always": the card allowed one unwrap for this session's PIN;
                    // a new session re-serves the kept PIN for the next one.
                    progress
                };
                if !retry {
                    break;
                }
            }
        }

        // 3. Whatever is left.
        let held = self.recipients();
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => r,
                None => Err(errors[i].take().unwrap_or_else(|| {
                    let mut recipients: Vec<String> = headers[i]
                        .iter()
                        .flatten()
                        .flatten()
                        .filter(|s| !s.tag.ends_with("-grease"))
                        .map(OwnedStanza::describe)
                        .collect();
                    recipients.sort();
                    recipients.dedup();
                    IdentityError::NoMatchingIdentity {
                        file: files[i].label.clone(),
                        recipients,
                        held: held.clone(),
                    }
                })),
            })
            .collect()
    }
}

/// Whether a stanza could be unwrapped by this plugin identity.
fn plugin_matches(p: &PluginIdentity, s: &OwnedStanza) -> bool {
    match &p.stub {
        Some(stub) => {
            use base64::Engine;
            s.tag == "piv-p256"
                && s.args.first().is_some_and(|t| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(t)
                        .is_ok_and(|t| t == stub.tag)
                })
        }
        None => !matches!(s.tag.as_str(), "X25519" | "scrypt" | "mlkem768x25519"),
    }
}

fn keep_worst(slot: &mut Option<IdentityError>, e: IdentityError) {
    match slot {
        Some(old) if old.rank() > e.rank() => {}
        _ => *slot = Some(e),
    }
}
