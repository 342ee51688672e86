//! A progress bar for long copies (the ISO into an image, onto a stick, or `keypack copy`):
//! bytes, throughput and ETA on stderr, only when stderr is a terminal.
//!
//! Supports: one bar per copy, advanced once per copied chunk (never per byte), labelled with
//! the ISO's name only (never a key file's name or any key bytes).
//! Does not support: progress of the final fsync, or of anything but byte copies.
//! Why: a NixOS ISO is 1–3 GB; without a bar `keypack build` looks hung for seconds. Off a
//! terminal (a pipe, a log, CI) it prints nothing: indicatif's stderr target hides itself there
//! (and when `TERM` is unset or `dumb`), and [`Progress::bytes`] does not even make a bar.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte progress bar, or nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// No bar.
    pub fn none() -> Progress {
        Progress(None)
    }

    /// A bar for copying `len` bytes, labelled `label` (the ISO's name: the caller passes only
    /// a name safe to print, e.g. one checked by [`crate::iso_name`] or escaped), when stderr is
    /// a terminal; [`Progress::none`] otherwise.
    pub fn bytes(label: &str, len: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::none();
        }
        let target = ProgressDrawTarget::stderr();
        if target.is_hidden() {
            return Progress::none();
        }
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("copying {label}"));
        Progress(Some(bar))
    }

    /// Whether a bar is shown.
    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    /// Adds `n` copied bytes (called once per chunk).
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// Ends the bar and erases its line, so what keypack prints next (`built …`, an error)
    /// starts on a clean line. Also done on drop.
    pub fn finish(&self) {
        if let Some(bar) = &self.0
            && !bar.is_finished()
        {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
