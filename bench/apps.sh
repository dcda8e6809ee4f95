#!/usr/bin/env bash
# bench/apps.sh: the apps stage of the prospectlab role (35 wheels from its PyPI lock, one
# compiled: psycopg-binary) on x86_64-vm and rpi4: cold (empty wheel and bytecode caches:
# every wheel downloaded, every source compiled by the image's Python) and warm (both kept),
# beside `pip install -r` of the same lock (--require-hashes, for the same Python and
# platform, into a plain --target folder) on this machine, cold (no pip cache) and warm.
#
# The stages other than the wheels come from ~/.cache/imgforge (the base roots must be
# there: build prospectlab for both targets once first); the wheel and bytecode caches are
# fresh folders.
# Usage: bench/apps.sh [--no-arm64]   (root; network to the package index)
set -euo pipefail
cd "$(dirname "$0")/.."
arm64=true
for a in "$@"; do
  case $a in
    --no-arm64) arm64=false ;;
    *) echo "usage: bench/apps.sh [--no-arm64]" >&2; exit 1 ;;
  esac
done
bin=${IMGFORGE_BIN:-${CARGO_TARGET_DIR:-target}/release/imgforge}
shared=${IMGFORGE_CACHE:-$HOME/.cache/imgforge}
work=$(mktemp -d /tmp/imgforge-bench-apps.XXXXXX)
trap 'rm -rf "$work"' EXIT
lock=examples/flask-celery/requirements.txt

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
stage() { sed -n "s/^  $1 *\([0-9.]*s\|cached\).*/\1/p" "$2" | tail -1; }

# A cache whose stages, apt and tools are the machine's, and whose wheels are new.
mkdir -p "$work/cache/wheels"
for d in stages apt tools cargo-target cargo-target-debian; do
  [ -e "$shared/$d" ] && ln -s "$shared/$d" "$work/cache/$d"
done
export IMGFORGE_CACHE=$work/cache

targets=(x86_64-vm); $arm64 && targets+=(rpi4)
echo "apps stage bench: role prospectlab, $(grep -c '^[a-z]' "$lock") locked requirements, $(nproc) cores"
for t in "${targets[@]}"; do
  for run in cold warm; do
    t0=$(now)
    "$bin" build --role prospectlab --target "$t" --rebuild compose --out "$work/out-$t" >/dev/null 2>"$work/$t-$run.log" \
      || { tail -20 "$work/$t-$run.log"; exit 1; }
    t1=$(now)
    fetched=$(sed -n 's/^    prospectlab: \([0-9]* wheels, .* in [0-9.]* s\)$/\1/p' "$work/$t-$run.log")
    compiled=$(sed -n 's/^    apps: prospectlab: bytecode of \([0-9]*\) sources.*/\1 compiled/p' "$work/$t-$run.log")
    printf "%-10s %-5s wheels %-8s apps %-7s (%s; bytecode: %s) whole --rebuild compose %s s\n" "$t" "$run" \
      "$(stage wheels "$work/$t-$run.log")" "$(stage apps "$work/$t-$run.log")" "${fetched:-nothing downloaded}" \
      "${compiled:-all from the cache}" "$(secs "$t0" "$t1")"
  done
done

# pip on its own, the same lock, Debian's pip for the same Python and platforms.
pip_for() {
  local m=$1 cache=$2; shift 2
  local plats=()
  for y in $(seq 41 -1 17); do plats+=(--platform "manylinux_2_${y}_$m"); done
  plats+=(--platform "manylinux2014_$m")
  env -i PATH=/usr/bin:/bin HOME="$HOME" /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
    --no-deps --only-binary=:all: --require-hashes --ignore-requires-python --root-user-action=ignore --implementation cp --python-version 3.13 --abi cp313 \
    "${plats[@]}" --cache-dir "$cache" --target "$work/pip-$m-$RANDOM" -r "$lock" "$@"
}
for m in x86_64 $($arm64 && echo aarch64); do
  t0=$(now); pip_for "$m" "$work/pipcache-$m" --no-cache-dir; t1=$(now)
  c=$(secs "$t0" "$t1")
  pip_for "$m" "$work/pipcache-$m" >/dev/null; t0=$(now); pip_for "$m" "$work/pipcache-$m"; t1=$(now)
  printf "%-10s pip install -r (plain --target folder): cold %s s, warm (pip's cache) %s s\n" "$m" "$c" "$(secs "$t0" "$t1")"
done
