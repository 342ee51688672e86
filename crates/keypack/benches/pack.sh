#!/usr/bin/env bash
# Benchmark: decrypt + pack of a keys repository with 1 host and 50 users (every user a sops
# JSON document, the host a sops YAML document with a deploy key), X25519 identity, measured
# with hyperfine. Prints hyperfine's summary; the figure goes in the README.
#
#   crates/keypack/benches/pack.sh [path/to/keypack]    (default: builds --release)
set -euo pipefail
cd "$(dirname "$0")/../../.."
export SOPS_DISABLE_VERSION_CHECK=1
USERS="${KEYPACK_BENCH_USERS:-50}"

if [ $# -ge 1 ]; then
  KEYPACK="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
  cargo build --quiet --release -p keypack
  KEYPACK="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/keypack"
fi
for tool in hyperfine sops ssh-keygen python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keypack-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
IDENTITY="crates/keypack/tests/fixtures/age-key.txt"
RECIPIENT="$(grep -o 'age1[0-9a-z]*' "$IDENTITY" | head -n1)"
REPO="$WORK/keys"
mkdir -p "$REPO/hosts" "$REPO/users" "$WORK/plain"

doc() { # out-file field=keyfile...
  local out="$1"; shift
  python3 - "$@" >"$out" <<'PY'
import json, sys
print(json.dumps({f: open(p).read() for f, p in (a.split("=", 1) for a in sys.argv[1:])}))
PY
}
ssh-keygen -q -t ed25519 -N '' -f "$WORK/plain/host"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/plain/deploy"
doc "$WORK/plain/web1.json" ssh_host_ed25519_key="$WORK/plain/host" deploy_key_ed25519="$WORK/plain/deploy"
sops encrypt --age "$RECIPIENT" --input-type json --output-type yaml "$WORK/plain/web1.json" >"$REPO/hosts/web1.yaml"
ARGS=(-H web1)
for i in $(seq -w 1 "$USERS"); do
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/plain/u$i"
  doc "$WORK/plain/u$i.json" id_ed25519="$WORK/plain/u$i"
  sops encrypt --age "$RECIPIENT" "$WORK/plain/u$i.json" >"$REPO/users/user$i.json"
  ARGS+=(-U "user$i")
done
rm -rf "$WORK/plain"

"$KEYPACK" verify "${ARGS[@]}" --keys-repo "$REPO" -i "$IDENTITY" | tail -n 1
hyperfine --warmup 2 --min-runs 20 -N \
  --command-name "keypack pack (1 host + deploy key, $USERS users)" \
  "$KEYPACK pack ${ARGS[*]} --keys-repo $REPO -i $IDENTITY -o $WORK/out.tar.gz -f"
