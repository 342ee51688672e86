//! One module per verb; each handler is named after its command path.

pub mod build;
pub mod burn;
pub mod doctor;
pub mod escape;
pub mod flash;
pub mod host;
pub mod inspect;
pub mod inspect_image;
pub mod inspect_iso;
pub mod iso;
pub mod media;
pub mod pack;
pub mod pin;
pub mod plugins;
pub mod run;
pub mod run_external;
pub mod seal;
pub mod shell;
pub mod user;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::FromArgMatches;
use keypack_layout::{HostName, UserName};

use crate::cli::{Cli, Command};
use crate::keys::KeySelection;

/// Runs the verb the user chose.
pub fn dispatch(matches: &clap::ArgMatches) -> Result<ExitCode> {
    let cli = Cli::from_arg_matches(matches)?;
    let sub = matches.subcommand().map(|(_, m)| m);
    match cli.command {
        Command::Pack(args) => pack::pack(args),
        Command::Verify(args) => verify::verify(args),
        Command::Pin(args) => pin::pin(args),
        Command::Host(args) => host::host(args),
        Command::User(args) => user::user(args),
        Command::Recipients(args) => pin::recipients(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Build(args) => build::build(args, sub.expect("build has matches"), false),
        Command::Rebuild(args) => build::build(args, sub.expect("rebuild has matches"), true),
        Command::Plugins(args) => plugins::plugins(args),
        Command::Path(args) => iso::path(args),
        Command::Copy(args) => iso::copy(args),
        Command::Media(cmd) => media::media(cmd),
        Command::Flash(args) => flash::flash(args),
        Command::Run(args) => run::run(args),
        Command::Stop(args) => run::stop(args),
        Command::Restart(args) => run::restart(args),
        Command::Status(args) => run::status(args),
        Command::Log(args) => run::log(args),
        Command::Ssh(args) => run::ssh(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}

/// The flags that choose keys: `-H`, `-U`, `--keys-repo`, `-i`. Shared by `pack`, `verify` and
/// `build` (flatten it with `#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Host whose keys to use: its host key, and its deploy key when the repository has one
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: HostName,
    /// Also pack this user's key (repeat for several users)
    #[arg(short = 'U', long = "user", value_name = "USER")]
    pub users: Vec<UserName>,
    /// The keys repository [default: $KEYPACK_KEYS_REPO, then `keys_repo` in
    /// ~/.config/keypack/config.toml]
    #[arg(long, value_name = "DIR")]
    pub keys_repo: Option<PathBuf>,
    /// age identity file (X25519 or YubiKey plugin identities) [default: $KEYPACK_IDENTITY,
    /// then $SOPS_AGE_KEY_FILE, then ~/.config/sops/age/keys.txt]
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Let one key pair fill two roles of the bundle (e.g. a user who is also the deploy key).
    /// Without it keypack refuses: a file copied within the repository decrypts with a valid
    /// MAC in its new place, and this check is what catches it
    #[arg(long)]
    pub allow_shared_key: bool,
    /// Refuse a key that has no pin in `keypack.pins` (as `require_pins = true` in the
    /// repository's keypack.toml does); without it an unpinned key is a warning
    #[arg(long)]
    pub require_pins: bool,
}

impl KeyArgs {
    /// The selection these flags describe (users deduplicated, in order).
    pub fn selection(&self) -> KeySelection {
        let mut users: Vec<UserName> = Vec::with_capacity(self.users.len());
        for u in &self.users {
            if !users.contains(u) {
                users.push(u.clone());
            }
        }
        KeySelection {
            host: self.host.clone(),
            users,
            keys_repo: self.keys_repo.clone(),
            identity: self.identity.clone(),
            allow_shared_key: self.allow_shared_key,
            burn_mark: None,
            require_pins: self.require_pins,
        }
    }
}

/// Mistakes the CLI itself catches, before or after the libraries run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// `-o -` while standard output is a terminal.
    #[error("refusing to write the bundle (private keys) to a terminal")]
    StdoutIsTerminal,
    /// The output file exists and `-f` was not given.
    #[error("{path} already exists")]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// The output's folder does not exist.
    #[error("{path}: folder {folder} does not exist")]
    OutputFolderMissing {
        /// The output path.
        path: PathBuf,
        /// Its folder.
        folder: PathBuf,
    },
    /// The output would land inside the keys repository.
    #[error("{path} is inside the keys repository {repo}; refusing to write plaintext keys there")]
    OutputInRepo {
        /// The output path.
        path: PathBuf,
        /// The repository root.
        repo: PathBuf,
    },
    /// The output is a folder.
    #[error("{path} is a folder")]
    OutputIsFolder {
        /// The output path.
        path: PathBuf,
    },
    /// No keys repository was named anywhere.
    #[error("no keys repository given")]
    NoKeysRepo {
        /// The config file that was looked at.
        config: PathBuf,
    },
    /// `keypack verify` found keys that fail.
    #[error("{failed} of {total} key(s) failed verification")]
    VerifyFailed {
        /// Keys that failed.
        failed: usize,
        /// Keys checked.
        total: usize,
    },
}

impl CliError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            CliError::StdoutIsTerminal => {
                "redirect it (`-o - > keys.tar.gz`, `| ssh …`) or use -o FILE"
            }
            CliError::OutputExists { .. } => "use -f to replace it, or choose another -o",
            CliError::OutputFolderMissing { .. } => {
                "create the folder first (keypack does not create it)"
            }
            CliError::OutputInRepo { .. } => {
                "write the bundle outside the repository, so it is never committed"
            }
            CliError::NoKeysRepo { .. } => {
                "pass --keys-repo DIR, set KEYPACK_KEYS_REPO, or put `keys_repo = \"DIR\"` in ~/.config/keypack/config.toml"
            }
            CliError::VerifyFailed { .. } => {
                "each failing key is named above with its file and field"
            }
            CliError::OutputIsFolder { .. } => return None,
        })
    }
}

/// A "what to do" line for an error in the chain, printed as `hint: …`.
pub fn hint_for(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(e) = err.downcast_ref::<CliError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_repo::RepoError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_identity::IdentityError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_sops::SopsError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_lifecycle::LifecycleError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_flash::FlashError>() {
        return e.hint();
    }
    if let Some(e) = err.downcast_ref::<keypack_plugin::external::ExternalError>() {
        // A plugin's hint is its own text: leaked once, on the way out of the process.
        return e.hint().map(|h| &*Box::leak(h.to_owned().into_boxed_str()));
    }
    if let Some(e) = err.downcast_ref::<keypack_bundle::BundleError>() {
        use keypack_bundle::BundleError as B;
        return match e {
            B::PublicKeyMismatch { .. } => Some(
                "the stored public key belongs to another key: delete it (keypack derives the .pub) or store the right one",
            ),
            B::BadPublicKey { .. } => {
                Some("a stored public key is one line: `ssh-ed25519 AAAA… comment`")
            }
            B::NotAnOpenSshKey { .. } | B::WrongKeyType { .. } => Some(
                "keys are OpenSSH ed25519 private keys (`ssh-keygen -t ed25519`), stored whole, BEGIN and END lines included",
            ),
            B::EncryptedKey { .. } => Some(
                "remove the passphrase: `ssh-keygen -p -N \"\" -f KEY` before encrypting it with sops",
            ),
            B::SharedKey { .. } => Some(
                "give each role its own key (a file copied or restored from another host or user is the usual cause); pass --allow-shared-key only if one key in two roles is deliberate",
            ),
            B::Archive(_) => Some("is this a keys.tar.gz written by `keypack pack`?"),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        keys: KeyArgs,
    }

    fn parse(args: &[&str]) -> Result<KeyArgs, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.keys)
    }

    #[test]
    fn host_is_required_and_validated() {
        assert!(parse(&[]).is_err());
        for bad in ["../x", "a/b", "", ".hidden", "-rf"] {
            let err = parse(&["-H", bad]).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::ValueValidation
                        | clap::error::ErrorKind::UnknownArgument
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(parse(&["--host", "web1"]).unwrap().host.as_str(), "web1");
    }

    #[test]
    fn users_repeat_validate_and_deduplicate() {
        let args = parse(&["-H", "h", "-U", "bob", "--user", "alice", "-U", "bob"]).unwrap();
        let sel = args.selection();
        let names: Vec<&str> = sel.users.iter().map(|u| u.as_str()).collect();
        assert_eq!(names, ["bob", "alice"]);
        assert!(parse(&["-H", "h", "-U", "../../etc"]).is_err());
    }

    #[test]
    fn keys_repo_and_identity_are_paths_never_secrets() {
        let args = parse(&["-H", "h", "--keys-repo", "/k", "-i", "/id.txt"]).unwrap();
        let sel = args.selection();
        assert_eq!(sel.keys_repo.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(
            sel.identity.as_deref(),
            Some(std::path::Path::new("/id.txt"))
        );
        let long = parse(&["-H", "h", "--identity", "x"]).unwrap();
        assert_eq!(long.identity.as_deref(), Some(std::path::Path::new("x")));
    }

    #[test]
    fn hints_come_from_typed_errors_in_the_chain() {
        let err =
            anyhow::Error::new(CliError::OutputExists { path: "/x".into() }).context("packing");
        let hint = err.chain().find_map(hint_for);
        assert_eq!(hint, Some("use -f to replace it, or choose another -o"));
        let repo = keypack_repo::RepoError::NotAFolder { path: "/k".into() };
        assert!(hint_for(&repo).unwrap().contains("--keys-repo"));
        let other = std::io::Error::other("x");
        assert_eq!(hint_for(&other), None);
    }
}
