/// Firmware the keyed ISO's boot description asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CdFirmware {
    /// Either (the ISO boots under UEFI and BIOS); `keypack run` uses BIOS unless given --uefi.
    #[default]
    Any,
    /// UEFI (OVMF under QEMU).
    Uefi,
    /// Legacy BIOS (SeaBIOS under QEMU).
    Bios,
}

/// Flags of the keyed ISO medium, added to `keypack build`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Keyed ISO medium (--media iso)")]
pub struct IsoArgs {
    /// Firmware the boot description asks the runner for (the ISO itself boots either way)
    #[arg(long, value_enum, value_name = "any|uefi|bios", default_value = "any")]
    pub iso_firmware: CdFirmware,
}
