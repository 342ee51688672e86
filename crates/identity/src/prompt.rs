//! Asking the user for a PIN or a yes/no answer, from exactly one source.
//!
//! Order: `KEYPACK_PIN_FD` (test/automation only: an inherited file descriptor, one answer
//! per line), else pinentry (`PINENTRY_PROGRAM`, or `pinentry` on `PATH`), else the
//! controlling terminal without echo (`/dev/tty`, via rpassword), else nothing — the caller
//! then fails cleanly instead of hanging. A PIN is never read from an environment *value*
//! or from argv: `KEYPACK_PIN_FD` holds only a descriptor number.
//!
//! PINs come back as [`SecretString`] built with an exact-size allocation, so no resized
//! copy is left behind; the line buffer is zeroized.
//!
//! The sealing passphrase (`--seal passphrase`) is asked by the same code ([`new_passphrase`]
//! asks twice and compares, [`passphrase`] once), so it has the same sources and the same
//! guarantees: never argv, never an environment value.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use secrecy::SecretString;
use zeroize::Zeroizing;

/// Environment variable naming a file descriptor to read PINs and confirmations from.
///
/// Test and automation use only: each PIN request reads one line (the PIN); each
/// confirmation reads one line (`y`/`yes`, `n`/`no`/`skip`, or `wait:N` = yes after N
/// seconds). End of input = no answer.
pub const PIN_FD_ENV: &str = "KEYPACK_PIN_FD";

/// Environment variable that, when `1`, disables the terminal and pinentry (for tests that
/// must prove keypack does not hang without a way to ask).
pub const NO_PROMPT_ENV: &str = "KEYPACK_NO_PROMPT";

const MAX_LINE: usize = 256;

/// The `KEYPACK_PIN_FD` reader, opened once per process: a PIN prompt and a passphrase prompt
/// then read successive lines (a reopened `/dev/fd/N` of a regular file would start over).
type SharedLines = Arc<Mutex<Box<dyn Read + Send>>>;
static PIN_FD_LINES: OnceLock<Option<SharedLines>> = OnceLock::new();

pub(crate) enum Prompter {
    /// Read answers line by line (an inherited descriptor, or a reader given by the embedder).
    Lines(SharedLines),
    /// pinentry if available, else the terminal.
    Interactive,
    /// No way to ask.
    None,
}

impl Prompter {
    pub(crate) fn from_env() -> Prompter {
        if let Some(fd) = std::env::var_os(PIN_FD_ENV) {
            let shared = PIN_FD_LINES.get_or_init(|| {
                let fd = fd.to_string_lossy().trim().to_owned();
                if !fd.is_empty()
                    && fd.bytes().all(|b| b.is_ascii_digit())
                    && let Ok(f) = File::open(format!("/dev/fd/{fd}"))
                {
                    let reader: Box<dyn Read + Send> = Box::new(f);
                    return Some(Arc::new(Mutex::new(reader)));
                }
                None
            });
            return match shared {
                Some(lines) => Prompter::Lines(Arc::clone(lines)),
                None => Prompter::None,
            };
        }
        if std::env::var_os(NO_PROMPT_ENV).is_some_and(|v| v == "1") {
            return Prompter::None;
        }
        Prompter::Interactive
    }

    /// Whether [`Prompter::confirm`] shows the question itself (on the terminal), so the
    /// caller need not print it too.
    pub(crate) fn shows_questions(&self) -> bool {
        matches!(self, Prompter::Interactive) && has_tty()
    }

    /// A prompter reading answers from `answers`, one per line.
    pub(crate) fn lines(answers: Box<dyn Read + Send>) -> Prompter {
        Prompter::Lines(Arc::new(Mutex::new(answers)))
    }

    /// Ask for a PIN. `None` when there is no way to ask or the user cancelled.
    pub(crate) fn pin(&self, description: &str) -> Option<SecretString> {
        self.secret(description, "PIN")
    }

    /// Ask for a secret (`label`: pinentry's prompt, "PIN" or "Passphrase").
    fn secret(&self, description: &str, label: &str) -> Option<SecretString> {
        match self {
            Prompter::None => None,
            Prompter::Lines(f) => {
                let mut f = f.lock().ok()?;
                let line = read_line(&mut **f)?;
                secret_from_bytes(&line)
            }
            Prompter::Interactive => {
                if let Some(input) = pinentry_program()
                    .and_then(pinentry::PassphraseInput::with_binary)
                    .or_else(|| {
                        if std::env::var_os("PINENTRY_PROGRAM").is_none() {
                            pinentry::PassphraseInput::with_default_binary()
                        } else {
                            None
                        }
                    })
                {
                    let mut input = input;
                    input
                        .with_description(description)
                        .with_prompt(label)
                        .with_timeout(60);
                    if let Ok(pin) = input.interact() {
                        return Some(pin);
                    }
                    // pinentry failed (no display, cancelled): fall back to the terminal.
                }
                if !has_tty() {
                    return None;
                }
                let pin =
                    Zeroizing::new(rpassword::prompt_password(format!("{description}: ")).ok()?);
                if pin.is_empty() {
                    return None;
                }
                secret_from_bytes(pin.as_bytes())
            }
        }
    }

    /// Ask a yes/no question. `None` when there is no way to ask.
    pub(crate) fn confirm(&self, message: &str, yes: &str, no: Option<&str>) -> Option<bool> {
        match self {
            Prompter::None => None,
            Prompter::Lines(f) => {
                let mut f = f.lock().ok()?;
                let line = read_line(&mut **f)?;
                let answer = std::str::from_utf8(&line).ok()?.trim();
                // `wait:N` = "plugged in, after N seconds" (automation replugging a card).
                if let Some(secs) = answer.strip_prefix("wait:") {
                    let secs: u64 = secs.parse().ok()?;
                    std::thread::sleep(std::time::Duration::from_secs(secs.min(60)));
                    return Some(true);
                }
                match answer {
                    "y" | "yes" => Some(true),
                    "n" | "no" | "skip" => Some(false),
                    _ => None,
                }
            }
            Prompter::Interactive => {
                if has_tty() {
                    let mut tty = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/tty")
                        .ok()?;
                    let choices = match no {
                        Some(no) => format!("[Enter] {yes} / [s] {no}"),
                        None => format!("[Enter] {yes}"),
                    };
                    write!(tty, "{message}\n{choices}: ").ok()?;
                    tty.flush().ok()?;
                    let answer = read_line(&mut tty)?;
                    let answer = std::str::from_utf8(&answer)
                        .ok()?
                        .trim()
                        .to_ascii_lowercase();
                    return Some(!(no.is_some() && (answer == "s" || answer == "n")));
                }
                let dialog = pinentry_program()
                    .and_then(pinentry::ConfirmationDialog::with_binary)
                    .or_else(pinentry::ConfirmationDialog::with_default_binary);
                if let Some(mut dialog) = dialog {
                    dialog.with_ok(yes).with_timeout(60);
                    if let Some(no) = no {
                        dialog.with_cancel(no);
                    }
                    return dialog.confirm(message).ok();
                }
                None
            }
        }
    }
}

fn pinentry_program() -> Option<String> {
    std::env::var("PINENTRY_PROGRAM")
        .ok()
        .filter(|p| !p.is_empty())
}

fn has_tty() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map(|f| f.is_terminal())
        .unwrap_or(false)
}

/// Read one line (without the newline) byte by byte, so nothing past it is consumed.
/// `None` at end of input before any byte.
fn read_line(r: &mut (impl Read + ?Sized)) -> Option<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE));
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => {
                if line.is_empty() {
                    return None;
                }
                break;
            }
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                if line.len() == MAX_LINE {
                    return None;
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(line)
}

fn secret_from_bytes(bytes: &[u8]) -> Option<SecretString> {
    let s = std::str::from_utf8(bytes).ok()?;
    // `String::from(&str)` allocates exactly `len`, so `into_boxed_str` does not reallocate.
    Some(SecretString::from(String::from(s)))
}

/// Why no sealing passphrase was obtained. Never holds the passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseError {
    /// No pinentry, no terminal, no `KEYPACK_PIN_FD` (or the user cancelled).
    #[error(
        "no passphrase given (pinentry, the terminal or {PIN_FD_ENV}; never argv or the environment)"
    )]
    NotGiven,
    /// The two entries differ.
    #[error("the two passphrases do not match; nothing was written")]
    Mismatch,
    /// An empty passphrase.
    #[error("an empty passphrase seals nothing")]
    Empty,
}

/// Asks for a new passphrase twice (`--seal passphrase`) and returns it when both entries
/// match. `what` says what it protects ("sealed keys of host web1").
pub fn new_passphrase(what: &str) -> Result<SecretString, PassphraseError> {
    let prompter = Prompter::from_env();
    new_passphrase_from(&prompter, what)
}

/// [`new_passphrase`] with answers from `answers`, one per line (tests, embedders).
pub fn new_passphrase_with_answers(
    answers: Box<dyn Read + Send>,
    what: &str,
) -> Result<SecretString, PassphraseError> {
    new_passphrase_from(&Prompter::lines(answers), what)
}

fn new_passphrase_from(prompter: &Prompter, what: &str) -> Result<SecretString, PassphraseError> {
    use secrecy::ExposeSecret;
    let first = prompter
        .secret(&format!("New passphrase for the {what}"), "Passphrase")
        .ok_or(PassphraseError::NotGiven)?;
    if first.expose_secret().is_empty() {
        return Err(PassphraseError::Empty);
    }
    let second = prompter
        .secret(
            &format!("Repeat the passphrase for the {what}"),
            "Passphrase",
        )
        .ok_or(PassphraseError::NotGiven)?;
    if !constant_time_eq(
        first.expose_secret().as_bytes(),
        second.expose_secret().as_bytes(),
    ) {
        return Err(PassphraseError::Mismatch);
    }
    Ok(first)
}

/// Asks for an existing passphrase once (`keypack run` of a sealed build).
pub fn passphrase(what: &str) -> Result<SecretString, PassphraseError> {
    use secrecy::ExposeSecret;
    let p = Prompter::from_env()
        .secret(&format!("Passphrase for the {what}"), "Passphrase")
        .ok_or(PassphraseError::NotGiven)?;
    if p.expose_secret().is_empty() {
        return Err(PassphraseError::Empty);
    }
    Ok(p)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn answers(text: &'static str) -> Box<dyn Read + Send> {
        Box::new(text.as_bytes())
    }

    #[test]
    fn a_new_passphrase_is_asked_twice_and_must_match() {
        let p =
            new_passphrase_with_answers(answers("s3cret words\ns3cret words\n"), "keys").unwrap();
        assert_eq!(p.expose_secret(), "s3cret words");
        let e = new_passphrase_with_answers(answers("s3cret words\ns3cret wordz\n"), "keys")
            .unwrap_err();
        assert!(matches!(e, PassphraseError::Mismatch));
        assert!(!format!("{e} {e:?}").contains("s3cret"));
        assert!(matches!(
            new_passphrase_with_answers(answers("only once\n"), "keys"),
            Err(PassphraseError::NotGiven)
        ));
        assert!(matches!(
            new_passphrase_with_answers(answers("\n\n"), "keys"),
            Err(PassphraseError::Empty)
        ));
    }
}
