# Tools on the live system for installing and inspecting machines with the injected keys.
{ pkgs, ... }:
{
  environment.systemPackages = with pkgs; [
    age
    git
    jq
    rsync
    sops
    ssh-to-age
    tmux
  ];
}
