//! `--burn-after-boot` (on `build`, `pack` and `media update`): the flag and the mark token.
//!
//! The token names one bundle: 128 bits from the OS's randomness, or, with `build --seed N`,
//! derived from the seed and the host and user names (so a seeded build is byte-reproducible
//! and two hosts built with one seed still get different tokens). `load-keys` burns only the
//! archive on a Ventoy disk whose mark equals the one injected into its initramfs.
#![forbid(unsafe_code)]

use std::io::Read;

use anyhow::{Context, Result};

use crate::keys::KeySelection;

/// The flag, flattened into each verb that writes a bundle.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BurnArgs {
    /// After the first boot, `load-keys` removes this bundle from the Ventoy stick it came
    /// from: its injection entry goes from ventoy/ventoy.json (the stick boots on without
    /// keys), then its clusters are overwritten with zeros and freed. Refresh the stick with
    /// `keypack media update`. The bundle carries a plaintext mark (keypack/burn-after-boot)
    #[arg(long)]
    pub burn_after_boot: bool,
}

impl BurnArgs {
    /// Sets the selection's mark token when the flag is given.
    pub fn apply(&self, sel: &mut KeySelection, seed: Option<u64>) -> Result<()> {
        if self.burn_after_boot {
            sel.burn_mark = Some(token(seed, sel)?);
        }
        Ok(())
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 32 lowercase hex digits.
pub fn token(seed: Option<u64>, sel: &KeySelection) -> Result<String> {
    let mut bytes = [0u8; 16];
    match seed {
        Some(seed) => {
            // FNV-1a of the names, so one seed gives each host its own token.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let names =
                std::iter::once(sel.host.as_str()).chain(sel.users.iter().map(|u| u.as_str()));
            for name in names {
                for b in name.bytes().chain([0]) {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            let mut x = seed ^ h ^ 0x6b65_7970_6163_6b21; // "keypack!"
            bytes[..8].copy_from_slice(&splitmix(&mut x).to_le_bytes());
            bytes[8..].copy_from_slice(&splitmix(&mut x).to_le_bytes());
        }
        None => std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom for the burn mark")?,
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
