# Boots the real ISO (with the test driver's instrumentation) by direct kernel boot, with the
# keys cpio appended to the ISO's own initrd: the kernel unpacks concatenated archives, exactly
# as it does for keypack's initrd medium. The ISO stays attached as a CD-ROM so its file systems
# (by label) are found.
{
  pkgs,
  lib,
  nixpkgs,
  nixosSystem,
  isoModules,
  fixtures,
  systemdStage1 ? true,
}:
let
  iso = nixosSystem {
    modules = isoModules ++ [
      (
        { modulesPath, ... }:
        {
          imports = [ "${modulesPath}/testing/test-instrumentation.nix" ];
          nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
          boot.initrd.systemd.enable = systemdStage1;
          keypack.users.alice = { };
          # The fixture is a derivation output: sops-nix would read it at evaluation time to check
          # the secrets exist: import from derivation, slow and refused where IFD is off (Hydra).
          sops.validateSopsFiles = false;
          sops.defaultSopsFile = "${fixtures}/secrets.yaml";
          sops.secrets.test-secret = { };
        }
      )
    ];
  };
  cfg = iso.config;
  top = cfg.system.build.toplevel;
  initrdWithKeys = pkgs.runCommand "keypack-iso-initrd-with-keys" { } ''
    cat ${cfg.system.build.initialRamdisk}/${cfg.system.boot.loader.initrdFile} ${fixtures}/keys.cpio.gz > $out
  '';
  qemu-common = import "${nixpkgs}/nixos/lib/qemu-common.nix" { inherit lib pkgs; };
  startCommand = lib.concatStringsSep " " [
    (qemu-common.qemuBinary pkgs.qemu_test)
    "-m 2048"
    "-netdev user,id=net0 -device virtio-net-pci,netdev=net0"
    "-cdrom ${cfg.system.build.isoImage}/iso/*.iso"
    "-kernel ${top}/kernel"
    "-initrd ${initrdWithKeys}"
    "-append \"${toString ([ "init=${top}/init" ] ++ cfg.boot.kernelParams)}\""
  ];
in
pkgs.testers.runNixOSTest {
  name = "keypack-iso-${if systemdStage1 then "systemd" else "scripted"}-stage1";
  nodes = { };
  testScript = ''
    machine = create_machine(r"""${startCommand}""")
    machine.start()
  ''
  + import ./assertions.nix {
    inherit fixtures;
    injected = true;
  };
}
