#!/usr/bin/env bash
# Prints the Debian archive that the machine's own apt sources name (deb822 or one-line
# format, the security archive left out), for fetching another release's packages from the
# same place; fails saying so when there is none.
set -euo pipefail
archive=$(
  { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } |
    grep -v -- '-security' | grep -E '/debian/?$' | head -n 1 || true
)
if [ -z "$archive" ]; then
  echo "$(basename "$0"): no Debian archive in /etc/apt/sources.list{,.d}" >&2
  exit 1
fi
echo "$archive"
