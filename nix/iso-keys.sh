#!/usr/bin/env bash
# Adds the keyed ISO's keys area to a finished NixOS ISO (see nix/iso-keys.nix and
# plugins/iso/README.md): a zero-filled /keypack/keys.img, loaded by every boot entry as its
# last initrd.
#
#   iso-keys.sh IN.iso SIZE_KIB OUT.iso
#
# Rewrites the three boot loader configurations nixpkgs' iso-image module generates:
# /EFI/boot/grub.cfg on the ISO, the copy inside /boot/efi.img (the one GRUB reads under UEFI:
# its prefix is the El Torito FAT image) and /isolinux/isolinux.cfg (BIOS). Every GRUB
# `initrd …` line gets ` /keypack/keys.img` appended; every isolinux `INITRD …` line and
# `initrd=…` argument gets `,/keypack/keys.img`. Then it checks, on the written ISO, that every
# initrd of every configuration ends with the area, and that at least one configuration exists.
# xorriso writes the new ISO from the old one with `-boot_image any replay`, which keeps the
# El Torito entries and the hybrid MBR/GPT as they were; the area, written in one piece like
# every file xorriso writes, is one contiguous extent.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: iso-keys.sh IN.iso SIZE_KIB OUT.iso" >&2
  exit 2
fi
in=$1
size_kib=$2
out=$3
area=/keypack/keys.img
export MTOOLS_SKIP_CHECK=1

case "$size_kib" in
  '' | *[!0-9]*) echo "iso-keys: the area's size '$size_kib' is not a number of KiB" >&2; exit 1 ;;
esac
if [ "$size_kib" -eq 0 ] || [ $((size_kib % 2)) -ne 0 ]; then
  echo "iso-keys: the area's size ($size_kib KiB) must be a positive multiple of 2 KiB" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# extract ISO PATH-IN-ISO FILE: copies one file out of the ISO; fails when it is absent.
extract() {
  rm -f "$3"
  xorriso -osirrox on -indev "$1" -extract "$2" "$3" >/dev/null 2>&1 && [ -f "$3" ] && chmod u+w "$3"
}

patch_grub() {
  sed -E -i "/keys\\.img/! s|^([[:space:]]*initrd[[:space:]].*[^[:space:]])[[:space:]]*\$|\\1 ${area}|" "$1"
}

patch_isolinux() {
  sed -E -i \
    -e "/keys\\.img/! s|^([[:space:]]*INITRD[[:space:]]+[^[:space:]]+)|\\1,${area}|I" \
    -e "/keys\\.img/! s|(initrd=[^[:space:]]+)|\\1,${area}|I" "$1"
}

# check_grub FILE: every initrd line ends with the area; there is at least one.
check_grub() {
  local all ok
  all=$(grep -Ec '^[[:space:]]*initrd[[:space:]]' "$1" || true)
  ok=$(grep -Ec "^[[:space:]]*initrd[[:space:]].*[[:space:]]${area}[[:space:]]*\$" "$1" || true)
  if [ "$all" -eq 0 ] || [ "$all" -ne "$ok" ]; then
    echo "iso-keys: $2: $ok of $all initrd lines load $area last" >&2
    return 1
  fi
}

# check_isolinux FILE: every INITRD line and initrd= argument ends with the area; at least one.
check_isolinux() {
  local all ok
  all=$(grep -Eio '^[[:space:]]*INITRD[[:space:]]+[^[:space:]]+|initrd=[^[:space:]]+' "$1" | wc -l)
  ok=$(grep -Eio '^[[:space:]]*INITRD[[:space:]]+[^[:space:]]+|initrd=[^[:space:]]+' "$1" | grep -c ",${area}\$" || true)
  if [ "$all" -eq 0 ] || [ "$all" -ne "$ok" ]; then
    echo "iso-keys: $2: $ok of $all initrds load $area last" >&2
    return 1
  fi
}

maps=()
configs=0
if extract "$in" /EFI/boot/grub.cfg "$work/grub.cfg"; then
  patch_grub "$work/grub.cfg"
  maps+=(-map "$work/grub.cfg" /EFI/boot/grub.cfg)
  configs=$((configs + 1))
fi
if extract "$in" /boot/efi.img "$work/efi.img"; then
  if mcopy -n -i "$work/efi.img" ::/EFI/boot/grub.cfg "$work/efi-grub.cfg" 2>/dev/null; then
    patch_grub "$work/efi-grub.cfg"
    mcopy -o -i "$work/efi.img" "$work/efi-grub.cfg" ::/EFI/boot/grub.cfg
    maps+=(-map "$work/efi.img" /boot/efi.img)
    configs=$((configs + 1))
  fi
fi
if extract "$in" /isolinux/isolinux.cfg "$work/isolinux.cfg"; then
  patch_isolinux "$work/isolinux.cfg"
  maps+=(-map "$work/isolinux.cfg" /isolinux/isolinux.cfg)
  configs=$((configs + 1))
fi
if [ "$configs" -eq 0 ]; then
  echo "iso-keys: $in has none of /EFI/boot/grub.cfg, /boot/efi.img, /isolinux/isolinux.cfg" >&2
  exit 1
fi

truncate -s "${size_kib}K" "$work/keys.img"
rm -f "$out"
xorriso -indev "$in" -outdev "$out" -boot_image any replay \
  -map "$work/keys.img" "$area" "${maps[@]}" >/dev/null 2>"$work/xorriso.log" || {
  cat "$work/xorriso.log" >&2
  exit 1
}

# Check what was written, not what was meant to be.
if extract "$out" /EFI/boot/grub.cfg "$work/check.cfg"; then
  check_grub "$work/check.cfg" /EFI/boot/grub.cfg
fi
if extract "$out" /boot/efi.img "$work/check.img" &&
  mcopy -n -i "$work/check.img" ::/EFI/boot/grub.cfg "$work/check-efi.cfg" 2>/dev/null; then
  check_grub "$work/check-efi.cfg" "/boot/efi.img:/EFI/boot/grub.cfg"
fi
if extract "$out" /isolinux/isolinux.cfg "$work/check-isolinux.cfg"; then
  check_isolinux "$work/check-isolinux.cfg" /isolinux/isolinux.cfg
fi
extract "$out" "$area" "$work/check-keys.img"
if [ "$(stat -c %s "$work/check-keys.img")" -ne $((size_kib * 1024)) ] ||
  [ -n "$(tr -d '\0' <"$work/check-keys.img" | head -c 1)" ]; then
  echo "iso-keys: $area in $out is not $size_kib KiB of zeros" >&2
  exit 1
fi
