# A UEFI-bootable (and BIOS, USB) live ISO, based on the minimal installer, with systemd stage 1.
#
# No secret ever enters the Nix store: the store is world-readable and ends up on the ISO. Keys
# arrive at boot (load-keys.nix); the assertions below refuse configurations that would put a
# key into the store through a path literal or a store path.
{
  config,
  lib,
  options,
  modulesPath,
  ...
}:
let
  # A Nix path literal is copied into the store when used; a string under the store dir is in it.
  inStore = p: builtins.isPath p || lib.hasPrefix "${builtins.storeDir}/" (toString p);
  tailscaleKey = config.services.tailscale.authKeyFile;
in
{
  imports = [ "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix" ];

  config = lib.mkMerge [
    {
      isoImage = {
        makeEfiBootable = true;
        makeUsbBootable = true;
      };

      boot.initrd.systemd.enable = lib.mkDefault true;
      # Serial last, so /dev/console (and `keypack log`) gets the stage-1 lines.
      boot.kernelParams = [
        "console=tty0"
        "console=ttyS0,115200"
      ];

      assertions = [
        {
          assertion = lib.all (k: !inStore k.path) config.services.openssh.hostKeys;
          message = "keypack: an SSH host key path is in (or would be copied to) the Nix store; host keys must come from the injected bundle.";
        }
        {
          assertion = !config.services.tailscale.enable || tailscaleKey == null || !inStore tailscaleKey;
          message = "keypack: services.tailscale.authKeyFile must be a string path outside the Nix store.";
        }
        {
          assertion = config.boot.initrd.secrets == { };
          message = "keypack: boot.initrd.secrets would bake secrets into the ISO's initrd.";
        }
      ];
    }

    # sops-nix is optional for this module (the flake's nixosModules.boot stands alone).
    (lib.optionalAttrs (options ? sops) {
      assertions = [
        {
          assertion = config.sops.age.keyFile == null || !inStore config.sops.age.keyFile;
          message = "keypack: sops.age.keyFile is in (or would be copied to) the Nix store.";
        }
      ];
    })
  ];
}
