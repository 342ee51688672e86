# The keyed ISO's keys area (plugins/iso/README.md): a zero-filled file /keypack/keys.img that
# every boot entry of the ISO loads as its last initrd, so `keypack build --media iso` can put a
# host's keys into a copy of the ISO without rebuilding it. The kernel's initramfs unpacker
# skips the zeros, so the ISO as built boots as before, without keys.
#
# nixpkgs' iso-image module writes its GRUB and isolinux configurations itself and has no
# option for another initrd, so the area is added to the finished ISO: iso-keys.sh rewrites
# /EFI/boot/grub.cfg, the grub.cfg inside /boot/efi.img (the one GRUB reads under UEFI) and
# /isolinux/isolinux.cfg, then checks on the written ISO that every initrd of every entry ends
# with the area. The result is system.build.keypackIso, the flake's `packages.iso`;
# system.build.isoImage stays nixpkgs' own.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.keypack.keysArea;
  plain = config.system.build.isoImage;
in
{
  options.keypack.keysArea = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether the ISO (system.build.keypackIso) has the keys area /keypack/keys.img, loaded
        by every boot entry as its last initrd, for `keypack build --media iso`.
      '';
    };
    sizeKiB = lib.mkOption {
      type = lib.types.ints.positive;
      default = 1024;
      description = ''
        Size of the keys area in KiB, a multiple of 2 (ISO 9660 sectors). 1 MiB holds the
        host, deploy and a few hundred user keys.
      '';
    };
  };

  config = {
    assertions = [
      {
        assertion = lib.mod cfg.sizeKiB 2 == 0;
        message = "keypack: keypack.keysArea.sizeKiB must be a multiple of 2 (ISO 9660 sectors are 2 KiB).";
      }
    ];

    system.build.keypackIso =
      if cfg.enable then
        pkgs.runCommand "keypack-keyed-iso"
          {
            nativeBuildInputs = [
              pkgs.xorriso
              pkgs.mtools
            ];
          }
          ''
            mkdir -p $out/iso
            for iso in ${plain}/iso/*.iso; do
              bash ${./iso-keys.sh} "$iso" ${toString cfg.sizeKiB} "$out/iso/$(basename "$iso")"
            done
          ''
      else
        plain;
  };
}
