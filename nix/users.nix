# Users of the ISO. Each user's injected key (users/<name>/.ssh/id_ed25519 in the bundle) is
# installed into their ~/.ssh at boot by load-keys.nix; logins use authorized keys only.
{ config, lib, ... }:
let
  cfg = config.keypack;
  userOptions = {
    options = {
      authorizedKeys = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Public keys allowed to log in as this user.";
      };
      extraGroups = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Supplementary groups.";
      };
    };
  };
in
{
  options.keypack = {
    users = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule userOptions);
      default = { };
      example = lib.literalExpression ''{ alice.extraGroups = [ "wheel" ]; }'';
      description = "Normal users created on the ISO; their injected keys are installed at boot.";
    };
    rootAuthorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Public keys allowed to log in as root.";
    };
  };

  config.users.users = lib.mkMerge [
    (lib.mapAttrs (_: user: {
      isNormalUser = true;
      inherit (user) extraGroups;
      openssh.authorizedKeys.keys = user.authorizedKeys;
    }) cfg.users)
    { root.openssh.authorizedKeys.keys = cfg.rootAuthorizedKeys; }
  ];
}
