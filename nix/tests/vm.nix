# NixOS VM test of the modules: the keys cpio is prepended to the initrd (what keypack's initrd
# medium and Ventoy's injection both produce), under systemd or scripted stage 1.
{
  pkgs,
  fixtures,
  sopsModule,
  loadKeysModule,
  systemdStage1 ? true,
  injected ? true,
}:
pkgs.testers.runNixOSTest {
  name = "keypack-vm-${if systemdStage1 then "systemd" else "scripted"}-stage1${
    if injected then "" else "-not-injected"
  }";
  nodes.machine =
    { lib, ... }:
    {
      imports = [
        sopsModule
        loadKeysModule
        ../ssh.nix
        ../users.nix
      ];
      boot.initrd.systemd.enable = systemdStage1;
      boot.initrd.prepend = lib.optional injected "${fixtures}/keys.cpio.gz";
      keypack.users.alice = { };
      # The fixture is a derivation output: sops-nix would read it at evaluation time to check
      # the secrets exist: import from derivation, slow and refused where IFD is off (Hydra).
      sops.validateSopsFiles = false;
      sops.defaultSopsFile = "${fixtures}/secrets.yaml";
      sops.secrets.test-secret = { };
    };
  testScript = import ./assertions.nix { inherit fixtures injected; };
}
