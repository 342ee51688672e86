# The keypack NixOS ISO: a UEFI-bootable live system that takes its SSH identity from the keys
# keypack injects at boot (Ventoy injection or an appended initrd), instead of generating one.
#
# Needs sops-nix's NixOS module (the flake's `nixosModules.default` adds it). Every file here
# is also usable on its own: `load-keys.nix` is the piece any NixOS system needs to receive keys.
{
  imports = [
    ./boot.nix
    ./iso-keys.nix
    ./load-keys.nix
    ./ssh.nix
    ./network.nix
    ./users.nix
    ./programs.nix
    ./tailscale.nix
  ];
}
