# sshd serves the injected host key, and sops-nix decrypts with it.
#
# Only the ed25519 key at /etc/ssh/ssh_host_ed25519_key: no RSA key is generated, and sops-nix's
# default (every ed25519 host key) resolves to exactly the injected key. When no key was injected
# (a boot without keypack), sshd-keygen makes a random one; a console warning says so, because
# the machine then has a new identity and no sops secrets.
#
# Stands alone: the sops-nix settings apply only when sops-nix's module is imported (a
# `lib.mkIf` would not do: the module system rejects a definition of an undeclared option
# even when its condition is false).
{
  lib,
  options,
  ...
}:
let
  hostKey = "/etc/ssh/ssh_host_ed25519_key";
in
{
  config = lib.mkMerge [
    {
      services.openssh = {
        enable = true;
        hostKeys = [
          {
            type = "ed25519";
            path = hostKey;
          }
        ];
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = lib.mkForce "prohibit-password";
        };
      };

      systemd.services.keypack-host-key-check = {
        description = "Warn when no keypack host key was injected";
        wantedBy = [ "multi-user.target" ];
        # Before anything could generate a key, so the condition sees the injected state.
        before = [
          "sshd-keygen.service"
          "sshd.service"
        ];
        unitConfig.ConditionPathExists = "!${hostKey}";
        serviceConfig = {
          Type = "oneshot";
          StandardOutput = "journal+console";
        };
        script = ''
          echo "keypack: WARNING: no injected SSH host key at ${hostKey}."
          echo "keypack: sshd will use a newly generated key and sops-nix secrets are not available."
        '';
      };
    }
    (lib.optionalAttrs (options ? sops) {
      sops.age.sshKeyPaths = [ hostKey ];
      sops.gnupg.sshKeyPaths = [ ];
    })
  ];
}
