//! `keypack-test-guest [OUT_DIR]`: builds the end-to-end test guest (kernel, base initrd with a
//! fresh client key for root) into OUT_DIR (default `target/keypack-guest/bench`) and prints
//! `KERNEL=… INITRD=… CLIENT_KEY=…` lines for scripts (the benchmark).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use keypack_e2e::{guest, tools};

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| guest::cache_dir().join("bench"));
    std::fs::create_dir_all(&out)?;
    let kernel = guest::kernel()?;
    let load_keys = tools::cargo_bin("load-keys", "load-keys", "release-small")?;
    let key = out.join("client_key");
    if !key.exists() {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "keypack-e2e", "-f"])
            .arg(&key)
            .status()
            .context("ssh-keygen")?;
        anyhow::ensure!(st.success(), "ssh-keygen failed");
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let initrd = out.join("base.cpio.gz");
    guest::base_initrd(&initrd, &load_keys, &public, &kernel)?;
    println!("KERNEL={}", kernel.vmlinuz.display());
    println!("INITRD={}", initrd.display());
    println!("CLIENT_KEY={}", key.display());
    Ok(())
}
