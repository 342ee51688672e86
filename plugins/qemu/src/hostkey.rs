//! The pinned host key: fingerprints, the VM's known_hosts file, and asking the VM which key it
//! serves (`ssh-keyscan`), so a mismatch is refused with both fingerprints before `ssh` runs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ssh_key::{HashAlg, PublicKey};

use crate::QemuError;

/// `SHA256:…` of an OpenSSH public key line.
pub fn fingerprint(line: &str) -> Result<String, QemuError> {
    parse(line).map(|k| k.fingerprint(HashAlg::Sha256).to_string())
}

fn parse(line: &str) -> Result<PublicKey, QemuError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| QemuError::BadHostKey { why: e.to_string() })
}

/// Whether two public key lines hold the same key (comments ignored).
pub fn same_key(a: &str, b: &str) -> Result<bool, QemuError> {
    Ok(parse(a)?.key_data() == parse(b)?.key_data())
}

/// The alias under which the VM's key is pinned (`HostKeyAlias`).
pub fn alias(host: &str) -> String {
    format!("keypack-{host}")
}

/// Writes `<dir>/known_hosts` pinning `public_key` under [`alias`] (0600, temp and rename).
pub fn write_known_hosts(path: &Path, host: &str, public_key: &str) -> Result<(), QemuError> {
    let key = parse(public_key)?;
    let line = format!(
        "{} {}\n",
        alias(host),
        key.to_openssh()
            .map_err(|e| QemuError::BadHostKey { why: e.to_string() })?
    );
    keypack_plugin::output::write_private_file(path, line.as_bytes())
        .map_err(QemuError::state(path))
}

/// Whether an SSH server answers on 127.0.0.1:`port` with its banner within `timeout`. Cheap
/// and quick to poll: QEMU's user network accepts the connection at once even before the guest
/// listens, so only the banner shows that the guest's server is up.
pub fn banner(port: u16, timeout: Duration) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// The ed25519 host key the SSH server on 127.0.0.1:`port` presents, or `None` when nothing
/// answered within `timeout`.
pub fn scan(port: u16, timeout: Duration) -> Result<Option<String>, QemuError> {
    // Absolute PATH entries only, and a scrubbed environment (keypack_plugin::child).
    let out = keypack_plugin::child::command_for("ssh-keyscan", &[])
        .args(["-T", &timeout.as_secs().max(1).to_string()])
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| QemuError::Tool {
            tool: "ssh-keyscan",
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut cols = l.split_whitespace().skip(1);
        match (cols.next(), cols.next()) {
            (Some(kind), Some(data)) => Some(format!("{kind} {data}")),
            _ => None,
        }
    }))
}

/// Checks `served` against `pinned`: equal, or [`QemuError::HostKeyMismatch`] with both
/// fingerprints.
pub fn check(pinned: &str, served: &str) -> Result<(), QemuError> {
    if same_key(pinned, served)? {
        Ok(())
    } else {
        Err(QemuError::HostKeyMismatch {
            expected: fingerprint(pinned)?,
            got: fingerprint(served)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKHBcFm7O1ITV2fhMBMnqknx9q/RGG08vzL6n5A7JCNW a";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEdqbRaNmlsP77owhVAtl17sgEI+T6oQ1+XxIZzcnOXK";

    #[test]
    fn mismatch_shows_both_fingerprints() {
        check(A, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKHBcFm7O1ITV2fhMBMnqknx9q/RGG08vzL6n5A7JCNW other")
            .unwrap();
        let err = check(A, B).unwrap_err().to_string();
        assert!(err.contains(&fingerprint(A).unwrap()), "{err}");
        assert!(err.contains(&fingerprint(B).unwrap()), "{err}");
        assert!(fingerprint(A).unwrap().starts_with("SHA256:"));
    }

    #[test]
    fn known_hosts_pins_the_key_under_the_alias() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        write_known_hosts(&path, "web1", A).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("keypack-web1 ssh-ed25519 AAAAC3"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
}
