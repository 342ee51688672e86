# Optional: join a tailnet at boot.
#
# The auth key comes from a sops secret encrypted to the host key (default: the bundle then only
# carries the host key), or from the bundle itself, staged by load-keys under /run/keypack/.
# Either way the path is a string, never a Nix path literal, which would copy the key into the
# world-readable store; and tailscaled-autoconnect only runs when the file exists, so a boot
# without it skips cleanly instead of running `tailscale up --auth-key ""`.
# Use an ephemeral, reusable, pre-approved, tagged key: the live system's state is on tmpfs.
#
# Stands alone: the sops parts apply only when sops-nix's module is imported (an assertion asks
# for it when authKeySource is "sops"); a `lib.mkIf` would not do, the module system rejects a
# definition of an undeclared option even when its condition is false.
{
  config,
  lib,
  options,
  ...
}:
let
  cfg = config.keypack.tailscale;
  hasSops = options ? sops;
  stagedKey = "/run/keypack/tailscale-authkey";
  keyFile =
    if cfg.authKeySource == "sops" && hasSops then
      config.sops.secrets.${cfg.sopsSecret}.path
    else
      stagedKey;
in
{
  options.keypack.tailscale = {
    enable = lib.mkEnableOption "joining a tailnet at boot";
    authKeySource = lib.mkOption {
      type = lib.types.enum [
        "sops"
        "bundle"
      ];
      default = "sops";
      description = ''
        Where the auth key comes from: "sops" (a sops-nix secret, see sopsSecret) or "bundle"
        (staged by load-keys at ${stagedKey}; needs a bundle entry for it, which keypack-layout
        does not define yet, so "bundle" boots skip Tailscale until it does).
      '';
    };
    sopsSecret = lib.mkOption {
      type = lib.types.str;
      default = "tailscale-authkey";
      description = "Name of the sops-nix secret holding the auth key.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        services.tailscale = {
          enable = true;
          authKeyFile = keyFile;
          extraUpFlags = [ "--ssh" ];
        };
        systemd.services.tailscaled-autoconnect.unitConfig.ConditionPathExists = keyFile;
        networking.firewall.trustedInterfaces = [ "tailscale0" ];
        assertions = [
          {
            assertion = cfg.authKeySource != "sops" || hasSops;
            message = "keypack: keypack.tailscale.authKeySource = \"sops\" needs sops-nix's NixOS module (the flake's nixosModules.default imports it).";
          }
        ];
      }
      (lib.optionalAttrs hasSops (
        lib.mkIf (cfg.authKeySource == "sops") {
          sops.secrets.${cfg.sopsSecret}.restartUnits = [ "tailscaled-autoconnect.service" ];
          # Who writes the secret: by default (sops.useSystemdActivation off) sops-nix's
          # activation script setupSecrets, which runs before systemd starts any stage-2 unit
          # (in the initrd under systemd stage 1, before switch-root; first thing in stage 2
          # under the scripted one), so no unit ordering is needed. With
          # useSystemdActivation (the default when systemd.sysusers or userborn is on) it is
          # sops-install-secrets.service, and the autoconnect unit must wait for it.
          systemd.services.tailscaled-autoconnect = lib.mkIf config.sops.useSystemdActivation {
            after = [ "sops-install-secrets.service" ];
            wants = [ "sops-install-secrets.service" ];
          };
        }
      ))
    ]
  );
}
