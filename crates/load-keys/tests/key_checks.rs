//! Security finding 5: load-keys must not follow hard links in the source tree and must check
//! what it copies — the private key must be an OpenSSH ed25519 private key and its `.pub` the
//! same key, else both files are skipped with a console line. Needs root (sets owners).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_load-keys");
const HOST: &str = "etc/ssh/ssh_host_ed25519_key";
const DEPLOY: &str = "root/.ssh/deploy_key_ed25519";

fn not_root(test: &str) -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return false;
    }
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: required but cannot run: needs root (sets owners)");
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("KEYPACK-SKIPPED: {test}: needs root (sets owners)\n").as_bytes(),
    );
    true
}

struct Fx {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    src: PathBuf,
    tgt: PathBuf,
    stage: PathBuf,
}

fn fixture() -> Fx {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    let (src, tgt, run) = (base.join("src"), base.join("tgt"), base.join("run"));
    for d in [&src, &tgt, &run] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Fx {
        _tmp: tmp,
        stage: run.join("keypack"),
        base,
        src,
        tgt,
    }
}

/// A real key pair from ssh-keygen: (private, public). `None` if ssh-keygen is missing.
fn keygen(dir: &Path, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let path = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return None;
    }
    let pair = (
        fs::read(&path).unwrap(),
        fs::read(path.with_extension("pub")).unwrap(),
    );
    fs::remove_file(&path).unwrap();
    fs::remove_file(path.with_extension("pub")).unwrap();
    Some(pair)
}

fn put(root: &Path, rel: &str, body: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn stage1(fx: &Fx) -> (Output, String, String) {
    let out = Command::new(BIN)
        .arg("--stage-dir")
        .arg(&fx.stage)
        .arg(&fx.src)
        .arg(&fx.tgt)
        .output()
        .expect("run load-keys");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn pair_or_skip(fx: &Fx, test: &str, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let pair = keygen(&fx.base, name);
    if pair.is_none() {
        if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{test}: required but cannot run: no ssh-keygen");
        }
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("KEYPACK-SKIPPED: {test}: no ssh-keygen\n").as_bytes(),
        );
    }
    pair
}

#[test]
fn valid_ssh_keygen_pair_still_installs() {
    const T: &str = "valid_ssh_keygen_pair_still_installs";
    if not_root(T) {
        return;
    }
    let fx = fixture();
    let Some((private, public)) = pair_or_skip(&fx, T, "host") else {
        return;
    };
    put(&fx.src, HOST, &private);
    put(&fx.src, &format!("{HOST}.pub"), &public);
    let (out, stdout, stderr) = stage1(&fx);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(fs::read(fx.tgt.join(HOST)).unwrap(), private);
    assert_eq!(
        fs::read(fx.tgt.join(format!("{HOST}.pub"))).unwrap(),
        public
    );
    assert_eq!(
        fs::metadata(fx.tgt.join(HOST)).unwrap().mode() & 0o7777,
        0o600
    );
}

#[test]
fn hard_linked_private_key_is_refused() {
    const T: &str = "hard_linked_private_key_is_refused";
    if not_root(T) {
        return;
    }
    let fx = fixture();
    let Some((private, public)) = pair_or_skip(&fx, T, "host") else {
        return;
    };
    // The "key" is a hard link to a file elsewhere on the medium (here: outside the tree).
    let elsewhere = fx.base.join("elsewhere");
    fs::write(&elsewhere, &private).unwrap();
    fs::create_dir_all(fx.src.join("etc/ssh")).unwrap();
    fs::hard_link(&elsewhere, fx.src.join(HOST)).unwrap();
    put(&fx.src, &format!("{HOST}.pub"), &public);
    // A hard-linked .pub of the deploy key, too.
    let Some((dpriv, dpub)) = pair_or_skip(&fx, T, "deploy") else {
        return;
    };
    put(&fx.src, DEPLOY, &dpriv);
    let dpub_elsewhere = fx.base.join("dpub");
    fs::write(&dpub_elsewhere, &dpub).unwrap();
    fs::hard_link(&dpub_elsewhere, fx.src.join(format!("{DEPLOY}.pub"))).unwrap();

    let (out, stdout, stderr) = stage1(&fx);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "src/{HOST}: has 2 hard links, refusing a hard-linked key file"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "src/{DEPLOY}.pub: has 2 hard links, refusing a hard-linked key file"
        )),
        "{stderr}"
    );
    assert!(!fx.tgt.join(HOST).exists(), "hard-linked key copied");
    assert!(!fx.tgt.join(format!("{DEPLOY}.pub")).exists());
    assert_eq!(
        fs::read(&elsewhere).unwrap(),
        private,
        "link target changed"
    );
}

#[test]
fn garbage_private_key_is_refused_with_its_pub() {
    const T: &str = "garbage_private_key_is_refused_with_its_pub";
    if not_root(T) {
        return;
    }
    let fx = fixture();
    let Some((_, public)) = pair_or_skip(&fx, T, "host") else {
        return;
    };
    let garbage =
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETGARBAGE\n-----END OPENSSH PRIVATE KEY-----\n";
    put(&fx.src, HOST, garbage);
    put(&fx.src, &format!("{HOST}.pub"), &public);
    // A valid user key next to it still gets staged.
    let Some((upriv, upub)) = pair_or_skip(&fx, T, "alice") else {
        return;
    };
    put(&fx.src, "users/alice/.ssh/id_ed25519", &upriv);
    put(&fx.src, "users/alice/.ssh/id_ed25519.pub", &upub);

    let (out, stdout, stderr) = stage1(&fx);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing injected key /{HOST} (and its .pub): not an unencrypted OpenSSH ed25519 private key"
        )),
        "{stderr}"
    );
    assert!(
        !stdout.contains("SECRETGARBAGE") && !stderr.contains("SECRETGARBAGE"),
        "key content printed"
    );
    assert!(!fx.tgt.join(HOST).exists(), "garbage key copied");
    assert!(!fx.tgt.join(format!("{HOST}.pub")).exists(), ".pub copied");
    assert_eq!(
        fs::read(fx.stage.join("users/alice/id_ed25519")).unwrap(),
        upriv
    );
    // Plain binary junk and an encrypted-looking key are refused too.
    for junk in [&b"\x00\x01\x02 not a key"[..], b"ssh-ed25519 AAAA"] {
        let fx = fixture();
        put(&fx.src, HOST, junk);
        let (out, _, stderr) = stage1(&fx);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!fx.tgt.join(HOST).exists());
    }
}

#[test]
fn mismatched_pub_is_refused_with_its_key() {
    const T: &str = "mismatched_pub_is_refused_with_its_key";
    if not_root(T) {
        return;
    }
    let fx = fixture();
    let (Some((private, _)), Some((_, other_pub))) =
        (pair_or_skip(&fx, T, "host"), pair_or_skip(&fx, T, "other"))
    else {
        return;
    };
    put(&fx.src, HOST, &private);
    put(&fx.src, &format!("{HOST}.pub"), &other_pub);
    let (out, stdout, stderr) = stage1(&fx);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing injected key /{HOST} (and its .pub): the .pub file does not hold the public key of the private key"
        )),
        "{stderr}"
    );
    assert!(!fx.tgt.join(HOST).exists(), "mismatched key copied");
    assert!(!fx.tgt.join(format!("{HOST}.pub")).exists());
    // A .pub that is not a public key at all.
    let fx = fixture();
    put(&fx.src, HOST, &private);
    put(
        &fx.src,
        &format!("{HOST}.pub"),
        b"ssh-rsa AAAAB3NzaC1yc2E= x\n",
    );
    let (out, _, stderr) = stage1(&fx);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an ssh-ed25519 public key"), "{stderr}");
    assert!(!fx.tgt.join(HOST).exists());
}
