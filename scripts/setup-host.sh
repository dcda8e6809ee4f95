#!/usr/bin/env bash
# setup-host.sh: install the Debian packages imgforge needs on the building machine, for the
# work at hand only, and check each by what it provides (a command runs, a header compiles,
# a module imports), never by "dpkg says it is installed".
#
#   scripts/setup-host.sh                  what `imgforge build` needs for an amd64 target
#   scripts/setup-host.sh --arch arm64     ... for an arm64 target (rpi4, rpi5, aarch64-vm)
#   scripts/setup-host.sh --arch all --test  everything the test suite needs (scripts/test)
#   scripts/setup-host.sh --check ...      install nothing; list what is missing, exit 1
#
# Idempotent, and quick when everything is there. Installing needs root (apt). Packages come
# without Recommends: every package relied on is named below. The newer e2fsprogs
# (mke2fs -d reading a tar needs >= 1.47.1) and QEMU 10 come from bookworm-backports; that
# mirror is derived from this machine's own apt sources, never written here.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

arches=amd64 test=0 check_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --arch) [ $# -ge 2 ] || die "--arch needs amd64, arm64 or all"; arches=$2; shift 2 ;;
    --arch=*) arches=${1#--arch=}; shift ;;
    --test) test=1; shift ;;
    --check) check_only=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case $arches in
  amd64) want_amd64=1 want_arm64=0 ;;
  arm64) want_amd64=0 want_arm64=1 ;;
  all)   want_amd64=1 want_arm64=1 ;;
  *) die "--arch takes amd64, arm64 or all, not '$arches'" ;;
esac

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
t_start=$(date +%s.%N)
timings=()
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%6.1f s", b - a }'; }
mark() { timings+=("$(printf '%-44s %s' "$1" "$(since "$2")")"); } # mark LABEL START
now() { date +%s.%N; }

# --- What each package provides, and how to see it -------------------------------------
# One line a package: the need it serves, the pool it comes from, the package, the check.
# Needs: build (any image), arm64 (building an arm64 image), boot-amd64 / boot-arm64
# (`imgforge test` and `boot`), test (the peers of the test suite).
# Checks: cmd:NAME (runs), file:PATH, lib:SONAME, py:MODULE (Debian's python3 imports it),
# and named checks below (e2fsprogs's version, a C file compiled and linked, ...).
NEEDS='
build      release    mmdebstrap             cmd:mmdebstrap
build      release    ca-certificates        file:/etc/ssl/certs/ca-certificates.crt
build      release    gcc                    cmd:gcc
build      release    libc6-dev              cc-native
build      release    libarchive13           lib:libarchive.so.13
build      backports  e2fsprogs              e2fsprogs
build      release    fdisk                  cmd:sfdisk
build      release    qemu-utils             cmd:qemu-img
build      release    xz-utils               cmd:xz
build      release    tar                    cmd:tar
build      release    util-linux             cmd:unshare
build      release    python3-pip            py:pip
build      release    python3-installer      py:installer
build      release    gpg                    cmd:gpg
build      release    gpg-agent              cmd:gpg-agent
arm64      release    arch-test              cmd:arch-test
arm64      backports  qemu-user              cmd:qemu-aarch64
arm64      backports  qemu-user-binfmt       file:/usr/lib/binfmt.d/qemu-aarch64.conf
arm64      release    gcc-aarch64-linux-gnu  cmd:aarch64-linux-gnu-gcc
arm64      release    libc6-dev-arm64-cross  cc-aarch64
arm64      release    rustc-web              file:/usr/bin/rustc
arm64      release    cargo-web              file:/usr/bin/cargo
arm64      foreign    libstd-rust-web-dev:arm64 file:/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib
boot-amd64 backports  qemu-system-x86        cmd:qemu-system-x86_64
boot-amd64 release    ovmf                   file:/usr/share/OVMF/OVMF_CODE_4M.fd
boot-arm64 backports  qemu-system-arm        qemu-raspi4b
boot-arm64 release    qemu-efi-aarch64       file:/usr/share/AAVMF/AAVMF_CODE.fd
test       release    dosfstools             cmd:fsck.fat
test       release    mtools                 cmd:mcopy
test       release    cpio                   cmd:cpio
test       release    bmap-tools             cmd:bmaptool
test       release    systemd                cmd:systemd-analyze
test       release    nftables               cmd:nft
test       release    iproute2               cmd:ip
test       release    curl                   cmd:curl
test       release    file                   cmd:file
test       release    apache2-utils          cmd:htpasswd
test       release    openssl                cmd:openssl
test       release    oathtool               cmd:oathtool
test       release    openssh-client         cmd:ssh-keygen
test       release    pebble                 cmd:pebble-challtestsrv
test       release    chromium               cmd:chromium
test       release    chromium-driver        cmd:chromedriver
test       release    python3                file:/usr/bin/python3
test       release    python3-websockets     py:websockets
test       release    python3-selenium       py:selenium
test       release    device-tree-compiler   cmd:fdtget
test       release    procps                 cmd:kill
test       release    man-db                 cmd:man
test       release    groff-base             cmd:groff
'

# A C file that includes stdint.h, compiled and linked: the libc headers and start files are
# there (gcc-aarch64-linux-gnu only Recommends its libc6-dev-arm64-cross).
cc_links() { # cc_links COMPILER OUTPUT [FLAGS...]
  local cc=$1 out=$2; shift 2
  command -v "$cc" >/dev/null || return 1
  printf '#include <stdint.h>\n#include <stdio.h>\nint main(void){uint32_t v=42;printf("%%u\\n",v);return 0;}\n' >"$scratch/t.c"
  "$cc" "$@" -o "$out" "$scratch/t.c" 2>"$scratch/cc.err"
}

check() { # check SPEC: 0 when what the package provides is there
  local spec=$1
  case $spec in
    cmd:*)  command -v "${spec#cmd:}" >/dev/null ;;
    file:*) [ -e "${spec#file:}" ] ;;
    lib:*)  ldconfig -p | grep -q "${spec#lib:}" ;;
    py:*)   [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ${spec#py:}" 2>/dev/null ;;
    cc-native)  cc_links gcc "$scratch/t-native" && "$scratch/t-native" >/dev/null ;;
    cc-aarch64) cc_links aarch64-linux-gnu-gcc "$scratch/t-aarch64" -static ;;
    e2fsprogs)
      command -v mke2fs >/dev/null || return 1
      local v; v=$(mke2fs -V 2>&1 | sed -n '1s/^mke2fs \([0-9.]*\).*/\1/p')
      dpkg --compare-versions "$v" ge 1.47.1 ;;
    # QEMU 10 from backports: bookworm's 7.2 has no raspi4b machine.
    qemu-raspi4b)
      command -v qemu-system-aarch64 >/dev/null &&
        qemu-system-aarch64 -machine help 2>/dev/null | grep -q '^raspi4b ' ;;
    *) die "internal: unknown check $spec" ;;
  esac
}

wanted() { # wanted NEED: is this need part of the work at hand?
  case $1 in
    build) return 0 ;;
    arm64) [ $want_arm64 = 1 ] ;;
    boot-amd64) [ $test = 1 ] && [ $want_amd64 = 1 ] ;;
    boot-arm64) [ $test = 1 ] && [ $want_arm64 = 1 ] ;;
    test) [ $test = 1 ] ;;
  esac
}

# Which wanted packages fail their check: "pool package spec" lines.
missing_lines() {
  local need pool pkg spec
  while read -r need pool pkg spec; do
    [ -n "$need" ] || continue
    wanted "$need" || continue
    check "$spec" || printf '%s %s %s\n' "$pool" "$pkg" "$spec"
  done <<<"$NEEDS"
}

# --- binfmt_misc: arm64 maintainer scripts run under qemu-user ---------------------------
# However the installed QEMU ships its registration: bookworm-backports' QEMU 10
# (qemu-user-binfmt) has a systemd-binfmt file in /usr/lib/binfmt.d; older qemu-user-static
# a binfmt-support entry in /usr/share/binfmts. On a machine where systemd does not run
# (containers, chroots) nothing registers it at install, so this does, at every run (a
# reboot forgets it). The F flag opens the interpreter once, so it runs inside chroots too.
binfmt_entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
binfmt_ok() { [ -e $binfmt_entry ] && grep -qx enabled $binfmt_entry && grep -q '^flags:.*F' $binfmt_entry; }
ensure_binfmt() {
  binfmt_ok && return 0
  [ "$(id -u)" -eq 0 ] || die "qemu-aarch64 is not registered in binfmt_misc; run this script as root"
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (arm64 roots need it to run their maintainer scripts)"
  # An entry without the F flag (registered by some other tool) cannot serve chroots.
  if [ -e $binfmt_entry ]; then echo -1 >$binfmt_entry; fi
  local conf
  conf=$(ls /etc/binfmt.d/qemu-aarch64.conf /run/binfmt.d/qemu-aarch64.conf \
            /usr/lib/binfmt.d/qemu-aarch64.conf 2>/dev/null | head -n1 || true)
  if [ -n "$conf" ]; then
    # systemd-binfmt's format is the kernel's own register line.
    grep -v '^[#;]' "$conf" | grep -m1 '^:qemu-aarch64:' >/proc/sys/fs/binfmt_misc/register \
      || die "writing $conf's line to /proc/sys/fs/binfmt_misc/register failed"
    how="from $conf"
  elif [ -e /usr/share/binfmts/qemu-aarch64 ] && command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
    how="by update-binfmts"
  else
    die "no binfmt registration for qemu-aarch64 is installed (package qemu-user-binfmt provides /usr/lib/binfmt.d/qemu-aarch64.conf)"
  fi
  binfmt_ok || die "qemu-aarch64 is still not registered in binfmt_misc with the F flag ($(tr '\n' ' ' <$binfmt_entry 2>/dev/null))"
  log "registered qemu-aarch64 in binfmt_misc $how"
}
# The proof that it works: a static aarch64 program, run as this machine runs any program.
binfmt_runs() {
  cc_links aarch64-linux-gnu-gcc "$scratch/t-aarch64" -static && [ "$("$scratch/t-aarch64")" = 42 ]
}

# --- Install what is missing ---------------------------------------------------------------
t=$(now); mapfile -t miss < <(missing_lines); mark "checking what each package provides" "$t"
if [ ${#miss[@]} -gt 0 ]; then
  names=$(printf '%s\n' "${miss[@]}" | awk '{print $2}' | tr '\n' ' ')
  if [ $check_only = 1 ]; then
    printf 'setup-host: missing: %s\n' "${miss[@]}" >&2
    exit 1
  fi
  [ "$(id -u)" -eq 0 ] || die "missing packages: $names; run this script as root to install them"
  command -v apt-get >/dev/null || die "this is not a Debian machine (no apt-get); install by hand: $names"
  release=() backports=() foreign=()
  for l in "${miss[@]}"; do
    read -r pool pkg _ <<<"$l"
    case $pool in release) release+=("$pkg") ;; backports) backports+=("$pkg") ;; foreign) foreign+=("$pkg") ;; esac
  done
  # shellcheck disable=SC1091
  . /etc/os-release
  codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
  if [ ${#backports[@]} -gt 0 ] && ! grep -qs "$codename-backports" /etc/apt/sources.list /etc/apt/sources.list.d/*; then
    mirror=$(bash "$(dirname "$0")/apt-mirror.sh" "$codename" || true)
    [ -n "$mirror" ] || die "no apt source for $codename found in /etc/apt/sources.list*; cannot derive the $codename-backports mirror"
    list=/etc/apt/sources.list.d/imgforge-backports.sources
    log "adding $codename-backports from the machine's mirror to $list"
    cat >"$list" <<SRC
Types: deb
URIs: $mirror
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { # apt_install LABEL [apt-get args...]
    local label=$1; shift
    t=$(now)
    log "installing $label"
    if ! apt-get install -y -qq --no-install-recommends "$@" >"$scratch/apt.log" 2>&1; then
      tail -n 20 "$scratch/apt.log" >&2
      die "apt-get install failed for: $*"
    fi
    mark "apt-get install ($label)" "$t"
  }
  if [ ${#foreign[@]} -gt 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture (for ${foreign[*]})"
    dpkg --add-architecture arm64
  fi
  t=$(now); log "apt-get update"
  apt-get update -qq >"$scratch/apt.log" 2>&1 || { tail -n 20 "$scratch/apt.log" >&2; die "apt-get update failed"; }
  mark "apt-get update" "$t"
  [ ${#release[@]} -eq 0 ] || apt_install "${release[*]}" "${release[@]}"
  [ ${#foreign[@]} -eq 0 ] || apt_install "${foreign[*]}" "${foreign[@]}"
  # qemu-user and qemu-system-* share qemu-system-common's release: one call, one release.
  [ ${#backports[@]} -eq 0 ] || apt_install "${backports[*]} from $codename-backports" -t "$codename-backports" "${backports[@]}"

  mapfile -t still < <(missing_lines)
  if [ ${#still[@]} -gt 0 ]; then
    for l in "${still[@]}"; do
      read -r _ pkg spec <<<"$l"
      printf 'setup-host: error: %s is installed but its check %s fails\n' "$pkg" "$spec" >&2
      [ "$spec" != cc-aarch64 ] && [ "$spec" != cc-native ] || sed 's/^/  /' "$scratch/cc.err" >&2
    done
    exit 1
  fi
  installed="installed: $names"
else
  installed="nothing to install"
fi

if [ $want_arm64 = 1 ] && [ $check_only = 1 ]; then
  binfmt_ok || { printf 'setup-host: missing: qemu-aarch64 in binfmt_misc (with the F flag)\n' >&2; exit 1; }
elif [ $want_arm64 = 1 ]; then
  t=$(now)
  ensure_binfmt
  binfmt_runs || die "a static aarch64 program does not run through binfmt_misc ($(tr '\n' ' ' <$binfmt_entry))"
  mark "binfmt_misc: qemu-aarch64 runs" "$t"
fi

log "host ready for: build ($arches)$([ $test = 1 ] && echo ', boot tests and test peers'); $installed"
for l in "${timings[@]}"; do log "  $l"; done
log "  $(printf '%-44s %s' total "$(since "$t_start")")"
