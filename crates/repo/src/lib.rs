//! Resolves a host's and users' key files in a nix-keys repository.
//!
//! Position on the data path: `**keys repo** → decrypt → bundle → media plugin`. Input is a
//! repository folder, a [`HostName`] and [`UserName`]s; output is a list of [`KeySource`]s: for
//! each key, its [`KeyRole`], the file that holds it, how to get it out of that file
//! ([`Extract`]) and where a stored public key may be ([`PublicSource`]). [`KeysRepo::read_file`]
//! reads a resolved file without following a symlink that appeared after resolution.
//!
//! Does **not** decrypt or parse sops/age files (the CLI joins this crate and `keypack-sops`),
//! and never learns a secret: the only file content it looks at is the first bytes of a per-key
//! file, to tell an age file from a sops binary envelope.
//!
//! # Layout (the default; `keypack.toml` may move the two folders)
//! - host `H`: either a sops document `hosts/H.{yaml,yml,json,env}` with the top-level fields
//!   `ssh_host_ed25519_key` (required) and `deploy_key_ed25519` (optional), each with an optional
//!   plaintext public key in `<field>_pub`; or a folder `hosts/H/` holding one file per key,
//!   named after the field with or without an extension (`ssh_host_ed25519_key`,
//!   `ssh_host_ed25519_key.yaml`, `deploy_key_ed25519.age`, …), each a sops binary envelope or a
//!   plain age file (told apart by content), and optionally `<field>.pub`, a plaintext public key.
//! - user `U`: `users/U.{yaml,yml,json,env}` with field `id_ed25519`, or `users/U/id_ed25519`
//!   likewise.
//! - `keypack.toml` at the repository root (optional): `hosts = "machines"`, `users = "people"`,
//!   folders relative to the root.
//!
//! # Why
//! - INI is not a document format here: its values live in sections, so it has no top-level
//!   fields (`decisions.md`).
//! - Two candidates for one key (a document and a folder, two documents, two extensions) are an
//!   error naming both paths: choosing silently would pack a key the operator did not mean.
//! - Names are [`HostName`]/[`UserName`], validated when parsed, so no path is ever built from an
//!   unchecked name.
//! - Symlinks inside the repository are followed, but only within one host or user (or into a
//!   folder outside the hosts and users folders): a link from one entity into another's files
//!   is refused, because sops authenticates a value and its field path, not the file's place,
//!   so such a link would pack one entity's key in another's role with a valid MAC. A symlink
//!   whose target leaves the repository is refused, because the repository is the unit an
//!   operator reviews. Each resolved path is canonical, and [`KeysRepo::read_file`]
//!   opens it one component at a time with `O_NOFOLLOW`, so a symlink swapped in after
//!   resolution is refused rather than followed.
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use keypack_layout::{DEPLOY_KEY_NAME, HOST_KEY_NAME, HostName, KeyRole, USER_KEY_NAME, UserName};
use rustix::fs::{Mode, OFlags};

/// Name of the optional configuration file at the repository root.
pub const CONFIG_FILE: &str = "keypack.toml";

/// Largest repository file read (a sops document may hold more than keys, and many recipients).
pub const MAX_REPO_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Extensions of host and user documents, in the order they are looked for.
pub const DOCUMENT_EXTENSIONS: &[&str] = &["yaml", "yml", "json", "env"];

/// Why a keys repository could not be resolved.
///
/// Variants name paths, hosts, users and fields, never file content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The repository root is missing or not a folder.
    #[error("keys repository {path} is not a folder")]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// `keypack.toml` could not be parsed or holds an invalid value.
    #[error("{path}: {message}")]
    Config {
        /// Path of `keypack.toml`.
        path: PathBuf,
        /// What is wrong (from the TOML parser or the path check).
        message: String,
    },
    /// No document and no folder for the host.
    #[error("unknown host {host}: none of {} exists", list(looked_in))]
    UnknownHost {
        /// The host asked for.
        host: HostName,
        /// Every path tried.
        looked_in: Vec<PathBuf>,
    },
    /// No document and no folder for the user.
    #[error("unknown user {user}: none of {} exists", list(looked_in))]
    UnknownUser {
        /// The user asked for.
        user: UserName,
        /// Every path tried.
        looked_in: Vec<PathBuf>,
    },
    /// A per-key folder exists but lacks a required key.
    #[error("{folder}: no file named {field} (with or without an extension)")]
    MissingKeyFile {
        /// The per-key folder.
        folder: PathBuf,
        /// The field (file name) looked for.
        field: &'static str,
    },
    /// Two candidates for the same key.
    #[error("{field}: two candidates, {first} and {second}; keep one")]
    Ambiguous {
        /// The field (key) both could hold.
        field: &'static str,
        /// One candidate.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A `.pub` file without its private key beside it.
    #[error("{path}: public key without a private key ({field}) beside it")]
    OrphanPublicKey {
        /// The `.pub` file.
        path: PathBuf,
        /// The field whose private key is missing.
        field: &'static str,
    },
    /// A file name that looks like an encrypted public key (`<field>.pub.<ext>`).
    #[error(
        "{path}: public keys are kept in plaintext as {field}.pub; an encrypted public key is not supported"
    )]
    EncryptedPublicKey {
        /// The file.
        path: PathBuf,
        /// The field it names.
        field: &'static str,
    },
    /// A document in a format that has no top-level fields (INI).
    #[error("{path}: INI documents have no top-level fields; use .yaml, .yml, .json or .env")]
    UnsupportedDocument {
        /// The document.
        path: PathBuf,
    },
    /// A path resolves (through a symlink) to somewhere outside the repository.
    #[error("{path} leads outside the keys repository (to {target})")]
    OutsideRepo {
        /// The path inside the repository.
        path: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
    },
    /// A symlink of one host or user resolves to a file or folder of another.
    #[error("{path} leads to {target}, which belongs to {owner}")]
    CrossEntityLink {
        /// The path of the entity being resolved.
        path: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The other entity, as `host NAME` or `user NAME`.
        owner: String,
    },
    /// A candidate is a folder, a device or a socket rather than a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file is larger than any key file could be.
    #[error("{path} is {size} bytes, more than the {max} a keys file may have")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_REPO_FILE_SIZE`].
        max: u64,
    },
    /// A component of a resolved path became a symlink between resolution and reading.
    #[error("{path}: a path component is a symlink; refusing to follow it")]
    SymlinkComponent {
        /// The path being read.
        path: PathBuf,
    },
    /// Reading the file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl RepoError {
    /// A "what to do" line for this error, printed by the CLI as `hint: …`.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RepoError::NotAFolder { .. } => Some(
                "point keypack at the keys repository with --keys-repo DIR, KEYPACK_KEYS_REPO or \
                 `keys_repo = \"DIR\"` in ~/.config/keypack/config.toml",
            ),
            RepoError::UnknownHost { .. } | RepoError::UnknownUser { .. } => Some(
                "check the spelling, and that --keys-repo points at the right repository (and \
                 keypack.toml at its folders)",
            ),
            RepoError::Ambiguous { .. } => {
                Some("remove or rename one of the two files, so each key has exactly one source")
            }
            RepoError::OutsideRepo { .. } | RepoError::SymlinkComponent { .. } => {
                Some("replace the symlink with the file itself, or a symlink inside the repository")
            }
            RepoError::CrossEntityLink { .. } => Some(
                "each host and user keeps its own key files: a link into another one's files would pack that one's key in this role",
            ),
            _ => None,
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The text format of a sops document or binary envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    /// `.yaml` / `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.env` (dotenv).
    Dotenv,
}

impl DocumentFormat {
    /// The format of a document extension (`yaml`, `yml`, `json`, `env`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            "env" => Some(Self::Dotenv),
            _ => None,
        }
    }

    /// Guesses the envelope format of a sops binary file without a known extension.
    fn sniff(head: &[u8]) -> Self {
        let text = head.trim_ascii_start();
        if text.starts_with(b"{") {
            Self::Json
        } else if text.starts_with(b"data=") || text.starts_with(b"sops_") {
            Self::Dotenv
        } else {
            Self::Yaml
        }
    }
}

/// How to get a key out of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extract {
    /// A top-level field of a sops document.
    DocumentField {
        /// The document's format (from its extension).
        format: DocumentFormat,
        /// The field holding the OpenSSH private key.
        field: &'static str,
    },
    /// The `data` of a sops binary envelope (`sops encrypt --input-type binary`).
    BinaryEnvelope {
        /// The envelope's format (from the extension, else from the content).
        format: DocumentFormat,
    },
    /// A plain age file, armored or binary, whose plaintext is the key.
    AgeFile,
}

/// Where a plaintext public key stored beside the private key may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicSource {
    /// An optional field of the same document (`<field>_pub`); absent is fine.
    Field(String),
    /// A `.pub` file beside the per-key file (it exists).
    File(PathBuf),
}

/// One key to decrypt: whose it is, where, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// Whose key.
    pub role: KeyRole,
    /// The file holding it: canonical, inside the repository.
    pub path: PathBuf,
    /// How to get the key out of the file.
    pub extract: Extract,
    /// `false` for a deploy key in a host document: the field may be absent.
    pub required: bool,
    /// A stored public key to check against the derived one.
    pub public: Option<PublicSource>,
}

/// Paths of the repository's two folders, relative to its root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepoConfig {
    /// Folder of host documents and folders (default `hosts`).
    pub hosts: PathBuf,
    /// Folder of user documents and folders (default `users`).
    pub users: PathBuf,
    /// Every packed key must have a pin in `keypack.pins` (`require_pins = true`); without it
    /// an unpinned key is a warning.
    pub require_pins: bool,
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self {
            hosts: PathBuf::from("hosts"),
            users: PathBuf::from("users"),
            require_pins: false,
        }
    }
}

/// An opened keys repository.
#[derive(Debug, Clone)]
pub struct KeysRepo {
    root: PathBuf,
    config: RepoConfig,
}

impl KeysRepo {
    /// Opens the repository at `root` and reads its `keypack.toml`, if any.
    pub fn open(root: &Path) -> Result<Self, RepoError> {
        let canonical = fs::canonicalize(root).map_err(|_| RepoError::NotAFolder {
            path: root.to_path_buf(),
        })?;
        if !canonical.is_dir() {
            return Err(RepoError::NotAFolder {
                path: root.to_path_buf(),
            });
        }
        let mut repo = Self {
            root: canonical,
            config: RepoConfig::default(),
        };
        let config_path = repo.root.join(CONFIG_FILE);
        if fs::symlink_metadata(&config_path).is_ok() {
            let resolved = repo.contained(&config_path)?;
            let bytes = repo.read_file(&resolved)?;
            let config_err = |message: String| RepoError::Config {
                path: config_path.clone(),
                message,
            };
            let text = std::str::from_utf8(&bytes).map_err(|_| config_err("not UTF-8".into()))?;
            let config: RepoConfig =
                toml::from_str(text).map_err(|e| config_err(e.message().to_owned()))?;
            for (name, dir) in [("hosts", &config.hosts), ("users", &config.users)] {
                let plain = !dir.as_os_str().is_empty()
                    && dir.components().all(|c| matches!(c, Component::Normal(_)));
                if !plain {
                    return Err(config_err(format!(
                        "{name} = {:?}: must be a relative folder inside the repository, without `..`",
                        dir.display().to_string()
                    )));
                }
            }
            repo.config = config;
        }
        Ok(repo)
    }

    /// The canonical repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder paths in force (from `keypack.toml` or the defaults).
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Every key of `host` (host key, deploy key when present) and of each user, in that order.
    pub fn resolve(
        &self,
        host: &HostName,
        users: &[UserName],
    ) -> Result<Vec<KeySource>, RepoError> {
        let mut out = self.resolve_host(host)?;
        for user in users {
            out.push(self.resolve_user(user)?);
        }
        Ok(out)
    }

    /// The host key and, when present, the deploy key of `host`.
    pub fn resolve_host(&self, host: &HostName) -> Result<Vec<KeySource>, RepoError> {
        let dir = self.root.join(&self.config.hosts);
        let fields = [(KeyRole::Host, true), (KeyRole::Deploy, false)];
        match self.resolve_entity(&dir, host.as_str(), &fields)? {
            Some(sources) => Ok(sources),
            None => Err(RepoError::UnknownHost {
                host: host.clone(),
                looked_in: looked_in(&dir, host.as_str()),
            }),
        }
    }

    /// The key of `user`.
    pub fn resolve_user(&self, user: &UserName) -> Result<KeySource, RepoError> {
        let dir = self.root.join(&self.config.users);
        let fields = [(KeyRole::User(user.clone()), true)];
        match self.resolve_entity(&dir, user.as_str(), &fields)? {
            Some(mut sources) if !sources.is_empty() => Ok(sources.remove(0)),
            _ => Err(RepoError::UnknownUser {
                user: user.clone(),
                looked_in: looked_in(&dir, user.as_str()),
            }),
        }
    }

    /// Resolves `dir/name.{ext}` or `dir/name/` for the given keys (`required` per key). `None`
    /// when neither exists.
    fn resolve_entity(
        &self,
        dir: &Path,
        name: &str,
        roles: &[(KeyRole, bool)],
    ) -> Result<Option<Vec<KeySource>>, RepoError> {
        let me = Entity {
            kind: match roles[0].0 {
                KeyRole::User(_) => EntityKind::User,
                _ => EntityKind::Host,
            },
            name: name.to_owned(),
        };
        let mut documents = Vec::new();
        for ext in DOCUMENT_EXTENSIONS {
            let path = dir.join(format!("{name}.{ext}"));
            if exists(&path) {
                documents.push((path, *ext));
            }
        }
        let ini = dir.join(format!("{name}.ini"));
        let folder = dir.join(name);
        let folder_exists = exists(&folder);
        if documents.is_empty() && !folder_exists {
            if exists(&ini) {
                return Err(RepoError::UnsupportedDocument { path: ini });
            }
            return Ok(None);
        }
        let first_field = roles[0].0.field_name();
        if documents.len() > 1 {
            return Err(RepoError::Ambiguous {
                field: first_field,
                first: documents[0].0.clone(),
                second: documents[1].0.clone(),
            });
        }
        let folder_files = if folder_exists {
            let resolved = self.contained_for(&folder, &me)?;
            if !resolved.is_dir() {
                return Err(RepoError::NotAFile { path: folder });
            }
            Some(self.scan_folder(&resolved, roles)?)
        } else {
            None
        };

        if let Some((doc, ext)) = documents.into_iter().next() {
            // A document and a folder: any key file in the folder competes with the document.
            if let Some(files) = &folder_files
                && let Some((field, path)) = files.iter().find_map(|f| {
                    f.private
                        .first()
                        .or(f.public.as_ref())
                        .map(|p| (f.field, p.clone()))
                })
            {
                return Err(RepoError::Ambiguous {
                    field,
                    first: doc,
                    second: path,
                });
            }
            let format = DocumentFormat::from_extension(ext).expect("listed extension");
            let path = self.contained_for(&doc, &me)?;
            self.check_regular(&path, &doc)?;
            let sources = roles
                .iter()
                .map(|(role, required)| KeySource {
                    role: role.clone(),
                    path: path.clone(),
                    extract: Extract::DocumentField {
                        format,
                        field: role.field_name(),
                    },
                    required: *required,
                    public: Some(PublicSource::Field(format!("{}_pub", role.field_name()))),
                })
                .collect();
            return Ok(Some(sources));
        }

        let files = folder_files.expect("folder exists when there is no document");
        let mut sources = Vec::new();
        for ((role, required), found) in roles.iter().zip(files) {
            let field = role.field_name();
            let private = match found.private.as_slice() {
                [] => {
                    if let Some(public) = found.public {
                        return Err(RepoError::OrphanPublicKey {
                            path: public,
                            field,
                        });
                    }
                    if *required {
                        return Err(RepoError::MissingKeyFile {
                            folder: folder.clone(),
                            field,
                        });
                    }
                    continue;
                }
                [one] => one.clone(),
                [first, second, ..] => {
                    return Err(RepoError::Ambiguous {
                        field,
                        first: first.clone(),
                        second: second.clone(),
                    });
                }
            };
            let resolved = self.contained_for(&private, &me)?;
            self.check_regular(&resolved, &private)?;
            let head = self.read_file(&resolved)?;
            let extract = if looks_like_age(&head) {
                Extract::AgeFile
            } else {
                let ext = private
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(field))
                    .and_then(|rest| rest.rsplit('.').next())
                    .and_then(DocumentFormat::from_extension);
                Extract::BinaryEnvelope {
                    format: ext.unwrap_or_else(|| DocumentFormat::sniff(&head)),
                }
            };
            let public = match found.public {
                Some(public) => {
                    let resolved = self.contained_for(&public, &me)?;
                    self.check_regular(&resolved, &public)?;
                    Some(PublicSource::File(resolved))
                }
                None => None,
            };
            sources.push(KeySource {
                role: role.clone(),
                path: resolved,
                extract,
                required: true,
                public,
            });
        }
        Ok(Some(sources))
    }

    /// Lists a per-key folder: for each key, the private candidates and the `.pub` file.
    fn scan_folder(
        &self,
        folder: &Path,
        roles: &[(KeyRole, bool)],
    ) -> Result<Vec<FolderKey>, RepoError> {
        let mut found: Vec<FolderKey> = roles
            .iter()
            .map(|(role, _)| FolderKey {
                field: role.field_name(),
                private: Vec::new(),
                public: None,
            })
            .collect();
        let mut names = Vec::new();
        for entry in fs::read_dir(folder).map_err(io_err(folder))? {
            let entry = entry.map_err(io_err(folder))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        for name in names {
            for key in found.iter_mut() {
                let path = folder.join(&name);
                let Some(rest) = name.strip_prefix(key.field) else {
                    continue;
                };
                if rest.is_empty() {
                    key.private.push(path);
                } else if rest == ".pub" {
                    key.public = Some(path);
                } else if rest.starts_with(".pub.") {
                    return Err(RepoError::EncryptedPublicKey {
                        path,
                        field: key.field,
                    });
                } else if rest.starts_with('.') {
                    key.private.push(path);
                }
            }
        }
        Ok(found)
    }

    /// Resolves symlinks in `path` and refuses a result outside the repository.
    fn contained(&self, path: &Path) -> Result<PathBuf, RepoError> {
        let resolved = fs::canonicalize(path).map_err(io_err(path))?;
        if !resolved.starts_with(&self.root) {
            return Err(RepoError::OutsideRepo {
                path: path.to_path_buf(),
                target: resolved,
            });
        }
        Ok(resolved)
    }

    /// [`Self::contained`], and refuses a result that belongs to another host or user than
    /// `me`: sops would decrypt it in its new place with a valid MAC, and the bundle would carry
    /// that entity's key in this role.
    fn contained_for(&self, path: &Path, me: &Entity) -> Result<PathBuf, RepoError> {
        let resolved = self.contained(path)?;
        if let Some(owner) = self.owner_of(&resolved)
            && owner != *me
        {
            return Err(RepoError::CrossEntityLink {
                path: path.to_path_buf(),
                target: resolved,
                owner: owner.to_string(),
            });
        }
        Ok(resolved)
    }

    /// The host or user a canonical path belongs to: `HOSTS/NAME.ext`, `HOSTS/NAME/…`, and the
    /// same under the users folder. `None` for the rest of the repository (a shared folder).
    /// When one folder lies inside the other the deeper one decides.
    fn owner_of(&self, resolved: &Path) -> Option<Entity> {
        let mut best: Option<(usize, Entity)> = None;
        for (kind, dir) in [
            (EntityKind::Host, &self.config.hosts),
            (EntityKind::User, &self.config.users),
        ] {
            let Ok(base) = fs::canonicalize(self.root.join(dir)) else {
                continue;
            };
            let Ok(rest) = resolved.strip_prefix(&base) else {
                continue;
            };
            let mut parts = rest.components();
            let Some(Component::Normal(first)) = parts.next() else {
                continue;
            };
            let first = first.to_string_lossy();
            let name = if parts.next().is_some() {
                first.into_owned()
            } else {
                strip_document_extension(&first).to_owned()
            };
            let depth = base.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth > *d) {
                best = Some((depth, Entity { kind, name }));
            }
        }
        best.map(|(_, e)| e)
    }

    fn check_regular(&self, resolved: &Path, shown: &Path) -> Result<(), RepoError> {
        let meta = fs::metadata(resolved).map_err(io_err(shown))?;
        if !meta.is_file() {
            return Err(RepoError::NotAFile {
                path: shown.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Reads a file that [`Self::resolve`] returned (canonical, inside the repository).
    ///
    /// Opens the repository root, then each component below it with `O_NOFOLLOW`: a symlink that
    /// appeared after resolution is refused, never followed. Refuses anything but a regular file
    /// and files over [`MAX_REPO_FILE_SIZE`].
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, RepoError> {
        let relative = path
            .strip_prefix(&self.root)
            .map_err(|_| RepoError::OutsideRepo {
                path: path.to_path_buf(),
                target: path.to_path_buf(),
            })?;
        let components: Vec<_> = relative.components().collect();
        if components.is_empty() || !components.iter().all(|c| matches!(c, Component::Normal(_))) {
            return Err(RepoError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir = rustix::fs::open(&self.root, dir_flags, Mode::empty())
            .map_err(|e| io_err(&self.root)(e.into()))?;
        let last = components.len() - 1;
        for (i, component) in components.iter().enumerate() {
            let name = component.as_os_str();
            let flags = if i == last {
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
            } else {
                dir_flags | OFlags::NOFOLLOW
            };
            dir = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                // ELOOP: the component is a symlink; ENOTDIR: a symlink to a folder under
                // O_DIRECTORY|O_NOFOLLOW on some kernels.
                Err(e)
                    if e == rustix::io::Errno::LOOP
                        || (i < last && e == rustix::io::Errno::NOTDIR) =>
                {
                    return Err(RepoError::SymlinkComponent {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) => return Err(io_err(path)(e.into())),
            };
        }
        let mut file = File::from(dir);
        let meta = file.metadata().map_err(io_err(path))?;
        if !meta.is_file() {
            return Err(RepoError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > MAX_REPO_FILE_SIZE {
            return Err(RepoError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                max: MAX_REPO_FILE_SIZE,
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_REPO_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        if bytes.len() as u64 > MAX_REPO_FILE_SIZE {
            return Err(RepoError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                max: MAX_REPO_FILE_SIZE,
            });
        }
        Ok(bytes)
    }
}

struct FolderKey {
    field: &'static str,
    private: Vec<PathBuf>,
    public: Option<PathBuf>,
}

/// Whether an [`Entity`] is a host or a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntityKind {
    Host,
    User,
}

/// A host or a user: the unit whose files may link to each other but not across.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entity {
    kind: EntityKind,
    name: String,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            EntityKind::Host => "host",
            EntityKind::User => "user",
        };
        write!(f, "{kind} {}", self.name)
    }
}

/// `NAME` of a document name `NAME.yaml` (and the other document extensions, and `.ini`).
fn strip_document_extension(file: &str) -> &str {
    DOCUMENT_EXTENSIONS
        .iter()
        .chain(&["ini"])
        .find_map(|ext| file.strip_suffix(ext)?.strip_suffix('.'))
        .unwrap_or(file)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn looked_in(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = DOCUMENT_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .collect();
    paths.push(dir.join(format!("{name}/")));
    paths
}

/// `true` for an armored (`-----BEGIN AGE ENCRYPTED FILE-----`) or binary
/// (`age-encryption.org/v1`) age file.
pub fn looks_like_age(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    text.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        || text.starts_with(b"age-encryption.org/")
}

/// Field names a host or user document may hold keys under.
pub const KEY_FIELDS: &[&str] = &[HOST_KEY_NAME, DEPLOY_KEY_NAME, USER_KEY_NAME];

#[cfg(test)]
mod tests;
