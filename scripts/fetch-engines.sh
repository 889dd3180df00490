#!/usr/bin/env bash
# Fetches the container engines of the engine matrix that the machine's Debian release does not
# ship, as the other release's Debian packages, and unpacks them privately: on Debian 12
# (bookworm) Debian 13's dockerd 26 with containerd 1.7, podman 5 with the libc it needs, and
# the Compose v2 and buildx CLI plugins, which Debian 12 does not ship (the compose test uses
# them); on Debian 13 (trixie) Debian 12's dockerd 20.10 with containerd 1.6, and podman 4.3
# with the libraries Debian 13 no longer has. The system's apt sources and installed packages
# stay as they are: apt runs under a private APT_CONFIG (own sources list, lists and cache)
# and the packages are unpacked with dpkg-deb -x, never installed. Everything is cached under
# ENGINES_CACHE, so a second run downloads nothing. Prints nothing on success but the
# engines' folder.
set -euo pipefail

cache=${ENGINES_CACHE:-/var/cache/container-janitor-engines}
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
# Each engine's folder and its packages, by the other release's names; runc comes from the
# machine's own docker.io.
case "$codename" in
  bookworm)
    suite=trixie
    docker_engine=docker-26
    podman_engine=podman-5
    docker_packages=(docker.io containerd)
    podman_packages=(podman netavark libc6 libsqlite3-0 libgpgme11t64 libassuan9 libgpg-error0
      libseccomp2 libsubid5 libsystemd0 libcap2 libaudit1 libcap-ng0 libselinux1 libpcre2-8-0
      libbsd0 libmd0)
    # Binaries that find their own libraries first (RPATH), and those that also need their
    # own loader: Debian 12's libc is too old for Debian 13's podman.
    docker_own_libraries=()
    podman_own_libraries=(usr/bin/podman usr/lib/podman/netavark)
    podman_own_loader=(usr/bin/podman usr/lib/podman/netavark)
    # Go binaries that run on Debian 12's libc as they are.
    compose_packages=(docker-compose docker-buildx)
    ;;
  trixie)
    suite=bookworm
    docker_engine=docker-20.10
    podman_engine=podman-4.3
    # What Debian 13 renamed, dropped or does not install with its own engines; the rest of
    # their libraries are Debian 13's own, whose libc runs Debian 12's binaries.
    docker_packages=(docker.io containerd libdevmapper1.02.1)
    podman_packages=(podman libgpgme11 libassuan0 libsubid4 libdevmapper1.02.1)
    docker_own_libraries=(usr/sbin/dockerd)
    podman_own_libraries=(usr/bin/podman)
    podman_own_loader=()
    # Debian 13's own: scripts/bootstrap.sh installs them.
    compose_packages=()
    ;;
  *)
    echo "fetch-engines: /etc/os-release names '${codename}': the engine matrix knows bookworm and trixie" >&2
    exit 1
    ;;
esac
stamp="$cache/unpacked-v4-$codename"

if [ -f "$stamp" ]; then
  echo "$cache"
  exit 0
fi

# The archive the machine's own sources already name, with the other suite's codename.
archive=$(bash "$(dirname "$0")/debian-archive.sh")

# Where earlier versions of this script kept Debian 13's packages.
rm -rf "$cache/apt" "$cache/debs" "$cache"/unpacked-v[23]*
apt_dir="$cache/apt-$suite"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$cache/debs-$suite"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive $suite main" \
  >"$apt_dir/sources.list"
cat >"$apt_dir/apt.conf" <<CONF
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::Etc::Preferences "$apt_dir/preferences";
Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "$apt_dir/status";
Dir::Cache "$apt_dir/cache";
APT::Architecture "amd64";
APT::Sandbox::User "root";
CONF
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/preferences.d"
touch "$apt_dir/status"
export APT_CONFIG="$apt_dir/apt.conf"
apt-get update -qq

fetch() {
  local target=$1
  shift
  rm -rf "$target"
  mkdir -p "$target"
  (cd "$cache/debs-$suite" && apt-get download -qq "$@")
  for package in "$@"; do
    dpkg-deb -x "$(ls "$cache/debs-$suite/${package}"_*.deb | tail -n 1)" "$target"
  done
}

fetch "$cache/$docker_engine" "${docker_packages[@]}"
fetch "$cache/$podman_engine" "${podman_packages[@]}"
if [ ${#compose_packages[@]} -gt 0 ]; then
  fetch "$cache/compose" "${compose_packages[@]}"
fi
# A binary that needs its own libraries finds them first through a DT_RPATH, which, unlike
# RUNPATH, also holds for its libraries' own dependencies (Debian 12's packages keep some under
# /lib: no merged /usr there); one that needs its own libc also gets that loader. A patched
# binary stays the one podman re-executes for container cleanup, where a loader wrapper would
# not. A binary that is not where it is expected fails the run, before the stamp.
own_libraries() {
  local root="$cache/$1"
  shift
  for binary in "$@"; do
    patchelf --force-rpath --set-rpath \
      "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" "$root/$binary"
  done
}
own_loader() {
  local root="$cache/$1"
  shift
  for binary in "$@"; do
    patchelf --set-interpreter "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
      "$root/$binary"
  done
}
own_libraries "$docker_engine" "${docker_own_libraries[@]}"
own_libraries "$podman_engine" "${podman_own_libraries[@]}"
own_loader "$podman_engine" "${podman_own_loader[@]}"
touch "$stamp"
echo "$cache"
