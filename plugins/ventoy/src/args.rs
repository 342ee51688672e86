//! The Ventoy medium's flags, added to `keypack build` and `keypack rebuild`.

use std::path::PathBuf;

/// Flags of the `ventoy` medium.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Ventoy medium (--media ventoy)")]
pub struct VentoyArgs {
    /// Ventoy release folder with boot/boot.img, boot/core.img.xz, ventoy/ventoy.disk.img.xz and
    /// ventoy/version (a ventoy-X.Y.Z folder, or …/share/ventoy of the nixpkgs package).
    #[arg(long, value_name = "DIR", env = "KEYPACK_VENTOY_DIR")]
    pub ventoy_dir: Option<PathBuf>,
    /// Write a GPT partition table instead of MBR.
    #[arg(long)]
    pub gpt: bool,
    /// Seconds Ventoy's menu waits before booting the ISO (VTOY_MENU_TIMEOUT).
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub menu_timeout: u32,
    /// Draw Ventoy's menu on the text console (theme.display_mode = CLI), for serial consoles.
    #[arg(long)]
    pub text_menu: bool,
    /// Do not make our ISO Ventoy's default image (leave VTOY_DEFAULT_IMAGE out).
    #[arg(long)]
    pub no_default_image: bool,
    /// Name of the ISO on the data partition (default: the ISO's own file name).
    #[arg(long, value_name = "NAME")]
    pub iso_name: Option<String>,
    /// Format the data partition as exFAT instead of FAT32 (automatic for an ISO of 4 GiB or
    /// more). Keys-only rebuilds and `media update --image` need FAT32.
    #[arg(long)]
    pub exfat: bool,
    /// Total image size (e.g. 8G, to match a stick); the image is sparse. Default: just large
    /// enough for the ISO, the bundle and some room.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub image_size: Option<u64>,
}

/// Parses `123`, `512K`, `64M`, `8G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 8G"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}
