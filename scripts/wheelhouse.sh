#!/usr/bin/env bash
# Fills wheels/ with every Python package the image installs, as wheels for Linux on this
# machine's architecture and CPython 3.11: the dependencies uv.lock pins (pip checks each
# against the lock's hashes), uv itself at the Dockerfile's version, and the build backend.
# Whenever wheels/ holds a wheel, the Dockerfile installs from it alone, with no package
# index: run this where an index is reachable, then build here or on a host without one
# from a copy of this checkout (wheels/ included). `rm wheels/*.whl` goes back to the index.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=$(sed -n 's/^ARG UV_VERSION=//p' Dockerfile)
arch=$(uname -m)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

uv export --frozen --no-dev --no-emit-project --quiet -o "$work/locked.txt"
# pip evaluates markers for the interpreter it runs on: a requirement kept only for some
# 3.11 releases (async-timeout below 3.11.3, which python:3.11-slim images of that age have)
# is fetched whatever they say, so that the wheelhouse serves every 3.11 base image.
sed -E "s/ ; python_(full_)?version [^\\]*//" "$work/locked.txt" >"$work/any-311.txt"
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311
  --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch")
download() {
  uvx --quiet --from pip pip download --quiet --disable-pip-version-check "${target[@]}" \
    --dest "$work/wheels" "$@"
}
download --no-deps --require-hashes -r "$work/any-311.txt"
download "uv==$uv_version" "$(sed -n 's/^requires = \["\([^"]*\)"\]$/\1/p' pyproject.toml)"

find wheels -name '*.whl' -delete
mv "$work"/wheels/*.whl wheels/
echo "wheelhouse: $(find wheels -name '*.whl' | wc -l) wheels in wheels/; the image now builds without a package index" >&2
