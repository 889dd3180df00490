#!/usr/bin/env bash
# Fills wheels/ with every Python package the image installs, as wheels for Linux on this
# machine's architecture and CPython 3.11: the dependencies uv.lock pins (pip checks each
# against the lock's hashes), uv itself at the Dockerfile's version, and the build backend.
# Whenever wheels/ holds a wheel, the Dockerfile installs from it alone, with no package
# index: run this where an index is reachable, then build here or on a host without one
# from a copy of this checkout (wheels/ included). `rm wheels/*` goes back to the index.
# Needs uv and a Python 3.11 (pip runs on it, so that markers read as in the image).
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=$(sed -n 's/^ARG UV_VERSION=//p' Dockerfile)
arch=$(uname -m)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The same export as the Dockerfile's dependency layer.
uv export --frozen --no-dev --no-emit-project --quiet -o "$work/locked.txt"
# A requirement kept only below some 3.11 release (async-timeout below 3.11.3, which
# python:3.11-slim images of that age have) is fetched whatever pip's own 3.11 says, so that
# the wheelhouse serves every 3.11 base image.
sed -E "s/ ; python_full_version < '3\.11\.[0-9]+'//" "$work/locked.txt" >"$work/any-311.txt"
platforms=(--platform "manylinux2014_$arch")
for glibc in $(seq 17 36); do # up to Debian 12's glibc 2.36, the base image's
  platforms+=(--platform "manylinux_2_${glibc}_$arch")
done
download() {
  uvx --quiet --python 3.11 --from pip pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
    --dest "$work/wheels" "$@"
}
download --no-deps --require-hashes -r "$work/any-311.txt"
mapfile -t backend < <(python3 -c \
  'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")')
download "uv==$uv_version" "${backend[@]}"

find wheels -name '*.whl' -delete
mv "$work"/wheels/*.whl wheels/
# What the Dockerfile checks before it trusts wheels/: filled for this lock, not an older one.
sha256sum uv.lock | cut -d' ' -f1 >wheels/uv.lock.sha256
echo "wheelhouse: $(find wheels -name '*.whl' | wc -l) wheels in wheels/; the image now builds without a package index" >&2
