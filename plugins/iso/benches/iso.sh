#!/usr/bin/env bash
# Benchmarks of the keyed ISO medium (issue 16), side by side in one run (hyperfine):
#   full build with a 1 GiB ISO vs `cp` + `sync` of the same ISO on the same file system (goal
#   <= 1.05: both copy the file and make it durable; the build also fills the 1 MiB area, and
#   uses a reflink where the file system can, which makes it far cheaper than cp there),
#   keys-only rebuild (the area rewritten in place, fsynced) vs full build (goal <= 0.01).
# Needs: hyperfine, xorriso. Usage: plugins/iso/benches/iso.sh [ISO_MIB]
set -euo pipefail
ISO_MIB=${1:-1024}
here=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
cargo build -q --release -p keypack-media-iso --example iso-build
bin=$target/release/examples/iso-build

work=$(mktemp -d "${BENCH_DIR:-$here/target-bench}.XXXXXX" 2>/dev/null || mktemp -d)
chmod 700 "$work"
[ -n "${KEEP_WORK:-}" ] && echo "work folder: $work" || trap 'rm -rf "$work"' EXIT
cd "$work"

# A ${ISO_MIB} MiB ISO of random data with a 1 MiB area, as the flake's ISO has.
mkdir -p tree/keypack state
head -c "$((ISO_MIB * 1024 * 1024 - 2 * 1024 * 1024))" /dev/urandom > tree/nix-store.squashfs
truncate -s 1M tree/keypack/keys.img
xorriso -as mkisofs -quiet -R -J -V keypack-bench -o nixos.iso tree
rm -rf tree
echo "== $(du -h --apparent-size nixos.iso | cut -f1) ISO on $(stat -f -c %T .)"
"$bin" nixos.iso keyed.iso state full

[ -n "${NO_HYPERFINE:-}" ] && exit 0
# Run on an idle machine: hyperfine runs each command's rounds back to back.
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json bench.json \
  -n "cp+sync" --prepare "sh -c 'rm -f copy.iso; sync'" "sh -c 'cp nixos.iso copy.iso && sync copy.iso'" \
  -n full --prepare "sh -c 'rm -f keyed.iso; sync'" "$bin nixos.iso keyed.iso state full" \
  -n keys-only --prepare "sync" "$bin nixos.iso keyed.iso state keys"
python3 - <<'PY'
import json
r = {x['command']: x['mean'] for x in json.load(open('bench.json'))['results']}
for k, v in r.items():
    print(f"  {k:12s} {v * 1000:8.1f} ms")
print(f"full / (cp+sync) = {r['full'] / r['cp+sync']:.3f}   (goal <= 1.05)")
print(f"keys-only / full = {r['keys-only'] / r['full']:.4f}  (goal <= 0.01)")
PY
