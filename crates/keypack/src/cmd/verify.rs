//! `keypack verify`: decrypt and check every key a build would pack, write nothing, and print
//! one line per key: its path in the bundle and its SHA256 fingerprint. Goes on past a failing
//! key so that one run names every problem (ripgrep's habit); exits 1 if any key failed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cmd::{CliError, KeyArgs};
use crate::keys;

/// Flags of `keypack verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// `keypack verify`.
pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let selection = args.keys.selection();
    let (reports, _manifest) = keys::verify_keys(&selection)?;
    let mut out = std::io::stdout().lock();
    let width = reports
        .iter()
        .map(|r| r.role.private_path().len())
        .max()
        .unwrap_or(0);
    let mut failed = 0;
    for report in &reports {
        let path = report.role.private_path();
        match &report.result {
            Ok(fingerprint) => writeln!(
                out,
                "{path:width$}  {fingerprint}  {}",
                report.source.display()
            )?,
            Err(e) => {
                failed += 1;
                out.flush()?;
                eprintln!("error: {path}: {e:#}");
                for cause in e.chain() {
                    if let Some(hint) = crate::cmd::hint_for(cause) {
                        eprintln!("hint: {hint}");
                        break;
                    }
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        return Err(CliError::VerifyFailed {
            failed,
            total: reports.len(),
        }
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
