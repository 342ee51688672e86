#!/usr/bin/env bash
# Benchmarks of the Ventoy medium (issue 4, "Speed and size"):
#   full build with a 1 GiB ISO vs `cp` of the same ISO on the same filesystem (target ≤ 1.3×),
#   against plain cp and against cp followed by sync (the honest baseline: the build is durable
#   before it returns, plain cp is not), for a fresh output and for one replacing an old file,
#   peak RSS of the full build (issue 17: <= 16 MiB for any ISO size and any release), with
#   the small synthetic blobs and with a real-size VTOYEFI blob (32 MiB, random data mixed
#   with zeros: xz gets about 45 %) compressed at xz's default -6 (8 MiB dictionary) and at
#   -9e (64 MiB dictionary), each with a small and a large ISO,
#   keys-only rebuild vs full build (target ≤ 5 %).
# Needs: hyperfine, xz, mkfs.vfat, mtools. Usage: plugins/ventoy/benches/ventoy.sh [ISO_MIB]
set -euo pipefail
ISO_MIB=${1:-1024}
here=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
cargo build -q --release -p keypack-media-ventoy --example ventoy-build
bin=$target/release/examples/ventoy-build

work=$(mktemp -d "${BENCH_DIR:-$here/target-bench}.XXXXXX" 2>/dev/null || mktemp -d)
chmod 700 "$work"
[ -n "${KEEP_WORK:-}" ] && echo "work folder: $work" || trap 'rm -rf "$work"' EXIT
cd "$work"

# Synthetic Ventoy release folder (same shape as the tests').
mkdir -p vt/boot vt/ventoy state
python3 - <<'PY'
b = bytearray(512); b[0:3] = b'\xeb\x63\x90'
b[0x190:0x1a0] = bytes([0x56,0x54,0,0x47,0x65,0,0x48,0x44,0,0x52,0x64,0,0x20,0x45,0x72,0x0d])
b[510:512] = b'\x55\xaa'
open('vt/boot/boot.img', 'wb').write(b)
open('vt/boot/core.img', 'wb').write(bytes(2047 * 512))
PY
xz -1 -T1 vt/boot/core.img
truncate -s 32M vt/ventoy/ventoy.disk.img
mkfs.vfat -F 16 -s 1 -n VTOYEFI --invariant vt/ventoy/ventoy.disk.img >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i vt/ventoy/ventoy.disk.img ::/ventoy ::/grub
echo 'set VENTOY_VERSION="1.1.18"' > cfg
mcopy -i vt/ventoy/ventoy.disk.img cfg ::/grub/grub.cfg
mcopy -i vt/ventoy/ventoy.disk.img cfg ::/ventoy/ventoy.cpio
cp vt/ventoy/ventoy.disk.img efi-real.img
xz -1 -T1 vt/ventoy/ventoy.disk.img
echo 1.1.18 > vt/ventoy/version
# The real-size release: the same boot files, and a VTOYEFI image filled with 28 MiB of
# 2 KiB random / 2 KiB zero blocks (a real one is full of EFI binaries, GRUB modules and
# tools, and about as compressible); compressed below at two xz levels.
mkdir -p vt-real/boot vt-real/ventoy
cp vt/boot/boot.img vt/boot/core.img.xz vt-real/boot/
echo 1.1.18 > vt-real/ventoy/version
python3 -c '
import os
with open("fill.bin", "wb") as f:
    for _ in range(28 * 256):
        f.write(os.urandom(2048) + bytes(2048))
'
mmd -i efi-real.img ::/EFI
mcopy -i efi-real.img fill.bin ::/EFI/fill.bin
rm fill.bin

head -c "$((ISO_MIB * 1024 * 1024))" /dev/urandom > nixos.iso
small=64
head -c "$((small * 1024 * 1024))" /dev/urandom > small.iso

echo "== peak RSS (VmHWM) of a full build: ${small} MiB ISO, then ${ISO_MIB} MiB ISO"
"$bin" vt small.iso small.img state-small full 2>&1 | sed 's/^/  small blob, small ISO: /'
"$bin" vt nixos.iso ventoy.img state full 2>&1 | sed 's/^/  small blob, large ISO: /'
for level in -6 -9e; do
  xz "$level" -T1 -c efi-real.img > vt-real/ventoy/ventoy.disk.img.xz
  xz -lvv vt-real/ventoy/ventoy.disk.img.xz | grep -o -- '--lzma2=dict=[0-9]*MiB' | head -n 1 |
    sed "s/^/  real-size blob (xz $level, $(stat -c %s vt-real/ventoy/ventoy.disk.img.xz) bytes): /"
  "$bin" vt-real small.iso real.img state-real full 2>&1 | sed "s/^/  real-size blob xz $level, small ISO: /"
  "$bin" vt-real nixos.iso real.img state-real full 2>&1 | sed "s/^/  real-size blob xz $level, large ISO: /"
done
rm -f real.img

echo "== full build vs cp (${ISO_MIB} MiB ISO), then keys-only rebuild"
[ -n "${NO_HYPERFINE:-}" ] && exit 0
# Run on an idle machine: hyperfine runs each command's rounds back to back, so background
# load changes the ratios.
# "over an existing file" pays for freeing the old file's blocks (cp: at open(O_TRUNC);
# the build: at the rename that replaces the old image), like a real rebuild.
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json bench.json \
  -n cp --prepare "sh -c 'rm -f copy.iso; sync'" "cp nixos.iso copy.iso" \
  -n "cp+sync" --prepare "sh -c 'rm -f copy.iso; sync'" "sh -c 'cp nixos.iso copy.iso && sync copy.iso'" \
  -n full --prepare "sh -c 'rm -f ventoy.img; sync'" "$bin vt nixos.iso ventoy.img state full" \
  -n "cp+sync over an existing file" --prepare "sync" "sh -c 'cp nixos.iso copy.iso && sync copy.iso'" \
  -n "full over an existing image" --prepare "sync" "$bin vt nixos.iso ventoy.img state full" \
  -n keys-only --prepare "sync" "$bin vt nixos.iso ventoy.img state keys"
python3 - <<'PY'
import json
r = {x['command']: x['mean'] for x in json.load(open('bench.json'))['results']}
for k, v in r.items():
    print(f"  {k:32s} {v * 1000:8.1f} ms")
full, rep = r['full'], r['full over an existing image']
print("The build fsyncs the image before it replaces the old one (durable); plain cp leaves")
print("the data in the page cache, so cp+sync is the honest baseline for a durable write.")
print(f"full / (cp+sync)  = {full / r['cp+sync']:.2f}x   (target <= 1.3x; honest baseline)")
print(f"full / cp         = {full / r['cp']:.2f}x   (cp does not write to disk before it exits)")
print(f"full over an existing image / (cp+sync over an existing file) = {rep / r['cp+sync over an existing file']:.2f}x")
print(f"full over an existing image / cp = {rep / r['cp']:.2f}x")
print(f"keys-only / full  = {100 * r['keys-only'] / full:.2f} %  (target <= 5 %)")
PY
