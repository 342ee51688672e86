//! `keypack.pins`: the public half of every SSH identity keypack packs.
//!
//! Why this crate exists: the keys repository holds the *secret* keys,
//! sops-encrypted. Anyone who can write to that repository (or roll it back
//! to an older commit) could swap a host key, and the next build would pack
//! it without a word. The pins file at the repository root records, in plain
//! text, which public key each role is expected to have, and which keys were
//! retired. A build checks every key it is about to pack against it
//! ([`check`]), so a swapped key, a rolled-back (retired) key, or one key
//! reused for two roles is an error, not a surprise at boot.
//!
//! The file is plain text, one line per role, sorted, so a `git diff` shows
//! exactly which key changed (see `../shared/notes/decisions.md`,
//! "Host identities and pins (2026-12)"):
//!
//! ```text
//! # header comment (kept)
//! hosts/web1/ssh_host_ed25519_key ssh-ed25519 AAAAC3Nza...
//! users/alice/id_ed25519 ssh-ed25519 AAAAC3Nza...
//!
//! retired hosts/web1/ssh_host_ed25519_key ssh-ed25519 AAAAC3Nza...
//! ```
//!
//! [`age_recipient`] gives the `ssh-to-age` conversion of a host's ed25519
//! public key: the recipient sops-nix decrypts for with the host key.
#![forbid(unsafe_code)]

mod check;
mod key;
mod pins;
mod recipient;

pub use check::{BundleKey, CheckOptions, CheckReport, Finding, check};
pub use key::{KeyError, PublicKey, Role, RoleError};
pub use pins::{LineError, PINS_FILE, Pins, PinsError, SetError};
pub use recipient::{RecipientError, age_recipient};
