//! `keypack plugins`: the media and runners, built-in and external, with their origin; and
//! `keypack plugins check NAME`, the conformance run of an external medium.
//!
//! The check builds against a throwaway bundle (fresh random keys generated in memory, never
//! a keys repository), so it decrypts nothing and needs no YubiKey.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use keypack_bundle::{BundleBuilder, SealedBundle};
use keypack_layout::{HostName, UserName};
use keypack_lifecycle::Entity;
use keypack_plugin::external::conformance::{self, CheckInputs, Outcome};
use keypack_plugin::external::protocol::PluginKind;

use crate::media::{self, Origin};

/// Flags of `keypack plugins`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PluginsArgs {
    /// Print one JSON document on stdout: `media` (`name`, `about`, `default`, `origin`,
    /// `path`, `shadows`), `runners` (the same, without `default`) and `broken` (`path`,
    /// `error`: programs that did not describe themselves)
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<PluginsCommand>,
}

/// Subcommands of `keypack plugins`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Check an external medium against the protocol with a throwaway bundle: handshake,
    /// describe, two builds with one seed (byte-identical), artifacts 0600, a valid boot
    /// description, no key bytes in other files, on its argv or in its environment.
    Check(CheckArgs),
}

/// Flags of `keypack plugins check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The medium (`NAME` of `keypack-media-NAME`)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// An ISO to hand to the builds
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// The medium's own flags, after `--` (`-- --kernel FILE --initrd FILE`)
    #[arg(last = true, value_name = "FLAGS")]
    pub flags: Vec<String>,
}

/// `keypack plugins`.
pub fn plugins(args: PluginsArgs) -> Result<ExitCode> {
    if let Some(PluginsCommand::Check(c)) = args.command {
        return check(c);
    }
    let reg = media::registry();
    let origin = |o: &Origin| match o {
        Origin::BuiltIn => ("built-in", None),
        Origin::External(p) => ("external", Some(p.display().to_string())),
    };
    let shadows =
        |s: &[PathBuf]| -> Vec<String> { s.iter().map(|p| p.display().to_string()).collect() };
    if args.json {
        let media_json: Vec<_> = reg
            .media
            .iter()
            .map(|m| {
                let (o, path) = origin(&m.origin);
                serde_json::json!({
                    "name": m.medium.name(),
                    "about": m.medium.about(),
                    "default": m.medium.name() == media::DEFAULT_MEDIUM,
                    "origin": o,
                    "path": path,
                    "shadows": shadows(&m.shadows),
                })
            })
            .collect();
        let mut runners: Vec<_> = media::RUNNERS
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name(), "about": r.about(), "origin": "built-in",
                    "path": null, "shadows": [],
                })
            })
            .collect();
        runners.extend(reg.external_runners.iter().map(|r| {
            serde_json::json!({
                "name": r.name, "about": r.about, "origin": "external",
                "path": r.path.display().to_string(), "shadows": shadows(&r.shadows),
            })
        }));
        let broken: Vec<_> = reg
            .broken
            .iter()
            .map(|(p, why)| serde_json::json!({ "path": p.display().to_string(), "error": why }))
            .collect();
        let doc = serde_json::json!({ "media": media_json, "runners": runners, "broken": broken });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = reg
        .media
        .iter()
        .map(|m| m.medium.name().len())
        .chain(reg.external_runners.iter().map(|r| r.name.len()))
        .max()
        .unwrap_or(0);
    println!("media (keypack build --media NAME):");
    for m in &reg.media {
        let (o, path) = origin(&m.origin);
        let from = path
            .map(|p| format!("external: {p}"))
            .unwrap_or(o.to_owned());
        println!(
            "  {:width$}  {}  [{from}]",
            m.medium.name(),
            m.medium.about()
        );
    }
    println!("runners (keypack run --runner NAME):");
    for r in media::RUNNERS {
        println!("  {:width$}  {}  [built-in]", r.name(), r.about());
    }
    for r in &reg.external_runners {
        println!(
            "  {:width$}  {}  [external: {}]",
            r.name,
            r.about,
            r.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The program `keypack plugins check NAME` runs: the first `keypack-media-NAME` found, also
/// when a built-in of that name shadows it for builds. Found without describing the other
/// programs (a broken one elsewhere on PATH does not slow the check down).
fn program_for(name: &str) -> Result<PathBuf> {
    let dirs = media::plugin_dirs();
    let found = keypack_plugin::external::discover(dirs.iter().map(PathBuf::as_path));
    if let Some(f) = found
        .iter()
        .find(|f| f.kind == PluginKind::Media && f.name == name)
    {
        return Ok(f.path.clone());
    }
    if media::BUILT_IN_MEDIA.iter().any(|m| m.name() == name) {
        bail!(
            "`{name}` is a built-in medium; its crate's tests run the same checks (keypack_plugin::testing::check_medium)"
        );
    }
    bail!(
        "no medium `{name}`: no {}{name} on an absolute PATH entry or in plugin_dir",
        keypack_plugin::external::MEDIA_PREFIX
    )
}

/// Fresh random keys (host, deploy, user `alice`), sealed: nothing read, nothing decrypted.
fn throwaway_bundle() -> Result<SealedBundle> {
    let host = HostName::new("testhost").expect("valid host name");
    let alice = UserName::new("alice").expect("valid user name");
    let mut slots = Entity::Host {
        name: host,
        deploy: true,
    }
    .slots()?;
    slots.extend(Entity::User { name: alice }.slots()?);
    let mut builder = BundleBuilder::new();
    for slot in &slots {
        let key = keypack_lifecycle::generate(slot)?;
        builder.add_key(slot.role.clone(), key.private_copy(), None)?;
    }
    Ok(builder.seal(0)?)
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let program = program_for(&args.name)?;
    println!("checking {} ({})", args.name, program.display());
    let bundle = throwaway_bundle().context("making the throwaway bundle")?;
    let dir = tempfile::Builder::new()
        .prefix("keypack-check-")
        .tempdir()
        .context("a temporary folder for the check")?;
    let inputs = CheckInputs {
        path: &program,
        name: &args.name,
        args: &args.flags,
        iso: args.iso.as_deref(),
        dir: dir.path(),
    };
    let mut report = |name: &str, o: &Outcome| match o {
        Ok(detail) => println!("  ok    {name}: {detail}"),
        Err(why) => println!(
            "  FAIL  {name}: {}",
            keypack_plugin::external::session::printable(why)
        ),
    };
    let ok = conformance::run(&bundle, &inputs, &mut report);
    drop(bundle);
    if ok {
        println!("{}: every check passed", args.name);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: a check failed", args.name);
        Ok(ExitCode::from(1))
    }
}
