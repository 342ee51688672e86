//! The media and runner plugins: the compiled-in ones ([`BUILT_IN_MEDIA`]) and the external
//! programs found on `PATH` and in `plugin_dir` (`keypack_plugin::external`). Adding a
//! compiled-in medium is one line in [`BUILT_IN_MEDIA`]; adding an external one is dropping a
//! `keypack-media-NAME` executable on `PATH` (see the "Adding a boot medium" section of
//! `keypack-plugin` and `crates/plugin/PROTOCOL.md`).
//!
//! Does not parse flags or build anything itself: `cmd/build.rs` picks a medium from here by
//! `--media` and hands it the bundle. External programs are started (to `describe` them) only
//! by [`registry`], the first time a verb needs the list: `build`, `rebuild`, `plugins`, help
//! and completions, never `status` or `ssh`; and by [`external_runner`] for `run --runner
//! NAME`, which starts that runner only.

use std::path::PathBuf;
use std::sync::OnceLock;

use keypack_plugin::Medium;
use keypack_plugin::external::protocol::PluginKind;
use keypack_plugin::external::{self, ExternalMedium, Found};
use keypack_plugin::runner::Runner;

/// Every compiled-in media plugin, the default first.
pub static BUILT_IN_MEDIA: &[&dyn Medium] = &[
    &keypack_media_ventoy::Ventoy,
    &keypack_media_initrd::Initrd,
    &keypack_media_iso::IsoMedium,
];

/// The compiled-in runners (listed by `keypack plugins`; `run` uses the first unless
/// `--runner` names another, which may be an external program).
pub static RUNNERS: &[&dyn Runner] = &[&keypack_runner_qemu::Qemu];

/// The medium used without `--media`.
pub const DEFAULT_MEDIUM: &str = "ventoy";

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into keypack.
    BuiltIn,
    /// A program.
    External(PathBuf),
}

/// A medium and where it comes from.
pub struct MediumEntry {
    /// The medium.
    pub medium: &'static dyn Medium,
    /// Its origin.
    pub origin: Origin,
    /// Programs of the same name it hides (a built-in hides any program; an earlier folder
    /// hides a later one).
    pub shadows: Vec<PathBuf>,
}

/// An external runner program (`keypack run --runner NAME`).
pub struct ExternalRunner {
    /// `NAME` of `keypack-runner-NAME`.
    pub name: String,
    /// Its `about` line, from `describe`.
    pub about: String,
    /// The program.
    pub path: PathBuf,
    /// Programs of the same name it hides.
    pub shadows: Vec<PathBuf>,
}

/// Every plugin this run knows.
pub struct Registry {
    /// Media, built-in first.
    pub media: Vec<MediumEntry>,
    /// External runner programs.
    pub external_runners: Vec<ExternalRunner>,
    /// External media programs that did not describe themselves, with why.
    pub broken: Vec<(PathBuf, String)>,
}

/// The folders searched for plugin programs: `plugin_dir` of the config file, then the
/// absolute entries of `PATH` (relative entries, the working directory included, never).
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    match crate::keys::config_plugin_dir() {
        Ok(Some(d)) => dirs.push(d),
        Ok(None) => {}
        Err(e) => eprintln!("warning: {e:#}; plugin_dir ignored"),
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|d| d.is_absolute()));
    }
    dirs
}

/// keypack's own `build` flags: an external medium may not redefine them.
fn reserved_flags() -> Vec<String> {
    use clap::Args;
    let cmd = crate::cmd::build::BuildArgs::augment_args(clap::Command::new("build"));
    let mut names: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    names.extend(["help", "version"].map(String::from));
    names
}

/// The registry, discovered (and every external medium described) on first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let dirs = plugin_dirs();
        discover_into(external::discover(dirs.iter().map(PathBuf::as_path)))
    })
}

fn discover_into(found: Vec<Found>) -> Registry {
    let mut media: Vec<MediumEntry> = BUILT_IN_MEDIA
        .iter()
        .map(|&m| MediumEntry {
            medium: m,
            origin: Origin::BuiltIn,
            shadows: Vec::new(),
        })
        .collect();
    let mut external_runners = Vec::new();
    let mut broken = Vec::new();
    let reserved = reserved_flags();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    for f in found {
        if f.kind == PluginKind::Runner {
            if RUNNERS.iter().any(|r| r.name() == f.name) {
                eprintln!(
                    "warning: the built-in runner `{}` shadows {}",
                    f.name,
                    f.path.display()
                );
            }
            // Described now for its `about` line and to catch a broken program early; `run`
            // starts it again for `start`.
            let about = match external::describe_program(&f.path, &f.name, PluginKind::Runner) {
                Ok(d) => keypack_plugin::external::session::printable(&d.about),
                Err(e) => {
                    let why = keypack_plugin::external::session::printable(&format!("{e}"));
                    eprintln!("warning: {}: {why}; skipped", f.path.display());
                    broken.push((f.path, why));
                    continue;
                }
            };
            external_runners.push(ExternalRunner {
                name: f.name,
                about,
                path: f.path,
                shadows: f.shadows,
            });
            continue;
        }
        for s in &f.shadows {
            eprintln!(
                "warning: {} shadows {} (the first folder wins)",
                f.path.display(),
                s.display()
            );
        }
        if let Some(builtin) = media.iter_mut().find(|m| m.medium.name() == f.name) {
            // A compiled-in medium wins, and the program is not even started.
            eprintln!(
                "warning: the built-in medium `{}` shadows {}",
                f.name,
                f.path.display()
            );
            builtin.shadows.push(f.path);
            builtin.shadows.extend(f.shadows);
            continue;
        }
        match ExternalMedium::describe(&f.path, &f.name) {
            Ok(mut m) => {
                let dropped = m.drop_flags(&reserved);
                if !dropped.is_empty() {
                    eprintln!(
                        "warning: {}: flags --{} are keypack's own; ignored",
                        f.path.display(),
                        dropped.join(", --")
                    );
                }
                media.push(MediumEntry {
                    medium: Box::leak(Box::new(m)),
                    origin: Origin::External(f.path),
                    shadows: f.shadows,
                });
            }
            Err(e) => {
                let why = keypack_plugin::external::session::printable(&format!("{e}"));
                eprintln!("warning: {}: {why}; skipped", f.path.display());
                broken.push((f.path, why));
            }
        }
    }
    Registry {
        media,
        external_runners,
        broken,
    }
}

/// Whether `name` is a compiled-in runner.
pub fn is_built_in_runner(name: &str) -> bool {
    RUNNERS.iter().any(|r| r.name() == name)
}

/// The program of the external runner `name`. Only runner programs are looked at (the media
/// programs are not started to describe themselves), and the one found must describe itself
/// as runner `name`.
pub fn external_runner(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = plugin_dirs();
    let runners: Vec<Found> = external::discover(dirs.iter().map(PathBuf::as_path))
        .into_iter()
        .filter(|f| f.kind == PluginKind::Runner)
        .collect();
    if let Some(r) = runners.iter().find(|r| r.name == name) {
        external::describe_program(&r.path, name, PluginKind::Runner)?;
        return Ok(r.path.clone());
    }
    let mut names: Vec<&str> = RUNNERS.iter().map(|r| r.name()).collect();
    names.extend(runners.iter().map(|r| r.name.as_str()));
    anyhow::bail!(
        "no runner `{name}` (runners: {}); an external runner is a program keypack-runner-{name} in an absolute PATH entry or in plugin_dir (`keypack plugins` lists them)",
        names.join(", ")
    )
}

/// Whether this command line needs the external media (to parse or show `build`'s flags).
/// Other verbs start no plugin program.
pub fn wants_external(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| {
            ["build", "rebuild", "help", "completions", "man"].contains(&&*a.to_string_lossy())
        })
}

/// The media of this run: every one when external media are wanted, else the built-ins.
fn media_for_cli(external: bool) -> Vec<&'static dyn Medium> {
    if external {
        registry().media.iter().map(|m| m.medium).collect()
    } else {
        BUILT_IN_MEDIA.to_vec()
    }
}

/// Adds every plugin's flags to a `build`-like command (external media's when `external`).
pub fn augment_build_args_with(mut cmd: clap::Command, external: bool) -> clap::Command {
    // A derived `Args` struct's doc comment becomes the command's about text: keep the verb's.
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    for medium in media_for_cli(external) {
        cmd = medium.augment_args(cmd);
    }
    cmd = match about {
        Some(a) => cmd.about(a),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(a) => cmd.long_about(a),
        None => cmd.long_about(None::<&str>),
    }
}

/// Adds the built-in plugins' flags to a `build`-like command.
pub fn augment_build_args(cmd: clap::Command) -> clap::Command {
    augment_build_args_with(cmd, false)
}

/// Finds a medium by name (built-in, then external).
pub fn find(name: &str) -> Option<&'static dyn Medium> {
    registry()
        .media
        .iter()
        .map(|m| m.medium)
        .find(|m| m.name() == name)
}

/// The names, for error messages.
pub fn names() -> Vec<&'static str> {
    registry().media.iter().map(|m| m.medium.name()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_default_is_registered() {
        let names: Vec<&str> = super::BUILT_IN_MEDIA.iter().map(|m| m.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names.contains(&super::DEFAULT_MEDIUM));
    }

    #[test]
    fn plugin_flags_keep_the_verbs_help() {
        let cmd = crate::cli::command();
        let build = cmd.find_subcommand("build").unwrap();
        let about = build.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.starts_with("Build boot media"), "{about}");
    }

    #[test]
    fn only_build_like_verbs_start_plugin_programs() {
        let a = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        assert!(super::wants_external(&a(&["keypack", "build", "-H", "x"])));
        assert!(super::wants_external(&a(&["keypack", "help", "build"])));
        assert!(!super::wants_external(&a(&[
            "keypack", "status", "-H", "build"
        ])));
        assert!(!super::wants_external(&a(&["keypack", "plugins"])));
    }
}
