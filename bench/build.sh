#!/usr/bin/env bash
# bench/build.sh: build and boot figures for the proxy x86_64-vm image.
#
# Prints: cold build time (empty cache: apt downloads, base root, cargo target, all stages),
# warm rebuild with nothing changed, warm rebuild after one overlay file changed, each
# stage's time, image size, allocated and used bytes, and boot-to-ready time (OVMF + systemd-
# boot under TCG). Goals (issue 2): overlay rebuild < 15 s, boot < 30 s, used < 600 MiB.
#
# Usage: bench/build.sh [--warm-only]   (--warm-only reuses ~/.cache/imgforge; no cold run)
# Takes ~5 min cold on 2 cores; needs root (mmdebstrap) and the host packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
cargo build --release --locked --quiet
bin=$PWD/target/release/imgforge
work=$(mktemp -d /tmp/imgforge-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
summary() { sed -n '/^summary:/,$p' "$1" | sed -n '2,7p' | awk '{printf "    %-12s %s\n", $1, $2}'; }

if [ "${1:-}" = "--warm-only" ]; then
  cache=${IMGFORGE_CACHE:-$HOME/.cache/imgforge}
else
  cache=$work/cache
fi
export IMGFORGE_CACHE=$cache

echo "imgforge build bench: role proxy, target x86_64-vm, $(nproc) cores, cache $cache"
if [ "${1:-}" != "--warm-only" ]; then
  t0=$(now); "$bin" build --out "$work/cold" >/dev/null 2>"$work/cold.log"; t1=$(now)
  echo "cold build (empty cache)        $(secs "$t0" "$t1") s"
  summary "$work/cold.log"
fi

t0=$(now); "$bin" build --out "$work/warm" >/dev/null 2>"$work/warm.log"; t1=$(now)
echo "build into a new output folder  $(secs "$t0" "$t1") s   (outputs stage only)"
t0=$(now); "$bin" build --out "$work/warm" >/dev/null 2>"$work/warm2.log"; t1=$(now)
echo "rebuild, nothing changed        $(secs "$t0" "$t1") s"

cp -r overlays "$work/overlays"
echo "# bench edit $(date +%s%N)" >> "$work/overlays/common/etc/ssh/sshd_config.d/imgforge.conf"
t0=$(now); "$bin" build --overlays "$work/overlays" --out "$work/warm" >/dev/null 2>"$work/overlay.log"; t1=$(now)
echo "rebuild, one overlay changed    $(secs "$t0" "$t1") s   (goal < 15 s)"
summary "$work/overlay.log"

img=$work/warm/proxy-x86_64-vm.img
size=$(stat -c %s "$img"); alloc=$(( $(stat -c %b "$img") * 512 ))
used=$("$bin" inspect "$img" | sed -n 's/.*ext4 .* used \([0-9.]*\) MiB/\1/p')
awk -v s="$size" -v a="$alloc" -v u="$used" 'BEGIN {
  printf "image size                      %.1f MiB\n", s / 1048576
  printf "allocated (sparse)              %.1f MiB   (goal < 600 MiB)\n", a / 1048576
  printf "root ext4 used                  %s MiB\n", u }'

"$bin" test --out "$work/warm" --overlays "$work/overlays" >/dev/null 2>"$work/boot.log" || { cat "$work/boot.log"; exit 1; }
echo "boot to ready, OVMF + systemd-boot  $(sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' "$work/boot.log") s   (goal < 30 s, TCG)"
"$bin" test --direct-kernel --out "$work/warm" --overlays "$work/overlays" >/dev/null 2>"$work/boot2.log" || { cat "$work/boot2.log"; exit 1; }
echo "boot to ready, direct -kernel       $(sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' "$work/boot2.log") s"
