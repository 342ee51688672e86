#!/usr/bin/env bash
# Benchmarks of `keypack flash` (not run by the tests), side by side in one run, onto a loop
# device over a file on the same file system as the images:
#   sparse: an IMAGE_GIB (8) GiB sparse image (MBR, one FAT32 partition from 1 MiB) holding an
#     ISO_MIB (1024) MiB random ISO, `keypack flash` vs `dd if=IMAGE of=DEV bs=4M conv=fsync`
#     (goal <= 0.2: flash writes the data and the zeros the layout needs, dd writes everything);
#   dense: an ISO_MIB MiB image of random bytes (no holes), flash vs the same dd (goal <= 1.05:
#     same bytes written; flash also reads them all back to verify, dd does not).
# Both sides end durable (flash: one fsync, then its read-back; dd: conv=fsync).
# Needs: root (losetup), hyperfine, mkfs.vfat, mtools, sfdisk, fallocate; about
# IMAGE_GIB + 3 * ISO_MIB free space. Usage: crates/flash/benches/flash.sh [ISO_MIB [IMAGE_GIB]]
set -euo pipefail
ISO_MIB=${1:-1024}
IMAGE_GIB=${2:-8}
here=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
cargo build -q --release -p keypack
bin=$target/release/keypack

work=$(mktemp -d "${BENCH_DIR:-$here/target-bench}.XXXXXX" 2>/dev/null || mktemp -d)
chmod 700 "$work"
dev=
cleanup() {
  # Only the loop device this script attached.
  [ -n "$dev" ] && losetup -d "$dev" || true
  [ -n "${KEEP_WORK:-}" ] && echo "work folder: $work" || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# The sparse image: MBR with one FAT32 partition from 1 MiB to the end, the ISO on it.
head -c "$((ISO_MIB * 1024 * 1024))" /dev/urandom > nixos.iso
truncate -s "${IMAGE_GIB}G" sparse.img
echo 'start=2048, type=c' | sfdisk -q sparse.img
part_sectors=$(( IMAGE_GIB * 1024 * 1024 * 2 - 2048 ))
mkfs.vfat -F 32 -n KPBENCH --offset 2048 sparse.img $(( part_sectors / 2 )) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i sparse.img@@1M nixos.iso ::/nixos.iso
# The dense image: no holes at all.
head -c "$((ISO_MIB * 1024 * 1024))" /dev/urandom > dense.img

# The "stick": a loop device over an allocated file (fallocate: blocks are there, as on a
# stick, so neither side pays for allocating holes of the backing file).
fallocate -l "$(( IMAGE_GIB * 1024 * 1024 * 1024 + 1024 * 1024 ))" stick
dev=$(losetup --find --show stick)
echo "== loop device $dev over $work/stick; sparse image ${IMAGE_GIB} GiB with a ${ISO_MIB} MiB ISO, dense image ${ISO_MIB} MiB"
du -h --apparent-size sparse.img | sed 's/^/  apparent: /'
du -h sparse.img | sed 's/^/  allocated: /'

flash="$bin flash -H bench $dev --yes --allow-fixed --image"
dd="dd bs=4M conv=fsync status=none of=$dev if="
# -N: no shell; the prepare step flushes what the previous run left dirty; one warm-up round
# each (the first write into the fallocated file converts its unwritten extents: slow, once).
hyperfine -N --warmup 1 --runs "${RUNS:-3}" --prepare "sync" --export-json bench.json \
  -n "flash sparse" "$flash sparse.img" \
  -n "dd sparse" "${dd}sparse.img" \
  -n "flash dense" "$flash dense.img" \
  -n "dd dense" "${dd}dense.img"
# The last flash leaves the device verified; check it once more without writing.
$flash dense.img --verify-only 2>&1 | tail -n 1 | sed 's/^/  /'
python3 - "$ISO_MIB" "$IMAGE_GIB" <<'PY'
import json, sys
r = {x['command']: (x['mean'], x['stddev'] or 0.0) for x in json.load(open('bench.json'))['results']}
for k, (m, s) in r.items():
    print(f"  {k:14s} {m:8.2f} s  ± {s:.2f}")
iso, img = sys.argv[1], sys.argv[2]
print(f"sparse ({img} GiB image, {iso} MiB ISO): flash / dd = {r['flash sparse'][0] / r['dd sparse'][0]:.3f}   (goal <= 0.2)")
print(f"dense  ({iso} MiB image):              flash / dd = {r['flash dense'][0] / r['dd dense'][0]:.3f}   (goal <= 1.05)")
PY
