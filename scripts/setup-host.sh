#!/usr/bin/env bash
# setup-host.sh: install the Debian packages imgforge needs on the building machine.
#
# Idempotent and quick when everything is already there. Needs root (apt). The newer
# e2fsprogs (mke2fs -d reading a tar needs >= 1.47.1) and QEMU come from bookworm-backports;
# the backports mirror is derived from this machine's own apt sources, never written here.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

# Packages from the release itself, and which command proves each is present.
declare -A RELEASE_PKGS=(
  [mmdebstrap]=mmdebstrap
  [mcopy]=mtools
  [fsck.fat]=dosfstools
  [sfdisk]=fdisk
  [qemu-img]=qemu-utils
  [bmaptool]=bmap-tools
  [xz]=xz-utils
  [systemd-analyze]=systemd
  [curl]=curl
  [htpasswd]=apache2-utils
  [openssl]=openssl
  [oathtool]=oathtool
  [pebble]=pebble
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [nft]=nftables
  [ip]=iproute2
  # arm64 targets: the C cross linker (Debian's Rust links aarch64 binaries with it) and
  # the binfmt registration that runs an arm64 root's maintainer scripts under qemu-user.
  [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
  [update-binfmts]=binfmt-support
)
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
AAVMF_CODE=/usr/share/AAVMF/AAVMF_CODE.fd

have_min_e2fsprogs() {
  command -v mke2fs >/dev/null || return 1
  local v; v=$(mke2fs -V 2>&1 | sed -n '1s/^mke2fs \([0-9.]*\).*/\1/p')
  dpkg --compare-versions "$v" ge 1.47.1
}
# mke2fs -d reads a tar through libarchive, loaded at run time: without it the
# populate step fails with "you need libarchive".
have_libarchive() { ldconfig -p | grep -q "libarchive.so.13"; }
have_qemu() { command -v qemu-system-x86_64 >/dev/null; }
# QEMU 10 for arm64 (its raspi4b machine; bookworm's 7.2 has none), and qemu-user of the
# same release (qemu-system-common and qemu-user-static must match).
have_qemu_arm() { command -v qemu-system-aarch64 >/dev/null && command -v qemu-aarch64-static >/dev/null; }
# Debian's Rust (rustc-web, cargo-web: /usr/bin/rustc, /usr/bin/cargo) with the arm64
# standard library: rustup's toolchain here has only x86_64's (src/stage/toolchain.rs).
have_rust_arm64() { [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1; }

# binfmt_misc: qemu-aarch64 registered with the F flag (the interpreter opened once, so it
# also runs inside mmdebstrap's chroot). Done at every run: a reboot forgets it.
ensure_binfmt() {
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "qemu-aarch64 is not registered in binfmt_misc; run this script as root"
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (arm64 roots need it to run their maintainer scripts)"
  update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is still not registered in binfmt_misc"
  log "registered qemu-aarch64 in binfmt_misc"
}

missing=()
for cmd in "${!RELEASE_PKGS[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${RELEASE_PKGS[$cmd]}")
done
[ -e "$OVMF_CODE" ] || missing+=(ovmf)
[ -e "$AAVMF_CODE" ] || missing+=(qemu-efi-aarch64)
have_rust_arm64 || missing+=(rustc-web cargo-web libstd-rust-web-dev:arm64)
# The gateway's tests run Debian's python3: python3-websockets as upstream and client,
# python3-selenium driving chromium through the login page.
/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=(python3-selenium)
have_libarchive || missing+=(libarchive13)
backports=()
have_min_e2fsprogs || backports+=(e2fsprogs)
have_qemu || backports+=(qemu-system-x86)
have_qemu_arm || backports+=(qemu-system-arm qemu-user-static)

if [ ${#missing[@]} -eq 0 ] && [ ${#backports[@]} -eq 0 ]; then
  ensure_binfmt
  log "all host packages present"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} ${backports[*]} (backports); run this script as root to install them"
command -v apt-get >/dev/null || die "this is not a Debian machine (no apt-get); install by hand: ${missing[*]} ${backports[*]}"

# shellcheck disable=SC1091
. /etc/os-release
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}

# The mirror serving this release: the first apt source whose suites name the codename and
# that is not the security archive.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v c="$codename" '
      /^[[:space:]]*$/ { if (u != "" && s ~ ("(^| )" c "( |$)")) { print u; exit } u=""; s=""; next }
      /^URIs:/   { u=$2 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); s=$0 }
      END        { if (u != "" && s ~ ("(^| )" c "( |$)")) print u }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    sed -n "s#^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\)[[:space:]]\+$codename[[:space:]].*#\2#p" "$f"
  done
}
mirror=$(find_mirror | grep -v -- '-security' | head -n1 || true)

if [ ${#backports[@]} -gt 0 ]; then
  [ -n "$mirror" ] || die "no apt source for $codename found in /etc/apt/sources.list*; cannot derive the $codename-backports mirror"
  list=/etc/apt/sources.list.d/imgforge-backports.sources
  if ! grep -qs "$codename-backports" /etc/apt/sources.list /etc/apt/sources.list.d/* ; then
    log "adding $codename-backports from the machine's mirror to $list"
    cat >"$list" <<SRC
Types: deb
URIs: $mirror
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "adding the arm64 architecture (for libstd-rust-web-dev:arm64)"
  dpkg --add-architecture arm64
fi
log "apt-get update"
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" arch-test >/dev/null
fi
if [ ${#backports[@]} -gt 0 ]; then
  log "installing from $codename-backports: ${backports[*]}"
  apt-get install -y -qq --no-install-recommends -t "$codename-backports" "${backports[@]}" >/dev/null
fi

have_min_e2fsprogs || die "e2fsprogs >= 1.47.1 is still missing (mke2fs -d cannot read a tar before it)"
have_qemu || die "qemu-system-x86_64 is still missing"
[ -e "$OVMF_CODE" ] || die "$OVMF_CODE is still missing (package ovmf)"
have_qemu_arm || die "qemu-system-aarch64 or qemu-aarch64-static is still missing"
have_rust_arm64 || die "Debian's Rust for arm64 is still missing (rustc-web, cargo-web, libstd-rust-web-dev:arm64)"
ensure_binfmt
log "host ready: $(mke2fs -V 2>&1 | head -n1), $(qemu-system-x86_64 --version | head -n1)"
