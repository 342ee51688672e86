//! `keypack-test-guest [OUT_DIR [HOST]]`: builds the end-to-end test guest (kernel, base initrd
//! with a fresh client key for root) and a throwaway sops keys repository for HOST (default
//! `web1`) into OUT_DIR (default `<cache>/demo`, replaced), and prints shell assignments for
//! scripts (the README demo, the benchmark):
//! `HOST=… KERNEL=… INITRD=… CLIENT_KEY=… KEYS_REPO=… AGE_KEY=…`.

use std::path::PathBuf;

use anyhow::Result;
use keypack_e2e::{guest, repo, tools};

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| guest::cache_dir().join("demo"));
    let host = std::env::args().nth(2).unwrap_or_else(|| "web1".into());
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let kernel = guest::kernel()?;
    let load_keys = tools::cargo_bin("load-keys", "load-keys", "release-small")?;
    let key = out.join("client_key");
    let public = repo::keygen(&key, "keypack-e2e")?;
    let initrd = out.join("base.cpio.gz");
    guest::base_initrd(&initrd, &load_keys, &public, &kernel)?;
    let r = repo::make_repo(&out, &host, &[])?;
    println!("HOST={host}");
    println!("KERNEL={}", kernel.vmlinuz.display());
    println!("INITRD={}", initrd.display());
    println!("CLIENT_KEY={}", key.display());
    println!("KEYS_REPO={}", r.repo.display());
    println!("AGE_KEY={}", r.identity.display());
    Ok(())
}
