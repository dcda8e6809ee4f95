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
)
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd

have_min_e2fsprogs() {
  command -v mke2fs >/dev/null || return 1
  local v; v=$(mke2fs -V 2>&1 | sed -n '1s/^mke2fs \([0-9.]*\).*/\1/p')
  dpkg --compare-versions "$v" ge 1.47.1
}
# mke2fs -d reads a tar through libarchive, loaded at run time: without it the
# populate step fails with "you need libarchive".
have_libarchive() { ldconfig -p | grep -q "libarchive.so.13"; }
have_qemu() { command -v qemu-system-x86_64 >/dev/null; }

missing=()
for cmd in "${!RELEASE_PKGS[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${RELEASE_PKGS[$cmd]}")
done
[ -e "$OVMF_CODE" ] || missing+=(ovmf)
# The gateway's tests run Debian's python3: python3-websockets as upstream and client,
# python3-selenium driving chromium through the login page.
/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=(python3-selenium)
have_libarchive || missing+=(libarchive13)
backports=()
have_min_e2fsprogs || backports+=(e2fsprogs)
have_qemu || backports+=(qemu-system-x86)

if [ ${#missing[@]} -eq 0 ] && [ ${#backports[@]} -eq 0 ]; then
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
log "host ready: $(mke2fs -V 2>&1 | head -n1), $(qemu-system-x86_64 --version | head -n1)"
