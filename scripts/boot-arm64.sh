#!/usr/bin/env bash
# boot-arm64.sh: the arm64 checks CI leaves out (tests/README.md): the rpi5 card's boot
# partition and drivers (SD and NVMe), a kernel reinstall inside the booted rpi4 card,
# prospectlab's rpi4 card (aarch64 wheels) booted on virt, the aarch64 VM
# booted under AAVMF, the rpi4 card's A/B (tests/card_ab.rs: the Pi bootloader played on
# virt, a version kept, a broken one left by itself, and the same through a published
# update), and the rpi4 card booted in QEMU's raspi4b machine with a patched device tree. Each arm64 target has its own base root: ~10-15 min
# each from an empty cache, then ~5 min per boot.
#
# usage: scripts/boot-arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh --arch all --test
cargo test --release --locked --test cards -- --ignored heavy_ --test-threads 1
cargo test --release --locked --test card_ab -- --ignored heavy_ --test-threads 1
cargo test --release --locked --test pypi -- --ignored heavy_ --test-threads 1
bash scripts/boot-raspi4b.sh
