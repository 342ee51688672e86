# load-keys, the stage-1 key loader. Call it with `pkgsStatic.callPackage` for a static musl
# binary that runs in any initrd (systemd stage 1, the scripted stage 1's extra-utils, busybox).
#
# Plain buildRustPackage rather than crane, so the NixOS module can build it from nixpkgs alone.
# The `release-small` profile of Cargo.toml is reproduced with CARGO_PROFILE_RELEASE_* overrides,
# which work whatever profile flag the cargo build hook passes.
{ lib, rustPlatform }:
let
  root = ../..;
in
rustPlatform.buildRustPackage {
  pname = "load-keys";
  version = (lib.importTOML (root + "/Cargo.toml")).workspace.package.version;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/Cargo.toml")
      (root + "/Cargo.lock")
      (root + "/crates")
      (root + "/plugins")
      (root + "/tests")
    ];
  };
  cargoLock.lockFile = root + "/Cargo.lock";

  cargoBuildFlags = [
    "-p"
    "load-keys"
  ];
  # The tests need root and run in the flake's checks (and in CI), not in the sandbox here.
  doCheck = false;

  env = {
    CARGO_PROFILE_RELEASE_OPT_LEVEL = "z";
    CARGO_PROFILE_RELEASE_LTO = "true";
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS = "1";
    CARGO_PROFILE_RELEASE_PANIC = "abort";
    CARGO_PROFILE_RELEASE_STRIP = "true";
  };

  meta = {
    description = "Copies keypack-injected SSH keys from the initramfs into the booted system";
    mainProgram = "load-keys";
    license = [
      lib.licenses.mit
      lib.licenses.asl20
    ];
    platforms = lib.platforms.linux;
  };
}
