//! The key pipeline: keys repository → decrypt → sealed bundle.
//!
//! Position on the data path: this module is the join of `keys repo → decrypt → bundle`. In: a
//! [`KeySelection`] (host, users, where the repository and the identity are); out: a
//! [`SealedBundle`] ([`pack_bundle`]) or, for `keypack verify`, one [`KeyReport`] per key
//! ([`verify_keys`]).
//!
//! Steps: find the repository ([`resolve_keys_repo`]), resolve the key files
//! (`keypack-repo`), read and parse each file once (`keypack-sops`; plain age files as they
//! are), unwrap every file's age layer in **one** `IdentitySet::decrypt_batch` call (so a
//! YubiKey is opened once and the PIN asked once per build), decrypt and MAC-check each sops
//! file with its data key, take each key's field, and hand it to `BundleBuilder::add_key`, which
//! checks that it is an unencrypted ed25519 OpenSSH key, derives its `.pub` and compares any
//! stored public key.
//!
//! Does **not** write anything: the caller decides where the bundle goes. Plaintext moves only
//! as `SecretSlice<u8>` (zeroized on drop); the one place it is looked at here is the sops data
//! key handed to `DataKey::from_bytes` (see `SECURITY.md`).
//!
//! Why one batch: with PIN policy "always" and touch policy "always", one plugin session per
//! file would mean a PIN and a touch per file; the identity crate's batch makes it one session.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use keypack_bundle::{BundleBuilder, Manifest, SealedBundle};
use keypack_identity::{AgeFile, IdentitySet};
use keypack_layout::{HostName, KeyRole, UserName};
use keypack_repo::{DocumentFormat, Extract, KeySource, KeysRepo, PublicSource};
use keypack_sops::{DataKey, Decrypted, Format, SopsFile};
use secrecy::{ExposeSecret, SecretSlice};

use crate::cmd::CliError;

/// Environment variable naming the keys repository.
pub const KEYS_REPO_ENV: &str = "KEYPACK_KEYS_REPO";

/// What to pack: a host, its users, and where the repository and the identity are.
#[derive(Debug, Clone)]
pub struct KeySelection {
    /// The host whose host key (and deploy key, when present) to pack.
    pub host: HostName,
    /// Users whose keys to pack, in any order (the bundle is sorted).
    pub users: Vec<UserName>,
    /// `--keys-repo`; `None` falls back to `KEYPACK_KEYS_REPO`, then the config file.
    pub keys_repo: Option<PathBuf>,
    /// `--identity`; `None` falls back to the sops conventions (see `IdentitySet::discover`).
    pub identity: Option<PathBuf>,
    /// `--allow-shared-key`: one key pair may fill two roles.
    pub allow_shared_key: bool,
    /// `--require-pins`: a key without a pin in `keypack.pins` is an error.
    pub require_pins: bool,
    /// `--burn-after-boot`: the mark token the bundle carries (see `cmd::burn`).
    pub burn_mark: Option<String>,
}

/// The outcome for one key of a [`verify_keys`] run.
pub struct KeyReport {
    /// Whose key.
    pub role: KeyRole,
    /// The repository file it came from, relative to the repository root.
    pub source: PathBuf,
    /// The SHA256 fingerprint, or why the key failed.
    pub result: Result<String>,
}

/// Decrypts the selection and seals it into a bundle. The bundle's memory is locked where the
/// `RLIMIT_MEMLOCK` allows (a warning otherwise).
///
/// With `passphrase` (`--seal passphrase`) the private keys are sealed to it.
pub fn pack_bundle_sealed(
    sel: &KeySelection,
    passphrase: Option<secrecy::SecretString>,
) -> Result<SealedBundle> {
    let loaded = load(sel)?;
    let mut builder = BundleBuilder::new();
    builder.allow_shared_keys(sel.allow_shared_key);
    if let Some(passphrase) = passphrase {
        builder.seal_with_passphrase(passphrase);
    }
    let (root, require_pins) = (loaded.root.clone(), loaded.require_pins);
    let (added, mut failures) = add_all(&mut builder, loaded);
    if failures.is_empty() {
        for (role, message) in check_pins(&builder, &added, sel, &root, require_pins)? {
            failures.push(anyhow!("{}: {message}", role.private_path()));
        }
    }
    if !failures.is_empty() {
        let more = failures.len() - 1;
        let first = failures.remove(0);
        if more > 0 {
            return Err(first.context(format!(
                "{more} more key(s) failed too; `keypack verify -H {}` lists every one",
                sel.host
            )));
        }
        return Err(first);
    }
    if let Some(token) = &sel.burn_mark {
        // Bound to the keys, so a seeded build of other keys (after a rotation) gets another
        // mark, and load-keys never burns a stick holding a different bundle.
        let mut fingerprints: Vec<&str> = added
            .iter()
            .filter_map(|(role, _)| builder.fingerprint(role))
            .collect();
        fingerprints.sort_unstable();
        let token = crate::cmd::burn::bind_to_keys(token, &fingerprints);
        builder
            .burn_after_boot(&token)
            .context("marking the bundle for --burn-after-boot")?;
    }
    let bundle = builder
        .seal(source_date_epoch()?)
        .context("sealing the bundle")?;
    crate::hardening::lock_memory(bundle.expose_archive());
    Ok(bundle)
}

/// Decrypts and checks every key of the selection, going on past failures, and returns one
/// report per key plus the manifest of the bundle a pack would give (when every key passed).
pub fn verify_keys(sel: &KeySelection) -> Result<(Vec<KeyReport>, Option<Manifest>)> {
    let loaded = load(sel)?;
    let mut builder = BundleBuilder::new();
    builder.allow_shared_keys(sel.allow_shared_key);
    let mut reports = Vec::new();
    let root = loaded.root.clone();
    let relative = |p: &Path| relative(&root, p);
    for key in loaded.keys {
        match key {
            Loaded::Key(key) => {
                let role = key.source.role.clone();
                let source = relative(&key.source.path);
                let result = add(&mut builder, key)
                    .map(|()| builder.fingerprint(&role).unwrap_or_default().to_owned());
                reports.push(KeyReport {
                    role,
                    source,
                    result,
                });
            }
            Loaded::Absent => {}
            Loaded::Failed { source, error } => reports.push(KeyReport {
                source: relative(&source.path),
                role: source.role,
                result: Err(error),
            }),
        }
    }
    // Pins are checked on the keys that passed, so one run names every problem.
    let passed: Vec<(KeyRole, PathBuf)> = reports
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| (r.role.clone(), r.source.clone()))
        .collect();
    for (role, message) in check_pins(&builder, &passed, sel, &root, loaded.require_pins)? {
        if let Some(report) = reports.iter_mut().find(|r| r.role == role) {
            report.result = Err(anyhow!("{message}"));
        }
    }
    if reports.iter().any(|r| r.result.is_err()) {
        return Ok((reports, None));
    }
    let bundle = builder
        .seal(source_date_epoch()?)
        .context("sealing the bundle")?;
    let manifest = bundle.manifest().clone();
    drop(bundle);
    Ok((reports, Some(manifest)))
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else 0.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(0),
    }
}

/// Finds the keys repository: `--keys-repo`, then `KEYPACK_KEYS_REPO`, then `keys_repo` in
/// `$XDG_CONFIG_HOME/keypack/config.toml` (default `~/.config/keypack/config.toml`).
pub fn resolve_keys_repo(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(KEYS_REPO_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let config = config_path();
    if let Some(config) = &config
        && config.exists()
    {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
        if let Some(value) = table.get("keys_repo") {
            let dir = value.as_str().ok_or_else(|| {
                anyhow!(
                    "{}: keys_repo must be a string (a folder)",
                    config.display()
                )
            })?;
            return Ok(expand_config_path(dir, config));
        }
    }
    Err(CliError::NoKeysRepo {
        config: config.unwrap_or_else(|| PathBuf::from("~/.config/keypack/config.toml")),
    }
    .into())
}

/// `plugin_dir` of the config file (a folder searched for `keypack-media-*` and
/// `keypack-runner-*` before `PATH`; `~/` and paths relative to the file are expanded).
pub fn config_plugin_dir() -> Result<Option<PathBuf>> {
    let Some(config) = config_path().filter(|c| c.exists()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    match table.get("plugin_dir") {
        None => Ok(None),
        Some(v) => {
            let dir = v.as_str().ok_or_else(|| {
                anyhow!(
                    "{}: plugin_dir must be a string (a folder)",
                    config.display()
                )
            })?;
            Ok(Some(expand_config_path(dir, &config)))
        }
    }
}

fn config_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("keypack/config.toml"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/keypack/config.toml"))
}

/// `~/x` is under `$HOME`; a relative path is relative to the config file's folder.
fn expand_config_path(dir: &str, config: &Path) -> PathBuf {
    if let Some(rest) = dir.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        path
    } else {
        config.parent().unwrap_or(Path::new(".")).join(path)
    }
}

/// A key taken out of its file, not yet checked.
struct PlainKey {
    source: KeySource,
    private: SecretSlice<u8>,
    public: Option<String>,
}

enum Loaded {
    Key(PlainKey),
    /// An optional key (a deploy key field) that the document does not have.
    Absent,
    Failed {
        source: KeySource,
        error: anyhow::Error,
    },
}

struct LoadedSet {
    root: PathBuf,
    /// `require_pins = true` in the repository's `keypack.toml`.
    require_pins: bool,
    keys: Vec<Loaded>,
}

/// One repository file and how it is encrypted.
enum Parsed {
    Sops(SopsFile),
    Age(Vec<u8>),
}

fn load(sel: &KeySelection) -> Result<LoadedSet> {
    let root = resolve_keys_repo(sel.keys_repo.as_deref())?;
    let repo = KeysRepo::open(&root)?;
    let sources = repo.resolve(&sel.host, &sel.users).with_context(|| {
        format!(
            "finding the keys of host {} in {}",
            sel.host,
            repo.root().display()
        )
    })?;

    // Each file once, in order: a host document holds two keys.
    let mut files: BTreeMap<PathBuf, Vec<KeySource>> = BTreeMap::new();
    let mut order = Vec::new();
    for source in sources {
        if !files.contains_key(&source.path) {
            order.push(source.path.clone());
        }
        files.entry(source.path.clone()).or_default().push(source);
    }

    // Read and parse. A file that fails here fails its keys; the others go on (verify lists all).
    let mut keys = Vec::new();
    let mut parsed: Vec<(PathBuf, Parsed)> = Vec::new();
    for path in &order {
        let sources = &files[path];
        match read_and_parse(&repo, path, &sources[0].extract) {
            Ok(p) => parsed.push((path.clone(), p)),
            Err(error) => fail_all(&mut keys, sources, error),
        }
    }
    let require_pins = repo.config().require_pins;
    let root = repo.root().to_path_buf();
    if parsed.is_empty() {
        return Ok(LoadedSet {
            root,
            require_pins,
            keys,
        });
    }

    let (identities, identity_path) = IdentitySet::discover(sel.identity.as_deref())?;
    let batch: Vec<AgeFile> = parsed
        .iter()
        .map(|(path, p)| match p {
            Parsed::Sops(file) => sops_age_file(path.display().to_string(), file),
            Parsed::Age(bytes) => AgeFile {
                label: path.display().to_string(),
                alternatives: vec![bytes.as_slice()],
            },
        })
        .collect();
    let results = unwrap_batch(&identities, &batch);
    drop(batch);

    for ((path, p), result) in parsed.into_iter().zip(results) {
        let sources = &files[&path];
        let plain = match result {
            Ok(plain) => plain,
            Err(e) => {
                let listed = match &p {
                    Parsed::Sops(file) => {
                        format!(" (sops lists: {})", file.recipients().join(", "))
                    }
                    Parsed::Age(_) => String::new(),
                };
                let error = anyhow::Error::new(e).context(format!(
                    "unwrapping the age layer of {}{listed} with the identities in {}",
                    path.display(),
                    identity_path.display()
                ));
                fail_all(&mut keys, sources, error);
                continue;
            }
        };
        match p {
            Parsed::Age(_) => {
                let source = sources[0].clone();
                let public = match stored_file_public(&repo, &source) {
                    Ok(p) => p,
                    Err(error) => {
                        keys.push(Loaded::Failed { source, error });
                        continue;
                    }
                };
                keys.push(Loaded::Key(PlainKey {
                    source,
                    private: plain,
                    public,
                }));
            }
            Parsed::Sops(file) => {
                let decrypted = DataKey::from_bytes(plain.expose_secret())
                    .and_then(|key| file.decrypt(&key))
                    .with_context(|| format!("decrypting {}", path.display()));
                drop(plain);
                match decrypted {
                    Ok(decrypted) => {
                        for source in sources {
                            keys.push(take_key(&repo, &decrypted, source.clone()));
                        }
                    }
                    Err(error) => fail_all(&mut keys, sources, error),
                }
            }
        }
    }
    // Report in repository order: host, deploy, users.
    keys.sort_by_key(|k| match k {
        Loaded::Key(k) => Some(k.source.role.clone()),
        Loaded::Failed { source, .. } => Some(source.role.clone()),
        Loaded::Absent => None,
    });
    Ok(LoadedSet {
        root,
        require_pins,
        keys,
    })
}

fn fail_all(keys: &mut Vec<Loaded>, sources: &[KeySource], error: anyhow::Error) {
    // anyhow errors cannot be cloned: the first key gets the error, the others point at it.
    let mut error = Some(error);
    for source in sources {
        let error = error.take().unwrap_or_else(|| {
            anyhow!(
                "{}: see the error above for this file",
                source.path.display()
            )
        });
        if !source.required {
            // An optional key in a file that failed: the required key's error says it all.
            continue;
        }
        keys.push(Loaded::Failed {
            source: source.clone(),
            error,
        });
    }
}

fn read_and_parse(repo: &KeysRepo, path: &Path, extract: &Extract) -> Result<Parsed> {
    let bytes = repo.read_file(path)?;
    let parsed = match extract {
        Extract::AgeFile => {
            if !keypack_sops::looks_like_age(&bytes) {
                anyhow::bail!("{}: not an age file", path.display());
            }
            Parsed::Age(bytes)
        }
        Extract::DocumentField { format, .. } => Parsed::Sops(
            SopsFile::parse(&bytes, sops_format(*format))
                .with_context(|| format!("parsing {}", path.display()))?,
        ),
        Extract::BinaryEnvelope { format } => {
            let format = match format {
                DocumentFormat::Dotenv => Format::Dotenv,
                _ => Format::Binary,
            };
            Parsed::Sops(
                SopsFile::parse(&bytes, format)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )
        }
    };
    Ok(parsed)
}

pub(crate) fn sops_format(format: DocumentFormat) -> Format {
    match format {
        DocumentFormat::Yaml => Format::Yaml,
        DocumentFormat::Json => Format::Json,
        DocumentFormat::Dotenv => Format::Dotenv,
    }
}

/// Takes one key (and its optional stored public key) out of a decrypted sops file.
fn take_key(repo: &KeysRepo, decrypted: &Decrypted, source: KeySource) -> Loaded {
    let (private, what, field) = match &source.extract {
        Extract::DocumentField { field, .. } => {
            (decrypted.field(field), format!("field {field}"), &**field)
        }
        Extract::BinaryEnvelope { .. } => {
            (decrypted.binary_data(), "binary data".to_owned(), "data")
        }
        Extract::AgeFile => unreachable!("age files are not sops files"),
    };
    // sops authenticates neither the name nor (with mac_only_encrypted) the content of a value
    // it did not encrypt, so a plaintext private key in a sops file could have been planted by
    // anyone with write access to the repository: only an encrypted value is a key.
    if private.is_some() && decrypted.encrypted_field(field).is_none() {
        let error = anyhow!(
            "{}: {what} is stored unencrypted; a private key must be encrypted by sops \
             (an unencrypted value is not authenticated and could have been planted)",
            source.path.display(),
        );
        return Loaded::Failed { source, error };
    }
    let Some(private) = private else {
        if !source.required {
            return Loaded::Absent;
        }
        let error = anyhow!(
            "{}: has no {what} (expected the OpenSSH private key of {})",
            source.path.display(),
            source.role.private_path()
        );
        return Loaded::Failed { source, error };
    };
    // sops writes an empty value bare (`""`, no ENC envelope) and its MAC covers it as nothing:
    // the file verifies, so name the empty field rather than call it a broken key.
    if private.expose_secret().is_empty() {
        let error = anyhow!(
            "{}: {what} is empty (\"\"); it should hold the OpenSSH private key of {} \
             (set it with `sops edit`, or remove the field)",
            source.path.display(),
            source.role.private_path()
        );
        return Loaded::Failed { source, error };
    }
    let public = match &source.public {
        Some(PublicSource::Field(name)) => match decrypted.field(name) {
            None => Ok(None),
            Some(value) => String::from_utf8(value.expose_secret().to_vec())
                .map(Some)
                .map_err(|_| anyhow!("{}: field {name} is not text", source.path.display())),
        },
        Some(PublicSource::File(_)) | None => stored_file_public(repo, &source),
    };
    match public {
        Ok(public) => Loaded::Key(PlainKey {
            source,
            private,
            public,
        }),
        Err(error) => Loaded::Failed { source, error },
    }
}

fn stored_file_public(repo: &KeysRepo, source: &KeySource) -> Result<Option<String>> {
    let Some(PublicSource::File(path)) = &source.public else {
        return Ok(None);
    };
    let bytes = repo.read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{}: not a text file (expected an OpenSSH public key)",
            path.display()
        )
    })?;
    Ok(Some(text))
}

fn add(builder: &mut BundleBuilder, key: PlainKey) -> Result<()> {
    let what = match &key.source.extract {
        Extract::DocumentField { field, .. } => format!(" field {field}"),
        _ => String::new(),
    };
    let public_origin = match &key.source.public {
        Some(PublicSource::File(p)) => format!(" (stored public key {})", p.display()),
        Some(PublicSource::Field(f)) if key.public.is_some() => {
            format!(" (stored public key in field {f})")
        }
        _ => String::new(),
    };
    builder
        .add_key(key.source.role.clone(), key.private, key.public.as_deref())
        .with_context(|| {
            format!(
                "checking {}{what}{public_origin}",
                key.source.path.display()
            )
        })
}

/// `path` relative to the repository root (for messages and the pins' `source`).
fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

/// Checks the keys added to `builder` against the repository's pins; returns the refusals.
fn check_pins(
    builder: &BundleBuilder,
    added: &[(KeyRole, PathBuf)],
    sel: &KeySelection,
    root: &Path,
    repo_requires_pins: bool,
) -> Result<Vec<(KeyRole, String)>> {
    let candidates: Vec<crate::pinning::Candidate<'_>> = added
        .iter()
        .filter_map(|(role, source)| {
            Some(crate::pinning::Candidate {
                role,
                source,
                public_line: builder.public_key(role)?,
            })
        })
        .collect();
    crate::pinning::check(
        root,
        &sel.host,
        &candidates,
        sel.require_pins || repo_requires_pins,
    )
}

/// One key's public half, for `keypack pin`: role, repository file (relative) and the
/// OpenSSH public key line derived from the decrypted private key.
pub struct PublicKeyReport {
    /// Whose key.
    pub role: KeyRole,
    /// The repository file it came from, relative to the repository root.
    pub source: PathBuf,
    /// `ssh-ed25519 AAAA…` (no comment).
    pub public_line: String,
}

/// Decrypts and checks the selection like [`pack_bundle`], without the pins check (`keypack
/// pin` is how pins are made), and returns each key's public half plus the repository root.
/// Fails if any key fails.
pub fn public_keys(sel: &KeySelection) -> Result<(PathBuf, Vec<PublicKeyReport>)> {
    let loaded = load(sel)?;
    let mut builder = BundleBuilder::new();
    builder.allow_shared_keys(sel.allow_shared_key);
    let root = loaded.root.clone();
    let (added, mut failures) = add_all(&mut builder, loaded);
    if !failures.is_empty() {
        return Err(failures.remove(0));
    }
    let reports = added
        .into_iter()
        .filter_map(|(role, source)| {
            let public_line = builder.public_key(&role)?.to_owned();
            Some(PublicKeyReport {
                role,
                source,
                public_line,
            })
        })
        .collect();
    Ok((root, reports))
}

/// Adds every loaded key to `builder`: the keys added (role, repository-relative file) and the
/// failures, loading's and the builder's, in repository order.
fn add_all(
    builder: &mut BundleBuilder,
    loaded: LoadedSet,
) -> (Vec<(KeyRole, PathBuf)>, Vec<anyhow::Error>) {
    let mut added = Vec::new();
    let mut failures = Vec::new();
    for key in loaded.keys {
        match key {
            Loaded::Key(key) => {
                let role = key.source.role.clone();
                let source = relative(&loaded.root, &key.source.path);
                match add(builder, key) {
                    Ok(()) => added.push((role, source)),
                    Err(e) => failures.push(e),
                }
            }
            Loaded::Absent => {}
            Loaded::Failed { error, .. } => failures.push(error),
        }
    }
    (added, failures)
}

/// The age layer of a sops file as one entry of an identity batch: its stanzas, any of which
/// may open it.
pub(crate) fn sops_age_file<'a>(label: String, file: &'a SopsFile) -> AgeFile<'a> {
    AgeFile {
        label,
        alternatives: file
            .age_entries()
            .iter()
            .map(|e| e.enc.as_bytes())
            .collect(),
    }
}

/// Unwraps a whole batch in one identity session (one PIN, one plugin run for a YubiKey),
/// after saying how many YubiKey operations (touches) it needs.
pub(crate) fn unwrap_batch(
    identities: &IdentitySet,
    batch: &[AgeFile<'_>],
) -> Vec<Result<SecretSlice<u8>, keypack_identity::IdentityError>> {
    let operations = identities.plugin_operations(batch);
    if operations > 0 {
        eprintln!("{operations} YubiKey operation(s) needed");
    }
    identities.decrypt_batch(batch)
}
