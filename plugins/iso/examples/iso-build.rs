//! The keyed ISO medium without the CLI, for `benches/iso.sh`: builds `OUT` from `ISO` with a
//! bundle of throwaway keys.
//!
//!   iso-build ISO OUT STATE full|keys
//!
//! `full` copies the whole ISO (as `keypack rebuild` does); `keys` must find the last full
//! build's record in STATE and rewrite only the area (it fails otherwise, so the benchmark
//! cannot silently time a full build).

use std::path::Path;

use keypack_media_iso::{BuildMode, BuildOptions, CdFirmware, build};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, iso, out, state, mode] = args.as_slice() else {
        eprintln!("usage: iso-build ISO OUT STATE full|keys");
        std::process::exit(2);
    };
    let bundle = keypack_plugin::testing::sealed_bundle();
    let opts = BuildOptions {
        iso: Path::new(iso),
        output: Path::new(out),
        state_dir: Some(Path::new(state)),
        ignore_cache: mode == "full",
        firmware: CdFirmware::Any,
    };
    match build(&bundle, "bench", &opts) {
        Ok((_, got)) => {
            let want = if mode == "full" {
                BuildMode::Full
            } else {
                BuildMode::KeysOnly
            };
            if got != want {
                eprintln!("iso-build: expected a {want:?} build, did a {got:?} one");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("iso-build: {e}");
            std::process::exit(1);
        }
    }
}
