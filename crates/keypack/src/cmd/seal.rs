//! `--seal KIND` of `build`, `pack` and `media update`, and the sealed blob lookup of `run`.
//!
//! The passphrase is asked before anything is decrypted (a mismatch costs no YubiKey touch
//! and writes nothing), through the same prompt code as the YubiKey PIN (pinentry, the
//! terminal, or `KEYPACK_PIN_FD` for tests) — never argv or the environment.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use keypack_plugin::{Boot, BootDescription};
use secrecy::SecretString;

/// How to seal the private keys on the medium. One kind today; the value keeps room for others
/// (a hardware token, a TPM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SealKind {
    // One age file (scrypt passphrase recipient) holding the private keys; the passphrase is
    // asked twice, and on the target at boot. (A plain comment: a documented value would switch
    // every verb's --help to the long layout.)
    Passphrase,
}

/// The `--seal` flag.
#[derive(Debug, Clone, clap::Args)]
pub struct SealArgs {
    /// Seal the private keys on the medium (`passphrase`: asked twice; one age file, scrypt, in
    /// keypack/sealed.age beside the readable .pub files; load-keys asks for it at boot)
    #[arg(long, value_name = "KIND", value_enum)]
    pub seal: Option<SealKind>,
}

impl SealArgs {
    /// Asks for the sealing secret when `--seal` is given (twice, compared).
    pub fn ask(&self, host: &str) -> Result<Option<SecretString>> {
        match self.seal {
            None => Ok(None),
            Some(SealKind::Passphrase) => {
                let what = format!("sealed keys of host {host}");
                let p = keypack_identity::new_passphrase(&what).context("--seal passphrase")?;
                Ok(Some(p))
            }
        }
    }
}

/// The sealed blob of a built medium, read from its own artifact (the initrd medium's keys
/// cpio, the bundle on a Ventoy image's data partition, or a keyed ISO's area); `None` for an
/// unsealed build.
pub fn sealed_blob_of(desc: &BootDescription) -> Result<Option<Vec<u8>>> {
    match &desc.boot {
        Boot::Kernel { initrds, .. } => {
            for initrd in initrds {
                if let Some(blob) = keypack_media_initrd::sealed_blob_in_initrd(initrd)
                    .with_context(|| format!("reading {}", initrd.display()))?
                {
                    return Ok(Some(blob));
                }
            }
            Ok(None)
        }
        Boot::Disk { image } => {
            // `run --image` boots any raw disk: one that is not a Ventoy disk keypack can read
            // holds no bundle keypack sealed, so there is no passphrase to hand over.
            let Ok(info) = keypack_media_ventoy::inspect(image) else {
                return Ok(None);
            };
            for (_, archive) in &info.archives {
                if let Some(blob) = keypack_bundle::sealed_blob_in_archive(archive)
                    .with_context(|| format!("reading the bundle on {}", image.display()))?
                {
                    return Ok(Some(blob));
                }
            }
            Ok(None)
        }
        // Likewise an ISO without keypack's area (a plain ISO booted as a CD-ROM).
        Boot::Cdrom { image } => Ok(keypack_media_iso::sealed_blob(image).ok().flatten()),
    }
}
