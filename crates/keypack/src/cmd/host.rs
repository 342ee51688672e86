//! `keypack host new|rotate`: make a host's keys, or replace them, in the keys repository.
//!
//! The work (key generation, `.sops.yaml` creation rules, the recipient replacement, the order
//! of writes) lives in `keypack-lifecycle`; this module is the edge: flags, the identity
//! (one `decrypt_batch` for every data key a rotation needs), context and printing. `user.rs`
//! shares [`new_entity`] and [`rotate_entity`].
//!
//! Secret hygiene: generated private keys exist only as `SecretSlice`s, go into
//! `keypack_sops::encrypt_document` and from there only as ciphertext into the repository;
//! nothing plaintext is written, passed in argv or the environment, or printed.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use keypack_identity::{AgeFile, IdentitySet};
use keypack_layout::{HostName, KeyRole};
use keypack_lifecycle::{
    Entity, NewKey, SOPS_CONFIG, SopsConfig, Write, apply, document_fields, generate,
    replace_recipient, replaced_recipients, scan_sops_files, sops_nix_snippet,
};
use keypack_pins::{PINS_FILE, Pins, PublicKey};
use keypack_repo::{Extract, KeysRepo, RepoError};
use keypack_sops::{DataKey, Format, SopsFile, SopsRecipient};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::keys;

/// Flags every `host`/`user` verb takes (before or after the verb).
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// The keys repository [default: $KEYPACK_KEYS_REPO, then `keys_repo` in
    /// ~/.config/keypack/config.toml]
    #[arg(long, value_name = "DIR", global = true)]
    pub keys_repo: Option<PathBuf>,
    /// age identity file, to decrypt the current keys and the files a rotation rewraps
    /// [default: $KEYPACK_IDENTITY, then $SOPS_AGE_KEY_FILE, then ~/.config/sops/age/keys.txt]
    #[arg(short = 'i', long, value_name = "FILE", global = true)]
    pub identity: Option<PathBuf>,
    /// Write nothing; print what would be written, and for whom
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Print one JSON document on stdout instead of lines
    #[arg(long, global = true)]
    pub json: bool,
}

/// `keypack host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
    #[command(flatten)]
    pub common: LifecycleArgs,
}

/// The `host` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Generate a new host's ed25519 host key (and, with --deploy-key, a deploy key), encrypt
    /// them with sops, pin them
    New(HostNewArgs),
    /// Replace a host's keys, its age recipient in .sops.yaml, and rewrap the sops files for it
    Rotate(HostRotateArgs),
}

/// Flags of `keypack host new`.
#[derive(Debug, clap::Args)]
pub struct HostNewArgs {
    /// The new host
    #[arg(value_name = "HOST")]
    pub host: HostName,
    /// Also generate a deploy key (root/.ssh/deploy_key_ed25519)
    #[arg(long)]
    pub deploy_key: bool,
    /// Encrypt for these age recipients instead of the ones .sops.yaml's creation rules give
    /// (repeat, or separate with commas)
    #[arg(long = "age", value_name = "RECIPIENT")]
    pub age: Vec<String>,
}

/// Flags of `keypack host rotate`.
#[derive(Debug, clap::Args)]
pub struct HostRotateArgs {
    /// The host whose keys to replace
    #[arg(value_name = "HOST")]
    pub host: HostName,
    /// Encrypt the new document for these age recipients instead of the ones .sops.yaml's
    /// creation rules give (repeat, or separate with commas)
    #[arg(long = "age", value_name = "RECIPIENT")]
    pub age: Vec<String>,
}

/// `keypack host …`.
pub fn host(args: HostArgs) -> Result<ExitCode> {
    match args.command {
        HostCommand::New(a) => new_entity(
            Entity::Host {
                name: a.host,
                deploy: a.deploy_key,
            },
            &args.common,
            &a.age,
        ),
        HostCommand::Rotate(a) => rotate_entity(RotateTarget::Host(a.host), &args.common, &a.age),
    }
}

/// `/`-separated repository-relative path, as sops matches `path_regex` and messages show it.
fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// `--age` values, comma-separated or repeated.
fn split_age(age: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in age {
        for r in a.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            if !out.iter().any(|x| x == r) {
                out.push(r.to_owned());
            }
        }
    }
    out
}

fn parse_recipients(list: &[String], what: &str) -> Result<Vec<SopsRecipient>> {
    list.iter()
        .map(|r| SopsRecipient::parse(r).with_context(|| format!("recipient of {what}")))
        .collect()
}

/// Whether the repository already has this host or user, and where.
fn existing(repo: &KeysRepo, entity: &Entity) -> Result<Option<String>> {
    let found = match entity {
        Entity::Host { name, .. } => repo
            .resolve_host(name)
            .map(|s| s.first().map(|s| s.path.clone())),
        Entity::User { name } => repo.resolve_user(name).map(|s| Some(s.path)),
    };
    match found {
        Err(RepoError::UnknownHost { .. } | RepoError::UnknownUser { .. }) => Ok(None),
        Ok(path) => Ok(Some(
            path.map(|p| rel_string(p.strip_prefix(repo.root()).unwrap_or(&p)))
                .unwrap_or_else(|| "(a document or folder)".to_owned()),
        )),
        Err(RepoError::UnsupportedDocument { path }) => Ok(Some(rel_string(
            path.strip_prefix(repo.root()).unwrap_or(&path),
        ))),
        Err(e) => Err(anyhow!(e).context(format!(
            "checking whether {} {} exists",
            entity.kind(),
            entity.name()
        ))),
    }
}

fn entity_folder(repo: &KeysRepo, entity: &Entity) -> PathBuf {
    match entity {
        Entity::Host { .. } => repo.config().hosts.clone(),
        Entity::User { .. } => repo.config().users.clone(),
    }
}

/// One key of the output: role, bundle path, public key, fingerprint.
fn key_json(k: &NewKey, dry_run: bool) -> serde_json::Value {
    json!({
        "role": k.slot.pin_role.as_str(),
        "path": k.slot.role.private_path(),
        "public_key": (!dry_run).then(|| k.public_line.clone()),
        "fingerprint": (!dry_run).then(|| k.fingerprint()),
    })
}

/// Encrypts the new keys as the entity's document, for `recipients`.
fn encrypt_keys(keys: &[NewKey], format: Format, recipients: &[SopsRecipient]) -> Result<Vec<u8>> {
    let (private, public) = document_fields(keys);
    let public: Vec<(&str, &str)> = public
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let doc =
        keypack_sops::encrypt_document(&private, &public, format, recipients, SystemTime::now())
            .context("encrypting the new keys")?;
    // Ciphertext only from here on.
    Ok(doc.to_vec())
}

fn host_lines(host: &str, key: &PublicKey) -> Result<(String, String)> {
    let recipient = key
        .age_recipient()
        .context("converting the host key to an age recipient")?;
    Ok((recipient, format!("{host} {}", key.to_openssh())))
}

/// `keypack host new` / `keypack user new`.
pub(crate) fn new_entity(
    entity: Entity,
    common: &LifecycleArgs,
    age: &[String],
) -> Result<ExitCode> {
    let root = keys::resolve_keys_repo(common.keys_repo.as_deref())?;
    let repo = KeysRepo::open(&root)?;
    let root = repo.root().to_path_buf();
    let kind = entity.kind();
    let name = entity.name().to_owned();
    if let Some(path) = existing(&repo, &entity)? {
        bail!(
            "{kind} {name} already exists in {} ({path}); replacing its keys is `keypack {kind} rotate {name}`",
            root.display()
        );
    }
    let slots = entity.slots()?;
    let mut pins = Pins::load(&root).context("reading keypack.pins")?;
    for s in &slots {
        if let Some(k) = pins.pin_for(&s.pin_role) {
            bail!(
                "{PINS_FILE} already pins {} to {}, but the repository has no keys for {kind} {name}; \
                 restore its document, or remove that line if the {kind} is gone for good",
                s.pin_role,
                k.fingerprint()
            );
        }
    }
    let doc_rel = entity_folder(&repo, &entity).join(format!("{name}.yaml"));
    let doc_rel_s = rel_string(&doc_rel);
    let recipients = if age.is_empty() {
        SopsConfig::load(&root)?.recipients_for(&doc_rel_s)?
    } else {
        split_age(age)
    };
    let sops_recipients = parse_recipients(&recipients, &doc_rel_s)?;

    let keys: Vec<NewKey> = slots.iter().map(generate).collect::<Result<_, _>>()?;
    let doc = encrypt_keys(&keys, Format::Yaml, &sops_recipients)?;
    for k in &keys {
        pins.set(k.slot.pin_role.clone(), k.public)
            .with_context(|| format!("pinning {}", k.slot.pin_role))?;
    }
    // The document (the only copy of the new keys) first, the pins naming them last.
    let writes = vec![
        Write {
            rel: doc_rel.clone(),
            bytes: doc,
        },
        Write {
            rel: PINS_FILE.into(),
            bytes: pins.render().into_bytes(),
        },
    ];
    let files: Vec<String> = writes.iter().map(|w| rel_string(&w.rel)).collect();
    if !common.dry_run {
        apply(&root, &writes)?;
    }

    let host_info = match &entity {
        Entity::Host { .. } => Some(host_lines(&name, &keys[0].public)?),
        Entity::User { .. } => None,
    };
    let snippet = host_info
        .as_ref()
        .map(|(recipient, _)| sops_nix_snippet(&name, recipient));
    let mut out = std::io::stdout().lock();
    if common.json {
        let mut doc = json!({
            kind: name,
            "dry_run": common.dry_run,
            "files": files,
            "recipients": recipients,
            "keys": keys.iter().map(|k| key_json(k, common.dry_run)).collect::<Vec<_>>(),
        });
        if let Some((recipient, known)) = &host_info {
            let show = !common.dry_run;
            doc["age_recipient"] = json!(show.then_some(recipient));
            doc["known_hosts"] = json!(show.then_some(known));
            doc["sops_yaml"] = json!(show.then_some(&snippet));
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if common.dry_run {
        "would write"
    } else {
        "wrote"
    };
    writeln!(
        out,
        "{verb} {doc_rel_s}  (sops, for {})",
        recipients.join(", ")
    )?;
    writeln!(out, "{verb} {PINS_FILE}")?;
    if common.dry_run {
        for k in &keys {
            writeln!(
                out,
                "would generate {}  ({})",
                k.slot.pin_role,
                k.slot.role.private_path()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for k in &keys {
        writeln!(
            out,
            "{}  {}  {}",
            k.slot.role.private_path(),
            k.fingerprint(),
            k.public_line
        )?;
    }
    if let (Some((recipient, known)), Some(snippet)) = (&host_info, &snippet) {
        writeln!(out, "age recipient: {recipient}")?;
        writeln!(out, "known_hosts:   {known}")?;
        writeln!(out)?;
        writeln!(
            out,
            "Add to {SOPS_CONFIG} (sops-nix), so {name} can decrypt its secrets:"
        )?;
        write!(out, "{snippet}")?;
    }
    out.flush()?;
    eprintln!("review and commit {}", files.join(" and "));
    Ok(ExitCode::SUCCESS)
}

/// What `rotate` works on.
pub(crate) enum RotateTarget {
    Host(HostName),
    User(keypack_layout::UserName),
}

/// `keypack host rotate` / `keypack user rotate`.
///
/// Everything is decrypted, generated, encrypted and rewrapped in memory first; then the files
/// are written in the order `keypack_lifecycle::Write` documents (new document, rewrapped
/// files, `.sops.yaml`, pins last), so a crash leaves either the old repository or one whose
/// pins still name the old keys (every build refuses it, and git has the old document) — never
/// pins naming keys that were not stored, and never an old key retired before its successor
/// exists on disk.
pub(crate) fn rotate_entity(
    target: RotateTarget,
    common: &LifecycleArgs,
    age: &[String],
) -> Result<ExitCode> {
    let root = keys::resolve_keys_repo(common.keys_repo.as_deref())?;
    let repo = KeysRepo::open(&root)?;
    let root = repo.root().to_path_buf();
    let (kind, name, sources) = match &target {
        RotateTarget::Host(h) => ("host", h.to_string(), repo.resolve_host(h)),
        RotateTarget::User(u) => ("user", u.to_string(), repo.resolve_user(u).map(|s| vec![s])),
    };
    let sources = sources.map_err(|e| {
        let hint = format!("a new {kind} is `keypack {kind} new {name}`");
        anyhow!(e).context(hint)
    })?;
    let (doc_path, format) = match sources.first().map(|s| (&s.path, &s.extract)) {
        Some((path, Extract::DocumentField { format, .. }))
            if sources.iter().all(|s| &s.path == path) =>
        {
            (path.clone(), crate::keys::sops_format(*format))
        }
        _ => bail!(
            "{kind} {name} keeps its keys in per-key files; `keypack {kind} rotate` rewrites a \
             document ({}/{name}.yaml): move the keys into one, or rotate by hand and `keypack pin --replace`",
            match &target {
                RotateTarget::Host(_) => repo.config().hosts.display().to_string(),
                RotateTarget::User(_) => repo.config().users.display().to_string(),
            }
        ),
    };
    let doc_rel = doc_path
        .strip_prefix(&root)
        .unwrap_or(&doc_path)
        .to_path_buf();
    let doc_rel_s = rel_string(&doc_rel);
    let doc_bytes = repo.read_file(&doc_path)?;
    let doc_file =
        SopsFile::parse(&doc_bytes, format).with_context(|| format!("parsing {doc_rel_s}"))?;
    let mut pins = Pins::load(&root).context("reading keypack.pins")?;

    let host_role = match &target {
        RotateTarget::Host(h) => Some(keypack_pins::Role::host_key(h.as_str())?),
        RotateTarget::User(_) => None,
    };
    // The old recipient from the pin when there is one: then one batch unwraps everything.
    let pinned_recipient = match host_role.as_ref().and_then(|r| pins.pin_for(r)) {
        Some(k) => Some(
            k.age_recipient()
                .context("the pinned host key's age recipient")?,
        ),
        None => None,
    };
    let scan_for = |recipient: &str| {
        scan_sops_files(&root, recipient).map(|v| {
            v.into_iter()
                .filter(|f| f.rel != doc_rel)
                .collect::<Vec<_>>()
        })
    };
    let mut candidates = match &pinned_recipient {
        Some(r) => scan_for(r)?,
        None => Vec::new(),
    };

    let (identities, identity_path) = IdentitySet::discover(common.identity.as_deref())?;
    let unwrap_keys = |files: Vec<(String, &SopsFile)>| -> Result<Vec<DataKey>> {
        let batch: Vec<AgeFile> = files
            .iter()
            .map(|(label, f)| crate::keys::sops_age_file(label.clone(), f))
            .collect();
        let results = crate::keys::unwrap_batch(&identities, &batch);
        // Sized once: a `Vec<DataKey>` that grows moves the keys and frees the old buffer
        // unwiped (DataKey holds its bytes inline).
        let mut keys = Vec::with_capacity(files.len());
        for ((label, f), r) in files.iter().zip(results) {
            let plain = r.map_err(anyhow::Error::new).with_context(|| {
                // A file other than the document is only here because it lists the
                // host: say why keypack needs to open it.
                let why = if *label == doc_rel_s {
                    String::new()
                } else {
                    format!(
                        "; it lists {name}'s age recipient, so the rotation must rewrap it \
                         (nothing was written)"
                    )
                };
                format!(
                    "unwrapping the data key of {label} (sops lists: {}) with the identities in {}{why}",
                    f.recipients().join(", "),
                    identity_path.display()
                )
            })?;
            keys.push(
                DataKey::from_bytes(plain.expose_secret())
                    .with_context(|| format!("the data key of {label}"))?,
            );
        }
        Ok(keys)
    };
    let mut batch: Vec<(String, &SopsFile)> = vec![(doc_rel_s.clone(), &doc_file)];
    batch.extend(candidates.iter().map(|c| (rel_string(&c.rel), &c.file)));
    // Borrowed, never moved out of the Vec: a move leaves the key's bytes in the Vec's buffer.
    let data_keys = unwrap_keys(batch)?;
    let (doc_key, pinned_later_keys) = data_keys
        .split_first()
        .context("no data key for the document")?;
    let current = doc_file
        .decrypt(doc_key)
        .with_context(|| format!("decrypting {doc_rel_s}"))?;

    // The current keys: which roles the entity has, and their public halves.
    let entity = match &target {
        RotateTarget::Host(h) => Entity::Host {
            name: h.clone(),
            deploy: current.field(keypack_layout::DEPLOY_KEY_NAME).is_some(),
        },
        RotateTarget::User(u) => Entity::User { name: u.clone() },
    };
    let slots = entity.slots()?;
    let mut old_keys = Vec::with_capacity(slots.len());
    for s in &slots {
        let private = current
            .encrypted_field(s.field)
            .ok_or_else(|| anyhow!("{doc_rel_s}: no encrypted field {}", s.field))?;
        let public = keypack_lifecycle::public_of(&private)
            .map_err(|e| anyhow!("{doc_rel_s}: field {}: {e}", s.field))?;
        drop(private);
        if let Some(pinned) = pins.pin_for(&s.pin_role)
            && *pinned != public
        {
            bail!(
                "{doc_rel_s} holds {} for {}, but {PINS_FILE} pins {}: the document is not the \
                 key this {kind} runs with; run `keypack verify` and sort that out before rotating",
                public.fingerprint(),
                s.pin_role,
                pinned.fingerprint()
            );
        }
        old_keys.push(public);
    }
    drop(current);

    let keys: Vec<NewKey> = slots.iter().map(generate).collect::<Result<_, _>>()?;
    let recipients_of_host = if host_role.is_some() {
        let old = old_keys[0]
            .age_recipient()
            .context("the current host key's age recipient")?;
        let new = keys[0]
            .public
            .age_recipient()
            .context("the new host key's age recipient")?;
        Some((old, new))
    } else {
        None
    };

    // Files listing the old recipient (when it did not come from a pin: a second batch; the
    // identity set keeps the PIN, so a YubiKey is not asked twice).
    let mut second_batch_keys = Vec::new();
    if let (None, Some((old, _))) = (&pinned_recipient, &recipients_of_host) {
        candidates = scan_for(old)?;
        if !candidates.is_empty() {
            let batch = candidates
                .iter()
                .map(|c| (rel_string(&c.rel), &c.file))
                .collect();
            second_batch_keys = unwrap_keys(batch)?;
        }
    }
    let later_keys: &[DataKey] = if second_batch_keys.is_empty() {
        pinned_later_keys
    } else {
        &second_batch_keys
    };

    let mut writes = Vec::new();
    // .sops.yaml (read once): the old recipient replaced, nothing else.
    let mut config_text = SopsConfig::read(&root)?;
    let mut config_write = None;
    if let (Some((old, new)), Some(text)) = (&recipients_of_host, &config_text) {
        let (replaced, count) = replace_recipient(text, old, new);
        if count == 0 {
            eprintln!(
                "warning: {SOPS_CONFIG} does not list {name}'s age recipient {old}; add the new one ({new}) where {name} should decrypt"
            );
        } else {
            config_write = Some(Write {
                rel: SOPS_CONFIG.into(),
                bytes: replaced.clone().into_bytes(),
            });
            config_text = Some(replaced);
        }
    }
    let config = SopsConfig::from_text(&root, config_text.as_deref())?;
    // The new document, for its creation-rule recipients (after the replacement), else for
    // the recipients it has now (the old host recipient replaced).
    let recipients = if !age.is_empty() {
        split_age(age)
    } else {
        match config.recipients_for(&doc_rel_s) {
            Ok(r) => r,
            Err(keypack_lifecycle::LifecycleError::NoCreationRule { .. }) => {
                let current = doc_file.recipients();
                match &recipients_of_host {
                    Some((old, new)) => replaced_recipients(&current, old, new),
                    None => current,
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let doc = encrypt_keys(&keys, format, &parse_recipients(&recipients, &doc_rel_s)?)?;
    writes.push(Write {
        rel: doc_rel.clone(),
        bytes: doc,
    });
    // Every other sops file that listed the old recipient: same data key, new age list.
    let mut rewrapped = Vec::new();
    if let Some((old, new)) = &recipients_of_host {
        for (c, key) in candidates.iter().zip(later_keys) {
            let rel = rel_string(&c.rel);
            let list = replaced_recipients(&c.file.recipients(), old, new);
            let out =
                keypack_sops::rewrap(&c.bytes, c.format, key, &parse_recipients(&list, &rel)?)
                    .with_context(|| format!("rewrapping {rel}"))?;
            writes.push(Write {
                rel: c.rel.clone(),
                bytes: out,
            });
            rewrapped.push(rel);
        }
    }
    writes.extend(config_write);
    // Pins last: the new keys pinned, the old ones retired (pinned first if they were not).
    for (k, old) in keys.iter().zip(&old_keys) {
        if pins.pin_for(&k.slot.pin_role).is_none() {
            pins.set(k.slot.pin_role.clone(), *old)
                .with_context(|| format!("recording the old key of {}", k.slot.pin_role))?;
        }
        pins.set(k.slot.pin_role.clone(), k.public)
            .with_context(|| format!("pinning {}", k.slot.pin_role))?;
    }
    writes.push(Write {
        rel: PINS_FILE.into(),
        bytes: pins.render().into_bytes(),
    });
    let files: Vec<String> = writes.iter().map(|w| rel_string(&w.rel)).collect();
    if !common.dry_run {
        apply(&root, &writes)?;
    }

    let mut out = std::io::stdout().lock();
    let known = match (&entity, &recipients_of_host) {
        (Entity::Host { .. }, Some(_)) => Some(host_lines(&name, &keys[0].public)?.1),
        _ => None,
    };
    if common.json {
        let show = !common.dry_run;
        let mut doc = json!({
            kind: name,
            "dry_run": common.dry_run,
            "files": files,
            "recipients": recipients,
            "keys": keys.iter().map(|k| key_json(k, common.dry_run)).collect::<Vec<_>>(),
            "retired": slots.iter().zip(&old_keys).map(|(s, k)| json!({
                "role": s.pin_role.as_str(),
                "fingerprint": k.fingerprint(),
            })).collect::<Vec<_>>(),
        });
        if let Some((old, new)) = &recipients_of_host {
            doc["age_recipient"] = json!(show.then_some(new));
            doc["old_age_recipient"] = json!(old);
            doc["known_hosts"] = json!(show.then_some(&known));
            doc["rewrapped"] = json!(rewrapped);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if common.dry_run {
        "would write"
    } else {
        "wrote"
    };
    for f in &files {
        let note = if *f == doc_rel_s {
            format!("  (new keys; sops, for {})", recipients.join(", "))
        } else if rewrapped.contains(f) {
            "  (rewrapped)".to_owned()
        } else {
            String::new()
        };
        writeln!(out, "{verb} {f}{note}")?;
    }
    for (k, old) in keys.iter().zip(&old_keys) {
        let role: &KeyRole = &k.slot.role;
        if common.dry_run {
            writeln!(
                out,
                "would retire {}  {}",
                role.private_path(),
                old.fingerprint()
            )?;
        } else {
            writeln!(
                out,
                "{}  {}  (retired {})  {}",
                role.private_path(),
                k.fingerprint(),
                old.fingerprint(),
                k.public_line
            )?;
        }
    }
    if let Some((old, new)) = &recipients_of_host {
        writeln!(out, "old age recipient: {old}")?;
        if !common.dry_run {
            writeln!(out, "age recipient:     {new}")?;
        }
        if let Some(known) = &known
            && !common.dry_run
        {
            writeln!(out, "known_hosts:       {known}")?;
        }
    }
    out.flush()?;
    if !common.dry_run {
        eprintln!(
            "review and commit {}; then deploy the new keys (keypack build -H … / nixos-rebuild) — the old key no longer decrypts the rewrapped files",
            files.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
