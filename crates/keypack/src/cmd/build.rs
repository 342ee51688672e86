//! `keypack build` / `keypack rebuild`: ISO → keys → medium → boot description.
//!
//! Order matters for the user: the output folder and the ISO (which may run `nix build`) are
//! settled before anything is decrypted, so a mistake costs no YubiKey touch. The medium writes
//! its artifact (0600, temp name, rename); this verb then stores the [`BootDescription`] as
//! `boot.json` in the host's state folder, where `keypack run` reads it.
//!
//! Does not know any medium's format: it only picks one from `media.rs` by `--media`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use keypack_plugin::BuildInputs;

use crate::cmd::KeyArgs;
use crate::cmd::iso::IsoSource;
use crate::{keys, media, state};

/// Name of the boot description in the host's state folder.
pub const BOOT_JSON: &str = "boot.json";

/// Flags of `keypack build` shared by every medium (each medium adds its own).
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub source: IsoSource,
    /// Boot medium to build (`keypack plugins` lists them)
    #[arg(long, value_name = "NAME", env = "KEYPACK_MEDIA", default_value = media::DEFAULT_MEDIUM)]
    pub media: String,
    /// Where to write the medium [default: the host's state folder,
    /// $KEYPACK_STATE_DIR/HOST/ or $XDG_STATE_HOME/keypack/HOST/]
    #[arg(short, long, value_name = "IMAGE")]
    pub output: Option<PathBuf>,
    /// Seed for the identifiers that are otherwise random (disk GUID, signature), for
    /// byte-reproducible media
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub seal: super::seal::SealArgs,
    #[command(flatten)]
    pub burn: crate::cmd::burn::BurnArgs,
}

/// `keypack build` and `keypack rebuild` (`ignore_cache`).
pub fn build(args: BuildArgs, matches: &clap::ArgMatches, ignore_cache: bool) -> Result<ExitCode> {
    let Some(medium) = media::find(&args.media) else {
        bail!(
            "--media {}: no such medium (available: {})",
            args.media,
            media::names().join(", ")
        );
    };
    let host = args.keys.host.clone();
    let host_dir = state::host_dir(&host)?;
    keypack_plugin::output::remove_stale_temp_files(&host_dir);
    let output = match &args.output {
        Some(o) => {
            // Keys written into the keys repository are one `git add` away from being committed
            // in plaintext: refused for every medium.
            super::pack::refuse_inside_repo(o, &args.keys.selection())?;
            keypack_plugin::output::check_private_output_folder(o)
                .with_context(|| format!("-o {}", o.display()))?;
            o.clone()
        }
        // A state folder inside the keys repository is refused like -o there.
        None => {
            let o = host_dir.join(medium.artifact_name(&host));
            super::pack::refuse_inside_repo(&o, &args.keys.selection())?;
            o
        }
    };
    // A medium that does not need an ISO still gets one given with --iso (initrd: boot from it).
    let iso = if medium.needs_iso() || args.source.iso.is_some() {
        Some(args.source.resolve()?)
    } else {
        None
    };
    let mut selection = args.keys.selection();
    args.burn.apply(&mut selection, args.seed)?;
    let passphrase = args.seal.ask(host.as_str())?;
    let bundle = keys::pack_bundle_sealed(&selection, passphrase)?;
    let inputs = BuildInputs::new(&host, &output, &host_dir, matches)
        .with_iso(iso.as_deref())
        .with_seed(args.seed)
        .with_ignore_cache(ignore_cache);
    let desc = medium.build(&bundle, &inputs)?;
    drop(bundle);
    let json = serde_json::to_vec_pretty(&desc).context("encoding the boot description")?;
    let boot_json = host_dir.join(BOOT_JSON);
    keypack_plugin::output::write_private_file(&boot_json, &json)
        .with_context(|| format!("writing {}", boot_json.display()))?;
    eprintln!(
        "built {} ({}) for {}; boot description {}",
        output.display(),
        medium.name(),
        host,
        boot_json.display()
    );
    if !desc.host_public_key.is_empty() {
        eprintln!("host key: {}", desc.host_public_key);
    }
    if args.seal.seal.is_some() {
        eprintln!(
            "sealed: the private keys are in keypack/sealed.age (age, scrypt); the target asks for the passphrase at boot"
        );
    }
    Ok(ExitCode::SUCCESS)
}
