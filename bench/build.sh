#!/usr/bin/env bash
# bench/build.sh: build and boot figures for the proxy x86_64-vm image.
#
# Prints: cold build time (empty cache: apt downloads, base root, cargo target, all stages),
# warm rebuild with nothing changed, warm rebuild after one overlay file changed, each
# stage's time, image size, allocated and used bytes, and boot-to-ready time (OVMF + systemd-
# boot under TCG). Goals (issue 2): overlay rebuild < 15 s, boot < 30 s, used < 600 MiB.
#
# The same run builds the same package set with mkosi 24.3 (bookworm-backports; the anchor
# of DESIGN.md section 8): cold, rebuild with nothing changed, rebuild after one extra file
# changed (Incremental=yes), size, and boot to multi-user.target under the same OVMF.
# The bench installs mkosi and what it needs (systemd-boot 254, kmod, cpio, zstd) if missing;
# skip it with --no-mkosi.
#
# The arm64 part (skip it with --no-arm64) builds the proxy for rpi4: cold (the arm64 base
# root with maintainer scripts under qemu-user; goal < 8 min), rebuild after one overlay
# change (goal < 30 s), the .img.xz's size and compression time beside `xz -T0` (the tool a
# user would otherwise pick) on the same raw image.
#
# Last, the apps stage (skip it with --no-apps): bench/apps.sh, prospectlab's wheels from its
# PyPI lock cold and warm on x86_64-vm (and rpi4 unless --no-arm64) beside `pip install -r`
# of the same lock; it takes its base roots from ~/.cache/imgforge (see that script).
#
# Usage: bench/build.sh [--warm-only] [--no-mkosi] [--no-arm64] [--no-apps]   (--warm-only reuses ~/.cache/imgforge)
# Takes ~5 min cold on 2 cores, ~10 min with mkosi, ~10 min more for arm64; needs root and
# the host packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh --arch all --test >/dev/null
# As scripts/build: gateway and worker, then imgforge, in the target folder the binaries
# stage reuses (CARGO_TARGET_DIR stays the shared one when IMGFORGE_CACHE is emptied below).
. scripts/cargo-env.sh
cargo build --release --locked --quiet -p gateway -p worker
cargo build --release --locked --quiet -p imgforge
bin=$CARGO_TARGET_DIR/release/imgforge
work=$(mktemp -d /tmp/imgforge-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
summary() { sed -n '/^summary:/,$p' "$1" | sed -n '2,7p' | awk '{printf "    %-12s %s\n", $1, $2}'; }

warm_only=false; mkosi=true; arm64=true; apps=true
for a in "$@"; do
  case $a in
    --warm-only) warm_only=true ;;
    --no-mkosi) mkosi=false ;;
    --no-arm64) arm64=false ;;
    --no-apps) apps=false ;;
    *) echo "usage: bench/build.sh [--warm-only] [--no-mkosi] [--no-arm64] [--no-apps]" >&2; exit 1 ;;
  esac
done

if $warm_only; then
  cache=${IMGFORGE_CACHE:-$HOME/.cache/imgforge}
else
  cache=$work/cache
fi
export IMGFORGE_CACHE=$cache

echo "imgforge build bench: role proxy, target x86_64-vm, $(nproc) cores, cache $cache"
if ! $warm_only; then
  t0=$(now); "$bin" build --out "$work/cold" >/dev/null 2>"$work/cold.log"; t1=$(now)
  cold_s=$(secs "$t0" "$t1")
  echo "cold build (empty cache)        $cold_s s"
  summary "$work/cold.log"
fi

t0=$(now); "$bin" build --out "$work/warm" >/dev/null 2>"$work/warm.log"; t1=$(now)
echo "build into a new output folder  $(secs "$t0" "$t1") s   (outputs stage only)"
t0=$(now); "$bin" build --out "$work/warm" >/dev/null 2>"$work/warm2.log"; t1=$(now)
same_s=$(secs "$t0" "$t1")
echo "rebuild, nothing changed        $same_s s"

cp -r overlays "$work/overlays"
echo "# bench edit $(date +%s%N)" >> "$work/overlays/common/etc/ssh/sshd_config.d/imgforge.conf"
t0=$(now); "$bin" build --overlays "$work/overlays" --out "$work/warm" >/dev/null 2>"$work/overlay.log"; t1=$(now)
overlay_s=$(secs "$t0" "$t1")
echo "rebuild, one overlay changed    $overlay_s s   (goal < 15 s)"
summary "$work/overlay.log"

img=$work/warm/proxy-x86_64-vm.img
size=$(stat -c %s "$img"); alloc=$(( $(stat -c %b "$img") * 512 ))
used=$("$bin" inspect "$img" | sed -n 's/.*ext4 .* used \([0-9.]*\) MiB/\1/p')
awk -v s="$size" -v a="$alloc" -v u="$used" 'BEGIN {
  printf "image size                      %.1f MiB\n", s / 1048576
  printf "allocated (sparse)              %.1f MiB   (goal < 600 MiB)\n", a / 1048576
  printf "root ext4 used                  %s MiB\n", u }'

"$bin" test --out "$work/warm" --overlays "$work/overlays" >/dev/null 2>"$work/boot.log" || { cat "$work/boot.log"; exit 1; }
boot_s=$(sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' "$work/boot.log")
echo "boot to ready, OVMF + systemd-boot  $boot_s s   (goal < 30 s, TCG)"
"$bin" test --direct-kernel --out "$work/warm" --overlays "$work/overlays" >/dev/null 2>"$work/boot2.log" || { cat "$work/boot2.log"; exit 1; }
echo "boot to ready, direct -kernel       $(sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' "$work/boot2.log") s"

if $arm64; then
  echo
  echo "arm64: role proxy, target rpi4 (maintainer scripts under qemu-user)"
  if ! $warm_only; then
    t0=$(now); "$bin" build --target rpi4 --out "$work/rpi4" >/dev/null 2>"$work/rpi4-cold.log" || { tail -20 "$work/rpi4-cold.log"; exit 1; }; t1=$(now)
    echo "cold build (empty cache)        $(secs "$t0" "$t1") s"
    summary "$work/rpi4-cold.log"
    echo "  base (arm64 root)             $(sed -n 's/^  base *\([0-9.]*s\).*/\1/p' "$work/rpi4-cold.log")   (goal < 8 min)"
  else
    "$bin" build --target rpi4 --out "$work/rpi4" >/dev/null 2>"$work/rpi4-cold.log"
  fi
  echo "# bench edit $(date +%s%N)" >> "$work/overlays/common/etc/ssh/sshd_config.d/imgforge.conf"
  t0=$(now); "$bin" build --target rpi4 --overlays "$work/overlays" --out "$work/rpi4" >/dev/null 2>"$work/rpi4-overlay.log"; t1=$(now)
  echo "rebuild, one overlay changed    $(secs "$t0" "$t1") s   (goal < 30 s; includes the .img.xz)"
  summary "$work/rpi4-overlay.log"
  raw=$work/rpi4/proxy-rpi4.img
  ours_xz=$(stat -c %s "$raw.xz")
  ours_t=$(sed -n 's/.*\.img\.xz: .* in \([0-9]*\)s.*/\1/p' "$work/rpi4-overlay.log")
  t0=$(now); xz -T0 -0 -c "$raw" > "$work/plain1.img.xz"; t1=$(now); x1_t=$(secs "$t0" "$t1")
  t0=$(now); xz -T0 -6 -c "$raw" > "$work/plain6.img.xz"; t1=$(now); x6_t=$(secs "$t0" "$t1")
  echo
  echo "card image (same raw image)   imgforge (liblzma MT, -0)   xz -T0 -0   xz -T0 -6 (xz's default)"
  awk -v r="$(stat -c %s "$raw")" -v a="$ours_xz" -v b="$(stat -c %s "$work/plain1.img.xz")" -v c="$(stat -c %s "$work/plain6.img.xz")" \
      -v ta="$ours_t" -v tb="$x1_t" -v tc="$x6_t" 'BEGIN {
    printf "  raw image                   %8.0f MiB\n", r / 1048576
    printf "  .img.xz size                %8.1f MiB %16.1f MiB %10.1f MiB\n", a / 1048576, b / 1048576, c / 1048576
    printf "  compression time            %8s s %18s s %12s s\n", ta, tb, tc }'
fi

$mkosi || exit 0

# ---- mkosi, same packages, same machine, same run ----
if ! command -v mkosi >/dev/null || ! command -v bootctl >/dev/null || ! command -v cpio >/dev/null || ! command -v depmod >/dev/null; then
  . /etc/os-release
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "$VERSION_CODENAME-backports" mkosi systemd-boot >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kmod cpio zstd >/dev/null
fi
mk=$work/mkosi
mkdir -p "$mk/pkgmgr/etc/apt/sources.list.d" "$mk/mkosi.extra/etc/ssh/sshd_config.d" "$mk/out" "$mk/cache"
# mkosi 24 always adds a debug repository, which this machine's mirror refuses: give it a
# sources file of its own, from the host's mirror (never written in the repo).
mirror=$(sed -n 's#^URIs:[[:space:]]*##p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -- -security | head -n1)
printf 'Types: deb\nURIs: %s\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
  > "$mk/pkgmgr/etc/apt/sources.list.d/mkosi.sources"
pkgs=$("$bin" plan --toml | awk '/^packages = \[/{p=1; next} p && /^\]/{exit} p {gsub(/[",[:space:]]/, ""); if ($0 != "") print}' | paste -sd, -)
cp overlays/common/etc/ssh/sshd_config.d/imgforge.conf "$mk/mkosi.extra/etc/ssh/sshd_config.d/"
cat > "$mk/mkosi.conf" <<CONF
[Distribution]
Distribution=debian
Release=trixie
Architecture=x86-64
PackageManagerTrees=pkgmgr

[Output]
Format=disk
OutputDirectory=out
CacheDirectory=cache

[Content]
Bootable=yes
Bootloader=systemd-boot
KernelCommandLine=console=ttyS0,115200n8 systemd.firstboot=no
Packages=$pkgs

[Build]
Incremental=yes
CONF
mkbuild() { (cd "$mk" && mkosi -f build >"$work/mkosi-$1.log" 2>&1) || { tail -20 "$work/mkosi-$1.log"; exit 1; }; }
echo "mkosi $(mkosi --version | awk '{print $2}'), packages: $pkgs"
t0=$(now); mkbuild cold; t1=$(now); mk_cold=$(secs "$t0" "$t1")
t0=$(now); mkbuild same; t1=$(now); mk_same=$(secs "$t0" "$t1")
echo "# bench edit $(date +%s%N)" >> "$mk/mkosi.extra/etc/ssh/sshd_config.d/imgforge.conf"
t0=$(now); mkbuild extra; t1=$(now); mk_extra=$(secs "$t0" "$t1")
raw=$mk/out/image.raw
mk_size=$(stat -c %s "$raw"); mk_alloc=$(( $(stat -c %b "$raw") * 512 ))
# Boot to multi-user.target as systemd reports it on the serial console: what "up" means for
# an image with no readiness report (imgforge's ready line comes after that target).
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$mk/vars.fd"
t0=$(now)
qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1024 -nodefaults -display none -no-reboot \
    -serial stdio -device virtio-rng-pci \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$mk/vars.fd" \
    -drive if=virtio,format=raw,file="$raw",snapshot=on </dev/null >"$work/mkosi-serial.log" 2>&1 &
qpid=$!
# Poll the console log (a pipe into grep would, under pipefail, count QEMU's SIGPIPE as failure).
mk_boot="not up within 300"
while [ "$(secs "$t0" "$(now)" | cut -d. -f1)" -lt 300 ] && kill -0 "$qpid" 2>/dev/null; do
  if grep -a -q 'Reached target.*multi-user\.target' "$work/mkosi-serial.log"; then
    mk_boot=$(secs "$t0" "$(now)"); break
  fi
  sleep 0.2
done
kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true
[ "$mk_boot" = "not up within 300" ] && tail -5 "$work/mkosi-serial.log"

echo
echo "side by side (same packages, same machine, this run)      imgforge    mkosi   mkosi/imgforge"
row() { awk -v n="$1" -v a="$2" -v b="$3" -v u="$4" 'BEGIN { r = (a > 0 && b ~ /^[0-9.]+$/) ? sprintf("%.1fx", b / a) : "-"; printf "  %-52s %8s %8s %10s\n", n, a u, b u, r }'; }
[ -n "${cold_s:-}" ] && row "cold build (empty caches)" "$cold_s" "$mk_cold" " s"
row "rebuild, nothing changed" "$same_s" "$mk_same" " s"
row "rebuild, one overlay/extra file changed" "$overlay_s" "$mk_extra" " s"
row "image size" "$(awk -v s="$size" 'BEGIN{printf "%.0f", s/1048576}')" "$(awk -v s="$mk_size" 'BEGIN{printf "%.0f", s/1048576}')" " MiB"
row "allocated" "$(awk -v s="$alloc" 'BEGIN{printf "%.0f", s/1048576}')" "$(awk -v s="$mk_alloc" 'BEGIN{printf "%.0f", s/1048576}')" " MiB"
row "boot, OVMF (imgforge: IMGFORGE-READY; mkosi: multi-user)" "$boot_s" "$mk_boot" " s"

if $apps; then
  echo
  # The machine's cache (its base roots), not this bench's emptied one.
  env -u IMGFORGE_CACHE IMGFORGE_BIN="$bin" bash bench/apps.sh $($arm64 || echo --no-arm64)
fi
