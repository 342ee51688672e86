//! A throwaway keys repository for tests and benchmarks: `hosts/<host>.yaml` and
//! `users/<user>.yaml`, encrypted with the real `sops` binary to a fresh X25519 age identity.
//! The plaintext keys exist only in a temp folder removed before returning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use secrecy::ExposeSecret;

/// What [`make_repo`] made.
pub struct Repo {
    /// The repository folder.
    pub repo: PathBuf,
    /// The age identity file (0600).
    pub identity: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA… root@host`).
    pub host_public_key: String,
    /// A copy of it as a file, for `ssh-keygen -lf`.
    pub host_public_file: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates an ed25519 key pair with `ssh-keygen` at `path` (and `path.pub`); returns the
/// public line.
pub fn keygen(path: &Path, comment: &str) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))?;
    Ok(std::fs::read_to_string(path.with_extension("pub"))?)
}

/// Makes `<dir>/repo`, `<dir>/age.txt` and `<dir>/host.pub` for `host` and `users`.
pub fn make_repo(dir: &Path, host: &str, users: &[&str]) -> Result<Repo> {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let identity = dir.join("age.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret()))?;
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600))?;
    let plain = tempfile::tempdir_in(dir)?;
    let host_public_key = keygen(&plain.path().join("host"), &format!("root@{host}"))?;
    let mut docs = vec![(
        format!("hosts/{host}.yaml"),
        "ssh_host_ed25519_key",
        "host".to_owned(),
    )];
    for u in users {
        keygen(&plain.path().join(u), &format!("{u}@{host}"))?;
        docs.push((format!("users/{u}.yaml"), "id_ed25519", (*u).to_owned()));
    }
    let repo = dir.join("repo");
    for (doc, field, key) in docs {
        let pem = std::fs::read_to_string(plain.path().join(&key))?;
        let mut yaml = format!("{field}: |\n");
        for line in pem.lines() {
            yaml.push_str(&format!("  {line}\n"));
        }
        let src = plain.path().join(format!("{key}.yaml"));
        std::fs::write(&src, yaml)?;
        let enc = run(Command::new("sops")
            .args(["--encrypt", "--age", &recipient])
            .args(["--input-type", "yaml", "--output-type", "yaml"])
            .arg(&src)
            .current_dir(dir))?;
        let out = repo.join(doc);
        std::fs::create_dir_all(out.parent().expect("parent"))?;
        std::fs::write(out, enc)?;
    }
    let host_public_file = dir.join("host.pub");
    std::fs::write(&host_public_file, &host_public_key)?;
    Ok(Repo {
        repo,
        identity,
        host_public_key,
        host_public_file,
    })
}
