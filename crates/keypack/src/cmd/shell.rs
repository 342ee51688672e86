//! `keypack completions SHELL` and `keypack man --out DIR`: shell completions (clap_complete)
//! and man pages (clap_mangen) generated from the same command definition `--help` uses, so
//! they list the media plugins' flags of `build` and `rebuild` too and never drift.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Flags of `keypack completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; write the script where your shell loads completions, e.g.
    /// `keypack completions bash > ~/.local/share/bash-completion/completions/keypack`
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Flags of `keypack man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Folder to write the pages into (`keypack.1`, `keypack-build.1`, …); created if missing
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `keypack completions`.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = crate::cli::command_for(&std::env::args_os().collect::<Vec<_>>());
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "keypack", &mut out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `keypack man`.
pub fn man(args: ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut cmd = crate::cli::command_for(&std::env::args_os().collect::<Vec<_>>());
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, "keypack", &args.out, &mut written)?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page for `cmd` named `name`, then one per subcommand (`keypack-media-update.1`).
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    if cmd.is_hide_set() || cmd.get_name() == "help" {
        return Ok(());
    }
    // clap keeps names as `&'static str` (without its "string" feature); `keypack man` runs
    // once and exits, so leaking a few short names is the simple way to rename the pages.
    let page_name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let bin_name: &'static str = Box::leak(name.replace('-', " ").into_boxed_str());
    let page = cmd.clone().name(page_name).bin_name(bin_name);
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
