//! The messages of the external plugin protocol (`PROTOCOL.md`), one JSON object per line.
//!
//! Every message has a `type`. keypack speaks first; the plugin answers each request with one
//! message. Unknown fields are ignored on both sides, so a minor addition needs no new version.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::BootDescription;

/// The protocol versions this keypack speaks, newest last.
pub const VERSIONS: &[u32] = &[1];

/// The `protocol` field of `hello`: tells a program started by mistake what it is talking to.
pub const PROTOCOL_NAME: &str = "keypack-plugin";

/// Longest line either side accepts (1 MiB): a plugin sending garbage without a newline cannot
/// make keypack buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

/// keypack → plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Request {
    /// First message: the versions keypack speaks.
    Hello {
        /// Always [`PROTOCOL_NAME`].
        protocol: String,
        /// Versions keypack speaks.
        versions: Vec<u32>,
    },
    /// Asks for the plugin's [`Description`].
    Describe,
    /// Builds the medium; the bundle is the inherited file descriptor `bundle_fd`.
    Build(Box<BuildRequest>),
    /// A runner starts a machine from a boot description and returns once it runs.
    Start(Box<StartRequest>),
    /// A runner stops the machine it started.
    Stop(StopRequest),
    /// Last message; the plugin exits with status 0.
    Bye,
}

/// plugin → keypack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to `hello`: the one version the plugin chose from keypack's list.
    Hello {
        /// The chosen version.
        version: u32,
    },
    /// Answer to `describe`.
    Description(Description),
    /// Answer to `build`: what was built and how to boot it.
    Built {
        /// The boot description.
        boot: BootDescription,
    },
    /// Answer to `start`: the machine runs.
    Started(StartedReply),
    /// Answer to `stop`: how the machine ended.
    Stopped {
        /// How.
        outcome: StopOutcome,
    },
    /// Answer to any request that failed.
    Error(ErrorReply),
}

/// The `start` request of a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The host whose build this is.
    pub host: String,
    /// What to boot (paths; the build's artifacts are 0600 files of the same user).
    pub boot: BootDescription,
    /// The runner's own folder for this host (`<state>/runner-NAME`, 0700, absolute): its
    /// pidfile, sockets and console log go here, and it is the runner's working directory.
    pub state_dir: PathBuf,
    /// The port on 127.0.0.1 that must reach the guest's port 22 (keypack checked it is free).
    pub ssh_port: u16,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// `user` (outbound access) or `isolated` (none; only the SSH forward comes in).
    pub network: Network,
    /// Raw disk images to attach read-write after the boot medium.
    #[serde(default)]
    pub extra_disks: Vec<PathBuf>,
    /// For a sealed build (`--seal passphrase`): the inherited file descriptor of a
    /// read-only sealed memfd holding the passphrase keypack checked, for the runner to hand
    /// the guest (QEMU: `-fw_cfg name=opt/io.keypack.passphrase`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_fd: Option<i32>,
    /// Size of the passphrase in bytes (0 without one).
    #[serde(default)]
    pub passphrase_len: u64,
}

/// The guest network of a `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Outbound access.
    User,
    /// No access beyond the SSH forward.
    Isolated,
}

/// The answer to `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedReply {
    /// The process that is the machine (keypack checks it is alive for `status` and `ssh`).
    pub pid: u32,
    /// The machine's console log, when the runner keeps one (`keypack log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<PathBuf>,
    /// One line for the user (a fallback taken, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// The `stop` request of a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The host.
    pub host: String,
    /// The runner's folder, as in `start`.
    pub state_dir: PathBuf,
    /// The pid `started` named.
    pub pid: u32,
    /// Seconds the guest has to power off before the runner forces it.
    pub timeout_secs: u64,
}

/// How a machine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopOutcome {
    /// It was not running.
    NotRunning,
    /// The guest powered off when asked.
    PoweredOff,
    /// The guest ignored the request; the machine was told to quit.
    Quit,
    /// It was killed.
    Killed,
}

/// What kind of plugin a program is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// A boot medium (`keypack-media-NAME`).
    Media,
    /// A runner (`keypack-runner-NAME`).
    Runner,
}

/// A plugin's answer to `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// `media` or `runner`.
    pub kind: PluginKind,
    /// The value of `--media` (the `NAME` of `keypack-media-NAME`).
    pub name: String,
    /// One line for `keypack plugins`.
    pub about: String,
    /// Whether `build` needs an ISO (then keypack resolves one, running `nix build`).
    #[serde(default)]
    pub needs_iso: bool,
    /// File name of the artifact in the host's state folder.
    #[serde(default)]
    pub default_artifact_name: String,
    /// File name of the artifact when it is named after the host: `{host}` stands for the
    /// host's name (`{host}.iso` gives `web1.iso`). Absent: `default_artifact_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_name: Option<String>,
    /// Heading of its flags in `keypack build --help` [default: `NAME medium (--media NAME)`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// Its flags for `keypack build`.
    #[serde(default)]
    pub flags: Vec<FlagSpec>,
}

/// One flag of an external medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSpec {
    /// Long name without dashes (`kernel` for `--kernel`).
    pub name: String,
    /// What it takes.
    pub value: FlagValue,
    /// Help line.
    #[serde(default)]
    pub help: String,
    /// Placeholder in the help (`FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_name: Option<String>,
}

/// The value type of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagValue {
    /// A string.
    String,
    /// A path; keypack makes it absolute before sending it.
    Path,
    /// An unsigned integer.
    Integer,
    /// No value: present or not (sent as `true` when given).
    Switch,
}

/// A flag value as sent in `build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagSetting {
    /// A switch that was given.
    Switch(bool),
    /// Any other value, as typed (paths made absolute).
    Value(String),
}

/// The `build` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The host being built.
    pub host: String,
    /// The ISO, when one was given or built.
    pub iso: Option<PathBuf>,
    /// Where the artifact goes (absolute).
    pub output: PathBuf,
    /// The host's state folder (0700, absolute).
    pub state_dir: PathBuf,
    /// Seed for identifiers that are random by default.
    pub seed: Option<u64>,
    /// `keypack rebuild`: ignore every cache.
    pub ignore_cache: bool,
    /// The flags the user gave, by name.
    pub flags: BTreeMap<String, FlagSetting>,
    /// The file descriptor number of the bundle: a read-only, sealed memfd holding
    /// `keys.tar.gz`, inherited by the plugin.
    pub bundle_fd: i32,
    /// Size of the archive in bytes.
    pub bundle_len: u64,
    /// What the archive holds (no secret).
    pub manifest: Vec<ManifestItem>,
}

/// One entry of the bundle's manifest, as sent to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    /// Path inside the archive (`etc/ssh/ssh_host_ed25519_key`).
    pub path: String,
    /// `host`, `deploy` or `user`.
    pub role: String,
    /// The user, for role `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The `.pub` half.
    pub public: bool,
    /// Mode bits (0600 or 0644), as a number.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// `ssh-ed25519 AAAA… comment`.
    pub public_key: String,
    /// `true` for a private key that is inside `keypack/sealed.age` (a `--seal` build), not
    /// in the archive in plaintext. Absent means `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

impl From<&keypack_bundle::ManifestEntry> for ManifestItem {
    fn from(e: &keypack_bundle::ManifestEntry) -> Self {
        use keypack_layout::KeyRole;
        let (role, user) = match &e.role {
            KeyRole::Host => ("host", None),
            KeyRole::Deploy => ("deploy", None),
            KeyRole::User(u) => ("user", Some(u.to_string())),
        };
        Self {
            path: e.path.clone(),
            role: role.to_owned(),
            user,
            public: e.public,
            mode: e.mode,
            size: e.size,
            fingerprint: e.fingerprint.clone(),
            public_key: e.public_key.clone(),
            sealed: e.sealed,
        }
    }
}

impl ManifestItem {
    /// The bundle's own entry, for a plugin reopening the archive (`serve`); `None` for a
    /// role or user name the layout does not know.
    pub fn to_entry(&self) -> Option<keypack_bundle::ManifestEntry> {
        use keypack_layout::{KeyRole, UserName};
        let role = match (self.role.as_str(), &self.user) {
            ("host", None) => KeyRole::Host,
            ("deploy", None) => KeyRole::Deploy,
            ("user", Some(u)) => KeyRole::User(UserName::new(u).ok()?),
            _ => return None,
        };
        Some(keypack_bundle::ManifestEntry {
            path: self.path.clone(),
            role,
            public: self.public,
            mode: self.mode,
            uid: 0,
            gid: 0,
            size: self.size,
            fingerprint: self.fingerprint.clone(),
            public_key: self.public_key.clone(),
            sealed: self.sealed,
        })
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong (one line).
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let hello = serde_json::to_string(&Request::Hello {
            protocol: PROTOCOL_NAME.into(),
            versions: vec![1],
        })
        .unwrap();
        assert_eq!(
            hello,
            r#"{"type":"hello","protocol":"keypack-plugin","versions":[1]}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Describe).unwrap(),
            r#"{"type":"describe"}"#
        );
        let err: Response =
            serde_json::from_str(r#"{"type":"error","message":"no kernel","x":1}"#).unwrap();
        assert_eq!(
            err,
            Response::Error(ErrorReply {
                message: "no kernel".into(),
                hint: None
            })
        );
        let flags: BTreeMap<String, FlagSetting> =
            serde_json::from_str(r#"{"a":true,"b":"x"}"#).unwrap();
        assert_eq!(flags["a"], FlagSetting::Switch(true));
        assert_eq!(flags["b"], FlagSetting::Value("x".into()));
    }
}
