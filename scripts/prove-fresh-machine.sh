#!/usr/bin/env bash
# prove-fresh-machine.sh: proves the README's two commands from a bare Debian 12 machine, as
# far as this machine allows: a fresh bookworm root (mmdebstrap --variant=minbase, from the
# machine's own mirror), a clean clone of this checkout's HEAD in it, and in a chroot:
#
#   1. `scripts/setup-host.sh --check` lists what is missing on the bare root (exit 1);
#   2. `scripts/build` with no Rust toolchain installs the build's packages (amd64 only: no
#      arm64 toolchain, QEMU or test peer) and then says precisely that cargo is missing;
#   3. `scripts/build` with the machine's rustup toolchain (bind-mounted read-only: the README
#      asks for one) builds the default image from empty caches;   (skipped with --quick)
#   4. the test command's set-up (`setup-host.sh --arch all --test`) installs the rest;
#   5. the aarch64 cross compiler compiles and links a C file that includes stdint.h;
#   6. qemu-aarch64 is unregistered from binfmt_misc (the kernel's, shared with the host),
#      the set-up registers it again, and a static aarch64 program runs through it.
#
# Usage: scripts/prove-fresh-machine.sh [--quick] [--keep]   (root; ~4 min quick, ~15 full)
# Step 6 briefly unregisters qemu-aarch64 for the whole machine: run nothing arm64 meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 keep=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    *) echo "usage: scripts/prove-fresh-machine.sh [--quick] [--keep]" >&2; exit 1 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "prove-fresh-machine: needs root (mmdebstrap, chroot, binfmt_misc)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "prove-fresh-machine: needs mmdebstrap (scripts/setup-host.sh installs it)" >&2; exit 1; }

say() { printf '\n=== %s\n' "$*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
results=()
record() { results+=("$(printf '%-6s %-64s %7s s' "$1" "$2" "$3")"); }

mirror=$(bash scripts/apt-mirror.sh bookworm) || { echo "prove-fresh-machine: no bookworm source in this machine's apt sources" >&2; exit 1; }
work=$(mktemp -d /var/tmp/imgforge-fresh.XXXXXX)
root=$work/root
mounts=()
cleanup() {
  umount "$root/proc/sys/fs/binfmt_misc" 2>/dev/null || true
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true; done
  # Never remove through a mount that is still there (the root holds the host's /dev).
  if findmnt -rn -o TARGET | grep -q "^$work/"; then
    echo "prove-fresh-machine: mounts remain under $work; not removing it:" >&2
    findmnt -rn -o TARGET | grep "^$work/" >&2
  elif [ $keep = 1 ]; then echo "prove-fresh-machine: kept $root"
  else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT

say "a bare Debian 12 root (mmdebstrap --variant=minbase bookworm)"
t=$(now)
mmdebstrap --quiet --variant=minbase bookworm "$root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main"
record ok "bare bookworm root: $(chroot "$root" dpkg-query -W -f '.\n' | wc -l) packages" "$(secs "$t")"

bind() { # bind SRC DST [ro]
  mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
mount -t sysfs sysfs "$root/sys"; mounts+=("$root/sys")
bind /dev "$root/dev"
mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 2>/dev/null && mounts+=("$root/dev/pts") || true
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The machine's own local certificate authorities come with every machine of this kind (its
# network's proxies sign with them): a fresh machine has them, so the bare root gets them
# too. Debian's ca-certificates, when the set-up installs it, adds them to the bundle
# cargo and curl read. Nothing of imgforge's is copied.
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
git clone --quiet "$PWD" "$root/root/imgforge"
echo "clean clone of $(git rev-parse --short HEAD) in the root's /root/imgforge"

# In the root, with a clean environment: a fresh machine's root shell.
in_root() { chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH="${ROOT_PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}" \
  /bin/bash -c "cd /root/imgforge && $1"; }

say "1. scripts/setup-host.sh --check on the bare root"
t=$(now)
if in_root "bash scripts/setup-host.sh --check" 2>"$work/check.log"; then
  cat "$work/check.log"; record FAIL "--check on a bare root said nothing is missing" "$(secs "$t")"
else
  sed -n '1,8p' "$work/check.log"; echo "  ... $(wc -l <"$work/check.log") lines"
  record ok "--check: $(grep -c '^setup-host: missing' "$work/check.log") packages missing, exit 1" "$(secs "$t")"
fi

say "2. scripts/build without a Rust toolchain"
t=$(now)
set +e; in_root "bash scripts/build" >"$work/build0.log" 2>&1; rc=$?; set -e
cat "$work/build0.log"
if [ $rc -eq 1 ] && grep -q 'cargo is missing' "$work/build0.log"; then
  record ok "scripts/build set-up (amd64) then 'cargo is missing', exit 1" "$(secs "$t")"
else
  record FAIL "scripts/build without cargo: exit $rc" "$(secs "$t")"
fi
extra=$(for p in qemu-system-x86 qemu-user gcc-aarch64-linux-gnu rustc-web chromium pebble; do
  if chroot "$root" dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then echo "$p"; fi
done | tr '\n' ' ')
if [ -n "$extra" ]; then record FAIL "the amd64 build set-up installed $extra" 0
else record ok "the amd64 build set-up installed no QEMU, arm64 toolchain or test peer" 0; fi

# The machine's Rust toolchain, read-only; cargo's registry is the root's own (empty).
bind "${RUSTUP_HOME:-$HOME/.rustup}" "$root/root/.rustup" ro
bind "${CARGO_HOME:-$HOME/.cargo}/bin" "$root/root/.cargo/bin" ro
export ROOT_PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if [ $quick = 0 ]; then
  say "3. scripts/build (default role and target) from empty caches"
  t=$(now)
  set +e; in_root "bash scripts/build" >"$work/build.log" 2>&1; rc=$?; set -e
  tail -n 25 "$work/build.log"
  img=$root/root/imgforge/images/proxy-x86_64-vm.img
  if [ $rc -eq 0 ] && [ -s "$img" ] && sfdisk -V "$img" >/dev/null 2>&1; then
    record ok "scripts/build: images/proxy-x86_64-vm.img ($(( $(stat -c %s "$img") >> 20 )) MiB), sfdisk -V clean" "$(secs "$t")"
  else
    record FAIL "scripts/build: exit $rc" "$(secs "$t")"
  fi
fi

say "4. the test command's set-up: setup-host.sh --arch all --test"
t=$(now)
if in_root "bash scripts/setup-host.sh --arch all --test" 2>&1 | tee "$work/test-setup.log"; then
  record ok "test set-up: $(grep -o 'installed: .*' "$work/test-setup.log" | sed 's/^installed: //' | wc -w) packages installed" "$(secs "$t")"
else
  record FAIL "test set-up" "$(secs "$t")"
fi

say "5. the aarch64 cross compiler: a C file including stdint.h"
t=$(now)
if in_root "printf '#include <stdint.h>\nint main(void){uint64_t x=1;return (int)(x-1);}\n' >/tmp/s.c && aarch64-linux-gnu-gcc -o /tmp/s /tmp/s.c && echo compiled and linked" 2>&1; then
  record ok "aarch64-linux-gnu-gcc compiles and links stdint.h" "$(secs "$t")"
else
  record FAIL "aarch64-linux-gnu-gcc on stdint.h" "$(secs "$t")"
fi

say "6. binfmt_misc: qemu-aarch64 unregistered, then registered by the set-up"
t=$(now)
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64
if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  record FAIL "could not unregister qemu-aarch64" "$(secs "$t")"
else
  echo "unregistered: $(ls /proc/sys/fs/binfmt_misc | tr '\n' ' ')"
  if in_root "bash scripts/setup-host.sh --arch arm64" 2>&1 &&
     in_root "aarch64-linux-gnu-gcc -static -o /tmp/hello /tmp/s.c && /tmp/hello && echo 'a static aarch64 program ran'"; then
    record ok "qemu-aarch64 registered again ($(sed -n 's/^flags: //p' /proc/sys/fs/binfmt_misc/qemu-aarch64) flags); an aarch64 program ran" "$(secs "$t")"
  else
    record FAIL "binfmt registration" "$(secs "$t")"
  fi
fi

say "summary"
printf '%s\n' "${results[@]}"
if printf '%s\n' "${results[@]}" | grep -q '^FAIL'; then exit 1; fi
