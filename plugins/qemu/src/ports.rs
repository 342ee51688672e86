//! The SSH forward port: is it free on 127.0.0.1, and who holds it if not.

use std::net::{Ipv4Addr, TcpListener};

use crate::QemuError;

/// Which host port forwards to the guest's SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    /// This port; taken is an error.
    Fixed(u16),
    /// Any free port.
    Auto,
}

impl std::str::FromStr for PortChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(PortChoice::Auto);
        }
        match s.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1-65535) or `auto`")),
            Ok(p) => Ok(PortChoice::Fixed(p)),
        }
    }
}

/// Resolves the choice to a port that is free right now on 127.0.0.1.
pub fn pick(choice: PortChoice) -> Result<u16, QemuError> {
    match choice {
        PortChoice::Auto => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| QemuError::PortInUse {
                port: 0,
                owner: Some(format!("no free port: {e}")),
            }),
        PortChoice::Fixed(port) => match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => Ok(port),
            Err(_) => Err(QemuError::PortInUse {
                port,
                owner: owner(port),
            }),
        },
    }
}

/// `pid N (comm)` of the process listening on TCP `port`, when /proc shows it.
pub fn owner(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                let comm = std::fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".into());
                return Some(format!("pid {pid} ({comm})"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_its_owner() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let err = pick(PortChoice::Fixed(port)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("127.0.0.1:{port} is already in use")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        assert_eq!(pick(PortChoice::Fixed(port)).unwrap(), port);
        assert!(pick(PortChoice::Auto).unwrap() > 0);
        assert!("0".parse::<PortChoice>().is_err());
        assert_eq!("auto".parse::<PortChoice>(), Ok(PortChoice::Auto));
    }
}
