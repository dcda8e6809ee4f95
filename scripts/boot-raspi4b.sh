#!/usr/bin/env bash
# boot-raspi4b.sh: boot the rpi4 card in QEMU's raspi4b machine to IMGFORGE-READY.
#
# Not run by CI (tests/README.md): the raspi4b boot takes ~2-4 min of full emulation, and it
# needs a test-only copy of Debian's bcm2711-rpi-4-b.dtb, patched for what QEMU lacks
# (DESIGN.md section 5): the HDMI blocks at 0x7ef0xxxx disabled (not emulated: the kernel
# aborts), emmc2 disabled and mmc-pwrseq removed from mmc@7e300000 (QEMU attaches -sd
# there, so the card is mmcblk0: the root is found by PARTUUID anyway), the bluetooth child
# of serial@7e201000 removed (else no /dev/ttyAMA0), and only console=ttyAMA0. The card's
# own files are not changed: kernel, initramfs, device tree and cmdline.txt are read from
# its boot partition with mtools, and the card is a seeded copy.
#
# usage: scripts/boot-raspi4b.sh [TIMEOUT_SECS]    (needs device-tree-compiler, mtools, QEMU 10)
set -euo pipefail
cd "$(dirname "$0")/.."
timeout_secs=${1:-900}
for t in fdtput fdtget mcopy qemu-system-aarch64 htpasswd; do
  command -v "$t" >/dev/null || { echo "boot-raspi4b: $t is missing (device-tree-compiler, mtools, qemu-system-arm, apache2-utils)" >&2; exit 1; }
done
qemu-system-aarch64 -machine help | grep -q '^raspi4b' || { echo "boot-raspi4b: this QEMU has no raspi4b machine (QEMU >= 9 needed; bookworm-backports has 10)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/boot-raspi4b.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The same target folder and flags as scripts/build and scripts/test (its build is reused).
source scripts/cargo-env.sh
cargo build --release --quiet
imgforge=$CARGO_TARGET_DIR/release/imgforge
"$imgforge" build --target rpi4 --out "$work/out" --quiet
img="$work/out/proxy-rpi4.img"

# The boot partition's files, read as the firmware would find them: the first FAT's
# autoboot.txt names the partition ([all] boot_partition=N).
part_start() {
  sfdisk --json "$img" | python3 -c 'import json,re,sys; n=sys.argv[1]; print([p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if re.search(r"\D"+n+"$", p["node"])][0]["start"]*512)' "$1"
}
n=$( (mtype -i "$img@@$(part_start 1)" ::/autoboot.txt || true) | awk -F= '/^\[/{s=$0} s!="[tryboot]" && $1=="boot_partition"{print $2}')
start=$(part_start "${n:-1}")
for f in vmlinuz initrd.img bcm2711-rpi-4-b.dtb cmdline.txt; do
  mcopy -n -i "$img@@$start" "::/$f" "$work/$f"
done

dtb="$work/bcm2711-rpi-4-b.dtb"
for node in $(fdtget -l "$dtb" /soc); do
  case "$node" in
    # The HDMI block: its clock, its interrupt controller (brcmstb_l2 aborts on probe), the
    # HDMI controllers and their DDC buses.
    *@7ef0*) fdtput -t s "$dtb" "/soc/$node" status disabled ;;
  esac
done
emmc2=$(fdtget -l "$dtb" /emmc2bus 2>/dev/null | grep '^mmc@' | head -n1 || true)
if [ -n "$emmc2" ]; then fdtput -t s "$dtb" "/emmc2bus/$emmc2" status disabled; fi
fdtput -d "$dtb" /soc/mmc@7e300000 mmc-pwrseq 2>/dev/null || true
fdtput -t s "$dtb" /soc/mmc@7e300000 status okay
fdtput -r "$dtb" /soc/serial@7e201000/bluetooth 2>/dev/null || true

# The command line the card's cmdline.txt gives, with QEMU's console and the test's
# power-off request. earlycon: a panic before the PL011 driver is up (as an unpatched device
# tree gives) would otherwise print nothing at all.
cmdline="$(sed -e 's/console=[^ ]*//g' "$work/cmdline.txt" | tr -s ' ') earlycon=pl011,mmio32,0xfe201000 console=ttyAMA0,115200 imgforge.poweroff"

# A seeded copy, sized to a power of two as QEMU's SD card model requires.
card="$work/card.img"
cp --sparse=always "$img" "$card"
size=$(stat -c %s "$card"); p=1; while [ "$p" -lt "$size" ]; do p=$((p * 2)); done
truncate -s "$p" "$card"
printf "jupyter-htpasswd = '''\n%s'''\n" "$(htpasswd -nbB ops 'correct horse')" > "$work/secrets.toml"
"$imgforge" seed "$card" --secrets "$work/secrets.toml" >/dev/null

log=${SERIAL_LOG:-$work/raspi4b.serial.log}
echo "boot-raspi4b: booting $card in QEMU raspi4b (serial console in $log)" >&2
t0=$(date +%s)
set +e
timeout "$timeout_secs" qemu-system-aarch64 -machine raspi4b -display none -no-reboot \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -dtb "$dtb" -append "$cmdline" \
  -drive "if=sd,format=raw,file=$card" -serial stdio </dev/null 2>&1 \
  | tee "$log" | grep -m1 -E 'IMGFORGE-(READY|FAILED)|Kernel panic - not syncing|emergency mode' > "$work/verdict"
set -e
verdict=$(cat "$work/verdict")
secs=$(( $(date +%s) - t0 ))
pkill -f "qemu-system-aarch64 -machine raspi4b -display none -no-reboot -kernel $work/vmlinuz" 2>/dev/null || true
echo "$verdict"
echo "boot-raspi4b: ${secs} s" >&2
case "$verdict" in
  *IMGFORGE-READY*) exit 0 ;;
  *) echo "boot-raspi4b: no READY line; last console lines:" >&2; tail -n 30 "$log" >&2; exit 3 ;;
esac
