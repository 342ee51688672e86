# Networking for a headless live system: DHCP on every interface, sshd reachable.
{ lib, ... }:
{
  networking = {
    hostName = lib.mkDefault "keypack";
    useNetworkd = lib.mkDefault true;
    useDHCP = lib.mkDefault true;
    firewall.allowedTCPPorts = [ 22 ];
  };
}
