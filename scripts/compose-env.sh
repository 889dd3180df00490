#!/usr/bin/env bash
# Writes .env next to docker-compose.yml (mode 600, ignored by git) with what compose needs
# from this machine: the Docker socket's group and Flower's credentials and port, and the
# socket's path where it is not /var/run/docker.sock (from DOCKER_SOCKET, else a unix://
# DOCKER_HOST). Keeps values already there; run it again after reinstalling Docker (the
# socket's group may change).
set -euo pipefail
cd "$(dirname "$0")/.."
default_socket=/var/run/docker.sock
socket=${DOCKER_SOCKET:-}
if [ -z "$socket" ] && [[ ${DOCKER_HOST:-} == unix://* ]]; then
  socket=${DOCKER_HOST#unix://}
fi
socket=${socket:-$default_socket}
if [ ! -S "$socket" ]; then
  echo "compose-env: $socket is not a socket: is the Docker daemon running? (DOCKER_SOCKET names another)" >&2
  exit 1
fi
umask 077
touch .env
chmod 600 .env
set_default() {
  grep -q "^$1=" .env || printf '%s=%s\n' "$1" "$2" >> .env
}
if [ "$socket" != "$default_socket" ]; then
  set_default DOCKER_SOCKET "$socket"
fi
set_default DOCKER_GID "$(stat -c %g "$socket")"
set_default FLOWER_BASIC_AUTH "admin:$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
set_default FLOWER_PORT 5555
echo "compose-env: .env holds $(cut -d= -f1 .env | paste -sd, - | sed 's/,/, /g') (see: cat .env)" >&2
