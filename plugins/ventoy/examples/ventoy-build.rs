//! Builds a Ventoy image from an ISO and a stand-in bundle (random bytes), for
//! `benches/ventoy.sh`: `ventoy-build VENTOY_DIR ISO OUT STATE_DIR full|keys`.
//! `full` ignores the keys-only record; `keys` allows the in-place switch.

use std::io::Read;
use std::path::Path;

use keypack_media_ventoy::{BuildMode, BuildOptions, VentoyArgs, build_image};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: ventoy-build VENTOY_DIR ISO OUT STATE_DIR full|keys");
        std::process::exit(2);
    }
    let mut archive = vec![0u8; 4096];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut archive))
        .expect("urandom");
    let args = VentoyArgs {
        ventoy_dir: Some(a[1].clone().into()),
        menu_timeout: 3,
        ..Default::default()
    };
    let mode = build_image(
        &archive,
        &BuildOptions {
            args: &args,
            iso: Path::new(&a[2]),
            output: Path::new(&a[3]),
            state_dir: Some(Path::new(&a[4])),
            seed: Some(1),
            ignore_cache: a[5] == "full",
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    if a[5] == "keys" && mode != BuildMode::KeysOnly {
        eprintln!("error: expected a keys-only build, got {mode:?}");
        std::process::exit(1);
    }
    if let Ok(s) = std::fs::read_to_string("/proc/self/status")
        && let Some(l) = s.lines().find(|l| l.starts_with("VmHWM"))
    {
        eprintln!("{l}");
    }
}
