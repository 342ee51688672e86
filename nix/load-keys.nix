# Copies the keys keypack injected into the initramfs into the booted system, before anything
# reads them: sops-nix decrypts with the host key during activation (inside the initrd under
# systemd stage 1), and sshd must start with the injected key instead of generating one.
#
# - systemd stage 1 (the default since 26.05): a oneshot initrd unit, after initrd-fs.target
#   (/sysroot and an etc overlay are mounted) and before initrd-nixos-activation.service.
#   wantedBy, never requiredBy: a failure is logged but never blocks the boot.
# - scripted stage 1 (deprecated, removed in 26.11): the seed's postMountCommands path, only
#   when systemd stage 1 is off (systemd stage 1 rejects postMountCommands with an assertion).
# - emergency shells: a system that receives injected keys holds them in its initrd, so the
#   initrd's root shell on failure is off (systemd: emergencyAccess; scripted: panic instead of
#   the shell_on_fail prompt) unless keypack.loadKeys.initrdEmergencyAccess says otherwise.
# - sealed bundles (keypack build --seal passphrase): load-keys asks for the passphrase. Under
#   systemd stage 1 through systemd-ask-password (an absolute store path, run as a child), which
#   reaches the console and Plymouth through systemd's password agents: the unit is ordered
#   after the console agent and plymouth-start and has no start timeout while it waits. Under
#   the scripted stage 1 on the console. From QEMU's firmware config first when present
#   (`keypack run`), which needs the qemu_fw_cfg module (keypack.loadKeys.qemuFwCfg).
# - stage 2: users' keys, staged by stage 1 under /run/keypack/users/<u>/, are installed into
#   each user's ~/.ssh by name once users exist, before sshd.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.keypack.loadKeys;
  systemdStage1 = config.boot.initrd.systemd.enable;
  loadKeys = "${cfg.package}/bin/load-keys";
  askPassword = "${config.boot.initrd.systemd.package}/bin/systemd-ask-password";
in
{
  options.keypack.loadKeys = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Whether to copy keypack-injected SSH keys from the initramfs into the system at boot.";
    };
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.pkgsStatic.callPackage ./pkgs/load-keys.nix { };
      defaultText = lib.literalExpression "pkgs.pkgsStatic.callPackage ./pkgs/load-keys.nix { }";
      description = "The load-keys package; statically linked so it runs in any initrd.";
    };
    initrdEmergencyAccess = lib.mkOption {
      type = lib.types.either lib.types.bool lib.types.str;
      default = false;
      example = "$y$j9T$…";
      description = ''
        What the initrd offers when stage 1 fails. false (the default): no shell; under systemd
        stage 1 `boot.initrd.systemd.emergencyAccess = false` (sulogin finds root locked), under
        the scripted stage 1 `boot.panic_on_fail`. A hashed password (systemd stage 1 only): a
        root shell after that password. true: an unauthenticated root shell beside the
        injected keys, as NixOS's debugging setups have it.
      '';
    };
    qemuFwCfg = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Load the qemu_fw_cfg module in the initrd, so a sealed bundle's passphrase handed over
        by `keypack run` (QEMU's -fw_cfg opt/io.keypack.passphrase) reaches load-keys. Harmless
        on machines without QEMU's firmware config.
      '';
    };
    stageDir = lib.mkOption {
      type = lib.types.str;
      default = "/run/keypack";
      readOnly = true;
      description = "Where stage 1 stages users' keys (0700 root); /run survives switch-root.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      (lib.mkIf cfg.qemuFwCfg {
        boot.initrd.kernelModules = [ "qemu_fw_cfg" ];
      })

      (lib.mkIf systemdStage1 {
        # Priority 55: above the installer's image-media overrides (60) and plain definitions,
        # below lib.mkForce; the option above is the way to change it.
        boot.initrd.systemd.emergencyAccess = lib.mkOverride 55 cfg.initrdEmergencyAccess;
        # An ExecStart store path is not copied into the initrd by itself.
        boot.initrd.systemd.storePaths = [
          loadKeys
          askPassword
        ];
        boot.initrd.systemd.services.load-keys = {
          description = "Copy keypack-injected SSH keys into /sysroot";
          wantedBy = [ "initrd.target" ];
          after = [
            "initrd-fs.target"
            # A sealed bundle's passphrase prompt must reach the console and Plymouth.
            "systemd-ask-password-console.path"
            "plymouth-start.service"
          ];
          wants = [ "systemd-ask-password-console.path" ];
          before = [
            "initrd-nixos-activation.service"
            "initrd-switch-root.target"
          ];
          unitConfig = {
            DefaultDependencies = false;
            RequiresMountsFor = "/sysroot";
          };
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${loadKeys} --stage-dir ${cfg.stageDir} --ask-password ${askPassword} / /sysroot";
            # Waiting for a sealed bundle's passphrase (load-keys bounds each prompt itself).
            TimeoutStartSec = "infinity";
            StandardOutput = "journal+console";
            StandardError = "journal+console";
          };
        };
      })

      (lib.mkIf (!systemdStage1) {
        warnings = [
          "keypack: the scripted stage 1 (boot.initrd.systemd.enable = false) is deprecated and scheduled for removal in NixOS 26.11; keypack's postMountCommands path goes with it. Use systemd stage 1, the default."
        ];
        # The bare word: `boot.panic_on_fail=1` matches nothing in stage-1-init.sh.
        boot.kernelParams = lib.optional (cfg.initrdEmergencyAccess == false) "boot.panic_on_fail";
        assertions = [
          {
            assertion = builtins.isBool cfg.initrdEmergencyAccess;
            message = "keypack: keypack.loadKeys.initrdEmergencyAccess as a password needs systemd stage 1; the scripted stage 1 has no authenticated shell.";
          }
        ];
        boot.initrd.extraUtilsCommands = ''
          copy_bin_and_libs ${loadKeys}
        '';
        boot.initrd.extraUtilsCommandsTest = ''
          $out/bin/load-keys --version
        '';
        boot.initrd.postMountCommands = ''
          load-keys --stage-dir ${cfg.stageDir} / "$targetRoot" || echo "load-keys failed; continuing without (some) injected keys"
        '';
      })

      {
        systemd.services.keypack-user-keys = {
          description = "Install keypack-staged user SSH keys into home folders";
          wantedBy = [ "multi-user.target" ];
          after = [
            "systemd-tmpfiles-setup.service"
            "systemd-sysusers.service"
            "userborn.service"
          ];
          before = [ "sshd.service" ];
          unitConfig.ConditionDirectoryNotEmpty = "${cfg.stageDir}/users";
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = "${loadKeys} --install-users --stage-dir ${cfg.stageDir}";
            StandardOutput = "journal+console";
            StandardError = "journal+console";
          };
        };
      }
    ]
  );
}
