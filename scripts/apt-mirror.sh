#!/usr/bin/env bash
# apt-mirror.sh [CODENAME]: prints the Debian mirror this machine's own apt sources use for
# CODENAME (default: this release's), so scripts that need another suite or component
# (backports, a fresh root) derive it instead of naming a host. The first source whose
# suites name the codename and that is not the security archive; exit 1 if none.
set -euo pipefail
if [ $# -ge 1 ]; then codename=$1; else
  # shellcheck disable=SC1091
  . /etc/os-release; codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
fi
{
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
} | grep -v -- '-security' | head -n1 | grep .
