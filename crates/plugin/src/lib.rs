//! The plugin seam: media plugins turn a sealed bundle into boot media and describe how to boot
//! it; runner plugins boot that description.
//!
//! Position on the data path: `bundle → **media plugin** → boot description → **runner**`.
//! A media plugin receives a read-only [`SealedBundle`] (the only way a plugin ever sees a
//! secret), the build inputs and its own command-line flags, writes its artifact, and returns a
//! [`BootDescription`]: plain data (paths, never bytes) that any runner can boot without knowing
//! which medium produced it.
//!
//! Does **not** decrypt, resolve a keys repository or parse the CLI: plugins depend on this
//! crate and on format crates only (`cargo tree -p keypack-media-ventoy` lists no
//! `keypack-sops`, `keypack-repo` or `keypack`).
//!
//! # Adding a boot medium
//! 1. Create `plugins/<name>/` with a crate `keypack-media-<name>` depending on this crate.
//! 2. Define its flags as a `#[derive(clap::Args)]` struct; [`Medium::augment_args`] adds them to
//!    `keypack build`, and [`Medium::build`] reads them back with `FromArgMatches`. Flag names
//!    must not clash with other plugins' (a unit test in the CLI checks the whole set).
//! 3. `impl Medium for YourMedium`: write the artifact with [`output::write_private_file`]
//!    or an [`output::PendingFile`] (0600, temp name, fsync, rename) to `inputs.output`, and
//!    return a [`BootDescription`] naming it, with `host_public_key` from the bundle's manifest.
//!    Return `false` from [`Medium::needs_iso`] if the medium does not use `inputs.iso` (then
//!    `keypack build` runs no `nix build`). Wrap your own error type with [`PluginError::new`].
//!    [`Medium::artifact_name`] names the artifact after the host where that helps (the keyed
//!    ISO writes `web1.iso`); the default is [`Medium::default_artifact_name`].
//! 4. Register it with one line in `BUILT_IN_MEDIA` of `crates/keypack/src/media.rs`, and add it
//!    to the workspace
//!    members and the README's plugin table.
//! 5. Run [`testing::check_medium`] (or `check_medium_with` for flags and an ISO; feature
//!    `testing` in `[dev-dependencies]`) from its tests: it builds twice with one seed and
//!    checks the description, 0600 artifacts, byte-identical output and that no key bytes were
//!    left outside the listed files.
//!
//! **Or as a program, with no change to keypack:** write the same `impl Medium` in a crate
//! with a binary `keypack-media-<name>` whose `main` is
//! `keypack_plugin::external::serve(&YourMedium)` (see
//! `plugins/initrd/src/bin/keypack-media-initrd-ext.rs`), or any program in any language that
//! speaks `crates/plugin/PROTOCOL.md` (see `plugins/examples/keypack-media-pyexample`), and put
//! it on `PATH` or in `plugin_dir`. Check it with `keypack plugins check <name>`, and from
//! Rust tests drive the binary through [`external::ExternalMedium`] with the same
//! `testing::check_medium_with` (`plugins/initrd/tests/external.rs` also compares its bytes
//! with the compiled-in build's).
//!
//! `keypack build` then stores the description as `boot.json` in the host's state folder,
//! where `keypack run` reads it; a runner never learns which medium produced it.
//!
//! # Adding a runner
//!
//! A runner is a program `keypack-runner-<name>` (`keypack run --runner <name>`): in Rust an
//! `impl runner::RunnerService` (`start`, `stop`) served by `external::serve_runner` (see
//! `plugins/qemu/src/bin/keypack-runner-qemu-ext.rs`), or any program speaking the "Runners"
//! part of `PROTOCOL.md`.
//!
//! `plugins/initrd` is the smallest complete medium; read it first.
// `unsafe` only in `external::session::limit_fds` (close_range/fcntl between fork and exec).
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod boot;
pub mod child;
mod error;
pub mod external;
mod medium;
pub mod output;
pub mod progress;
pub mod runner;
#[cfg(feature = "testing")]
pub mod testing;

pub use boot::{BOOT_DESCRIPTION_VERSION, Boot, BootDescription, Firmware};
pub use error::{PluginError, error_chain};
pub use keypack_bundle::{Manifest, ManifestEntry, SealedBundle};
pub use keypack_layout::HostName;
pub use medium::{BuildInputs, Medium};
