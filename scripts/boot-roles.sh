#!/usr/bin/env bash
# boot-roles.sh: build and boot each role of the example site in turn with
# `imgforge test --role R --target x86_64-vm`, and print each role's ready line and times.
# Not run by CI (which boots proxy, vm-ia and prospectlab through cargo test); this is the
# whole matrix. Needs what scripts/test needs (root, QEMU, the Debian mirror).
#
#   scripts/boot-roles.sh [ROLE...]      (default: proxy django-app vm-ia prospectlab)
set -euo pipefail
cd "$(dirname "$0")/.."
roles=("$@")
[ ${#roles[@]} -gt 0 ] || roles=(proxy django-app vm-ia prospectlab)
# The same target folder and flags as scripts/build and scripts/test (its build is reused).
source scripts/cargo-env.sh
cargo build --release --quiet
imgforge=$CARGO_TARGET_DIR/release/imgforge
out=${IMGFORGE_OUT:-images}
failed=()
printf '%-12s %8s %8s  %s\n' role build boot result
for r in "${roles[@]}"; do
  t0=$(date +%s.%N)
  if ! "$imgforge" build --quiet --role "$r" --out "$out" >/dev/null 2>"/tmp/boot-roles-$r.log"; then
    printf '%-12s %8s %8s  %s\n' "$r" - - "BUILD FAILED (see /tmp/boot-roles-$r.log)"
    failed+=("$r"); continue
  fi
  t1=$(date +%s.%N)
  line=$("$imgforge" test --role "$r" --out "$out" 2>>"/tmp/boot-roles-$r.log") || true
  t2=$(date +%s.%N)
  printf '%-12s %7.1fs %7.1fs  %s\n' "$r" "$(awk "BEGIN{print $t1-$t0}")" "$(awk "BEGIN{print $t2-$t1}")" "${line:-FAILED (see /tmp/boot-roles-$r.log)}"
  case "$line" in IMGFORGE-READY*) ;; *) failed+=("$r") ;; esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "boot-roles: failed: ${failed[*]}" >&2
  exit 1
fi
