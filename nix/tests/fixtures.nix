# Throwaway keys for the NixOS tests, generated at build time and used nowhere else:
# - keys.cpio.gz: the bundle as keypack's initrd medium lays it out (gzip newc, owner root, a
#   directory entry before every child, explicit modes; see decisions.md);
# - host.pub, alice.pub: what the tests expect to find in the booted system;
# - secrets.yaml: a sops file encrypted to the host key's age recipient (ssh-to-age), which
#   sops-nix can only decrypt if the injected host key is in place before activation.
{
  runCommand,
  cpio,
  gzip,
  openssh,
  sops,
  ssh-to-age,
}:
runCommand "keypack-test-fixtures"
  {
    nativeBuildInputs = [
      cpio
      gzip
      openssh
      sops
      ssh-to-age
    ];
  }
  ''
    export HOME=$TMPDIR
    mkdir -p tree/etc/ssh tree/root/.ssh tree/users/alice/.ssh $out
    ssh-keygen -q -t ed25519 -N "" -C keypack-test-host -f tree/etc/ssh/ssh_host_ed25519_key
    ssh-keygen -q -t ed25519 -N "" -C keypack-test-deploy -f tree/root/.ssh/deploy_key_ed25519
    ssh-keygen -q -t ed25519 -N "" -C alice -f tree/users/alice/.ssh/id_ed25519
    chmod 0755 tree/etc tree/etc/ssh
    chmod 0700 tree/root tree/root/.ssh tree/users tree/users/alice tree/users/alice/.ssh
    chmod 0600 tree/etc/ssh/ssh_host_ed25519_key tree/root/.ssh/deploy_key_ed25519 tree/users/alice/.ssh/id_ed25519
    chmod 0644 tree/etc/ssh/*.pub tree/root/.ssh/*.pub tree/users/alice/.ssh/*.pub
    (cd tree && find etc root users | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n > $out/keys.cpio.gz
    cp tree/etc/ssh/ssh_host_ed25519_key.pub $out/host.pub
    cp tree/users/alice/.ssh/id_ed25519.pub $out/alice.pub

    recipient=$(ssh-to-age < tree/etc/ssh/ssh_host_ed25519_key.pub)
    printf 'test-secret: keypack-test-secret\n' > plain.yaml
    sops --encrypt --age "$recipient" --input-type yaml --output-type yaml plain.yaml > $out/secrets.yaml
  ''
