#!/usr/bin/env bash
# Writes .env next to docker-compose.yml (mode 600, ignored by git) with what compose needs
# from this machine: the Docker socket's path (where it is not /var/run/docker.sock) and
# group, and Flower's credentials and port. The socket comes from DOCKER_SOCKET, else a
# unix:// DOCKER_HOST, else the one .env already names, else /var/run/docker.sock; its path
# and group are written afresh at each run (run it again after reinstalling Docker: the
# group may change), Flower's values are kept once there.
set -euo pipefail
cd "$(dirname "$0")/.."
default_socket=/var/run/docker.sock

recorded() { # recorded NAME: its value in .env, empty when unset
  if [ -f .env ]; then sed -n "s/^$1=//p" .env | tail -n 1; fi
}
socket=${DOCKER_SOCKET:-}
if [ -z "$socket" ] && [ -n "${DOCKER_HOST:-}" ]; then
  if [[ $DOCKER_HOST != unix://* ]]; then
    # The worker mounts a socket of this machine: a daemon reached over tcp or ssh is not one.
    echo "compose-env: DOCKER_HOST=$DOCKER_HOST is not a unix socket; compose deploys the worker next to the daemon it mounts: run this on that host, or set DOCKER_SOCKET" >&2
    exit 1
  fi
  socket=${DOCKER_HOST#unix://}
fi
socket=${socket:-$(recorded DOCKER_SOCKET)}
socket=${socket:-$default_socket}
if [ ! -S "$socket" ]; then
  echo "compose-env: $socket is not a socket: is the Docker daemon running? (DOCKER_SOCKET names another)" >&2
  exit 1
fi

umask 077
touch .env
chmod 600 .env
drop() { # drop NAME: removes NAME's line from .env
  sed -i "/^$1=/d" .env
}
set_value() { # set_value NAME VALUE: NAME's line written afresh where it differs
  grep -qxF "$1=$2" .env && return
  drop "$1"
  printf '%s=%s\n' "$1" "$2" >>.env
}
set_default() { # set_default NAME VALUE: only where .env has no NAME yet
  grep -q "^$1=" .env || printf '%s=%s\n' "$1" "$2" >>.env
}
if [ "$socket" = "$default_socket" ]; then
  drop DOCKER_SOCKET
else
  set_value DOCKER_SOCKET "$socket"
fi
set_value DOCKER_GID "$(stat -c %g "$socket")"
set_default FLOWER_BASIC_AUTH "admin:$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
set_default FLOWER_PORT 5555
echo "compose-env: .env holds $(cut -d= -f1 .env | paste -sd, - | sed 's/,/, /g') (see: cat .env)" >&2
