//! `--burn-after-boot` (on `build`, `pack` and `media update`): the flag and the mark token.
//!
//! The token names one bundle: 128 bits from the OS's randomness, or, with `build --seed N`,
//! derived from the seed and the host and user names (so a seeded build is byte-reproducible
//! and two hosts built with one seed still get different tokens), then bound to the keys'
//! public fingerprints ([`bind_to_keys`]), so other keys built with the same seed get another
//! mark. `load-keys` burns only the
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

/// The mark for a bundle of keys with these (public) fingerprints: `token` mixed with them, so
/// the same seed gives other keys another mark. Deterministic; not a secret.
pub fn bind_to_keys(token: &str, fingerprints: &[&str]) -> String {
    let mut out = [0u8; 16];
    for (half, chunk) in out.chunks_exact_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ half as u64;
        for b in token
            .bytes()
            .chain(fingerprints.iter().flat_map(|f| f.bytes().chain([0])))
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&splitmix(&mut h).to_le_bytes());
    }
    out.iter().map(|b| format!("{b:02x}")).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use keypack_layout::{HostName, UserName};

    fn sel(host: &str, users: &[&str]) -> KeySelection {
        KeySelection {
            host: HostName::new(host).unwrap(),
            users: users.iter().map(|u| UserName::new(u).unwrap()).collect(),
            keys_repo: None,
            identity: None,
            allow_shared_key: false,
            require_pins: false,
            burn_mark: None,
        }
    }

    #[test]
    fn seeded_tokens_are_reproducible_and_differ_per_host_and_seed() {
        let a = token(Some(42), &sel("web1", &["alice"])).unwrap();
        assert_eq!(a, token(Some(42), &sel("web1", &["alice"])).unwrap());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, token(Some(43), &sel("web1", &["alice"])).unwrap());
        assert_ne!(a, token(Some(42), &sel("web2", &["alice"])).unwrap());
        assert_ne!(a, token(Some(42), &sel("web1", &[])).unwrap());
        // "web1"+"alice" vs "web1a"+"lice": names are separated.
        assert_ne!(token(Some(42), &sel("web1a", &["lice"])).unwrap(), a);
        assert_ne!(
            token(None, &sel("web1", &[])).unwrap(),
            token(None, &sel("web1", &[])).unwrap()
        );
    }

    #[test]
    fn the_mark_is_bound_to_the_keys() {
        let t = token(Some(42), &sel("web1", &[])).unwrap();
        let a = bind_to_keys(&t, &["SHA256:a", "SHA256:b"]);
        assert_eq!(a, bind_to_keys(&t, &["SHA256:a", "SHA256:b"]));
        assert_eq!(a.len(), 32);
        assert_ne!(a, bind_to_keys(&t, &["SHA256:a", "SHA256:c"]));
        assert_ne!(a, bind_to_keys(&t, &["SHA256:aSHA256:b"]));
        assert_ne!(a[..16], a[16..], "both halves differ");
    }

    #[test]
    fn the_flag_sets_the_mark_only_when_given() {
        let mut s = sel("web1", &[]);
        BurnArgs::default().apply(&mut s, Some(1)).unwrap();
        assert_eq!(s.burn_mark, None);
        BurnArgs {
            burn_after_boot: true,
        }
        .apply(&mut s, Some(1))
        .unwrap();
        assert_eq!(s.burn_mark.as_deref().map(str::len), Some(32));
    }
}
