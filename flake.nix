{
  description = "keypack: pack a machine's SSH keys into boot media, and the NixOS ISO that loads them";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      sops-nix,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      systemOf = pkgs: pkgs.stdenv.hostPlatform.system;

      # The Rust workspace, built with crane; dependencies are built once (cargoArtifacts) and
      # shared by the package, clippy and the tests.
      rustFor =
        pkgs:
        let
          craneLib = crane.mkLib pkgs;
          commonArgs = {
            pname = "keypack-workspace";
            inherit ((lib.importTOML ./Cargo.toml).workspace.package) version;
            src = lib.fileset.toSource {
              root = ./.;
              # Everything the workspace's builds and tests read: the fuzz target bodies and seeds
              # (assurance_fuzz_regressions.rs), flake.nix and nix/ (load-keys nix_files.rs).
              # crates/load-keys/tests/flake_source.rs checks a copy of exactly these paths.
              fileset = lib.fileset.unions [
                ./Cargo.toml
                ./Cargo.lock
                ./crates
                ./plugins
                ./tests
                ./fuzz
                ./flake.nix
                ./nix
              ];
            };
            strictDeps = true;
          };
          cargoArtifacts = craneLib.buildDepsOnly commonArgs;
        in
        {
          inherit craneLib commonArgs cargoArtifacts;
          keypack = pkgs.callPackage ./nix/pkgs/keypack.nix { inherit craneLib commonArgs cargoArtifacts; };
        };

      isoFor =
        system:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            { nixpkgs.hostPlatform = system; }
          ];
        };

      # The scripted stage 1 is deprecated in 26.05 and removed in 26.11: its tests run only
      # while the pinned release still has it (nixpkgs-unstable reports 26.11).
      hasScriptedStage1 = lib.versionOlder lib.trivial.release "26.11";

      nixSources = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
      };
    in
    {
      nixosModules = {
        # The whole ISO configuration, with sops-nix.
        default = {
          imports = [
            sops-nix.nixosModules.sops
            ./nix
          ];
        };
        # What any NixOS system needs to receive keypack-injected keys.
        load-keys = ./nix/load-keys.nix;
        ssh = ./nix/ssh.nix;
        boot = ./nix/boot.nix;
        network = ./nix/network.nix;
        users = ./nix/users.nix;
        programs = ./nix/programs.nix;
        tailscale = ./nix/tailscale.nix;
      };

      nixosConfigurations.iso = isoFor "x86_64-linux";

      packages = forAllSystems (
        pkgs:
        let
          rust = rustFor pkgs;
        in
        {
          default = rust.keypack;
          inherit (rust) keypack;
          load-keys = pkgs.pkgsStatic.callPackage ./nix/pkgs/load-keys.nix { };
          # nixpkgs' ISO with the keys area (nix/iso-keys.nix) for `keypack build --media iso`.
          iso = (isoFor (systemOf pkgs)).config.system.build.keypackIso;
        }
      );

      devShells = forAllSystems (
        pkgs:
        let
          rust = rustFor pkgs;
          # The seed's `iso build`, `iso run`, `iso ssh`, `iso log`, ... are keypack verbs now.
          iso = pkgs.writeShellScriptBin "iso" ''
            exec ${lib.getExe rust.keypack} "$@"
          '';
        in
        {
          default = rust.craneLib.devShell (
            {
              packages = [
                rust.keypack
                iso
                pkgs.qemu
                pkgs.OVMF.fd
                pkgs.age
                pkgs.age-plugin-yubikey
                pkgs.sops
                pkgs.ssh-to-age
                pkgs.cpio
                pkgs.nixfmt
                pkgs.deadnix
              ];
            }
            // lib.optionalAttrs pkgs.stdenv.hostPlatform.isx86_64 {
              OVMF_CODE = "${pkgs.OVMF.fd}/FV/OVMF_CODE.fd";
              OVMF_VARS = "${pkgs.OVMF.fd}/FV/OVMF_VARS.fd";
            }
          );
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      checks = forAllSystems (
        pkgs:
        let
          rust = rustFor pkgs;
          inherit (rust) craneLib commonArgs cargoArtifacts;
          fixtures = pkgs.callPackage ./nix/tests/fixtures.nix { };
          vmTest =
            args:
            import ./nix/tests/vm.nix (
              {
                inherit pkgs fixtures;
                sopsModule = sops-nix.nixosModules.sops;
                loadKeysModule = self.nixosModules.load-keys;
              }
              // args
            );
          isoTest =
            args:
            import ./nix/tests/iso.nix (
              {
                inherit
                  pkgs
                  lib
                  nixpkgs
                  fixtures
                  ;
                inherit (lib) nixosSystem;
                isoModules = [ self.nixosModules.default ];
              }
              // args
            );
        in
        {
          inherit (self.packages.${systemOf pkgs}) keypack load-keys;

          clippy = craneLib.cargoClippy (
            commonArgs
            // {
              inherit cargoArtifacts;
              cargoClippyExtraArgs = "--all-targets -- --deny warnings";
            }
          );

          fmt = craneLib.cargoFmt { inherit (commonArgs) src; };

          # Tests whose tools or privileges the sandbox lacks print KEYPACK-SKIPPED and return;
          # scripts/test with KEYPACK_REQUIRE_ALL=1 is where every test must run.
          tests = craneLib.cargoNextest (
            commonArgs
            // {
              inherit cargoArtifacts;
              nativeBuildInputs = [
                pkgs.cpio
                pkgs.openssh
                pkgs.sops
              ];
              partitions = 1;
              partitionType = "count";
              cargoNextestPartitionsExtraArgs = "--no-tests=pass";
            }
          );

          nix-lint =
            pkgs.runCommand "keypack-nix-lint"
              {
                nativeBuildInputs = [
                  pkgs.nixfmt
                  pkgs.deadnix
                ];
              }
              ''
                cd ${nixSources}
                find . -name '*.nix' -print0 | xargs -0 nixfmt --check
                deadnix --fail .
                touch $out
              '';

          vm-systemd-stage1 = vmTest { systemdStage1 = true; };
          vm-not-injected = vmTest { injected = false; };
        }
        // lib.optionalAttrs hasScriptedStage1 {
          vm-scripted-stage1 = vmTest { systemdStage1 = false; };
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isx86_64 (
          {
            iso-systemd-stage1 = isoTest { systemdStage1 = true; };
          }
          // lib.optionalAttrs hasScriptedStage1 {
            iso-scripted-stage1 = isoTest { systemdStage1 = false; };
          }
        )
      );
    };
}
