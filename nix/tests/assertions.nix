# The test script shared by the VM and ISO tests: what a boot with (or without) injected keys
# must look like from inside the machine.
{ fixtures, injected }:
if injected then
  ''
    host_pub = open("${fixtures}/host.pub").read().split()[1]
    alice_pub = open("${fixtures}/alice.pub").read()

    machine.wait_for_unit("multi-user.target")
    machine.succeed("journalctl -b --no-pager | grep -F '=== Stage 1: Loading SSH keys (keypack) ==='")
    machine.succeed("journalctl -b --no-pager | grep -F 'Found injected keys, copying to target...'")
    machine.succeed("journalctl -b --no-pager | grep -F '=== Stage 1: Key loading complete ==='")
    machine.fail("journalctl -b --no-pager | grep -F 'load-keys: error'")

    with subtest("sshd serves the injected host key, and no other"):
        machine.wait_for_unit("sshd.service")
        scanned = machine.wait_until_succeeds("ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null | grep ssh-ed25519")
        assert scanned.split()[2] == host_pub, f"sshd serves {scanned!r}, injected {host_pub}"
        assert machine.succeed("stat -c %a:%U:%G /etc/ssh/ssh_host_ed25519_key").strip() == "600:root:root"
        assert machine.succeed("stat -c %a /etc/ssh/ssh_host_ed25519_key.pub").strip() == "644"
        machine.fail("test -e /etc/ssh/ssh_host_rsa_key")
        machine.fail("journalctl -b --no-pager | grep -F 'no injected SSH host key'")

    with subtest("sops-nix decrypted a secret encrypted to the injected key"):
        assert machine.succeed("cat /run/secrets/test-secret").strip() == "keypack-test-secret"

    with subtest("root's deploy key"):
        assert machine.succeed("stat -c %a:%U /root/.ssh").strip() == "700:root"
        assert machine.succeed("stat -c %a:%U /root/.ssh/deploy_key_ed25519").strip() == "600:root"

    with subtest("alice's key is in her home, owned by her"):
        machine.wait_for_unit("keypack-user-keys.service")
        assert machine.succeed("stat -c %a:%U:%G /home/alice/.ssh").strip() == "700:alice:users"
        assert machine.succeed("stat -c %a:%U:%G /home/alice/.ssh/id_ed25519").strip() == "600:alice:users"
        assert machine.succeed("stat -c %a:%U /home/alice/.ssh/id_ed25519.pub").strip() == "644:alice"
        assert machine.succeed("cat /home/alice/.ssh/id_ed25519.pub") == alice_pub
        assert machine.succeed("stat -c %a:%U /run/keypack/users").strip() == "700:root"
  ''
else
  ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("journalctl -b --no-pager | grep -F 'No injected keys found (expected: /etc/ssh/ssh_host_ed25519_key)'")
    machine.succeed("journalctl -b --no-pager | grep -F 'keypack: WARNING: no injected SSH host key'")
    machine.wait_for_unit("sshd.service")
    machine.fail("test -e /run/secrets/test-secret")
    machine.fail("test -e /home/alice/.ssh/id_ed25519")
    machine.fail("journalctl -b --no-pager | grep -F 'load-keys: error'")
  ''
