# syntax=docker/dockerfile:1
# container-janitor: one image for the worker, beat and Flower (see docker-compose.yml).
#
# The Docker socket is NOT part of the image. Only the worker mounts it, and since the
# process runs as the unprivileged user janitor (uid 10001), it reaches the socket through
# the socket's group, which compose adds with `group_add: ["${DOCKER_GID}"]`. That group id
# differs from host to host (the `docker` group is allocated when Docker is installed, and is
# 0 where the daemon found no `docker` group), so compose asks for it instead of guessing:
#   DOCKER_GID=$(stat -c %g /var/run/docker.sock)
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9

# Bytecode is compiled once at build time: the containers run with a read-only root
# filesystem, where Python could not write it. The image's own Python is the only one.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
 && groupadd --system --gid 10001 janitor \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/janitor --create-home \
        --shell /usr/sbin/nologin janitor

WORKDIR /app

# Dependencies first, exactly as uv.lock pins them: this layer is rebuilt only when the
# lock changes, not on every edit of the code.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --no-cache

# The code, owned by root and read-only for the janitor user.
COPY janitor/ ./janitor/
COPY celeryconfig.py README.md ./
RUN uv sync --frozen --no-dev --no-cache

ENV PATH="/app/.venv/bin:${PATH}"

USER 10001:10001

# `celery -A janitor beat` and `... flower` are given as the compose command; the CLI
# (`janitor check`, `janitor sweep --dry-run`) runs with `docker run --rm IMAGE janitor ...`.
CMD ["celery", "-A", "janitor", "worker", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
