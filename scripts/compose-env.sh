#!/usr/bin/env bash
# Writes .env next to docker-compose.yml (mode 600, ignored by git) with what compose needs
# from this machine: the Docker socket's group and Flower's credentials. Keeps values already
# there; run it again after reinstalling Docker (the socket's group may change).
set -euo pipefail
cd "$(dirname "$0")/.."
socket=${DOCKER_SOCKET:-/var/run/docker.sock}
umask 077
touch .env
chmod 600 .env
set_default() {
  grep -q "^$1=" .env || printf '%s=%s\n' "$1" "$2" >> .env
}
set_default DOCKER_GID "$(stat -c %g "$socket")"
set_default FLOWER_BASIC_AUTH "admin:$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
set_default FLOWER_PORT 5555
echo "compose-env: .env holds DOCKER_GID, FLOWER_BASIC_AUTH and FLOWER_PORT (see: cat .env)" >&2
