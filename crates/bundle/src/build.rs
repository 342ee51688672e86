//! Building and sealing the archive.
//!
//! Why pre-sized buffers: `Vec` growth copies its contents and frees the old block, leaving a
//! stale plaintext copy in freed heap (see the zeroize docs). The archive size is known from the
//! entries before writing, so the buffer is allocated once at its final size. The binary also
//! installs a zero-on-free allocator for copies made inside `flate2` and `tar`.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::{Compression, GzBuilder};
use keypack_layout::{KeyRole, PRIVATE_MODE, PUBLIC_MODE, SEALED_BLOB_MODE, SEALED_BLOB_PATH};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use ssh_key::{HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::BundleError;
use crate::seal::{self, SealInfo};

/// One file of a sealed bundle, as listed in its [`Manifest`]. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Path inside the archive, without a leading `/` (`etc/ssh/ssh_host_ed25519_key`).
    pub path: String,
    /// Whose key this is.
    pub role: KeyRole,
    /// `true` for the `.pub` half.
    pub public: bool,
    /// Unix mode bits (0600 or 0644).
    pub mode: u32,
    /// Owner uid (always 0).
    pub uid: u64,
    /// Owner gid (always 0).
    pub gid: u64,
    /// File size in bytes.
    pub size: u64,
    /// OpenSSH SHA256 fingerprint of the key pair (`SHA256:…`).
    pub fingerprint: String,
    /// The OpenSSH public key line (`ssh-ed25519 AAAA… comment`); public by nature.
    pub public_key: String,
    /// `true` when the file is inside the sealed blob (a private key of a sealed bundle), not
    /// in the archive in plaintext.
    pub sealed: bool,
}

/// A file of the archive that is not a key: the sealed blob, marker files under `keypack/`.
/// Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraEntry {
    /// Path inside the archive (`keypack/sealed.age`).
    pub path: String,
    /// Unix mode bits.
    pub mode: u32,
    /// File size in bytes.
    pub size: u64,
}

/// The list of entries of a sealed bundle, in archive order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Every key file of the bundle, sorted by path (with `sealed` set for those inside the
    /// sealed blob).
    pub entries: Vec<ManifestEntry>,
    /// Files that are not keys, stored in plaintext (the sealed blob, markers).
    pub extra: Vec<ExtraEntry>,
    /// How the private keys are sealed, for a sealed bundle.
    pub sealed: Option<SealInfo>,
}

impl Manifest {
    /// The host key's public line, if the bundle has one.
    pub fn host_public_key(&self) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.role == KeyRole::Host && e.public)
            .map(|e| e.public_key.as_str())
    }
}

struct PendingKey {
    private: SecretSlice<u8>,
    public_line: String,
    fingerprint: String,
}

/// Collects keys, checks them, and seals them into a [`SealedBundle`].
///
/// ```
/// # use keypack_bundle::{BundleBuilder, KeyRole};
/// # fn demo(host_key: secrecy::SecretSlice<u8>) -> Result<(), keypack_bundle::BundleError> {
/// let mut builder = BundleBuilder::new();
/// builder.add_key(KeyRole::Host, host_key, None)?;
/// let bundle = builder.seal(0)?;
/// assert!(bundle.manifest().host_public_key().is_some());
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct BundleBuilder {
    keys: BTreeMap<KeyRole, PendingKey>,
    allow_shared_keys: bool,
    passphrase: Option<(SecretString, u8)>,
    burn_mark: Option<String>,
}

impl BundleBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets one key pair fill two roles (`--allow-shared-key`). Off by default: sops
    /// authenticates a value and its field path, not the file's place in the repository, so a
    /// copied file can hand one role's key to another with a valid MAC; a bundle refusing the
    /// same fingerprint twice is what catches that.
    pub fn allow_shared_keys(&mut self, allow: bool) -> &mut Self {
        self.allow_shared_keys = allow;
        self
    }

    /// Seals the private keys (`--seal passphrase`): [`Self::seal`] then puts their tar into one
    /// age file encrypted to `passphrase` (scrypt, work factor
    /// [`seal::DEFAULT_SCRYPT_WORK_FACTOR`]) at [`SEALED_BLOB_PATH`]; only the `.pub` files
    /// and other plaintext entries stay beside it.
    pub fn seal_with_passphrase(&mut self, passphrase: SecretString) -> &mut Self {
        self.passphrase = Some((passphrase, seal::DEFAULT_SCRYPT_WORK_FACTOR));
        self
    }

    /// Like [`Self::seal_with_passphrase`] with another scrypt work factor (tests use a small
    /// one to stay fast; products use the default).
    pub fn seal_with_passphrase_work_factor(
        &mut self,
        passphrase: SecretString,
        log_n: u8,
    ) -> &mut Self {
        self.passphrase = Some((passphrase, log_n));
        self
    }

    /// Marks the bundle for burning after boot (`--burn-after-boot`): the archive carries the
    /// plaintext file `keypack/burn-after-boot` holding `token` (32 lowercase hex digits, unique
    /// to this bundle), which `load-keys` matches against the copy on the Ventoy disk.
    pub fn burn_after_boot(&mut self, token: &str) -> Result<&mut Self, BundleError> {
        if !keypack_layout::is_burn_token(token) {
            return Err(BundleError::BadBurnToken);
        }
        self.burn_mark = Some(token.to_string());
        Ok(self)
    }

    /// Adds an OpenSSH ed25519 private key for `role`. The public key is derived from it; when
    /// `stored_public` is given (a `.pub` kept beside the encrypted key) it must match.
    pub fn add_key(
        &mut self,
        role: KeyRole,
        private_openssh: SecretSlice<u8>,
        stored_public: Option<&str>,
    ) -> Result<(), BundleError> {
        let path = role.private_path();
        if self.keys.contains_key(&role) {
            return Err(BundleError::Duplicate { path });
        }
        let (public_line, fingerprint) = derive_public(&path, private_openssh.expose_secret())?;
        if let Some(stored) = stored_public {
            check_stored_public(&role.public_path(), stored, &fingerprint)?;
        }
        if !self.allow_shared_keys
            && let Some((other, _)) = self.keys.iter().find(|(_, k)| k.fingerprint == fingerprint)
        {
            return Err(BundleError::SharedKey {
                path,
                other: other.private_path(),
                fingerprint,
            });
        }
        self.keys.insert(
            role,
            PendingKey {
                private: private_openssh,
                public_line,
                fingerprint,
            },
        );
        Ok(())
    }

    /// The OpenSSH public key line derived for `role`, if any (checked against the pins).
    pub fn public_key(&self, role: &KeyRole) -> Option<&str> {
        self.keys.get(role).map(|k| k.public_line.as_str())
    }

    /// The SHA256 fingerprint of the key added for `role`, if any (for `keypack verify`).
    pub fn fingerprint(&self, role: &KeyRole) -> Option<&str> {
        self.keys.get(role).map(|k| k.fingerprint.as_str())
    }

    /// Writes the archive. `mtime` is the timestamp of every entry (`SOURCE_DATE_EPOCH` or 0).
    pub fn seal(self, mtime: u64) -> Result<SealedBundle, BundleError> {
        if !self.keys.contains_key(&KeyRole::Host) {
            return Err(BundleError::MissingHostKey {
                path: KeyRole::Host.private_path(),
            });
        }
        let mut files: Vec<(ManifestEntry, SecretSlice<u8>)> = Vec::new();
        for (role, key) in self.keys {
            let public_bytes = format!("{}\n", key.public_line).into_bytes();
            let private_entry = entry(&role, false, key.private.expose_secret().len(), &key);
            let public_entry = entry(&role, true, public_bytes.len(), &key);
            files.push((private_entry, key.private));
            files.push((public_entry, SecretSlice::from(public_bytes)));
        }
        files.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let mut extra: Vec<(ExtraEntry, Box<[u8]>)> = Vec::new();
        if let Some(token) = self.burn_mark {
            // Plaintext beside the keys (and beside the sealed blob): load-keys reads it
            // without decrypting anything, and so does the burn on the stick.
            let mark = format!("{token}\n").into_bytes().into_boxed_slice();
            extra.push((
                ExtraEntry {
                    path: keypack_layout::BURN_MARK_PATH.into(),
                    mode: keypack_layout::BURN_MARK_MODE,
                    size: mark.len() as u64,
                },
                mark,
            ));
        }
        let mut sealed = None;
        if let Some((passphrase, log_n)) = self.passphrase {
            // Only the private keys go into the blob; they never reach the archive in plaintext.
            let (private, public): (Vec<_>, Vec<_>) =
                files.into_iter().partition(|(e, _)| !e.public);
            let tar = seal::private_tar(&private, mtime)?;
            let blob = seal::encrypt(&tar, passphrase, log_n)?;
            drop(tar);
            sealed = Some(SealInfo {
                kind: seal::SEAL_KIND,
                work_factor: log_n,
                path: SEALED_BLOB_PATH,
            });
            extra.push((
                ExtraEntry {
                    path: SEALED_BLOB_PATH.into(),
                    mode: SEALED_BLOB_MODE,
                    size: blob.len() as u64,
                },
                blob,
            ));
            files = public;
            let mut entries: Vec<ManifestEntry> = private
                .into_iter()
                .map(|(mut e, _)| {
                    e.sealed = true;
                    e
                })
                .chain(files.iter().map(|(e, _)| e.clone()))
                .collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            let archive = write_archive(&files, &extra, mtime)?;
            return Ok(SealedBundle {
                archive,
                manifest: Manifest {
                    entries,
                    extra: extra.iter().map(|(e, _)| e.clone()).collect(),
                    sealed,
                },
                files,
                extra,
            });
        }
        let archive = write_archive(&files, &extra, mtime)?;
        let manifest = Manifest {
            entries: files.iter().map(|(e, _)| e.clone()).collect(),
            extra: extra.iter().map(|(e, _)| e.clone()).collect(),
            sealed,
        };
        Ok(SealedBundle {
            archive,
            manifest,
            files,
            extra,
        })
    }
}

fn entry(role: &KeyRole, public: bool, size: usize, key: &PendingKey) -> ManifestEntry {
    ManifestEntry {
        path: if public {
            role.public_path()
        } else {
            role.private_path()
        },
        role: role.clone(),
        public,
        mode: if public { PUBLIC_MODE } else { PRIVATE_MODE },
        uid: 0,
        gid: 0,
        size: size as u64,
        fingerprint: key.fingerprint.clone(),
        public_key: key.public_line.clone(),
        sealed: false,
    }
}

/// The ustar header of every file keypack writes: regular file, root:root, fixed mtime.
pub(crate) fn file_header(size: u64, mode: u32, mtime: u64) -> Result<tar::Header, BundleError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header
        .set_username("root")
        .and_then(|_| header.set_groupname("root"))
        .map_err(BundleError::Archive)?;
    Ok(header)
}

/// Parses an OpenSSH private key and returns its public line and SHA256 fingerprint.
pub(crate) fn derive_public(path: &str, bytes: &[u8]) -> Result<(String, String), BundleError> {
    let not_a_key = || BundleError::NotAnOpenSshKey { path: path.into() };
    let key = PrivateKey::from_openssh(bytes).map_err(|_| not_a_key())?;
    if key.is_encrypted() {
        return Err(BundleError::EncryptedKey { path: path.into() });
    }
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(BundleError::WrongKeyType {
            path: path.into(),
            found: key.algorithm().to_string(),
        });
    }
    let public = key.public_key();
    let line = public.to_openssh().map_err(|_| not_a_key())?;
    Ok((line, public.fingerprint(HashAlg::Sha256).to_string()))
}

fn check_stored_public(path: &str, stored: &str, derived: &str) -> Result<(), BundleError> {
    let public = PublicKey::from_openssh(stored.trim())
        .map_err(|_| BundleError::BadPublicKey { path: path.into() })?;
    let stored_fp = public.fingerprint(HashAlg::Sha256).to_string();
    if stored_fp != derived {
        return Err(BundleError::PublicKeyMismatch {
            path: path.into(),
            stored: stored_fp,
            derived: derived.into(),
        });
    }
    Ok(())
}

pub(crate) fn write_archive(
    files: &[(ManifestEntry, SecretSlice<u8>)],
    extra: &[(ExtraEntry, Box<[u8]>)],
    mtime: u64,
) -> Result<SecretSlice<u8>, BundleError> {
    // Every file in path order: keys and extra entries interleaved.
    let mut all: Vec<(&str, u32, &[u8])> = files
        .iter()
        .map(|(e, c)| (e.path.as_str(), e.mode, c.expose_secret()))
        .chain(extra.iter().map(|(e, c)| (e.path.as_str(), e.mode, &c[..])))
        .collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    // Upper bound of the gzip output: tar (512-byte header + padded data per file + 1 KiB end
    // + record padding to 10 KiB) plus deflate's stored-block worst case and gzip framing.
    let tar_len: usize = all
        .iter()
        .map(|(_, _, c)| 512 + c.len().div_ceil(512) * 512)
        .sum::<usize>()
        + 1024;
    let tar_len = tar_len.div_ceil(10240) * 10240;
    let capacity = tar_len + tar_len.div_ceil(16_000) * 5 + 64 + 18;
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    {
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(&mut *out, Compression::best());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, mode, content) in all {
            let mut header = file_header(content.len() as u64, mode, mtime)?;
            tar.append_data(&mut header, path, content)
                .map_err(BundleError::Archive)?;
        }
        let mut gz = tar.into_inner().map_err(BundleError::Archive)?;
        gz.flush().map_err(BundleError::Archive)?;
        gz.finish().map_err(BundleError::Archive)?;
    }
    debug_assert!(
        out.len() <= capacity,
        "archive outgrew its pre-sized buffer"
    );
    // A copy at the exact size: `into_boxed_slice` would shrink the pre-sized buffer by
    // reallocating and free the old block unwiped (found by tests/assurance_heap.rs); `out` is
    // wiped by `Zeroizing` when it drops here.
    let bytes: Box<[u8]> = Box::from(out.as_slice());
    Ok(SecretSlice::from(bytes))
}

/// A finished bundle: archive bytes and manifest, read-only.
///
/// There is no `Debug` or `Clone`: the archive holds private keys. Plugins get a `&SealedBundle`
/// and can read it but never change it.
pub struct SealedBundle {
    archive: SecretSlice<u8>,
    manifest: Manifest,
    files: Vec<(ManifestEntry, SecretSlice<u8>)>,
    extra: Vec<(ExtraEntry, Box<[u8]>)>,
}

impl SealedBundle {
    /// A bundle from parts already checked to be consistent (`crate::reopen`).
    pub(crate) fn from_parts(
        archive: SecretSlice<u8>,
        manifest: Manifest,
        files: Vec<(ManifestEntry, SecretSlice<u8>)>,
        extra: Vec<(ExtraEntry, Box<[u8]>)>,
    ) -> Self {
        Self {
            archive,
            manifest,
            files,
            extra,
        }
    }

    /// The manifest: paths, modes, owners, sizes, fingerprints. No secret.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The burn mark file's content (`token\n`), when the bundle was built with
    /// `--burn-after-boot`; media that carry files (the initrd's cpio) add it as
    /// [`keypack_layout::BURN_MARK_PATH`]. Not secret.
    pub fn burn_mark(&self) -> Option<&str> {
        self.extra
            .iter()
            .find(|(e, _)| e.path == keypack_layout::BURN_MARK_PATH)
            .and_then(|(_, c)| std::str::from_utf8(c).ok())
    }

    /// Size of the `keys.tar.gz` archive in bytes.
    pub fn archive_len(&self) -> usize {
        self.archive.expose_secret().len()
    }

    /// The `keys.tar.gz` bytes. Every call site is an audit point listed in `SECURITY.md`:
    /// the bytes hold private keys and may only go into the final medium.
    pub fn expose_archive(&self) -> &[u8] {
        self.archive.expose_secret()
    }

    /// Each file with its content, in archive order, for media that need another container
    /// format (the initrd medium's cpio). Same audit rule as [`Self::expose_archive`].
    /// A sealed bundle gives only its `.pub` files here: the private keys are in the blob.
    pub fn expose_files(&self) -> impl Iterator<Item = (&ManifestEntry, &[u8])> {
        self.files.iter().map(|(e, c)| (e, c.expose_secret()))
    }

    /// The archive's files that are not keys (the sealed blob, markers), in path order, for
    /// media that build their own container (the initrd medium's cpio). Not secret.
    pub fn extra_files(&self) -> impl Iterator<Item = (&ExtraEntry, &[u8])> {
        self.extra.iter().map(|(e, c)| (e, &c[..]))
    }
}
