#!/usr/bin/env bash
# Runs the README's test command (or the command given) in a fresh clone of this checkout,
# inside a Debian 13 (trixie) chroot made with debootstrap: the whole suite as on a Debian 13
# machine, outside CI. The project's own bootstrap installs Debian 13's engines, Redis and
# the Python environment there; the machine's Python 3.11 serves it (bind-mounted at its own
# path, as a Debian 13 machine of this kind has its own), else Debian 13's python3.
#
#   sudo bash scripts/debian13-suite.sh                       # bootstrap, then `make test`
#   sudo bash scripts/debian13-suite.sh 'CI=true bash .ci/run' # the whole CI run
#
# Needs root and debootstrap. The chroot stays under DEBIAN13_ROOT
# (/var/tmp/container-janitor-debian13) for the next run; its mounts are made here and
# undone at exit, each a slave of the machine's, so nothing propagates back.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${DEBIAN13_ROOT:-/var/tmp/container-janitor-debian13}
command=${1:-bash scripts/bootstrap.sh && bash scripts/fetch-engines.sh >/dev/null && make test}

if [ "$(id -u)" -ne 0 ]; then
  echo "debian13-suite: needs root (debootstrap, mounts, chroot)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  echo "debian13-suite: needs debootstrap: apt-get install debootstrap" >&2
  exit 1
}

if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "debian13-suite: debootstrap trixie into $root" >&2
  archive=$(bash "$repo/scripts/debian-archive.sh")
  mkdir -p "$root"
  debootstrap --variant=minbase --include=ca-certificates,git,make,procps,iproute2,util-linux \
    trixie "$root" "$archive" >/dev/null
  echo "deb $archive-security trixie-security main" >>"$root/etc/apt/sources.list"
fi

python_prefix=$(python3 -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)
mounted=()
cleanup() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
    umount -R -l "${mounted[index]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
mount_on() { # mount_on TARGET ARGS...: mount ARGS on TARGET, a slave of the machine's mounts
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mount --make-rslave "$target"
  mounted+=("$target")
}
# A mount point of its own at the root: Podman remounts / while it unpacks an image.
mount_on "$root" --bind "$root"
mount_on "$root/proc" -t proc proc
mount_on "$root/sys" --rbind /sys
mount_on "$root/dev" --rbind /dev
mount_on "$root/run" -t tmpfs tmpfs
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ -n "$python_prefix" ] && [ "${python_prefix#/usr}" = "$python_prefix" ]; then
  mount_on "$root$python_prefix" --bind "$python_prefix"
  path="$python_prefix/bin:$path"
fi

# What the machine has for reaching its package registries: its own CAs and pip's settings.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
  cp /usr/local/share/ca-certificates/* "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
for config in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip"; do
  [ -e "$config" ] || continue
  mkdir -p "$root$(dirname "$config")"
  cp -r "$config" "$root$(dirname "$config")/"
done
passed=()
while IFS='=' read -r name _; do
  passed+=("$name=${!name}")
done < <(env | grep -E '^(SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|PIP_[A-Z_]+|UV_[A-Z_]+|CI)=')

rm -rf "$root/src"
git clone -q "$repo" "$root/src"
echo "debian13-suite: $(git -C "$root/src" log --oneline -1) in $root/src: $command" >&2
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 PATH="$path" "${passed[@]}" \
  bash -c "cd /src && $command"
