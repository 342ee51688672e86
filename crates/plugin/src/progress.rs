//! Progress of long byte copies, shared by the Ventoy build's ISO copy and `keypack flash`:
//! an `indicatif` bar (bytes, throughput, ETA) on stderr when stderr is a terminal, JSON lines
//! on stdout when asked for (`keypack flash --json`), nothing otherwise.
//!
//! Supports: one bar (or stream of lines) per command, in named phases (`copy`, `write`,
//! `sync`, `verify`), advanced once per copied chunk, never per byte; labels that the caller
//! has made safe to print (an ISO's checked name, an escaped device name), never key bytes.
//! Does not support: nested bars, progress inside an fsync.
//! Why one module: a NixOS ISO is 1–3 GB, so both the build and a flash look hung without it,
//! and both should look and behave the same (indicatif's stderr target hides itself off a
//! terminal and when `TERM` is unset or `dumb`; then nothing is even made).
//!
//! JSON lines (one object per line, on stdout): `{"phase":"write","bytes_done":N,
//! "bytes_total":T,"bytes_per_second":R}` — `bytes_done` counts from 0 in each phase,
//! `bytes_per_second` is the phase's average so far (integer). One line when a phase starts,
//! at most one per [`JSON_INTERVAL`] while it runs, and one when it ends (`bytes_done` final).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Least time between two JSON progress lines of one phase.
pub const JSON_INTERVAL: Duration = Duration::from_millis(500);

struct Lines {
    phase: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    printed: Option<(Instant, u64)>,
}

impl Lines {
    fn print(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (self.done as f64 / secs) as u64
        } else {
            0
        };
        let line = serde_json::json!({
            "phase": self.phase,
            "bytes_done": self.done,
            "bytes_total": self.total,
            "bytes_per_second": rate,
        });
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop a flash half-way: progress is advisory.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        self.printed = Some((Instant::now(), self.done));
    }

    /// Prints the phase's last state unless it was the last line printed.
    fn close(&mut self) {
        if self.printed.map(|(_, d)| d) != Some(self.done) {
            self.print();
        }
    }
}

enum Shown {
    None,
    /// The bar (hidden until its first phase is set up), its label, and whether it is drawn.
    Bar(ProgressBar, String, AtomicBool),
    Json(Mutex<Lines>),
}

/// A byte progress bar, JSON progress lines, or nothing.
pub struct Progress(Shown);

impl Progress {
    /// Nothing.
    pub fn none() -> Progress {
        Progress(Shown::None)
    }

    /// A bar for copying `len` bytes (phase `copy`), labelled `copying {label}`, when stderr is
    /// a terminal; [`Progress::none`] otherwise.
    pub fn bytes(label: &str, len: u64) -> Progress {
        let p = Progress::bar(label);
        p.phase("copy", len);
        p
    }

    /// A bar on stderr (when it is a terminal; [`Progress::none`] otherwise) whose phases are
    /// shown as `{phase}ing {label}` (`copying`, `writing`, `verifying`; `syncing`).
    pub fn bar(label: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::none();
        }
        if ProgressDrawTarget::stderr().is_hidden() {
            return Progress::none();
        }
        // Drawn only once the first phase has its message and length: no half-set frame.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress(Shown::Bar(bar, label.to_owned(), AtomicBool::new(false)))
    }

    /// JSON lines on stdout (see the module documentation).
    pub fn json_lines() -> Progress {
        Progress(Shown::Json(Mutex::new(Lines {
            phase: "",
            total: 0,
            done: 0,
            started: Instant::now(),
            printed: None,
        })))
    }

    /// Whether anything is shown.
    pub fn is_shown(&self) -> bool {
        !matches!(self.0, Shown::None)
    }

    /// Starts phase `name` of `total` bytes (0: a step without bytes, such as `sync`); ends the
    /// previous one.
    pub fn phase(&self, name: &'static str, total: u64) {
        match &self.0 {
            Shown::None => {}
            Shown::Bar(bar, label, drawn) => {
                let verb = match name.strip_suffix('e') {
                    Some(stem) => format!("{stem}ing"),
                    None => format!("{name}ing"),
                };
                bar.set_length(total);
                bar.set_position(0);
                bar.reset_eta();
                bar.set_message(format!("{verb} {label}"));
                if !drawn.swap(true, Ordering::Relaxed) {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
            Shown::Json(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                if !l.phase.is_empty() {
                    l.close();
                }
                *l = Lines {
                    phase: name,
                    total,
                    done: 0,
                    started: Instant::now(),
                    printed: None,
                };
                l.print();
            }
        }
    }

    /// Adds `n` bytes to the current phase (called once per chunk).
    pub fn inc(&self, n: u64) {
        match &self.0 {
            Shown::None => {}
            Shown::Bar(bar, _, _) => bar.inc(n),
            // Nothing new to say (a phase's start was printed by `phase`).
            Shown::Json(_) if n == 0 => {}
            Shown::Json(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                l.done += n;
                let due = l
                    .printed
                    .is_none_or(|(at, _)| at.elapsed() >= JSON_INTERVAL);
                if due || l.done == l.total {
                    l.print();
                }
            }
        }
    }

    /// Ends the bar and erases its line, so what keypack prints next (`built …`, an error)
    /// starts on a clean line; for JSON lines, prints the current phase's last state. Also
    /// done on drop.
    pub fn finish(&self) {
        match &self.0 {
            Shown::None => {}
            Shown::Bar(bar, _, _) => {
                if !bar.is_finished() {
                    bar.finish_and_clear();
                }
            }
            Shown::Json(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                if !l.phase.is_empty() {
                    l.close();
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_shown_is_nothing() {
        let p = Progress::none();
        assert!(!p.is_shown());
        p.phase("write", 10);
        p.inc(10);
        p.finish();
    }
}
