use std::path::PathBuf;

/// Flags of the initrd medium, added to `keypack build`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Initrd medium (--media initrd)")]
pub struct InitrdArgs {
    /// Kernel to boot (bzImage/vmlinuz); with --initrd, instead of --iso (which takes kernel,
    /// initrd and command line from the ISO's default boot entry).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Base initrd; the keys cpio is appended after it.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0]; with --iso, added after the ISO's.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub append: Option<String>,
}
