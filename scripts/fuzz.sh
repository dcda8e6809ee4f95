#!/usr/bin/env bash
# Fuzzes the gateway's configuration parser, route matcher and path normaliser with
# cargo-fuzz (libFuzzer), each for SECONDS (default 60). Not part of CI: run it by hand after changing
# crates/gateway/src/{config,router,rewrite,path}.rs. Needs a nightly toolchain (rustup) and
# cargo-fuzz (`cargo install cargo-fuzz`, done here when missing).
set -euo pipefail
cd "$(dirname "$0")/../crates/gateway/fuzz"
SECS=${1:-60}
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in config router path; do
  echo "== fuzz target $t, $SECS s"
  cargo +nightly fuzz run "$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|thread)" || true
  [ -z "$(ls artifacts/$t 2>/dev/null)" ] || { echo "fuzz: $t found a crash: crates/gateway/fuzz/artifacts/$t/" >&2; exit 1; }
done
echo "fuzz: no crash"
