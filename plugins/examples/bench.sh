#!/usr/bin/env bash
# Benchmark: the cost of a medium out of process. The same build (1 host with a deploy key,
# 1 user, X25519 identity) through the built-in `initrd` medium and through the program
# `keypack-media-initrd-ext` (the same code served by keypack_plugin::external::serve: describe
# at start-up, spawn, hello, sealed memfd, build, bye), side by side with hyperfine in one run.
# Prints hyperfine's summary with the ratio; the figure goes in the README.
#
#   plugins/examples/bench.sh        (builds --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
export SOPS_DISABLE_VERSION_CHECK=1
cargo build --quiet --release -p keypack -p keypack-media-initrd --bin keypack --bin keypack-media-initrd-ext
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
for tool in hyperfine sops ssh-keygen python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keypack-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
IDENTITY="$PWD/crates/keypack/tests/fixtures/age-key.txt"
RECIPIENT="$(grep -o 'age1[0-9a-z]*' "$IDENTITY" | head -n1)"
mkdir -p "$WORK/keys/hosts" "$WORK/keys/users" "$WORK/plain" "$WORK/bin" "$WORK/state"
chmod 700 "$WORK/state"
cp "$TARGET/keypack-media-initrd-ext" "$WORK/bin/"
doc() { # out-file field=keyfile...
  local out="$1"; shift
  python3 - "$@" >"$out" <<'PY'
import json, sys
print(json.dumps({f: open(p).read() for f, p in (a.split("=", 1) for a in sys.argv[1:])}))
PY
}
for k in host deploy alice; do ssh-keygen -q -t ed25519 -N '' -f "$WORK/plain/$k"; done
doc "$WORK/plain/web1.json" ssh_host_ed25519_key="$WORK/plain/host" deploy_key_ed25519="$WORK/plain/deploy"
doc "$WORK/plain/alice.json" id_ed25519="$WORK/plain/alice"
sops encrypt --age "$RECIPIENT" --input-type json --output-type yaml "$WORK/plain/web1.json" >"$WORK/keys/hosts/web1.yaml"
sops encrypt --age "$RECIPIENT" "$WORK/plain/alice.json" >"$WORK/keys/users/alice.json"
rm -rf "$WORK/plain"
head -c 4096 /dev/urandom >"$WORK/vmlinuz"
head -c 4096 /dev/urandom >"$WORK/base.img"
export PATH="$WORK/bin:$PATH" KEYPACK_STATE_DIR="$WORK/state"
COMMON="build -H web1 -U alice --keys-repo $WORK/keys -i $IDENTITY --kernel $WORK/vmlinuz --initrd $WORK/base.img"
hyperfine --warmup 2 --min-runs 20 -N \
  --command-name "keypack build --media initrd (built-in)" "$TARGET/keypack $COMMON --media initrd" \
  --command-name "keypack build --media initrd-ext (external program)" "$TARGET/keypack $COMMON --media initrd-ext"
