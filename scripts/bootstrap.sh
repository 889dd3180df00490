#!/usr/bin/env bash
# Installs what the janitor and its tests need on a Debian machine, idempotently: Debian
# packages (dockerd, redis-server and redis-sentinel, busybox-static for the test image,
# faketime, podman for the engine matrix, patchelf for the other release's podman, debootstrap
# and on Debian 13 Compose v2 for the compose test), uv, and the Python environment exactly as
# uv.lock pins it, on Debian 12 or 13. What the machine's release does not ship (the other
# release's engines, Compose v2 on Debian 12): scripts/fetch-engines.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd for systemd-analyze, which checks the units in contrib/systemd/; redis-sentinel for
# the Sentinel failover tests; debootstrap for the compose test's stand-in base images.
packages=(docker.io redis-server redis-sentinel busybox-static faketime systemd podman patchelf
  debootstrap)
# Debian 13 ships the docker CLI (the benchmarks' prune and import) apart from docker.io, and
# has Compose v2 and buildx (Debian 12's come from scripts/fetch-engines.sh).
if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" = trixie ]; then
  packages+=(docker-cli docker-compose docker-buildx)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' own service start-up is not wanted: the tests start private daemons.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  python3 -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
fi
# Compiled once here, so that no janitor process (the CLI, every worker the tests start)
# compiles its libraries again at each start where PYTHONDONTWRITEBYTECODE is set.
uv sync --frozen --quiet --compile-bytecode
