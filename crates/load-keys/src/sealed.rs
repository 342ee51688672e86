//! Sealed bundles (`keypack build --seal passphrase`): the initramfs holds the `.pub` files and
//! `keypack/sealed.age`, one age file (scrypt) with the private keys' tar. This module finds
//! the blob, gets the passphrase, decrypts in zeroized memory and hands back the private files,
//! which then take the same install path as injected files ([`crate::stage1`]).
//!
//! Where the passphrase comes from, first match wins:
//! 1. QEMU's firmware config, when the file is there (`keypack run` puts it at
//!    [`FW_CFG_PASSPHRASE`]; module `qemu_fw_cfg`). One try: nobody is there to retype it.
//! 2. `systemd-ask-password` (systemd stage 1; `--ask-password PATH`, an absolute path, run as a
//!    child with an empty environment): it reaches the console and Plymouth through systemd's
//!    password agents.
//! 3. The console (`/dev/console`, echo off) under the scripted stage 1 or a plain initrd.
//!
//! Three tries ([`TRIES`]), then no keys: the boot goes on and the console says so.
//!
//! Does **not** log the passphrase, pass it through argv or the environment, or write it or
//! the decrypted keys anywhere but the install path's files.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use keypack_layout::MAX_KEY_FILE_SIZE;
use zeroize::Zeroizing;

/// Where QEMU's `-fw_cfg name=opt/io.keypack.passphrase,…` shows up in the guest.
pub const FW_CFG_PASSPHRASE: &str =
    "/sys/firmware/qemu_fw_cfg/by_name/opt/io.keypack.passphrase/raw";

/// Tries before giving up and booting on without keys.
pub const TRIES: usize = 3;

/// How long one console or `systemd-ask-password` prompt waits for an answer.
pub const PROMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest scrypt work factor accepted (keypack seals with 18).
pub const MAX_WORK_FACTOR: u8 = 20;

/// The console line when the blob could not be opened.
pub const NOT_UNSEALED: &str =
    "load-keys: the sealed keys were NOT unsealed: no key installed; booting on without keys";

const MAX_PASSPHRASE: usize = 1024;

/// A passphrase, zeroized when dropped.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// One way to ask for the passphrase.
pub trait PassphraseSource {
    /// What the console shows about this source.
    fn name(&self) -> &str;
    /// The next answer; `None` when there is none (no one answered, cancelled, no more tries).
    fn ask(&mut self, attempt: usize) -> Option<Passphrase>;
    /// How many tries this source gets (the firmware config gives one answer only).
    fn tries(&self) -> usize {
        TRIES
    }
}

/// Where `load-keys` looks for the passphrase (flags of stage 1).
#[derive(Debug, Clone)]
pub struct PassphraseConfig {
    /// QEMU firmware config file ([`FW_CFG_PASSPHRASE`]; a flag moves it for tests).
    pub fw_cfg: PathBuf,
    /// `systemd-ask-password`, an absolute path (systemd stage 1), or `None` for the console.
    pub ask_password: Option<PathBuf>,
    /// The console device (`/dev/console`).
    pub console: PathBuf,
}

impl Default for PassphraseConfig {
    fn default() -> Self {
        Self {
            fw_cfg: PathBuf::from(FW_CFG_PASSPHRASE),
            ask_password: None,
            console: PathBuf::from("/dev/console"),
        }
    }
}

impl PassphraseConfig {
    /// The source to use: the firmware config when its file exists, else `systemd-ask-password`
    /// when given, else the console.
    pub fn source(&self) -> Box<dyn PassphraseSource> {
        if self.fw_cfg.exists() {
            return Box::new(FwCfg(self.fw_cfg.clone()));
        }
        match &self.ask_password {
            Some(p) => Box::new(AskPassword(p.clone())),
            None => Box::new(Console(self.console.clone())),
        }
    }
}

/// Why the sealed blob gave no keys. Never holds the passphrase.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// Every try was wrong, or no answer came.
    #[error("no correct passphrase from {source_name} after {tries} try(s)")]
    NoPassphrase {
        /// The source asked.
        source_name: String,
        /// Tries made.
        tries: usize,
    },
    /// Not an age file with one scrypt stanza, or too much scrypt work.
    #[error("keypack/sealed.age is not a passphrase-sealed age file keypack can open: {0}")]
    NotSealed(String),
    /// Authentication of the payload failed, or the tar inside is not what keypack writes.
    #[error("keypack/sealed.age is damaged: {0}")]
    Corrupt(String),
}

/// Asks `source` for the passphrase up to its number of tries and returns the private keys' tar.
pub fn unseal(
    blob: &[u8],
    source: &mut dyn PassphraseSource,
) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    check_header(blob)?;
    let tries = source.tries();
    for attempt in 1..=tries {
        let Some(passphrase) = source.ask(attempt) else {
            return Err(UnsealError::NoPassphrase {
                source_name: source.name().to_owned(),
                tries: attempt - 1,
            });
        };
        match decrypt(blob, &passphrase) {
            Ok(tar) => return Ok(tar),
            Err(Attempt::Wrong) => {
                crate::error(&format!(
                    "wrong passphrase for the sealed keys (try {attempt} of {tries}, from {})",
                    source.name()
                ));
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
    Err(UnsealError::NoPassphrase {
        source_name: source.name().to_owned(),
        tries,
    })
}

enum Attempt {
    Wrong,
    Fatal(UnsealError),
}

/// The scrypt stanza's work factor, checked before any passphrase is asked.
fn check_header(blob: &[u8]) -> Result<(), UnsealError> {
    let not = |why: &str| UnsealError::NotSealed(why.to_owned());
    let mut lines = blob.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1") {
        return Err(not("no age header"));
    }
    let stanza = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(|| not("no recipient stanza"))?;
    let words: Vec<&str> = stanza.split(' ').collect();
    match words.as_slice() {
        ["->", "scrypt", _salt, n] => match n.parse::<u8>() {
            Ok(n) if n <= MAX_WORK_FACTOR => Ok(()),
            Ok(n) => Err(not(&format!(
                "scrypt work factor {n} is more than {MAX_WORK_FACTOR}"
            ))),
            Err(_) => Err(not("bad scrypt work factor")),
        },
        _ => Err(not("not sealed with a passphrase (scrypt)")),
    }
}

fn decrypt(blob: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, Attempt> {
    let text = std::str::from_utf8(passphrase).map_err(|_| Attempt::Wrong)?;
    let mut identity =
        age::scrypt::Identity::new(age::secrecy::SecretString::from(String::from(text)));
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let decryptor = age::Decryptor::new(blob)
        .map_err(|e| Attempt::Fatal(UnsealError::Corrupt(e.to_string())))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                Attempt::Wrong
            }
            other => Attempt::Fatal(UnsealError::Corrupt(other.to_string())),
        })?;
    // The plaintext is never longer than the ciphertext: one allocation, never grown.
    let mut out = Zeroizing::new(Vec::with_capacity(blob.len()));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        match reader.read(&mut chunk[..]) {
            Ok(0) => return Ok(out),
            Ok(n) if out.len() + n <= blob.len() => out.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                return Err(Attempt::Fatal(UnsealError::Corrupt(
                    "payload longer than the file".into(),
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Attempt::Fatal(UnsealError::Corrupt(e.to_string()))),
        }
    }
}

/// One file of the decrypted tar.
pub struct TarFile {
    /// Path inside the tar (`etc/ssh/ssh_host_ed25519_key`).
    pub path: String,
    /// Its contents.
    pub data: Zeroizing<Vec<u8>>,
}

/// Parses the private keys' tar as keypack writes it: ustar, regular files only (a symlink, a
/// hard link, a folder or any extension header is refused, so nothing can point elsewhere),
/// each at most [`MAX_KEY_FILE_SIZE`], checksums checked. Modes and owners are not kept: the
/// install path sets its own.
pub fn parse_tar(tar: &[u8]) -> Result<Vec<TarFile>, UnsealError> {
    let bad = |why: String| UnsealError::Corrupt(format!("the tar inside: {why}"));
    let mut files = Vec::new();
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            return Ok(files);
        }
        let stored = octal(&header[148..156]).ok_or_else(|| bad("bad checksum field".into()))?;
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if sum != stored {
            return Err(bad("header checksum mismatch".into()));
        }
        let name = cstr(&header[..100]);
        let prefix = if &header[257..262] == b"ustar" {
            cstr(&header[345..500])
        } else {
            ""
        };
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let shown: String = path.escape_debug().collect();
        match header[156] {
            b'0' | 0 => {}
            other => {
                return Err(bad(format!(
                    "{shown}: entry type {:?} is not a regular file",
                    other as char
                )));
            }
        }
        let size = octal(&header[124..136]).ok_or_else(|| bad(format!("{shown}: bad size")))?;
        if size > MAX_KEY_FILE_SIZE {
            return Err(bad(format!("{shown}: larger than any key file")));
        }
        let start = at + 512;
        let end = start + size as usize;
        if end > tar.len() {
            return Err(bad(format!("{shown}: truncated")));
        }
        let mut data = Zeroizing::new(Vec::with_capacity(size as usize));
        data.extend_from_slice(&tar[start..end]);
        files.push(TarFile { path, data });
        at = start + (size as usize).div_ceil(512) * 512;
    }
    Err(bad("no end-of-archive marker".into()))
}

fn cstr(field: &[u8]) -> &str {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).unwrap_or("\u{fffd}")
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Strips one trailing newline (`\n` or `\r\n`).
fn trim_newline(mut p: Passphrase) -> Passphrase {
    if p.last() == Some(&b'\n') {
        p.pop();
        if p.last() == Some(&b'\r') {
            p.pop();
        }
    }
    p
}

/// QEMU's firmware config (`keypack run`): one answer.
struct FwCfg(PathBuf);

impl PassphraseSource for FwCfg {
    fn name(&self) -> &str {
        "QEMU's firmware config (opt/io.keypack.passphrase)"
    }
    fn tries(&self) -> usize {
        1
    }
    fn ask(&mut self, _attempt: usize) -> Option<Passphrase> {
        let file = std::fs::File::open(&self.0).ok()?;
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 1));
        file.take(MAX_PASSPHRASE as u64 + 1)
            .read_to_end(&mut buf)
            .ok()?;
        if buf.len() > MAX_PASSPHRASE || buf.is_empty() {
            return None;
        }
        Some(trim_newline(buf))
    }
}

/// `systemd-ask-password` (systemd stage 1), run by absolute path with an empty environment.
struct AskPassword(PathBuf);

impl PassphraseSource for AskPassword {
    fn name(&self) -> &str {
        "systemd-ask-password"
    }
    fn ask(&mut self, attempt: usize) -> Option<Passphrase> {
        if !self.0.is_absolute() {
            crate::error("--ask-password needs an absolute path");
            return None;
        }
        let prompt = if attempt == 1 {
            "Passphrase for the sealed SSH keys (keypack):".to_owned()
        } else {
            format!(
                "Wrong passphrase. Passphrase for the sealed SSH keys (keypack), try {attempt} of {TRIES}:"
            )
        };
        let mut child = Command::new(&self.0)
            .env_clear()
            .arg(format!("--timeout={}", PROMPT_TIMEOUT.as_secs()))
            .arg("--id=keypack:sealed-keys")
            .arg("--icon=drive-harddisk")
            .arg(prompt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| crate::error(&format!("cannot run {}: {e}", self.0.display())))
            .ok()?;
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 2));
        let read = child
            .stdout
            .take()
            .map(|out| out.take(MAX_PASSPHRASE as u64 + 2).read_to_end(&mut buf));
        let status = child.wait().ok()?;
        if !status.success() || !matches!(read, Some(Ok(_))) || buf.len() > MAX_PASSPHRASE + 1 {
            return None;
        }
        let p = trim_newline(buf);
        (!p.is_empty()).then_some(p)
    }
}

/// The console, echo off, for the scripted stage 1 and plain initrds.
struct Console(PathBuf);

impl PassphraseSource for Console {
    fn name(&self) -> &str {
        "the console"
    }
    fn ask(&mut self, attempt: usize) -> Option<Passphrase> {
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.0)
            .ok()?;
        // Echo goes off before the prompt is shown, as readpassphrase(3) does: a user who types
        // as soon as the prompt appears must never see the passphrase echoed, and whatever was
        // typed before the prompt is discarded (Flush) rather than taken as the answer.
        let saved = rustix::termios::tcgetattr(tty.as_fd()).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ = rustix::termios::tcsetattr(
                tty.as_fd(),
                rustix::termios::OptionalActions::Flush,
                &quiet,
            );
        }
        let prompt =
            format!("Passphrase for the sealed SSH keys (keypack), try {attempt} of {TRIES}: ");
        let shown = tty.write_all(prompt.as_bytes()).and_then(|()| tty.flush());
        let line = shown
            .ok()
            .and_then(|()| read_line_timeout(&mut tty, PROMPT_TIMEOUT));
        if let Some(t) = &saved {
            let _ =
                rustix::termios::tcsetattr(tty.as_fd(), rustix::termios::OptionalActions::Now, t);
        }
        let _ = tty.write_all(b"\n");
        line.filter(|l| !l.is_empty())
    }
}

/// Reads one line byte by byte, waiting at most `timeout` in all.
fn read_line_timeout(tty: &mut std::fs::File, timeout: Duration) -> Option<Passphrase> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = std::time::Instant::now() + timeout;
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&*tty, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
        match tty.read(&mut byte) {
            Ok(0) => return (!line.is_empty()).then_some(line),
            Ok(_) if byte[0] == b'\n' || byte[0] == b'\r' => return Some(line),
            Ok(_) if line.len() < MAX_PASSPHRASE => line.push(byte[0]),
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// For tests and embedders: answers given up front, one per try.
pub struct Answers(pub Vec<Passphrase>);

impl PassphraseSource for Answers {
    fn name(&self) -> &str {
        "the given answers"
    }
    fn ask(&mut self, _attempt: usize) -> Option<Passphrase> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(kind: tar::EntryType, path: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(kind);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/shadow").unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn the_tar_parser_takes_regular_files_only() {
        let ok = tar_with(
            tar::EntryType::Regular,
            "etc/ssh/ssh_host_ed25519_key",
            b"key",
        );
        let files = parse_tar(&ok).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "etc/ssh/ssh_host_ed25519_key");
        assert_eq!(&files[0].data[..], b"key");
        for kind in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Directory,
        ] {
            let bad = tar_with(kind, "etc/ssh/ssh_host_ed25519_key", b"");
            assert!(parse_tar(&bad).is_err(), "{kind:?} accepted");
        }
        // A flipped header byte fails the checksum; a cut archive is refused.
        let mut flipped = ok.clone();
        flipped[3] ^= 1;
        assert!(parse_tar(&flipped).is_err());
        assert!(parse_tar(&ok[..600]).is_err());
    }

    #[test]
    fn a_blob_asking_for_too_much_scrypt_work_is_refused_before_asking() {
        let blob = b"age-encryption.org/v1\n-> scrypt c2FsdHNhbHRzYWx0c2FsdA 30\nxx\n--- yy\n";
        let mut answers = Answers(vec![Zeroizing::new(b"x".to_vec())]);
        assert!(matches!(
            unseal(blob, &mut answers),
            Err(UnsealError::NotSealed(_))
        ));
        assert_eq!(answers.0.len(), 1);
    }
}
