//! A minimal QMP client: greeting, `qmp_capabilities`, one command at a time, events skipped.
//!
//! Supports: commands without file-descriptor passing over a unix socket. Does not support:
//! asynchronous events (read and dropped), out-of-band execution.
//! Reference: QEMU `docs/interop/qmp-spec.rst`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::QemuError;

/// An open QMP session.
pub struct Qmp {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, QemuError> {
        let err = |why: String| QemuError::Qmp {
            socket: socket.to_path_buf(),
            why,
        };
        let stream = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| err(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| err(e.to_string()))?;
        let mut qmp = Self {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(err(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn err(&self, why: impl Into<String>) -> QemuError {
        QemuError::Qmp {
            socket: self.socket.clone(),
            why: why.into(),
        }
    }

    fn read_message(&mut self) -> Result<Value, QemuError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| self.err(e.to_string()))?;
        if n == 0 {
            return Err(self.err("connection closed"));
        }
        serde_json::from_str(&line).map_err(|e| self.err(format!("bad message: {e}")))
    }

    /// Runs `command` and returns its `return` value. A closed connection after `quit` is
    /// reported as an error the caller may ignore.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QemuError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.err(e.to_string()))?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = reply.get("error") {
                return Err(self.err(format!("{command}: {error}")));
            }
        }
    }
}
