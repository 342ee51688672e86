# keypack, the operator's CLI, built with crane from the workspace (dependencies cached in
# `cargoArtifacts`, shared with the flake's clippy and test checks).
#
# The tools keypack drives are put on its PATH: age-plugin-yubikey (YubiKey identities), qemu
# (`keypack run`) and ssh (`keypack ssh`). UEFI firmware is found through QEMU's firmware
# descriptors, which Nix's qemu ships.
{
  lib,
  craneLib,
  commonArgs,
  cargoArtifacts,
  makeWrapper,
  age-plugin-yubikey,
  openssh,
  qemu,
}:
craneLib.buildPackage (
  commonArgs
  // {
    inherit cargoArtifacts;
    pname = "keypack";
    cargoExtraArgs = "-p keypack";
    # The workspace tests run once, in the flake's nextest check.
    doCheck = false;
    nativeBuildInputs = (commonArgs.nativeBuildInputs or [ ]) ++ [ makeWrapper ];
    postInstall = ''
      wrapProgram $out/bin/keypack --suffix PATH : ${
        lib.makeBinPath [
          age-plugin-yubikey
          openssh
          qemu
        ]
      }
    '';
    meta = {
      description = "Packs a machine's SSH keys from a sops/age keys repository into boot media";
      mainProgram = "keypack";
      license = [
        lib.licenses.mit
        lib.licenses.asl20
      ];
    };
  }
)
