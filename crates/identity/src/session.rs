//! One `identity-v1` session with a plugin binary, carrying every file of a batch.
//!
//! Spoken with `age_core::plugin::Connection`, as `age::plugin::IdentityPluginV1` does, but
//! with one `recipient-stanza <file_index> …` group per file instead of one file per
//! process: age-plugin-yubikey then opens the card once, asks for the PIN once and unwraps
//! every file (C2SP age-plugin, "identity-v1"). The callbacks (PIN, confirm, messages) are
//! served from [`SessionCtx`], which bounds PIN asks and confirmations and re-serves a PIN
//! kept from an earlier session of the same build.
//!
//! Does not: retry (the caller decides), or decrypt payloads (see `agefile`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::IdentityError;
use crate::agefile::OwnedStanza;
use crate::prompt::Prompter;
use crate::ui::{self, MessageSink, TouchTimer};

/// Most PIN asks per `decrypt_batch` call.
pub(crate) const MAX_PIN_ASKS: u32 = 3;
/// Most confirmations answered per `decrypt_batch` call.
pub(crate) const MAX_CONFIRMS: u32 = 2;

/// Mutable state shared by the sessions of one `decrypt_batch` call.
pub(crate) struct SessionCtx<'a> {
    pub(crate) prompter: &'a Prompter,
    pub(crate) pin_cache: &'a Mutex<Option<SecretString>>,
    pub(crate) sink: &'a MessageSink,
    pub(crate) pin_asks: u32,
    pub(crate) confirms: u32,
    pub(crate) touch_after: Duration,
}

/// What one session produced.
pub(crate) struct Outcome {
    /// unit index → file key.
    pub(crate) keys: HashMap<usize, Zeroizing<[u8; 16]>>,
    /// unit index → errors about that unit.
    pub(crate) unit_errors: HashMap<usize, Vec<IdentityError>>,
    /// Errors about an identity or the plugin itself (apply to every unit without a key).
    pub(crate) global_errors: Vec<IdentityError>,
}

pub(crate) struct Unit<'a> {
    pub(crate) label: &'a str,
    pub(crate) stanzas: &'a [OwnedStanza],
}

/// Run one session. `identities` are the plugin identity strings; `serials` the YubiKey
/// serials they name (for messages).
pub(crate) fn run(
    binary_path: &Path,
    binary: &str,
    identities: &[String],
    serials: &[u32],
    units: &[Unit<'_>],
    ctx: &mut SessionCtx<'_>,
) -> Outcome {
    let mut outcome = Outcome {
        keys: HashMap::new(),
        unit_errors: HashMap::new(),
        global_errors: Vec::new(),
    };
    let serial_for = |i: usize| serials.get(i).copied().or(serials.first().copied());
    let label0 = units.first().map(|u| u.label).unwrap_or("");
    let failed = |reason: String| IdentityError::PluginFailed {
        file: label0.to_owned(),
        binary: binary.to_owned(),
        reason,
    };

    if std::env::var_os("AGEDEBUG").is_some_and(|v| v == "plugin") {
        (ctx.sink)(
            "warning: AGEDEBUG=plugin is set: the plugin protocol, PIN included, is echoed to stderr",
        );
    }
    let mut conn = match age_core::plugin::Connection::open(binary_path, "identity-v1") {
        Ok(c) => c,
        Err(e) => {
            outcome
                .global_errors
                .push(failed(format!("could not start it: {}", e.kind())));
            return outcome;
        }
    };

    let touch_msg = if serials.is_empty() {
        format!("Waiting for {binary}; touch your security key if it is blinking")
    } else {
        let list = serials
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!("Touch your YubiKey (serial {list}) if it is blinking")
    };
    let timer = TouchTimer::start(ctx.sink.clone(), touch_msg, ctx.touch_after);

    // Phase 1: identities and every file's stanzas.
    let sent = conn.unidir_send(|mut phase| {
        for id in identities {
            phase.send("add-identity", &[id.as_str()], &[])?;
        }
        for (index, unit) in units.iter().enumerate() {
            let index = index.to_string();
            for stanza in unit.stanzas {
                phase.send_stanza("recipient-stanza", &[index.as_str()], &stanza.to_stanza())?;
            }
        }
        Ok(())
    });
    if let Err(e) = sent {
        outcome.global_errors.push(failed(format!(
            "it stopped while receiving the files ({})",
            e.kind()
        )));
        return outcome;
    }

    // Phase 2: serve the plugin.
    let mut served_cached = false;
    let mut keys: HashMap<usize, Zeroizing<[u8; 16]>> = HashMap::new();
    let mut unit_errors: HashMap<usize, Vec<IdentityError>> = HashMap::new();
    let mut global_errors: Vec<IdentityError> = Vec::new();
    let result = conn.bidir_receive(
        &[
            "msg",
            "confirm",
            "request-public",
            "request-secret",
            "file-key",
            "error",
        ],
        |command, reply| match command.tag.as_str() {
            "msg" => {
                let text = ui::clean_plugin_text(&String::from_utf8_lossy(&command.body));
                if !text.is_empty() {
                    (ctx.sink)(&text);
                }
                reply.ok(None)
            }
            "confirm" => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
                let decode = |s: &String| {
                    b64.decode(s)
                        .ok()
                        .map(|v| ui::clean_plugin_text(&String::from_utf8_lossy(&v)))
                };
                let yes = command.args.first().and_then(decode);
                let no = command.args.get(1).and_then(decode);
                let message = ui::clean_plugin_text(&String::from_utf8_lossy(&command.body));
                match yes {
                    Some(yes) if ctx.confirms < MAX_CONFIRMS => {
                        ctx.confirms += 1;
                        if !ctx.prompter.shows_questions() {
                            (ctx.sink)(&message);
                        }
                        let answer = ctx.prompter.confirm(&message, &yes, no.as_deref());
                        timer.poke();
                        match answer {
                            Some(true) => reply.ok_with_metadata(&["yes"], None),
                            Some(false) => reply.ok_with_metadata(&["no"], None),
                            None => reply.fail(),
                        }
                    }
                    _ => reply.fail(),
                }
            }
            "request-public" => reply.fail(),
            "request-secret" => {
                let description = ui::clean_plugin_text(&String::from_utf8_lossy(&command.body));
                let cached = if served_cached {
                    None
                } else {
                    ctx.pin_cache.lock().ok().and_then(|c| {
                        c.as_ref()
                            .map(|p| SecretString::from(String::from(p.expose_secret())))
                    })
                };
                let pin = match cached {
                    Some(pin) => {
                        served_cached = true;
                        Some(pin)
                    }
                    None if ctx.pin_asks < MAX_PIN_ASKS => {
                        ctx.pin_asks += 1;
                        let pin = ctx.prompter.pin(&description);
                        timer.poke();
                        if let (Some(p), Ok(mut cache)) = (&pin, ctx.pin_cache.lock()) {
                            *cache = Some(SecretString::from(String::from(p.expose_secret())));
                            served_cached = true;
                        }
                        pin
                    }
                    None => None,
                };
                match pin {
                    Some(pin) => reply.ok(Some(pin.expose_secret().as_bytes())),
                    None => reply.fail(),
                }
            }
            "file-key" => {
                let index = command.args.first().and_then(|i| i.parse::<usize>().ok());
                match index {
                    Some(i)
                        if i < units.len()
                            && command.body.len() == 16
                            && !keys.contains_key(&i) =>
                    {
                        let mut k = Zeroizing::new([0u8; 16]);
                        k.copy_from_slice(&command.body);
                        keys.insert(i, k);
                        reply.ok(None)
                    }
                    _ => reply.fail(),
                }
            }
            "error" => {
                let message = ui::clean_plugin_text(&String::from_utf8_lossy(&command.body));
                match command.args.first().map(String::as_str) {
                    Some("identity") => {
                        let idx = command.args.get(1).and_then(|i| i.parse::<usize>().ok());
                        let serial = idx.and_then(serial_for);
                        global_errors
                            .push(ui::classify_plugin_error(label0, binary, serial, &message));
                    }
                    Some("stanza") => {
                        let file = command.args.get(1).and_then(|i| i.parse::<usize>().ok());
                        match file.filter(|f| *f < units.len()) {
                            Some(f) => {
                                unit_errors
                                    .entry(f)
                                    .or_default()
                                    .push(ui::classify_plugin_error(
                                        units[f].label,
                                        binary,
                                        serials.first().copied(),
                                        &message,
                                    ))
                            }
                            None => global_errors
                                .push(ui::classify_plugin_error(label0, binary, None, &message)),
                        }
                    }
                    _ => global_errors.push(ui::classify_plugin_error(
                        label0,
                        binary,
                        serials.first().copied(),
                        &message,
                    )),
                }
                reply.ok(None)
            }
            _ => reply.fail(),
        },
    );
    drop(timer);
    if let Err(e) = result {
        let reason = match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "it exited in the middle of the protocol".to_owned()
            }
            std::io::ErrorKind::InvalidData => "it sent a malformed protocol message".to_owned(),
            kind => format!("protocol I/O error ({kind})"),
        };
        global_errors.push(failed(reason));
    }
    // Wrong PINs must not be re-served.
    if global_errors
        .iter()
        .chain(unit_errors.values().flatten())
        .any(|e| {
            matches!(
                e,
                IdentityError::WrongPin { .. } | IdentityError::PinBlocked { .. }
            )
        })
        && let Ok(mut cache) = ctx.pin_cache.lock()
    {
        *cache = None;
    }
    outcome.keys = keys;
    outcome.unit_errors = unit_errors;
    outcome.global_errors = global_errors;
    outcome
}
