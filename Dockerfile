# container-janitor: one image for the worker, beat and Flower (see docker-compose.yml).
#
# It pulls no image but the base image: no `# syntax=` line (BuildKit would pull a frontend
# image for it from a registry), one base image for both stages, and classic builds work the
# same. The Python packages come from the package index, or, after scripts/wheelhouse.sh,
# from wheels/ alone: then the build needs no network at all.
#
# The Docker socket is NOT part of the image. Only the worker mounts it, and since the
# process runs as the unprivileged user janitor (uid 10001), it reaches the socket through
# the socket's group, which compose adds with `group_add: ["${DOCKER_GID}"]`. That group id
# differs from host to host (the `docker` group is allocated when Docker is installed, and is
# 0 where the daemon found no `docker` group), so compose asks for it instead of guessing:
# `bash scripts/compose-env.sh` writes it into `.env`.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build

ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /src
# wheels/ is empty in a checkout; scripts/wheelhouse.sh fills it for a host without a package
# index. With a wheel in it, every install below takes packages from there alone.
COPY wheels/ /wheels/
RUN if find /wheels -name '*.whl' | grep -q .; then \
      echo "--no-index --find-links /wheels" >/wheels/offline; \
    else : >/wheels/offline; fi \
 && pip install --no-cache-dir --disable-pip-version-check $(cat /wheels/offline) "uv==${UV_VERSION}"
# Dependencies first, exactly as uv.lock pins them (hashes checked; scripts/wheelhouse.sh
# exports the same list): this layer is rebuilt only when the lock changes, not on every edit
# of the code.
COPY pyproject.toml uv.lock ./
RUN if [ -s /wheels/offline ] && [ "$(cat /wheels/uv.lock.sha256)" != "$(sha256sum <uv.lock | cut -d' ' -f1)" ]; then \
      echo "wheels/ was filled for another uv.lock: run scripts/wheelhouse.sh again, or rm wheels/*" >&2; \
      exit 1; \
    fi \
 && uv export --frozen --no-dev --no-emit-project --quiet -o /tmp/locked.txt \
 && uv venv --quiet /app/.venv \
 && uv pip install --quiet --no-cache --python /app/.venv $(cat /wheels/offline) \
        --require-hashes -r /tmp/locked.txt
# The project itself as a wheel, not editable: janitor/ and celeryconfig.py land in the
# environment's site-packages, compiled to bytecode here, because the containers run with a
# read-only root filesystem where Python could not write it.
COPY README.md celeryconfig.py ./
COPY janitor/ ./janitor/
RUN uv pip install --quiet --no-cache --python /app/.venv $(cat /wheels/offline) --no-deps .

FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/app/.venv/bin:${PATH}"
RUN groupadd --system --gid 10001 janitor \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/container-janitor \
        --create-home --shell /usr/sbin/nologin janitor
# Only the environment: no source tree beside it that an import could pick up instead.
COPY --from=build /app/.venv /app/.venv
# Beat's schedule file goes in its working directory: the one place the janitor may write,
# a volume in compose (the root filesystem is read-only there).
WORKDIR /var/lib/container-janitor
VOLUME ["/var/lib/container-janitor"]

USER 10001:10001

# `celery ... beat` and `... flower` are given as the compose command; the CLI runs in the
# worker's container, which has the socket, the group and Redis:
#   docker compose exec worker janitor check
# Lean on a shared Redis (README, "Scale"): no gossip, no mingle; heartbeats stay.
CMD ["celery", "-A", "janitor", "--quiet", "worker", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
