//! Integration tests of the `keypack` binary: pack, verify and inspect against throwaway keys
//! repositories made with `ssh-keygen` and the real `sops` (one test binary, ripgrep-style).
//! Tests whose tools are missing print `KEYPACK-SKIPPED: …` (or fail under KEYPACK_REQUIRE_ALL=1).

mod bad_input;
mod common;
mod json;
mod layouts;
mod lifecycle;
mod pack;
mod pins;
mod plugins;
