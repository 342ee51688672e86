//! The end-to-end test guest: a Debian kernel and a tiny busybox initrd that runs `load-keys`
//! and serves SSH with dropbear.
//!
//! Cache (`$XDG_CACHE_HOME/keypack-guest`, else `<target>/keypack-guest`): `vmlinuz` and the
//! virtio modules, extracted with `dpkg -x` from the package `linux-image-amd64` depends on
//! (`apt-get download`, no root, nothing installed). `KEYPACK_TEST_KERNEL_DEB` names a local
//! `.deb` instead (offline machines). The base initrd is built per call (it holds the test's
//! authorized key) into a folder the caller chooses.
//!
//! The guest's `/init`: mounts proc/sys/dev, loads the virtio modules (and `qemu_fw_cfg`, where
//! a sealed build's passphrase arrives), runs
//! `load-keys / /newroot` (its `=== Stage 1: … ===` lines go to the serial console), bind-mounts
//! `/newroot/etc/ssh` over `/etc/ssh` so what SSH serves is what `load-keys` installed, converts
//! the host key for dropbear and starts it on port 22. With `keypack_e2e.other_key` on the
//! kernel command line it serves a freshly generated key instead (the mismatch test).
//! A power-button press (ACPI, `keypack stop`) powers it off via busybox `acpid`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::tools::{target_dir, which};

/// Modules the guest loads, in order (Debian builds virtio as modules).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    // The disk `keypack run --extra-disk` attaches (`/dev/vda` in a direct kernel boot).
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio-rng",
    "button",
    "evdev",
    // QEMU's firmware config in sysfs: `keypack run` hands a sealed build's passphrase there.
    "qemu_fw_cfg",
];

/// A kernel with its modules, cached.
pub struct Kernel {
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// Folder with `<module>.ko` files.
    pub modules: PathBuf,
}

/// The cache folder.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("keypack-guest"),
        None => target_dir().join("keypack-guest"),
    }
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The cached Debian kernel, downloading and extracting it on first use.
pub fn kernel() -> Result<Kernel> {
    let cache = cache_dir();
    let k = Kernel {
        vmlinuz: cache.join("vmlinuz"),
        modules: cache.join("modules"),
    };
    // Every module must be there: a cache from before a module was added is refreshed.
    if k.vmlinuz.is_file()
        && MODULES
            .iter()
            .all(|m| k.modules.join(format!("{m}.ko")).is_file())
    {
        return Ok(k);
    }
    std::fs::create_dir_all(&cache)?;
    let work = tempfile::tempdir_in(&cache)?;
    let deb = match std::env::var_os("KEYPACK_TEST_KERNEL_DEB") {
        Some(d) => PathBuf::from(d),
        None => {
            // linux-image-amd64 is a metapackage; the kernel is in the linux-image-6.x it depends on.
            let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
            let deps = String::from_utf8_lossy(&deps.stdout);
            let pkg = deps
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
                .context("apt-cache depends linux-image-amd64 names no linux-image-6.x package")?
                .to_owned();
            run(Command::new("apt-get")
                .args(["download", "-q", &pkg])
                .current_dir(work.path()))?;
            std::fs::read_dir(work.path())?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .context("apt-get download produced no .deb")?
        }
    };
    let root = work.path().join("x");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no /boot/vmlinuz-* in the kernel package")?;
    let staged_modules = work.path().join("modules");
    std::fs::create_dir_all(&staged_modules)?;
    let mut found = 0;
    for path in walk(&root.join("lib/modules"))
        .into_iter()
        .chain(walk(&root.join("usr/lib/modules")))
    {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(stem) = name.strip_suffix(".ko")
            && MODULES.contains(&stem)
        {
            std::fs::copy(&path, staged_modules.join(&name))?;
            found += 1;
        }
    }
    if found == 0 {
        bail!("no virtio modules in {}", deb.display());
    }
    let _ = std::fs::remove_dir_all(&k.modules);
    std::fs::rename(&staged_modules, &k.modules)?;
    std::fs::copy(&vmlinuz, &k.vmlinuz)?;
    Ok(k)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Copies `bin` into `root` at `dest` and every library `ldd` lists at its own path.
fn install_with_libs(root: &Path, bin: &Path, dest: &str) -> Result<()> {
    copy_into(root, bin, dest)?;
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path)?;
            copy_into(root, &real, path)?;
        }
    }
    Ok(())
}

fn copy_into(root: &Path, src: &Path, dest: &str) -> Result<()> {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("parent"))?;
    std::fs::copy(src, &target).with_context(|| format!("copying {}", src.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The guest's `/init`.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /run /tmp /newroot /var/run
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in MODULES; do insmod /lib/modules/$m.ko 2>/dev/null; done
echo "keypack-e2e: guest init running"
/bin/load-keys / /newroot
echo "keypack-e2e: load-keys exited with $?"
if [ -f /newroot/etc/ssh/ssh_host_ed25519_key ]; then
  mount --bind /newroot/etc/ssh /etc/ssh
fi
case " $(cat /proc/cmdline) " in
  *" keypack_e2e.other_key "*)
    echo "keypack-e2e: serving a freshly generated host key"
    dropbearkey -t ed25519 -f /tmp/hostkey >/dev/null 2>&1 ;;
  *)
    dropbearconvert openssh dropbear /etc/ssh/ssh_host_ed25519_key /tmp/hostkey >/dev/null 2>&1 ||
      echo "keypack-e2e: no usable injected host key" ;;
esac
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "keypack-e2e: power button, powering off" > /dev/console\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -d >/dev/null 2>&1 &
echo "keypack-e2e: starting dropbear"
dropbear -F -E -s -r /tmp/hostkey -p 22 -P /tmp/dropbear.pid &
while :; do sleep 3600; done
"#;

/// Builds the base initrd (gzip newc cpio) into `out`, with `authorized_key` for root.
pub fn base_initrd(
    out: &Path,
    load_keys: &Path,
    authorized_key: &str,
    kernel: &Kernel,
) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox-static is not installed")?;
    let dropbear = which("dropbear").context("dropbear (package dropbear-bin) is not installed")?;
    let convert = which("dropbearconvert").context("dropbearconvert is not installed")?;
    let keygen = which("dropbearkey").context("dropbearkey is not installed")?;
    let tree = tempfile::tempdir()?;
    let root = tree.path();
    copy_into(root, &busybox, "/bin/busybox")?;
    install_with_libs(root, &dropbear, "/usr/sbin/dropbear")?;
    install_with_libs(root, &convert, "/usr/bin/dropbearconvert")?;
    install_with_libs(root, &keygen, "/usr/bin/dropbearkey")?;
    install_with_libs(root, load_keys, "/bin/load-keys")?;
    std::fs::create_dir_all(root.join("lib/modules"))?;
    for m in MODULES {
        let src = kernel.modules.join(format!("{m}.ko"));
        if src.is_file() {
            std::fs::copy(&src, root.join(format!("lib/modules/{m}.ko")))?;
        }
    }
    let init = INIT.replace("MODULES", &MODULES.join(" "));
    std::fs::write(root.join("init"), init)?;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::create_dir_all(root.join("etc/ssh"))?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(root.join("etc/shells"), "/bin/sh\n")?;
    std::fs::create_dir_all(root.join("root/.ssh"))?;
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(
        root.join("root/.ssh"),
        std::fs::Permissions::from_mode(0o700),
    )?;
    std::fs::write(
        root.join("root/.ssh/authorized_keys"),
        format!("{}\n", authorized_key.trim()),
    )?;
    std::fs::set_permissions(
        root.join("root/.ssh/authorized_keys"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1 > \"$1\"")
        .arg("sh")
        .arg(out)
        .current_dir(root)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("building the base initrd failed");
    }
    Ok(())
}
