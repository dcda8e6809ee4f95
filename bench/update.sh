#!/usr/bin/env bash
# bench/update.sh: what taking a new version costs a node, beside reflashing it (issue 14).
#
#   update   the node's own sysupdate fetches the published version (the root filesystem
#            .xz, kernel, initramfs, boot entry, signed SHA256SUMS), writes its other slot,
#            reboots into it and is READY; its data, keys and secrets stay where they are.
#   reflash  what a user does without updates: download the whole image (.img.xz), write it
#            with `imgforge flash` (bmap, verified), seed the secrets again, first boot to
#            READY, and the data is gone (restore it from a backup: not timed here).
#
# The update's figures come from the update test (tests/update_ab.rs, one x86_64-vm disk
# under QEMU's software emulation: every boot here is ~5-10x slower than on hardware); the
# reflash writes that test's version-2 image to a file with `imgforge flash`; its first boot
# is timed by the test itself (version 1's first boot of a fresh disk does the same work).
# Takes ~20 min warm; needs the host packages (scripts/setup-host.sh) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh --arch all --test >/dev/null
. scripts/cargo-env.sh
cargo build --release --locked --quiet -p imgforge
bin=$CARGO_TARGET_DIR/release/imgforge
work=$CARGO_TARGET_DIR/tmp/update-ab
log=$(mktemp /var/tmp/imgforge-update-bench.XXXXXX)
trap 'rm -f "$log" "$work/reflash.img"' EXIT

echo "bench/update.sh: running the update test (~17 min warm) ..." >&2
cargo test --release --locked --test update_ab -- --ignored --nocapture 2>&1 | tee "$log" | grep '^update test:' >&2
grep -q '^test result: ok' "$log" || { echo "bench/update.sh: the update test failed (log: $log)" >&2; trap - EXIT; exit 1; }
update_s=$(sed -n 's/^update test: version 2 READY \([0-9]*\) s after the update started.*/\1/p' "$log")
first_boot_s=$(sed -n 's/^update test: version 1 READY \([0-9]*\) s after power-on.*/\1/p' "$log")

# The update's download: every file of version 2 the node fetched (SHA256SUMS and its
# signature included).
download=$(du -bc "$work"/v2/* | tail -1 | cut -f1)
img=$work/images-2/pg-backup-x86_64-vm.img
[ -f "$img" ] || { echo "bench/update.sh: $img is missing" >&2; exit 1; }
# A reflash downloads the whole image, compressed as a card's .img.xz is.
img_xz=$(xz -T2 -6 -c "$img" | wc -c)

# Reflash: write the image (what `flash` does to a card), then its first boot to READY.
secrets=$(mktemp /var/tmp/imgforge-update-bench-secrets.XXXXXX)
echo 'db-password = "bench-only"' > "$secrets"
t0=$(date +%s.%N)
"$bin" flash "$img" "$work/reflash.img" --file-target --yes --secrets "$secrets" 2>/dev/null
t1=$(date +%s.%N)
rm -f "$secrets"
flash_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
printf '\n%-44s %-22s %s\n' "" "update (sysupdate)" "reflash (imgforge flash)"
printf '%-44s %-22s %s\n' "download" "$(mib "$download")" "$(mib "$img_xz") (.img.xz)"
printf '%-44s %-22s %s\n' "found/flash start -> READY on version 2" "${update_s} s" \
  "${flash_s} s flash + ${first_boot_s} s first boot"
printf '%-44s %-22s %s\n' "data, secrets, keys" "kept" "lost (restore by hand)"
printf '%-44s %-22s %s\n' "a person at the node" "no" "yes (card out, flash, card in)"
printf '(the first boot is version 1'"'"'s on the test'"'"'s disk, the same work a reflashed disk does:
 /var copied to the data partition, keys and secrets made; all boots are QEMU TCG)
'
