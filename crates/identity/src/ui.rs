//! User-facing text: cleaning plugin messages, mapping them to error variants, and the
//! "touch your YubiKey" timer.
//!
//! Plugins speak Fluent-localised text with U+2068/U+2069 isolation marks and
//! age-plugin-yubikey appends a "[ Did this not do what you expected? … ]" footer. Both
//! are removed here, once, before anything is shown or classified. Classification by text
//! happens only at this boundary (the plugin protocol carries nothing but text); everything
//! after it matches on [`IdentityError`] variants.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::IdentityError;

/// Where messages for the user go (stderr by default).
pub type MessageSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The default sink: one line on stderr, prefixed with `keypack: `.
pub fn stderr_sink() -> MessageSink {
    Arc::new(|msg: &str| eprintln!("keypack: {msg}"))
}

/// Remove isolation marks, the age-plugin-yubikey feedback footer and surrounding blank
/// space from plugin text.
pub fn clean_plugin_text(text: &str) -> String {
    let no_marks: String = text
        .chars()
        .filter(|c| !matches!(c, '\u{2068}' | '\u{2069}'))
        .collect();
    let out: Vec<&str> = no_marks
        .lines()
        .filter(|line| {
            let t = line.trim();
            !(t.starts_with("[ Did this not do what you expected") || t.starts_with("[ Tell us"))
        })
        .collect();
    out.join("\n").trim().to_owned()
}

/// Map a cleaned plugin error message to the most specific error variant.
pub(crate) fn classify_plugin_error(
    file: &str,
    binary: &str,
    serial: Option<u32>,
    message: &str,
) -> IdentityError {
    let file = file.to_owned();
    let lower = message.to_ascii_lowercase();
    if lower.contains("pin locked")
        || lower.contains("pin blocked")
        || lower.contains("pin is blocked")
    {
        return IdentityError::PinBlocked { file, serial };
    }
    if let Some(pos) = lower.find("invalid pin") {
        let tries_left = lower[pos..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|n| n.parse().ok());
        if tries_left == Some(0) {
            return IdentityError::PinBlocked { file, serial };
        }
        return IdentityError::WrongPin {
            file,
            serial,
            tries_left,
        };
    }
    if lower.contains("a pin is required") {
        return IdentityError::PinRequired { file, serial };
    }
    if lower.contains("could not open yubikey")
        || lower.contains("could not find yubikey")
        || lower.contains("timed out while waiting for yubikey")
        || lower.contains("pcscd is not running")
    {
        return IdentityError::YubiKeyAbsent {
            file,
            serial,
            message: message.to_owned(),
        };
    }
    IdentityError::Plugin {
        file,
        binary: binary.to_owned(),
        message: message.to_owned(),
    }
}

/// Prints "Touch your YubiKey…" when a plugin session has been silent for 10 seconds.
///
/// `poke` restarts the countdown (after a PIN entry the user had their own time); dropping
/// the guard stops it.
pub(crate) struct TouchTimer {
    tx: mpsc::Sender<bool>,
}

impl TouchTimer {
    pub(crate) fn start(sink: MessageSink, message: String, after: Duration) -> TouchTimer {
        let (tx, rx) = mpsc::channel::<bool>();
        thread::spawn(move || {
            let mut shown = false;
            loop {
                match rx.recv_timeout(after) {
                    Ok(true) => shown = false,
                    Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if !shown {
                            sink(&message);
                            shown = true;
                        }
                    }
                }
            }
        });
        TouchTimer { tx }
    }

    pub(crate) fn poke(&self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for TouchTimer {
    fn drop(&mut self) {
        let _ = self.tx.send(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_marks_and_footer() {
        let raw = "Invalid PIN (\u{2068}1\u{2069} try remaining before it is blocked)\n\n[ Did this not do what you expected? Could an error be more useful? ]\n[ Tell us: https://str4d.xyz/age-plugin-yubikey/report            ]\n";
        assert_eq!(
            clean_plugin_text(raw),
            "Invalid PIN (1 try remaining before it is blocked)"
        );
    }

    #[test]
    fn classifies() {
        let e = classify_plugin_error(
            "f",
            "age-plugin-yubikey",
            Some(7),
            "Invalid PIN (2 tries remaining before it is blocked)",
        );
        assert!(matches!(
            e,
            IdentityError::WrongPin {
                tries_left: Some(2),
                serial: Some(7),
                ..
            }
        ));
        let e = classify_plugin_error("f", "b", None, "PIN locked");
        assert!(matches!(e, IdentityError::PinBlocked { .. }));
        let e = classify_plugin_error("f", "b", None, "Could not open YubiKey with serial 1");
        assert!(matches!(e, IdentityError::YubiKeyAbsent { .. }));
        let e = classify_plugin_error(
            "f",
            "b",
            None,
            "A PIN is required for YubiKey with serial 1",
        );
        assert!(matches!(e, IdentityError::PinRequired { .. }));
        let e = classify_plugin_error("f", "b", None, "something else");
        assert!(matches!(e, IdentityError::Plugin { .. }));
    }
}
