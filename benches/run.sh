#!/bin/sh
# benches/run.sh [RUNS] — time to the first SSH answer with the pinned host key:
#   A: keypack run --wait-ssh            (keypack: boot.json, checks, port, firmware, daemonize, wait)
#   B: qemu-system-x86_64 by hand with the same arguments (from `keypack run --dry-run`),
#      polled with the same ssh-keyscan loop keypack uses
# and the overhead ratio (A - B) / B. Target: under 10 %.
#
# Uses the end-to-end test guest (Debian kernel, busybox, dropbear, load-keys; built and cached by
# `keypack-test-guest`) and a throwaway sops keys repository. TCG unless ACCEL=kvm.
# Needs: qemu-system-x86, sops, openssh-client, dropbear-bin, busybox-static, cpio, network for
# `apt-get download` on the first run (or KEYPACK_TEST_KERNEL_DEB=/path/linux-image-….deb).
set -eu

RUNS=${1:-3}
ACCEL=${ACCEL:-tcg}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
cargo build -q -p keypack --bin keypack -p keypack-e2e --bin keypack-test-guest
KEYPACK=$CARGO_TARGET_DIR/debug/keypack

WORK=$(mktemp -d)
cleanup() {
    [ -f "$WORK/state/bench/qemu.pid" ] && kill "$(cat "$WORK/state/bench/qemu.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

eval "$("$CARGO_TARGET_DIR/debug/keypack-test-guest" "$WORK/guest" bench)"
mkdir -m 700 "$WORK/state"
export KEYPACK_STATE_DIR=$WORK/state KEYPACK_KEYS_REPO=$KEYS_REPO SOPS_AGE_KEY_FILE=$AGE_KEY
"$KEYPACK" build -H bench --media initrd --kernel "$KERNEL" --initrd "$INITRD" --append console=ttyS0 2>/dev/null
PINNED=$(awk '{print $1" "$2}' "$WORK/guest/host.pub")
# `keypack run` hands QEMU the joined initrd as a sealed memfd on its stdin (`-initrd /dev/fd/0`);
# the by-hand runs get the same bytes on stdin from a file (throwaway bench keys only).
JOINED=$WORK/joined-initrd.img
cp "$INITRD" "$JOINED"
pad=$(( (4 - $(stat -c %s "$JOINED") % 4) % 4 ))
head -c "$pad" /dev/zero >>"$JOINED"
cat "$WORK/state/bench/keys.cpio.gz" >>"$JOINED"
OPTS="--accel $ACCEL --memory 512 --cpus 1"

now() { date +%s.%N; }

a_total=0; b_total=0
i=1
while [ "$i" -le "$RUNS" ]; do
    # A: keypack
    t0=$(now)
    # shellcheck disable=SC2086
    "$KEYPACK" run -H bench $OPTS --port auto --wait-ssh --timeout 300 2>/dev/null
    t1=$(now)
    "$KEYPACK" stop -H bench --timeout 0 2>/dev/null
    a=$(echo "$t1 - $t0" | bc)

    # B: the same QEMU command line by hand, same polling
    # shellcheck disable=SC2086
    CMD=$("$KEYPACK" run -H bench $OPTS --port auto --dry-run 2>/dev/null)
    PORT=$(echo "$CMD" | sed -n 's/.*hostfwd=tcp:127\.0\.0\.1:\([0-9]*\)-:22.*/\1/p')
    t0=$(now)
    eval "$CMD -daemonize" <"$JOINED"
    # The same two-step poll keypack uses: the SSH banner (1 s timeout), then the key.
    until [ "$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && head -c 4 <&3" 2>/dev/null)" = SSH- ] &&
        ssh-keyscan -T 15 -t ed25519 -p "$PORT" 127.0.0.1 2>/dev/null | grep -q "$PINNED"; do
        sleep 0.1
    done
    t1=$(now)
    P=$(cat "$WORK/state/bench/qemu.pid")
    kill "$P"
    while [ -e "/proc/$P" ] && ! grep -q ') Z' "/proc/$P/stat" 2>/dev/null; do sleep 0.1; done
    "$KEYPACK" status -H bench >/dev/null 2>&1 || true  # cleans the stale pidfile
    b=$(echo "$t1 - $t0" | bc)

    printf 'run %d: keypack %.2f s, by hand %.2f s\n' "$i" "$a" "$b"
    a_total=$(echo "$a_total + $a" | bc); b_total=$(echo "$b_total + $b" | bc)
    i=$((i + 1))
done
a_mean=$(echo "scale=3; $a_total / $RUNS" | bc)
b_mean=$(echo "scale=3; $b_total / $RUNS" | bc)
ratio=$(echo "scale=2; 100 * ($a_mean - $b_mean) / $b_mean" | bc)
printf 'mean over %d runs (%s): keypack run --wait-ssh %.2f s, qemu by hand %.2f s, overhead %s %%\n' \
    "$RUNS" "$ACCEL" "$a_mean" "$b_mean" "$ratio"

# The part keypack adds, without the guest's boot noise: `keypack run` (no wait) returns when
# QEMU has daemonized; compare with the same QEMU command daemonized by hand.
sa=0; sb=0
i=1
while [ "$i" -le "$RUNS" ]; do
    t0=$(now)
    # shellcheck disable=SC2086
    "$KEYPACK" run -H bench $OPTS --port auto 2>/dev/null
    t1=$(now)
    "$KEYPACK" stop -H bench --timeout 0 2>/dev/null
    sa=$(echo "$sa + $t1 - $t0" | bc)
    # shellcheck disable=SC2086
    CMD=$("$KEYPACK" run -H bench $OPTS --port auto --dry-run 2>/dev/null)
    t0=$(now)
    eval "$CMD -daemonize" <"$JOINED"
    t1=$(now)
    P=$(cat "$WORK/state/bench/qemu.pid")
    kill "$P"
    while [ -e "/proc/$P" ] && ! grep -q ') Z' "/proc/$P/stat" 2>/dev/null; do sleep 0.1; done
    "$KEYPACK" status -H bench >/dev/null 2>&1 || true
    sb=$(echo "$sb + $t1 - $t0" | bc)
    i=$((i + 1))
done
printf 'start only, mean over %d runs: keypack run %.3f s, qemu -daemonize by hand %.3f s, keypack adds %.3f s\n' \
    "$RUNS" "$(echo "scale=4; $sa / $RUNS" | bc)" "$(echo "scale=4; $sb / $RUNS" | bc)" \
    "$(echo "scale=4; ($sa - $sb) / $RUNS" | bc)"
