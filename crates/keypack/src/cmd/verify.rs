//! `keypack verify`: decrypt and check every key a build would pack, write nothing, and print
//! one line per key: its path in the bundle and its SHA256 fingerprint. Goes on past a failing
//! key so that one run names every problem (ripgrep's habit); exits 1 if any key failed.
//! `--json` prints one document instead (fields in the README); errors still go to stderr.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use keypack_layout::KeyRole;
use serde_json::json;

use crate::cmd::{CliError, KeyArgs};
use crate::keys;

/// Flags of `keypack verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Print one JSON document on stdout (host, and per key: path, role, user, source,
    /// fingerprint or error) instead of lines
    #[arg(long)]
    pub json: bool,
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
    let mut documents = Vec::new();
    for report in &reports {
        let path = report.role.private_path();
        let (role, user) = match &report.role {
            KeyRole::Host => ("host", None),
            KeyRole::Deploy => ("deploy", None),
            KeyRole::User(u) => ("user", Some(u.as_str())),
        };
        let mut doc = json!({
            "path": path,
            "role": role,
            "user": user,
            "source": report.source.display().to_string(),
            "fingerprint": null,
            "error": null,
        });
        match &report.result {
            Ok(fingerprint) => {
                doc["fingerprint"] = json!(fingerprint);
                if !args.json {
                    writeln!(
                        out,
                        "{path:width$}  {fingerprint}  {}",
                        report.source.display()
                    )?;
                }
            }
            Err(e) => {
                failed += 1;
                // As in the text output: the message may quote names from the repository.
                doc["error"] = json!(crate::cmd::escape::field(&format!("{e:#}")));
                out.flush()?;
                let text =
                    crate::cmd::escape::StreamEscaper::default().feed(format!("{e:#}").as_bytes());
                eprintln!("error: {path}: {text}");
                for cause in e.chain() {
                    if let Some(hint) = crate::cmd::hint_for(cause) {
                        eprintln!("hint: {hint}");
                        break;
                    }
                }
            }
        }
        documents.push(doc);
    }
    if args.json {
        let doc = json!({
            "host": selection.host.as_str(),
            "ok": failed == 0,
            "keys": documents,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
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
