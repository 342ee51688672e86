# A live ISO based on the minimal installer, with systemd stage 1 and a serial console.
#
# installation-cd-base.nix already makes the ISO EFI-bootable (`isoImage.makeEfiBootable`) and
# USB-bootable (`makeUsbBootable`: an isohybrid MBR, which only takes effect together with BIOS
# boot, `makeBiosBootable`, i.e. on x86); nothing to set here for either.
#
# No secret ever enters the Nix store: the store is world-readable and ends up on the ISO. Keys
# arrive at boot (load-keys.nix); the assertions below refuse configurations that would put a
# key into the store through a path literal or a store path.
#
# Consoles: the installer profile logs user `nixos` (passwordless sudo) in on every console, and
# root and nixos have empty passwords. That stays so on the local console, as on NixOS's own
# installer; on serial consoles (a BMC's serial-over-LAN reaches them) there is no autologin and
# no login with an empty password unless `keypack.serialConsole.autologin` is set.
{
  config,
  lib,
  options,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.keypack.serialConsole;
  getty = config.services.getty;
  # A Nix path literal is copied into the store when used; a string under the store dir is in it.
  inStore = p: builtins.isPath p || lib.hasPrefix "${builtins.storeDir}/" (toString p);
  tailscaleKey = config.services.tailscale.authKeyFile;
  # nixpkgs' serial-getty@ command line without `--autologin`, from the same getty options.
  serialGetty = lib.concatStringsSep " " (
    [ (lib.getExe' pkgs.util-linux "agetty") ]
    ++ map lib.escapeShellArg (
      [
        "--login-program"
        "${getty.loginProgram}"
      ]
      ++ lib.optionals (getty.loginOptions != null) [
        "--login-options"
        getty.loginOptions
      ]
      ++ getty.extraArgs
    )
    ++ [ "%I --keep-baud $TERM" ]
  );
in
{
  imports = [ "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix" ];

  options.keypack.serialConsole = {
    device = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = "ttyS0,115200";
      example = "ttyAMA0,115200";
      description = ''
        Serial console added to the kernel command line (after tty0, so /dev/console and
        `keypack log` get the boot messages), or null for none.
      '';
    };
    autologin = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Whether serial consoles log the installer's user in like the local console does, and
        accept its empty password. Off by default: whoever reaches a serial console (a BMC's
        serial-over-LAN, a console server) would be root on a machine holding the injected keys.
      '';
    };
  };

  config = lib.mkMerge [
    {
      # Says what the ISO is (the installer's default reads nixos-minimal-…): the label is also
      # how stage 1 finds the ISO's file systems (/dev/disk/by-label). At most 32 characters.
      # Priority 90: above a plain definition in the installer profile, below lib.mkForce.
      isoImage.volumeID = lib.mkOverride 90 "keypack-${config.system.nixos.release}-${pkgs.stdenv.hostPlatform.uname.processor}";

      boot.initrd.systemd.enable = lib.mkDefault true;
      boot.kernelParams = [
        "console=tty0"
      ]
      ++ lib.optional (cfg.device != null) "console=${cfg.device}";

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
        {
          assertion = lib.stringLength config.isoImage.volumeID <= 32;
          message = "keypack: isoImage.volumeID is longer than the 32 characters ISO 9660 allows.";
        }
      ];
    }

    (lib.mkIf (!cfg.autologin) {
      # The local console (getty@, autovt@) keeps nixpkgs' command line with --autologin.
      systemd.services."serial-getty@".serviceConfig.ExecStart = lib.mkForce [
        "" # reset the upstream unit's ExecStart
        serialGetty
      ];
      # `login` accepts the installer's empty passwords by default; autologin (`login -f`) on the
      # local console does not authenticate, so only typed logins, as on a serial console, change.
      security.pam.services.login.allowNullPassword = lib.mkForce false;
    })

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
